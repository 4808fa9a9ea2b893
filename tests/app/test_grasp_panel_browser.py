"""Browser tier for the Grasps panel on a mug: in Chromium, the best grasp is drawn alone as a
two-finger gripper with the colour legend in the panel; "Next" moves the highlight; "Show all"
draws the others dimmed. Run with `pytest -m browser`; screenshots (`grasp_*.png`) go to
$SCENELAB_SHOTS (default /tmp/scenelab_shots)."""

from __future__ import annotations

import numpy as np
import pytest

from ._browser import (
    BROWSER_TIER,
    REGION,
    grab,
    open_page,
    poll,
    scene_pixels,
    settle,
    wait_until,
)

pytestmark = BROWSER_TIER


@pytest.fixture
def mug_app(tmp_path):
    from app.viewer import ViewerApp, ViewerConfig
    from fields.synthetic import WorldConfig, make_world

    world = make_world(0, config=WorldConfig.preview())
    viewer = ViewerApp(world.scene, ViewerConfig(port=0, root=tmp_path))
    yield viewer, world
    viewer.stop()


def changed(a: np.ndarray, b: np.ndarray) -> int:
    return int((np.abs(a[REGION].astype(int) - b[REGION].astype(int)).max(-1) > 60).sum())


def test_mug_grasps_one_at_a_time_with_a_legend(browser, mug_app):
    app, world = mug_app
    page = open_page(browser, app.url)
    poll(page, lambda im: scene_pixels(im) > 5000, what="splats")
    mug = world.object_named("mug")
    centre = mug.position + np.array([0.0, 0.0, 0.05])
    client = next(iter(app.server.get_clients().values()))
    client.camera.up_direction = (0.0, 0.0, 1.0)
    client.camera.position = tuple(centre + np.array([0.25, -0.3, 0.25]))
    client.camera.look_at = tuple(centre)
    before = settle(page)

    app.state.select(world.scene.extras["label"] == mug.label)
    page.get_by_text("Grasps", exact=True).click()  # open the folder
    page.get_by_role("button", name="Find grasps").click()
    wait_until(lambda: app.grasp_panel.shown is not None, what="grasps planned")
    app.jobs.wait_idle(60)
    panel = app.grasp_panel
    grasps = panel.shown.result.grasps
    assert len(grasps) >= 3 and panel.chosen == 0
    page.get_by_text("grasp quality").first.wait_for(timeout=30_000)  # the legend
    page.get_by_text(f"{grasps[0].score:.3f}").first.wait_for(timeout=30_000)
    poll(page, lambda im: changed(im, before) > 200, what="the best gripper")
    one = settle(page)
    grab(page, "grasp_best")

    page.get_by_role("button", name="Next").click()
    wait_until(lambda: panel.chosen == 1, what="the next grasp")
    page.get_by_text(f"{grasps[1].score:.3f}").first.wait_for(timeout=30_000)
    poll(page, lambda im: changed(im, one) > 100, what="the highlight moved")
    nxt = settle(page)
    grab(page, "grasp_next")

    page.get_by_text("Show all grasps", exact=True).click()
    wait_until(lambda: all(h.visible for h in panel.shown.handles), what="all grasps shown")
    poll(page, lambda im: changed(im, nxt) > 1000, what="the other grippers (dimmed)")
    grab(page, "grasp_all")
