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

    Object-centric captures (optical axes meeting, Blender sets, turntables, our synthetic
    rigs): uniform in a ball around the meeting point of radius 0.6 x the median camera
    distance D (a Blender object at D = 4 sits within ~1.5; a table's legs within ~0.9 D).
    Otherwise: uniform in the cameras' bounds grown by their extent. Either way no point lies
    within 0.25 D (the extent) of a camera, where it would fog that view."""
    centres = np.stack([c.center.double().numpy() for c in cameras])  # [C,3]
    meet = look_at_point(cameras)
    if meet is not None and meet[1] < 0.25:
        centre = meet[0]
        D = float(np.median(np.linalg.norm(centres - centre, axis=1)))

        def draw(m: int) -> Tensor:
            d = torch.randn(m, 3, generator=generator, dtype=torch.float64)
            d = d / d.norm(dim=1, keepdim=True).clamp_min(1e-12)
            u = torch.rand(m, 1, generator=generator, dtype=torch.float64) ** (1.0 / 3.0)
            return torch.from_numpy(centre) + d * u * (0.6 * D)

    else:
        _, D = camera_extent(cameras)
        lo, hi = centres.min(0) - D, centres.max(0) + D

        def draw(m: int) -> Tensor:
            u = torch.rand(m, 3, generator=generator, dtype=torch.float64)
            return torch.from_numpy(lo) + u * torch.from_numpy(hi - lo)

    cams = torch.from_numpy(centres)
    kept: list[Tensor] = []
    have = 0
    for _ in range(50):  # rejection sampling; the excluded volume is a small share
        xyz = draw(2 * (n - have) + 16)
        ok = torch.cdist(xyz, cams).min(1).values > 0.25 * D
        kept.append(xyz[ok])
        have += int(ok.sum())
        if have >= n:
            break
    xyz = torch.cat(kept)[:n]
    if len(xyz) < n:
        raise ValueError(
            "the cameras leave no room for initial points; give the data a point cloud"
        )
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
