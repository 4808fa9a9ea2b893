"""Backend "gsplat": gsplat's CUDA rasterizer, fed the same colour channels as the CPU backend.

We shade SH ourselves in plain torch (`fields._sh.eval_sh`, gsplat's convention) and append camera
z and the features, then hand gsplat an arbitrary-channel `colors [N,D]` with `sh_degree=None` and
`render_mode="RGB"`: both backends then rasterize identical per-Gaussian inputs, and the
rgb/depth/feature split and the background are applied by `render` for both. gsplat pads D to a
supported channel count and renders D > 32 in chunks of 32 by itself.
"""

from __future__ import annotations

from types import ModuleType

import torch
from torch import Tensor

from .._sh import eval_sh
from ..camera import Camera
from ..scene import GaussianScene
from ._render import RawRender, RenderArgs


def _import_gsplat() -> ModuleType:
    try:
        import gsplat
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "render backend 'gsplat' needs the gsplat package and a CUDA build of torch: "
            "`pip install gsplat` (its CUDA kernels compile on first use unless a prebuilt wheel "
            "matches your torch/CUDA), or use backend='cpu' with CPU tensors"
        ) from e
    return gsplat


def render_gsplat(
    scene: GaussianScene, camera: Camera, features: Tensor | None, args: RenderArgs
) -> RawRender:
    if scene.device.type != "cuda":
        raise ValueError(
            f"backend='gsplat' needs CUDA tensors but the scene is on {scene.device}; "
            "use backend='cpu' (or 'auto'), or move the scene with scene.to('cuda')"
        )
    gsplat = _import_gsplat()
    dev = scene.device
    viewmat = camera.viewmat.to(dev)
    K = camera.K.to(dev)
    campos = camera.center.to(dev)

    z = scene.means @ viewmat[2, :3] + viewmat[2, 3]  # camera z, the depth channel
    k = (args.sh_degree + 1) ** 2
    rgb = eval_sh(scene.sh[:, :k], scene.means - campos)
    parts = [rgb, z[:, None]] + ([] if features is None else [features])
    colors = torch.cat(parts, dim=-1)

    image, alpha, meta = gsplat.rasterization(
        means=scene.means,
        quats=scene.quats,  # gsplat normalises
        scales=torch.exp(scene.scales),
        opacities=torch.sigmoid(scene.opacities),
        colors=colors,
        viewmats=viewmat[None],
        Ks=K[None],
        width=camera.width,
        height=camera.height,
        near_plane=args.near,
        far_plane=args.far,
        radius_clip=0.0,
        eps2d=args.eps2d,
        sh_degree=None,
        packed=False,
        render_mode="RGB",
        rasterize_mode="classic",
    )
    radii = meta["radii"][0]
    if radii.ndim == 1:  # gsplat < 1.5 returns one radius per Gaussian
        radii = radii[:, None].expand(-1, 2)
    means2d = meta["means2d"]  # [1,N,2]: the tensor on the autograd path (gsplat's strategies
    # retain its gradient for densification); [0] is a view of it
    return RawRender(image[0], alpha[0], radii.to(torch.int32), means2d[0], means2d)
