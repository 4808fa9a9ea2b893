"""`NerfScene`: a radiance field with its occupancy grid and the scene's facts (a "scene" next to
`GaussianScene`), and how it renders rays and cameras.

The occupancy grid is [G,G,G] bool over the field's unit cube ([z,y,x] indexing): a cell is
set when the density somewhere in it can make a step of the ray marcher visible (alpha =
1 - exp(-sigma dt) above `alpha_threshold`). Training refreshes it Instant-NGP style (decaying
running max of densities at jittered cell points); `refresh_occupancy(full=True)` rebuilds it from
several points per cell and dilates it by one cell, so no ray that carries weight is culled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..camera import Camera
from ..features import FeatureField
from ._field import NerfField, NerfModelConfig, SceneBox
from ._march import (
    MarchSettings,
    Samples,
    accumulate,
    composite_weights,
    march_rays,
)

ALPHA_THRESHOLD = 0.01


@dataclass(frozen=True, eq=False)
class RayOutput:
    rgb: Tensor  # [R,3] over the background
    opacity: Tensor  # [R]
    depth: Tensor  # [R] expected t (distance along the unit ray); 0 where opacity is 0
    features: Tensor | None  # [R,C] without background
    n_samples: int


@dataclass(frozen=True, eq=False)
class NerfRender:
    """One view of a NeRF, shaped like `fields.RenderOutput`'s images."""

    rgb: Tensor  # [H,W,3] over the background
    alpha: Tensor  # [H,W,1]
    depth: Tensor  # [H,W,1] expected camera z; 0 where alpha == 0
    features: Tensor | None  # [H,W,C]
    n_samples: int


class NerfScene:
    """A NeRF: `field` (density, colour, optional features), `occupancy` [G,G,G] bool, the
    marcher's step settings, and `meta` (cameras, up axis, training facts; same keys as a
    Gaussian scene's sidecar)."""

    def __init__(
        self,
        field: NerfField,
        occupancy: Tensor | None = None,
        *,
        meta: dict[str, Any] | None = None,
        march: MarchSettings | None = None,
    ) -> None:
        self.field = field
        G = field.config.occupancy_res
        self.occupancy = (
            torch.ones(G, G, G, dtype=torch.bool) if occupancy is None else occupancy.bool()
        )
        if tuple(self.occupancy.shape) != (G, G, G):
            raise ValueError(
                f"occupancy grid must be [{G},{G},{G}], got {tuple(self.occupancy.shape)}"
            )
        self.density_ema = torch.zeros(G, G, G)
        self.meta: dict[str, Any] = dict(meta or {})
        # two steps per cell of the finest grid level along the box's diagonal
        self.march = march or MarchSettings.for_box(field.box, 2 * field.config.max_res)
        # The feature branch's decoding side (heads {space: [D,d]}, levels, teachers, config),
        # as a `FeatureField` whose `features` is empty [0, L*d]: the branch itself produces the
        # [.., L*d] features at points (`field.features`) and along rays (`render_rays`).
        self.feature_field: FeatureField | None = None

    @classmethod
    def create(
        cls, config: NerfModelConfig, box: SceneBox, *, meta: dict[str, Any] | None = None
    ) -> NerfScene:
        return cls(NerfField(config, box), meta=meta)

    @property
    def box(self) -> SceneBox:
        return self.field.box

    @property
    def config(self) -> NerfModelConfig:
        return self.field.config

    @property
    def device(self) -> torch.device:
        return self.field.table.device

    @property
    def has_features(self) -> bool:
        return self.field.feature_table is not None

    def to(self, device: torch.device | str) -> NerfScene:
        self.field.to(device)
        self.occupancy = self.occupancy.to(device)
        self.density_ema = self.density_ema.to(device)
        return self

    def occupied_fraction(self) -> float:
        return float(self.occupancy.float().mean())

    # ------------------------------------------------------------------ occupancy
    def cell_points(
        self, cells: Tensor, jitter: bool, gen: torch.Generator | None = None
    ) -> Tensor:
        """World points [M,3] inside flat cell indices [M] (cell centres, or uniform in cells)."""
        G = self.config.occupancy_res
        z, rem = cells // (G * G), cells % (G * G)
        y, x = rem // G, rem % G
        ijk = torch.stack([x, y, z], -1).float()
        off = torch.rand(ijk.shape, generator=gen) if jitter else torch.full(ijk.shape, 0.5)
        u = (ijk + off.to(ijk.device)) / G  # unit cube
        return self._from_unit(u)

    def _from_unit(self, u: Tensor) -> Tensor:
        """Unit cube [M,3] -> world [M,3] (inverse of `SceneBox.to_unit`)."""
        p = u * 2 - 1
        box = self.box
        if box.mode == "contract":
            p = p * 2
            m = p.abs().amax(-1, keepdim=True).clamp_min(1e-9)
            # inverse of (2 - 1/m) p/m for m in (1, 2): |x| = 1 / (2 - m)
            big = m > 1
            p = torch.where(big, p / m / (2 - m).clamp_min(1e-3), p)
        c = torch.tensor(box.center, dtype=u.dtype, device=u.device)
        return p * box.radius + c

    @torch.no_grad()
    def refresh_occupancy(
        self,
        *,
        full: bool = False,
        fraction: float = 0.25,
        decay: float = 0.95,
        gen: torch.Generator | None = None,
        samples_per_cell: int = 8,
        chunk: int = 1 << 18,
    ) -> float:
        """Update the grid; returns the occupied fraction.

        `full=False` (training): a random `fraction` of cells plus every occupied one get one
        jittered density each, the running max decays by `decay`. `full=True`: every cell's
        density is the max over `samples_per_cell` points (centre + jittered), and the set cells
        are dilated by one cell (conservative; what a finished scene is saved with)."""
        G = self.config.occupancy_res
        n = G**3
        dev = self.device
        thr_sigma = -math.log(1 - ALPHA_THRESHOLD) / self.march.dt
        if full:
            dens = torch.zeros(n, device=dev)
            all_cells = torch.arange(n, device=dev)
            for k in range(samples_per_cell):
                for a in range(0, n, chunk):
                    cells = all_cells[a : a + chunk]
                    pts = self.cell_points(cells, jitter=k > 0, gen=gen)
                    s, _ = self.field.density(pts.to(dev))
                    dens[a : a + chunk] = torch.maximum(dens[a : a + chunk], s)
            self.density_ema = dens.reshape(G, G, G)
            occ = self.density_ema > thr_sigma
            occ = torch.nn.functional.max_pool3d(
                occ[None, None].float(), kernel_size=3, stride=1, padding=1
            )[0, 0].bool()
            self.occupancy = occ
            return self.occupied_fraction()
        ema = self.density_ema.reshape(-1)
        k = max(1, int(n * fraction))
        rand = torch.randint(0, n, (k,), generator=gen).to(dev)
        occupied = self.occupancy.reshape(-1).nonzero().squeeze(1)
        cells = torch.unique(torch.cat([rand, occupied]))
        new = torch.zeros_like(ema)
        for a in range(0, len(cells), chunk):
            c = cells[a : a + chunk]
            s, _ = self.field.density(self.cell_points(c, jitter=True, gen=gen).to(dev))
            new[c] = s
        ema.mul_(decay)
        torch.maximum(ema, new, out=ema)
        thr = min(thr_sigma, float(ema.mean()))
        self.occupancy = (ema > thr).reshape(G, G, G)
        return self.occupied_fraction()

    # ------------------------------------------------------------------ rendering
    def march_rays(self, origins: Tensor, dirs: Tensor, near: float = 0.0) -> Samples:
        return march_rays(self.box, self.occupancy, origins, dirs, self.march, near)

    def render_rays(
        self,
        origins: Tensor,  # [R,3] world
        dirs: Tensor,  # [R,3] unit
        background: Tensor,  # [3] or [R,3]
        *,
        features: bool = False,
        near: float = 0.0,
        stop_transmittance: float = 1e-4,
    ) -> RayOutput:
        """Composite the rays. With autograd enabled every occupied sample takes part; without
        (viewing), densities are evaluated first and colours only where the sample is seen
        (transmittance above `stop_transmittance`)."""
        R = origins.shape[0]
        smp = self.march_rays(origins, dirs, near)
        dev = self.device
        smp = Samples(*(t.to(dev) for t in smp))
        pos = origins[smp.ray_ids] + smp.t[:, None] * dirs[smp.ray_ids]
        sigma, geo = self.field.density(pos)
        comp = composite_weights(sigma, smp, R)
        w = comp.weights
        ids = smp.ray_ids
        sel = None
        if not torch.is_grad_enabled():
            sel = (comp.transmittance > stop_transmittance) & (w > 0)
            w, ids, geo = w[sel], ids[sel], geo[sel]
        rgb = self.field.color(geo, dirs[ids]) if len(ids) else geo.new_zeros(0, 3)
        acc = accumulate(rgb, w, ids, R)
        t = smp.t if sel is None else smp.t[sel]
        depth = accumulate(t[:, None], w, ids, R)[:, 0]
        opacity = comp.opacity
        bg = background.to(acc).expand(R, 3)
        out_rgb = acc + (1 - opacity[:, None]) * bg
        feats = None
        if features:
            pts = pos if sel is None else pos[sel]
            feats = accumulate(self.field.features(pts), w, ids, R)
        depth = torch.where(
            opacity > 1e-6, depth / opacity.clamp_min(1e-6), torch.zeros_like(depth)
        )
        return RayOutput(out_rgb, opacity, depth, feats, len(smp.t))


def camera_rays(
    camera: Camera, device: torch.device | str = "cpu"
) -> tuple[Tensor, Tensor, Tensor]:
    """(origins [H*W,3], unit dirs [H*W,3], z_per_t [H*W]) through pixel centres, row-major;
    camera z of a point at distance t along the ray = t * z_per_t."""
    H, W = camera.height, camera.width
    ys, xs = torch.meshgrid(
        torch.arange(H, dtype=torch.float32) + 0.5,
        torch.arange(W, dtype=torch.float32) + 0.5,
        indexing="ij",
    )
    d_cam = torch.stack(
        [(xs - camera.cx) / camera.fx, (ys - camera.cy) / camera.fy, torch.ones_like(xs)], -1
    ).reshape(-1, 3)
    norm = d_cam.norm(dim=-1, keepdim=True)
    d_cam = d_cam / norm
    c2w = camera.c2w.float()
    dirs = d_cam @ c2w[:3, :3].T
    origins = c2w[:3, 3].expand_as(dirs)
    return origins.to(device), dirs.to(device), d_cam[:, 2].to(device)


@torch.no_grad()
def render_nerf(
    scene: NerfScene,
    camera: Camera,
    *,
    background: tuple[float, float, float] | Tensor = (1.0, 1.0, 1.0),
    features: bool = False,
    chunk: int = 1 << 14,
) -> NerfRender:
    """Render one camera (no gradients; training renders rays, see `NerfScene.render_rays`)."""
    dev = scene.device
    origins, dirs, zpt = camera_rays(camera, dev)
    bg = torch.as_tensor(background, dtype=torch.float32, device=dev)
    H, W = camera.height, camera.width
    rgb, alpha, depth, feats = [], [], [], []
    n = 0
    for a in range(0, H * W, chunk):
        b = slice(a, a + chunk)
        out = scene.render_rays(origins[b], dirs[b], bg, features=features)
        rgb.append(out.rgb)
        alpha.append(out.opacity)
        depth.append(out.depth * zpt[b])
        if out.features is not None:
            feats.append(out.features)
        n += out.n_samples
    return NerfRender(
        torch.cat(rgb).reshape(H, W, 3),
        torch.cat(alpha).reshape(H, W, 1),
        torch.cat(depth).reshape(H, W, 1),
        torch.cat(feats).reshape(H, W, -1) if feats else None,
        n,
    )
