"""Teacher views for any scene: the cameras 2D teachers (CLIP, SAM, an oracle) look through when
features are distilled without a dataset.

    cams = teacher_cameras(scene, width=448, height=336,
                           cameras=cameras_from_meta(scene.meta))  # None: placed automatically

Cameras recorded with a scene. A scene's sidecar may hold its capture cameras under
`meta["cameras"]`: a JSON list with one object per camera,

    {"name": "frame_00000",          # str, optional
     "width": 640, "height": 480,   # ints, pixels
     "K": [[fx, 0, cx], [0, fy, cy], [0, 0, 1]],   # 3x3 pinhole intrinsics, pixels
     "c2w": [[...4 numbers...] x 4]}                # camera-to-world, OpenCV axes
                                                   # (x right, y down, z forward)

`fields.camera.cameras_to_meta` writes that list and `cameras_from_meta` reads it back
(`fields.Camera` keeps world-to-camera `viewmat`s; the file keeps camera-to-world as viser and
most viewers do).

Automatic placement, when no cameras are given (all steps deterministic given `seed`):

1. the world's up from `fields.conventions.scene_up` and its horizontal basis;
2. the occupied bounds: opacity-weighted 2% / 98% quantiles of the significant splats' centres
   (opacity > 0.1) along (e1, e2, up), so near-transparent splats and floaters do not count;
3. rings of orbit views at several elevations about up, far enough that the bounds' sphere fits
   the frame, plus a top-down view. When the up axis is only the product default (nothing in the
   scene says), the rings are symmetric about the horizon and a bottom-up view is added, so a
   scene whose real up is another axis is still seen from all sides;
4. inside views, for scenes that surround their centre (rooms, unbounded captures): decided by
   how the significant mass is spread over directions seen from the centre (see `surrounds`).
   From the free point nearest the centre the views look outward all around (level, up and
   down), and from a ring around the interior content they look back at it;
5. a coverage pass: the significant splats no view observes (summed blending weight < 0.1, as
   `observed_gaussians` counts) are clustered, and the largest clusters get a view each: closer
   along the line of sight of the view that glimpses them best, or, for clusters no view sees,
   along an open line of sight found by a cube map rendered from the cluster. Clusters no
   candidate observes (splats enclosed by others) are given up on.

Views are square-pixel pinholes of the requested width x height; `fov_deg` spans the shorter
side (inside views use at least 90 degrees).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..camera import Camera
from ..conventions import (
    UpSpec,
    fit_distance,
    horizontal_basis,
    look_at_camera,
    pinhole_K,
    scene_up,
    views_per_ring,
    weighted_quantiles,
)
from ..rendering import accumulate_weights, render
from ..scene import GaussianScene

__all__ = ["surrounds", "teacher_cameras"]

SIGNIFICANT_OPACITY = 0.1  # splats at least this opaque must be observed
OBSERVED_WEIGHT = 0.1  # summed blending weight at which a view observes a splat (as _eval.py)
_INSIDE_FOV_DEG = 90.0
_COS_30 = math.cos(math.radians(30.0))
_MAX_POINTS = 500_000  # geometry and coverage statistics use at most this many splats
_EVAL_MAX_SIDE = 256  # coverage is measured at most at this long side (a conservative estimate)
_TRUSTED_RINGS = (-20.0, 10.0, 35.0, 60.0)  # elevations when the scene says which way is up
_GUESSED_RINGS = (-50.0, -15.0, 15.0, 50.0)  # ... when up is only the default guess


# ---------------------------------------------------------------------- geometry
@dataclass(frozen=True, eq=False)
class _Extent:
    """Where a scene's significant mass lies, in world coordinates."""

    points: np.ndarray  # [M,3] significant splat centres (float64; a sample of big scenes)
    weights: np.ndarray  # [M] their opacities
    index: np.ndarray  # [M] their indices in the scene
    up: np.ndarray  # [3]
    basis: np.ndarray  # [3,3] rows e1, e2, up
    centre: np.ndarray  # [3] centre of the robust bounds
    radius: float  # half diagonal of the robust bounds
    trusted_up: bool  # up came from the scene, the caller or cameras, not the default


def _extent(scene: GaussianScene, up: UpSpec | None) -> _Extent:
    axis = scene_up(scene, override=up)
    e1, e2 = horizontal_basis(axis.vector)
    basis = np.stack([e1, e2, axis.vector])
    means = scene.means.detach().cpu().double().numpy()
    opac = torch.sigmoid(scene.opacities.detach().cpu().double()).numpy()
    index = np.flatnonzero(opac > SIGNIFICANT_OPACITY)
    if len(index) == 0:  # nothing is opaque: frame whatever is there
        index = np.arange(len(scene))
    index = index[:: max(1, len(index) // _MAX_POINTS)]  # an even sample of big scenes
    pts, w = means[index], opac[index]
    local = pts @ basis.T
    if len(pts) >= 100:
        lo, hi = weighted_quantiles(local, w, (0.02, 0.98))
    else:
        lo, hi = local.min(0), local.max(0)
    radius = 0.5 * float(np.linalg.norm(hi - lo))
    if radius <= 0.0:
        radius = 3.0 * float(torch.exp(scene.scales.detach()).max())
    return _Extent(
        points=pts,
        weights=w,
        index=index,
        up=axis.vector,
        basis=basis,
        centre=0.5 * (lo + hi) @ basis,
        radius=max(radius, 1e-12),
        trusted_up=axis.source not in ("default", "estimated"),  # a guess: views from below too
    )


def _direction_bins(d: np.ndarray, basis: np.ndarray, n_az: int = 12) -> np.ndarray:
    """[M] equal-area direction bin (n_az azimuths x 4 bands of sin(elevation)) of vectors d."""
    local = d @ basis.T
    az = np.arctan2(local[:, 1], local[:, 0])
    a = np.floor((az + math.pi) / (2 * math.pi) * n_az).astype(np.int64) % n_az
    s = local[:, 2] / np.maximum(np.linalg.norm(local, axis=1), 1e-300)
    band = np.clip(np.floor((s + 1.0) * 2.0).astype(np.int64), 0, 3)
    return band * n_az + a


def surrounds(
    scene: GaussianScene,
    *,
    up: UpSpec | None = None,
    centre: Any = None,  # [3] world point; default: the centre of the robust bounds
) -> float:
    """Share (0..1) of the directions seen from `centre` in which significant splats lie far
    away (beyond a quarter of the 90% radius of the mass): 48 equal-area direction bins, a bin
    counts when it holds a fifth of an even share of that far mass. Rooms and unbounded captures
    score near 1; an object or a tabletop, seen from its middle, about half or less."""
    ext = _extent(scene, up)
    c = ext.centre if centre is None else np.asarray(centre, dtype=np.float64).reshape(3)
    return _surround_share(ext, c)


def _surround_share(ext: _Extent, centre: np.ndarray) -> float:
    d = ext.points - centre
    r = np.linalg.norm(d, axis=1)
    if len(r) < 10:
        return 0.0
    r90 = float(weighted_quantiles(r, ext.weights, (0.9,))[0])
    far = r > 0.25 * r90
    if not far.any():
        return 0.0
    n_bins = 48
    mass = np.bincount(_direction_bins(d[far], ext.basis), ext.weights[far], minlength=n_bins)
    return float(np.mean(mass >= 0.2 * mass.sum() / n_bins))


def _clearance(points: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """[C] distance from each candidate [C,3] to the nearest of `points` [M,3]."""
    p = torch.from_numpy(points)
    out = []
    for c in torch.from_numpy(np.ascontiguousarray(candidates)).split(64):
        best = torch.full((len(c),), math.inf, dtype=torch.float64)
        for chunk in p.split(100_000):
            best = torch.minimum(best, torch.cdist(c, chunk).amin(1))
        out.append(best)
    return torch.cat(out).numpy()


# ---------------------------------------------------------------------- placement
def _direction(basis: np.ndarray, az: float, el_deg: float) -> np.ndarray:
    el = math.radians(el_deg)
    e1, e2, u = basis
    return math.cos(el) * (math.cos(az) * e1 + math.sin(az) * e2) + math.sin(el) * u


def _orbit_views(
    ext: _Extent,
    n_orbit: int,
    K: Tensor,
    width: int,
    height: int,
    fov: float,
    rng: np.random.Generator,
) -> list[Camera]:
    rings = _TRUSTED_RINGS if ext.trusted_up else _GUESSED_RINGS
    dist = fit_distance(ext.radius, fov, 1.05)
    cams = []
    offset = float(rng.uniform())
    for ring, (count, el) in enumerate(zip(views_per_ring(n_orbit, rings), rings, strict=True)):
        for j in range(count):
            az = 2 * math.pi * (j + (ring / len(rings) + offset) % 1.0) / count
            eye = ext.centre + dist * _direction(ext.basis, az, el)
            cams.append(
                look_at_camera(eye, ext.centre, ext.up, K, width, height, f"orbit_{ring}_{j:02d}")
            )
    cams.append(
        look_at_camera(ext.centre + dist * ext.up, ext.centre, ext.up, K, width, height, "top")
    )
    if not ext.trusted_up:
        eye = ext.centre - dist * ext.up
        cams.append(look_at_camera(eye, ext.centre, ext.up, K, width, height, "bottom"))
    return cams


def _inside_eye(ext: _Extent) -> tuple[np.ndarray, float]:
    """(the free point near the centre with the most room around it, that room)."""
    lo, hi = weighted_quantiles(ext.points @ ext.basis.T, ext.weights, (0.05, 0.95))
    half = 0.5 * (hi - lo)
    steps = np.array([-0.3, -0.15, 0.0, 0.15, 0.3])
    grid = np.stack(np.meshgrid(steps, steps, steps, indexing="ij"), -1).reshape(-1, 3)
    cands = ext.centre + (grid * half) @ ext.basis
    room = _clearance(ext.points, cands)
    # Most room wins; among near-equals, the one nearest the centre.
    score = room - 0.05 * np.linalg.norm(grid, axis=1) * float(half.max())
    best = int(np.argmax(score))
    return cands[best], float(room[best])


def _inside_views(
    ext: _Extent, eye: np.ndarray, width: int, height: int, fov_deg: float, rng: np.random.Generator
) -> list[Camera]:
    fov = max(fov_deg, _INSIDE_FOV_DEG)
    K = pinhole_K(width, height, fov)
    offset = float(rng.uniform()) * 2 * math.pi
    cams = []
    # Outward from the eye: a level ring, a ring looking down and one looking up, and straight
    # up and down.
    for el, count in ((0.0, 8), (-45.0, 4), (45.0, 4)):
        for j in range(count):
            az = offset + 2 * math.pi * (j + (0.5 if el else 0.0)) / count
            target = eye + _direction(ext.basis, az, el)
            cams.append(
                look_at_camera(eye, target, ext.up, K, width, height, f"inside_out_{len(cams):02d}")
            )
    for name, sign in (("inside_up", 1.0), ("inside_down", -1.0)):
        cams.append(look_at_camera(eye, eye + sign * ext.up, ext.up, K, width, height, name))

    # Back at the interior content (what lies well inside the enclosing shell).
    d = np.linalg.norm(ext.points - eye, axis=1)
    r90 = float(weighted_quantiles(d, ext.weights, (0.9,))[0])
    inner = d < 0.5 * r90
    shell = ~inner
    if inner.sum() < 10 or shell.sum() < 10:
        return cams
    content = ext.points[inner]
    target = weighted_quantiles(content, ext.weights[inner], (0.5,))[0]
    if ext.trusted_up:  # from above, all around
        dirs = [
            _direction(ext.basis, offset + 2 * math.pi * (j + 0.25) / 8, 35.0) for j in range(8)
        ]
        dirs += [_direction(ext.basis, offset + 2 * math.pi * j / 4, 65.0) for j in range(4)]
    else:  # up is a guess: from every side (cube faces and corners)
        corners = [np.array(c, dtype=np.float64) / math.sqrt(3) for c in np.ndindex(2, 2, 2)]
        local = [*np.eye(3), *-np.eye(3), *[2 * c - 1 / math.sqrt(3) for c in corners]]
        dirs = [v / np.linalg.norm(v) @ ext.basis for v in local]
    # Far enough that the content fills the frame, at most half way to the shell in that
    # direction (its nearest splats within 25 degrees). The content's own field of view:
    # fewer pixels per splat would leave dense surfaces under-observed.
    spread = float(
        weighted_quantiles(np.linalg.norm(content - target, axis=1), ext.weights[inner], (0.9,))[0]
    )
    fit = fit_distance(spread, fov_deg, 1.05)
    K_in = pinhole_K(width, height, fov_deg)
    rel = ext.points[shell] - target
    dist = np.linalg.norm(rel, axis=1)
    unit = rel / np.maximum(dist, 1e-300)[:, None]
    eyes = []
    for v in dirs:
        cone = unit @ v > math.cos(math.radians(25.0))
        wall = float(np.quantile(dist[cone], 0.05)) if cone.any() else r90
        eyes.append(target + min(fit, 0.5 * wall) * v)
    room = _clearance(ext.points, np.stack(eyes))
    for j, eye_j in enumerate(eyes):
        if room[j] > 0.01 * ext.radius:
            name = f"inside_in_{j:02d}"
            cams.append(look_at_camera(eye_j, target, ext.up, K_in, width, height, name))
    return cams


class _Coverage:
    """Per Gaussian, the best summed blending weight over the views so far (at a capped
    resolution) and which view gave it."""

    def __init__(self, scene: GaussianScene, near: float) -> None:
        self.scene = scene
        self.near = near
        self.best = torch.zeros(len(scene))
        self.best_view = torch.full((len(scene),), -1, dtype=torch.int64)
        self.cameras: list[Camera] = []

    def weights(self, camera: Camera) -> Tensor:  # [N]
        f = min(1.0, _EVAL_MAX_SIDE / max(camera.width, camera.height))
        cam = camera if f >= 1.0 else camera.scaled(f)
        return accumulate_weights(self.scene, cam, near=self.near).total.cpu()

    def add(self, camera: Camera, weights: Tensor | None = None) -> None:
        w = self.weights(camera) if weights is None else weights
        better = w > self.best
        self.best = torch.where(better, w, self.best)
        self.best_view[better] = len(self.cameras)
        self.cameras.append(camera)

    def observed(self) -> np.ndarray:  # [N] bool
        return (self.best >= OBSERVED_WEIGHT).numpy()


def _free_directions(
    scene: GaussianScene, ext: _Extent, target: np.ndarray, skip: float, near: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lines of sight out of `target`: a 32x32-per-face cube map rendered from it, ignoring
    what lies within `skip` (the cluster itself). Returns (unit directions [P,3], alpha [P],
    distance to the first surface [P], inf where the line is free)."""
    side = 32
    K = pinhole_K(side, side, 90.0)
    pix = (torch.arange(side, dtype=torch.float64) + 0.5 - side / 2) / float(K[0, 0])
    y, x = torch.meshgrid(pix, pix, indexing="ij")
    rays = torch.stack([x, y, torch.ones_like(x)], -1).reshape(-1, 3).numpy()  # camera axes
    e1, e2, u = ext.basis
    dirs, alphas, dists = [], [], []
    for fwd in (e1, -e1, e2, -e2, u, -u):
        cam = look_at_camera(target, target + fwd, u if abs(fwd @ u) < 0.5 else e2, K, side, side)
        with torch.no_grad():
            out = render(scene, cam, near=max(skip, near))
        R = cam.c2w.double().numpy()[:3, :3]
        world = rays @ R.T
        norm = np.linalg.norm(world, axis=1)
        a = out.alpha.reshape(-1).double().numpy()
        z = out.depth.reshape(-1).double().numpy()
        dirs.append(world / norm[:, None])
        alphas.append(a)
        dists.append(np.where(a < 0.5, np.inf, z * norm))
    return np.concatenate(dirs), np.concatenate(alphas), np.concatenate(dists)


def _largest_cluster(points: np.ndarray, weights: np.ndarray, voxel: float) -> np.ndarray:
    """[M] bool: the points within 1.5 voxels of the centroid of the heaviest voxel."""
    keys = np.floor(points / voxel).astype(np.int64)
    _, inv, _ = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    inv = inv.reshape(-1)
    heaviest = int(np.argmax(np.bincount(inv, weights)))
    seed = points[inv == heaviest].mean(0)
    return np.linalg.norm(points - seed, axis=1) <= 1.5 * voxel


def _chain(first: list, more: Callable[[], list]) -> Iterator:
    """`first`, then (only when asked for) the items of `more()`."""
    yield from first
    yield from more()


def _open_lines(
    scene: GaussianScene,
    ext: _Extent,
    coverage: _Coverage,
    target: np.ndarray,
    spread: float,
    close: float,
) -> list[tuple[np.ndarray, float]]:
    """Up to three (direction, distance) camera placements on open lines of sight out of a
    cluster: room for the camera first, then upward (when up is known) or outward from the
    scene's centre; directions at least 30 degrees apart, at most `close` away."""
    dirs, _, free = _free_directions(scene, ext, target, 1.2 * spread, coverage.near)
    reach = np.minimum(close, 0.7 * free)
    if ext.trusted_up:
        prefer = ext.up
    else:
        prefer = target - ext.centre
        n = float(np.linalg.norm(prefer))
        prefer = prefer / n if n > 1e-9 * ext.radius else ext.up
    score = reach / close + 0.3 * (dirs @ prefer)
    chosen: list[int] = []
    for k in np.argsort(-score, kind="stable"):
        if len(chosen) == 3:
            break
        if reach[k] >= spread and all(dirs[k] @ dirs[j] < _COS_30 for j in chosen):
            chosen.append(int(k))
    return [(dirs[k], float(reach[k])) for k in chosen]


def _cover(
    scene: GaussianScene,
    ext: _Extent,
    coverage: _Coverage,
    width: int,
    height: int,
    fov_deg: float,
    min_coverage: float,
    max_extra: int,
) -> list[Camera]:
    """Views aimed at the largest clusters of significant splats no view observes yet.

    Clusters that some view already glimpses (summed weight above 0.5% of a pixel, below the
    observed threshold) come first: a camera on the line of sight of the view that sees them
    best, close enough that the cluster fills the frame. Otherwise (and for clusters no view
    sees at all, which come next) a cube map rendered from the cluster's centre finds open
    lines of sight (`_open_lines`) and a camera on one looks back. A cluster no candidate
    observes is given up (enclosed by other splats)."""
    K = pinhole_K(width, height, fov_deg)
    voxel = ext.radius / 10.0
    given_up = np.zeros(len(ext.index), dtype=bool)
    failures = 0
    cams: list[Camera] = []
    while len(cams) < max_extra and failures <= max_extra // 2:
        seen = coverage.observed()[ext.index]
        if seen.mean() >= min_coverage:
            break
        best = coverage.best[ext.index].numpy()
        glimpsed = ~seen & ~given_up & (best > 0.005)
        todo = glimpsed if glimpsed.sum() >= 3 else ~seen & ~given_up
        if todo.sum() < 3:
            break
        pts = ext.points[todo]
        in_cluster = _largest_cluster(pts, ext.weights[todo], voxel)
        cluster = pts[in_cluster]
        cluster_idx = ext.index[todo][in_cluster]
        target = cluster.mean(0)
        spread = float(np.quantile(np.linalg.norm(cluster - target, axis=1), 0.9))
        spread = max(spread, 0.1 * voxel)
        close = fit_distance(spread, fov_deg, 1.2)
        options: list[tuple[np.ndarray, float]] = []
        if todo is glimpsed:  # closer along the line of sight of the view that sees it best
            views = coverage.best_view[torch.from_numpy(cluster_idx)].numpy()
            eye0 = coverage.cameras[int(np.argmax(np.bincount(views[views >= 0])))].center
            d = eye0.double().numpy() - target
            dist = float(np.linalg.norm(d))
            options.append((d / dist, min(close, 0.9 * dist)))
        accepted = None
        more = functools.partial(_open_lines, scene, ext, coverage, target, spread, close)
        for direction, dist in _chain(options, more):
            eye = target + dist * direction
            cam = look_at_camera(eye, target, ext.up, K, width, height, f"cover_{len(cams):02d}")
            w = coverage.weights(cam)
            if int((w[cluster_idx] >= OBSERVED_WEIGHT).sum()) >= max(3, 0.2 * len(cluster)):
                accepted = (cam, w)
                break
        if accepted is None:
            given_up[np.flatnonzero(todo)[in_cluster]] = True
            failures += 1
            continue
        coverage.add(*accepted)
        cams.append(accepted[0])
    return cams


def teacher_cameras(
    scene: GaussianScene,
    *,
    width: int,
    height: int,
    cameras: Sequence[Camera] | None = None,
    n_orbit: int = 24,
    inside: bool = True,
    up: UpSpec | None = None,
    seed: int = 0,
    min_coverage: float = 0.98,
    max_extra: int = 8,
    fov_deg: float = 60.0,
) -> list[Camera]:
    """Cameras for 2D teachers at `width` x `height` pixels (see the module docstring).

    `cameras` given (e.g. `cameras_from_meta(scene.meta)`): each is rescaled, aspect kept, to
    fit inside width x height, and they are returned as they are. Otherwise views are placed
    around (and, with `inside`, inside) the scene: `n_orbit` orbit views on rings about the up
    axis (`up`, else `fields.conventions.scene_up`), a top-down view (and a bottom-up one when
    up is only the default guess), inside views for scenes that surround their centre, then up to
    `max_extra` views aimed at what no view observes yet, until `min_coverage` of the
    significant splats (opacity > 0.1) are observed. `fov_deg` spans the shorter image side.

    Views are named by kind: "orbit_<ring>_<j>", "top", "bottom", "inside_out_<j>",
    "inside_up", "inside_down", "inside_in_<j>", "cover_<j>". Render them with a near plane
    below the scene's scale: `render`'s default 1 cm clips a scene a few centimetres across
    (this function measures coverage with near = min(1 cm, radius / 1000))."""
    width, height = int(width), int(height)
    if width < 8 or height < 8:
        raise ValueError(f"teacher views need at least 8x8 pixels, got {width}x{height}")
    if cameras is not None:
        cams = list(cameras)
        if not cams:
            raise ValueError("cameras is empty: pass None to place views automatically")
        return [c.scaled(min(width / c.width, height / c.height)) for c in cams]
    if len(scene) == 0:
        raise ValueError("the scene holds no Gaussians: there is nothing to look at")
    if n_orbit < 1:
        raise ValueError(f"n_orbit must be at least 1, got {n_orbit}")
    if not 0.0 <= min_coverage <= 1.0:
        raise ValueError(f"min_coverage must be in [0, 1], got {min_coverage}")
    if max_extra < 0:
        raise ValueError(f"max_extra must be >= 0, got {max_extra}")
    K = pinhole_K(width, height, fov_deg)  # also checks fov_deg
    rng = np.random.default_rng(int(seed))
    scene = scene.detach()
    ext = _extent(scene, up)

    cams = _orbit_views(ext, n_orbit, K, width, height, fov_deg, rng)
    if inside and _surround_share(ext, ext.centre) >= 0.75:
        eye, room = _inside_eye(ext)
        if room > 0.02 * ext.radius:
            cams += _inside_views(ext, eye, width, height, fov_deg, rng)

    # Scale-aware near plane: a scene a millimetre across must not be clipped by render's 1 cm.
    coverage = _Coverage(scene, near=min(0.01, 1e-3 * ext.radius))
    for cam in cams:
        coverage.add(cam)
    if max_extra:
        cams += _cover(scene, ext, coverage, width, height, fov_deg, min_coverage, max_extra)
    return cams
