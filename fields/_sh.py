"""Real spherical harmonics in the gsplat / INRIA basis (degrees 0-3): evaluation and rotation."""

from __future__ import annotations

import functools

import torch
from torch import Tensor

_C0 = 0.28209479177387814
_C1 = 0.4886025119029199
_C2 = (
    1.0925484305920792,
    -1.0925484305920792,
    0.31539156525252005,
    -1.0925484305920792,
    0.5462742152960396,
)
_C3 = (
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
)


def sh_degree_from_k(k: int) -> int:
    """Number of SH coefficients K -> degree d with K = (d+1)^2, d in 0..3."""
    for d in range(4):
        if (d + 1) ** 2 == k:
            return d
    raise ValueError(f"{k} SH coefficients per channel is not (d+1)^2 for a degree d in 0..3")


def sh_basis(degree: int, dirs: Tensor) -> Tensor:
    """SH basis values [..., (degree+1)^2] at unit directions `dirs [...,3]`."""
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, _C0)]
    if degree >= 1:
        out += [-_C1 * y, _C1 * z, -_C1 * x]
    if degree >= 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        out += [
            _C2[0] * xy,
            _C2[1] * yz,
            _C2[2] * (2.0 * zz - xx - yy),
            _C2[3] * xz,
            _C2[4] * (xx - yy),
        ]
    if degree >= 3:
        out += [
            _C3[0] * y * (3 * xx - yy),
            _C3[1] * xy * z,
            _C3[2] * y * (4 * zz - xx - yy),
            _C3[3] * z * (2 * zz - 3 * xx - 3 * yy),
            _C3[4] * x * (4 * zz - xx - yy),
            _C3[5] * z * (xx - yy),
            _C3[6] * x * (xx - 3 * yy),
        ]
    return torch.stack(out, dim=-1)


def eval_sh(
    coeffs: Tensor,  # [...,K,3]
    dirs: Tensor,  # [...,3] (need not be unit)
) -> Tensor:
    """Colour [...,3] = clamp_min(sum_k Y_k(d) c_k + 0.5, 0), gsplat's convention."""
    degree = sh_degree_from_k(coeffs.shape[-2])
    d = torch.nn.functional.normalize(dirs, dim=-1)
    basis = sh_basis(degree, d)  # [...,K]
    return torch.clamp_min((basis[..., None] * coeffs).sum(-2) + 0.5, 0.0)


@functools.lru_cache(maxsize=8)
def _fibonacci_dirs(n: int) -> Tensor:
    i = torch.arange(n, dtype=torch.float64) + 0.5
    phi = torch.acos(1 - 2 * i / n)
    theta = torch.pi * (1 + 5**0.5) * i
    return torch.stack(
        [torch.cos(theta) * torch.sin(phi), torch.sin(theta) * torch.sin(phi), torch.cos(phi)], -1
    )


def sh_rotation_matrices(R: Tensor, degree: int) -> list[Tensor]:
    """Per band l=1..degree a [2l+1, 2l+1] matrix M_l with c'_l = M_l c_l for a world rotation R.

    The rotated field must satisfy f'(R d) = f(d), i.e. Y_l(R^T d)·c = Y_l(d)·c'. Each band of real
    SH is closed under rotation, so Y_l(R^T d) = D_l Y_l(d) exactly; D_l is solved by least squares
    from well-spread directions (in float64, residual ~1e-15) and c'_l = D_l^T c_l.
    """
    R = R.to(torch.float64).cpu()
    dirs = _fibonacci_dirs(64)
    Y = sh_basis(degree, dirs)  # [M,K]
    Yr = sh_basis(degree, dirs @ R)  # rows are R^T d
    mats = []
    for lvl in range(1, degree + 1):
        s = slice(lvl * lvl, (lvl + 1) * (lvl + 1))
        # Yr_l = Y_l @ D^T  (row form) -> D^T = lstsq(Y_l, Yr_l)
        Dt = torch.linalg.lstsq(Y[:, s], Yr[:, s]).solution  # [2l+1, 2l+1] = D^T
        mats.append(Dt)  # c' = D^T c
    return mats


def rotate_sh(
    sh: Tensor,  # [N,K,3]
    R: Tensor,  # [3,3] world rotation applied to the scene
) -> Tensor:
    """SH coefficients [N,K,3] of the rotated scene (DC band unchanged)."""
    degree = sh_degree_from_k(sh.shape[1])
    if degree == 0:
        return sh
    out = sh.clone()
    for lvl, M in enumerate(sh_rotation_matrices(R, degree), start=1):
        s = slice(lvl * lvl, (lvl + 1) * (lvl + 1))
        out[:, s, :] = torch.einsum("ij,njc->nic", M.to(sh), sh[:, s, :])
    return out
