"""`GaussianScene`: a 3D Gaussian Splatting scene in gsplat's parameterisation.

Conventions (also in README "Conventions"):
- `means [N,3]` world positions (metres for scenelab's own worlds).
- `quats [N,4]` rotations as (w, x, y, z); unnormalised values are allowed and normalised on use.
- `scales [N,3]` per-axis standard deviations as *log* values (activate with `exp`).
- `opacities [N]` as *logits* (activate with `sigmoid`).
- `sh [N,K,3]` spherical-harmonics colour coefficients, K = (degree+1)^2, gsplat/INRIA basis;
  colour = clamp_min(SH(d) + 0.5, 0) for the direction d from the camera centre to the mean.
- `extras` named per-Gaussian arrays whose first dimension is N (`label [N]` int, `feature [N,C]`,
  `selected [N]` bool, ...). Every method keeps them aligned with the Gaussians.
- `meta` JSON-able scene facts that formats cannot hold (label names, units, up axis, ...).

Scenes are immutable values: every method returns a new scene and never mutates its input.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ._sh import rotate_sh, sh_degree_from_k

SH_C0 = 0.28209479177387814

# Value used to fill an extra that one side of a `concat` lacks, by dtype kind.
_FILL_INT = -1


def _as_tensor(x: Any, dtype: torch.dtype | None = None) -> Tensor:
    if isinstance(x, Tensor):
        return x if dtype is None else x.to(dtype)
    t = torch.as_tensor(x)
    return t if dtype is None else t.to(dtype)


@dataclass(frozen=True, eq=False)
class GaussianScene:
    """A set of 3D Gaussians plus aligned per-Gaussian extras; see the module docstring."""

    means: Tensor  # [N,3] float32
    quats: Tensor  # [N,4] float32, wxyz
    scales: Tensor  # [N,3] float32, log standard deviations
    opacities: Tensor  # [N] float32, logits
    sh: Tensor  # [N,K,3] float32
    extras: Mapping[str, Tensor] = field(default_factory=dict)  # each [N,...]
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "means", _as_tensor(self.means, torch.float32))
        object.__setattr__(self, "quats", _as_tensor(self.quats, torch.float32))
        object.__setattr__(self, "scales", _as_tensor(self.scales, torch.float32))
        object.__setattr__(self, "opacities", _as_tensor(self.opacities, torch.float32))
        object.__setattr__(self, "sh", _as_tensor(self.sh, torch.float32))
        object.__setattr__(self, "extras", {k: _as_tensor(v) for k, v in self.extras.items()})
        object.__setattr__(self, "meta", dict(self.meta))
        n = self.means.shape[0]
        expect = {
            "means": (self.means, (n, 3)),
            "quats": (self.quats, (n, 4)),
            "scales": (self.scales, (n, 3)),
            "opacities": (self.opacities, (n,)),
        }
        for name, (t, shape) in expect.items():
            if tuple(t.shape) != shape:
                raise ValueError(
                    f"GaussianScene.{name} has shape {tuple(t.shape)}, expected {shape}"
                )
        if self.sh.ndim != 3 or self.sh.shape[0] != n or self.sh.shape[2] != 3:
            raise ValueError(
                f"GaussianScene.sh has shape {tuple(self.sh.shape)}, expected ({n}, K, 3)"
            )
        sh_degree_from_k(self.sh.shape[1])  # raises for K not in {1, 4, 9, 16}
        for k, v in self.extras.items():
            if v.ndim == 0 or v.shape[0] != n:
                raise ValueError(
                    f"GaussianScene.extras[{k!r}] has shape {tuple(v.shape)}; its first dimension must be N={n}"
                )

    # ------------------------------------------------------------------ construction
    @classmethod
    def empty(cls, sh_degree: int = 0) -> GaussianScene:
        k = (sh_degree + 1) ** 2
        z = torch.zeros
        return cls(z(0, 3), z(0, 4), z(0, 3), z(0), z(0, k, 3))

    @classmethod
    def from_activated(
        cls,
        means: Tensor,  # [N,3]
        quats: Tensor,  # [N,4] wxyz
        scales: Tensor,  # [N,3] standard deviations (> 0)
        opacities: Tensor,  # [N] in (0, 1)
        colors: Tensor,  # [N,3] RGB in [0, 1] (SH degree 0)
        extras: Mapping[str, Tensor] | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> GaussianScene:
        """Build a scene from activated values (what a generator naturally produces)."""
        opac = _as_tensor(opacities, torch.float32).clamp(1e-6, 1 - 1e-6)
        return cls(
            means=means,
            quats=quats,
            scales=torch.log(_as_tensor(scales, torch.float32)),
            opacities=torch.logit(opac),
            sh=rgb_to_sh(_as_tensor(colors, torch.float32))[:, None, :],
            extras=extras or {},
            meta=meta or {},
        )

    # ------------------------------------------------------------------ basic facts
    def __len__(self) -> int:
        return int(self.means.shape[0])

    def __repr__(self) -> str:
        ex = ", ".join(f"{k}{list(v.shape[1:])}" for k, v in self.extras.items())
        return f"GaussianScene(N={len(self)}, sh_degree={self.sh_degree}, extras=[{ex}])"

    @property
    def sh_degree(self) -> int:
        return sh_degree_from_k(self.sh.shape[1])

    @property
    def device(self) -> torch.device:
        return self.means.device

    @property
    def colors(self) -> Tensor:
        """[N,3] view-independent (DC) RGB colour, clamped to >= 0."""
        return sh_to_rgb(self.sh[:, 0, :]).clamp_min(0.0)

    @property
    def normalized_quats(self) -> Tensor:
        """[N,4] unit wxyz quaternions."""
        return torch.nn.functional.normalize(self.quats, dim=-1)

    def activated_scales(self) -> Tensor:
        return torch.exp(self.scales)

    def activated_opacities(self) -> Tensor:
        return torch.sigmoid(self.opacities)

    def bounds(self, quantile: float = 0.0) -> tuple[Tensor, Tensor]:
        """Axis-aligned bounds of the means, optionally robust to `quantile` outliers per side."""
        if len(self) == 0:
            raise ValueError("an empty scene has no bounds")
        if quantile <= 0:
            return self.means.amin(0), self.means.amax(0)
        q = torch.tensor([quantile, 1 - quantile], dtype=self.means.dtype)
        lo_hi = torch.quantile(self.means[:: max(1, len(self) // 200_000)], q, dim=0)
        return lo_hi[0], lo_hi[1]

    # ------------------------------------------------------------------ functional updates
    def replace(self, **changes: Any) -> GaussianScene:
        """A copy with the given fields replaced (`extras`/`meta` replace whole mappings)."""
        fields_ = {
            "means": self.means,
            "quats": self.quats,
            "scales": self.scales,
            "opacities": self.opacities,
            "sh": self.sh,
            "extras": self.extras,
            "meta": self.meta,
        }
        unknown = set(changes) - set(fields_)
        if unknown:
            raise TypeError(f"GaussianScene.replace got unknown fields {sorted(unknown)}")
        fields_.update(changes)
        return GaussianScene(**fields_)

    def with_extras(self, **extras: Tensor | None) -> GaussianScene:
        """A copy with extras added or replaced; pass None to remove one."""
        new = dict(self.extras)
        for k, v in extras.items():
            if v is None:
                new.pop(k, None)
            else:
                new[k] = v
        return self.replace(extras=new)

    def with_meta(self, **meta: Any) -> GaussianScene:
        return self.replace(meta={**self.meta, **meta})

    def to(self, device: torch.device | str) -> GaussianScene:
        return GaussianScene(
            self.means.to(device),
            self.quats.to(device),
            self.scales.to(device),
            self.opacities.to(device),
            self.sh.to(device),
            {k: v.to(device) for k, v in self.extras.items()},
            self.meta,
        )

    def detach(self) -> GaussianScene:
        return GaussianScene(
            self.means.detach(),
            self.quats.detach(),
            self.scales.detach(),
            self.opacities.detach(),
            self.sh.detach(),
            {k: v.detach() for k, v in self.extras.items()},
            self.meta,
        )

    def subset(self, index: Tensor | Sequence[int]) -> GaussianScene:
        """Gaussians selected by a boolean mask `[N]` or an index list (order as given)."""
        idx = _as_tensor(index)
        if idx.dtype == torch.bool:
            if idx.shape != (len(self),):
                raise ValueError(
                    f"subset mask has shape {tuple(idx.shape)}, expected ({len(self)},)"
                )
        elif idx.numel() and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"subset index out of range for a scene of {len(self)} Gaussians")
        idx = idx.to(self.device)
        return GaussianScene(
            self.means[idx],
            self.quats[idx],
            self.scales[idx],
            self.opacities[idx],
            self.sh[idx],
            {k: v[idx] for k, v in self.extras.items()},
            self.meta,
        )

    def with_sh_degree(self, degree: int) -> GaussianScene:
        """Truncate or zero-pad the SH coefficients to `degree`."""
        k = (degree + 1) ** 2
        if k <= self.sh.shape[1]:
            return self.replace(sh=self.sh[:, :k])
        pad = self.sh.new_zeros(len(self), k - self.sh.shape[1], 3)
        return self.replace(sh=torch.cat([self.sh, pad], dim=1))

    def transform(
        self,
        T_new_old: Tensor,  # [4,4] similarity: s*R | t
    ) -> GaussianScene:
        """Apply a rigid or similarity transform (uniform scale) to every Gaussian.

        Means move, rotations compose, log-scales shift by log(s), SH bands are rotated so that
        view-dependent colour moves with the scene.
        """
        T = _as_tensor(T_new_old, torch.float64)
        if T.shape != (4, 4):
            raise ValueError(f"transform expects a 4x4 matrix, got {tuple(T.shape)}")
        A = T[:3, :3]
        s = torch.linalg.det(A).abs() ** (1.0 / 3.0)
        if not torch.isfinite(s) or s <= 0:
            raise ValueError("transform matrix is singular")
        R = A / s
        if torch.dist(R @ R.T, torch.eye(3, dtype=R.dtype)) > 1e-4 or torch.linalg.det(R) < 0:
            raise ValueError(
                "transform must be a rotation times a uniform positive scale (no shear or mirror)"
            )
        dtype, dev = self.means.dtype, self.device
        Rf = R.to(dtype=dtype, device=dev)
        means = (self.means @ Rf.T) * float(s) + T[:3, 3].to(dtype=dtype, device=dev)
        q_r = rotmat_to_quat(R).to(dtype=dtype, device=dev)
        quats = quat_multiply(q_r.expand_as(self.quats), self.quats)
        scales = self.scales + math.log(float(s))
        sh = rotate_sh(self.sh, R.to(dev)) if self.sh.shape[1] > 1 else self.sh
        return GaussianScene(means, quats, scales, self.opacities, sh, self.extras, self.meta)

    @staticmethod
    def concat(scenes: Iterable[GaussianScene]) -> GaussianScene:
        """Concatenate scenes in order. SH degrees are padded to the highest; an extra missing in
        some scenes is filled there (ints with -1, floats with 0, bools with False). `meta` is
        taken from the first scene."""
        scenes = list(scenes)
        if not scenes:
            raise ValueError("concat needs at least one scene")
        degree = max(s.sh_degree for s in scenes)
        scenes = [s.with_sh_degree(degree) for s in scenes]
        names: dict[str, Tensor] = {}
        for s in scenes:
            for k, v in s.extras.items():
                if k in names and names[k].shape[1:] != v.shape[1:]:
                    raise ValueError(
                        f"extra {k!r} has trailing shape {tuple(v.shape[1:])} in one scene "
                        f"and {tuple(names[k].shape[1:])} in another"
                    )
                names.setdefault(k, v)
        extras = {}
        for k, proto in names.items():
            parts = []
            for s in scenes:
                if k in s.extras:
                    parts.append(s.extras[k].to(proto.dtype))
                else:
                    parts.append(_fill_like(proto, len(s)))
            extras[k] = torch.cat(parts, dim=0)
        return GaussianScene(
            torch.cat([s.means for s in scenes]),
            torch.cat([s.quats for s in scenes]),
            torch.cat([s.scales for s in scenes]),
            torch.cat([s.opacities for s in scenes]),
            torch.cat([s.sh for s in scenes]),
            extras,
            scenes[0].meta,
        )

    def allclose(self, other: GaussianScene, atol: float = 0.0) -> bool:
        """Same Gaussians and extras (exactly when atol=0). `meta` is not compared."""
        if len(self) != len(other) or self.sh.shape != other.sh.shape:
            return False
        if set(self.extras) != set(other.extras):
            return False
        pairs = [
            (self.means, other.means),
            (self.quats, other.quats),
            (self.scales, other.scales),
            (self.opacities, other.opacities),
            (self.sh, other.sh),
        ] + [(v, other.extras[k]) for k, v in self.extras.items()]
        for a, b in pairs:
            if a.shape != b.shape:
                return False
            if atol == 0.0:
                if not torch.equal(a.cpu(), b.cpu().to(a.dtype)):
                    return False
            elif not torch.allclose(a.double().cpu(), b.double().cpu(), atol=atol, rtol=0):
                return False
        return True


def _fill_like(proto: Tensor, n: int) -> Tensor:
    shape = (n, *proto.shape[1:])
    if proto.dtype == torch.bool:
        return torch.zeros(shape, dtype=torch.bool, device=proto.device)
    if proto.dtype.is_floating_point:
        return torch.zeros(shape, dtype=proto.dtype, device=proto.device)
    return torch.full(shape, _FILL_INT, dtype=proto.dtype, device=proto.device)


# ---------------------------------------------------------------------- small math helpers
def rgb_to_sh(rgb: Tensor) -> Tensor:
    """[...,3] RGB -> [...,3] SH DC coefficient."""
    return (rgb - 0.5) / SH_C0


def sh_to_rgb(dc: Tensor) -> Tensor:
    """[...,3] SH DC coefficient -> [...,3] RGB (not clamped)."""
    return dc * SH_C0 + 0.5


def quat_multiply(q1: Tensor, q2: Tensor) -> Tensor:
    """Hamilton product of wxyz quaternions, [...,4] x [...,4] -> [...,4]."""
    w1, x1, y1, z1 = q1.unbind(-1)
    w2, x2, y2, z2 = q2.unbind(-1)
    return torch.stack(
        [
            w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
            w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
            w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
            w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
        ],
        dim=-1,
    )


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """[...,4] wxyz (any norm) -> [...,3,3] rotation matrices."""
    w, x, y, z = torch.nn.functional.normalize(quats, dim=-1).unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z),
            2 * (x * y - w * z),
            2 * (x * z + w * y),
            2 * (x * y + w * z),
            1 - 2 * (x * x + z * z),
            2 * (y * z - w * x),
            2 * (x * z - w * y),
            2 * (y * z + w * x),
            1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(*quats.shape[:-1], 3, 3)


def rotmat_to_quat(R: Tensor) -> Tensor:
    """[...,3,3] rotation matrices -> [...,4] unit wxyz quaternions (w >= 0)."""
    m = R
    t = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    # Shepperd's method: pick the largest of 4 candidates for numerical stability.
    cand = torch.stack(
        [1 + t, 1 + 2 * m[..., 0, 0] - t, 1 + 2 * m[..., 1, 1] - t, 1 + 2 * m[..., 2, 2] - t],
        dim=-1,
    )
    i = cand.argmax(-1)
    r = torch.sqrt(cand.gather(-1, i[..., None]).squeeze(-1).clamp_min(1e-12))
    q = torch.zeros((*R.shape[:-2], 4), dtype=R.dtype, device=R.device)
    # case w largest
    qw = torch.stack(
        [
            0.5 * r,
            (m[..., 2, 1] - m[..., 1, 2]) / (2 * r),
            (m[..., 0, 2] - m[..., 2, 0]) / (2 * r),
            (m[..., 1, 0] - m[..., 0, 1]) / (2 * r),
        ],
        -1,
    )
    qx = torch.stack(
        [
            (m[..., 2, 1] - m[..., 1, 2]) / (2 * r),
            0.5 * r,
            (m[..., 0, 1] + m[..., 1, 0]) / (2 * r),
            (m[..., 0, 2] + m[..., 2, 0]) / (2 * r),
        ],
        -1,
    )
    qy = torch.stack(
        [
            (m[..., 0, 2] - m[..., 2, 0]) / (2 * r),
            (m[..., 0, 1] + m[..., 1, 0]) / (2 * r),
            0.5 * r,
            (m[..., 1, 2] + m[..., 2, 1]) / (2 * r),
        ],
        -1,
    )
    qz = torch.stack(
        [
            (m[..., 1, 0] - m[..., 0, 1]) / (2 * r),
            (m[..., 0, 2] + m[..., 2, 0]) / (2 * r),
            (m[..., 1, 2] + m[..., 2, 1]) / (2 * r),
            0.5 * r,
        ],
        -1,
    )
    for k, qk in enumerate((qw, qx, qy, qz)):
        q = torch.where((i == k)[..., None], qk, q)
    return q * torch.where(q[..., :1] < 0, -1.0, 1.0)
