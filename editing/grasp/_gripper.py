"""The parallel-jaw gripper: its dimensions, a grasp's pose, and the gripper as oriented boxes.

Gripper frame (`T_world_gripper`): x = closing direction (from the first contact to the second),
z = approach direction (from the palm toward the object), y = z × x; the origin lies midway
between the contacts, on the finger pads. The fingertips reach `tip_depth` past the origin along
+z; the fingers run back along -z for `finger_length` to the palm.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class GripperConfig:
    """A parallel-jaw gripper as three boxes (two fingers and a palm), in metres. The defaults
    approximate the Franka Emika Panda hand (8 cm stroke, 20 cm wide hand)."""

    max_opening: float = 0.08
    """Widest opening between the finger pads."""
    finger_length: float = 0.05
    """Length of a finger from the palm to its tip (along the approach direction)."""
    finger_width: float = 0.02
    """Extent of a finger pad across the closing direction (gripper y)."""
    finger_thickness: float = 0.01
    """Extent of a finger along the closing direction (gripper x)."""
    tip_depth: float = 0.01
    """How far the fingertips reach past the contacts (along the approach direction)."""
    palm_width: float = 0.2
    """Extent of the palm (hand body) along the closing direction."""
    palm_thickness: float = 0.06
    """Extent of the palm across the closing direction (gripper y)."""
    palm_depth: float = 0.06
    """Extent of the palm along the approach direction, behind the fingers."""
    friction: float = 0.4
    """Coulomb friction coefficient at the pads: contacts hold within atan(friction) of the
    closing axis (21.8° for 0.4)."""
    pregrasp_margin: float = 0.01
    """Extra opening on each side of the object before closing (the fingers sweep it)."""

    def __post_init__(self) -> None:
        sizes = {k: v for k, v in asdict(self).items() if k != "tip_depth"}
        bad = [k for k, v in sizes.items() if not (math.isfinite(v) and v > 0)]
        if bad or not (math.isfinite(self.tip_depth) and self.tip_depth >= 0):
            raise ValueError(f"gripper dimensions must be positive (tip_depth >= 0): {bad}")
        if self.tip_depth >= self.finger_length:
            raise ValueError("tip_depth must be shorter than finger_length")
        if self.palm_width < self.max_opening + 2 * self.finger_thickness:
            raise ValueError("palm_width must hold both fingers at max_opening")

    @property
    def friction_angle(self) -> float:
        """Half-angle of the friction cone (radians)."""
        return math.atan(self.friction)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "friction_angle_deg": math.degrees(self.friction_angle)}


@dataclass(frozen=True, eq=False)
class Grasp:
    """One parallel-jaw grasp on the target, in world coordinates."""

    T_world_gripper: np.ndarray  # [4,4] x = closing, z = approach, origin between the contacts
    width: float  # opening at contact (metres)
    contacts: np.ndarray  # [2,3] world; contacts[1] - contacts[0] is along +x
    score: float  # weighted mix of `scores`, in [0, 1]
    scores: dict[str, float] = field(default_factory=dict)  # each in [0, 1]

    @property
    def closing(self) -> np.ndarray:
        """[3] unit closing direction (gripper x) in world."""
        return self.T_world_gripper[:3, 0].copy()

    @property
    def approach(self) -> np.ndarray:
        """[3] unit approach direction (gripper z, palm toward object) in world."""
        return self.T_world_gripper[:3, 2].copy()

    @property
    def center(self) -> np.ndarray:
        """[3] world origin of the gripper frame (between the contacts)."""
        return self.T_world_gripper[:3, 3].copy()


@dataclass(frozen=True, eq=False)
class OrientedBox:
    """A box in world: `center` [3], `rotation` [3,3] (columns = box axes in world),
    `half_extents` [3] along those axes."""

    name: str
    center: np.ndarray
    rotation: np.ndarray
    half_extents: np.ndarray

    def corners(self) -> np.ndarray:
        """[8,3] world corners."""
        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
        return self.center + (signs * self.half_extents) @ self.rotation.T

    def contains(self, points: np.ndarray, margin: float = 0.0) -> np.ndarray:
        """[M] bool: world points [M,3] inside the box grown by `margin`."""
        local = (np.asarray(points, np.float64) - self.center) @ self.rotation
        return np.all(np.abs(local) <= self.half_extents + margin, axis=-1)


def local_boxes(
    gripper: GripperConfig, opening: np.ndarray | float
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Boxes in the gripper frame for an opening (scalar or [C]): name -> (lo [...,3], hi [...,3]).

    `finger_left` / `finger_right` sit just outside +-opening/2; `palm` behind the fingers."""
    half = 0.5 * np.asarray(opening, dtype=np.float64)
    g = gripper
    z0, z1 = g.tip_depth - g.finger_length, g.tip_depth

    def box(xlo, xhi, hy, zlo, zhi):
        lo = np.stack(np.broadcast_arrays(xlo, -hy + 0 * half, zlo + 0 * half), -1)
        hi = np.stack(np.broadcast_arrays(xhi, hy + 0 * half, zhi + 0 * half), -1)
        return lo, hi

    return {
        "finger_left": box(-half - g.finger_thickness, -half, 0.5 * g.finger_width, z0, z1),
        "finger_right": box(half, half + g.finger_thickness, 0.5 * g.finger_width, z0, z1),
        "palm": box(
            -0.5 * g.palm_width + 0 * half,
            0.5 * g.palm_width + 0 * half,
            0.5 * g.palm_thickness,
            z0 - g.palm_depth,
            z0,
        ),
    }


def gripper_boxes(
    grasp: Grasp, gripper: GripperConfig, *, opening: float | None = None
) -> list[OrientedBox]:
    """The gripper at `grasp` as world boxes (fingers, palm), closed on the contacts unless an
    `opening` is given (e.g. the pre-grasp opening the collision check uses)."""
    T = np.asarray(grasp.T_world_gripper, dtype=np.float64)
    R, t = T[:3, :3], T[:3, 3]
    width = grasp.width if opening is None else float(opening)
    out = []
    for name, (lo, hi) in local_boxes(gripper, width).items():
        c = 0.5 * (lo + hi)
        out.append(OrientedBox(name, t + R @ c, R.copy(), 0.5 * (hi - lo)))
    return out


# Triangles of a unit cube over `OrientedBox.corners()` order (index = 4*sx + 2*sy + sz),
# wound counter-clockwise seen from outside.
_CUBE_FACES = np.array(
    [
        [0, 1, 3], [0, 3, 2],  # -x
        [4, 6, 7], [4, 7, 5],  # +x
        [0, 4, 5], [0, 5, 1],  # -y
        [2, 3, 7], [2, 7, 6],  # +y
        [0, 2, 6], [0, 6, 4],  # -z
        [1, 5, 7], [1, 7, 3],  # +z
    ],
    dtype=np.int32,
)  # fmt: skip


def mesh_boxes(grasp: Grasp, gripper: GripperConfig) -> list[OrientedBox]:
    """The drawn gripper at `grasp` as world boxes: two fingers closed on the contacts, a bridge
    joining them at the finger roots, and a stem (the wrist) running back along the approach
    axis. Every piece lies inside the collision boxes (`gripper_boxes`), so a collision-free
    grasp draws a collision-free mesh."""
    T = np.asarray(grasp.T_world_gripper, dtype=np.float64)
    R, t = T[:3, :3], T[:3, 3]
    g = gripper
    half = 0.5 * grasp.width
    z0 = g.tip_depth - g.finger_length  # finger roots (the palm's front face)
    hy = 0.5 * min(g.finger_width, g.palm_thickness)
    bar = min(g.finger_thickness, 0.5 * g.palm_depth)
    stem = 0.5 * min(hy, 0.5 * g.finger_width)
    outer = half + g.finger_thickness
    pieces = {
        "finger_left": ((-outer, -0.5 * g.finger_width, z0), (-half, 0.5 * g.finger_width, g.tip_depth)),
        "finger_right": ((half, -0.5 * g.finger_width, z0), (outer, 0.5 * g.finger_width, g.tip_depth)),
        "bridge": ((-outer, -hy, z0 - bar), (outer, hy, z0)),
        "stem": ((-stem, -stem, z0 - g.palm_depth), (stem, stem, z0 - bar)),
    }  # fmt: skip
    out = []
    for name, (lo, hi) in pieces.items():
        lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
        out.append(OrientedBox(name, t + R @ (0.5 * (lo + hi)), R.copy(), 0.5 * (hi - lo)))
    return out


def gripper_mesh(grasp: Grasp, gripper: GripperConfig) -> tuple[np.ndarray, np.ndarray]:
    """A triangle mesh of a recognisable two-finger gripper closed at `grasp` (two fingers, the
    bridge between them, a stem back along the approach; see `mesh_boxes`): vertices [V,3]
    float32 world, faces [F,3] int32 wound outward (for viser's `add_mesh_simple`)."""
    boxes = mesh_boxes(grasp, gripper)
    vertices = np.concatenate([b.corners() for b in boxes]).astype(np.float32)
    faces = np.concatenate([_CUBE_FACES + 8 * i for i in range(len(boxes))]).astype(np.int32)
    return vertices, faces
