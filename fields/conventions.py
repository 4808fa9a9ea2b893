"""One home for the world's up axis and for how cameras frame a scene.

Up axis. A trained scene file rarely says which way is up, so every tool asks `scene_up`, which
decides in this order:

1. an explicit override (a CLI flag, a config field);
2. the scene's own record: `scene.meta["up"]` (scenelab's synthetic worlds and bundled assets
   write it) or the sidecar spelling `meta["up_axis"]`;
3. the mean up axis (-y in OpenCV camera axes) of the capture's cameras, when they broadly agree
   — people hold cameras upright, which is how nerfstudio orients captures too;
4. `DEFAULT_UP` = -y. Most scenes come out of COLMAP and the INRIA 3DGS trainer, which keep
   COLMAP's world axes; COLMAP's world is the first camera's frame, whose y points down in the
   image, so for a capture shot with an upright camera the world's up is about -y. One default
   for the whole product keeps the viewer, edits, insertion and grasps in agreement.

Up specs: "+z", "-y", "z" (sign optional, case-insensitive), "0,0,1" / "0 0 1" (as typed on a
command line) or any non-zero 3-vector (list, tuple, numpy array, torch tensor); `parse_up`
turns them into a unit float64 vector.

Framing. `horizontal_basis(up)` gives every orbit the same (e1, e2) with e1 x e2 = up; azimuth 0
points along e1 (the world x axis projected onto the horizontal plane, or y when up is x).
`robust_bounds` / `framing_sphere` ignore near-transparent splats and outliers (opacity-weighted
quantiles), so a few floaters far away do not shrink the scene to a dot. Cameras are square-pixel
pinholes in `fields.Camera` conventions (viewmat world-to-camera, OpenCV axes); a `fov_deg`
here spans the image's shorter side.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from .camera import Camera
from .scene import GaussianScene

UpSource = Literal["override", "scene", "cameras", "default"]
UpSpec = str | Sequence[float] | np.ndarray | Tensor

DEFAULT_UP = np.array([0.0, -1.0, 0.0])
DEFAULT_UP.setflags(write=False)
DEFAULT_FOV_DEG = 50.0

_AXES = {"x": 0, "y": 1, "z": 2}
# Dataset cameras agree on up when the norm of the mean of their unit up axes exceeds this.
_CAMERAS_AGREE = 0.5
# Splats less opaque than this do not count towards a scene's extent.
_MIN_OPACITY = 0.05
# Quantiles on fewer Gaussians than this are noise: use the exact bounds.
_MIN_FOR_QUANTILES = 100
_MAX_QUANTILE_SAMPLES = 1_000_000


# ---------------------------------------------------------------------- up axis
@dataclass(frozen=True, eq=False)
class UpAxis:
    """The world's up direction and where it came from."""

    vector: np.ndarray  # [3] unit float64
    source: UpSource  # "override" | "scene" | "cameras" | "default"

    @property
    def label(self) -> str:
        """ "+z", "-y", ... for axis-aligned vectors, else the rounded components."""
        return format_up(self.vector)


def parse_up(spec: UpSpec) -> np.ndarray:
    """[3] unit float64 up vector from "+z", "-y", "z", "0,0,1", ... or a non-zero finite
    3-vector.

    Raises `ValueError` naming the problem for anything else. Reads what `format_up` writes."""
    if isinstance(spec, str):
        bare = spec.strip().strip("()[]").replace(",", " ").split()
    if isinstance(spec, str) and len(bare) == 3:
        try:  # "0,0,1", "0 0 1" (as typed on a command line) or "(0.00, 0.00, 1.00)"
            spec = [float(t) for t in bare]
        except ValueError:
            pass
    if isinstance(spec, str):
        s = spec.strip().lower()
        sign = -1.0 if s.startswith("-") else 1.0
        axis = s[1:] if s[:1] in "+-" and s else s
        if axis not in _AXES:
            raise ValueError(
                f"up axis must be one of +x, -x, +y, -y, +z, -z (sign optional) or a 3-vector, "
                f"got {spec!r}"
            )
        v = np.zeros(3)
        v[_AXES[axis]] = sign
        return v
    try:
        if isinstance(spec, Tensor):
            v = spec.detach().cpu().double().numpy().reshape(-1)
        else:
            v = np.asarray(spec, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(
            f"up must be an axis name such as '+z' or a 3-vector, got {spec!r}"
        ) from None
    if v.shape != (3,):
        raise ValueError(f"up must be a 3-vector, got {v.size} values ({spec!r})")
    n = float(np.linalg.norm(v))
    if not math.isfinite(n) or n < 1e-12:
        raise ValueError(f"up vector must be finite and non-zero, got {spec!r}")
    return v / n


def format_up(up: UpSpec) -> str:
    """ "+z", "-y", ... when `up` is an axis, else "(x, y, z)" with two decimals."""
    v = parse_up(up)
    for i, name in enumerate("xyz"):
        if abs(abs(v[i]) - 1.0) < 1e-6:
            return ("+" if v[i] > 0 else "-") + name
    return "(" + ", ".join(f"{x:.2f}" for x in v) + ")"


def cameras_up(cameras: Sequence[Camera]) -> np.ndarray | None:
    """[3] unit mean up axis (-y of each camera, OpenCV axes) of `cameras`, or None when there
    are none or they disagree (norm of the mean of their unit up axes <= 0.5)."""
    if not cameras:
        return None
    ups = np.stack([-c.c2w.double()[:3, 1].numpy() for c in cameras])  # [C,3]
    mean = ups.mean(0)
    n = float(np.linalg.norm(mean))
    return mean / n if n > _CAMERAS_AGREE else None


def scene_up(
    scene: GaussianScene,
    cameras: Sequence[Camera] = (),
    override: UpSpec | None = None,
) -> UpAxis:
    """The world's up: `override` -> `scene.meta["up"]` (or `meta["up_axis"]`) -> the mean up
    of `cameras` when they agree -> `DEFAULT_UP` (-y); see the module docstring.

    An invalid `override` raises `ValueError`; an unreadable meta value is skipped with a
    warning (the file cannot be fixed from here)."""
    if override is not None:
        return UpAxis(parse_up(override), "override")
    for key in ("up", "up_axis"):
        value = scene.meta.get(key)
        if value is None:
            continue
        try:
            return UpAxis(parse_up(value), "scene")
        except ValueError as e:
            warnings.warn(f"ignoring the scene's meta[{key!r}]: {e}", stacklevel=2)
    mean = cameras_up(cameras)
    if mean is not None:
        return UpAxis(mean, "cameras")
    return UpAxis(DEFAULT_UP.copy(), "default")


def up_vector(scene: GaussianScene, override: UpSpec | None = None) -> np.ndarray:
    """[3] unit float64: `scene_up(scene, override=override).vector`."""
    return scene_up(scene, override=override).vector


def horizontal_basis(up: UpSpec) -> tuple[np.ndarray, np.ndarray]:
    """(e1, e2): unit vectors orthogonal to `up` with e1 x e2 = up (right-handed). e1 is the
    world x axis projected onto the horizontal plane (y when up is within ~25 deg of x)."""
    u = parse_up(up)
    a = np.array([1.0, 0.0, 0.0]) if abs(u[0]) <= 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = a - (a @ u) * u
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(u, e1)
    return e1, e2 / np.linalg.norm(e2)


# ---------------------------------------------------------------------- extent
def weighted_quantiles(values: np.ndarray, weights: np.ndarray, qs: Sequence[float]) -> np.ndarray:
    """[len(qs), ...] quantiles of `values` [M] or [M,D] (per column) under `weights` [M]."""
    values = np.asarray(values, dtype=np.float64)
    flat = values.ndim == 1
    if flat:
        values = values[:, None]
    w = np.asarray(weights, dtype=np.float64)
    out = np.empty((len(qs), values.shape[1]))
    for d in range(values.shape[1]):
        order = np.argsort(values[:, d], kind="stable")
        cw = np.cumsum(w[order])
        cw /= cw[-1]
        idx = np.searchsorted(cw, np.asarray(qs, dtype=np.float64), side="left")
        out[:, d] = values[order[np.minimum(idx, len(order) - 1)], d]
    return out[:, 0] if flat else out


def significant_points(
    scene: GaussianScene, min_opacity: float = _MIN_OPACITY
) -> tuple[np.ndarray, np.ndarray]:
    """(means [M,3] float64, opacities [M]) of the Gaussians at least `min_opacity` opaque
    (every Gaussian when none is), subsampled to at most a million."""
    if len(scene) == 0:
        raise ValueError("an empty scene has no extent")
    means = scene.means.detach().cpu().double().numpy()
    opac = torch.sigmoid(scene.opacities.detach().cpu().double()).numpy()
    keep = opac >= min_opacity
    if keep.any():
        means, opac = means[keep], opac[keep]
    step = max(1, len(means) // _MAX_QUANTILE_SAMPLES)
    return means[::step], opac[::step]


def robust_bounds(
    scene: GaussianScene,
    quantile: float = 0.02,
    *,
    axes: np.ndarray | None = None,  # [D,3] rows: directions to measure along (default: world)
    min_opacity: float = _MIN_OPACITY,
) -> tuple[np.ndarray, np.ndarray]:
    """(lo [D], hi [D]) float64: opacity-weighted `quantile` / 1 - `quantile` of the means of
    the Gaussians at least `min_opacity` opaque, along `axes` (world x, y, z by default). Exact
    min / max for scenes of fewer than 100 such Gaussians."""
    if not 0.0 <= quantile < 0.5:
        raise ValueError(f"quantile must be in [0, 0.5), got {quantile}")
    pts, w = significant_points(scene, min_opacity)
    if axes is not None:
        pts = pts @ np.asarray(axes, dtype=np.float64).T
    if quantile == 0.0 or len(pts) < _MIN_FOR_QUANTILES:
        return pts.min(0), pts.max(0)
    lo, hi = weighted_quantiles(pts, w, (quantile, 1.0 - quantile))
    return lo, hi


def framing_sphere(scene: GaussianScene, quantile: float = 0.02) -> tuple[np.ndarray, float]:
    """(centre [3], radius): the sphere around `robust_bounds` (its half diagonal, at least three
    standard deviations of the largest splat when the bounds collapse to a point)."""
    lo, hi = robust_bounds(scene, quantile)
    centre = 0.5 * (lo + hi)
    radius = 0.5 * float(np.linalg.norm(hi - lo))
    if radius <= 0.0:
        radius = 3.0 * float(torch.exp(scene.scales.detach()).max()) if len(scene) else 0.0
    return centre, max(radius, 1e-9)


# ---------------------------------------------------------------------- cameras
def pinhole_K(width: int, height: int, fov_deg: float) -> Tensor:
    """[3,3] centred square-pixel pinhole whose field of view across the shorter side is
    `fov_deg`."""
    if not 1.0 <= fov_deg <= 170.0:
        raise ValueError(f"fov_deg must be in [1, 170], got {fov_deg}")
    if int(width) < 1 or int(height) < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    f = 0.5 * min(width, height) / math.tan(math.radians(fov_deg) / 2)
    return torch.tensor([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]])


def look_at_camera(
    eye: Any,  # [3] world
    target: Any,  # [3] world
    up: UpSpec,
    K: Tensor,  # [3,3]
    width: int,
    height: int,
    name: str = "",
) -> Camera:
    """`Camera.look_at`, except that looking straight along `up` (a top-down view) is allowed:
    the image's up then follows the horizontal basis e2 (e1 to the right)."""
    eye = np.asarray(eye, dtype=np.float64).reshape(3)
    target = np.asarray(target, dtype=np.float64).reshape(3)
    u = parse_up(up)
    fwd = target - eye
    norm = float(np.linalg.norm(fwd))
    if norm <= 0.0 or not math.isfinite(norm):
        raise ValueError("look_at_camera: eye and target coincide")
    if abs(float(fwd @ u)) / norm > 1.0 - 1e-6:
        _, e2 = horizontal_basis(u)
        u = e2 if fwd @ u < 0 else -e2  # looking down: e2 is image up; looking up: -e2
    return Camera.look_at(
        torch.as_tensor(eye), torch.as_tensor(target), torch.as_tensor(u), K, width, height, name
    )


def fit_distance(radius: float, fov_deg: float, margin: float = 1.15) -> float:
    """Distance from a sphere's centre at which the sphere (times `margin`) just fits a field of
    view of `fov_deg`."""
    return margin * float(radius) / math.sin(math.radians(fov_deg) / 2)


def orbit_cameras(
    centre: Any,  # [3] world point the cameras look at
    radius: float,  # of the sphere around `centre` that must fit the view
    up: UpSpec,  # world up
    azimuths: Any,  # [n] radians about `up`, 0 along e1 of `horizontal_basis(up)`
    elevations_deg: Any,  # [n] degrees above the plane orthogonal to `up`
    *,
    width: int,
    height: int,
    fov_deg: float,
    margin: float = 1.15,
    distance: float | None = None,  # default: `fit_distance(radius, fov_deg, margin)`
    name: str = "orbit",
) -> list[Camera]:
    """Cameras on a sphere around `centre`, each looking at it with `up` up, at the distance
    where the sphere of `radius` (times `margin`) just fits the field of view `fov_deg` (across
    the shorter image side). Named f"{name}_{i:03d}"."""
    u = parse_up(up)
    e1, e2 = horizontal_basis(u)
    az = np.asarray(torch.as_tensor(azimuths, dtype=torch.float64).cpu(), dtype=np.float64)
    el = np.asarray(torch.as_tensor(elevations_deg, dtype=torch.float64).cpu(), dtype=np.float64)
    az, el = az.reshape(-1), el.reshape(-1)
    if az.shape != el.shape:
        raise ValueError(f"got {az.size} azimuths but {el.size} elevations")
    dist = fit_distance(radius, fov_deg, margin) if distance is None else float(distance)
    K = pinhole_K(width, height, fov_deg)
    c = np.asarray(torch.as_tensor(centre, dtype=torch.float64).cpu(), dtype=np.float64)
    cams = []
    for i, (a, e) in enumerate(zip(az.tolist(), np.radians(el).tolist(), strict=True)):
        d = math.cos(e) * (math.cos(a) * e1 + math.sin(a) * e2) + math.sin(e) * u
        cams.append(look_at_camera(c + dist * d, c, u, K, width, height, name=f"{name}_{i:03d}"))
    return cams


def framing_view(
    scene: GaussianScene, up: UpSpec, fov_deg: float = DEFAULT_FOV_DEG
) -> tuple[np.ndarray, np.ndarray]:
    """(position [3], look_at [3]) of a camera that sees the whole scene (its `framing_sphere`)
    from above and to the side, with a vertical field of view `fov_deg`."""
    if len(scene) == 0:
        return np.array([3.0, 3.0, 3.0]), np.zeros(3)
    u = parse_up(up)
    centre, radius = framing_sphere(scene)
    e1, e2 = horizontal_basis(u)
    direction = 0.75 * e1 + 0.45 * e2 + 0.55 * u
    direction /= np.linalg.norm(direction)
    return centre + fit_distance(radius, fov_deg, 1.1) * direction, centre


def views_per_ring(n_views: int, elevations_deg: Sequence[float]) -> list[int]:
    """Split `n_views` over orbit rings in proportion to each ring's circumference (largest
    remainder), so that neighbouring views are about equally far apart on every ring."""
    weights = np.cos(np.radians(np.asarray(elevations_deg, dtype=np.float64)))
    exact = n_views * weights / weights.sum()
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts), kind="stable")[: n_views - counts.sum()]:
        counts[i] += 1
    return counts.tolist()
