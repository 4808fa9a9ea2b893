"""The camera rig: rings of views around the table at fixed elevations, all looking at the objects."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from ..camera import Camera
from ..conventions import views_per_ring


def intrinsics(width: int, height: int, fov_x_deg: float) -> torch.Tensor:
    """[3,3] centred pinhole with square pixels and horizontal field of view `fov_x_deg`."""
    f = 0.5 * width / math.tan(math.radians(fov_x_deg) / 2)
    return torch.tensor([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]])


def _fits(cam: Camera, points: torch.Tensor, margin: float) -> bool:
    p = points @ cam.viewmat[:3, :3].double().T + cam.viewmat[:3, 3].double()
    if (p[:, 2] <= 0).any():
        return False
    u = cam.fx * p[:, 0] / p[:, 2] + cam.cx
    v = cam.fy * p[:, 1] / p[:, 2] + cam.cy
    mu, mv = margin * cam.width, margin * cam.height
    return bool(((u >= mu) & (u <= cam.width - mu) & (v >= mv) & (v <= cam.height - mv)).all())


def camera_rig(
    target: Sequence[float],  # [3] world point the cameras look at
    n_views: int,
    width: int,
    height: int,
    *,
    fov_x_deg: float,
    elevations_deg: Sequence[float],
    distances: Sequence[float],
    keep_in_view: np.ndarray | None = None,  # [P,3] world points every view should see
    max_distance: float = 1.6,
    margin: float = 0.03,
) -> list[Camera]:
    """`n_views` cameras on rings around `target` (z up), named `frame_00000`, ... in ring order.

    Ring i sits at elevation `elevations_deg[i]`, at `distances[i]` from the target or farther
    (in 5 cm steps, up to `max_distance`) until every view holds `keep_in_view` inside the
    image with a `margin` (fraction of the image size). Rings are rotated against each other by
    a fraction of the azimuth step so views interleave."""
    if n_views < 1:
        raise ValueError(f"n_views must be at least 1, got {n_views}")
    if len(elevations_deg) != len(distances) or not elevations_deg:
        raise ValueError("elevations_deg and distances must be non-empty and of equal length")
    K = intrinsics(width, height, fov_x_deg)
    target_t = torch.as_tensor(target, dtype=torch.float64)
    points = None if keep_in_view is None else torch.as_tensor(keep_in_view, dtype=torch.float64)
    counts = views_per_ring(n_views, elevations_deg)

    def ring_views(ring: int, count: int, el: float, dist: float) -> list[Camera]:
        cams = []
        for j in range(count):
            az = 2 * math.pi * (j + ring / len(counts)) / count
            direction = [math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)]
            eye = target_t + dist * torch.tensor(direction, dtype=torch.float64)
            cams.append(Camera.look_at(eye, target_t, (0.0, 0.0, 1.0), K, width, height))
        return cams

    cams: list[Camera] = []
    for ring, (count, elev, dist) in enumerate(zip(counts, elevations_deg, distances, strict=True)):
        el = math.radians(elev)
        views = ring_views(ring, count, el, dist)
        while points is not None and dist < max_distance - 1e-9:
            if all(_fits(cam, points, margin) for cam in views):
                break
            dist = min(dist + 0.05, max_distance)
            views = ring_views(ring, count, el, dist)
        cams.extend(views)
    return [Camera(c.K, c.viewmat, c.width, c.height, f"frame_{i:05d}") for i, c in enumerate(cams)]
