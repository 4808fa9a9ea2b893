"""The compiled CPU tile rasterizer against the dense float64 torch reference."""

from __future__ import annotations

import importlib
import math
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fields.rendering._cpu import _ext, rasterize_cpu
from fields.rendering._raster_reference import rasterize_reference


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The dense reference runs thousands of tiny ops; on a shared 2-core box torch's thread team
    costs more than it saves. The kernel's own threading is covered by test_threads_agree."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def splats2d(
    n: int,
    width: int,
    height: int,
    channels: int,
    seed: int,
    scale: float = 2.0,
    opacity: tuple[float, float] = (0.05, 1.0),
    integer_depths: bool = False,
    margin: float = 10.0,
    clamped: int = 0,
    indefinite: int = 0,
):
    """Random anisotropic screen-space Gaussians, some partly off-screen; radii = 3 sigma.
    The first `clamped` get opacity 1 and a mean on a pixel centre: alpha hits the 0.999 clamp.
    The last `indefinite` get conics that are not positive definite (sigma < 0 in places)."""
    g = torch.Generator().manual_seed(seed)
    lo = torch.tensor([-margin, -margin])
    means = lo + torch.rand(n, 2, generator=g) * torch.tensor([width, height]).add(2 * margin)
    s = scale * torch.exp(0.5 * torch.randn(n, 2, generator=g))
    th = torch.rand(n, generator=g) * math.pi
    rot = torch.stack([th.cos(), -th.sin(), th.sin(), th.cos()], -1).reshape(n, 2, 2)
    cov = rot @ torch.diag_embed(s * s) @ rot.transpose(1, 2)
    inv = torch.linalg.inv(cov)
    conics = torch.stack([inv[:, 0, 0], inv[:, 0, 1], inv[:, 1, 1]], -1)
    r = torch.ceil(3 * torch.linalg.eigvalsh(cov)[:, -1].sqrt()).int()
    radii = torch.stack([r, r], -1)
    opacities = opacity[0] + torch.rand(n, generator=g) * (opacity[1] - opacity[0])
    colors = torch.rand(n, channels, generator=g) * 2 - 0.5  # signed, like features
    depths = torch.rand(n, generator=g) * 10 + 1
    if integer_depths:
        depths = depths.round()  # many exact ties: order falls back to the index
    opacities[:clamped] = 1.0
    means[:clamped] = (means[:clamped].clamp(0, min(width, height) - 1)).floor() + 0.5
    if indefinite:
        q = conics[n - indefinite :]
        q[:, 1] = 1.5 * (q[:, 0] * q[:, 2]).sqrt()  # det < 0: a saddle
        q[::2, 0] *= -1  # and some with a < 0
    return means, conics, opacities, colors, depths, radii


def render_both(args, width, height, seed=0):
    """Kernel and reference renders plus gradients of one random linear loss on each."""
    kernel_in = [a.clone().requires_grad_(i < 4) for i, a in enumerate(args)]
    ref_in = [a.double().clone().requires_grad_(True) if i < 4 else a for i, a in enumerate(args)]
    out, alpha = rasterize_cpu(*kernel_in, width, height)
    ref_out, ref_alpha = rasterize_reference(*ref_in, width, height)
    g = torch.Generator().manual_seed(seed + 1)
    w_out = torch.randn(ref_out.shape, generator=g, dtype=torch.float64)
    w_alpha = torch.randn(ref_alpha.shape, generator=g, dtype=torch.float64)
    if len(args[0]):
        ((out.double() * w_out).sum() + (alpha.double() * w_alpha).sum()).backward()
        ((ref_out * w_out).sum() + (ref_alpha * w_alpha).sum()).backward()
    grads = [(a.grad, b.grad) for a, b in zip(kernel_in[:4], ref_in[:4], strict=True)]
    return (out, alpha), (ref_out, ref_alpha), grads


def assert_image_close(got, want):
    err = (got.double() - want).abs()
    mse = err.square().mean().item()
    psnr = 10 * math.log10(1 / mse) if mse > 0 else math.inf
    assert psnr >= 45, f"PSNR {psnr:.1f} dB"
    # float32 vs float64 can flip the 1/255 cut-off at a rare pixel (an error of ~alpha*T*c);
    # everything else must agree to float32 rounding.
    assert err.max().item() < 1e-2
    assert torch.quantile(err.flatten(), 0.99).item() < 1e-5


def assert_grad_close(got, want, name):
    assert got is not None and want is not None, name
    assert got.dtype == torch.float32 and got.shape == want.shape, name
    a, b = got.double().flatten(), want.flatten()
    if b.norm() == 0:
        assert a.norm() == 0, name
        return
    rel = ((a - b).norm() / b.norm()).item()
    cos = torch.nn.functional.cosine_similarity(a, b, dim=0).item()
    assert rel < 1e-3 and cos > 0.9999, f"{name}: relative L2 {rel:.2e}, cosine {cos:.6f}"


CASES = {
    # name: (n, width, height, channels, splats2d options)
    "one": (1, 37, 29, 1, {"scale": 4.0}),
    "rgb": (60, 37, 29, 3, {}),
    "rgbd-clamp-and-stop": (80, 37, 29, 4, {"scale": 6.0, "opacity": (0.9, 1.0), "clamped": 10}),
    "features-ties": (150, 40, 33, 16, {"integer_depths": True}),
    "wide-features-large": (100, 37, 29, 20, {"scale": 8.0, "margin": 30.0}),
    "faint": (120, 16, 16, 3, {"opacity": (0.002, 0.02), "scale": 3.0}),
    "tiny-splats": (300, 45, 20, 1, {"scale": 0.4}),
    "indefinite-conics": (80, 37, 29, 3, {"indefinite": 20}),
}


@pytest.mark.parametrize("name", list(CASES))
def test_matches_reference(name):
    n, width, height, channels, opts = CASES[name]
    args = splats2d(n, width, height, channels, seed=len(name), **opts)
    (out, alpha), (ref_out, ref_alpha), grads = render_both(args, width, height)
    assert out.shape == (height, width, channels) and alpha.shape == (height, width, 1)
    assert out.dtype == alpha.dtype == torch.float32
    assert_image_close(out, ref_out)
    assert_image_close(alpha, ref_alpha)
    for pname, (got, want) in zip(["means2d", "conics", "opacities", "colors"], grads, strict=True):
        assert_grad_close(got, want, pname)


def test_cases_hit_the_edge_rules():
    """The clamp/stop case saturates pixels (T < 1e-3 after layers of alpha >= 0.9, so later
    Gaussians meet the T <= 1e-4 stop), and the faint case straddles 1/255."""
    n, width, height, channels, opts = CASES["rgbd-clamp-and-stop"]
    _, alpha = rasterize_cpu(*splats2d(n, width, height, channels, seed=19, **opts), width, height)
    assert (alpha > 0.999).float().mean() > 0.3
    n, width, height, channels, opts = CASES["faint"]
    opacities = splats2d(n, width, height, channels, seed=5, **opts)[2]
    assert (opacities < 1 / 255).any() and (opacities > 1 / 255).any()


def test_empty_and_culled():
    for n in (0, 5):
        args = list(splats2d(n, 23, 17, 3, seed=1))
        args[5] = torch.zeros(n, 2, dtype=torch.int32)  # every Gaussian culled
        params = [a.requires_grad_(True) for a in args[:4]]
        out, alpha = rasterize_cpu(*params, *args[4:], 23, 17)
        assert out.shape == (17, 23, 3) and not out.any() and not alpha.any()
        if n:
            (out.sum() + alpha.sum()).backward()
            assert all(p.grad is not None and not p.grad.any() for p in params)


def test_partly_culled_matches_reference():
    args = list(splats2d(80, 37, 29, 3, seed=7))
    args[5][::3] = 0
    args[5][1::7, 1] = -1  # one radius <= 0 is enough to cull
    (out, alpha), (ref_out, ref_alpha), grads = render_both(args, 37, 29)
    assert_image_close(out, ref_out)
    assert_image_close(alpha, ref_alpha)
    for pname, (got, want) in zip(["means2d", "conics", "opacities", "colors"], grads, strict=True):
        assert_grad_close(got, want, pname)
    assert not grads[3][0][::3].any()


def test_noncontiguous_and_float64_inputs():
    args = splats2d(70, 33, 21, 4, seed=3)
    out, alpha = rasterize_cpu(*args, 33, 21)
    strided = [torch.stack([a, torch.zeros_like(a)], -1)[..., 0] for a in args]
    assert not any(a.is_contiguous() for a in strided)
    out2, alpha2 = rasterize_cpu(*strided, 33, 21)
    assert torch.equal(out, out2) and torch.equal(alpha, alpha2)
    params = [a.double().requires_grad_(True) for a in args[:4]]
    out3, _ = rasterize_cpu(*params, args[4].double(), args[5].long(), 33, 21)
    assert torch.equal(out, out3)
    out3.sum().backward()
    assert all(p.grad.dtype == torch.float64 and p.grad.abs().sum() > 0 for p in params)


def test_generic_simd_path_agrees():
    args = splats2d(90, 37, 29, 5, seed=11, opacity=(0.5, 1.0))
    params = [a.clone().requires_grad_(True) for a in args[:4]]
    fast, _ = rasterize_cpu(*params, *args[4:], 37, 29)
    fast.sum().backward()
    _ext.force_generic(True)
    try:
        plain_params = [a.clone().requires_grad_(True) for a in args[:4]]
        plain, _ = rasterize_cpu(*plain_params, *args[4:], 37, 29)
        plain.sum().backward()
    finally:
        _ext.force_generic(False)
    torch.testing.assert_close(plain, fast, rtol=1e-5, atol=1e-5)
    for p, q in zip(plain_params, params, strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-3, atol=1e-4)


def test_threads_agree():
    """Enough pairs for the multi-threaded paths (sort, binning, tiles, gradient reduction)."""
    args = splats2d(40_000, 160, 120, 4, seed=2, scale=1.5)

    def run(threads):
        torch.set_num_threads(threads)
        params = [a.clone().requires_grad_(True) for a in args[:4]]
        out, alpha = rasterize_cpu(*params, *args[4:], 160, 120)
        (out.sum() + alpha.sum()).backward()
        return out, alpha, [p.grad for p in params]

    out1, alpha1, grads1 = run(1)
    out2, alpha2, grads2 = run(3)
    assert torch.equal(out1, out2) and torch.equal(alpha1, alpha2)  # tiles are independent
    for g1, g2 in zip(grads1, grads2, strict=True):  # per-thread sums: order may differ
        torch.testing.assert_close(g1, g2, rtol=1e-4, atol=1e-6)


def test_gradcheck_tiny():
    """Finite differences through the float32 kernel on a smooth case: every alpha is well inside
    (1/255, 0.999) and T stays far above 1e-4, so no pixel is near a cut-off."""
    means = torch.tensor([[4.3, 5.1], [6.2, 3.7], [3.1, 6.6]], dtype=torch.float64)
    conics = torch.tensor(
        [[0.12, 0.03, 0.10], [0.07, -0.01, 0.08], [0.06, 0.0, 0.07]], dtype=torch.float64
    )
    opacities = torch.tensor([0.5, 0.7, 0.6], dtype=torch.float64)
    colors = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.4, 0.5]], dtype=torch.float64)
    depths = torch.tensor([2.0, 1.0, 3.0])
    radii = torch.full((3, 2), 12, dtype=torch.int32)

    def fn(m, q, o, c):
        out, alpha = rasterize_cpu(m, q, o, c, depths, radii, 10, 9)
        return out.double(), alpha.double()

    ys, xs = torch.meshgrid(torch.arange(9) + 0.5, torch.arange(10) + 0.5, indexing="ij")
    dx, dy = means[:, 0, None, None] - xs, means[:, 1, None, None] - ys
    a, b, c = conics.T[..., None, None]
    alpha = opacities[:, None, None] * torch.exp(-(0.5 * (a * dx**2 + c * dy**2) + b * dx * dy))
    assert alpha.min() > 3 / 255 and alpha.max() < 0.99
    inputs = [t.requires_grad_(True) for t in (means, conics, opacities, colors)]
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-3, atol=2e-3, rtol=1e-2)


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(0, 40),
    width=st.integers(1, 40),
    height=st.integers(1, 40),
    channels=st.integers(1, 6),
)
def test_forward_matches_reference_random_sizes(seed, n, width, height, channels):
    args = splats2d(n, width, height, channels, seed=seed)
    out, alpha = rasterize_cpu(*args, width, height)
    ref_out, ref_alpha = rasterize_reference(*args, width, height)
    assert_image_close(out, ref_out)
    assert_image_close(alpha, ref_alpha)


def test_rejects_bad_input():
    args = splats2d(4, 8, 8, 3, seed=0)
    with pytest.raises(ValueError, match="conics"):
        rasterize_cpu(args[0], args[1][:, :2], *args[2:], 8, 8)
    with pytest.raises(ValueError, match="colors"):
        rasterize_cpu(*args[:3], args[3][:3], *args[4:], 8, 8)
    with pytest.raises(ValueError, match="size"):
        rasterize_cpu(*args, 0, 8)


def test_missing_extension_says_how_to_build(monkeypatch):
    import fields

    monkeypatch.delattr(fields, "_raster_cpu")
    monkeypatch.setitem(sys.modules, "fields._raster_cpu", None)
    monkeypatch.delitem(sys.modules, "fields.rendering._cpu")
    with pytest.raises(ImportError, match=r"pip install -e \."):
        importlib.import_module("fields.rendering._cpu")
