"""Analytic solids: signed distance primitives and their CSG combinations.

Every primitive carries its pose `T_world_prim [4,4]` (a rigid transform), so a solid built in an
object frame moves to the world with `transformed(T_world_object)`. Signed distances are exact for
the primitives and the usual min/max bounds for combinations: exact on the surface, which is what
inside tests and surface normals need. Arithmetic is float64 numpy; public wrappers accept torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

# Central-difference step for normals (metres): far below any feature size, far above float64 noise.
_FD_STEP = 1e-6


class Solid(Protocol):
    def signed_distance(self, points: np.ndarray) -> np.ndarray: ...  # [M,3] -> [M]

    def transformed(self, T: np.ndarray) -> Solid: ...

    def describe(self) -> dict[str, Any]: ...


def _identity() -> np.ndarray:
    return np.eye(4)


def _to_local(pose: np.ndarray, points: np.ndarray) -> np.ndarray:
    R, t = pose[:3, :3], pose[:3, 3]
    return (points - t) @ R  # R^T (p - t), row-vector form


@dataclass(frozen=True, eq=False)
class _Primitive:
    pose: np.ndarray = field(default_factory=_identity)  # [4,4] T_world_prim

    def signed_distance(self, points: np.ndarray) -> np.ndarray:
        return self._local_sdf(_to_local(self.pose, np.asarray(points, dtype=np.float64)))

    def _local_sdf(self, p: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def transformed(self, T: np.ndarray) -> _Primitive:
        return type(self)(**{**self._params(), "pose": np.asarray(T, np.float64) @ self.pose})

    def _params(self) -> dict[str, Any]:
        return {}

    def describe(self) -> dict[str, Any]:
        """JSON-able description: type, parameters (metres/radians) and `T_world_prim`."""
        params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self._params().items()}
        return {"type": type(self).__name__.lower(), **params, "pose": self.pose.tolist()}


@dataclass(frozen=True, eq=False)
class Box(_Primitive):
    """Axis-aligned box centred on its frame origin."""

    half_extents: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def _params(self) -> dict[str, Any]:
        return {"half_extents": tuple(self.half_extents)}

    def _local_sdf(self, p: np.ndarray) -> np.ndarray:
        q = np.abs(p) - np.asarray(self.half_extents)
        outside = np.linalg.norm(np.maximum(q, 0.0), axis=-1)
        return outside + np.minimum(q.max(-1), 0.0)


@dataclass(frozen=True, eq=False)
class Cylinder(_Primitive):
    """Capped cylinder along the frame's z axis, centred on the origin (z in ±half_height)."""

    radius: float = 0.5
    half_height: float = 0.5

    def _params(self) -> dict[str, Any]:
        return {"radius": self.radius, "half_height": self.half_height}

    def _local_sdf(self, p: np.ndarray) -> np.ndarray:
        d = np.stack(
            [np.hypot(p[:, 0], p[:, 1]) - self.radius, np.abs(p[:, 2]) - self.half_height], -1
        )
        return np.minimum(d.max(-1), 0.0) + np.linalg.norm(np.maximum(d, 0.0), axis=-1)


@dataclass(frozen=True, eq=False)
class Sphere(_Primitive):
    """Sphere centred on the frame origin."""

    radius: float = 0.5

    def _params(self) -> dict[str, Any]:
        return {"radius": self.radius}

    def _local_sdf(self, p: np.ndarray) -> np.ndarray:
        return np.linalg.norm(p, axis=-1) - self.radius


@dataclass(frozen=True, eq=False)
class TorusArc(_Primitive):
    """A tube of radius `minor_radius` around the arc of radius `major_radius` in the frame's xy
    plane, spanning angles [-half_angle, half_angle] about +x (a mug handle); round ends."""

    major_radius: float = 0.03
    minor_radius: float = 0.005
    half_angle: float = math.pi

    def _params(self) -> dict[str, Any]:
        return {
            "major_radius": self.major_radius,
            "minor_radius": self.minor_radius,
            "half_angle": self.half_angle,
        }

    def _local_sdf(self, p: np.ndarray) -> np.ndarray:
        phi = np.clip(np.arctan2(p[:, 1], p[:, 0]), -self.half_angle, self.half_angle)
        centre = self.major_radius * np.stack([np.cos(phi), np.sin(phi), np.zeros_like(phi)], -1)
        return np.linalg.norm(p - centre, axis=-1) - self.minor_radius


@dataclass(frozen=True, eq=False)
class Union:
    parts: tuple[Solid, ...]

    def signed_distance(self, points: np.ndarray) -> np.ndarray:
        return np.min([s.signed_distance(points) for s in self.parts], axis=0)

    def transformed(self, T: np.ndarray) -> Union:
        return Union(tuple(s.transformed(T) for s in self.parts))

    def describe(self) -> dict[str, Any]:
        return {"type": "union", "parts": [s.describe() for s in self.parts]}


@dataclass(frozen=True, eq=False)
class Intersection:
    parts: tuple[Solid, ...]

    def signed_distance(self, points: np.ndarray) -> np.ndarray:
        return np.max([s.signed_distance(points) for s in self.parts], axis=0)

    def transformed(self, T: np.ndarray) -> Intersection:
        return Intersection(tuple(s.transformed(T) for s in self.parts))

    def describe(self) -> dict[str, Any]:
        return {"type": "intersection", "parts": [s.describe() for s in self.parts]}


@dataclass(frozen=True, eq=False)
class Difference:
    """`base` with `cut` removed (a hollow mug is a cylinder minus its cavity)."""

    base: Solid
    cut: Solid

    def signed_distance(self, points: np.ndarray) -> np.ndarray:
        return np.maximum(self.base.signed_distance(points), -self.cut.signed_distance(points))

    def transformed(self, T: np.ndarray) -> Difference:
        return Difference(self.base.transformed(T), self.cut.transformed(T))

    def describe(self) -> dict[str, Any]:
        return {"type": "difference", "base": self.base.describe(), "cut": self.cut.describe()}


def gradient_normals(solid: Solid, points: np.ndarray) -> np.ndarray:
    """[M,3] unit outward normals: the normalised gradient of the signed distance (central
    differences). On the surface this is the analytic normal of the face the point lies on."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    grad = np.empty_like(p)
    for axis in range(3):
        step = np.zeros(3)
        step[axis] = _FD_STEP
        grad[:, axis] = solid.signed_distance(p + step) - solid.signed_distance(p - step)
    norm = np.linalg.norm(grad, axis=-1, keepdims=True)
    return grad / np.maximum(norm, 1e-30)


def pose_matrix(
    yaw: float = 0.0, translation: tuple[float, float, float] = (0, 0, 0)
) -> np.ndarray:
    """[4,4] rotation about world z by `yaw` (radians), then a translation."""
    c, s = math.cos(yaw), math.sin(yaw)
    T = np.eye(4)
    T[:3, :3] = [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]
    T[:3, 3] = translation
    return T
