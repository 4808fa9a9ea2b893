"""Render a scene (Gaussians, or a NeRF `.nerf`) to PNG images from a dataset's cameras, from
an orbit around the scene when no dataset is given, or along a camera path (to an MP4 video).
Writes into --out (never over existing images or videos unless --overwrite).

With --data, each view's image is named after the view's photo: `<file stem>.png` (e.g.
`r_0.png`), so renders and photos pair up by name. When two views' photos share a stem (a
Blender scene's `train/r_0.png` and `test/r_0.png`), each goes into a subfolder named after the
photo's folder (`train/r_0.png`, `test/r_0.png`); `--split test` renders one split only.

With --camera-path (nerfstudio's `camera_path.json`, `fields.load_camera_path`), one frame per
`camera_path` entry at its `render_width`x`render_height`: `--out VIDEO.mp4` encodes them at the
file's `fps` (H.264, yuv420p, through the imageio-ffmpeg wheel's ffmpeg); any other --out is a
folder of `frame_00000.png`, ... H.264 in yuv420p needs even sizes: an odd width or height is
rendered one pixel wider or taller (the same focal length and principal point, so the extra
column or row shows a little more of the scene), never stretched."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._dataset_args import add_allow_outside

if TYPE_CHECKING:
    from torch import Tensor

    from fields import Camera

HELP = "render a scene (Gaussians or NeRF) to images or an MP4 (dataset views, orbit, camera path)"
VIDEO_SUFFIXES = (".mp4",)
H264_CRF = 18  # visually near-lossless; x264's default is 23
H264_PRESET = "veryfast"  # encoding keeps up with rendering on two shared cores
SPLITS = ("all", "train", "val", "test", "heldout")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "scene", type=Path, help="scene file (.ply, compressed .ply, .splat, .spz, or a .nerf)"
    )
    p.add_argument("--data", type=Path, default=None, help="dataset whose cameras to render from")
    p.add_argument(
        "--camera-path",
        type=Path,
        default=None,
        help="nerfstudio camera_path.json: one frame per 'camera_path' entry at its "
        "render_width x render_height (with --out VIDEO.mp4: a video at its fps)",
    )
    add_allow_outside(p)
    p.add_argument(
        "--out",
        type=Path,
        default=Path("renders"),
        help="output folder for PNGs, or a .mp4 file with --camera-path",
    )
    p.add_argument("--views", type=int, default=8, help="orbit views when no --data is given")
    p.add_argument("--width", type=int, default=512, help="orbit image width")
    p.add_argument("--height", type=int, default=384, help="orbit image height")
    p.add_argument(
        "--up",
        default=None,
        help="world up for the orbit: +z, -y, ... or 'x,y,z' (default: the scene's recorded up, "
        "else its cameras' mean up, else estimated from its floor or table, else -y)",
    )
    p.add_argument("--downscale", type=float, default=1.0, help="dataset downscale factor")
    p.add_argument(
        "--split",
        choices=SPLITS,
        default="all",
        help="which dataset views (with --data): all; the files' train/val/test split (every "
        "8th view is test/val when the files define none); heldout: those the scene's training "
        "held out",
    )
    p.add_argument("--max-views", type=int, default=0, help="render at most this many (0 = all)")
    p.add_argument(
        "--background",
        choices=["white", "black"],
        default="white",
        help="colour behind the scene",
    )
    p.add_argument(
        "--backend",
        choices=["auto", "cpu", "gsplat"],
        default="auto",
        help="Gaussian renderer backend (a NeRF renders with its own marcher)",
    )
    p.add_argument("--device", default="auto", help="torch device: auto, cpu or cuda")
    p.add_argument(
        "--overwrite", action="store_true", help="replace existing images (or the video) in --out"
    )
    p.add_argument("--quiet", action="store_true", help="no progress line on stderr")


# ---------------------------------------------------------------------- shared with eval/convert
def load_any_scene(path: Path, device: Any = "cpu") -> tuple[Any, str]:
    """(scene, kind): a `fields.nerf.NerfScene` for a `.nerf` file ("nerf"), else a
    `GaussianScene` read by `fields.load_scene` ("gaussians"), on `device`."""
    from fields import load_scene
    from fields.nerf import is_nerf_path, load_nerf

    if is_nerf_path(path):
        return load_nerf(path, device=device), "nerf"
    if not Path(path).exists():
        raise FileNotFoundError(f"no such scene: {path}")
    return load_scene(path).to(device), "gaussians"


def scene_renderer(
    scene: Any, backend: str = "auto"
) -> Callable[[Camera, tuple[float, float, float]], Tensor]:
    """`(camera, background) -> rgb [H,W,3]` (no grad) for a Gaussian scene or a NeRF."""
    import torch

    from fields import GaussianScene, render
    from fields.nerf import render_nerf

    if isinstance(scene, GaussianScene):

        def gaussians(cam: Camera, bg: tuple[float, float, float]) -> Tensor:
            with torch.no_grad():
                b = torch.tensor(bg, device=scene.device)
                return render(scene, cam, backend=backend, background=b).rgb

        return gaussians
    return lambda cam, bg: render_nerf(scene, cam, background=bg).rgb


def framing(scene: Any) -> tuple[Any, float]:
    """(centre [3], radius) to frame the scene: the Gaussians' robust bounds, or a NeRF's box
    (its inner box when unbounded)."""
    import numpy as np

    from fields import GaussianScene
    from fields.conventions import framing_sphere

    if isinstance(scene, GaussianScene):
        return framing_sphere(scene)
    box = scene.box
    return np.asarray(box.center, dtype=np.float64), float(box.radius)


# ---------------------------------------------------------------------- cameras
def _orbit_cameras(scene, n: int, width: int, height: int, up=None):
    """`n` views around the scene's framing sphere, 30 degrees above the horizon of its up axis
    (`fields.conventions`: --up, else the scene's meta, else -y), 50 degrees across the shorter
    side."""
    import math

    from fields.conventions import orbit_cameras, up_vector

    centre, radius = framing(scene)
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


def _dataset_views(args: argparse.Namespace, scene) -> tuple[list, list[str]]:
    """(cameras, file names relative to --out) of the dataset views asked for."""
    from fields import load_dataset
    from fields.training import choose_splits

    ds = load_dataset(args.data, downscale=args.downscale, allow_outside=args.allow_outside)
    if args.split == "heldout":
        training = scene.meta.get("training")
        held = training.get("held_out") if isinstance(training, dict) else None
        if held:
            wanted = set(held)
            idx = [i for i, n in enumerate(ds.names) if n in wanted]
            if not idx:
                raise ValueError(
                    f"none of the {len(wanted)} views the scene's training held out are in "
                    f"{args.data}"
                )
        else:
            idx = choose_splits(ds, 8).test
        ds = ds.subset(idx)
    elif args.split != "all":
        ds = ds.split(args.split)
    if len(ds) == 0:
        raise ValueError(f"no views to render in {args.data} (split {args.split})")
    return ds.cameras, view_file_names(ds.names)


def view_file_names(names: list[str]) -> list[str]:
    """`<stem>.png` per view name (a photo's path); where stems repeat, `<folder>/<stem>.png`
    with the photo's folder. Names that still clash raise `ValueError`."""
    paths = [Path(n.replace("\\", "/")) for n in names]
    flat = [f"{p.stem or f'view_{i:03d}'}.png" for i, p in enumerate(paths)]
    if len(set(flat)) == len(flat):
        return flat
    nested = [
        f"{p.parent.name}/{f}" if p.parent.name else f for p, f in zip(paths, flat, strict=True)
    ]
    seen: dict[str, str] = {}
    for name, f in zip(names, nested, strict=True):
        if f in seen:
            raise ValueError(
                f"views {seen[f]!r} and {name!r} would both be rendered to {f}; render one split "
                "(--split) or point --data at one transforms file"
            )
        seen[f] = name
    return nested


# ---------------------------------------------------------------------- video
def even_camera(camera: Camera) -> Camera:
    """`camera` one pixel wider and/or taller where its width or height is odd (H.264 in
    yuv420p needs even sizes), with the same intrinsics: the extra column or row shows a little
    more of the scene instead of stretching or padding the image."""
    import dataclasses

    w, h = camera.width + camera.width % 2, camera.height + camera.height % 2
    if (w, h) == (camera.width, camera.height):
        return camera
    return dataclasses.replace(camera, width=w, height=h)


def render_video(
    draw: Callable[[Camera], Tensor],  # camera -> rgb [H,W,3] in [0,1], any device
    cameras: Sequence[Camera],  # one per frame, all the same size
    out: Path,
    fps: float,
    *,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[int, int]:
    """Render one frame per camera and encode them into the MP4 `out` (H.264, yuv420p, at
    `fps`); returns the video's (width, height). Odd sizes render one pixel larger
    (`even_camera`). The video is written to a temporary file beside `out` and renamed at the
    end, so a failure or a cancel (`progress(done, total)` raising) leaves no partial video and
    an existing file untouched; an existing `out` is refused unless `overwrite`."""
    import numpy as np
    import torch
    from imageio_ffmpeg import write_frames

    out = Path(out)
    if out.suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(f"{out}: a video file must end in {' or '.join(VIDEO_SUFFIXES)}")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass --overwrite or choose another --out")
    if not cameras:
        raise ValueError("no frames to render")
    sizes = {(c.width, c.height) for c in cameras}
    if len(sizes) != 1:
        raise ValueError(f"every frame must have the same size, got {sorted(sizes)}")
    cams = [even_camera(c) for c in cameras]
    width, height = cams[0].width, cams[0].height
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.stem}.", suffix=".partial.mp4", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    writer = write_frames(
        str(tmp),
        (width, height),
        fps=float(fps),
        codec="libx264",
        pix_fmt_out="yuv420p",
        quality=None,
        macro_block_size=1,  # sizes are even already: no rescaling by the writer
        output_params=["-crf", str(H264_CRF), "-preset", H264_PRESET, "-movflags", "+faststart"],
        ffmpeg_log_level="error",
    )
    try:
        writer.send(None)  # start ffmpeg
        for i, cam in enumerate(cams):
            with torch.no_grad():
                rgb = draw(cam)
            img = (rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()
            writer.send(np.ascontiguousarray(img))
            if progress is not None:
                progress(i + 1, len(cams))
        writer.close()  # waits for ffmpeg to finish the file
        os.replace(tmp, out)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    return width, height


def _camera_path_frames(args: argparse.Namespace) -> tuple[list[Camera], float]:
    from fields import load_camera_path

    if args.data is not None:
        raise ValueError("--camera-path and --data both choose the cameras: give one")
    if args.split != "all":
        raise ValueError("--split picks dataset views: give --data, not --camera-path")
    doc = load_camera_path(args.camera_path)
    return list(doc.cameras), doc.fps


# ---------------------------------------------------------------------- the command
def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch
    from PIL import Image

    from fields import parse_up

    if args.up is not None:
        parse_up(args.up)  # a bad --up fails before the scene loads
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    video = args.camera_path is not None and args.out.suffix.lower() in VIDEO_SUFFIXES
    if args.camera_path is not None:
        cameras, fps = _camera_path_frames(args)  # a bad file fails before the scene loads
        if video and args.out.exists() and not args.overwrite:
            raise FileExistsError(
                f"{args.out} already exists; pass --overwrite or choose another --out"
            )
    scene, kind = load_any_scene(args.scene, device)
    if args.camera_path is not None:
        names = [f"frame_{i:05d}.png" for i in range(len(cameras))]
    elif args.data is not None:
        cameras, names = _dataset_views(args, scene)
    else:
        if args.split != "all":
            raise ValueError("--split picks dataset views: give --data")
        cameras = _orbit_cameras(scene, args.views, args.width, args.height, args.up)
        names = [
            f"{(c.name or f'view_{i:03d}').replace('/', '_')}.png" for i, c in enumerate(cameras)
        ]
    if args.max_views > 0:
        cameras, names = cameras[: args.max_views], names[: args.max_views]
    draw = scene_renderer(scene, args.backend)
    bg = (0.0, 0.0, 0.0) if args.background == "black" else (1.0, 1.0, 1.0)
    what = f"{len(scene)} Gaussians" if kind == "gaussians" else "a NeRF"
    if video:
        return _run_video(args, cameras, fps, lambda cam: draw(cam, bg), what)
    paths = [args.out / n for n in names]
    clash = [p for p in paths if p.exists()]
    if clash and not args.overwrite:
        raise FileExistsError(
            f"{len(clash)} image(s) already exist in {args.out} (e.g. "
            f"{clash[0].relative_to(args.out)}); pass --overwrite or choose another --out"
        )
    for folder in sorted({p.parent for p in paths}):
        folder.mkdir(parents=True, exist_ok=True)
    quiet = args.quiet
    t0 = time.perf_counter()
    for i, (cam, path) in enumerate(zip(cameras, paths, strict=True)):
        rgb = draw(cam, bg)
        img = (rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()
        Image.fromarray(np.ascontiguousarray(img)).save(path)
        if not quiet:
            sys.stderr.write(f"\rrender {i + 1}/{len(cameras)} {path.relative_to(args.out)}  ")
            sys.stderr.flush()
    if not quiet and cameras:
        sys.stderr.write("\n")
    dt = time.perf_counter() - t0
    print(
        f"rendered {len(cameras)} view(s) of {what} into {args.out} "
        f"({1000 * dt / max(1, len(cameras)):.0f} ms per view)"
    )
    return 0


def _run_video(
    args: argparse.Namespace,
    cameras: list[Camera],
    fps: float,
    draw: Callable[[Camera], Tensor],
    what: str,
) -> int:
    t0 = time.perf_counter()

    def progress(done: int, total: int) -> None:
        if not args.quiet:
            rate = done / max(1e-9, time.perf_counter() - t0)
            sys.stderr.write(f"\rrender frame {done}/{total} ({rate:.1f} frames/s)  ")
            sys.stderr.flush()

    src = (cameras[0].width, cameras[0].height)
    width, height = render_video(
        draw, cameras, args.out, fps, overwrite=args.overwrite, progress=progress
    )
    if not args.quiet:
        sys.stderr.write("\n")
    dt = time.perf_counter() - t0
    note = ""
    if (width, height) != src:
        note = f"; {src[0]}x{src[1]} rendered as {width}x{height}: H.264 needs even sizes"
    print(
        f"rendered {len(cameras)} frame(s) of {what} into {args.out} ({width}x{height} at "
        f"{fps:g} fps, {len(cameras) / max(dt, 1e-9):.1f} frames/s{note})"
    )
    return 0
