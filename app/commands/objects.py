"""List the objects of a scene ("segment everything"): the feature field's Gaussians clustered
by feature and split into spatially connected pieces, each named by the vocabulary term with the
highest LERF relevancy (a default list of household, office and tabletop words, your words, and
the label names the field records). Writes JSON: {"objects": [{id, name, score, count, bbox,
indices}, ...], "num_gaussians", "vocabulary_size", ...}, objects largest first, indices in the
scene's file order."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "list and name the objects of a scene from its feature field (writes JSON)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("scene", type=Path, help="scene file the features belong to")
    p.add_argument("--features", type=Path, required=True, help="feature field .safetensors")
    p.add_argument("--out", type=Path, required=True, help="output .json")
    p.add_argument("--vocabulary", default="", help="extra names to choose from, comma-separated")
    p.add_argument(
        "--vocabulary-file",
        type=Path,
        default=None,
        help="extra names, one per line (or comma-separated; # starts a comment)",
    )
    p.add_argument(
        "--min-size",
        type=int,
        default=None,
        help="smallest object, in Gaussians; unset: 100 or 0.1%% of the scene, whichever is larger",
    )
    p.add_argument("--negatives", default="", help="extra negatives for naming, comma-separated")
    p.add_argument("--space", default=None, help="head to name in (default: clip, else oracle)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")


def read_vocabulary(text: str, path: Path | None) -> list[str]:
    """Names from a comma-separated string and a file (one per line or comma-separated)."""
    words = text.split(",")
    if path is not None:
        if not path.is_file():
            raise FileNotFoundError(f"no vocabulary file at {path}")
        for line in path.read_text(encoding="utf-8").splitlines():
            words += line.split("#", 1)[0].split(",")
    return list(dict.fromkeys(w.strip() for w in words if w.strip()))


def run(args: argparse.Namespace) -> int:
    import json
    from dataclasses import replace

    from fields import load_scene
    from fields.features import (
        ObjectsConfig,
        build_text_encoder,
        language_space,
        list_objects,
    )
    from fields.formats import write_files

    from ._features import load_field_for

    if args.out.exists() and not args.overwrite:
        raise FileExistsError(f"{args.out} exists (pass --overwrite to replace it)")
    if args.min_size is not None and args.min_size < 1:
        raise ValueError(f"--min-size must be at least 1, got {args.min_size}")
    words = read_vocabulary(args.vocabulary, args.vocabulary_file)
    scene = load_scene(args.scene)
    field = load_field_for(args.features, args.scene, scene, "objects")
    space = language_space(field, args.space)
    if space is None:
        wanted = f"{args.space!r} head" if args.space else "clip or oracle head"
        raise ValueError(f"{args.features} has no {wanted} (heads: {sorted(field.heads)})")
    try:
        encode = build_text_encoder(space, field.teachers)
    except KeyError as e:
        raise ValueError(e.args[0]) from None
    config = ObjectsConfig()
    if args.min_size is not None:  # the user's size, exactly
        config = replace(config, min_size=args.min_size, min_fraction=0.0)
    objects = list_objects(
        field,
        scene.means,
        scene.opacities,
        encode,
        space,
        words,
        config,
        negatives=[t for t in args.negatives.split(",") if t.strip()],
    )
    blob = json.dumps(objects.to_json()).encode()
    write_files([(args.out, lambda f: f.write(blob))], overwrite=args.overwrite)

    width = max([4, *(len(o.name) for o in objects)])
    print(f"{'id':>3}  {'name':<{width}}  {'score':>5}  {'count':>8}")
    for o in objects:
        print(f"{o.id:>3}  {o.name:<{width}}  {o.score:>5.3f}  {o.count:>8}")
    assigned = sum(o.count for o in objects)
    print(
        f"{len(objects)} objects, {assigned} of {len(scene)} Gaussians "
        f"({len(objects.vocabulary)} names, {space} head) -> {args.out}"
    )
    return 0
