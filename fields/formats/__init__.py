"""Scene files: `load_scene` and `save_scene` for `GaussianScene`.

| format | read | write | detected by |
|---|---|---|---|
| INRIA 3DGS PLY (+ JSON sidecar for extras / meta) | yes | yes | `ply` magic |
| PlayCanvas / SuperSplat compressed PLY | yes | - | `ply` magic + `chunk` element |
| antimatter15 `.splat` | yes | yes | `.splat` extension |
| Niantic `.spz` v2, v3 (gzip) and v4 (NGSP container) | yes | - | gzip / `NGSP` magic |

Every reader raises `SceneFormatError` (naming the file and the problem) for bad content:
truncated files, wrong property types, NaN/Inf values, missing properties, counts that do not
match the data, zero Gaussians, absurd header counts (checked against the file size before any
allocation), unknown versions, corrupt gzip / zstd. Files that cannot be opened raise the usual
`OSError`s (`FileNotFoundError`, `PermissionError`, ...).

Axes: scenes use the axes of INRIA PLY files (those of COLMAP, OpenCV cameras). PLY and
`.splat` are read as stored; SPZ stores RUB axes and is turned into that frame on load.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import SceneFormatError
from ..scene import GaussianScene
from . import _sidecar
from ._atomic import write_files
from ._common import fail
from ._compressed_ply import is_compressed, read_compressed
from ._ply import inria_elements, read_inria
from ._plyfile import is_ply, read_ply, write_ply
from ._splat import read_splat, write_splat
from ._spz import is_spz, read_spz

__all__ = ["SceneFormatError", "load_scene", "read_point_cloud", "save_scene", "write_files"]

Reader = Callable[[Path, bytes], GaussianScene]


def _read_ply(path: Path, data: bytes) -> GaussianScene:
    ply = read_ply(path, data)
    if is_compressed(ply):
        return read_compressed(path, ply)
    side = _sidecar.sidecar_path(path)
    sidecar = _sidecar.decode(side, side.read_bytes()) if side.is_file() else None
    return read_inria(path, ply, sidecar, side)


_READERS: dict[str, Reader] = {"ply": _read_ply, "splat": read_splat, "spz": read_spz}
_WRITE_FORMATS = {".ply": "ply", ".splat": "splat"}

# Decoders are written to raise SceneFormatError themselves; this net only keeps the promise
# "bad bytes -> SceneFormatError" if one slips through (the fuzz tests look for this message).
_SLIPPED = (
    ValueError,
    IndexError,
    KeyError,
    TypeError,
    OverflowError,
    RuntimeError,
    struct.error,
    zlib.error,
    EOFError,
)
UNEXPECTED = "unexpected decoding failure"


def _sniff(path: Path, data: bytes) -> str:
    if is_ply(data):
        return "ply"
    if is_spz(data):
        return "spz"
    ext = path.suffix.lower()
    if ext == ".splat":
        return "splat"  # headerless: the extension is all there is
    if ext in (".ply", ".spz"):
        fail(path, f"content is not a {ext} file (wrong magic bytes)")
    fail(path, f"unknown scene format {ext!r} (readable: .ply, compressed .ply, .splat, .spz)")


def load_scene(path: str | Path) -> GaussianScene:
    """Read a scene file; the format is detected from the content (and `.splat` by extension).

    An INRIA PLY's sidecar `<file>.json`, when present, restores extras' exact dtypes and shapes
    and the scene `meta`. Raises `SceneFormatError` for malformed or unsupported content (see the
    module docstring) and `OSError` for files that cannot be read.
    """
    path = Path(path)
    data = path.read_bytes()
    reader = _READERS[_sniff(path, data)]
    try:
        return reader(path, data)
    except SceneFormatError:
        raise
    except _SLIPPED as e:
        raise SceneFormatError(path, f"{UNEXPECTED} ({type(e).__name__}: {e})") from e


def save_scene(
    scene: GaussianScene,
    path: str | Path,
    *,
    format: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write `scene` as INRIA PLY (`format="ply"`) or antimatter15 `.splat` (`"splat"`).

    The format defaults to the file extension. PLY also writes the sidecar `<file>.json`
    (extras' dtypes and shapes, `meta`) so `load_scene` gives back an identical scene; `.splat`
    holds only degree-0 colour and warns about what it drops. Writes are atomic: temp files in
    the target directory are renamed into place only after everything was written. With
    `overwrite=False` an existing target raises `FileExistsError` (a stray sidecar without its
    PLY is replaced). Raises `ValueError` for scenes the format cannot hold (empty scenes,
    non-finite values, unsupported extra dtypes or names, non-JSON meta). Returns the path.
    """
    if not isinstance(scene, GaussianScene):
        raise TypeError(f"save_scene expects a GaussianScene, got {type(scene).__name__}")
    path = Path(path)
    fmt = format if format is not None else _WRITE_FORMATS.get(path.suffix.lower())
    if fmt not in ("ply", "splat"):
        raise ValueError(
            f"cannot write format {fmt or path.suffix!r}; use format='ply' or 'splat' "
            "(or a .ply / .splat extension)"
        )
    if len(scene) == 0:
        raise ValueError("cannot save an empty scene: readers reject files without Gaussians")
    if fmt == "splat":
        write_files([(path, lambda f: write_splat(f, scene))], overwrite=overwrite)
        return path
    props, sidecar = inria_elements(scene)  # validates everything before the disk is touched
    sidecar_bytes = _sidecar.encode(sidecar)
    comments = ["scenelab scene: extras dtypes and meta are in the .json sidecar"]
    write_files(
        [
            (path, lambda f: write_ply(f, [("vertex", props)], comments)),
            (_sidecar.sidecar_path(path), lambda f: f.write(sidecar_bytes)),
        ],
        overwrite=overwrite,
    )
    return path


def read_point_cloud(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """A PLY point cloud (COLMAP / nerfstudio `sparse_pc.ply`): xyz float32 [P,3] and rgb uint8
    [P,3] (float colours in [0,1] are scaled; grey when the file has none). Raises
    `SceneFormatError` for files without x, y, z vertices or with non-finite coordinates."""
    path = Path(path)
    ply = read_ply(path, path.read_bytes())
    if "vertex" not in ply.tables:
        raise SceneFormatError(path, "no vertex element in the point cloud")
    names = ply.dtypes("vertex")
    if not {"x", "y", "z"} <= set(names):
        raise SceneFormatError(path, "point cloud vertices need x, y, z properties")
    xyz = ply.stack("vertex", ["x", "y", "z"], np.float32)
    if not np.isfinite(xyz).all():
        raise SceneFormatError(path, "point cloud has NaN or Inf coordinates")
    if {"red", "green", "blue"} <= set(names):
        rgb = ply.stack("vertex", ["red", "green", "blue"], np.float64)
        if names["red"].kind == "f":  # float colours in [0, 1]
            rgb = rgb * 255.0
        rgb = np.clip(np.round(rgb), 0, 255).astype(np.uint8)
    else:
        rgb = np.full((len(xyz), 3), 128, np.uint8)
    return xyz, rgb
