"""Slow, dense torch rasterizer: the ground truth for `rasterize_cpu` (tests only).

Every pixel against every Gaussian in float64, differentiable by plain autograd. It states the
semantics the compiled kernel implements (gsplat's classic rasterizer): 16x16 tiles, a Gaussian is
seen only by the tiles its radii reach, stable front-to-back order by depth, alpha clamped to
0.999, contributions below 1/255 skipped, and a pixel stops before the Gaussian that would take
its transmittance to 1e-4 or less.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

TILE = 16
# The kernel's float32 constants, so both sides draw their thresholds at the same values.
MIN_ALPHA = float(torch.tensor(1 / 255, dtype=torch.float32))
MAX_ALPHA = float(torch.tensor(0.999, dtype=torch.float32))
MIN_T = float(torch.tensor(1e-4, dtype=torch.float32))


def rasterize_reference(
    means2d: Tensor,  # [N,2]
    conics: Tensor,  # [N,3]
    opacities: Tensor,  # [N]
    colors: Tensor,  # [N,C]
    depths: Tensor,  # [N]
    radii: Tensor,  # [N,2] int
    width: int,
    height: int,
) -> tuple[Tensor, Tensor]:  # out [H,W,C] float64, alpha [H,W,1] float64
    order = torch.sort(depths.detach().double(), stable=True).indices  # ties: index order
    means = means2d.double()[order]
    a, b, c = conics.double()[order].unbind(-1)
    opac = opacities.double()[order]
    col = colors.double()[order]
    rad = radii[order].long()

    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    px = xs.reshape(-1, 1).double() + 0.5  # [P,1] pixel centres
    py = ys.reshape(-1, 1).double() + 0.5

    # Tiles each Gaussian reaches (from its radii, not from its values).
    mx, my = means.detach().unbind(-1)
    rx, ry = rad.unbind(-1)
    tiles_x, tiles_y = math.ceil(width / TILE), math.ceil(height / TILE)
    tx0 = torch.floor((mx - rx) / TILE).clamp(0, tiles_x)
    tx1 = torch.ceil((mx + rx) / TILE).clamp(0, tiles_x)
    ty0 = torch.floor((my - ry) / TILE).clamp(0, tiles_y)
    ty1 = torch.ceil((my + ry) / TILE).clamp(0, tiles_y)
    ptx, pty = xs.reshape(-1, 1) // TILE, ys.reshape(-1, 1) // TILE
    in_tile = (rx > 0) & (ry > 0) & (ptx >= tx0) & (ptx < tx1) & (pty >= ty0) & (pty < ty1)

    dx = means[:, 0] - px  # [P,N]
    dy = means[:, 1] - py
    sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
    # sigma < 0 is skipped; zeroing it first keeps exp finite so masked gradients stay 0, not NaN.
    sigma_ok = sigma >= 0
    alpha = torch.clamp(opac * torch.exp(-torch.where(sigma_ok, sigma, 0.0)), max=MAX_ALPHA)
    valid = in_tile & sigma_ok & (alpha >= MIN_ALPHA)

    # Stop rule. T_incl(g) = prod of (1 - alpha) over valid Gaussians up to and including g; it
    # never increases, so the first valid g with T_incl <= MIN_T is where the pixel stops, and
    # "g contributes" is exactly "g is valid and T_incl(g) > MIN_T".
    t_incl = torch.cumprod(1 - torch.where(valid, alpha, 0.0).detach(), dim=1)
    contrib = valid & (t_incl > MIN_T)

    a_used = torch.where(contrib, alpha, 0.0)
    one_minus = 1 - a_used
    t_excl = torch.cumprod(torch.cat([torch.ones_like(one_minus[:, :1]), one_minus[:, :-1]], 1), 1)
    out = (a_used * t_excl) @ col  # [P,C]
    alpha_out = 1 - torch.prod(one_minus, dim=1, keepdim=True)
    return out.reshape(height, width, -1), alpha_out.reshape(height, width, 1)
