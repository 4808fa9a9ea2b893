"""Text-to-3D in a box that ends as an object on its support.

LucidDreaming / GaussianDreamer-style: the Gaussians start from a shape prior fitted to a user box
(`shape_prior`: flat splats on the surface of the ellipsoid inscribed in the box, normals outward,
with a sparse interior; the old uniform cloud; or a bundled asset's shape scaled into the box).
Views around the box render them together with the frozen scene, and a score distiller's SDS
(or, on CUDA, VSD) loss on those renders drives them, with the distiller's timestep range
annealed as the run progresses. The 3DGS paper's adaptive density control
(`fields.training.DefaultStrategy`, the view-space gradient accumulated over the box views)
clones and splits the Gaussians the loss pulls hardest and prunes transparent ones, up to a cap.

Afterwards the object is cleaned (transparent splats and floaters away from the main body
dropped) and rested on the support plane under the box exactly as an inserted asset is
(`fit_support_plane` on the scene's Gaussians under the object, then `place_on_support`); the
scene's own Gaussians never change.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch import Tensor

from fields import Camera, GaussianScene, orbit_cameras, render, up_vector
from fields.conventions import DEFAULT_UP, parse_up
from fields.scene import rgb_to_sh, rotmat_to_quat
from fields.training import DefaultStrategy, DefaultStrategyConfig, GaussianParams, Progress

from ._spatial import kdtree, rotation_between
from ._support import SupportPlane, fit_support_plane

__all__ = ["Distiller", "TextTo3DConfig", "shape_prior", "text_to_3d"]

Anneal = Literal["none", "linear", "sqrt"]
Method = Literal["sds", "vsd"]

_OPAQUE = 0.2  # as `editing.insertion`: splats above this opacity count for resting and support
_INIT_SHAPES = ("ellipsoid", "box")


class Distiller(Protocol):
    """What `text_to_3d` needs from a score distiller (`editing.score_distillation`)."""

    def loss(
        self,
        images: Tensor,  # [B,3,H,W] in [0,1], requires grad
        prompt: str,
        *,
        method: str = "sds",
        progress: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> Tensor: ...


@dataclass(frozen=True)
class TextTo3DConfig:
    """How `text_to_3d` grows an object in a box."""

    n_gaussians: int = 2000
    """Gaussians of the shape prior (an asset prior with more is subsampled to this many)."""
    steps: int = 300
    """Optimisation steps (one batch of views each)."""
    views_per_step: int = 1
    """Views rendered per step (the batch the distiller scores)."""
    size: int = 64
    """Side of the square renders, pixels."""
    lr: float = 0.02
    """Adam learning rate of colours (RGB logits), opacities (logits), log scales and
    orientations; positions move at `lr` times the box's smallest half side per unit step."""
    init: str = "ellipsoid"
    """Shape prior: "ellipsoid" (flat splats on the surface of the ellipsoid inscribed in the
    box, normals outward, plus `interior` of them inside), "box" (the original prior: small
    isotropic splats uniform in the volume of that ellipsoid) or the path of an object scene
    (e.g. `assets/objects/mug.ply`: its Gaussians, up aligned with the world's, scaled uniformly
    to fit the box and centred in it, colours kept)."""
    interior: float = 0.1
    """"ellipsoid" prior: share of the Gaussians placed inside the ellipsoid (isotropic)."""
    init_scale: float = 0.08
    """Isotropic splat standard deviation ("box" prior, ellipsoid interior) as a fraction of
    the box's smallest side. The ellipsoid surface splats are sized to tile the surface."""
    init_opacity: float = 0.5
    """Initial opacity (the asset prior keeps its own)."""
    init_color: tuple[float, float, float] = (0.6, 0.6, 0.6)
    """Initial RGB (the asset prior keeps its own)."""
    densify: bool = True
    """Adaptive density control during the run: clone small / split large Gaussians with a
    high view-space gradient, prune transparent ones (`fields.training.DefaultStrategy`)."""
    densify_every: int = 25
    """Steps between densifications."""
    densify_from: float = 0.1
    """Densify after this fraction of the steps ..."""
    densify_until: float = 0.7
    """... and before this one."""
    grad_threshold: float | None = None
    """Mean view-space gradient (NDC units, as `DefaultStrategyConfig.grow_grad2d`) above which
    a Gaussian grows; None: the top `grow_fraction` of the Gaussians seen since the last
    densification (score-distillation gradients have no fixed scale across models)."""
    grow_fraction: float = 0.1
    """With `grad_threshold` None: share of the seen Gaussians grown per densification."""
    split_scale: float = 0.05
    """Gaussians larger than this fraction of the box's half diagonal split, smaller clone."""
    max_gaussians: int = 20_000
    """Cap on the object's Gaussians while densifying."""
    prune_opacity: float = 0.02
    """Gaussians below this opacity are pruned while densifying and at the end."""
    anneal: Anneal | None = "sqrt"
    """Timestep annealing: the distiller's sampled timestep range shrinks from its top
    (`DistillationConfig.t_range[1]`) to `DistillationConfig.anneal_to` as the run progresses
    ("linear", or "sqrt": fast early; "none": no annealing). `text_to_3d` passes
    `progress = step / steps` and runs a `ScoreDistiller` whose own `config.anneal` differs with
    this one instead (a shallow copy; the caller's distiller is not changed). None: the
    distiller's own setting. Distillers without a `DistillationConfig` get `progress` only."""
    method: Method | None = None
    """Score distillation method: "sds", "vsd" (ProlificDreamer: the distiller trains a LoRA'd
    copy of its UNet on the renders as it goes) or None: "vsd" when the distiller runs on CUDA
    and supports it, else "sds"."""
    on_support: bool = True
    """Afterwards rest the object on the support plane under it, like an inserted asset
    (`fit_support_plane` on the scene's Gaussians under its footprint, then
    `place_on_support`); with no support there it stays where it grew (the `meta["inserted"]`
    record says so)."""
    drop_floaters: bool = True
    """Afterwards keep only the largest connected group of Gaussians (linked when closer than
    three typical neighbour spacings): stray splats SDS leaves around the object go."""
    fov_deg: float = 50.0
    """Vertical field of view of the views around the box."""
    elevation_deg: tuple[float, float] = (10.0, 50.0)
    """Range of view elevations above the plane orthogonal to up."""
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Background colour behind scene and object."""
    context: bool = True
    """Render the (frozen) scene together with the new Gaussians."""
    seed: int = 0
    """Seed of the initialisation, the views and the distiller's noise."""
    up: Any = None
    """World up ("+z", "-y", a vector); default: `fields.up_vector` (the scene's meta "up", else its
    cameras', else estimated from its support plane, else -y)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Further keyword arguments of `distiller.loss` (a "method" here counts when `method` is
    None)."""

    def __post_init__(self) -> None:
        if self.n_gaussians < 1 or self.steps < 0 or self.views_per_step < 1:
            raise ValueError("n_gaussians and views_per_step must be >= 1, steps >= 0")
        if self.size < 8:
            raise ValueError(f"size must be at least 8 pixels, got {self.size}")
        if not 0 < self.init_opacity < 1:
            raise ValueError("init_opacity must be in (0, 1)")
        if not str(self.init).strip():
            raise ValueError("init must be 'ellipsoid', 'box' or the path of an object scene")
        if not 0 <= self.interior < 1:
            raise ValueError(f"interior must be in [0, 1), got {self.interior}")
        if self.densify_every < 1 or not 0 <= self.densify_from < self.densify_until <= 1:
            raise ValueError(
                "densify_every must be >= 1 and 0 <= densify_from < densify_until <= 1"
            )
        if not 0 < self.grow_fraction <= 1:
            raise ValueError(f"grow_fraction must be in (0, 1], got {self.grow_fraction}")
        if self.grad_threshold is not None and not self.grad_threshold > 0:
            raise ValueError(f"grad_threshold must be positive, got {self.grad_threshold}")
        if self.max_gaussians < self.n_gaussians:
            raise ValueError(
                f"max_gaussians ({self.max_gaussians}) must be >= n_gaussians ({self.n_gaussians})"
            )
        if not 0 <= self.prune_opacity < self.init_opacity:
            raise ValueError("prune_opacity must be in [0, init_opacity)")
        if self.anneal not in (None, "none", "linear", "sqrt"):
            raise ValueError(
                f"anneal must be 'none', 'linear', 'sqrt' or None, got {self.anneal!r}"
            )
        if self.method not in (None, "sds", "vsd"):
            raise ValueError(f"method must be 'sds', 'vsd' or None, got {self.method!r}")


# ---------------------------------------------------------------------------------- the box
def _box_parts(box: Any) -> tuple[Tensor, Tensor, Tensor]:
    """(centre [3], size [3], R [3,3]) float64 from (centre, size) or (centre, size, R)."""
    if len(box) not in (2, 3):
        raise ValueError("box must be (centre [3], size [3]) or (centre, size, R [3,3])")
    centre = torch.as_tensor(np.asarray(box[0], dtype=np.float64)).reshape(-1)
    size = torch.as_tensor(np.asarray(box[1], dtype=np.float64)).reshape(-1)
    R = torch.eye(3, dtype=torch.float64)
    if len(box) == 3 and box[2] is not None:
        R = torch.as_tensor(np.asarray(box[2], dtype=np.float64))
    if centre.shape != (3,) or size.shape != (3,) or R.shape != (3, 3):
        raise ValueError("box centre and size must be 3-vectors and R a 3x3 rotation")
    if not bool((size > 0).all()) or not bool(torch.isfinite(centre).all()):
        raise ValueError(f"box size must be positive, got {size.tolist()}")
    if torch.dist(R @ R.T, torch.eye(3, dtype=torch.float64)) > 1e-4:
        raise ValueError("box R must be a rotation matrix")
    return centre, size, R


def _rotation_z_to(n: Tensor) -> Tensor:
    """[M,3,3] the smallest rotations taking +z to the unit vectors `n` [M,3] (float64)."""
    z = torch.tensor([0.0, 0.0, 1.0], dtype=n.dtype)
    v = torch.cross(z.expand_as(n), n, dim=1)  # [M,3]
    c = n[:, 2]
    vx = torch.zeros(len(n), 3, 3, dtype=n.dtype)
    vx[:, 0, 1], vx[:, 0, 2], vx[:, 1, 2] = -v[:, 2], v[:, 1], -v[:, 0]
    vx = vx - vx.transpose(1, 2)
    eye = torch.eye(3, dtype=n.dtype).expand(len(n), 3, 3)
    R = eye + vx + vx @ vx / (1.0 + c).clamp_min(1e-9)[:, None, None]
    flip = c < -1 + 1e-9  # -z: half a turn about x
    R[flip] = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=n.dtype))
    return R


def _ellipsoid_area(half: Tensor) -> float:
    """Surface area of the ellipsoid with semi-axes `half` [3] (Thomsen's formula, < 1.1%)."""
    a, b, c = (float(x) for x in half)
    p = 1.6075
    return 4 * math.pi * (((a * b) ** p + (a * c) ** p + (b * c) ** p) / 3) ** (1 / p)


def _in_ball(n: int, gen: torch.Generator) -> Tensor:  # [n,3] uniform in the unit ball
    d = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    r = torch.rand(n, 1, generator=gen, dtype=torch.float64) ** (1 / 3)
    return d / d.norm(dim=1, keepdim=True) * r


def _ellipsoid_prior(half: Tensor, config: TextTo3DConfig, gen: torch.Generator):
    """Box-frame (means [n,3], rotations [n,3,3], stds [n,3]) float64 of the ellipsoid prior:
    area-uniform flat splats on the surface (local z = outward normal) and isotropic ones
    inside."""
    n = config.n_gaussians
    n_in = round(config.interior * n) if n > 1 else 0
    n_surf = n - n_in
    # Area-uniform on x = H u (u on the unit sphere): the area element is det(H) |H^-1 u| dOmega.
    cand = torch.randn(4 * n_surf, 3, generator=gen, dtype=torch.float64)
    cand = cand / cand.norm(dim=1, keepdim=True)
    weight = (cand / half).norm(dim=1)
    u = cand[torch.multinomial(weight, n_surf, replacement=False, generator=gen)]
    surf = u * half
    normal = u / half
    normal = normal / normal.norm(dim=1, keepdim=True)
    # Splats tile the surface: one std of a splat is half the mean spacing, so neighbours overlap.
    tangent = 0.5 * math.sqrt(_ellipsoid_area(half) / n_surf)
    stds_surf = torch.tensor([tangent, tangent, 0.1 * tangent], dtype=torch.float64).expand(
        n_surf, 3
    )
    rot_surf = _rotation_z_to(normal)
    inner = 0.8 * _in_ball(n_in, gen) * half
    s_in = config.init_scale * 2 * float(half.min())
    means = torch.cat([surf, inner])
    rots = torch.cat([rot_surf, torch.eye(3, dtype=torch.float64).expand(n_in, 3, 3)])
    stds = torch.cat([stds_surf, torch.full((n_in, 3), s_in, dtype=torch.float64)])
    return means, rots, stds


def _asset_prior(
    path: Path, centre: Tensor, size: Tensor, R: Tensor, up: np.ndarray, config: TextTo3DConfig
) -> GaussianScene:
    """The object scene at `path`, its up turned to the world's `up`, scaled uniformly so its
    opaque Gaussians' centres fill the box (box frame bounds) and centred in it; at most
    `config.n_gaussians` (a random subset, splats grown to keep the coverage)."""
    from .insertion import load_asset  # (insertion places what this module grows)

    try:
        obj = load_asset(path)
    except FileNotFoundError as e:
        raise ValueError(
            f"init {str(path)!r} is not 'ellipsoid', 'box' or an object scene file ({e})"
        ) from None
    obj_up = up_vector(obj)
    obj = obj.detach().to("cpu").replace(extras={}, meta={})
    Rw = torch.from_numpy(rotation_between(obj_up, up))  # object up -> world up
    opaque = torch.sigmoid(obj.opacities) > _OPAQUE
    pts = obj.means.double()[opaque if bool(opaque.any()) else slice(None)]
    local = pts @ Rw.T @ R  # box frame, before scaling
    lo, hi = local.min(0).values, local.max(0).values
    extent = (hi - lo).clamp_min(1e-9)
    scale = 0.95 * float((size / extent).min())  # a little inside the box: means are clamped
    T = torch.eye(4, dtype=torch.float64)
    T[:3, :3] = scale * Rw
    T[:3, 3] = centre - scale * (R @ (0.5 * (lo + hi)))
    moved = obj.transform(T)
    if len(moved) > config.n_gaussians:
        gen = torch.Generator().manual_seed(int(config.seed))
        keep = torch.randperm(len(moved), generator=gen)[: config.n_gaussians]
        grow = math.log(math.sqrt(len(moved) / config.n_gaussians))
        moved = moved.subset(keep.sort().values)
        moved = moved.replace(scales=moved.scales + grow)
    return moved.with_sh_degree(0)


def shape_prior(
    box: Any,  # (centre [3], size [3]) or (centre [3], size [3], R [3,3] box-to-world)
    config: TextTo3DConfig | None = None,
    *,
    up: Any = None,  # world up for an asset prior; default config.up, else fields' DEFAULT_UP
) -> GaussianScene:
    """The Gaussians `text_to_3d` starts from (world frame, SH degree 0, no extras):
    `config.init` ("ellipsoid", "box" or an object scene's path) fitted to `box`. A path that
    is not an object scene file is a `ValueError` naming it."""
    config = config or TextTo3DConfig()
    centre, size, R = _box_parts(box)
    half = 0.5 * size
    gen = torch.Generator().manual_seed(int(config.seed))
    init = str(config.init).strip()
    rgb = torch.tensor(config.init_color, dtype=torch.float32).clamp(0.02, 0.98)
    if init == "ellipsoid":
        local, rots, stds = _ellipsoid_prior(half, config, gen)
    elif init == "box":
        n = config.n_gaussians
        local = _in_ball(n, gen) * half  # uniform in the inscribed ellipsoid's volume
        rots = torch.eye(3, dtype=torch.float64).expand(n, 3, 3)
        stds = torch.full((n, 3), config.init_scale * float(size.min()), dtype=torch.float64)
    else:
        up_w = parse_up(
            up if up is not None else (config.up if config.up is not None else DEFAULT_UP)
        )
        return _asset_prior(Path(init).expanduser(), centre, size, R, up_w, config)
    n = len(local)
    opacity = math.log(config.init_opacity / (1 - config.init_opacity))
    return GaussianScene(
        means=(local @ R.T + centre).float(),
        quats=rotmat_to_quat(R @ rots).float(),
        scales=torch.log(stds).float(),
        opacities=torch.full((n,), opacity),
        sh=rgb_to_sh(rgb).expand(n, 1, 3).clone(),
    )


# ---------------------------------------------------------------------------------- distiller
@contextlib.contextmanager
def _annealing(distiller: Any, anneal: str | None) -> Iterator[None]:
    """Run `distiller` with `anneal` for the block when its `DistillationConfig` says otherwise,
    and give it its own config back afterwards (also on errors)."""
    cfg = getattr(distiller, "config", None)
    if (
        anneal is None
        or not dataclasses.is_dataclass(cfg)
        or getattr(cfg, "anneal", anneal) == anneal
    ):
        yield
        return
    distiller.config = dataclasses.replace(cfg, anneal=anneal)
    try:
        yield
    finally:
        distiller.config = cfg


def _loss_parameters(distiller: Any) -> set[str]:
    try:
        params = inspect.signature(distiller.loss).parameters
    except (TypeError, ValueError):
        return set()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return {*params, "**"}
    return set(params)


def supports_vsd(distiller: Any) -> bool:
    """Whether `distiller.loss` runs `method="vsd"`: its `supports_vsd` (a `ScoreDistiller`
    whose UNet has attention projections for the LoRA), else whether `loss` takes a `camera`."""
    flag = getattr(distiller, "supports_vsd", None)
    if flag is not None:
        return bool(flag() if callable(flag) else flag)
    return "camera" in _loss_parameters(distiller)


def _choose_method(distiller: Any, method: str | None) -> str:
    if method is not None:
        if method == "vsd" and not supports_vsd(distiller):
            raise ValueError("this score distiller does not support method='vsd'; use 'sds'")
        return method
    device = getattr(distiller, "device", None)
    on_cuda = isinstance(device, torch.device) and device.type == "cuda"
    return "vsd" if on_cuda and supports_vsd(distiller) else "sds"


def _camera_vectors(cams: list[Camera]) -> Tensor:  # [B,16] flattened c2w
    return torch.stack([torch.as_tensor(c.c2w, dtype=torch.float32).reshape(16) for c in cams])


def _views_around(
    centre: Tensor, radius: float, up: np.ndarray, config: TextTo3DConfig, gen: torch.Generator
) -> list[Camera]:
    """`config.views_per_step` random views of the box's sphere (uniform azimuth and
    elevation in `config.elevation_deg`)."""
    n = config.views_per_step
    lo, hi = config.elevation_deg
    azimuths = 2 * math.pi * torch.rand(n, generator=gen, dtype=torch.float64)
    elevations = lo + (hi - lo) * torch.rand(n, generator=gen, dtype=torch.float64)
    return orbit_cameras(
        centre,
        radius,
        up,
        azimuths,
        elevations,
        width=config.size,
        height=config.size,
        fov_deg=config.fov_deg,
        name="t3d",
    )


# ---------------------------------------------------------------------------------- clean-up
def _largest_group(means: np.ndarray, stds: np.ndarray) -> np.ndarray:
    """[M] bool: the largest connected group of splats (centres [M,3], largest standard
    deviations [M]); two are linked when their two-sigma extents overlap, or when they are
    closer than twice the median nearest-neighbour distance."""
    m = len(means)
    if m < 3:
        return np.ones(m, dtype=bool)
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    tree = kdtree(means)
    d, _ = tree.query(means, k=2)
    floor = 2.0 * float(np.median(d[:, 1]))
    reach = max(floor, 4.0 * float(np.quantile(stds, 0.95)))
    pairs = tree.query_pairs(reach, output_type="ndarray")
    if len(pairs):
        dist = np.linalg.norm(means[pairs[:, 0]] - means[pairs[:, 1]], axis=1)
        link = np.maximum(2.0 * (stds[pairs[:, 0]] + stds[pairs[:, 1]]), floor)
        pairs = pairs[dist < link]
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(m, m))
    _, comp = connected_components(graph, directed=False)
    return comp == np.bincount(comp).argmax()


def _support_under(
    scene: GaussianScene, obj: GaussianScene, up: np.ndarray
) -> tuple[SupportPlane | None, str]:
    """The top plane of the scene's shown Gaussians under the object's footprint (its opaque
    splats' horizontal spread, grown by half) and below its centroid; (None, why) without one."""
    if len(scene) == 0:
        return None, "the scene is empty"
    opaque = torch.sigmoid(obj.opacities) > _OPAQUE
    pts = obj.means.double().cpu().numpy()[opaque.cpu().numpy() if bool(opaque.any()) else ...]
    centroid = pts.mean(0)
    flat = pts - np.outer((pts - centroid) @ up, up)
    radius = 1.5 * float(np.linalg.norm(flat - centroid, axis=1).max()) + 1e-6
    p = scene.means.detach().double().cpu().numpy() - centroid
    h = p @ up
    horiz = np.linalg.norm(p - np.outer(h, up), axis=1)
    mask = torch.from_numpy((horiz <= radius) & (h < 0))
    if "hidden" in scene.extras:
        mask &= ~scene.extras["hidden"].bool().cpu()
    if not bool(mask.any()):
        return None, "nothing under the box"
    try:
        plane = fit_support_plane(scene, mask.to(scene.device), up=up)
    except ValueError as e:
        return None, f"no support plane under the box ({e})"
    if plane.to_plane(centroid)[1][0] < 0:
        return None, "no support plane under the box"
    return plane, ""


def _rest_on(obj: GaussianScene, plane: SupportPlane) -> tuple[GaussianScene, Tensor, int]:
    """Move the object along the plane normal so its lowest opaque splats rest on the plane as
    `place_on_support` rests an asset, then drop any splat still below the plane (inside the
    support). Returns (the object, T_world_object [4,4] float64 of the move, splats dropped)."""
    from .insertion import place_on_support

    # In a frame with the plane normal as +z and the base centre at the origin, the object is
    # an asset standing upright; place_on_support puts it back over the same spot.
    pts = obj.means.double().cpu().numpy()
    uv, h = plane.to_plane(pts)
    base = plane.to_world(uv.mean(0), float(h.min()))
    T_local = np.eye(4)
    T_local[:3, :3] = rotation_between(plane.normal, np.eye(3)[2])
    T_local[:3, 3] = -T_local[:3, :3] @ base
    local = obj.transform(torch.from_numpy(T_local)).replace(meta={"up": [0.0, 0.0, 1.0]})
    spot = plane.to_world(uv.mean(0))
    placed, T_world_local = place_on_support(local, plane, spot)
    T = T_world_local @ torch.from_numpy(T_local)
    _, h = plane.to_plane(placed.means.detach().cpu().double().numpy())
    below = torch.from_numpy(h < 0)
    if bool(below.all()):
        below[:] = False
    moved = obj.transform(T)
    return moved.subset(~below) if bool(below.any()) else moved, T, int(below.sum())


def _trainable(prior: GaussianScene, lr_means: float, lr: float, dev: torch.device):
    """`GaussianParams` of the prior's Gaussians (sh0 holds RGB logits, not SH; no shN)."""
    rgb0 = prior.colors.clamp(0.02, 0.98)
    tensors = {
        "means": prior.means,
        "quats": prior.quats,
        "scales": prior.scales,
        "opacities": prior.opacities,
        "sh0": torch.logit(rgb0)[:, None, :],
        "shN": torch.zeros(len(prior), 0, 3),
    }
    lrs = {"means": lr_means, "quats": lr, "scales": lr, "opacities": lr, "sh0": lr, "shN": 0.0}
    return GaussianParams({k: v.to(dev) for k, v in tensors.items()}, lrs)


def _strategy(config: TextTo3DConfig, radius: float) -> DefaultStrategy | None:
    """The 3DGS density control for the run: `Progress.reference_steps` is the run's own
    length, so the step constants are steps of this run; opacity resets (and the huge-splat
    pruning that follows them) never come: a short SDS run cannot recover from a reset."""
    if not config.densify or not config.steps:
        return None
    cfg = DefaultStrategyConfig(
        prune_opa=config.prune_opacity,
        grow_grad2d=config.grad_threshold or 1.0,  # None: set per refinement (`_refine`)
        grow_scale3d=config.split_scale,
        prune_scale3d=1e9,
        refine_start=round(config.densify_from * config.steps),
        refine_stop=round(config.densify_until * config.steps),
        refine_every=config.densify_every,
        reset_every=10**12,
    )
    return DefaultStrategy(cfg, radius, config.max_gaussians)


def _refine(
    strategy: DefaultStrategy,
    params: GaussianParams,
    progress: Progress,
    config: TextTo3DConfig,
    gen: torch.Generator,
) -> None:
    """Densify when due; without a fixed `grad_threshold` the threshold is the
    (1 - grow_fraction) quantile of the mean gradients of the Gaussians seen since the last."""
    if not strategy.due(progress):
        return
    if config.grad_threshold is None and strategy.grad2d is not None and strategy.count is not None:
        seen = (strategy.grad2d / strategy.count.clamp_min(1))[strategy.count > 0]
        if len(seen):
            q = float(torch.quantile(seen.float(), 1.0 - config.grow_fraction))
            strategy.cfg = dataclasses.replace(strategy.cfg, grow_grad2d=max(q, 1e-12))
    strategy.refine(params, progress, gen)


def _clean(grown: GaussianScene, config: TextTo3DConfig) -> tuple[GaussianScene, int, int]:
    """Drop splats below `prune_opacity` (never all) and, with `drop_floaters`, those outside
    the largest connected group. Returns (the rest, pruned, floaters)."""
    keep = torch.sigmoid(grown.opacities) >= config.prune_opacity
    if not bool(keep.any()):
        keep[torch.argmax(grown.opacities)] = True
    pruned = int((~keep).sum())
    grown = grown.subset(keep)
    floaters = 0
    if config.drop_floaters:
        stds = grown.scales.exp().amax(1).double().cpu().numpy()
        main = torch.from_numpy(_largest_group(grown.means.double().cpu().numpy(), stds))
        floaters = int((~main).sum())
        grown = grown.subset(main)
    return grown, pruned, floaters


# ---------------------------------------------------------------------------------- text-to-3D
def text_to_3d(
    scene: GaussianScene,
    box: Any,  # (centre [3], size [3]) or (centre [3], size [3], R [3,3] box-to-world)
    distiller: Distiller,
    prompt: str,
    config: TextTo3DConfig | None = None,
    *,
    name: str | None = None,
    on_step: Callable[[int, int, float], None] | None = None,  # (step, total, loss)
    should_stop: Callable[[], bool] | None = None,
) -> tuple[GaussianScene, Tensor]:
    """Grow an object for `prompt` inside `box` and put it in the scene.

    The Gaussians start from `shape_prior(box, config)`; their colours, opacities, scales,
    orientations and positions (kept inside the box) are optimised by `distiller.loss` on
    renders from views around the box that show them with the frozen scene (`config.context`),
    with `progress = step / steps` (timestep annealing, `config.anneal`) and `config.method`
    ("sds"/"vsd"; VSD gets each view's `camera` [B,16], the flattened camera-to-world matrix).
    With `config.densify` they are cloned/split/pruned as they go. Then transparent splats
    (below `config.prune_opacity`) and floaters (`config.drop_floaters`) are dropped and, with
    `config.on_support`, the object rests on the support plane under it. `should_stop()` ends
    the optimisation early (the result so far is returned).

    Returns (the scene with the object appended under a new label named `name` or the prompt,
    bool mask [N+M] of it); the scene's own Gaussians are unchanged. Its `meta["inserted"]`
    record (see `insert_object`: name, label, final count) also holds "prompt", "init",
    "method", "densify", "steps" run, "pruned" (transparent), "floaters" and "below_support"
    (splats dropped at the end), "support": the plane (`SupportPlane.describe()` plus the
    "gap" of the lowest splat centre above it) or None, "support_note" (what happened, or why it
    was left where it grew) and "T_rest" [4,4] (the move onto the support; identity if none)."""
    from .insertion import insert_object

    config = config or TextTo3DConfig()
    prompt = str(prompt).strip()
    if not prompt:
        raise ValueError("text_to_3d needs a prompt")
    centre, size, R = _box_parts(box)
    up = up_vector(scene, override=config.up)
    extra = dict(config.extra)
    method = _choose_method(distiller, config.method or extra.pop("method", None))
    accepts = _loss_parameters(distiller)
    prior = shape_prior(box, config, up=up)
    gen = torch.Generator().manual_seed(int(config.seed))

    dtype, dev = torch.float32, scene.device
    half = 0.5 * size
    radius = float(half.norm())
    params = _trainable(prior, config.lr * float(half.min()), config.lr, dev)
    strategy = _strategy(config, radius)

    context = scene.detach() if config.context and len(scene) else None
    if context is not None and "hidden" in context.extras:
        context = context.subset(~context.extras["hidden"].bool())
    background = torch.tensor(config.background, dtype=dtype, device=dev)
    R32, c32, half32 = R.to(dtype).to(dev), centre.to(dtype).to(dev), half.to(dtype).to(dev)
    log_lo, log_hi = math.log(1e-4 * radius), math.log(0.5 * radius)

    def build() -> GaussianScene:
        t = params.tensors
        return GaussianScene(
            means=t["means"],
            quats=t["quats"],
            scales=t["scales"].clamp(log_lo, log_hi),
            opacities=t["opacities"],
            sh=rgb_to_sh(torch.sigmoid(t["sh0"])),
        )

    loss_kwargs = {**extra, "method": method}
    steps_run = 0
    with _annealing(distiller, config.anneal):
        if method == "vsd" and callable(getattr(distiller, "reset_vsd", None)):
            distiller.reset_vsd()  # a new object starts from the pretrained model
        for step in range(config.steps):
            if should_stop is not None and should_stop():
                break
            grown = build()
            full = grown if context is None else GaussianScene.concat([context, grown])
            cams = _views_around(centre, radius, up, config, gen)
            outs = [render(full, cam, background=background) for cam in cams]
            if strategy is not None:
                for out in outs:
                    out.retain_means2d_grad()
            images = torch.stack([o.rgb.permute(2, 0, 1) for o in outs])  # [B,3,H,W]
            kwargs = dict(loss_kwargs)
            if method == "vsd" and ("camera" in accepts or "**" in accepts):
                kwargs["camera"] = _camera_vectors(cams).to(dev)
            loss = distiller.loss(
                images.clamp(0, 1),
                prompt,
                progress=step / max(1, config.steps),
                generator=gen,
                **kwargs,
            )
            params.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if strategy is not None:
                skip = 0 if context is None else len(context)
                for cam, out in zip(cams, outs, strict=True):
                    g = out.means2d_grad()
                    if g is not None:
                        strategy.accumulate(
                            params, g[skip:], out.radii[skip:], (cam.width, cam.height), len(cams)
                        )
            params.optimizer.step()
            with torch.no_grad():  # positions stay inside the box
                local = (params["means"] - c32) @ R32
                params["means"].copy_(
                    torch.minimum(local.abs(), half32).copysign(local) @ R32.T + c32
                )
            steps_run = step + 1
            if strategy is not None:
                progress = Progress(steps_run, steps_run / config.steps, config.steps)
                _refine(strategy, params, progress, config, gen)
            if on_step is not None:
                on_step(step + 1, config.steps, float(loss.detach()))

    with torch.no_grad():
        grown = build().detach().to("cpu")
    grown, pruned, floaters = _clean(grown, config)
    T = torch.eye(4, dtype=torch.float64)  # the Gaussians are in world coordinates already
    support: dict[str, Any] | None = None
    below = 0
    note = "not asked (on_support=False)"
    if config.on_support:
        plane, note = _support_under(scene, grown, up)
        if plane is not None:
            grown, T, below = _rest_on(grown, plane)
            _, h = plane.to_plane(grown.means.double().numpy())
            support = {**plane.describe(), "gap": float(h.min())}
            note = (
                f"rests on the support plane, moved {float(T[:3, 3].norm()):.4g} along its normal"
            )
    grown = grown.replace(meta={"name": name or prompt})
    out, mask = insert_object(scene, grown.to(dev), torch.eye(4), name=name or prompt)
    record = {
        **out.meta["inserted"][-1],
        "prompt": prompt,
        "init": str(config.init),
        "method": method,
        "densify": bool(config.densify),
        "steps": steps_run,
        "pruned": pruned,
        "floaters": floaters,
        "below_support": below,
        "support": support,
        "support_note": note,
        "T_rest": T.tolist(),
    }
    meta = {**out.meta, "inserted": [*out.meta["inserted"][:-1], record]}
    return out.replace(meta=meta), mask
