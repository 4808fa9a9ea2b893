"""`plan_grasps`: sample antipodal pairs on the target, sweep approach directions, reject
collisions with the support, other Gaussians and the target itself, rank the survivors by the
grasp quality of `_score` (its docstring states the formula), keep the top-k distinct poses."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from torch import Tensor

from fields import GaussianScene, up_vector

from .._spatial import kdtree
from ..ops import check_mask
from . import _score
from ._collision import box_distance, estimate_support, lowest_height
from ._gripper import Grasp, GripperConfig, local_boxes
from ._sampling import antipodal_pairs, approach_frames, first_surface_behind
from ._score import QualityWeights
from ._surface import TUBE_RADIUS, target_surface, voxel_thin


@dataclass(frozen=True)
class GraspConfig:
    """Sampling, filtering and scoring knobs of `plan_grasps` (lengths in metres)."""

    top_k: int = 10
    """Number of grasps returned (best first)."""
    n_samples: int = 300
    """Seed points on the target surface; each proposes contact pairs along its normal."""
    n_approach: int = 12
    """Approach directions swept around each closing axis."""
    max_pairs: int = 400
    """Most contact pairs kept (a random subset above this)."""
    opacity_threshold: float = 0.3
    """Gaussians less opaque than this are neither surface nor obstacle."""
    voxel: float = 0.003
    """Voxel size of the thinned surface and obstacle points (at most half the finger thickness)."""
    contact_tolerance: float = 0.003
    """How far the target may bulge past a contact under a finger pad (soft pads, sampling)."""
    collision_margin: float = 0.002
    """Gripper parts closer than this to an obstacle point collide (covers the gaps between
    thinned samples)."""
    support_clearance: float = 0.003
    """Lowest allowed height of any gripper part above the support plane."""
    clearance_saturation: float = 0.02
    """Obstacle distance at which the clearance score reaches 1."""
    weights: QualityWeights = field(default_factory=QualityWeights)
    """Weights of the quality's components (see `editing.grasp` for the formula)."""
    thin_width: float = 0.005
    """A pinch no wider than this (a thin wall) keeps only `thin_penalty` of its quality."""
    full_width: float = 0.01
    """Pinches from this width on keep all of their quality (linear in between)."""
    thin_penalty: float = 0.5
    """Fraction of the quality a pinch of a wall at most `thin_width` thick keeps."""
    contact_area: float = 4e-4
    """Contact area under the smaller pad (m^2) at which the contact score reaches 1."""
    grip_force_ratio: float = 4.0
    """Squeeze force per finger over the object's weight (the stability score)."""
    nms_distance: float = 0.02
    """Pose NMS: grasps whose centres are closer than this ..."""
    nms_angle_deg: float = 30.0
    """... and whose rotations differ by less than this (fingers swapped: the same) are one."""
    seed: int = 0
    """Random seed of the seed-point and pair subsampling."""

    def __post_init__(self) -> None:
        if self.top_k < 1 or self.n_samples < 1 or self.n_approach < 1 or self.max_pairs < 1:
            raise ValueError("top_k, n_samples, n_approach and max_pairs must be at least 1")
        if self.voxel <= 0 or self.clearance_saturation <= 0:
            raise ValueError("voxel and clearance_saturation must be positive")
        if min(self.contact_tolerance, self.collision_margin, self.support_clearance) < 0:
            raise ValueError("contact_tolerance, collision_margin, support_clearance: >= 0")
        if not isinstance(self.weights, QualityWeights):
            raise TypeError(f"weights must be a QualityWeights, not {type(self.weights).__name__}")
        if not 0 <= self.thin_width < self.full_width:
            raise ValueError("thin_width must be >= 0 and below full_width")
        if not 0 <= self.thin_penalty <= 1:
            raise ValueError("thin_penalty must lie in [0, 1]")
        if self.contact_area <= 0 or self.grip_force_ratio <= 0:
            raise ValueError("contact_area and grip_force_ratio must be positive")
        if self.nms_distance < 0 or not 0 <= self.nms_angle_deg <= 180:
            raise ValueError("nms_distance >= 0 and nms_angle_deg in [0, 180]")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GraspResult:
    """Grasps best first, a human-readable message, and counts / timings."""

    grasps: list[Grasp]
    message: str
    stats: dict[str, Any] = field(default_factory=dict)


def _no_grasps(message: str, stats: dict[str, Any], t0: float) -> GraspResult:
    stats["time_ms"] = round((time.perf_counter() - t0) * 1e3, 2)
    return GraspResult([], f"no grasps: {message}", stats)


def plan_grasps(
    scene: GaussianScene,
    target: Tensor,  # [N] bool: the object's Gaussians
    gripper: GripperConfig | None = None,
    config: GraspConfig | None = None,
    *,
    support: Tensor | None = None,  # [N] bool: the supporting surface (else estimated)
    up: Sequence[float] | np.ndarray | None = None,  # [3] world up (else fields.up_vector)
) -> GraspResult:
    """Top-k parallel-jaw grasps on the target's Gaussians, collision-free against the rest of
    the scene (opaque Gaussians) and the support plane. See the package docstring."""
    gripper = gripper or GripperConfig()
    config = config or GraspConfig()
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    stats: dict[str, Any] = {"timings_ms": timings}

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        timings[name] = round((now - since) * 1e3, 2)
        return now

    up_w = up_vector(scene, override=up)
    target = check_mask(scene, target).cpu()
    if support is not None:
        support = check_mask(scene, support).cpu()
    surf = target_surface(scene, target, min_opacity=config.opacity_threshold, voxel=config.voxel)
    cell = surf.cell
    pts, nrm = surf.points[surf.thinned], surf.normals[surf.thinned]  # [K,3]
    tree_t = kdtree(pts)
    radius = TUBE_RADIUS * cell
    stats["target_gaussians"] = len(surf.index)
    stats["surface_points"] = len(pts)
    t = lap("surface", t0)

    # Antipodal pairs.
    rng = np.random.default_rng(config.seed)
    seeds = rng.choice(len(pts), size=min(config.n_samples, len(pts)), replace=False)
    cos_cone = math.cos(gripper.friction_angle)
    pairs = antipodal_pairs(
        tree_t,
        pts,
        nrm,
        seeds,
        max_opening=gripper.max_opening,
        cos_cone=cos_cone,
        radius=radius,
        free_gap=max(gripper.finger_thickness, 2 * radius),
    )
    stats["pairs"] = len(pairs)
    if len(pairs) == 0:
        return _no_grasps(
            f"the object is wider than the {gripper.max_opening * 100:g} cm opening in every "
            "direction",
            stats,
            t0,
        )
    cos0 = np.einsum("pk,pk->p", nrm[pairs.i0], pairs.axis)
    cos1 = np.einsum("pk,pk->p", nrm[pairs.i1], pairs.axis)
    ok = (np.abs(cos0) >= cos_cone) & (np.abs(cos1) >= cos_cone)
    pairs, cos0, cos1 = pairs.take(ok), cos0[ok], cos1[ok]
    stats["antipodal_pairs"] = len(pairs)
    if len(pairs) == 0:
        return _no_grasps(
            f"no contact pair within the friction cone (μ = {gripper.friction:g}) fits the "
            f"{gripper.max_opening * 100:g} cm opening",
            stats,
            t0,
        )
    if len(pairs) > config.max_pairs:
        pick = np.sort(rng.choice(len(pairs), size=config.max_pairs, replace=False))
        pairs, cos0, cos1 = pairs.take(pick), cos0[pick], cos1[pick]
    p0, p1, x = pairs.p0, pairs.p1, pairs.axis
    width = np.linalg.norm(p1 - p0, axis=-1)
    t = lap("pairs", t)

    # Candidates: every pair x every approach direction.
    a = config.n_approach
    R = approach_frames(x, up_w, a).reshape(-1, 3, 3)  # [C,3,3]
    pid = np.repeat(np.arange(len(pairs)), a)
    o = (0.5 * (p0 + p1))[pid]
    w = width[pid]
    pre = np.minimum(w + 2 * gripper.pregrasp_margin, gripper.max_opening)
    stats["candidates"] = len(R)

    # Scene points near the target: obstacles (and the support, as a plane).
    reach = (
        math.hypot(0.5 * gripper.palm_width, gripper.finger_length + gripper.palm_depth)
        + math.hypot(0.5 * gripper.palm_thickness, gripper.tip_depth)
        + config.clearance_saturation
    )
    means = scene.means.detach().cpu().numpy()
    lo_b = pts.min(0) - reach
    hi_b = pts.max(0) + reach
    near = np.all((means >= lo_b) & (means <= hi_b), axis=-1)
    near &= ~target.numpy()
    thr = config.opacity_threshold
    logit = math.log(thr / (1.0 - thr)) if 0 < thr < 1 else (-np.inf if thr <= 0 else np.inf)
    near &= scene.opacities.detach().cpu().numpy() >= logit
    hidden = scene.extras.get("hidden")
    if hidden is not None:
        near &= ~hidden.cpu().numpy().astype(bool)
    near_idx = np.flatnonzero(near)
    others = means[near_idx].astype(np.float64)
    plane = estimate_support(
        others, pts, up_w, None if support is None else support.numpy()[near_idx]
    )
    obstacle = others @ up_w > plane.height + config.support_clearance
    if support is not None:
        obstacle &= ~support.numpy()[near_idx]
    obs = others[obstacle]
    obs = obs[voxel_thin(obs, config.voxel)]
    tree_o = kdtree(obs) if len(obs) else None
    # The palm is thick: a coarser thinning still leaves a point in any surface that crosses
    # it, which rejects most palms cheaply; survivors are checked on the fine points.
    coarse = max(config.voxel, 0.25 * min(gripper.palm_thickness, gripper.palm_depth))
    obs_c = obs[voxel_thin(obs, coarse)]
    tree_oc = kdtree(obs_c) if len(obs_c) else None
    pts_c = pts[voxel_thin(pts, coarse)]
    tree_tc = kdtree(pts_c)
    stats["obstacle_points"] = len(obs)
    stats["support_height"] = plane.height
    t = lap("obstacles", t)

    # Support: every gripper part above the plane.
    boxes = local_boxes(gripper, pre)
    lowest = np.minimum.reduce([lowest_height(R, o, lo, hi, up_w) for lo, hi in boxes.values()])
    above = lowest - plane.height
    keep = above >= config.support_clearance
    rejected = {"support": int((~keep).sum())}

    idx = np.flatnonzero(keep)
    rs, os_ = R[idx], o[idx]
    palm_lo, palm_hi = (v[idx] for v in boxes["palm"])
    fl_lo, fl_hi = (v[idx] for v in boxes["finger_left"])
    fr_lo, fr_hi = (v[idx] for v in boxes["finger_right"])

    def drop(hit: np.ndarray, reason: str) -> None:
        nonlocal idx, rs, os_, palm_lo, palm_hi, fl_lo, fl_hi, fr_lo, fr_hi
        rejected[reason] = rejected.get(reason, 0) + int(hit.sum())
        live = ~hit
        idx, rs, os_ = idx[live], rs[live], os_[live]
        palm_lo, palm_hi, fl_lo, fl_hi, fr_lo, fr_hi = (
            v[live] for v in (palm_lo, palm_hi, fl_lo, fl_hi, fr_lo, fr_hi)
        )

    # The target itself: no palm, no finger beyond the contact slab (cheapest checks first).
    rejected["object"] = 0
    drop(box_distance(tree_tc, pts_c, rs, os_, palm_lo, palm_hi) <= 0.0, "object")
    half_w = 0.5 * w[idx] + config.contact_tolerance
    inner_r = fr_lo.copy()
    inner_r[:, 0] = np.minimum(half_w, fr_hi[:, 0])
    drop(box_distance(tree_t, pts, rs, os_, inner_r, fr_hi) <= 0.0, "object")
    half_w = 0.5 * w[idx] + config.contact_tolerance
    inner_l = fl_hi.copy()
    inner_l[:, 0] = np.maximum(-half_w, fl_lo[:, 0])
    drop(box_distance(tree_t, pts, rs, os_, fl_lo, inner_l) <= 0.0, "object")
    drop(box_distance(tree_t, pts, rs, os_, palm_lo, palm_hi) <= 0.0, "object")

    # Other Gaussians: the palm, then the fingers with the region they close over.
    rejected["obstacles"] = 0
    m = config.collision_margin
    drop(box_distance(tree_oc, obs_c, rs, os_, palm_lo, palm_hi, m) <= m, "obstacles")
    drop(box_distance(tree_o, obs, rs, os_, fl_lo, fr_hi, m) <= m, "obstacles")
    drop(box_distance(tree_o, obs, rs, os_, palm_lo, palm_hi, m) <= m, "obstacles")
    pad = config.clearance_saturation
    d_obs = np.minimum(
        box_distance(tree_o, obs, rs, os_, fl_lo, fr_hi, pad),
        box_distance(tree_o, obs, rs, os_, palm_lo, palm_hi, pad),
    )
    stats["rejected"] = rejected
    stats["collision_free"] = len(idx)
    t = lap("collision", t)
    if len(idx) == 0:
        parts = ", ".join(f"{v} {k}" for k, v in rejected.items())
        return _no_grasps(
            f"all {len(R)} candidate grasps collide ({parts}); "
            "the object may be too close to others or too low to reach",
            stats,
            t0,
        )

    # Scores (formula: the `_score` module docstring).
    Rk, ok_, zk, xk = R[idx], o[idx], R[idx, :, 2], R[idx, :, 0]
    pk = pid[idx]
    wk = w[idx]
    behind = first_surface_behind(
        tree_t, pts, ok_, zk, gripper.finger_length - gripper.tip_depth, radius
    )
    facing = nrm[np.maximum(behind, 0)]
    centre = pts.mean(0)
    size = 0.5 * float(np.linalg.norm(pts.max(0) - pts.min(0)))
    com = _score.centre_of_mass(pts)
    area = _score.pad_support(
        tree_t,
        pts,
        nrm,
        Rk,
        ok_,
        wk,
        0.5 * gripper.finger_width,
        (gripper.tip_depth - gripper.finger_length, gripper.tip_depth),
        config.contact_tolerance,
        cos_cone,
        cell,
    ).min(-1)
    comp = {
        "antipodality": _score.antipodality(cos0[pk], cos1[pk], cos_cone),
        "contact": np.clip(area / config.contact_area, 0.0, 1.0),
        "margin": _score.margin(wk, gripper.max_opening, gripper.pregrasp_margin),
        "stability": _score.stability(
            ok_,
            xk,
            wk,
            area,
            com,
            up_w,
            gripper.friction,
            config.grip_force_ratio,
            cell * cell,
        ),
        "clearance": _score.clearance(
            np.minimum(d_obs, above[idx] - config.support_clearance), pad
        ),
        "approach": _score.approach_alignment(facing, behind >= 0, zk, up_w),
        "centring": _score.centring(ok_, xk, centre, size),
    }
    thick = _score.thickness(wk, config.thin_width, config.full_width, config.thin_penalty)
    score = thick * _score.mix(comp, config.weights)
    comp["thickness"] = thick
    order = np.argsort(-score, kind="stable")
    top = _score.pose_nms(order, ok_, Rk, config.top_k, config.nms_distance, config.nms_angle_deg)
    stats["centre_of_mass"] = [round(float(v), 5) for v in com]
    grasps = []
    for i in top:
        T = np.eye(4)
        T[:3, :3] = Rk[i]
        T[:3, 3] = ok_[i]
        grasps.append(
            Grasp(
                T_world_gripper=T,
                width=float(w[idx[i]]),
                contacts=np.stack([p0[pk[i]], p1[pk[i]]]),
                score=float(score[i]),
                scores={k: float(v[i]) for k, v in comp.items()},
            )
        )
    lap("score", t)
    stats["time_ms"] = round((time.perf_counter() - t0) * 1e3, 2)
    message = (
        f"{len(grasps)} grasps from {len(idx)} collision-free of {len(R)} candidates "
        f"({stats['antipodal_pairs']} antipodal pairs x {a} approaches)"
    )
    return GraspResult(grasps, message, stats)
