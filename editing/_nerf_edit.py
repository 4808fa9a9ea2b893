"""Text edits of a NeRF inside a region, by score distillation (SDS) or delta denoising (DDS), as
ED-NeRF does.

    region = nerf_query_region(scene, "mug")            # or a world box (lo, hi)
    config = NerfEditConfig("a green mug", source_prompt="a mug", method="dds", steps=200)
    edited = nerf_text_edit(scene, region, distiller, config)

The edit is a mask by blending: the result's field (`fields.nerf.EditedNerfField`) takes colour
(and, with `density=True`, density) from a trainable copy of the colour (density) MLP at points
inside the region's voxels and from the frozen original everywhere else, so pixels whose rays
never cross the region render bit-identically and the input scene is untouched (one undo step:
keep the input). Each step renders, with gradients, only the rays of a view that cross the
region; every other pixel is the unedited render of that view, which is also DDS's source branch
(same view, same noise and timestep inside the distiller). Views are sampled all around the
region's bounding sphere as for Gaussian edits (`editing.sample_edit_views`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from fields import Camera, GaussianScene, parse_up, scene_up
from fields.nerf import EditedNerfField, NerfScene, QueryRegion, camera_rays, render_nerf

from ._views import sample_edit_views
from .text_edit import METHODS, Distiller

__all__ = ["NerfEditConfig", "nerf_edit_views", "nerf_region", "nerf_text_edit"]

RegionLike = QueryRegion | tuple[Sequence[float] | Tensor, Sequence[float] | Tensor]


@dataclass(frozen=True)
class NerfEditConfig:
    """How `nerf_text_edit` edits a NeRF inside a region."""

    prompt: str
    """What the region should look like ("a green mug")."""
    source_prompt: str = ""
    """What it looks like now (DDS's source branch; "" = unconditional)."""
    method: Literal["sds", "dds"] = "dds"
    """Delta denoising ("dds": changes what the prompts differ in) or score distillation."""
    steps: int = 200
    """Optimisation steps."""
    lr: float = 5e-3
    """Adam learning rate of the region's colour (and density) MLP."""
    density: bool = False
    """Edit density too (shape changes inside the region), not only colour."""
    views: int = 32
    """Cameras sampled around the region (each step draws `views_per_step` of them)."""
    views_per_step: int = 1
    """Views rendered and scored per step (the distiller's batch)."""
    size: int = 128
    """Rendered view size in pixels (square); the distiller resizes to its own resolution."""
    fov_deg: float = 50.0
    """Vertical field of view of the edit views."""
    elevation_deg: tuple[float, float] = (15.0, 60.0)
    """Range of view elevations above the plane orthogonal to the scene's up axis."""
    margin: float = 1.15
    """How much larger than the region's bounding sphere each view's frame is."""
    up: str | tuple[float, float, float] | None = None
    """World up ("+z", "-y", a vector); default: `fields.scene_up` of the NeRF (its meta "up", its
    recorded cameras, else -y)."""
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """RGB behind the scene in the edit views."""
    seed: int = 0
    """Seeds the views, their order and the distiller's noise."""
    preview_every: int = 5
    """`preview` receives the edited scene after the first step and every this many steps."""

    def __post_init__(self) -> None:
        if not self.prompt.strip():
            raise ValueError("the edit prompt is empty")
        if self.method not in METHODS:
            raise ValueError(f"method must be 'sds' or 'dds', got {self.method!r}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if not (math.isfinite(self.lr) and self.lr >= 0):
            raise ValueError(f"lr must be finite and >= 0, got {self.lr}")
        if self.views < 1 or self.views_per_step < 1:
            raise ValueError(
                f"views and views_per_step must be >= 1, got {self.views}, {self.views_per_step}"
            )
        if self.size < 8:
            raise ValueError(f"size must be at least 8 pixels, got {self.size}")
        if self.preview_every < 1:
            raise ValueError(f"preview_every must be >= 1, got {self.preview_every}")
        if self.up is not None:
            parse_up(self.up)
        if len(self.background) != 3:
            raise ValueError(f"background must be an RGB triple, got {self.background}")


def nerf_region(scene: NerfScene, region: RegionLike) -> QueryRegion:
    """`region` as a `QueryRegion` of `scene`: a query region (it must belong to this NeRF's
    box) or a world box `(lo [3], hi [3])` (voxels at the occupancy resolution). An empty
    region raises `ValueError` naming what to do."""
    if isinstance(region, QueryRegion):
        if region.box != scene.box:
            raise ValueError(
                "the region was made on another NeRF (its scene box differs); query this scene"
            )
        out = region
    elif isinstance(region, tuple | list) and len(region) == 2:
        out = QueryRegion.from_box(scene, region[0], region[1])
    else:
        raise TypeError(
            f"region must be a fields.nerf.QueryRegion or a box (lo, hi), got {type(region).__name__}"
        )
    if out.empty:
        why = f" ({out.message})" if out.message else ""
        raise ValueError(
            f"the region is empty{why}: nothing to edit; query something the scene shows or "
            "draw a box around it"
        )
    return out


def _region_proxy(scene: NerfScene, region: QueryRegion) -> GaussianScene:
    """The region's voxel centres as Gaussians of about a voxel's size: what
    `sample_edit_views` frames."""
    n = region.centers.shape[0]
    cell = 2.0 * scene.box.radius / region.resolution
    # The NeRF's up by the one rule (meta "up"/"up_axis", its recorded cameras, the default),
    # not estimated from these voxel centres.
    meta = {"up": scene_up(GaussianScene.empty().replace(meta=dict(scene.meta))).vector.tolist()}
    return GaussianScene.from_activated(
        region.centers.float(),
        torch.tensor([[1.0, 0.0, 0.0, 0.0]]).expand(n, 4),
        torch.full((n, 3), 0.5 * cell),
        torch.full((n,), 0.9),
        torch.full((n, 3), 0.5),
        meta=meta,
    )


def nerf_edit_views(scene: NerfScene, region: RegionLike, config: NerfEditConfig) -> list[Camera]:
    """The cameras `nerf_text_edit` samples its steps from (around the region)."""
    region = nerf_region(scene, region)
    proxy = _region_proxy(scene, region)
    return sample_edit_views(
        proxy,
        torch.ones(len(proxy), dtype=torch.bool),
        config.views,
        size=config.size,
        seed=config.seed,
        up=config.up,
        fov_deg=config.fov_deg,
        elevation_deg=config.elevation_deg,
        margin=config.margin,
    )


def _occupancy_with(scene: NerfScene, region: QueryRegion) -> Tensor:
    """The occupancy grid [G,G,G] with every cell that overlaps the region set (density edits
    may put matter where there was none)."""
    G = scene.config.occupancy_res
    R = region.resolution
    vox = region.voxels[None, None].float()
    if R >= G:
        # every occupancy cell that holds (part of) a region voxel
        mark = torch.nn.functional.adaptive_max_pool3d(vox, G)[0, 0] > 0
    else:
        mark = torch.nn.functional.interpolate(vox, size=(G, G, G), mode="nearest")[0, 0] > 0
    return scene.occupancy | mark.to(scene.occupancy.device)


def _snapshot(scene: NerfScene) -> NerfScene:
    return copy.deepcopy(scene)


def nerf_text_edit(
    scene: NerfScene,
    region: RegionLike,
    guidance: Distiller,
    config: NerfEditConfig,
    *,
    on_progress: Callable[[int, int, float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    preview: Callable[[NerfScene], None] | None = None,
) -> NerfScene:
    """A new scene: `scene` edited towards `config.prompt` inside `region` (see the module
    docstring); `scene` is left untouched.

    `guidance` is an `editing.score_distillation.ScoreDistiller` (or anything with its `loss`).
    `on_progress(step, steps, loss)` runs after every step (step counts from 1); `preview(scene)`
    gets a snapshot of the edit so far after the first step, every `config.preview_every` steps
    and the last. When `should_stop()` turns true the loop ends and the scene edited so far is
    returned (the caller decides whether to keep it). Runs on the scene's device."""
    region = nerf_region(scene, region)
    cams = nerf_edit_views(scene, region, config)
    dev = scene.device
    field = EditedNerfField.from_field(scene.field)
    edit = field.add_edit(region.voxels, density=config.density)
    occupancy = _occupancy_with(scene, region) if config.density else scene.occupancy.clone()
    edited = NerfScene(field, occupancy, meta=copy.deepcopy(scene.meta), march=scene.march)
    edited.density_ema = scene.density_ema.clone()
    edited.feature_field = scene.feature_field
    bg = torch.tensor(config.background, dtype=torch.float32, device=dev)

    # Per view: its rays, which of them cross the region, and the unedited render.
    rays: list[tuple[Tensor, Tensor, Tensor]] = []
    sources: list[Tensor] = []
    with torch.no_grad():
        for cam in cams:
            o, d, _ = camera_rays(cam, dev)
            smp = edited.march_rays(o, d)
            ids = smp.ray_ids.to(dev)
            pos = o[ids] + smp.t.to(dev)[:, None] * d[ids]
            hit = torch.zeros(o.shape[0], dtype=torch.bool, device=dev)
            hit[ids[region.contains(pos)]] = True
            rays.append((o, d, hit))
            rgb = render_nerf(scene, cam, background=bg).rgb  # [H,W,3]
            sources.append(rgb.permute(2, 0, 1).clamp(0.0, 1.0).contiguous())
    if not any(bool(h.any()) for _, _, h in rays):
        raise ValueError(
            "no edit view sees anything inside the region (its voxels hold empty space); "
            "choose a region on a surface, or edit density too (density=True)"
        )

    params = list(edit.parameters())
    opt = torch.optim.Adam(params, lr=config.lr)
    gen = torch.Generator().manual_seed(int(config.seed))
    noise_gen = torch.Generator().manual_seed(int(config.seed) + 1)
    dds = config.method == "dds"
    steps = config.steps
    for step in range(steps):
        if should_stop is not None and should_stop():
            break
        views = torch.randint(len(cams), (config.views_per_step,), generator=gen).tolist()
        images = []
        for v in views:
            o, d, hit = rays[v]
            src = sources[v]
            img = src.reshape(3, -1).clone()
            if bool(hit.any()):
                out = edited.render_rays(o[hit], d[hit], bg)
                img[:, hit] = out.rgb.clamp(0.0, 1.0).T
            images.append(img.reshape(src.shape))
        batch = torch.stack(images)  # [B,3,H,W]
        loss = guidance.loss(
            batch,
            config.prompt,
            method=config.method,
            source_images=torch.stack([sources[v] for v in views]) if dds else None,
            source_prompt=config.source_prompt if dds else None,
            progress=step / max(1, steps - 1),
            generator=noise_gen,
        )
        opt.zero_grad(set_to_none=True)
        if loss.requires_grad:
            loss.backward()
            opt.step()
        done = step + 1
        if on_progress is not None:
            on_progress(done, steps, float(loss.detach()))
        if preview is not None and (done == 1 or done % config.preview_every == 0 or done == steps):
            with torch.no_grad():
                preview(_snapshot(edited))
    for p in params:
        p.requires_grad_(False)
    edited.meta.setdefault("edits", [])
    edited.meta["edits"] = [
        *edited.meta["edits"],
        {
            "prompt": config.prompt,
            "source_prompt": config.source_prompt,
            "method": config.method,
            "steps": config.steps,
            "density": config.density,
            "voxels": region.count,
            "text": list(region.text),
        },
    ]
    return edited
