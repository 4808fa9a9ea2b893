"""Image losses and metrics (pure functions over [H,W,3] images in [0,1])."""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor

_C1 = 0.01**2
_C2 = 0.03**2


@functools.lru_cache(maxsize=8)
def _window_1d(size: int, sigma: float, dtype: torch.dtype, device: str) -> Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return (g / g.sum()).to(dtype=dtype, device=device)


def _blur(x: Tensor, g: Tensor) -> Tensor:
    """Separable Gaussian blur of x [C,H,W] with zero padding to the same size: the same
    numbers as one 2D conv with the outer-product window (zero rows blur to zero), at 2k
    instead of k^2 multiply-adds per pixel."""
    c, k = x.shape[0], g.numel()
    pad = k // 2
    y = F.conv2d(x[None], g.view(1, 1, 1, k).expand(c, 1, 1, k), padding=(0, pad), groups=c)
    return F.conv2d(y, g.view(1, 1, k, 1).expand(c, 1, k, 1), padding=(pad, 0), groups=c)[0]


def ssim_map(a: Tensor, b: Tensor, *, window: int = 11, sigma: float = 1.5) -> Tensor:
    """Per-pixel SSIM of a [H,W,3] and b [H,W,3] -> [H,W,3]: Gaussian window (11, 1.5), zero
    padding to the same size, C1 = 0.01^2, C2 = 0.03^2 (the 3DGS reference implementation)."""
    if a.shape != b.shape or a.dim() != 3 or a.shape[-1] != 3:
        raise ValueError(
            f"ssim needs two [H,W,3] images, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    g = _window_1d(window, sigma, a.dtype, str(a.device))
    x = a.permute(2, 0, 1)
    y = b.permute(2, 0, 1)
    m = _blur(torch.cat([x, y, x * x, y * y, x * y]), g).view(5, 3, *x.shape[1:])
    mu_a, mu_b, m_aa, m_bb, m_ab = m
    var_a = m_aa - mu_a * mu_a
    var_b = m_bb - mu_b * mu_b
    cov = m_ab - mu_a * mu_b
    num = (2 * mu_a * mu_b + _C1) * (2 * cov + _C2)
    den = (mu_a * mu_a + mu_b * mu_b + _C1) * (var_a + var_b + _C2)
    return (num / den).permute(1, 2, 0)


def ssim(a: Tensor, b: Tensor) -> Tensor:
    """Mean SSIM of two [H,W,3] images (scalar tensor, differentiable)."""
    return ssim_map(a, b).mean()


def photometric_loss(render: Tensor, target: Tensor, ssim_lambda: float) -> Tensor:
    """The 3DGS loss: (1 - lambda) L1 + lambda (1 - SSIM), images [H,W,3]."""
    l1 = (render - target).abs().mean()
    if ssim_lambda == 0.0:
        return l1
    return (1.0 - ssim_lambda) * l1 + ssim_lambda * (1.0 - ssim(render, target))


def psnr(a: Tensor, b: Tensor) -> float:
    """PSNR in dB of [H,W,3] images in [0,1] (a is clamped to [0,1] first); inf when equal."""
    mse = float(((a.clamp(0, 1) - b) ** 2).mean())
    return math.inf if mse == 0.0 else -10.0 * math.log10(mse)


def psnr_from_mse(mse: float) -> float:
    return math.inf if mse <= 0.0 else -10.0 * math.log10(mse)
