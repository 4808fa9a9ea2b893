"""Converting between a NeRF and Gaussians by progressive volume distillation (PVD, "One is All").

The source scene is the teacher: it renders as many views as the student needs, posed where the
capture's cameras were (jittered around them, so the student sees new views too) or on an orbit
around the scene when it records no cameras. Renders are cached at a modest resolution as RGBA
(colour over black plus opacity), so the student trains on them with any background, and the
student is trained by the ordinary trainers over an in-memory view source:

- `nerf_to_gaussians`: Gaussians seeded on the NeRF's surface (the expected-depth points of
  teacher pixels whose opacity exceeds `surface_opacity`, coloured by the pixel as SH DC), then
  `fields.training.Trainer` (photometric loss, densification) against the teacher views. A NeRF
  with a feature branch gives every Gaussian `field.features(mean)` as its `feature` extra;
  `converted_feature_field` turns that into the `FeatureField` saved next to the scene.
- `gaussians_to_nerf`: a NeRF in a box around the Gaussians' robust bounds (contracted beyond
  when a camera sits inside them), trained by `NerfTrainer` on rays of the cached Gaussian
  renders; with a `FeatureField` the NeRF's feature branch is then fitted, geometry frozen, to
  the rendered per-Gaussian features.

Both run against one time budget (teacher renders included). `on_progress(fraction, message)`
reports along the way; `should_stop()` is polled between views and steps, and a conversion
it stops raises `InterruptedError`.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..camera import Camera, cameras_from_meta
from ..conventions import (
    fit_distance,
    framing_sphere,
    look_at_camera,
    pinhole_K,
    robust_bounds,
    scene_up,
)
from ..datasets import Dataset
from ..features import FeatureField
from ..rendering import render
from ..scene import GaussianScene
from ..training import TrainConfig, Trainer, initial_params, look_at_point
from ._field import NerfModelConfig, SceneBox
from ._march import accumulate, composite_weights
from ._scene import NerfScene, camera_rays, render_nerf
from ._trainer import NerfTrainConfig, NerfTrainer

Progress = Callable[[float, str], None]  # (fraction of the conversion done, what it is doing)
StopFn = Callable[[], bool]
Background = Literal["white", "black", "random"]

# Share of a conversion's progress bar the teacher renders take.
_RENDER_SHARE = 0.1
# On a slow machine the teacher renders stop after this share of the time budget (keeping at
# least `_MIN_VIEWS` views), so the student always gets most of it.
_MAX_RENDER_BUDGET = 0.3
_MIN_VIEWS = 8
# Field of view of the orbit views around a scene that records no cameras.
_ORBIT_FOV_DEG = 50.0


@dataclass(frozen=True)
class ConvertConfig:
    """One conversion, either way (what `scenelab convert` exposes)."""

    time_budget_min: float | None = 5.0
    """Whole conversion, teacher renders included (None: `steps` alone decide)."""
    steps: int = 30_000
    """Most optimisation steps of the student (Gaussian steps, or NeRF steps)."""
    views: int = 150
    """Teacher views rendered and cached."""
    resolution: int = 200
    """Longer side of the teacher views, in pixels."""
    jitter_deg: float = 15.0
    """How far the teacher views stray from the recorded cameras: rotation about the point
    the rig looks at (object-centric rigs), a tenth of it as a turn of the view otherwise."""
    background: Background = "random"
    """What the student's renders and the teacher's views are composited over while training."""
    seed: int = 0
    # NeRF -> Gaussians
    max_gaussians: int = 300_000
    init_points: int = 30_000
    """Gaussians seeded on the NeRF's surface."""
    surface_opacity: float = 0.5
    """Teacher pixels at least this opaque give surface points."""
    init_opacity: float = 0.5
    sh_degree: int = 3
    strategy: Literal["default", "mcmc"] = "default"
    # Gaussians -> NeRF
    nerf_model: NerfModelConfig = field(default_factory=NerfModelConfig)
    nerf_samples: int = 1 << 16
    """Samples the NeRF marches per training step (its rays adapt to it)."""
    feature_share: float = 0.2
    """Of a time-budgeted Gaussians -> NeRF run with features: the share spent fitting the
    feature branch."""
    feature_steps: int = 2000
    """Most steps of the feature branch's fit."""

    def __post_init__(self) -> None:
        if self.time_budget_min is not None and not self.time_budget_min > 0:
            raise ValueError(f"time budget must be > 0 minutes, got {self.time_budget_min}")
        for name in (
            "steps",
            "views",
            "max_gaussians",
            "init_points",
            "feature_steps",
            "nerf_samples",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 8 <= self.resolution <= 4096:
            raise ValueError(f"resolution must be in [8, 4096] pixels, got {self.resolution}")
        if not 0.0 <= self.jitter_deg <= 90.0:
            raise ValueError(f"jitter_deg must be in [0, 90], got {self.jitter_deg}")
        if self.background not in ("white", "black", "random"):
            raise ValueError(f"background must be white, black or random, got {self.background!r}")
        if not 0.0 < self.surface_opacity < 1.0 or not 0.0 < self.init_opacity < 1.0:
            raise ValueError("surface_opacity and init_opacity must be in (0, 1)")
        if self.sh_degree not in (0, 1, 2, 3):
            raise ValueError(f"sh_degree must be 0..3, got {self.sh_degree}")
        if self.strategy not in ("default", "mcmc"):
            raise ValueError(f"strategy must be 'default' or 'mcmc', got {self.strategy!r}")
        if not 0.0 < self.feature_share < 1.0:
            raise ValueError(f"feature_share must be in (0, 1), got {self.feature_share}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------- progress and budget
class _Clock:
    """The conversion's budget, progress reports and stop polling."""

    def __init__(
        self, config: ConvertConfig, on_progress: Progress | None, should_stop: StopFn | None
    ):
        self.t0 = time.perf_counter()
        self.budget_s = None if config.time_budget_min is None else 60.0 * config.time_budget_min
        self.on_progress = on_progress
        self.should_stop = should_stop

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def remaining_min(self, share: float = 1.0, reserve_s: float = 0.0) -> float | None:
        """Minutes left of the budget less `reserve_s`, times `share`; at least a few seconds."""
        if self.budget_s is None:
            return None
        return max(self.budget_s - self.elapsed - reserve_s, 3.0) * share / 60.0

    def report(self, fraction: float, message: str) -> None:
        if self.on_progress is not None:
            self.on_progress(min(max(fraction, 0.0), 1.0), message)

    def render_time_up(self, views_done: int) -> bool:
        """Whether the teacher renders have used up their share of the budget."""
        return (
            self.budget_s is not None
            and views_done >= _MIN_VIEWS
            and self.elapsed > _MAX_RENDER_BUDGET * self.budget_s
        )

    def check(self, where: str) -> None:
        if self.should_stop is not None and self.should_stop():
            raise InterruptedError(f"conversion cancelled ({where})")


# ---------------------------------------------------------------------- teacher views
@dataclass
class _Views:
    """Cached teacher renders: cameras, RGBA [H,W,4] float (straight colour, opacity) and
    optionally feature maps [H,W,C] (float16, premultiplied by opacity)."""

    cameras: list[Camera]
    rgba: list[Tensor]
    features: list[Tensor] | None = None


class _ViewSource:
    """The slice of `fields.Dataset` the trainers read (views, names, RGBA), over cached
    teacher renders held in memory: how the Gaussian and NeRF trainers train on a teacher."""

    def __init__(self, views: _Views, root: str) -> None:
        self._views = views
        self.root = Path(root)
        self.splits: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self._views.cameras)

    @property
    def cameras(self) -> list[Camera]:
        return list(self._views.cameras)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self._views.cameras]

    def load_rgba(self, i: int) -> tuple[Camera, Tensor]:
        return self._views.cameras[i], self._views.rgba[i]

    def load_points(self) -> None:
        return None

    def as_dataset(self) -> Dataset:
        # The trainers are typed against `Dataset`; they use only what this class has.
        return cast(Dataset, self)


def _straight_rgba(premult: Tensor, alpha: Tensor) -> Tensor:
    """[H,W,3] colour over black and [H,W,1] opacity -> [H,W,4] straight RGBA in [0,1]."""
    a = alpha.clamp(0, 1)
    rgb = torch.where(a > 1e-4, premult / a.clamp_min(1e-4), torch.zeros_like(premult))
    return torch.cat([rgb.clamp(0, 1), a], -1).float().cpu()


def _scaled_to(camera: Camera, resolution: int) -> Camera:
    return camera.scaled(resolution / max(camera.width, camera.height))


def _random_rotation(max_deg: float, gen: torch.Generator) -> np.ndarray:
    """[3,3] rotation about a uniformly random axis by an angle uniform in [0, max_deg]."""
    axis = torch.randn(3, generator=gen, dtype=torch.float64).numpy()
    axis /= max(np.linalg.norm(axis), 1e-12)
    angle = math.radians(max_deg) * float(torch.rand(1, generator=gen, dtype=torch.float64))
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * K + (1 - math.cos(angle)) * K @ K


def conversion_views(
    recorded: list[Camera] | None,
    n: int,
    resolution: int,
    *,
    jitter_deg: float,
    gen: torch.Generator,
    orbit: tuple[np.ndarray, float, np.ndarray] | None = None,  # (centre [3], radius, up [3])
) -> list[Camera]:
    """`n` views to render the teacher from, at `resolution` (longer side).

    In random order. With recorded cameras: each recorded camera once (evenly spaced ones when
    more than `n`), the rest jittered
    copies of random recorded ones. Object-centric rigs (axes meeting, `look_at_point`) move
    around the meeting point by up to `jitter_deg` and 10% in distance, still looking at it;
    other rigs move by up to 10% of the median camera spacing and turn by up to a tenth of
    `jitter_deg`. Without cameras: `n` views on a sphere around `orbit`'s centre, uniform in
    direction, at the distance where a sphere of its radius fills a 50 degree view."""
    if recorded:
        cams = [_scaled_to(c, resolution) for c in recorded]
        first = (
            cams if n >= len(cams) else [cams[round(i)] for i in np.linspace(0, len(cams) - 1, n)]
        )
        out = list(first)
        meet = look_at_point(cams)
        centres = np.stack([c.center.double().numpy() for c in cams])
        if len(cams) > 1:
            d = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
            np.fill_diagonal(d, np.inf)
            spacing = float(np.median(d.min(1)))
        else:
            spacing = 0.0
        while len(out) < n:
            c = cams[int(torch.randint(len(cams), (1,), generator=gen))]
            c2w = c.c2w.double().numpy()
            eye, up = c2w[:3, 3], -c2w[:3, 1]
            if meet is not None and meet[1] < 0.25:
                centre = meet[0]
                R = _random_rotation(jitter_deg, gen)
                s = math.exp(0.1 * (2 * float(torch.rand(1, generator=gen)) - 1))
                new_eye = centre + s * (R @ (eye - centre))
                cam = look_at_camera(new_eye, centre, R @ up, c.K, c.width, c.height)
            else:
                R = _random_rotation(jitter_deg / 10, gen)
                shift = torch.randn(3, generator=gen, dtype=torch.float64).numpy()
                new = np.eye(4)
                new[:3, :3] = R @ c2w[:3, :3]
                new[:3, 3] = eye + 0.1 * spacing * shift
                cam = Camera.from_c2w(torch.from_numpy(new), c.K, c.width, c.height)
            out.append(cam)
        # Shuffled, so that any prefix (what a slow machine renders in time) spreads evenly.
        order = torch.randperm(len(out), generator=gen).tolist()
        return [_renamed(out[j], f"teacher_{i:04d}") for i, j in enumerate(order)]
    if orbit is None:
        raise ValueError("no recorded cameras and no orbit to place teacher views on")
    centre, radius, up = orbit
    dist = fit_distance(radius, _ORBIT_FOV_DEG)
    K = pinhole_K(resolution, resolution, _ORBIT_FOV_DEG)
    out = []
    for i in range(n):
        d = torch.randn(3, generator=gen, dtype=torch.float64).numpy()
        d /= max(np.linalg.norm(d), 1e-12)
        out.append(
            look_at_camera(
                centre + dist * d, centre, up, K, resolution, resolution, f"teacher_{i:04d}"
            )
        )
    return out


def _renamed(camera: Camera, name: str) -> Camera:
    return Camera(camera.K, camera.viewmat, camera.width, camera.height, name)


def _recorded_cameras(meta: dict[str, Any]) -> list[Camera] | None:
    """The scene's recorded cameras, less the views its training held out (so those stay
    unseen by the student as they were by the teacher); all of them when that leaves none."""
    cams = cameras_from_meta(meta)
    if not cams:
        return None
    training = meta.get("training")
    held = set(training.get("held_out", [])) if isinstance(training, dict) else set()
    kept = [c for c in cams if c.name not in held]
    return kept or cams


def _meta_up(
    meta: dict[str, Any], cameras: list[Camera] | None, scene: GaussianScene | None = None
) -> np.ndarray:
    """The up axis by the one rule (`fields.conventions.scene_up`): meta, cameras, the Gaussians'
    estimate (`scene`), else the default."""
    shown = scene if scene is not None else GaussianScene.empty()
    return scene_up(shown.replace(meta=dict(meta)), cameras or ()).vector


def _converted_meta(
    meta: dict[str, Any], kind: str, config: ConvertConfig, **facts: Any
) -> dict[str, Any]:
    """The source's facts (cameras, up, labels, training provenance: what `scenelab eval`
    reads) without its scores, plus a `converted_from` record holding them."""
    out = {k: v for k, v in meta.items() if k not in ("metrics", "converted_from")}
    record: dict[str, Any] = {"kind": kind, "method": "pvd", "config": config.to_dict()}
    if meta.get("metrics") is not None:
        record["metrics"] = meta["metrics"]
    if meta.get("converted_from") is not None:
        record["converted_from"] = meta["converted_from"]
    record.update(facts)
    out["converted_from"] = record
    return out


# ---------------------------------------------------------------------- NeRF -> Gaussians
@torch.no_grad()
def _render_nerf_views(
    scene: NerfScene,
    cameras: list[Camera],
    config: ConvertConfig,
    clock: _Clock,
    gen: torch.Generator,
) -> tuple[_Views, Tensor, Tensor]:
    """Teacher renders, plus surface points (xyz [P,3], rgb [P,3]) from their pixels at least
    `surface_opacity` opaque (expected depth, straight colour)."""
    per_view = max(1, math.ceil(4 * config.init_points / len(cameras)))
    rgba, pts, cols = [], [], []
    for i, cam in enumerate(cameras):
        clock.check(f"teacher view {i}/{len(cameras)}")
        if clock.render_time_up(i):
            cameras = cameras[:i]
            break
        out = render_nerf(scene, cam, background=(0.0, 0.0, 0.0))
        view = _straight_rgba(out.rgb, out.alpha)
        rgba.append(view)
        origins, dirs, zpt = camera_rays(cam)
        a = out.alpha.reshape(-1).cpu()
        hit = (a >= config.surface_opacity).nonzero().squeeze(1)
        if len(hit) > per_view:
            hit = hit[torch.randperm(len(hit), generator=gen)[:per_view]]
        t = out.depth.reshape(-1).cpu()[hit] / zpt[hit]
        pts.append(origins[hit] + t[:, None] * dirs[hit])
        cols.append(view.reshape(-1, 4)[hit, :3])
        clock.report(_RENDER_SHARE * (i + 1) / len(cameras), f"teacher view {i + 1}/{len(cameras)}")
    return _Views(cameras, rgba), torch.cat(pts), torch.cat(cols)


def nerf_to_gaussians(
    scene: NerfScene,
    config: ConvertConfig | None = None,
    *,
    on_progress: Progress | None = None,
    should_stop: StopFn | None = None,
    device: torch.device | str = "cpu",
) -> GaussianScene:
    """Distil `scene` into Gaussians (module docstring). The result keeps the NeRF's meta
    (cameras, up, training provenance) with its scores moved into `meta["converted_from"]`;
    with a feature branch, every Gaussian carries `feature` [N,C] = the branch at its mean
    (see `converted_feature_field`). Raises `ValueError` when the NeRF renders nothing opaque
    from any teacher view, `InterruptedError` when `should_stop()` turns True."""
    if not isinstance(scene, NerfScene):
        raise TypeError(f"nerf_to_gaussians expects a NerfScene, got {type(scene).__name__}")
    config = config or ConvertConfig()
    clock = _Clock(config, on_progress, should_stop)
    gen = torch.Generator().manual_seed(config.seed)
    recorded = _recorded_cameras(scene.meta)
    box = scene.box
    orbit = (np.asarray(box.center, dtype=np.float64), box.radius, _meta_up(scene.meta, None))
    cams = conversion_views(
        recorded,
        config.views,
        config.resolution,
        jitter_deg=config.jitter_deg,
        gen=gen,
        orbit=orbit,
    )
    views, xyz, rgb = _render_nerf_views(scene, cams, config, clock, gen)
    if len(xyz) == 0:
        raise ValueError(
            f"the NeRF renders nothing opaque: none of {len(cams)} views around its "
            f"{'recorded cameras' if recorded else 'box'} has a pixel at least "
            f"{config.surface_opacity:g} opaque (an empty or untrained field?)"
        )
    if len(xyz) > config.init_points:
        keep = torch.randperm(len(xyz), generator=gen)[: config.init_points]
        xyz, rgb = xyz[keep], rgb[keep]
    tensors = initial_params(
        xyz, rgb, sh_degree=config.sh_degree, opacity=config.init_opacity, scale=1.0
    )
    init = GaussianScene(
        tensors["means"],
        tensors["quats"],
        tensors["scales"],
        tensors["opacities"],
        torch.cat([tensors["sh0"], tensors["shN"]], 1),
    )
    clock.check("seeding")
    train_cfg = TrainConfig(
        steps=config.steps,
        time_budget_min=clock.remaining_min(),
        max_gaussians=config.max_gaussians,
        strategy=config.strategy,
        sh_degree=config.sh_degree,
        background=config.background,
        eval_every=0,
        seed=config.seed,
    )
    source = _ViewSource(views, "nerf-teacher")
    with warnings.catch_warnings():
        # A teacher view that sees nothing is transparent, not "black": it teaches emptiness.
        warnings.filterwarnings("ignore", message=r".*training images are entirely black")
        trainer = Trainer(source.as_dataset(), train_cfg, device=device, init=init)
    # The budget counts from now (the trainer decoded its views), less a little for the end.
    trainer.config = replace(train_cfg, time_budget_min=clock.remaining_min(reserve_s=2.0))

    def step_report(stats: Any) -> None:
        clock.report(
            _RENDER_SHARE + (1 - _RENDER_SHARE) * stats.fraction,
            f"step {stats.step}: {stats.n_gaussians:,} Gaussians, {stats.psnr:.1f} dB",
        )

    trainer.run(on_step=step_report, should_stop=clock.should_stop)
    if not trainer.done:
        raise InterruptedError(f"conversion cancelled at step {trainer.step_count}")
    out = trainer.scene()
    if scene.has_features:
        with torch.no_grad():
            feats = torch.cat(
                [scene.field.features(m.to(scene.device)).cpu() for m in out.means.split(1 << 16)]
            )
        out = out.with_extras(feature=feats)
    meta = _converted_meta(
        scene.meta,
        "nerf",
        config,
        teacher_views=len(views.cameras),
        steps=trainer.step_count,
        seconds=round(clock.elapsed, 2),
        gaussians=len(out),
    )
    clock.report(1.0, f"{len(out):,} Gaussians")
    return out.replace(meta=meta)


def converted_feature_field(gaussians: GaussianScene, nerf: NerfScene) -> FeatureField | None:
    """The feature field of Gaussians converted from `nerf`: its heads, levels and teachers
    with the Gaussians' `feature` extra as features, bound to `gaussians` (save it next to the
    scene as `<stem>.features.safetensors`). None when the NeRF has no feature field."""
    ff = nerf.feature_field
    if ff is None or "feature" not in gaussians.extras:
        return None
    feats = gaussians.extras["feature"].float().cpu()
    if feats.shape[1] != ff.channels:
        raise ValueError(
            f"the Gaussians carry {feats.shape[1]} feature channels but the NeRF's field "
            f"decodes {ff.channels}"
        )
    return ff.with_features(feats).bind(gaussians)


# ---------------------------------------------------------------------- Gaussians -> NeRF
def nerf_box(scene: GaussianScene, cameras: list[Camera] | None) -> SceneBox:
    """A cube around the Gaussians' robust bounds (opacity-weighted 0.1% / 99.9% quantiles of
    the means, 10% margin plus three of their median standard deviations); contracted beyond
    (mode "contract") when a camera sits inside it, as in captures taken from within."""
    lo, hi = robust_bounds(scene, 0.001)
    sigma = float(torch.exp(scene.scales.detach().float()).max(-1).values.median())
    centre = 0.5 * (lo + hi)
    half = 0.5 * float((hi - lo).max()) * 1.1 + 3 * sigma
    half = max(half, 1e-6)
    mode = "box"
    if cameras:
        inside = [bool((np.abs(c.center.double().numpy() - centre) < half).all()) for c in cameras]
        if any(inside):
            mode = "contract"
    return SceneBox(tuple(float(v) for v in centre), half, mode)  # type: ignore[arg-type]


@torch.no_grad()
def _render_gaussian_views(
    scene: GaussianScene,
    cameras: list[Camera],
    features: Tensor | None,
    clock: _Clock,
) -> _Views:
    rgba, feats = [], []
    for i, cam in enumerate(cameras):
        clock.check(f"teacher view {i}/{len(cameras)}")
        if clock.render_time_up(i):
            cameras = cameras[:i]
            break
        out = render(scene, cam, features=features)
        rgba.append(_straight_rgba(out.rgb, out.alpha))
        if features is not None and out.features is not None:
            feats.append(out.features.to("cpu", torch.float16))
        clock.report(_RENDER_SHARE * (i + 1) / len(cameras), f"teacher view {i + 1}/{len(cameras)}")
    return _Views(cameras, rgba, feats if features is not None else None)


@torch.no_grad()
def _final_grid_seconds(nerf: NerfScene, samples_per_cell: int = 4) -> float:
    """About how long `NerfTrainer.scene(final=True)` takes to rebuild `nerf`'s occupancy
    grid (density at `samples_per_cell` points in every cell), from one timed batch."""
    n = 1 << 15
    pts = nerf.cell_points(torch.randint(0, nerf.config.occupancy_res**3, (n,)), jitter=True)
    t0 = time.perf_counter()
    nerf.field.density(pts.to(nerf.device))
    per_point = (time.perf_counter() - t0) / n
    return per_point * samples_per_cell * nerf.config.occupancy_res**3


def _sample_pixels(
    views: _Views, n: int, gen: torch.Generator
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(origins [n,3], unit dirs [n,3], rgba [n,4], features [n,C]) of random teacher pixels."""
    V = len(views.cameras)
    v = torch.randint(0, V, (n,), generator=gen)
    o_list, d_list, c_list, f_list = [], [], [], []
    for j in v.unique().tolist():
        rows = (v == j).nonzero().squeeze(1)
        cam = views.cameras[j]
        pix = torch.randint(0, cam.width * cam.height, (len(rows),), generator=gen)
        o, d, _ = _rays_of(cam, pix)
        o_list.append(o)
        d_list.append(d)
        c_list.append(views.rgba[j].reshape(-1, 4)[pix])
        assert views.features is not None
        f_list.append(views.features[j].reshape(cam.width * cam.height, -1)[pix].float())
    return torch.cat(o_list), torch.cat(d_list), torch.cat(c_list), torch.cat(f_list)


def _rays_of(camera: Camera, pix: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Rays (origins, unit dirs, z_per_t) through flat pixel indices [M] (row-major)."""
    y = (pix // camera.width).float() + 0.5
    x = (pix % camera.width).float() + 0.5
    d = torch.stack(
        [(x - camera.cx) / camera.fx, (y - camera.cy) / camera.fy, torch.ones_like(x)], -1
    )
    zpt = 1.0 / d.norm(dim=-1)
    d = d * zpt[:, None]
    c2w = camera.c2w.float()
    return c2w[:3, 3].expand(len(pix), 3), d @ c2w[:3, :3].T, zpt


def _fit_feature_branch(
    nerf: NerfScene,
    views: _Views,
    steps: int,
    budget_min: float | None,
    clock: _Clock,
    gen: torch.Generator,
    progress_span: tuple[float, float],
    samples: int,
    lr: float = 1e-2,
) -> int:
    """Fit `nerf`'s feature branch (geometry frozen) to the cached feature maps: the ray's
    feature-branch values composited with the NeRF's own weights should equal the Gaussians'
    rendered features (both premultiplied by opacity). Returns the steps taken."""
    fld = nerf.field
    params = [p for p in (fld.feature_table, *fld.feature_head.parameters()) if p is not None]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.99), eps=1e-15)
    dev = nerf.device
    t0 = time.perf_counter()
    step = 0
    rays = max(64, samples // 64)  # adapted below so each step marches about `samples`
    while step < steps:
        frac = step / steps
        if budget_min is not None:
            frac = max(frac, (time.perf_counter() - t0) / (60 * budget_min))
        if frac >= 1.0:
            break
        clock.check(f"feature step {step}")
        for g in opt.param_groups:
            g["lr"] = lr * (0.1**frac)
        o, d, _, target = _sample_pixels(views, rays, gen)
        o, d, target = o.to(dev), d.to(dev), target.to(dev)
        with torch.no_grad():
            smp = nerf.march_rays(o, d)
            smp = type(smp)(*(t.to(dev) for t in smp))
            pos = o[smp.ray_ids] + smp.t[:, None] * d[smp.ray_ids]
            sigma, _ = fld.density(pos)
            w = composite_weights(sigma, smp, len(o)).weights
        keep = w > 1e-4
        pred = accumulate(fld.features(pos[keep]), w[keep], smp.ray_ids[keep], len(o))
        loss = F.mse_loss(pred, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        n = max(int(keep.sum()), 1)
        rays = int(min(1 << 15, max(64, rays * samples / n)))
        if step % 10 == 0:
            a, b = progress_span
            clock.report(
                a + (b - a) * frac, f"feature step {step}: loss {float(loss.detach()):.3g}"
            )
    for p in params:
        p.requires_grad_(False)
    return step


def gaussians_to_nerf(
    scene: GaussianScene,
    config: ConvertConfig | None = None,
    *,
    feature_field: FeatureField | None = None,
    on_progress: Progress | None = None,
    should_stop: StopFn | None = None,
    device: torch.device | str = "cpu",
) -> NerfScene:
    """Distil Gaussians into a NeRF (`config.nerf_model`, box from `nerf_box`) trained by
    `NerfTrainer` on cached renders of the Gaussians. With `feature_field` (lifted on
    `scene`) the NeRF gets a feature branch fitted to the rendered per-Gaussian features and
    `feature_field`'s heads as its `feature_field`. The NeRF's meta keeps the scene's (cameras,
    up, labels, training provenance) with its scores moved into `meta["converted_from"]`."""
    if not isinstance(scene, GaussianScene):
        raise TypeError(f"gaussians_to_nerf expects a GaussianScene, got {type(scene).__name__}")
    if len(scene) == 0:
        raise ValueError("cannot convert an empty Gaussian scene (it has no Gaussians)")
    config = config or ConvertConfig()
    if feature_field is not None:
        feature_field.check_count(len(scene))
    clock = _Clock(config, on_progress, should_stop)
    gen = torch.Generator().manual_seed(config.seed)
    meta = dict(scene.meta)
    recorded = _recorded_cameras(meta)
    centre, radius = framing_sphere(scene, 0.001)
    orbit = (centre, radius, _meta_up(meta, recorded, scene))
    cams = conversion_views(
        recorded,
        config.views,
        config.resolution,
        jitter_deg=config.jitter_deg,
        gen=gen,
        orbit=orbit,
    )
    src = scene.detach().to(device)  # gsplat renders the teacher on CUDA
    feats = None if feature_field is None else feature_field.features.float().to(device)
    views = _render_gaussian_views(src, cams, feats, clock)
    if max(float(v[..., 3].max()) for v in views.rgba) < 0.01:
        raise ValueError(
            f"the Gaussians are invisible from all {len(cams)} teacher views (fully "
            "transparent, or outside every view)"
        )
    box = nerf_box(scene, recorded)
    init = NerfScene.create(config.nerf_model, box).to(device)
    with_features = feats is not None
    share = 1.0 - config.feature_share if with_features else 1.0
    nerf_cfg = NerfTrainConfig(
        steps=config.steps,
        time_budget_min=clock.remaining_min(share),
        background=config.background,
        eval_every=0,
        seed=config.seed,
        target_samples=config.nerf_samples,
        rays_per_step=max(256, config.nerf_samples // 16),
        model=config.nerf_model,
    )
    source = _ViewSource(views, "gaussian-teacher")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*training images are entirely black")
        trainer = NerfTrainer(source.as_dataset(), nerf_cfg, device=device, init=init)
    # Counted from now, leaving time for the saved scene's conservative occupancy grid.
    trainer.config = replace(
        nerf_cfg,
        time_budget_min=clock.remaining_min(share, reserve_s=2.0 + _final_grid_seconds(init)),
    )
    rgb_share = (1 - _RENDER_SHARE) * share

    def step_report(stats: Any) -> None:
        clock.report(
            _RENDER_SHARE + rgb_share * stats.fraction,
            f"step {stats.step}: {stats.psnr:.1f} dB, {stats.occupied:.1%} occupied",
        )

    trainer.run(on_step=step_report, should_stop=clock.should_stop)
    if not trainer.done:
        raise InterruptedError(f"conversion cancelled at step {trainer.step_count}")
    clock.report(_RENDER_SHARE + rgb_share, "rebuilding the occupancy grid")
    nerf = trainer.scene(final=True)
    feature_steps = 0
    if with_features:
        assert feature_field is not None
        nerf.field.add_feature_branch(feature_field.channels)
        nerf.to(device)
        feature_steps = _fit_feature_branch(
            nerf,
            views,
            config.feature_steps,
            clock.remaining_min(),
            clock,
            gen,
            (_RENDER_SHARE + rgb_share, 1.0),
            config.nerf_samples,
        )
        nerf.to("cpu")
        nerf.feature_field = FeatureField(
            features=torch.zeros(0, feature_field.channels),
            heads={k: v.detach().float().cpu() for k, v in feature_field.heads.items()},
            config=dict(feature_field.config),
            teachers=list(feature_field.teachers),
            meta=dict(feature_field.meta),
            levels=feature_field.levels,
        )
    nerf.meta = _converted_meta(
        meta,
        "gaussians",
        config,
        teacher_views=len(views.cameras),
        steps=trainer.step_count,
        feature_steps=feature_steps,
        seconds=round(clock.elapsed, 2),
        gaussians=len(scene),
    )
    clock.report(1.0, "done")
    return nerf
