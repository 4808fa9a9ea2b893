"""Bundle a scene file (and its feature field) into a new project file (`OUT.scenelab`): one file
that `scenelab view OUT.scenelab` opens with the field loaded, ready for edits whose history,
selections, grasps and camera bookmarks the viewer's "Save project" then keeps in it too.

The feature field is `--features F` when given, else `<scene stem>.features.safetensors` next to
the scene when that exists (what `scenelab distill` and the viewer write); a field lifted on
another scene is refused. Nothing is overwritten unasked (--overwrite), and the scene file is
never touched."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

HELP = "bundle a scene (and its feature field) into a project file (.scenelab)"
FEATURE_SUFFIX = ".features.safetensors"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "scene",
        type=Path,
        help="scene file to start the project from (.ply, .compressed.ply, .splat, .spz, .sog, "
        ".ksplat)",
    )
    p.add_argument(
        "--out", type=Path, required=True, help="project file to write (ends in .scenelab)"
    )
    p.add_argument(
        "--features",
        type=Path,
        default=None,
        help="feature field (.safetensors) of the scene (default: <scene stem>"
        f"{FEATURE_SUFFIX} next to the scene, when it exists)",
    )
    p.add_argument(
        "--no-features",
        action="store_true",
        help="leave the feature field out even when one lies next to the scene",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace OUT when it exists (default: refuse)"
    )


def default_features(scene: Path) -> Path:
    """`<stem>.features.safetensors` beside `scene` (the stem before the first dot)."""
    return scene.with_name(scene.name.split(".")[0] + FEATURE_SUFFIX)


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    if not args.scene.is_file():
        raise FileNotFoundError(f"no scene file at {args.scene}")
    if not args.out.name.lower().endswith(".scenelab"):
        raise ValueError(f"--out must end in .scenelab, got {args.out.name!r}")
    if args.out.exists() and not args.overwrite:
        raise FileExistsError(f"{args.out} exists; pass --overwrite to replace it")
    if args.features is not None and args.no_features:
        raise ValueError("--features and --no-features contradict each other")
    if args.features is not None and not args.features.is_file():
        raise FileNotFoundError(f"no feature field at {args.features}")

    import torch

    from editing import History
    from editing.project import Project, save_project
    from fields import load_scene
    from fields.features import load_field

    scene = load_scene(args.scene)
    features = args.features
    if features is None and not args.no_features:
        guess = default_features(args.scene)
        features = guess if guess.is_file() else None
    field = None
    if features is not None:
        field = load_field(features)
        field.check_scene(scene)  # FieldMismatchError (a ValueError) names the problem
        scene = field.attach(scene)
    project = Project(
        history=History(scene),
        selection=torch.zeros(len(scene), dtype=torch.bool),
        named_selections={},
        field=field,
        grasps=[],
        bookmarks=[],
        up=None,
        settings={},
        source=str(args.scene.resolve()),
    )
    out = save_project(project, args.out, overwrite=args.overwrite)
    summary = {
        "out": str(out),
        "gaussians": len(scene),
        "sh_degree": scene.sh_degree,
        "features": None if features is None else str(features),
        "bytes": out.stat().st_size,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    print(json.dumps(summary), flush=True)
    return 0
