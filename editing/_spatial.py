"""Spatial helpers shared by the editing modules: a KD-tree over points, with scipy imported on
first use (`import editing`, and so the viewer's start, does not pay for scipy.spatial until a
grasp, insertion or grow needs it), and the smallest rotation between two directions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from scipy.spatial import cKDTree


def kdtree(points: np.ndarray) -> cKDTree:  # points [M,3] (or [M,2])
    from scipy.spatial import cKDTree

    return cKDTree(points)


def rotation_between(a: Any, b: Any) -> np.ndarray:
    """[3,3] the smallest rotation taking unit direction `a` [3] to `b` [3] (a half turn about
    an axis orthogonal to both when they are opposite)."""
    a = np.asarray(a, dtype=np.float64).reshape(3)
    b = np.asarray(b, dtype=np.float64).reshape(3)
    a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
    v, c = np.cross(a, b), float(a @ b)
    if c < -1.0 + 1e-12:
        axis = np.cross(a, [1.0, 0.0, 0.0] if abs(a[0]) < 0.9 else [0.0, 1.0, 0.0])
        axis /= np.linalg.norm(axis)
        return 2.0 * np.outer(axis, axis) - np.eye(3)
    vx = np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])
    return np.eye(3) + vx + vx @ vx / (1.0 + c)
