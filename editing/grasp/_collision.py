"""Collision of gripper boxes with the scene: the support as a plane, everything else as points.

Only Gaussians near the target matter: the scene is cropped to the target's bounds grown by the
gripper's reach, thinned to one point per voxel (a surface cannot slip through a box thicker
than two voxels), and indexed once with a KD-tree. A box query splits each box into near-cubic
pieces, gathers points within each piece's circumscribed sphere, and measures their exact
distance to the box in its own frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ._surface import _flatten

if TYPE_CHECKING:
    from scipy.spatial import cKDTree


@dataclass(frozen=True)
class SupportPlane:
    """The surface the target rests on: points p with p·up < height lie below it."""

    up: np.ndarray  # [3] unit
    height: float
    estimated: bool  # False when given by a support mask


def estimate_support(
    points: np.ndarray,  # [K,3] non-target scene points near the target
    target_points: np.ndarray,  # [M,3]
    up: np.ndarray,  # [3] unit
    support: np.ndarray | None = None,  # [K] bool: these points are the support
) -> SupportPlane:
    """The plane under the target: the median height of support points just under the target's
    lowest point (within 2 cm below to 1 cm above); the lowest point itself when none are."""
    h = points @ up
    h0 = float(np.min(target_points @ up))
    band = (h >= h0 - 0.02) & (h <= h0 + 0.01)
    lo, hi = _footprint(target_points, up)
    flat = points - np.outer(h, up)
    near = band & np.all((flat >= lo - 0.02) & (flat <= hi + 0.02), axis=-1)
    if support is not None:
        near &= support
    if int(near.sum()) >= 10:
        return SupportPlane(up, float(np.median(h[near])), support is None)
    return SupportPlane(up, h0, True)


def _footprint(points: np.ndarray, up: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    flat = points - np.outer(points @ up, up)
    return flat.min(0), flat.max(0)


def lowest_height(
    R: np.ndarray,  # [C,3,3] gripper rotations (columns x, y, z in world)
    o: np.ndarray,  # [C,3] gripper origins
    lo: np.ndarray,  # [C,3] box corner in the gripper frame
    hi: np.ndarray,  # [C,3]
    up: np.ndarray,  # [3]
) -> np.ndarray:
    """[C] lowest height (along `up`) of each box's corners."""
    centre = 0.5 * (lo + hi)
    half = 0.5 * (hi - lo)
    up_local = np.einsum("cji,j->ci", R, up)  # up in each gripper frame
    c_world = o + np.einsum("cij,cj->ci", R, centre)
    return c_world @ up - np.sum(half * np.abs(up_local), axis=-1)


def _pieces(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split boxes [C,3] into a common grid of near-cubic pieces: centres [C,Q,3] (box frame),
    half-diagonals [C]."""
    size = np.max(hi - lo, axis=0)  # [3] over all candidates
    side = max(float(np.median(size)), 1e-6)
    n = np.maximum(1, np.round(size / side)).astype(int)
    grid = np.stack(np.meshgrid(*[(np.arange(k) + 0.5) / k for k in n], indexing="ij"), -1).reshape(
        -1, 3
    )  # [Q,3] fractions
    centres = lo[:, None, :] + grid[None] * (hi - lo)[:, None, :]
    radius = 0.5 * np.linalg.norm((hi - lo) / n, axis=-1)
    return centres, radius


def box_distance(
    tree: cKDTree | None,
    points: np.ndarray,  # [K,3] the tree's points
    R: np.ndarray,  # [C,3,3]
    o: np.ndarray,  # [C,3]
    lo: np.ndarray,  # [C,3] box in the gripper frame
    hi: np.ndarray,  # [C,3]
    pad: float = 0.0,
) -> np.ndarray:
    """[C] distance from each box to the nearest point (0 inside); inf when none is within
    `pad` of the box."""
    c = len(o)
    out = np.full(c, np.inf)
    if tree is None or c == 0 or len(points) == 0:
        return out
    centres, radius = _pieces(lo, hi)
    q = centres.shape[1]
    world = o[:, None, :] + np.einsum("cij,cqj->cqi", R, centres)
    r = np.repeat(radius, q) + pad
    owner, idx = _flatten(tree.query_ball_point(world.reshape(-1, 3), r))
    if len(owner) == 0:
        return out
    owner //= q
    local = np.einsum("pji,pj->pi", R[owner], points[idx] - o[owner])
    gap = np.maximum(np.maximum(lo[owner] - local, local - hi[owner]), 0.0)
    d = np.linalg.norm(gap, axis=-1)
    np.minimum.at(out, owner, d)
    out[out > pad] = np.inf
    return out
