"""`Trainer`: photos + poses -> a Gaussian scene, one optimisation step at a time.

The loop is gsplat's `simple_trainer` / the 3DGS paper's: render the step's views, loss
(1 - l) L1 + l (1 - SSIM) against the photo over the run's background, Adam with
per-parameter learning rates (means scaled by the scene extent and decayed exponentially),
SH degree warm-up, then the densification strategy. Schedules are fractions of the run
(`Progress`), so `--steps` and `--time-budget` runs both get the whole recipe.

The trainer is stateful but UI-free: the CLI, the viewer's Train panel and `torchrun` all drive
`step()` and read `scene()`, `evaluate()`, `stats`.
"""

from __future__ import annotations

import copy
import io
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..camera import Camera, cameras_to_meta
from ..conventions import cameras_up, format_up
from ..datasets import Dataset
from ..formats import save_scene as save_gaussians
from ..formats import write_files
from ..rendering import render
from ..scene import GaussianScene
from ._config import TrainConfig
from ._data import Splits, TrainImages, choose_splits
from ._distributed import DistContext
from ._eval import EvalResult, evaluate_views
from ._init import camera_extent, initial_params, random_points
from ._losses import photometric_loss, psnr_from_mse
from ._params import GaussianParams
from ._strategy import DefaultStrategy, MCMCStrategy, Progress, Strategy

CHECKPOINT_VERSION = 1


@dataclass(frozen=True)
class StepStats:
    step: int
    loss: float
    psnr: float  # of this step's training views
    n_gaussians: int
    elapsed_s: float  # optimisation time so far (evaluation and saving excluded)
    fraction: float  # of the run done
    sh_degree: int
    refined: dict[str, int]  # what densification did at this step ({} when nothing)

    @property
    def steps_per_s(self) -> float:
        return self.step / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float:
        f = self.fraction
        return self.elapsed_s * (1 - f) / f if f > 0 else math.inf


def resolve_device(name: str) -> torch.device:
    """ "auto" -> cuda when available, else cpu; "cuda" without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda, but this torch has no CUDA device; use cpu or auto")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {name!r}")
    return dev


class Trainer:
    """Trains a scene on `dataset` (its own split rule, see `choose_splits`).

    `step()` runs one optimisation step; `done` turns True when the steps or the time budget are
    used up. `scene()` is a detached snapshot with the sidecar facts (cameras, up axis, config,
    metrics). `state_dict()` / `load_state_dict()` make resumable checkpoints: on CPU, resuming
    continues bit-for-bit as if never interrupted (for step-count runs)."""

    def __init__(
        self,
        dataset: Dataset,
        config: TrainConfig,
        *,
        device: torch.device | str = "cpu",
        dist: DistContext | None = None,
        init: GaussianScene | None = None,  # start from these Gaussians instead of points
    ) -> None:
        self.config = config
        self.dataset = dataset
        self.device = torch.device(device) if isinstance(device, str) else device
        self.dist = dist or DistContext(device=self.device)
        if len(dataset) == 0:
            raise ValueError(f"{dataset.root}: the dataset has no views")
        self.splits: Splits = choose_splits(dataset, config.eval_every)
        self.images = TrainImages(dataset, self.splits.train)
        self.cameras: list[Camera] = self.images.cameras
        _, self.extent = camera_extent(self.cameras)
        self.gen = torch.Generator().manual_seed(config.seed)  # views, backgrounds, noise
        self.gen_refine = torch.Generator().manual_seed(config.seed + 1)  # rank 0's decisions
        self.params = self._initial_params(init)
        self.strategy: Strategy = (
            MCMCStrategy(config.mcmc, config.max_gaussians)
            if config.strategy == "mcmc"
            else DefaultStrategy(config.default, self.extent, config.max_gaussians)
        )
        self.step_count = 0
        self.elapsed_s = 0.0
        self._queue: list[int] = []
        self.last: StepStats | None = None
        self.history: list[dict[str, float]] = []  # held-out scores as training went
        self._eval_images: TrainImages | None = None

    # ------------------------------------------------------------------ set-up
    def _initial_params(self, init: GaussianScene | None) -> GaussianParams:
        c = self.config
        mcmc = c.strategy == "mcmc"
        if init is not None:
            s = init.with_sh_degree(c.sh_degree) if init.sh_degree != c.sh_degree else init
            tensors = {
                "means": s.means,
                "quats": s.quats,
                "scales": s.scales,
                "opacities": s.opacities,
                "sh0": s.sh[:, :1],
                "shN": s.sh[:, 1:],
            }
        else:
            pts = self.dataset.load_points()
            if pts is not None and len(pts[0]) > 0:
                xyz, rgb = pts[0].float(), pts[1].float() / 255.0
                if len(xyz) > c.max_gaussians:
                    keep = torch.randperm(len(xyz), generator=self.gen)[: c.max_gaussians]
                    xyz, rgb = xyz[keep], rgb[keep]
            else:
                n = min(c.init_points, c.max_gaussians)
                xyz, rgb = random_points(self.cameras, n, self.gen)
            tensors = initial_params(
                xyz,
                rgb,
                sh_degree=c.sh_degree,
                opacity=0.5 if mcmc else c.init_opacity,
                scale=0.1 if mcmc else c.init_scale,
            )
        scale = math.sqrt(c.batch_size)  # gsplat: learning rates grow with sqrt(batch)
        lrs = {
            "means": c.lr.means * self.extent * scale,
            "quats": c.lr.quats * scale,
            "scales": c.lr.scales * scale,
            "opacities": c.lr.opacities * scale,
            "sh0": c.lr.sh0 * scale,
            "shN": c.lr.shN * scale,
        }
        tensors = {k: v.to(self.device) for k, v in tensors.items()}
        return GaussianParams(tensors, lrs)

    # ------------------------------------------------------------------ progress
    def fraction(self) -> float:
        """How much of the run is done, in [0, 1]: steps or time budget, whichever is further."""
        f = self.step_count / self.config.steps
        if self.config.time_budget_min is not None:
            f = max(f, self.elapsed_s / (60.0 * self.config.time_budget_min))
        return min(1.0, f)

    @property
    def done(self) -> bool:
        return self.fraction() >= 1.0

    def sh_degree_now(self, fraction: float | None = None) -> int:
        f = self.fraction() if fraction is None else fraction
        if self.config.sh_degree_interval == 0:  # no warm-up: every band from the start
            return self.config.sh_degree
        every = self.config.sh_degree_interval / self.config.reference_steps
        return min(self.config.sh_degree, int(f / every))

    def _next_views(self) -> list[int]:
        out = []
        for _ in range(self.config.batch_size):
            if not self._queue:
                self._queue = torch.randperm(len(self.images), generator=self.gen).tolist()
            out.append(self._queue.pop())
        return out

    def _background(self) -> Tensor:
        c = self.config.background
        if c == "random":
            return torch.rand(3, generator=self.gen)
        return torch.tensor(self.config.eval_background)

    # ------------------------------------------------------------------ one step
    def step(self) -> StepStats:
        """One optimisation step over `batch_size` views (this rank's share of them)."""
        c = self.config
        t0 = time.perf_counter()
        frac = self.dist.broadcast_float(self.fraction())
        self.step_count += 1
        degree = self.sh_degree_now(frac)
        self.params.set_lr(
            "means", self.params.base_lr["means"] * c.lr.means_final ** min(frac, 1.0)
        )
        batch = self._next_views()
        backgrounds = [self._background() for _ in batch]
        mine = list(range(self.dist.rank, len(batch), self.dist.world))
        scene = self.params.scene(degree)
        loss_total = 0.0
        sq_err = 0.0
        for j in mine:
            i = batch[j]
            cam = self.cameras[i]
            bg = backgrounds[j].to(self.device)
            target = self.images.target(i, backgrounds[j]).to(self.device)
            out = render(scene, cam, background=bg, sh_degree=degree)
            out.retain_means2d_grad()
            loss = photometric_loss(out.rgb, target, c.ssim_lambda) / len(batch)
            loss.backward()
            loss_total += float(loss.detach())
            sq_err += float(((out.rgb.detach().clamp(0, 1) - target) ** 2).mean())
            grad2d = out.means2d_grad()
            if grad2d is not None:
                self.strategy.accumulate(
                    self.params, grad2d, out.radii, (cam.width, cam.height), len(batch)
                )
        reg = self.strategy.regularizer(self.params)
        if reg is not None:
            (reg / self.dist.world).backward()
            loss_total += float(reg.detach()) / self.dist.world
        self.dist.sum_grads(self.params)
        self.params.optimizer.step()
        self.params.optimizer.zero_grad(set_to_none=True)

        progress = Progress(self.step_count, frac, c.reference_steps)
        refined: dict[str, int] = {}
        if self.strategy.due(progress):
            self.strategy.reduce(self.dist.sum_)
            if self.dist.is_main:
                refined = self.strategy.refine(self.params, progress, self.gen_refine)
            else:
                self.strategy.refined_elsewhere(progress)
            self.dist.broadcast_params(self.params)
        self.strategy.after_step(self.params, self.params.lr("means"), self.gen)
        self.elapsed_s += time.perf_counter() - t0
        stats = StepStats(
            step=self.step_count,
            loss=loss_total,
            psnr=psnr_from_mse(sq_err / max(len(mine), 1)),
            n_gaussians=len(self.params),
            elapsed_s=self.elapsed_s,
            fraction=self.fraction(),
            sh_degree=degree,
            refined=refined,
        )
        self.last = stats
        return stats

    def run(
        self,
        *,
        on_step: Callable[[StepStats], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> StepStats | None:
        """Step until done (or `should_stop()`); returns the last step's stats."""
        while not self.done and not (should_stop is not None and should_stop()):
            stats = self.step()
            if on_step is not None:
                on_step(stats)
        return self.last

    # ------------------------------------------------------------------ results
    def scene(self, metrics: dict[str, Any] | None = None) -> GaussianScene:
        """The Gaussians so far (detached, on the CPU) with the sidecar facts: every dataset
        camera, the up axis they agree on, the config, the splits, and `metrics`."""
        # A copy: on the CPU .cpu() is the live tensor, which the next Adam step updates.
        t = {k: v.detach().to("cpu", copy=True) for k, v in self.params.tensors.items()}
        sh = torch.cat([t["sh0"], t["shN"]], dim=1)
        cams = self.dataset.cameras
        up = cameras_up(cams)
        meta: dict[str, Any] = {
            "cameras": cameras_to_meta(cams),
            "units": "those of the dataset's poses",
            "training": {
                "dataset": str(self.dataset.root),
                "config": self.config.to_dict(),
                "steps": self.step_count,
                "seconds": round(self.elapsed_s, 2),
                "gaussians": len(self.params),
                "splits": self.splits.rule,
                "held_out": [self.dataset.names[i] for i in self.splits.test],
                "history": list(self.history),
            },
        }
        if up is not None:
            meta["up"] = format_up(up)
        if metrics:
            meta["metrics"] = metrics
        return GaussianScene(t["means"], t["quats"], t["scales"], t["opacities"], sh, meta=meta)

    @staticmethod
    def save_scene(scene: GaussianScene, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write a scene of this trainer (.ply + sidecar, or .splat), atomically."""
        save_gaussians(scene, path, overwrite=overwrite)
        return Path(path)

    def evaluate(
        self, *, with_lpips: bool = False, max_views: int | None = None
    ) -> EvalResult | None:
        """Scores on the held-out views (None when nothing is held out)."""
        idx = self.splits.test[:max_views] if max_views else self.splits.test
        if not idx:
            return None
        bg = self.config.eval_background
        ds = self.dataset
        if self._eval_images is None:  # decoded once, like the training views
            self._eval_images = TrainImages(ds, self.splits.test, check=False, exact=True)
        cams = [self._eval_images.cameras[j] for j in range(len(idx))]
        imgs = [self._eval_images.target(j, torch.tensor(bg)) for j in range(len(idx))]
        result = evaluate_views(
            self._device_scene(),
            cams,
            imgs,
            background=bg,
            names=[ds.names[i] for i in idx],
            with_lpips=with_lpips,
        )
        self.history.append(
            {"step": self.step_count, "seconds": round(self.elapsed_s, 2), "psnr": result.psnr}
        )
        return result

    def _device_scene(self) -> GaussianScene:
        t = self.params.tensors
        return GaussianScene(
            t["means"].detach(),
            t["quats"].detach(),
            t["scales"].detach(),
            t["opacities"].detach(),
            torch.cat([t["sh0"], t["shN"]], 1).detach(),
        )

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {
            "version": CHECKPOINT_VERSION,
            "config": self.config.to_dict(),
            "views": [self.dataset.names[i] for i in self.splits.train],
            "step": self.step_count,
            "elapsed_s": self.elapsed_s,
            "params": self.params.state_dict(),
            "strategy": copy.deepcopy(self.strategy.state_dict()),
            "gen": self.gen.get_state(),
            "gen_refine": self.gen_refine.get_state(),
            "queue": list(self._queue),
            "history": list(self.history),
        }

    def load_state_dict(self, d: dict[str, Any]) -> None:
        if d.get("model_kind", "gaussians") != "gaussians":
            raise ValueError(
                f"not a Gaussian training checkpoint (it is a {d.get('model_kind')} one); resume "
                "it with that model's trainer (scenelab train --model nerf)"
            )
        if d.get("version") != CHECKPOINT_VERSION:
            raise ValueError(
                f"checkpoint version {d.get('version')!r} is not {CHECKPOINT_VERSION} (this scenelab)"
            )
        names = [self.dataset.names[i] for i in self.splits.train]
        if d["views"] != names:
            raise ValueError(
                f"the checkpoint was trained on other views ({len(d['views'])} views, first "
                f"{d['views'][:1]}) than this dataset's training split ({len(names)}, first "
                f"{names[:1]}); resume with the same data, --downscale and --eval-every"
            )
        self.step_count = int(d["step"])
        self.elapsed_s = float(d["elapsed_s"])
        self.params = GaussianParams.from_state_dict(d["params"])
        self.params.update(lambda n, p: p.to(self.device), lambda n, v: v.to(self.device))
        self.strategy.load_state_dict(d["strategy"])
        self.gen.set_state(d["gen"])
        self.gen_refine.set_state(d["gen_refine"])
        self._queue = list(d["queue"])
        self.history = list(d.get("history", []))

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
        dist: DistContext | None = None,
        config: TrainConfig | None = None,
    ) -> Trainer:
        """A trainer continuing the checkpoint at `path` (its config unless `config` is given,
        e.g. with more steps)."""
        d = load_checkpoint(path)
        cfg = config or TrainConfig.from_dict(d["config"])
        t = cls(dataset, cfg, device=device, dist=dist, init=_placeholder_scene(cfg))
        t.load_state_dict(d)
        return t


def write_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """`torch.save` a trainer's state to `path` atomically (never a half-written file)."""
    path = Path(path)
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_files([(path, lambda f: f.write(data))], overwrite=True)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such checkpoint: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise ValueError(f"{path}: not a scenelab training checkpoint ({e})") from e


def _placeholder_scene(cfg: TrainConfig) -> GaussianScene:
    # Resuming replaces the parameters right away; skip the point-cloud initialisation.
    k = (cfg.sh_degree + 1) ** 2
    z = torch.zeros
    return GaussianScene(z(1, 3), torch.tensor([[1.0, 0, 0, 0]]), z(1, 3), z(1), z(1, k, 3))
