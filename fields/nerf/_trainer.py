"""`NerfTrainer`: posed photos -> a NeRF scene, one batch of rays at a time.

The recipe is Instant-NGP's as nerfacc runs it: random rays over every training pixel, the
number of rays adapted so each step marches about `target_samples` samples, MSE against the photo
over the run's background (a random colour per ray with `background="random"`), Adam (lr 1e-2,
eps 1e-15) with weight decay on the MLPs, a short warm-up and step decays at 50/75/90% of the run,
and the occupancy grid refreshed every `occupancy_every` steps. Schedules are fractions of the
run, so `--steps` and `--time-budget` runs get the same recipe. Same surface as the Gaussian
`Trainer` (step/run/done/fraction/scene/evaluate/checkpoints), so the CLI and the viewer drive
either.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from ..camera import Camera, cameras_to_meta
from ..conventions import cameras_up, format_up
from ..datasets import Dataset
from ..training import (
    EvalResult,
    Splits,
    TrainImages,
    camera_extent,
    choose_splits,
    evaluate_views,
    load_checkpoint,
    look_at_point,
    write_checkpoint,
)
from ._field import NerfModelConfig, SceneBox
from ._io import save_nerf
from ._scene import NerfScene, render_nerf

CHECKPOINT_VERSION = 1
Bound = Literal["auto", "box", "contract"]


@dataclass(frozen=True)
class NerfTrainConfig:
    """One NeRF training run (what `scenelab train --model nerf` exposes)."""

    steps: int = 20_000
    time_budget_min: float | None = None
    downscale: float = 1.0
    background: Literal["white", "black", "random"] = "white"
    eval_every: int = 8
    seed: int = 0
    rays_per_step: int = 4096  # the first step's rays; later steps adapt to `target_samples`
    target_samples: int = 1 << 16  # samples marched per step
    max_rays_per_step: int = 1 << 15
    lr: float = 1e-2
    weight_decay: float = 1e-6  # on the MLPs
    # Photos with alpha train over a random colour per ray whatever `background` says (it sets
    # what held-out views and renders are composited over): over a fixed white, white fog in
    # empty space costs nothing, fills the occupancy grid and slows every frame down.
    random_background_on_alpha: bool = True
    occupancy_every: int = 16
    occupancy_fraction: float = 0.125  # random cells refreshed per update (plus occupied ones)
    bound: Bound = "auto"
    box_radius: float | None = None  # override the box (or inner contraction box) radius
    model: NerfModelConfig = field(default_factory=NerfModelConfig)

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.time_budget_min is not None and not self.time_budget_min > 0:
            raise ValueError(f"time budget must be > 0 minutes, got {self.time_budget_min}")
        if self.background not in ("white", "black", "random"):
            raise ValueError(f"background must be white, black or random, got {self.background!r}")
        if self.eval_every < 0:
            raise ValueError(f"eval_every must be >= 0, got {self.eval_every}")
        if self.rays_per_step < 1 or self.target_samples < 1:
            raise ValueError("rays_per_step and target_samples must be >= 1")
        if self.bound not in ("auto", "box", "contract"):
            raise ValueError(f"bound must be auto, box or contract, got {self.bound!r}")
        if self.box_radius is not None and not self.box_radius > 0:
            raise ValueError(f"box radius must be > 0, got {self.box_radius}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NerfTrainConfig:
        d = dict(d)
        d["model"] = NerfModelConfig.from_dict(d.get("model", {}))
        return cls(**d)

    @property
    def eval_background(self) -> tuple[float, float, float]:
        return (0.0, 0.0, 0.0) if self.background == "black" else (1.0, 1.0, 1.0)


@dataclass(frozen=True)
class NerfStepStats:
    step: int
    loss: float
    psnr: float  # of this step's rays
    rays: int
    samples: int
    occupied: float  # fraction of occupancy cells set
    elapsed_s: float
    fraction: float

    @property
    def steps_per_s(self) -> float:
        return self.step / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float:
        f = self.fraction
        return self.elapsed_s * (1 - f) / f if f > 0 else math.inf


def scene_box(
    cameras: list[Camera],
    bound: Bound = "auto",
    radius: float | None = None,
    *,
    has_alpha: bool = False,
) -> SceneBox:
    """Where the field lives.

    Object-centric rigs (optical axes meeting at a point, D the median camera distance to it) get
    a box around that point, as Instant-NGP does: on a transparent background (Blender sets) of
    half-size 1.1 D tan(half the narrower FOV), what the median camera frames; with photos that
    show the world to their borders, of half-size 0.9 D (what lies further is painted onto the
    box). Other rigs (forward-facing, walk-throughs) get the cameras' bounds as the inner box of
    a mip-NeRF 360 contraction. `bound` forces "box" or "contract"; `radius` overrides the size."""
    meet = look_at_point(cameras)
    centres = np.stack([c.center.double().numpy() for c in cameras])
    meets = meet is not None and meet[1] < 0.25
    if bound == "auto":
        bound = "box" if meets else "contract"
    if meets:
        assert meet is not None
        centre = meet[0]
        D = float(np.median(np.linalg.norm(centres - centre, axis=1)))
        if bound == "box" and has_alpha:
            half = min(math.atan(0.5 * min(c.width / c.fx, c.height / c.fy)) for c in cameras)
            r = 1.1 * D * math.tan(half)
        else:
            r = 0.9 * D if bound == "box" else D
    else:
        centre, r = camera_extent(cameras)
    return SceneBox(tuple(float(v) for v in centre), float(radius or r), bound)  # type: ignore[arg-type]


class _RayData:
    """Every training pixel, as uint8 RGBA [V,H,W,4] plus per-view cameras as tensors."""

    def __init__(self, images: TrainImages) -> None:
        cams = images.cameras
        H = max(c.height for c in cams)
        W = max(c.width for c in cams)
        self.rgba = torch.zeros(len(cams), H, W, 4, dtype=torch.uint8)
        for i in range(len(cams)):
            t = images._rgba[i]
            if t.dtype != torch.uint8:
                t = (t.clamp(0, 1) * 255).round().to(torch.uint8)
            self.rgba[i, : t.shape[0], : t.shape[1]] = t
        self.size = torch.tensor([[c.width, c.height] for c in cams], dtype=torch.float32)  # [V,2]
        self.c2w = torch.stack([c.c2w.float() for c in cams])  # [V,4,4]
        self.intr = torch.tensor([[c.fx, c.fy, c.cx, c.cy] for c in cams], dtype=torch.float32)

    def sample(self, n: int, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """(origins [n,3], unit dirs [n,3], rgba [n,4] float) of random training pixels."""
        V = self.rgba.shape[0]
        v = torch.randint(0, V, (n,), generator=gen)
        uv = torch.rand(n, 2, generator=gen) * self.size[v]
        px = uv.floor().long()
        x, y = px[:, 0], px[:, 1]
        rgba = self.rgba[v, y, x].float() / 255.0
        k = self.intr[v]
        d = torch.stack(
            [(x + 0.5 - k[:, 2]) / k[:, 0], (y + 0.5 - k[:, 3]) / k[:, 1], torch.ones(n)], -1
        )
        R = self.c2w[v, :3, :3]
        dirs = torch.einsum("nij,nj->ni", R, d)
        dirs = dirs / dirs.norm(dim=-1, keepdim=True)
        return self.c2w[v, :3, 3], dirs, rgba


class NerfTrainer:
    """Trains a NeRF on `dataset` (splits as `choose_splits`). UI-free; see the module doc."""

    def __init__(
        self,
        dataset: Dataset,
        config: NerfTrainConfig,
        *,
        device: torch.device | str = "cpu",
        init: NerfScene | None = None,  # continue from this field (e.g. a distillation)
    ) -> None:
        self.config = config
        self.dataset = dataset
        self.device = torch.device(device)
        if len(dataset) == 0:
            raise ValueError(f"{dataset.root}: the dataset has no views")
        self.splits: Splits = choose_splits(dataset, config.eval_every)
        self.images = TrainImages(dataset, self.splits.train)
        self.cameras: list[Camera] = self.images.cameras
        self.data = _RayData(self.images)
        self.gen = torch.Generator().manual_seed(config.seed)
        torch.manual_seed(config.seed)
        if init is not None:
            self.model = init.to(self.device)
        else:
            box = scene_box(
                self.cameras, config.bound, config.box_radius, has_alpha=self.images.has_alpha
            )
            self.model = NerfScene.create(config.model, box).to(self.device)
        self.optimizer = make_optimizer(self.model, config.lr, config.weight_decay)
        self.rays = config.rays_per_step
        self.step_count = 0
        self.elapsed_s = 0.0
        self.last: NerfStepStats | None = None
        self.history: list[dict[str, float]] = []
        self._eval_images: TrainImages | None = None
        self._final: tuple[int, NerfScene] | None = None

    # ------------------------------------------------------------------ progress
    def fraction(self) -> float:
        f = self.step_count / self.config.steps
        if self.config.time_budget_min is not None:
            f = max(f, self.elapsed_s / (60.0 * self.config.time_budget_min))
        return min(1.0, f)

    @property
    def done(self) -> bool:
        return self.fraction() >= 1.0

    def lr_factor(self, fraction: float) -> float:
        """Warm-up over the first 1% (from 0.01x), then x0.33 at 50%, 75% and 90% of the run."""
        warm = min(1.0, 0.01 + 0.99 * fraction / 0.01)
        return warm * 0.33 ** sum(fraction >= m for m in (0.5, 0.75, 0.9))

    # ------------------------------------------------------------------ one step
    def step(self) -> NerfStepStats:
        c = self.config
        t0 = time.perf_counter()
        frac = self.fraction()
        self.step_count += 1
        for g in self.optimizer.param_groups:
            g["lr"] = c.lr * self.lr_factor(frac)
        if self.step_count == 1 or self.step_count % c.occupancy_every == 0:
            warm = frac < 0.02
            self.model.refresh_occupancy(
                fraction=1.0 if warm else c.occupancy_fraction, gen=self.gen
            )
        o, d, rgba = self.data.sample(self.rays, self.gen)
        if c.background == "random" or (c.random_background_on_alpha and self.images.has_alpha):
            bg = torch.rand(len(o), 3, generator=self.gen)
        else:
            bg = torch.tensor(c.eval_background).expand(len(o), 3)
        target = rgba[:, :3] * rgba[:, 3:] + (1 - rgba[:, 3:]) * bg
        dev = self.device
        out = self.model.render_rays(o.to(dev), d.to(dev), bg.to(dev))
        mse = torch.nn.functional.mse_loss(out.rgb, target.to(dev))
        self.optimizer.zero_grad(set_to_none=True)
        if out.n_samples > 0:
            mse.backward()
            self.optimizer.step()
        n = max(out.n_samples, 1)
        self.rays = int(min(c.max_rays_per_step, max(256, self.rays * c.target_samples / n)))
        self.elapsed_s += time.perf_counter() - t0
        loss = float(mse.detach())
        stats = NerfStepStats(
            step=self.step_count,
            loss=loss,
            psnr=-10 * math.log10(max(loss, 1e-10)),
            rays=len(o),
            samples=out.n_samples,
            occupied=self.model.occupied_fraction(),
            elapsed_s=self.elapsed_s,
            fraction=self.fraction(),
        )
        self.last = stats
        return stats

    def run(
        self,
        *,
        on_step: Callable[[NerfStepStats], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> NerfStepStats | None:
        while not self.done and not (should_stop is not None and should_stop()):
            stats = self.step()
            if on_step is not None:
                on_step(stats)
        return self.last

    # ------------------------------------------------------------------ results
    def scene(self, metrics: dict[str, Any] | None = None, *, final: bool = False) -> NerfScene:
        """A detached copy on the CPU with the sidecar facts. `final=True` rebuilds the occupancy
        grid conservatively (every cell, several points, dilated) as a saved scene needs."""
        model = copy.deepcopy(self._final_model() if final else self.model).to("cpu")
        for p in model.field.parameters():
            p.requires_grad_(False)
        cams = self.dataset.cameras
        meta: dict[str, Any] = {
            "cameras": cameras_to_meta(cams),
            "units": "those of the dataset's poses",
            "training": {
                "model": "nerf",
                "dataset": str(self.dataset.root),
                "config": self.config.to_dict(),
                "steps": self.step_count,
                "seconds": round(self.elapsed_s, 2),
                "splits": self.splits.rule,
                "held_out": [self.dataset.names[i] for i in self.splits.test],
                "history": list(self.history),
            },
        }
        up = cameras_up(cams)
        if up is not None:
            meta["up"] = format_up(up)
        if metrics:
            meta["metrics"] = metrics
        model.meta = meta
        return model

    def _final_model(self) -> NerfScene:
        """The model with the conservative occupancy grid a saved scene gets (cached per step),
        so held-out scores are those of the file `scene(final=True)` writes."""
        if self._final is None or self._final[0] != self.step_count:
            model = copy.deepcopy(self.model)
            for p in model.field.parameters():
                p.requires_grad_(False)
            model.refresh_occupancy(
                full=True, samples_per_cell=2, gen=torch.Generator().manual_seed(0)
            )
            self._final = (self.step_count, model)
        return self._final[1]

    @staticmethod
    def save_scene(scene: NerfScene, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write a scene of this trainer (.nerf), atomically."""
        return save_nerf(scene, path, overwrite=overwrite)

    def evaluate(
        self, *, with_lpips: bool = False, max_views: int | None = None
    ) -> EvalResult | None:
        """Held-out scores of the scene as `scene(final=True)` saves it."""
        idx = self.splits.test[:max_views] if max_views else self.splits.test
        if not idx:
            return None
        bg = self.config.eval_background
        if self._eval_images is None:
            self._eval_images = TrainImages(self.dataset, self.splits.test, check=False, exact=True)
        model = self._final_model()
        cams = [self._eval_images.cameras[j] for j in range(len(idx))]
        imgs = [self._eval_images.target(j, torch.tensor(bg)) for j in range(len(idx))]
        result = evaluate_views(
            lambda cam, background: render_nerf(model, cam, background=background).rgb,
            cams,
            imgs,
            background=bg,
            names=[self.dataset.names[i] for i in idx],
            with_lpips=with_lpips,
        )
        self.history.append(
            {"step": self.step_count, "seconds": round(self.elapsed_s, 2), "psnr": result.psnr}
        )
        return result

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {
            "version": CHECKPOINT_VERSION,
            "model_kind": "nerf",
            "config": self.config.to_dict(),
            "views": [self.dataset.names[i] for i in self.splits.train],
            "box": asdict(self.model.box),
            "step": self.step_count,
            "elapsed_s": self.elapsed_s,
            "field": {
                k: v.detach().cpu().clone() for k, v in self.model.field.state_dict().items()
            },
            "occupancy": self.model.occupancy.cpu().clone(),
            "density_ema": self.model.density_ema.cpu().clone(),
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "gen": self.gen.get_state(),
            "rays": self.rays,
            "history": list(self.history),
        }

    def load_state_dict(self, d: dict[str, Any]) -> None:
        if d.get("version") != CHECKPOINT_VERSION or d.get("model_kind") != "nerf":
            raise ValueError("not a scenelab NeRF training checkpoint (or from another version)")
        names = [self.dataset.names[i] for i in self.splits.train]
        if d["views"] != names:
            raise ValueError(
                f"the checkpoint was trained on other views ({len(d['views'])} views, first "
                f"{d['views'][:1]}) than this dataset's training split ({len(names)}, first "
                f"{names[:1]}); resume with the same data, --downscale and --eval-every"
            )
        b = d["box"]
        box = SceneBox(tuple(b["center"]), b["radius"], b["mode"])
        self.model = NerfScene.create(self.config.model, box)
        self.model.field.load_state_dict(d["field"])
        self.model.occupancy = d["occupancy"].bool()
        self.model.density_ema = d["density_ema"].float()
        self.model.to(self.device)
        self.optimizer = make_optimizer(self.model, self.config.lr, self.config.weight_decay)
        self.optimizer.load_state_dict(d["optimizer"])
        self.step_count = int(d["step"])
        self.elapsed_s = float(d["elapsed_s"])
        self.gen.set_state(d["gen"])
        self.rays = int(d["rays"])
        self.history = list(d.get("history", []))
        self._final = None

    def save_checkpoint(self, path: str | Path) -> Path:
        """Write a resumable checkpoint atomically (never a half-written file)."""
        return write_checkpoint(self.state_dict(), path)

    @classmethod
    def resume(
        cls,
        path: str | Path,
        dataset: Dataset,
        *,
        device: torch.device | str = "cpu",
        config: NerfTrainConfig | None = None,
    ) -> NerfTrainer:
        d = load_checkpoint(path)
        if d.get("model_kind") != "nerf":
            raise ValueError(f"{path}: not a NeRF training checkpoint (resume it with its trainer)")
        cfg = config or NerfTrainConfig.from_dict(d["config"])
        t = cls(dataset, cfg, device=device)
        t.load_state_dict(d)
        return t


def make_optimizer(scene: NerfScene, lr: float, weight_decay: float) -> torch.optim.Adam:
    groups = scene.field.parameter_groups()
    return torch.optim.Adam(
        [
            {"params": groups["grids"], "weight_decay": 0.0},
            {"params": groups["mlps"], "weight_decay": weight_decay},
        ],
        lr=lr,
        betas=(0.9, 0.99),
        eps=1e-15,
    )
