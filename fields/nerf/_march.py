"""Sampling rays through an occupancy grid and compositing the samples (pure functions).

Samples are packed, ray-major: `Samples(ray_ids [S], t [S], delta [S])`, t increasing within a
ray. `march_rays` places them at steps of `dt` (cone stepping dt = clamp(t * cone, dt, dt_max) for
unbounded scenes) and keeps those whose cell of the occupancy grid is set; the compiled CPU kernel
does it when built, plain torch (`march_rays_reference`, also the CUDA path) otherwise.
`composite` turns per-sample densities and values into per-ray sums with the usual quadrature
w_i = T_i (1 - exp(-sigma_i delta_i)), T_i = exp(-sum_{j<i} sigma_j delta_j).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from ._field import SceneBox


class Samples(NamedTuple):
    ray_ids: Tensor  # [S] int64
    t: Tensor  # [S] distance along the (unit) ray direction, world units
    delta: Tensor  # [S] segment length


@dataclass(frozen=True)
class MarchSettings:
    """Step sizes along rays; `cone` > 0 grows steps with distance (unbounded scenes)."""

    dt: float
    cone: float = 0.0
    dt_max: float = 1e10
    max_samples_per_ray: int = 1024

    @classmethod
    def for_box(cls, box: SceneBox, steps_across: int = 512) -> MarchSettings:
        """`steps_across` samples along the box's diagonal (box mode) or the contracted cube's
        inner box with cone stepping 1/256 beyond (contract mode)."""
        dt = math.sqrt(3.0) * 2.0 * box.radius / steps_across
        if box.mode == "contract":
            return cls(dt=dt, cone=1.0 / 256, dt_max=box.radius, max_samples_per_ray=1024)
        return cls(dt=dt)


def ray_bounds(
    box: SceneBox,
    origins: Tensor,  # [R,3] world
    dirs: Tensor,  # [R,3] unit
    near: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """(t0 [R], t1 [R]): the box's slab interval (box mode; t1 <= t0 when the ray misses) or
    [near, radius * 1e3] (contract mode)."""
    if box.mode == "contract":
        R = origins.shape[0]
        t0 = torch.full((R,), max(near, 1e-3 * box.radius), dtype=origins.dtype)
        return t0, torch.full((R,), 1e3 * box.radius, dtype=origins.dtype)
    o = box.normalize(origins)
    inv = 1.0 / torch.where(dirs.abs() < 1e-12, torch.full_like(dirs, 1e-12), dirs)
    a = (-1 - o) * inv * box.radius
    b = (1 - o) * inv * box.radius
    t0 = torch.minimum(a, b).amax(-1).clamp_min(near)
    t1 = torch.maximum(a, b).amin(-1)
    return t0, t1


def _kernel() -> Any:
    try:
        from .. import _nerf_cpu
    except ImportError:
        return None
    return _nerf_cpu


def march_rays(
    box: SceneBox,
    occupancy: Tensor,  # [G,G,G] bool, indexed [z,y,x] over the unit cube
    origins: Tensor,  # [R,3]
    dirs: Tensor,  # [R,3] unit
    settings: MarchSettings,
    near: float = 0.0,
) -> Samples:
    """Samples of each ray inside occupied cells (see the module docstring)."""
    t0, t1 = ray_bounds(box, origins, dirs, near)
    k = _kernel()
    if k is None or origins.device.type != "cpu":
        return march_rays_reference(box, occupancy, origins, dirs, settings, t0, t1)
    ids, t, dt = k.march(
        origins.detach().float().contiguous().numpy(),
        dirs.detach().float().contiguous().numpy(),
        t0.float().contiguous().numpy(),
        t1.float().contiguous().numpy(),
        occupancy.to(torch.uint8).contiguous().numpy().reshape(-1),
        occupancy.shape[0],
        np.asarray(box.center, np.float32),
        float(box.radius),
        int(box.mode == "contract"),
        float(settings.dt),
        float(settings.cone),
        float(settings.dt_max),
        int(settings.max_samples_per_ray),
    )
    return Samples(torch.from_numpy(ids).long(), torch.from_numpy(t), torch.from_numpy(dt))


def march_rays_reference(
    box: SceneBox,
    occupancy: Tensor,
    origins: Tensor,
    dirs: Tensor,
    settings: MarchSettings,
    t0: Tensor,
    t1: Tensor,
) -> Samples:
    """Plain torch marching (same placement as the kernel), in chunks of rays."""
    G = occupancy.shape[0]
    occ = occupancy.reshape(-1)
    out_ids, out_t, out_dt = [], [], []
    if settings.cone > 0:  # cone steps: build the per-ray sequence iteratively
        t = t0.clone()
        alive = t < t1
        count = torch.zeros_like(t0, dtype=torch.long)
        rows = torch.arange(len(t0), device=t0.device)
        while bool(alive.any()):
            step = (t * settings.cone).clamp(settings.dt, settings.dt_max)
            tm = t + 0.5 * step
            ok = alive & (tm < t1)
            keep = ok & _occupied(box, occ, G, origins, dirs, tm)
            out_ids.append(rows[keep])
            out_t.append(tm[keep])
            out_dt.append(step[keep])
            count += keep.long()
            t = t + step
            alive = ok & (count < settings.max_samples_per_ray)
        ids = torch.cat(out_ids)
        order = torch.argsort(ids, stable=True)  # steps were appended in increasing t
        ids, ts, dts = ids[order], torch.cat(out_t)[order], torch.cat(out_dt)[order]
        return Samples(ids.long(), ts.float(), dts.float())
    n_max = int(((t1 - t0).clamp_min(0).max() / settings.dt).ceil()) + 1 if len(t0) else 0
    n_max = min(n_max, settings.max_samples_per_ray * 4)
    k = torch.arange(n_max, device=t0.device, dtype=t0.dtype)
    chunk = max(1, 2_000_000 // max(n_max, 1))
    for a in range(0, len(t0), chunk):
        b = slice(a, a + chunk)
        tm = t0[b, None] + (k[None] + 0.5) * settings.dt  # [r,K]
        ok = tm < t1[b, None]
        o = origins[b, None, :].expand(-1, n_max, -1)
        d = dirs[b, None, :].expand(-1, n_max, -1)
        keep = ok & _occupied(box, occ, G, o, d, tm)
        # at most max_samples_per_ray per ray
        keep &= keep.cumsum(1) <= settings.max_samples_per_ray
        r, j = keep.nonzero(as_tuple=True)
        out_ids.append(r + a)
        out_t.append(tm[r, j])
        out_dt.append(torch.full_like(tm[r, j], settings.dt))
    if not out_ids:
        e = torch.zeros(0)
        return Samples(e.long(), e, e)
    return Samples(torch.cat(out_ids).long(), torch.cat(out_t).float(), torch.cat(out_dt).float())


def _occupied(box: SceneBox, occ: Tensor, G: int, o: Tensor, d: Tensor, t: Tensor) -> Tensor:
    u, inside = box.to_unit(o + t[..., None] * d)
    c = (u * G).floor().long()
    inside = inside & (c >= 0).all(-1) & (c < G).all(-1)
    c = c.clamp(0, G - 1)
    flat = (c[..., 2] * G + c[..., 1]) * G + c[..., 0]
    return inside & occ[flat]


class Composite(NamedTuple):
    weights: Tensor  # [S]
    transmittance: Tensor  # [S] before each sample
    opacity: Tensor  # [R] sum of weights


def composite_weights(
    sigma: Tensor,  # [S]
    samples: Samples,
    n_rays: int,
) -> Composite:
    """Quadrature weights of packed samples (differentiable in `sigma`)."""
    tau = sigma * samples.delta
    if tau.numel() == 0:
        z = tau.new_zeros(0)
        return Composite(z, z, tau.new_zeros(n_rays))
    c = torch.cumsum(tau.double(), 0)
    excl = c - tau.double()
    ids = samples.ray_ids
    first = torch.ones_like(ids, dtype=torch.bool)
    first[1:] = ids[1:] != ids[:-1]
    start = excl.new_zeros(n_rays).index_put((ids[first],), excl[first])
    before = (excl - start[ids]).float()
    T = torch.exp(-before)
    w = T * (1 - torch.exp(-tau))
    opacity = torch.zeros(n_rays, dtype=w.dtype, device=w.device).index_add(0, ids, w)
    return Composite(w, T, opacity)


def accumulate(values: Tensor, weights: Tensor, ray_ids: Tensor, n_rays: int) -> Tensor:
    """[R,C] per-ray sums of weights [S] x values [S,C]."""
    out = values.new_zeros(n_rays, values.shape[-1])
    return out.index_add(0, ray_ids, weights[:, None] * values)
