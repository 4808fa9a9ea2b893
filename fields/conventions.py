"""One home for the world's up axis and for how cameras frame a scene.

Up axis. A trained scene file rarely says which way is up, so every tool asks `scene_up`, which
decides in this order:

1. an explicit override (a CLI flag, a config field);
2. the scene's own record: `scene.meta["up"]` (scenelab's synthetic worlds and bundled assets
   write it) or the sidecar spelling `meta["up_axis"]`;
3. the mean up axis (-y in OpenCV camera axes) of the capture's cameras (those passed in, else
   those the sidecar records in `meta["cameras"]`), when they broadly agree — people hold
   cameras upright, which is how nerfstudio orients captures too;
4. an estimate from the splats themselves (`estimate_up`): the dominant support plane (a large,
   flat, well-populated plane found from the flat splats' normals and RANSAC on the centres), its
   up side the one that holds the scene's mass and leaves free space above the plane (things
   rest on a floor or a table; a table's underside is close below it) — used when its
   confidence reaches `ESTIMATE_MIN_CONFIDENCE`;
5. `DEFAULT_UP` = -y. Most scenes come out of COLMAP and the INRIA 3DGS trainer, which keep
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

from .camera import Camera, cameras_from_meta
from .scene import GaussianScene

UpSource = Literal["override", "scene", "cameras", "estimated", "default"]
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
# Quantiles of a stride sample of this many: the 2% quantile to ~3e-4 (a 3M scene opens faster).
_MAX_QUANTILE_SAMPLES = 250_000


# ---------------------------------------------------------------------- up axis
@dataclass(frozen=True, eq=False)
class UpAxis:
    """The world's up direction and where it came from."""

    vector: np.ndarray  # [3] unit float64
    source: UpSource  # "override" | "scene" | "cameras" | "estimated" | "default"
    confidence: float = 1.0  # of an "estimated" up (`UpEstimate.confidence`); 1 otherwise

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
    *,
    estimate: bool = True,
) -> UpAxis:
    """The world's up: `override` -> `scene.meta["up"]` (or `meta["up_axis"]`) -> the mean up
    of `cameras` (else of the sidecar's `meta["cameras"]`) when they agree -> `estimate_up` when
    confident (`estimate=False` skips it) -> `DEFAULT_UP` (-y); see the module docstring.

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
    if not cameras and scene.meta.get("cameras") is not None:
        try:
            cameras = cameras_from_meta(scene.meta) or ()
        except ValueError as e:
            warnings.warn(f"ignoring the scene's recorded cameras: {e}", stacklevel=2)
    mean = cameras_up(cameras)
    if mean is not None:
        return UpAxis(mean, "cameras")
    if estimate:
        guess = estimate_up(scene)
        if guess is not None and guess.confidence >= ESTIMATE_MIN_CONFIDENCE:
            return UpAxis(guess.vector.copy(), "estimated", guess.confidence)
    return UpAxis(DEFAULT_UP.copy(), "default")


def up_vector(scene: GaussianScene, override: UpSpec | None = None) -> np.ndarray:
    """[3] unit float64: `scene_up(scene, override=override).vector`."""
    return scene_up(scene, override=override).vector


# ---------------------------------------------------------------------- up from the splats
@dataclass(frozen=True, eq=False)
class UpEstimate:
    """The up axis read from the splats' geometry (`estimate_up`)."""

    vector: np.ndarray  # [3] unit float64
    confidence: float  # 0 (no evidence) .. 1 (a dominant, well-populated support plane)
    plane_point: np.ndarray  # [3] a point on the support plane (its inliers' centroid)
    support: float  # share of the sampled opaque splats that lie on the plane
    evidence: str  # what decided it, for notes and logs


# Confidence from which `scene_up` trusts an estimate over the default.
ESTIMATE_MIN_CONFIDENCE = 0.35
_EST_MAX_POINTS = 30_000
_EST_MIN_POINTS = 200
_EST_OPAQUE = 0.2
_EST_FLAT_RATIO = 0.5  # a splat is flat when its smallest scale is below this x its middle one
_EST_CONE_DEG = 12.0  # flat normals within this of a direction count for it
_EST_RANSAC = 160
_EST_TOL = 0.004  # slab half-thickness, as a fraction of the scene's robust diameter
# One estimate per geometry: id(means) -> (weakrefs to means, quats, scales, result).
_EST_CACHE: dict[int, tuple[Any, Any, Any, UpEstimate | None]] = {}


def estimate_up(
    scene: GaussianScene, *, max_points: int = _EST_MAX_POINTS, seed: int = 0
) -> UpEstimate | None:
    """Up from the splats alone: the dominant support plane (candidate normals from the modes of
    the flat splats' normals, RANSAC planes through the centres and the cloud's thinnest axis;
    the winner holds the most splats in a thin slab relative to the slab density elsewhere) and
    the side of it that is up (the side holding the scene's mass and with free space above the
    plane). None for scenes of fewer than 200 Gaussians. Seeded and cached per geometry, so every
    tool asking about the same scene gets the same answer cheaply."""
    key = id(scene.means)
    hit = _EST_CACHE.get(key)
    if (
        hit is not None
        and hit[0]() is scene.means
        and hit[1]() is scene.quats
        and hit[2]() is scene.scales
        and (max_points, seed) == (_EST_MAX_POINTS, 0)
    ):
        return hit[3]
    result = _estimate_up(scene, max_points=max_points, seed=seed)
    if (max_points, seed) == (_EST_MAX_POINTS, 0):
        import weakref

        try:
            refs = tuple(weakref.ref(t) for t in (scene.means, scene.quats, scene.scales))
        except TypeError:
            return result
        if len(_EST_CACHE) > 32:
            _EST_CACHE.clear()
        _EST_CACHE[key] = (*refs, result)
    return result


def _fibonacci_hemisphere(n: int) -> np.ndarray:  # [n,3] unit, z >= 0
    i = np.arange(n) + 0.5
    z = 1.0 - i / n
    r = np.sqrt(np.maximum(0.0, 1.0 - z * z))
    phi = i * math.pi * (3.0 - math.sqrt(5.0))
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], 1)


def _distinct(dirs: list[np.ndarray], d: np.ndarray, min_deg: float = 10.0) -> bool:
    return all(abs(float(d @ e)) < math.cos(math.radians(min_deg)) for e in dirs)


def _estimate_up(scene: GaussianScene, *, max_points: int, seed: int) -> UpEstimate | None:
    from .scene import quat_to_rotmat

    n_all = len(scene)
    if n_all < _EST_MIN_POINTS:
        return None
    rng = np.random.default_rng(seed)
    opac = torch.sigmoid(scene.opacities.detach().cpu().double()).numpy()
    idx = np.flatnonzero(opac >= _EST_OPAQUE)
    if len(idx) < _EST_MIN_POINTS:
        idx = np.arange(n_all)
    if len(idx) > max_points:
        idx = np.sort(rng.choice(idx, max_points, replace=False))
    sel = torch.from_numpy(idx)
    P = scene.means.detach().cpu()[sel].double().numpy()  # [M,3]
    # Floaters: far from the bulk (beyond 1.5x the 95th-percentile distance from the median).
    r = np.linalg.norm(P - np.median(P, 0), axis=1)
    r95 = float(np.quantile(r, 0.95))
    keep = r <= 1.5 * r95 + 1e-12
    P, sel = P[keep], sel[torch.from_numpy(keep)]
    diam = 2.0 * r95
    if len(P) < _EST_MIN_POINTS or not diam > 0:
        return None
    tol = _EST_TOL * diam

    # Flat splats' normals (the axis of the smallest scale).
    log_s = scene.scales.detach().cpu()[sel].double()
    R = quat_to_rotmat(scene.quats.detach().cpu()[sel].double())
    order = torch.argsort(log_s, dim=1)
    normals = R.gather(2, order[:, :1, None].expand(-1, 3, 1))[..., 0].numpy()  # [M,3]
    s_sorted = log_s.gather(1, order).numpy()
    flat = s_sorted[:, 0] < s_sorted[:, 1] + math.log(_EST_FLAT_RATIO)
    F = normals[flat]

    cands: list[np.ndarray] = []
    if len(F) >= 50:  # modes of the flat normals (axial: n and -n alike)
        dirs = _fibonacci_hemisphere(600)
        Fs = F[rng.choice(len(F), min(len(F), 8000), replace=False)]
        close = np.abs(Fs @ dirs.T) > math.cos(math.radians(_EST_CONE_DEG))  # [F,600]
        counts = close.sum(0)
        for j in np.argsort(-counts, kind="stable"):
            if counts[j] < 0.05 * len(Fs) or len(cands) >= 4:
                break
            if not _distinct(cands, dirs[j], 25.0):
                continue
            near = Fs[np.abs(Fs @ dirs[j]) > math.cos(math.radians(1.5 * _EST_CONE_DEG))]
            _, v = np.linalg.eigh(near.T @ near)
            cands.append(v[:, -1])
    # RANSAC planes through the centres.
    ransac: list[tuple[int, np.ndarray]] = []
    for _ in range(_EST_RANSAC):
        a, b, c = P[rng.choice(len(P), 3, replace=False)]
        nv = np.cross(b - a, c - a)
        nn = float(np.linalg.norm(nv))
        if nn < 1e-12:
            continue
        nv /= nn
        ransac.append((int((np.abs((P - a) @ nv) <= tol).sum()), nv))
    ransac.sort(key=lambda t: -t[0])
    for _count, nv in ransac[:20]:
        if _distinct(cands, nv) and len(cands) < 8:
            cands.append(nv)
    _, _, vt = np.linalg.svd(P - P.mean(0), full_matrices=False)
    if _distinct(cands, vt[-1]):
        cands.append(vt[-1])

    best: tuple[float, dict[str, Any]] | None = None
    for nv in cands:
        plane = _score_plane(P, normals, flat, nv, tol, diam)
        if plane is not None and (best is None or plane["quality"] > best[0]):
            best = (plane["quality"], plane)
    if best is None:
        return None
    plane = best[1]
    sign, s = plane["sign"], plane["side"]
    planar = max(
        float(np.clip((plane["peak"] - 2.0) / 6.0, 0.0, 1.0)),  # a sharp slab of centres
        float(np.clip((plane["coherence"] - 0.3) / 0.4, 0.0, 1.0)),  # or of aligned flat splats
    )
    conf = (
        float(np.clip((plane["support"] - 0.02) / 0.10, 0.0, 1.0))
        * planar
        * float(np.clip(abs(s) / 0.4, 0.0, 1.0))
        * plane["agreement"]
    )
    evidence = (
        f"support plane holding {100 * plane['support']:.0f}% of the splats "
        f"({plane['peak']:.0f}x the slab density elsewhere, "
        f"{100 * plane['coherence']:.0f}% of them flat along it); mass and free space say "
        f"{'this' if sign > 0 else 'the other'} side is up ({s:+.2f}"
        + ("" if plane["agreement"] == 1.0 else f", in {plane['agreement']:.0%} agreement")
        + ")"
    )
    return UpEstimate(
        vector=sign * plane["normal"],
        confidence=conf,
        plane_point=plane["point"],
        support=plane["support"],
        evidence=evidence,
    )


def _score_plane(
    P: np.ndarray,  # [M,3] sampled centres
    normals: np.ndarray,  # [M,3] their normals
    flat: np.ndarray,  # [M] bool: flat splats
    nv: np.ndarray,  # [3] candidate normal
    tol: float,
    diam: float,
) -> dict[str, Any] | None:
    """The densest thin slab orthogonal to `nv`, refined by least squares on its (normal-agreeing)
    splats; its quality (support x peakedness) and which side is up."""
    h = P @ nv
    lo = float(h.min())
    bins = np.floor((h - lo) / tol).astype(np.int64)
    counts = np.bincount(bins).astype(np.float64)
    slab = counts.copy()
    slab[1:] += counts[:-1]
    slab[:-1] += counts[1:]
    b = int(np.argmax(slab))
    inl = np.abs(bins - b) <= 1
    aligned = ~flat | (np.abs(normals @ nv) > math.cos(math.radians(25.0)))
    normal, c = nv, P[inl].mean(0)
    for _ in range(2):  # least squares on the slab, then re-select about the fitted plane
        Q = P[inl & aligned] if (inl & aligned).sum() >= 3 else P[inl]
        if len(Q) < 3:
            return None
        c = Q.mean(0)
        _, sv, vt = np.linalg.svd(Q - c, full_matrices=False)
        m = vt[-1] if vt[-1] @ normal >= 0 else -vt[-1]
        if sv[1] > 1e-12 and m @ normal > math.cos(math.radians(20.0)):
            normal = m / np.linalg.norm(m)
        hc = (P - c) @ normal
        inl = np.abs(hc) <= 1.5 * tol
    support = float(inl.mean())
    # Coherence: the share of the plane's splats that are flat and lie along it (a floor's).
    coherence = float(
        (inl & flat & (np.abs(normals @ normal) > math.cos(math.radians(20.0)))).sum()
    )
    coherence /= max(1, int(inl.sum()))
    occupied = slab[slab > 0]
    peak = float(slab[b] / max(np.median(occupied), 1.0))
    mass, free = _side_terms(P, hc, inl, normal, c, tol, diam)
    side = mass + free
    # When the mass and the free space point opposite ways (the face of a flat object: the
    # object's body on one side, nothing resting on the other), the side is a guess.
    conflict = (
        min(abs(mass), abs(free)) / max(abs(mass), abs(free), 1e-12) if mass * free < 0 else 0.0
    )
    return {
        "normal": normal,
        "point": c,
        "support": support,
        "peak": peak,
        "coherence": coherence,
        "quality": support * (min(peak, 50.0) + 20.0 * coherence),
        "sign": 1.0 if side >= 0 else -1.0,
        "side": float(side),
        "agreement": float(1.0 - conflict),
    }


def _side_terms(
    P: np.ndarray,  # [M,3] centres
    hc: np.ndarray,  # [M] their heights above the plane along `normal`
    inl: np.ndarray,  # [M] bool: on the plane
    normal: np.ndarray,  # [3]
    c: np.ndarray,  # [3] a point of the plane
    tol: float,
    diam: float,
) -> tuple[float, float]:
    """(mass, free): the side holding the mass (half weight, in [-0.5, 0.5]), and how much more
    free space there is just above the plane's splats than just below them (in [-1, 1]; a
    table's underside lies close below its top); > 0 says `normal` is up."""
    above, below = hc > 3 * tol, hc < -3 * tol
    na, nb = int(above.sum()), int(below.sum())
    mass = (na - nb) / max(1, na + nb)
    u = np.cross(normal, [1.0, 0.0, 0.0] if abs(normal[0]) < 0.9 else [0.0, 1.0, 0.0])
    u /= np.linalg.norm(u)
    v = np.cross(normal, u)
    cell = diam / 24.0
    uv = np.floor((P - c) @ np.stack([u, v]).T / cell).astype(np.int64)  # [M,2]
    key = uv[:, 0] * 1_000_003 + uv[:, 1]
    plane_cells = np.unique(key[inl])
    if len(plane_cells) == 0:
        return 0.5 * mass, 0.0
    reach = 0.15 * diam
    occ_above = np.unique(key[above & (hc <= reach)])
    occ_below = np.unique(key[below & (hc >= -reach)])
    free_above = 1.0 - np.isin(plane_cells, occ_above).mean()
    free_below = 1.0 - np.isin(plane_cells, occ_below).mean()
    return float(0.5 * mass), float(free_above - free_below)


def support_side(
    scene: GaussianScene,
    point: Any,  # [3] a point of the plane
    normal: Any,  # [3] the plane's normal
    *,
    max_points: int = _EST_MAX_POINTS,
    seed: int = 0,
) -> float:
    """Evidence in [-1.5, 1.5] that `normal` points up from the plane through `point`, from the
    splats as `estimate_up` weighs it: the side holding the scene's mass and the one with free
    space above the plane (things rest on floors and tables; a table's underside lies close
    below its top). Near 0: the splats do not say (a wall, a lone plane)."""
    P = _sample_opaque(scene, max_points, seed)
    if P is None:
        return 0.0
    P, diam = P
    n = parse_up(normal)
    c = np.asarray(point, dtype=np.float64).reshape(3)
    tol = _EST_TOL * diam
    hc = (P - c) @ n
    return float(sum(_side_terms(P, hc, np.abs(hc) <= 1.5 * tol, n, c, tol, diam)))


def _sample_opaque(
    scene: GaussianScene, max_points: int, seed: int
) -> tuple[np.ndarray, float] | None:
    """(centres [M,3] of a seeded sample of the opaque splats without far floaters, the robust
    diameter), or None for too few."""
    if len(scene) < _EST_MIN_POINTS:
        return None
    rng = np.random.default_rng(seed)
    opac = torch.sigmoid(scene.opacities.detach().cpu().double()).numpy()
    idx = np.flatnonzero(opac >= _EST_OPAQUE)
    if len(idx) < _EST_MIN_POINTS:
        idx = np.arange(len(scene))
    if len(idx) > max_points:
        idx = np.sort(rng.choice(idx, max_points, replace=False))
    P = scene.means.detach().cpu()[torch.from_numpy(idx)].double().numpy()
    r = np.linalg.norm(P - np.median(P, 0), axis=1)
    r95 = float(np.quantile(r, 0.95))
    P = P[r <= 1.5 * r95 + 1e-12]
    if len(P) < _EST_MIN_POINTS or not r95 > 0:
        return None
    return P, 2.0 * r95


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
