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

Edits that grow geometry (`TextEditConfig(densify=True)`, `editing._densify`): the selection's
Gaussians become their own trainable rows after the frozen rest; they are cloned/split where
the view-space gradient is high and pruned when transparent, their means kept in the selection's
bounding box grown by `grow_margin` (`grow_box`), and GaussianEditor's anchor loss pulls each
towards its state at birth / at the last densification. The result is the unselected Gaussians
first, bit-identical and in order, then the object (extras copied from the row each grew from);
`text_edit_mask` / `text_edit_result(...).mask` say which rows are the object now.

    result = text_edit_result(scene, mask, distiller, replace(config, densify=True))
    scene, selection = result.scene, result.mask
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
from torch import Tensor

from fields import Camera, GaussianScene, parse_up, render

from ._densify import GrowingObject, MarginBox, object_learning_rates
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
    meta "up", else its cameras', else estimated from its support plane, else -y)."""
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """RGB behind the scene in the edit views."""
    preserve_weight: float = 0.0
    """Weight of the L2 pull of the edited parameters back to their original values."""
    seed: int = 0
    """Seeds the views, their order and the distiller's noise."""
    preview_every: int = 5
    """`on_step` receives a preview scene after the first step and every this many steps."""
    densify: bool = False
    """Grow geometry: the selection's Gaussians are cloned/split where the view-space gradient
    is high and pruned when transparent, inside the `grow_margin` box, with the anchor loss
    (`editing._densify`). Position, scale, rotation and opacity are then always optimised
    (colour when `params` has it) and `preserve_weight` is replaced by `anchor_weight`. The
    result lists the unselected Gaussians first, then the edited object (`text_edit_mask`)."""
    densify_every: int = 20
    """Steps between two densifications."""
    densify_from: float = 0.1
    """Fraction of the steps after which densification starts."""
    densify_until: float = 0.75
    """Fraction of the steps after which it stops (the last steps refine what was grown)."""
    grad_threshold: float = 1.5
    """Grow Gaussians whose mean view-space gradient exceeds this multiple of the object's mean
    (relative: score-distillation gradients differ by orders of magnitude between models)."""
    max_gaussians: float = 4.0
    """Cap on the edited object's Gaussians, as a multiple of the selection's count."""
    prune_opacity: float = 0.02
    """Densification and the end of the edit drop the object's Gaussians below this opacity."""
    grow_margin: float = 0.2
    """The object may change shape within the selection's bounding box grown by this fraction of
    its longest side on every side; its means are kept inside."""
    anchor_weight: float = 1.0
    """GaussianEditor's anchor loss: weight of the pull of each Gaussian's parameters towards its
    anchor state (taken at birth and re-taken at every densification)."""

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
        if self.densify_every < 1:
            raise ValueError(f"densify_every must be >= 1, got {self.densify_every}")
        if not 0.0 <= self.densify_from <= self.densify_until <= 1.0:
            raise ValueError(
                "densify_from and densify_until must satisfy 0 <= from <= until <= 1, got "
                f"{self.densify_from}, {self.densify_until}"
            )
        for name in ("grad_threshold", "grow_margin", "anchor_weight"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be finite and >= 0, got {v}")
        if not (math.isfinite(self.max_gaussians) and self.max_gaussians >= 1):
            raise ValueError(
                f"max_gaussians (a multiple of the selection) must be >= 1, got {self.max_gaussians}"
            )
        if not 0.0 <= self.prune_opacity < 1.0:
            raise ValueError(f"prune_opacity must be in [0, 1), got {self.prune_opacity}")

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
    """The cameras `text_edit` samples its steps from (with `densify`, framing the whole
    `grow_box` the object may grow into)."""
    margin = config.margin
    if config.densify:
        _, radius = selection_sphere(scene, mask)
        box = grow_box(scene, mask, config)
        splat = float(scene.scales.detach()[mask].exp().amax(-1).median())
        margin *= max(1.0, (box.half_diagonal + 3.0 * splat) / radius)
    return sample_edit_views(
        scene,
        mask,
        config.views,
        size=config.size,
        seed=config.seed,
        up=config.up,
        fov_deg=config.fov_deg,
        elevation_deg=config.elevation_deg,
        margin=margin,
    )


def grow_box(scene: GaussianScene, mask: Tensor, config: TextEditConfig) -> MarginBox:
    """The box a densifying edit keeps the object's means in: the selected means' bounding box
    grown by `config.grow_margin` x its longest side on every side."""
    mask = check_mask(scene, mask)
    if not bool(mask.any()):
        raise ValueError("the selection is empty: select the Gaussians to edit first")
    return MarginBox.around(scene.means.detach()[mask], config.grow_margin)


@dataclass
class TextEditResult:
    """What `text_edit_result` returns."""

    scene: GaussianScene
    """The edited scene (see `text_edit`)."""
    mask: Tensor  # [N'] bool
    """The edited object's Gaussians in `scene`: the new selection."""
    rows: Tensor  # [N'] int64
    """The input row each Gaussian of `scene` comes from (a grown one: its ancestor's)."""
    born: int = 0
    """Gaussians created by cloning or splitting (some may have been pruned again)."""
    pruned: int = 0
    """Gaussians of the object pruned as transparent."""


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
    is returned (the caller decides whether to keep it). Renders on the scene's device.

    Without `config.densify` the result has the input's Gaussians in the input's order. With
    it, the first N - M rows are the unselected Gaussians in their order, bit-identical (every
    field and extra), followed by the edited object's Gaussians (survivors in order, then the
    new ones; extras copied from the row they grew from); previews have that layout too.
    `text_edit_mask` (or `text_edit_result(...).mask`) gives the new selection."""
    return text_edit_result(
        scene, mask, distiller, config, on_step=on_step, should_stop=should_stop
    ).scene


def text_edit_result(
    scene: GaussianScene,
    mask: Tensor,  # [N] bool: the Gaussians to edit
    distiller: Distiller,
    config: TextEditConfig,
    *,
    on_step: OnStep | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TextEditResult:
    """`text_edit`, also returning the new selection and where each row came from."""
    mask = check_mask(scene, mask)
    if not bool(mask.any()):
        raise ValueError("the selection is empty: select the Gaussians to edit first")
    if config.densify:
        return _grow_edit(scene, mask, distiller, config, on_step, should_stop)
    edited = _edit(scene, mask, distiller, config, on_step, should_stop)
    return TextEditResult(edited, mask.clone(), torch.arange(len(scene), device=mask.device))


def text_edit_mask(
    scene: GaussianScene,
    mask: Tensor,  # [N] bool: the selection that was edited
    result: GaussianScene,  # what `text_edit(scene, mask, ...)` returned
) -> Tensor:  # [N'] bool
    """The edited object's Gaussians in `result`: `mask` itself for an edit in place (same count,
    unselected rows where they were), else the rows after the N - M unselected ones (a densifying
    edit). Raises ValueError when `result` is neither layout of `scene` minus `mask`."""
    mask = check_mask(scene, mask)
    keep = ~mask
    n_rest = int(keep.sum())

    def same(rows_of_result: Tensor | slice) -> bool:
        return all(
            torch.equal(getattr(result, f)[rows_of_result], getattr(scene, f)[keep])
            for f in ("means", "quats", "scales", "opacities", "sh")
        )

    if len(result) < n_rest or result.sh.shape[1:] != scene.sh.shape[1:]:
        raise ValueError(
            f"the result ({len(result)} Gaussians) is not a text edit of this scene and selection"
        )
    if len(result) == len(scene) and same(keep.to(result.device)):
        return mask.clone()
    if not same(slice(0, n_rest)):
        raise ValueError(
            "the result's unselected Gaussians differ from the scene's: it is not a text edit "
            "of this scene and selection"
        )
    out = torch.zeros(len(result), dtype=torch.bool, device=mask.device)
    out[n_rest:] = True
    return out


def _sources(
    frozen: GaussianScene, cams: list[Camera], bg: Tensor, indicator: Tensor | None
) -> Callable[[int], Tensor]:
    """v -> [3,H,W] the unedited scene from view v (rendered once, when first asked)."""
    cache: dict[int, Tensor] = {}

    def source(v: int) -> Tensor:
        if v not in cache:
            with torch.no_grad():
                out = render(frozen, cams[v], features=indicator, background=bg)
            cache[v] = out.rgb.permute(2, 0, 1).clamp(0.0, 1.0).contiguous()
        return cache[v]

    return source


def _distill(
    distiller: Distiller,
    config: TextEditConfig,
    images: list[Tensor],  # B x [3,H,W] renders
    srcs: list[Tensor],  # B x [3,H,W] the unedited scene from the same views
    step: int,
    gen: torch.Generator,
) -> Tensor:
    dds = config.method == "dds"
    return distiller.loss(
        torch.stack(images).clamp(0.0, 1.0),  # [B,3,H,W]
        config.prompt,
        method=config.method,
        source_images=torch.stack(srcs) if dds else None,
        source_prompt=config.source_prompt if dds else None,
        progress=step / max(1, config.steps - 1),
        generator=gen,
    )


def _preview_due(done: int, config: TextEditConfig) -> bool:
    return done == 1 or done % config.preview_every == 0 or done == config.steps


def _edit(
    scene: GaussianScene,
    mask: Tensor,  # [N] bool
    distiller: Distiller,
    config: TextEditConfig,
    on_step: OnStep | None,
    should_stop: Callable[[], bool] | None,
) -> GaussianScene:
    """The edit in place: only the chosen parameters of the selected rows change."""
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
    source = _sources(frozen, cams, bg, indicator)

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
        loss = _distill(distiller, config, images, srcs, step, noise_gen)
        if config.preserve_weight > 0:
            loss = loss + config.preserve_weight * params.preservation(radius)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        params.project()
        if on_step is not None:
            done = step + 1
            on_step(done, steps, params.result() if _preview_due(done, config) else None)
    return params.result()


def _grow_edit(
    scene: GaussianScene,
    mask: Tensor,  # [N] bool
    distiller: Distiller,
    config: TextEditConfig,
    on_step: OnStep | None,
    should_stop: Callable[[], bool] | None,
) -> TextEditResult:
    """The densifying edit (`editing._densify`): the object's Gaussians are optimised as their own
    rows after the frozen rest. Each view's loss image is the current render inside the
    rectangle the grow box projects to and the unedited render outside it, so only pixels the
    object may reach give gradients, and pixels it uncovers show what is behind it."""
    index = mask.nonzero().squeeze(1)
    rest_index = (~mask).nonzero().squeeze(1)
    _, radius = selection_sphere(scene, mask)
    box = grow_box(scene, mask, config)
    cams = edit_views(scene, mask, config)
    regions = [box.screen_region(c).to(scene.device) for c in cams]  # [1,H,W] each
    lrs = config.learning_rates(radius)
    obj = GrowingObject(
        scene,
        index,
        object_learning_rates(
            lrs["color"],
            lrs["opacity"],
            lrs["scale"],
            lrs["position"],
            color="color" in config.params,
        ),
        box,
        radius,
    )
    shown = EditParams(scene, index, ("color",))  # renders hidden Gaussians transparent
    with torch.no_grad():
        frozen = shown.render_scene()
    rest = {
        name: getattr(frozen, name)[rest_index]
        for name in ("means", "quats", "scales", "opacities", "sh")
    }
    rest_scene = scene.subset(rest_index)  # the result's first rows, bit-identical
    bg = torch.tensor(config.background, dtype=torch.float32, device=scene.device)
    gen = torch.Generator().manual_seed(int(config.seed))
    noise_gen = torch.Generator().manual_seed(int(config.seed) + 1)
    split_gen = torch.Generator().manual_seed(int(config.seed) + 2)
    source = _sources(frozen, cams, bg, None)
    cap = max(len(index), math.ceil(config.max_gaussians * len(index)))
    steps = config.steps
    first = math.ceil(config.densify_from * steps)
    last = math.floor(config.densify_until * steps)

    def result() -> GaussianScene:
        grown = scene.subset(obj.parents).replace(**obj.detached())
        return GaussianScene.concat([rest_scene, grown])

    for step in range(steps):
        if should_stop is not None and should_stop():
            break
        views = torch.randint(len(cams), (config.views_per_step,), generator=gen).tolist()
        t = obj.render_tensors()
        current = GaussianScene(**{k: torch.cat([rest[k], t[k]]) for k in rest})
        images, srcs, outs = [], [], []
        for v in views:
            out = render(current, cams[v], background=bg)
            out.retain_means2d_grad()
            src = source(v)
            images.append(src + regions[v] * (out.rgb.permute(2, 0, 1) - src))
            srcs.append(src)
            outs.append((out, cams[v]))
        loss = _distill(distiller, config, images, srcs, step, noise_gen)
        if config.anchor_weight > 0:
            loss = loss + config.anchor_weight * obj.anchor_loss()
        obj.params.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        k = len(obj)
        for out, cam in outs:
            grad2d = out.means2d_grad()
            if grad2d is not None:
                obj.accumulate(grad2d[-k:], out.radii[-k:], (cam.width, cam.height), len(views))
        obj.params.optimizer.step()
        obj.project()
        done = step + 1
        if first <= done <= last and done % config.densify_every == 0 and done < steps:
            obj.densify(config.grad_threshold, cap, split_gen)
            obj.prune(config.prune_opacity)
            obj.reanchor()
        if on_step is not None:
            on_step(done, steps, result() if _preview_due(done, config) else None)
    obj.prune(config.prune_opacity)
    n_rest = len(rest_index)
    new_mask = torch.zeros(n_rest + len(obj), dtype=torch.bool, device=mask.device)
    new_mask[n_rest:] = True
    rows = torch.cat([rest_index, obj.parents]).to(mask.device)
    return TextEditResult(result(), new_mask, rows, born=obj.born, pruned=obj.pruned)
