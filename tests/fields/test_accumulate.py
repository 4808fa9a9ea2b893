"""`accumulate_weights`: per-Gaussian sums of blending weights from the compiled forward-only
pass, against the dense float64 reference rasterizer, the forward kernel's own weights (bit for
bit), and the autograd route on a synthetic world."""

from __future__ import annotations

import pytest
import torch

from fields import Camera, GaussianScene
from fields.rendering import WeightSums, accumulate_weights
from fields.rendering._accumulate import accumulate_splats, accumulate_weights_autograd
from fields.rendering._cpu import _ext, rasterize_cpu
from fields.rendering._project_cpu import project_cpu
from fields.rendering._raster_reference import rasterize_reference
from fields.rendering._reference import project_reference
from fields.rendering._render import _intrinsics
from fields.synthetic import WorldConfig, make_world
from tests.fields.test_raster_cpu import CASES, splats2d
from tests.fields.test_render import make_camera, random_scene

W, H = 40, 30


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The dense reference runs many tiny ops: one torch thread is faster on a shared box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def reference_weights(means2d, conics, opacities, depths, radii, width, height):
    """[H,W,N] float64 blending weights w_ip from the dense reference: one one-hot colour
    channel per Gaussian, so the composited image is the weight map itself."""
    n = means2d.shape[0]
    eye = torch.eye(n, dtype=torch.float64)
    weights, _ = rasterize_reference(
        means2d.double(), conics.double(), opacities.double(), eye, depths, radii, width, height
    )
    return weights


def expected_sums(weights, values):
    """(sums [N,C], total [N]) in float64 from [H,W,N] weights and [H,W,C] values."""
    return torch.einsum("hwn,hwc->nc", weights, values.double()), weights.sum((0, 1))


def assert_sums_close(got: torch.Tensor, want: torch.Tensor, name: str, rtol: float = 1e-5):
    """float32 sums of float32 weights vs float64 ones: agree to a few ulps of the largest."""
    assert got.dtype == torch.float32 and got.shape == want.shape, name
    scale = want.abs().max().item()
    err = (got.double() - want).abs().max().item()
    assert err <= rtol * max(scale, 1e-6), f"{name}: max error {err:.3e} vs scale {scale:.3e}"


def random_values(channels: int, seed: int, width: int = W, height: int = H) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(height, width, channels, generator=g)


def project(scene: GaussianScene, camera: Camera):
    """The float32 splats `render` and `accumulate_weights` rasterize."""
    return project_cpu(
        scene.means,
        scene.quats,
        scene.scales,
        scene.opacities,
        scene.sh,
        camera.viewmat,
        _intrinsics(camera),
        near=0.01,
        far=1e10,
        eps2d=0.3,
        sh_degree=scene.sh_degree,
        campos=camera.center,
    )


# ------------------------------------------------------------------ kernel vs references
@pytest.mark.parametrize("name", list(CASES))
def test_splats_match_dense_reference(name):
    """Saturating pixels (the 0.999 clamp and the 1e-4 stop), faint splats straddling 1/255,
    depth ties, indefinite conics, off-screen ones: every rule of the rasterizer."""
    n, width, height, channels, opts = CASES[name]
    means, conics, opac, _, depths, radii = splats2d(n, width, height, 1, seed=len(name), **opts)
    values = random_values(channels, seed=len(name), width=width, height=height)
    got = accumulate_splats(means, conics, opac, depths, radii, values, width, height)
    ref = reference_weights(means, conics, opac, depths, radii, width, height)
    sums, total = expected_sums(ref, values)
    assert_sums_close(got.total, total, "total")
    assert got.sums is not None
    assert_sums_close(got.sums, sums, "sums")
    assert (total > 0).sum() >= 1


@pytest.mark.parametrize("generic", [False, True])
@pytest.mark.parametrize("name", ["rgbd-clamp-and-stop", "indefinite-conics", "faint"])
def test_weights_are_the_forward_kernels_bit_for_bit(name, generic):
    """With one value channel per pixel (values = identity), sums[i, p] is the single weight
    w_ip: it must equal the forward kernel's weight (a one-hot colour per Gaussian) exactly —
    same skip, clamp, stop and transmittance arithmetic, on both instruction-set paths."""
    n, width, height, _, opts = CASES[name]
    means, conics, opac, _, depths, radii = splats2d(n, width, height, 1, seed=len(name), **opts)
    pixels = torch.eye(width * height).reshape(height, width, width * height)
    _ext.force_generic(generic)
    try:
        got = accumulate_splats(means, conics, opac, depths, radii, pixels, width, height)
        forward, alpha = rasterize_cpu(
            means, conics, opac, torch.eye(n), depths, radii, width, height
        )
    finally:
        _ext.force_generic(False)
    assert got.sums is not None
    per_pixel = got.sums.T.reshape(height, width, n)
    assert torch.equal(per_pixel, forward)
    assert (forward > 0).sum() > 100
    if name == "rgbd-clamp-and-stop":
        assert (alpha > 0.999).float().mean() > 0.3  # the stop rule is exercised


@pytest.mark.parametrize(("n", "channels", "seed"), [(300, 1, 0), (400, 3, 1), (250, 5, 2)])
def test_scene_matches_dense_reference(n, channels, seed):
    """A whole scene (Gaussians behind the camera, off-screen, tiny, huge, needles, culled by
    opacity, overlapping): the projection render uses, then the dense reference's weights."""
    scene = random_scene(n, degree=1, seed=seed)
    camera = make_camera(W, H)
    values = random_values(channels, seed)
    got = accumulate_weights(scene, camera, values)
    assert isinstance(got, WeightSums)
    assert got.sums is not None and got.sums.shape == (n, channels) and got.total.shape == (n,)

    sp = project(scene, camera)
    ref = reference_weights(sp.means2d, sp.conics, sp.opacities, sp.depths, sp.radii, W, H)
    sums, total = expected_sums(ref, values)
    assert_sums_close(got.total, total, "total")
    assert_sums_close(got.sums, sums, "sums")

    culled = (sp.radii == 0).all(-1)
    assert culled[:4].all()  # the hard cases behind the camera
    assert not got.total[culled].any() and not got.sums[culled].any()
    assert (got.total > 0).sum() > n // 3

    # and the float64 projection: the same sums to float32 projection accuracy
    sp64 = project_reference(scene, camera)
    ref64 = reference_weights(
        sp64.means2d, sp64.conics, sp64.opacities, sp64.depths, sp64.radii, W, H
    )
    total64 = ref64.sum((0, 1))
    rel = ((got.total.double() - total64).norm() / total64.norm()).item()
    assert rel < 1e-3, rel


def test_matches_autograd_route_on_a_synthetic_world():
    """The tabletop preview world (~10k Gaussians, 96x72): the kernel against the autograd
    route and the lifting code's `blending_weights`, to float32 summation accuracy."""
    from fields.features._segment import blending_weights

    world = make_world(7, config=WorldConfig.preview())
    scene, camera = world.scene, world.cameras[0]
    values = torch.rand(camera.height, camera.width, 4, generator=torch.Generator().manual_seed(3))
    got = accumulate_weights(scene, camera, values)
    via_grad = accumulate_weights_autograd(scene, camera, values, backend="cpu")
    assert got.sums is not None and via_grad.sums is not None
    assert (got.total > 0).sum() > 1000
    for a, b in ((got.total, via_grad.total), (got.sums, via_grad.sums)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item())
    torch.testing.assert_close(
        got.sums,
        blending_weights(scene, camera, values),
        rtol=1e-4,
        atol=1e-4 * got.sums.max().item(),
    )


# ------------------------------------------------------------------ properties
def test_total_is_the_sum_against_ones_and_values_are_linear():
    scene, camera = random_scene(200, degree=0, seed=4), make_camera(W, H)
    ones = accumulate_weights(scene, camera, torch.ones(H, W, 3))
    only_total = accumulate_weights(scene, camera)
    assert only_total.sums is None
    assert ones.sums is not None
    for ch in range(3):
        torch.testing.assert_close(ones.sums[:, ch], ones.total, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(only_total.total, ones.total, rtol=1e-5, atol=1e-6)
    # a mask and its complement split the total
    mask = torch.zeros(H, W, 1)
    mask[5:20, 10:30] = 1
    split = accumulate_weights(scene, camera, torch.cat([mask, 1 - mask], -1))
    assert split.sums is not None
    torch.testing.assert_close(split.sums.sum(-1), ones.total, rtol=1e-5, atol=1e-5)
    assert split.sums[:, 0].sum() > 1 and split.sums[:, 1].sum() > 1


def test_threads_and_simd_paths_agree():
    """Enough (tile, Gaussian) pairs for several threads; per-thread buffers are summed in
    another order, and the portable path rounds its FMAs twice."""
    means, conics, opac, _, depths, radii = splats2d(40_000, 160, 120, 1, seed=2, scale=1.5)
    values = random_values(17, seed=5, width=160, height=120)

    def run(threads: int, generic: bool = False) -> WeightSums:
        torch.set_num_threads(threads)
        _ext.force_generic(generic)
        try:
            return accumulate_splats(means, conics, opac, depths, radii, values, 160, 120)
        finally:
            _ext.force_generic(False)

    one, three, plain = run(1), run(3), run(2, generic=True)
    assert one.sums is not None and three.sums is not None and plain.sums is not None
    # same weights, other summation order
    torch.testing.assert_close(three.total, one.total, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(three.sums, one.sums, rtol=1e-5, atol=1e-5)
    # The portable exp may round differently and flip a rare 1/255 or stop decision (a change
    # of at most ~alpha T at one pixel, and 0.4% of T behind it); everything else agrees.
    for a, b in ((plain.total, one.total), (plain.sums, one.sums)):
        err = (a - b).abs()
        assert err.max() < 5e-3
        assert (err > 1e-5 * (1 + b.abs())).float().mean() < 1e-3


def test_empty_and_culled_scenes_give_zeros():
    camera = make_camera(W, H)
    empty = accumulate_weights(random_scene(0, degree=0), camera, torch.ones(H, W, 2))
    assert empty.total.shape == (0,) and empty.sums is not None and empty.sums.shape == (0, 2)
    scene = random_scene(30, degree=0, seed=1, hard_cases=False)
    behind = scene.replace(means=scene.means * torch.tensor([1.0, -1.0, 1.0]) - 20)
    out = accumulate_weights(behind, camera, torch.ones(H, W, 2))
    assert out.total.shape == (30,) and not out.total.any()
    assert out.sums is not None and not out.sums.any()


def test_autograd_route_matches_with_totals_only():
    scene, camera = random_scene(150, degree=0, seed=6), make_camera(W, H)
    got = accumulate_weights(scene, camera)
    ref = accumulate_weights_autograd(scene, camera)
    assert ref.sums is None
    torch.testing.assert_close(got.total, ref.total, rtol=1e-5, atol=1e-6)


def test_bad_values_raise_clear_errors():
    scene, camera = random_scene(20, degree=0, seed=0), make_camera(W, H)
    with pytest.raises(ValueError, match=r"values must be \[H=30, W=40, C>=1\].*channel axis"):
        accumulate_weights(scene, camera, torch.ones(H, W))
    with pytest.raises(ValueError, match=r"values must be \[H=30, W=40"):
        accumulate_weights(scene, camera, torch.ones(W, H, 2))
    with pytest.raises(ValueError, match="C>=1"):
        accumulate_weights(scene, camera, torch.ones(H, W, 0))
    with pytest.raises(ValueError, match="finite"):
        accumulate_weights(scene, camera, torch.full((H, W, 1), float("nan")))
    with pytest.raises(TypeError, match="Tensor"):
        accumulate_weights(scene, camera, [[0.0]])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown render backend"):
        accumulate_weights(scene, camera, backend="opengl")
    with pytest.raises(ValueError, match="values must be"):
        accumulate_weights_autograd(scene, camera, torch.ones(H, W))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_scenes_take_the_autograd_route():
    scene, camera = random_scene(200, degree=0, seed=8), make_camera(W, H)
    values = random_values(3, seed=8)
    cpu = accumulate_weights(scene, camera, values)
    gpu = accumulate_weights(scene.to("cuda"), camera, values)
    assert gpu.total.device.type == "cuda" and gpu.sums is not None and cpu.sums is not None
    torch.testing.assert_close(gpu.total.cpu(), cpu.total, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(gpu.sums.cpu(), cpu.sums, rtol=1e-3, atol=1e-3)
