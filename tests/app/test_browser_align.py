"""Browser tier for "Level the scene": a tilted capture whose file records a wrong up opens
askew in Chromium; levelling on the table top turns the scene so the table is horizontal and the
browser's camera, reset to the new framing, sees the table's up as the image's up. Run with
`pytest -m browser`; screenshots (`align_*.png`) go to $SCENELAB_SHOTS (default
/tmp/scenelab_shots)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from ._browser import (
    BROWSER_TIER,
    grab,
    open_page,
    poll,
    scene_pixels,
    settle,
    wait_until,
)

pytestmark = BROWSER_TIER


def image_tilt_deg(client, point: np.ndarray, up: np.ndarray) -> float:
    """How far the world direction `up` at `point` leans from the image's vertical, in the
    browser's current camera (0: straight up the screen)."""
    from app.viewer._camera import client_camera

    cam = client_camera(client.camera)
    V, K = cam.viewmat.double().numpy(), cam.K.double().numpy()

    def uv(p):
        q = V[:3, :3] @ p + V[:3, 3]
        return np.array([K[0, 0] * q[0] / q[2], K[1, 1] * q[1] / q[2]])

    d = uv(point + 0.05 * up) - uv(point)
    return math.degrees(math.atan2(abs(d[0]), -d[1]))


@pytest.fixture
def tilted_app(tmp_path):
    from app.viewer import ViewerApp, ViewerConfig
    from fields.synthetic import WorldConfig, make_world

    world = make_world(0, config=WorldConfig.preview())
    T = np.eye(4)
    T[:3, :3] = Rotation.from_euler("xy", [35.0, -20.0], degrees=True).as_matrix()
    meta = {**world.scene.meta, "up": "+z"}  # the file's claim; the table is tilted ~40°
    scene = world.scene.transform(torch.from_numpy(T)).replace(meta=meta)
    viewer = ViewerApp(scene, ViewerConfig(port=0, root=tmp_path, max_splats=0))
    yield viewer, world, T
    viewer.stop()


def test_level_the_scene_in_the_browser(browser, tilted_app):
    app, world, T = tilted_app
    page = open_page(browser, app.url)
    poll(page, lambda im: scene_pixels(im) > 5_000, what="splats")
    wait_until(lambda: len(app.server.get_clients()) == 1, what="a client")
    client = next(iter(app.server.get_clients().values()))
    before = settle(page, wait=2.0)
    grab(page, "align_1_tilted")
    top = np.array([0.0, 0.0, world.table.params["top_z"]])
    true_up = T[:3, :3] @ [0.0, 0.0, 1.0]
    assert image_tilt_deg(client, T[:3, :3] @ top, true_up) > 10.0  # askew on screen

    # Click on the table top (a free corner of it), as the browser's camera sees it.
    p = world.table.params
    corner = T[:3, :3] @ np.array([0.42 * p["size_x"], -0.40 * p["size_y"], p["top_z"]])
    steps = len(app.state.history.steps)
    L = app.view_panel.align.level_at(corner, toward=np.asarray(client.camera.position))
    assert len(app.state.history.steps) == steps + 1
    assert np.allclose(app.up, [0, 0, 1]) and app.state.scene.meta["up"] == "+z"
    wait_until(
        lambda: np.allclose(np.asarray(client.camera.up_direction), [0, 0, 1], atol=1e-3),
        what="the browser's camera to take the new up",
    )
    after = settle(page, wait=2.0)
    grab(page, "align_2_levelled")
    assert scene_pixels(after) > 5_000
    assert np.abs(after.astype(int) - before.astype(int)).max(-1).mean() > 5  # it moved
    levelled_up = L[:3, :3] @ true_up
    assert math.degrees(math.acos(min(1.0, float(levelled_up[2])))) < 1.0
    centre = L[:3, :3] @ (T[:3, :3] @ top) + L[:3, 3]
    assert image_tilt_deg(client, centre, np.array([0.0, 0.0, 1.0])) < 3.0  # upright on screen
