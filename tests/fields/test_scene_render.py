"""A transformed scene seen from the correspondingly transformed camera renders the same image:
checks means, rotations, scales and SH rotation together through the real renderer."""

import math

import pytest
import torch

from fields import Camera, GaussianScene, render
from fields.scene import quat_to_rotmat


def psnr(a, b):
    mse = torch.mean((a.double() - b.double()) ** 2)
    return float(10 * torch.log10(1.0 / mse.clamp_min(1e-20)))


def sh_scene(n=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    return GaussianScene(
        means=torch.randn(n, 3, generator=g) * 0.4,
        quats=torch.randn(n, 4, generator=g),
        scales=torch.log(torch.rand(n, 3, generator=g) * 0.06 + 0.01),
        opacities=torch.randn(n, generator=g),
        # Strong higher bands: a wrong SH rotation changes colours visibly.
        sh=torch.randn(n, 16, 3, generator=g) * 0.5,
    )


@pytest.mark.parametrize("scale", [1.0, 1.7])
def test_transformed_scene_from_transformed_camera_renders_the_same(scale):
    scene = sh_scene()
    K = torch.tensor([[90.0, 0, 48], [0, 90.0, 40], [0, 0, 1]])
    cam = Camera.look_at((0.3, -2.5, 1.0), (0.0, 0.0, 0.0), (0.0, 0.0, 1.0), K, 96, 80)
    q = torch.nn.functional.normalize(
        torch.tensor([0.3, -0.5, 0.7, 0.2], dtype=torch.float64), dim=0
    )
    R = quat_to_rotmat(q)
    t = torch.tensor([0.5, -0.2, 0.9], dtype=torch.float64)
    T = torch.eye(4, dtype=torch.float64)
    T[:3, :3] = scale * R
    T[:3, 3] = t
    moved = scene.transform(T)
    # x_cam' = scale * x_cam for the moved world point: viewmat' = [Rv Rᵀ | s tv - Rv Rᵀ t].
    V = cam.viewmat.double()
    V2 = torch.eye(4, dtype=torch.float64)
    V2[:3, :3] = V[:3, :3] @ R.T
    V2[:3, 3] = scale * V[:3, 3] - V2[:3, :3] @ t
    cam2 = cam.with_pose(V2)
    a = render(scene, cam, backend="cpu")
    b = render(moved, cam2, backend="cpu")
    assert float(a.alpha.mean()) > 0.2  # the scene fills the view
    assert psnr(a.rgb, b.rgb) > 45
    assert psnr(a.alpha, b.alpha) > 45
    assert torch.allclose(b.depth, a.depth * scale, rtol=1e-3, atol=1e-3)
    # Without rotating SH the colours would differ: the test can fail.
    wrong = moved.replace(sh=scene.sh)
    assert psnr(a.rgb, render(wrong, cam2, backend="cpu").rgb) < 35
    assert math.isfinite(psnr(a.rgb, b.rgb))
