"""mkkellogg GaussianSplats3D `.ksplat` (read only).

Layout (little-endian), as GaussianSplats3D's `SplatBuffer` writes it and splat-transform reads:
- main header, 4096 bytes: u8 major version (0), u8 minor version (>= 1), u32 max section count
  @4, u32 section count @8, u32 max splat count @12, u32 splat count @16, u16 compression level
  @20 (0, 1, 2), f32 x3 scene centre @24, f32 min / max SH value @36 / @40 (level 2; 0 means the
  default -1.5 / 1.5);
- `max section count` section headers of 1024 bytes: u32 splat count @0, u32 max splat count @4,
  u32 bucket capacity @8, u32 bucket count @12, f32 bucket block size @16, u16 bucket storage
  bytes @20, u32 quantisation range @24 (0: the level's default 32767), u32 full bucket count
  @32, u32 partial bucket count @36, u16 SH degree @40;
- per section: u32 sizes of the partial buckets, then the bucket centres (bucket storage bytes
  each, f32 x3), then `max splat count` records of the level's size (only `splat count` used).
Record: centre (level 0: f32 x3; 1, 2: u16 x3 = (c - range) * block / 2 / range + bucket
centre), scale (linear; f32 x3 or f16 x3), rotation w, x, y, z (f32 or f16), colour RGBA u8
(RGB = 0.5 + SH_C0 * dc, A = sigmoid(opacity)), then SH rest coefficients (f32, f16, or u8
spread between the header's min and max), band by band, each band channel by channel.

Axes: the frame of INRIA PLY (GaussianSplats3D builds .ksplat from PLY without turning it;
splat-transform reads it in its PLY space), so nothing is turned.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from ..scene import SH_C0, GaussianScene
from ._common import alpha_to_logit, build_scene, fail

MAIN_HEADER = 4096
SECTION_HEADER = 1024
_LEVELS = {
    # centre, scale, rotation bytes, SH bytes per coefficient, default quantisation range
    0: (12, 12, 16, 4, 1),
    1: (6, 6, 8, 2, 32767),
    2: (6, 6, 8, 1, 32767),
}
_SH_COUNT = {0: 0, 1: 9, 2: 24, 3: 45}


def _sh_slots(count: int) -> tuple[np.ndarray, np.ndarray]:
    """For the stored SH rest values 0..count-1: (coefficient index 1.., colour channel)."""
    coeff, chan = [], []
    for i in range(count):
        if i < 9:
            c, k = divmod(i, 3)
        elif i < 24:
            c, k = divmod(i - 9, 5)
            k += 3
        else:
            c, k = divmod(i - 24, 7)
            k += 8
        coeff.append(1 + k)
        chan.append(c)
    return np.array(coeff, dtype=np.int64), np.array(chan, dtype=np.int64)


def read_ksplat(path: Path, data: bytes) -> GaussianScene:
    if len(data) < MAIN_HEADER:
        fail(path, f"file is {len(data)} bytes, shorter than the 4096-byte .ksplat header")
    major, minor = data[0], data[1]
    if major != 0 or minor < 1:
        fail(path, f"unsupported .ksplat version {major}.{minor} (known: 0.1 and later 0.x)")
    max_sections, _, _, total = struct.unpack_from("<4I", data, 4)
    level = struct.unpack_from("<H", data, 20)[0]
    if level not in _LEVELS:
        fail(path, f"unknown .ksplat compression level {level} (known: 0, 1, 2)")
    sh_min, sh_max = struct.unpack_from("<2f", data, 36)
    sh_min = sh_min if sh_min and np.isfinite(sh_min) else -1.5  # splat-transform's defaults
    sh_max = sh_max if sh_max and np.isfinite(sh_max) else 1.5
    if total == 0:
        fail(path, "the file holds no Gaussians")
    if max_sections > (len(data) - MAIN_HEADER) // SECTION_HEADER:
        fail(path, f"header declares {max_sections} sections, more than the file can hold")
    c_bytes, s_bytes, r_bytes, h_bytes, default_range = _LEVELS[level]
    rec_base = c_bytes + s_bytes + r_bytes + 4

    sections = []
    degree = 0
    offset = MAIN_HEADER + max_sections * SECTION_HEADER
    claimed = 0
    for i in range(max_sections):
        h = MAIN_HEADER + i * SECTION_HEADER
        count, max_count, cap, buckets = struct.unpack_from("<4I", data, h)
        block = struct.unpack_from("<f", data, h + 16)[0]
        bucket_bytes = struct.unpack_from("<H", data, h + 20)[0]
        qrange = struct.unpack_from("<I", data, h + 24)[0] or default_range
        full, partial = struct.unpack_from("<2I", data, h + 32)
        sec_degree = struct.unpack_from("<H", data, h + 40)[0]
        if max_count == 0:  # an unused section: only its bucket table (if any) takes room
            offset += bucket_bytes * buckets + 4 * partial
            if count or offset > len(data):
                fail(path, f"section {i} holds {count} splats in no room, or runs past the file")
            continue
        if sec_degree not in _SH_COUNT:
            fail(path, f"section {i} declares SH degree {sec_degree} (known: 0..3)")
        if count > max_count:
            fail(path, f"section {i} holds {count} splats, more than its capacity {max_count}")
        rec = rec_base + _SH_COUNT[sec_degree] * h_bytes
        meta_bytes = bucket_bytes * buckets + 4 * partial
        data_bytes = rec * max_count
        if offset + meta_bytes + data_bytes > len(data):
            fail(
                path,
                f"section {i} needs {meta_bytes + data_bytes} bytes at {offset}, past the end of the file",
            )
        if level > 0 and count:
            if full + partial > buckets or (buckets and bucket_bytes < 12):
                fail(path, f"section {i} has an inconsistent bucket table")
            if not (np.isfinite(block) and block > 0):
                fail(path, f"section {i} has a bad bucket block size {block}")
        sections.append(
            (
                i,
                offset,
                count,
                cap,
                buckets,
                block,
                bucket_bytes,
                qrange,
                full,
                partial,
                sec_degree,
                rec,
            )
        )
        degree = max(degree, sec_degree if count else 0)
        offset += meta_bytes + data_bytes
        claimed += count
    if claimed != total:
        fail(path, f"header declares {total} splats but its sections hold {claimed}")

    k = (degree + 1) ** 2
    means = np.empty((total, 3), np.float32)
    scales = np.empty((total, 3), np.float32)
    quats = np.empty((total, 4), np.float32)
    rgba = np.empty((total, 4), np.uint8)
    sh = np.zeros((total, k, 3), np.float32)
    at = 0
    for (
        i,
        off,
        count,
        cap,
        buckets,
        block,
        bucket_bytes,
        qrange,
        full,
        partial,
        sec_degree,
        rec,
    ) in sections:
        if count == 0:
            continue
        meta_bytes = bucket_bytes * buckets + 4 * partial
        raw = np.frombuffer(data, np.uint8, count * rec, off + meta_bytes).reshape(count, rec)
        sl = slice(at, at + count)
        ftype = "<f4" if level == 0 else "<f2"
        if level == 0:
            means[sl] = raw[:, :12].copy().view("<f4")
        else:
            means[sl] = _bucketed(path, i, data, off, raw[:, :6].copy().view("<u2"), cap, buckets, block,
                                  bucket_bytes, qrange, full, partial)  # fmt: skip
        p = c_bytes
        s = raw[:, p : p + s_bytes].copy().view(ftype).astype(np.float64)
        p += s_bytes
        quats[sl] = raw[:, p : p + r_bytes].copy().view(ftype).astype(np.float32)
        p += r_bytes
        rgba[sl] = raw[:, p : p + 4]
        p += 4
        with np.errstate(divide="ignore", invalid="ignore"):
            scales[sl] = np.where(
                s > 0, np.log(np.where(s > 0, s, 1.0)), np.where(np.isnan(s), np.nan, -10.0)
            )
        n_sh = _SH_COUNT[sec_degree]
        if n_sh:
            vals = raw[:, p : p + n_sh * h_bytes]
            if level == 0:
                v = vals.copy().view("<f4").astype(np.float32)
            elif level == 1:
                v = vals.copy().view("<f2").astype(np.float32)
            else:
                v = (sh_min + vals.astype(np.float64) / 255.0 * (sh_max - sh_min)).astype(
                    np.float32
                )
            coeff, chan = _sh_slots(n_sh)
            sh[sl, coeff, chan] = v
        at += count
    col = rgba.astype(np.float32) / 255.0
    sh[:, 0, :] = (col[:, :3] - 0.5) / SH_C0
    zero = ~(quats != 0).any(axis=1)
    quats[zero] = (1.0, 0.0, 0.0, 0.0)
    return build_scene(path, means, quats, scales, alpha_to_logit(col[:, 3]), sh)


def _bucketed(
    path: Path,
    section: int,
    data: bytes,
    off: int,
    code: np.ndarray,  # [n,3] uint16
    cap: int,
    buckets: int,
    block: float,
    bucket_bytes: int,
    qrange: int,
    full: int,
    partial: int,
) -> np.ndarray:
    n = len(code)
    sizes = np.frombuffer(data, "<u4", partial, off).astype(np.int64)
    centres = np.frombuffer(data, np.uint8, bucket_bytes * buckets, off + 4 * partial)
    centres = centres.reshape(buckets, bucket_bytes)[:, :12].copy().view("<f4").reshape(buckets, 3)
    in_full = min(n, full * cap)
    idx = np.empty(n, np.int64)
    idx[:in_full] = np.arange(in_full) // max(cap, 1)
    rest = n - in_full
    if rest:
        if sizes.sum() < rest:
            fail(
                path,
                f"section {section}: partial buckets hold {int(sizes.sum())} splats, not {rest}",
            )
        ends = np.cumsum(
            sizes
        )  # splat r of the partial ones lies in the first bucket ending past r
        idx[in_full:] = full + np.searchsorted(ends, np.arange(rest), side="right")
    if n and int(idx.max()) >= buckets:
        fail(path, f"section {section}: splats fall into bucket {int(idx.max())} of {buckets}")
    scale = block / 2.0 / qrange
    return ((code.astype(np.float64) - qrange) * scale + centres[idx]).astype(np.float32)
