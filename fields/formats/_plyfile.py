"""The PLY container: a strict, bounded parser and a binary little-endian writer.

Scene readers built on PLY (INRIA, PlayCanvas compressed) get each element as a structured numpy
array (zero-copy over the file for binary PLY) and gather properties from it. Every size is checked against the bytes actually present before
anything is allocated, so a header that declares 10^15 vertices fails at once instead of
exhausting memory. Elements with list properties (mesh faces) are skipped in ASCII files; in
binary files parsing stops there, and elements after them are reported as unread.
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


@dataclass(frozen=True)
class PlyData:
    header: PlyHeader
    tables: dict[str, np.ndarray]  # element -> structured rows in file byte order (no lists)
    unread: tuple[str, ...]  # elements that follow a binary list element and were not parsed

    def dtypes(self, element: str) -> dict[str, np.dtype]:
        """Property name -> native dtype of a parsed element, in file order."""
        fields = self.tables[element].dtype.fields or {}
        return {k: v[0].newbyteorder("=") for k, v in fields.items()}

    def column(self, element: str, name: str) -> np.ndarray:
        """One property as a fresh, native-order [count] array of its own type."""
        table = self.tables[element]
        return np.array(table[name], dtype=table.dtype[name].newbyteorder("="))

    def stack(
        self, element: str, names: Sequence[str], dtype: np.dtype | type | None
    ) -> np.ndarray:
        """Properties side by side as a fresh C-contiguous [count, len(names)] array.

        One pass over the rows (a multi-field view), far faster than gathering each strided
        column of a wide binary table. `dtype=None` keeps the properties' common type."""
        flat = structured_to_unstructured(self.tables[element][list(names)])
        with np.errstate(over="ignore"):  # e.g. float64 beyond float32: inf, caught by the caller
            return np.array(flat, dtype=flat.dtype.newbyteorder("=") if dtype is None else dtype)


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
    header = parse_header(path, data)
    if header.format == "ascii":
        tables, unread = _read_ascii(path, header, data)
    else:
        tables, unread = _read_binary(path, header, data, _FORMATS[header.format])
    return PlyData(header, tables, unread)


def _read_binary(
    path: Path, header: PlyHeader, data: bytes, order: str
) -> tuple[dict[str, np.ndarray], tuple[str, ...]]:
    tables: dict[str, np.ndarray] = {}
    offset = header.body_offset
    for i, el in enumerate(header.elements):
        if el.has_lists:
            # Rows have variable size; stop here rather than walk them one by one.
            return tables, tuple(e.name for e in header.elements[i:])
        row = np.dtype([(p.name, p.dtype.newbyteorder(order)) for p in el.properties])
        nbytes = el.count * row.itemsize
        left = len(data) - offset
        if nbytes > left:
            fail(
                path,
                f"element {el.name!r} declares {el.count} rows of {row.itemsize} bytes "
                f"({nbytes} bytes) but only {left} bytes remain: truncated file or wrong count",
            )
        if row.itemsize == 0:
            tables[el.name] = np.zeros(0, row)  # no properties: nothing to hold
        else:
            tables[el.name] = np.frombuffer(data, dtype=row, count=el.count, offset=offset)
        offset += nbytes
    if offset != len(data):
        fail(
            path,
            f"{len(data) - offset} bytes follow the last PLY element: the header counts do not "
            "match the data",
        )
    return tables, ()


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
