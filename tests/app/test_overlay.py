"""Server-rendered overlays: correct images from `fields.render`, drawn when the camera rests."""

import time
from types import SimpleNamespace

import numpy as np
import torch

from app.viewer._camera import pose_of, vertical_fov
from app.viewer._overlay import OverlayWorker, overlay_image
from app.viewer._splats import HIGHLIGHT, turbo
from app.viewer._state import ViewerState
from fields import render

from .conftest import look_camera, project


def test_coverage_is_rendered_alpha(scene):
    cam = look_camera()
    snap = ViewerState(scene).snapshot()
    img = overlay_image(snap, cam, "alpha")
    alpha = render(scene, cam).alpha[..., 0].numpy()
    assert img.shape == (cam.height, cam.width, 3)
    assert np.abs(img[..., 0] / 255.0 - (1.0 - alpha)).max() < 0.01


def test_depth_overlay_orders_near_and_far(scene):
    cam = look_camera(eye=(2.5, 0.0, 0.6), target=(0.0, 0.0, 0.2))  # red blob near, blue far
    img = overlay_image(ViewerState(scene).snapshot(), cam, "depth").astype(float) / 255
    near_px = [round(x) for x in project(cam, (0.4, 0.0, 0.2))]
    far_px = [round(x) for x in project(cam, (-0.4, 0.0, 0.33))]
    near, far = img[near_px[1], near_px[0]], img[far_px[1], far_px[0]]
    lut = turbo(np.linspace(0, 1, 256))
    pos = lambda c: int(np.argmin(((lut - c) ** 2).sum(-1)))  # noqa: E731
    assert pos(near) > pos(far) + 20  # near is toward red (high end), far toward blue


def test_selection_overlay_highlights_the_selection(scene):
    cam = look_camera()
    state = ViewerState(scene)
    state.select(scene.extras["label"] == 1)
    img = overlay_image(state.snapshot(), cam, "selection").astype(float) / 255
    u, v = (round(x) for x in project(cam, (0.4, 0.0, 0.2)))
    assert np.abs(img[v, u] - HIGHLIGHT).max() < 0.15
    u, v = (round(x) for x in project(cam, (-0.4, 0.0, 0.2)))
    assert np.abs(img[v, u] - HIGHLIGHT).max() > 0.3


def test_hidden_gaussians_do_not_render(scene):
    import editing

    cam = look_camera()
    red = scene.extras["label"] == 1
    img = overlay_image(ViewerState(editing.isolate(scene, red)).snapshot(), cam, "alpha")
    u, v = (round(x) for x in project(cam, (-0.4, 0.0, 0.2)))  # where the hidden blue blob is
    assert img[v, u, 0] > 250


class FakeClient:
    """What OverlayWorker needs from a viser.ClientHandle."""

    def __init__(self, cam):
        wxyz, pos = pose_of(cam)
        self.client_id = 1
        self.camera = SimpleNamespace(
            wxyz=wxyz, position=pos, fov=vertical_fov(cam), image_width=640, image_height=480
        )
        self.sent = []
        self.scene = SimpleNamespace(
            set_background_image=lambda img, format="png": self.sent.append(img)
        )


def wait_for(cond, timeout=10.0):
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, "timed out"
        time.sleep(0.02)


def test_worker_renders_when_the_camera_rests_and_blanks_while_moving(scene):
    client = FakeClient(look_camera(640, 480))
    state = ViewerState(scene)
    mode = {"m": "depth"}
    worker = OverlayWorker(
        client,
        lambda: None if mode["m"] is None else (mode["m"], state.snapshot()),
        max_side=160,
        rest_s=0.1,
    )
    try:
        worker.poke()
        wait_for(lambda: worker.frames == 1)
        assert client.sent[-1].shape == (120, 160, 3)
        t0 = time.monotonic()
        for _ in range(5):  # a moving camera: no renders until it rests
            worker.poke(camera_moved=True)
            time.sleep(0.03)
        assert client.sent[-1] is None  # the stale overlay was blanked while moving
        wait_for(lambda: worker.frames == 2)
        assert time.monotonic() - t0 >= 0.1
        mode["m"] = None
        worker.poke()
        wait_for(lambda: client.sent[-1] is None and worker.frames == 2)
    finally:
        worker.stop()


def test_app_overlay_hides_splats(viewer):
    viewer.view_panel.set_display("Depth (rendered)")
    assert viewer.overlay_mode == "depth" and viewer.splats.visible is False
    viewer.view_panel.set_display("Colour")
    assert viewer.overlay_mode is None and viewer.splats.visible is True
    torch.testing.assert_close(
        viewer.state.selection, torch.zeros(len(viewer.state.scene), dtype=torch.bool)
    )
