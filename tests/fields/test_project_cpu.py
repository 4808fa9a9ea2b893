"""The compiled projection (`_project_cpu.project_cpu`) against the float64 torch reference
(`_reference.project_reference`): values, and hand-derived gradients against autograd."""

from __future__ import annotations

import math

import pytest
import torch

from fields import Camera, GaussianScene
from fields.rendering._project import Intrinsics
from fields.rendering._project_cpu import project_cpu
from fields.rendering._reference import project_reference

from .test_render import grad_agreement, make_camera, random_scene

NAMES = ("means", "quats", "scales", "opacities", "sh")


def _intr(cam: Camera) -> Intrinsics:
    return Intrinsics(cam.fx, cam.fy, cam.cx, cam.cy, cam.width, cam.height)


def _project(scene: GaussianScene, cam: Camera, degree: int | None = None, **kw):
    return project_cpu(
        scene.means,
        scene.quats,
        scene.scales,
        scene.opacities,
        scene.sh,
        cam.viewmat,
        _intr(cam),
        near=kw.get("near", 0.01),
        far=kw.get("far", 1e10),
        eps2d=kw.get("eps2d", 0.3),
        sh_degree=scene.sh_degree if degree is None else degree,
        campos=cam.center,
    )


def _leaves(scene: GaussianScene) -> GaussianScene:
    """A copy whose float32 tensors are leaves (the reference computes in float64 from them)."""
    scene = scene.detach()
    for name in NAMES:
        getattr(scene, name).requires_grad_(True)
    return scene


def clamped_scene(n: int, degree: int, seed: int) -> GaussianScene:
    """`random_scene` plus rows far outside the field of view (clamped Jacobian) that are still
    visible, and a spread of anisotropies and opacities."""
    scene = random_scene(n, degree, seed=seed)
    means = scene.means.clone()
    scales = scene.scales.clone()
    opac = scene.opacities.clone()
    g = torch.Generator().manual_seed(seed + 100)
    m = 8
    # x/z, y/z beyond the clamp, big enough for the box to reach the image
    means[26 : 26 + m, 0] = torch.linspace(2.5, 4.5, m) * torch.tensor([1.0, -1.0]).repeat(m // 2)
    means[26 : 26 + m, 2] = torch.linspace(-2.8, 2.8, m)
    scales[26 : 26 + m] = math.log(1.0) + 0.3 * torch.randn(m, 3, generator=g)
    opac[26 : 26 + m] = 3.0
    return scene.replace(means=means, scales=scales, opacities=opac)


@pytest.mark.parametrize(
    ("n", "degree", "seed"), [(300, 3, 0), (200, 2, 1), (150, 1, 2), (120, 0, 3)]
)
def test_forward_matches_reference(n, degree, seed):
    scene = clamped_scene(n, degree, seed)
    cam = make_camera(64 + seed * 8, 48)
    sp = _project(scene, cam)
    ref = project_reference(scene, cam)
    vis, ref_vis = (sp.radii > 0).all(-1), (ref.radii > 0).all(-1)
    assert int(ref_vis.sum()) > n // 3
    assert int((vis != ref_vis).sum()) <= max(1, n // 100)
    both = vis & ref_vis
    assert int((sp.radii[both] - ref.radii[both]).abs().amax()) <= 1
    assert (sp.radii[~vis] == 0).all()
    torch.testing.assert_close(sp.means2d[both].double(), ref.means2d[both], atol=1e-3, rtol=1e-5)
    torch.testing.assert_close(sp.conics[both].double(), ref.conics[both], atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(sp.opacities.double(), ref.opacities, atol=1e-7, rtol=1e-6)
    torch.testing.assert_close(sp.colors.double(), ref.colors, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sp.depths.double(), ref.depths, atol=1e-5, rtol=1e-6)
    assert sp.colors.dtype == torch.float32 and sp.radii.dtype == torch.int32
    for t in (sp.means2d, sp.conics, sp.colors):
        assert torch.isfinite(t).all()  # also for culled rows (behind the camera)


def test_sh_degree_truncates_and_sh_is_zero_beyond():
    scene = random_scene(100, 3, seed=4)
    cam = make_camera()
    s = _leaves(scene)
    sp = _project(s, cam, degree=1)
    ref = project_reference(scene, cam, sh_degree=1)
    torch.testing.assert_close(sp.colors.double(), ref.colors, atol=1e-5, rtol=1e-5)
    sp.colors[:, :3].sum().backward()
    assert (s.sh.grad[:, 4:] == 0).all() and s.sh.grad[:, :4].abs().sum() > 0


@pytest.mark.parametrize(
    ("n", "degree", "seed"), [(300, 3, 10), (200, 2, 11), (150, 1, 12), (120, 0, 13)]
)
def test_gradients_match_float64_autograd(n, degree, seed):
    scene = clamped_scene(n, degree, seed)
    cam = make_camera()
    ref = project_reference(scene, cam)
    vis = (ref.radii > 0).all(-1)
    g = torch.Generator().manual_seed(seed)
    # upstream gradients of visible rows only (culled rows get none from the rasterizer)
    ups = [
        torch.randn(n, 2, generator=g),
        torch.randn(n, 3, generator=g) * 10.0,
        torch.randn(n, generator=g),
        torch.randn(n, 4, generator=g),
    ]
    ups = [u * vis.reshape(-1, *([1] * (u.dim() - 1))) for u in ups]

    def loss(sp) -> torch.Tensor:
        outs = (sp.means2d, sp.conics, sp.opacities, sp.colors)
        return sum((o * u.to(o.dtype)).sum() for o, u in zip(outs, ups, strict=True))

    s32 = _leaves(scene)
    sp = _project(s32, cam)
    assert torch.equal((sp.radii > 0).all(-1), vis), "the fixture should have no borderline rows"
    # guard the fixture: some visible rows have their Jacobian clamped (x/z or y/z beyond the
    # image plus 30%), and there are tiny, huge and needle-shaped ones
    mx, my = ref.means2d.detach().unbind(-1)
    w, h = cam.width, cam.height
    clamped = (mx < -0.15 * w) | (mx > 1.15 * w) | (my < -0.15 * h) | (my > 1.15 * h)
    assert int((clamped & vis).sum()) >= 3
    assert vis[8:14].all() and vis[16:20].all()
    loss(sp).backward()
    s64 = _leaves(scene)
    loss(project_reference(s64, cam)).backward()
    for name in NAMES:
        a, b = getattr(s32, name).grad, getattr(s64, name).grad
        assert a is not None and torch.isfinite(a).all(), name
        cos, rel = grad_agreement(a, b)
        assert cos > 0.9999 and rel < 1e-3, f"{name}: cos={cos:.7f} rel={rel:.2e}"
    # culled rows (behind the camera, off-screen, transparent) get exactly zero
    culled = ~vis
    assert culled[0:8].all() and culled[14:16].all()
    for name in NAMES:
        assert (getattr(s32, name).grad[culled] == 0).all(), name


def test_gradient_of_each_output_separately():
    """Each output's gradient path on its own (a wrong term can hide in a sum of others)."""
    scene = clamped_scene(200, 3, seed=20)
    cam = make_camera()
    ref = project_reference(scene, cam)
    vis = (ref.radii > 0).all(-1)
    g = torch.Generator().manual_seed(5)
    for k, pick in enumerate(
        (
            lambda sp: sp.means2d,
            lambda sp: sp.conics,
            lambda sp: sp.opacities,
            lambda sp: sp.colors[:, :3],
            lambda sp: sp.colors[:, 3],
        )
    ):
        up = torch.randn(pick(ref).shape, generator=g, dtype=torch.float64)
        up = up * vis.reshape(-1, *([1] * (up.dim() - 1)))
        s32, s64 = _leaves(scene), _leaves(scene)
        (pick(_project(s32, cam)) * up.float()).sum().backward()
        (pick(project_reference(s64, cam)) * up).sum().backward()
        for name in NAMES:
            a, b = getattr(s32, name).grad, getattr(s64, name).grad
            if b is None or b.abs().max() == 0:  # this output does not depend on the input
                assert a is None or a.abs().max() == 0, (k, name)
                continue
            cos, rel = grad_agreement(a, b)
            assert cos > 0.9999 and rel < 1e-3, f"output {k}, {name}: cos={cos:.7f} rel={rel:.2e}"


@pytest.mark.filterwarnings("ignore:Input #.*double precision:UserWarning")
def test_gradcheck_tiny_well_conditioned_case():
    """gradcheck in float32 needs a large step and loose tolerances; catches structural errors."""
    g = torch.Generator().manual_seed(0)
    n = 3
    means = torch.tensor([[0.0, 0.0, 0.0], [0.3, 0.1, 0.2], [-0.2, 0.2, -0.1]])
    quats = torch.randn(n, 4, generator=g)
    scales = torch.full((n, 3), math.log(0.15)) + 0.2 * torch.randn(n, 3, generator=g)
    opac = torch.tensor([0.5, 1.0, -0.3])
    sh = 0.3 * torch.randn(n, 4, 3, generator=g)
    cam = make_camera()
    intr = _intr(cam)

    def f(means, quats, scales, opac, sh):
        sp = project_cpu(
            means, quats, scales, opac, sh, cam.viewmat, intr,
            near=0.01, far=1e10, eps2d=0.3, sh_degree=1, campos=cam.center,
        )  # fmt: skip
        return sp.means2d / 10.0, sp.conics * 10.0, sp.opacities, sp.colors

    args = [t.clone().requires_grad_(True) for t in (means, quats, scales, opac, sh)]
    assert torch.autograd.gradcheck(f, args, eps=1e-2, atol=2e-2, rtol=2e-2, nondet_tol=0.0)


def test_float64_inputs_get_float64_gradients():
    scene = random_scene(50, 1, seed=6)
    cam = make_camera()
    args = [getattr(scene, name).double().requires_grad_(True) for name in NAMES]
    sp = project_cpu(
        *args, cam.viewmat, _intr(cam), near=0.01, far=1e10, eps2d=0.3, sh_degree=1
    )  # campos derived from viewmat
    assert sp.means2d.dtype == torch.float32
    ref = _project(scene, cam)
    torch.testing.assert_close(sp.colors, ref.colors)
    sp.colors.sum().backward()
    assert all(a.grad is not None and a.grad.dtype == torch.float64 for a in args)


def test_empty_and_invalid_inputs():
    cam = make_camera()
    empty = GaussianScene.empty(2)
    sp = _project(empty, cam)
    assert sp.means2d.shape == (0, 2) and sp.radii.shape == (0, 2) and sp.colors.shape == (0, 4)
    scene = random_scene(10, 1, seed=1, hard_cases=False)
    with pytest.raises(ValueError, match="quats"):
        project_cpu(
            scene.means, scene.quats[:, :3], scene.scales, scene.opacities, scene.sh,
            cam.viewmat, _intr(cam), near=0.01, far=1e10, eps2d=0.3, sh_degree=1,
        )  # fmt: skip
    with pytest.raises(ValueError, match="sh_degree"):
        _project(scene, cam, degree=2)


def test_gradients_of_clamped_jacobian_rows_alone():
    """Rows whose x/z or y/z lies beyond gsplat's clamp, with nothing else in the loss (their
    share of a whole-scene gradient is small enough for an error in the clamp branch to hide)."""
    scene = clamped_scene(300, 3, seed=10)
    cam = make_camera()
    ref = project_reference(scene, cam)
    mx, my = ref.means2d.detach().unbind(-1)
    w, h = cam.width, cam.height
    rows = (ref.radii > 0).all(-1)
    rows &= (mx < -0.15 * w) | (mx > 1.15 * w) | (my < -0.15 * h) | (my > 1.15 * h)
    assert int(rows.sum()) >= 3
    g = torch.Generator().manual_seed(0)
    ups = [torch.randn(300, k, generator=g) * rows[:, None] for k in (2, 3, 1, 4)]

    def loss(sp) -> torch.Tensor:
        outs = (sp.means2d, sp.conics, sp.opacities[:, None], sp.colors)
        return sum((o * u.to(o.dtype)).sum() for o, u in zip(outs, ups, strict=True))

    s32, s64 = _leaves(scene), _leaves(scene)
    loss(_project(s32, cam)).backward()
    loss(project_reference(s64, cam)).backward()
    for name in NAMES:
        cos, rel = grad_agreement(getattr(s32, name).grad, getattr(s64, name).grad)
        assert cos > 0.9999 and rel < 1e-3, f"{name}: cos={cos:.7f} rel={rel:.2e}"
