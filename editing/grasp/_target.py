"""The object a clicked Gaussian belongs to, without features: the Gaussians linked to it by
chains of close neighbours once the surface it stands on is cut away.

Objects on a table touch the table, so plain connectivity would grab the whole table. The
support is found as the densest layer of flat, level splats (shortest axis along `up`) below the
clicked point — a table top outnumbers an object's own level parts (a cup's floor, a book's
top) by far — and everything up to `clearance` above it is left out before growing."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from fields import GaussianScene, up_vector
from fields.features import connected_to
from fields.scene import quat_to_rotmat

from .._spatial import kdtree

_LEVEL_COS = 0.9  # a splat is level when its shortest axis is within ~25° of up
_BIN = 0.003  # metres: height bins of the support search


def support_height(
    points: np.ndarray,  # [M,3] Gaussian centres around the click
    normals: np.ndarray,  # [M,3] their shortest axes (either sign)
    up: np.ndarray,  # [3] unit
    below: float,  # height (along up) of the clicked point
) -> float | None:
    """Height of the densest level layer below `below`, or None when there is none."""
    h = points @ up
    level = (np.abs(normals @ up) >= _LEVEL_COS) & (h < below - _BIN)
    if int(level.sum()) < 20:
        return None
    hl = h[level]
    edges = np.arange(hl.min(), hl.max() + 2 * _BIN, _BIN)
    counts, edges = np.histogram(hl, bins=edges)
    k = int(np.argmax(counts))
    in_bin = (hl >= edges[k]) & (hl <= edges[k + 1])
    return float(np.median(hl[in_bin]))


def object_at(
    scene: GaussianScene,
    index: int,
    *,
    up: Sequence[float] | np.ndarray | None = None,
    radius: float = 0.25,
    clearance: float = 0.004,
    gap: float | None = None,
) -> Tensor:
    """[N] bool: the object Gaussian `index` belongs to (see the module docstring).

    Only Gaussians within `radius` (metres) of the clicked one are considered, so an object must
    fit in that ball (anything a parallel-jaw gripper can hold does). `gap` links neighbours
    (default: twice the median nearest-neighbour spacing around the click)."""
    n = len(scene)
    if not 0 <= index < n:
        raise ValueError(f"Gaussian index {index} is out of range for a scene of {n}")
    up_w = up_vector(scene, override=up)
    means = scene.means.detach().cpu().double().numpy()
    p = means[index]
    local = np.flatnonzero(np.linalg.norm(means - p, axis=1) <= radius)
    pts = means[local]
    R = quat_to_rotmat(scene.quats.detach().cpu()[local].double())  # [M,3,3]
    shortest = scene.scales.detach().cpu()[local].argmin(dim=1)
    normals = R[torch.arange(len(local)), :, shortest].numpy()  # [M,3] column = that axis
    keep = np.ones(len(local), dtype=bool)
    h_support = support_height(pts, normals, up_w, float(p @ up_w))
    if h_support is not None:
        keep = pts @ up_w > h_support + clearance
    seed = local == index
    keep |= seed
    if gap is None:
        near = pts[keep][np.linalg.norm(pts[keep] - p, axis=1) <= 0.05]
        if len(near) >= 2:
            d, _ = kdtree(near).query(near, k=2)
            gap = 2.0 * float(np.median(d[:, 1]))
        else:
            gap = 0.01
    linked = connected_to(pts[keep], seed[keep], max(gap, 1e-6))
    mask = np.zeros(n, dtype=bool)
    mask[local[np.flatnonzero(keep)[linked]]] = True
    return torch.from_numpy(mask)
