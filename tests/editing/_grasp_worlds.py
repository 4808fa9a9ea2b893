"""Small tabletop scenes with analytic solids for the grasp tests, and analytic grasp checks.

Objects come from the synthetic catalogue (or are built from its primitives), posed anywhere
(a can lying on its side), sampled as flat splats like `make_world` does; every object keeps its
world-frame solid, so checks use exact signed distances and normals, never the estimates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from editing.grasp import Grasp, GripperConfig, gripper_boxes
from fields import GaussianScene
from fields.scene import rotmat_to_quat
from fields.synthetic import CATALOGUE, WorldConfig
from fields.synthetic._catalogue import ObjectModel
from fields.synthetic._sdf import Box, Solid, Sphere, gradient_normals, pose_matrix
from fields.synthetic._shapes import Arc, Revolution, SurfaceSamples, box_faces, sample_surface
from fields.synthetic._world import _sample_model, _splats

TABLE_HALF = (0.35, 0.25, 0.015)  # the table top: z = 0 is its upper face


@dataclass(frozen=True, eq=False)
class Thing:
    name: str
    label: int
    solid: Solid  # world frame

    def sdf(self, points: np.ndarray) -> np.ndarray:
        return self.solid.signed_distance(np.asarray(points, np.float64).reshape(-1, 3))

    def normals(self, points: np.ndarray) -> np.ndarray:
        return gradient_normals(self.solid, np.asarray(points, np.float64).reshape(-1, 3))


@dataclass(frozen=True, eq=False)
class GraspWorld:
    scene: GaussianScene
    things: list[Thing]  # things[0] is the table

    def thing(self, name: str) -> Thing:
        return next(t for t in self.things if t.name == name)

    def mask(self, name: str) -> torch.Tensor:
        return self.scene.extras["label"] == self.thing(name).label


def model(kind: str, seed: int = 0) -> ObjectModel:
    return CATALOGUE[kind](np.random.default_rng(seed))


def big_ball(radius: float) -> ObjectModel:
    surface = Revolution((Arc((0.0, radius), radius, -0.5 * math.pi, 0.5 * math.pi),))
    solid = Sphere(pose_matrix(0.0, (0.0, 0.0, radius)), radius)
    bounds = ((-radius, -radius, 0.0), (radius, radius, 2 * radius))
    return ObjectModel("ball", solid, (surface,), {"radius": radius}, bounds, radius)


def big_box(half: float) -> ObjectModel:
    faces = tuple(box_faces((half, half, half), (0.0, 0.0, half)))
    solid = Box(pose_matrix(0.0, (0.0, 0.0, half)), (half, half, half))
    bounds = ((-half, -half, 0.0), (half, half, 2 * half))
    return ObjectModel("box", solid, faces, {"half": half}, bounds, half * math.sqrt(2))


def lying(m: ObjectModel, x: float, y: float, yaw: float = 0.0) -> np.ndarray:
    """Pose that lays a round object (axis = its z) on its side along world x (rotated by yaw
    about z), centred at (x, y), resting on the table."""
    r = m.params["radius"]
    h = m.params["height"]
    Ry = np.eye(4)
    Ry[:3, :3] = [[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]]  # object z -> world x
    shift = np.eye(4)
    shift[:3, 3] = (-0.5 * h, 0.0, r)
    return pose_matrix(yaw, (x, y, 0.0)) @ shift @ Ry


def build(
    parts: list[tuple[str, ObjectModel, np.ndarray]],  # (name, model, T_world_object)
    *,
    spacing: float = 0.003,
    seed: int = 0,
) -> GraspWorld:
    """A table top (label 0) with the objects (labels 1, 2, ...) as labelled splats."""
    rng = np.random.default_rng(seed)
    config = WorldConfig()
    table_centre = (0.0, 0.0, -TABLE_HALF[2])
    table_samples = SurfaceSamples.concat(
        [sample_surface(f, 0.006, rng) for f in box_faces(TABLE_HALF, table_centre, "Z")]
    )
    splats = [
        _splats(
            table_samples,
            np.full(len(table_samples), 0.006),
            np.tile([0.6, 0.45, 0.3], (len(table_samples), 1)),
            0,
            config,
            rng,
        )
    ]
    things = [Thing("table", 0, Box(pose_matrix(0.0, table_centre), TABLE_HALF))]
    for label, (name, m, T) in enumerate(parts, 1):
        samples = _sample_model(m, spacing, rng)[0].transformed(T)
        rgb = np.tile([0.2, 0.4, 0.8], (len(samples), 1))
        splats.append(_splats(samples, np.full(len(samples), spacing), rgb, label, config, rng))
        things.append(Thing(name, label, m.solid.transformed(T)))
    cat = {k: np.concatenate([p[k] for p in splats]) for k in splats[0]}
    scene = GaussianScene.from_activated(
        torch.from_numpy(cat["means"]).float(),
        rotmat_to_quat(torch.from_numpy(cat["rot"])).float(),
        torch.from_numpy(cat["scales"]).float(),
        torch.from_numpy(cat["opacities"]).float(),
        torch.from_numpy(cat["colors"]).float(),
        extras={"label": torch.from_numpy(cat["label"])},
        meta={"units": "m", "up": [0, 0, 1]},
    )
    return GraspWorld(scene, things)


def box_samples(grasp: Grasp, gripper: GripperConfig, n: int = 6) -> np.ndarray:
    """[P,3] world points on a grid through every gripper box (closed on the contacts)."""
    out = []
    f = (np.arange(n) + 0.5) / n * 2 - 1
    grid = np.stack(np.meshgrid(f, f, f, indexing="ij"), -1).reshape(-1, 3)
    for b in gripper_boxes(grasp, gripper):
        out.append(b.center + (grid * b.half_extents) @ b.rotation.T)
    return np.concatenate(out)


# Tolerances of the analytic checks (metres / degrees): sampling and voxel thinning.
ON_SURFACE = 0.0025
CONE_SLACK_DEG = 3.0
OBSTACLE_PENETRATION = 0.002
TARGET_PENETRATION = 0.002  # deeper only next to a contact (under the pads)
NEAR_CONTACT = 0.015


def check_grasp(
    grasp: Grasp, gripper: GripperConfig, target: Thing, others: list[Thing]
) -> list[str]:
    """Reasons why `grasp` fails the analytic checks (empty: it passes)."""
    problems = []
    c = np.asarray(grasp.contacts)
    if np.abs(target.sdf(c)).max() > ON_SURFACE:
        problems.append(f"contacts off the surface by {np.abs(target.sdf(c)).max():.4f} m")
    axis = c[1] - c[0]
    axis /= np.linalg.norm(axis)
    n = target.normals(c)
    cone = math.cos(gripper.friction_angle + math.radians(CONE_SLACK_DEG))
    # Outward normals oppose each other along the axis: n0 . axis < 0 < n1 . axis.
    if not (-(n[0] @ axis) >= cone and n[1] @ axis >= cone):
        problems.append(f"outside the friction cone: {n[0] @ axis:.3f}, {n[1] @ axis:.3f}")
    if not 0 < grasp.width <= gripper.max_opening + 1e-9:
        problems.append(f"width {grasp.width:.4f} beyond the opening")
    T = grasp.T_world_gripper
    if not np.allclose(T[:3, :3].T @ T[:3, :3], np.eye(3), atol=1e-6):
        problems.append("pose is not a rotation")
    if not np.allclose(T[:3, 0], axis, atol=1e-6):
        problems.append("pose x is not the closing direction")
    pts = box_samples(grasp, gripper)
    for other in others:
        depth = -other.sdf(pts).min()
        if depth > OBSTACLE_PENETRATION:
            problems.append(f"gripper inside {other.name} by {depth:.4f} m")
    sdf = target.sdf(pts)
    far = np.linalg.norm(pts[:, None, :] - c[None], axis=-1).min(-1) > NEAR_CONTACT
    inside_far = (sdf < -TARGET_PENETRATION) & far
    if inside_far.any():
        problems.append(f"gripper passes through {target.name} away from the contacts")
    if (sdf < -0.006).any():
        problems.append(f"gripper {-sdf.min():.4f} m deep in {target.name}")
    return problems
