"""Projection of 3D Gaussians to screen-space splats in torch (gsplat "classic" EWA semantics).

Per Gaussian: camera-space mean `viewmat @ [mean, 1]`; covariance `W R S S R^T W^T`; perspective
Jacobian at x/z, y/z clamped to the image plus 30% of tan(fov/2) (gsplat `persp_proj`);
`cov2d = J cov_c J^T + eps2d I`; conic = inverse of cov2d; an opacity-aware bounding box
`ceil(min(3.33, sqrt(2 ln(255 o))) * sqrt(diag(cov2d)))` that holds every pixel with alpha >= 1/255;
rgb from SH along (mean - camera centre) in the world frame. Culled (radii 0): z outside
[near, far], det(cov2d) <= 0, opacity < 1/255, or a bounding box fully outside the image.

Why it looks the way it does (it runs per frame on up to ~10^6 Gaussians on a couple of cores):
- Closed forms instead of [N,3,3] chains: with the 10 products p = q_i q_j of the unnormalised
  quaternion, [vec(|q|^2 W R(q)), |q|^2] = G_W p is one [10,10] x [10,n] matmul, and only the 2x3
  block B = J W R S is formed: cov2d = B B^T + eps2d I.
- Rows as [k,n] ("structure of arrays"): elementwise ops then run over contiguous memory; ops on
  [n,3] or [n,2,3] layouts with tiny inner dimensions are several times slower on CPU.
- Chunks of `CHUNK` Gaussians inside a custom autograd Function: intermediates stay small (cache-
  and allocator-friendly: a fresh 32 MB tensor costs more in page faults than the arithmetic),
  only the inputs are kept for backward, and backward recomputes each chunk under autograd
  (checkpointing), so the gradient is autograd's, not a hand derivation.
- A cheap conservative visibility test first; when it removes >10% of the Gaussians only the
  rest is projected, read by index chunk by chunk (no full-size copies).
`_reference.py` has the plain per-Gaussian-matrix version that the tests compare against.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .._sh import sh_basis, sh_degree_from_k
from ..scene import SH_C0

ALPHA_MIN = 1.0 / 255.0  # alpha below this is skipped by the rasterizer (gsplat ALPHA_THRESHOLD)
EXTEND_MAX = 3.33  # bounding-box half-extent in standard deviations, at most
FOV_CLAMP = 0.3  # the Jacobian is evaluated at x/z clamped to the image plus 30% of tan(fov/2)

CHUNK = 1 << 16  # Gaussians per chunk: intermediates of a few MB
# Compact to the Gaussians that may be visible when fewer than this fraction survive the test.
COMPACT_BELOW = 0.9
# logit(1/255) less a margin, so float rounding in sigmoid never culls a visible Gaussian
_LOGIT_ALPHA_MIN = math.log(ALPHA_MIN / (1 - ALPHA_MIN)) - 1e-3

# The 10 distinct products q_i q_j of a wxyz quaternion: ww xx yy zz wx wy wz xy xz yz.
_PAIRS = ((0, 0), (1, 1), (2, 2), (3, 3), (0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))


@dataclass(frozen=True, eq=False)
class Splats:
    """Screen-space splats, the rasterizer's input. Rows are the scene's Gaussians, or the subset
    `index` of them when the projection skipped Gaussians that cannot be visible."""

    means2d: Tensor  # [M,2] pixel coordinates (pixel (i,j) centre at (i+0.5, j+0.5))
    conics: Tensor  # [M,3] (a, b, c) of the inverse 2D covariance [[a, b], [b, c]]
    opacities: Tensor  # [M] activated
    colors: Tensor  # [M,D] rgb(3), camera z(1), features(C)
    depths: Tensor  # [M] camera z, the sort key (no grad)
    radii: Tensor  # [M,2] int32 bounding-box half-extents in pixels; (0, 0) = culled
    index: Tensor | None  # [M] int64 rows of the scene; None when M == N (identity)


@dataclass(frozen=True)
class Intrinsics:
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @property
    def lims(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """((lim_x_neg, lim_y_neg), (lim_x_pos, lim_y_pos)) of the clamped x/z, y/z (gsplat)."""
        tan_x = 0.5 * self.width / self.fx
        tan_y = 0.5 * self.height / self.fy
        neg = (self.cx / self.fx + FOV_CLAMP * tan_x, self.cy / self.fy + FOV_CLAMP * tan_y)
        pos = (
            (self.width - self.cx) / self.fx + FOV_CLAMP * tan_x,
            (self.height - self.cy) / self.fy + FOV_CLAMP * tan_y,
        )
        return neg, pos


# ---------------------------------------------------------------------- per-view constants
@functools.cache
def _products_to_rotmat() -> Tensor:
    """[10,10] G: G @ p = [vec(|q|^2 R(q)) (row-major), |q|^2] for the products p (_PAIRS)."""
    ww, xx, yy, zz, wx, wy, wz, xy, xz, yz = range(10)
    rows = [
        {ww: 1, xx: 1, yy: -1, zz: -1},
        {xy: 2, wz: -2},
        {xz: 2, wy: 2},
        {xy: 2, wz: 2},
        {ww: 1, xx: -1, yy: 1, zz: -1},
        {yz: 2, wx: -2},
        {xz: 2, wy: -2},
        {yz: 2, wx: 2},
        {ww: 1, xx: -1, yy: -1, zz: 1},
        {ww: 1, xx: 1, yy: 1, zz: 1},
    ]
    G = torch.zeros(10, 10, dtype=torch.float64)
    for r, terms in enumerate(rows):
        for col, v in terms.items():
            G[r, col] = v
    return G


@dataclass(frozen=True, eq=False)
class _View:
    """Everything per frame that the per-chunk math needs, as tensors on the scene's device."""

    W: Tensor  # [3,3]
    t: Tensor  # [3,1]
    campos: Tensor  # [3]
    rot_map: Tensor  # [10,10] G_W: products -> [vec(|q|^2 W R), |q|^2]
    f: Tensor  # [2,1] fx, fy
    c: Tensor  # [2,1] cx, cy
    lim_neg: Tensor  # [2,1]
    lim_pos: Tensor  # [2,1]
    intr: Intrinsics
    near: float
    far: float
    eps2d: float
    degree: int

    @staticmethod
    def make(
        viewmat: Tensor,
        intr: Intrinsics,
        campos: Tensor | None,
        near: float,
        far: float,
        eps2d: float,
        degree: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> _View:
        V = viewmat.detach().to(torch.float64).cpu()
        W64 = V[:3, :3].contiguous()
        if campos is None:
            campos = torch.linalg.inv(V)[:3, 3]
        # vec(W M) = kron(W, I3) vec(M) for row-major vec; |q|^2 passes through.
        L = torch.block_diag(
            torch.kron(W64, torch.eye(3, dtype=torch.float64)),
            torch.ones(1, 1, dtype=torch.float64),
        )
        (lxn, lyn), (lxp, lyp) = intr.lims

        def col(a: float, b: float) -> Tensor:
            return torch.tensor([[a], [b]], dtype=dtype, device=device)

        return _View(
            W=W64.to(dtype=dtype, device=device),
            t=V[:3, 3:4].to(dtype=dtype, device=device),
            campos=campos.detach().to(dtype=dtype, device=device),
            rot_map=(L @ _products_to_rotmat()).to(dtype=dtype, device=device),
            f=col(intr.fx, intr.fy),
            c=col(intr.cx, intr.cy),
            lim_neg=col(-lxn, -lyn),
            lim_pos=col(lxp, lyp),
            intr=intr,
            near=near,
            far=far,
            eps2d=eps2d,
            degree=degree,
        )


# ---------------------------------------------------------------------- per-chunk math
@functools.cache
def _monomial_plan(degree: int) -> tuple[tuple[tuple[int, int], ...], Tensor]:
    """The monomials of (x, y, z) of orders 1..degree, each as (earlier monomial, variable) with
    -1 for the constant, and the [1+m,k] matrix that maps [1, monomials] to `fields._sh.sh_basis`
    (fitted in float64 on generic points: exact, as each basis function is such a polynomial; so
    the constants live in `_sh` only)."""
    exps: list[tuple[int, ...]] = [()]
    for _ in range(degree):
        exps += sorted(
            {tuple(sorted((*e, v))) for e in exps if len(e) == len(exps[-1]) for v in range(3)}
        )
    where = {e: i - 1 for i, e in enumerate(exps)}  # the constant is -1
    plan = tuple((where[e[:-1]], e[-1]) for e in exps[1:])
    g = torch.Generator().manual_seed(0)
    pts = torch.randn(64, 3, generator=g, dtype=torch.float64)
    mono = torch.stack([pts[:, list(e)].prod(-1) for e in exps], -1)  # [64,1+m]
    target = sh_basis(degree, pts)  # [64,k]
    coef = torch.linalg.lstsq(mono, target).solution  # [1+m,k]
    assert float((mono @ coef - target).abs().max()) < 1e-9
    return plan, coef


def shade_sh(
    sh: Tensor,  # [n,K,3]
    means: Tensor,  # [n,3] world
    campos: Tensor,  # [3] camera centre, world
    degree: int,
) -> Tensor:
    """[n,3] colour clamp_min(SH(mean - campos) + 0.5, 0), gsplat's convention (`fields._sh`).

    Same values as `fields._sh.eval_sh`, computed CPU-friendly: directions as contiguous [n] rows,
    the basis [n,k] from the direction's monomials by one matmul (stacking k rows into an [n,k]
    layout directly costs more than the arithmetic), the K-contraction as one batched matmul."""
    if degree == 0:  # view-independent: no directions needed
        return torch.clamp_min(sh[:, 0, :] * SH_C0 + 0.5, 0.0)
    k = (degree + 1) ** 2
    plan, coef = _monomial_plan(degree)
    d = means.T - campos[:, None]  # [3,n]
    d = d / torch.sqrt((d * d).sum(0)).clamp_min(1e-12)
    xyz = d.unbind(0)
    mono: list[Tensor] = []
    for src, var in plan:
        mono.append(xyz[var] if src < 0 else mono[src] * xyz[var])
    coef = coef.to(dtype=d.dtype, device=d.device)
    basis = torch.addmm(coef[0], torch.stack(mono).T, coef[1:])  # [n,k]
    return torch.clamp_min(_ShContract.apply(basis, sh[:, :k, :]) + 0.5, 0.0)


class _ShContract(torch.autograd.Function):
    """rgb[n,c] = sum_k basis[n,k] sh[n,k,c]. torch's bmm backward for these [1,k]x[k,3] products
    is ~4x slower than the broadcast products used here."""

    @staticmethod
    def forward(ctx: Any, basis: Tensor, sh: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(basis, sh)
        return torch.bmm(basis[:, None, :], sh).reshape(-1, 3)

    @staticmethod
    def backward(ctx: Any, g: Tensor):  # type: ignore[override]
        basis, sh = ctx.saved_tensors
        g_basis = g_sh = None
        if ctx.needs_input_grad[0]:
            g_basis = sh[:, :, 0] * g[:, 0:1]
            g_basis = torch.addcmul(g_basis, sh[:, :, 1], g[:, 1:2])
            g_basis = torch.addcmul(g_basis, sh[:, :, 2], g[:, 2:3])
        if ctx.needs_input_grad[1]:
            g_sh = basis[:, :, None] * g[:, None, :]
        return g_basis, g_sh


def _rows(
    v: _View, means: Tensor, quats: Tensor, scales: Tensor, sh: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Differentiable projection of one chunk of n Gaussians.

    Returns means2d [2,n], conics [n,3], rgb [n,3], camera z [n], and without gradients
    cov_ac [2,n] (diagonal of cov2d) and ok [n] (z in range and det > 0)."""
    # mean: camera frame and pixel position
    mc = torch.addmm(v.t, v.W, means.T)  # [3,n]
    z = mc[2]
    with torch.no_grad():
        z_ok = (z >= v.near) & (z <= v.far)
        all_z_ok = bool(z_ok.all())
    # Behind-camera rows would make inf/nan that poison gradients through 0 * inf: give them z=1.
    z_safe = z if all_z_ok else torch.where(z_ok, z, 1.0)
    rz = 1.0 / z_safe
    xy = mc[:2] * rz  # [2,n] normalised image coordinates
    means2d = torch.addcmul(v.c, xy, v.f)
    uv = torch.clamp(xy, v.lim_neg, v.lim_pos)  # tx/z, ty/z of gsplat's Jacobian

    # covariance: B = J (W R) S, rows f/z (A_r - uv_r A_2); cov2d = B B^T + eps2d I
    q = quats.T.unbind(0)  # w, x, y, z rows
    AN = v.rot_map @ torch.stack([q[i] * q[j] for i, j in _PAIRS])  # [10,n]
    A = AN[:9].reshape(3, 3, -1)  # [row, col, n] of |q|^2 W R
    s = torch.exp(scales.T) / AN[9]  # [3,n]; dividing by |q|^2 normalises the rotation
    Bm = (A[:2] - uv[:, None, :] * A[2:3]) * (s[None] * (v.f * rz)[:, None, :])  # [2,3,n]
    cov_ac = (Bm * Bm).sum(1) + v.eps2d  # [2,n]
    cov_b = (Bm[0] * Bm[1]).sum(0)  # [n]
    det = cov_ac[0] * cov_ac[1] - cov_b * cov_b
    with torch.no_grad():
        det_ok = det > 0
        all_det_ok = bool(det_ok.all())
    rdet = 1.0 / (det if all_det_ok else torch.where(det_ok, det, 1.0))
    conics = torch.stack([cov_ac[1] * rdet, -cov_b * rdet, cov_ac[0] * rdet], dim=1)

    rgb = shade_sh(sh, means, v.campos, v.degree)
    return means2d, conics, rgb, z, cov_ac.detach(), z_ok & det_ok


@torch.no_grad()
def _radii(means2d: Tensor, cov_ac: Tensor, opac: Tensor, ok: Tensor, intr: Intrinsics) -> Tensor:
    """[n,2] int32 opacity-aware bounding-box half-extents, 0 where culled; inputs are [2,n]/[n]."""
    # alpha = o exp(-sigma) >= 1/255  <=>  sigma <= ln(255 o): the box of that ellipse.
    extend = torch.sqrt(2.0 * torch.log(opac * 255.0).clamp_min(0.0)).clamp_max(EXTEND_MAX)
    r = torch.ceil(extend * cov_ac.sqrt())  # [2,n]
    lo, hi = means2d - r, means2d + r
    keep = ok & (opac >= ALPHA_MIN) & ((r[0] > 0) | (r[1] > 0))
    keep &= (hi[0] > 0) & (hi[1] > 0) & (lo[0] < intr.width) & (lo[1] < intr.height)
    return (r * keep).T.to(torch.int32)


def _chunks(m: int, index: Tensor | None):
    """(start, end, rows) per chunk; rows index the full-size inputs."""
    for start in range(0, m, CHUNK):
        end = min(start + CHUNK, m)
        yield start, end, (slice(start, end) if index is None else index[start:end])


class _Project(torch.autograd.Function):
    """means, quats, scales, sh (rows `index` of them, or all) -> means2d, conics, rgbz, plus
    non-differentiable depths and radii. Backward recomputes each chunk under autograd."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        v: _View,
        index: Tensor | None,
        opac: Tensor,  # [M] activated, no grad (bounding boxes only)
        means: Tensor,
        quats: Tensor,
        scales: Tensor,
        sh: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        m = opac.shape[0]
        dt, dev = means.dtype, means.device
        means2d = torch.empty(m, 2, dtype=dt, device=dev)
        conics = torch.empty(m, 3, dtype=dt, device=dev)
        rgbz = torch.empty(m, 4, dtype=dt, device=dev)
        radii = torch.empty(m, 2, dtype=torch.int32, device=dev)
        for start, end, rows in _chunks(m, index):
            m2, con, rgb, z, cov_ac, ok = _rows(v, means[rows], quats[rows], scales[rows], sh[rows])
            means2d[start:end] = m2.T
            conics[start:end] = con
            rgbz[start:end, :3] = rgb
            rgbz[start:end, 3] = z
            radii[start:end] = _radii(m2, cov_ac, opac[start:end], ok, v.intr)
        depths = rgbz[:, 3].clone()
        ctx.save_for_backward(means, quats, scales, sh)
        ctx.view, ctx.index, ctx.m = v, index, m
        ctx.mark_non_differentiable(depths, radii)
        ctx.set_materialize_grads(False)
        return means2d, conics, rgbz, depths, radii

    @staticmethod
    def backward(ctx: Any, g_means2d, g_conics, g_rgbz, _g_depths, _g_radii):  # type: ignore[override]
        inputs = ctx.saved_tensors
        needs = ctx.needs_input_grad[3:]
        if not any(needs) or (g_means2d is None and g_conics is None and g_rgbz is None):
            return (None,) * 7
        grads = [
            torch.zeros_like(x) if need else None for x, need in zip(inputs, needs, strict=True)
        ]
        for start, end, rows in _chunks(ctx.m, ctx.index):
            with torch.enable_grad():
                leaves = [
                    x[rows].detach().requires_grad_(need)
                    for x, need in zip(inputs, needs, strict=True)
                ]
                m2, con, rgb, z, _, _ = _rows(ctx.view, *leaves)
                pairs = []
                if g_means2d is not None:
                    pairs.append((m2, g_means2d[start:end].T))
                if g_conics is not None:
                    pairs.append((con, g_conics[start:end]))
                if g_rgbz is not None:
                    pairs += [(rgb, g_rgbz[start:end, :3]), (z, g_rgbz[start:end, 3])]
                wanted = [x for x, need in zip(leaves, needs, strict=True) if need]
                got = torch.autograd.grad(
                    [o for o, _ in pairs], wanted, [g for _, g in pairs], allow_unused=True
                )
            it = iter(got)
            for full, need in zip(grads, needs, strict=True):
                if need:
                    g = next(it)
                    if g is not None:
                        full[rows] = g
        return (None, None, None, *grads)


def project(
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
    compact: bool = True,
) -> Splats:
    """Project Gaussians to splats; differentiable w.r.t. means, quats, scales, opacities, sh and
    features (not the camera).

    With `compact`, Gaussians that a cheap conservative test proves invisible are skipped when
    that removes more than 10% of them; `Splats.index` then names the rows that were kept."""
    n = means.shape[0]
    dtype, device = means.dtype, means.device
    v = _View.make(viewmat, intr, campos, near, far, eps2d, sh_degree, dtype, device)
    index = None
    if compact and n > 0 and _worth_testing(means, scales, opacities, v):
        maybe = _maybe_visible(means, scales, opacities, v)
        m = int(maybe.sum())
        if 0 < m < COMPACT_BELOW * n:
            index = torch.nonzero(maybe).squeeze(1)
    if index is not None:
        opacities = opacities[index]
        features = None if features is None else features[index]
    opac = torch.sigmoid(opacities)
    means2d, conics, rgbz, depths, radii = _Project.apply(
        v, index, opac.detach(), means, quats, scales, sh
    )
    colors = rgbz if features is None else torch.cat([rgbz, features.to(dtype)], dim=1)
    return Splats(means2d, conics, opac, colors, depths, radii, index)


def _worth_testing(means: Tensor, scales: Tensor, opacities: Tensor, v: _View) -> bool:
    """Whether a strided sample of ~4k Gaussians suggests the full visibility test may pay off
    (it costs ~8% of a projection). Only speed depends on this guess, never the result."""
    step = means.shape[0] // 4096
    if step < 2:
        return True
    sample = _maybe_visible(means[::step], scales[::step], opacities[::step], v)
    return float(sample.float().mean()) < COMPACT_BELOW + 0.05


@torch.no_grad()
def _maybe_visible(means: Tensor, scales: Tensor, opacities: Tensor, v: _View) -> Tensor:
    """[N] bool, False only for Gaussians that certainly get radii 0 (a superset test).

    Bounds the box half-extent by 3.33 sqrt(lambda_max(cov2d)) + 1 with
    sqrt(lambda_max) <= |J|_F s_max + sqrt(eps2d), |J|_F <= sqrt(fx^2 (1 + lx^2) + fy^2 (1 + ly^2)) / z
    (lx, ly the clamp limits of |x/z|, |y/z|)."""
    intr = v.intr
    (lxn, lyn), (lxp, lyp) = intr.lims
    lx, ly = max(lxn, lxp), max(lyn, lyp)
    jf = math.sqrt(intr.fx**2 * (1 + lx * lx) + intr.fy**2 * (1 + ly * ly))
    out = torch.empty(means.shape[0], dtype=torch.bool, device=means.device)
    for start in range(0, means.shape[0], CHUNK):
        sl = slice(start, start + CHUNK)
        mc = torch.addmm(v.t, v.W, means[sl].detach().T)  # [3,n]
        z = mc[2]
        ok = (z >= v.near) & (z <= v.far) & (opacities[sl].detach() >= _LOGIT_ALPHA_MIN)
        rz = torch.where(ok, z, 1.0).reciprocal_()
        s_max = scales[sl].detach().amax(1).exp_()
        r = (jf * rz).mul_(s_max).add_(math.sqrt(max(v.eps2d, 0.0))).mul_(EXTEND_MAX).add_(1.0)
        mx = (intr.fx * rz).mul_(mc[0]).add_(intr.cx)
        my = (intr.fy * rz).mul_(mc[1]).add_(intr.cy)
        ok &= (mx + r > 0) & (mx - r < intr.width) & (my + r > 0) & (my - r < intr.height)
        out[sl] = ok
    return out


def check_sh_degree(sh: Tensor, sh_degree: int | None) -> int:
    """The SH degree to shade with: the scene's by default, lower ones truncate."""
    have = sh_degree_from_k(sh.shape[1])
    if sh_degree is None:
        return have
    if not 0 <= sh_degree <= have:
        raise ValueError(f"sh_degree={sh_degree} is not in 0..{have} (the scene's SH degree)")
    return int(sh_degree)
