"""Shared pieces of the scene readers: failing with a message, finiteness checks, building scenes."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

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
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
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
