"""Browser tier for "Remove (fill)": in Chromium, deleting the mug of the demo world leaves a
mug-shaped hole in the table (the capture never saw the wood under it); undo, then "Remove
(fill)" closes it, and the picture matches the same world generated without the mug. Run with
`pytest -m browser`; screenshots (`remove_*.png`) go to $SCENELAB_SHOTS (default
/tmp/scenelab_shots)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ._browser import (
    BROWSER_TIER,
    grab,
    open_page,
    poll,
    scene_pixels,
    settle,
    wait_until,
)
from .conftest import project

pytestmark = BROWSER_TIER


@pytest.fixture
def demo_app(tmp_path):
    from app.viewer import ViewerApp, ViewerConfig
    from fields.synthetic import make_world

    world = make_world(0)
    viewer = ViewerApp(world.scene, ViewerConfig(port=0, root=tmp_path, max_splats=0))
    yield viewer, world
    viewer.stop()


def settle_after_jobs(page, app, seconds: float = 2.0) -> np.ndarray:
    """A screenshot once the jobs are done and the browser has drawn the latest push."""
    app.jobs.wait_idle(60)
    return settle(page, wait=seconds)


def test_remove_fill_closes_the_hole_delete_leaves(browser, demo_app):
    from app.viewer._camera import client_camera
    from fields.conventions import orbit_cameras
    from fields.synthetic import make_world

    app, world = demo_app
    page = open_page(browser, app.url)
    poll(page, lambda im: scene_pixels(im) > 20_000, what="splats")
    mug = world.object_named("mug")
    client = next(iter(app.server.get_clients().values()))
    (cam,) = orbit_cameras(
        torch.tensor(mug.position), 0.2, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64),
        torch.tensor([0.6]), torch.tensor([62.0]), width=1000, height=700, fov_deg=50,
    )  # fmt: skip
    app.look_through(client, cam)
    before = settle_after_jobs(page, app)
    grab(page, "remove_1_mug")

    # The disc under the mug, as this browser's camera sees it.
    view = client_camera(client.camera)
    u, v = project(view, mug.position)
    r = (
        0.5
        * mug.footprint_radius
        * view.fx
        / float(
            (view.viewmat.double() @ torch.tensor([*mug.position, 1.0], dtype=torch.float64))[2]
        )
    )
    ys, xs = np.mgrid[0 : before.shape[0], 0 : before.shape[1]]
    disc = (xs - u) ** 2 + (ys - v) ** 2 < r**2
    assert disc.sum() > 200, "the mug's base is too small in the view to judge"

    label = app.state.scene.extras["label"]
    app.state.select(label == mug.label)
    n = len(app.state.scene)
    page.get_by_role("button", name="Delete").first.click()
    wait_until(lambda: len(app.state.scene) < n, what="delete")
    deleted = settle_after_jobs(page, app)
    grab(page, "remove_2_delete_leaves_a_hole")

    app.state.undo()
    wait_until(lambda: len(app.state.scene) == n, what="undo")
    page.get_by_role("button", name="Remove (fill)").click()
    wait_until(lambda: app.state.history_steps()[0][-1].startswith("remove (fill)"), what="removal")
    filled = settle_after_jobs(page, app)
    grab(page, "remove_3_filled")

    # The ground truth: the same world generated without the mug, in the same viewer and view.
    truth = make_world(0, without=["mug"]).scene
    app.state.replace_scene(truth, "ground truth")
    expected = settle_after_jobs(page, app)
    grab(page, "remove_4_ground_truth")

    def err(img: np.ndarray) -> float:  # mean abs difference to the truth inside the disc
        return float(np.abs(img[disc].astype(int) - expected[disc].astype(int)).mean())

    print(f"disc error vs ground truth: delete {err(deleted):.1f}, fill {err(filled):.1f} /255")
    assert err(deleted) > 2.0 * err(filled)
    assert err(filled) < 20.0
