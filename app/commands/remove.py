"""Remove an object and fill what it hid: the selected Gaussians are deleted, the surfaces they
rested on or stood in front of (the table under a mug, a wall behind it) are found, and the
exposed hole is filled with new Gaussians that continue the surrounding texture
(`editing.remove_object`; weight-free). With --inpaint-model the fill's colours are refined by a
masked score-distillation pass under a diffusers (inpainting) model.

The selection is a bool mask file or a language query on a feature field. Writes OUT (never the
input) and, with --features, the feature field of the result next to it (OUT's stem +
.features.safetensors): the fill answers queries as the surface it continues.

    scenelab make-demo world --seed 0
    scenelab distill world/scene.ply --data world --out world/scene.features.safetensors
    scenelab remove world/scene.ply --features world/scene.features.safetensors \\
        --select "mug" --out no_mug.ply
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ._selection import add_selection_arguments, selection

HELP = "remove the selected object and fill the hole it leaves (weight-free); writes a new scene"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("scene", type=Path, help="scene file (never modified)")
    add_selection_arguments(p, "remove")
    p.add_argument("--out", type=Path, required=True, help="output scene (.ply, .splat, .spz...)")
    p.add_argument(
        "--no-walls",
        action="store_true",
        help="fill only the support the object rested on, not surfaces behind it",
    )
    p.add_argument(
        "--up", default=None, help='world up ("+z", "-y", "0,0,1"); default: the scene\'s'
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the exemplar choice")
    p.add_argument(
        "--inpaint-model",
        default=None,
        help="diffusers model id or folder (an SD inpainting checkpoint, or any SD model) to "
        "refine the fill's colours with masked SDS; default: no refinement, no weights needed",
    )
    p.add_argument(
        "--inpaint-prompt",
        default=None,
        help='what the filled surface is ("a wooden table top"); default: from its label',
    )
    p.add_argument("--inpaint-steps", type=int, default=100, help="refinement steps")
    p.add_argument(
        "--device", default="auto", help="torch device for the refinement: auto, cpu, cuda"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")


def run(args: argparse.Namespace) -> int:
    import torch

    from editing import semantics
    from editing.removal import RemovalConfig, remove_object
    from fields import load_scene, save_scene

    from ._features import load_field_for
    from .insert import features_path

    src, out = args.scene, args.out
    if not src.is_file():
        raise FileNotFoundError(f"scene {src} does not exist")
    if out.resolve() == src.resolve():
        raise ValueError(f"--out {out} is the input scene; the input is never overwritten")
    feat_out = features_path(out) if args.features is not None else None
    for path in (out, feat_out):
        if path is not None and path.exists() and not args.overwrite:
            raise FileExistsError(f"{path} exists (pass --overwrite to replace it)")
    if feat_out is not None and args.features.resolve() == feat_out.resolve():
        raise ValueError(f"the output feature field {feat_out} would overwrite --features")
    config = RemovalConfig(
        up=args.up,
        walls=not args.no_walls,
        seed=args.seed,
        refine_steps=args.inpaint_steps,
        refine_prompt=args.inpaint_prompt,
    )
    scene = load_scene(src)
    field = None
    if args.features is not None:
        field = load_field_for(args.features, src, scene, "remove")
        scene = field.attach(scene)
    mask = selection(args, scene, "remove")
    print(f"removing {int(mask.sum()):,} of {len(scene):,} Gaussians")

    distiller = None
    if args.inpaint_model is not None:
        from editing.text_edit import load_edit_distiller

        device = args.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        t = time.perf_counter()
        distiller = load_edit_distiller(args.inpaint_model, device=device)
        print(f"loaded {args.inpaint_model} on {device} in {time.perf_counter() - t:.1f} s")

    t0 = time.perf_counter()
    result = remove_object(scene, mask, config, distiller=distiller)
    dt = time.perf_counter() - t0
    new_scene = result.scene
    new_field = None
    if field is not None:  # the fill carries its exemplars' features already
        keep = torch.zeros(len(new_scene), dtype=torch.bool)
        new_field = semantics.update_field(field, new_scene, keep)
        new_scene = new_scene.with_extras(feature=None)  # features live next to the scene
    save_scene(new_scene, out, overwrite=args.overwrite)
    for s in result.surfaces:
        print(f"filled {s['kind']}: {s['count']:,} Gaussians over {s['area'] * 1e4:.1f} cm²")
    print(
        f"removed {result.removed:,}, filled {int(result.fill.sum()):,} in {dt:.2f} s -> "
        f"{out} ({len(new_scene):,} Gaussians)"
    )
    if new_field is not None and feat_out is not None:
        from fields.features import scene_hash

        new_field.scene_hash = scene_hash(out)
        new_field.save(feat_out, overwrite=args.overwrite)
        print(f"features -> {feat_out}")
    return 0
