"""Headless tests of the Camera path panel: keyframes from a browser's view, reorder / delete,
settings from the widgets, the preview moving the browser's camera, nerfstudio camera_path.json
save / load inside the root, and "Render video" as a job that writes the MP4 (and cancels)."""

from __future__ import annotations

import contextlib
import json
import math
import time
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from app._paths import PathOutsideRootError
from app.viewer._jobs import JobStatus


def fake_client(position, look_at=(0.0, 0.0, 0.1), fov=0.8):
    """What the panel reads from (and writes to) a viser client: its camera pose."""
    eye = np.asarray(position, float)
    fwd = np.asarray(look_at, float) - eye
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    R = np.stack([right, down, fwd], axis=1)  # OpenCV camera axes in the world
    camera = SimpleNamespace(
        wxyz=Rotation.from_matrix(R).as_quat(scalar_first=True),
        position=eye,
        fov=fov,
        image_width=320,
        image_height=240,
    )
    return SimpleNamespace(camera=camera, atomic=contextlib.nullcontext, client_id=1)


def orbit_clients(n=3, radius=2.5):
    return [
        fake_client((radius * math.cos(a), radius * math.sin(a), 1.2))
        for a in np.linspace(0, math.pi, n)
    ]


def read_video(path):
    import imageio_ffmpeg

    gen = imageio_ffmpeg.read_frames(str(path))
    meta = next(gen)
    w, h = meta["size"]
    return [np.frombuffer(f, np.uint8).reshape(h, w, 3) for f in gen], meta


def test_keyframes_add_reorder_delete(viewer):
    panel = viewer.render_panel
    assert panel.folder.label == "Camera path" and len(panel.path) == 0
    assert panel.render_button.disabled and panel.play_button.disabled
    with pytest.raises(ValueError, match="no keyframes"):
        panel.delete()
    a, b, c = orbit_clients()
    for client in (a, b, c):
        panel.add_keyframe(client)
    path = panel.path
    assert len(path) == 3 and len(panel.keyframe.options) == 3
    assert panel.chosen() == 2  # the one just added
    for kf, client in zip(path.keyframes, (a, b, c), strict=True):
        assert np.allclose(kf.position, client.camera.position)
        assert np.allclose(np.abs(kf.wxyz @ client.camera.wxyz), 1.0)
        assert kf.fov_deg == pytest.approx(float(panel.fov.value))
    # A keyframe is added after the chosen one.
    panel.keyframe.value = panel.keyframe.options[0]
    d = fake_client((0.0, -3.0, 2.0))
    panel.add_keyframe(d)
    positions = [tuple(np.round(k.position, 6)) for k in panel.path.keyframes]
    want = [a, d, b, c]
    assert positions == [tuple(np.round(x.camera.position, 6)) for x in want]
    assert panel.chosen() == 1
    panel.move(+1)  # d after b
    assert panel.chosen() == 2
    assert np.allclose(panel.path.keyframes[2].position, d.camera.position)
    panel.move(-1)
    panel.move(-1)
    panel.move(-1)  # clamped at the start
    assert panel.chosen() == 0
    assert np.allclose(panel.path.keyframes[0].position, d.camera.position)
    panel.delete()
    assert len(panel.path) == 3 and np.allclose(panel.path.keyframes[0].position, a.camera.position)
    # Replace keeps the place, takes the new view.
    panel.keyframe.value = panel.keyframe.options[1]
    panel.replace(d)
    assert np.allclose(panel.path.keyframes[1].position, d.camera.position)
    # The drawing: one frustum per keyframe and the curve.
    assert len(panel._nodes) == 4
    panel.show_path.value = False
    assert panel._nodes == []
    panel.clear()
    assert len(panel.path) == 0 and tuple(panel.keyframe.options) == ("(no keyframes)",)


def test_widgets_set_the_path_and_preview_moves_the_camera(viewer):
    panel = viewer.render_panel
    for client in orbit_clients():
        panel.add_keyframe(client)
    panel.seconds.value = 2.0
    panel.fps.value = 12
    panel.resolution.value = (64, 48)
    panel.smoothness.value = 0.25
    panel.loop.value = True
    p = panel.path
    assert (p.seconds, p.fps, p.width, p.height, p.loop) == (2.0, 12.0, 64, 48, True)
    assert p.tension == pytest.approx(0.75) and p.n_frames == 24
    assert "24 frames" in panel.summary.content
    panel.fov.value = 40.0
    assert all(k.fov_deg == 40.0 for k in panel.path.keyframes)
    # Preview: the browser's camera sits on the path at that time.
    browser = fake_client((5.0, 5.0, 5.0))
    for t in (0.0, 0.37, 1.2):
        panel.preview(browser, t)
        c2w, fov = panel.path.evaluate(t)
        assert np.allclose(browser.camera.position, c2w[0, :3, 3])
        R = Rotation.from_quat(browser.camera.wxyz, scalar_first=True).as_matrix()
        assert np.allclose(R, c2w[0, :3, :3], atol=1e-6)
        assert browser.camera.fov == pytest.approx(math.radians(fov[0]))
    panel.keyframe.value = panel.keyframe.options[1]
    panel.go_to(browser)
    assert np.allclose(browser.camera.position, panel.path.keyframes[1].position)


def test_play_flies_the_camera_to_the_end(viewer):
    panel = viewer.render_panel
    for client in orbit_clients(2):
        panel.add_keyframe(client)
    panel.seconds.value = 0.3
    browser = fake_client((5.0, 5.0, 5.0))
    seen = []
    browser.atomic = lambda: (
        seen.append(browser.camera.position.copy()),
        contextlib.nullcontext(),
    )[1]
    thread = panel.play(browser)
    assert panel.stop_button.visible and not panel.play_button.visible
    thread.join(10)
    assert not thread.is_alive() and panel.play_button.visible
    assert len(seen) >= 3  # several steps along the way
    assert np.allclose(browser.camera.position, panel.path.keyframes[-1].position)


def test_save_and_load_nerfstudio_json_inside_the_root(viewer, tmp_path):
    panel = viewer.render_panel
    with pytest.raises(ValueError):
        panel.save("path.json")  # nothing to save: the button is disabled too
    for client in orbit_clients():
        panel.add_keyframe(client)
    panel.resolution.value = (80, 60)
    panel.fps.value = 10
    saved = panel.save("paths/orbit.json")
    assert saved == tmp_path / "paths" / "orbit.json"
    doc = json.loads(saved.read_text())
    assert doc["render_width"] == 80 and len(doc["keyframes"]) == 3
    assert len(doc["camera_path"]) == panel.path.n_frames
    with pytest.raises(FileExistsError, match="Overwrite"):
        panel.save("paths/orbit.json")
    with pytest.raises(PathOutsideRootError):
        panel.save("../escape.json")
    with pytest.raises(ValueError, match=r"as \.json"):
        panel.save("orbit.txt")
    original = panel.path
    panel.clear()
    panel.fps.value = 30
    loaded = panel.load("paths/orbit.json")
    assert len(panel.path) == 3 and panel.path is loaded
    assert (loaded.width, loaded.height, loaded.fps) == (80, 60, 10.0)
    assert tuple(panel.resolution.value) == (80, 60) and float(panel.fps.value) == 10.0
    for x, y in zip(loaded.keyframes, original.keyframes, strict=True):
        assert np.allclose(x.c2w, y.c2w)
    # A frames-only file (no keyframes) cannot be edited.
    del doc["keyframes"]
    (tmp_path / "frames.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="no keyframes"):
        panel.load("frames.json")
    with pytest.raises(PathOutsideRootError):
        panel.load("/etc/passwd")


def test_render_video_job_writes_the_mp4(viewer, tmp_path):
    panel = viewer.render_panel
    for client in orbit_clients():
        panel.add_keyframe(client)
    panel.seconds.value = 1.0
    panel.fps.value = 8
    panel.resolution.value = (48, 37)  # odd: one more row in the video
    job = panel.render("videos/orbit.mp4")
    assert job.wait(120) and job.status is JobStatus.DONE, job.error
    video = tmp_path / "videos" / "orbit.mp4"
    assert job.result == video
    frames, meta = read_video(video)
    assert len(frames) == 8 and meta["size"] == (48, 38)
    assert meta["fps"] == pytest.approx(8.0)
    assert np.abs(frames[0].astype(int) - frames[-1]).mean() > 5  # the camera moved
    assert (frames[0] < 200).any()  # the scene is in view, not a blank frame
    assert "8 frames" in job.text
    # Existing files are kept unless asked; paths stay inside the root.
    with pytest.raises(FileExistsError):
        panel.render("videos/orbit.mp4")
    with pytest.raises(PathOutsideRootError):
        panel.render("../orbit.mp4")
    with pytest.raises(ValueError, match=r"as \.mp4"):
        panel.render("orbit.gif")
    panel.overwrite.value = True
    panel.fps.value = 4
    job = panel.render("videos/orbit.mp4")
    assert job.wait(120) and job.status is JobStatus.DONE, job.error
    assert len(read_video(video)[0]) == 4


def test_render_video_cancel_leaves_nothing(viewer, tmp_path):
    panel = viewer.render_panel
    for client in orbit_clients():
        panel.add_keyframe(client)
    panel.resolution.value = (32, 24)
    panel.fps.value = 60
    panel.seconds.value = 60.0  # 3600 frames: long enough to cancel mid-way
    job = panel.render("long.mp4")
    t0 = time.monotonic()
    while job.fraction == 0.0 and not job.status.finished:
        assert time.monotonic() - t0 < 60
        time.sleep(0.01)
    viewer.jobs.cancel(job)
    assert job.wait(60) and job.status is JobStatus.CANCELLED
    assert 0.0 < job.fraction < 1.0
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".mp4") == []
    assert not list(tmp_path.glob(".long*"))  # no partial file left behind


def test_render_video_of_a_nerf(tmp_path):
    """A NeRF viewer has the panel too; its video is the NeRF's own render (red balls)."""
    from app.viewer import ViewerApp, ViewerConfig

    from .test_nerf_viewer import ball_nerf

    app = ViewerApp(ball_nerf(), ViewerConfig(port=0, root=tmp_path))
    try:
        panel = app.render_panel
        for x in (-0.6, 0.6):
            panel.add_keyframe(fake_client((x, -3.0, 0.0), look_at=(x, 0.0, 0.0)))
        panel.resolution.value = (32, 24)
        panel.fps.value = 3
        panel.seconds.value = 1.0
        job = panel.render("nerf.mp4")
        assert job.wait(120) and job.status is JobStatus.DONE, job.error
        frames, meta = read_video(tmp_path / "nerf.mp4")
        assert len(frames) == 3 and meta["size"] == (32, 24)
        f = frames[0].astype(int)
        red = (f[..., 0] > 150) & (f[..., 1] < 100) & (f[..., 2] < 100)
        assert red.sum() > 20  # a ball, drawn by the server's NeRF renderer
    finally:
        app.stop()


def test_the_path_is_saved_in_projects(viewer, tmp_path):
    """A project keeps the camera path (nerfstudio's document in its settings); opening it
    restores the keyframes, their FOV and timing; a project without one clears the panel."""
    from editing import load_project, save_project

    panel = viewer.render_panel
    for client in orbit_clients():
        panel.add_keyframe(client)
    panel.seconds.value = 7.0
    before = panel.path
    save_project(viewer.project(), tmp_path / "p.scenelab")
    assert "camera_path" in load_project(tmp_path / "p.scenelab").settings
    panel.clear()
    assert len(panel.path) == 0
    viewer.open_project(load_project(tmp_path / "p.scenelab"))
    after = panel.path
    assert len(after) == 3 and after.seconds == pytest.approx(7.0)
    for a, b in zip(before.keyframes, after.keyframes, strict=True):
        assert np.allclose(a.c2w, b.c2w, atol=1e-6) and a.fov_deg == pytest.approx(b.fov_deg)
    # A project saved without a path leaves none behind.
    panel.clear()
    save_project(viewer.project(), tmp_path / "q.scenelab")
    for client in orbit_clients(2):
        panel.add_keyframe(client)
    viewer.open_project(load_project(tmp_path / "q.scenelab"))
    assert len(panel.path) == 0
