"""Training 3D Gaussian Splatting scenes from posed photos (`scenelab train`).

    ds = load_dataset("data/mic", downscale=4)
    trainer = Trainer(ds, TrainConfig(steps=7000, background="white"))
    trainer.run(on_step=print)
    scene = trainer.scene(metrics=trainer.evaluate().to_dict())

The recipe is the 3DGS paper's as gsplat's `simple_trainer` runs it (see `_trainer`), on our
compiled CPU rasterizer or on gsplat's CUDA one, with the paper's adaptive density control
(`DefaultStrategy`) or 3DGS-MCMC (`MCMCStrategy`); `DistContext` spreads the views of a step
over `torchrun` processes. `evaluate_views` scores any scene on posed images (PSNR, SSIM,
LPIPS when its weights are present).
"""

from ._config import (
    DefaultStrategyConfig,
    LearningRates,
    MCMCStrategyConfig,
    TrainConfig,
)
from ._data import Splits, TrainImages, choose_splits
from ._distributed import DistContext
from ._eval import EvalResult, ViewScore, evaluate_views, lpips_model, side_by_side
from ._init import camera_extent, initial_params, knn_scales, look_at_point, random_points
from ._losses import photometric_loss, psnr, ssim, ssim_map
from ._params import GaussianParams
from ._session import TrainSession, TrainStatus, format_seconds
from ._strategy import DefaultStrategy, MCMCStrategy, Progress, relocation
from ._trainer import StepStats, Trainer, load_checkpoint, resolve_device, write_checkpoint

__all__ = [
    "DefaultStrategy",
    "DefaultStrategyConfig",
    "DistContext",
    "EvalResult",
    "GaussianParams",
    "LearningRates",
    "MCMCStrategy",
    "MCMCStrategyConfig",
    "Progress",
    "Splits",
    "StepStats",
    "TrainConfig",
    "TrainImages",
    "TrainSession",
    "TrainStatus",
    "Trainer",
    "ViewScore",
    "camera_extent",
    "choose_splits",
    "evaluate_views",
    "format_seconds",
    "initial_params",
    "knn_scales",
    "load_checkpoint",
    "look_at_point",
    "lpips_model",
    "photometric_loss",
    "psnr",
    "random_points",
    "relocation",
    "resolve_device",
    "side_by_side",
    "ssim",
    "ssim_map",
    "write_checkpoint",
]
