"""The `.scenelab` container: a ZIP_STORED zip of `manifest.json` and `tensors.safetensors`.

Writing streams every tensor's bytes straight from its storage into the zip member (no joined
`bytes` of the whole payload); reading fills freshly allocated tensors straight from the file
(one copy, from the page cache) and checks the member's CRC-32 on the way. The tensor member is
a plain safetensors file (8-byte header length, JSON header, data), so a member extracted with
`unzip` loads with `safetensors.torch.load_file`.

Reading is bounded: the manifest and the safetensors header have size caps, every tensor must
lie inside the member, and the member inside the file, so a reader never allocates more than the
file holds. Tensor members must be stored (not deflated): that is what the writer produces, and
a compressed member could declare any size.
"""

from __future__ import annotations

import json
import math
import os
import stat
import struct
import time
import zipfile
import zlib
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from torch import Tensor

FORMAT = "scenelab.project"
VERSION = 1
MANIFEST = "manifest.json"
TENSORS = "tensors.safetensors"
MAX_MANIFEST_BYTES = 64 << 20  # a manifest holds names, metas, grasps: megabytes at most
MAX_HEADER_BYTES = 64 << 20  # safetensors header of the tensor member
_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # zip local file header (30 bytes)
_LOCAL_MAGIC = b"PK\x03\x04"

_DTYPES: dict[torch.dtype, str] = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
for _name, _code in (("uint16", "U16"), ("uint32", "U32"), ("uint64", "U64")):
    if hasattr(torch, _name):  # torch >= 2.3
        _DTYPES[getattr(torch, _name)] = _code
_CODES = {code: dtype for dtype, code in _DTYPES.items()}


class ProjectFormatError(ValueError):
    """A `.scenelab` project file that cannot be read; the message names the file and the problem."""


def fail(path: Path | str, msg: str) -> ProjectFormatError:
    return ProjectFormatError(f"{path}: {msg}")


# ---------------------------------------------------------------------------- tensor pool
def identity(t: Tensor) -> tuple:
    """Same storage, offset, shape, stride and dtype: the same tensor for storing purposes."""
    st = t.untyped_storage()
    return (
        t.device.type,
        t.device.index,
        st.data_ptr(),
        t.storage_offset(),
        tuple(t.shape),
        tuple(t.stride()),
        t.dtype,
    )


class TensorPool:
    """Tensors to store, and references to them. A reference is a pool key ("t3": a stored
    tensor) or a derived id ("d2": a tensor rebuilt at load time from stored ones, see
    `derive_state`). The same tensor (`identity`) always gets the same reference, so history
    states share in the file what they share in memory."""

    def __init__(self) -> None:
        self._refs: dict[tuple, str] = {}  # identity -> reference
        self._alive: list[Tensor] = []  # keeps every referenced tensor alive (stable identity)
        self.tensors: dict[str, Tensor] = {}  # key -> CPU contiguous tensor, insertion order
        self.derived: dict[str, dict[str, Any]] = {}  # id -> {"op": ..., ...}

    def ref_of(self, t: Tensor) -> str | None:
        return self._refs.get(identity(t))

    def add(self, t: Tensor) -> str:
        """Reference of `t`, storing it whole unless it is known already."""
        if not isinstance(t, Tensor):
            raise TypeError(f"expected a tensor, got {type(t).__name__}")
        ref = self.ref_of(t)
        if ref is not None:
            return ref
        if t.dtype not in _DTYPES:
            raise ValueError(f"tensors of dtype {t.dtype} cannot be stored in a project")
        key = f"t{len(self.tensors)}"
        self.tensors[key] = t.detach().to("cpu").contiguous()
        self._remember(t, key)
        return key

    def add_derived(self, t: Tensor, spec: dict[str, Any]) -> str:
        ref = f"d{len(self.derived)}"
        self.derived[ref] = spec
        self._remember(t, ref)
        return ref

    def _remember(self, t: Tensor, ref: str) -> None:
        self._refs[identity(t)] = ref
        self._alive.append(t)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    def mark(self) -> tuple[int, int, int]:
        return len(self.tensors), len(self.derived), len(self._alive)

    def rollback(self, mark: tuple[int, int, int]) -> None:
        """Forget everything added after `mark`."""
        n_t, n_d, n_alive = mark
        for key in list(self.tensors)[n_t:]:
            del self.tensors[key]
        for ref in list(self.derived)[n_d:]:
            del self.derived[ref]
        for t in self._alive[n_alive:]:
            self._refs.pop(identity(t), None)
        del self._alive[n_alive:]


# ---------------------------------------------------------------------------- state deltas
# A history state next to one already stored is stored as what differs from it:
#   patch:  same shape, a few rows changed (recolour, move a selection): rows [m] int64 + values
#   select: fewer rows, in order (delete): base[mask], mask [N_base] bool
#   expand: more rows, in order (the state before a delete): out[mask] = base, out[~mask] = rest
# Every candidate is checked bit for bit before it is used; anything else is stored whole.
_INT_OF_SIZE = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _bits(t: Tensor) -> Tensor:
    """[N, row] integer view of `t` (bitwise comparisons: NaNs and -0.0 compare exactly)."""
    t = t.detach().contiguous()
    n = t.shape[0]
    flat = t.reshape(n, math.prod(t.shape[1:]))
    return flat.view(_INT_OF_SIZE[t.element_size()]) if t.dtype != torch.bool else flat


def _same_bits(a: Tensor, b: Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(_bits(a), _bits(b))


def _row_keys(means: Tensor) -> Tensor:
    """[N] int64 hash of each row's position bits (collisions are caught by the bitwise check)."""
    m = means.detach().cpu().contiguous().view(torch.int32).to(torch.int64)
    return (m[:, 0] * 1_000_003 + m[:, 1]) * 1_000_003 + m[:, 2]


def _ordered_subset_mask(big: Tensor, small: Tensor) -> Tensor | None:
    """mask [N_big] with big[mask] == small (rows kept in order), found from the means, or None.
    Both key lists are sorted so the search runs over sorted queries (near linear); the r-th
    copy of a repeated key in `small` goes to the r-th copy in `big`."""
    nb, ns = big.shape[0], small.shape[0]
    if ns == 0:
        return torch.zeros(nb, dtype=torch.bool)
    if nb < ns:
        return None
    kb, ks = _row_keys(big), _row_keys(small)
    ob = torch.argsort(kb, stable=True).numpy()
    os_ = torch.argsort(ks, stable=True).numpy()
    sb, ss = kb.numpy()[ob], ks.numpy()[os_]
    pos = np.searchsorted(sb, ss) + (np.arange(ns) - np.searchsorted(ss, ss))
    if pos[-1] >= nb or pos.max() >= nb or not np.array_equal(sb[pos], ss):
        return None
    idx = np.empty(ns, dtype=np.int64)
    idx[os_] = ob[pos]
    if ns > 1 and not (idx[1:] > idx[:-1]).all():
        return None
    mask = torch.zeros(nb, dtype=torch.bool)
    mask[torch.from_numpy(idx)] = True
    return mask


class _Pair:
    """Row correspondence between a state `x` and its stored neighbour `r` (computed once)."""

    def __init__(self, x: Any, r: Any) -> None:
        self.x, self.r = x, r
        self._mask: Tensor | None = None
        self._done = False

    def mask(self) -> Tensor | None:
        if not self._done:
            self._done = True
            nx, nr = len(self.x), len(self.r)
            if nx < nr:
                self._mask = _ordered_subset_mask(self.r.means, self.x.means)
            elif nx > nr:
                self._mask = _ordered_subset_mask(self.x.means, self.r.means)
        return self._mask


def _encode(pool: TensorPool, x: Tensor, r: Tensor | None, pair: _Pair) -> str:
    """Reference of tensor `x` of a state whose neighbour's same tensor is `r` (stored)."""
    ref = pool.ref_of(x)
    if ref is not None:
        return ref
    if r is None or x.dtype != r.dtype or x.dtype not in _DTYPES or x.ndim == 0 or r.ndim == 0:
        return pool.add(x)
    base = pool.ref_of(r)
    if base is None or x.shape[1:] != r.shape[1:]:
        return pool.add(x)
    n = x.shape[0]
    row_bytes = x[:1].numel() * x.element_size()
    xc, rc = x.detach().cpu(), r.detach().cpu()  # deltas are worked out (and stored) on CPU
    if x.shape[0] == r.shape[0]:
        changed = (_bits(xc) != _bits(rc)).any(1) if row_bytes else torch.zeros(n, dtype=torch.bool)
        rows = changed.nonzero().squeeze(1)
        if rows.numel() * (8 + row_bytes) >= 0.75 * n * row_bytes:
            return pool.add(x)
        values = xc[rows].contiguous()
        return pool.add_derived(
            x, {"op": "patch", "base": base, "rows": pool.add(rows), "values": pool.add(values)}
        )
    mask = pair.mask()
    if mask is None:
        return pool.add(x)
    if n < r.shape[0]:
        if not _same_bits(rc[mask], xc):
            return pool.add(x)
        return pool.add_derived(x, {"op": "select", "base": base, "mask": pool.add(mask)})
    if not _same_bits(xc[mask], rc):
        return pool.add(x)
    rest = xc[~mask].contiguous()
    spec = {"op": "expand", "base": base, "mask": pool.add(mask), "rest": pool.add(rest)}
    return pool.add_derived(x, spec)


def encode_state(pool: TensorPool, x: Any, r: Any | None, fields: tuple[str, ...]) -> dict:
    """References of scene `x`'s tensors ({field: ref, "extras": {name: ref}}), as deltas from
    its neighbour scene `r` (already in `pool`) where that is smaller; `r` None: whole."""
    pair = _Pair(x, r)
    out: dict[str, Any] = {}
    for f in fields:
        out[f] = _encode(pool, getattr(x, f), None if r is None else getattr(r, f), pair)
    out["extras"] = {
        k: _encode(pool, v, None if r is None else r.extras.get(k), pair)
        for k, v in x.extras.items()
    }
    return out


class Resolver:
    """Turns references back into tensors (each once), checking every derived spec; derived
    tensors may not add up to more than `limit` bytes (a file cannot make us allocate without
    bound)."""

    def __init__(self, tensors: dict[str, Tensor], derived: Any, path: Path, limit: int) -> None:
        if not isinstance(derived, dict):
            raise fail(path, "the manifest's derived tensors are not a JSON object")
        self.tensors, self.derived, self.path = tensors, derived, path
        self.limit, self.used = limit, 0
        self._done: dict[str, Tensor] = {}
        self._busy: set[str] = set()

    def stored(self, key: Any, what: str) -> Tensor:
        if not isinstance(key, str) or key not in self.tensors:
            raise fail(self.path, f"{what} refers to a tensor {key!r} the file does not hold")
        return self.tensors[key]

    def __call__(self, ref: Any, what: str) -> Tensor:
        if isinstance(ref, str) and ref in self.tensors:
            return self.tensors[ref]
        if not isinstance(ref, str) or ref not in self.derived:
            raise fail(self.path, f"{what} refers to a tensor {ref!r} the file does not hold")
        if ref in self._done:
            return self._done[ref]
        if ref in self._busy:
            raise fail(self.path, f"derived tensor {ref!r} depends on itself")
        self._busy.add(ref)
        try:
            t = self._build(ref, self.derived[ref], f"{what} (derived tensor {ref!r})")
        finally:
            self._busy.discard(ref)
        self._done[ref] = t
        return t

    def _alloc(self, nbytes: int, what: str) -> None:
        self.used += nbytes
        if self.used > self.limit:
            raise fail(
                self.path,
                f"{what}: rebuilding the history would take more than {self.limit:,} bytes",
            )

    def _build(self, ref: str, spec: Any, what: str) -> Tensor:
        if not isinstance(spec, dict):
            raise fail(self.path, f"{what}: not a JSON object")
        op = spec.get("op")
        if op not in ("patch", "select", "expand"):
            raise fail(self.path, f"{what}: unknown delta {op!r}")
        base = self(spec.get("base"), what)
        if base.ndim == 0:
            raise fail(self.path, f"{what}: its base is a scalar")
        row_bytes = base[:1].numel() * base.element_size()
        bad = f"{what}: malformed {op!r} delta"
        if op == "patch":
            rows, values = (
                self.stored(spec.get("rows"), what),
                self.stored(spec.get("values"), what),
            )
            if (
                rows.dtype != torch.int64
                or rows.ndim != 1
                or values.dtype != base.dtype
                or tuple(values.shape) != (rows.shape[0], *base.shape[1:])
                or (rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= base.shape[0]))
            ):
                raise fail(self.path, bad)
            self._alloc(base.numel() * base.element_size(), what)
            out = base.clone()
            out[rows] = values
            return out
        mask = self.stored(spec.get("mask"), what)
        if mask.dtype != torch.bool or mask.ndim != 1:
            raise fail(self.path, bad)
        kept = int(mask.sum())
        if op == "select":
            if mask.shape[0] != base.shape[0]:
                raise fail(self.path, bad)
            self._alloc(kept * row_bytes, what)
            return base[mask]
        if op == "expand":
            rest = self.stored(spec.get("rest"), what)
            n = mask.shape[0]
            if (
                kept != base.shape[0]
                or rest.dtype != base.dtype
                or tuple(rest.shape) != (n - kept, *base.shape[1:])
            ):
                raise fail(self.path, bad)
            self._alloc(n * row_bytes, what)
            out = torch.empty((n, *base.shape[1:]), dtype=base.dtype)
            out[mask] = base
            out[~mask] = rest
            return out
        raise AssertionError(op)


def _safetensors_header(tensors: dict[str, Tensor]) -> bytes:
    header: dict[str, Any] = {"__metadata__": {"format": "scenelab.project.tensors"}}
    offset = 0
    for key, t in tensors.items():
        n = t.numel() * t.element_size()
        header[key] = {
            "dtype": _DTYPES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + n],
        }
        offset += n
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # safetensors pads the header to 8 bytes
    return struct.pack("<Q", len(blob)) + blob


def _raw(t: Tensor) -> memoryview:
    """The tensor's bytes without a copy (t is CPU and contiguous)."""
    if t.numel() == 0:
        return memoryview(b"")
    return memoryview(t.reshape(-1).view(torch.uint8).numpy()).cast("B")


def _zipinfo(name: str, size: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=time.localtime()[:6])
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = 0o644 << 16
    info.file_size = size
    return info


def write_project(f: BinaryIO, manifest: dict[str, Any], pool: TensorPool) -> None:
    """Write the zip to `f` (seekable): the manifest first (so a reader sniffs it at offset 0),
    then the tensor member, streamed tensor by tensor."""
    manifest_bytes = json.dumps(manifest, indent=1, allow_nan=False).encode()
    header = _safetensors_header(pool.tensors)
    size = len(header) + pool.nbytes
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        zf.writestr(_zipinfo(MANIFEST, len(manifest_bytes)), manifest_bytes)
        info = _zipinfo(TENSORS, size)
        with zf.open(info, "w", force_zip64=size >= zipfile.ZIP64_LIMIT) as w:
            w.write(header)
            for t in pool.tensors.values():
                if t.numel():
                    w.write(_raw(t))


# ---------------------------------------------------------------------------- reading
def _open_zip(path: Path) -> tuple[zipfile.ZipFile, BinaryIO]:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise fail(path, f"cannot read ({e.strerror or e})") from None
    if not stat.S_ISREG(st.st_mode):
        raise fail(path, "not a regular file (a project is one .scenelab zip file)")
    f = open(path, "rb", buffering=0)
    try:
        return zipfile.ZipFile(f), f
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        OSError,
        ValueError,
        EOFError,
        struct.error,
    ) as e:
        f.close()
        raise fail(path, f"not a scenelab project (not a readable zip: {e})") from None
    except BaseException:
        f.close()
        raise


def _member(zf: zipfile.ZipFile, path: Path, name: str) -> zipfile.ZipInfo:
    try:
        info = zf.getinfo(name)
    except KeyError:
        raise fail(path, f"the project has no {name} member") from None
    if info.flag_bits & 0x1:
        raise fail(path, f"{name} is encrypted")
    return info


def read_manifest_from(zf: zipfile.ZipFile, path: Path) -> dict[str, Any]:
    info = _member(zf, path, MANIFEST)
    if info.file_size > MAX_MANIFEST_BYTES:
        raise fail(
            path, f"{MANIFEST} declares {info.file_size:,} bytes (at most {MAX_MANIFEST_BYTES:,})"
        )
    try:
        with zf.open(info) as m:
            raw = m.read(MAX_MANIFEST_BYTES + 1)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as e:
        raise fail(path, f"cannot read {MANIFEST} ({e})") from None
    if len(raw) > MAX_MANIFEST_BYTES:
        raise fail(path, f"{MANIFEST} is larger than {MAX_MANIFEST_BYTES:,} bytes")
    try:
        manifest = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise fail(path, f"{MANIFEST} is not valid JSON ({e})") from None
    if not isinstance(manifest, dict):
        raise fail(path, f"{MANIFEST} is not a JSON object")
    return manifest


def read_manifest(path: Path) -> dict[str, Any]:
    """Only the manifest (cheap: the central directory and one small member)."""
    zf, f = _open_zip(path)
    with f, zf:
        return read_manifest_from(zf, path)


def _data_start(f: BinaryIO, info: zipfile.ZipInfo, path: Path, file_size: int) -> int:
    f.seek(info.header_offset)
    raw = f.read(_LOCAL_HEADER.size)
    if len(raw) != _LOCAL_HEADER.size:
        raise fail(path, f"truncated zip (local header of {info.filename})")
    fields = _LOCAL_HEADER.unpack(raw)
    if fields[0] != _LOCAL_MAGIC:
        raise fail(path, f"bad zip local header for {info.filename}")
    start = info.header_offset + _LOCAL_HEADER.size + fields[10] + fields[11]
    if start + info.compress_size > file_size:
        raise fail(
            path,
            f"{info.filename} declares {info.compress_size:,} bytes but the file ends "
            f"{file_size - start:,} bytes after its start (truncated?)",
        )
    return start


def _read_exact(f: BinaryIO, buf: memoryview, path: Path) -> None:
    done = 0
    while done < len(buf):
        n = f.readinto(buf[done:])
        if not n:
            raise fail(path, "truncated tensor data")
        done += n


def _parse_header(
    raw: bytes, path: Path, data_len: int
) -> list[tuple[str, torch.dtype, list[int], int, int]]:
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise fail(path, f"{TENSORS} header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise fail(path, f"{TENSORS} header is not a JSON object")
    entries = []
    for key, spec in header.items():
        if key == "__metadata__":
            continue
        try:
            dtype = _CODES[spec["dtype"]]
            shape = [int(x) for x in spec["shape"]]
            begin, end = (int(x) for x in spec["data_offsets"])
            if any(x < 0 for x in shape) or not isinstance(spec["shape"], list):
                raise ValueError("negative dimension")
        except (KeyError, TypeError, ValueError) as e:
            raise fail(path, f"{TENSORS}: bad entry for tensor {key!r} ({e!r})") from None
        nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        if not 0 <= begin <= end <= data_len or end - begin != nbytes:
            raise fail(
                path,
                f"{TENSORS}: tensor {key!r} {shape} {spec['dtype']} does not fit its byte range "
                f"[{begin}, {end}) of {data_len:,} data bytes",
            )
        entries.append((key, dtype, shape, begin, end))
    entries.sort(key=lambda e: e[3])
    pos = 0
    for key, _, _, begin, end in entries:
        if begin != pos:
            raise fail(path, f"{TENSORS}: tensor {key!r} overlaps another or leaves a gap")
        pos = end
    if pos != data_len:
        raise fail(path, f"{TENSORS}: {data_len - pos:,} data bytes belong to no tensor")
    return entries


def read_project(path: Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """(manifest, {key: tensor}) of a project file; `ProjectFormatError` for anything malformed."""
    zf, f = _open_zip(path)
    with f, zf:
        manifest = read_manifest_from(zf, path)
        check_manifest_version(manifest, path)
        info = _member(zf, path, TENSORS)
        if info.compress_type != zipfile.ZIP_STORED:
            raise fail(
                path,
                f"{TENSORS} is compressed; scenelab stores project members uncompressed "
                "(re-zip with `zip -0`)",
            )
        size = info.file_size
        if info.compress_size != size:
            raise fail(path, f"{TENSORS}: stored member sizes disagree")
        file_size = os.fstat(f.fileno()).st_size
        start = _data_start(f, info, path, file_size)
        if size < 8:
            raise fail(path, f"{TENSORS} is too short ({size} bytes)")
        f.seek(start)
        head8 = f.read(8)
        (hlen,) = struct.unpack("<Q", head8)
        if hlen > min(MAX_HEADER_BYTES, size - 8):
            raise fail(path, f"{TENSORS} declares a {hlen:,}-byte header in a {size:,}-byte member")
        raw = f.read(hlen)
        if len(raw) != hlen:
            raise fail(path, "truncated tensor header")
        entries = _parse_header(raw, path, size - 8 - hlen)
        crc = _Crc(zlib.crc32(raw, zlib.crc32(head8)), threaded=size > 4 * _CHUNK)
        data = start + 8 + hlen
        tensors: dict[str, Tensor] = {}
        try:
            f.seek(data)
            for key, dtype, shape, _begin, _end in entries:  # contiguous, in file order
                t = torch.empty(shape, dtype=dtype)
                buf = _raw(t)
                for i in range(0, len(buf), _CHUNK):
                    chunk = buf[i : i + _CHUNK]
                    _read_exact(f, chunk, path)
                    crc.update(chunk)
                tensors[key] = t
        except MemoryError:
            raise fail(path, "not enough memory for the project's tensors") from None
        finally:
            value = crc.close()
        if value != info.CRC:
            raise fail(path, f"{TENSORS} fails its CRC check (the file is corrupt)")
        return manifest, tensors


_CHUNK = 16 << 20


class _Crc:
    """CRC-32 of the chunks given in order; with `threaded`, computed on a helper thread while
    the caller reads the next chunk (zlib releases the GIL)."""

    def __init__(self, value: int, *, threaded: bool) -> None:
        self.value = value
        self._pool = ThreadPoolExecutor(1, "scenelab-crc") if threaded else None
        self._last: Future | None = None

    def _add(self, chunk: memoryview) -> None:
        self.value = zlib.crc32(chunk, self.value)

    def update(self, chunk: memoryview) -> None:
        if self._pool is None:
            self._add(chunk)
        else:  # one worker: chunks are folded in submission order
            self._last = self._pool.submit(self._add, chunk)

    def close(self) -> int:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            if self._last is not None:
                self._last.result()
        return self.value


def check_manifest_version(manifest: dict[str, Any], path: Path) -> None:

    if manifest.get("format") != FORMAT:
        raise fail(path, f"not a scenelab project (manifest format {manifest.get('format')!r})")
    version = manifest.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise fail(path, f"bad project version {version!r}")
    if version > VERSION:
        raise fail(
            path,
            f"project version {version} is newer than this scenelab reads ({VERSION}); "
            "update scenelab",
        )


def sniff(path: Path) -> bool:
    """True when `path` is a regular file whose first zip member is the manifest."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
        with open(path, "rb") as f:
            raw = f.read(_LOCAL_HEADER.size + len(MANIFEST))
    except OSError:
        return False
    if len(raw) < _LOCAL_HEADER.size:
        return False
    fields = _LOCAL_HEADER.unpack(raw[: _LOCAL_HEADER.size])
    return fields[0] == _LOCAL_MAGIC and raw[_LOCAL_HEADER.size :] == MANIFEST.encode()


def iter_json_problems(value: Any, where: str, depth: int = 0) -> Iterator[str]:
    """Paths (with reasons) of the parts of `value` that are not strict JSON."""
    if depth > 64:
        yield f"{where}: nested deeper than 64 levels"
    elif value is None or isinstance(value, (bool, int, str)):
        return
    elif isinstance(value, float):
        if not math.isfinite(value):
            yield f"{where}: {value} is not a finite number"
    elif isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                yield f"{where}: key {k!r} is a {type(k).__name__}, not a string"
            else:
                yield from iter_json_problems(v, f"{where}[{k!r}]", depth + 1)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from iter_json_problems(v, f"{where}[{i}]", depth + 1)
    else:
        yield f"{where}: a {type(value).__name__} is not JSON"
