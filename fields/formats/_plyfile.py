"""The PLY container: a strict, bounded parser and a binary little-endian writer.

Scene readers built on PLY (INRIA, PlayCanvas compressed) ask `PlyData.gather` for the
properties they need, each into its final array; binary bodies are streamed from the file in
chunks of a few MiB, so loading costs the final arrays plus one chunk (no whole-file buffer, no
intermediate table). Every size is checked against the file size before anything is allocated,
so a header that declares 10^15 vertices fails at once instead of exhausting memory. Elements
with list properties (mesh faces) are skipped in ASCII files; in binary files parsing stops
there, and elements after them are reported as unread.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from numpy.lib.recfunctions import structured_to_unstructured

from ._common import fail

# PLY type names (both the classic and the sized spellings) -> numpy scalar type. `half` is not in
# the PLY spec but some exporters write it; we accept it on read and never write it.
_TYPES = {
    "char": "i1",
    "int8": "i1",
    "uchar": "u1",
    "uint8": "u1",
    "short": "i2",
    "int16": "i2",
    "ushort": "u2",
    "uint16": "u2",
    "int": "i4",
    "int32": "i4",
    "uint": "u4",
    "uint32": "u4",
    "float": "f4",
    "float32": "f4",
    "double": "f8",
    "float64": "f8",
    "half": "f2",
    "float16": "f2",
}
_WRITE_NAMES = {
    "i1": "char",
    "u1": "uchar",
    "i2": "short",
    "u2": "ushort",
    "i4": "int",
    "u4": "uint",
    "f4": "float",
    "f8": "double",
}
_FORMATS = {"ascii": None, "binary_little_endian": "<", "binary_big_endian": ">"}
_MAX_HEADER = 1 << 20  # bytes; real headers are a few KiB even with hundreds of properties
_END = re.compile(rb"(?:^|\n)end_header[ \t]*\r?\n")


@dataclass(frozen=True)
class PlyProperty:
    name: str
    dtype: np.dtype  # value type, native byte order
    is_list: bool = False


@dataclass(frozen=True)
class PlyElement:
    name: str
    count: int
    properties: tuple[PlyProperty, ...]

    @property
    def has_lists(self) -> bool:
        return any(p.is_list for p in self.properties)

    def property(self, name: str) -> PlyProperty | None:
        return next((p for p in self.properties if p.name == name), None)


@dataclass(frozen=True)
class PlyHeader:
    format: str
    elements: tuple[PlyElement, ...]
    comments: tuple[str, ...]
    body_offset: int

    def element(self, name: str) -> PlyElement | None:
        return next((e for e in self.elements if e.name == name), None)


# Rows per read when streaming a binary element: about this many bytes at a time.
CHUNK_BYTES = 4 << 20

# A request to `PlyData.gather`: property names and the [count, len(names)] (or [count] for one
# name) array their values are written into, cast to its dtype. It may be a strided view.
Request = tuple[Sequence[str], np.ndarray]


class _Bytes:
    """Random access to the PLY body: the whole file in memory, or an open seekable file."""

    def __init__(self, path: Path, data: bytes | None = None, f: BinaryIO | None = None):
        self.path, self.data, self.f = path, data, f

    def read_into(self, offset: int, buf: memoryview) -> None:
        if self.data is not None:
            part = memoryview(self.data)[offset : offset + len(buf)]
            got = len(part)
            buf[:got] = part
        else:
            assert self.f is not None
            self.f.seek(offset)
            got = 0
            while got < len(buf):
                k = self.f.readinto(buf[got:])
                if not k:
                    break
                got += k
        if got != len(buf):
            fail(self.path, "the file ended early (it changed while being read?)")


class PlyData:
    """A parsed PLY header plus access to its elements' rows.

    Binary elements are not held in memory: `gather` streams an element's rows in chunks of
    about `CHUNK_BYTES` straight into the caller's final arrays, so reading costs those arrays
    plus one chunk. ASCII bodies are parsed whole (they are small in practice)."""

    def __init__(
        self,
        path: Path,
        header: PlyHeader,
        source: _Bytes | None,
        offsets: dict[str, int],
        tables: dict[str, np.ndarray],
        unread: tuple[str, ...],
    ):
        self.path = path
        self.header = header
        self.unread = unread  # elements that follow a binary list element and were not parsed
        self._source = source
        self._offsets = offsets  # binary: element -> byte offset of its first row
        self._tables = tables  # ASCII: element -> structured rows in memory

    def has(self, element: str) -> bool:
        """Whether `element` was parsed (it exists, has no list properties, precedes any)."""
        return element in self._offsets or element in self._tables

    def _row(self, element: str) -> np.dtype:
        if element in self._tables:
            return self._tables[element].dtype
        el = self.header.element(element)
        assert el is not None
        order = _FORMATS[self.header.format]
        return np.dtype([(p.name, p.dtype.newbyteorder(order)) for p in el.properties])

    def dtypes(self, element: str) -> dict[str, np.dtype]:
        """Property name -> native dtype of a parsed element, in file order."""
        fields = self._row(element).fields or {}
        return {k: v[0].newbyteorder("=") for k, v in fields.items()}

    def gather(self, element: str, requests: Sequence[Request], *, step: int = 1) -> None:
        """Fill each request's array with its properties, in one pass over the element's rows
        (every `step`-th row from the first: arrays of ceil(count / step) rows).

        Values are cast to the destination's dtype (float overflow gives inf: callers check
        finiteness)."""
        el = self.header.element(element)
        if el is None or not self.has(element):
            raise KeyError(element)
        if step < 1:
            raise ValueError(f"step must be >= 1, got {step}")
        if not requests or el.count == 0:
            return
        rows_out = -(-el.count // step)
        row = self._row(element)
        names = list(row.names or ())
        plan = []
        for props, out in requests:
            out2 = out[:, None] if out.ndim == 1 else out
            if out2.shape != (rows_out, len(props)):
                raise ValueError(f"gather into {out.shape} for {rows_out} rows of {len(props)}")
            idx = [names.index(p) for p in props]
            cols: slice | list[int] = idx
            if idx and idx == list(range(idx[0], idx[0] + len(idx))):
                cols = slice(idx[0], idx[0] + len(idx))
            plan.append((list(props), out2, cols))
        with np.errstate(all="ignore"):
            if element in self._tables:
                table = self._tables[element]
                for props, out, _ in plan:
                    for j, p in enumerate(props):
                        out[:, j] = table[p][::step]
                return
            self._stream(el, row, plan, stride=step)

    def _stream(self, el: PlyElement, row: np.dtype, plan: list, stride: int = 1) -> None:
        assert self._source is not None
        kinds = {row.fields[n][0] for n in row.names} if row.names else set()
        same = kinds.pop() if len(kinds) == 1 else None  # every property of one type
        step = max(1, CHUNK_BYTES // max(row.itemsize, 1))
        buf = bytearray(min(step, el.count) * row.itemsize)
        base = self._offsets[el.name]
        for start in range(0, el.count, step):
            k = min(step, el.count - start)
            view = memoryview(buf)[: k * row.itemsize]
            self._source.read_into(base + start * row.itemsize, view)
            first = -start % stride  # the chunk's first row on the stride
            o0 = (start + first) // stride
            o1 = o0 + len(range(first, k, stride))
            if same is not None:
                block = np.frombuffer(buf, dtype=same, count=k * len(row.names)).reshape(k, -1)
                block = block[first::stride] if stride > 1 else block
                for _, out, cols in plan:
                    out[o0:o1] = block[:, cols]
            else:
                rows = np.frombuffer(buf, dtype=row, count=k)
                rows = rows[first::stride] if stride > 1 else rows
                for props, out, _ in plan:
                    for j, p in enumerate(props):
                        out[o0:o1, j] = rows[p]

    def stack(
        self, element: str, names: Sequence[str], dtype: np.dtype | type | None
    ) -> np.ndarray:
        """Properties side by side as a fresh C-contiguous [count, len(names)] array
        (`dtype=None`: the properties' common type)."""
        types = self.dtypes(element)
        if dtype is None:
            dtype = np.result_type(*[types[n] for n in names]) if names else np.float32
        out = np.empty((self.header.element(element).count, len(names)), dtype)
        self.gather(element, [(names, out)])
        return out

    def column(self, element: str, name: str) -> np.ndarray:
        """One property as a fresh [count] array of its own type."""
        return self.stack(element, [name], self.dtypes(element)[name])[:, 0]


def is_ply(data: bytes) -> bool:
    return data[:4] in (b"ply\n", b"ply\r")


def parse_header(path: Path, data: bytes) -> PlyHeader:
    if not is_ply(data):
        fail(path, "not a PLY file (it does not start with 'ply')")
    m = _END.search(data, 0, _MAX_HEADER)
    if m is None:
        fail(path, f"PLY header has no 'end_header' line within the first {_MAX_HEADER} bytes")
    try:
        text = data[: m.start() + 1].decode("ascii")
    except UnicodeDecodeError:
        fail(path, "PLY header is not ASCII text")
    fmt: str | None = None
    comments: list[str] = []
    elements: list[tuple[str, int, list[PlyProperty]]] = []
    for lineno, raw in enumerate(text.splitlines()[1:], start=2):
        tok = raw.split()
        if not tok:
            continue
        key = tok[0]
        if key in ("comment", "obj_info"):
            comments.append(raw.strip()[len(key) :].strip())
        elif key == "format":
            if fmt is not None:
                fail(path, f"PLY header line {lineno}: a second 'format' line")
            if len(tok) != 3 or tok[1] not in _FORMATS or tok[2] != "1.0":
                fail(path, f"PLY header line {lineno}: unsupported format {raw.strip()!r}")
            fmt = tok[1]
        elif key == "element":
            if len(tok) != 3:
                fail(path, f"PLY header line {lineno}: malformed element line {raw.strip()!r}")
            if not tok[2].isdigit():
                fail(path, f"PLY header line {lineno}: element count {tok[2]!r} is not a count")
            if any(e[0] == tok[1] for e in elements):
                fail(path, f"PLY header line {lineno}: element {tok[1]!r} declared twice")
            elements.append((tok[1], int(tok[2]), []))
        elif key == "property":
            if not elements:
                fail(path, f"PLY header line {lineno}: property before any element")
            props = elements[-1][2]
            if len(tok) == 3 and tok[1] in _TYPES:
                prop = PlyProperty(tok[2], np.dtype(_TYPES[tok[1]]))
            elif len(tok) == 5 and tok[1] == "list" and tok[2] in _TYPES and tok[3] in _TYPES:
                if np.dtype(_TYPES[tok[2]]).kind not in "iu":
                    fail(path, f"PLY header line {lineno}: list count type must be an integer")
                prop = PlyProperty(tok[4], np.dtype(_TYPES[tok[3]]), is_list=True)
            else:
                fail(path, f"PLY header line {lineno}: unsupported property {raw.strip()!r}")
            if any(p.name == prop.name for p in props):
                fail(path, f"PLY header line {lineno}: property {prop.name!r} declared twice")
            props.append(prop)
        else:
            fail(path, f"PLY header line {lineno}: unknown keyword {key!r}")
    if fmt is None:
        fail(path, "PLY header has no 'format' line")
    return PlyHeader(
        format=fmt,
        elements=tuple(PlyElement(n, c, tuple(p)) for n, c, p in elements),
        comments=tuple(comments),
        body_offset=m.end(),
    )


def read_ply(path: Path, data: bytes) -> PlyData:
    """Parse a whole PLY file held in memory. Raises `SceneFormatError` for anything malformed."""
    return _open(path, data[: _MAX_HEADER + 64], len(data), _Bytes(path, data=data))


def open_ply(path: Path, f: BinaryIO, size: int) -> PlyData:
    """Parse the header of the PLY file open in `f` (seekable, `size` bytes long); binary
    elements are read from `f` later, by `PlyData.gather`, so keep it open until then."""
    f.seek(0)
    head = f.read(min(size, _MAX_HEADER + 64))
    return _open(path, head, size, _Bytes(path, f=f))


def _open(path: Path, head: bytes, size: int, source: _Bytes) -> PlyData:
    header = parse_header(path, head)
    if header.format == "ascii":
        data = source.data
        if data is None:
            buf = bytearray(size)
            source.read_into(0, memoryview(buf))
            data = bytes(buf)
        tables, unread = _read_ascii(path, header, data)
        return PlyData(path, header, None, {}, tables, unread)
    offsets, unread = _layout(path, header, size)
    return PlyData(path, header, source, offsets, {}, unread)


def _layout(path: Path, header: PlyHeader, size: int) -> tuple[dict[str, int], tuple[str, ...]]:
    """Where each binary element starts, checked against the file size before any reading."""
    offsets: dict[str, int] = {}
    offset = header.body_offset
    for i, el in enumerate(header.elements):
        if el.has_lists:
            # Rows have variable size; stop here rather than walk them one by one.
            return offsets, tuple(e.name for e in header.elements[i:])
        itemsize = sum(p.dtype.itemsize for p in el.properties)
        nbytes = el.count * itemsize
        left = size - offset
        if nbytes > left:
            fail(
                path,
                f"element {el.name!r} declares {el.count} rows of {itemsize} bytes "
                f"({nbytes} bytes) but only {left} bytes remain: truncated file or wrong count",
            )
        offsets[el.name] = offset
        offset += nbytes
    if offset != size:
        fail(
            path,
            f"{size - offset} bytes follow the last PLY element: the header counts do not "
            "match the data",
        )
    return offsets, ()


def _read_ascii(
    path: Path, header: PlyHeader, data: bytes
) -> tuple[dict[str, np.ndarray], tuple[str, ...]]:
    try:
        text = data[header.body_offset :].decode("ascii")
    except UnicodeDecodeError:
        fail(path, "ASCII PLY body holds non-ASCII bytes")
    lines = text.split("\n")
    tables: dict[str, np.ndarray] = {}
    pos = 0
    for el in header.elements:
        if el.count > len(lines) - pos:
            fail(
                path,
                f"element {el.name!r} declares {el.count} rows but only {len(lines) - pos} "
                "lines remain: truncated file or wrong count",
            )
        rows = lines[pos : pos + el.count]
        pos += el.count
        if el.has_lists:
            continue  # one row per line, so the element can be stepped over without parsing
        tokens = " ".join(rows).split()
        width = len(el.properties)
        if len(tokens) != el.count * width:
            fail(
                path,
                f"element {el.name!r}: expected {el.count} rows of {width} values, found "
                f"{len(tokens)} values",
            )
        try:
            values = np.array(tokens, dtype=np.float64).reshape(-1, width) if width else None
        except ValueError:
            fail(path, f"element {el.name!r} holds a value that is not a number")
        table = np.empty(el.count if width else 0, [(p.name, p.dtype) for p in el.properties])
        for j, p in enumerate(el.properties):
            table[p.name] = _ascii_column(path, el, p, values[:, j])
        tables[el.name] = table
    if any(line.strip() for line in lines[pos:]):
        fail(path, "text follows the last PLY element: the header counts do not match the data")
    return tables, ()


def _ascii_column(path: Path, el: PlyElement, prop: PlyProperty, v: np.ndarray) -> np.ndarray:
    if prop.dtype.kind == "f":
        with np.errstate(over="ignore"):
            return v.astype(prop.dtype)
    info = np.iinfo(prop.dtype)
    if not (np.isfinite(v).all() and (v == np.floor(v)).all()):
        fail(path, f"element {el.name!r}: integer property {prop.name!r} holds a non-integer")
    if v.size and (v.min() < info.min or v.max() > info.max):
        fail(path, f"element {el.name!r}: property {prop.name!r} holds a value out of its range")
    return v.astype(prop.dtype)


def write_ply(
    f: BinaryIO,
    elements: Sequence[tuple[str, Sequence[tuple[str, np.ndarray]]]],
    comments: Iterable[str] = (),
) -> None:
    """Write binary little-endian PLY. Each element is (name, [(property, [count] array), ...])."""
    lines = ["ply", "format binary_little_endian 1.0"]
    lines += [f"comment {c}" for c in comments]
    tables = []
    for name, props in elements:
        counts = {len(a) for _, a in props}
        if len(counts) != 1:
            raise ValueError(f"element {name!r}: properties have different lengths {counts}")
        n = counts.pop()
        lines.append(f"element {name} {n}")
        fields = []
        for pname, arr in props:
            code = arr.dtype.str[1:]
            if code not in _WRITE_NAMES:
                raise ValueError(f"property {pname!r}: dtype {arr.dtype} has no PLY type")
            lines.append(f"property {_WRITE_NAMES[code]} {pname}")
            fields.append((pname, "<" + code))
        table = np.empty(n, dtype=np.dtype(fields))
        # Runs of same-typed properties are written as one [n, k] block through a view: one
        # pass instead of one strided pass per property.
        start = 0
        while start < len(props):
            stop = start + 1
            while stop < len(props) and props[stop][1].dtype == props[start][1].dtype:
                stop += 1
            names = [p for p, _ in props[start:stop]]
            block = structured_to_unstructured(table[names])
            if stop - start > 1 and np.shares_memory(block, table):
                block[...] = np.stack([a for _, a in props[start:stop]], axis=1)
            else:
                for pname, arr in props[start:stop]:
                    table[pname] = arr
            start = stop
        tables.append(table)
    lines.append("end_header")
    f.write(("\n".join(lines) + "\n").encode("ascii"))
    for table in tables:
        f.write(table.tobytes())
