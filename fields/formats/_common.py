"""Shared pieces of the scene readers: failing with a message, finiteness checks, building scenes."""

from __future__ import annotations

import functools
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

import numpy as np
import torch

from .._sh import sh_basis
from ..errors import SceneFormatError
from ..scene import SH_C0, GaussianScene

# One byte of an 8-bit alpha covers [k - 0.5, k + 0.5] / 255. Decoding 0 and 255 a quarter step
# inside their cells keeps logits finite and still re-encodes to the same byte.
_ALPHA_EPS = 0.25 / 255.0

# Legacy readers with a header count cannot learn how much data is real before they decompress;
# they refuse counts beyond this (Niantic's reference reader stops at 10M).
MAX_GAUSSIANS = 100_000_000


def fail(path: Path, problem: str) -> NoReturn:
    raise SceneFormatError(path, problem)


def alpha_to_logit(alpha: np.ndarray) -> np.ndarray:
    """Opacity in [0, 1] (float) -> logit, clamped inside the 8-bit quantisation cells."""
    a = np.clip(alpha.astype(np.float64), _ALPHA_EPS, 1.0 - _ALPHA_EPS)
    return np.log(a / (1.0 - a)).astype(np.float32)


def rgb_to_dc(rgb: np.ndarray) -> np.ndarray:
    return ((rgb.astype(np.float64) - 0.5) / SH_C0).astype(np.float32)


def require_finite(path: Path, **arrays: np.ndarray) -> None:
    for name, arr in arrays.items():
        if arr.dtype.kind != "f":
            continue
        # In row blocks: the boolean mask of a whole SH array would cost a quarter of it.
        step = 1 << 16
        if all(np.isfinite(arr[i : i + step]).all() for i in range(0, arr.shape[0], step)):
            continue
        bad = int((~np.isfinite(arr)).reshape(arr.shape[0], -1).any(axis=1).sum())
        fail(path, f"{name} has NaN or infinite values in {bad} Gaussian(s)")


def require_count(path: Path, n: int) -> None:
    if n <= 0:
        fail(path, "the file holds no Gaussians")


def build_scene(
    path: Path,
    means: np.ndarray,  # [N,3]
    quats: np.ndarray,  # [N,4] wxyz
    scales: np.ndarray,  # [N,3] log
    opacities: np.ndarray,  # [N] logit
    sh: np.ndarray,  # [N,K,3]
    extras: Mapping[str, torch.Tensor] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> GaussianScene:
    """Check the decoded arrays (count, finiteness) and wrap them in a `GaussianScene`."""
    require_count(path, means.shape[0])
    arrays = {
        "position": means,
        "rotation": quats,
        "scale": scales,
        "opacity": opacities,
        "colour (SH)": sh,
    }
    arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in arrays.items()}
    require_finite(path, **arrays)
    t = {k: torch.from_numpy(v) for k, v in arrays.items()}
    return GaussianScene(
        means=t["position"],
        quats=t["rotation"],
        scales=t["scale"],
        opacities=t["opacity"],
        sh=t["colour (SH)"],
        extras=dict(extras or {}),
        meta=dict(meta or {}),
    )


@functools.lru_cache(maxsize=1)
def _flip_yz_sh_signs() -> np.ndarray:
    # Every real SH basis function of the gsplat basis is even or odd under (x, y, z) -> (x, -y, -z)
    # (a 180 degree turn about x), so the change of frame is one sign per coefficient.
    d = torch.tensor([[0.3, 0.5, 0.8]], dtype=torch.float64)
    d = d / d.norm()
    ratio = sh_basis(3, d * torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64)) / sh_basis(3, d)
    return np.sign(ratio[0].numpy()).astype(np.float32)  # [16]


def flip_yz(
    means: np.ndarray, quats: np.ndarray, sh: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Re-express Gaussians in a frame turned 180 degrees about x (RUB <-> RDF)."""
    axis = np.array([1.0, -1.0, -1.0], dtype=np.float32)
    means = means * axis
    quats = quats * np.array([1.0, 1.0, -1.0, -1.0], dtype=np.float32)  # wxyz: vector part turns
    sh = sh * _flip_yz_sh_signs()[: sh.shape[1], None]
    return means, quats, sh


# Opening a FIFO for reading blocks until a writer appears, and a terminal may become the
# controlling one: open without either, then refuse anything but a regular file.
_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_CLOEXEC", 0)
)


def open_regular(path: Path) -> tuple[BinaryIO, int]:
    """Open `path` for reading if it is a regular file (links followed): (file, size).

    A FIFO, socket, device or folder raises `SceneFormatError` at once (never blocks); the
    usual `OSError`s (`FileNotFoundError`, `PermissionError`) pass through."""
    fd = os.open(path, _OPEN_FLAGS)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            fail(path, f"not a regular file ({_kind(st.st_mode)}); scene files must be files")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb"), st.st_size
    except BaseException:
        os.close(fd)
        raise


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO / pipe"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def read_exactly(path: Path, f: BinaryIO, size: int) -> bytes:
    """The first `size` bytes of `f` (from its start), failing if the file is shorter now."""
    f.seek(0)
    data = f.read(size)  # a buffered reader loops until `size` bytes or the end
    if len(data) != size:
        fail(path, f"the file ended after {len(data)} of {size} bytes (it changed while read?)")
    return data


def read_regular(path: Path, limit: int | None = None) -> bytes:
    """All bytes of the regular file `path` (see `open_regular`), at most `limit` of them:
    a larger file raises `SceneFormatError` before anything is read."""
    f, size = open_regular(path)
    with f:
        if limit is not None and size > limit:
            fail(path, f"the file holds {size} bytes, more than the {limit} allowed here")
        return read_exactly(path, f, size)
