"""PlayCanvas / SuperSplat compressed PLY (read and write).

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

The writer follows splat-transform's (`writeCompressedPly`): colour bounds are always written,
the last chunk is padded with copies of its last Gaussian when computing bounds, and the
Gaussians are sorted along a Morton curve first.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from ..scene import SH_C0, GaussianScene
from ._common import alpha_to_logit, build_scene, fail, rgb_to_dc
from ._plyfile import PlyData, write_ply

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
        if header.element(name) is not None and not ply.has(name):
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
    bounds = bounds.astype(np.float32)
    packed = ply.stack("vertex", _PACKED, np.uint32)  # [N, 4]
    sh_bytes = _read_sh_bytes(path, ply, n)  # [N, 3 * M] uint8 or None
    m = 0 if sh_bytes is None else sh_bytes.shape[1] // 3

    means = np.empty((n, 3), np.float32)
    quats = np.empty((n, 4), np.float32)
    scales = np.empty((n, 3), np.float32)
    opacities = np.empty(n, np.float32)
    sh = np.empty((n, m + 1, 3), np.float32)
    # Decode a block of whole chunks at a time: temporaries stay small whatever N is.
    step = CHUNK_SIZE * 256
    for start in range(0, n, step):
        s = slice(start, min(n, start + step))
        # Per-Gaussian copies of its chunk's bounds: [B, 12 or 18].
        per = np.repeat(bounds[start // CHUNK_SIZE : -(-s.stop // CHUNK_SIZE)], CHUNK_SIZE, 0)
        per = per[: s.stop - start]
        block = packed[s]
        means[s] = _lerp(per[:, 0:3], per[:, 3:6], _unpack_111011(block[:, 0]))
        scales[s] = _lerp(per[:, 6:9], per[:, 9:12], _unpack_111011(block[:, 2]))
        quats[s] = _unpack_rotation(block[:, 1])
        rgba = _unpack_8888(block[:, 3])
        rgb = rgba[:, :3]
        if has_color:
            rgb = _lerp(per[:, 12:15], per[:, 15:18], rgb)
        sh[s, 0, :] = rgb_to_dc(rgb)
        opacities[s] = alpha_to_logit(rgba[:, 3])
        if m:
            v = sh_bytes[s].astype(np.float32)
            unit = np.where(v == 0, 0.0, np.where(v == 255, 1.0, (v + 0.5) / 256.0))
            rest = ((unit - 0.5) * 8.0).astype(np.float32)
            sh[s, 1:, :] = rest.reshape(-1, 3, m).transpose(0, 2, 1)
    return build_scene(path, means, quats, scales, opacities, sh)


def _read_sh_bytes(path: Path, ply: PlyData, n: int) -> np.ndarray | None:
    el = ply.header.element("sh")
    if el is None:
        return None
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
    return ply.stack("sh", names, np.uint8)


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


# --------------------------------------------------------------------------------------- write
def write_compressed(f: BinaryIO, scene: GaussianScene, *, sort: bool = True) -> None:
    """Write `scene` as a PlayCanvas compressed PLY, quantised as splat-transform 2.x does.

    Each chunk of 256 Gaussians stores its bounds of position, log scale and colour as floats;
    every Gaussian then packs position and log scale as 11-10-11 bit fractions of its chunk's
    bounds, the rotation as "smallest three" (2-bit index of the largest component, three 10-bit
    others), and colour + opacity as 8-8-8-8; higher SH bands are one byte each over [-4, 4].
    With `sort` (the default, as splat-transform does) the Gaussians are written in Morton
    order of their positions, so each chunk is spatially tight and positions keep more of their
    precision; the file's order then differs from the scene's. Extras and meta are dropped with
    a warning. Raises `ValueError` for NaN or infinite values."""
    dropped = [f"extra {k!r}" for k in scene.extras] + (["meta"] if scene.meta else [])
    if dropped:
        warnings.warn(
            f"compressed PLY cannot hold {', '.join(dropped)}; they are not written",
            stacklevel=3,
        )
    s = scene.detach().to("cpu")
    arrays = {
        "means": s.means.to(torch.float32).numpy(),
        "quats": s.quats.to(torch.float32).numpy(),
        "scales": s.scales.to(torch.float32).numpy(),
        "opacities": s.opacities.to(torch.float32).numpy(),
        "sh": s.sh.to(torch.float32).numpy(),
    }
    for name, arr in arrays.items():
        if not np.isfinite(arr).all():
            raise ValueError(f"scene.{name} has NaN or infinite values")
    n = len(s)
    if n == 0:
        raise ValueError("cannot write an empty scene")
    order = morton_order(arrays["means"]) if sort else np.arange(n)
    means, quats, scales, opac, sh = (arrays[k][order] for k in arrays)
    m = sh.shape[1] - 1

    n_chunks = -(-n // CHUNK_SIZE)

    def chunked(a: np.ndarray) -> np.ndarray:  # [N, k] -> [C, 256, k], last row repeated
        pad = n_chunks * CHUNK_SIZE - n
        if pad:
            a = np.concatenate([a, np.repeat(a[-1:], pad, axis=0)])
        return a.reshape(n_chunks, CHUNK_SIZE, -1)

    # Colours as splat-transform computes them: float32 storage of dc * SH_C0 + 0.5.
    rgb = (sh[:, 0, :].astype(np.float64) * SH_C0 + 0.5).astype(np.float32)
    pos_t, pos_lo, pos_hi = _fractions(chunked(means))
    scl_t, scl_lo, scl_hi = _fractions(chunked(scales), clamp=20.0)
    col_t, col_lo, col_hi = _fractions(chunked(rgb))
    flat = lambda t: t.reshape(-1, 3)[:n]  # noqa: E731
    alpha = 1.0 / (1.0 + np.exp(-opac.astype(np.float64)))
    chunk_data = np.concatenate([pos_lo, pos_hi, scl_lo, scl_hi, col_lo, col_hi], axis=1)

    chunk_props = [(p, chunk_data[:, i]) for i, p in enumerate(_CHUNK_BOUNDS + _CHUNK_COLOR)]
    vertex_props = [
        ("packed_position", _pack_111011(flat(pos_t))),
        ("packed_rotation", _pack_rotation(quats)),
        ("packed_scale", _pack_111011(flat(scl_t))),
        ("packed_color", _pack_8888(flat(col_t), alpha)),
    ]
    elements = [("chunk", chunk_props), ("vertex", vertex_props)]
    if m:
        rest = sh[:, 1:, :].transpose(0, 2, 1).reshape(n, 3 * m).astype(np.float64)
        q = np.clip(np.floor((rest / 8.0 + 0.5) * 256.0), 0, 255).astype(np.uint8)
        elements.append(("sh", [(f"f_rest_{i}", q[:, i]) for i in range(3 * m)]))
    write_ply(f, elements, ["Generated by scenelab"])


def morton_order(means: np.ndarray) -> np.ndarray:
    """Indices sorting `means` [N,3] along a Z-order curve (21 bits per axis over the bounds)."""
    lo = means.min(axis=0).astype(np.float64)
    span = means.max(axis=0).astype(np.float64) - lo
    top = (1 << 21) - 1
    scale = np.where(span > 0, top / np.where(span > 0, span, 1.0), 0.0)
    cell = np.clip((means - lo) * scale, 0, top).astype(np.uint64)
    code = np.zeros(len(means), np.uint64)
    for axis in range(3):
        code |= _spread_bits(cell[:, axis]) << np.uint64(axis)
    return np.argsort(code, kind="stable")


def _spread_bits(x: np.ndarray) -> np.ndarray:
    """21-bit integers -> every third bit of a 63-bit one."""
    x = x & np.uint64(0x1FFFFF)
    for shift, mask in (
        (32, 0x1F00000000FFFF),
        (16, 0x1F0000FF0000FF),
        (8, 0x100F00F00F00F00F),
        (4, 0x10C30C30C30C30C3),
        (2, 0x1249249249249249),
    ):
        x = (x | (x << np.uint64(shift))) & np.uint64(mask)
    return x


def _fractions(
    v: np.ndarray, clamp: float | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[C, 256, 3] values -> their fractions of each chunk's [min, max] and the bounds [C, 3].

    As splat-transform: bounds (optionally clamped to +-clamp), values at or beyond a bound
    give 0 / 1, and a chunk whose span is below 1e-5 gives 0 (its minimum)."""
    v = v.astype(np.float64)
    lo, hi = v.min(axis=1), v.max(axis=1)
    if clamp is not None:
        lo, hi = np.clip(lo, -clamp, clamp), np.clip(hi, -clamp, clamp)
    span = hi - lo
    t = (v - lo[:, None]) / np.where(span < 1e-5, 1.0, span)[:, None]
    t = np.where(v <= lo[:, None], 0.0, np.where(v >= hi[:, None], 1.0, t))
    t = np.where((span < 1e-5)[:, None], np.where(v >= hi[:, None], t, 0.0), t)
    return t, lo.astype(np.float32), hi.astype(np.float32)


def _pack_unorm(t: np.ndarray, bits: int) -> np.ndarray:
    top = (1 << bits) - 1
    return np.clip(np.floor(t * top + 0.5), 0, top).astype(np.uint32)


def _pack_111011(t: np.ndarray) -> np.ndarray:
    return (
        (_pack_unorm(t[:, 0], 11) << np.uint32(21))
        | (_pack_unorm(t[:, 1], 10) << np.uint32(11))
        | _pack_unorm(t[:, 2], 11)
    )


def _pack_8888(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    return (
        (_pack_unorm(rgb[:, 0], 8) << np.uint32(24))
        | (_pack_unorm(rgb[:, 1], 8) << np.uint32(16))
        | (_pack_unorm(rgb[:, 2], 8) << np.uint32(8))
        | _pack_unorm(alpha, 8)
    )


def _pack_rotation(wxyz: np.ndarray) -> np.ndarray:
    q = wxyz.astype(np.float64)
    norm = np.linalg.norm(q, axis=1, keepdims=True)
    q = np.where(norm > 0, q / np.where(norm > 0, norm, 1.0), np.array([1.0, 0.0, 0.0, 0.0]))
    largest = np.argmax(np.abs(q), axis=1)  # the first on ties, as splat-transform
    q = q * np.where(q[np.arange(len(q)), largest] < 0, -1.0, 1.0)[:, None]
    keep = np.ones_like(q, dtype=bool)
    keep[np.arange(len(q)), largest] = False
    others = q[keep].reshape(-1, 3) * (math.sqrt(2) * 0.5) + 0.5
    word = largest.astype(np.uint32) << np.uint32(30)
    for i, shift in enumerate((20, 10, 0)):
        word |= _pack_unorm(others[:, i], 10) << np.uint32(shift)
    return word
