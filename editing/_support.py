"""Support surfaces for insertion: fit the top plane of a support (a table, a shelf) from its
upward-facing Gaussians, and find a free spot on it for an object's footprint.

A splat's normal is the axis of its smallest scale. The top of a support is the highest plane
that holds a good share of the support's upward-facing splats (a table's underside and its feet
face up or down too, but lie lower); a click picks the plane nearest the clicked height instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fields import GaussianScene, up_vector
from fields.scene import quat_to_rotmat

from ._spatial import kdtree
from .ops import check_mask

# A splat is flat when its smallest scale is below this fraction of its middle one.
_FLAT_RATIO = 0.5
# Splats whose normal is within this angle of "up" face up.
_FACING_DEG = 30.0
# A height cluster counts as a surface when it holds this share of the fullest cluster.
_CLUSTER_SHARE = 0.3
_OPAQUE = 0.2
_MAX_CANDIDATES = 40_000


@dataclass(frozen=True)
class SupportPlane:
    """The top plane of a support, in world coordinates."""

    point: np.ndarray  # [3] a point on the plane (the inliers' centroid)
    normal: np.ndarray  # [3] unit, facing up (away from the support)
    axes: np.ndarray  # [2,3] unit in-plane axes u, v (u x v = normal)
    points2d: np.ndarray  # [M,2] the inlier splats' centres in plane coordinates (u, v)
    inliers: np.ndarray  # [M] int64 indices of the inlier Gaussians in the scene
    spacing: float  # median distance between neighbouring inliers
    thickness: float  # how far from the plane an inlier may lie (and the obstacle floor)

    @property
    def height(self) -> float:
        """Signed distance of the plane from the world origin along its normal."""
        return float(self.point @ self.normal)

    @property
    def bounds2d(self) -> tuple[np.ndarray, np.ndarray]:
        """([2], [2]) min and max of the inliers in plane coordinates."""
        return self.points2d.min(0), self.points2d.max(0)

    def to_plane(self, points: Any) -> tuple[np.ndarray, np.ndarray]:
        """World points [P,3] -> (plane coordinates [P,2], height above the plane [P])."""
        d = np.asarray(points, dtype=np.float64).reshape(-1, 3) - self.point
        return d @ self.axes.T, d @ self.normal

    def to_world(self, uv: Any, height: float = 0.0) -> np.ndarray:
        """Plane coordinates [...,2] (+ a height above the plane) -> world points [...,3]."""
        uv = np.asarray(uv, dtype=np.float64)
        return self.point + uv @ self.axes + height * self.normal

    def describe(self) -> dict[str, Any]:
        lo, hi = self.bounds2d
        return {
            "point": self.point.tolist(),
            "normal": self.normal.tolist(),
            "size": (hi - lo).tolist(),
            "inliers": len(self.inliers),
        }


def splat_normals(scene: GaussianScene) -> tuple[Tensor, Tensor]:
    """Per Gaussian: unit normal (axis of the smallest scale) [N,3] and whether it is flat [N]."""
    R = quat_to_rotmat(scene.quats)  # [N,3,3] columns: local axes in world
    s = scene.scales  # log std-devs [N,3]
    order = torch.argsort(s, dim=1)
    smallest, middle = order[:, 0], order[:, 1]
    normals = R.gather(2, smallest[:, None, None].expand(-1, 3, 1))[..., 0]
    flat = s.gather(1, smallest[:, None])[:, 0] < s.gather(1, middle[:, None])[:, 0] + math.log(
        _FLAT_RATIO
    )
    return normals, flat


def extent_along(scene: GaussianScene, direction: Any) -> Tensor:
    """[N] standard deviation of every Gaussian along a world `direction` [3]."""
    n = torch.as_tensor(np.asarray(direction, dtype=np.float64), dtype=scene.means.dtype)
    R = quat_to_rotmat(scene.quats)
    local = torch.einsum("nji,j->ni", R, n.to(scene.device))  # direction in each local frame
    return ((local * torch.exp(scene.scales)) ** 2).sum(-1).sqrt()


def fit_support_plane(
    scene: GaussianScene,
    support_mask: Tensor,  # [N] bool
    *,
    up: Any = None,  # [3] or "+z"...; default: fields.conventions.up_vector(scene)
    near: Any = None,  # [3] world point: take the plane nearest its height, not the highest
) -> SupportPlane:
    """The top plane of the selected support: its upward-facing splats clustered by height, the
    highest well-populated cluster (or the one nearest `near`) refined by least squares."""
    mask = check_mask(scene, support_mask).cpu()
    up_v = up_vector(scene, override=up)
    opaque = torch.sigmoid(scene.opacities.detach().cpu()) > _OPAQUE
    hidden = scene.extras.get("hidden")
    keep = mask & opaque
    if hidden is not None:
        keep &= ~hidden.cpu().bool()
    if not bool(keep.any()):
        raise ValueError("the support selection is empty (no opaque, shown Gaussians)")
    sub = scene.detach().to("cpu").subset(keep)
    idx = keep.nonzero().squeeze(1).numpy()
    normals, flat = splat_normals(sub)
    facing = np.abs(normals.double().numpy() @ up_v) > math.cos(math.radians(_FACING_DEG))
    cand = flat.numpy() & facing
    if cand.sum() < 3:  # no flat splats (e.g. isotropic Gaussians): every support splat counts
        cand = np.ones(len(sub), dtype=bool)
    pts = sub.means.double().numpy()[cand]
    cidx = idx[cand]
    h = pts @ up_v
    thick = float(np.median(torch.exp(sub.scales).amin(1).double().numpy()[cand]))
    span = float(np.linalg.norm(pts.max(0) - pts.min(0)))
    tol = max(3.0 * thick, 0.005 * span, 1e-6)

    # Histogram of heights with bins of `tol`: pick the top cluster (or the one nearest `near`).
    lo = float(h.min())
    bins = np.floor((h - lo) / tol).astype(np.int64)
    counts = np.bincount(bins)
    good = np.flatnonzero(counts >= _CLUSTER_SHARE * counts.max())
    if near is None:
        b = int(good.max())
    else:
        hn = float(np.asarray(near, dtype=np.float64).reshape(3) @ up_v)
        b = int(good[np.argmin(np.abs(lo + (good + 0.5) * tol - hn))])
    centre = float(np.median(h[np.abs(bins - b) <= 1]))
    inl = np.abs(h - centre) <= 1.5 * tol
    for _ in range(2):  # least squares, then re-select inliers about the fitted plane
        P = pts[inl]
        c = P.mean(0)
        normal = up_v
        if len(P) >= 3:
            _, sv, vt = np.linalg.svd(P - c, full_matrices=False)
            n = vt[-1] * (1.0 if vt[-1] @ up_v >= 0 else -1.0)
            planar = sv[1] > 1e-9 and sv[-1] < 0.5 * sv[1]
            if planar and n @ up_v > math.cos(math.radians(_FACING_DEG)):
                normal = n / np.linalg.norm(n)
        inl = np.abs((pts - c) @ normal) <= 1.5 * tol
        if inl.sum() == 0:
            break
    P = pts[inl]
    c = P.mean(0)
    u = np.cross(normal, [1.0, 0.0, 0.0] if abs(normal[0]) < 0.9 else [0.0, 1.0, 0.0])
    u /= np.linalg.norm(u)
    v = np.cross(normal, u)
    axes = np.stack([u, v])
    p2 = (P - c) @ axes.T
    if len(p2) >= 2:
        dist, _ = kdtree(p2).query(p2, k=2)
        spacing = float(np.median(dist[:, 1]))
    else:
        spacing = tol
    return SupportPlane(
        point=c,
        normal=normal,
        axes=axes,
        points2d=p2,
        inliers=cidx[inl],
        spacing=max(spacing, 1e-9),
        thickness=tol,
    )


def find_free_spot(
    scene: GaussianScene,
    plane: SupportPlane,
    footprint_radius: float,
    *,
    height: float,
    exclude: Tensor | None = None,  # [N] bool: Gaussians that never block (the object itself)
    near: Any = None,  # [3] world point: the free spot nearest it wins
    margin: float | None = None,
    seed: int = 0,
) -> np.ndarray:
    """[3] a point on the plane where a disc of `footprint_radius` lies on the support and no
    opaque Gaussian stands above it (from the plane up to `height` + `margin`) within the radius
    plus `margin` (default a fifth of the radius). Without `near`, the free spot nearest the
    support's centre among those with the most clearance. Raises `ValueError` when none is."""
    r = float(footprint_radius)
    if not r > 0:
        raise ValueError(f"footprint_radius must be positive, got {footprint_radius}")
    margin = 0.2 * r if margin is None else float(margin)
    lo, hi = plane.bounds2d
    size = hi - lo
    if 2 * r > float(size.min()) + plane.spacing:
        raise ValueError(
            f"no free spot: the object's footprint (diameter {2 * r:.3g}) is wider than the "
            f"support ({size[0]:.3g} x {size[1]:.3g})"
        )
    step = max(plane.spacing, r / 4, float(np.sqrt(size.prod() / _MAX_CANDIDATES)))
    rng = np.random.default_rng(seed)
    off = rng.uniform(0.0, step, 2)
    gu = np.arange(lo[0] + r + off[0] - step, hi[0] - r + step, step)
    gv = np.arange(lo[1] + r + off[1] - step, hi[1] - r + step, step)
    cand = np.stack(np.meshgrid(gu, gv, indexing="ij"), -1).reshape(-1, 2)
    if len(cand) == 0:
        raise ValueError("no free spot: the support is too small for the object")

    # On the support: the footprint's centre and rings at r/2 and r all lie over inliers.
    support = kdtree(plane.points2d)
    a = np.linspace(0.0, 2 * math.pi, 16, endpoint=False)
    ring = np.stack([np.cos(a), np.sin(a)], -1)
    probes = np.concatenate([np.zeros((1, 2)), 0.5 * r * ring, r * ring])  # [K,2]
    d, _ = support.query((cand[:, None, :] + probes[None]).reshape(-1, 2))
    on = (d.reshape(len(cand), -1) <= plane.spacing).all(1)

    # Free: no opaque Gaussian above the plane within the footprint plus the margin.
    uv, h = plane.to_plane(scene.means.detach().cpu().double().numpy())
    blocking = torch.sigmoid(scene.opacities.detach().cpu()).numpy() > _OPAQUE
    blocking &= (h > plane.thickness) & (h <= height + margin)
    hidden = scene.extras.get("hidden")
    if hidden is not None:
        blocking &= ~hidden.cpu().bool().numpy()
    if exclude is not None:
        blocking &= ~check_mask(scene, exclude).cpu().numpy()
    if blocking.any():
        clear, _ = kdtree(uv[blocking]).query(cand)
    else:
        clear = np.full(len(cand), np.inf)
    free = on & (clear >= r + margin)
    if not free.any():
        why = "nothing on it is free" if on.any() else "the footprint does not fit on it"
        raise ValueError(
            f"no free spot on the support ({size[0]:.3g} x {size[1]:.3g}) for a footprint of "
            f"radius {r:.3g}: {why}"
        )
    fc, fclear = cand[free], clear[free]
    if near is not None:
        target, _ = plane.to_plane(np.asarray(near, dtype=np.float64).reshape(1, 3))
    else:
        # Enough clearance for a hand to reach it, then as central as possible.
        roomy = fclear >= min(float(fclear.max()), 2.0 * (r + margin))
        fc = fc[roomy]
        target = plane.points2d.mean(0, keepdims=True)
    best = fc[int(np.argmin(np.linalg.norm(fc - target, axis=1)))]
    return plane.to_world(best)
