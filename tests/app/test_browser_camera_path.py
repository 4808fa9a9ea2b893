"""Browser tier for the Camera path panel: in Chromium, two keyframes are added from the
browser's own camera with the panel's button, the path is drawn in the scene, "Play" flies the
browser's camera to the last keyframe, "Save path" writes nerfstudio's camera_path.json, and
`scenelab render --camera-path` re-renders it to an MP4 whose first frame is the server's render
from the first keyframe. Run with `pytest -m browser`; screenshots (`camera_path_*.png`) go to
$SCENELAB_SHOTS (default /tmp/scenelab_shots)."""

from __future__ import annotations

import numpy as np
import torch

from ._browser import (
    BROWSER_TIER,
    REGION,
    grab,
    open_page,
    poll,
    scene_pixels,
    wait_until,
)
from .conftest import look_camera
from .test_browser import app  # noqa: F401  (a fixture)

pytestmark = BROWSER_TIER


def test_camera_path_from_the_browser_saved_and_rendered(browser, app, tmp_path):  # noqa: F811
    import imageio_ffmpeg

    from app.cli import main
    from fields import load_camera_path, render

    page = open_page(browser, app.url)
    poll(page, lambda im: scene_pixels(im) > 5000, what="splats")
    client = next(iter(app.server.get_clients().values()))
    page.get_by_text("Camera path", exact=True).click()  # open the folder
    views = [
        look_camera(eye=(0.0, -2.5, 1.5)),
        look_camera(eye=(2.2, -1.2, 1.3)),
    ]
    for k, cam in enumerate(views):
        app.look_through(client, cam)
        wait_until(
            lambda c=cam: np.allclose(client.camera.position, c.center.numpy(), atol=1e-3),
            what=f"browser camera at view {k}",
        )
        page.get_by_role("button", name="Add keyframe").click()
        wait_until(lambda k=k: len(app.render_panel.path) == k + 1, what=f"keyframe {k + 1}")
    path = app.render_panel.path
    for kf, cam in zip(path.keyframes, views, strict=True):
        assert np.allclose(kf.position, cam.center.numpy(), atol=1e-3)
        assert np.allclose(kf.c2w[:3, :3], cam.c2w.double().numpy()[:3, :3], atol=1e-3)
    grab(page, "camera_path_keyframes")

    # Seen from further back, the path (its curve and a frustum per keyframe) is in the
    # picture: hiding it changes the picture there.
    at_last = grab(page)
    far = look_camera(eye=(0.8, -4.5, 3.2))
    app.look_through(client, far)

    def changed(a: np.ndarray, b: np.ndarray) -> int:
        diff = np.abs(a[REGION].astype(int) - b[REGION].astype(int)).max(-1)
        return int((diff > 60).sum())

    shown = poll(page, lambda im: changed(im, at_last) > 2000, what="the view further back")
    grab(page, "camera_path_drawn")
    panel = app.render_panel
    panel.show_path.value = False
    poll(page, lambda im: changed(im, shown) > 100, what="the path hidden")
    panel.show_path.value = True

    # Play: the browser's camera flies along the path and stops at the last keyframe.
    panel.seconds.value = 1.0
    page.get_by_role("button", name="Play").click()
    wait_until(
        lambda: np.allclose(client.camera.position, views[1].center.numpy(), atol=1e-3),
        timeout=30,
        what="camera at the last keyframe after Play",
    )
    poll(page, lambda im: changed(im, shown) > 2000, what="the browser's view after Play")
    grab(page, "camera_path_played")

    # Save (nerfstudio's file), then re-render it from the command line.
    app.render_panel.resolution.value = (160, 120)
    app.render_panel.fps.value = 6
    page.get_by_role("button", name="Save path").click()
    saved = tmp_path / "camera_path.json"
    wait_until(saved.exists, what="camera_path.json written")
    page.close()
    doc = load_camera_path(saved)
    assert doc.path is not None and len(doc.path) == 2 and len(doc.cameras) == 6
    ply = tmp_path / "input.ply"
    video = tmp_path / "path.mp4"
    assert main(["render", str(ply), "--camera-path", str(saved), "--out", str(video)]) == 0
    gen = imageio_ffmpeg.read_frames(str(video))
    meta = next(gen)
    frames = [np.frombuffer(f, np.uint8).reshape(120, 160, 3) for f in gen]
    assert meta["size"] == (160, 120) and len(frames) == 6
    with torch.no_grad():
        want = render(app.state.scene, doc.cameras[0], background=(1.0, 1.0, 1.0)).rgb
    want = (want.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy().astype(int)
    assert np.abs(frames[0].astype(int) - want).mean() < 6
    assert np.abs(frames[-1].astype(int) - want).mean() > 10  # the last frame is elsewhere
