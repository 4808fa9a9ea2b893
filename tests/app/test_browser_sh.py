"""Browser tier for what the browser is sent for a view: view-dependent (SH) colour and a
3M-Gaussian scene. Chromium (Debian's, software WebGL) through Playwright; run with
`pytest -m browser`. Screenshots (`sh_*.png`) go to $SCENELAB_SHOTS (default /tmp/scenelab_shots).

1. A shiny ball (SH degree 1+: red seen from +x, green from -x) looks red from one side and green
   from the other in the browser, and the mean colour of its middle matches `fields.render` from
   the browser's own camera; with "View-dependent colour" off it shows its grey base colour.
2. A 3M-Gaussian capture-like scene opens: the first splats show (the time is printed; speed is
   measured by `benchmarks/viewer.py`, not asserted).
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from fields import render

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
from .test_lod import capture_like_scene, shiny_scene

pytestmark = BROWSER_TIER

RADIUS = 0.3  # the shiny ball's


@pytest.fixture
def shiny_app(tmp_path):
    from app.viewer import ViewerApp, ViewerConfig

    viewer = ViewerApp(shiny_scene(6000, RADIUS), ViewerConfig(port=0, root=tmp_path))
    yield viewer
    viewer.stop()


def disc_mean(img: np.ndarray, u: float, v: float, r: float) -> np.ndarray:
    """Mean colour (0-1) of the pixels within `r` of (u, v)."""
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    mask = (xx + 0.5 - u) ** 2 + (yy + 0.5 - v) ** 2 <= r * r
    assert mask.sum() > 50
    return img[mask].reshape(-1, 3).astype(np.float64).mean(0) / 255.0


def look_from(app, client, eye) -> tuple[np.ndarray, np.ndarray]:
    """Move the browser's camera to `eye` looking at the ball, wait for the colour baked for that
    camera to reach it, and return (screenshot mean, server render mean) over the ball's
    middle."""
    from app.viewer._camera import client_camera

    pushes = app.push_stats.view_pushes
    with client.atomic():
        client.camera.up_direction = (0.0, 0.0, 1.0)
        client.camera.position = eye
        client.camera.look_at = (0.0, 0.0, 0.0)
    wait_until(
        lambda: (
            app.push_stats.view_pushes > pushes
            and np.allclose(app.view_camera().center.numpy(), eye, atol=1e-3)
        ),
        timeout=60,
        what="colour baked for the new camera",
    )
    return client_camera(client.camera)


def test_shiny_ball_colour_follows_the_view_as_the_server_renders_it(browser, shiny_app):
    app = shiny_app
    assert app.push_stats.view_colored
    page = open_page(browser, app.url)
    poll(page, lambda im: scene_pixels(im) > 3000, what="ball", timeout=120)
    client = next(iter(app.server.get_clients().values()))
    means = {}
    for name, eye in (("plus_x", (2.2, 0.0, 0.5)), ("minus_x", (-2.2, 0.0, 0.5))):
        cam = look_from(app, client, eye)
        img = settle(page, wait=0.0, timeout=90.0)
        grab(page, f"sh_{name}")
        u, v = project(cam, (0.0, 0.0, 0.0))
        edge_u, _ = project(cam, tuple(0.5 * RADIUS * c for c in cam.c2w[:3, 0].tolist()))
        r = abs(edge_u - u)  # half the ball's radius, in pixels
        assert 0 < u < 650 and 160 < v < 640, (u, v)  # in the part no panel covers
        ours = disc_mean(img, u, v, r)
        out = render(app.state.scene, cam, backend="cpu", background=(1.0, 1.0, 1.0))
        server = disc_mean((out.rgb.clamp(0, 1) * 255).round().to(torch.uint8).numpy(), u, v, r)
        print(f"{name}: browser {ours.round(3)}  server render {server.round(3)}")
        assert np.abs(ours - server).max() < 0.12, (name, ours, server)
        means[name] = ours
    # Red from +x, green from -x: the two views differ as the server render says.
    assert means["plus_x"][0] > means["plus_x"][1] + 0.3
    assert means["minus_x"][1] > means["minus_x"][0] + 0.3

    # View-dependent colour off (View panel): the base colour, grey from this side too.
    page.get_by_role("checkbox", name="View-dependent colour").click()
    wait_until(lambda: not app.push_stats.view_colored, what="base colours pushed")
    time.sleep(1.0)
    img = settle(page, wait=0.0, timeout=90.0)
    grab(page, "sh_off_minus_x")
    off = disc_mean(img, u, v, r)
    print(f"SH off: browser {off.round(3)}")
    assert abs(off[0] - off[1]) < 0.1 and means["minus_x"][1] - off[1] > 0.2, off


@pytest.mark.slow
def test_three_million_gaussians_open(browser, tmp_path):
    from app.viewer import ViewerApp, ViewerConfig

    scene = capture_like_scene(3_000_000)
    t0 = time.monotonic()
    app = ViewerApp(scene, ViewerConfig(port=0, root=tmp_path))
    try:
        ready = time.monotonic() - t0
        assert app.splat_budget is not None and app.shown_count == app.splat_budget
        page = open_page(browser, app.url)
        poll(page, lambda im: scene_pixels(im) > 20_000, what="3M splats", timeout=180)
        print(
            f"3M Gaussians: server ready {ready:.1f} s, first splats {time.monotonic() - t0:.1f} s"
            f" after the viewer started ({app.shown_count:,} sent)"
        )
        grab(page, "sh_3m_first_splats")
        page.close()
    finally:
        app.stop()
