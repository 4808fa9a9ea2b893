"""Multi-resolution hash encoding (Instant-NGP, Müller et al. 2022), in plain torch.

Level l has resolution N_l = floor(base * b^l) with b chosen so the last level reaches
`max_res`; a point x in [0,1]^3 is looked up at the 8 corners of its cell at every level and the
corner features [F] are blended trilinearly. Coarse levels whose (N_l+1)^3 corners fit the table
are indexed densely (no collisions); finer ones by the paper's spatial hash
(x * 1 ^ y * 2654435761 ^ z * 805459861) mod T.

`hash_encode` is the pure function (autograd through gather / index_add); the compiled CPU
kernel (`fields._nerf_cpu`, when built) computes the same numbers faster and is checked against it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

_PRIMES = (1, 2654435761, 805459861)
_U32 = 0xFFFFFFFF


@dataclass(frozen=True)
class GridLayout:
    """Where each level lives in the one flat table [sum(sizes), F]."""

    resolutions: tuple[int, ...]
    sizes: tuple[int, ...]  # table rows per level
    offsets: tuple[int, ...]  # first row of each level
    hashed: tuple[bool, ...]

    @property
    def rows(self) -> int:
        return self.offsets[-1] + self.sizes[-1]

    @property
    def levels(self) -> int:
        return len(self.resolutions)


def grid_layout(levels: int, log2_table: int, base_res: int, max_res: int) -> GridLayout:
    """The Instant-NGP level schedule: geometric growth from `base_res` to `max_res`."""
    if levels < 1 or base_res < 1 or max_res < base_res:
        raise ValueError(f"bad hash grid: levels={levels} base_res={base_res} max_res={max_res}")
    T = 1 << log2_table
    b = math.exp((math.log(max_res) - math.log(base_res)) / max(levels - 1, 1))
    res, sizes, offs, hashed = [], [], [], []
    off = 0
    for lv in range(levels):
        n = math.floor(base_res * b**lv + 1e-6)
        dense = (n + 1) ** 3
        size = min(dense, T)
        res.append(n)
        sizes.append(size)
        offs.append(off)
        hashed.append(dense > T)
        off += size
    return GridLayout(tuple(res), tuple(sizes), tuple(offs), tuple(hashed))


def corner_indices(
    x: Tensor,  # [S,3] float in [0,1]
    layout: GridLayout,
) -> tuple[Tensor, Tensor]:
    """Rows of the table each sample reads and their trilinear weights: ([S,L,8] int64, [S,L,8])."""
    S = x.shape[0]
    L = layout.levels
    res = torch.tensor(layout.resolutions, dtype=x.dtype, device=x.device)  # [L]
    pos = x[:, None, :] * res[None, :, None]  # [S,L,3]
    base = pos.floor()
    frac = pos - base
    base = base.long().clamp_(min=0)
    base = torch.minimum(base, torch.tensor(layout.resolutions, device=x.device)[None, :, None] - 1)
    frac = pos - base.to(x.dtype)  # points on the far face land at frac == 1
    bits = torch.tensor(
        [[(c >> 0) & 1, (c >> 1) & 1, (c >> 2) & 1] for c in range(8)], device=x.device
    )  # [8,3]
    corner = base[:, :, None, :] + bits[None, None]  # [S,L,8,3]
    w = torch.where(bits[None, None].bool(), frac[:, :, None, :], 1 - frac[:, :, None, :]).prod(-1)
    idx = torch.empty(S, L, 8, dtype=torch.long, device=x.device)
    for lv in range(L):
        c = corner[:, lv]  # [S,8,3]
        if layout.hashed[lv]:
            # uint32 arithmetic, as the kernel (and Instant-NGP) computes it
            h = (c[..., 0] * _PRIMES[0]) & _U32
            h = h ^ ((c[..., 1] * _PRIMES[1]) & _U32) ^ ((c[..., 2] * _PRIMES[2]) & _U32)
            i = h % layout.sizes[lv]
        else:
            n1 = layout.resolutions[lv] + 1
            i = c[..., 0] + n1 * (c[..., 1] + n1 * c[..., 2])
        idx[:, lv] = i + layout.offsets[lv]
    return idx, w


def hash_encode_reference(
    x: Tensor,  # [S,3] in [0,1]
    table: Tensor,  # [rows, F]
    layout: GridLayout,
) -> Tensor:
    """[S, L*F] features, level-major (level 0's F features first): plain torch (CUDA, and the
    reference the kernel is tested against)."""
    idx, w = corner_indices(x, layout)
    f = table[idx]  # [S,L,8,F]
    out = (f * w[..., None]).sum(2)  # [S,L,F]
    return out.reshape(x.shape[0], -1)


def _kernel() -> Any:
    try:
        from .. import _nerf_cpu
    except ImportError:  # not built: plain torch
        return None
    return _nerf_cpu


def _layout_arrays(layout: GridLayout) -> tuple[np.ndarray, ...]:
    return (
        np.asarray(layout.resolutions, np.int32),
        np.asarray(layout.offsets, np.int32),
        np.asarray(layout.sizes, np.int32),
        np.asarray(layout.hashed, np.uint8),
    )


class _HashEncodeCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, table: Tensor, layout: GridLayout) -> Tensor:  # type: ignore[override]
        k = _kernel()
        xs = x.detach().contiguous()
        out = k.encode_forward(
            xs.numpy(), table.detach().contiguous().numpy(), *_layout_arrays(layout)
        )
        ctx.save_for_backward(xs)
        ctx.layout = layout
        ctx.table_shape = tuple(table.shape)
        return torch.from_numpy(out)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[None, Tensor | None, None]:  # type: ignore[override]
        (xs,) = ctx.saved_tensors
        if not ctx.needs_input_grad[1]:
            return None, None, None
        rows, F = ctx.table_shape
        g = _kernel().encode_backward(
            xs.numpy(), grad.contiguous().numpy(), rows, F, *_layout_arrays(ctx.layout)
        )
        return None, torch.from_numpy(g), None


def hash_encode(
    x: Tensor,  # [S,3] in [0,1]
    table: Tensor,  # [rows, F]
    layout: GridLayout,
) -> Tensor:
    """[S, L*F] hash-grid features of points in [0,1]^3 (no gradient to `x`). The compiled
    kernel on CPU float32 when built, plain torch otherwise (CUDA)."""
    if (
        x.device.type == "cpu"
        and table.dtype == torch.float32
        and x.dtype == torch.float32
        and _kernel() is not None
    ):
        return _HashEncodeCPU.apply(x, table, layout)
    return hash_encode_reference(x, table, layout)
