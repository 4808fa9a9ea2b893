"""Antipodal contact pairs for a parallel-jaw gripper, and approach frames around each pair.

From a seed point, a line along its normal (both senses) meets the target's other surfaces; each
hit whose normal lies in the friction cone proposes a centre. The fingers, closing from outside,
stop at the outermost target points on the line within the stroke around that centre: those are
the contacts. A contact needs free space just outside it (room for the finger), so points inside
a solid volume, or a surface that runs on past the stroke, never become contacts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ._surface import self_gap, tube_hits

if TYPE_CHECKING:
    from scipy.spatial import cKDTree


# Hits in the friction cone along one seed line that propose a centre (nearest first).
_MAX_HITS = 2


@dataclass(frozen=True, eq=False)
class ContactPairs:
    """Contact pairs on closing lines: contacts on the line, the surface points that stop the
    fingers (whose normals decide the friction test)."""

    p0: np.ndarray  # [P,3] first contact (on the line)
    p1: np.ndarray  # [P,3] second contact; p1 - p0 is along +axis
    axis: np.ndarray  # [P,3] unit closing direction
    i0: np.ndarray  # [P] index of the surface point at p0
    i1: np.ndarray  # [P] index of the surface point at p1

    def __len__(self) -> int:
        return len(self.p0)

    def take(self, sel: np.ndarray) -> ContactPairs:
        return ContactPairs(self.p0[sel], self.p1[sel], self.axis[sel], self.i0[sel], self.i1[sel])


def antipodal_pairs(
    tree: cKDTree,
    points: np.ndarray,  # [K,3] thinned target surface
    normals: np.ndarray,  # [K,3] unit (sign ignored)
    seeds: np.ndarray,  # [S] indices into points
    *,
    max_opening: float,
    cos_cone: float,
    radius: float,
    free_gap: float,
) -> ContactPairs:
    """Contact pairs along the seeds' normal lines whose distance is within `max_opening`, one
    per distinct pair of stopping surface points (friction not yet checked).

    A contact is the point of the line level with the outermost surface point in the tube: off
    the surface by at most `radius` times the tangent of the surface's tilt to the line."""
    s = len(seeds)
    none = ContactPairs(*(np.zeros((0, 3)),) * 3, *(np.zeros(0, np.int64),) * 2)
    if s == 0:
        return none
    half = 0.5 * max_opening
    reach = max_opening + half + free_gap  # farthest centre plus its window and free gap
    origins, axes = points[seeds], normals[seeds]  # [S,3]
    t_min = self_gap(radius)
    # One tube per seed line serves both senses and every window on it.
    owner, idx, t = tube_hits(tree, points, origins, axes, -reach, reach, radius)
    if len(owner) == 0:
        return none
    in_cone = np.abs(np.einsum("pk,pk->p", normals[idx], axes[owner])) >= cos_cone
    centres_s, centres_t = [], []
    for sense in (1.0, -1.0):
        rows = np.flatnonzero(in_cone & (sense * t > t_min))
        if sense < 0:
            rows = rows[::-1]  # owner descending, nearest first
        o = owner[rows]
        rank = np.arange(len(o)) - np.searchsorted(-o if sense < 0 else o, -o if sense < 0 else o)
        near = rows[rank < _MAX_HITS]
        centres_s.append(owner[near])
        centres_t.append(0.5 * t[near])
    cs = np.concatenate(centres_s)  # [H] seed of each proposed centre
    ct = np.concatenate(centres_t)  # [H] centre position along the seed line
    if len(cs) == 0:
        return none

    # The fingers close along the line around each centre: rows are sorted by (owner, t), so a
    # window is a run of rows found by binary search on a combined key.
    key = owner + (t + reach) / (4 * reach)  # owner + a fraction in (0, 1)
    lo_key = cs + (ct - half + reach) / (4 * reach)
    hi_key = cs + (ct + half + reach) / (4 * reach)
    first = np.searchsorted(key, lo_key, side="left")
    last = np.searchsorted(key, hi_key, side="right") - 1
    ok = last > first
    first, last = np.minimum(first, len(t) - 1), np.maximum(last, 0)
    width = t[last] - t[first]
    # Free space past each contact: the neighbouring row on the line is at least free_gap away.
    before = np.maximum(first - 1, 0)
    after = np.minimum(last + 1, len(t) - 1)
    blocked_lo = (first > 0) & (owner[before] == cs) & (t[first] - t[before] < free_gap)
    blocked_hi = (last + 1 < len(t)) & (owner[after] == cs) & (t[after] - t[last] < free_gap)
    ok &= ~blocked_lo & ~blocked_hi & (width > t_min) & (width <= max_opening)
    ok &= idx[first] != idx[last]
    if not ok.any():
        return none
    sel = np.flatnonzero(ok)
    _, unique = np.unique(
        np.stack([idx[first[sel]], idx[last[sel]]], -1), axis=0, return_index=True
    )
    sel = sel[np.sort(unique)]
    a = axes[cs[sel]]
    base = origins[cs[sel]]
    return ContactPairs(
        base + t[first[sel], None] * a,
        base + t[last[sel], None] * a,
        a,
        idx[first[sel]],
        idx[last[sel]],
    )


def approach_frames(
    closing: np.ndarray,  # [P,3] unit x axes
    up: np.ndarray,  # [3] unit
    n_approach: int,
) -> np.ndarray:
    """[P,A,3,3] rotations (columns x, y, z) with z swept around x in `n_approach` even steps,
    the first pointing down (against `up`) as far as the axis allows."""
    x = closing
    down = -up[None, :] - np.einsum("pk,k->p", x, -up)[:, None] * x
    norm = np.linalg.norm(down, axis=-1, keepdims=True)
    # The axis is vertical: any horizontal start will do.
    other = np.where(np.abs(x[:, :1]) < 0.9, [[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]])
    other = other - np.einsum("pk,pk->p", other, x)[:, None] * x
    e1 = np.where(norm > 1e-6, down / np.maximum(norm, 1e-12), other)
    e1 /= np.linalg.norm(e1, axis=-1, keepdims=True)
    e2 = np.cross(x, e1)
    theta = 2 * np.pi * np.arange(n_approach) / n_approach
    z = np.cos(theta)[None, :, None] * e1[:, None] + np.sin(theta)[None, :, None] * e2[:, None]
    xb = np.broadcast_to(x[:, None, :], z.shape)
    y = np.cross(z, xb)
    return np.stack([xb, y, z], axis=-1)


def first_surface_behind(
    tree: cKDTree,
    points: np.ndarray,  # [K,3]
    origins: np.ndarray,  # [C,3] grasp centres
    approach: np.ndarray,  # [C,3] unit z
    reach: float,
    radius: float,
) -> np.ndarray:
    """[C] index of the target point the gripper meets first on the line from its palm to the
    centre (the surface facing the gripper), -1 where the line misses the target."""
    owner, idx, _ = tube_hits(tree, points, origins, -approach, 0.0, reach, radius)
    out = np.full(len(origins), -1)
    if len(owner):
        last = np.flatnonzero(np.r_[owner[1:] != owner[:-1], True])  # largest t per query
        out[owner[last]] = idx[last]
    return out
