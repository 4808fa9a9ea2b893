"""Remove an object and fill what it hid: the support under it and the walls behind it.

    removal = remove_object(scene, mask)          # mask [N] bool: the object's Gaussians
    removal.scene                                 # the rest (in order, bit-identical) + the fill
    removal.fill                                  # [N'] bool: the new Gaussians

Weight-free. The support is the plane the object rested on: the rest's Gaussians around the
object's base (within `support_gap` object sizes of its lowest points, inside a window of
`1 + ring` footprint radii) fitted by `editing._support.fit_support_plane`, nearest the base's
height. With `walls`, vertical planes within `wall_reach` object sizes behind it count too. On
each plane, the hole is the object's projection along the plane's normal (filled in, dilated by
`dilate` cells) where no surface Gaussian lies, kept inside the surface's own outline; it is
filled by copying whole surface splats from elsewhere on the plane, shifted by the offsets whose
surroundings best match the hole's (exemplar shift-map fill, `editing._fill`). Copies keep every
field and extra of their source row (colour and SH, scale, rotation, opacity, `label`,
`feature`, `part`...), so the fill is "table" to queries; `hidden` is false.

With a distiller (`editing.score_distillation`), the fill's colours (SH) are then refined by
masked score distillation from views around the hole (`distiller.loss(..., method="sds",
inpaint_mask=...)`: only the fill's footprint is scored); nothing else changes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from fields import GaussianScene, render, up_vector
from fields.conventions import UpSpec, format_up, horizontal_basis

from ._fill import (
    FillPlan,
    ObjectExtent,
    find_walls,
    inside_hull,
    median_spacing,
    plan_fill,
    tighten_plane,
)
from ._spatial import kdtree
from ._support import SupportPlane, fit_support_plane, splat_normals
from .ops import check_mask

OnStep = Callable[[int, int, GaussianScene | None], None]

_OPAQUE = 0.2  # splats at least this opaque count as geometry (object extent, surfaces)
_MIN_SUPPORT = 12  # fewer Gaussians around the base than this: no support
_MIN_WALL = 30  # splats a wall needs to count
_FACING_COS = math.cos(math.radians(30.0))
_PREVIEW_EVERY = 10


class InpaintDistiller(Protocol):
    """What `remove_object` needs of `editing.score_distillation.ScoreDistiller`."""

    def loss(
        self,
        images: Tensor,  # [B,3,H,W] in [0,1], requires grad
        prompt: str,
        *,
        method: str = "sds",
        inpaint_mask: Tensor | None = None,  # [B,1,H,W] in [0,1], 1 = region to generate
        progress: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> Tensor: ...


@dataclass(frozen=True)
class RemovalConfig:
    """How `remove_object` finds the surfaces an object hid and fills them."""

    up: UpSpec | None = None
    """The world's up axis ("+z", a 3-vector); default `fields.up_vector(scene)`."""
    spacing: float | None = None
    """Cell size (metres) of the grid the hole is found and matched on; default each surface's
    own splat spacing (median distance between neighbouring splats). The fill copies whole
    splats, so its density is always the surface's."""
    ring: float = 2.5
    """Exemplar window: the fill copies from the surface within (1 + ring) hole radii of the
    hole's centre (a multiple of the hole's radius; >= 1 so a whole hole-sized patch fits)."""
    dilate: float = 2.0
    """Grow the object's projection by this many grid cells before taking the uncovered part:
    a capture's surface often thins out next to an object."""
    band: float = 3.0
    """Width (grid cells) of the band of surface around the hole whose colours a shift must
    match."""
    support_gap: float = 0.15
    """The support lies within this fraction of the object's size below or above its lowest
    points; nothing there = no support ("is it floating?")."""
    walls: bool = True
    """Also fill vertical planes behind the object (walls, a shelf's back) that it occluded."""
    absorb_base: bool = True
    """Also remove what lies under the object at its base and looks like it rather than like
    the surface around it: the underside no camera saw, which a language query or a click
    misses (a can's bottom lid would stay behind as a disc on the table)."""
    base_band: float = 0.08
    """How far (fraction of the object's size) from its lowest points the base layer reaches."""
    wall_reach: float = 0.5
    """A wall may stand up to this fraction of the object's size behind it."""
    seed: int = 0
    """Breaks ties between equally good exemplar shifts; seeds the refinement's views/noise."""
    refine_steps: int = 100
    """Masked SDS steps on the fill's colours when a distiller is given (0: none)."""
    refine_prompt: str | None = None
    """Prompt of the refinement; default "<support's label name> surface" or "a surface"."""
    refine_lr: float = 0.02
    """Adam learning rate of the fill's SH coefficients in the refinement."""
    refine_views: int = 16
    """Cameras around the hole the refinement draws one view per step from."""
    refine_size: int = 128
    """Rendered view size (pixels, square) in the refinement."""

    def __post_init__(self) -> None:
        if self.spacing is not None and not self.spacing > 0:
            raise ValueError(f"spacing must be positive, got {self.spacing}")
        if not self.ring >= 1.0:
            raise ValueError(f"ring must be >= 1 (hole radii), got {self.ring}")
        for name in ("dilate", "support_gap", "wall_reach"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.band >= 1:
            raise ValueError(f"band must be >= 1 cell, got {self.band}")
        if self.refine_steps < 0:
            raise ValueError(f"refine_steps must be >= 0, got {self.refine_steps}")
        if not self.refine_lr > 0:
            raise ValueError(f"refine_lr must be positive, got {self.refine_lr}")
        if self.refine_views < 1:
            raise ValueError(f"refine_views must be >= 1, got {self.refine_views}")
        if self.refine_size < 8:
            raise ValueError(f"refine_size must be >= 8 pixels, got {self.refine_size}")


@dataclass
class Removal:
    """The result of `remove_object`."""

    scene: GaussianScene  # the rest, in its order, bit-identical, then the fill appended
    fill: Tensor  # [N'] bool: the new Gaussians (the last rows of `scene`)
    removed: int  # Gaussians deleted
    mask: Tensor  # [N] bool: the input's Gaussians deleted (the selection and its unseen base)
    surfaces: list[dict[str, Any]]  # the support first (count 0 when nothing was missing
    # under the object), then each wall that got a fill: kind ("support"/"wall"), plane, count,
    # area (m² of hole), label (the surface's label name, when the scene has labels), ...
    refine_steps: int = 0  # refinement steps run (0: no distiller, or stopped at once)
    timings_ms: dict[str, float] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {
            "removed": self.removed,
            "filled": int(self.fill.sum()),
            "gaussians": len(self.scene),
            "surfaces": self.surfaces,
            "refine_steps": self.refine_steps,
            "timings_ms": self.timings_ms,
        }


def remove_object(
    scene: GaussianScene,
    mask: Tensor,  # [N] bool: the object's Gaussians
    config: RemovalConfig | None = None,
    *,
    distiller: InpaintDistiller | None = None,
    on_step: OnStep | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Removal:
    """Delete the selection and fill the surfaces it rested on or hid; see the module docstring.

    Raises `ValueError` (the input is never changed) for an empty selection, a selection that
    is the whole scene or leaves no shown Gaussians, or when no support is found under it.
    With `distiller`, `on_step(step, steps, preview)` runs after each refinement step
    (`preview`: the scene so far every few steps and at the last, else None) and
    `should_stop()` ends the refinement early, keeping what it has."""
    config = config or RemovalConfig()
    mask = check_mask(scene, mask)
    t0 = time.perf_counter()
    sel = mask.cpu().numpy()
    n_sel = int(sel.sum())
    if n_sel == 0:
        raise ValueError("the selection is empty: select the object to remove first")
    if n_sel == len(scene):
        raise ValueError("the selection is the whole scene: nothing would be left to fill from")
    hidden = scene.extras.get("hidden")
    shown = np.ones(len(scene), bool) if hidden is None else ~hidden.detach().cpu().bool().numpy()
    rest = ~sel & shown
    if not rest.any():
        raise ValueError("removing the selection leaves no shown Gaussians to fill from")
    up = up_vector(scene, override=config.up)
    means = scene.means.detach().cpu().double().numpy()  # [N,3]
    opaque = torch.sigmoid(scene.opacities.detach().cpu()).numpy() > _OPAQUE
    body = sel & opaque
    obj = ObjectExtent.of(means[body if body.any() else sel], up)
    if config.absorb_base:
        base = _unseen_base(scene, means, sel, rest, obj, config.base_band)
        if base.any():
            sel, rest = sel | base, rest & ~base
            mask = torch.from_numpy(sel).to(scene.device)
            n_sel = int(sel.sum())
            if not rest.any():
                raise ValueError("removing the selection leaves no shown Gaussians to fill from")

    # The object's neighbourhood: the window the surfaces and their exemplars come from.
    rel = means - obj.centre
    height = rel @ up
    horiz = np.linalg.norm(rel - height[:, None] * up, axis=1)
    window = (1.0 + config.ring) * (obj.radius + obj.size * config.support_gap) + obj.size * 0.1
    local = _Neighbourhood.of(scene, np.flatnonzero(rest & (horiz <= window)), means, height, horiz)
    timings = {"setup": (time.perf_counter() - t0) * 1e3}

    t = time.perf_counter()
    support = _find_support(local, obj, config)
    members = _surface_members(local, support, obj, occlusion=True)
    plans: list[tuple[str, SupportPlane, FillPlan]] = [
        ("support", support, _plan(local, support, members, obj, config))
    ]
    timings["support"] = (time.perf_counter() - t) * 1e3
    if config.walls:
        t = time.perf_counter()
        gap = obj.size * config.support_gap
        reach = config.wall_reach * obj.size
        cand = local.opaque & local.flat & (local.height >= -gap)
        cand &= local.height <= obj.top - obj.base + gap
        cand &= local.horiz <= obj.radius + reach + gap
        walls = find_walls(
            local.means[cand], local.normals[cand], obj, reach=reach, min_splats=_MIN_WALL
        )
        for wall in walls:
            wm = _surface_members(local, wall, obj, occlusion=False)
            plan = _plan(local, wall, wm, obj, config)
            if len(plan.sources):
                plans.append(("wall", wall, plan))
        timings["walls"] = (time.perf_counter() - t) * 1e3

    t = time.perf_counter()
    sources = local.rows[np.concatenate([p.sources for _, _, p in plans])]
    shifts = np.concatenate([p.shifts for _, _, p in plans])
    kept = scene.subset(~mask)
    fill = scene.subset(torch.from_numpy(sources).to(scene.device))
    fill = fill.replace(
        means=fill.means + torch.from_numpy(shifts).to(fill.means),
    )
    if "hidden" in fill.extras:
        fill = fill.with_extras(hidden=torch.zeros_like(fill.extras["hidden"]))
    out = GaussianScene.concat([kept, fill]) if len(fill) else kept
    fill_mask = torch.zeros(len(out), dtype=torch.bool, device=out.device)
    fill_mask[len(kept) :] = True
    surfaces = [
        {"kind": kind, "plane": plane.describe(), **plan.describe()} for kind, plane, plan in plans
    ]
    names = _label_names(scene)
    if names and "label" in scene.extras:
        labels = scene.extras["label"].detach().cpu()
        for s, (_, plane, plan) in zip(surfaces, plans, strict=True):
            rows = local.rows[plan.sources if len(plan.sources) else plane.inliers]
            if len(rows):
                lab = int(torch.mode(labels[torch.from_numpy(rows)].flatten()).values)
                s["label"] = names.get(lab)
    timings["assemble"] = (time.perf_counter() - t) * 1e3

    steps_run = 0
    if distiller is not None and config.refine_steps > 0 and len(fill):
        t = time.perf_counter()
        prompt = config.refine_prompt
        if prompt is None:
            label = surfaces[0].get("label")
            prompt = f"{label} surface" if label else "a surface"
        out, steps_run = _refine(out, fill_mask, distiller, prompt, config, on_step, should_stop)
        timings["refine"] = (time.perf_counter() - t) * 1e3
    timings["total"] = (time.perf_counter() - t0) * 1e3
    return Removal(
        scene=out,
        fill=fill_mask,
        removed=n_sel,
        mask=mask.detach().cpu(),
        surfaces=surfaces,
        refine_steps=steps_run,
        timings_ms={k: round(v, 2) for k, v in timings.items()},
    )


def _unseen_base(
    scene: GaussianScene,
    means: np.ndarray,  # [N,3]
    sel: np.ndarray,  # [N] bool: the object
    rest: np.ndarray,  # [N] bool: the shown rest
    obj: ObjectExtent,
    band: float,
) -> np.ndarray:  # [N] bool
    """Rest Gaussians in the object's base layer (within `band` object sizes of its lowest
    points), inside its footprint, whose colour is nearer the object's than the surrounding
    base layer's: the object's unseen underside, left out of a selection made from views."""
    from ._fill import inside_hull

    e = np.stack(horizontal_basis(obj.up))  # [2,3]
    h = means @ obj.up
    xy = means @ e.T
    centre = obj.centre @ e.T
    r = np.linalg.norm(xy - centre, axis=1)
    near = rest & (np.abs(h - obj.base) <= band * obj.size) & (r <= 2.0 * obj.radius)
    body = obj.points @ e.T
    inside = np.zeros_like(near)
    inside[near] = inside_hull(body, xy[near], 0.05 * obj.radius)
    cand = near & inside
    ring = near & ~inside
    if not cand.any() or not ring.any():
        return np.zeros_like(cand)
    colors = scene.colors.detach().cpu().double().numpy()
    d_obj, _ = kdtree(colors[sel]).query(colors[cand])
    d_ring, _ = kdtree(colors[ring]).query(colors[cand])
    out = np.zeros_like(cand)
    out[np.flatnonzero(cand)[d_obj < d_ring]] = True
    return out


def _label_names(scene: GaussianScene) -> dict[int, str]:
    raw = scene.meta.get("label_names") or {}
    try:
        return {int(k): str(v) for k, v in dict(raw).items()}
    except (TypeError, ValueError):
        return {}


@dataclass(frozen=True)
class _Neighbourhood:
    """The shown rest of the scene around the object, as float64 arrays (local row i is scene
    row `rows[i]`); the surfaces, their exemplars and the walls all come from here."""

    scene: GaussianScene  # the neighbourhood's Gaussians (CPU, detached)
    rows: np.ndarray  # [L] int64 scene rows
    means: np.ndarray  # [L,3]
    height: np.ndarray  # [L] above the object's base, along up
    horiz: np.ndarray  # [L] horizontal distance from the object's centre
    opaque: np.ndarray  # [L] bool
    normals: np.ndarray  # [L,3] unit splat normals (smallest axis)
    flat: np.ndarray  # [L] bool
    colors: np.ndarray  # [L,3] base RGB
    thin: np.ndarray  # [L] smallest standard deviation

    @classmethod
    def of(
        cls,
        scene: GaussianScene,
        rows: np.ndarray,  # [L] int64
        means: np.ndarray,  # [N,3] the whole scene's
        height: np.ndarray,  # [N]
        horiz: np.ndarray,  # [N]
    ) -> _Neighbourhood:
        sub = scene.detach().subset(torch.from_numpy(rows).to(scene.device)).to("cpu")
        normals, flat = splat_normals(sub)
        return cls(
            scene=sub,
            rows=rows,
            means=means[rows],
            height=height[rows],
            horiz=horiz[rows],
            opaque=torch.sigmoid(sub.opacities).numpy() > _OPAQUE,
            normals=normals.double().numpy(),
            flat=flat.numpy(),
            colors=sub.colors.double().numpy(),
            thin=sub.scales.exp().amin(1).double().numpy(),
        )


def _find_support(local: _Neighbourhood, obj: ObjectExtent, config: RemovalConfig) -> SupportPlane:
    """The plane the object rests on (inliers: local rows), or `ValueError`."""
    gap = config.support_gap * obj.size
    cand = local.opaque & (np.abs(local.height) <= gap)
    where = f"within {gap:.3g} of its base (height {obj.base:.3g} along {format_up(obj.up)})"
    if cand.sum() < _MIN_SUPPORT:
        raise ValueError(
            f"no support found under the selection: {int(cand.sum())} shown Gaussians of the "
            f"rest lie {where} around it (is it floating, or is the up axis wrong? "
            f"set RemovalConfig.up)"
        )
    plane = fit_support_plane(local.scene, torch.from_numpy(cand), up=obj.up, near=obj.centre)
    thin = float(np.median(local.thin[plane.inliers])) if len(plane.inliers) else 0.0
    plane = tighten_plane(plane, local.means[plane.inliers], thin)
    centre2d, h = plane.to_plane(obj.centre[None])
    around = inside_hull(plane.points2d, centre2d, 0.5 * obj.radius)
    if (
        abs(float(h[0])) > gap + plane.thickness
        or len(plane.inliers) < _MIN_SUPPORT
        or not around[0]
    ):
        raise ValueError(
            f"no support found under the selection: no surface {where} extends under it "
            f"(found {len(plane.inliers)} splats {abs(float(h[0])):.3g} from its base)"
        )
    return plane


def _surface_members(
    local: _Neighbourhood, plane: SupportPlane, obj: ObjectExtent, *, occlusion: bool
) -> np.ndarray:
    """[M] int64 local rows of the surface's splats: in the plane's slab, not flat splats
    facing another way, and (support) not under other things (another object's base is not
    table to copy)."""
    uv, h = plane.to_plane(local.means)
    slab = np.abs(h) <= plane.thickness
    slab &= ~local.flat | (np.abs(local.normals @ plane.normal) > _FACING_COS)
    slab = np.flatnonzero(slab)
    if occlusion and len(slab) >= 3:
        above = local.opaque & (h > plane.thickness)
        above &= h <= (obj.top - obj.base) + 2.0 * obj.size
        if above.any():
            # Under something = seen from above, something lies within the splat's own spacing
            # (its distance to its second nearest neighbour on the surface).
            own, _ = kdtree(uv[slab]).query(uv[slab], k=3)
            d, _ = kdtree(uv[above]).query(uv[slab])
            slab = slab[d > own[:, 2]]
    return slab


def _plan(
    local: _Neighbourhood,
    plane: SupportPlane,
    rows: np.ndarray,  # [M] local rows of the surface's splats
    obj: ObjectExtent,
    config: RemovalConfig,
) -> FillPlan:
    uv, _ = plane.to_plane(local.means[rows])
    foot, _ = plane.to_plane(obj.points)
    # The surface's own spacing: the plane's inliers may hold other objects' bases too.
    spacing = median_spacing(uv[local.opaque[rows]]) or plane.spacing
    return plan_fill(
        uv,
        local.opaque[rows],
        local.colors[rows],
        rows,
        foot,
        plane.axes,
        spacing=spacing,
        cell=config.spacing or spacing,
        dilate=config.dilate,
        ring=config.ring,
        band=config.band,
        seed=config.seed,
    )


def _refine(
    scene: GaussianScene,
    fill: Tensor,  # [N] bool
    distiller: InpaintDistiller,
    prompt: str,
    config: RemovalConfig,
    on_step: OnStep | None,
    should_stop: Callable[[], bool] | None,
) -> tuple[GaussianScene, int]:
    """Masked SDS on the fill's SH coefficients from views around the fill."""
    from ._views import sample_edit_views

    cams = sample_edit_views(
        scene,
        fill,
        config.refine_views,
        size=config.refine_size,
        seed=config.seed,
        up=config.up,
        elevation_deg=(30.0, 75.0),
    )
    idx = fill.nonzero().squeeze(1)
    base = scene.detach()
    sh = base.sh[idx].clone().requires_grad_(True)
    opt = torch.optim.Adam([sh], lr=config.refine_lr)
    indicator = fill.to(torch.float32)[:, None]  # [N,1] renders as the fill's footprint
    views = torch.Generator().manual_seed(int(config.seed))
    noise = torch.Generator().manual_seed(int(config.seed) + 1)
    steps = config.refine_steps
    done = 0

    def current() -> GaussianScene:
        return base.replace(sh=base.sh.index_put((idx,), sh))

    for step in range(steps):
        if should_stop is not None and should_stop():
            break
        v = int(torch.randint(len(cams), (1,), generator=views))
        out = render(current(), cams[v], features=indicator)
        image = out.rgb.permute(2, 0, 1)[None].clamp(0.0, 1.0)  # [1,3,H,W]
        footprint = out.features.detach().clamp(0.0, 1.0).permute(2, 0, 1)[None]  # [1,1,H,W]
        loss = distiller.loss(
            image,
            prompt,
            method="sds",
            inpaint_mask=footprint,
            progress=step / max(1, steps - 1),
            generator=noise,
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        done = step + 1
        if on_step is not None:
            due = done == 1 or done % _PREVIEW_EVERY == 0 or done == steps
            on_step(done, steps, _finish(base, idx, sh) if due else None)
    return _finish(base, idx, sh), done


def _finish(base: GaussianScene, idx: Tensor, sh: Tensor) -> GaussianScene:
    return base.replace(sh=base.sh.index_put((idx,), sh.detach()))
