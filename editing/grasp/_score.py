"""Grasp quality: four components in [0, 1] and their weighted mix, plus diversity in the top-k.

- antipodality: how deep inside the friction cone the worse contact is (1: normal on the axis,
  0: on the cone's edge);
- approach: the approach direction against the outward normal of the surface the gripper meets
  first (GaussianGrasper's normal-guided selection), mixed with a preference for coming from
  above (away from the support);
- clearance: distance from the gripper to the nearest obstacle or the support, saturating;
- centring: how close the grasp centre is to the object's centre across the closing axis.
"""

from __future__ import annotations

import numpy as np

COMPONENTS = ("antipodality", "approach", "clearance", "centring")


def antipodality(cos0: np.ndarray, cos1: np.ndarray, cos_cone: float) -> np.ndarray:
    """[C] from |cos| of each contact normal to the closing axis."""
    worst = np.minimum(np.abs(cos0), np.abs(cos1))
    return np.clip((worst - cos_cone) / max(1.0 - cos_cone, 1e-9), 0.0, 1.0)


def approach_alignment(
    facing_normal: np.ndarray,  # [C,3] normal of the surface facing the gripper (any sign)
    has_facing: np.ndarray,  # [C] bool
    approach: np.ndarray,  # [C,3] unit z
    up: np.ndarray,  # [3]
) -> np.ndarray:
    """[C] half normal alignment (0.5 where the approach line misses the object), half
    'from above'."""
    align = np.where(has_facing, np.abs(np.einsum("ck,ck->c", facing_normal, approach)), 0.5)
    from_above = 0.5 * (1.0 - approach @ up)
    return 0.5 * align + 0.5 * from_above


def clearance(distance: np.ndarray, saturation: float) -> np.ndarray:
    """[C] distance to the nearest obstacle over `saturation`, clipped to [0, 1]."""
    return np.clip(distance / max(saturation, 1e-9), 0.0, 1.0)


def centring(
    centres: np.ndarray,  # [C,3]
    closing: np.ndarray,  # [C,3] unit
    object_centre: np.ndarray,  # [3]
    object_radius: float,
) -> np.ndarray:
    """[C] 1 at the object's centre (ignoring the offset along the closing axis), 0 at
    `object_radius` or beyond."""
    rel = centres - object_centre
    rel = rel - np.einsum("ck,ck->c", rel, closing)[:, None] * closing
    return 1.0 - np.clip(np.linalg.norm(rel, axis=-1) / max(object_radius, 1e-9), 0.0, 1.0)


def diverse_top_k(
    order: np.ndarray,  # [C] candidate indices, best first
    centres: np.ndarray,  # [C,3]
    R: np.ndarray,  # [C,3,3]
    k: int,
    min_distance: float,
    min_angle_deg: float,
) -> list[int]:
    """Greedy top-k that skips a candidate too close (centre within `min_distance` and both
    closing and approach axes within `min_angle_deg`) to one already taken."""
    cos_min = np.cos(np.radians(min_angle_deg))
    taken: list[int] = []
    for i in order:
        if len(taken) >= k:
            break
        if taken:
            t = np.asarray(taken)
            near = np.linalg.norm(centres[t] - centres[i], axis=-1) < min_distance
            same_x = np.abs(np.einsum("tk,k->t", R[t, :, 0], R[i, :, 0])) >= cos_min
            same_z = np.einsum("tk,k->t", R[t, :, 2], R[i, :, 2]) >= cos_min
            if np.any(near & same_x & same_z):
                continue
        taken.append(int(i))
    return taken
