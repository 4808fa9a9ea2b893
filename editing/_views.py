"""Cameras around a selection for text edits: the selection's bounding sphere and views on a ring
of elevations above it (about the world's up, `fields.conventions`), far enough that the sphere
fills the frame."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from fields import Camera, GaussianScene
from fields.conventions import UpSpec, orbit_cameras, up_vector

from .ops import check_mask


def selection_sphere(scene: GaussianScene, mask: Tensor) -> tuple[Tensor, float]:
    """Centre [3] (float64) and radius of a sphere holding the selected Gaussians' means plus
    three standard deviations of their typical splat."""
    mask = check_mask(scene, mask)
    if not bool(mask.any()):
        raise ValueError("the selection is empty: select the Gaussians to edit first")
    pts = scene.means.detach()[mask].double().cpu()  # [M,3]
    lo, hi = pts.amin(0), pts.amax(0)
    centre = 0.5 * (lo + hi)
    reach = float((pts - centre).norm(dim=-1).max())
    splat = float(scene.scales.detach()[mask].exp().amax(-1).median())
    return centre, max(reach + 3.0 * splat, 1e-3)


def sample_edit_views(
    scene: GaussianScene,
    mask: Tensor,  # [N] bool selection
    n: int,
    *,
    size: int = 128,
    seed: int = 0,
    up: UpSpec | None = None,
    fov_deg: float = 50.0,
    elevation_deg: tuple[float, float] = (15.0, 60.0),
    margin: float = 1.15,
) -> list[Camera]:
    """`n` square `size`² cameras looking at the selection's bounding sphere from all around.

    Azimuths are stratified over the full circle about `up` (default `fields.conventions.up_vector`), elevations
    uniform in `elevation_deg` above the plane orthogonal to up, and the distance is the one at
    which the sphere (times `margin`) just fits the vertical field of view `fov_deg`."""
    if n < 1:
        raise ValueError(f"need at least one view, got n={n}")
    if size < 8:
        raise ValueError(f"view size must be at least 8 pixels, got {size}")
    if not 1.0 <= fov_deg <= 170.0:
        raise ValueError(f"fov_deg must be in [1, 170], got {fov_deg}")
    lo_el, hi_el = (float(x) for x in elevation_deg)
    if not -89.0 <= lo_el <= hi_el <= 89.0:
        raise ValueError(f"elevation_deg must satisfy -89 <= lo <= hi <= 89, got {elevation_deg}")
    if margin <= 0:
        raise ValueError(f"margin must be positive, got {margin}")
    centre, radius = selection_sphere(scene, mask)
    u = up_vector(scene, override=up)
    g = torch.Generator().manual_seed(int(seed))
    offset = float(torch.rand((), generator=g, dtype=torch.float64))
    jitter = torch.rand(n, generator=g, dtype=torch.float64)
    heights = torch.rand(n, generator=g, dtype=torch.float64)
    azimuths = 2 * math.pi * ((torch.arange(n) + offset + 0.5 * (jitter - 0.5)) / n)
    elevations = lo_el + (hi_el - lo_el) * heights
    return orbit_cameras(
        centre,
        radius,
        u,
        azimuths,
        elevations,
        width=size,
        height=size,
        fov_deg=fov_deg,
        margin=margin,
        name="edit",
    )
