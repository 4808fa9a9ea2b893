"""A KD-tree over points, with scipy imported on first use: `import editing` (and so the
viewer's start) does not pay for scipy.spatial until a grasp, insertion or grow needs it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from scipy.spatial import cKDTree


def kdtree(points: np.ndarray) -> cKDTree:  # points [M,3] (or [M,2])
    from scipy.spatial import cKDTree

    return cKDTree(points)
