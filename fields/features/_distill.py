"""Distillation: fit per-Gaussian low-dim features so that rendered, decoded maps match teachers.

Feature 3DGS's speed-up: each Gaussian carries f_i [d] (d ~ 16); a view renders the d-channel
map with the frozen geometry, and one linear head per teacher space W_t [D_t, d] decodes it per
pixel. The loss (1 - cosine) is taken at the teacher's own resolution, skipping pixels the
teacher left NaN. Adam updates f and the heads (learning rates decaying exponentially to a
tenth); views are drawn at random, each once per epoch. All features start at one shared unit
vector, so the Gaussians under a pixel move together from the first step.

The heads carry no bias on purpose: a rendered feature is an alpha-weighted sum, so W r scales
with coverage and the cosine ignores that scale, whereas a bias would not scale with it. It also
keeps the language query's fold cos(W f, t) = f·(Wᵀt) / (|W f| |t|) exact.

Gaussians that no view observes (under the table, the bottom of a mug) get no or only faint
gradients; after the optimisation they take the features of their nearest observed neighbour.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..rendering import render
from ..scene import GaussianScene
from ._io import FeatureField
from ._teacher import Teacher, TeacherCache, check_map

Progress = Callable[[int, int, float], None]  # (step, total, loss)


@dataclass(frozen=True)
class DistillConfig:
    """How `distill` fits a feature field."""

    dim: int = 16
    """Channels per Gaussian (d)."""
    steps: int = 600
    """Optimisation steps (one view and one teacher each)."""
    lr_features: float = 0.05
    """Adam learning rate of the per-Gaussian features."""
    lr_heads: float = 0.01
    """Adam learning rate of the linear heads."""
    lr_final: float = 0.1
    """Both learning rates decay exponentially to this fraction by the last step."""
    init_noise: float = 0.01
    """Spread of the initial features around one shared start vector."""
    seed: int = 0
    """Seed of the initialisation and the view order."""
    fill_unseen: bool = True
    """Give Gaussians no view observes the features of their nearest observed neighbour."""
    observed_weight: float = 0.1
    """A Gaussian counts as observed when its blending weight summed over one rendered view's
    pixels reaches this many pixels in some step; below it, its features come from gradients
    too faint to trust (contact surfaces seen through a crack) and are filled instead."""
    memory_budget_mb: float = 1024
    """Teacher maps held in memory between steps (float16); beyond it they are reloaded."""
    cache_dir: str | None = None
    """Folder of the on-disk teacher cache (None: keep maps in memory for this run only)."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Target:
    """A teacher map for one view, with the camera rendered at the map's resolution."""

    space: str
    camera: Any
    values: Tensor  # [P, D] unit vectors of the valid pixels, float16
    valid: Tensor  # [h*w] bool
    norm: float  # mean length of the teacher's valid vectors before normalising


def distill(
    scene: GaussianScene,
    dataset: Any,
    teachers: Sequence[Teacher],
    config: DistillConfig | None = None,
    *,
    progress: Progress | None = None,
    cancel: Callable[[], bool] | None = None,
) -> FeatureField:
    """Distill `teachers` over `dataset`'s views into a `FeatureField` for `scene`.

    `progress(step, total, loss)` is called after every step; `cancel()` is polled before
    every step and, when it returns True, `InterruptedError` is raised (teacher maps already
    written to the cache stay there). Runs on the scene's device."""
    config = config or DistillConfig()
    if not teachers:
        raise ValueError("distill needs at least one teacher")
    if len(dataset) == 0:
        raise ValueError("distill needs a dataset with views")
    device = scene.device
    scene = scene.detach()
    gen = torch.Generator().manual_seed(config.seed)
    n = len(scene)
    dims: dict[str, int] = {}
    for t in teachers:
        if dims.setdefault(t.space, int(t.dim)) != int(t.dim):
            raise ValueError(f"teachers of space {t.space!r} disagree on the dimension")

    # One shared start vector (plus a little noise): every Gaussian seen in a pixel then gets a
    # gradient in the same direction, so the members of a surface move together instead of
    # random starts cancelling in the alpha-blend (which fits the 2D maps but not each Gaussian).
    start = F.normalize(torch.randn(config.dim, generator=gen), dim=0)
    noise = torch.randn(n, config.dim, generator=gen) * config.init_noise
    features = (start + noise).to(device).requires_grad_()
    heads = {
        space: torch.nn.init.orthogonal_(torch.empty(dim, config.dim), generator=gen)
        .to(device)
        .requires_grad_()
        for space, dim in dims.items()
    }
    optim = torch.optim.Adam(
        [
            {"params": [features], "lr": config.lr_features},
            {"params": list(heads.values()), "lr": config.lr_heads},
        ]
    )
    decay = config.lr_final ** (1.0 / max(config.steps - 1, 1))
    schedule = torch.optim.lr_scheduler.ExponentialLR(optim, gamma=decay)
    cache = TeacherCache(config.cache_dir) if config.cache_dir is not None else None
    targets: dict[tuple[int, int], _Target] = {}
    held = 0
    weight = torch.zeros(n, device=device)  # best per-view blending weight, in pixels
    # Mean raw vector length per space: the loss is a cosine, so decoded vectors have no scale of
    # their own, but SAM's mask decoder expects embeddings at the length it was trained on.
    norm_sum: dict[str, float] = {}
    norm_count: dict[str, int] = {}
    names = dataset.names
    pairs = [(ti, vi) for ti in range(len(teachers)) for vi in range(len(dataset))]
    order: list[int] = []
    total = config.steps
    for step in range(total):
        if cancel is not None and cancel():
            raise InterruptedError(f"distillation cancelled at step {step}/{total}")
        if not order:
            order = torch.randperm(len(pairs), generator=gen).tolist()
        key = pairs[order.pop()]
        target = targets.get(key)
        if target is None:
            teacher = teachers[key[0]]
            target = _load_target(teacher, dataset, key[1], names[key[1]], cache, device)
            if target.values.shape[0]:
                norm_sum[target.space] = norm_sum.get(target.space, 0.0) + target.norm
                norm_count[target.space] = norm_count.get(target.space, 0) + 1
            # Hold maps in memory up to a budget (512 channels at full resolution would take
            # gigabytes for a few dozen views); past it they are reloaded (or recomputed).
            size = target.values.numel() * target.values.element_size()
            if held + size <= config.memory_budget_mb * 2**20:
                targets[key] = target
                held += size
        if target.values.shape[0] == 0:
            continue
        # A constant extra channel measures each Gaussian's blending weight in this view: its
        # gradient under an upstream gradient of 1 is sum_p w_ip (channels are independent).
        probe = torch.ones(n, 1, device=device, requires_grad=True)
        out = render(scene, target.camera, features=torch.cat([features, probe], dim=1))
        flat = out.features.reshape(-1, config.dim + 1)
        decoded = flat[target.valid, : config.dim] @ heads[target.space].T
        values = target.values.float()
        loss = 1.0 - F.cosine_similarity(decoded, values, dim=-1, eps=1e-8).mean()
        optim.zero_grad(set_to_none=True)
        (loss + flat[:, config.dim].sum()).backward()
        assert probe.grad is not None
        weight = torch.maximum(weight, probe.grad[:, 0])
        optim.step()
        schedule.step()
        if progress is not None:
            progress(step + 1, total, float(loss.detach()))

    result = features.detach()
    if config.fill_unseen:
        result = fill_unseen(scene.means, result, weight >= config.observed_weight)
    return FeatureField(
        features=result.cpu(),
        heads={space: w.detach().cpu() for space, w in heads.items()},
        config=config.to_json(),
        teachers=[
            {"name": t.name, "space": t.space, "dim": int(t.dim), **t.config()} for t in teachers
        ],
        meta={f"{space}_cell_norm": norm_sum[space] / norm_count[space] for space in norm_sum},
    )


def _load_target(
    teacher: Teacher,
    dataset: Any,
    index: int,
    view_name: str,
    cache: TeacherCache | None,
    device: torch.device,
) -> _Target:
    camera, image = dataset[index]
    if cache is not None and getattr(teacher, "cacheable", True):
        fmap = cache.get_or_compute(teacher, image, view_name)
    else:
        with torch.no_grad():
            fmap = teacher(image, view_name)
        check_map(teacher, fmap)
    fmap = fmap.detach().to(device, torch.float32)
    h, w = fmap.shape[:2]
    flat = fmap.reshape(h * w, -1)
    valid = torch.isfinite(flat).all(dim=1) & (flat.norm(dim=1) > 0)
    norm = float(flat[valid].norm(dim=1).mean()) if bool(valid.any()) else 0.0
    values = F.normalize(flat[valid], dim=-1).half()  # held between steps: half the memory
    return _Target(teacher.space, _camera_at(camera, w, h), values, valid, norm)


def _camera_at(camera: Any, width: int, height: int) -> Any:
    """`camera` at the teacher map's resolution (aspect preserved up to rounding)."""
    if (camera.width, camera.height) == (width, height):
        return camera
    scaled = camera.scaled(width / camera.width)
    if (scaled.width, scaled.height) != (width, height):
        raise ValueError(
            f"teacher map {width}x{height} is not a uniform rescale of the "
            f"{camera.width}x{camera.height} view"
        )
    return scaled


def fill_unseen(means: Tensor, features: Tensor, reached: Tensor) -> Tensor:
    """Copy to every unreached Gaussian the features of its nearest reached one."""
    if bool(reached.all()) or not bool(reached.any()):
        return features
    from scipy.spatial import cKDTree

    seen = reached.cpu().numpy()
    pts = means.detach().cpu().numpy()
    tree = cKDTree(pts[seen])
    _, nearest = tree.query(pts[~seen], k=1)
    src = torch.from_numpy(seen.nonzero()[0][nearest]).to(features.device)
    out = features.clone()
    out[torch.from_numpy(~seen).to(features.device)] = features[src]
    return out
