"""View-dependent colour for the browser: each shown splat's spherical harmonics evaluated toward
one camera centre on the server.

viser 1.1.1's splat renderer takes one RGBA word per Gaussian (no SH), so the browser can only
show view-dependent colour if the server bakes it for a viewpoint: when a browser's camera comes
to rest, the viewer evaluates SH toward that camera and sends a colour-only update (the packed
geometry is reused). Same convention as `fields.render` (gsplat's): colour = max(Σ_k Y_k(d) c_k
+ 0.5, 0) with d the unit direction from the camera centre to the Gaussian's centre.

Speed: the basis is written into one preallocated [chunk, K] tensor and contracted with the
coefficients by a batched [1,K]@[K,3] product; chunking keeps the temporaries in cache-sized
pieces (1M Gaussians at degree 3 take ~60 ms on 2 cores).
"""

from __future__ import annotations

import torch
from torch import Tensor

# Real SH constants of the gsplat / INRIA basis (degrees 0-3).
_C0 = 0.28209479177387814
_C1 = 0.4886025119029199
_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792,
       0.5462742152960396)  # fmt: skip
_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
       -0.4570457994644658, 1.445305721320277, -0.5900435899266435)  # fmt: skip

CHUNK = 131_072


def _basis_into(out: Tensor, d: Tensor, degree: int) -> None:
    """Write the SH basis at unit directions `d [c,3]` into `out [c,(degree+1)^2]`."""
    x, y, z = d[:, 0], d[:, 1], d[:, 2]
    out[:, 0] = _C0
    if degree < 1:
        return
    torch.mul(y, -_C1, out=out[:, 1])
    torch.mul(z, _C1, out=out[:, 2])
    torch.mul(x, -_C1, out=out[:, 3])
    if degree < 2:
        return
    xx, yy, zz = x * x, y * y, z * z
    xy, yz, xz = x * y, y * z, x * z
    torch.mul(xy, _C2[0], out=out[:, 4])
    torch.mul(yz, _C2[1], out=out[:, 5])
    torch.mul(2.0 * zz - xx - yy, _C2[2], out=out[:, 6])
    torch.mul(xz, _C2[3], out=out[:, 7])
    torch.mul(xx - yy, _C2[4], out=out[:, 8])
    if degree < 3:
        return
    t = 4.0 * zz - xx - yy
    torch.mul(y * (3.0 * xx - yy), _C3[0], out=out[:, 9])
    torch.mul(xy * z, _C3[1], out=out[:, 10])
    torch.mul(y * t, _C3[2], out=out[:, 11])
    torch.mul(z * (2.0 * zz - 3.0 * xx - 3.0 * yy), _C3[3], out=out[:, 12])
    torch.mul(x * t, _C3[4], out=out[:, 13])
    torch.mul(z * (xx - yy), _C3[5], out=out[:, 14])
    torch.mul(x * (xx - 3.0 * yy), _C3[6], out=out[:, 15])


def view_colors(
    means: Tensor,  # [N,3] world
    sh: Tensor,  # [N,K,3], K = (degree+1)^2
    campos: Tensor | tuple[float, float, float],  # [3] camera centre, world
    *,
    rows: Tensor | None = None,  # [M] int64: only these Gaussians (gathered chunk by chunk)
    chunk: int = CHUNK,
) -> Tensor:  # [M,3] float32 (M = N without rows), >= 0; not clamped above (the packer does)
    """Colour of each Gaussian seen from `campos` (see the module docstring)."""
    if means.ndim != 2 or means.shape[1] != 3:
        raise ValueError(f"means must be [N,3], got {tuple(means.shape)}")
    if sh.ndim != 3 or sh.shape[0] != means.shape[0] or sh.shape[2] != 3:
        raise ValueError(f"sh must be [N={means.shape[0]},K,3], got {tuple(sh.shape)}")
    n = means.shape[0] if rows is None else int(rows.shape[0])
    k = sh.shape[1]
    degree = {1: 0, 4: 1, 9: 2, 16: 3}.get(k)
    if degree is None:
        raise ValueError(f"{k} SH coefficients per channel is not (d+1)^2 for d in 0..3")
    with torch.no_grad():
        means = means.detach().to("cpu", torch.float32)
        sh = sh.detach().to("cpu", torch.float32)
        c = torch.as_tensor(campos, dtype=torch.float32).reshape(3)
        out = torch.empty(n, 3, dtype=torch.float32)
        if degree == 0:
            dc = sh[:, 0, :] if rows is None else sh[rows, 0, :]
            return torch.clamp_min(dc * _C0 + 0.5, 0.0, out=out)
        basis = torch.empty(min(chunk, max(n, 1)), k, dtype=torch.float32)
        for s in range(0, n, chunk):
            e = min(n, s + chunk)
            if rows is None:
                m, c_sh = means[s:e], sh[s:e]
            else:
                idx = rows[s:e]
                m, c_sh = means[idx], sh[idx]
            d = torch.nn.functional.normalize(m - c, dim=-1)
            b = basis[: e - s]
            _basis_into(b, d, degree)
            torch.bmm(b[:, None, :], c_sh, out=out[s:e, None, :])
        out.add_(0.5).clamp_min_(0.0)
        return out
