"""Feature fields on a NeRF (GP-NeRF / LERF style), language queries on them, and the regions
that queries (or boxes) turn into.

Distillation (`distill_nerf`): the NeRF gets a feature branch (`NerfField.add_feature_branch`: a
second hash grid decoded linearly into L·d channels, L semantic levels of d channels) and only
that branch is trained, density and colour frozen. Rays go through the pixels of the teachers'
maps; each step renders the branch along a batch of them (weighted by the frozen density's
quadrature weights; samples below `min_weight` skip the grid) and scores 1 - cos against the
teacher vector projected to d channels, per teacher space and level, as `fields.features.distill`
does for Gaussians. The density being frozen, each ray is marched and weighed once and its few
weighted samples are kept (`_RaySamples`): a step then costs only the branch at those samples.

The low-dimensional space (per space the top-d eigenvectors of the teachers' unit vectors), its
heads `{space: W [D, d]}`, the levels and the teacher records are exactly those
`fields.features.lift` builds from the same views and teachers: it is called on a one-Gaussian
proxy scene (its second pass over the maps then costs one tiny render per view; teacher maps are
computed once per run, `_MemoTeacher`). So a NeRF and a Gaussian scene lifted from the same data
decode with the same heads, and the scene's `feature_field` (features empty [0, L·d]) is what
`save_nerf` stores.

Queries (`NerfQuery`, expensive once, cheap many): the heat map of a view renders the branch and
decodes every pixel with the heads (LERF relevancy through `fields.features.FieldQuery` /
`TextQuery`); a 3D region is the set of observed cells (ray-weighted average features of the
samples that views see, per cell of a [R,R,R] grid over the field's unit cube) whose features
answer the query (`TextQuery.query`: level, automatic threshold, confidence). `QueryRegion`
tells which world points lie inside (`contains`), so a Gaussian selection can be made from it
after conversion, and it masks NeRF edits (`EditedNerfField`).

Region edits (`EditedNerfField`, used by `editing.nerf_text_edit`): a NeRF whose colour (and
optionally density) is replaced inside region voxels by a trainable copy of the colour (density)
MLP; points outside every region go through the original MLPs untouched, so pixels whose rays
never cross a region render bit-identically.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._sh import sh_basis
from ..camera import Camera, cameras_from_meta
from ..features import (
    FeatureField,
    FieldQuery,
    LiftConfig,
    Teacher,
    TeacherCache,
    TextQuery,
    auto_threshold,
    lift,
    negatives_for,
    split_terms,
)
from ..scene import GaussianScene
from ._encoding import hash_encode
from ._field import NerfField, NerfModelConfig, SceneBox
from ._march import Samples, accumulate, composite_weights
from ._scene import NerfScene, camera_rays, render_nerf

__all__ = [
    "EditedNerfField",
    "NerfDistillConfig",
    "NerfQuery",
    "QueryRegion",
    "RegionEdit",
    "distill_nerf",
    "nerf_query_region",
    "nerf_relevancy",
]

Progress = Callable[[int, int, float], None]  # (step, total, loss)


# ====================================================================================== distill
@dataclass(frozen=True)
class NerfDistillConfig:
    """How `distill_nerf` fits a NeRF's feature branch."""

    dim: int = 16
    """Channels per teacher space and level (d); the branch has L·d (per space) channels."""
    steps: int = 400
    """Optimisation steps (each a batch of rays over every teacher space)."""
    rays_per_step: int = 2048
    """Rays per step (split evenly over the teacher spaces)."""
    lr: float = 1e-2
    """Adam learning rate of the feature grid and its linear decoder."""
    lr_final: float = 0.1
    """The learning rate decays exponentially to this fraction by the last step."""
    min_weight: float = 1e-3
    """Samples with a smaller quadrature weight skip the feature grid (they barely count)."""
    basis_pixels: int = 4096
    """Pixels per view and level sampled for the projection basis (as `LiftConfig`)."""
    seed: int = 0
    """Seed of the basis's pixel sample, the rays and the grid's initialisation."""
    memory_budget_mb: float = 1024
    """Raw teacher maps kept in memory between passes (float16); beyond it they are recomputed
    (or read back from the cache)."""
    cache_dir: str | None = None
    """Folder of the on-disk teacher cache (None: none)."""

    def __post_init__(self) -> None:
        if self.dim < 1:
            raise ValueError(f"dim must be >= 1, got {self.dim}")
        if self.steps < 1 or self.rays_per_step < 1:
            raise ValueError("steps and rays_per_step must be >= 1")
        if not (self.lr > 0 and 0 < self.lr_final <= 1):
            raise ValueError("lr must be > 0 and lr_final in (0, 1]")

    def to_json(self) -> dict[str, Any]:
        return {"method": "nerf", **asdict(self)}


class _MemoTeacher:
    """A teacher whose maps are computed once per run (kept as float16 up to a budget, read from
    the teacher cache when it has them): `lift`'s two passes and the targets pass share them."""

    def __init__(self, teacher: Teacher, cache: TeacherCache | None, budget: list[int]) -> None:
        self.teacher = teacher
        self.name, self.dim, self.space = teacher.name, teacher.dim, teacher.space
        self.levels = getattr(teacher, "levels", None)
        self.cacheable = False  # lift must call us, not its own cache
        self._cache = cache
        self._memo: dict[str, Tensor] = {}
        self._budget = budget  # shared bytes left

    def config(self) -> dict[str, Any]:
        return self.teacher.config()

    def __call__(self, image: Tensor, view_name: str) -> Tensor:
        hit = self._memo.get(view_name)
        if hit is not None:
            return hit.float()
        multi = len(tuple(self.levels or ())) > 1
        if self._cache is not None and getattr(self.teacher, "cacheable", True) and not multi:
            fmap = self._cache.get_or_compute(self.teacher, image, view_name)
        else:
            with torch.no_grad():
                fmap = self.teacher(image, view_name)
        fmap = fmap.detach().to("cpu", torch.float32)
        size = fmap.numel() * 2
        if size <= self._budget[0]:
            self._memo[view_name] = fmap.half()
            self._budget[0] -= size
        return fmap


def _is_codebook(teacher: Any) -> bool:
    return getattr(teacher, "codebook", None) is not None and hasattr(teacher, "codes")


def _proxy_scene(box: SceneBox) -> GaussianScene:
    """One tiny Gaussian at the box centre: `lift` on it yields the projection bases and heads
    (its first pass) at the cost of one cheap render per view (its second)."""
    return GaussianScene.from_activated(
        torch.tensor([box.center], dtype=torch.float32),
        torch.tensor([[1.0, 0.0, 0.0, 0.0]]),
        torch.full((1, 3), 1e-4 * box.radius),
        torch.tensor([0.5]),
        torch.full((1, 3), 0.5),
    )


@dataclass
class _Targets:
    """Every valid teacher pixel of one space, packed: which (teacher, view) map it belongs to,
    its pixel, its projected vector per level and where it has one."""

    pair: Tensor  # [P] int64 index into the pairs' cameras
    pixel: Tensor  # [P,2] int64 (x, y) in the map
    values: Tensor  # [P,L,d] float16, projections of unit teacher vectors
    valid: Tensor  # [P,L] bool
    offset: int  # first channel of this space's block within a level
    width: int  # d of this space


def _space_blocks(heads: dict[str, Tensor]) -> dict[str, tuple[int, Tensor]]:
    """{space: (offset, basis [D,d])}: `lift`'s heads are block-diagonal over the spaces."""
    out = {}
    for space, head in heads.items():
        cols = (head != 0).any(0).nonzero()[:, 0]
        o, d = int(cols.min()), int(cols.max()) - int(cols.min()) + 1
        out[space] = (o, head[:, o : o + d].float())
    return out


def _teacher_targets(
    teachers: Sequence[Any],
    views: Any,
    heads: dict[str, Tensor],
    n_levels: int,
    check: Callable[[], None],
) -> tuple[dict[str, _Targets], list[Camera]]:
    """Project every teacher map of every view onto its space's basis (`values`) and pack the
    valid pixels; cameras at each map's resolution."""
    blocks = _space_blocks(heads)
    per_space: dict[str, list[tuple[int, Tensor, Tensor, Tensor]]] = {s: [] for s in blocks}
    cams: list[Camera] = []
    for vi in range(len(views)):
        for teacher in teachers:
            check()
            offset, basis = blocks[teacher.space]
            name, camera = views.names[vi], views.cameras[vi]
            if _is_codebook(teacher):
                codes = teacher.codes(name, camera)
                codes = codes[None] if codes.ndim == 2 else codes  # [L,h,w]
                table = F.normalize(teacher.codebook.float(), dim=-1) @ basis  # [K,d]
                table = torch.cat([table, torch.zeros(1, table.shape[1])])
                valid = codes >= 0
                values = table[torch.where(valid, codes, table.shape[0] - 1)]
            else:
                _, image = views[vi]
                fmap = teacher(image, name)
                fmap = fmap if fmap.ndim == 4 else fmap[None]  # [L,h,w,D]
                flat = fmap.reshape(-1, fmap.shape[-1])
                ok = torch.isfinite(flat).all(1) & (flat.norm(dim=1) > 0)
                unit = F.normalize(torch.where(ok[:, None], flat, 0.0), dim=-1)
                values = (unit @ basis).reshape(*fmap.shape[:3], -1)
                valid = ok.reshape(fmap.shape[:3])
            if values.shape[0] == 1 and n_levels > 1:  # one map serves every level
                values = values.expand(n_levels, -1, -1, -1)
                valid = valid.expand(n_levels, -1, -1)
            lv, h, w, d = values.shape
            if lv != n_levels:
                raise ValueError(
                    f"teacher {teacher.name!r} returned {lv} levels; the field has {n_levels}"
                )
            cam = camera
            if (cam.width, cam.height) != (w, h):
                cam = camera.scaled(w / camera.width)
                if (cam.width, cam.height) != (w, h):
                    raise ValueError(
                        f"teacher map {w}x{h} is not a uniform rescale of the "
                        f"{camera.width}x{camera.height} view {name!r}"
                    )
            any_valid = valid.any(0).reshape(-1)  # [h*w]
            idx = any_valid.nonzero()[:, 0]
            if idx.numel():
                vals = values.permute(1, 2, 0, 3).reshape(h * w, lv, d)[idx]
                val = valid.permute(1, 2, 0).reshape(h * w, lv)[idx]
                xy = torch.stack([idx % w, idx // w], -1)
                per_space[teacher.space].append((len(cams), xy, vals.half(), val))
            cams.append(cam)
    targets = {}
    for space, items in per_space.items():
        if not items:
            continue
        offset, basis = blocks[space]
        targets[space] = _Targets(
            pair=torch.cat([torch.full((len(it[1]),), it[0]) for it in items]),
            pixel=torch.cat([it[1] for it in items]),
            values=torch.cat([it[2] for it in items]),
            valid=torch.cat([it[3] for it in items]),
            offset=offset,
            width=basis.shape[1],
        )
    return targets, cams


def _pixel_rays(cams: list[Camera], pair: Tensor, pixel: Tensor) -> tuple[Tensor, Tensor]:
    """(origins [P,3], unit dirs [P,3]) through the centres of map pixels [P,2] (x, y) of the
    maps' cameras `cams[pair]`."""
    c2w = torch.stack([c.c2w.float() for c in cams])  # [V,4,4]
    intr = torch.tensor([[c.fx, c.fy, c.cx, c.cy] for c in cams], dtype=torch.float32)
    k = intr[pair]
    uv = pixel.float() + 0.5
    d = torch.stack(
        [(uv[:, 0] - k[:, 2]) / k[:, 0], (uv[:, 1] - k[:, 3]) / k[:, 1], torch.ones(len(uv))], -1
    )
    dirs = torch.einsum("nij,nj->ni", c2w[pair, :3, :3], d)
    return c2w[pair, :3, 3], F.normalize(dirs, dim=-1)


class _RaySamples:
    """The samples of fixed rays that carry weight under a frozen density, packed ray-major:
    points [K,3], weights [K], and each ray's first sample and count. The density is frozen
    while a feature branch trains, so each ray is marched and weighed once, and every later
    visit costs only the branch at its few weighted samples."""

    def __init__(
        self,
        scene: NerfScene,
        origins: Tensor,  # [P,3]
        dirs: Tensor,  # [P,3]
        min_weight: float,
        check: Callable[[], None] = lambda: None,
        chunk: int = 1 << 13,
    ) -> None:
        dev = scene.device
        pts, wts, counts = [], [], []
        with torch.no_grad():
            for a in range(0, origins.shape[0], chunk):
                check()
                o, d = origins[a : a + chunk].to(dev), dirs[a : a + chunk].to(dev)
                smp = scene.march_rays(o, d)
                smp = Samples(*(t.to(dev) for t in smp))
                pos = o[smp.ray_ids] + smp.t[:, None] * d[smp.ray_ids]
                sigma, _ = scene.field.density(pos)
                w = composite_weights(sigma, smp, o.shape[0]).weights
                keep = w > min_weight
                pts.append(pos[keep])
                wts.append(w[keep])
                counts.append(torch.bincount(smp.ray_ids[keep], minlength=o.shape[0]))
        self.points = torch.cat(pts)
        self.weights = torch.cat(wts)
        self.count = torch.cat(counts).cpu()  # [P]
        self.start = torch.cumsum(self.count, 0) - self.count  # [P]

    def gather(self, rays: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(points [k,3], weights [k], owner [k] in 0..len(rays)-1) of rays [r]."""
        counts = self.count[rays]
        owner = torch.repeat_interleave(torch.arange(len(rays)), counts)
        first = torch.cumsum(counts, 0) - counts
        idx = self.start[rays][owner] + torch.arange(int(counts.sum())) - first[owner]
        dev = self.points.device
        idx = idx.to(dev)
        return self.points[idx], self.weights[idx], owner.to(dev)


def distill_nerf(
    scene: NerfScene,
    dataset: Any,
    teachers: Sequence[Teacher],
    config: NerfDistillConfig | None = None,
    *,
    progress: Progress | None = None,
    cancel: Callable[[], bool] | None = None,
) -> NerfScene:
    """A copy of `scene` with a feature branch distilled from `teachers` over `dataset`'s views
    (see the module docstring) and its `feature_field` set; `scene` is left untouched.

    `dataset` is any `fields.features.ViewSource` (a `fields.Dataset`: `names`, `cameras`,
    `__getitem__ -> (camera, image)`). `progress(step, total, loss)` after every step;
    `cancel()` is polled before every view and step and raises `InterruptedError`."""
    config = config or NerfDistillConfig()
    if not teachers:
        raise ValueError("distill_nerf needs at least one teacher")
    if len(dataset) == 0:
        raise ValueError("distill_nerf needs a dataset with views")
    t0 = time.perf_counter()

    def check() -> None:
        if cancel is not None and cancel():
            raise InterruptedError("NeRF feature distillation cancelled")

    cache = TeacherCache(config.cache_dir) if config.cache_dir is not None else None
    budget = [int(config.memory_budget_mb * 2**20)]
    wrapped = [t if _is_codebook(t) else _MemoTeacher(t, cache, budget) for t in teachers]
    lifted = lift(
        _proxy_scene(scene.box),
        dataset,
        wrapped,  # type: ignore[arg-type]
        LiftConfig(
            dim=config.dim,
            min_side=1,
            fill_unseen=False,
            basis_pixels=config.basis_pixels,
            seed=config.seed,
        ),
        cancel=cancel,
    )
    levels = lifted.levels
    width = lifted.dim  # channels per level over all spaces
    targets, cams = _teacher_targets(wrapped, dataset, lifted.heads, len(levels), check)
    if not targets:
        raise ValueError("the teachers gave no valid pixel in any view: nothing to distill")

    out = copy.deepcopy(scene)
    gen = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        out.field.add_feature_branch(len(levels) * width)
    for p in out.field.parameters():
        p.requires_grad_(False)
    assert out.field.feature_table is not None
    trainable = [out.field.feature_table, *out.field.feature_head.parameters()]
    for p in trainable:
        p.requires_grad_(True)
    out.field.to(out.device)
    dev = out.device
    optim = torch.optim.Adam(trainable, lr=config.lr, betas=(0.9, 0.99), eps=1e-15)
    decay = config.lr_final ** (1.0 / max(config.steps - 1, 1))
    schedule = torch.optim.lr_scheduler.ExponentialLR(optim, gamma=decay)
    per_space = max(1, config.rays_per_step // len(targets))
    # Each space's pool of supervised pixels: all of them, or as many as the run visits.
    pools: dict[str, tuple[Tensor, _RaySamples]] = {}
    for space, tg in targets.items():
        n = tg.pair.shape[0]
        pool = torch.arange(n)
        if n > per_space * config.steps:
            pool = torch.randperm(n, generator=gen)[: per_space * config.steps]
        o, d = _pixel_rays(cams, tg.pair[pool], tg.pixel[pool])
        pools[space] = (pool, _RaySamples(out, o, d, config.min_weight, check))
    loss_value = float("nan")
    for step in range(config.steps):
        check()
        losses = []
        for space, tg in targets.items():
            pool, samples = pools[space]
            local = torch.randint(0, pool.shape[0], (per_space,), generator=gen)
            pick = pool[local]
            pts, w, owner = samples.gather(local)
            feats = accumulate(out.field.features(pts), w, owner, per_space)  # [r,C]
            values = tg.values[pick].float().to(dev)  # [r,L,d]
            valid = tg.valid[pick].to(dev)  # [r,L]
            for li in range(len(levels)):
                a = li * width + tg.offset
                cos = F.cosine_similarity(
                    feats[:, a : a + tg.width], values[:, li], dim=-1, eps=1e-8
                )
                ok = valid[:, li]
                if bool(ok.any()):
                    losses.append(1.0 - cos[ok].mean())
        if not losses:
            continue
        loss = torch.stack(losses).mean()
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        schedule.step()
        loss_value = float(loss.detach())
        if progress is not None:
            progress(step + 1, config.steps, loss_value)
    for p in out.field.parameters():
        p.requires_grad_(False)

    meta = {k: v for k, v in lifted.meta.items() if k != "lift"}
    meta["nerf_distill"] = {
        "views": len(dataset),
        "pixels": int(sum(t.pair.shape[0] for t in targets.values())),
        "rays": int(sum(len(p[0]) for p in pools.values())),
        "loss": loss_value,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    out.feature_field = FeatureField(
        features=torch.zeros(0, len(levels) * width),
        heads={s: w.clone() for s, w in lifted.heads.items()},
        config=config.to_json(),
        teachers=lifted.teachers,
        meta=meta,
        levels=levels,
    )
    return out


# ====================================================================================== regions
@dataclass(frozen=True, eq=False)
class QueryRegion:
    """A 3D region of a NeRF: `voxels` [R,R,R] bool over the field's unit cube ([z,y,x], as the
    occupancy grid; R need not be the occupancy resolution) and their world-space centres
    `centers` [M,3]. From a language query (`NerfQuery.region`) or a box (`from_box`)."""

    voxels: Tensor  # [R,R,R] bool
    centers: Tensor  # [M,3] world centres of the set voxels (flat [z,y,x] order)
    box: SceneBox
    text: tuple[str, ...] = ()
    level: str = ""
    threshold: float = 0.5
    confident: bool = True
    message: str = ""
    relevancy: Tensor | None = None  # [M] relevancy of each set voxel (query regions)

    def __post_init__(self) -> None:
        v = self.voxels
        if v.ndim != 3 or not (v.shape[0] == v.shape[1] == v.shape[2]):
            raise ValueError(f"region voxels must be [R,R,R], got {tuple(v.shape)}")

    @property
    def resolution(self) -> int:
        return int(self.voxels.shape[0])

    @property
    def count(self) -> int:
        return int(self.voxels.sum())

    @property
    def empty(self) -> bool:
        return not bool(self.voxels.any())

    def cells_of(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """(flat voxel index [N], inside the field's box [N] bool) of world points [N,3]."""
        return _voxel_index(self.box, self.resolution, points)

    def contains(self, points: Tensor) -> Tensor:
        """[N] bool: which world points [N,3] lie in a set voxel."""
        if points.ndim != 2 or points.shape[-1] != 3:
            raise ValueError(f"points must be [N,3], got {tuple(points.shape)}")
        flat, inside = self.cells_of(points)
        vox = self.voxels.reshape(-1).to(points.device)
        return inside & vox[flat.to(points.device)]

    def dilate(self, cells: int = 1) -> QueryRegion:
        """The region grown by `cells` voxels in every direction (a 3D max filter)."""
        if cells < 0:
            raise ValueError(f"cells must be >= 0, got {cells}")
        if cells == 0:
            return self
        v = F.max_pool3d(self.voxels[None, None].float(), 2 * cells + 1, stride=1, padding=cells)[
            0, 0
        ].bool()
        return _region(
            v,
            self.box,
            text=self.text,
            level=self.level,
            threshold=self.threshold,
            confident=self.confident,
            message=self.message,
        )

    def bounds(self) -> tuple[Tensor, Tensor]:
        """World AABB (lo [3], hi [3]) of the set voxels' centres, grown by half a voxel (in box
        mode; approximate in contract mode)."""
        if self.empty:
            raise ValueError("the region is empty")
        half = self.box.radius / self.resolution
        return self.centers.amin(0) - half, self.centers.amax(0) + half

    @classmethod
    def from_box(
        cls,
        scene: NerfScene,
        lo: Sequence[float] | Tensor,  # [3] world
        hi: Sequence[float] | Tensor,  # [3] world
        *,
        resolution: int | None = None,
    ) -> QueryRegion:
        """The voxels (default: the occupancy grid's resolution) whose centres lie in the world
        box [lo, hi]."""
        R = int(resolution or scene.config.occupancy_res)
        lo_t = torch.as_tensor(lo, dtype=torch.float32).reshape(3)
        hi_t = torch.as_tensor(hi, dtype=torch.float32).reshape(3)
        if not bool((hi_t >= lo_t).all()):
            raise ValueError(
                f"box corners must satisfy lo <= hi, got {lo_t.tolist()}, {hi_t.tolist()}"
            )
        centres = _voxel_centres(scene.box, R)
        inside = ((centres >= lo_t) & (centres <= hi_t)).all(-1)
        return _region(inside.reshape(R, R, R), scene.box, centres=centres[inside])


def _voxel_index(box: SceneBox, R: int, points: Tensor) -> tuple[Tensor, Tensor]:
    """(flat [z,y,x] index [N] in an R-grid over the unit cube, inside the box [N] bool) of world
    points [N,3]."""
    u, inside = box.to_unit(points.float())
    ijk = (u * R).floor().long().clamp(0, R - 1)
    return (ijk[:, 2] * R + ijk[:, 1]) * R + ijk[:, 0], inside


def _unit_to_world(box: SceneBox, u: Tensor) -> Tensor:
    """Unit cube [M,3] -> world [M,3]: `NerfScene`'s inverse of `SceneBox.to_unit` (it reads
    only the box)."""
    return NerfScene._from_unit(SimpleNamespace(box=box), u)  # type: ignore[arg-type]


def _voxel_centres(box: SceneBox, R: int, flat: Tensor | None = None) -> Tensor:
    """World centres [M,3] of flat voxel indices (all R³ when None) of an R-grid."""
    if flat is None:
        flat = torch.arange(R**3)
    z, rem = flat // (R * R), flat % (R * R)
    ijk = torch.stack([rem % R, rem // R, z], -1).float()
    return _unit_to_world(box, (ijk + 0.5) / R)


def _region(voxels: Tensor, box: SceneBox, centres: Tensor | None = None, **kw: Any) -> QueryRegion:
    if centres is None:
        centres = _voxel_centres(box, voxels.shape[0], voxels.reshape(-1).nonzero()[:, 0])
    return QueryRegion(voxels.bool(), centres, box, **kw)


# ====================================================================================== queries
class NerfQuery:
    """Language queries on a NeRF with a feature branch (see the module docstring). Expensive
    once, cheap many: the text encoder (rebuilt from the field's teacher records unless `encode`
    is given), each string's embedding and the observed cells' features are computed once.

        nq = NerfQuery(scene)
        heat = nq.relevancy(camera, "mug")                  # [H,W] in [0,1]
        region = nq.region("mug")                           # QueryRegion
        gaussians_mask = region.contains(gaussians.means)   # after conversion
    """

    def __init__(
        self,
        scene: NerfScene,
        encode: Callable[[list[str]], Tensor] | None = None,
        *,
        space: str | None = None,
        cameras: Sequence[Camera] | None = None,
        resolution: int | None = None,
        max_views: int = 24,
        max_side: int = 96,
        min_cell_weight: float = 0.05,
    ) -> None:
        ff = scene.feature_field
        if ff is None or not scene.has_features:
            raise ValueError(
                "this NeRF has no feature field; distill one first "
                "(scenelab distill SCENE.nerf --data DATA --teacher ...)"
            )
        if scene.field.feature_dim != ff.channels:
            raise ValueError(
                f"the NeRF's feature branch has {scene.field.feature_dim} channels but its "
                f"feature field decodes {ff.channels}"
            )
        self.scene = scene
        self.field = ff
        try:
            self.text = TextQuery(ff, encode, space=space, features=torch.zeros(0, ff.channels))
        except KeyError as e:
            raise ValueError(e.args[0]) from None
        self.space = self.text.space
        self.head = self.text.head
        self.resolution = int(resolution or scene.config.occupancy_res)
        self.cameras = list(cameras) if cameras else None
        self.max_views = max_views
        self.max_side = max_side
        self.min_cell_weight = min_cell_weight
        self._cells: tuple[Tensor, Tensor, Tensor] | None = None

    # ------------------------------------------------------------------ text side
    def embeddings(self, texts: str | Sequence[str] | Tensor) -> tuple[Tensor, list[str]]:
        """([T,D] embeddings, the terms) of texts (comma-separated or a list) or of embeddings
        given as a tensor [T,D] (terms empty)."""
        if isinstance(texts, Tensor):
            emb = texts.detach().float().cpu()
            emb = emb[None] if emb.ndim == 1 else emb
            if emb.ndim != 2 or emb.shape[1] != self.head.shape[0]:
                raise ValueError(
                    f"text embeddings must be [T,{self.head.shape[0]}], got {tuple(texts.shape)}"
                )
            return emb, []
        terms = split_terms(texts)
        if not terms:
            raise ValueError("type what to find (several terms: comma-separated)")
        return self.text.encode(terms), terms

    def _negatives(self, negatives: str | Sequence[str] | Tensor) -> Tensor:
        if isinstance(negatives, Tensor):
            return negatives.detach().float().cpu().reshape(-1, self.head.shape[0])
        return self.text.encode(negatives_for(split_terms(negatives) if negatives else ()))

    def _level(self, level: int | str) -> int:
        return self.field.level_index(level)

    # ------------------------------------------------------------------ heat maps
    def relevancy(
        self,
        camera: Camera,
        positives: str | Sequence[str] | Tensor,
        negatives: str | Sequence[str] | Tensor = (),
        *,
        level: int | str = 0,
        min_alpha: float = 0.5,
        features: Tensor | None = None,  # [H,W,C] a render's features, to skip rendering
        alpha: Tensor | None = None,  # [H,W,1] with `features`
    ) -> Tensor:
        """[H,W] LERF relevancy of the positives against the canonical negatives plus
        `negatives` (strings or embeddings [M,D]) at one level, 0 where the NeRF's alpha is
        below `min_alpha` (nothing there to answer)."""
        if features is None:
            out = render_nerf(self.scene, camera, features=True)
            features, alpha = out.features, out.alpha
        assert features is not None
        H, W, C = features.shape
        if C != self.field.channels:
            raise ValueError(f"features must have {self.field.channels} channels, got {C}")
        pos, _ = self.embeddings(positives)
        neg = self._negatives(negatives)
        li = self._level(level)
        d = self.field.dim
        flat = features.reshape(-1, C)[:, li * d : (li + 1) * d].float().cpu()
        covered = torch.ones(H * W, dtype=torch.bool)
        if alpha is not None:
            covered = alpha.reshape(-1).cpu() >= min_alpha
        heat = torch.zeros(H * W)
        if bool(covered.any()):
            heat[covered] = FieldQuery(flat[covered], self.head).relevancy(pos, neg)
        return heat.reshape(H, W)

    # ------------------------------------------------------------------ 3D
    def cell_features(self) -> tuple[Tensor, Tensor, Tensor]:
        """(flat voxel indices [M] of the observed cells of the R-grid, their features [M,C]
        (ray-weighted mean of the branch at the samples the views see), their summed weight [M]);
        computed once."""
        if self._cells is None:
            self._cells = observed_cells(
                self.scene,
                self.resolution,
                cameras=self.cameras,
                max_views=self.max_views,
                max_side=self.max_side,
                min_weight=self.min_cell_weight,
            )
        return self._cells

    def region(
        self,
        positives: str | Sequence[str] | Tensor,
        negatives: str | Sequence[str] | Tensor = (),
        *,
        level: int | str = "auto",
        threshold: float | None = None,
        min_component: float = 0.1,
    ) -> QueryRegion:
        """The observed cells whose features answer the query: texts go through
        `TextQuery.query` (automatic level and threshold, confidence: an unconfident answer is
        an empty region with the reason in `message`); embeddings [T,D] through the LERF
        relevancy with `auto_threshold` unless `threshold` is given.

        Connected parts of the answer (26-neighbourhood) whose summed view weight is below
        `min_component` times the heaviest part's are dropped: stray, barely seen cells (fog
        near a camera) whose untrained features happen to match (0: keep every cell)."""
        cells, feats, weight = self.cell_features()
        R = self.resolution
        voxels = torch.zeros(R**3, dtype=torch.bool)
        if isinstance(positives, Tensor) or isinstance(negatives, Tensor):
            pos, _ = self.embeddings(positives)
            neg = self._negatives(negatives)
            li = 0 if level == "auto" else self._level(level)
            d = self.field.dim
            rel = FieldQuery(feats[:, li * d : (li + 1) * d], self.head).relevancy(pos, neg)
            thr = auto_threshold(rel) if threshold is None else float(threshold)
            mask = rel > thr
            kw: dict[str, Any] = {"level": self.field.levels[li], "threshold": thr}
        else:
            tq = TextQuery(self.field, self.text.encode, space=self.space, features=feats)
            negs = split_terms(negatives) if negatives else []
            res = tq.query(positives, negs, level=level, threshold=threshold)
            mask, rel = res.mask, res.relevancy
            kw = {
                "text": tuple(res.positives),
                "level": res.level,
                "threshold": res.threshold,
                "confident": res.confident,
                "message": res.message,
            }
        if min_component > 0 and bool(mask.any()):
            mask[mask.clone()] = _massive_parts(cells[mask], weight[mask], R, min_component)
        voxels[cells[mask]] = True
        centres = _voxel_centres(self.scene.box, R, cells[mask])
        return QueryRegion(
            voxels.reshape(R, R, R), centres, self.scene.box, relevancy=rel[mask], **kw
        )


def _massive_parts(cells: Tensor, weight: Tensor, R: int, fraction: float) -> Tensor:
    """[M] bool over flat voxel indices [M] (an R-grid): cells of the 26-connected parts whose
    summed `weight` reaches `fraction` of the heaviest part's."""
    from scipy import ndimage

    grid = torch.zeros(R**3, dtype=torch.bool)
    grid[cells] = True
    labels, n = ndimage.label(
        grid.reshape(R, R, R).numpy(), structure=ndimage.generate_binary_structure(3, 3)
    )
    part = torch.from_numpy(labels.reshape(-1)[cells.numpy()]).long()  # 1..n
    mass = torch.zeros(n + 1, dtype=torch.float64).index_add_(0, part, weight.double())
    return mass[part] >= fraction * float(mass.max())


def _view_cameras(
    scene: NerfScene, cameras: Sequence[Camera] | None, max_views: int, max_side: int
) -> list[Camera]:
    cams = list(cameras) if cameras else (cameras_from_meta(scene.meta) or [])
    if not cams:
        from ..conventions import orbit_cameras

        box = scene.box
        n = max(8, max_views)
        cams = orbit_cameras(
            torch.tensor(box.center, dtype=torch.float64),
            box.radius,
            _nerf_up(scene.meta),  # the one rule: meta "up"/"up_axis", else the default
            torch.arange(n, dtype=torch.float64) * (2 * math.pi / n),
            torch.tensor([20.0 + 40.0 * (i % 2) for i in range(n)], dtype=torch.float64),
            width=max_side,
            height=max_side,
            fov_deg=50.0,
        )
    if len(cams) > max_views:
        step = len(cams) / max_views
        cams = [cams[int(i * step)] for i in range(max_views)]
    out = []
    for c in cams:
        side = max(c.width, c.height)
        out.append(c.scaled(max_side / side) if side > max_side else c)
    return out


@torch.no_grad()
def observed_cells(
    scene: NerfScene,
    resolution: int,
    *,
    cameras: Sequence[Camera] | None = None,
    max_views: int = 24,
    max_side: int = 96,
    min_weight: float = 0.05,
    chunk: int = 1 << 14,
) -> tuple[Tensor, Tensor, Tensor]:
    """Cells of an R-grid over the field's unit cube that views see, with the ray-weighted mean
    of the feature branch there: (flat indices [M], features [M,C], summed weight [M] >=
    `min_weight`). Views: `cameras`, else the scene's recorded cameras, else an orbit around the
    box; at most `max_views` of them, long side at most `max_side`."""
    R = int(resolution)
    cams = _view_cameras(scene, cameras, max_views, max_side)
    C = scene.field.feature_dim
    dev = scene.device
    sums = torch.zeros(R**3, C)
    weight = torch.zeros(R**3)
    for cam in cams:
        origins, dirs, _ = camera_rays(cam, dev)
        for a in range(0, origins.shape[0], chunk):
            o, d = origins[a : a + chunk], dirs[a : a + chunk]
            smp = scene.march_rays(o, d)
            smp = Samples(*(t.to(dev) for t in smp))
            pos = o[smp.ray_ids] + smp.t[:, None] * d[smp.ray_ids]
            sigma, _ = scene.field.density(pos)
            w = composite_weights(sigma, smp, o.shape[0]).weights
            keep = w > 1e-3
            pos, w = pos[keep], w[keep]
            if not len(w):
                continue
            f = scene.field.features(pos).float().cpu()
            cells, _ = _voxel_index(scene.box, R, pos.cpu())
            sums.index_add_(0, cells, w.cpu()[:, None] * f)
            weight.index_add_(0, cells, w.cpu())
    seen = (weight >= min_weight).nonzero()[:, 0]
    return seen, sums[seen] / weight[seen, None], weight[seen]


def nerf_relevancy(
    scene: NerfScene,
    camera: Camera,
    positives: str | Sequence[str] | Tensor,
    negatives: str | Sequence[str] | Tensor = (),
    *,
    space: str | None = None,
    level: int | str = 0,
    encode: Callable[[list[str]], Tensor] | None = None,
) -> Tensor:
    """[H,W] relevancy heat map of `camera`'s view (one-off `NerfQuery(scene).relevancy`; hold
    a `NerfQuery` to query repeatedly)."""
    return NerfQuery(scene, encode, space=space).relevancy(
        camera, positives, negatives, level=level
    )


def nerf_query_region(
    scene: NerfScene,
    positives: str | Sequence[str] | Tensor,
    negatives: str | Sequence[str] | Tensor = (),
    *,
    space: str | None = None,
    level: int | str = "auto",
    threshold: float | None = None,
    resolution: int | None = None,
    cameras: Sequence[Camera] | None = None,
    encode: Callable[[list[str]], Tensor] | None = None,
) -> QueryRegion:
    """The `QueryRegion` answering a query (one-off `NerfQuery(scene).region`)."""
    nq = NerfQuery(scene, encode, space=space, cameras=cameras, resolution=resolution)
    return nq.region(positives, negatives, level=level, threshold=threshold)


# ====================================================================================== edits
class RegionEdit(nn.Module):
    """One region-masked edit of a NeRF: the region's voxels [R,R,R] (over the unit cube,
    [z,y,x]), the colour MLP that replaces the original inside it and, when density is edited,
    the density MLP that does."""

    def __init__(
        self, voxels: Tensor, color_mlp: nn.Module, density_mlp: nn.Module | None = None
    ) -> None:
        super().__init__()
        if voxels.ndim != 3 or not (voxels.shape[0] == voxels.shape[1] == voxels.shape[2]):
            raise ValueError(f"edit voxels must be [R,R,R], got {tuple(voxels.shape)}")
        self.register_buffer("voxels", voxels.bool().clone())
        self.color_mlp = color_mlp
        self.density_mlp = density_mlp

    def contains_unit(self, u: Tensor, inside: Tensor) -> Tensor:
        """[S] bool: unit-cube points [S,3] (inside the box: `inside` [S]) in the region."""
        R = self.voxels.shape[0]
        ijk = (u * R).floor().long().clamp(0, R - 1)
        flat = (ijk[:, 2] * R + ijk[:, 1]) * R + ijk[:, 0]
        return inside & self.voxels.reshape(-1)[flat]

    def record(self) -> dict[str, Any]:
        return {"resolution": int(self.voxels.shape[0]), "density": self.density_mlp is not None}


class EditedNerfField(NerfField):
    """A `NerfField` with region edits (`edits`, later ones win where regions overlap).

    Geometry features carry the point's owner: `density` returns geo [S, G+1] whose last column
    is 1 + the index of the edit whose region holds the point (0: none), and `color` reads it,
    so `NerfScene.render_rays` (which passes density's geo to color) works unchanged. Points
    outside every region go through the original MLPs in the same batch: bit-identical."""

    def __init__(self, config: NerfModelConfig, box: SceneBox) -> None:
        super().__init__(config, box)
        self.edits = nn.ModuleList()

    @classmethod
    def from_field(cls, field: NerfField) -> EditedNerfField:
        """A frozen copy of `field` (plain or edited) ready for one more edit."""
        new = cls(field.config, field.box)
        for e in getattr(field, "edits", ()):
            new.edits.append(copy.deepcopy(e))
        new.load_state_dict(field.state_dict())
        new.to(field.table.device)
        for p in new.parameters():
            p.requires_grad_(False)
        return new

    @classmethod
    def from_records(
        cls, config: NerfModelConfig, box: SceneBox, records: Sequence[dict[str, Any]]
    ) -> EditedNerfField:
        """An empty field shaped like one saved with `records` (`RegionEdit.record()` each), to
        `load_state_dict` into (what a `.nerf` reader needs)."""
        new = cls(config, box)
        for rec in records:
            R = int(rec["resolution"])
            dens = copy.deepcopy(new.density_mlp) if rec.get("density") else None
            new.edits.append(
                RegionEdit(
                    torch.zeros(R, R, R, dtype=torch.bool), copy.deepcopy(new.color_mlp), dens
                )
            )
        return new

    def add_edit(self, voxels: Tensor, *, density: bool = False) -> RegionEdit:
        """Append a trainable edit over `voxels`, starting from the original MLPs (or from the
        latest earlier edit that overlaps it most, so the edit starts from what renders)."""
        src_color, src_density = self.color_mlp, self.density_mlp
        best = 0
        for e in self.edits:
            R = e.voxels.shape[0]
            if R != voxels.shape[0]:
                continue
            overlap = int((e.voxels & voxels.to(e.voxels.device)).sum())
            if overlap > best:
                best, src_color = overlap, e.color_mlp
                if e.density_mlp is not None:
                    src_density = e.density_mlp
        edit = RegionEdit(
            voxels.to(self.table.device),
            copy.deepcopy(src_color),
            copy.deepcopy(src_density) if density else None,
        )
        for p in edit.parameters():
            p.requires_grad_(True)
        self.edits.append(edit)
        return edit

    def owners(self, x: Tensor) -> Tensor:
        """[S] int64: 1 + index of the edit owning each world point [S,3] (0: none)."""
        owner = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        if not len(self.edits):
            return owner
        u, inside = self.box.to_unit(x)
        for k, e in enumerate(self.edits):
            owner[e.contains_unit(u, inside)] = k + 1
        return owner

    def density(self, x: Tensor) -> tuple[Tensor, Tensor]:
        sigma, geo = super().density(x)
        owner = self.owners(x)
        for k, e in enumerate(self.edits):
            if e.density_mlp is None:
                continue
            rows = (owner == k + 1).nonzero()[:, 0]
            if not rows.numel():
                continue
            u, inside = self.box.to_unit(x[rows])
            h = e.density_mlp(hash_encode(u.contiguous(), self.table, self.layout))
            sigma = sigma.index_put((rows,), torch.exp((h[:, 0] - 1).clamp(max=15.0)) * inside)
            geo = geo.index_put((rows,), h[:, 1:])
        return sigma, torch.cat([geo, owner[:, None].to(geo.dtype)], -1)

    def color(self, geo: Tensor, dirs: Tensor) -> Tensor:
        if geo.shape[-1] != self.config.geo_features + 1:
            raise ValueError(
                "an edited NeRF's colour needs the geometry features its `density` returns "
                f"([S,{self.config.geo_features + 1}] with the owner column), got "
                f"{tuple(geo.shape)}"
            )
        owner = geo[:, -1].round().long()
        g = geo[:, :-1]
        rgb = super().color(g, dirs)
        for k, e in enumerate(self.edits):
            rows = (owner == k + 1).nonzero()[:, 0]
            if not rows.numel():
                continue
            inp = torch.cat([g[rows], sh_basis(3, dirs[rows])], -1)
            rgb = rgb.index_put((rows,), torch.sigmoid(e.color_mlp(inp)))
        return rgb

    def edit_records(self) -> list[dict[str, Any]]:
        """What a file needs to rebuild the edits' shapes (`from_records`)."""
        return [e.record() for e in self.edits]


def _nerf_up(meta: dict) -> Any:
    """[3] a NeRF's up by `fields.conventions.scene_up` (its meta; no Gaussians to estimate
    from)."""
    from ..conventions import scene_up
    from ..scene import GaussianScene

    return scene_up(GaussianScene.empty().replace(meta=dict(meta))).vector
