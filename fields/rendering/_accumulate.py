"""Per-Gaussian sums of blending weights over one view: the core of training-free lifting.

For a camera and a per-pixel value map V [H,W,C] (features, a mask and its complement, ...):

    sums[i, c] = sum_p w_ip V[p, c]        total[i] = sum_p w_ip

where w_ip = alpha_i(p) T_i(p) is Gaussian i's blending weight at pixel p, exactly as `render`
composites it (Occam's LGS, LUDVIG and Dr. Splat lift 2D features to Gaussians with these sums:
a weighted average is sums / total).

On CPU scenes a forward-only pass of the compiled rasterizer computes both (`_csrc`,
`accumulate_tile`): it reuses the forward pass's splat records, depth sort and tile lists, and
its per-pixel transmittance, skip and stop rules (the weights are bit-identical to the forward
pass's), summing each Gaussian's weights over a tile in registers. Elsewhere (gsplat / CUDA)
`accumulate_weights_autograd` gets the same sums by the linearity trick: render zero features
that require grad and back-propagate V (one render and one backward pass).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..camera import Camera
from ..scene import GaussianScene
from ._render import _check_camera, _intrinsics, render, resolve_backend

__all__ = ["WeightSums", "accumulate_weights", "accumulate_weights_autograd"]


@dataclass(frozen=True, eq=False)
class WeightSums:
    """Blending weights of one view summed per Gaussian (units: pixels of weight)."""

    sums: Tensor | None  # [N,C] sum_p w_ip V[p,c]; None when no values were given
    total: Tensor  # [N] sum_p w_ip; 0 for Gaussians the view does not see (culled, occluded)


def accumulate_weights(
    scene: GaussianScene,
    camera: Camera,
    values: Tensor | None = None,  # [H,W,C] per-pixel values to lift; None = totals only
    *,
    backend: str = "auto",
    near: float = 0.01,
    far: float = 1e10,
    eps2d: float = 0.3,
) -> WeightSums:
    """Each Gaussian's blending weights w_ip = alpha_i(p) T_i(p) in this view, summed over the
    pixels: `total` [N], and against `values` [H,W,C]: `sums` [N,C]. No gradients.

    The weights are `render`'s (gsplat classic: pixel centres at +0.5, `eps2d` added to the 2D
    covariance, alpha clamped to 0.999, below 1/255 skipped, a pixel stops before the Gaussian
    that would take its transmittance to 1e-4); Gaussians the projection culls get 0. The scene
    is used as given (hide Gaussians beforehand if they should neither draw nor occlude).
    Backends as `render`: "cpu" runs the compiled forward-only pass; "gsplat" (or a scene on
    another device) goes through `accumulate_weights_autograd`. Results are float32 on the
    scene's device."""
    if not isinstance(scene, GaussianScene):
        raise TypeError(f"accumulate_weights expects a GaussianScene, got {type(scene).__name__}")
    if not isinstance(camera, Camera):
        raise TypeError(f"accumulate_weights expects a Camera, got {type(camera).__name__}")
    values = _check_values(values, camera)
    name = resolve_backend(backend, scene.device)
    if name != "cpu" or scene.device.type != "cpu":
        return accumulate_weights_autograd(
            scene, camera, values, backend=name, near=near, far=far, eps2d=eps2d
        )
    _check_camera(camera)
    if not 0.0 < near < far:
        raise ValueError(f"need 0 < near < far, got near={near}, far={far}")
    if not eps2d >= 0.0:
        raise ValueError(f"eps2d must be >= 0, got {eps2d}")
    n = len(scene)
    channels = None if values is None else values.shape[2]
    if n == 0:
        return WeightSums(None if channels is None else torch.zeros(0, channels), torch.zeros(0))

    sp = project_for_weights(scene, camera, near=near, far=far, eps2d=eps2d)
    return accumulate_splats(
        sp.means2d,
        sp.conics,
        sp.opacities,
        sp.depths,
        sp.radii,
        values,
        camera.width,
        camera.height,
    )


def project_for_weights(
    scene: GaussianScene,
    camera: Camera,
    *,
    near: float = 0.01,
    far: float = 1e10,
    eps2d: float = 0.3,
):
    """`render`'s compiled projection of `scene` into `camera`, without colour work (degree-0 SH
    keeps it to a constant): the screen-space splats `accumulate_splats` takes."""
    from ._project_cpu import project_cpu

    with torch.no_grad():
        return project_cpu(
            scene.means,
            scene.quats,
            scene.scales,
            scene.opacities,
            scene.sh[:, :1],
            camera.viewmat,
            _intrinsics(camera),
            near=float(near),
            far=float(far),
            eps2d=float(eps2d),
            sh_degree=0,
            campos=camera.center,
        )


def accumulate_splats(
    means2d: Tensor,  # [N,2] pixel coordinates (pixel (i,j) centre at (i+0.5, j+0.5))
    conics: Tensor,  # [N,3] (a, b, c) of the inverse 2D covariance
    opacities: Tensor,  # [N] activated
    depths: Tensor,  # [N] sort key, front (small) to back
    radii: Tensor,  # [N,2] int bbox half-extents; any <= 0 = culled
    values: Tensor | None,  # [H,W,C]
    width: int,
    height: int,
) -> WeightSums:
    """The compiled pass on screen-space splats, `rasterize_cpu`'s inputs without colours: the
    weights are those `rasterize_cpu` composites with, bit for bit. CPU tensors, no gradients."""
    from ._cpu import _ext

    n = means2d.shape[0]
    for name, t, shape in (
        ("means2d", means2d, (n, 2)),
        ("conics", conics, (n, 3)),
        ("opacities", opacities, (n,)),
        ("depths", depths, (n,)),
        ("radii", radii, (n, 2)),
    ):
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} must be {list(shape)} with N={n}, got {tuple(t.shape)}")
        if t.device.type != "cpu":
            raise ValueError(f"accumulate_splats needs CPU tensors; {name} is on {t.device}")
    if values is not None and (values.ndim != 3 or values.shape[:2] != (height, width)):
        raise ValueError(f"values must be [H={height}, W={width}, C], got {tuple(values.shape)}")
    f32 = [
        t.detach().to(torch.float32).contiguous().numpy()
        for t in (means2d, conics, opacities, depths)
    ]
    sums, total = _ext.accumulate(
        *f32,
        radii.detach().to(torch.int32).contiguous().numpy(),
        None if values is None else values.detach().to("cpu", torch.float32).contiguous().numpy(),
        int(width),
        int(height),
        torch.get_num_threads(),
    )
    return WeightSums(None if values is None else torch.from_numpy(sums), torch.from_numpy(total))


def accumulate_weights_autograd(
    scene: GaussianScene,
    camera: Camera,
    values: Tensor | None = None,  # [H,W,C]
    *,
    backend: str = "auto",
    near: float = 0.01,
    far: float = 1e10,
    eps2d: float = 0.3,
) -> WeightSums:
    """`accumulate_weights` by autograd, for any `render` backend: render C + 1 zero feature
    channels that require grad and back-propagate [V, 1]. A rendered feature map is linear in
    the features, out[p] = sum_i w_ip f_i, so d(sum_p,c out[p,c] m[p,c]) / d f_ic =
    sum_p w_ip m[p,c] exactly; the constant channel gives `total`. Costs a render of C + 1
    channels and its backward pass."""
    values = _check_values(values, camera)
    n = len(scene)
    channels = 0 if values is None else values.shape[2]
    scene = scene.detach()
    probe = torch.zeros(n, channels + 1, device=scene.device, requires_grad=True)
    out = render(scene, camera, features=probe, backend=backend, near=near, far=far, eps2d=eps2d)
    assert out.features is not None
    ones = torch.ones(camera.height, camera.width, 1, device=out.features.device)
    m = ones if values is None else torch.cat([values.to(out.features.device), ones], -1)
    if n == 0:
        grad = torch.zeros_like(probe)
    else:
        (grad,) = torch.autograd.grad((out.features * m).sum(), probe)
    grad = grad.detach()
    return WeightSums(None if values is None else grad[:, :channels], grad[:, channels])


def _check_values(values: Tensor | None, camera: Camera) -> Tensor | None:
    if values is None:
        return None
    if not isinstance(values, Tensor):
        raise TypeError(f"values must be a Tensor [H,W,C] or None, got {type(values).__name__}")
    h, w = camera.height, camera.width
    if values.ndim != 3 or values.shape[:2] != (h, w) or values.shape[2] < 1:
        hint = " (add a channel axis: values[..., None])" if values.shape == (h, w) else ""
        raise ValueError(
            f"values must be [H={h}, W={w}, C>=1] for a {w}x{h} camera, "
            f"got {tuple(values.shape)}{hint}"
        )
    if values.is_complex():
        raise ValueError(f"values must be real, got {values.dtype}")
    values = values.detach().to(torch.float32)
    if not bool(torch.isfinite(values).all()):
        raise ValueError("values must be finite (NaN or inf at some pixel)")
    return values.contiguous()
