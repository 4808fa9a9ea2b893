"""Growing the edited object during a text edit: its Gaussians as trainable parameters that are
cloned, split and pruned inside a margin box, with GaussianEditor's anchor loss.

The surgery (appending/keeping rows with their Adam moments) is `fields.training.GaussianParams`;
the policy is our own small version of 3DGS's adaptive density control, because an edit needs
what the trainer's `DefaultStrategy` does not track: each Gaussian's parent row in the input (its
extras are copied from it), its anchor state, and a box its mean must stay in.

- Signal: the view-space positional gradient, |d loss / d means2d| in NDC units (pixel gradient x
  half the image size, as 3DGS/gsplat), averaged over the views a Gaussian was seen in. The
  compiled CPU rasterizer exposes d loss / d means2d (`RenderOutput.means2d_grad`).
- Threshold: relative, `grad_threshold` x the mean over the object's seen Gaussians. Score
  distillation gradients differ by orders of magnitude between models, guidance scales and the
  toy denoiser, so 3DGS's absolute 0.0002 would need retuning for each.
- Clone (an exact copy; the two then separate under their different Adam moments) when the
  Gaussian is no larger than the selection's median splat at the start; else split in two
  children drawn from it, 1.6x smaller (3DGS). Growth stops at a cap.
- Prune Gaussians whose opacity fell below `prune_opacity` (never all of them).
- Anchor loss (GaussianEditor, Chen et al. 2024): sum over parameters of the mean squared
  distance of each Gaussian's parameters to its anchor state (positions in units of the
  selection's radius); anchors are the parameters at birth, re-taken at every densification.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from fields import Camera, GaussianScene
from fields.scene import SH_C0, quat_to_rotmat

# Same convention as `_edit_params`: hidden Gaussians render with this opacity logit.
_HIDDEN_LOGIT = -30.0
_SPLIT_FACTOR = 1.6  # children of a split are this much smaller (3DGS)
_QUAT_LR = 0.001  # 3DGS's rotation learning rate
_SH_REST_LR_RATIO = 1 / 20  # 3DGS: higher SH bands learn 20x slower than the base colour


@dataclass(frozen=True)
class MarginBox:
    """Axis-aligned box [lo, hi] (world frame) that the edited object's means are kept in."""

    lo: Tensor  # [3]
    hi: Tensor  # [3]

    @classmethod
    def around(cls, means: Tensor, margin: float) -> MarginBox:  # means [M,3]
        """The bounding box of `means` grown by `margin` x its longest side on every side (the
        longest side, not each axis's own, so that a flat selection can still grow upward)."""
        pts = means.detach().float()
        lo, hi = pts.amin(0), pts.amax(0)
        size = float((hi - lo).max())
        pad = margin * max(size, 1e-6)
        return cls(lo - pad, hi + pad)

    @property
    def centre(self) -> Tensor:  # [3]
        return 0.5 * (self.lo + self.hi)

    @property
    def half_diagonal(self) -> float:
        return 0.5 * float((self.hi - self.lo).norm())

    def corners(self) -> Tensor:  # [8,3]
        pick = torch.tensor(
            [[i >> 2 & 1, i >> 1 & 1, i & 1] for i in range(8)], dtype=self.lo.dtype
        ).to(self.lo.device)
        return self.lo + pick * (self.hi - self.lo)

    def clamp(self, points: Tensor) -> Tensor:  # [K,3] -> [K,3]
        return torch.maximum(torch.minimum(points, self.hi.to(points)), self.lo.to(points))

    def contains(self, points: Tensor, atol: float = 0.0) -> Tensor:  # [K,3] -> [K] bool
        lo, hi = self.lo.to(points) - atol, self.hi.to(points) + atol
        return ((points >= lo) & (points <= hi)).all(-1)

    def screen_region(self, camera: Camera) -> Tensor:
        """[1,H,W] float: 1 inside the bounding rectangle of the box's projection in `camera`
        (the whole image when a corner is behind it), else 0."""
        h, w = camera.height, camera.width
        V = camera.viewmat.double()
        pc = self.corners().double().cpu() @ V[:3, :3].T + V[:3, 3]  # [8,3] camera frame
        out = torch.zeros(1, h, w)
        if bool((pc[:, 2] <= 1e-6).any()):
            return out.fill_(1.0)
        K = camera.K.double()
        u = K[0, 0] * pc[:, 0] / pc[:, 2] + K[0, 2]
        v = K[1, 1] * pc[:, 1] / pc[:, 2] + K[1, 2]
        x0, x1 = max(0, math.floor(float(u.min()))), min(w, math.ceil(float(u.max())))
        y0, y1 = max(0, math.floor(float(v.min()))), min(h, math.ceil(float(v.max())))
        if x0 < x1 and y0 < y1:
            out[:, y0:y1, x0:x1] = 1.0
        return out


class GrowingObject:
    """The selected Gaussians as trainable `fields.training.GaussianParams` rows that grow and
    shrink. `local[k]` is the position within the selection of row k's ancestor, `parents[k]`
    that ancestor's row in the input scene."""

    def __init__(
        self,
        scene: GaussianScene,
        index: Tensor,  # [M] int64 selected rows
        lrs: dict[str, float],  # GaussianParams names -> learning rate
        box: MarginBox,
        radius: float,  # the selection's bounding radius: unit of the position anchor term
    ) -> None:
        from fields.training import GaussianParams

        self.index = index.to(scene.device)
        sh = scene.sh.detach()[self.index]
        tensors = {
            "means": scene.means.detach()[self.index],
            "quats": scene.quats.detach()[self.index],
            "scales": scene.scales.detach()[self.index],
            "opacities": scene.opacities.detach()[self.index],
            "sh0": sh[:, :1],
            "shN": sh[:, 1:],
        }
        self.params = GaussianParams(tensors, lrs)
        self.local = torch.arange(len(self.index), device=scene.device)
        self.box = box
        self.radius = float(radius)
        # Clone below this size, split above (3DGS compares with a fraction of the scene extent;
        # an object's own typical splat is the scale-free analogue).
        self.clone_scale = float(tensors["scales"].exp().amax(-1).median())
        dc = tensors["sh0"][:, 0]  # [M,3]
        # Base colours stay in [0, 1] (or wherever they already were), as `EditParams` keeps them.
        self._dc_lo = torch.minimum(dc, torch.full_like(dc, -0.5 / SH_C0))
        self._dc_hi = torch.maximum(dc, torch.full_like(dc, 0.5 / SH_C0))
        hidden = scene.extras.get("hidden")
        self._hidden = (
            None
            if hidden is None or not bool(hidden.any())
            else hidden.to(scene.device).bool()[self.index]
        )
        self.born = 0
        self.pruned = 0
        self.grad_sum: Tensor | None = None  # [K] summed NDC gradient norms
        self.grad_count: Tensor | None = None  # [K] views seen in
        self.anchors: dict[str, Tensor] = {}
        self.reanchor()

    def __len__(self) -> int:
        return len(self.params)

    @property
    def parents(self) -> Tensor:  # [K] int64 rows of the input scene
        return self.index[self.local]

    # ------------------------------------------------------------------ rendering
    def render_tensors(self) -> dict[str, Tensor]:
        """Differentiable means [K,3], quats, scales, opacities (hidden ones transparent), sh."""
        p = self.params
        opacities = p["opacities"]
        if self._hidden is not None:
            hidden = self._hidden[self.local]
            opacities = torch.where(hidden, torch.full_like(opacities, _HIDDEN_LOGIT), opacities)
        return {
            "means": p["means"],
            "quats": p["quats"],
            "scales": p["scales"],
            "opacities": opacities,
            "sh": torch.cat([p["sh0"], p["shN"]], dim=1),
        }

    def detached(self) -> dict[str, Tensor]:
        """The current rows as plain tensors (GaussianScene field names)."""
        p = self.params
        return {
            "means": p["means"].detach().clone(),
            "quats": p["quats"].detach().clone(),
            "scales": p["scales"].detach().clone(),
            "opacities": p["opacities"].detach().clone(),
            "sh": torch.cat([p["sh0"], p["shN"]], dim=1).detach().clone(),
        }

    # ------------------------------------------------------------------ loss and projection
    def reanchor(self) -> None:
        self.anchors = {k: v.detach().clone() for k, v in self.params.tensors.items()}

    def anchor_loss(self) -> Tensor:
        """Sum over parameters of the mean squared distance to the anchors (positions in units
        of the selection's radius)."""
        total = None
        for name, value in self.params.tensors.items():
            if value.numel() == 0:
                continue
            d = value - self.anchors[name]
            if name == "means":
                d = d / self.radius
            term = (d * d).sum(tuple(range(1, d.dim()))).mean()
            total = term if total is None else total + term
        assert total is not None
        return total

    @torch.no_grad()
    def project(self) -> None:
        """Means back into the box, base colours back into their range."""
        p = self.params
        p["means"].copy_(self.box.clamp(p["means"]))
        dc = p["sh0"][:, 0]
        dc.copy_(torch.maximum(torch.minimum(dc, self._dc_hi[self.local]), self._dc_lo[self.local]))

    # ------------------------------------------------------------------ densification
    def accumulate(
        self,
        grad2d: Tensor,  # [K,2] d loss / d means2d (pixels) of the object's rows in one view
        radii: Tensor,  # [K,2] 0 = not visible
        size: tuple[int, int],  # (width, height)
        batch: int,  # views in the step (the distiller's loss is averaged over them)
    ) -> None:
        k = len(self)
        if self.grad_sum is None or len(self.grad_sum) != k:
            self.grad_sum = torch.zeros(k, device=grad2d.device)
            self.grad_count = torch.zeros(k, device=grad2d.device)
        assert self.grad_count is not None
        g = grad2d.detach().clone()
        g[:, 0] *= size[0] / 2.0 * batch
        g[:, 1] *= size[1] / 2.0 * batch
        seen = (radii > 0).all(-1)
        self.grad_sum[seen] += g[seen].norm(dim=-1)
        self.grad_count[seen] += 1

    def densify(self, grad_threshold: float, cap: int, generator: torch.Generator) -> int:
        """Clone or split the Gaussians whose mean view-space gradient exceeds `grad_threshold` x
        the mean over the seen ones, the highest first, until the object has `cap` Gaussians.
        Returns how many were added (net); the gradient statistics restart."""
        sums, counts = self.grad_sum, self.grad_count
        self.grad_sum = self.grad_count = None
        if sums is None or counts is None or len(sums) != len(self):
            return 0
        seen = counts > 0
        if not bool(seen.any()):
            return 0
        avg = sums / counts.clamp_min(1)
        high = seen & (avg > grad_threshold * avg[seen].mean())
        room = cap - len(self)
        cand = high.nonzero().squeeze(1)
        if room <= 0 or len(cand) == 0:
            return 0
        cand = cand[torch.argsort(avg[cand], descending=True, stable=True)[:room]]
        chosen = torch.zeros_like(high)
        chosen[cand] = True
        small = self.params["scales"].detach().exp().amax(-1) <= self.clone_scale
        clone, split = chosen & small, chosen & ~small
        before = len(self)
        if bool(clone.any()):
            rows = {k: v.detach()[clone] for k, v in self.params.tensors.items()}
            self._append(rows, self.local[clone])
            split = torch.cat([split, split.new_zeros(int(clone.sum()))])
        if bool(split.any()):
            self._split(split, generator)
        added = len(self) - before
        self.born += added + int(split.sum())  # a split replaces one Gaussian by two new ones
        return added

    # Surgery on the rows, their Adam moments (GaussianParams), ancestry and anchors together;
    # a new Gaussian is anchored at its birth state.
    def _append(self, rows: dict[str, Tensor], local: Tensor) -> None:
        self.params.append(rows)
        self.local = torch.cat([self.local, local])
        for k, v in rows.items():
            self.anchors[k] = torch.cat([self.anchors[k], v.detach().to(self.anchors[k])])

    def _keep(self, keep: Tensor) -> None:
        self.params.keep(keep)
        self.local = self.local[keep]
        self.anchors = {k: v[keep] for k, v in self.anchors.items()}

    def _split(self, sel: Tensor, generator: torch.Generator) -> None:
        t = {k: v.detach() for k, v in self.params.tensors.items()}
        scales = t["scales"][sel].exp()  # [S,3]
        R = quat_to_rotmat(t["quats"][sel])  # [S,3,3]
        noise = torch.randn(2, len(scales), 3, generator=generator).to(scales)
        offsets = torch.einsum("sij,sj,bsj->bsi", R, scales, noise)  # [2,S,3]
        children = {
            "means": self.box.clamp((t["means"][sel][None] + offsets).reshape(-1, 3)),
            "scales": torch.log(scales / _SPLIT_FACTOR).repeat(2, 1),
        }
        for k in ("quats", "opacities", "sh0", "shN"):
            v = t[k][sel]
            children[k] = v.repeat(2, *([1] * (v.dim() - 1)))
        local = self.local[sel].repeat(2)
        self._keep(~sel)
        self._append(children, local)

    def prune(self, min_opacity: float) -> int:
        """Drop the Gaussians less opaque than `min_opacity` (keeping the most opaque one when all
        are); returns how many went."""
        if min_opacity <= 0 or len(self) == 0:
            return 0
        opac = self.params["opacities"].detach()
        drop = torch.sigmoid(opac) < min_opacity
        if bool(drop.all()):
            drop[torch.argmax(opac)] = False
        n = int(drop.sum())
        if n:
            self._keep(~drop)
            self.grad_sum = self.grad_count = None
            self.pruned += n
        return n


def object_learning_rates(
    lr_color: float, lr_opacity: float, lr_scale: float, lr_position: float, color: bool
) -> dict[str, float]:
    """`GaussianParams` learning rates of a growing object (`lr_position` already in world
    units); the colour rates are 0 when colours are not edited."""
    return {
        "means": lr_position,
        "quats": _QUAT_LR,
        "scales": lr_scale,
        "opacities": lr_opacity,
        "sh0": lr_color if color else 0.0,
        "shN": lr_color * _SH_REST_LR_RATIO if color else 0.0,
    }
