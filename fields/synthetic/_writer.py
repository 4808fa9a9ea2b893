"""Writing a world to disk as a dataset: scene, label names, cameras, rendered images and label maps.

Layout of OUT_DIR:
    scene.ply (+ scene.ply.json)   Gaussians with the int32 `label` extra; meta in the sidecar
    labels.json                    {"0": "table", "1": "mug", ...}
    transforms.json                nerfstudio cameras (camera-to-world, OpenGL axes)
    images/frame_00000.png         RGB renders
    labels/frame_00000.png         uint8 label id per pixel, 255 = background
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from PIL import Image

from ..camera import Camera
from ._world import World, make_cameras

BACKGROUND_LABEL = 255
_GL_FROM_CV = np.diag([1.0, -1.0, -1.0, 1.0])  # flips camera y and z (its own inverse)


def _atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _write_json(path: Path, doc: Any) -> None:
    data = (json.dumps(doc, indent=2) + "\n").encode()
    _atomic_write(path, lambda f: f.write(data))


def _write_png(path: Path, image: np.ndarray) -> None:
    _atomic_write(path, lambda f: Image.fromarray(image).save(f, format="PNG", optimize=True))


def transforms_doc(cameras: list[Camera]) -> dict[str, Any]:
    """nerfstudio `transforms.json` for cameras sharing one set of intrinsics."""
    cam0 = cameras[0]
    frames = []
    for cam in cameras:
        c2w_gl = cam.c2w.double().numpy() @ _GL_FROM_CV
        frames.append(
            {
                "file_path": f"images/{cam.name}.png",
                "label_path": f"labels/{cam.name}.png",
                "transform_matrix": c2w_gl.tolist(),
            }
        )
    return {
        "camera_model": "OPENCV",
        "fl_x": cam0.fx,
        "fl_y": cam0.fy,
        "cx": cam0.cx,
        "cy": cam0.cy,
        "w": cam0.width,
        "h": cam0.height,
        "k1": 0.0,
        "k2": 0.0,
        "p1": 0.0,
        "p2": 0.0,
        "units": "m",
        "up": [0.0, 0.0, 1.0],
        "note": (
            "scenelab synthetic world: metres, world z up; transform_matrix is camera-to-world "
            "with OpenGL camera axes (x right, y up, z backward); labels/ holds uint8 label ids "
            "(labels.json), 255 = background"
        ),
        "frames": frames,
    }


def _check_out_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(
            f"{out} already exists and is not empty; refusing to overwrite it "
            "(pass overwrite=True, or choose an empty or new directory)"
        )


def render_views(world: World, cameras: list[Camera]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (rgb uint8 [H,W,3], label uint8 [H,W]) per camera. Labels come from rendering one-hot label
    features: argmax where alpha >= 0.5, `BACKGROUND_LABEL` elsewhere."""
    from ..rendering import render  # the renderer is only needed here

    labels = world.scene.extras["label"].long()
    onehot = torch.nn.functional.one_hot(labels, num_classes=max(world.label_names) + 1).float()
    background = torch.tensor(world.config.background, dtype=torch.float32)
    for cam in cameras:
        with torch.no_grad():
            out = render(world.scene, cam, features=onehot, background=background)
        rgb = (out.rgb.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
        label = out.features.argmax(-1).to(torch.uint8)
        label[out.alpha[..., 0] < 0.5] = BACKGROUND_LABEL
        yield rgb, label.cpu().numpy()


def write_world(
    world: World,
    out_dir: str | os.PathLike[str],
    *,
    n_views: int | None = None,
    width: int | None = None,
    height: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Write `world` to `out_dir` as a labelled multi-view dataset (layout in the module doc).

    `n_views`, `width` and `height` default to the world's config (32 views of 320x240 for the
    default config); other values rebuild the same camera rig. An existing non-empty `out_dir`
    raises `FileExistsError` unless `overwrite=True`, which replaces the files written here and
    removes stale frames. Each file is written atomically. Returns the output directory."""
    from ..formats import save_scene

    out = Path(out_dir)
    _check_out_dir(out, overwrite)
    c = world.config
    n_views = c.n_views if n_views is None else int(n_views)
    width = c.width if width is None else int(width)
    height = c.height if height is None else int(height)
    if (n_views, width, height) == (len(world.cameras), c.width, c.height):
        cameras = world.cameras
    else:
        cameras = make_cameras(world, n_views, width, height)

    images, label_maps = out / "images", out / "labels"
    images.mkdir(parents=True, exist_ok=True)
    label_maps.mkdir(exist_ok=True)
    names = {f"{cam.name}.png" for cam in cameras}
    for folder in (images, label_maps):  # stale frames of an earlier, larger write
        for stale in folder.glob("frame_*.png"):
            if stale.name not in names:
                stale.unlink()

    for cam, (rgb, label) in zip(cameras, render_views(world, cameras), strict=True):
        _write_png(images / f"{cam.name}.png", rgb)
        _write_png(label_maps / f"{cam.name}.png", label)
    save_scene(world.scene, out / "scene.ply", overwrite=True)
    _write_json(out / "labels.json", {str(k): v for k, v in sorted(world.label_names.items())})
    _write_json(out / "transforms.json", transforms_doc(cameras))
    return out
