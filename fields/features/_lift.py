"""Training-free lifting: per-Gaussian features as blending-weighted averages of 2D teacher maps.

Occam's LGS, Dr. Splat and LUDVIG report that optimisation is not needed to put 2D features on
Gaussians: the feature of Gaussian i is the average of the teacher's (unit) vectors over every
pixel p it contributes to, weighted by its blending weight w_ip = α_i(p)·T_i(p), over all views:

    f_i = Σ_views Σ_p w_ip u_p / Σ_views Σ_p w_ip

One forward pass per view through the weight-accumulating rasterizer
(`fields.rendering.accumulate_weights`) gives both sums, so a field costs a few renders instead
of hundreds of optimisation steps.

Teacher vectors are D-dimensional (512 for CLIP, 256 for SAM). Averaging is linear, so the
projection to d channels can happen before lifting: per teacher space, the top-d eigenvectors of
the uncentred second moment of its unit vectors (PCA without centring, so the head needs no
bias) form the head W [D,d]; pixels carry Wᵀu (d channels) and Gaussians decode as W f. Two
passes over the views: the first accumulates the second moment (on a sample of pixels), the
second projects and lifts. Teachers of several spaces get separate d-channel blocks of one
feature vector, with block-diagonal heads; each block is normalised to unit length, so every
space weighs the same in feature affinities.

Semantic levels: a teacher may return a stack of maps [L,h,w,D] (`teacher.levels`: names, coarse
to fine); the field keeps one feature per level (`FeatureField.levels`). A single-level teacher's
map serves every level.

Codebook teachers (the oracles) return class ids instead of vectors (`codes`) and carry the
vectors once (`codebook` [K,D]): their maps are projected by indexing the projected codebook,
never materialised at 512 channels.

Gaussians no view sees (summed weight below `observed_weight` pixels) take the features of their
nearest observed neighbour.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from ..camera import Camera
from ..rendering import accumulate_weights
from ..scene import GaussianScene
from ._distill import _camera_at, fill_unseen
from ._io import DEFAULT_LEVELS, FeatureField
from ._teacher import Teacher, TeacherCache, check_map

__all__ = [
    "LiftConfig",
    "SceneViews",
    "ViewSource",
    "lift",
    "lift_values",
    "native_side",
    "scene_views",
    "teacher_levels",
]

Progress = Callable[[float, str], None]  # (fraction done, what is happening)


class ViewSource(Protocol):
    """Views to lift from: a `fields.Dataset`, or `SceneViews` (renders of the scene itself)."""

    names: list[str]
    cameras: list[Camera]

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[Camera, Tensor]:
        """(camera, image float32 [H,W,3] in [0,1])."""
        ...


@dataclass(frozen=True)
class LiftConfig:
    """How `lift` builds a feature field."""

    dim: int = 16
    """Channels per teacher space and level (d)."""
    min_side: int = 160
    """Teacher maps coarser than this (long side, e.g. a CLIP patch grid) are upsampled
    bilinearly before lifting, so each Gaussian averages over the pixels it covers."""
    observed_weight: float = 0.05
    """A Gaussian whose summed blending weight over all views stays below this many pixels is
    unobserved; with `fill_unseen` it takes its nearest observed neighbour's features."""
    fill_unseen: bool = True
    """Fill unobserved Gaussians from their nearest observed neighbour."""
    basis_pixels: int = 4096
    """Pixels per view and level sampled for the projection basis."""
    seed: int = 0
    """Seed of the pixel sample."""
    cache_dir: str | None = None
    """Folder of the on-disk teacher cache (None: no cache)."""

    def to_json(self) -> dict[str, Any]:
        return {"method": "lift", **asdict(self)}


def teacher_levels(teachers: Sequence[Teacher]) -> tuple[str, ...]:
    """The field's levels: those of the multi-level teachers (which must agree), else one."""
    levels: tuple[str, ...] | None = None
    single: tuple[str, ...] | None = None
    for t in teachers:
        own = tuple(getattr(t, "levels", None) or ())
        if len(own) > 1:
            if levels is not None and own != levels:
                raise ValueError(f"teachers disagree on the levels: {levels} vs {own}")
            levels = own
        elif own and single is None:
            single = own
    return levels or single or DEFAULT_LEVELS


@dataclass
class _Map:
    """One teacher's projected map of one view: [L,h,w,d] values and [L,h,w] validity."""

    values: Tensor
    valid: Tensor


def lift(
    scene: GaussianScene,
    views: ViewSource,
    teachers: Sequence[Teacher],
    config: LiftConfig | None = None,
    *,
    progress: Progress | None = None,
    cancel: Callable[[], bool] | None = None,
) -> FeatureField:
    """Lift `teachers`' maps of `views` onto `scene`'s Gaussians (see the module docstring).

    `progress(fraction, message)` is called as views are done; `cancel()` is polled before each
    view and `InterruptedError` raised when it returns True. The field is bound to `scene`
    (`FeatureField.check_scene` accepts it, and only it)."""
    config = config or LiftConfig()
    if not teachers:
        raise ValueError("lifting needs at least one teacher")
    if len(views) == 0:
        raise ValueError("lifting needs at least one view")
    if config.dim < 1:
        raise ValueError(f"dim must be >= 1, got {config.dim}")
    t0 = time.perf_counter()
    scene = scene.detach()
    levels = teacher_levels(teachers)
    n_levels = len(levels)
    spaces: dict[str, int] = {}
    for t in teachers:
        if spaces.setdefault(t.space, int(t.dim)) != int(t.dim):
            raise ValueError(f"teachers of space {t.space!r} disagree on the dimension")
    cache = TeacherCache(config.cache_dir) if config.cache_dir is not None else None
    report = progress or (lambda _f, _m: None)
    n_views = len(views)
    total_steps = 2 * n_views * len(teachers)
    done = 0

    def check() -> None:
        if cancel is not None and cancel():
            raise InterruptedError(f"lifting cancelled ({done}/{total_steps})")

    # Pass 1: the second moment of each space's unit vectors -> its top-d eigenvectors.
    gen = torch.Generator().manual_seed(config.seed)
    moments = {s: torch.zeros(dim, dim, dtype=torch.float64) for s, dim in spaces.items()}
    norms: dict[str, list[float]] = {s: [] for s in spaces}
    for vi in range(n_views):
        for teacher in teachers:
            check()
            if _is_codebook(teacher):
                codes = _codes(teacher, views, vi)
                table = F.normalize(teacher.codebook.double(), dim=-1)  # [K,D]
                counts = torch.bincount(codes[codes >= 0], minlength=table.shape[0]).double()
                moments[teacher.space] += (table * counts[:, None]).T @ table
            else:
                fmap = _teacher_map(teacher, views, vi, cache)  # [L,h,w,D]
                flat = fmap.reshape(-1, fmap.shape[-1])
                ok = _valid(flat)
                if bool(ok.any()):
                    vecs = flat[ok]
                    norms[teacher.space].append(float(vecs.norm(dim=1).mean()))
                    k = min(len(vecs), config.basis_pixels * fmap.shape[0])
                    pick = torch.randperm(len(vecs), generator=gen)[:k]
                    unit = F.normalize(vecs[pick].double(), dim=-1)
                    moments[teacher.space] += unit.T @ unit
            done += 1
            report(done / total_steps, f"teacher maps {vi + 1}/{n_views}")
    bases: dict[str, Tensor] = {}
    for space, moment in moments.items():
        d = min(config.dim, moment.shape[0])
        _, vecs = torch.linalg.eigh(moment)
        basis = vecs[:, -d:].flip(1)  # [D,d], largest eigenvalue first
        # A deterministic sign per direction (eigh's is arbitrary).
        basis = basis * torch.where(basis.sum(0) < 0, -1.0, 1.0)[None]
        bases[space] = basis.float()
    offsets: dict[str, int] = {}
    width = 0
    for space, basis in bases.items():
        offsets[space] = width
        width += basis.shape[1]

    # Pass 2: project, lift. Per level: `width` channels of weighted sums, one total per space.
    n = len(scene)
    sums = torch.zeros(n, n_levels, width)
    totals = torch.zeros(n, n_levels, len(spaces))
    space_index = {s: i for i, s in enumerate(spaces)}
    for vi in range(n_views):
        for teacher in teachers:
            check()
            basis = bases[teacher.space]
            if _is_codebook(teacher):
                codes = _codes(teacher, views, vi)
                m = _project_codes(teacher, codes, basis)
            else:
                m = _project_map(_teacher_map(teacher, views, vi, cache), basis)
            camera = _camera_at(views.cameras[vi], m.values.shape[2], m.values.shape[1])
            m, camera = _upsample(m, camera, config.min_side)
            if m.values.shape[0] == 1 and n_levels > 1:  # one map serves every level
                m = _Map(m.values.expand(n_levels, -1, -1, -1), m.valid.expand(n_levels, -1, -1))
            lv, h, w, d = m.values.shape
            valid = m.valid.float()
            pixel = torch.cat(
                [m.values * valid[..., None], valid[..., None]], dim=-1
            )  # [L,h,w,d+1]
            pixel = pixel.permute(1, 2, 0, 3).reshape(h, w, lv * (d + 1))
            acc = accumulate_weights(scene, camera, pixel.to(scene.device)).sums.cpu()
            acc = acc.reshape(n, lv, d + 1)
            o = offsets[teacher.space]
            sums[:, :, o : o + d] += acc[:, :, :d]
            totals[:, :, space_index[teacher.space]] += acc[:, :, d]
            done += 1
            report(done / total_steps, f"lifting {vi + 1}/{n_views}")

    features = torch.zeros(n, n_levels, width)
    for space, si in space_index.items():
        o, d = offsets[space], bases[space].shape[1]
        block = sums[:, :, o : o + d] / totals[:, :, si : si + 1].clamp_min(1e-12)
        features[:, :, o : o + d] = F.normalize(block, dim=-1)
    features = features.reshape(n, n_levels * width)
    observed = totals.sum(dim=(1, 2)) >= config.observed_weight
    if config.fill_unseen:
        features = fill_unseen(scene.means.cpu(), features, observed)
    heads = {}
    for space, basis in bases.items():
        head = torch.zeros(basis.shape[0], width)
        o = offsets[space]
        head[:, o : o + basis.shape[1]] = basis
        heads[space] = head
    meta: dict[str, Any] = {
        f"{space}_cell_norm": sum(v) / len(v) for space, v in norms.items() if v
    }
    meta["lift"] = {
        "views": n_views,
        "observed_fraction": float(observed.float().mean()) if n else 0.0,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    names = scene.meta.get("label_names")
    if names:
        meta["label_names"] = names
    field = FeatureField(
        features=features,
        heads=heads,
        config=config.to_json(),
        teachers=[
            {"name": t.name, "space": t.space, "dim": int(t.dim), **t.config()} for t in teachers
        ],
        meta=meta,
        levels=levels,
    )
    return field.bind(scene)


# ------------------------------------------------------------------------------ teacher maps
def _is_codebook(teacher: Any) -> bool:
    return getattr(teacher, "codebook", None) is not None and hasattr(teacher, "codes")


def _codes(teacher: Any, views: ViewSource, index: int) -> Tensor:
    """int64 [L,h,w] class ids of one view (-1: no value). Codebook teachers read the view's
    name and camera, never its image."""
    codes = teacher.codes(views.names[index], views.cameras[index])
    return codes[None] if codes.ndim == 2 else codes


def _project_codes(teacher: Any, codes: Tensor, basis: Tensor) -> _Map:
    table = F.normalize(teacher.codebook.float(), dim=-1) @ basis  # [K,d]
    table = torch.cat([table, torch.zeros(1, table.shape[1])])  # row -1: no value
    valid = codes >= 0
    return _Map(table[codes.clamp_min(-1)], valid)


def _teacher_map(teacher: Teacher, views: ViewSource, index: int, cache: TeacherCache | None):
    """float32 [L,h,w,D] (NaN where the teacher has no value), from the cache when it has it."""
    _, image = views[index]
    name = views.names[index]
    if cache is not None and getattr(teacher, "cacheable", True) and not _multi(teacher):
        fmap = cache.get_or_compute(teacher, image, name)
    else:
        with torch.no_grad():
            fmap = teacher(image, name)
        if not _multi(teacher):
            check_map(teacher, fmap)
    fmap = fmap.detach().to("cpu", torch.float32)
    return fmap if fmap.ndim == 4 else fmap[None]


def _multi(teacher: Any) -> bool:
    return len(tuple(getattr(teacher, "levels", None) or ())) > 1


def _valid(flat: Tensor) -> Tensor:
    return torch.isfinite(flat).all(dim=1) & (flat.norm(dim=1) > 0)


def _project_map(fmap: Tensor, basis: Tensor) -> _Map:
    lv, h, w, dim = fmap.shape
    flat = fmap.reshape(-1, dim)
    valid = _valid(flat)
    unit = F.normalize(torch.where(valid[:, None], flat, 0.0), dim=-1)
    return _Map((unit @ basis).reshape(lv, h, w, -1), valid.reshape(lv, h, w))


def _upsample(m: _Map, camera: Camera, min_side: int) -> tuple[_Map, Camera]:
    """Maps coarser than `min_side` upsampled bilinearly (values weighted by validity)."""
    _lv, h, w, _d = m.values.shape
    if max(h, w) >= min_side:
        return m, camera
    factor = min_side / max(h, w)
    cam = camera.scaled(factor)
    size = (cam.height, cam.width)
    valid = m.valid.float()[:, None]  # [L,1,h,w]
    vals = (m.values * valid[:, 0, ..., None]).permute(0, 3, 1, 2)  # [L,d,h,w]
    up_v = F.interpolate(vals, size=size, mode="bilinear", align_corners=False)
    up_w = F.interpolate(valid, size=size, mode="bilinear", align_corners=False)
    values = (up_v / up_w.clamp_min(1e-6)).permute(0, 2, 3, 1)
    return _Map(values, up_w[:, 0] > 0.5), cam


# ------------------------------------------------------------------------------ scene views
class SceneViews:
    """Views of a scene rendered by the scene itself (`ViewSource`): for lifting features onto a
    scene that came without its photos. Images are rendered on first use and kept (uint8)."""

    def __init__(
        self,
        scene: GaussianScene,
        cameras: Sequence[Camera],
        *,
        background: tuple[float, float, float] = (1.0, 1.0, 1.0),
    ) -> None:
        if not cameras:
            raise ValueError("SceneViews needs at least one camera")
        self.scene = scene.detach()
        self.cameras = list(cameras)
        self.names = [c.name or f"view_{i:03d}" for i, c in enumerate(self.cameras)]
        if len(set(self.names)) != len(self.names):
            self.names = [f"view_{i:03d}" for i in range(len(self.cameras))]
        self.background = background
        self._images: dict[int, Tensor] = {}

    def __len__(self) -> int:
        return len(self.cameras)

    def __getitem__(self, index: int) -> tuple[Camera, Tensor]:
        camera = self.cameras[index]
        if index not in self._images:
            from ..rendering import render

            with torch.no_grad():
                rgb = render(self.scene, camera, background=self.background).rgb
            self._images[index] = (rgb.clamp(0, 1) * 255).round().to(torch.uint8).cpu()
        return camera, self._images[index].float() / 255.0


DEFAULT_VIEW_SIDE = 320


def native_side(teachers: Sequence[Teacher]) -> int:
    """Long side of the views to render for `teachers`: the largest input any of them wants
    (SAM's 1024, CLIP's training resolution), else `DEFAULT_VIEW_SIDE` (codebook teachers)."""
    sides = []
    for t in teachers:
        if getattr(t, "img_size", None):  # SAM: the long side of its square input
            sides.append(int(t.img_size))
        elif getattr(t, "native_size", None):  # CLIP: (H, W) it was trained at
            sides.append(max(int(x) for x in t.native_size))
    return max(sides) if sides else DEFAULT_VIEW_SIDE


def scene_views(
    scene: GaussianScene,
    teachers: Sequence[Teacher],
    *,
    cameras: Sequence[Camera] | None = None,
    side: int | None = None,
) -> SceneViews:
    """Views to lift `teachers` from when there is no dataset: the cameras given, else those in
    the scene's sidecar (`meta["cameras"]`), else views placed around and inside the scene's
    occupied bounds (`teacher_cameras`) — at the teachers' native resolution (`native_side`)."""
    from ..camera import cameras_from_meta
    from ._views import teacher_cameras

    side = int(side or native_side(teachers))
    width, height = side, max(8, round(side * 3 / 4))
    given = list(cameras) if cameras else cameras_from_meta(scene.meta)
    cams = teacher_cameras(scene, width=width, height=height, cameras=given or None)
    return SceneViews(scene, cams)


def lift_values(
    scene: GaussianScene,
    cameras: Sequence[Camera],
    maps: Sequence[Tensor],  # per camera [H,W,C] at the camera's size; NaN: no value
) -> tuple[Tensor, Tensor]:
    """The plain weighted average behind `lift`, for any per-pixel values (colours, masks):
    (values [N,C] = Σ w_ip v_p / Σ w_ip over the valid pixels of all views, 0 where a Gaussian
    gets no weight; weight [N] = Σ w_ip)."""
    if len(cameras) != len(maps):
        raise ValueError(f"{len(cameras)} cameras but {len(maps)} maps")
    scene = scene.detach()
    n = len(scene)
    sums: Tensor | None = None
    total = torch.zeros(n)
    for camera, values in zip(cameras, maps, strict=True):
        if values.ndim != 3 or values.shape[:2] != (camera.height, camera.width):
            raise ValueError(
                f"a map must be [{camera.height},{camera.width},C], got {tuple(values.shape)}"
            )
        values = values.float().cpu()
        valid = torch.isfinite(values).all(dim=-1, keepdim=True).float()
        pixel = torch.cat([torch.nan_to_num(values) * valid, valid], dim=-1)
        acc = accumulate_weights(scene, camera, pixel.to(scene.device)).sums.cpu()
        sums = acc[:, :-1] if sums is None else sums + acc[:, :-1]
        total += acc[:, -1]
    assert sums is not None
    return sums / total.clamp_min(1e-12)[:, None] * (total > 0)[:, None], total
