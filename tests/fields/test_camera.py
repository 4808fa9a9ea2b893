import pytest
import torch

from fields.camera import Camera


def project(cam: Camera, p):
    pc = cam.viewmat.double() @ torch.tensor([*p, 1.0], dtype=torch.float64)
    uv = cam.K.double() @ (pc[:3] / pc[2])
    return uv[:2], pc[2]


K = torch.tensor([[100.0, 0, 32], [0, 100.0, 24], [0, 0, 1]])


def test_look_at_puts_target_at_principal_point_and_up_is_up():
    cam = Camera.look_at((2.0, 0.0, 1.0), (0.0, 0.0, 0.0), (0.0, 0.0, 1.0), K, 64, 48)
    uv, z = project(cam, (0.0, 0.0, 0.0))
    assert torch.allclose(uv, torch.tensor([32.0, 24.0], dtype=torch.float64), atol=1e-4)
    assert z > 0
    # A point above the target appears higher in the image (smaller v: OpenCV y points down).
    uv_up, _ = project(cam, (0.0, 0.0, 0.2))
    assert uv_up[1] < uv[1]
    assert torch.allclose(cam.center, torch.tensor([2.0, 0.0, 1.0]), atol=1e-5)


def test_opengl_c2w_converts_to_opencv():
    cam_cv = Camera.look_at((1.0, 2.0, 3.0), (0.0, 0.0, 0.0), (0.0, 0.0, 1.0), K, 64, 48)
    c2w_gl = cam_cv.c2w.double() @ torch.diag(
        torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64)
    )
    cam_gl = Camera.from_c2w(c2w_gl, K, 64, 48, opengl=True)
    assert torch.allclose(cam_gl.viewmat, cam_cv.viewmat, atol=1e-5)


def test_scaled_keeps_projection_consistent():
    cam = Camera.look_at((2.0, 0.5, 1.0), (0.0, 0.0, 0.0), (0.0, 0.0, 1.0), K, 64, 48)
    half = cam.scaled(0.5)
    assert (half.width, half.height) == (32, 24)
    p = (0.1, -0.2, 0.05)
    uv, _ = project(cam, p)
    uv2, _ = project(half, p)
    assert torch.allclose(uv2, uv / 2, atol=1e-4)


def test_validation():
    with pytest.raises(ValueError, match="K"):
        Camera(torch.eye(2), torch.eye(4), 4, 4)
    with pytest.raises(ValueError, match="size"):
        Camera(K, torch.eye(4), 0, 4)
    with pytest.raises(ValueError, match="finite"):
        Camera(K, torch.full((4, 4), float("nan")), 4, 4)
    with pytest.raises(ValueError, match="parallel"):
        Camera.look_at((0, 0, 1.0), (0, 0, 0), (0, 0, 1.0), K, 4, 4)
