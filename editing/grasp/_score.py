"""Grasp quality: components in [0, 1], their weighted mix, and pose non-maximum suppression.

quality = thickness * sum_i w_i q_i / sum_i w_i over the components (weights: `QualityWeights`),

thickness = p + (1 - p) ramp(w; w_thin, w_full), ramp(v; a, b) = clip((v - a) / (b - a), 0, 1):
a pinch of a wall no thicker than `thin_width` keeps only the fraction p (`thin_penalty`) of
its quality. Such a pinch needs the splats to place both faces of the wall to within a
fraction of its thickness and leaves the object free to pivot about the wall; it is returned
only when nothing thicker is graspable. The components:

- antipodality: how deep inside the friction cone the worse contact normal lies,
  (min_k |n_k . x| - cos a) / (1 - cos a), a = atan(mu) (1: normal on the closing axis x);
- contact: the support under the pads: A = min over both fingers of the area of pad cells with a
  target surface point within `contact_tolerance` of the pad plane whose normal lies in the
  friction cone ("lies flat under the pad"); q = min(A / A_sat, 1);
- margin: ramp((w_max - w) / 2; 0, m): the free stroke each finger keeps beyond the object,
  1 from the gripper's `pregrasp_margin` m on (0 for an object as wide as the opening);
- stability: resistance to the object's weight about its centre of mass c (the solid centroid
  of the target's convex hull). Per unit weight, with g = -up, r = c - o (o the grasp centre),
  tau = r x g, a squeeze f times the weight per finger (`grip_force_ratio`), friction mu and
  contact patch radius a = sqrt(A / pi):
      rho = |g - (g.x)x| / (2 mu f)                  weight carried by friction at both pads
          + |tau . x| / ((4/3) mu f a)               twist about the closing axis (soft fingers)
          + |tau - (tau.x)x| / (f (mu w + 2 a))      tilt: friction couple across the width
                                                      plus the pressure shift inside the patches
      q = max(0, 1 - rho)     (a linear, conservative limit surface: q = 0 where it slips);
- clearance: distance from the gripper to the nearest obstacle or the support, saturating at
  `clearance_saturation` (room to approach);
- approach: the approach against the outward normal of the surface the gripper meets first
  (GaussianGrasper's normal-guided selection), mixed with a preference for coming from above;
- centring: how close the grasp centre is to the surface points' mean across the closing axis
  (the earlier ranking's proxy for stability; weight 0 by default).
"""

from __future__ import annotations

from dataclasses import astuple, dataclass, fields
from typing import TYPE_CHECKING

import numpy as np

from ._surface import _flatten

if TYPE_CHECKING:
    from scipy.spatial import cKDTree


@dataclass(frozen=True)
class QualityWeights:
    """Weights of the grasp quality's components (non-negative, not all zero; normalised)."""

    antipodality: float = 0.25
    """Depth of both contact normals inside the friction cone."""
    contact: float = 0.15
    """Area of surface lying flat under the finger pads."""
    margin: float = 0.15
    """Free stroke beyond the object's width on each side."""
    stability: float = 0.25
    """Resistance to the weight about the centre of mass (force, twist and tilt)."""
    clearance: float = 0.1
    """Free space around the gripper."""
    approach: float = 0.1
    """Approach along the facing surface's normal, from above."""
    centring: float = 0.0
    """Grasp centre near the surface points' mean (the earlier ranking's proxy)."""

    def __post_init__(self) -> None:
        values = astuple(self)
        if not all(np.isfinite(values)) or min(values) < 0 or sum(values) <= 0:
            raise ValueError(f"quality weights must be non-negative, not all zero: {values}")

    @classmethod
    def legacy(cls) -> QualityWeights:
        """The ranking before the physically motivated terms (antipodality, approach, clearance,
        centring): the benchmark's baseline."""
        return cls(
            antipodality=0.35, contact=0.0, margin=0.0, stability=0.0, clearance=0.2,
            approach=0.25, centring=0.2,
        )  # fmt: skip

    def as_dict(self) -> dict[str, float]:
        return {f.name: float(getattr(self, f.name)) for f in fields(self)}


COMPONENTS = tuple(f.name for f in fields(QualityWeights))


def _ramp(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.clip((x - lo) / max(hi - lo, 1e-12), 0.0, 1.0)


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


def margin(
    width: np.ndarray,  # [C] opening at contact
    max_opening: float,
    side_margin: float,
) -> np.ndarray:
    """[C] ramp(free stroke per side; 0, side_margin)."""
    return _ramp(0.5 * (max_opening - width), 0.0, side_margin)


def thickness(width: np.ndarray, thin: float, full: float, penalty: float) -> np.ndarray:
    """[C] the quality's factor for the pinched thickness: `penalty` at `thin` and below, 1 from
    `full` on."""
    return penalty + (1.0 - penalty) * _ramp(width, thin, full)


def pad_support(
    tree: cKDTree,
    points: np.ndarray,  # [K,3] thinned target surface
    normals: np.ndarray,  # [K,3] unit (sign ignored)
    R: np.ndarray,  # [C,3,3] gripper rotations (columns x closing, y, z approach)
    o: np.ndarray,  # [C,3] grasp centres
    width: np.ndarray,  # [C] opening at contact
    pad_y: float,  # half extent of a pad across the closing direction
    pad_z: tuple[float, float],  # pad extent along the approach, gripper frame
    tolerance: float,
    cos_cone: float,
    cell: float,
) -> np.ndarray:
    """[C,2] area (m^2) under the left (-x) and right (+x) finger pads: cells of side `cell` of
    the pad with a surface point within `tolerance` of the pad plane, normal in the cone."""
    c = len(o)
    out = np.zeros((c, 2))
    if c == 0:
        return out
    z0, z1 = pad_z
    zc, hz = 0.5 * (z0 + z1), 0.5 * (z1 - z0)
    ny = max(1, int(np.ceil(2 * pad_y / cell)))
    nz = max(1, int(np.ceil((z1 - z0) / cell)))
    radius = float(np.sqrt(tolerance**2 + pad_y**2 + hz**2)) * 1.001
    for side, sign in enumerate((-1.0, 1.0)):
        local_c = np.stack([sign * 0.5 * width, np.zeros(c), np.full(c, zc)], -1)  # [C,3]
        centre = o + np.einsum("cij,cj->ci", R, local_c)
        owner, idx = _flatten(tree.query_ball_point(centre, radius))
        if len(owner) == 0:
            continue
        local = np.einsum("pji,pj->pi", R[owner], points[idx] - o[owner])
        flat = np.abs(np.einsum("pk,pk->p", normals[idx], R[owner, :, 0])) >= cos_cone
        ok = (
            flat
            & (np.abs(local[:, 0] - sign * 0.5 * width[owner]) <= tolerance)
            & (np.abs(local[:, 1]) <= pad_y)
            & (local[:, 2] >= z0)
            & (local[:, 2] <= z1)
        )
        owner, local = owner[ok], local[ok]
        cy = np.clip(((local[:, 1] + pad_y) / cell).astype(np.int64), 0, ny - 1)
        cz = np.clip(((local[:, 2] - z0) / cell).astype(np.int64), 0, nz - 1)
        key = np.unique((owner * ny + cy) * nz + cz)
        out[:, side] = np.bincount(key // (ny * nz), minlength=c) * cell * cell
    return np.minimum(out, 2 * pad_y * (z1 - z0))


def centre_of_mass(points: np.ndarray) -> np.ndarray:
    """[3] centroid of the solid convex hull of `points` [K,3] (uniform density); the points'
    mean when they span no volume."""
    from scipy.spatial import ConvexHull, QhullError

    mean = points.mean(0)
    if len(points) < 4:
        return mean
    try:
        hull = ConvexHull(points)
    except QhullError:
        return mean
    ref = points[hull.vertices].mean(0)
    tri = points[hull.simplices] - ref  # [F,3,3]
    vol = np.abs(np.linalg.det(tri)) / 6.0  # [F] tetrahedra (ref, facet)
    if vol.sum() <= 0:
        return mean
    centroids = ref + tri.sum(1) / 4.0
    return (vol[:, None] * centroids).sum(0) / vol.sum()


def stability(
    centres: np.ndarray,  # [C,3] grasp centres
    closing: np.ndarray,  # [C,3] unit x
    width: np.ndarray,  # [C]
    patch_area: np.ndarray,  # [C] the smaller pad's contact area (m^2)
    com: np.ndarray,  # [3] the object's centre of mass
    up: np.ndarray,  # [3] unit
    friction: float,
    grip_force_ratio: float,
    min_patch: float,
) -> np.ndarray:
    """[C] max(0, 1 - rho): see the module docstring."""
    g = -np.asarray(up, np.float64)
    mu, f = friction, grip_force_ratio
    a = np.sqrt(np.maximum(patch_area, min_patch) / np.pi)
    g_x = closing @ g
    g_t = np.sqrt(np.maximum(1.0 - g_x**2, 0.0))
    tau = np.cross(com - centres, g)  # [C,3] per unit weight
    tau_x = np.einsum("ck,ck->c", tau, closing)
    tau_t = np.linalg.norm(tau - tau_x[:, None] * closing, axis=-1)
    rho = g_t / (2 * mu * f) + np.abs(tau_x) / (4.0 / 3.0 * mu * f * a)
    rho = rho + tau_t / (f * (mu * width + 2 * a))
    return np.clip(1.0 - rho, 0.0, 1.0)


def mix(components: dict[str, np.ndarray], weights: QualityWeights) -> np.ndarray:
    """[C] the weighted mean of the components."""
    w = weights.as_dict()
    total = sum(w.values())
    return sum(w[k] * components[k] for k in COMPONENTS) / total


def pose_nms(
    order: np.ndarray,  # [C] candidate indices, best first
    centres: np.ndarray,  # [C,3]
    R: np.ndarray,  # [C,3,3]
    k: int,
    max_distance: float,
    max_angle_deg: float,
) -> list[int]:
    """Greedy top-k that drops a candidate whose pose is a near-duplicate of one already taken:
    centres closer than `max_distance` and rotations within `max_angle_deg` of each other, the
    gripper's 180° flip about its approach axis (fingers swapped) counting as the same pose."""
    cos_max = np.cos(np.radians(max_angle_deg))
    taken: list[int] = []
    for i in order:
        if len(taken) >= k:
            break
        if taken:
            t = np.asarray(taken)
            near = np.linalg.norm(centres[t] - centres[i], axis=-1) < max_distance
            d = np.einsum("tkj,kj->tj", R[t], R[i])  # [T,3] column dots (x, y, z)
            # trace(R_t^T R_i) and that of the flip diag(-1, -1, 1): the closer of the two.
            trace = d[:, 2] + np.abs(d[:, 0] + d[:, 1])
            if np.any(near & (0.5 * (trace - 1.0) > cos_max)):
                continue
        taken.append(int(i))
    return taken


def rotation_angle_deg(Ra: np.ndarray, Rb: np.ndarray, symmetric: bool = True) -> float:
    """Angle (degrees) between two gripper rotations [3,3], optionally the closer of Rb and its
    flip about the approach axis."""
    flips = (np.eye(3), np.diag([-1.0, -1.0, 1.0])) if symmetric else (np.eye(3),)
    best = -1.0
    for F in flips:
        best = max(best, 0.5 * (np.trace(Ra.T @ Rb @ F) - 1.0))
    return float(np.degrees(np.arccos(np.clip(best, -1.0, 1.0))))
