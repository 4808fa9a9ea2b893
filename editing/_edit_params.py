"""The optimised rows of a text edit: leaf tensors for the selected Gaussians' chosen parameters,
scattered into the frozen scene for rendering and back into clones of it for the result."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from fields import GaussianScene
from fields.scene import SH_C0

# Parameter group -> GaussianScene field it optimises.
FIELDS = {"color": "sh", "opacity": "opacities", "scale": "scales", "position": "means"}
# Opacity logit given to hidden Gaussians (`editing.isolate`) so that edit views skip them.
_HIDDEN_LOGIT = -30.0


class EditParams:
    """Leaf tensors `rows[group]` ([M,...] for the M selected Gaussians) over a frozen scene."""

    def __init__(
        self,
        scene: GaussianScene,
        index: Tensor,  # [M] int64 selected rows
        groups: tuple[str, ...],
    ) -> None:
        unknown = [g for g in groups if g not in FIELDS]
        if unknown:
            raise ValueError(f"unknown edit parameters {unknown}; choose from {list(FIELDS)}")
        # The input's own tensors (not detached copies): unedited fields of the result are the
        # very same objects, which lets the viewer reuse their packed splats.
        self.scene = scene
        self.index = index.to(scene.device)
        self.rows: dict[str, Tensor] = {}
        self.start: dict[str, Tensor] = {}  # [M,...] the rows before the edit
        for g in groups:
            orig = getattr(self.scene, FIELDS[g]).detach()[self.index]
            self.start[g] = orig
            self.rows[g] = orig.clone().requires_grad_(True)
        if "color" in groups:
            # Keep the base colour in [0, 1] (or wherever it already was, so that an edit that
            # does not move a colour never clips it).
            dc = self.start["color"][:, 0]  # [M,3]
            self._dc_lo = torch.minimum(dc, torch.full_like(dc, -0.5 / SH_C0))
            self._dc_hi = torch.maximum(dc, torch.full_like(dc, 0.5 / SH_C0))
        hidden = scene.extras.get("hidden")
        self._shown_opacities = self.scene.opacities
        if hidden is not None and bool(hidden.any()):
            self._shown_opacities = torch.where(
                hidden.to(scene.device).bool(),
                torch.full_like(self.scene.opacities, _HIDDEN_LOGIT),
                self.scene.opacities,
            )

    def _fields(self, *, for_render: bool) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for g, name in FIELDS.items():
            base = getattr(self.scene, name)
            if g == "opacity" and for_render:
                base = self._shown_opacities
            if g not in self.rows:
                out[name] = base
            elif for_render:
                out[name] = base.index_put((self.index,), self.rows[g])
            else:
                with torch.no_grad():
                    t = base.detach().clone()
                    t[self.index] = self.rows[g].detach()
                out[name] = t
        return out

    def render_scene(self) -> GaussianScene:
        """The scene with the current rows, differentiable w.r.t. them; hidden Gaussians get zero
        opacity. Only for rendering: extras are dropped."""
        return GaussianScene(quats=self.scene.quats, **self._fields(for_render=True))

    def result(self) -> GaussianScene:
        """The edited scene: clones of the edited fields with the rows scattered in; every other
        tensor (and every unselected row) is the input's own; extras and meta carried."""
        return self.scene.replace(**self._fields(for_render=False))

    def parameter_groups(self, lrs: Mapping[str, float]) -> list[dict]:
        return [{"params": [self.rows[g]], "lr": float(lrs[g]), "name": g} for g in self.rows]

    def preservation(self, radius: float) -> Tensor:
        """Mean squared change of the rows (positions in units of the selection's radius)."""
        total = None
        for g, rows in self.rows.items():
            d = rows - self.start[g]
            if g == "position":
                d = d / radius
            term = (d * d).mean()
            total = term if total is None else total + term
        assert total is not None
        return total

    @torch.no_grad()
    def project(self) -> None:
        """Back into the valid set after an optimiser step."""
        if "color" in self.rows:
            dc = self.rows["color"][:, 0]
            dc.copy_(torch.maximum(torch.minimum(dc, self._dc_hi), self._dc_lo))
