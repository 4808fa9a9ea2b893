"""Render a scene to PNG images from a dataset's cameras, or from an orbit around the scene when
no dataset is given. Writes into --out (never over existing images unless --overwrite)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

HELP = "render a scene to images (dataset cameras or an orbit)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("scene", type=Path, help="scene file (.ply, compressed .ply, .splat, .spz)")
    p.add_argument("--data", type=Path, default=None, help="dataset whose cameras to render from")
    p.add_argument("--out", type=Path, default=Path("renders"), help="output folder for PNGs")
    p.add_argument("--views", type=int, default=8, help="orbit views when no --data is given")
    p.add_argument("--width", type=int, default=512, help="orbit image width")
    p.add_argument("--height", type=int, default=384, help="orbit image height")
    p.add_argument(
        "--up",
        default=None,
        help="world up for the orbit: +z, -y, ... or 'x,y,z' (default: the scene's meta, else -y)",
    )
    p.add_argument("--downscale", type=float, default=1.0, help="dataset downscale factor")
    p.add_argument("--max-views", type=int, default=0, help="render at most this many (0 = all)")
    p.add_argument(
        "--backend", choices=["auto", "cpu", "gsplat"], default="auto", help="renderer backend"
    )
    p.add_argument("--device", default="auto", help="torch device: auto, cpu or cuda")
    p.add_argument("--overwrite", action="store_true", help="replace existing images in --out")


def _orbit_cameras(scene, n: int, width: int, height: int, up=None):
    """`n` views around the scene's framing sphere, 30 degrees above the horizon of its up axis
    (`fields.conventions`: --up, else the scene's meta, else -y), 50 degrees across the shorter
    side."""
    import math

    from fields.conventions import framing_sphere, orbit_cameras, up_vector

    centre, radius = framing_sphere(scene)
    azimuths = [2 * math.pi * i / n for i in range(n)]
    return orbit_cameras(
        centre,
        radius,
        up_vector(scene, override=up),
        azimuths,
        [30.0] * n,
        width=width,
        height=height,
        fov_deg=50.0,
        margin=1.1,
        name="orbit",
    )


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch
    from PIL import Image

    from fields import load_dataset, load_scene, parse_up, render

    if args.up is not None:
        parse_up(args.up)  # a bad --up fails before the scene loads
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    scene = load_scene(args.scene).to(device)
    if args.data is not None:
        cameras = load_dataset(args.data, downscale=args.downscale).cameras
    else:
        cameras = _orbit_cameras(scene, args.views, args.width, args.height, args.up)
    if args.max_views > 0:
        cameras = cameras[: args.max_views]
    args.out.mkdir(parents=True, exist_ok=True)
    paths = [
        args.out / f"{(c.name or f'view_{i:03d}').replace('/', '_')}.png"
        for i, c in enumerate(cameras)
    ]
    paths = [p if p.name.endswith(".png") else p.with_suffix(".png") for p in paths]
    clash = [p for p in paths if p.exists()]
    if clash and not args.overwrite:
        raise FileExistsError(
            f"{len(clash)} image(s) already exist in {args.out} (e.g. {clash[0].name}); "
            "pass --overwrite or choose another --out"
        )
    bg = torch.ones(3, device=device)
    t0 = time.perf_counter()
    with torch.no_grad():
        for cam, path in zip(cameras, paths, strict=True):
            out = render(scene, cam, backend=args.backend, background=bg)
            img = (out.rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()
            Image.fromarray(np.ascontiguousarray(img)).save(path)
    dt = time.perf_counter() - t0
    print(
        f"rendered {len(cameras)} view(s) of {len(scene)} Gaussians into {args.out} "
        f"({1000 * dt / max(1, len(cameras)):.0f} ms per view)"
    )
    return 0
