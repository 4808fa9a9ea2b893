"""Niantic `.spz`: v2/v3 gzip streams and the v4 NGSP container, read and written.

Legacy (v2, v3): gzip of a 16-byte header (magic "NGSP", u32 version, u32 count, u8 SH degree,
u8 fractional bits, u8 flags, u8 reserved) followed by the attribute arrays positions, alphas,
colours, scales, rotations, SH. An ungzipped stream of the same bytes (a historical test
fixture) is accepted too. Extensions (flag 0x2) follow the attributes and are ignored.

v4: a plain 32-byte header (magic, u32 version 4, u32 count, u8 SH degree, u8 fractional bits,
u8 flags, u8 stream count, u32 TOC offset, 12 reserved bytes), extension records up to the TOC
offset (ignored), a TOC of (u64 compressed, u64 uncompressed) sizes, and one zstd frame per
attribute array, in the legacy order (no SH stream for SH degree 0), nothing after the last.

Attributes: positions 3 x 24-bit signed fixed point (`fractional bits`), alpha u8 (activated
opacity), colour u8 = dc * 0.15 * 255 + 127.5 (SH DC term), scale u8 = (log + 10) * 16,
rotation xyz u8 (v2, w >= 0 implied) or "smallest three" in a u32 (v3+: 2-bit index of the
largest component of xyzw, then the others as sign + 9-bit magnitude scaled by 1/sqrt(2)),
SH u8 = coeff * 128 + 128 with colour channel fastest.

Writing follows Niantic's `packGaussians` (the reference every other tool links): 12
fractional bits (fewer, recorded in the header, only when a coordinate would not fit 24 bits),
round-to-nearest bytes, SH degree-1 coefficients on 5 bits and higher ones on 4 bits (bytes
rounded to the centre of 8- and 16-wide buckets), gzip level 6 for v2/v3, zstd level 12 with
the content size in every frame for v4.

SPZ stores the scene in RUB axes (OpenGL / three.js); scenes here use the RDF axes of INRIA PLY
files (COLMAP / OpenCV), so Gaussians are turned 180 degrees about x on load and back on save,
as Niantic's `ply_to_spz` / `spz_to_ply` do. SH degree 4 (SPZ allows it) is cut to degree 3
with a warning.

Bounded reading: the header's count is checked before anything is allocated, against (1) what
the compressed bytes can hold at all (deflate expands at most 1032x; a zstd frame at most
32768x: one 128 KiB RLE block per 4 bytes) and (2) a decoding budget: the decoded scene may
take at most `MAX_EXPANSION` times the file's size, or `FREE_BYTES`, whichever is larger
(measured: the synthetic world, a very regular scene, 8.8x at SH0, 14x at SH3 with small
higher bands, 37x at SH3 with all-zero higher bands; trained scenes are noisier and expand
less). Streams are then decoded in bounded chunks straight into the
output arrays, so the peak is about the size of the decoded scene.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..scene import GaussianScene
from ._common import MAX_GAUSSIANS, _flip_yz_sh_signs, alpha_to_logit, build_scene, fail

MAGIC = b"NGSP"
GZIP_MAGIC = b"\x1f\x8b"
_COLOR_SCALE = 0.15
_SH_DIM = {0: 0, 1: 3, 2: 8, 3: 15, 4: 24}  # coefficients per channel beyond DC
_MAX_DEFLATE_RATIO = 1032  # deflate cannot expand data more than this
_MAX_ZSTD_RATIO = 32768  # one 128 KiB RLE block per 4 bytes (3-byte block header + 1 byte)
_CHUNK_ROWS = 1 << 16  # Gaussians decoded / encoded per step
_IN_STEP = 1 << 16  # compressed bytes fed to the inflater per step
_MAX_EXTENSION_BYTES = 1 << 24

# Decoding budget: a file may decode to MAX_EXPANSION times its size, or to FREE_BYTES whatever
# its size. Real SPZ files decode to 4x (SH0) - 20x (SH3 with flat higher bands) their size.
MAX_EXPANSION = 48
FREE_BYTES = 256 << 20

# Writing (Niantic's defaults).
FRACTIONAL_BITS = 12
SH1_BITS = 5
SH_REST_BITS = 4
_GZIP_LEVEL = 6
_ZSTD_LEVEL = 12
_MAX_FIXED = (1 << 23) - 1


def is_spz(data: bytes) -> bool:
    return data[:4] == MAGIC or data[:2] == GZIP_MAGIC


def read_spz(path: Path, data: bytes) -> GaussianScene:
    try:
        if data[:2] == GZIP_MAGIC:
            return _read_gzip(path, data)
        if data[:4] != MAGIC:
            fail(path, "not an SPZ file (neither gzip nor 'NGSP' magic)")
        if len(data) < 8:
            fail(path, "SPZ header is truncated")
        version = struct.unpack_from("<I", data, 4)[0]
        if version == 4:
            return _read_v4(path, data)
        return _read_plain_legacy(path, data)
    except MemoryError:
        fail(path, "not enough memory to decode the Gaussians this SPZ file declares")


# ----------------------------------------------------------------------------------- checks
def _attribute_sizes(n: int, degree: int, version: int) -> list[int]:
    return [9 * n, n, 3 * n, 3 * n, (4 if version >= 3 else 3) * n, 3 * _SH_DIM[degree] * n]


def decoded_bytes(n: int, degree: int) -> int:
    """Bytes of the float32 arrays a scene of `n` Gaussians with SH `degree` takes."""
    k = min(_SH_DIM[degree], _SH_DIM[3]) + 1
    return 4 * n * (3 + 4 + 3 + 1 + 3 * k)


def _check_header(path: Path, n: int, degree: int, frac_bits: int, file_size: int) -> None:
    if n == 0:
        fail(path, "the file holds no Gaussians")
    if n > MAX_GAUSSIANS:
        fail(path, f"header declares {n} Gaussians, beyond the reader's limit of {MAX_GAUSSIANS}")
    if degree not in _SH_DIM:
        fail(path, f"SH degree {degree} is not in 0..4")
    if frac_bits > 24:
        fail(path, f"{frac_bits} fractional bits exceed the 24-bit position fields")
    need = decoded_bytes(n, degree)
    budget = max(FREE_BYTES, MAX_EXPANSION * file_size)
    if need > budget:
        fail(
            path,
            f"header declares {n} Gaussians ({need / 2**20:.0f} MiB decoded) in a "
            f"{file_size}-byte file: more than the {MAX_EXPANSION}x expansion (or "
            f"{FREE_BYTES >> 20} MiB) this reader accepts; real SPZ files expand 4-40x",
        )


# ---------------------------------------------------------------------------- byte sources
class _Inflater:
    """Reads exact byte counts out of a gzip stream, inflating bounded steps at a time."""

    def __init__(self, path: Path, data: bytes) -> None:
        self._path = path
        self._d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        self._src = memoryview(data)
        self._pos = 0
        self._pending = b""

    def read(self, size: int) -> bytes:
        """Up to `size` bytes; fewer only when the stream ends."""
        parts: list[bytes] = []
        need = size
        try:
            while need > 0 and not self._d.eof:
                if not self._pending:
                    if self._pos >= len(self._src):
                        break
                    self._pending = self._src[self._pos : self._pos + _IN_STEP].tobytes()
                    self._pos += len(self._pending)
                chunk = self._d.decompress(self._pending, need)
                self._pending = self._d.unconsumed_tail
                if chunk:
                    parts.append(chunk)
                    need -= len(chunk)
        except zlib.error as e:
            fail(self._path, f"corrupt gzip stream ({e})")
        return b"".join(parts)

    def exact(self, size: int, what: str) -> bytes:
        out = self.read(size)
        if len(out) < size:
            if self._d.eof:
                fail(self._path, f"SPZ data is truncated: the gzip stream ends inside {what}")
            fail(self._path, "gzip stream is truncated")
        return out

    def finish(self, extensions: bool) -> None:
        """Inflate what follows the Gaussians (extension records at most, bounded) to the end
        of the stream, which verifies the CRC."""
        extra = len(self.read(_MAX_EXTENSION_BYTES + 1))
        if extra and not extensions:
            fail(self._path, f"{extra}+ bytes follow the Gaussians: the count does not match")
        if extra > _MAX_EXTENSION_BYTES:
            fail(self._path, "more than 16 MiB of data follow the Gaussians in the gzip stream")
        if not self._d.eof:
            fail(self._path, "gzip stream is truncated")


class _Slicer:
    """Reads exact byte counts out of an in-memory (ungzipped) legacy stream."""

    def __init__(self, data: bytes, offset: int) -> None:
        self._view = memoryview(data)
        self._pos = offset

    def exact(self, size: int, what: str) -> memoryview:
        out = self._view[self._pos : self._pos + size]
        self._pos += size
        return out


Reader = Callable[[int, str], bytes | memoryview]


# ------------------------------------------------------------------------------- legacy (v2, v3)
def _read_gzip(path: Path, data: bytes) -> GaussianScene:
    src = _Inflater(path, data)
    head = src.read(16)
    if len(head) < 16:
        fail(path, "gzip stream ends inside the SPZ header")
    if head[:4] != MAGIC:
        fail(path, "gzip stream does not hold an SPZ ('NGSP') header")
    version, n, degree, frac_bits, flags = struct.unpack_from("<IIBBB", head, 4)
    if version not in (2, 3):
        fail(path, f"unsupported SPZ version {version} in a gzip stream (known: 2, 3)")
    _check_header(path, n, degree, frac_bits, len(data))
    total = 16 + sum(_attribute_sizes(n, degree, version))
    if total > len(data) * _MAX_DEFLATE_RATIO:
        fail(path, f"header declares {n} Gaussians, more than {len(data)} gzip bytes can hold")
    scene = _decode(path, src.exact, n, degree, frac_bits, version)
    src.finish(bool(flags & 0x2))
    return scene


def _read_plain_legacy(path: Path, raw: bytes) -> GaussianScene:
    if len(raw) < 16:
        fail(path, "SPZ header is truncated")
    version, n, degree, frac_bits, flags = struct.unpack_from("<IIBBB", raw, 4)
    if version not in (2, 3):
        fail(path, f"unsupported SPZ version {version} (known: 2, 3 and 4)")
    if n == 0:
        fail(path, "the file holds no Gaussians")
    if degree not in _SH_DIM:
        fail(path, f"SH degree {degree} is not in 0..4")
    end = 16 + sum(_attribute_sizes(n, degree, version))
    if len(raw) < end:
        fail(path, f"SPZ data is truncated: {n} Gaussians need {end} bytes, found {len(raw)}")
    if len(raw) > end and not flags & 0x2:
        fail(
            path, f"{len(raw) - end} bytes follow the Gaussians: the count does not match the data"
        )
    _check_header(path, n, degree, frac_bits, len(raw))
    return _decode(path, _Slicer(raw, 16).exact, n, degree, frac_bits, version)


# ----------------------------------------------------------------------------------------- v4
def _read_v4(path: Path, data: bytes) -> GaussianScene:
    if len(data) < 32:
        fail(path, "SPZ v4 header is truncated")
    n, degree, frac_bits, _flags, n_streams, toc = struct.unpack_from("<IBBBBI", data, 8)
    if n == 0:
        fail(path, "the file holds no Gaussians")
    if degree not in _SH_DIM:
        fail(path, f"SH degree {degree} is not in 0..4")
    sizes = _attribute_sizes(n, degree, 4)[: 6 if degree else 5]
    if n_streams != len(sizes):
        fail(path, f"SPZ v4 has {n_streams} streams, expected {len(sizes)} for SH degree {degree}")
    toc_end = toc + 16 * n_streams
    if toc < 32 or toc_end > len(data):
        fail(path, f"SPZ v4 table of contents at {toc} lies outside the {len(data)}-byte file")
    entries = [struct.unpack_from("<QQ", data, toc + 16 * i) for i in range(n_streams)]
    frames, off = [], toc_end
    for i, ((packed, unpacked), expected) in enumerate(zip(entries, sizes, strict=True)):
        if unpacked != expected:
            fail(
                path,
                f"SPZ v4 stream {i} holds {unpacked} bytes, expected {expected} for {n} Gaussians",
            )
        if packed > len(data) - off:
            fail(path, f"SPZ v4 stream {i} ({packed} bytes) runs past the end of the file")
        if expected > packed * _MAX_ZSTD_RATIO:
            fail(path, f"SPZ v4 stream {i}: {packed} zstd bytes cannot hold {expected} bytes")
        frames.append((off, packed))
        off += packed
    if off != len(data):
        fail(path, f"{len(data) - off} bytes follow the last SPZ v4 stream")
    _check_header(path, n, degree, frac_bits, len(data))
    zstandard = _zstandard()
    view = memoryview(data)
    for i, ((start, packed), expected) in enumerate(zip(frames, sizes, strict=True)):
        _check_frame(path, zstandard, view[start : start + packed], expected, i)
    src = _ZstdStreams(path, zstandard, [view[a : a + p] for a, p in frames], sizes)
    try:
        return _decode(path, src.exact, n, degree, frac_bits, 4)
    finally:
        src.close()


class _ZstdStreams:
    """Reads exact byte counts out of consecutive zstd streams, each in bounded steps. The
    decoder asks for the streams in file order and uses each up before the next."""

    def __init__(self, path: Path, zstandard, frames: list[memoryview], sizes: list[int]) -> None:
        self._path, self._z = path, zstandard
        self._frames, self._sizes = frames, sizes
        self._index = -1
        self._left = 0
        self._reader = None

    def _next(self) -> None:
        self.close()
        self._index += 1
        if self._index >= len(self._frames):
            fail(self._path, "SPZ v4 holds fewer streams than its attributes need")
        dctx = self._z.ZstdDecompressor()
        self._reader = dctx.stream_reader(self._frames[self._index], read_across_frames=True)
        self._left = self._sizes[self._index]

    def _read(self, size: int) -> bytes:
        parts, have = [], 0
        try:
            while have < size:
                chunk = self._reader.read(size - have)
                if not chunk:
                    break
                parts.append(chunk)
                have += len(chunk)
        except self._z.ZstdError as e:
            fail(self._path, f"SPZ v4 stream {self._index} is not valid zstd ({e})")
        return b"".join(parts)

    def exact(self, size: int, what: str) -> bytes:
        if self._left == 0:
            self._next()
        out = self._read(size)
        if len(out) != size:
            fail(
                self._path,
                f"SPZ v4 stream {self._index} ({what}) decompresses to fewer bytes than its TOC",
            )
        self._left -= size
        if self._left == 0 and self._read(1):
            fail(
                self._path,
                f"SPZ v4 stream {self._index} ({what}) decompresses to more bytes than its TOC",
            )
        return out

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


def _zstandard():
    try:
        import zstandard
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("SPZ v4 needs the 'zstandard' package: pip install zstandard") from e
    return zstandard


def _check_frame(path: Path, zstandard, frame: memoryview, expected: int, index: int) -> None:
    """The first frame header's content size (when it has one) must match the TOC."""
    try:
        params = zstandard.get_frame_parameters(frame)
    except zstandard.ZstdError as e:
        fail(path, f"SPZ v4 stream {index} is not valid zstd ({e})")
    size = params.content_size
    if size != zstandard.CONTENTSIZE_UNKNOWN and size > expected:
        fail(
            path,
            f"SPZ v4 stream {index}: its zstd frame declares {size} bytes, the TOC {expected}",
        )


# ----------------------------------------------------------------------------------- decoding
def _rows(n: int) -> range:
    return range(0, n, _CHUNK_ROWS)


def _decode(
    path: Path, read: Reader, n: int, degree: int, frac_bits: int, version: int
) -> GaussianScene:
    """Decode the six attribute streams (in file order, pulled through `read(size, what)`)
    chunk by chunk into preallocated arrays, then turn RUB into RDF in place."""
    dim = _SH_DIM[degree]
    keep = min(dim, _SH_DIM[3])
    means = np.empty((n, 3), np.float32)
    opacities = np.empty(n, np.float32)
    sh = np.empty((n, keep + 1, 3), np.float32)
    scales = np.empty((n, 3), np.float32)
    quats = np.empty((n, 4), np.float32)

    inv = 1.0 / (1 << frac_bits)
    for a in _rows(n):
        b = min(n, a + _CHUNK_ROWS)
        p = _u8(read(9 * (b - a), "positions"), b - a, 3, 3).astype(np.int32)
        fixed = p[..., 0] | (p[..., 1] << 8) | (p[..., 2] << 16)
        fixed = (fixed ^ 0x800000) - 0x800000  # sign-extend 24 bits
        means[a:b] = fixed * inv
    for a in _rows(n):
        b = min(n, a + _CHUNK_ROWS)
        alpha = np.frombuffer(read(b - a, "alphas"), np.uint8).astype(np.float32) / 255.0
        opacities[a:b] = alpha_to_logit(alpha)
    for a in _rows(n):
        b = min(n, a + _CHUNK_ROWS)
        c = _u8(read(3 * (b - a), "colours"), b - a, 3).astype(np.float32)
        sh[a:b, 0] = (c / 255.0 - 0.5) / _COLOR_SCALE
    for a in _rows(n):
        b = min(n, a + _CHUNK_ROWS)
        scales[a:b] = _u8(read(3 * (b - a), "scales"), b - a, 3).astype(np.float32) / 16.0 - 10.0
    width = 4 if version >= 3 else 3
    for a in _rows(n):
        b = min(n, a + _CHUNK_ROWS)
        r = _u8(read(width * (b - a), "rotations"), b - a, width)
        xyzw = _rotations_v3(r) if version >= 3 else _rotations_v2(r)
        quats[a:b] = xyzw[:, [3, 0, 1, 2]]
    if dim:
        for a in _rows(n):
            b = min(n, a + _CHUNK_ROWS)
            rest = _u8(read(3 * dim * (b - a), "SH"), b - a, dim, 3)[:, :keep]
            sh[a:b, 1:] = (rest.astype(np.float32) - 128.0) / 128.0
    if degree == 4:
        warnings.warn(
            f"{path}: SH degree 4 is cut to degree 3 (the highest GaussianScene holds)",
            stacklevel=4,
        )
    # RUB -> RDF in place (same as `flip_yz`, without copies).
    means[:, 1:] *= -1.0
    quats[:, 2:] *= -1.0
    sh *= _flip_yz_sh_signs()[: keep + 1, None]
    return build_scene(path, means, quats, scales, opacities, sh)


def _u8(buf: bytes | memoryview, *shape: int) -> np.ndarray:
    return np.frombuffer(buf, np.uint8).reshape(shape)


def _rotations_v2(r: np.ndarray) -> np.ndarray:  # [M,3] u8 -> [M,4] xyzw
    xyz = r.astype(np.float32) / 127.5 - 1.0
    w = np.sqrt(np.maximum(0.0, 1.0 - (xyz * xyz).sum(axis=1)))
    return np.concatenate([xyz, w[:, None]], axis=1)


def _rotations_v3(r: np.ndarray) -> np.ndarray:  # [M,4] u8 -> [M,4] xyzw
    m = r.shape[0]
    comp = r.astype(np.uint32)
    comp = comp[:, 0] | (comp[:, 1] << 8) | (comp[:, 2] << 16) | (comp[:, 3] << 24)
    largest = (comp >> np.uint32(30)).astype(np.int64)
    out = np.zeros((m, 4), np.float32)
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
    out[np.arange(m), largest] = np.sqrt(np.maximum(0.0, 1.0 - ss))
    return out


# ------------------------------------------------------------------------------------ writing
def write_spz(f: BinaryIO, scene: GaussianScene, *, version: int = 3) -> None:
    """Write `scene` (RDF axes, SH degree <= 3) as SPZ `version` 2, 3 (gzip) or 4 (NGSP+zstd).

    Quantisation as Niantic's reference packer (see the module docstring); extras and meta are
    not stored (SPZ has no place for them). Raises ValueError for an empty scene, non-finite
    values, or positions beyond what 24-bit fixed point holds (|x| >= 2^23)."""
    if version not in (2, 3, 4):
        raise ValueError(f"SPZ version must be 2, 3 or 4, got {version!r}")
    n = len(scene)
    if n == 0:
        raise ValueError("cannot write an empty scene as SPZ (readers refuse 0 Gaussians)")
    k = scene.sh.shape[1]
    degree = {1: 0, 4: 1, 9: 2, 16: 3}.get(k)
    if degree is None:
        raise ValueError(f"SH with {k} coefficients per channel is not a full SH degree")
    means = scene.means.detach().cpu().float().numpy()  # [N,3]
    for name, t in (
        ("positions", scene.means),
        ("rotations", scene.quats),
        ("scales", scene.scales),
        ("opacities", scene.opacities),
        ("SH", scene.sh),
    ):
        if not bool(t.detach().isfinite().all()):
            raise ValueError(f"cannot write SPZ: the scene's {name} have NaN or infinite values")
    frac_bits = _fractional_bits(float(np.abs(means).max()))
    streams = _encoded_streams(scene, degree, frac_bits, version)
    if version == 4:
        _write_v4(f, n, degree, frac_bits, streams)
    else:
        _write_gzip(f, n, degree, frac_bits, version, streams)


def _fractional_bits(extent: float) -> int:
    for bits in range(FRACTIONAL_BITS, -1, -1):
        if round(extent * (1 << bits)) <= _MAX_FIXED:
            return bits
    raise ValueError(
        f"cannot write SPZ: a coordinate of {extent:g} exceeds the 24-bit fixed point range"
    )


def _round(x: np.ndarray) -> np.ndarray:
    """C's `std::round` of float32 values: half away from zero (numpy rounds half to even)."""
    x = np.asarray(x, np.float32).astype(np.float64)
    return np.where(x >= 0, np.floor(x + 0.5), np.ceil(x - 0.5))


def _to_u8(x: np.ndarray) -> np.ndarray:
    """Niantic's toUint8: round, clamp to [0, 255]."""
    return np.clip(_round(x), 0, 255).astype(np.uint8)


def _quantize_sh(x: np.ndarray, bits: int) -> np.ndarray:
    """Niantic's quantizeSH: 8-bit value, then the centre of its (2^(8-bits))-wide bucket."""
    bucket = 1 << (8 - bits)
    q = _round(np.asarray(x, np.float32) * np.float32(128.0)).astype(np.int64) + 128
    q = np.trunc((q + bucket // 2) / bucket).astype(np.int64) * bucket  # C integer division
    return np.clip(q, 0, 255).astype(np.uint8)


def _encoded_streams(
    scene: GaussianScene, degree: int, frac_bits: int, version: int
) -> list[Callable[[], list[bytes]]]:
    """Per attribute (file order), a function giving its bytes as a list of row chunks
    (encoded from the scene only when called, so one attribute's bytes exist at a time)."""
    n = len(scene)
    k = scene.sh.shape[1]

    def chunks(encode: Callable[[int, int], np.ndarray]) -> Callable[[], list[bytes]]:
        return lambda: [encode(a, min(n, a + _CHUNK_ROWS)).tobytes() for a in _rows(n)]

    def np_attr(t, a: int, b: int) -> np.ndarray:
        return t[a:b].detach().cpu().float().numpy()

    def positions(a: int, b: int) -> np.ndarray:
        p = (
            np_attr(scene.means, a, b)
            * np.float32(1 << frac_bits)
            * np.array([1, -1, -1], np.float32)
        )
        fixed = _round(p).astype(np.int64) & 0xFFFFFF  # 24-bit two's complement
        out = np.empty((b - a, 3, 3), np.uint8)
        out[..., 0] = fixed & 0xFF
        out[..., 1] = (fixed >> 8) & 0xFF
        out[..., 2] = (fixed >> 16) & 0xFF
        return out

    def alphas(a: int, b: int) -> np.ndarray:
        logit = np_attr(scene.opacities, a, b)
        with np.errstate(over="ignore"):  # exp overflows to inf for logits < -88: alpha 0
            alpha = np.float32(1.0) / (np.float32(1.0) + np.exp(-logit))  # float32, as Niantic
        return _to_u8(alpha * np.float32(255.0))

    def colours(a: int, b: int) -> np.ndarray:
        dc = np_attr(scene.sh, a, b)[:, 0]
        return _to_u8(dc * np.float32(_COLOR_SCALE * 255.0) + np.float32(127.5))

    def scales(a: int, b: int) -> np.ndarray:
        return _to_u8((np_attr(scene.scales, a, b) + np.float32(10.0)) * np.float32(16.0))

    def rotations(a: int, b: int) -> np.ndarray:
        wxyz = np_attr(scene.quats, a, b) * np.array([1, 1, -1, -1], np.float32)  # RDF -> RUB
        q = wxyz[:, [1, 2, 3, 0]].astype(np.float32)  # xyzw
        norm = np.linalg.norm(q, axis=1, keepdims=True)
        q = np.where(norm > 0, q / np.where(norm > 0, norm, 1), np.array([0, 0, 0, 1], np.float32))
        return _pack_v3(q) if version >= 3 else _pack_v2(q)

    def sh_rest(a: int, b: int) -> np.ndarray:
        rest = np_attr(scene.sh, a, b)[:, 1:] * _flip_yz_sh_signs()[1:k, None]  # RDF -> RUB
        out = np.empty(rest.shape, np.uint8)
        out[:, :3] = _quantize_sh(rest[:, :3], SH1_BITS)
        out[:, 3:] = _quantize_sh(rest[:, 3:], SH_REST_BITS)
        return out

    streams = [
        chunks(positions),
        chunks(alphas),
        chunks(colours),
        chunks(scales),
        chunks(rotations),
    ]
    if degree > 0:
        streams.append(chunks(sh_rest))
    return streams


def _pack_v2(q: np.ndarray) -> np.ndarray:  # [M,4] unit xyzw -> [M,3] u8
    sign = np.where(q[:, 3:] < 0, np.float32(-127.5), np.float32(127.5))
    return _to_u8(q[:, :3] * sign + np.float32(127.5))


def _pack_v3(q: np.ndarray) -> np.ndarray:  # [M,4] unit xyzw -> [M,4] u8 (smallest three)
    m = q.shape[0]
    aq = np.abs(q)
    largest = np.argmax(aq, axis=1)  # first of equals, as Niantic's strict '>' scan
    negate = q[np.arange(m), largest] < 0
    comp = largest.astype(np.uint32)
    scale = np.float32(511.0) / np.float32(np.sqrt(0.5))
    for i in range(4):
        here = largest != i
        negbit = ((q[:, i] < 0) ^ negate).astype(np.uint32)
        mag = np.minimum((aq[:, i] * scale + np.float32(0.5)).astype(np.uint32), 511)
        comp = np.where(here, (comp << np.uint32(10)) | (negbit << np.uint32(9)) | mag, comp)
    return comp.astype("<u4").view(np.uint8).reshape(m, 4)


def _write_gzip(
    f: BinaryIO,
    n: int,
    degree: int,
    frac_bits: int,
    version: int,
    streams: list[Callable[[], list[bytes]]],
) -> None:
    z = zlib.compressobj(_GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS, 9)
    f.write(z.compress(MAGIC + struct.pack("<IIBBBB", version, n, degree, frac_bits, 0, 0)))
    for stream in streams:
        for chunk in stream():
            f.write(z.compress(chunk))
    f.write(z.flush())


def _write_v4(
    f: BinaryIO, n: int, degree: int, frac_bits: int, streams: list[Callable[[], list[bytes]]]
) -> None:
    zstandard = _zstandard()
    cctx = zstandard.ZstdCompressor(level=_ZSTD_LEVEL)
    frames, sizes = [], []
    for stream in streams:
        parts = stream()
        size = sum(len(p) for p in parts)
        buf = io.BytesIO()
        with cctx.stream_writer(buf, size=size, closefd=False) as w:
            for p in parts:
                w.write(p)
        del parts
        frames.append(buf.getvalue())
        sizes.append(size)
    header = MAGIC + struct.pack("<IIBBBBI", 4, n, degree, frac_bits, 0, len(frames), 32)
    f.write(header + b"\0" * 12)
    f.write(b"".join(struct.pack("<QQ", len(c), u) for c, u in zip(frames, sizes, strict=True)))
    for c in frames:
        f.write(c)
