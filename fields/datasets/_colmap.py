"""COLMAP sparse models (`cameras`, `images`, `points3D` as `.bin` or `.txt`).

Layouts follow COLMAP's `scripts/python/read_write_model.py`: little-endian; cameras
`<iiQQ` + params as doubles; images `<idddddddi` (id, qvec wxyz, tvec, camera id), a
NUL-terminated name, then `<Q` count of `<ddq` 2D points; points3D `<QdddBBBd` + `<Q` track
length of `<ii` pairs. `qvec`/`tvec` are world-to-camera in OpenCV axes, so they are our
`viewmat` directly; intrinsics use the same pixel-centre-at-0.5 convention as `Camera.K`."""

from __future__ import annotations

import functools
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..camera import Camera
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

# name -> (model id, parameter names). Ids are COLMAP's `CameraModelId`.
_MODELS: dict[str, tuple[int, tuple[str, ...]]] = {
    "SIMPLE_PINHOLE": (0, ("f", "cx", "cy")),
    "PINHOLE": (1, ("fx", "fy", "cx", "cy")),
    "SIMPLE_RADIAL": (2, ("f", "cx", "cy", "k")),
    "RADIAL": (3, ("f", "cx", "cy", "k1", "k2")),
    "OPENCV": (4, ("fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2")),
    "OPENCV_FISHEYE": (5, ("fx", "fy", "cx", "cy", "k1", "k2", "k3", "k4")),
    "FULL_OPENCV": (
        6,
        ("fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2", "k3", "k4", "k5", "k6"),
    ),
    "FOV": (7, ("fx", "fy", "cx", "cy", "omega")),
    "SIMPLE_RADIAL_FISHEYE": (8, ("f", "cx", "cy", "k")),
    "RADIAL_FISHEYE": (9, ("f", "cx", "cy", "k1", "k2")),
    "THIN_PRISM_FISHEYE": (
        10,
        ("fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2", "k3", "k4", "sx1", "sy1"),
    ),
    "RAD_TAN_THIN_PRISM_FISHEYE": (
        11,
        (
            "fx",
            "fy",
            "cx",
            "cy",
            "k0",
            "k1",
            "k2",
            "k3",
            "k4",
            "k5",
            "p0",
            "p1",
            "s0",
            "s1",
            "s2",
            "s3",
        ),
    ),
}
_MODEL_BY_ID = {model_id: name for name, (model_id, _) in _MODELS.items()}
_INTRINSIC_NAMES = frozenset({"f", "fx", "fy", "cx", "cy"})


@dataclass(frozen=True)
class _ColmapCamera:
    id: int
    model: str
    width: int
    height: int
    params: tuple[float, ...]


@dataclass(frozen=True)
class _ColmapImage:
    id: int
    qvec: tuple[float, float, float, float]  # wxyz, world-to-camera rotation
    tvec: tuple[float, float, float]
    camera_id: int
    name: str


# ---------------------------------------------------------------------- finding a model
def _model_files(d: Path) -> tuple[Path, Path, Path | None] | None:
    for ext in (".bin", ".txt"):
        cams, imgs, pts = d / f"cameras{ext}", d / f"images{ext}", d / f"points3D{ext}"
        if cams.is_file() and imgs.is_file():
            return cams, imgs, (pts if pts.is_file() else None)
    return None


def find_model(path: Path) -> tuple[Path, list[Path]] | None:
    """(model dir, candidate roots holding `images/`) for a dataset dir or a model dir."""
    for sub in (("sparse", "0"), ("sparse",), ("colmap", "sparse", "0")):
        d = path.joinpath(*sub)
        if _model_files(d) is not None:
            return d, [path]
    if _model_files(path) is not None:
        return path, [path, path.parent, path.parent.parent]
    return None


# ---------------------------------------------------------------------- binary
class _Buffer:
    """Sequential little-endian reads that turn short data into DatasetError."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data = path.read_bytes()
        self.offset = 0

    def unpack(self, fmt: str) -> tuple:
        size = struct.calcsize(fmt)
        if self.offset + size > len(self.data):
            self.truncated()
        values = struct.unpack_from(fmt, self.data, self.offset)
        self.offset += size
        return values

    def skip(self, size: int) -> None:
        if self.offset + size > len(self.data):
            self.truncated()
        self.offset += size

    def count(self, min_record: int, what: str) -> int:
        (n,) = self.unpack("<Q")
        if n * min_record > len(self.data) - self.offset:
            self.truncated(f"header says {n} {what}")
        return n

    def cstring(self) -> str:
        end = self.data.find(b"\0", self.offset)
        if end < 0:
            self.truncated()
        raw = self.data[self.offset : end]
        self.offset = end + 1
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DatasetError(self.path, f"image name is not UTF-8 at byte {end}") from e

    def truncated(self, why: str = "") -> None:
        detail = f" ({why})" if why else ""
        raise DatasetError(
            self.path,
            f"truncated: needs more than its {len(self.data)} bytes at byte {self.offset}{detail}",
        )

    def finish(self) -> None:
        if self.offset != len(self.data):
            raise DatasetError(
                self.path, f"{len(self.data) - self.offset} unexpected trailing bytes"
            )


def _read_cameras_bin(path: Path) -> dict[int, _ColmapCamera]:
    buf = _Buffer(path)
    cameras = {}
    for _ in range(buf.count(24, "cameras")):
        camera_id, model_id, width, height = buf.unpack("<iiQQ")
        if model_id not in _MODEL_BY_ID:
            raise DatasetError(path, f"camera {camera_id}: unknown camera model id {model_id}")
        model = _MODEL_BY_ID[model_id]
        n = len(_MODELS[model][1])
        cameras[camera_id] = _ColmapCamera(camera_id, model, width, height, buf.unpack(f"<{n}d"))
    buf.finish()
    return cameras


def _read_images_bin(path: Path) -> list[_ColmapImage]:
    buf = _Buffer(path)
    images = []
    for _ in range(buf.count(64 + 1 + 8, "images")):
        image_id, qw, qx, qy, qz, tx, ty, tz, camera_id = buf.unpack("<idddddddi")
        name = buf.cstring()
        (num_points2d,) = buf.unpack("<Q")
        buf.skip(24 * num_points2d)  # (x, y, point3D_id) per keypoint; not needed
        images.append(_ColmapImage(image_id, (qw, qx, qy, qz), (tx, ty, tz), camera_id, name))
    buf.finish()
    return images


_POINT_DTYPE = np.dtype([("id", "<u8"), ("xyz", "<f8", 3), ("rgb", "u1", 3), ("error", "<f8")])


def _read_points_bin(path: Path) -> tuple[Tensor, Tensor]:
    buf = _Buffer(path)
    n = buf.count(_POINT_DTYPE.itemsize + 8, "points")
    # Tracks vary in length, so only the record offsets need a Python loop; the fixed 43-byte
    # records are then gathered in one numpy pass.
    offsets = np.empty(n, dtype=np.int64)
    for k in range(n):
        offsets[k] = buf.offset
        buf.skip(_POINT_DTYPE.itemsize)
        (track_length,) = buf.unpack("<Q")
        buf.skip(8 * track_length)
    buf.finish()
    raw = np.frombuffer(buf.data, dtype=np.uint8)
    records = raw[offsets[:, None] + np.arange(_POINT_DTYPE.itemsize)].copy()
    points = records.view(_POINT_DTYPE).reshape(n)
    xyz = torch.from_numpy(points["xyz"].astype(np.float32))
    rgb = torch.from_numpy(np.ascontiguousarray(points["rgb"]))
    return xyz.reshape(-1, 3), rgb.reshape(-1, 3)


# ---------------------------------------------------------------------- text
def _data_lines(path: Path) -> list[tuple[int, str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DatasetError(path, f"not UTF-8 text: {e}") from e
    return [(k + 1, line.strip()) for k, line in enumerate(text.splitlines())]


def _is_data(line: str) -> bool:
    return bool(line) and not line.startswith("#")


def _read_cameras_txt(path: Path) -> dict[int, _ColmapCamera]:
    cameras = {}
    for lineno, line in _data_lines(path):
        if not _is_data(line):
            continue
        elems = line.split()
        try:
            if len(elems) < 4:
                raise ValueError("expected CAMERA_ID MODEL WIDTH HEIGHT PARAMS[]")
            camera_id, model = int(elems[0]), elems[1]
            if model not in _MODELS:
                raise ValueError(f"unknown camera model {model!r}")
            names = _MODELS[model][1]
            if len(elems) - 4 != len(names):
                raise ValueError(f"{model} has {len(names)} parameters, got {len(elems) - 4}")
            params = tuple(float(e) for e in elems[4:])
            cameras[camera_id] = _ColmapCamera(
                camera_id, model, int(elems[2]), int(elems[3]), params
            )
        except ValueError as e:
            raise DatasetError(path, f"line {lineno}: {e}") from e
    return cameras


def _read_images_txt(path: Path) -> list[_ColmapImage]:
    images = []
    lines = iter(_data_lines(path))
    for lineno, line in lines:
        if not _is_data(line):
            continue
        # NAME is the last field; split at most 9 times so names keep their spaces.
        elems = line.split(maxsplit=9)
        try:
            if len(elems) != 10:
                raise ValueError("expected IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME")
            q = tuple(float(e) for e in elems[1:5])
            t = tuple(float(e) for e in elems[5:8])
            images.append(_ColmapImage(int(elems[0]), q, t, int(elems[8]), elems[9]))  # type: ignore[arg-type]
        except ValueError as e:
            raise DatasetError(path, f"line {lineno}: {e}") from e
        next(lines, None)  # the POINTS2D line (may be empty)
    return images


def _read_points_txt(path: Path) -> tuple[Tensor, Tensor]:
    xyz, rgb = [], []
    for lineno, line in _data_lines(path):
        if not _is_data(line):
            continue
        elems = line.split()
        try:
            if len(elems) < 8:
                raise ValueError("expected POINT3D_ID X Y Z R G B ERROR TRACK[]")
            xyz.append([float(e) for e in elems[1:4]])
            rgb.append([int(e) for e in elems[4:7]])
        except ValueError as e:
            raise DatasetError(path, f"line {lineno}: {e}") from e
    return (
        torch.tensor(xyz, dtype=torch.float32).reshape(-1, 3),
        torch.tensor(rgb, dtype=torch.uint8).reshape(-1, 3),
    )


def read_points(path: Path) -> tuple[Tensor, Tensor]:
    """points3D.{bin,txt} -> (xyz float32 [P,3], rgb uint8 [P,3])."""
    return _read_points_bin(path) if path.suffix == ".bin" else _read_points_txt(path)


# ---------------------------------------------------------------------- cameras
def _intrinsics(cam: _ColmapCamera, path: Path) -> tuple[torch.Tensor, Distortion]:
    p = dict(zip(_MODELS[cam.model][1], cam.params, strict=True))
    fx, fy = (p["f"], p["f"]) if "f" in p else (p["fx"], p["fy"])
    if not all(math.isfinite(v) for v in cam.params) or fx <= 0 or fy <= 0:
        raise DatasetError(path, f"camera {cam.id}: bad parameters {list(cam.params)}")
    if cam.width <= 0 or cam.height <= 0:
        raise DatasetError(path, f"camera {cam.id}: bad size {cam.width}x{cam.height}")
    K = torch.tensor([[fx, 0.0, p["cx"]], [0.0, fy, p["cy"]], [0.0, 0.0, 1.0]])
    coeffs = {k: float(v) for k, v in p.items() if k not in _INTRINSIC_NAMES}
    return K, Distortion(cam.model, coeffs)


def _viewmat(image: _ColmapImage, path: Path) -> torch.Tensor:
    q = torch.tensor(image.qvec, dtype=torch.float64)
    t = torch.tensor(image.tvec, dtype=torch.float64)
    norm = q.norm()
    if not (torch.isfinite(q).all() and torch.isfinite(t).all()) or norm < 1e-12:
        raise DatasetError(path, f"image {image.name!r}: bad pose qvec={image.qvec}")
    w, x, y, z = (q / norm).tolist()
    R = torch.tensor(
        [
            [1 - 2 * y * y - 2 * z * z, 2 * x * y - 2 * w * z, 2 * x * z + 2 * w * y],
            [2 * x * y + 2 * w * z, 1 - 2 * x * x - 2 * z * z, 2 * y * z - 2 * w * x],
            [2 * x * z - 2 * w * y, 2 * y * z + 2 * w * x, 1 - 2 * x * x - 2 * y * y],
        ],
        dtype=torch.float64,
    )
    V = torch.eye(4, dtype=torch.float64)
    V[:3, :3], V[:3, 3] = R, t
    return V


# ---------------------------------------------------------------------- loader
def load_colmap(
    path: str | Path,
    *,
    images: str | Path | None = None,
    downscale: float = 1,
    background: tuple[float, float, float] = (1.0, 1.0, 1.0),
    allow_outside: bool = False,
) -> Dataset:
    """A COLMAP sparse model: `path` is a dataset dir holding `sparse/0/` (or `sparse/`, or
    nerfstudio's `colmap/sparse/0/`) or the model dir itself; `.bin` is preferred over `.txt`.

    Images are read from `images` (default: `images/` in the dataset dir, or next to / above a
    model dir). Views are sorted by image name. Views whose image file is missing are skipped
    with one warning. Distorted lenses (SIMPLE_RADIAL, RADIAL, OPENCV, FULL_OPENCV,
    OPENCV_FISHEYE, SIMPLE_RADIAL_FISHEYE, RADIAL_FISHEYE) are undistorted on load (see
    `Dataset`); the original lens stays in `Dataset.distortion`. FOV and the thin-prism
    fisheyes are warned about once and used as pinholes: undistort those first
    (`colmap image_undistorter` writes exactly this layout with PINHOLE cameras).

    Image names in the model must resolve inside the image folder (no `../`, absolute paths
    or symlinks pointing out) unless `allow_outside=True`; otherwise `DatasetError`."""
    check_options(downscale, background)
    path = Path(path).absolute()
    found = find_model(path)
    if found is None:
        if not path.exists():
            raise FileNotFoundError(f"no such dataset: {path}")
        raise DatasetError(
            path, "no COLMAP model (cameras + images .bin/.txt) here or in sparse/0, sparse"
        )
    model_dir, roots = found
    cams_file, imgs_file, pts_file = _model_files(model_dir)  # type: ignore[misc]
    binary = cams_file.suffix == ".bin"
    cameras = (_read_cameras_bin if binary else _read_cameras_txt)(cams_file)
    records = (_read_images_bin if binary else _read_images_txt)(imgs_file)
    if not records:
        raise DatasetError(imgs_file, "the model has no registered images")

    if images is not None:
        image_dir = Path(images)
    else:
        image_dir = next(
            (r / "images" for r in roots if (r / "images").is_dir()), roots[0] / "images"
        )

    intrinsics = {cid: _intrinsics(cam, cams_file) for cid, cam in cameras.items()}
    views = []
    for record in sorted(records, key=lambda r: r.name):
        if record.camera_id not in cameras:
            raise DatasetError(
                imgs_file,
                f"image {record.name!r} uses camera {record.camera_id}, not in {cams_file.name}",
            )
        cam = cameras[record.camera_id]
        K, distortion = intrinsics[record.camera_id]
        camera = Camera(K, _viewmat(record, imgs_file).float(), cam.width, cam.height, record.name)
        ref = ImageRef(image_dir.parent, image_dir.name, record.name)
        if not allow_outside:
            check_inside(ref.path, image_dir, source=imgs_file, what=f"image {record.name!r} ->")
        views.append(View(camera, ref, distortion))

    views = keep_existing(views, lambda v: v.image.path, imgs_file, "registered images")
    warn_distortion(views, cams_file)
    points = functools.partial(read_points, pts_file) if pts_file is not None else None
    root = roots[0]
    return Dataset(
        views,
        root=root,
        downscale=downscale,
        background=background,
        points=points,
        allow_outside=allow_outside,
    )
