"""Scene files: `load_scene` and `save_scene` for `GaussianScene`.

| format (`save_scene` name) | extension | read | write | detected by |
|---|---|---|---|---|
| INRIA 3DGS PLY (`ply`, + JSON sidecar for extras / meta) | `.ply` | yes | yes | `ply` magic |
| PlayCanvas / SuperSplat compressed PLY (`compressed-ply`) | `.compressed.ply` | yes | yes | `ply` magic + `chunk` element |
| antimatter15 splat (`splat`) | `.splat` | yes | yes | `.splat` extension |
| Niantic SPZ v2, v3 (gzip), v4 (NGSP + zstd) (`spz`) | `.spz` | yes | yes | gzip / `NGSP` magic |
| SuperSplat SOG, bundled (`sog`) | `.sog` | yes | yes | zip magic |
| SuperSplat SOG, unbundled (`sog-meta`): `meta.json` + WebP files beside it | `meta.json` | yes | yes | `.json` holding a JSON object |
| mkkellogg GaussianSplats3D `.ksplat` | `.ksplat` | yes | - | `.ksplat` extension |

`save_scene` picks the format from the extension (`format_for_path`) unless `format=` names it;
`ExportOptions` carries the writers' knobs (SPZ version, SOG k-means iterations). Writers other
than PLY quantise and drop extras and meta (with a warning); compressed PLY and SOG reorder the
Gaussians (Morton order) as splat-transform does.

Every reader raises `SceneFormatError` (naming the file and the problem) for bad content:
truncated files, wrong property types, NaN/Inf values, missing properties, counts that do not
match the data, zero Gaussians, absurd header counts (checked against the file size before any
allocation), unknown versions, corrupt gzip / zstd / zip / WebP, and for anything that is not a
regular file (a FIFO, device or folder is refused at once, never read). Running out of memory
while decoding is reported as `SceneFormatError` too. Files that cannot be opened raise the usual
`OSError`s (`FileNotFoundError`, `PermissionError`, ...). Binary PLY bodies are streamed in
chunks into the final arrays (peak memory: the scene plus a few MiB).

Saving is atomic (temp files beside the targets, renamed into place when all are written), and
with `overwrite=False` nothing is written if the target **or any of its side files** exists (the
PLY's `<file>.json` sidecar, the WebP files beside a SOG `meta.json`). Temp files of killed saves
(`.{name}.scenelab-{pid}-{rand}.tmp`, their process gone) are removed by `clean_stale_temps`,
which every save runs on its target folder.

Axes: scenes use the axes of INRIA PLY files (those of COLMAP, OpenCV cameras). SPZ stores RUB
axes (OpenGL) and is turned into that frame on load and back on save; the other formats are
read and written as stored.
"""

from __future__ import annotations

import errno
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..errors import SceneFormatError
from ..scene import GaussianScene
from . import _sidecar
from ._atomic import Writer, clean_stale_temps, write_files
from ._common import fail, open_regular, read_exactly, read_regular
from ._compare import scene_errors
from ._compressed_ply import is_compressed, read_compressed, write_compressed
from ._ksplat import read_ksplat
from ._ply import inria_elements, read_inria, read_inria_sample
from ._plyfile import PlyData, is_ply, open_ply, write_ply
from ._sog import is_sog_bundle, read_sog, sog_files, write_sog_bundle
from ._splat import read_splat, write_splat
from ._spz import is_spz, read_spz, write_spz

__all__ = [
    "FORMATS",
    "ExportOptions",
    "SceneFormatError",
    "clean_stale_temps",
    "format_for_path",
    "load_preview",
    "load_scene",
    "read_point_cloud",
    "save_scene",
    "scene_errors",
    "side_files",
    "write_files",
]

# Format name -> the file name ending that selects it (`format_for_path`).
FORMATS: dict[str, str] = {
    "ply": ".ply",
    "compressed-ply": ".compressed.ply",
    "splat": ".splat",
    "spz": ".spz",
    "sog": ".sog",
    "sog-meta": "meta.json",
}
_SIDECAR_LIMIT = 256 << 20  # bytes; sidecars hold meta (cameras, labels), a few MiB at most


@dataclass(frozen=True)
class ExportOptions:
    """Knobs of the quantising writers (the SH degree is cut by the caller, e.g.
    `scene.with_sh_degree`, before saving)."""

    spz_version: int = 3  # SPZ 2 or 3 (gzip) or 4 (NGSP container, zstd streams)
    sog_iterations: int = 10  # k-means rounds of the SOG SH palette (scale and colour codebooks
    # use an exact 1-D quantiser)

    def __post_init__(self) -> None:
        if self.spz_version not in (2, 3, 4):
            raise ValueError(f"spz_version must be 2, 3 or 4, got {self.spz_version!r}")
        if not isinstance(self.sog_iterations, int) or self.sog_iterations < 1:
            raise ValueError(f"sog_iterations must be a positive int, got {self.sog_iterations!r}")


def format_for_path(path: str | Path) -> str:
    """The writable format a file name asks for (see `FORMATS`); `ValueError` naming the
    writable endings when none fits."""
    name = Path(path).name.lower()
    if name == "meta.json":
        return "sog-meta"
    # Longest ending first: `.compressed.ply` before `.ply`.
    for fmt, ending in sorted(FORMATS.items(), key=lambda kv: -len(kv[1])):
        if ending.startswith(".") and name.endswith(ending) and len(name) > len(ending):
            return fmt
    raise ValueError(
        f"cannot tell the scene format of {Path(path).name!r}: writable endings are "
        + ", ".join(FORMATS.values())
    )


# ------------------------------------------------------------------------------------- reading
Reader = Callable[[Path, bytes], GaussianScene]


def _read_ply(path: Path, ply: PlyData) -> GaussianScene:
    if is_compressed(ply):
        return read_compressed(path, ply)
    side = _sidecar.sidecar_path(path)
    sidecar = None
    if side.is_file():  # a FIFO or folder by that name is not a sidecar: ignored
        sidecar = _sidecar.decode(side, read_regular(side, _SIDECAR_LIMIT))
    return read_inria(path, ply, sidecar, side)


_READERS: dict[str, Reader] = {
    "splat": read_splat,
    "spz": read_spz,
    "sog": read_sog,
    "sog-meta": read_sog,
    "ksplat": read_ksplat,
}

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


def _sniff(path: Path, head: bytes) -> str:
    """The reader for a file: by magic bytes, then (headerless formats) by extension."""
    if is_ply(head):
        return "ply"
    if is_sog_bundle(head):
        return "sog"
    if is_spz(head):
        return "spz"
    ext = path.suffix.lower()
    if ext == ".ksplat":
        return "ksplat"
    if ext == ".splat":
        return "splat"  # headerless: the extension is all there is
    if ext == ".json" and head.lstrip()[:1] == b"{":
        return "sog-meta"
    if ext in (".ply", ".spz", ".sog", ".json"):
        fail(path, f"content is not a {ext} scene file (wrong magic bytes)")
    fail(
        path,
        f"unknown scene format {ext!r} (readable: .ply, .compressed.ply, .splat, .spz, .sog, "
        "meta.json, .ksplat)",
    )


def load_scene(path: str | Path) -> GaussianScene:
    """Read a scene file; the format is detected from the content (`.splat` and `.ksplat` by
    extension; see the module docstring for the table).

    An INRIA PLY's sidecar `<file>.json`, when present, restores extras' exact dtypes and shapes
    and the scene `meta`. A SOG `meta.json` reads its WebP files from its folder. Raises
    `SceneFormatError` for malformed or unsupported content and for paths that are not regular
    files (FIFOs, devices, folders), and `OSError` for files that cannot be opened.
    """
    path = Path(path)
    try:
        f, size = open_regular(path)
        with f:
            head = f.read(4096)
            fmt = _sniff(path, head)
            try:
                if fmt == "ply":
                    return _read_ply(path, open_ply(path, f, size))
                return _READERS[fmt](path, read_exactly(path, f, size))
            except SceneFormatError:
                raise
            except _SLIPPED as e:
                raise SceneFormatError(path, f"{UNEXPECTED} ({type(e).__name__}: {e})") from e
    except MemoryError as e:
        detail = f" ({e})" if str(e) else ""
        raise SceneFormatError(path, f"out of memory while decoding it{detail}") from e


def load_preview(path: str | Path, max_gaussians: int) -> tuple[GaussianScene, int] | None:
    """(every k-th Gaussian, the file's count) of an INRIA PLY with more than `max_gaussians`:
    at most that many, without extras (meta from the sidecar when it reads), what a viewer
    shows while the whole file loads. One pass over the file into small arrays (a 3M-Gaussian
    file: ~0.06 s when cached). None for other formats, smaller files, or a file `load_scene`
    would refuse (it reports the problem then)."""
    path = Path(path)
    try:
        f, size = open_regular(path)
        with f:
            if not is_ply(f.read(4)):
                return None
            f.seek(0)
            ply = open_ply(path, f, size)
            vertex = ply.header.element("vertex")
            if is_compressed(ply) or vertex is None or vertex.count <= max_gaussians:
                return None
            meta = None
            side = _sidecar.sidecar_path(path)
            if side.is_file():
                try:
                    meta = _sidecar.decode(side, read_regular(side, _SIDECAR_LIMIT)).meta
                except SceneFormatError:
                    meta = None
            return read_inria_sample(path, ply, max_gaussians, meta), int(vertex.count)
    except (SceneFormatError, OSError, MemoryError, *_SLIPPED):
        return None


# ------------------------------------------------------------------------------------- writing
def save_scene(
    scene: GaussianScene,
    path: str | Path,
    *,
    format: str | None = None,
    overwrite: bool = False,
    options: ExportOptions | None = None,
) -> Path:
    """Write `scene` in `format` (a key of `FORMATS`; default: from the file name, see
    `format_for_path`). Returns the path.

    `ply` writes every value exactly plus the sidecar `<file>.json` (extras' dtypes and shapes,
    `meta`), so `load_scene` gives back an identical scene. The others quantise (see each
    format's module) and drop extras and meta with a warning: `compressed-ply`, `splat` (degree-0
    colour only), `spz` (`options.spz_version`), `sog` (one zip) and `sog-meta` (`path` is the
    meta.json; its WebP files are written beside it; `options.sog_iterations`).

    Writes are atomic: temp files in the target folder are renamed into place only after
    everything was written. With `overwrite=False` any existing target, main file or side file
    (sidecar, WebP files), raises `FileExistsError` naming it, and nothing is written. Raises
    `ValueError` for an unknown format and for scenes the format cannot hold (empty scenes,
    non-finite values, unsupported extra dtypes or names, non-JSON meta).
    """
    if not isinstance(scene, GaussianScene):
        raise TypeError(f"save_scene expects a GaussianScene, got {type(scene).__name__}")
    path = Path(path)
    fmt = format if format is not None else format_for_path(path)
    if fmt not in FORMATS:
        raise ValueError(f"unknown scene format {fmt!r}; writable formats: {', '.join(FORMATS)}")
    options = options if options is not None else ExportOptions()
    if len(scene) == 0:
        raise ValueError("cannot save an empty scene: readers reject files without Gaussians")
    if not overwrite and os.path.lexists(path):  # before encoding (SOG's k-means takes a while)
        raise FileExistsError(
            errno.EEXIST, "refusing to overwrite (pass overwrite=True)", str(path)
        )
    write_files(_targets(scene, path, fmt, options), overwrite=overwrite)
    return path


# The textures SOG's writer (`_sog.sog_files`) puts beside meta.json; the shN ones only for
# SH degree > 0.
_SOG_TEXTURES = (
    "means_l.webp",
    "means_u.webp",
    "quats.webp",
    "scales.webp",
    "sh0.webp",
    "shN_centroids.webp",
    "shN_labels.webp",
)


def side_files(path: str | Path, format: str | None = None) -> list[Path]:
    """The files besides `path` that `save_scene(..., path, format=format)` may write (and so
    refuses to replace without `overwrite=True`): a PLY's JSON sidecar, the WebP textures of a
    SOG meta.json (all that any SH degree writes). Empty for single-file formats."""
    path = Path(path)
    fmt = format if format is not None else format_for_path(path)
    if fmt == "ply":
        return [_sidecar.sidecar_path(path)]
    if fmt == "sog-meta":
        return [path.parent / name for name in _SOG_TEXTURES]
    return []


def _targets(
    scene: GaussianScene, path: Path, fmt: str, options: ExportOptions
) -> list[tuple[Path, Writer]]:
    """What to write where: the main file first, then its side files. Anything that can be
    checked or encoded before the disk is touched is done here."""
    if fmt == "splat":
        return [(path, lambda f: write_splat(f, scene))]
    if fmt == "compressed-ply":
        return [(path, lambda f: write_compressed(f, scene))]
    if fmt == "spz":
        return [(path, lambda f: write_spz(f, scene, version=options.spz_version))]
    if fmt in ("sog", "sog-meta"):
        files = sog_files(scene, iterations=options.sog_iterations)
        if fmt == "sog":
            return [(path, lambda f: write_sog_bundle(f, files))]
        meta = files.pop("meta.json")
        return [(path, _blob(meta))] + [(path.parent / k, _blob(v)) for k, v in files.items()]
    props, sidecar = inria_elements(scene)  # validates everything before the disk is touched
    sidecar_bytes = _sidecar.encode(sidecar)
    comments = ["scenelab scene: extras dtypes and meta are in the .json sidecar"]
    return [
        (path, lambda f: write_ply(f, [("vertex", props)], comments)),
        (_sidecar.sidecar_path(path), _blob(sidecar_bytes)),
    ]


def _blob(data: bytes) -> Writer:
    def write(f: BinaryIO) -> None:
        f.write(data)

    return write


def read_point_cloud(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """A PLY point cloud (COLMAP / nerfstudio `sparse_pc.ply`): xyz float32 [P,3] and rgb uint8
    [P,3] (float colours in [0,1] are scaled; grey when the file has none). Raises
    `SceneFormatError` for files without x, y, z vertices or with non-finite coordinates, and
    for paths that are not regular files."""
    path = Path(path)
    f, size = open_regular(path)
    with f:
        ply = open_ply(path, f, size)
        if not ply.has("vertex"):
            raise SceneFormatError(path, "no vertex element in the point cloud")
        names = ply.dtypes("vertex")
        if not {"x", "y", "z"} <= set(names):
            raise SceneFormatError(path, "point cloud vertices need x, y, z properties")
        n = ply.header.element("vertex").count
        xyz = np.empty((n, 3), np.float32)
        requests = [(("x", "y", "z"), xyz)]
        has_rgb = {"red", "green", "blue"} <= set(names)
        rgb = np.empty((n, 3), np.float64) if has_rgb else None
        if rgb is not None:
            requests.append((("red", "green", "blue"), rgb))
        ply.gather("vertex", requests)
    if not np.isfinite(xyz).all():
        raise SceneFormatError(path, "point cloud has NaN or Inf coordinates")
    if rgb is None:
        return xyz, np.full((len(xyz), 3), 128, np.uint8)
    if names["red"].kind == "f":  # float colours in [0, 1]
        rgb = rgb * 255.0
    return xyz, np.clip(np.round(rgb), 0, 255).astype(np.uint8)
