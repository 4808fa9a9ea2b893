"""`NerfField`: an Instant-NGP style radiance field (hash grid -> density MLP -> colour MLP).

Space: the field lives in the unit cube u in [0,1]^3. `SceneBox` maps world points there: in
"box" mode (object-centric captures) x_n = (x - center) / radius must lie in [-1,1]^3 and
everything outside is empty; in "contract" mode (unbounded captures) x_n is contracted as in
mip-NeRF 360 (|x_n|_inf > 1 -> (2 - 1/|x_n|_inf) x_n/|x_n|_inf, into [-2,2]^3) and halved.

Heads: density sigma = exp(clamp(raw - 1, max=15)) (truncated exp, Instant-NGP), colour from a
small MLP over the geometry features and the view direction's SH (degree 3) basis, and an optional
feature branch (`feature_dim` > 0): a second, smaller hash grid decoded linearly into the
low-dimensional feature space of `fields.features` (GP-NeRF / LERF style).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import torch
from torch import Tensor, nn

from .._sh import sh_basis
from ._encoding import GridLayout, grid_layout, hash_encode

BoundMode = Literal["box", "contract"]


@dataclass(frozen=True)
class NerfModelConfig:
    """Architecture of a NeRF (saved in the file's header)."""

    levels: int = 12
    features_per_level: int = 2
    log2_table: int = 17
    base_res: int = 16
    max_res: int = 256
    hidden: int = 64
    geo_features: int = 15
    color_hidden: int = 64
    occupancy_res: int = 128
    feature_dim: int = 0  # feature-branch channels (0: none)
    feature_levels: int = 8
    feature_log2_table: int = 15
    feature_max_res: int = 128

    def __post_init__(self) -> None:
        for name in ("levels", "features_per_level", "base_res", "hidden", "geo_features"):
            if getattr(self, name) < 1:
                raise ValueError(f"NeRF model: {name} must be >= 1, got {getattr(self, name)}")
        if not 10 <= self.log2_table <= 24:
            raise ValueError(f"NeRF model: log2_table must be in [10, 24], got {self.log2_table}")
        if self.max_res < self.base_res:
            raise ValueError("NeRF model: max_res must be >= base_res")
        if not 8 <= self.occupancy_res <= 512:
            raise ValueError(
                f"NeRF model: occupancy_res must be in [8, 512], got {self.occupancy_res}"
            )
        if self.feature_dim < 0:
            raise ValueError("NeRF model: feature_dim must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NerfModelConfig:
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown NeRF model settings: {sorted(unknown)}")
        return cls(**d)


@dataclass(frozen=True)
class SceneBox:
    """World -> unit cube: centre [3], radius (world units) and bound mode."""

    center: tuple[float, float, float]
    radius: float
    mode: BoundMode = "box"

    def __post_init__(self) -> None:
        if not self.radius > 0:
            raise ValueError(f"scene box radius must be > 0, got {self.radius}")
        if self.mode not in ("box", "contract"):
            raise ValueError(f"scene bound mode must be 'box' or 'contract', got {self.mode!r}")

    def normalize(self, x: Tensor) -> Tensor:
        """[...,3] world -> [...,3] x_n (the box is [-1,1]^3)."""
        c = torch.tensor(self.center, dtype=x.dtype, device=x.device)
        return (x - c) / self.radius

    def to_unit(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """([...,3] u in [0,1]^3, [...] bool inside): where the field reads world points."""
        p = self.normalize(x)
        if self.mode == "contract":
            m = p.abs().amax(-1, keepdim=True).clamp_min(1e-9)
            p = torch.where(m > 1, (2 - 1 / m) * p / m, p) * 0.5
        inside = (p.abs() <= 1).all(-1)
        return (p.clamp(-1, 1) + 1) * 0.5, inside


class NerfField(nn.Module):
    """Densities, colours (and features) at world points. Pure module: no sampling here."""

    def __init__(self, config: NerfModelConfig, box: SceneBox) -> None:
        super().__init__()
        self.config = config
        self.box = box
        c = config
        self.layout: GridLayout = grid_layout(c.levels, c.log2_table, c.base_res, c.max_res)
        self.table = nn.Parameter(
            (torch.rand(self.layout.rows, c.features_per_level) * 2 - 1) * 1e-4
        )
        self.density_mlp = nn.Sequential(
            nn.Linear(c.levels * c.features_per_level, c.hidden),
            nn.ReLU(),
            nn.Linear(c.hidden, 1 + c.geo_features),
        )
        self.color_mlp = nn.Sequential(
            nn.Linear(c.geo_features + 16, c.color_hidden),
            nn.ReLU(),
            nn.Linear(c.color_hidden, c.color_hidden),
            nn.ReLU(),
            nn.Linear(c.color_hidden, 3),
        )
        self.feature_layout: GridLayout | None = None
        self.feature_table: nn.Parameter | None = None
        if c.feature_dim > 0:
            self.add_feature_branch(c.feature_dim)

    def add_feature_branch(self, dim: int) -> None:
        """A feature grid [rows, 2] per level decoded linearly into `dim` channels (zero init)."""
        c = self.config
        self.feature_layout = grid_layout(
            c.feature_levels, c.feature_log2_table, c.base_res, c.feature_max_res
        )
        self.feature_table = nn.Parameter((torch.rand(self.feature_layout.rows, 2) * 2 - 1) * 1e-4)
        self.feature_head = nn.Linear(c.feature_levels * 2, dim)
        if c.feature_dim != dim:
            self.config = replace(c, feature_dim=dim)

    @property
    def feature_dim(self) -> int:
        return self.config.feature_dim

    # ------------------------------------------------------------------ queries
    def density(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """World points [S,3] -> (sigma [S] >= 0, geometry features [S,G]); 0 outside the box."""
        u, inside = self.box.to_unit(x)
        h = self.density_mlp(hash_encode(u.contiguous(), self.table, self.layout))
        sigma = torch.exp((h[:, 0] - 1).clamp(max=15.0)) * inside
        return sigma, h[:, 1:]

    def color(self, geo: Tensor, dirs: Tensor) -> Tensor:
        """[S,G] geometry features, [S,3] unit view directions (towards the point) -> rgb [S,3]."""
        return torch.sigmoid(self.color_mlp(torch.cat([geo, sh_basis(3, dirs)], -1)))

    def features(self, x: Tensor) -> Tensor:
        """World points [S,3] -> feature-branch values [S,C] (requires a feature branch)."""
        if self.feature_table is None or self.feature_layout is None:
            raise ValueError("this NeRF has no feature branch; run `scenelab distill` on it first")
        u, _ = self.box.to_unit(x)
        return self.feature_head(
            hash_encode(u.contiguous(), self.feature_table, self.feature_layout)
        )

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Grids (no weight decay) and MLPs (small weight decay), as Instant-NGP trains them."""
        grids = [self.table]
        mlps = list(self.density_mlp.parameters()) + list(self.color_mlp.parameters())
        return {"grids": grids, "mlps": mlps}
