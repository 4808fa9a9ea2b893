"""Densification strategies on `GaussianParams` (pure torch; CPU or CUDA tensors).

- `DefaultStrategy`: the 3DGS paper's adaptive density control, as gsplat's `DefaultStrategy`
  does it: average view-space (NDC) positional gradient per Gaussian over the views it was seen
  in; above `grow_grad2d` small Gaussians are cloned and large ones split in two (samples drawn
  from the Gaussian, children 1.6x smaller); low-opacity and (after the first opacity reset)
  huge ones are pruned; opacities are reset to 2 x prune_opa periodically.
- `MCMCStrategy`: 3DGS as Markov chain Monte Carlo (Kheradmand et al. 2024, gsplat's
  `MCMCStrategy`): dead Gaussians (opacity <= min_opacity) are moved onto live ones sampled by
  opacity, with opacity and scale corrected so the rendering is preserved; the count grows 5%
  per refinement up to the cap; means get noise scaled by the covariance, gated by low opacity.

Progress through the run (`Progress`) decides when they act, so the windows fit runs of any
length or time budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from ..scene import quat_to_rotmat
from ._config import DefaultStrategyConfig, MCMCStrategyConfig
from ._params import NAMES, GaussianParams


@dataclass(frozen=True)
class Progress:
    step: int  # optimisation steps done, including this one
    fraction: float  # of the run, in [0, 1] (steps or time budget, whichever is further)
    reference_steps: int  # the run length the strategy's step constants are written for

    def at(self, steps: int) -> float:
        """A step constant written for `reference_steps` as a fraction of the run."""
        return steps / self.reference_steps

    @property
    def total_steps(self) -> float:
        """The run's expected length in steps (exact for step-count runs; for time budgets
        the pace so far extrapolated)."""
        return self.step / self.fraction if self.fraction > 0 else float(self.reference_steps)

    def period(self, steps: int, floor: int) -> int:
        """A period written for `reference_steps`, rescaled to this run, at least `floor`."""
        return max(floor, round(steps * self.total_steps / self.reference_steps))


class Strategy(Protocol):
    def due(self, progress: Progress) -> bool: ...
    def reduce(self, sum_: Callable[[Tensor], Tensor]) -> None: ...
    def refined_elsewhere(self, progress: Progress) -> None: ...
    def accumulate(
        self,
        params: GaussianParams,
        grad2d: Tensor,
        radii: Tensor,
        size: tuple[int, int],
        batch: int,
    ) -> None: ...
    def refine(
        self, params: GaussianParams, progress: Progress, generator: torch.Generator
    ) -> dict[str, int]: ...
    def after_step(
        self, params: GaussianParams, lr_means: float, generator: torch.Generator
    ) -> None: ...
    def regularizer(self, params: GaussianParams) -> Tensor | None: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, d: dict) -> None: ...


# ---------------------------------------------------------------------- adaptive density control
class DefaultStrategy:
    def __init__(self, cfg: DefaultStrategyConfig, scene_extent: float, max_gaussians: int) -> None:
        self.cfg = cfg
        self.extent = float(scene_extent)
        self.max_gaussians = int(max_gaussians)
        self.grad2d: Tensor | None = None  # [N] summed |NDC gradient| over views seen
        self.count: Tensor | None = None  # [N] views seen
        self.resets = 0  # opacity resets done

    def accumulate(
        self,
        params: GaussianParams,
        grad2d: Tensor,  # [N,2] d loss / d means2d (pixels) of one view
        radii: Tensor,  # [N,2] int, 0 = not visible
        size: tuple[int, int],  # (width, height)
        batch: int,  # views in the step: the loss averaged over them, so gradients are x batch
    ) -> None:
        n = len(params)
        if self.grad2d is None or len(self.grad2d) != n:
            self.grad2d = torch.zeros(n, device=grad2d.device)
            self.count = torch.zeros(n, device=grad2d.device)
        g = grad2d.detach().clone()
        g[:, 0] *= size[0] / 2.0 * batch
        g[:, 1] *= size[1] / 2.0 * batch
        seen = (radii > 0).all(-1)
        self.grad2d[seen] += g[seen].norm(dim=-1)
        self.count[seen] += 1

    def _grow_due(self, progress: Progress) -> bool:
        c = self.cfg
        return (
            progress.at(c.refine_start) < progress.fraction < progress.at(c.refine_stop)
            and progress.step % c.refine_every == 0
        )

    def _reset_due(self, progress: Progress) -> int:
        """The number of opacity resets the run should have had by now, when more than done.
        The period is the paper's 3000 of 30k steps rescaled to the run, but at least 10
        refinements, so the transparent Gaussians a reset leaves can recover or be pruned."""
        c = self.cfg
        period = progress.period(c.reset_every, 10 * c.refine_every)
        # No reset in the last half period of densification: the Gaussians it makes
        # transparent would be neither pruned nor regrown (3DGS: the last reset is at 12k of 15k).
        if progress.step + period // 2 >= progress.at(c.refine_stop) * progress.total_steps:
            return 0
        n = progress.step // period
        return n if n > self.resets else 0

    def due(self, progress: Progress) -> bool:
        return self._grow_due(progress) or self._reset_due(progress) > 0

    def reduce(self, sum_: Callable[[Tensor], Tensor]) -> None:
        if self.grad2d is not None and self.count is not None:
            sum_(self.grad2d)
            sum_(self.count)

    def refined_elsewhere(self, progress: Progress) -> None:
        if self._grow_due(progress):
            self.grad2d = self.count = None
        self.resets = max(self.resets, self._reset_due(progress))

    def refine(
        self, params: GaussianParams, progress: Progress, generator: torch.Generator
    ) -> dict[str, int]:
        c = self.cfg
        report: dict[str, int] = {}
        n_resets = self._reset_due(progress)
        if self._grow_due(progress) and self.grad2d is not None:
            report.update(self._grow(params, generator))
            report["pruned"] = self._prune(params, progress)
            self.grad2d = self.count = None
        if n_resets:
            self.resets = n_resets
            cap = math.log(2 * c.prune_opa / (1 - 2 * c.prune_opa))
            params.update(
                lambda n, p: p.clamp_max(cap),
                lambda n, v: torch.zeros_like(v),
                names=("opacities",),
            )
            report["opacity_reset"] = 1
        return report

    def _grow(self, params: GaussianParams, generator: torch.Generator) -> dict[str, int]:
        assert self.grad2d is not None and self.count is not None
        avg = self.grad2d / self.count.clamp_min(1)
        high = avg > self.cfg.grow_grad2d
        small = torch.exp(params["scales"]).amax(-1) <= self.cfg.grow_scale3d * self.extent
        dupli = high & small
        split = high & ~small
        # Cap: each clone adds one Gaussian, each split one net (two children replace one).
        room = self.max_gaussians - len(params)
        want = int(dupli.sum() + split.sum())
        if want > room:
            cand = torch.where(high)[0]
            keep = cand[torch.argsort(avg[cand], descending=True, stable=True)[: max(room, 0)]]
            chosen = torch.zeros_like(high)
            chosen[keep] = True
            dupli &= chosen
            split &= chosen
        n_dupli, n_split = int(dupli.sum()), int(split.sum())
        if n_dupli:
            params.append({k: params[k].detach()[dupli] for k in NAMES})
            split = torch.cat([split, torch.zeros(n_dupli, dtype=torch.bool, device=split.device)])
        if n_split:
            self._split(params, split, generator)
        return {"cloned": n_dupli, "split": n_split}

    def _split(self, params: GaussianParams, sel: Tensor, generator: torch.Generator) -> None:
        t = {k: params[k].detach() for k in NAMES}
        scales = torch.exp(t["scales"][sel])  # [M,3]
        R = quat_to_rotmat(t["quats"][sel])  # [M,3,3]
        noise = torch.randn(2, len(scales), 3, generator=generator, device=scales.device)
        offsets = torch.einsum("nij,nj,bnj->bni", R, scales, noise)  # [2,M,3]
        children = {
            "means": (t["means"][sel][None] + offsets).reshape(-1, 3),
            "scales": torch.log(scales / self.cfg.split_factor).repeat(2, 1),
        }
        for k in ("quats", "opacities", "sh0", "shN"):
            v = t[k][sel]
            children[k] = v.repeat(2, *([1] * (v.dim() - 1)))
        params.keep(~sel)
        params.append(children)

    def _prune(self, params: GaussianParams, progress: Progress) -> int:
        c = self.cfg
        prune = torch.sigmoid(params["opacities"].detach()) < c.prune_opa
        if self.resets > 0:  # huge Gaussians are only pruned after the first opacity reset
            prune |= torch.exp(params["scales"].detach()).amax(-1) > c.prune_scale3d * self.extent
        if bool(prune.all()):  # never prune to nothing: keep the most opaque one
            prune[torch.argmax(params["opacities"].detach())] = False
        n = int(prune.sum())
        if n:
            params.keep(~prune)
        return n

    def after_step(self, params: GaussianParams, lr_means: float, generator: torch.Generator):
        return None

    def regularizer(self, params: GaussianParams) -> Tensor | None:
        return None

    def state_dict(self) -> dict:
        return {"grad2d": self.grad2d, "count": self.count, "resets": self.resets}

    def load_state_dict(self, d: dict) -> None:
        self.grad2d, self.count, self.resets = d["grad2d"], d["count"], int(d["resets"])


# ---------------------------------------------------------------------- MCMC
_N_MAX = 51  # largest number of copies one Gaussian is split into in one relocation


def _binomials(n: int) -> Tensor:
    b = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        for k in range(i + 1):
            b[i, k] = math.comb(i, k)
    return b


_BINOMS = _binomials(_N_MAX)


def relocation(opacities: Tensor, scales: Tensor, ratios: Tensor) -> tuple[Tensor, Tensor]:
    """MCMC relocation (Kheradmand et al. 2024, eq. 9; gsplat's `compute_relocation`): a
    Gaussian of opacity o [M] and scales s [M,3] (activated) shared by n = ratios [M] copies;
    each copy gets o' = 1 - (1 - o)^(1/n) and s' = o / (sum_{i=1..n} sum_{k<i} C(i-1,k)
    (-1)^k o'^(k+1) / sqrt(k+1)) x s, so the sum of the copies renders like the original."""
    n = ratios.clamp(1, _N_MAX).to(torch.int64)
    o = opacities.double()
    new_o = 1.0 - (1.0 - o) ** (1.0 / n.double())
    k = torch.arange(_N_MAX, dtype=torch.float64, device=o.device)
    terms = (-1.0) ** k / torch.sqrt(k + 1.0) * new_o[:, None] ** (k + 1.0)  # [M,K]
    binoms = _BINOMS.to(o.device)
    # denominator = sum over i = 1..n of sum over k < i of C(i-1, k) * terms_k
    per_i = terms @ binoms.T  # [M, i-1 = 0..N_MAX-1]: sum_k C(i-1, k) terms_k
    mask = torch.arange(_N_MAX, device=o.device)[None, :] < n[:, None]
    denom = (per_i * mask).sum(1)
    new_s = (o / denom)[:, None] * scales.double()
    return new_o.to(opacities.dtype), new_s.to(scales.dtype)


class MCMCStrategy:
    def __init__(self, cfg: MCMCStrategyConfig, max_gaussians: int) -> None:
        self.cfg = cfg
        self.max_gaussians = int(max_gaussians)

    def accumulate(self, params, grad2d, radii, size, batch) -> None:
        return None

    def due(self, progress: Progress) -> bool:
        c = self.cfg
        return (
            progress.at(c.refine_start) < progress.fraction < progress.at(c.refine_stop)
            and progress.step % c.refine_every == 0
        )

    def reduce(self, sum_: Callable[[Tensor], Tensor]) -> None:
        return None

    def refined_elsewhere(self, progress: Progress) -> None:
        return None

    def refine(
        self, params: GaussianParams, progress: Progress, generator: torch.Generator
    ) -> dict[str, int]:
        if not self.due(progress):
            return {}
        moved = self._relocate(params, generator)
        added = self._add(params, generator)
        return {"relocated": moved, "added": added}

    def _opacity(self, params: GaussianParams) -> Tensor:
        return torch.sigmoid(params["opacities"].detach())

    def _sample(self, probs: Tensor, n: int, generator: torch.Generator) -> Tensor:
        return torch.multinomial(probs, n, replacement=True, generator=generator)

    def _move(self, params: GaussianParams, src: Tensor) -> dict[str, Tensor]:
        """Relocation-corrected rows for the sampled sources `src` [M] (with repeats)."""
        counts = torch.bincount(src, minlength=len(params))[src] + 1
        o = self._opacity(params)[src]
        s = torch.exp(params["scales"].detach()[src])
        new_o, new_s = relocation(o, s, counts)
        new_o = new_o.clamp(self.cfg.min_opacity, 1.0 - torch.finfo(new_o.dtype).eps)
        rows = {k: params[k].detach()[src] for k in NAMES}
        rows["opacities"] = torch.logit(new_o)
        rows["scales"] = torch.log(new_s)
        return rows

    def _relocate(self, params: GaussianParams, generator: torch.Generator) -> int:
        o = self._opacity(params)
        dead = torch.where(o <= self.cfg.min_opacity)[0]
        alive = torch.where(o > self.cfg.min_opacity)[0]
        if len(dead) == 0 or len(alive) == 0:
            return 0
        src = alive[self._sample(o[alive], len(dead), generator)]
        rows = self._move(params, src)
        # Sources shrink to their corrected share; the dead take copies of them.
        params.overwrite(src, rows)
        params.overwrite(dead, rows)
        return len(dead)

    def _add(self, params: GaussianParams, generator: torch.Generator) -> int:
        n = len(params)
        target = min(self.max_gaussians, int(self.cfg.grow_rate * n))
        m = max(0, target - n)
        if m == 0:
            return 0
        src = self._sample(self._opacity(params), m, generator)
        rows = self._move(params, src)
        params.overwrite(src, rows)
        params.append(rows)
        return m

    def after_step(self, params: GaussianParams, lr_means: float, generator: torch.Generator):
        """Noise on the means: N(0, Sigma) x sigmoid(100 (0.995 - o))... gated to transparent
        Gaussians, scaled by the means' learning rate x noise_lr."""
        with torch.no_grad():
            o = self._opacity(params)
            s = torch.exp(params["scales"].detach())
            R = quat_to_rotmat(params["quats"].detach())
            cov = R @ torch.diag_embed(s * s) @ R.transpose(-1, -2)  # [N,3,3]
            gate = 1.0 / (1.0 + torch.exp(-100.0 * ((1.0 - o) - 0.995)))
            z = torch.randn(len(o), 3, generator=generator, device=o.device)
            noise = torch.einsum("nij,nj->ni", cov, z * gate[:, None]) * (
                lr_means * self.cfg.noise_lr
            )
            params["means"].add_(noise)

    def regularizer(self, params: GaussianParams) -> Tensor | None:
        c = self.cfg
        return (
            c.opacity_reg * torch.sigmoid(params["opacities"]).mean()
            + c.scale_reg * torch.exp(params["scales"]).mean()
        )

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, d: dict) -> None:
        return None
