"""`transforms.json` as written by nerfstudio and instant-ngp (and Blender's per-split files).

Conventions (nerfstudio `nerfstudio_dataparser.py`, instant-ngp `colmap2nerf.py`):
- `frames[i].transform_matrix` is camera-to-world, OpenGL camera axes (x right, y up, z back).
- Intrinsics `fl_x, fl_y, cx, cy, w, h` and distortion `k1..k4, p1, p2`, `camera_model` may be
  top-level or per frame (per frame wins). Perspective coefficients (k1, k2, k3, p1, p2) and
  OPENCV_FISHEYE's k1..k4 are undistorted on load (see `Dataset`); a perspective k4 (an r^8
  term OpenCV lacks) is warned about and left as it is. instant-ngp / Blender give `camera_angle_x`
  (and optionally `camera_angle_y`) instead of focal lengths; `cx, cy` default to the centre.
- `file_path` is relative to the json's folder; a path without extension gets `.png`.
- nerfstudio's optional `train_filenames` / `val_filenames` / `test_filenames` become splits.
Poses are used as stored: no re-orientation or rescaling (nerfstudio's dataparser would)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..camera import Camera
from . import _images
from ._dataset import (
    Dataset,
    Distortion,
    ImageRef,
    View,
    check_inside,
    check_options,
    keep_existing,
    warn_distortion,
)
from ._errors import DatasetError

_INTRINSIC_KEYS = (
    "fl_x",
    "fl_y",
    "cx",
    "cy",
    "w",
    "h",
    "camera_angle_x",
    "camera_angle_y",
    "camera_model",
    "is_fisheye",
)
_DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")
_PERSPECTIVE_MODELS = frozenset(
    {
        "PINHOLE",
        "SIMPLE_PINHOLE",
        "PERSPECTIVE",
        "SIMPLE_RADIAL",
        "RADIAL",
        "OPENCV",
        "FULL_OPENCV",
        "OPENCV_FISHEYE",
        "FISHEYE",
        "FISHEYE624",
    }
)
_NON_PERSPECTIVE_MODELS = frozenset(
    {
        "EQUIRECTANGULAR",
        "OMNIDIRECTIONALSTEREO_L",
        "OMNIDIRECTIONALSTEREO_R",
        "VR180_L",
        "VR180_R",
        "ORTHOPHOTO",
    }
)
_EXTENSIONS = (".png", ".jpg", ".jpeg", ".PNG", ".JPG", ".JPEG")


@dataclass(frozen=True)
class Frame:
    """One frame of a transforms file, before its camera is built."""

    source: Path  # the json file
    index: int
    intrinsics: dict[str, Any]
    c2w: np.ndarray  # [4,4] or [3,4], OpenGL axes
    image: ImageRef
    name: str
    split: str | None


def read_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(path, f"invalid JSON: {e}") from e
    if not isinstance(meta, dict):
        raise DatasetError(path, f"expected a JSON object, got {type(meta).__name__}")
    frames = meta.get("frames")
    if not isinstance(frames, list):
        raise DatasetError(path, "missing 'frames' list")
    if not frames:
        raise DatasetError(path, "'frames' is empty")
    return meta


def _image_ref(root: Path, file_path: str) -> tuple[ImageRef, str]:
    """(ImageRef, view name) for a `file_path` relative to `root` (or absolute)."""
    full = Path(os.path.normpath(root / file_path))
    if not full.is_file() and full.suffix not in _EXTENSIONS:
        # Blender writes "./train/r_0" for "./train/r_0.png".
        candidates = [full.with_name(full.name + ext) for ext in _EXTENSIONS]
        full = next((c for c in candidates if c.is_file()), candidates[0])
    rel = Path(os.path.relpath(full, root)) if full.is_relative_to(root) else None
    if rel is not None and len(rel.parts) >= 2:
        return ImageRef(root, rel.parts[0], Path(*rel.parts[1:]).as_posix()), rel.as_posix()
    if rel is not None:
        return ImageRef(root, None, rel.as_posix()), rel.as_posix()
    return ImageRef(full.parent.parent, full.parent.name, full.name), full.as_posix()


def read_frames(
    path: Path, split: str | None = None, *, allow_outside: bool = False
) -> list[Frame]:
    """Parse a transforms file into frames; `split` tags them all (Blender's per-split files).
    Image paths must resolve inside the file's folder unless `allow_outside`."""
    meta = read_json(path)
    root = path.parent.absolute()
    top = {k: meta[k] for k in (*_INTRINSIC_KEYS, *_DISTORTION_KEYS) if k in meta}

    split_of: dict[Path, str] = {}
    for name in ("train", "val", "test"):
        listed = meta.get(f"{name}_filenames")
        if listed is None:
            continue
        if not isinstance(listed, list) or not all(isinstance(x, str) for x in listed):
            raise DatasetError(path, f"'{name}_filenames' must be a list of file paths")
        for file_path in listed:
            split_of[_image_ref(root, file_path)[0].path] = name

    frames = []
    for index, frame in enumerate(meta["frames"]):
        where = f"frames[{index}]"
        if not isinstance(frame, dict):
            raise DatasetError(path, f"{where} is not an object")
        file_path = frame.get("file_path")
        if not isinstance(file_path, str) or not file_path:
            raise DatasetError(path, f"{where}: missing 'file_path'")
        if "transform_matrix" not in frame:
            raise DatasetError(path, f"{where} ({file_path}): missing 'transform_matrix'")
        c2w = _matrix(frame["transform_matrix"], path, f"{where} ({file_path})")
        ref, name = _image_ref(root, file_path)
        if not allow_outside:
            check_inside(ref.path, root, source=path, what=f"{where}: file_path {file_path!r} ->")
        intrinsics = top | {
            k: frame[k] for k in (*_INTRINSIC_KEYS, *_DISTORTION_KEYS) if k in frame
        }
        tag = split if split is not None else split_of.get(ref.path)
        frames.append(Frame(path, index, intrinsics, c2w, ref, name, tag))
    return frames


def _matrix(value: Any, path: Path, where: str) -> np.ndarray:
    try:
        M = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise DatasetError(path, f"{where}: transform_matrix is not a numeric matrix") from e
    if M.shape not in ((4, 4), (3, 4)):
        shape = "x".join(map(str, M.shape)) or "()"
        raise DatasetError(
            path,
            f"{where}: transform_matrix has shape {shape}, expected 4x4 (or 3x4) camera-to-world",
        )
    if not np.isfinite(M).all():
        raise DatasetError(path, f"{where}: transform_matrix is not finite")
    if M.shape == (4, 4) and not np.allclose(M[3], [0.0, 0.0, 0.0, 1.0], atol=1e-6):
        raise DatasetError(
            path, f"{where}: transform_matrix last row is {M[3].tolist()}, expected [0, 0, 0, 1]"
        )
    if abs(np.linalg.det(M[:3, :3])) < 1e-12:
        raise DatasetError(path, f"{where}: transform_matrix rotation is singular")
    return M


def _number(m: dict[str, Any], key: str, frame: Frame, positive: bool = False) -> float:
    try:
        value = float(m[key])
    except (TypeError, ValueError) as e:
        raise DatasetError(frame.source, f"{frame.name}: '{key}' is not a number") from e
    if not math.isfinite(value) or (positive and value <= 0):
        raise DatasetError(frame.source, f"{frame.name}: bad '{key}' = {value}")
    return value


def _focal(m: dict[str, Any], frame: Frame, fl: str, angle: str, size: int) -> float | None:
    if fl in m:
        return _number(m, fl, frame, positive=True)
    if angle in m:
        a = _number(m, angle, frame, positive=True)
        if a >= math.pi:
            raise DatasetError(frame.source, f"{frame.name}: '{angle}' = {a} rad is not < pi")
        return 0.5 * size / math.tan(0.5 * a)
    return None


def _distortion(m: dict[str, Any], frame: Frame) -> Distortion:
    coeffs = {k: _number(m, k, frame) for k in _DISTORTION_KEYS if k in m}
    model = m.get("camera_model")
    if model is None:
        if m.get("is_fisheye"):  # instant-ngp's flag
            model = "OPENCV_FISHEYE"
        else:
            model = "OPENCV" if any(v != 0.0 for v in coeffs.values()) else "PINHOLE"
    if not isinstance(model, str) or model not in _PERSPECTIVE_MODELS:
        kind = "non-perspective" if str(model) in _NON_PERSPECTIVE_MODELS else "unknown"
        raise DatasetError(frame.source, f"{frame.name}: {kind} camera_model {model!r}")
    return Distortion(model, coeffs)


def build_views(frames: list[Frame]) -> list[View]:
    """Cameras for frames whose images exist. Sizes missing from the file (instant-ngp, Blender)
    come from the header of the first such frame's image: one header read, no decoding."""
    probed: tuple[int, int] | None = None
    views = []
    for frame in frames:
        m = frame.intrinsics
        if "w" in m and "h" in m:
            w, h = _number(m, "w", frame, True), _number(m, "h", frame, True)
            if not (w.is_integer() and h.is_integer()):
                raise DatasetError(frame.source, f"{frame.name}: size {w}x{h} is not integer")
            width, height = int(w), int(h)
        else:
            if probed is None:
                probed = _images.image_size(frame.image.path)
            width, height = probed
        fx = _focal(m, frame, "fl_x", "camera_angle_x", width)
        fy = _focal(m, frame, "fl_y", "camera_angle_y", height)
        if fx is None and fy is None:
            raise DatasetError(
                frame.source, f"{frame.name}: no focal length (fl_x/fl_y or camera_angle_x)"
            )
        fx = fy if fx is None else fx
        fy = fx if fy is None else fy
        cx = _number(m, "cx", frame) if "cx" in m else width / 2
        cy = _number(m, "cy", frame) if "cy" in m else height / 2
        K = torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
        camera = Camera.from_c2w(
            torch.from_numpy(frame.c2w), K, width, height, frame.name, opengl=True
        )
        views.append(View(camera, frame.image, _distortion(m, frame), frame.split))
    return views


def views_from_files(
    files: list[tuple[Path, str | None]], *, allow_outside: bool = False
) -> list[View]:
    """Frames of several transforms files (with split tags) -> views, skipping frames whose
    image is missing with ONE warning for all files together."""
    frames = [
        f for path, split in files for f in read_frames(path, split, allow_outside=allow_outside)
    ]
    source = files[0][0] if len(files) == 1 else files[0][0].parent
    frames = keep_existing(frames, lambda f: f.image.path, source, "frames")
    views = build_views(frames)
    warn_distortion(views, source)
    return views


def load_transforms(
    path: str | Path,
    *,
    downscale: float = 1,
    background: tuple[float, float, float] = (1.0, 1.0, 1.0),
    allow_outside: bool = False,
) -> Dataset:
    """A nerfstudio / instant-ngp `transforms.json` (the file, or the folder holding it).

    Frames keep their file order. Frames whose image file is missing are skipped with one
    warning (all missing: DatasetError). Lens distortion is undistorted on load (see
    `Dataset`). With an integer `downscale=n`, `images_<n>/`
    next to the image folder is preferred (nerfstudio's convention).

    Every file the json names (images, `ply_file_path`) must resolve inside its folder:
    `../x.png`, absolute paths and symlinks pointing out raise `DatasetError` unless
    `allow_outside=True`."""
    check_options(downscale, background)
    path = Path(path).absolute()
    json_path = path / "transforms.json" if path.is_dir() else path
    if not json_path.is_file():
        raise FileNotFoundError(f"no transforms file: {json_path}")
    views = views_from_files([(json_path, None)], allow_outside=allow_outside)
    return Dataset(
        views,
        root=json_path.parent,
        downscale=downscale,
        background=background,
        points=_ply_points(json_path, allow_outside),
        allow_outside=allow_outside,
    )


def _ply_points(
    json_path: Path, allow_outside: bool = False
) -> Callable[[], tuple[torch.Tensor, torch.Tensor] | None] | None:
    """The point cloud a nerfstudio `ply_file_path` names (same world frame as the poses), as a
    lazy loader of (xyz float32 [P,3], rgb uint8 [P,3]); None when the file names none."""
    try:
        meta = json.loads(json_path.read_text())
    except (OSError, ValueError):
        return None
    rel = meta.get("ply_file_path") if isinstance(meta, dict) else None
    if not isinstance(rel, str) or not rel:
        return None
    ply_path = json_path.parent / rel
    if not allow_outside:
        check_inside(ply_path, json_path.parent, source=json_path, what=f"ply_file_path {rel!r} ->")

    def load() -> tuple[torch.Tensor, torch.Tensor]:
        from ..formats import read_point_cloud

        if not ply_path.is_file():
            raise DatasetError(json_path, f"ply_file_path {rel!r} does not exist")
        xyz, rgb = read_point_cloud(ply_path)
        return torch.from_numpy(xyz), torch.from_numpy(rgb)

    return load
