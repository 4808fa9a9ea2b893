"""Level of detail for the browser: which splats a budget of M (of N) should send, from a camera.

Each splat's screen-space contribution is its opacity times its projected area in pixels,
`o · π (f·r / z)²`, capped at the image area, with `r = sqrt(s₁ s₂)` the geometric mean of its
two largest axes (the disc a flat splat shows face-on). Splats outside the view frustum (with a
margin) or behind the camera still count at `OUTSIDE_WEIGHT` of that (with their distance for
depth), so turning the camera shows a coarse scene until the view is refreshed, never a void.

The budget is spent by priority sampling (Duffield, Lund & Thorup 2007): splat i gets priority
`c_i / u_i` with `u_i` in (0,1] a hash of its position (stable across views and edits, so a
re-chosen sample does not flicker), and the M highest priorities are kept. Splats that dominate
the picture (near, large, opaque) are always kept; the rest are kept with probability about
proportional to their contribution, so a distant floor is thinned evenly instead of vanishing
(plain top-M keeps either all or none of a uniform surface). With τ the (M+1)-th priority, the
unbiased estimate of a kept splat's contribution is max(c_i, τ): widening its covariance by
max(1, τ / c_i) (capped at `MAX_WIDEN`) keeps the covered area of the picture about the same.

The per-splat terms (centres, opacity × r², the hash) are computed once per scene state
(`SplatSizes`); a selection for a camera is a few vector passes plus one `argpartition` over N.

`BudgetController` sizes one browser's budget from its measured render round trips.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from fields import Camera, GaussianScene

OUTSIDE_WEIGHT = 0.05  # contribution weight of splats out of the current view
FRUSTUM_MARGIN = 1.25  # the view frustum, widened by this factor, counts as "in view"
MAX_WIDEN = 32.0  # at most this factor on a kept splat's covariance (x5.7 its radius)


@dataclass
class SplatSizes:
    """Per-splat terms of the contribution that do not depend on the camera."""

    centers: np.ndarray  # [N,3] float32, world
    weight: np.ndarray  # [N] float32: opacity · r² (world units²)
    u: np.ndarray  # [N] float32 in (0,1]: the priority-sampling draw (a hash of the centre)


def lod_priority(centers: np.ndarray) -> np.ndarray:  # [N,3] float32 -> [N] uint32
    """A pseudo-random rank per Gaussian from a hash of its position bits: stable when other
    Gaussians are deleted, added or reordered, so a budgeted view does not flicker on edits."""
    bits = np.ascontiguousarray(centers, dtype=np.float32).view(np.uint32)
    h = (
        bits[:, 0] * np.uint32(73856093)
        ^ bits[:, 1] * np.uint32(19349663)
        ^ bits[:, 2] * np.uint32(83492791)
    )
    h ^= h >> np.uint32(15)
    h *= np.uint32(0x2C1B3C6D)
    h ^= h >> np.uint32(12)
    return h


def splat_sizes(scene: GaussianScene) -> SplatSizes:
    with torch.no_grad():
        centers = scene.means.detach().cpu().float().contiguous().numpy()
        s = scene.scales.detach().cpu().float()  # log scales
        r2 = torch.exp(s.sum(-1) - s.amin(-1))  # s₁ s₂ of the two largest axes
        o = torch.sigmoid(scene.opacities.detach().cpu().float())
        weight = (o * r2).numpy().astype(np.float32, copy=False)
    u = (lod_priority(centers).astype(np.float32) + np.float32(0.5)) * np.float32(2.0**-32)
    return SplatSizes(centers, weight, np.minimum(u, np.float32(1.0)))


def contribution(
    sizes: SplatSizes,
    camera: Camera,
    rows: np.ndarray | None = None,  # [M] int: only these splats (default: all)
) -> np.ndarray:  # [M] float32 px² (opacity-weighted)
    """Screen-space contribution of each splat seen through `camera` (module docstring)."""
    c = sizes.centers if rows is None else sizes.centers[rows]
    w = sizes.weight if rows is None else sizes.weight[rows]
    V = camera.viewmat.detach().cpu().double().numpy()
    R, t = V[:3, :3].astype(np.float32), V[:3, 3].astype(np.float32)
    # Camera-frame coordinates as three contiguous rows (OpenCV: z forward); in-place passes
    # keep this at ~20 vector passes over M floats.
    x, y, z = R @ c.T + t[:, None]  # [3,M]
    fx, fy = float(camera.fx), float(camera.fy)
    half_w = np.float32(0.5 * camera.width / fx * FRUSTUM_MARGIN)  # tan of the half angles
    half_h = np.float32(0.5 * camera.height / fy * FRUSTUM_MARGIN)
    inside = z > 1e-6
    tmp = np.abs(x)
    inside &= tmp <= half_w * z
    np.abs(y, out=tmp)
    inside &= tmp <= half_h * z
    # Squared depth: z² in view, the squared distance outside it.
    d2 = z * z
    np.multiply(x, x, out=tmp)
    tmp += y * y
    tmp *= ~inside
    d2 += tmp
    np.maximum(d2, np.float32(1e-12), out=d2)
    out = np.float32(math.pi * fx * fy) * w
    out /= d2
    np.minimum(out, np.float32(camera.width * camera.height), out=out)
    out *= np.where(inside, np.float32(1.0), np.float32(OUTSIDE_WEIGHT))
    return out


def select(
    score: np.ndarray,  # [M] float, > 0
    u: np.ndarray,  # [M] float in (0,1]: each splat's draw
    budget: int,
) -> tuple[np.ndarray, np.ndarray]:  # [K] int64 indices (ascending), [K] float32 widening
    """Priority sampling of `budget` splats (module docstring): the indices kept, in scene
    order, and the covariance factor of each, max(1, τ / score) capped at `MAX_WIDEN`."""
    m = score.shape[0]
    if budget >= m:
        return np.arange(m), np.ones(m, np.float32)
    if budget <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, np.float32)
    prio = score / u
    part = np.argpartition(prio, m - budget - 1)
    tau = float(prio[part[m - budget - 1]])  # the largest priority left out
    kept = np.sort(part[m - budget :])
    factor = np.clip(np.float32(tau) / np.maximum(score[kept], 1e-30), 1.0, MAX_WIDEN)
    return kept, factor.astype(np.float32, copy=False)


# ---------------------------------------------------------------------- budget per browser
@dataclass
class BudgetController:
    """One browser's splat budget from its measured render round trips.

    A probe renders a small image in the browser with `count` splats loaded and takes `seconds`;
    the render cost grows about linearly with the splats (vertex work and sorting dominate a
    small image), so the count that would take `target_s` is `count · target_s / seconds`. Steps
    up are damped (at most ×`max_step` a probe) so one fast probe cannot flood a slow browser;
    steps down are taken at once; the budget never drops below `floor` (the coarse sample, whose
    probe is dominated by the round trip's fixed cost and says little)."""

    floor: int
    target_s: float = 0.5
    max_step: float = 8.0
    budget: int | None = None  # None: unknown yet

    def update(self, seconds: float, count: int, total: int) -> int | None:
        """Feed one probe; returns the new budget (None: every one of the `total` splats)."""
        count = max(1, int(count))
        proposed = count * self.target_s / max(float(seconds), 1e-3)
        old = float(self.budget if self.budget is not None else count)
        # Up by at most ×max_step a probe; down at once (a browser that is too slow now stays
        # too slow until it gets fewer splats).
        proposed = min(proposed, old * self.max_step)
        new = int(max(self.floor, min(proposed, total)))
        self.budget = new
        return None if new >= total else new
