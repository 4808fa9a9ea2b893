"""Text edits of a selection by score distillation (SDS) or delta denoising (DDS).

    distiller = load_distiller("runwayml/stable-diffusion-v1-5")   # editing.score_distillation
    config = TextEditConfig("a red mug", source_prompt="a mug", method="dds", steps=200)
    edited = text_edit(scene, mask, distiller, config)

Only the selected Gaussians' chosen parameters are optimised (colour/SH by default; opacity,
scale and position on request) with Adam, from views sampled all around the selection at a
distance fitted to its bounding sphere. Each step renders the current scene with the selection's
footprint as an extra channel and composites: inside the footprint the current render, outside it
the (detached) render of the unedited scene, so no gradient comes from pixels the selection does
not cover. DDS passes that unedited render of the same view as its source branch (the distiller
uses the same noise and timestep for both). The result has the input's Gaussians in the input's
order; unselected ones are bit-identical, extras and meta are carried.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
from torch import Tensor

from fields import Camera, GaussianScene, parse_up, render

from ._edit_params import FIELDS, EditParams
from ._views import sample_edit_views, selection_sphere
from .ops import check_mask

PARAMS = tuple(FIELDS)  # "color", "opacity", "scale", "position"
METHODS = ("sds", "dds")

OnStep = Callable[[int, int, GaussianScene | None], None]


class Distiller(Protocol):
    """What `text_edit` needs of `editing.score_distillation.ScoreDistiller`."""

    def loss(
        self,
        images: Tensor,  # [B,3,H,W] in [0,1], requires grad
        prompt: str,
        *,
        method: Literal["sds", "dds"] = "sds",
        source_images: Tensor | None = None,  # [B,3,H,W]
        source_prompt: str | None = None,
        progress: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> Tensor: ...


@dataclass(frozen=True)
class TextEditConfig:
    """How `text_edit` edits a selection."""

    prompt: str
    """What the selection should look like ("a red ceramic mug")."""
    source_prompt: str = ""
    """What it looks like now (DDS's source branch; "" = unconditional)."""
    method: Literal["sds", "dds"] = "dds"
    """Delta denoising ("dds": changes what the prompts differ in, keeps the rest) or plain score
    distillation ("sds")."""
    steps: int = 200
    """Optimisation steps."""
    params: tuple[str, ...] = ("color",)
    """Parameters of the selected Gaussians to optimise: any of color (all SH coefficients),
    opacity, scale, position."""
    lr_color: float = 0.05
    """Adam learning rate of the SH coefficients."""
    lr_opacity: float = 0.05
    """Adam learning rate of the opacity logits."""
    lr_scale: float = 0.01
    """Adam learning rate of the log scales."""
    lr_position: float = 0.002
    """Adam learning rate of the means, as a fraction of the selection's bounding radius."""
    views: int = 32
    """Cameras sampled around the selection (each step draws `views_per_step` of them)."""
    views_per_step: int = 1
    """Views rendered and scored per step (the distiller's batch)."""
    size: int = 128
    """Rendered view size in pixels (square); the distiller resizes to its own resolution."""
    fov_deg: float = 50.0
    """Vertical field of view of the edit views."""
    elevation_deg: tuple[float, float] = (15.0, 60.0)
    """Range of view elevations above the plane orthogonal to the scene's up axis."""
    margin: float = 1.15
    """How much larger than the selection's bounding sphere each view's frame is."""
    up: str | tuple[float, float, float] | None = None
    """World up ("+z", "-y", a vector); default: `fields.conventions.scene_up` (the scene's
    meta "up", else -y)."""
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """RGB behind the scene in the edit views."""
    preserve_weight: float = 0.0
    """Weight of the L2 pull of the edited parameters back to their original values."""
    seed: int = 0
    """Seeds the views, their order and the distiller's noise."""
    preview_every: int = 5
    """`on_step` receives a preview scene after the first step and every this many steps."""

    def __post_init__(self) -> None:
        if not self.prompt.strip():
            raise ValueError("the edit prompt is empty")
        if self.method not in METHODS:
            raise ValueError(f"method must be 'sds' or 'dds', got {self.method!r}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        params = tuple(self.params)
        object.__setattr__(self, "params", params)
        if not params:
            raise ValueError(f"choose at least one parameter to edit from {list(PARAMS)}")
        unknown = [p for p in params if p not in PARAMS]
        if unknown or len(set(params)) != len(params):
            raise ValueError(
                f"edit params must be distinct names from {list(PARAMS)}, got {params}"
            )
        for name in ("lr_color", "lr_opacity", "lr_scale", "lr_position", "preserve_weight"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be finite and >= 0, got {v}")
        if self.views < 1 or self.views_per_step < 1:
            raise ValueError(
                f"views and views_per_step must be >= 1, got {self.views}, {self.views_per_step}"
            )
        if self.size < 8:
            raise ValueError(f"size must be at least 8 pixels, got {self.size}")
        if self.preview_every < 1:
            raise ValueError(f"preview_every must be >= 1, got {self.preview_every}")
        if self.up is not None:
            parse_up(self.up)  # raises ValueError naming the problem
        if len(self.background) != 3:
            raise ValueError(f"background must be an RGB triple, got {self.background}")

    def learning_rates(self, radius: float) -> dict[str, float]:
        return {
            "color": self.lr_color,
            "opacity": self.lr_opacity,
            "scale": self.lr_scale,
            "position": self.lr_position * radius,
        }


def load_edit_distiller(
    model: str,
    *,
    guidance_scale: float | None = None,
    latent_mode: Literal["vae", "rgb"] = "vae",
    resolution: int | None = None,
    device: torch.device | str | None = None,
    local_files_only: bool | None = None,
    lora: str | None = None,
    lora_scale: float = 1.0,
    lora_weight_name: str | None = None,
):
    """`editing.score_distillation.load_distiller` for edits: at the model's native resolution
    (SD 1.5 512, SD 2.1 768, the tiny test pipeline 64) unless `resolution` says otherwise, with
    an optional UNet LoRA (e.g. LCM-LoRA) fused in. Raises `fields.features.MissingWeightsError`
    (a FileNotFoundError) with what to fetch when the weights are not on this machine."""
    from .score_distillation import DistillationConfig, load_distiller

    config = DistillationConfig(
        guidance_scale=guidance_scale, latent_mode=latent_mode, resolution=resolution
    )
    return load_distiller(
        model,
        config=config,
        device=device,
        local_files_only=local_files_only,
        lora=lora,
        lora_scale=lora_scale,
        lora_weight_name=lora_weight_name,
    )


def edit_views(scene: GaussianScene, mask: Tensor, config: TextEditConfig) -> list[Camera]:
    """The cameras `text_edit` samples its steps from."""
    return sample_edit_views(
        scene,
        mask,
        config.views,
        size=config.size,
        seed=config.seed,
        up=config.up,
        fov_deg=config.fov_deg,
        elevation_deg=config.elevation_deg,
        margin=config.margin,
    )


def text_edit(
    scene: GaussianScene,
    mask: Tensor,  # [N] bool: the Gaussians to edit
    distiller: Distiller,
    config: TextEditConfig,
    *,
    on_step: OnStep | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> GaussianScene:
    """Edit the selected Gaussians towards `config.prompt`; see the module docstring.

    `on_step(step, steps, preview)` runs after every step (step counts from 1); `preview` is the
    edited scene so far after the first step and every `config.preview_every` steps (and the
    last), else None. When `should_stop()` turns true the loop ends and the scene edited so far
    is returned (the caller decides whether to keep it). Renders on the scene's device."""
    mask = check_mask(scene, mask)
    if not bool(mask.any()):
        raise ValueError("the selection is empty: select the Gaussians to edit first")
    _, radius = selection_sphere(scene, mask)
    cams = edit_views(scene, mask, config)
    params = EditParams(scene, mask.nonzero().squeeze(1), config.params)
    opt = torch.optim.Adam(params.parameter_groups(config.learning_rates(radius)))
    with torch.no_grad():
        frozen = params.render_scene()  # the unedited scene, as rendered
    indicator = mask.to(torch.float32)[:, None]  # [N,1] renders as the selection's footprint
    bg = torch.tensor(config.background, dtype=torch.float32, device=scene.device)
    gen = torch.Generator().manual_seed(int(config.seed))
    noise_gen = torch.Generator().manual_seed(int(config.seed) + 1)
    sources: dict[int, Tensor] = {}

    def source(v: int) -> Tensor:  # [3,H,W] the unedited scene from view v
        if v not in sources:
            with torch.no_grad():
                out = render(frozen, cams[v], features=indicator, background=bg)
            sources[v] = out.rgb.permute(2, 0, 1).clamp(0.0, 1.0).contiguous()
        return sources[v]

    steps = config.steps
    for step in range(steps):
        if should_stop is not None and should_stop():
            break
        views = torch.randint(len(cams), (config.views_per_step,), generator=gen).tolist()
        current = params.render_scene()
        images, srcs = [], []
        for v in views:
            out = render(current, cams[v], features=indicator, background=bg)
            footprint = out.features.detach().clamp(0.0, 1.0).permute(2, 0, 1)  # [1,H,W]
            rgb = out.rgb.permute(2, 0, 1)  # [3,H,W]
            src = source(v)
            # src + fp (rgb - src), not fp rgb + (1 - fp) src: exactly src where rgb == src.
            images.append(src + footprint * (rgb - src))
            srcs.append(src)
        batch = torch.stack(images).clamp(0.0, 1.0)  # [B,3,H,W]
        dds = config.method == "dds"
        loss = distiller.loss(
            batch,
            config.prompt,
            method=config.method,
            source_images=torch.stack(srcs) if dds else None,
            source_prompt=config.source_prompt if dds else None,
            progress=step / max(1, steps - 1),
            generator=noise_gen,
        )
        if config.preserve_weight > 0:
            loss = loss + config.preserve_weight * params.preservation(radius)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        params.project()
        if on_step is not None:
            done = step + 1
            due = done == 1 or done % config.preview_every == 0 or done == steps
            on_step(done, steps, params.result() if due else None)
    return params.result()
