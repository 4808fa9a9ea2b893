"""Slow, plainly written references for the render pipeline (tests and benchmark baselines).

- `project_reference`: the projection with per-Gaussian 3x3 matrices, float64 by default, written
  independently of the compiled one in `_csrc/project.h` (`_project_cpu.py`).
- `rasterize_tiled`: a pure-torch tile rasterizer (loop over 16x16 tiles, dense over the tile's
  Gaussians in depth order), same semantics as the compiled kernel; differentiable by autograd.
  Renders 10^5 Gaussians at 512x512 in seconds: the benchmark's baseline.
- `render_reference`: projection + `rasterize_reference` (dense, `_raster_reference.py`) or
  `rasterize_tiled`, with the same outputs as `render`.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from .._sh import eval_sh
from ..camera import Camera
from ..scene import GaussianScene, quat_to_rotmat
from ._project import ALPHA_MIN, EXTEND_MAX, FOV_CLAMP, Splats
from ._render import RenderOutput

TILE = 16
T_MIN = 1e-4  # a pixel stops before the Gaussian that would bring its transmittance to <= this
ALPHA_MAX = 0.999


def project_reference(
    scene: GaussianScene,
    camera: Camera,
    *,
    near: float = 0.01,
    far: float = 1e10,
    eps2d: float = 0.3,
    sh_degree: int | None = None,
    features: Tensor | None = None,  # [N,C]
    dtype: torch.dtype = torch.float64,
) -> Splats:
    """Splats for every Gaussian of `scene` (no compaction), computed in `dtype`."""
    dev = scene.device
    means = scene.means.to(dtype)
    V = camera.viewmat.to(device=dev, dtype=torch.float64)
    campos = torch.linalg.inv(V)[:3, 3].to(dtype)
    V = V.to(dtype)
    W, t = V[:3, :3], V[:3, 3]
    K = camera.K.to(torch.float64)
    fx, fy, cx, cy = float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])

    # 3D covariance, then camera frame
    R = quat_to_rotmat(scene.quats.to(dtype))  # normalises
    S = torch.diag_embed(torch.exp(scene.scales.to(dtype)))
    RS = R @ S
    cov3d = RS @ RS.transpose(-1, -2)
    cov_c = W @ cov3d @ W.T
    p_c = means @ W.T + t
    x, y, z = p_c.unbind(-1)
    in_depth = (z >= near) & (z <= far)
    zs = torch.where(in_depth, z, torch.ones_like(z))  # culled rows: keep the arithmetic finite

    # perspective Jacobian at the clamped point (gsplat persp_proj)
    tan_fovx, tan_fovy = 0.5 * camera.width / fx, 0.5 * camera.height / fy
    lim_x_pos = (camera.width - cx) / fx + FOV_CLAMP * tan_fovx
    lim_x_neg = cx / fx + FOV_CLAMP * tan_fovx
    lim_y_pos = (camera.height - cy) / fy + FOV_CLAMP * tan_fovy
    lim_y_neg = cy / fy + FOV_CLAMP * tan_fovy
    tx = zs * torch.clamp(x / zs, -lim_x_neg, lim_x_pos)
    ty = zs * torch.clamp(y / zs, -lim_y_neg, lim_y_pos)
    zero = torch.zeros_like(zs)
    J = torch.stack(
        [
            torch.stack([fx / zs, zero, -fx * tx / zs**2], -1),
            torch.stack([zero, fy / zs, -fy * ty / zs**2], -1),
        ],
        dim=-2,
    )  # [N,2,3]
    eye2 = torch.eye(2, dtype=dtype, device=dev)
    cov2d = J @ cov_c @ J.transpose(-1, -2) + eps2d * eye2
    means2d = torch.stack([fx * x / zs + cx, fy * y / zs + cy], -1)
    det = torch.linalg.det(cov2d)
    ok = in_depth & (det > 0)
    inv = torch.linalg.inv(torch.where(ok[:, None, None], cov2d, eye2))
    conics = torch.stack([inv[:, 0, 0], inv[:, 0, 1], inv[:, 1, 1]], -1)

    opac = torch.sigmoid(scene.opacities.to(dtype))
    with torch.no_grad():
        # Box of the ellipse where alpha = o exp(-sigma) >= 1/255, at most 3.33 sigma wide.
        o = opac.double()
        visible_o = o >= ALPHA_MIN
        extend = torch.sqrt(2.0 * torch.log(torch.where(visible_o, o, 1.0) / ALPHA_MIN))
        extend = torch.clamp(extend, max=EXTEND_MAX)
        var = torch.diagonal(cov2d, dim1=-2, dim2=-1).double()  # [N,2]
        r = torch.ceil(extend[:, None] * torch.sqrt(var.clamp_min(0)))
        rx, ry = r.unbind(-1)
        mx, my = means2d.detach().double().unbind(-1)
        off_image = (
            (mx + rx <= 0) | (mx - rx >= camera.width) | (my + ry <= 0) | (my - ry >= camera.height)
        )
        keep = ok & visible_o & ~((rx <= 0) & (ry <= 0)) & ~off_image
        radii = torch.where(keep[:, None], r, 0.0).to(torch.int32)

    k = (scene.sh_degree if sh_degree is None else sh_degree) + 1
    rgb = eval_sh(scene.sh[:, : k * k].to(dtype), means - campos)
    parts = [rgb, z[:, None]] + ([] if features is None else [features.to(dtype)])
    return Splats(means2d, conics, opac, torch.cat(parts, -1), z.detach(), radii)


def rasterize_tiled(
    means2d: Tensor,  # [N,2]
    conics: Tensor,  # [N,3]
    opacities: Tensor,  # [N]
    colors: Tensor,  # [N,C]
    depths: Tensor,  # [N]
    radii: Tensor,  # [N,2] int
    width: int,
    height: int,
) -> tuple[Tensor, Tensor]:
    """(out [H,W,C], alpha [H,W,1]) by looping over 16x16 tiles; same rules as the kernel."""
    dt, dev = colors.dtype, colors.device
    n_ch = colors.shape[1]
    tiles_x, tiles_y = math.ceil(width / TILE), math.ceil(height / TILE)
    with torch.no_grad():
        r = radii.long()
        m = means2d.detach()
        tx0 = torch.floor((m[:, 0] - r[:, 0]) / TILE).clamp(0, tiles_x).long()
        tx1 = torch.ceil((m[:, 0] + r[:, 0]) / TILE).clamp(0, tiles_x).long()
        ty0 = torch.floor((m[:, 1] - r[:, 1]) / TILE).clamp(0, tiles_y).long()
        ty1 = torch.ceil((m[:, 1] + r[:, 1]) / TILE).clamp(0, tiles_y).long()
        wide = (tx1 - tx0).clamp_min(0)
        count = wide * (ty1 - ty0).clamp_min(0) * (r > 0).all(-1)
        # (tile, Gaussian) pairs in depth order, then stably grouped by tile
        order = torch.argsort(depths.detach(), stable=True)
        order = order[count[order] > 0]
        cnt = count[order]
        gid = torch.repeat_interleave(order, cnt)
        first = torch.repeat_interleave(torch.cumsum(cnt, 0) - cnt, cnt)
        local = torch.arange(gid.shape[0], device=dev) - first
        tile_id = (ty0[gid] + local // wide[gid]) * tiles_x + tx0[gid] + local % wide[gid]
        tile_id, perm = torch.sort(tile_id, stable=True)
        gid = gid[perm]
        ends = torch.cumsum(torch.bincount(tile_id, minlength=tiles_x * tiles_y), 0).tolist()

    out = colors.new_zeros(height, width, n_ch)
    alpha = colors.new_zeros(height, width, 1)
    start = 0
    for tile, end in enumerate(ends):
        if end == start:
            continue
        g = gid[start:end]
        start = end
        x0, y0 = (tile % tiles_x) * TILE, (tile // tiles_x) * TILE
        x1, y1 = min(x0 + TILE, width), min(y0 + TILE, height)
        px = torch.arange(x0, x1, dtype=dt, device=dev) + 0.5
        py = torch.arange(y0, y1, dtype=dt, device=dev) + 0.5
        py, px = torch.meshgrid(py, px, indexing="ij")
        px, py = px.reshape(1, -1), py.reshape(1, -1)  # [1,P]
        dx = px - means2d[g, 0:1]  # [n,P]
        dy = py - means2d[g, 1:2]
        cg = conics[g]
        sigma = 0.5 * (cg[:, 0:1] * dx * dx + cg[:, 2:3] * dy * dy) + cg[:, 1:2] * dx * dy
        a = torch.clamp_max(opacities[g, None] * torch.exp(-sigma), ALPHA_MAX)
        a = torch.where((sigma >= 0) & (a >= ALPHA_MIN), a, 0.0)
        with torch.no_grad():
            keep = torch.cumprod(1.0 - a, 0) > T_MIN  # front-to-back stop
        a = a * keep
        trans = torch.cumprod(1.0 - a, 0)  # T after each Gaussian
        before = torch.cat([torch.ones_like(trans[:1]), trans[:-1]], 0)
        tile_out = (a * before).T @ colors[g]  # [P,C]
        out[y0:y1, x0:x1] = tile_out.reshape(y1 - y0, x1 - x0, n_ch)
        alpha[y0:y1, x0:x1, 0] = (1.0 - trans[-1]).reshape(y1 - y0, x1 - x0)
    return out, alpha


def render_reference(
    scene: GaussianScene,
    camera: Camera,
    *,
    features: Tensor | None = None,
    background: Tensor | tuple[float, float, float] | None = None,
    near: float = 0.01,
    far: float = 1e10,
    eps2d: float = 0.3,
    sh_degree: int | None = None,
    rasterizer: Literal["dense", "tiled"] = "dense",
    dtype: torch.dtype = torch.float64,
) -> RenderOutput:
    """`render`'s outputs from the reference projection and a reference rasterizer, in `dtype`.

    "dense" evaluates every Gaussian at every pixel (small images only); "tiled" loops over tiles."""
    sp = project_reference(
        scene,
        camera,
        near=near,
        far=far,
        eps2d=eps2d,
        sh_degree=sh_degree,
        features=features,
        dtype=dtype,
    )
    if rasterizer == "dense":
        from ._raster_reference import rasterize_reference as raster
    elif rasterizer == "tiled":
        raster = rasterize_tiled
    else:
        raise ValueError(f"rasterizer must be 'dense' or 'tiled', got {rasterizer!r}")
    img, alpha = raster(
        sp.means2d,
        sp.conics,
        sp.opacities,
        sp.colors,
        sp.depths,
        sp.radii,
        camera.width,
        camera.height,
    )
    rgb = img[..., :3]
    if background is not None:
        bg = torch.as_tensor(background, dtype=dtype, device=img.device)
        rgb = rgb + (1.0 - alpha) * bg
    depth = torch.where(alpha > 0, img[..., 3:4] / alpha.clamp_min(torch.finfo(dtype).tiny), 0.0)
    feats = img[..., 4:] if features is not None else None
    return RenderOutput(rgb, alpha, depth, feats, sp.radii, sp.means2d)
