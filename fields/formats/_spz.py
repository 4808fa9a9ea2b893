"""Niantic `.spz` (read only): v2/v3 gzip streams and the v4 NGSP container.

Legacy (v2, v3): gzip of a 16-byte header (magic "NGSP", u32 version, u32 count, u8 SH degree,
u8 fractional bits, u8 flags, u8 reserved) followed by the attribute arrays positions, alphas,
colours, scales, rotations, SH. An ungzipped stream of the same bytes (a historical test
fixture) is accepted too. Extensions (flag 0x2) follow the attributes and are ignored.

v4: a plain 32-byte header (magic, u32 version 4, u32 count, u8 SH degree, u8 fractional bits,
u8 flags, u8 stream count, u32 TOC offset, 12 reserved bytes), extension records up to the TOC
offset (ignored), a TOC of (u64 compressed, u64 uncompressed) sizes, and one zstd frame per
attribute array, in the legacy order.

Attributes: positions 3 x 24-bit signed fixed point (`fractional bits`), alpha u8 (activated
opacity), colour u8 = dc * 0.15 * 255 + 127.5 (SH DC term), scale u8 = (log + 10) * 16,
rotation xyz u8 (v2, w >= 0 implied) or "smallest three" in a u32 (v3+: 2-bit index of the
largest component of xyzw, then the others as sign + 9-bit magnitude scaled by 1/sqrt(2)),
SH u8 = coeff * 128 + 128 with colour channel fastest.

SPZ stores the scene in RUB axes (OpenGL / three.js); scenes here use the RDF axes of INRIA PLY
files (COLMAP / OpenCV), so Gaussians are turned 180 degrees about x on load, as Niantic's
`ply_to_spz` / `spz_to_ply` do. SH degree 4 (SPZ allows it) is cut to degree 3 with a warning.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np

from ..scene import GaussianScene
from ._common import MAX_GAUSSIANS, alpha_to_logit, build_scene, fail, flip_yz

MAGIC = b"NGSP"
GZIP_MAGIC = b"\x1f\x8b"
_COLOR_SCALE = 0.15
_SH_DIM = {0: 0, 1: 3, 2: 8, 3: 15, 4: 24}  # coefficients per channel beyond DC
_MAX_DEFLATE_RATIO = 1032  # deflate cannot expand data more than this
_CHUNK = 1 << 20


def is_spz(data: bytes) -> bool:
    return data[:4] == MAGIC or data[:2] == GZIP_MAGIC


def read_spz(path: Path, data: bytes) -> GaussianScene:
    if data[:2] == GZIP_MAGIC:
        return _decode_legacy(path, _gunzip(path, data))
    if data[:4] != MAGIC:
        fail(path, "not an SPZ file (neither gzip nor 'NGSP' magic)")
    if len(data) < 8:
        fail(path, "SPZ header is truncated")
    version = struct.unpack_from("<I", data, 4)[0]
    if version == 4:
        return _decode_v4(path, data)
    return _decode_legacy(path, data)


# ------------------------------------------------------------------------------- legacy (v2, v3)
def _attribute_sizes(n: int, degree: int, version: int) -> list[int]:
    return [9 * n, n, 3 * n, 3 * n, (4 if version >= 3 else 3) * n, 3 * _SH_DIM[degree] * n]


def _check_header(path: Path, n: int, degree: int, frac_bits: int) -> None:
    if n == 0:
        fail(path, "the file holds no Gaussians")
    if n > MAX_GAUSSIANS:
        fail(path, f"header declares {n} Gaussians, beyond the reader's limit of {MAX_GAUSSIANS}")
    if degree not in _SH_DIM:
        fail(path, f"SH degree {degree} is not in 0..4")
    if frac_bits > 24:
        fail(path, f"{frac_bits} fractional bits exceed the 24-bit position fields")


def _gunzip(path: Path, data: bytes) -> bytes:
    """Inflate only as much as the SPZ header says exists, so a gzip bomb cannot blow memory."""
    d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        head = d.decompress(data, 16)
        while len(head) < 16 and d.unconsumed_tail:
            head += d.decompress(d.unconsumed_tail, 16 - len(head))
        if len(head) < 16:
            fail(path, "gzip stream ends inside the SPZ header")
        if head[:4] != MAGIC:
            fail(path, "gzip stream does not hold an SPZ ('NGSP') header")
        version, n, degree, frac_bits = struct.unpack_from("<IIBB", head, 4)
        if version not in (2, 3):
            fail(path, f"unsupported SPZ version {version} in a gzip stream (known: 2, 3)")
        _check_header(path, n, degree, frac_bits)
        total = 16 + sum(_attribute_sizes(n, degree, version))
        if total > len(data) * _MAX_DEFLATE_RATIO:
            fail(path, f"header declares {n} Gaussians, more than {len(data)} gzip bytes can hold")
        parts = [head]
        have = len(head)
        tail = d.unconsumed_tail
        while have < total:
            chunk = d.decompress(tail, min(_CHUNK, total - have))
            tail = d.unconsumed_tail
            if not chunk:
                break
            parts.append(chunk)
            have += len(chunk)
        # What follows (extension records at most) is inflated in bounded steps; reaching the
        # end of the stream verifies the CRC.
        extra = 0
        while have >= total and not d.eof:
            chunk = d.decompress(tail, _CHUNK)
            tail = d.unconsumed_tail
            if not chunk and not tail:
                break
            extra += len(chunk)
            if extra > 1 << 24:
                fail(path, "more than 16 MiB of data follow the Gaussians in the gzip stream")
            parts.append(chunk)
    except zlib.error as e:
        fail(path, f"corrupt gzip stream ({e})")
    if not d.eof:
        fail(path, "gzip stream is truncated")
    return b"".join(parts)


def _decode_legacy(path: Path, raw: bytes) -> GaussianScene:
    if len(raw) < 16:
        fail(path, "SPZ header is truncated")
    if raw[:4] != MAGIC:
        fail(path, "not an SPZ stream (no 'NGSP' magic)")
    version, n, degree, frac_bits, flags = struct.unpack_from("<IIBBB", raw, 4)
    if version not in (2, 3):
        fail(path, f"unsupported SPZ version {version} (known: 2, 3 and 4)")
    _check_header(path, n, degree, frac_bits)
    sizes = _attribute_sizes(n, degree, version)
    end = 16 + sum(sizes)
    if len(raw) < end:
        fail(path, f"SPZ data is truncated: {n} Gaussians need {end} bytes, found {len(raw)}")
    if len(raw) > end and not flags & 0x2:
        fail(
            path, f"{len(raw) - end} bytes follow the Gaussians: the count does not match the data"
        )
    streams, off = [], 16
    for size in sizes:
        streams.append(np.frombuffer(raw, np.uint8, size, off))
        off += size
    return _decode_attributes(path, streams, n, degree, frac_bits, version)


# ----------------------------------------------------------------------------------------- v4
def _decode_v4(path: Path, data: bytes) -> GaussianScene:
    if len(data) < 32:
        fail(path, "SPZ v4 header is truncated")
    n, degree, frac_bits, _flags, n_streams, toc = struct.unpack_from("<IBBBBI", data, 8)
    _check_header(path, n, degree, frac_bits)
    sizes = _attribute_sizes(n, degree, 4)
    if degree == 0:
        sizes = sizes[:5]
    if n_streams != len(sizes):
        fail(path, f"SPZ v4 has {n_streams} streams, expected {len(sizes)} for SH degree {degree}")
    toc_end = toc + 16 * n_streams
    if toc < 32 or toc_end > len(data):
        fail(path, f"SPZ v4 table of contents at {toc} lies outside the {len(data)}-byte file")
    entries = [struct.unpack_from("<QQ", data, toc + 16 * i) for i in range(n_streams)]
    off = toc_end
    streams = []
    for i, ((packed, unpacked), expected) in enumerate(zip(entries, sizes, strict=True)):
        if unpacked != expected:
            fail(
                path,
                f"SPZ v4 stream {i} holds {unpacked} bytes, expected {expected} for {n} Gaussians",
            )
        if packed > len(data) - off:
            fail(path, f"SPZ v4 stream {i} ({packed} bytes) runs past the end of the file")
        raw = _unzstd(path, data[off : off + packed], expected, i)
        streams.append(np.frombuffer(raw, np.uint8))
        off += packed
    if degree == 0:
        streams.append(np.zeros(0, np.uint8))
    return _decode_attributes(path, streams, n, degree, frac_bits, 4)


def _unzstd(path: Path, frame: bytes, expected: int, index: int) -> bytes:
    try:
        import zstandard
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "reading SPZ v4 needs the 'zstandard' package: pip install zstandard"
        ) from e
    parts, have = [], 0
    try:
        with zstandard.ZstdDecompressor().stream_reader(
            io.BytesIO(frame), read_across_frames=True
        ) as r:
            while have <= expected:  # read one byte past `expected` to catch oversized streams
                chunk = r.read(min(_CHUNK, expected + 1 - have))
                if not chunk:
                    break
                parts.append(chunk)
                have += len(chunk)
    except zstandard.ZstdError as e:
        fail(path, f"SPZ v4 stream {index} is not valid zstd ({e})")
    if have != expected:
        fail(path, f"SPZ v4 stream {index} decompresses to {have}+ bytes, expected {expected}")
    return b"".join(parts)


# ----------------------------------------------------------------------------------- decoding
def _decode_attributes(
    path: Path,
    streams: list[np.ndarray],
    n: int,
    degree: int,
    frac_bits: int,
    version: int,
) -> GaussianScene:
    pos_b, alpha_b, color_b, scale_b, rot_b, sh_b = streams
    p = pos_b.reshape(n * 3, 3).astype(np.int32)
    fixed = p[:, 0] | (p[:, 1] << 8) | (p[:, 2] << 16)
    fixed = (fixed ^ 0x800000) - 0x800000  # sign-extend 24 bits
    means = (fixed.astype(np.float64) / (1 << frac_bits)).reshape(n, 3)
    scales = scale_b.reshape(n, 3).astype(np.float32) / 16.0 - 10.0
    opacities = alpha_to_logit(alpha_b.astype(np.float32) / 255.0)
    dc = (color_b.reshape(n, 3).astype(np.float32) / 255.0 - 0.5) / _COLOR_SCALE
    xyzw = _rotations_v3(rot_b, n) if version >= 3 else _rotations_v2(rot_b, n)
    quats = xyzw[:, [3, 0, 1, 2]]
    dim = _SH_DIM[degree]
    rest = (sh_b.reshape(n, dim, 3).astype(np.float32) - 128.0) / 128.0
    if degree == 4:
        warnings.warn(
            f"{path}: SH degree 4 is cut to degree 3 (the highest GaussianScene holds)",
            stacklevel=4,
        )
        rest = rest[:, : _SH_DIM[3]]
    sh = np.concatenate([dc[:, None, :], rest], axis=1)
    means, quats, sh = flip_yz(means.astype(np.float32), quats, sh)
    return build_scene(path, means, quats, scales, opacities, sh)


def _rotations_v2(rot_b: np.ndarray, n: int) -> np.ndarray:
    xyz = rot_b.reshape(n, 3).astype(np.float32) / 127.5 - 1.0
    w = np.sqrt(np.maximum(0.0, 1.0 - (xyz * xyz).sum(axis=1)))
    return np.concatenate([xyz, w[:, None]], axis=1)


def _rotations_v3(rot_b: np.ndarray, n: int) -> np.ndarray:
    comp = rot_b.reshape(n, 4).astype(np.uint32)
    comp = comp[:, 0] | (comp[:, 1] << 8) | (comp[:, 2] << 16) | (comp[:, 3] << 24)
    largest = (comp >> np.uint32(30)).astype(np.int64)
    out = np.zeros((n, 4), np.float32)
    rest = comp.copy()
    # The three smaller components are packed with index 3 in the lowest bits.
    for i in (3, 2, 1, 0):
        here = largest != i
        mag = (rest & np.uint32(511)).astype(np.float32)
        neg = ((rest >> np.uint32(9)) & np.uint32(1)).astype(bool)
        val = np.float32(np.sqrt(0.5)) * mag / np.float32(511.0)
        out[:, i] = np.where(here, np.where(neg, -val, val), 0.0)
        rest = np.where(here, rest >> np.uint32(10), rest)
    ss = (out * out).sum(axis=1)
    out[np.arange(n), largest] = np.sqrt(np.maximum(0.0, 1.0 - ss))
    return out
