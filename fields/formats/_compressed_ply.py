"""PlayCanvas / SuperSplat compressed PLY (read only).

Layout (as decoded by PlayCanvas' engine and splat-transform):
- `chunk` element, one row per 256 consecutive Gaussians: float `min_x..max_z` (position
  bounds), `min_scale_x..max_scale_z` (log-scale bounds) and optionally `min_r..max_b`
  (colour bounds).
- `vertex` element, four uint32 per Gaussian:
  `packed_position` / `packed_scale`: 11-10-11 bit unorms (x in the top bits), lerped in the
  chunk's bounds; `packed_rotation`: the index of the largest |component| of (rot_0..rot_3) in
  the top 2 bits, then the other three in order as 10-bit unorms mapping to
  [-1/sqrt(2), 1/sqrt(2)]; the largest is sqrt(1 - sum of squares);
  `packed_color`: 8-8-8-8 RGBA unorms (R in the top byte); RGB is lerped in the chunk's colour
  bounds when present and then becomes the SH DC term, A is the activated opacity.
- optional `sh` element: uint8 `f_rest_*` (INRIA channel-major order), 0 -> -4, 255 -> +4,
  otherwise ((v + 0.5) / 256 - 0.5) * 8.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..scene import GaussianScene
from ._common import alpha_to_logit, build_scene, fail, rgb_to_dc
from ._plyfile import PlyData

CHUNK_SIZE = 256
_CHUNK_BOUNDS = (
    "min_x",
    "min_y",
    "min_z",
    "max_x",
    "max_y",
    "max_z",
    "min_scale_x",
    "min_scale_y",
    "min_scale_z",
    "max_scale_x",
    "max_scale_y",
    "max_scale_z",
)
_CHUNK_COLOR = ("min_r", "min_g", "min_b", "max_r", "max_g", "max_b")
_PACKED = ("packed_position", "packed_rotation", "packed_scale", "packed_color")
_SH_COUNTS = {9: 1, 24: 2, 45: 3}


def is_compressed(ply: PlyData) -> bool:
    vertex = ply.header.element("vertex")
    if vertex is not None and vertex.property("packed_position") is not None:
        return True
    return ply.header.element("chunk") is not None and (
        vertex is None or vertex.property("x") is None
    )


def read_compressed(path: Path, ply: PlyData) -> GaussianScene:
    header = ply.header
    for name in ("chunk", "vertex", "sh"):
        if header.element(name) is not None and name not in ply.tables:
            fail(path, f"the {name!r} element has list properties or follows one (unsupported)")
    if header.element("chunk") is None or header.element("vertex") is None:
        fail(path, "compressed PLY needs both a 'chunk' and a 'vertex' element")
    chunk, vertex = ply.dtypes("chunk"), ply.dtypes("vertex")
    has_color = "min_r" in chunk
    needed = _CHUNK_BOUNDS + (_CHUNK_COLOR if has_color else ())
    missing = [p for p in needed if p not in chunk] + [p for p in _PACKED if p not in vertex]
    if missing:
        fail(path, f"compressed PLY lacks properties: {', '.join(missing)}")
    for p in needed:
        if chunk[p].kind != "f":
            fail(path, f"chunk property {p!r} has type {chunk[p]}, expected float")
    for p in _PACKED:
        if vertex[p] != np.uint32:
            fail(path, f"vertex property {p!r} has type {vertex[p]}, expected uint32")

    n = header.element("vertex").count
    n_chunks = header.element("chunk").count
    if n == 0:
        fail(path, "the file holds no Gaussians")
    if n_chunks != -(-n // CHUNK_SIZE):
        fail(path, f"{n_chunks} chunks cannot hold {n} Gaussians at {CHUNK_SIZE} per chunk")
    bounds = ply.stack("chunk", needed, np.float64)
    if not np.isfinite(bounds).all():
        fail(path, "chunk bounds have NaN or infinite values")
    # Per-Gaussian copies of its chunk's bounds: [N, 12 or 18].
    per = np.repeat(bounds.astype(np.float32), CHUNK_SIZE, axis=0)[:n]

    packed = ply.stack("vertex", _PACKED, np.uint32)
    pos = _unpack_111011(packed[:, 0])
    means = _lerp(per[:, 0:3], per[:, 3:6], pos)
    scl = _unpack_111011(packed[:, 2])
    scales = _lerp(per[:, 6:9], per[:, 9:12], scl)
    quats = _unpack_rotation(packed[:, 1])
    rgba = _unpack_8888(packed[:, 3])
    rgb = rgba[:, :3]
    if has_color:
        rgb = _lerp(per[:, 12:15], per[:, 15:18], rgb)
    dc = rgb_to_dc(rgb)
    opacities = alpha_to_logit(rgba[:, 3])
    sh = np.concatenate([dc[:, None, :], _read_sh(path, ply, n)], axis=1)
    return build_scene(path, means, quats, scales, opacities, sh)


def _read_sh(path: Path, ply: PlyData, n: int) -> np.ndarray:
    el = ply.header.element("sh")
    if el is None:
        return np.zeros((n, 0, 3), np.float32)
    cols = ply.dtypes("sh")
    if el.count != n:
        fail(path, f"'sh' element has {el.count} rows for {n} Gaussians")
    names = [f"f_rest_{i}" for i in range(len(cols))]
    if len(cols) not in _SH_COUNTS or set(names) != set(cols):
        fail(
            path,
            f"'sh' element must hold f_rest_0..f_rest_M-1 with M in 9, 24, 45; got {len(cols)}",
        )
    if any(cols[p] != np.uint8 for p in names):
        fail(path, "'sh' element properties must be uint8")
    v = ply.stack("sh", names, np.float32)
    unit = np.where(v == 0, 0.0, np.where(v == 255, 1.0, (v + 0.5) / 256.0))
    rest = ((unit - 0.5) * 8.0).astype(np.float32)
    m = len(names) // 3
    return rest.reshape(n, 3, m).transpose(0, 2, 1)


def _lerp(lo: np.ndarray, hi: np.ndarray, t: np.ndarray) -> np.ndarray:
    return lo * (1.0 - t) + hi * t


def _unorm(v: np.ndarray, shift: int, bits: int) -> np.ndarray:
    mask = (1 << bits) - 1
    return ((v >> np.uint32(shift)) & np.uint32(mask)).astype(np.float32) / np.float32(mask)


def _unpack_111011(v: np.ndarray) -> np.ndarray:
    return np.stack([_unorm(v, 21, 11), _unorm(v, 11, 10), _unorm(v, 0, 11)], axis=1)


def _unpack_8888(v: np.ndarray) -> np.ndarray:
    return np.stack([_unorm(v, s, 8) for s in (24, 16, 8, 0)], axis=1)


def _unpack_rotation(v: np.ndarray) -> np.ndarray:
    norm = np.float32(np.sqrt(2.0))  # 1 / (sqrt(2) / 2): [0, 1] -> [-1/sqrt2, 1/sqrt2]
    abc = np.stack([(_unorm(v, s, 10) - 0.5) * norm for s in (20, 10, 0)], axis=1)
    m = np.sqrt(np.maximum(0.0, 1.0 - (abc * abc).sum(axis=1)))
    which = (v >> np.uint32(30)).astype(np.int64)
    out = np.empty((len(v), 4), np.float32)
    for j in range(4):
        before = abc[:, min(j, 2)]  # component j when it precedes the largest
        after = abc[:, max(j - 1, 0)]  # component j when it follows the largest
        out[:, j] = np.where(j < which, before, np.where(j == which, m, after))
    return out
