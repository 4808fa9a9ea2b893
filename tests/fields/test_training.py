"""fields.training: losses against slow references, initialisation, densification on crafted
cases, the trainer on synthetic worlds with ground truth, checkpoints and bad data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from fields import Camera, GaussianScene, load_dataset, parse_up, render
from fields.synthetic import make_world, write_world
from fields.training import (
    DefaultStrategy,
    DefaultStrategyConfig,
    GaussianParams,
    MCMCStrategy,
    MCMCStrategyConfig,
    Progress,
    TrainConfig,
    Trainer,
    initial_params,
    knn_scales,
    psnr,
    random_points,
    relocation,
    ssim,
    ssim_map,
)

LRS = {"means": 1e-3, "quats": 1e-3, "scales": 1e-3, "opacities": 1e-2, "sh0": 1e-3, "shN": 1e-4}


# ---------------------------------------------------------------------- losses
def _ssim_reference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Direct 2D windowed SSIM in float64, zero padding, one pixel at a time."""
    k, sigma = 11, 1.5
    x = np.arange(k) - 5
    g = np.exp(-(x**2) / (2 * sigma**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    H, W, _ = a.shape
    pa = np.pad(a, ((5, 5), (5, 5), (0, 0)))
    pb = np.pad(b, ((5, 5), (5, 5), (0, 0)))
    out = np.zeros_like(a)
    c1, c2 = 0.01**2, 0.03**2
    for i in range(H):
        for j in range(W):
            wa = pa[i : i + k, j : j + k]
            wb = pb[i : i + k, j : j + k]
            mu_a = np.einsum("ij,ijc->c", w, wa)
            mu_b = np.einsum("ij,ijc->c", w, wb)
            va = np.einsum("ij,ijc->c", w, wa * wa) - mu_a**2
            vb = np.einsum("ij,ijc->c", w, wb * wb) - mu_b**2
            cov = np.einsum("ij,ijc->c", w, wa * wb) - mu_a * mu_b
            out[i, j] = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
                (mu_a**2 + mu_b**2 + c1) * (va + vb + c2)
            )
    return out


def test_ssim_matches_direct_windowed_reference():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(17, 23, 3, generator=g, dtype=torch.float64)
    b = (a + 0.2 * torch.rand(17, 23, 3, generator=g, dtype=torch.float64)).clamp(0, 1)
    ref = _ssim_reference(a.numpy(), b.numpy())
    np.testing.assert_allclose(ssim_map(a, b).numpy(), ref, atol=1e-10)
    assert float(ssim(a, a)) == pytest.approx(1.0, abs=1e-12)
    assert float(ssim(a, b)) < 0.99


def test_psnr_known_value():
    a = torch.zeros(4, 4, 3)
    b = torch.full((4, 4, 3), 0.1)
    assert psnr(a, b) == pytest.approx(20.0, abs=1e-4)
    assert psnr(b, b) == math.inf


# ---------------------------------------------------------------------- initialisation
def test_knn_scales_match_brute_force():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(200, 3))
    d = np.linalg.norm(pts[:, None] - pts[None], axis=-1)
    d[np.arange(200), np.arange(200)] = np.inf
    nn = np.sort(d, axis=1)[:, :3]
    np.testing.assert_allclose(knn_scales(pts), np.sqrt((nn**2).mean(1)), rtol=1e-10)


def _ring_cameras(n: int, radius: float, centre=(0.0, 0.0, 0.0)) -> list[Camera]:
    K = torch.tensor([[50.0, 0, 32], [0, 50.0, 32], [0, 0, 1]])
    cams = []
    for i in range(n):
        a = 2 * math.pi * i / n
        eye = (centre[0] + radius * math.cos(a), centre[1] + radius * math.sin(a), centre[2] + 1.0)
        cams.append(Camera.look_at(eye, centre, (0, 0, 1), K, 64, 64))
    return cams


def test_random_points_fill_a_ball_around_what_the_rig_looks_at():
    centre = np.array([1.0, -2.0, 0.5])
    cams = _ring_cameras(12, 4.0, centre=tuple(centre))
    xyz, rgb = random_points(cams, 5000, torch.Generator().manual_seed(0))
    D = float(np.linalg.norm(cams[0].center.numpy() - centre))
    r = np.linalg.norm(xyz.numpy() - centre, axis=1)
    assert r.max() <= 0.6 * D + 1e-4 and r.max() > 0.55 * D  # the whole ball
    assert np.mean(r < 0.3 * D) == pytest.approx(0.125, abs=0.02)  # uniform in volume: (1/2)^3
    cams_xyz = np.stack([c.center.numpy() for c in cams])
    gap = np.linalg.norm(xyz.numpy()[:, None] - cams_xyz[None], axis=-1).min(1)
    assert gap.min() > 0.25 * D  # nothing right in front of a lens
    assert rgb.shape == (5000, 3) and 0 <= float(rgb.min()) and float(rgb.max()) <= 1


def test_random_points_fill_the_camera_bounds_without_a_common_target():
    K = torch.tensor([[50.0, 0, 32], [0, 50.0, 32], [0, 0, 1]])
    # A forward-facing row of cameras: parallel axes, no meeting point.
    cams = [Camera.look_at((x, 0, 0), (x, 0, 5), (0, -1, 0), K, 64, 64) for x in (-1, 0, 1)]
    xyz, _ = random_points(cams, 2000, torch.Generator().manual_seed(0))
    lo, hi = xyz.min(0).values, xyz.max(0).values
    assert float(lo[0]) < -2 and float(hi[0]) > 2  # bounds grown by the extent (1.1)
    assert float(hi[2]) > 0.9 and float(lo[2]) < -0.9


def test_initial_params_follow_3dgs():
    xyz = torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [0, 2.0, 0], [0, 0, 3.0]])
    rgb = torch.tensor([[1.0, 0, 0]] * 4)
    p = initial_params(xyz, rgb, sh_degree=2, opacity=0.1, scale=1.0)
    assert p["shN"].shape == (4, 8, 3)
    assert torch.allclose(torch.sigmoid(p["opacities"]), torch.full((4,), 0.1))
    expect = torch.from_numpy(knn_scales(xyz.double().numpy())).float()
    assert torch.allclose(torch.exp(p["scales"][:, 0]), expect)
    scene = GaussianScene(p["means"], p["quats"], p["scales"], p["opacities"], p["sh0"])
    assert torch.allclose(scene.colors, rgb, atol=1e-6)
    with pytest.raises(ValueError, match="NaN"):
        initial_params(torch.full((2, 3), math.nan), rgb[:2], sh_degree=0, opacity=0.1, scale=1)


# ---------------------------------------------------------------------- densification
def _params(n: int, scales: list[float], opac: list[float]) -> GaussianParams:
    g = torch.Generator().manual_seed(0)
    t = {
        "means": torch.randn(n, 3, generator=g),
        "quats": torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1),
        "scales": torch.log(torch.tensor(scales))[:, None].repeat(1, 3),
        "opacities": torch.logit(torch.tensor(opac)),
        "sh0": torch.randn(n, 1, 3, generator=g),
        "shN": torch.zeros(n, 3, 3),
    }
    p = GaussianParams(t, LRS)
    # One optimiser step so every Adam moment exists (densification must carry them).
    sum(v.sum() for v in p.tensors.values()).backward()
    p.optimizer.step()
    p.optimizer.zero_grad()
    return p


def test_default_strategy_clones_splits_and_prunes():
    # 0: small + high gradient -> clone; 1: large + high gradient -> split; 2: low gradient
    # stays; 3: transparent -> pruned; 4: large, low gradient, stays.
    p = _params(5, [0.001, 0.5, 0.001, 0.001, 0.5], [0.9, 0.9, 0.9, 0.001, 0.9])
    before = {k: v.detach().clone() for k, v in p.tensors.items()}
    cfg = DefaultStrategyConfig(refine_start=0, refine_every=10, reset_every=10**6)
    s = DefaultStrategy(cfg, scene_extent=1.0, max_gaussians=100)
    grad = torch.zeros(5, 2)
    grad[[0, 1], 0] = 1e-3  # pixels; x width/2 = 0.05 NDC >> 0.0002
    radii = torch.ones(5, 2, dtype=torch.int32)
    s.accumulate(p, grad, radii, (100, 100), 1)
    prog = Progress(step=10, fraction=0.1, reference_steps=100)
    assert s.due(prog)
    report = s.refine(p, prog, torch.Generator().manual_seed(0))
    assert report == {"cloned": 1, "split": 1, "pruned": 1}
    # Kept in place: 0, 2, 4 (3 pruned, 1 replaced by children); then the clone of 0, then the
    # two children of 1.
    assert len(p) == 6
    means = p["means"].detach()
    torch.testing.assert_close(means[0], before["means"][0])
    torch.testing.assert_close(means[3], before["means"][0])  # the clone
    child_scale = torch.exp(p["scales"].detach()[4:])
    torch.testing.assert_close(child_scale, torch.exp(before["scales"][1]).expand(2, 3) / 1.6)
    assert not torch.equal(means[4], means[5])
    # Children are drawn from the parent Gaussian: within a few sigma of its mean.
    assert float((means[4:] - before["means"][1]).norm(dim=-1).max()) < 5 * 0.5 * math.sqrt(3)
    # New rows start with zero Adam moments; kept rows keep theirs.
    state = p.optimizer.state[p["means"]]
    assert torch.all(state["exp_avg"][3:] == 0)
    assert torch.all(state["exp_avg"][:3] != 0)


def test_default_strategy_respects_the_cap_and_resets_opacity():
    p = _params(4, [0.001] * 4, [0.9] * 4)
    cfg = DefaultStrategyConfig(refine_start=0, refine_every=10, reset_every=20)
    s = DefaultStrategy(cfg, scene_extent=1.0, max_gaussians=6)
    grad = torch.tensor([[1e-3, 0], [2e-3, 0], [3e-3, 0], [4e-3, 0]])
    s.accumulate(p, grad, torch.ones(4, 2, dtype=torch.int32), (100, 100), 1)
    rep = s.refine(p, Progress(10, 0.01, 1000), torch.Generator())
    assert rep["cloned"] == 2 and len(p) == 6  # only the two highest gradients fit
    torch.testing.assert_close(p["means"].detach()[4:], p["means"].detach()[[2, 3]])
    # At step 100 (= 10 refinements) the opacity resets to 2 x prune_opa.
    rep = s.refine(p, Progress(100, 0.1, 1000), torch.Generator())
    assert rep.get("opacity_reset") == 1
    assert float(torch.sigmoid(p["opacities"].detach()).max()) == pytest.approx(0.01, rel=1e-4)


def _reference_relocation(o: float, s: float, n: int) -> tuple[float, float]:
    new_o = 1 - (1 - o) ** (1 / n)
    denom = 0.0
    for i in range(1, n + 1):
        for k in range(i):
            denom += math.comb(i - 1, k) * ((-1) ** k / math.sqrt(k + 1)) * new_o ** (k + 1)
    return new_o, o / denom * s


@pytest.mark.parametrize("n", [1, 2, 5, 17])
def test_mcmc_relocation_matches_the_paper_formula(n):
    o = torch.tensor([0.3, 0.9, 0.05], dtype=torch.float64)
    s = torch.tensor([[0.1, 0.2, 0.3], [1.0, 1.0, 1.0], [0.01, 0.02, 0.5]], dtype=torch.float64)
    new_o, new_s = relocation(o, s, torch.full((3,), n))
    for i in range(3):
        ro, rs = _reference_relocation(float(o[i]), 1.0, n)
        assert float(new_o[i]) == pytest.approx(ro, rel=1e-9)
        torch.testing.assert_close(new_s[i], s[i] * rs, rtol=1e-9, atol=0)
    if n == 1:  # one copy is the original
        torch.testing.assert_close(new_o, o)
        torch.testing.assert_close(new_s, s)


def test_mcmc_relocates_dead_and_grows_to_the_cap():
    p = _params(20, [0.01] * 20, [0.5] * 15 + [0.001] * 5)
    s = MCMCStrategy(MCMCStrategyConfig(refine_start=0, refine_every=10), max_gaussians=21)
    rep = s.refine(p, Progress(10, 0.1, 1000), torch.Generator().manual_seed(0))
    assert rep == {"relocated": 5, "added": 1}
    assert len(p) == 21
    assert float(torch.sigmoid(p["opacities"].detach()).min()) > 0.005  # nobody is dead any more
    # Every Gaussian now sits on one of the 15 live ones' positions.
    live = p["means"].detach()[:15]
    d = torch.cdist(p["means"].detach(), live).min(1).values
    assert float(d.max()) == 0.0
    rep = s.refine(p, Progress(20, 0.2, 1000), torch.Generator().manual_seed(0))
    assert rep == {"relocated": 0, "added": 0}  # at the cap


# ---------------------------------------------------------------------- the trainer
@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    """A synthetic tabletop at 64x48, 48 views (every 8th held out): dense enough that the
    held-out views see little the training views do not (the table's legs)."""
    out = tmp_path_factory.mktemp("tiny") / "world"
    write_world(make_world(0), out, n_views=48, width=64, height=48)
    return out


def _fast(**kw) -> TrainConfig:
    base = dict(steps=60, init_points=3000, sh_degree=1, sh_degree_interval=1000)
    base.update(kw)
    return TrainConfig(**base)


def test_resume_continues_bit_for_bit(tiny_world, tmp_path):
    ds = load_dataset(tiny_world)
    cfg = _fast(
        steps=40,
        default=DefaultStrategyConfig(refine_start=0, refine_every=10, reset_every=300),
        reference_steps=100,
    )
    straight = Trainer(ds, cfg)
    straight.run()
    half = Trainer(ds, cfg)
    for _ in range(25):
        half.step()
    ckpt = half.save_checkpoint(tmp_path / "run.ckpt")
    resumed = Trainer.resume(ckpt, ds)
    assert resumed.step_count == 25
    resumed.run()
    assert len(resumed.params) == len(straight.params) != 3000  # densification happened
    for k in straight.params.tensors:
        assert torch.equal(resumed.params[k], straight.params[k]), k


def test_resume_refuses_other_data(tiny_world, tmp_path):
    ds = load_dataset(tiny_world)
    t = Trainer(ds, _fast(steps=2))
    t.step()
    ckpt = t.save_checkpoint(tmp_path / "run.ckpt")
    with pytest.raises(ValueError, match="other views"):
        Trainer.resume(ckpt, ds.subset(range(24)))


def test_all_black_images_are_refused(tmp_path, tiny_world):
    out = tmp_path / "black"
    write_world(make_world(0), out, n_views=4, width=16, height=12)
    for f in (out / "images").iterdir():
        Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(f)
    with pytest.raises(ValueError, match="are black"):
        Trainer(load_dataset(out), _fast(eval_every=0))


def test_splits_follow_the_files_or_every_kth(tiny_world):
    ds = load_dataset(tiny_world)
    t = Trainer(ds, _fast(steps=1))
    assert t.splits.test == [0, 8, 16, 24, 32, 40] and len(t.splits.train) == 42
    t0 = Trainer(ds, _fast(steps=1, eval_every=0))
    assert t0.splits.test == [] and len(t0.splits.train) == 48
    assert t0.evaluate() is None


@pytest.mark.slow
def test_trains_a_synthetic_world_to_30db(tiny_world):
    """The world's own renders train a scene that scores >= 30 dB on views it never saw."""
    ds = load_dataset(tiny_world)
    cfg = TrainConfig(steps=3000, init_points=20000, sh_degree=1)
    t = Trainer(ds, cfg)
    t.run()
    result = t.evaluate()
    assert result is not None
    assert result.psnr >= 30.0, result
    scene = t.scene(metrics=result.to_dict())
    assert scene.meta["metrics"]["psnr"] == result.psnr
    assert len(scene.meta["cameras"]) == 48
    np.testing.assert_allclose(parse_up(scene.meta["up"]), [0, 0, 1], atol=0.02)


@pytest.mark.slow
def test_mcmc_trains_and_keeps_the_cap(tiny_world):
    ds = load_dataset(tiny_world)
    cfg = TrainConfig(steps=600, init_points=3000, sh_degree=0, strategy="mcmc", max_gaussians=4000)
    t = Trainer(ds, cfg)
    first = t.evaluate()
    t.run()
    assert 3000 < len(t.params) <= 4000
    assert t.evaluate().psnr > first.psnr + 5


def test_rgba_background_handling(tmp_path):
    """RGBA photos: the target is the photo over the step's background, the same one the
    render is composited over; black and white runs learn the same (transparent) scene."""
    from fields.training._data import TrainImages  # the unit under test

    out = tmp_path / "rgba"
    write_world(make_world(0), out, n_views=2, width=16, height=12)
    for f in sorted((out / "images").iterdir()):
        rgba = np.zeros((12, 16, 4), np.uint8)
        rgba[3:9, 4:12] = (200, 100, 50, 255)
        Image.fromarray(rgba, "RGBA").save(f)
    ds = load_dataset(out)
    imgs = TrainImages(ds, [0, 1])
    assert imgs.has_alpha
    red = imgs.target(0, torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(red[0, 0], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(red[5, 5], torch.tensor([200, 100, 50]) / 255.0)


def test_render_reports_screen_gradient():
    scene = GaussianScene.from_activated(
        torch.tensor([[0.0, 0.0, 3.0]]),
        torch.tensor([[1.0, 0, 0, 0]]),
        torch.full((1, 3), 0.2),
        torch.tensor([0.8]),
        torch.tensor([[1.0, 0.0, 0.0]]),
    )
    K = torch.tensor([[40.0, 0, 16], [0, 40.0, 16], [0, 0, 1]])
    cam = Camera(K, torch.eye(4), 32, 32)
    means = scene.means.clone().requires_grad_(True)
    out = render(scene.replace(means=means), cam)
    out.retain_means2d_grad()
    out.rgb[:, 20:, 0].sum().backward()  # red in the right-hand columns
    g = out.means2d_grad()
    assert g is not None and g.shape == (1, 2)
    assert float(g[0, 0]) > 0  # moving the splat right (+x) puts more red there
    assert abs(float(g[0, 1])) < 1e-3 * abs(float(g[0, 0]))  # symmetric in y


def test_initialises_from_the_transforms_point_cloud(tmp_path):
    import json

    out = tmp_path / "pc"
    write_world(make_world(0), out, n_views=4, width=16, height=12)
    pts = np.array([[0.0, 0.0, 0.8], [0.1, 0.0, 0.8], [0.0, 0.1, 0.8], [0.1, 0.1, 0.9]])
    lines = [
        "ply",
        "format ascii 1.0",
        f"element vertex {len(pts)}",
        "property float x",
        "property float y",
        "property float z",
        "property uchar red",
        "property uchar green",
        "property uchar blue",
        "end_header",
    ] + [f"{x} {y} {z} 255 0 0" for x, y, z in pts]
    (out / "sparse_pc.ply").write_text("\n".join(lines) + "\n")
    meta = json.loads((out / "transforms.json").read_text())
    meta["ply_file_path"] = "sparse_pc.ply"
    (out / "transforms.json").write_text(json.dumps(meta))
    ds = load_dataset(out)
    xyz, rgb = ds.load_points()
    np.testing.assert_allclose(xyz.numpy(), pts, atol=1e-6)
    assert rgb.tolist() == [[255, 0, 0]] * 4
    t = Trainer(ds, _fast(steps=1, eval_every=0))
    assert len(t.params) == 4
    torch.testing.assert_close(t.params["means"].detach(), xyz)
    red = GaussianScene(
        *(t.params[k].detach() for k in ("means", "quats", "scales", "opacities", "sh0"))
    )
    torch.testing.assert_close(red.colors, torch.tensor([[1.0, 0, 0]] * 4), atol=1e-5, rtol=0)


@pytest.mark.gpu
def test_trains_on_cuda_with_gsplat(tiny_world):
    """gsplat's rasterizer feeds densification its screen-space gradient, and the strategies
    run on CUDA tensors."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    pytest.importorskip("gsplat")
    ds = load_dataset(tiny_world)
    cfg = _fast(
        steps=40,
        default=DefaultStrategyConfig(refine_start=0, refine_every=10, reset_every=300),
        reference_steps=100,
    )
    t = Trainer(ds, cfg, device="cuda")
    first = t.evaluate().psnr
    t.run()
    assert t.params["means"].is_cuda and len(t.params) != 3000
    assert t.evaluate().psnr > first


def test_default_strategy_matches_gsplats_on_the_same_statistics():
    """One refinement (grow, then prune) from identical Gaussians, Adam state and screen
    gradients gives what gsplat's own DefaultStrategy gives, row for row."""
    gstrategy = pytest.importorskip("gsplat.strategy")
    n = 300
    g = torch.Generator().manual_seed(1)
    scales = torch.exp(torch.empty(n).uniform_(-6, 0, generator=g))  # both sides of 0.01
    opac = torch.empty(n).uniform_(0.001, 0.99, generator=g)
    opac[:20] = 0.002  # transparent: pruned
    p = _params(n, scales.tolist(), opac.tolist())
    grad = torch.randn(n, 2, generator=g) * 4e-6
    radii = (torch.rand(n, 2, generator=g) > 0.1).int() * 3

    # gsplat: one optimiser per parameter, as its simple_trainer keeps them.
    gp = {k: torch.nn.Parameter(v.detach().clone()) for k, v in p.tensors.items()}
    gopt = {}
    for k, v in gp.items():
        gopt[k] = torch.optim.Adam([v], lr=LRS[k], eps=1e-15)
        state = p.optimizer.state[p[k]]
        gopt[k].state[v] = {kk: vv.clone() for kk, vv in state.items()}
    ref = gstrategy.DefaultStrategy()
    gstate = ref.initialize_state(scene_scale=1.0)
    from types import SimpleNamespace

    info = {
        "means2d": SimpleNamespace(grad=grad[None].clone()),
        "radii": radii[None],
        "width": 200,
        "height": 150,
        "n_cameras": 1,
        "gaussian_ids": None,  # packed mode only
    }
    torch.manual_seed(7)  # gsplat's split draws from the global generator
    ref.step_post_backward(gp, gopt, gstate, step=600, info=info)

    ours = DefaultStrategy(DefaultStrategyConfig(), scene_extent=1.0, max_gaussians=10**6)
    ours.accumulate(p, grad, radii, (200, 150), 1)
    report = ours.refine(p, Progress(600, 600 / 30000, 30000), torch.Generator().manual_seed(7))
    assert report["cloned"] > 0 and report["split"] > 0 and report["pruned"] > 0
    assert len(p) == len(gp["means"])
    for k in p.tensors:
        torch.testing.assert_close(p[k].detach(), gp[k].detach(), rtol=1e-6, atol=1e-6, msg=k)
        ours_m = p.optimizer.state[p[k]]["exp_avg_sq"]
        torch.testing.assert_close(ours_m, gopt[k].state[gp[k]]["exp_avg_sq"], msg=k)
