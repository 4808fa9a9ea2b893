"""INRIA 3DGS PLY: the `vertex` element of the reference implementation, plus extras.

Values are stored pre-activation (log scales, logit opacity, wxyz `rot_*`). `f_rest_*` holds the
higher SH bands channel-major: all R coefficients, then all G, then all B, i.e. `sh[:, 1:, :]`
transposed to [N, 3, K-1] and flattened. Normals `nx, ny, nz` are written as zeros (as INRIA
does) and ignored on read. Any other vertex property is a per-Gaussian extra.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..scene import GaussianScene
from ._common import build_scene, fail
from ._plyfile import PlyData, Request
from ._sidecar import DTYPE_NAMES, DTYPES, ExtraSpec, Sidecar

_POSITION = ("x", "y", "z")
_DC = ("f_dc_0", "f_dc_1", "f_dc_2")
_SCALE = ("scale_0", "scale_1", "scale_2")
_ROT = ("rot_0", "rot_1", "rot_2", "rot_3")
_CORE = (*_POSITION, *_DC, "opacity", *_SCALE, *_ROT)
_NORMALS = ("nx", "ny", "nz")
_REST = re.compile(r"f_rest_(\d+)$")
_INDEXED = re.compile(r"(.+)_(\d+)$")
_DEGREE_FROM_REST = {0: 0, 9: 1, 24: 2, 45: 3}
_PLY_NAME = re.compile(r"[!-~]+$")  # printable ASCII, no spaces: a valid PLY property token


def _rest_names(count: int) -> list[str]:
    return [f"f_rest_{i}" for i in range(count)]


# ---------------------------------------------------------------------------------------- read
def _inria_layout(path: Path, ply: PlyData) -> tuple[int, list[str], dict[str, np.dtype]]:
    """(rows, the f_rest_* names, property types) of a valid INRIA vertex element."""
    vertex = ply.header.element("vertex")
    if vertex is None:
        fail(path, "PLY file has no 'vertex' element")
    if not ply.has("vertex"):
        fail(path, "the 'vertex' element has list properties or follows one (unsupported)")
    types = ply.dtypes("vertex")
    missing = [p for p in _CORE if p not in types]
    if missing:
        fail(path, f"vertex element lacks required properties: {', '.join(missing)}")
    rest_idx = sorted(int(m.group(1)) for p in types if (m := _REST.match(p)))
    if rest_idx != list(range(len(rest_idx))):
        fail(path, "f_rest_* properties are not numbered 0..M-1 without gaps")
    if len(rest_idx) not in _DEGREE_FROM_REST:
        fail(
            path,
            f"{len(rest_idx)} f_rest_* properties do not match an SH degree 0-3 (0, 9, 24, 45)",
        )
    rest = _rest_names(len(rest_idx))
    for name in (*_CORE, *rest):
        if types[name].kind != "f":
            fail(path, f"property {name!r} has type {types[name]}, expected a float type")

    return vertex.count, rest, types


def _core_requests(n: int, rest: list[str]) -> tuple[tuple[np.ndarray, ...], list[Request]]:
    """The core arrays (means, quats, scales, opacities, sh) of `n` rows and the gather
    requests that fill them: every property straight into its final array."""
    m = len(rest) // 3
    means = np.empty((n, 3), np.float32)
    quats = np.empty((n, 4), np.float32)
    scales = np.empty((n, 3), np.float32)
    opacities = np.empty(n, np.float32)
    sh = np.empty((n, m + 1, 3), np.float32)
    requests: list[Request] = [
        (_POSITION, means),
        (_ROT, quats),
        (_SCALE, scales),
        (("opacity",), opacities),
        (_DC, sh[:, 0, :]),
    ]
    # f_rest_* is channel-major: all R coefficients, then G, then B.
    requests += [(rest[c * m : (c + 1) * m], sh[:, 1:, c]) for c in range(3) if m]
    return (means, quats, scales, opacities, sh), requests


def read_inria_sample(
    path: Path, ply: PlyData, max_rows: int, meta: dict | None = None
) -> GaussianScene:
    """Every k-th Gaussian of an INRIA PLY, at most `max_rows` of them (no extras): a preview
    read in one pass over the file into small arrays."""
    count, rest, _ = _inria_layout(path, ply)
    step = max(1, -(-count // max(1, int(max_rows))))
    (means, quats, scales, opacities, sh), requests = _core_requests(-(-count // step), rest)
    ply.gather("vertex", requests, step=step)
    return build_scene(
        path, means=means, quats=quats, scales=scales, opacities=opacities, sh=sh, meta=meta
    )


def read_inria(
    path: Path, ply: PlyData, sidecar: Sidecar | None, sidecar_file: Path | None
) -> GaussianScene:
    n, rest, types = _inria_layout(path, ply)
    degree = _DEGREE_FROM_REST[len(rest)]
    used = {*_CORE, *rest, *_NORMALS}
    if sidecar is not None and not _sidecar_matches(sidecar, n, degree, types, used):
        warnings.warn(
            f"{sidecar_file}: sidecar does not match {path.name} (stale?); ignoring it",
            stacklevel=3,
        )
        sidecar = None

    # Every property goes straight into its final array, in one streamed pass over the rows.
    (means, quats, scales, opacities, sh), requests = _core_requests(n, rest)
    extras, finish = _plan_extras(ply, used, n, sidecar)
    ply.gather("vertex", requests + extras)
    return build_scene(
        path,
        means=means,
        quats=quats,
        scales=scales,
        opacities=opacities,
        sh=sh,
        extras=finish(),
        meta=sidecar.meta if sidecar is not None else None,
    )


def _sidecar_matches(sc: Sidecar, n: int, degree: int, types: dict, used: set[str]) -> bool:
    if sc.num_gaussians != n or sc.sh_degree != degree:
        return False
    return all(p in types and p not in used for e in sc.extras for p in e.properties)


def _plan_extras(
    ply: PlyData, used: set[str], n: int, sidecar: Sidecar | None
) -> tuple[list[Request], Callable[[], dict[str, torch.Tensor]]]:
    """The gather requests for the extras, and how to turn the gathered arrays into tensors.

    Sidecar extras are gathered in their own dtype when numpy has it (no second copy); any
    property no sidecar describes becomes an inferred extra (see `_infer_extras`)."""
    types = ply.dtypes("vertex")
    requests: list[Request] = []
    done: list[Callable[[], tuple[str, torch.Tensor]]] = []
    claimed = set(used)
    for spec in sidecar.extras if sidecar is not None else ():
        if spec.properties:
            common = np.result_type(*[types[p] for p in spec.properties])
            target = _numpy_dtype(spec.dtype)
            buf = np.empty((n, len(spec.properties)), target if target is not None else common)
            requests.append((spec.properties, buf))
        else:
            buf = np.zeros((n, 0), np.float32)
        done.append(
            lambda spec=spec, buf=buf: (
                spec.name,
                _restore(buf.reshape(n, *spec.shape), spec.dtype),
            )
        )
        claimed.update(spec.properties)
    taken = {spec.name for spec in (sidecar.extras if sidecar is not None else ())}
    for name, props in _infer_extras(types, claimed, taken).items():
        buf = np.empty((n, len(props)), np.result_type(*[types[p] for p in props]))
        requests.append((props, buf))
        grouped = name not in types  # `base` from base_0..base_C-1
        done.append(lambda name=name, buf=buf, g=grouped: (name, _widen(buf if g else buf[:, 0])))

    def finish() -> dict[str, torch.Tensor]:
        return dict(f() for f in done)

    return requests, finish


def _numpy_dtype(dtype_name: str) -> np.dtype | None:
    dtype = DTYPES[dtype_name]
    if dtype in (torch.bool, torch.bfloat16):
        return None  # gathered as stored, converted by `_restore`
    return torch.empty(0, dtype=dtype).numpy().dtype


def _restore(arr: np.ndarray, dtype_name: str) -> torch.Tensor:
    dtype = DTYPES[dtype_name]
    if dtype == torch.bool:
        return torch.from_numpy(arr != 0)
    if dtype == torch.bfloat16:
        return torch.from_numpy(arr.astype(np.float32)).to(torch.bfloat16)
    with np.errstate(all="ignore"):
        np_dtype = torch.empty(0, dtype=dtype).numpy().dtype
        return torch.from_numpy(np.ascontiguousarray(arr.astype(np_dtype, copy=False)))


def _infer_extras(
    types: dict[str, np.dtype], claimed: set[str], taken: set[str]
) -> dict[str, list[str]]:
    """Extras from properties no sidecar describes, as name -> properties in file order:
    `base_0..base_{C-1}` (C >= 2, one dtype) becomes one [N, C] extra named `base`; any other
    property becomes a [N] extra."""
    free = [p for p in types if p not in claimed]
    groups: dict[str, dict[int, str]] = {}
    for p in free:
        if m := _INDEXED.match(p):
            groups.setdefault(m.group(1), {})[int(m.group(2))] = p
    grouped: dict[str, list[str]] = {}
    for base, members in groups.items():
        props = [members.get(i) for i in range(len(members))]
        if (
            len(members) >= 2
            and None not in props
            and base not in types
            and base not in taken
            and len({types[p] for p in props}) == 1
        ):
            grouped[props[0]] = props  # keyed by its first property, for file order
    out: dict[str, list[str]] = {}
    in_group = {p for props in grouped.values() for p in props}
    for p in free:
        if p in grouped:
            out[_INDEXED.match(p).group(1)] = grouped[p]
        elif p not in in_group and p not in taken:
            out[p] = [p]
    return out


def _widen(arr: np.ndarray) -> torch.Tensor:
    # torch's unsigned 16/32-bit types are second-class; widen them losslessly.
    if arr.dtype == np.uint16:
        arr = arr.astype(np.int32)
    elif arr.dtype == np.uint32:
        arr = arr.astype(np.int64)
    return torch.from_numpy(np.ascontiguousarray(arr))


# --------------------------------------------------------------------------------------- write
def inria_elements(
    scene: GaussianScene,
) -> tuple[list[tuple[str, np.ndarray]], Sidecar]:
    """The vertex properties of `scene` (pre-activation values, then extras) and its sidecar."""
    n = len(scene)
    k = scene.sh.shape[1]
    t = lambda x: x.detach().cpu().to(torch.float32).numpy()  # noqa: E731
    means, quats, scales, opac, sh = (
        t(scene.means),
        t(scene.quats),
        t(scene.scales),
        t(scene.opacities),
        t(scene.sh),
    )
    for name, arr in {
        "means": means,
        "quats": quats,
        "scales": scales,
        "opacities": opac,
        "sh": sh,
    }.items():
        if not np.isfinite(arr).all():
            raise ValueError(f"scene.{name} has NaN or infinite values; PLY readers reject them")
    props: list[tuple[str, np.ndarray]] = [(c, means[:, i]) for i, c in enumerate(_POSITION)]
    props += [(c, np.zeros(n, np.float32)) for c in _NORMALS]
    props += [(c, sh[:, 0, i]) for i, c in enumerate(_DC)]
    rest = sh[:, 1:, :].transpose(0, 2, 1).reshape(n, 3 * (k - 1))
    props += [(f"f_rest_{i}", rest[:, i]) for i in range(rest.shape[1])]
    props.append(("opacity", opac))
    props += [(c, scales[:, i]) for i, c in enumerate(_SCALE)]
    props += [(c, quats[:, i]) for i, c in enumerate(_ROT)]

    specs = []
    names = {p for p, _ in props}
    for name, value in scene.extras.items():
        columns, spec = _extra_properties(name, value)
        for p, _ in columns:
            if p in names or p in _NORMALS or _REST.match(p):
                raise ValueError(
                    f"extra {name!r} would be written as PLY property {p!r}, which is taken; rename it"
                )
            names.add(p)
        props += columns
        specs.append(spec)
    sidecar = Sidecar(n, scene.sh_degree, dict(scene.meta), tuple(specs))
    return props, sidecar


def _extra_properties(
    name: str, value: torch.Tensor
) -> tuple[list[tuple[str, np.ndarray]], ExtraSpec]:
    if not _PLY_NAME.match(name):
        raise ValueError(
            f"extra {name!r}: PLY property names must be printable ASCII without spaces"
        )
    value = value.detach().cpu()
    if value.dtype not in DTYPE_NAMES:
        raise ValueError(f"extra {name!r}: dtype {value.dtype} cannot be stored in PLY")
    n = value.shape[0]
    if value.dtype in (torch.float16, torch.bfloat16):
        arr = value.to(torch.float32).numpy()  # PLY has no 16-bit float; float32 holds it exactly
    elif value.dtype == torch.bool:
        arr = value.numpy().astype(np.uint8)
    elif value.dtype == torch.int64:
        arr = value.numpy()
        lo, hi = np.iinfo(np.int32).min, np.iinfo(np.int32).max
        if arr.size and (arr.min() < lo or arr.max() > hi):
            raise ValueError(
                f"extra {name!r}: int64 values beyond int32 range cannot be stored in PLY"
            )
        arr = arr.astype(np.int32)
    else:
        arr = value.numpy()
    shape = tuple(value.shape[1:])
    if not shape:
        columns = [(name, np.ascontiguousarray(arr))]
    else:
        flat = arr.reshape(n, -1)
        columns = [(f"{name}_{i}", np.ascontiguousarray(flat[:, i])) for i in range(flat.shape[1])]
    spec = ExtraSpec(name, DTYPE_NAMES[value.dtype], shape, tuple(p for p, _ in columns))
    return columns, spec
