"""Render a scene to PNG images from a dataset's cameras, or from an orbit around the scene when
no dataset is given. Writes into --out (never over existing images unless --overwrite)."""

from __future__ import annotations

import argparse
import math
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
    p.add_argument("--downscale", type=float, default=1.0, help="dataset downscale factor")
    p.add_argument("--max-views", type=int, default=0, help="render at most this many (0 = all)")
    p.add_argument(
        "--backend", choices=["auto", "cpu", "gsplat"], default="auto", help="renderer backend"
    )
    p.add_argument("--device", default="auto", help="torch device: auto, cpu or cuda")
    p.add_argument("--overwrite", action="store_true", help="replace existing images in --out")


def _orbit_cameras(scene, n: int, width: int, height: int):
    import torch

    from fields import Camera

    up = torch.tensor(scene.meta.get("up", [0.0, 0.0, 1.0]), dtype=torch.float64)
    lo, hi = scene.bounds(quantile=0.01)
    center = ((lo + hi) / 2).double()
    radius = float((hi - lo).double().norm()) * 0.9 + 1e-3
    # Two horizontal axes perpendicular to `up`.
    a = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    if abs(float(a @ up)) > 0.9:
        a = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    e1 = a - (a @ up) * up
    e1 = e1 / e1.norm()
    e2 = torch.linalg.cross(up, e1)
    f = 0.5 * height / math.tan(math.radians(50) / 2)
    K = torch.tensor([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]])
    cams = []
    for i in range(n):
        th = 2 * math.pi * i / n
        eye = center + radius * (0.8 * (math.cos(th) * e1 + math.sin(th) * e2) + 0.6 * up)
        cams.append(Camera.look_at(eye, center, up, K, width, height, name=f"orbit_{i:03d}"))
    return cams


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch
    from PIL import Image

    from fields import load_dataset, load_scene, render

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    scene = load_scene(args.scene).to(device)
    if args.data is not None:
        cameras = load_dataset(args.data, downscale=args.downscale).cameras
    else:
        cameras = _orbit_cameras(scene, args.views, args.width, args.height)
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
