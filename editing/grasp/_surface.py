"""Surface points and normals of a target from its Gaussians, and line ("tube") queries over them.

A well-fitted splat on a surface is flat: its shortest axis is the surface normal. Floaters (few
neighbours), transparent and oversized splats are dropped. Normals are oriented outward by
looking along both senses of the axis: the inward sense meets the object's other side (or the
other face of a thin wall) sooner than the outward sense meets anything. That holds on a mug's
handle and on both faces of a bowl's wall, where "away from the centroid" fails.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from fields import GaussianScene

from .._spatial import kdtree
from ..ops import check_mask

if TYPE_CHECKING:
    from scipy.spatial import cKDTree


# A splat with its largest std-dev above this many times the target's median is not a surface.
_HUGE = 8.0
# A point with fewer neighbours than this within `_ISOLATION` spacings is a floater.
_MIN_NEIGHBOURS, _ISOLATION = 3, 3.0


# Tube radius in sample spacings: wide enough that a line through a sampled surface meets a sample.
TUBE_RADIUS = 1.25


def self_gap(radius: float) -> float:
    """Distance along a normal below which tube hits are the splat's own surface patch."""
    return 0.3 * radius + 5e-4


@dataclass(frozen=True, eq=False)
class TargetSurface:
    """Surface samples of a target: every Gaussian, and a voxel-thinned subset for queries."""

    index: np.ndarray  # [M] scene indices of the target's Gaussians (file order)
    points: np.ndarray  # [M,3] float64 world
    normals: np.ndarray  # [M,3] unit, sign not yet meaningful
    keep: np.ndarray  # [M] bool: opaque, not huge, not a floater
    thinned: np.ndarray  # [K] indices into points: one kept point per voxel
    cell: float  # voxel side of `thinned` (metres)


def shortest_axes(quats: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """[M,3] unit world direction of each Gaussian's shortest axis (quats [M,4] wxyz, any norm;
    scales [M,3])."""
    q = quats / np.maximum(np.linalg.norm(quats, axis=-1, keepdims=True), 1e-12)
    w, x, y, z = q.T
    cols = np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y + w * z), 2 * (x * z - w * y)], -1),
            np.stack([2 * (x * y - w * z), 1 - 2 * (x * x + z * z), 2 * (y * z + w * x)], -1),
            np.stack([2 * (x * z + w * y), 2 * (y * z - w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        1,
    )  # [M,3 (axis),3]
    axes = cols[np.arange(len(q)), np.argmin(scales, axis=-1)]
    return axes / np.maximum(np.linalg.norm(axes, axis=-1, keepdims=True), 1e-12)


def target_surface(
    scene: GaussianScene, target: Tensor, *, min_opacity: float = 0.1, voxel: float = 0.003
) -> TargetSurface:
    """Points (means), unoriented normals (shortest axis), a keep mask and a thinned subset.

    Floaters are found on the thinned points (a voxel with fewer than `_MIN_NEIGHBOURS`
    occupied voxels within `_ISOLATION` voxels) and dropped with every point of their voxel."""
    mask = check_mask(scene, target).cpu()
    idx = torch.nonzero(mask).flatten().numpy()
    if len(idx) == 0:
        raise ValueError("the target is empty: nothing to grasp")
    pts = scene.means.detach().cpu().numpy()[idx].astype(np.float64)
    scales = scene.scales.detach().cpu().numpy()[idx]
    normals = shortest_axes(scene.quats.detach().cpu().numpy()[idx].astype(np.float64), scales)
    size = scales.max(-1)  # log std-dev
    logit = math.log(min_opacity / (1.0 - min_opacity)) if 0 < min_opacity < 1 else -np.inf
    opaque = scene.opacities.detach().cpu().numpy()[idx] >= logit
    keep = opaque & (size <= np.median(size) + np.log(_HUGE))
    hidden = scene.extras.get("hidden")
    if hidden is not None:
        keep &= ~hidden.cpu().numpy().astype(bool)[idx]
    if not keep.any():
        raise ValueError("the target has no opaque surface Gaussians (all transparent)")
    kept = np.flatnonzero(keep)
    cell = voxel
    first, inverse = voxel_groups(pts[kept], cell)
    if len(first) > 0.5 * len(kept):  # samples sparser than the voxel: thin at their spacing
        cell = max(voxel, _spacing(pts[kept]))
        first, inverse = voxel_groups(pts[kept], cell)
    if len(first) > _MIN_NEIGHBOURS:
        rep = pts[kept[first]]
        counts = kdtree(rep).query_ball_point(rep, _ISOLATION * cell, return_length=True)
        lonely = counts <= _MIN_NEIGHBOURS  # counts include the voxel itself
        keep[kept[lonely[inverse]]] = False
        first = first[~lonely]
    if not keep.any():
        raise ValueError("the target has no surface Gaussians (all floaters)")
    return TargetSurface(idx, pts, normals, keep, np.sort(kept[first]), cell)


def _spacing(points: np.ndarray) -> float:
    if len(points) < 2:
        return 1e-3
    sample = points[:: max(1, len(points) // 2000)]
    d, _ = kdtree(points).query(sample, k=2)
    return max(float(np.median(d[:, 1])), 1e-5)


def voxel_groups(points: np.ndarray, voxel: float) -> tuple[np.ndarray, np.ndarray]:
    """Occupied voxels of side `voxel`: (first [V] index of a point in each voxel, inverse [M]
    voxel of each point)."""
    keys = np.floor((points - points.min(0)) / voxel).astype(np.int64)
    dims = keys.max(0) + 1
    flat = (keys[:, 0] * dims[1] + keys[:, 1]) * dims[2] + keys[:, 2]
    _, first, inverse = np.unique(flat, return_index=True, return_inverse=True)
    return first, inverse


def voxel_thin(points: np.ndarray, voxel: float) -> np.ndarray:
    """Indices [K] (ascending) of one point per occupied voxel of side `voxel`."""
    if voxel <= 0 or len(points) == 0:
        return np.arange(len(points))
    return np.sort(voxel_groups(points, voxel)[0])


def _flatten(lists: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Object array of index lists -> (owner [P], index [P])."""
    lengths = np.fromiter(map(len, lists), dtype=np.int64, count=len(lists))
    flat = np.fromiter(itertools.chain.from_iterable(lists), dtype=np.int64, count=lengths.sum())
    return np.repeat(np.arange(len(lists)), lengths), flat


def tube_hits(
    tree: cKDTree,
    points: np.ndarray,  # [K,3] the tree's points
    origins: np.ndarray,  # [Q,3]
    dirs: np.ndarray,  # [Q,3] unit
    t0: float | np.ndarray,
    t1: float | np.ndarray,
    radius: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points within `radius` of the segments origin + t dir, t in [t0, t1].

    Returns (query [P], point [P], t [P]), one row per (query, point) pair, sorted by query then
    t. Balls of radius ~1.12 `radius` every `radius` along each segment cover the tube."""
    q = len(origins)
    t0 = np.broadcast_to(np.asarray(t0, np.float64), (q,))
    t1 = np.broadcast_to(np.asarray(t1, np.float64), (q,))
    n_steps = int(np.ceil(float(np.max(t1 - t0)) / radius)) + 1 if q else 0
    if q == 0 or n_steps <= 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0)
    s = np.linspace(0.0, 1.0, n_steps)
    ts = t0[:, None] + (t1 - t0)[:, None] * s[None, :]  # [Q,S]
    centres = origins[:, None, :] + ts[..., None] * dirs[:, None, :]
    step = float(np.max(t1 - t0)) / max(n_steps - 1, 1)
    ball = float(np.hypot(radius, 0.5 * step)) * 1.001
    owner, idx = _flatten(tree.query_ball_point(centres.reshape(-1, 3), ball))
    owner //= n_steps
    # One row per (query, point): balls overlap.
    key = np.unique(owner * len(points) + idx)
    owner, idx = key // len(points), key % len(points)
    rel = points[idx] - origins[owner]
    t = np.einsum("pk,pk->p", rel, dirs[owner])
    radial2 = np.einsum("pk,pk->p", rel, rel) - t * t
    ok = (radial2 <= radius * radius) & (t >= t0[owner]) & (t <= t1[owner])
    owner, idx, t = owner[ok], idx[ok], t[ok]
    order = np.lexsort((t, owner))
    return owner[order], idx[order], t[order]


def first_hit(n_queries: int, owner: np.ndarray, t: np.ndarray) -> np.ndarray:
    """[Q] smallest t per query from sorted `tube_hits` rows (inf where none)."""
    out = np.full(n_queries, np.inf)
    if len(owner):
        starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
        out[owner[starts]] = t[starts]
    return out


def orient_outward(
    points: np.ndarray,  # [M,3]
    normals: np.ndarray,  # [M,3] unit, any sign
    spacing: float,
    reach: float = 0.05,
) -> np.ndarray:
    """[M,3] normals flipped to point out of the solid the points bound (see the module doc)."""
    tree = kdtree(points)
    radius = TUBE_RADIUS * spacing
    t_min = self_gap(radius)
    m = len(points)
    o, _, t = tube_hits(tree, points, points, normals, t_min, reach, radius)
    ahead = first_hit(m, o, t)
    o, _, t = tube_hits(tree, points, points, -normals, t_min, reach, radius)
    behind = first_hit(m, o, t)
    flip = behind > ahead
    tie = ~np.isfinite(ahead) & ~np.isfinite(behind)
    away = np.einsum("mk,mk->m", normals, points - points.mean(0)) < 0
    flip = np.where(tie, away, flip)
    return np.where(flip[:, None], -normals, normals)


def surface_normals(
    scene: GaussianScene,
    target: Tensor,  # [N] bool
    *,
    min_opacity: float = 0.1,
    voxel: float = 0.003,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Estimated surface of the target's Gaussians: points [M,3] (the means, target order),
    outward unit normals [M,3] and keep [M] bool (False: transparent, oversized or a floater).

    Orientation is decided on a voxel-thinned subset (`voxel` metres) and carried to every point
    by its nearest oriented neighbour."""
    surf = target_surface(scene, target, min_opacity=min_opacity, voxel=voxel)
    sub = surf.thinned
    oriented = orient_outward(surf.points[sub], surf.normals[sub], surf.cell)
    _, nn = kdtree(surf.points[sub]).query(surf.points, k=1)
    sign = np.sign(np.einsum("mk,mk->m", surf.normals, oriented[nn]))
    normals = surf.normals * np.where(sign == 0, 1.0, sign)[:, None]
    return surf.points, normals, surf.keep
