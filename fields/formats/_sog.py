"""PlayCanvas SOG ("spatially ordered Gaussians", SuperSplat's current format): read and write.

A SOG is a `meta.json` plus lossless WebP textures, either side by side in a folder or bundled
in one `.sog` zip (members stored, not deflated). Texel i of every per-Gaussian texture belongs
to Gaussian i (row-major, `width` = ceil(sqrt(N) / 4) * 4, `height` = ceil(N / width / 4) * 4).

Version 2 (`"version": 2`, written by splat-transform >= 1.0 and by us):
- `means_l.webp` / `means_u.webp`: low / high byte of a 16-bit code per axis (RGB) of
  `sign(x) ln(|x| + 1)`, spread linearly over `means.mins .. means.maxs`;
- `quats.webp`: "smallest three": RGB = the three other components of the unit quaternion
  (largest one made positive) as `(c * sqrt(2) * 0.5 + 0.5) * 255`, A = 252 + index of the
  largest component in (w, x, y, z);
- `scales.webp`: RGB = indices into the 256-entry `scales.codebook` (log scales);
- `sh0.webp`: RGB = indices into `sh0.codebook` (SH DC coefficients), A = sigmoid(opacity) * 255;
- `shN_centroids.webp` / `shN_labels.webp` (SH degree >= 1): a palette of `shN.count` SH-rest
  vectors, 64 per texture row, each `coeffs` texels wide (texel j = coefficient j, RGB = the
  three colour channels as indices into `shN.codebook`), and a 16-bit palette label per Gaussian
  (R = low byte, G = high byte).
Version 1 (no `version` field) is read too: `means.shape[0]` is the count, scales / sh0 (with the
opacity *logit* in A) / shN bytes are linear between per-channel `mins` and `maxs`.

The writer follows splat-transform: Gaussians in Morton order of their positions (so WebP finds
spatial coherence; extras cannot ride along and the order changes), scale and colour codebooks
from a 1-D optimal quantiser on a blended uniform/quantile histogram (dynamic programming), and
the SH palette (up to 65536 entries) from seeded k-means with `iterations` rounds; past
N * k = 2**27 the palette is built in two levels (256 coarse clusters, each split by its own
k-means): 15-25x faster on a CPU at 20k x 8192 (measured) for a 1-3% larger error. Bytes are
rounded, not truncated, and WebP keeps the colour of fully transparent texels (`exact`).

Axes: SOG holds the same frame as INRIA PLY (splat-transform converts to its PLY space before
writing and reads back into it), which is the scene frame here: nothing is turned.

Reading is bounded: zip members' declared sizes are checked before they are inflated (and
against their stored size), textures' sizes are checked against the count before they are
decoded (one at a time, converted in chunks of rows), and a file whose decoded arrays would be
more than 32x its texture bytes is refused (WebP has no ratio limit; real files are ~9x), so a
small file cannot claim a huge scene.
"""

from __future__ import annotations

import io
import itertools
import json
import math
import struct
import warnings
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import numpy as np
import torch
from PIL import Image

from ..scene import GaussianScene
from ._common import MAX_GAUSSIANS, alpha_to_logit, build_scene, fail

VERSION = 2
META = "meta.json"
_GENERATOR = "scenelab"
_MAX_META_BYTES = 16 << 20
_MAX_MEMBER_BYTES = 1 << 30
_MAX_DEFLATE_RATIO = 1032
_PALETTE_LIMIT = 8 << 20  # bytes of an SH palette texture (at most 960 x 1024 texels)
# Decoded arrays may be at most this many times the texture bytes; real files stay far below
# (SH0: 56 output bytes per Gaussian from ~6 texture bytes, 9x; the low bytes of positions alone
# are near noise). Caps the memory a small file can claim (~100 B per Gaussian at peak).
_MAX_EXPANSION = 32
_CHUNK = 1 << 18  # rows decoded at a time
_FLAT_LIMIT = (
    1 << 27
)  # N * k up to which the SH palette is one flat k-means  # texture bytes a real SOG needs per Gaussian, at the very least
_SH_COEFFS = {1: 3, 2: 8, 3: 15}  # rest coefficients per channel for SH bands 1..3
_V1_BANDS_BY_WIDTH = {64 * c: b for b, c in _SH_COEFFS.items()}
_SQRT2 = math.sqrt(2.0)
# The four "smallest three" layouts: the other components for each largest one (w, x, y, z).
_OTHERS = np.array([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])


def is_sog_bundle(data: bytes) -> bool:
    """A `.sog` bundle is a zip archive (local file header or an empty archive's end record)."""
    return data[:4] in (b"PK\x03\x04", b"PK\x05\x06")


# ====================================================================================== writing
def texture_size(n: int) -> tuple[int, int]:
    """(width, height) of the per-Gaussian textures for `n` Gaussians, as splat-transform."""
    width = math.ceil(math.sqrt(n) / 4) * 4
    height = math.ceil(n / width / 4) * 4
    return width, height


def morton_order(means: np.ndarray) -> np.ndarray:
    """Indices [N] sorting Gaussians along a 3-D Morton curve over their bounding box, with
    cells of more than 256 Gaussians sorted again inside (as splat-transform's writer)."""
    order = np.arange(len(means))
    _morton_sort(np.asarray(means, dtype=np.float64), order)
    return order


def _spread_bits(v: np.ndarray) -> np.ndarray:
    v = v.astype(np.uint32) & 0x3FF
    v = (v ^ (v << 16)) & 0xFF0000FF
    v = (v ^ (v << 8)) & 0x0300F00F
    v = (v ^ (v << 4)) & 0x030C30C3
    v = (v ^ (v << 2)) & 0x09249249
    return v


def _morton_sort(means: np.ndarray, idx: np.ndarray) -> None:
    """Sort `idx` (a view, in place) by the Morton code of means[idx]; recurse into big cells."""
    if len(idx) == 0:
        return
    p = means[idx]
    lo, hi = p.min(axis=0), p.max(axis=0)
    ext = hi - lo
    if not np.isfinite(ext).all() or not ext.any():
        return
    mul = np.where(ext > 0, 1024.0 / np.where(ext > 0, ext, 1.0), 0.0)
    cell = np.minimum(1023.0, (p - lo) * mul).astype(np.uint32)
    code = (
        (_spread_bits(cell[:, 2]) << 2) + (_spread_bits(cell[:, 1]) << 1) + _spread_bits(cell[:, 0])
    )
    perm = np.argsort(code, kind="stable")
    idx[:] = idx[perm]
    code = code[perm]
    starts = np.flatnonzero(np.diff(code)) + 1
    bounds = np.concatenate([[0], starts, [len(code)]])
    for a, b in itertools.pairwise(bounds):
        if b - a > 256:
            _morton_sort(means, idx[a:b])


def quantize_1d(
    values: np.ndarray, k: int = 256, alpha: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Codebook [k] (ascending float32) and labels (uint8, shape of `values`) for 1-D data.

    splat-transform's quantiser: a histogram of min(1024, n) bins placed by a blend of value and
    rank (more rank when outliers stretch the range), bins weighted count**alpha, then the k
    contiguous groups of bins with least weighted squared error by dynamic programming."""
    data = np.asarray(values, dtype=np.float32).reshape(-1)
    n = data.size
    if n == 0:
        return np.zeros(k, np.float32), np.zeros(np.shape(values), np.uint8)
    s = np.sort(data).astype(np.float64)
    vmin, vmax = s[0], s[-1]
    if vmax - vmin < 1e-20:
        return np.full(k, vmin, np.float32), np.zeros(np.shape(values), np.uint8)
    h = min(1024, n)
    vrange = vmax - vmin
    iqr = s[int(n * 0.75)] - s[int(n * 0.25)]
    beta = max(0.5, min(0.999, 1.0 - iqr / vrange))
    pos = beta * (np.arange(n) / n) + (1.0 - beta) * ((s - vmin) / vrange)
    b = np.minimum(h - 1, np.floor(h * pos).astype(np.int64))
    counts = np.bincount(b, minlength=h).astype(np.float64)
    sums = np.bincount(b, weights=s, minlength=h)
    # Empty bins weigh nothing: the DP runs over the filled ones only (same optimum).
    filled = counts > 0
    centers = sums[filled] / counts[filled]
    w = counts[filled] ** alpha
    h = len(centers)
    if h <= k:  # a centroid for every filled bin
        cents = centers
    else:
        cents = _optimal_groups(centers, w, k)
    cents = np.sort(cents.astype(np.float32))
    book = np.concatenate([cents, np.full(k - len(cents), cents[-1], np.float32)])
    mid = (book[:-1].astype(np.float64) + book[1:]) * 0.5
    labels = np.searchsorted(mid, data.astype(np.float64), side="right").astype(np.uint8)
    return book, labels.reshape(np.shape(values))


def _optimal_groups(
    centers: np.ndarray,  # [H] ascending bin centres
    w: np.ndarray,  # [H] bin weights (> 0)
    k: int,
) -> np.ndarray:
    """Weighted means [k] of the k contiguous groups of bins with least weighted squared error
    (dynamic programming over m = 1..k groups; O(k H^2), vectorised over the bins)."""
    h = len(centers)
    pw = np.concatenate([[0.0], np.cumsum(w)])
    pwx = np.concatenate([[0.0], np.cumsum(w * centers)])
    pwxx = np.concatenate([[0.0], np.cumsum(w * centers * centers)])
    a_idx = np.arange(h)[:, None]
    b_idx = np.arange(h)[None, :]
    sw = np.maximum(pw[b_idx + 1] - pw[a_idx], 1e-300)
    swx = pwx[b_idx + 1] - pwx[a_idx]
    with np.errstate(over="ignore", invalid="ignore"):  # a > b: replaced below
        cost = np.maximum(pwxx[b_idx + 1] - pwxx[a_idx] - swx * swx / sw, 0.0)
    cost[a_idx > b_idx] = np.inf  # cost[a, b]: one centroid for bins a..b
    dp = torch.from_numpy(cost[0].astype(np.float32))  # dp[j]: least cost of bins 0..j
    splits = [np.full(h, -1)]
    tail = torch.from_numpy(np.ascontiguousarray(cost[1:].T, dtype=np.float32))  # [j, s]
    cand = torch.empty_like(tail)
    for _ in range(2, k + 1):
        torch.add(dp[None, :-1], tail, out=cand)  # cand[j, s] = dp[s] + cost[s + 1, j]
        dp, arg = cand.min(dim=1)
        splits.append(arg.numpy())
    cents = np.empty(k, np.float64)
    j = h - 1
    for m in range(k, 0, -1):
        a = int(splits[m - 1][j]) + 1 if m > 1 else 0
        cents[m - 1] = (pwx[j + 1] - pwx[a]) / (pw[j + 1] - pw[a])
        j = a - 1
    return cents


def kmeans(
    points: np.ndarray,  # [N,D]
    k: int,
    iterations: int,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Centroids [min(k, N), D] and labels [N] (int64) after `iterations` Lloyd rounds from k
    distinct random points (a seeded generator: same input, same output); empty clusters are
    re-seeded to a random point; labels are the nearest centroids of the final centroids."""
    x = torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32))
    n, d = x.shape
    if n <= k:
        return x.numpy().copy(), np.arange(n)
    gen = torch.Generator().manual_seed(seed)
    cent = x[torch.randperm(n, generator=gen)[:k]].clone()
    labels = _nearest(x, cent)
    for _ in range(max(0, int(iterations))):
        sums = torch.zeros(k, d, dtype=torch.float64).index_add_(0, labels, x.double())
        cnt = torch.bincount(labels, minlength=k)
        empty = cnt == 0
        cent = (sums / cnt.clamp_min(1)[:, None]).float()
        if empty.any():
            cent[empty] = x[torch.randint(n, (int(empty.sum()),), generator=gen)]
        labels = _nearest(x, cent)
    return cent.numpy(), labels.numpy()


def palette_kmeans(
    points: np.ndarray,  # [N,D]
    k: int,
    iterations: int,
    seed: int = 0,
    flat_limit: int = _FLAT_LIMIT,
) -> tuple[np.ndarray, np.ndarray]:
    """Centroids [<= k, D] and labels [N] for the SH palette.

    Flat k-means costs N * k * D per round: for a 1M-Gaussian scene and 65536 entries that is
    hours on a CPU. Past `flat_limit` (N * k) the palette is built in two levels instead: 256
    coarse clusters, then each coarse cluster split by its own k-means into a share of the k
    entries proportional to its size (about 256x less work, a slightly larger error)."""
    n = len(points)
    if n <= k or n * k <= flat_limit:
        return kmeans(points, k, iterations, seed)
    coarse_k = 256
    _, coarse = kmeans(points, coarse_k, iterations, seed)
    sizes = np.bincount(coarse, minlength=coarse_k)
    share = np.floor(sizes * (k / n)).astype(np.int64)
    share = np.maximum(share, (sizes > 0).astype(np.int64))
    while share.sum() > k:  # the floor of 1 per cluster can overshoot: trim the largest
        share[share.argmax()] -= 1
    cents, labels, base = [], np.empty(n, np.int64), 0
    for c in np.flatnonzero(sizes):
        members = np.flatnonzero(coarse == c)
        sub_c, sub_l = kmeans(points[members], int(share[c]), iterations, seed + 1 + int(c))
        cents.append(sub_c)
        labels[members] = base + sub_l
        base += len(sub_c)
    return np.concatenate(cents), labels


def _nearest(x: torch.Tensor, cent: torch.Tensor) -> torch.Tensor:
    """Index [N] of the nearest centroid of each row of x (chunked: bounded memory)."""
    c2 = (cent * cent).sum(1)
    out = torch.empty(len(x), dtype=torch.int64)
    step = max(1, (16 << 20) // max(1, len(cent)))
    for a in range(0, len(x), step):
        xb = x[a : a + step]
        out[a : a + step] = torch.addmm(c2[None, :], xb, cent.T, alpha=-2.0).argmin(1)
    return out


def _webp(rgba: np.ndarray) -> bytes:  # rgba: [H,W,4] uint8
    buf = io.BytesIO()
    # exact: keep the colour of transparent texels (sh0's A is the opacity, not a mask).
    Image.fromarray(rgba, "RGBA").save(buf, "WEBP", lossless=True, quality=70, method=4, exact=True)
    return buf.getvalue()


def _texture(per_gaussian: np.ndarray, width: int, height: int) -> bytes:
    """[N,4] uint8 texels -> a width x height lossless WebP (padding texels are zero)."""
    tex = np.zeros((width * height, 4), np.uint8)
    tex[: len(per_gaussian)] = per_gaussian
    return _webp(tex.reshape(height, width, 4))


def _short(v: float) -> float:
    """The shortest decimal that reads back as the same float32 (small meta.json)."""
    return float(np.format_float_positional(np.float32(v), unique=True, trim="-"))


def sog_files(scene: GaussianScene, *, iterations: int = 10) -> dict[str, bytes]:
    """Encode a scene as SOG version 2: {file name: bytes} for `meta.json` and its textures."""
    n = len(scene)
    if n == 0:
        raise ValueError("SOG cannot hold an empty scene (no Gaussians)")
    if n > MAX_GAUSSIANS:
        raise ValueError(f"SOG writer refuses {n} Gaussians (limit {MAX_GAUSSIANS})")
    degree = scene.sh_degree
    if degree > 3:
        raise ValueError(f"SOG holds SH degree <= 3, not {degree}; cut the degree first")
    dropped = [f"extra {k!r}" for k in scene.extras] + (["meta"] if scene.meta else [])
    if dropped:
        warnings.warn(f"SOG cannot hold {', '.join(dropped)}; they are not written", stacklevel=3)
    s = scene.detach().to("cpu")
    means = s.means.numpy().astype(np.float64)
    for name, t in (("means", s.means), ("quats", s.quats), ("scales", s.scales),
                    ("opacities", s.opacities), ("sh", s.sh)):  # fmt: skip
        if not torch.isfinite(t).all():
            raise ValueError(f"scene {name} hold NaN or infinite values; SOG cannot store them")
    order = morton_order(means)
    width, height = texture_size(n)
    files: dict[str, bytes] = {}

    # means: 16-bit codes of the log-transformed positions.
    lp = np.sign(means[order]) * np.log1p(np.abs(means[order]))
    mins, maxs = lp.min(axis=0), lp.max(axis=0)
    span = maxs - mins
    code = np.where(span > 0, (lp - mins) / np.where(span > 0, span, 1.0), 0.0)
    code = np.clip(np.rint(code * 65535.0), 0, 65535).astype(np.uint16)
    texel = np.full((n, 4), 255, np.uint8)
    texel[:, :3] = code & 0xFF
    files["means_l.webp"] = _texture(texel, width, height)
    texel[:, :3] = code >> 8
    files["means_u.webp"] = _texture(texel, width, height)

    # quats: smallest three.
    q = s.quats.numpy().astype(np.float64)[order]
    norm = np.linalg.norm(q, axis=1, keepdims=True)
    q = np.where(norm > 0, q / np.where(norm > 0, norm, 1.0), np.array([1.0, 0.0, 0.0, 0.0]))
    big = np.abs(q).argmax(axis=1)
    q = q * np.where(q[np.arange(n), big] < 0, -1.0, 1.0)[:, None]
    rest = np.take_along_axis(q, _OTHERS[big], axis=1)
    texel = np.empty((n, 4), np.uint8)
    texel[:, :3] = np.clip(np.rint((rest * _SQRT2 * 0.5 + 0.5) * 255.0), 0, 255)
    texel[:, 3] = 252 + big
    files["quats.webp"] = _texture(texel, width, height)

    # scales: one codebook for the three axes.
    scale_book, scale_labels = quantize_1d(s.scales.numpy()[order])
    texel = np.full((n, 4), 255, np.uint8)
    texel[:, :3] = scale_labels
    files["scales.webp"] = _texture(texel, width, height)

    # sh0: colour codebook, opacity as an 8-bit alpha.
    sh = s.sh.numpy()[order]
    dc_book, dc_labels = quantize_1d(sh[:, 0, :])
    alpha = 1.0 / (1.0 + np.exp(-s.opacities.numpy().astype(np.float64)[order]))
    texel[:, :3] = dc_labels
    texel[:, 3] = np.clip(np.rint(alpha * 255.0), 0, 255)
    files["sh0.webp"] = _texture(texel, width, height)

    meta: dict[str, Any] = {
        "version": VERSION,
        "asset": {"generator": _GENERATOR},
        "count": n,
        "means": {
            "mins": [float(v) for v in mins],
            "maxs": [float(v) for v in maxs],
            "files": ["means_l.webp", "means_u.webp"],
        },
        "scales": {"codebook": [_short(v) for v in scale_book], "files": ["scales.webp"]},
        "quats": {"files": ["quats.webp"]},
        "sh0": {"codebook": [_short(v) for v in dc_book], "files": ["sh0.webp"]},
    }
    if degree > 0:
        meta["shN"] = _write_sh_rest(sh[:, 1:, :], degree, iterations, width, height, files)
    files[META] = json.dumps(meta, separators=(",", ":")).encode()
    return files


def _write_sh_rest(
    rest: np.ndarray,  # [N,C,3] SH coefficients beyond DC, Morton order
    degree: int,
    iterations: int,
    width: int,
    height: int,
    files: dict[str, bytes],
) -> dict[str, Any]:
    n, coeffs, _ = rest.shape
    # splat-transform's palette size: a power of two up to 65536, growing with N.
    palette = max(1, int(min(64, 2.0 ** math.floor(math.log2(n / 1024))) * 1024))
    cent, labels = palette_kmeans(rest.reshape(n, coeffs * 3), palette, iterations)
    k = len(cent)
    book, cent_labels = quantize_1d(cent)  # [K, C*3] indices, (coeff, channel) order
    rows = math.ceil(k / 64)
    tex = np.zeros((rows * 64 * coeffs, 4), np.uint8)
    tex[: k * coeffs, :3] = cent_labels.reshape(k * coeffs, 3)
    tex[: k * coeffs, 3] = 255
    files["shN_centroids.webp"] = _webp(tex.reshape(rows, 64 * coeffs, 4))
    texel = np.zeros((n, 4), np.uint8)
    texel[:, 0] = labels & 0xFF
    texel[:, 1] = labels >> 8
    texel[:, 3] = 255
    files["shN_labels.webp"] = _texture(texel, width, height)
    return {
        "count": k,
        "bands": degree,
        "codebook": [_short(v) for v in book],
        "files": ["shN_centroids.webp", "shN_labels.webp"],
    }


def write_sog_bundle(f: BinaryIO, files: dict[str, bytes]) -> None:
    """Write `files` (from `sog_files`) as one `.sog` zip: meta.json first, members stored."""
    names = [k for k in (META,) if k in files] + sorted(k for k in files if k != META)
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in names:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            zf.writestr(info, files[name])


# ====================================================================================== reading
class _Source:
    """Bounded access to the files of one SOG: members of a zip, or siblings of meta.json."""

    def __init__(self, path: Path, data: bytes) -> None:
        self.path = path
        self.zip: zipfile.ZipFile | None = None
        if is_sog_bundle(data):
            try:
                self.zip = zipfile.ZipFile(io.BytesIO(data))
            except (
                zipfile.BadZipFile,
                zipfile.LargeZipFile,
                NotImplementedError,
                ValueError,
                OSError,
                EOFError,
                struct.error,
            ) as e:
                fail(path, f"not a readable SOG zip ({e})")

    def meta(self, data: bytes) -> bytes:
        if self.zip is None:
            if len(data) > _MAX_META_BYTES:
                fail(self.path, f"meta.json is {len(data)} bytes, beyond {_MAX_META_BYTES}")
            return data
        return self.read(META, _MAX_META_BYTES)

    def sizes(self, names: list[str]) -> int:
        """Total stored bytes of the named files (checked to exist, sizes checked)."""
        return sum(self._size(name) for name in names)

    def _size(self, name: str) -> int:
        self._check_name(name)
        if self.zip is not None:
            try:
                info = self.zip.getinfo(name)
            except KeyError:
                fail(self.path, f"the SOG bundle has no member {name!r}")
            return info.compress_size
        p = self.path.parent / name
        if not p.is_file():
            fail(self.path, f"SOG texture {name!r} is missing beside meta.json (looked for {p})")
        return p.stat().st_size

    def _check_name(self, name: object) -> None:
        if not isinstance(name, str) or not name:
            fail(self.path, f"file name {name!r} in meta.json is not a non-empty string")
        pp = PurePosixPath(name)
        if (
            pp.is_absolute()
            or "\\" in name
            or any(part in ("..", "") for part in pp.parts)
            or len(pp.parts) != 1
        ):
            fail(
                self.path,
                f"file name {name!r} in meta.json must be a plain name in the same folder",
            )

    def read(self, name: str, limit: int = _MAX_MEMBER_BYTES) -> bytes:
        self._check_name(name)
        if self.zip is None:
            p = self.path.parent / name
            size = self._size(name)
            if size > limit:
                fail(self.path, f"SOG file {name!r} is {size} bytes, beyond the limit of {limit}")
            with open(p, "rb") as fh:
                out = fh.read(limit + 1)
            if len(out) > limit:
                fail(self.path, f"SOG file {name!r} grew beyond {limit} bytes while read")
            return out
        try:
            info = self.zip.getinfo(name)
        except KeyError:
            fail(self.path, f"the SOG bundle has no member {name!r}")
        declared = info.file_size
        if declared > limit:
            fail(self.path, f"bundle member {name!r} declares {declared} bytes, beyond {limit}")
        if info.compress_type == zipfile.ZIP_STORED and declared != info.compress_size:
            fail(
                self.path,
                f"stored member {name!r} declares {declared} bytes but holds {info.compress_size}",
            )
        if declared > max(1, info.compress_size) * _MAX_DEFLATE_RATIO:
            fail(
                self.path, f"member {name!r} declares {declared} bytes, more than its data can hold"
            )
        try:
            with self.zip.open(info) as fh:
                out = fh.read(declared + 1)
        except (zipfile.BadZipFile, NotImplementedError, OSError, EOFError, ValueError) as e:
            fail(self.path, f"bundle member {name!r} cannot be read ({e})")
        except Exception as e:  # zlib.error, lzma/bz2 errors
            fail(self.path, f"bundle member {name!r} is corrupt ({type(e).__name__}: {e})")
        if len(out) != declared:
            fail(
                self.path,
                f"bundle member {name!r} holds {len(out)} bytes, not the declared {declared}",
            )
        return out


def _obj(path: Path, meta: Any, key: str) -> dict[str, Any]:
    v = meta.get(key) if isinstance(meta, dict) else None
    if not isinstance(v, dict):
        fail(path, f"meta.json has no {key!r} object")
    return v


def _files(path: Path, part: dict[str, Any], key: str, n: int) -> list[str]:
    files = part.get("files")
    if (
        not isinstance(files, list)
        or len(files) < n
        or not all(isinstance(f, str) for f in files[:n])
    ):
        fail(path, f"meta.json {key}.files must list {n} texture file name(s)")
    return files[:n]


def _numbers(
    path: Path, v: Any, what: str, length: int | None = None, max_len: int | None = None
) -> np.ndarray:
    ok = isinstance(v, list) and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) for x in v
    )
    if ok and length is not None:
        ok = len(v) == length
    if ok and max_len is not None:
        ok = 1 <= len(v) <= max_len
    if not ok:
        want = f"{length} numbers" if length is not None else f"1..{max_len} numbers"
        fail(path, f"meta.json {what} must be a list of {want}")
    arr = np.asarray(v, dtype=np.float64)
    if not np.isfinite(arr).all():
        fail(path, f"meta.json {what} holds non-finite numbers")
    return arr


def _scalar(path: Path, v: Any, what: str) -> float:
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
        fail(path, f"meta.json {what} must be a finite number")
    return float(v)


class _Decoder:
    def __init__(self, path: Path, src: _Source, count: int) -> None:
        self.path, self.src, self.count = path, src, count

    def texels(self, name: str, *, rows: int | None = None) -> np.ndarray:
        """[count,4] uint8 texels of a per-Gaussian texture (or all [W*H,4] when rows is set)."""
        # A lossless WebP is at most a little larger than its raw texels.
        raw = self.src.read(
            name, _PALETTE_LIMIT if rows is not None else 20 * self.count + (2 << 20)
        )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                im = Image.open(io.BytesIO(raw), formats=["WEBP"])
                w, h = im.size
                if rows is None:
                    need = self.count
                    cap = 4 * self.count + (1 << 16)
                    if w * h < need:
                        fail(
                            self.path,
                            f"texture {name!r} is {w}x{h}, too small for {need} Gaussians",
                        )
                    if w * h > cap:
                        fail(
                            self.path,
                            f"texture {name!r} is {w}x{h}, far larger than {need} Gaussians need",
                        )
                elif h > rows or w * h > (1 << 22):
                    fail(self.path, f"texture {name!r} is {w}x{h}, larger than its palette allows")
                im.load()
                arr = np.asarray(im.convert("RGBA"), dtype=np.uint8).reshape(-1, 4)
        except Image.DecompressionBombError as e:
            fail(self.path, f"texture {name!r} is too large ({e})")
        except (OSError, ValueError, SyntaxError, EOFError) as e:
            fail(self.path, f"texture {name!r} is not a readable WebP image ({e})")
        return arr if rows is not None else arr[: self.count]

    def texture_shape(self, name: str) -> tuple[int, int]:
        raw = self.src.read(name, _PALETTE_LIMIT)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                return Image.open(io.BytesIO(raw), formats=["WEBP"]).size
        except Image.DecompressionBombError as e:
            fail(self.path, f"texture {name!r} is too large ({e})")
        except (OSError, ValueError, SyntaxError, EOFError) as e:
            fail(self.path, f"texture {name!r} is not a readable WebP image ({e})")


def _rows(n: int):
    """Row slices of at most _CHUNK rows: float temporaries stay bounded whatever the count."""
    for a in range(0, n, _CHUNK):
        yield slice(a, min(n, a + _CHUNK))


def _decode_means(dec: _Decoder, part: dict[str, Any], files: list[str]) -> np.ndarray:
    path = dec.path
    mins = _numbers(path, part.get("mins"), "means.mins", 3)
    maxs = _numbers(path, part.get("maxs"), "means.maxs", 3)
    span = maxs - mins
    span = np.where(span != 0, span, 1.0)  # as splat-transform: a flat axis decodes to `mins`
    lo = dec.texels(files[0])
    hi = dec.texels(files[1])
    out = np.empty((dec.count, 3), np.float32)
    for r in _rows(dec.count):
        code = (lo[r, :3].astype(np.uint32) | (hi[r, :3].astype(np.uint32) << 8)) / 65535.0
        v = mins + span * code
        with np.errstate(over="ignore"):
            out[r] = np.sign(v) * np.expm1(np.abs(v))
    return out


def _decode_quats(dec: _Decoder, files: list[str]) -> np.ndarray:
    t = dec.texels(files[0])
    out = np.empty((dec.count, 4), np.float32)
    for r in _rows(dec.count):
        tag = t[r, 3].astype(np.int64)
        valid = (tag >= 252) & (tag <= 255)
        big = np.where(valid, tag - 252, 0)
        comps = (t[r, :3].astype(np.float64) / 255.0 * 2.0 - 1.0) / _SQRT2
        q = np.zeros((len(tag), 4))
        np.put_along_axis(q, _OTHERS[big], comps, axis=1)
        w = np.sqrt(np.maximum(0.0, 1.0 - (comps * comps).sum(axis=1)))
        np.put_along_axis(q, big[:, None], w[:, None], axis=1)
        q[~valid] = (1.0, 0.0, 0.0, 0.0)  # as splat-transform: an unknown tag is no rotation
        out[r] = q
    return out


def _lookup(path: Path, book: np.ndarray, idx: np.ndarray, what: str) -> np.ndarray:
    """book[idx] (float32, idx's shape), idx checked against the codebook's length."""
    if idx.size and int(idx.max()) >= len(book):
        fail(path, f"{what} texture indexes entry {int(idx.max())} of a {len(book)}-entry codebook")
    out = np.empty(idx.shape, np.float32)
    for r in _rows(len(idx)):
        out[r] = book[idx[r]]
    return out


def read_sog(path: Path, data: bytes) -> GaussianScene:
    """Read a `.sog` bundle (zip bytes) or a `meta.json` (bytes; textures beside `path`)."""
    src = _Source(path, data)
    raw_meta = src.meta(data)
    try:
        meta = json.loads(raw_meta.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        fail(path, f"meta.json is not valid JSON ({e})")
    if not isinstance(meta, dict):
        fail(path, "meta.json must hold a JSON object")
    version = meta.get("version")
    if version is None:
        return _read_v1(path, src, meta)
    if version != 2 or isinstance(version, bool):
        fail(path, f"unsupported SOG version {version!r} (known: 1, 2)")
    count = meta.get("count")
    if not isinstance(count, int) or isinstance(count, bool) or count <= 0:
        fail(path, f"meta.json count must be a positive integer, got {count!r}")
    if count > MAX_GAUSSIANS:
        fail(
            path,
            f"meta.json declares {count} Gaussians, beyond the reader's limit of {MAX_GAUSSIANS}",
        )
    means_p, quats_p = _obj(path, meta, "means"), _obj(path, meta, "quats")
    scales_p, sh0_p = _obj(path, meta, "scales"), _obj(path, meta, "sh0")
    fm = _files(path, means_p, "means", 2)
    fq = _files(path, quats_p, "quats", 1)
    fs = _files(path, scales_p, "scales", 1)
    fc = _files(path, sh0_p, "sh0", 1)
    shn = meta.get("shN")
    fn: list[str] = []
    if shn is not None:
        if not isinstance(shn, dict):
            fail(path, "meta.json shN must be an object")
        fn = _files(path, shn, "shN", 2)
    bands, pal, book = 0, 0, np.zeros(0, np.float32)
    if shn is not None:
        bands = shn.get("bands")
        if not isinstance(bands, int) or isinstance(bands, bool) or bands not in _SH_COEFFS:
            fail(path, f"meta.json shN.bands must be 1, 2 or 3, got {bands!r}")
        pal = shn.get("count")
        if not isinstance(pal, int) or isinstance(pal, bool) or not 1 <= pal <= 65536:
            fail(path, f"meta.json shN.count must be an integer in 1..65536, got {pal!r}")
        book = _numbers(path, shn.get("codebook"), "shN.codebook", max_len=256).astype(np.float32)
    _check_payload(path, src, count, fm + fq + fs + fc + fn, (bands + 1) ** 2)
    scale_book = _numbers(path, scales_p.get("codebook"), "scales.codebook", max_len=256)
    dc_book = _numbers(path, sh0_p.get("codebook"), "sh0.codebook", max_len=256)

    dec = _Decoder(path, src, count)
    means = _decode_means(dec, means_p, fm)
    quats = _decode_quats(dec, fq)
    scales = _lookup(path, scale_book.astype(np.float32), dec.texels(fs[0])[:, :3], "scales")
    t = dec.texels(fc[0])
    dc = _lookup(path, dc_book.astype(np.float32), t[:, :3], "sh0")
    opac = alpha_to_logit(t[:, 3].astype(np.float32) / 255.0)
    del t
    sh = dc[:, None, :]
    if shn is not None:
        sh = _decode_sh_rest(dec, fn, bands, pal, lambda b: _lookup(path, book, b, "shN"), dc)
    return build_scene(path, means, quats, scales, opac, sh)


def _check_payload(path: Path, src: _Source, count: int, files: list[str], k: int) -> None:
    """Refuse files whose decoded arrays would be more than _MAX_EXPANSION times their texture
    bytes (k: SH coefficients per channel): WebP has no ratio limit, this reader has one."""
    total = src.sizes(files)
    out_bytes = count * 4 * (3 + 4 + 3 + 1 + 3 * k)
    if out_bytes > _MAX_EXPANSION * total:
        fail(
            path,
            f"meta.json declares {count} Gaussians but its textures hold only {total} bytes "
            f"(decoded, {out_bytes} bytes: more than {_MAX_EXPANSION}x): refused as a "
            "decompression bomb",
        )


def _decode_sh_rest(
    dec: _Decoder, files: list[str], bands: int, pal: int, decode, dc: np.ndarray
) -> np.ndarray:
    path = dec.path
    coeffs = _SH_COEFFS[bands]
    cw, ch = dec.texture_shape(files[0])
    if cw != 64 * coeffs:
        fail(
            path, f"shN centroids texture is {cw} wide, expected {64 * coeffs} for {bands} band(s)"
        )
    rows = math.ceil(pal / 64)
    cent = dec.texels(files[0], rows=rows)  # [ch*cw, 4]; palette entry i = texels i*coeffs ...
    if ch * 64 < pal:
        fail(path, f"shN centroids texture has {ch} rows, too few for a palette of {pal}")
    cent = cent[: pal * coeffs, :3].reshape(pal, coeffs, 3)
    palette = decode(cent)  # [pal, coeffs, 3] floats
    t = dec.texels(files[1])
    sh = np.empty((len(dc), 1 + coeffs, 3), np.float32)
    sh[:, 0, :] = dc
    for r in _rows(len(dc)):
        labels = t[r, 0].astype(np.int32) | (t[r, 1].astype(np.int32) << 8)
        if labels.size and int(labels.max()) >= pal:
            fail(path, f"shN labels reach palette entry {int(labels.max())} of {pal}")
        sh[r, 1:, :] = palette[labels]
    return sh


def _read_v1(path: Path, src: _Source, meta: dict[str, Any]) -> GaussianScene:
    """Legacy SOG (no `version`): linear bytes between per-channel mins / maxs."""
    means_p, quats_p = _obj(path, meta, "means"), _obj(path, meta, "quats")
    scales_p, sh0_p = _obj(path, meta, "scales"), _obj(path, meta, "sh0")
    shape = means_p.get("shape")
    if not (
        isinstance(shape, list)
        and shape
        and isinstance(shape[0], int)
        and not isinstance(shape[0], bool)
    ):
        fail(path, "meta.json (SOG version 1) has no means.shape count")
    count = shape[0]
    if count <= 0:
        fail(path, "the file holds no Gaussians")
    if count > MAX_GAUSSIANS:
        fail(
            path,
            f"meta.json declares {count} Gaussians, beyond the reader's limit of {MAX_GAUSSIANS}",
        )
    fm = _files(path, means_p, "means", 2)
    fq = _files(path, quats_p, "quats", 1)
    fs = _files(path, scales_p, "scales", 1)
    fc = _files(path, sh0_p, "sh0", 1)
    shn = meta.get("shN")
    fn: list[str] = []
    if shn is not None:
        if not isinstance(shn, dict):
            fail(path, "meta.json shN must be an object")
        fn = _files(path, shn, "shN", 2)
    bands = 0
    if shn is not None:
        lo = _scalar(path, shn.get("mins"), "shN.mins")
        hi = _scalar(path, shn.get("maxs"), "shN.maxs")
        cw, ch = _Decoder(path, src, count).texture_shape(fn[0])
        bands = _V1_BANDS_BY_WIDTH.get(cw, 0)
        if not bands:
            fail(path, f"shN centroids texture is {cw} wide, expected 192, 512 or 960")
    _check_payload(path, src, count, fm + fq + fs + fc + fn, (bands + 1) ** 2)
    smin = _numbers(path, scales_p.get("mins"), "scales.mins", 3)
    smax = _numbers(path, scales_p.get("maxs"), "scales.maxs", 3)
    cmin = _numbers(path, sh0_p.get("mins"), "sh0.mins", 4)
    cmax = _numbers(path, sh0_p.get("maxs"), "sh0.maxs", 4)
    dec = _Decoder(path, src, count)
    means = _decode_means(dec, means_p, fm)
    quats = _decode_quats(dec, fq)
    scales = np.empty((count, 3), np.float32)
    t = dec.texels(fs[0])
    for r in _rows(count):
        scales[r] = smin + (smax - smin) * (t[r, :3] / 255.0)
    c = np.empty((count, 4), np.float32)
    t = dec.texels(fc[0])
    for r in _rows(count):
        c[r] = cmin + (cmax - cmin) * (t[r] / 255.0)
    del t
    dc, opac = np.ascontiguousarray(c[:, :3]), np.ascontiguousarray(c[:, 3])
    del c
    sh = dc[:, None, :]
    if shn is not None:
        pal = min(65536, 64 * ch)

        def lerp(b: np.ndarray) -> np.ndarray:
            return (lo + (hi - lo) * b.astype(np.float64) / 255.0).astype(np.float32)

        sh = _decode_sh_rest(dec, fn, bands, pal, lerp, dc)
    return build_scene(path, means, quats, scales, opac, sh)
