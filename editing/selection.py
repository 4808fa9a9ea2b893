"""Model-free selection: ray picking, rectangle, box and sphere volumes, grow/shrink, combining.

All functions are pure and return bool masks `[N]` over the scene's Gaussians (file order).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from fields import Camera, GaussianScene, render
from fields.scene import quat_to_rotmat

from .ops import check_mask

# Camera long side used for the visibility depth map of rectangle selection.
_VIS_LONG_SIDE = 256


def pixel_ray(camera: Camera, u: float, v: float) -> tuple[Tensor, Tensor]:
    """World ray through pixel coordinates (u, v) (pixel centres at +0.5): origin [3], unit dir [3]."""
    Kinv = torch.linalg.inv(camera.K.double())
    d_cam = Kinv @ torch.tensor([u, v, 1.0], dtype=torch.float64)
    c2w = torch.linalg.inv(camera.viewmat.double())
    d = c2w[:3, :3] @ d_cam
    return c2w[:3, 3], d / d.norm()


def ray_hits(
    scene: GaussianScene,
    origin: Tensor,  # [3]
    direction: Tensor,  # [3] unit
    *,
    min_alpha: float = 0.2,
) -> tuple[Tensor, Tensor]:
    """Per Gaussian, where along the ray its density peaks and the alpha it reaches there.

    Returns (t [N] ray parameter of the peak, alpha [N] = opacity * exp(-0.5 m²) with m the
    smallest Mahalanobis distance of the ray to the mean); Gaussians behind the origin or below
    `min_alpha` get t = inf."""
    R = quat_to_rotmat(scene.quats)  # [N,3,3] local -> world
    inv_s = torch.exp(-scene.scales)  # [N,3]
    o = origin.to(scene.means)
    d = direction.to(scene.means)
    # Into each Gaussian's whitened frame: p = S^-1 R^T (o - mu), q = S^-1 R^T d.
    p = torch.einsum("nji,nj->ni", R, o - scene.means) * inv_s
    q = torch.einsum("nji,j->ni", R, d) * inv_s
    qq = (q * q).sum(-1).clamp_min(1e-20)
    t = -(p * q).sum(-1) / qq
    m2 = ((p + t[:, None] * q) ** 2).sum(-1)
    alpha = torch.sigmoid(scene.opacities) * torch.exp(-0.5 * m2)
    t = torch.where((t > 0) & (alpha >= min_alpha), t, torch.full_like(t, float("inf")))
    hidden = scene.extras.get("hidden")
    if hidden is not None:
        t = torch.where(hidden.to(t.device), torch.full_like(t, float("inf")), t)
    return t, alpha


def pick(
    scene: GaussianScene,
    camera: Camera,
    u: float,
    v: float,
    *,
    min_alpha: float = 0.2,
) -> int | None:
    """Index of the nearest Gaussian hit by the ray through pixel (u, v), or None."""
    if len(scene) == 0:
        return None
    o, d = pixel_ray(camera, u, v)
    t, _ = ray_hits(scene, o, d, min_alpha=min_alpha)
    i = int(torch.argmin(t))
    return None if not torch.isfinite(t[i]) else i


def _project(scene: GaussianScene, camera: Camera) -> tuple[Tensor, Tensor]:
    """Pixel coordinates uv [N,2] and camera depth z [N] of the means."""
    V = camera.viewmat.to(scene.means)
    pc = scene.means @ V[:3, :3].T + V[:3, 3]
    z = pc[:, 2]
    K = camera.K.to(scene.means)
    uv = (pc[:, :2] / z.clamp_min(1e-9)[:, None]) * torch.stack([K[0, 0], K[1, 1]]) + K[:2, 2]
    return uv, z


def select_rect(
    scene: GaussianScene,
    camera: Camera,
    rect: Sequence[float],  # (u0, v0, u1, v1) pixel coordinates in `camera`
    *,
    through: bool = False,
    near: float = 0.01,
) -> Tensor:
    """Gaussians whose centre projects inside the rectangle. `through=False` keeps only those
    visible from the camera (not behind a rendered surface); `through=True` selects the whole
    frustum column."""
    u0, v0, u1, v1 = (float(x) for x in rect)
    u0, u1 = min(u0, u1), max(u0, u1)
    v0, v1 = min(v0, v1), max(v0, v1)
    uv, z = _project(scene, camera)
    mask = (z > near) & (uv[:, 0] >= u0) & (uv[:, 0] <= u1) & (uv[:, 1] >= v0) & (uv[:, 1] <= v1)
    hidden = scene.extras.get("hidden")
    if hidden is not None:
        mask &= ~hidden.to(mask.device)
    if through or not bool(mask.any()):
        return mask
    return mask & visible(scene, camera, candidates=mask)


def visible(
    scene: GaussianScene,
    camera: Camera,
    *,
    candidates: Tensor | None = None,
    rel_tol: float = 0.03,
) -> Tensor:
    """Bool [N]: Gaussian centres not occluded by the rendered surface of this view.

    Renders expected depth at <= 256 px and compares each centre's depth with the surface depth
    at its pixel, with a tolerance of `rel_tol` of the depth plus the Gaussian's own extent."""
    scale = min(1.0, _VIS_LONG_SIDE / max(camera.width, camera.height))
    cam = camera.scaled(scale) if scale < 1.0 else camera
    shown = scene
    hidden = scene.extras.get("hidden")
    if hidden is not None:
        shown = scene.replace(
            opacities=torch.where(hidden, torch.full_like(scene.opacities, -30.0), scene.opacities)
        )
    with torch.no_grad():
        out = render(shown, cam)
    depth = out.depth[..., 0]  # [h,w]
    alpha = out.alpha[..., 0]
    uv, z = _project(scene, cam)
    ui = uv[:, 0].floor().long().clamp(0, cam.width - 1)
    vi = uv[:, 1].floor().long().clamp(0, cam.height - 1)
    inside = (uv[:, 0] >= 0) & (uv[:, 0] < cam.width) & (uv[:, 1] >= 0) & (uv[:, 1] < cam.height)
    surf = depth[vi, ui]
    covered = alpha[vi, ui] >= 0.5
    extent = 3.0 * torch.exp(scene.scales).amax(-1)
    vis = inside & (z > 0) & (~covered | (z <= surf * (1 + rel_tol) + extent))
    if candidates is not None:
        vis &= candidates.to(vis.device)
    return vis


def select_box(
    scene: GaussianScene,
    T_world_box: Tensor,  # [4,4] rigid pose of the box centre
    half_extents: Sequence[float] | Tensor,  # [3] in the box frame
) -> Tensor:
    """Gaussians whose centre lies inside an oriented box."""
    T = torch.as_tensor(T_world_box, dtype=torch.float64)
    h = torch.as_tensor(half_extents, dtype=torch.float64)
    local = (scene.means.double() - T[:3, 3]) @ T[:3, :3]
    return (local.abs() <= h).all(-1)


def select_sphere(scene: GaussianScene, center: Sequence[float] | Tensor, radius: float) -> Tensor:
    """Gaussians whose centre lies inside a sphere."""
    c = torch.as_tensor(center, dtype=scene.means.dtype, device=scene.device)
    return (scene.means - c).norm(dim=-1) <= float(radius)


def grow(scene: GaussianScene, mask: Tensor, distance: float) -> Tensor:
    """Grow the selection by every Gaussian within `distance` of a selected one; a negative
    distance shrinks it (drops selected Gaussians within |distance| of an unselected one)."""
    from scipy.spatial import cKDTree

    mask = check_mask(scene, mask)
    if distance == 0 or not bool(mask.any()) or bool(mask.all()):
        return mask.clone()
    pts = scene.means.detach().cpu().numpy().astype(np.float64)
    m = mask.cpu().numpy()
    src, dst = (m, ~m) if distance > 0 else (~m, m)
    tree = cKDTree(pts[src])
    dist, _ = tree.query(pts[dst], k=1, distance_upper_bound=abs(float(distance)))
    near = np.isfinite(dist)
    out = m.copy()
    idx = np.flatnonzero(dst)[near]
    out[idx] = distance > 0
    return torch.from_numpy(out).to(mask.device)


def combine(old: Tensor, new: Tensor, mode: str = "replace") -> Tensor:
    """Combine two selections: replace, add (union), subtract, intersect."""
    if old.shape != new.shape:
        raise ValueError(f"selections differ in shape: {tuple(old.shape)} vs {tuple(new.shape)}")
    if mode == "replace":
        return new.clone()
    if mode == "add":
        return old | new
    if mode == "subtract":
        return old & ~new
    if mode == "intersect":
        return old & new
    raise ValueError(f"unknown selection mode {mode!r} (replace, add, subtract, intersect)")
