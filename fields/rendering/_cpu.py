"""Differentiable CPU tile rasterizer for projected 2D Gaussians (compiled `fields._raster_cpu`).

Conventions are gsplat's classic ones; `_raster_reference.rasterize_reference` states them as a
dense torch computation and is the ground truth the kernel is tested against.
"""

from __future__ import annotations

import torch
from torch import Tensor

try:
    from .. import _raster_cpu as _ext
except ImportError as err:  # pragma: no cover - depends on the install
    raise ImportError(
        "scenelab's compiled CPU rasterizer (fields._raster_cpu) is not built. Build it from the "
        "repository root with `pip install -e .` (needs a C++ compiler with OpenMP, e.g. "
        "`sudo apt-get install g++`), or `python setup.py build_ext --inplace` for a quick "
        f"in-place build. Original error: {err}"
    ) from err

__all__ = ["rasterize_cpu"]


def _f32(x: Tensor) -> Tensor:
    return x.detach().to(torch.float32).contiguous()


class _RasterizeCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d, conics, opacities, colors, depths, radii, width, height):
        colors32 = _f32(colors)
        arrays = [_f32(t).numpy() for t in (means2d, conics, opacities)]
        radii_np = radii.detach().to(torch.int32).contiguous().numpy()
        out, alpha, saved = _ext.forward(
            *arrays,
            colors32.numpy(),
            _f32(depths).numpy(),
            radii_np,
            width,
            height,
            torch.get_num_threads(),
        )
        # Splat records, depth-sorted tile lists, final transmittance and last contributor per
        # pixel: saved as tensors so autograd frees them after backward like any activation.
        ctx.save_for_backward(colors32, *(torch.from_numpy(a) for a in saved))
        ctx.size = (width, height)
        ctx.set_materialize_grads(False)  # an unused output's gradient arrives as None
        return torch.from_numpy(out), torch.from_numpy(alpha)

    @staticmethod
    def backward(ctx, grad_out, grad_alpha):
        colors, *saved = ctx.saved_tensors
        width, height = ctx.size
        if grad_out is None:
            grad_out = torch.zeros(height, width, colors.shape[1])
        grads = _ext.backward(
            colors.numpy(),
            *(t.numpy() for t in saved),
            _f32(grad_out).numpy(),
            None if grad_alpha is None else _f32(grad_alpha).numpy(),
            width,
            height,
            torch.get_num_threads(),
        )
        return (*(torch.from_numpy(g) for g in grads), None, None, None, None)


def rasterize_cpu(
    means2d: Tensor,  # [N,2] pixel coordinates; pixel (i,j) has its centre at (i+0.5, j+0.5)
    conics: Tensor,  # [N,3] (a, b, c) of the inverse 2D covariance [[a,b],[b,c]]
    opacities: Tensor,  # [N] activated opacity
    colors: Tensor,  # [N,C] any C >= 1 (RGB, depth, features concatenated by the caller)
    depths: Tensor,  # [N] view-space z: sort key, front (small) to back; no gradient
    radii: Tensor,  # [N,2] int half-extents (rx, ry) of the screen bbox; any <= 0 = culled
    width: int,
    height: int,
) -> tuple[Tensor, Tensor]:  # out [H,W,C] (no background), alpha [H,W,1] = 1 - T_final
    """Alpha-composite 2D Gaussians front to back over 16x16 tiles on the CPU (multi-threaded).

    Per pixel, in depth order over the Gaussians listed in its tile:
    sigma = 0.5*(a*dx^2 + c*dy^2) + b*dx*dy with dx = mean_x - px;
    alpha = min(0.999, opacity*exp(-sigma)), skipped if sigma < 0 or alpha < 1/255; the pixel stops
    before the first Gaussian that would take T to <= 1e-4. Differentiable w.r.t. means2d, conics,
    opacities and colors. Computes in float32 (float64 input is downcast; gradients flow back).
    """
    n = means2d.shape[0] if means2d.dim() == 2 else -1
    if means2d.shape != (n, 2):
        raise ValueError(f"means2d must be [N,2], got {tuple(means2d.shape)}")
    for name, t, shape in (
        ("conics", conics, (n, 3)),
        ("opacities", opacities, (n,)),
        ("depths", depths, (n,)),
        ("radii", radii, (n, 2)),
    ):
        if t.shape != shape:
            raise ValueError(f"{name} must be {list(shape)} with N={n}, got {tuple(t.shape)}")
    if colors.dim() != 2 or colors.shape[0] != n or colors.shape[1] < 1:
        raise ValueError(f"colors must be [N,C] with N={n}, C >= 1, got {tuple(colors.shape)}")
    if int(width) <= 0 or int(height) <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    for name, t in (
        ("means2d", means2d),
        ("conics", conics),
        ("opacities", opacities),
        ("colors", colors),
        ("depths", depths),
        ("radii", radii),
    ):
        if t.device.type != "cpu":
            raise ValueError(f"rasterize_cpu needs CPU tensors; {name} is on {t.device}")
    means2d, conics, opacities, colors = (
        t if t.dtype == torch.float32 else t.to(torch.float32)
        for t in (means2d, conics, opacities, colors)
    )
    return _RasterizeCPU.apply(
        means2d, conics, opacities, colors, depths.detach(), radii.detach(), int(width), int(height)
    )
