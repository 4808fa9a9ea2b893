"""Projection of 3D Gaussians to screen-space splats on the CPU (compiled `fields._raster_cpu`).

Per Gaussian, gsplat's "classic" EWA semantics: camera-space mean `viewmat @ [mean, 1]`;
covariance `W R S S R^T W^T` (R of the normalised quaternion); perspective Jacobian at x/z, y/z
clamped to the image plus 30% of tan(fov/2) (gsplat `persp_proj`); `cov2d = J cov_c J^T + eps2d I`;
conic = inverse of cov2d; an opacity-aware bounding box
`ceil(min(3.33, sqrt(2 ln(255 o))) * sqrt(diag(cov2d)))` that holds every pixel with alpha >= 1/255;
rgb = clamp_min(SH(mean - camera centre) + 0.5, 0) in the world frame. Culled (radii 0): z outside
[near, far], det(cov2d) <= 0, opacity < 1/255, or a bounding box fully outside the image; culled
Gaussians get zero gradients.

Forward and the hand-derived backward are one C++ loop each over Gaussians (`_csrc/project.h`,
OpenMP, float32); backward recomputes each Gaussian's forward from the inputs, so nothing but the
inputs and radii is kept. `_reference.project_reference` is the plain float64 torch version the
tests compare values and gradients against.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._cpu import _ext
from ._project import Intrinsics, Splats

__all__ = ["project_cpu"]


def _f32(x: Tensor) -> Tensor:
    return x.detach().to(torch.float32).contiguous()


class _ProjectCPU(torch.autograd.Function):
    """(means, quats, scales, opacity logits, sh) -> (means2d, conics, opacities, rgb, z, radii)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        means: Tensor,
        quats: Tensor,
        scales: Tensor,
        opacities: Tensor,
        sh: Tensor,
        view: tuple,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        inputs = [_f32(t) for t in (means, quats, scales, opacities, sh)]
        out = _ext.project_forward(
            *(t.numpy() for t in inputs), *view, threads=torch.get_num_threads()
        )
        means2d, conics, opac, rgb, z, radii = (torch.from_numpy(a) for a in out)
        ctx.save_for_backward(*inputs, radii)
        ctx.view = view
        ctx.mark_non_differentiable(radii)
        return means2d, conics, opac, rgb, z, radii

    @staticmethod
    def backward(ctx: Any, v_means2d, v_conics, v_opac, v_rgb, v_z, _v_radii):  # type: ignore[override]
        *inputs, radii = ctx.saved_tensors
        grads = _ext.project_backward(
            *(t.numpy() for t in inputs),
            *ctx.view,
            radii.numpy(),
            *(_f32(g).numpy() for g in (v_means2d, v_conics, v_opac, v_rgb, v_z)),
            threads=torch.get_num_threads(),
        )
        return (*(torch.from_numpy(g) for g in grads), None)


def project_cpu(
    means: Tensor,  # [N,3]
    quats: Tensor,  # [N,4] wxyz, any norm
    scales: Tensor,  # [N,3] log standard deviations
    opacities: Tensor,  # [N] logits
    sh: Tensor,  # [N,K,3]
    viewmat: Tensor,  # [4,4] world-to-camera, OpenCV axes
    intr: Intrinsics,
    *,
    near: float,
    far: float,
    eps2d: float,
    sh_degree: int,
    features: Tensor | None = None,  # [N,C]
    campos: Tensor | None = None,  # [3] camera centre (inverse of viewmat) if known
) -> Splats:
    """Project CPU Gaussians to splats (float32); differentiable w.r.t. means, quats, scales,
    opacities, sh and features (not the camera). `Splats.colors` = [rgb, camera z, features]."""
    n = means.shape[0]
    for name, t, shape in (
        ("means", means, (n, 3)),
        ("quats", quats, (n, 4)),
        ("scales", scales, (n, 3)),
        ("opacities", opacities, (n,)),
    ):
        if t.shape != shape:
            raise ValueError(f"{name} must be {list(shape)} with N={n}, got {tuple(t.shape)}")
    if sh.dim() != 3 or sh.shape[0] != n or sh.shape[2] != 3:
        raise ValueError(f"sh must be [N={n},K,3], got {tuple(sh.shape)}")
    V = viewmat.detach().to(device="cpu", dtype=torch.float64)
    if campos is None:
        campos = torch.linalg.inv(V)[:3, 3]
    view = (
        V.contiguous().numpy(),
        campos.detach().to(device="cpu", dtype=torch.float64).contiguous().numpy(),
        (intr.fx, intr.fy, intr.cx, intr.cy, int(intr.width), int(intr.height)),
        float(near),
        float(far),
        float(eps2d),
        int(sh_degree),
    )
    f32 = [
        t if t.dtype == torch.float32 else t.float() for t in (means, quats, scales, opacities, sh)
    ]
    means2d, conics, opac, rgb, z, radii = _ProjectCPU.apply(*f32, view)
    parts = [rgb, z[:, None]] + ([] if features is None else [features.to(torch.float32)])
    return Splats(means2d, conics, opac, torch.cat(parts, 1), z.detach(), radii)
