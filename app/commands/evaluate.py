"""Score a scene (Gaussians, or a NeRF `.nerf`) on held-out photos: PSNR, SSIM and LPIPS (when
the `lpips` package and its AlexNet weights are on this machine) as JSON, plus side-by-side
images (render | photo).

Which views: those the scene's sidecar records as held out when it was trained by
`scenelab train` (same names), else the dataset's own test split (Blender), else every 8th
view (`--eval-every`). `--split all` scores every view."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ._dataset_args import add_allow_outside

HELP = "score a scene on a dataset's held-out views (PSNR, SSIM, LPIPS) as JSON"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "scene", type=Path, help="scene file (.ply, compressed .ply, .splat, .spz, or a .nerf)"
    )
    p.add_argument("--data", type=Path, required=True, help="dataset the scene depicts")
    add_allow_outside(p)
    p.add_argument("--downscale", type=float, default=None, help="default: the training one")
    p.add_argument(
        "--split",
        choices=["heldout", "all"],
        default="heldout",
        help="heldout: the views training did not see; all: every view",
    )
    p.add_argument("--eval-every", type=int, default=8, help="hold-out rule without a record")
    p.add_argument(
        "--background",
        choices=["white", "black"],
        default=None,
        help="default: the training one (white when unknown)",
    )
    p.add_argument("--images", type=Path, default=None, help="folder for side-by-side PNGs")
    p.add_argument("--json", type=Path, default=None, help="also write the JSON report here")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json")
    p.add_argument("--no-lpips", action="store_true", help="skip LPIPS even when available")


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch
    from PIL import Image

    from fields import load_dataset
    from fields.training import choose_splits, evaluate_views, side_by_side

    from .render import load_any_scene, scene_renderer

    if args.json is not None and args.json.exists() and not args.overwrite:
        raise FileExistsError(f"{args.json} exists (pass --overwrite to replace it)")
    scene, kind = load_any_scene(args.scene)
    training = scene.meta.get("training") if isinstance(scene.meta.get("training"), dict) else {}
    cfg = training.get("config", {}) if isinstance(training.get("config"), dict) else {}
    downscale = args.downscale if args.downscale is not None else float(cfg.get("downscale", 1.0))
    bg_name = args.background or ("black" if cfg.get("background") == "black" else "white")
    bg = (0.0, 0.0, 0.0) if bg_name == "black" else (1.0, 1.0, 1.0)
    ds = load_dataset(
        args.data, downscale=downscale, background=bg, allow_outside=args.allow_outside
    )
    if args.split == "all":
        idx = list(range(len(ds)))
    elif training.get("held_out"):
        wanted = set(training["held_out"])
        idx = [i for i, n in enumerate(ds.names) if n in wanted]
        if not idx:
            raise ValueError(
                f"none of the {len(wanted)} views the scene was scored on are in {args.data}"
            )
    else:
        idx = choose_splits(ds, args.eval_every).test
        if not idx:
            raise ValueError("no held-out views: use --split all or --eval-every > 0")
    cams, imgs = [], []
    for i in idx:
        cam, img = ds[i]
        cams.append(cam)
        imgs.append(img)
    renders: list[torch.Tensor] = []
    result = evaluate_views(
        scene if kind == "gaussians" else scene_renderer(scene),
        cams,
        imgs,
        background=bg,
        names=[ds.names[i] for i in idx],
        with_lpips=not args.no_lpips,
        renders_out=renders,
    )
    report = result.to_dict()
    report.update(
        {"scene": str(args.scene), "model": kind, "data": str(args.data), "background": bg_name}
    )
    if args.images is not None:
        args.images.mkdir(parents=True, exist_ok=True)
        for i, pred, img in zip(idx, renders, imgs, strict=True):
            name = Path(ds.names[i]).stem or f"view_{i}"
            Image.fromarray(np.asarray(side_by_side(pred, img))).save(args.images / f"{name}.png")
        report["images"] = str(args.images)
    text = json.dumps(report, indent=2)
    if args.json is not None:
        from fields.formats import write_files

        write_files([(args.json, lambda f: f.write(text.encode()))], overwrite=args.overwrite)
    print(text)
    return 0
