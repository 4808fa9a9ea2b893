"""`render`: one entry point over the rasterizer backends ("cpu" compiled kernel, "gsplat" CUDA).

Every backend rasterizes the same per-Gaussian channels in one pass, [rgb(3), camera z(1),
features(C)] with the same opacities and screen-space geometry, and this module turns the result
into `RenderOutput`: rgb over the background, expected depth (accumulated z / alpha, gsplat's
"ED"), features without background.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from ..camera import Camera
from ..scene import GaussianScene
from ._project import Intrinsics, check_sh_degree


@dataclass(frozen=True, eq=False)
class RenderOutput:
    """What one view of a scene looks like. Images are [H,W,...]; per-Gaussian facts are [N,...]."""

    rgb: Tensor  # [H,W,3] accumulated colour + (1 - alpha) * background
    alpha: Tensor  # [H,W,1] accumulated opacity
    depth: Tensor  # [H,W,1] expected camera z = sum(w z) / alpha; 0 where alpha == 0
    features: Tensor | None  # [H,W,C] when per-Gaussian features were passed; no background
    radii: Tensor  # [N,2] int32 screen bounding-box half-extents in pixels; (0, 0) = not visible
    means2d: Tensor  # [N,2] projected centres in pixels (centre of pixel (i,j) at (i+0.5, j+0.5));
    # meaningful only where radii > 0
    # The tensor the rasterizer consumed, [N,2] or gsplat's [1,N,2]: the screen-space gradient
    # (what densification reads) lands there, which need not be `means2d` itself.
    means2d_source: Tensor | None = None

    def retain_means2d_grad(self) -> None:
        """Keep d loss / d means2d through the next backward (see `means2d_grad`)."""
        src = self.means2d if self.means2d_source is None else self.means2d_source
        if src.requires_grad:
            src.retain_grad()

    def means2d_grad(self) -> Tensor | None:
        """[N,2] d loss / d means2d (pixels) after backward, when `retain_means2d_grad` was
        called first; None when no gradient reached the screen positions."""
        src = self.means2d if self.means2d_source is None else self.means2d_source
        return None if src.grad is None else src.grad.reshape(-1, 2)

    @property
    def visible(self) -> Tensor:
        """[N] bool: the Gaussian's footprint reaches the image (radii > 0)."""
        return (self.radii > 0).all(-1)


class RawRender(NamedTuple):
    image: Tensor  # [H,W,4+C] rgb, accumulated z, features; no background
    alpha: Tensor  # [H,W,1]
    radii: Tensor  # [N,2] int32
    means2d: Tensor  # [N,2]
    means2d_source: Tensor | None = None  # what the rasterizer consumed, when not means2d


class RenderArgs(NamedTuple):
    near: float
    far: float
    eps2d: float
    sh_degree: int


Backend = Callable[[GaussianScene, Camera, Tensor | None, RenderArgs], RawRender]


def _render_cpu(
    scene: GaussianScene, camera: Camera, features: Tensor | None, args: RenderArgs
) -> RawRender:
    """The compiled projection + SH, then the compiled multi-threaded tile rasterizer."""
    if scene.device.type != "cpu":
        raise ValueError(
            f"backend='cpu' renders CPU tensors but the scene is on {scene.device}; use "
            "backend='gsplat' (or 'auto') for CUDA scenes, or move it once with scene.to('cpu') "
            "(render never copies a scene between devices behind your back)"
        )
    from ._cpu import rasterize_cpu
    from ._project_cpu import project_cpu

    sp = project_cpu(
        scene.means,
        scene.quats,
        scene.scales,
        scene.opacities,
        scene.sh,
        camera.viewmat,
        _intrinsics(camera),
        near=args.near,
        far=args.far,
        eps2d=args.eps2d,
        sh_degree=args.sh_degree,
        features=features,
        campos=camera.center,
    )
    image, alpha = rasterize_cpu(
        sp.means2d,
        sp.conics,
        sp.opacities,
        sp.colors,
        sp.depths,
        sp.radii,
        camera.width,
        camera.height,
    )
    return RawRender(image, alpha, sp.radii, sp.means2d)


def _render_gsplat(
    scene: GaussianScene, camera: Camera, features: Tensor | None, args: RenderArgs
) -> RawRender:
    from ._gsplat import render_gsplat

    return render_gsplat(scene, camera, features, args)


BACKENDS: dict[str, Backend] = {"cpu": _render_cpu, "gsplat": _render_gsplat}


@functools.cache
def gsplat_available() -> bool:
    """gsplat is importable (its CUDA kernels are compiled or loaded on first use)."""
    return importlib.util.find_spec("gsplat") is not None


def resolve_backend(backend: str, device: torch.device) -> str:
    """The backend that `backend` names for tensors on `device` ("auto": gsplat for CUDA)."""
    if backend == "auto":
        return "gsplat" if device.type == "cuda" and gsplat_available() else "cpu"
    if backend not in BACKENDS:
        raise ValueError(
            f"unknown render backend {backend!r}; expected 'auto' or one of {sorted(BACKENDS)}"
        )
    return backend


def render(
    scene: GaussianScene,
    camera: Camera,
    *,
    backend: str = "auto",
    features: Tensor | None = None,  # [N,C] per-Gaussian features to render alongside rgb
    background: Tensor | tuple[float, float, float] | None = None,  # [3] rgb; None = black
    near: float = 0.01,
    far: float = 1e10,
    eps2d: float = 0.3,
    sh_degree: int | None = None,
) -> RenderOutput:
    """Render `scene` from `camera`: rgb, alpha, expected depth and optional feature channels.

    Differentiable w.r.t. the scene's means, quats, scales, opacities, sh and `features`.
    Backends: "gsplat" (CUDA tensors), "cpu" (CPU tensors; raises for CUDA ones instead of
    copying), "auto" = gsplat for CUDA tensors when gsplat imports, else cpu. Both rasterize
    gsplat's "classic" mode: EWA projection with `eps2d` added to the 2D covariance, opacity-aware
    bounding boxes, 16x16 tiles, alpha = min(0.999, o exp(-sigma)) skipped below 1/255, front to back
    until transmittance would drop to 1e-4. `sh_degree` (default: the scene's) may truncate SH.
    """
    if not isinstance(scene, GaussianScene):
        raise TypeError(f"render expects a GaussianScene, got {type(scene).__name__}")
    if not isinstance(camera, Camera):
        raise TypeError(f"render expects a Camera, got {type(camera).__name__}")
    _check_camera(camera)
    if not 0.0 < near < far:
        raise ValueError(f"need 0 < near < far, got near={near}, far={far}")
    if not eps2d >= 0.0:
        raise ValueError(f"eps2d must be >= 0, got {eps2d}")
    degree = check_sh_degree(scene.sh, sh_degree)
    features = _check_features(features, scene)
    bg = _check_background(background, scene.device)
    name = resolve_backend(backend, scene.device)
    args = RenderArgs(float(near), float(far), float(eps2d), degree)

    if len(scene) == 0:
        raw = _empty(scene, camera, features)
    else:
        raw = BACKENDS[name](scene, camera, features, args)
    image, alpha = raw.image, raw.alpha
    rgb = image[..., :3]
    if bg is not None:
        rgb = rgb + (1.0 - alpha) * bg
    # Where alpha == 0 the accumulated z is 0 as well, so the clamp yields depth 0 there.
    depth = image[..., 3:4] / alpha.clamp_min(1e-10)
    feats = image[..., 4:] if features is not None else None
    return RenderOutput(rgb, alpha, depth, feats, raw.radii, raw.means2d, raw.means2d_source)


# ---------------------------------------------------------------------- helpers
def _intrinsics(camera: Camera) -> Intrinsics:
    return Intrinsics(camera.fx, camera.fy, camera.cx, camera.cy, camera.width, camera.height)


def _check_camera(camera: Camera) -> None:
    # Camera validates at construction, but its tensors are mutable: check what we rely on.
    if camera.K.shape != (3, 3) or camera.viewmat.shape != (4, 4):
        raise ValueError(
            f"camera K must be [3,3] and viewmat [4,4], got {tuple(camera.K.shape)} and {tuple(camera.viewmat.shape)}"
        )
    if not (torch.isfinite(camera.K).all() and torch.isfinite(camera.viewmat).all()):
        raise ValueError("camera K and viewmat must be finite")
    if not (camera.fx > 0 and camera.fy > 0):
        raise ValueError(
            f"camera focal lengths must be positive, got fx={camera.fx}, fy={camera.fy}"
        )


def _check_features(features: Tensor | None, scene: GaussianScene) -> Tensor | None:
    if features is None:
        return None
    if not isinstance(features, Tensor):
        raise TypeError(f"features must be a Tensor [N,C], got {type(features).__name__}")
    n = len(scene)
    if features.ndim != 2 or features.shape[0] != n or features.shape[1] < 1:
        raise ValueError(
            f"features must have shape [N={n}, C>=1] (one row per Gaussian), got {tuple(features.shape)}"
        )
    if not features.is_floating_point():
        raise ValueError(f"features must be floating point, got {features.dtype}")
    if features.device != scene.device:
        raise ValueError(f"features are on {features.device} but the scene is on {scene.device}")
    return features.to(torch.float32)


def _check_background(background: Tensor | tuple | None, device: torch.device) -> Tensor | None:
    if background is None:
        return None
    bg = torch.as_tensor(background, dtype=torch.float32)
    if bg.shape != (3,):
        raise ValueError(f"background must be an rgb triple [3], got shape {tuple(bg.shape)}")
    if not torch.isfinite(bg).all():
        raise ValueError("background must be finite")
    return bg.to(device)


def _empty(scene: GaussianScene, camera: Camera, features: Tensor | None) -> RawRender:
    ch = 4 + (0 if features is None else features.shape[1])
    h, w, dev = camera.height, camera.width, scene.device
    return RawRender(
        torch.zeros(h, w, ch, device=dev),
        torch.zeros(h, w, 1, device=dev),
        torch.zeros(0, 2, dtype=torch.int32, device=dev),
        torch.zeros(0, 2, device=dev),
    )
