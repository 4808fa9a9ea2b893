"""Cameras around a selection for text edits: the world's up axis, the selection's bounding
sphere, and views on a ring of elevations above it, far enough that the sphere fills the frame."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from fields import Camera, GaussianScene

from .ops import check_mask

# When the scene does not say: COLMAP / INRIA 3DGS worlds keep COLMAP's y-down axes (the viewer
# makes the same guess without dataset cameras).
_DEFAULT_UP = (0.0, -1.0, 0.0)
_AXES = {"x": 0, "y": 1, "z": 2}

UpSpec = str | Sequence[float] | Tensor


def parse_up(up: UpSpec) -> Tensor:
    """[3] unit float64 vector from "+z", "-y", ... or a 3-vector; ValueError otherwise."""
    if isinstance(up, str):
        s = up.strip().lower()
        sign = -1.0 if s.startswith("-") else 1.0
        axis = s.lstrip("+-")
        if axis not in _AXES:
            raise ValueError(
                f"up axis must be one of +x, -x, +y, -y, +z, -z or a vector, got {up!r}"
            )
        v = torch.zeros(3, dtype=torch.float64)
        v[_AXES[axis]] = sign
        return v
    try:
        v = torch.as_tensor(up, dtype=torch.float64).reshape(3)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"up must be an axis name or a 3-vector, got {up!r}") from None
    n = float(v.norm())
    if not math.isfinite(n) or n == 0:
        raise ValueError(f"up vector must be finite and non-zero, got {up!r}")
    return v / n


def scene_up(scene: GaussianScene) -> Tensor:
    """[3] world up: `scene.meta["up"]` when it holds a valid axis, else -y."""
    up = scene.meta.get("up")
    if up is not None:
        try:
            return parse_up(up)
        except ValueError:
            pass
    return torch.tensor(_DEFAULT_UP, dtype=torch.float64)


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

    Azimuths are stratified over the full circle about `up` (default `scene_up`), elevations
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
    u = scene_up(scene) if up is None else parse_up(up)
    g = torch.Generator().manual_seed(int(seed))
    offset = float(torch.rand((), generator=g, dtype=torch.float64))
    jitter = torch.rand(n, generator=g, dtype=torch.float64)
    heights = torch.rand(n, generator=g, dtype=torch.float64)
    azimuths = 2 * math.pi * ((torch.arange(n) + offset + 0.5 * (jitter - 0.5)) / n)
    elevations = lo_el + (hi_el - lo_el) * heights
    return orbit_cameras(
        centre, radius, u, azimuths, elevations, size=size, fov_deg=fov_deg, margin=margin
    )


def orbit_cameras(
    centre: Tensor,  # [3] world point the cameras look at
    radius: float,  # of the sphere around `centre` that must fit the view
    up: Tensor,  # [3] unit world up
    azimuths: Tensor,  # [n] radians about `up`
    elevations_deg: Tensor,  # [n] degrees above the plane orthogonal to `up`
    *,
    size: int,
    fov_deg: float,
    margin: float = 1.15,
    name: str = "edit",
) -> list[Camera]:
    """Square `size`² cameras on a sphere around `centre`, each looking at it with `up` up, at
    the distance where the sphere of `radius` (times `margin`) just fits the field of view."""
    u = torch.as_tensor(up, dtype=torch.float64)
    # A horizontal basis (e1, e2) orthogonal to up.
    ref = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    if abs(float(ref @ u)) > 0.9:
        ref = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    e1 = torch.linalg.cross(u, ref)
    e1 = e1 / e1.norm()
    e2 = torch.linalg.cross(u, e1)
    distance = margin * radius / math.sin(math.radians(fov_deg) / 2)
    f = 0.5 * size / math.tan(math.radians(fov_deg) / 2)
    K = torch.tensor([[f, 0.0, size / 2], [0.0, f, size / 2], [0.0, 0.0, 1.0]])
    centre = torch.as_tensor(centre, dtype=torch.float64)
    cams = []
    for i, (az, el_deg) in enumerate(zip(azimuths.tolist(), elevations_deg.tolist(), strict=True)):
        el = math.radians(el_deg)
        d = math.cos(el) * (math.cos(az) * e1 + math.sin(az) * e2) + math.sin(el) * u
        eye = centre + distance * d
        cams.append(Camera.look_at(eye, centre, u, K, size, size, name=f"{name}_{i:03d}"))
    return cams
