"""Initial Gaussians for training: from a point cloud (COLMAP `points3D`, a transforms.json
`ply_file_path`) or random points where the data has none."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import Tensor

from ..camera import Camera
from ..scene import SH_C0

# Scales below this (world units) are clamped: coincident COLMAP points would give log(0).
_MIN_DIST = 1e-7


def knn_scales(points: np.ndarray, k: int = 3) -> np.ndarray:
    """[P,3] -> [P] root mean squared distance to each point's k nearest neighbours (3DGS)."""
    if len(points) < 2:
        return np.full(len(points), 0.01)
    kk = min(k, len(points) - 1)
    d, _ = cKDTree(points).query(points, k=kk + 1)
    d = np.asarray(d).reshape(len(points), kk + 1)[:, 1:]
    return np.sqrt(np.maximum((d**2).mean(axis=1), _MIN_DIST**2))


def camera_extent(cameras: Sequence[Camera]) -> tuple[np.ndarray, float]:
    """(centre [3], radius): the cameras' mean centre and their largest distance from it,
    x 1.1 (3DGS `getNerfppNorm`); the scale densification and the means' learning rate use."""
    centres = np.stack([c.center.double().numpy() for c in cameras])
    centre = centres.mean(0)
    radius = float(np.linalg.norm(centres - centre, axis=1).max()) * 1.1
    return centre, max(radius, 1e-6)


def look_at_point(cameras: Sequence[Camera]) -> tuple[np.ndarray, float] | None:
    """The point closest (least squares) to every camera's optical axis, and how closely the
    axes meet it (median distance / median camera distance). None for fewer than 2 views or
    parallel axes. Object-centric captures (Blender sets, turntables) meet within a few %."""
    if len(cameras) < 2:
        return None
    A = np.zeros((3, 3))
    b = np.zeros(3)
    rows = []
    for c in cameras:
        c2w = c.c2w.double().numpy()
        o, d = c2w[:3, 3], c2w[:3, 2]  # OpenCV: +z is the viewing direction
        P = np.eye(3) - np.outer(d, d)
        A += P
        b += P @ o
        rows.append((o, d))
    if np.linalg.cond(A) > 1e8:
        return None
    p = np.linalg.solve(A, b)
    miss = [np.linalg.norm((np.eye(3) - np.outer(d, d)) @ (p - o)) for o, d in rows]
    dist = [np.linalg.norm(p - o) for o, _ in rows]
    # The point must be in front of the cameras, or the axes "meet" behind them.
    if np.median([float((p - o) @ d) for o, d in rows]) <= 0:
        return None
    return p, float(np.median(miss) / max(np.median(dist), 1e-12))


def random_points(
    cameras: Sequence[Camera], n: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """n random points (xyz [n,3] float32, rgb [n,3] float32 in [0,1]) where the scene should be.

    Object-centric captures (optical axes meeting within 10% of the camera distance): a ball
    around that point of radius 0.4 x the median camera distance (a Blender object at 4 units
    sits within ~1.5). Otherwise a box: the cameras' bounds, grown by their extent."""
    meet = look_at_point(cameras)
    if meet is not None and meet[1] < 0.1:
        centre, _ = meet
        dist = np.median([np.linalg.norm(c.center.double().numpy() - centre) for c in cameras])
        r = 0.4 * dist
        d = torch.randn(n, 3, generator=generator, dtype=torch.float64)
        d = d / d.norm(dim=1, keepdim=True).clamp_min(1e-12)
        u = torch.rand(n, 1, generator=generator, dtype=torch.float64) ** (1.0 / 3.0)
        xyz = torch.from_numpy(centre) + d * u * r
    else:
        centres = np.stack([c.center.double().numpy() for c in cameras])
        _, extent = camera_extent(cameras)
        lo, hi = centres.min(0) - extent, centres.max(0) + extent
        u = torch.rand(n, 3, generator=generator, dtype=torch.float64)
        xyz = torch.from_numpy(lo) + u * torch.from_numpy(hi - lo)
    rgb = torch.rand(n, 3, generator=generator)
    return xyz.float(), rgb


def initial_params(
    xyz: Tensor,  # [P,3] world
    rgb: Tensor,  # [P,3] float in [0,1]
    *,
    sh_degree: int,
    opacity: float,
    scale: float,
) -> dict[str, Tensor]:
    """3DGS initialisation: isotropic Gaussians sized by the nearest-neighbour distance
    (x `scale`), identity rotations, opacity `opacity`, SH DC from the colour, higher bands 0.
    Returns the trainable tensors: means [P,3], quats [P,4], scales [P,3] (log), opacities [P]
    (logit), sh0 [P,1,3], shN [P,K-1,3]."""
    if xyz.ndim != 2 or xyz.shape[1] != 3 or len(xyz) == 0:
        raise ValueError(f"initial points must be a non-empty [P,3] array, got {tuple(xyz.shape)}")
    if not torch.isfinite(xyz).all():
        raise ValueError("initial points contain NaN or Inf")
    p = len(xyz)
    dist = torch.from_numpy(knn_scales(xyz.double().numpy())).float()
    k = (sh_degree + 1) ** 2
    quats = torch.zeros(p, 4)
    quats[:, 0] = 1.0
    return {
        "means": xyz.float().clone(),
        "quats": quats,
        "scales": torch.log(dist * scale)[:, None].repeat(1, 3),
        "opacities": torch.full((p,), math.log(opacity / (1 - opacity))),
        "sh0": ((rgb.float().clamp(0, 1) - 0.5) / SH_C0)[:, None, :],
        "shN": torch.zeros(p, k - 1, 3),
    }
