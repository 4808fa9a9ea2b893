"""Scoring a scene on posed images: PSNR, SSIM and (when its weights are present) LPIPS."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..camera import Camera
from ..rendering import render
from ..scene import GaussianScene
from ._losses import psnr, ssim

# torchvision's AlexNet weights, which lpips' "alex" network loads from the torch hub cache.
_ALEXNET = "alexnet-owt-7be5be79.pth"


@dataclass(frozen=True)
class ViewScore:
    name: str
    psnr: float
    ssim: float
    lpips: float | None = None


@dataclass(frozen=True)
class EvalResult:
    """Mean and per-view scores; `lpips_note` says why LPIPS is missing when it is."""

    psnr: float
    ssim: float
    lpips: float | None
    views: list[ViewScore] = field(default_factory=list)
    lpips_note: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> dict:
        """The means, rounded, as the sidecar's `metrics` and the CLI report carry them."""
        d = {
            "psnr": round(self.psnr, 3),
            "ssim": round(self.ssim, 4),
            "views": len(self.views),
            "lpips": None if self.lpips is None else round(self.lpips, 4),
        }
        if self.lpips is None and self.lpips_note:
            d["lpips_note"] = self.lpips_note
        return d


@functools.cache
def lpips_model() -> tuple[object | None, str | None]:
    """(LPIPS-alex model, None) when the `lpips` package and its AlexNet weights are on this
    machine; else (None, the reason). Never downloads."""
    try:
        import lpips  # type: ignore[import-not-found]
    except ImportError:
        return None, "LPIPS skipped: `pip install lpips` (and its AlexNet weights) to score it"
    hub = Path(torch.hub.get_dir()) / "checkpoints" / _ALEXNET
    if not hub.is_file():
        return None, f"LPIPS skipped: AlexNet weights not found at {hub} (no download here)"
    try:
        return lpips.LPIPS(net="alex", verbose=False).eval(), None
    except Exception as e:  # a broken install should not cost the PSNR/SSIM report
        return None, f"LPIPS skipped: could not load it ({e})"


def _lpips(model: object, a: Tensor, b: Tensor) -> float:
    with torch.no_grad():
        x = a.permute(2, 0, 1)[None] * 2 - 1
        y = b.permute(2, 0, 1)[None] * 2 - 1
        return float(model(x, y).mean())  # type: ignore[operator]


def evaluate_views(
    scene: GaussianScene | Callable[[Camera, tuple[float, float, float]], Tensor],
    cameras: Sequence[Camera],
    images: Sequence[Tensor],  # each [H,W,3] float in [0,1], composited over `background`
    *,
    background: tuple[float, float, float],
    names: Sequence[str] | None = None,
    with_lpips: bool = True,
    renders_out: list[Tensor] | None = None,  # filled with the renders [H,W,3] when given
) -> EvalResult:
    """Render `scene` from each camera over `background` and score it against the image.
    `scene` is a Gaussian scene or any renderer `(camera, background) -> rgb [H,W,3]` (a NeRF)."""
    if len(cameras) != len(images):
        raise ValueError(f"{len(cameras)} cameras but {len(images)} images")
    if not cameras:
        raise ValueError("no views to evaluate")
    model, note = lpips_model() if with_lpips else (None, "LPIPS not requested")
    scores = []
    with torch.no_grad():
        for i, (cam, img) in enumerate(zip(cameras, images, strict=True)):
            rgb = (
                render(scene, cam, background=background).rgb
                if isinstance(scene, GaussianScene)
                else scene(cam, background)
            )
            pred = rgb.clamp(0, 1).cpu()
            if renders_out is not None:
                renders_out.append(pred)
            lp = _lpips(model, pred, img) if model is not None else None
            name = names[i] if names is not None else cam.name
            scores.append(ViewScore(name, psnr(pred, img), float(ssim(pred, img)), lp))
    mean = lambda xs: float(np.mean(xs)) if xs else math.nan  # noqa: E731
    lp_vals = [s.lpips for s in scores if s.lpips is not None]
    return EvalResult(
        psnr=mean([s.psnr for s in scores]),
        ssim=mean([s.ssim for s in scores]),
        lpips=mean(lp_vals) if lp_vals else None,
        views=scores,
        lpips_note=note,
    )


def side_by_side(render_rgb: Tensor, target: Tensor) -> np.ndarray:
    """[H, 2W, 3] uint8: the render left, the photo right."""
    both = torch.cat([render_rgb.clamp(0, 1), target.clamp(0, 1)], dim=1)
    return (both * 255.0 + 0.5).to(torch.uint8).numpy()
