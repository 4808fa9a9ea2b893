"""What the browser is sent for a view: SH colour baked toward a camera (equal to the server
renderer's colour), splats chosen by screen-space contribution (against a brute-force reference,
and closer to the full picture than a uniform sample), the per-browser budget adapting to measured
render times, and the viewer re-baking when a camera comes to rest."""

from __future__ import annotations

import math
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from app.viewer._lod import (
    MAX_WIDEN,
    OUTSIDE_WEIGHT,
    BudgetController,
    contribution,
    select,
    splat_sizes,
)
from app.viewer._sh_view import view_colors
from app.viewer._splats import SplatBuffer, unpack
from fields import Camera, GaussianScene, render

from .conftest import blob_scene, look_camera

SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199


def shiny_scene(n: int = 4000, radius: float = 0.3, seed: int = 0) -> GaussianScene:
    """A grey ball whose splats look red seen from +x and green seen from -x (SH degree 1, the
    x band only), grey from ±y; z up, centred at the origin. Degree-3 terms add a little more
    view dependence so that every band is exercised."""
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(n, 3, generator=g)
    means = d / d.norm(dim=-1, keepdim=True) * radius
    sh = torch.zeros(n, 16, 3)
    sh[:, 0] = (0.5 - 0.5) / SH_C0  # DC: grey 0.5
    # Y_3 = -C1 x: seen from +x the direction to a splat is about -x, so +C1·c₃ is added.
    k = 0.8
    sh[:, 3] = torch.tensor([k, -k, 0.0])
    sh[:, 9:] = 0.02 * torch.randn(n, 7, 3, generator=g)
    return GaussianScene(
        means=means,
        quats=torch.tensor([1.0, 0.0, 0.0, 0.0]).expand(n, 4).clone(),
        scales=torch.full((n, 3), math.log(0.03)),
        opacities=torch.full((n,), 4.0),
        sh=sh,
        meta={"up": "+z", "units": "m"},
    )


def capture_like_scene(n: int = 20_000, seed: int = 0) -> GaussianScene:
    """Flat splats tiling a textured 2 m floor (each about covers its share of it, as in a real
    capture) and a ball: most of what a budget drops is a uniform surface."""
    g = torch.Generator().manual_seed(seed)
    n_ball = n // 5
    n_floor = n - n_ball
    floor = torch.cat(
        [(torch.rand(n_floor, 2, generator=g) - 0.5) * 2.0, torch.zeros(n_floor, 1)], 1
    )
    d = torch.randn(n_ball, 3, generator=g)
    d = d / d.norm(dim=-1, keepdim=True)
    means = torch.cat([floor, torch.tensor([0.0, 0.0, 0.25]) + 0.25 * d])
    s = (4.0 / n_floor) ** 0.5
    scales = torch.full((n, 3), math.log(s)) + 0.2 * torch.randn(n, 3, generator=g)
    scales[:n_floor, 2] = math.log(s * 0.05)
    colors = torch.empty(n, 3)
    checker = ((floor[:, 0] * 4).floor() + (floor[:, 1] * 4).floor()) % 2
    colors[:n_floor] = 0.2 + 0.6 * checker[:, None]
    colors[n_floor:] = torch.tensor([0.9, 0.3, 0.1])
    quats = torch.tensor([1.0, 0.0, 0.0, 0.0]).expand(n, 4).clone()
    return GaussianScene.from_activated(
        means, quats, torch.exp(scales), torch.full((n,), 0.9), colors
    )


def cam_at(eye, target=(0.0, 0.0, 0.0), width: int = 64, height: int = 48) -> Camera:
    return look_camera(width=width, height=height, eye=eye, target=target)


# ---------------------------------------------------------------------- SH toward a camera
@pytest.mark.parametrize("degree", [1, 2, 3])
def test_view_colour_equals_the_renderers_colour_of_a_single_splat(degree):
    """One large opaque splat at the image centre: its pixel is its SH colour toward the camera
    (times its alpha, 0.999 at the centre, over black)."""
    g = torch.Generator().manual_seed(degree)
    k = (degree + 1) ** 2
    for trial in range(4):
        sh = 0.25 * torch.randn(1, k, 3, generator=g)
        sh[0, 0] = 0.0
        scene = GaussianScene(
            means=torch.tensor([[0.1, -0.2, 0.05]]),
            quats=torch.tensor([[1.0, 0.0, 0.0, 0.0]]),
            scales=torch.full((1, 3), math.log(0.2)),
            opacities=torch.tensor([10.0]),
            sh=sh,
        )
        a = 2 * math.pi * trial / 4 + 0.3
        eye = (2.0 * math.cos(a), 2.0 * math.sin(a), 0.8 * (trial - 1.5))
        cam = cam_at(eye, target=(0.1, -0.2, 0.05), width=33, height=33)
        out = render(scene, cam, backend="cpu")
        pixel = out.rgb[16, 16] / out.alpha[16, 16]
        ours = view_colors(scene.means, scene.sh, cam.center)[0]
        assert torch.allclose(ours, pixel.float(), atol=2e-3), (trial, ours, pixel)


def test_view_colour_matches_a_float64_reference_and_rows_gather():
    """Degree 3 against the basis written out term by term in float64, for many directions."""
    g = torch.Generator().manual_seed(0)
    n = 300
    means = torch.randn(n, 3, generator=g)
    sh = 0.3 * torch.randn(n, 16, 3, generator=g)
    campos = torch.tensor([2.0, -1.0, 0.5])
    ours = view_colors(means, sh, campos, chunk=64)  # several chunks
    ref = torch.empty(n, 3, dtype=torch.float64)
    for i in range(n):
        x, y, z = (means[i].double() - campos.double()) / (means[i].double() - campos).norm()
        xx, yy, zz = x * x, y * y, z * z
        basis = [
            0.28209479177387814,
            -0.4886025119029199 * y,
            0.4886025119029199 * z,
            -0.4886025119029199 * x,
            1.0925484305920792 * x * y,
            -1.0925484305920792 * y * z,
            0.31539156525252005 * (2 * zz - xx - yy),
            -1.0925484305920792 * x * z,
            0.5462742152960396 * (xx - yy),
            -0.5900435899266435 * y * (3 * xx - yy),
            2.890611442640554 * x * y * z,
            -0.4570457994644658 * y * (4 * zz - xx - yy),
            0.3731763325901154 * z * (2 * zz - 3 * xx - 3 * yy),
            -0.4570457994644658 * x * (4 * zz - xx - yy),
            1.445305721320277 * z * (xx - yy),
            -0.5900435899266435 * x * (xx - 3 * yy),
        ]
        col = sum(b * sh[i, j].double() for j, b in enumerate(basis)) + 0.5
        ref[i] = col.clamp_min(0.0)
    assert torch.allclose(ours.double(), ref, atol=1e-5)
    rows = torch.tensor([5, 0, 299, 17, 17])
    assert torch.equal(view_colors(means, sh, campos, rows=rows, chunk=2), ours[rows])
    with pytest.raises(ValueError, match="sh must be"):
        view_colors(means, sh[:10], campos)


def test_shiny_object_is_red_from_plus_x_and_green_from_minus_x():
    scene = shiny_scene(500)
    red = view_colors(scene.means, scene.sh, torch.tensor([3.0, 0.0, 0.0])).mean(0)
    green = view_colors(scene.means, scene.sh, torch.tensor([-3.0, 0.0, 0.0])).mean(0)
    assert red[0] > 0.75 and red[1] < 0.25 and green[1] > 0.75 and green[0] < 0.25


def test_buffer_bakes_view_colour_without_repacking():
    scene = shiny_scene(2000)
    buf = SplatBuffer()
    base = buf.build(scene)
    assert not base.view_colored
    frames = [buf.build(scene, view=cam_at(eye)) for eye in ((3.0, 0, 0.5), (-3.0, 0, 0.5))]
    assert buf.geometry_packs == 1  # a new viewpoint is a colour-only update
    for f, eye in zip(frames, ((3.0, 0, 0.5), (-3.0, 0, 0.5)), strict=True):
        assert f.view_colored
        assert np.array_equal(f.buffer[:, :7], base.buffer[:, :7])
        want = view_colors(scene.means, scene.sh, torch.tensor(eye)).clamp(0, 1).numpy()
        got = unpack(f.buffer)["rgb"] / 255.0
        assert np.abs(got - want).max() <= 1 / 255 + 1e-6
    r0, r1 = (unpack(f.buffer)["rgb"].astype(float).mean(0) for f in frames)
    assert r0[0] > 180 and r1[1] > 180  # red from +x, green from -x
    # "values" ignores colour; DC-only scenes have nothing view-dependent.
    values = scene.means[:, 0]
    assert not buf.build(scene, mode="values", values=values, view=cam_at((3, 0, 1))).view_colored
    assert not buf.build(blob_scene(), view=cam_at((3, 0, 1))).view_colored


# ---------------------------------------------------------------------- level of detail
def brute_force_contribution(scene: GaussianScene, cam: Camera) -> np.ndarray:
    """Per splat, written out: opacity × π (f r / depth)² capped at the image area, r² the product
    of the two largest scales, out-of-view (margin 1.25) at OUTSIDE_WEIGHT with the distance."""
    V = cam.viewmat.double()
    out = np.empty(len(scene))
    for i in range(len(scene)):
        p = V[:3, :3] @ scene.means[i].double() + V[:3, 3]
        s = sorted(torch.exp(scene.scales[i].double()).tolist())
        o = float(torch.sigmoid(scene.opacities[i].double()))
        x, y, z = (float(v) for v in p)
        inside = (
            z > 1e-6
            and abs(x) <= 0.5 * cam.width / float(cam.fx) * 1.25 * z
            and abs(y) <= 0.5 * cam.height / float(cam.fy) * 1.25 * z
        )
        depth = z if inside else math.sqrt(x * x + y * y + z * z)
        area = math.pi * float(cam.fx) * float(cam.fy) * s[1] * s[2] / depth**2
        c = o * min(area, cam.width * cam.height)
        out[i] = c if inside else OUTSIDE_WEIGHT * c
    return out


def test_contribution_and_selection_match_a_brute_force_reference():
    scene = blob_scene(per_blob=300, floor=12)
    g = torch.Generator().manual_seed(3)
    scene = scene.replace(
        scales=scene.scales + 0.8 * torch.randn(len(scene), 3, generator=g),
        opacities=torch.randn(len(scene), generator=g),
    )
    cam = cam_at((0.9, -1.2, 0.6), target=(0.4, 0.0, 0.2), width=80, height=60)
    sizes = splat_sizes(scene)
    ref = brute_force_contribution(scene, cam)
    ours = contribution(sizes, cam)
    assert np.allclose(ours, ref, rtol=1e-4)
    assert (ref < ref.max() * OUTSIDE_WEIGHT).any()  # some splats are out of view
    rows = np.arange(0, len(scene), 3)
    assert np.allclose(contribution(sizes, cam, rows), ref[rows], rtol=1e-4)
    # Priority sampling, written out: keep the `budget` largest contribution / draw, widen each
    # kept splat to max(its contribution, the largest priority left out).
    budget = 200
    assert np.all((sizes.u > 0) & (sizes.u <= 1))
    prio = sorted(((ref[i] / float(sizes.u[i]), i) for i in range(len(scene))), reverse=True)
    want = sorted(i for _, i in prio[:budget])
    tau = prio[budget][0]
    kept, factor = select(ours, sizes.u, budget)
    assert kept.tolist() == want
    want_f = np.clip(tau / ref[kept], 1.0, MAX_WIDEN)
    assert np.allclose(factor, want_f, rtol=1e-3)
    assert (factor == 1.0).any() and (factor > 1.0).any()
    # The picture's dominant splats are always kept.
    assert set(np.argsort(-ref)[:20]) <= set(kept.tolist())
    all_rows, ones = select(ours, sizes.u, 10**9)
    assert np.array_equal(all_rows, np.arange(len(scene))) and np.all(ones == 1.0)


def test_contribution_sample_looks_more_like_the_scene_than_a_uniform_one():
    """Same budget: the splats priority-sampled by contribution from the camera (widened as the
    buffer widens them) render closer to the full scene than a position-hashed uniform sample
    widened by N/M (what a slow browser used to get), and closer than plain top-M."""
    from app.viewer._splats import hashed_sample

    scene = capture_like_scene()
    cam = cam_at((0.3, -0.8, 0.4), target=(0.1, 0.0, 0.2), width=96, height=72)
    full = render(scene, cam, backend="cpu", background=(1.0, 1.0, 1.0)).rgb
    budget = len(scene) // 10
    sizes = splat_sizes(scene)
    score = contribution(sizes, cam)
    kept, factor = select(score, sizes.u, budget)
    frame = SplatBuffer().build(scene, budget=budget, view=cam)
    assert frame.thinned and np.array_equal(frame.shown, kept)
    top = np.sort(np.argsort(-score)[:budget])
    uniform = hashed_sample(sizes.centers, budget)
    samples = {
        "priority": (kept, factor),
        "top": (top, np.ones(budget, np.float32)),
        "uniform": (uniform, np.full(budget, len(scene) / budget, np.float32)),
    }
    errs = {}
    for name, (rows, f) in samples.items():
        sub = scene.subset(torch.as_tensor(rows))
        sub = sub.replace(scales=sub.scales + 0.5 * torch.log(torch.as_tensor(f))[:, None])
        img = render(sub, cam, backend="cpu", background=(1.0, 1.0, 1.0)).rgb
        errs[name] = float(((img - full) ** 2).mean())
    print(errs)
    assert errs["priority"] < 0.75 * errs["uniform"], errs  # measured: 0.53
    assert errs["priority"] < errs["top"], errs


def test_hidden_splats_stay_out_of_a_contribution_sample():
    import editing

    scene = blob_scene()
    red = scene.extras["label"] == 1
    iso = editing.isolate(scene, red)
    frame = SplatBuffer().build(iso, budget=500, view=cam_at((0, -2.5, 1.5)))
    assert frame.count == 500 and red.numpy()[frame.shown].all()


# ---------------------------------------------------------------------- budget per browser
def simulated_probe(n: int, per_splat: float = 2e-6, fixed: float = 0.05) -> float:
    return fixed + per_splat * n


def test_budget_controller_converges_to_the_target_and_steps_up_gently():
    total = 5_000_000
    ctl = BudgetController(floor=24_000, target_s=0.35)
    count, seen = 24_000, []
    for _ in range(8):
        b = ctl.update(simulated_probe(count), count, total)
        assert b is not None
        assert b <= 8 * count  # at most x8 a step
        seen.append(b)
        count = b
    ideal = (0.35 - 0.05) / 2e-6  # 150k splats take the target time
    assert abs(count - ideal) / ideal < 0.2, seen
    # A browser that suddenly slows down (another tab, a smaller GPU share) drops at once.
    slow = ctl.update(simulated_probe(count, per_splat=2e-5), count, total)
    assert slow is not None and slow < count / 5
    # Never below the floor; None once every splat fits the target.
    assert ctl.update(100.0, 24_000, total) == 24_000
    fast = BudgetController(floor=24_000, target_s=0.35)
    assert fast.update(0.01, 24_000, 100_000) is None


class FakeCamera(SimpleNamespace):
    def on_update(self, fn):
        pass


class FakeBrowser:
    """A tab whose camera sits at `eye` looking at the origin and whose probe takes
    `per_splat` seconds per splat shown."""

    def __init__(self, client_id: int, eye, app=None, per_splat: float = 0.0):
        from app.viewer._camera import pose_of

        cam = look_camera(width=320, height=240, eye=eye, target=(0.0, 0.0, 0.0))
        wxyz, pos = pose_of(cam)
        fov = 2 * math.atan(0.5 * cam.height / float(cam.fy))
        self.client_id, self.app, self.per_splat = client_id, app, per_splat
        self.camera = FakeCamera(
            wxyz=wxyz, position=pos, fov=fov, image_width=320, image_height=240
        )
        self.cam = cam
        self.probes: list[int] = []

    def get_render(self, *args, **kwargs):
        n = self.app.shown_count
        self.probes.append(n)
        time.sleep(min(2.0, self.per_splat * n))
        return np.zeros((48, 64, 3), np.uint8)


def test_viewer_rebakes_colour_when_a_camera_rests(tmp_path):
    from app.viewer import ViewerApp, ViewerConfig

    scene = shiny_scene(3000)
    app = ViewerApp(scene, ViewerConfig(port=0, root=tmp_path, max_splats=0))
    try:
        assert app.push_stats.view_colored  # the first push is baked for the initial view
        tab = FakeBrowser(7, (2.5, 0.0, 0.4), app)
        app._camera_moved(tab)
        wait = time.monotonic() + 20
        while app.push_stats.view_pushes == 0 and time.monotonic() < wait:
            time.sleep(0.02)
        assert app.push_stats.view_pushes == 1 and app.view_camera() is not None
        rgb = unpack(app.splats.buffer)["rgb"].astype(float).mean(0)
        assert rgb[0] > 180 and rgb[1] < 80  # red, seen from +x
        want = view_colors(scene.means, scene.sh, tab.cam.center).clamp(0, 1).numpy() * 255
        assert np.abs(unpack(app.splats.buffer)["rgb"] - want).max() <= 1.01
        # The same camera resting again sends nothing; another one does.
        app._camera_rested(tab)
        assert app.push_stats.view_pushes == 1
        other = FakeBrowser(8, (-2.5, 0.0, 0.4), app)
        app._camera_rested(other)
        assert app.push_stats.view_pushes == 2
        assert unpack(app.splats.buffer)["rgb"].astype(float).mean(0)[1] > 180  # green
    finally:
        app.stop()


def test_view_dependent_colour_switches_off_to_base_colours(tmp_path):
    """The View panel's "View-dependent colour" off: every splat shows its DC colour (grey for
    the shiny ball) from any camera; on again: the SH toward the resting camera (red)."""
    from app.viewer import ViewerApp, ViewerConfig

    scene = shiny_scene(3000)
    app = ViewerApp(scene, ViewerConfig(port=0, root=tmp_path, max_splats=0))
    try:
        app._camera_rested(FakeBrowser(7, (2.5, 0.0, 0.4), app))
        assert app.push_stats.view_colored
        app.view_panel.view_colour.value = False
        assert not app.view_colour and not app.push_stats.view_colored
        base = view_colors(scene.means, scene.sh[:, :1], (0.0, 0.0, 0.0)).clamp(0, 1) * 255
        assert np.abs(unpack(app.splats.buffer)["rgb"] - base.numpy()).max() <= 1.01
        app._camera_rested(FakeBrowser(8, (-2.5, 0.0, 0.4), app))  # resting sends no SH now
        assert np.abs(unpack(app.splats.buffer)["rgb"] - base.numpy()).max() <= 1.01
        app.view_panel.view_colour.value = True
        rgb = unpack(app.splats.buffer)["rgb"].astype(float).mean(0)
        assert rgb[1] > 180 and rgb[0] < 80  # green, seen from -x (the last camera to rest)
    finally:
        app.stop()


def test_budgeted_viewer_sends_what_the_resting_camera_sees(tmp_path):
    from app.viewer import ViewerApp, ViewerConfig

    scene = blob_scene()
    app = ViewerApp(scene, ViewerConfig(port=0, root=tmp_path, max_splats=800))
    try:
        tab = FakeBrowser(9, (1.2, -0.3, 0.5), app)  # close to the red blob at (0.4, 0, 0.2)
        app._camera_rested(tab)
        assert app.push_stats.view_pushes == 1 and app.shown_count == 800
        sizes = splat_sizes(scene)
        kept, _ = select(brute_force_contribution(scene, tab.cam), sizes.u, 800)
        assert np.array_equal(unpack(app.splats.buffer)["centers"], scene.means[kept].numpy())
    finally:
        app.stop()


def test_automatic_budget_grows_for_a_fast_browser_and_follows_the_slowest(tmp_path, monkeypatch):
    import app.viewer._app as app_module
    from app.viewer import ViewerApp, ViewerConfig

    monkeypatch.setattr(app_module, "COARSE_SPLATS", 500)
    monkeypatch.setattr(app_module, "PROBE_SETTLE_S", 0.0)
    monkeypatch.setattr(app_module, "FAST_PROBE_S", 0.2)
    scene = blob_scene(per_blob=4000, floor=60)  # 11,600 splats
    app = ViewerApp(scene, ViewerConfig(port=0, root=tmp_path))
    try:
        assert app.splat_budget == 500
        slowish = FakeBrowser(21, (0, -2.5, 1.5), app, per_splat=0.2 / 2000)  # 2000 at target
        app._clients[21] = SimpleNamespace(overlay=SimpleNamespace(stop=lambda: None))
        app._probe_client(slowish)
        assert len(slowish.probes) >= 2 and slowish.probes[0] == 500  # it measured, then grew
        assert 1500 <= app.splat_budget <= 2700, slowish.probes
        own = app.client_budget(21)
        assert app.splat_budget <= own < 1.25 * app.splat_budget  # small steps up wait
        fast = FakeBrowser(22, (0, -2.5, 1.5), app, per_splat=0.0)
        app._clients[22] = SimpleNamespace(overlay=SimpleNamespace(stop=lambda: None))
        app._probe_client(fast)
        assert app.client_budget(22) >= len(scene)
        assert app.splat_budget <= own  # the slow tab still sets it
        app._on_disconnect(slowish)
        assert app.splat_budget is None and app.shown_count == len(scene)
    finally:
        app.stop()
