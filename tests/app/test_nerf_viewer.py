"""Viewing a NeRF: frames rendered on the server (banded, interruptible) with the depth viser
composites with; the per-browser streamer (a preview while the camera moves, the full frame once
it rests, the newest camera wins, stale full frames dropped, a clean stop); and the viewer around
it (Gaussian tools only once there are Gaussians, display modes, the language query's heat map,
Convert to Gaussians, a NeRF training run). No browser: see test_browser_nerf.py for that."""

from __future__ import annotations

import math
import threading
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from app.viewer import ViewerApp, ViewerConfig
from app.viewer._nerf_view import (
    FAR_DEPTH,
    MIN_PREVIEW_SIDE,
    NerfDisplay,
    NerfFrameStreamer,
    Relevancy,
    ViewPose,
    nerf_bounds,
    render_interruptible,
    render_nerf_frame,
)
from app.viewer._splats import turbo
from fields import Camera
from fields.features import FeatureField
from fields.features._oracle import name_embedding
from fields.nerf import NerfModelConfig, NerfScene, SceneBox, render_nerf

from .test_overlay import wait_for

BALL_RADIUS = 0.35
LEFT, RIGHT = (-0.5, 0.0, 0.0), (0.5, 0.0, 0.0)


def ball_nerf(
    centres=(LEFT, RIGHT), radius: float = BALL_RADIUS, features: bool = False
) -> NerfScene:
    """Opaque red balls in the box [-1,1]^3: a constant, dense field (sigma ~ e^5 per unit) that
    the occupancy grid confines to the balls' cells. With `features`, a 2-channel branch that
    reads [1,0] left of x=0 and [0,1] right of it, decoded by an oracle head that names them
    "left ball" and "right ball"."""
    cfg = NerfModelConfig(
        levels=4, log2_table=12, max_res=32, hidden=16, color_hidden=16, occupancy_res=32
    )
    scene = NerfScene.create(cfg, SceneBox((0.0, 0.0, 0.0), 1.0, "box"), meta={"up": "+z"})
    f = scene.field
    with torch.no_grad():
        f.density_mlp[-1].weight.zero_()
        f.density_mlp[-1].bias.zero_()
        f.density_mlp[-1].bias[0] = 6.0
        f.color_mlp[-1].weight.zero_()
        f.color_mlp[-1].bias.copy_(torch.tensor([3.0, -3.0, -3.0]))
    G = cfg.occupancy_res
    ticks = (torch.arange(G) + 0.5) / G * 2 - 1
    z, y, x = torch.meshgrid(ticks, ticks, ticks, indexing="ij")
    occ = torch.zeros(G, G, G, dtype=torch.bool)
    for c in centres:
        occ |= ((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2).sqrt() <= radius
    scene.occupancy = occ
    if features:
        f.add_feature_branch(2)
        f.features = lambda pts: torch.stack([pts[:, 0] < 0, pts[:, 0] >= 0], -1).float()
        head = torch.stack([name_embedding("left ball", 512), name_embedding("right ball", 512)], 1)
        scene.feature_field = FeatureField(
            features=torch.zeros(0, 2),
            heads={"oracle": head},
            teachers=[
                {
                    "name": "oracle",
                    "space": "oracle",
                    "dim": 512,
                    "seed": 0,
                    "label_names": {"1": "left ball", "2": "right ball"},
                }
            ],
            levels=("whole",),
        )
    return scene


def front_camera(width: int = 64, height: int = 48, eye=(0.0, -3.0, 0.0)) -> Camera:
    f = 0.5 * height / math.tan(math.radians(25))
    K = torch.tensor([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]])
    return Camera.look_at(eye, (0.0, 0.0, 0.0), (0.0, 0.0, 1.0), K, width, height)


def pixel_of(camera: Camera, point) -> tuple[int, int]:
    p = camera.viewmat.double() @ torch.tensor([*point, 1.0], dtype=torch.float64)
    uv = camera.K.double() @ (p[:3] / p[2])
    return int(uv[0]), int(uv[1])


def is_grey(pixel: np.ndarray) -> bool:
    p = pixel.astype(int)
    return int(p.max() - p.min()) < 20


@pytest.fixture(scope="module")
def balls() -> NerfScene:
    return ball_nerf()


# ---------------------------------------------------------------------- frames
def test_banded_render_matches_one_render(balls):
    cam = front_camera(40, 30)
    ref = render_nerf(balls, cam)
    out = render_interruptible(balls, cam, band_pixels=100)  # 2-row bands
    assert out is not None
    for a, b in ((out.rgb, ref.rgb), (out.alpha, ref.alpha), (out.depth, ref.depth)):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert out.n_samples == ref.n_samples


def test_banded_render_stops_when_cancelled(balls):
    calls = []

    def cancelled() -> bool:
        calls.append(1)
        return len(calls) > 2

    assert (
        render_interruptible(balls, front_camera(40, 30), cancelled=cancelled, band_pixels=100)
        is None
    )
    assert len(calls) == 3  # two bands rendered, then it stopped


def test_frame_has_the_camera_z_depth_viser_composites_with(balls):
    cam = front_camera()
    image, depth = render_nerf_frame(balls, cam, "rgb")
    assert image.shape == (48, 64, 3) and image.dtype == np.uint8
    assert depth.shape == (48, 64) and depth.dtype == np.float32
    u, v = pixel_of(cam, LEFT)
    # The left ball's front surface: camera z = 3 - radius, within one occupancy cell (1/16).
    assert abs(depth[v, u] - (3.0 - BALL_RADIUS)) < 0.08
    assert image[v, u, 0] > 200 and image[v, u, 1] < 40  # red
    assert depth[0, 0] == pytest.approx(FAR_DEPTH)  # empty: behind everything
    assert (image[0, 0] == 255).all()  # the white background


def test_depth_display_colours_near_red_and_far_blue():
    scene = ball_nerf(centres=((-0.5, -0.4, 0.0), (0.5, 0.5, 0.0)))  # left ball nearer
    cam = front_camera()
    image, _ = render_nerf_frame(scene, cam, "depth")
    lut = turbo(np.linspace(0, 1, 256))

    def pos(px):
        c = image[px[1], px[0]].astype(np.float32) / 255
        return int(np.argmin(((lut - c) ** 2).sum(-1)))

    near, far = pixel_of(cam, (-0.5, -0.4, 0.0)), pixel_of(cam, (0.5, 0.5, 0.0))
    assert pos(near) > pos(far) + 40


def test_relevancy_display_without_a_query_or_branch_is_refused(balls):
    with pytest.raises(ValueError, match="query"):
        render_nerf_frame(balls, front_camera(), "relevancy")
    rel = Relevancy("x", lambda cam, f, a: torch.zeros(cam.height, cam.width))
    with pytest.raises(ValueError, match="feature branch"):
        render_nerf_frame(balls, front_camera(), "relevancy", relevancy=rel)
    with pytest.raises(ValueError, match="feature branch"):
        NerfDisplay(balls).set_relevancy(rel)
    with pytest.raises(ValueError, match="query"):
        NerfDisplay(balls).set_mode("relevancy")


def test_relevancy_display_heats_what_the_scorer_names():
    scene = ball_nerf(features=True)
    # Score = the branch's first channel (the left ball), as a scorer would from the features.
    rel = Relevancy("left", lambda cam, f, a: f[..., 0] / a[..., 0].clamp_min(1e-6))
    cam = front_camera()
    image, _ = render_nerf_frame(scene, cam, "relevancy", relevancy=rel)
    (lu, lv), (ru, rv) = pixel_of(cam, LEFT), pixel_of(cam, RIGHT)
    assert np.abs(image[lv, lu] / 255 - turbo(np.array(1.0))).max() < 0.1  # hot
    assert is_grey(image[rv, ru])  # no preference: the scene in grey


def test_nerf_query_heat_map_through_the_display():
    nerf = pytest.importorskip("fields.nerf")
    if not hasattr(nerf, "NerfQuery"):
        pytest.skip("fields.nerf.NerfQuery is not exported yet")
    scene = ball_nerf(features=True)
    nq = nerf.NerfQuery(scene)
    rel = Relevancy(
        "right ball",
        lambda cam, f, a: nq.relevancy(cam, "right ball", level="whole", features=f, alpha=a),
    )
    display = NerfDisplay(scene)
    display.set_relevancy(rel)
    assert display.mode == "relevancy"
    cam = front_camera()
    image, _ = display.frame(cam)
    (lu, lv), (ru, rv) = pixel_of(cam, LEFT), pixel_of(cam, RIGHT)
    lut = turbo(np.linspace(0, 1, 256))

    def pos(u, v):
        c = image[v, u].astype(np.float32) / 255
        return int(np.argmin(((lut - c) ** 2).sum(-1)))

    assert pos(ru, rv) > 200 and is_grey(image[lv, lu])


def test_nerf_bounds_frame_the_occupied_cells(balls):
    centre, radius = nerf_bounds(balls)
    assert np.abs(centre).max() < 0.05
    assert 0.8 < radius < 1.05  # half the diagonal of [-0.85,0.85] x [-0.35,0.35]^2: 0.97


def test_view_pose_camera_keeps_aspect_and_caps_at_canvas(balls):
    pose = ViewPose.of_camera(front_camera(640, 480))
    cam = pose.camera(64)
    assert (cam.width, cam.height) == (64, 48)
    assert (pose.camera(4096).width, pose.camera(4096).height) == (640, 480)
    torch.testing.assert_close(cam.c2w, front_camera(640, 480).c2w, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------- the streamer
class FakeRenderer:
    """Records each render's pose and size; `gate` (when set) holds a render until released,
    `slow_full` makes full frames poll `cancelled` in a loop until released or cancelled."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[float, ...], tuple[int, int]]] = []
        self.gate: threading.Event | None = None
        self.started = threading.Event()
        self.slow_full = False
        self.release = threading.Event()
        self.cancelled_seen = 0

    def __call__(self, camera: Camera, cancelled):
        self.calls.append((tuple(camera.c2w[:3, 3].tolist()), (camera.height, camera.width)))
        self.started.set()
        if self.gate is not None:
            self.gate.wait(10)
        if self.slow_full and max(camera.width, camera.height) > 100:
            while not self.release.wait(0.01):
                if cancelled():
                    self.cancelled_seen += 1
                    return None
        return (
            np.zeros((camera.height, camera.width, 3), np.uint8),
            np.ones((camera.height, camera.width), np.float32),
        )


def pose_at(x: float) -> ViewPose:
    return ViewPose.of_camera(front_camera(640, 480, eye=(x, -3.0, 0.0)))


def make_streamer(render, **kw):
    sent = []
    kw.setdefault("preview_budget_s", 0.0)  # fixed preview size
    streamer = NerfFrameStreamer(render, sent.append, preview_side=64, full_side=256, **kw)
    return streamer, sent


def test_streamer_sends_a_preview_then_refines_to_the_full_frame():
    render = FakeRenderer()
    streamer, sent = make_streamer(render, rest_s=0.05)
    try:
        req = streamer.request(pose_at(0.0))
        assert streamer.wait_idle(10)
        assert [(f.quality, f.request, f.image.shape[:2]) for f in sent] == [
            ("preview", req, (48, 64)),
            ("refine", req, (96, 128)),
            ("full", req, (192, 256)),
        ]
        assert all(f.depth.shape == f.image.shape[:2] for f in sent)
    finally:
        streamer.stop()


def test_streamer_draws_only_the_newest_of_waiting_requests():
    render = FakeRenderer()
    render.gate = threading.Event()
    streamer, sent = make_streamer(render, rest_s=0.05)
    try:
        streamer.request(pose_at(0.0))
        assert render.started.wait(5)  # the first preview is rendering, held at the gate
        for x in (0.1, 0.2, 0.3):
            last = streamer.request(pose_at(x))
        render.gate.set()
        assert streamer.wait_idle(10)
        drawn_x = [round(c[0][0], 3) for c in render.calls]
        assert drawn_x == [0.0, 0.3, 0.3, 0.3]  # the first's preview, then only the newest
        assert [(f.quality, f.request) for f in sent][-3:] == [
            ("preview", last),
            ("refine", last),
            ("full", last),
        ]
    finally:
        streamer.stop()


def test_streamer_drops_a_resting_frame_when_the_camera_moves():
    render = FakeRenderer()
    render.slow_full = True
    streamer, sent = make_streamer(render, rest_s=0.02)
    try:
        streamer.request(pose_at(0.0))
        wait_for(lambda: any(size[1] > 100 for _, size in render.calls))
        req = streamer.request(pose_at(0.5))  # while the first pose's resting frame renders
        wait_for(lambda: render.cancelled_seen >= 1)
        render.release.set()
        assert streamer.wait_idle(10)
        assert streamer.dropped >= 1
        resting = [f.request for f in sent if f.quality != "preview"]
        assert resting == [req, req]  # the first pose's never reached the browser
    finally:
        streamer.stop()


def test_refresh_redraws_the_same_view_at_full_resolution():
    render = FakeRenderer()
    streamer, sent = make_streamer(render, rest_s=0.02)
    try:
        req = streamer.request(pose_at(0.0))
        assert streamer.wait_idle(10)
        n = len(sent)
        streamer.refresh()
        wait_for(lambda: len(sent) > n)
        assert streamer.wait_idle(10)
        assert [(f.quality, f.request) for f in sent[n:]] == [("full", req)]
    finally:
        streamer.stop()


def test_new_content_does_not_cancel_a_resting_frame():
    """Training snapshots may arrive faster than a slow NeRF renders a frame: the frame in
    progress completes (same view) and the newest content follows, instead of starving."""
    render = FakeRenderer()
    render.slow_full = True
    streamer, sent = make_streamer(render, rest_s=0.02)
    try:
        streamer.request(pose_at(0.0))
        wait_for(lambda: any(size[1] > 100 for _, size in render.calls))
        for _ in range(3):
            streamer.refresh()
        render.release.set()
        assert streamer.wait_idle(10)  # idle: the newest content is shown at full size
        assert render.cancelled_seen == 0 and streamer.dropped == 0
        assert [f.quality for f in sent][-2:] == ["refine", "full"]
    finally:
        streamer.stop()


def test_stop_ends_a_render_in_progress():
    render = FakeRenderer()
    render.slow_full = True
    streamer, _ = make_streamer(render, rest_s=0.0)
    streamer.request(pose_at(0.0))
    wait_for(lambda: any(size[1] > 100 for _, size in render.calls))
    streamer.stop(timeout=5)
    assert not streamer.alive
    assert render.cancelled_seen == 1


def test_render_errors_reach_on_error_and_the_streamer_goes_on():
    errors = []
    fail = [True]

    def render(camera, cancelled):
        if fail[0]:
            raise RuntimeError("boom")
        return np.zeros((camera.height, camera.width, 3), np.uint8), np.zeros(
            (camera.height, camera.width), np.float32
        )

    streamer, sent = make_streamer(render, rest_s=0.01, on_error=errors.append)
    try:
        streamer.request(pose_at(0.0))
        wait_for(lambda: errors)
        assert str(errors[0]) == "boom" and not sent
        fail[0] = False
        streamer.request(pose_at(0.1))
        assert streamer.wait_idle(10)
        assert [f.quality for f in sent] == ["preview", "refine", "full"]
    finally:
        streamer.stop()


def test_previews_shrink_when_they_render_slowly():
    streamer, _ = make_streamer(FakeRenderer(), preview_budget_s=0.1)
    try:
        cam = ViewPose.of_camera(front_camera(640, 480)).camera(64)
        for _ in range(8):
            streamer._adapt_preview(cam, 0.4)  # 4x over budget: half the side
        assert MIN_PREVIEW_SIDE <= streamer.preview_side <= 36
        for _ in range(8):
            streamer._adapt_preview(cam, 0.001)
        assert streamer.preview_side == 64  # never above the configured side
    finally:
        streamer.stop()


def test_streamer_on_a_real_nerf(balls):
    display = NerfDisplay(balls)
    streamer, sent = make_streamer(display.frame, rest_s=0.02)
    display.on_change(streamer.refresh)  # as the viewer wires them
    try:
        streamer.request(ViewPose.of_camera(front_camera(320, 240)))
        assert streamer.wait_idle(30)
        preview, full = sent[0], sent[-1]
        assert preview.image.shape == (48, 64, 3) and preview.depth.shape == (48, 64)
        assert full.image.shape == (192, 256, 3) and full.depth.shape == (192, 256)
        # The same surface at both resolutions: the nearest depth is the balls' front.
        assert abs(float(full.depth.min()) - float(preview.depth.min())) < 0.1
        n = len(sent)
        display.set_mode("depth")  # a display change redraws at full resolution
        wait_for(lambda: len(sent) > n)
        assert streamer.wait_idle(30)
        assert sent[-1].quality == "full"
        assert not np.array_equal(sent[-1].image, full.image)
    finally:
        streamer.stop()


# ---------------------------------------------------------------------- the viewer
class FakeClient:
    """What ViewerApp needs from a viser.ClientHandle to stream NeRF frames to it."""

    def __init__(self, camera: Camera, client_id: int = 1) -> None:
        pose = ViewPose.of_camera(camera)
        self.client_id = client_id
        self._callbacks = []
        self.camera = SimpleNamespace(
            wxyz=np.array(pose.wxyz),
            position=np.array(pose.position),
            fov=pose.fov_y,
            image_width=camera.width,
            image_height=camera.height,
            on_update=self._callbacks.append,
        )
        self.frames: list[tuple[np.ndarray | None, np.ndarray | None]] = []
        self.notes: list[str] = []

        def set_background_image(image, format="auto", *, jpeg_quality=None, depth=None):
            self.frames.append((image, depth))

        self.scene = SimpleNamespace(set_background_image=set_background_image)

    def add_notification(self, title, body, **kw):
        self.notes.append(f"{title}: {body}")

    def move_to(self, camera: Camera) -> None:
        pose = ViewPose.of_camera(camera)
        self.camera.wxyz, self.camera.position = np.array(pose.wxyz), np.array(pose.position)
        for cb in self._callbacks:
            cb(self.camera)


@pytest.fixture
def nerf_app(tmp_path):
    app = ViewerApp(ball_nerf(features=True), ViewerConfig(port=0, root=tmp_path))
    try:
        yield app
    finally:
        app.stop()


def connect(app: ViewerApp, camera: Camera | None = None) -> FakeClient:
    client = FakeClient(camera or front_camera(320, 240))
    app._on_connect(client)
    return client


def test_viewer_on_a_nerf_offers_no_gaussian_tools_until_converted(nerf_app):
    app = nerf_app
    assert app.nerf is not None and not app.gaussian_tools
    assert not hasattr(app, "selection_panel") and not hasattr(app, "grasp_panel")
    assert app.nerf_panel is not None and app.nerf_panel.folder.visible
    assert "Convert to Gaussians" in app.nerf_panel.convert_button.label
    assert tuple(app.view_panel.display.options) == ("Colour", "Depth", "Relevancy")
    assert len(app.state.scene) == 0
    assert "NeRF" in app.jobs_panel.summary.content


def test_a_nerf_opened_alone_starts_where_it_was_photographed_from(tmp_path):
    from fields.camera import cameras_to_meta

    scene = ball_nerf()
    cams = [front_camera(eye=(3 * math.sin(a), -3 * math.cos(a), 1.0)) for a in (0.3, 1.2, 2.5)]
    scene.meta = {"cameras": cameras_to_meta(cams)}  # no "up": the cameras say +z
    app = ViewerApp(scene, ViewerConfig(port=0, root=tmp_path))
    try:
        assert app.up_source == "cameras" and app.up[2] > 0.9  # their mean image up
        eye, look_at, _ = app.initial_view
        assert np.allclose(eye, cams[0].center.double().numpy(), atol=1e-4)
        assert np.linalg.norm(look_at) < 0.1  # orbits about the NeRF, not 1 unit ahead
    finally:
        app.stop()


def test_viewer_streams_frames_with_depth_to_each_browser(nerf_app):
    app = nerf_app
    client = connect(app)
    streamer = app.nerf_streamer(client.client_id)
    assert streamer is not None and streamer.wait_idle(30)
    image, depth = client.frames[-1]
    assert image.shape == (192, 256, 3) and depth.shape == (192, 256)
    n = len(client.frames)
    client.move_to(front_camera(320, 240, eye=(1.0, -3.0, 0.5)))  # the camera moves
    wait_for(lambda: len(client.frames) >= n + 2)
    assert streamer.wait_idle(30)
    assert client.frames[n][0].shape[1] <= 64  # a preview first
    assert client.frames[-1][0].shape == (192, 256, 3)
    app._on_disconnect(client)
    assert not streamer.alive


def test_view_display_switches_what_the_nerf_shows(nerf_app):
    app = nerf_app
    app.view_panel.set_display("Depth")
    assert app.nerf_display.mode == "depth"
    app.view_panel.set_display("Colour")
    assert app.nerf_display.mode == "rgb"
    with pytest.raises(ValueError, match="query"):
        app.view_panel.set_display("Relevancy")  # nothing queried yet
    assert app.view_panel.display.value == "Colour"
    with pytest.raises(ValueError, match="unknown display"):
        app.view_panel.set_display("Values (rendered)")


def test_language_query_on_a_nerf_shows_a_relevancy_heat_map(nerf_app):
    nerf = pytest.importorskip("fields.nerf")
    if not hasattr(nerf, "NerfQuery"):
        pytest.skip("fields.nerf.NerfQuery is not exported yet")
    app = nerf_app
    client = connect(app)
    panel = app.query_panel
    assert not panel.query_button.disabled and not panel.select_button.visible
    job = panel.run("right ball")
    assert job.wait(60) and job.error is None, job.error
    assert app.nerf_display.mode == "relevancy"
    assert app.view_panel.display.value == "Relevancy"
    assert "right ball" in panel.status.content
    streamer = app.nerf_streamer(client.client_id)
    wait_for(lambda: streamer.wait_idle(30))
    image = client.frames[-1][0]
    cam = ViewPose.of_camera(front_camera(320, 240)).camera(256)
    (lu, lv), (ru, rv) = pixel_of(cam, LEFT), pixel_of(cam, RIGHT)
    lut = turbo(np.linspace(0, 1, 256))

    def pos(u, v):  # where on the turbo scale a pixel's colour lies
        c = image[v, u].astype(np.float32) / 255
        return int(np.argmin(((lut - c) ** 2).sum(-1)))

    assert pos(ru, rv) > 200 and is_grey(image[lv, lu])  # right hot, left not
    with pytest.raises(ValueError, match="Convert to Gaussians"):
        panel.run("right ball", select=True)


def test_convert_to_gaussians_swaps_in_gaussians_and_their_tools(nerf_app):
    nerf = pytest.importorskip("fields.nerf")
    if not hasattr(nerf, "nerf_to_gaussians"):
        pytest.skip("fields.nerf.nerf_to_gaussians is not exported yet")
    app = nerf_app
    client = connect(app)
    config = nerf.ConvertConfig(
        time_budget_min=None, steps=60, views=8, resolution=48, init_points=2000, sh_degree=0
    )
    job = app.nerf_panel.convert(config)
    assert job.wait(300) and job.error is None, job.error
    assert app.nerf is None and app.gaussian_tools
    assert len(app.state.scene) > 100
    assert app.selection_panel is not None and app.grasp_panel is not None
    assert not app.nerf_panel.folder.visible
    assert app.nerf_streamer(client.client_id) is None
    assert client.frames[-1] == (None, None)  # the NeRF's background is cleared
    assert "Values (rendered)" in app.view_panel.display.options
    # The branch's features came along: the Gaussians answer queries.
    assert app.state.current_field() is not None
    assert app.state.text_query() is not None
    # A Gaussian op works on the converted scene.
    n = app.state.select_all()
    assert n == len(app.state.scene)


def test_view_command_refuses_features_for_a_nerf(tmp_path, capsys):
    from app.cli import main
    from fields.nerf import save_nerf

    path = save_nerf(ball_nerf(), tmp_path / "balls.nerf")
    features = tmp_path / "f.safetensors"
    features.write_bytes(b"x")
    assert main(["view", str(path), "--features", str(features), "--port", "1"]) != 0
    assert "feature branch" in capsys.readouterr().err


def test_training_a_nerf_in_the_viewer_shows_its_snapshots(tmp_path):
    """`scenelab train DATA --model nerf --viewer`: the Train folder runs a NeRF session and the
    viewer shows its snapshots through the NeRF streamers."""
    from app.viewer._panel_train import TrainPanel
    from fields import load_dataset
    from fields.nerf import NerfTrainConfig, NerfTrainer
    from fields.synthetic import make_world, write_world
    from fields.training import TrainSession

    root = tmp_path / "data"
    write_world(make_world(0), root, n_views=6, width=32, height=24)
    ds = load_dataset(root)
    cfg = NerfTrainConfig(
        steps=100_000,
        rays_per_step=128,
        target_samples=1 << 12,
        model=NerfModelConfig(levels=4, log2_table=12, max_res=32, occupancy_res=16),
    )
    try:
        session = TrainSession(
            NerfTrainer(ds, cfg), out=tmp_path / "t.nerf", publish_every_s=0.2, eval_every_s=60
        )
    except ValueError as e:  # a TrainSession that knows only Gaussians
        pytest.skip(f"TrainSession does not train NeRFs yet: {e}")
    app = ViewerApp(session.snapshot()[1], ViewerConfig(port=0, root=tmp_path), cameras=ds.cameras)
    try:
        client = connect(app, ds.cameras[0])
        first = app.nerf
        panel = TrainPanel(app, session=session, refresh_s=0.1)
        wait_for(lambda: app.nerf is not first and session.status().step > 3, timeout=120)
        assert "NeRF occupancy" in panel.readout.content
        streamer = app.nerf_streamer(client.client_id)
        assert streamer is not None and streamer.wait_idle(60)
        assert client.frames[-1][0] is not None
        session.stop()
        assert panel.job.wait(120)
        assert (tmp_path / "t.nerf").is_file()
        panel.close()
    finally:
        session.stop()
        app.stop()
