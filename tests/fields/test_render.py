"""`fields.render`: the CPU backend against the float64 reference pipeline, gradients, the
projection's analytic values, background/validation behaviour, and gsplat parity on CUDA."""

from __future__ import annotations

import math

import pytest
import torch

from fields import Camera, GaussianScene, render
from fields.rendering._reference import project_reference, render_reference
from fields.rendering._render import resolve_backend
from fields.scene import rgb_to_sh

W, H = 64, 48
K = torch.tensor([[60.0, 0.0, 32.0], [0.0, 58.0, 24.0], [0.0, 0.0, 1.0]])


def make_camera(width: int = W, height: int = H) -> Camera:
    Kc = K.clone()
    Kc[0] *= width / W
    Kc[1] *= height / H
    return Camera.look_at((0.3, -4.0, 1.2), (0.0, 0.0, 0.2), (0.0, 0.0, 1.0), Kc, width, height)


def random_scene(n: int, degree: int, seed: int = 0, hard_cases: bool = True) -> GaussianScene:
    """Gaussians in front of `make_camera`, plus (with hard_cases) some behind the camera,
    off-screen, tiny, huge, nearly transparent and very anisotropic ones."""
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g) * 2 - 1) * torch.tensor([1.6, 1.2, 1.0])
    quats = torch.randn(n, 4, generator=g) * torch.rand(n, 1, generator=g) * 3  # unnormalised
    scales = torch.empty(n, 3).uniform_(math.log(0.01), math.log(0.25), generator=g)
    opac = torch.randn(n, generator=g) * 1.5
    k = (degree + 1) ** 2
    sh = torch.randn(n, k, 3, generator=g) * 0.3
    sh[:, 0] = rgb_to_sh(torch.rand(n, 3, generator=g))
    if hard_cases and n >= 40:
        means[0:4] = torch.tensor([0.3, -4.5, 1.2]) + torch.randn(4, 3, generator=g) * 0.1  # behind
        means[4:6, 0] = torch.tensor([-9.0, 9.0])  # off-screen sideways
        means[6:8, 2] = torch.tensor([-9.0, 9.0])  # off-screen below and above
        scales[8:12] = math.log(1e-4)  # tiny: eps2d dominates
        scales[12:14] = math.log(1.5)  # huge: covers much of the image
        opac[14:16] = -8.0  # opacity < 1/255: culled
        scales[16:20, 0] = math.log(0.8)  # long needles
        scales[16:20, 1:] = math.log(0.005)
        means[20:22] = torch.tensor([0.3, -3.0, 1.2]) + torch.randn(2, 3, generator=g) * 0.2  # near
        # centres off-screen whose footprints still reach into the image
        means[22, 0], scales[22] = 2.2, math.log(0.4)
        means[23, 2], scales[23] = -1.9, math.log(0.4)
        # far outside the field of view (x/z beyond gsplat's Jacobian clamp), tails reach in
        means[24], scales[24], opac[24] = torch.tensor([4.6, 0.0, 0.6]), math.log(1.0), 3.0
        means[25], scales[25], opac[25] = torch.tensor([-4.0, 0.0, -2.6]), math.log(1.0), 3.0
    return GaussianScene(means, quats, scales, opac, sh)


def psnr(x: torch.Tensor, ref: torch.Tensor, peak: float | None = None) -> float:
    x, ref = x.double(), ref.double()
    peak = float(ref.max() - ref.min()) if peak is None else peak
    mse = float(((x - ref) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)


def grad_agreement(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """(cosine similarity, relative L2 error) of a against the reference b."""
    a, b = a.double().flatten(), b.double().flatten()
    cos = float(torch.nn.functional.cosine_similarity(a, b, dim=0))
    rel = float((a - b).norm() / b.norm().clamp_min(1e-30))
    return cos, rel


# ---------------------------------------------------------------------- forward vs reference
@pytest.mark.parametrize(
    ("n", "degree", "size", "n_feat"),
    [
        (0, 0, (W, H), 8),
        (1, 1, (W, H), 0),
        (300, 3, (W, H), 8),
        (250, 2, (40, 33), 8),
        (200, 0, (W, H), 0),
    ],
)
def test_cpu_matches_reference(n, degree, size, n_feat):
    scene = random_scene(n, degree, seed=n + degree)
    if n == 1:  # make the single Gaussian visible
        scene = scene.replace(means=torch.zeros(1, 3), opacities=torch.full((1,), 2.0))
    cam = make_camera(*size)
    feats = torch.randn(n, n_feat, generator=torch.Generator().manual_seed(3)) if n_feat else None
    out = render(scene, cam, backend="cpu", features=feats)
    if n == 0:
        ref_alpha = torch.zeros(cam.height, cam.width, 1)
        assert torch.equal(out.alpha, ref_alpha) and torch.equal(out.rgb, torch.zeros_like(out.rgb))
        assert out.radii.shape == (0, 2) and out.means2d.shape == (0, 2)
        assert out.features is not None and out.features.shape == (cam.height, cam.width, n_feat)
        return
    ref = render_reference(scene, cam, features=feats)
    assert out.rgb.shape == (cam.height, cam.width, 3) and out.alpha.shape == (
        cam.height,
        cam.width,
        1,
    )
    assert out.depth.shape == (cam.height, cam.width, 1)
    assert float(ref.alpha.max()) > 0.3, "the scene should cover part of the image"
    assert psnr(out.rgb, ref.rgb, 1.0) >= 45
    assert psnr(out.alpha, ref.alpha, 1.0) >= 45
    assert psnr(out.depth, ref.depth) >= 45
    if n_feat:
        assert out.features.shape == (cam.height, cam.width, n_feat)
        assert psnr(out.features, ref.features) >= 45
    else:
        assert out.features is None
    # per-Gaussian outputs: same visible set and boxes (float32 vs float64 may move a ceil by 1)
    assert out.radii.dtype == torch.int32 and out.radii.shape == (n, 2)
    vis, ref_vis = out.visible, (ref.radii > 0).all(-1)
    assert int((vis != ref_vis).sum()) <= max(1, n // 100)
    both = vis & ref_vis
    assert int((out.radii[both] - ref.radii[both]).abs().amax()) <= 1
    torch.testing.assert_close(out.means2d[both].double(), ref.means2d[both], atol=1e-3, rtol=1e-5)
    if n >= 40:  # the hard cases were culled or kept as they should be
        assert not vis[0:8].any() and not vis[14:16].any()
        assert vis[12:14].all() and vis[22:26].all()


def test_hard_cases_are_exercised():
    """Guards the fixture: the scene really has culled, huge and edge Gaussians in view."""
    scene = random_scene(300, 3, seed=3)
    sp = project_reference(scene, make_camera())
    vis = (sp.radii > 0).all(-1)
    assert 150 < int(vis.sum()) < 300
    assert int(sp.radii.max()) > W // 2  # a huge one
    assert float(sp.depths[0:4].max()) < 0.01  # behind the camera
    assert float(sp.means2d[22, 0]) > W and vis[22]  # centre off-screen, footprint inside


def test_tiled_reference_matches_dense_reference():
    scene = random_scene(200, 2, seed=5)
    cam = make_camera()
    feats = torch.randn(200, 4, generator=torch.Generator().manual_seed(1))
    dense = render_reference(scene, cam, features=feats)
    tiled = render_reference(scene, cam, features=feats, rasterizer="tiled")
    for a, b in (
        (tiled.rgb, dense.rgb),
        (tiled.alpha, dense.alpha),
        (tiled.features, dense.features),
    ):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


def test_sh_degree_truncates():
    scene = random_scene(120, 3, seed=7)
    cam = make_camera()
    a = render(scene, cam, backend="cpu", sh_degree=1)
    b = render(scene.with_sh_degree(1), cam, backend="cpu")
    torch.testing.assert_close(a.rgb, b.rgb)
    c = render(scene, cam, backend="cpu")
    assert not torch.allclose(a.rgb, c.rgb)


# ---------------------------------------------------------------------- gradients
def _leaves(scene: GaussianScene) -> GaussianScene:
    scene = scene.detach()
    for t in (scene.means, scene.quats, scene.scales, scene.opacities, scene.sh):
        t.requires_grad_(True)
    return scene


def _weighted_loss(out, w) -> torch.Tensor:
    loss = (
        (out.rgb * w["rgb"]).sum() + (out.alpha * w["alpha"]).sum() + (out.depth * w["depth"]).sum()
    )
    if out.features is not None:
        loss = loss + (out.features * w["feat"]).sum()
    return loss


def _grads(scene: GaussianScene, feats: torch.Tensor) -> list[torch.Tensor]:
    return [
        scene.means.grad,
        scene.quats.grad,
        scene.scales.grad,
        scene.opacities.grad,
        scene.sh.grad,
        feats.grad,
    ]


def _loss_weights(n: int, n_feat: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Random per-pixel weights of every output (so each output's gradient path is exercised)
    and start features [n, n_feat], from a fixed seed."""
    g = torch.Generator().manual_seed(4)
    w = {
        "rgb": torch.rand(H, W, 3, generator=g),
        "alpha": torch.rand(H, W, 1, generator=g),
        "depth": torch.rand(H, W, 1, generator=g) * 0.1,
        "feat": torch.rand(H, W, n_feat, generator=g),
    }
    return w, torch.randn(n, n_feat, generator=g)


def test_gradients_match_float64_reference():
    n, n_feat = 160, 8
    base = random_scene(n, 3, seed=21)
    cam = make_camera()
    w, feats0 = _loss_weights(n, n_feat)

    s_cpu, f_cpu = _leaves(base), feats0.clone().requires_grad_(True)
    bg = (0.1, 0.2, 0.3)
    _weighted_loss(render(s_cpu, cam, backend="cpu", features=f_cpu, background=bg), w).backward()
    s_ref, f_ref = _leaves(base), feats0.clone().requires_grad_(True)
    _weighted_loss(render_reference(s_ref, cam, features=f_ref, background=bg), w).backward()

    names = ["means", "quats", "scales", "opacities", "sh", "features"]
    for name, a, b in zip(names, _grads(s_cpu, f_cpu), _grads(s_ref, f_ref), strict=True):
        assert a is not None and torch.isfinite(a).all(), name
        cos, rel = grad_agreement(a, b)
        assert cos > 0.9999 and rel < 5e-3, f"{name}: cos={cos:.6f} rel={rel:.2e}"
    # culled Gaussians get exactly zero gradient, and nothing is NaN for behind-camera ones
    assert torch.equal(s_cpu.means.grad[0:4], torch.zeros(4, 3))


# ---------------------------------------------------------------------- analytic values
def test_single_isotropic_gaussian_projects_where_expected():
    fx, fy, cx, cy = 100.0, 90.0, 32.0, 24.0
    cam = Camera(torch.tensor([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]]), torch.eye(4), W, H)
    z, sigma, o = 2.0, 0.02, 0.8
    px, py = 42.5, 19.5  # centre of pixel (42, 19)
    mean = torch.tensor([[(px - cx) / fx * z, (py - cy) / fy * z, z]])
    color = torch.tensor([[0.25, 0.5, 1.0]])
    scene = GaussianScene.from_activated(
        mean, torch.tensor([[1.0, 0, 0, 0]]), torch.full((1, 3), sigma), torch.tensor([o]), color
    )
    out = render(scene, cam, backend="cpu")
    torch.testing.assert_close(out.means2d, torch.tensor([[px, py]]))
    # cov2d = J (sigma^2 I) J^T + 0.3 I with J = [[fx/z, 0, -fx x/z^2], [0, fy/z, -fy y/z^2]]
    u, v = mean[0, 0] / z, mean[0, 1] / z
    j0 = torch.tensor([fx / z, 0.0, -fx * u / z])
    j1 = torch.tensor([0.0, fy / z, -fy * v / z])
    cov = torch.tensor([[j0 @ j0, j0 @ j1], [j0 @ j1, j1 @ j1]]) * sigma**2 + 0.3 * torch.eye(2)
    extend = math.sqrt(2 * math.log(255 * o))
    expect_r = [math.ceil(extend * math.sqrt(cov[0, 0])), math.ceil(extend * math.sqrt(cov[1, 1]))]
    assert out.radii.tolist() == [expect_r]
    # centre pixel: alpha = o exactly; neighbours follow the analytic Gaussian
    torch.testing.assert_close(out.alpha[19, 42, 0], torch.tensor(o))
    torch.testing.assert_close(out.rgb[19, 42], o * color[0])
    torch.testing.assert_close(out.depth[19, 42, 0], torch.tensor(z))
    conic = torch.linalg.inv(cov)
    for dx, dy in ((1, 0), (0, 1), (1, 1), (-2, 1)):
        d = torch.tensor([float(dx), float(dy)])
        expect = o * torch.exp(-0.5 * d @ conic @ d)
        torch.testing.assert_close(out.alpha[19 + dy, 42 + dx, 0], expect, atol=1e-6, rtol=1e-5)
    assert float(out.alpha[19, 42 + expect_r[0] + 1, 0]) == 0.0  # outside the box: nothing


# ---------------------------------------------------------------------- background, validation
def test_background_is_composited_under_rgb_only():
    scene = random_scene(100, 1, seed=9)
    cam = make_camera()
    feats = torch.randn(100, 2)
    black = render(scene, cam, backend="cpu", features=feats)
    bg = torch.tensor([0.2, 0.4, 0.6])
    over = render(scene, cam, backend="cpu", features=feats, background=bg)
    torch.testing.assert_close(over.rgb, black.rgb + (1 - black.alpha) * bg)
    torch.testing.assert_close(over.features, black.features)
    torch.testing.assert_close(over.depth, black.depth)
    empty = render(GaussianScene.empty(1), cam, backend="cpu", background=(0.2, 0.4, 0.6))
    torch.testing.assert_close(empty.rgb, bg.expand(H, W, 3))
    assert float(empty.alpha.abs().max()) == 0.0 and float(empty.depth.abs().max()) == 0.0
    # depth is 0 where nothing was hit, positive where something was
    assert (black.depth[black.alpha == 0] == 0).all() and (black.depth[black.alpha > 0.5] > 0).all()


def test_invalid_inputs_raise_clear_errors():
    scene = random_scene(10, 0, seed=1, hard_cases=False)
    cam = make_camera()
    with pytest.raises(ValueError, match="N=10"):
        render(scene, cam, features=torch.zeros(9, 4))
    with pytest.raises(ValueError, match="features must have shape"):
        render(scene, cam, features=torch.zeros(10))
    with pytest.raises(ValueError, match="floating point"):
        render(scene, cam, features=torch.zeros(10, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="background"):
        render(scene, cam, background=(1.0, 0.0))
    with pytest.raises(ValueError, match="near"):
        render(scene, cam, near=0.0)
    with pytest.raises(ValueError, match="near"):
        render(scene, cam, near=5.0, far=1.0)
    with pytest.raises(ValueError, match="sh_degree"):
        render(scene, cam, sh_degree=2)
    with pytest.raises(ValueError, match="unknown render backend"):
        render(scene, cam, backend="vulkan")
    with pytest.raises(ValueError, match="CUDA"):
        render(scene, cam, backend="gsplat")  # CPU tensors
    with pytest.raises(TypeError, match="GaussianScene"):
        render(scene.means, cam)  # type: ignore[arg-type]
    bad = make_camera()
    bad.K[0, 0] = float("nan")  # tensors are mutable after construction
    with pytest.raises(ValueError, match="finite"):
        render(scene, bad)


def test_auto_backend_picks_by_device():
    assert resolve_backend("auto", torch.device("cpu")) == "cpu"
    assert resolve_backend("cpu", torch.device("cpu")) == "cpu"


# ---------------------------------------------------------------------- gsplat (CUDA only)
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize(("n", "degree"), [(300, 3), (200, 0)])
def test_gsplat_matches_cpu(n, degree):
    pytest.importorskip("gsplat")
    scene = random_scene(n, degree, seed=n)
    cam = make_camera(96, 72)
    feats = torch.randn(n, 8, generator=torch.Generator().manual_seed(0))
    bg = (0.3, 0.3, 0.3)
    cpu = render(scene, cam, backend="cpu", features=feats, background=bg)
    gpu = render(scene.to("cuda"), cam, backend="auto", features=feats.cuda(), background=bg)
    assert psnr(gpu.rgb.cpu(), cpu.rgb, 1.0) >= 40
    assert psnr(gpu.alpha.cpu(), cpu.alpha, 1.0) >= 40
    assert psnr(gpu.depth.cpu(), cpu.depth) >= 40
    assert psnr(gpu.features.cpu(), cpu.features) >= 40
    vis = cpu.visible & gpu.visible.cpu()
    assert int((cpu.visible != gpu.visible.cpu()).sum()) <= max(1, n // 100)
    torch.testing.assert_close(gpu.means2d.cpu()[vis], cpu.means2d[vis], atol=1e-3, rtol=1e-4)


@pytest.mark.gpu
@cuda
def test_gsplat_gradients_match_cpu():
    pytest.importorskip("gsplat")
    n, n_feat = 200, 8
    base = random_scene(n, 3, seed=31)
    cam = make_camera()
    w, feats0 = _loss_weights(n, n_feat)
    s_cpu, f_cpu = _leaves(base), feats0.clone().requires_grad_(True)
    _weighted_loss(render(s_cpu, cam, backend="cpu", features=f_cpu), w).backward()
    s_gpu, f_gpu = _leaves(base.to("cuda")), feats0.cuda().requires_grad_(True)
    w_gpu = {k: v.cuda() for k, v in w.items()}
    _weighted_loss(render(s_gpu, cam, backend="gsplat", features=f_gpu), w_gpu).backward()
    names = ["means", "quats", "scales", "opacities", "sh", "features"]
    for name, a, b in zip(names, _grads(s_gpu, f_gpu), _grads(s_cpu, f_cpu), strict=True):
        cos, rel = grad_agreement(a.cpu(), b)
        assert cos > 0.99 and rel < 0.1, f"{name}: cos={cos:.4f} rel={rel:.3f}"
