"""Typed configuration of a training run (what `scenelab train` exposes, plus the 3DGS constants)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Background = Literal["white", "black", "random"]
StrategyName = Literal["default", "mcmc"]


@dataclass(frozen=True)
class DefaultStrategyConfig:
    """The 3DGS paper's adaptive density control (gsplat `DefaultStrategy` defaults). Step
    counts are for a 30k-step run and scale with `TrainConfig.steps` (see `Schedule`)."""

    prune_opa: float = 0.005  # prune below this opacity
    grow_grad2d: float = 0.0002  # grow where the mean view-space gradient (NDC units) exceeds this
    grow_scale3d: float = 0.01  # clone below / split above this size, x scene extent
    prune_scale3d: float = 0.1  # prune above this size, x scene extent (after the first reset)
    refine_start: int = 500
    refine_stop: int = 15_000
    refine_every: int = 100
    reset_every: int = 3000  # opacity reset period
    split_factor: float = 1.6  # split children are this much smaller


@dataclass(frozen=True)
class MCMCStrategyConfig:
    """3DGS as MCMC (Kheradmand et al. 2024; gsplat `MCMCStrategy` defaults): dead Gaussians are
    relocated onto live ones, the count grows 5% per refinement up to `max_gaussians`, and the
    means get opacity-gated noise each step."""

    min_opacity: float = 0.005  # "dead" below this opacity
    refine_start: int = 500
    refine_stop: int = 25_000
    refine_every: int = 100
    grow_rate: float = 1.05
    noise_lr: float = 5e5
    opacity_reg: float = 0.01
    scale_reg: float = 0.01


@dataclass(frozen=True)
class LearningRates:
    """Adam learning rates per parameter (3DGS / gsplat simple_trainer). `means` is multiplied
    by the scene extent and decays exponentially to `means_final` x over the run."""

    means: float = 1.6e-4
    means_final: float = 0.01
    scales: float = 5e-3
    quats: float = 1e-3
    opacities: float = 5e-2
    sh0: float = 2.5e-3
    shN: float = 2.5e-3 / 20


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Schedules written for 30k steps (densification window, SH warm-up,
    opacity reset) are rescaled to the run's length: see `Schedule`."""

    steps: int = 7000
    time_budget_min: float | None = None  # stop after this many minutes (schedules follow time)
    downscale: float = 1.0
    max_gaussians: int = 1_000_000
    strategy: StrategyName = "default"
    sh_degree: int = 3
    background: Background = "white"
    eval_every: int = 8  # hold out every k-th view (0: train on all); files' own splits win
    batch_size: int = 1  # views per step (split over ranks when distributed)
    seed: int = 0
    ssim_lambda: float = 0.2
    init_points: int = 50_000  # random initialisation when the data has no points
    init_opacity: float = 0.1
    init_scale: float = 1.0  # x mean distance to the 3 nearest neighbours
    sh_degree_interval: int = 1000  # one SH degree more every this many steps (of 30k); 0: none
    reference_steps: int = 30_000  # the run length the step-count constants are written for
    lr: LearningRates = field(default_factory=LearningRates)
    default: DefaultStrategyConfig = field(default_factory=DefaultStrategyConfig)
    mcmc: MCMCStrategyConfig = field(default_factory=MCMCStrategyConfig)

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.time_budget_min is not None and not self.time_budget_min > 0:
            raise ValueError(f"time budget must be > 0 minutes, got {self.time_budget_min}")
        if self.max_gaussians < 1:
            raise ValueError(f"max_gaussians must be >= 1, got {self.max_gaussians}")
        if self.strategy not in ("default", "mcmc"):
            raise ValueError(f"strategy must be 'default' or 'mcmc', got {self.strategy!r}")
        if self.sh_degree not in (0, 1, 2, 3):
            raise ValueError(f"sh_degree must be 0..3, got {self.sh_degree}")
        if self.background not in ("white", "black", "random"):
            raise ValueError(
                f"background must be 'white', 'black' or 'random', got {self.background!r}"
            )
        if self.eval_every < 0:
            raise ValueError(f"eval_every must be >= 0, got {self.eval_every}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 0.0 <= self.ssim_lambda <= 1.0:
            raise ValueError(f"ssim_lambda must be in [0, 1], got {self.ssim_lambda}")
        if self.sh_degree_interval < 0 or self.reference_steps < 1:
            raise ValueError("sh_degree_interval must be >= 0 and reference_steps >= 1")
        if self.init_points < 1:
            raise ValueError(f"init_points must be >= 1, got {self.init_points}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        d["lr"] = LearningRates(**d.get("lr", {}))
        d["default"] = DefaultStrategyConfig(**d.get("default", {}))
        d["mcmc"] = MCMCStrategyConfig(**d.get("mcmc", {}))
        return cls(**d)

    @property
    def eval_background(self) -> tuple[float, float, float]:
        """Background the held-out views are scored against (white for 'random')."""
        return (0.0, 0.0, 0.0) if self.background == "black" else (1.0, 1.0, 1.0)
