"""Headless viewer tests: a real server in-process on a free port; drive the panels' actions and
assert on the scene state and on the splat buffer the browsers are sent."""

import socket
import threading
import time
import urllib.request
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from app.viewer import ViewerApp, ViewerConfig
from app.viewer._jobs import JobStatus
from app.viewer._splats import HIGHLIGHT, unpack
from app.viewer._state import NothingSelectedError
from fields import load_scene

from .conftest import look_camera, project


def sent_buffer(app: ViewerApp) -> np.ndarray:
    return app.splats.buffer


def test_serves_the_client_and_pushes_every_gaussian(viewer, scene):
    with urllib.request.urlopen(f"http://127.0.0.1:{viewer.port}/", timeout=10) as r:
        assert r.status == 200 and b"<html" in r.read(2000).lower()
    assert viewer.config.host == "127.0.0.1" and viewer.share_url is None
    assert sent_buffer(viewer).shape == (len(scene), 8)
    assert np.allclose(unpack(sent_buffer(viewer))["centers"], scene.means.numpy())
    assert np.allclose(viewer.up, [0, 0, 1])


def test_taken_port_moves_to_a_free_one_and_says_so(scene, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        app = ViewerApp(scene, ViewerConfig(port=port, root=tmp_path))
        try:
            assert app.port_was_taken and app.requested_port == port and app.port != port
        finally:
            app.stop()


def test_delete_undo_redo_keeps_state_and_buffer_in_step(viewer, scene):
    red = scene.extras["label"] == 1
    viewer.state.select(red)
    rgb = unpack(sent_buffer(viewer))["rgb"].astype(float) / 255
    assert np.abs(rgb[red.numpy()] - HIGHLIGHT).max() < 0.4  # highlighted in the browser buffer
    left = viewer.edit_panel.delete()
    assert left == len(scene) - int(red.sum()) == len(viewer.state.scene)
    assert sent_buffer(viewer).shape[0] == left and viewer.shown_count == left
    assert viewer.state.n_selected == 0
    assert (viewer.state.scene.extras["label"] == 1).sum() == 0  # extras stay aligned
    assert viewer.history_panel.undo()
    assert len(viewer.state.scene) == len(scene) == sent_buffer(viewer).shape[0]
    assert torch.equal(viewer.state.selection, red)  # the deleted Gaussians come back selected
    assert viewer.history_panel.redo()
    assert len(viewer.state.scene) == left
    steps, index = viewer.state.history_steps()
    assert steps == ["open", f"delete {int(red.sum()):,}"] and index == 1
    assert "delete" in viewer.history_panel.steps.content
    assert (
        viewer.history_panel.redo_button.disabled and not viewer.history_panel.undo_button.disabled
    )


def test_replace_scene_starts_a_fresh_history(viewer, scene):
    viewer.state.select(scene.extras["label"] == 1)
    viewer.edit_panel.delete()
    smaller = scene.subset(torch.arange(100))
    viewer.state.replace_scene(smaller, "train step 100")
    assert viewer.state.history_steps() == (["train step 100"], 0)
    assert not viewer.history_panel.undo()  # nothing behind a replaced scene
    assert len(viewer.state.scene) == 100 and viewer.state.n_selected == 0
    assert sent_buffer(viewer).shape[0] == 100


def test_ops_need_a_selection(viewer):
    with pytest.raises(NothingSelectedError):
        viewer.edit_panel.delete()
    # Through the GUI wrapper the error becomes a notification, never an exception.
    viewer.action("Delete")(lambda _e: viewer.edit_panel.delete())(None)


def test_isolate_and_show_all(viewer, scene):
    blue = scene.extras["label"] == 2
    viewer.state.select(blue)
    viewer.edit_panel.isolate()
    assert len(viewer.state.scene) == len(scene)
    assert viewer.shown_count == int(blue.sum())
    assert viewer.state.invert_selection() == 0  # hidden Gaussians cannot be selected
    viewer.edit_panel.unhide()
    assert viewer.shown_count == len(scene)


def test_recolour_changes_only_the_selection(viewer, scene):
    red = scene.extras["label"] == 1
    viewer.state.select(red)
    packs = viewer._buffer.geometry_packs
    viewer.edit_panel.recolor((0.0, 1.0, 0.0), "replace", 1.0)
    assert viewer._buffer.geometry_packs == packs
    colors = viewer.state.scene.colors
    assert torch.allclose(
        colors[red], torch.tensor([0.0, 1.0, 0.0]).expand(int(red.sum()), 3), atol=1e-5
    )
    assert torch.equal(colors[~red], scene.colors[~red])
    viewer.state.clear_selection()
    rgb = unpack(sent_buffer(viewer))["rgb"]
    assert np.all(rgb[red.numpy(), 1] >= 250) and np.all(rgb[red.numpy(), 0] <= 2)


def test_transform_scale_and_duplicate(viewer, scene):
    red = scene.extras["label"] == 1
    viewer.state.select(red)
    T = np.eye(4)
    T[:3, 3] = [0.0, 0.5, 0.0]
    viewer.edit_panel.transform(T)
    moved = viewer.state.scene
    assert torch.allclose(
        moved.means[red], scene.means[red] + torch.tensor([0.0, 0.5, 0.0]), atol=1e-6
    )
    assert torch.equal(moved.means[~red], scene.means[~red])
    c = moved.means[red].double().mean(0)
    viewer.edit_panel.scale(2.0)
    spread = (viewer.state.scene.means[red].double() - c).norm(dim=-1)
    assert torch.allclose(spread, 2 * (moved.means[red].double() - c).norm(dim=-1), atol=1e-5)
    viewer.edit_panel.duplicate()
    n = len(scene)
    assert len(viewer.state.scene) == n + int(red.sum()) == viewer.shown_count
    assert viewer.state.selection[n:].all() and not viewer.state.selection[:n].any()


def test_gizmo_drag_applies_one_move(viewer, scene):
    red = scene.extras["label"] == 1
    viewer.state.select(red)
    viewer.edit_panel.set_gizmo(True)
    gizmo = viewer.edit_panel._gizmo
    start = np.asarray(gizmo.position).copy()
    assert np.allclose(start, scene.means[red].double().mean(0).numpy(), atol=1e-6)
    gizmo.position = tuple(start + np.array([0.1, 0.0, 0.0]))
    viewer.edit_panel._apply_gizmo()  # what on_drag_end runs
    assert torch.allclose(
        viewer.state.scene.means[red], scene.means[red] + torch.tensor([0.1, 0.0, 0.0]), atol=1e-5
    )
    viewer.edit_panel._apply_gizmo()  # no further motion: no new step
    assert len(viewer.state.history_steps()[0]) == 2
    viewer.edit_panel.set_gizmo(False)


def test_click_pick_and_rect_select_through(viewer, scene):
    cam = look_camera()
    u, v = project(cam, (0.4, 0.0, 0.2))  # centre of the red blob
    idx = viewer.selection_panel.pick(cam, u, v)
    assert idx is not None and int(scene.extras["label"][idx]) == 1
    assert viewer.state.n_selected == 1
    viewer.selection_panel.brush.value = 0.05
    viewer.selection_panel.pick(cam, u, v, "replace")
    assert viewer.state.n_selected > 10
    assert viewer.selection_panel.pick(cam, 1.0, 1.0, "replace") is None  # sky: clears
    assert viewer.state.n_selected == 0
    u0, v0 = project(cam, (0.2, 0.0, 0.4))
    u1, v1 = project(cam, (0.6, 0.0, 0.0))
    n = viewer.selection_panel.select_rect(cam, (u0, v0, u1, v1), through=True)
    sel = viewer.state.selection
    assert n > 0 and (scene.extras["label"][sel] == 1).float().mean() > 0.8
    assert viewer.selection_panel.last_hidden == 0  # through: nothing left behind

    # Visible only: the blob's far side stays, and the panel counts it for the hint it gives.
    front = viewer.selection_panel.select_rect(cam, (u0, v0, u1, v1))
    assert 0 < front < n
    assert viewer.selection_panel.last_hidden == n - front


def test_volume_select_box_and_sphere(viewer, scene):
    panel = viewer.selection_panel
    panel.set_volume_visible(True)
    panel._gizmo.position = (-0.4, 0.0, 0.2)
    panel.box_size.value = (0.32, 0.32, 0.32)  # the blob's radius is 0.15; the floor is at z=0
    n = panel.select_volume("replace")
    blue = scene.extras["label"] == 2
    assert n == int(blue.sum())
    panel.shape.value = "sphere"
    panel.radius.value = 0.05
    assert 0 < panel.select_volume("intersect") < n
    panel.set_volume_visible(False)


def test_grow_runs_as_a_job(viewer, scene):
    viewer.state.select(torch.arange(len(scene)) == 1700)  # one Gaussian of the red blob
    viewer.selection_panel.grow(0.05)
    assert viewer.jobs.wait_idle(20)
    assert viewer.state.n_selected > 5


def test_save_is_confined_atomic_and_never_overwrites_unasked(viewer, scene, tmp_path):
    red = scene.extras["label"] == 1
    viewer.state.select(red)
    viewer.edit_panel.delete()
    job = viewer.file_panel.save("out/edited.ply")
    assert job.wait(30) and job.status is JobStatus.DONE, job.error
    back = load_scene(tmp_path / "out" / "edited.ply")
    assert back.allclose(viewer.state.scene)
    assert back.meta["edits"] == [f"delete {int(red.sum()):,}"]
    with pytest.raises(FileExistsError):  # the input, without confirmation
        viewer.file_panel.save("input.ply")
    with pytest.raises(FileExistsError):  # any existing file, without confirmation
        viewer.file_panel.save("out/edited.ply")
    with pytest.raises(ValueError):
        viewer.file_panel.save("../escape.ply")
    with pytest.raises(ValueError):
        viewer.file_panel.save("notes.txt")
    assert load_scene(tmp_path / "input.ply").allclose(scene)
    viewer.state.select(viewer.state.scene.extras["label"] == 2)
    job = viewer.file_panel.save("blue.splat", selection_only=True)
    with pytest.warns(UserWarning, match="cannot hold"):  # .splat drops extras, and says so
        assert job.wait(30)
    assert job.status is JobStatus.DONE, job.error
    assert len(load_scene(tmp_path / "blue.splat")) == viewer.state.n_selected
    job = viewer.file_panel.save("input.ply", confirmed=True)
    assert job.wait(30) and job.status is JobStatus.DONE
    assert len(load_scene(tmp_path / "input.ply")) == len(viewer.state.scene)


def test_failing_job_is_reported_and_the_server_lives_on(viewer):
    job = viewer.jobs.submit("explode", lambda ctx: 1 / 0)
    assert job.wait(10) and job.status is JobStatus.FAILED and "ZeroDivisionError" in job.error
    with urllib.request.urlopen(f"http://127.0.0.1:{viewer.port}/", timeout=10) as r:
        assert r.status == 200


def test_callbacks_stay_responsive_while_a_job_runs(viewer, scene):
    gate = threading.Event()
    job = viewer.jobs.submit("long", lambda ctx: gate.wait(10))
    viewer.state.select(scene.extras["label"] == 2)
    viewer.edit_panel.recolor((1.0, 1.0, 0.0))
    assert not job.status.finished  # the edit did not wait for the job
    assert viewer.jobs_panel.progress.visible
    gate.set()
    assert job.wait(5)


def test_concurrent_edits_are_serialised(viewer, scene):
    """Many threads (like viser's callback pool) selecting and editing at once."""
    errors = []

    def worker(i):
        try:
            for _ in range(5):
                viewer.state.select_with(lambda s, _sel: torch.rand(len(s)) < 0.01)
                viewer.edit_panel.recolor((i / 8, 0.5, 0.5))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(viewer.state.history_steps()[0]) == 41
    assert viewer.push_stats.version == viewer.state.version
    assert sent_buffer(viewer).shape[0] == len(scene)


def test_values_colour_mode(viewer, scene):
    with pytest.raises(ValueError):
        viewer.view_panel.set_display("Values")
    viewer.state.set_values("height", scene.means[:, 2])
    viewer.view_panel.set_display("Values")
    rgb = unpack(sent_buffer(viewer))["rgb"].astype(int)
    low, high = scene.means[:, 2].argmin(), scene.means[:, 2].argmax()
    assert not np.array_equal(rgb[low], rgb[high])
    viewer.view_panel.set_display("Colour")
    assert viewer.state.color_mode == "rgb"


class FakeBrowser:
    """A client whose render round trip takes `seconds` (hardware vs software WebGL)."""

    def __init__(self, client_id: int, seconds: float):
        self.client_id, self.seconds = client_id, seconds

    def get_render(self, *args, **kwargs):
        time.sleep(self.seconds)
        return np.zeros((48, 64, 3), np.uint8)


def test_automatic_splat_budget(scene, tmp_path, monkeypatch):
    import app.viewer._app as app_module

    monkeypatch.setattr(app_module, "COARSE_SPLATS", 1000)
    monkeypatch.setattr(app_module, "FAST_PROBE_S", 0.3)
    monkeypatch.setattr(app_module, "PROBE_SETTLE_S", 0.0)
    app = ViewerApp(scene, ViewerConfig(port=0, root=tmp_path))
    try:
        assert app.splat_budget == 1000 and app.shown_count == 1000  # a sample until proven fast
        assert app.view_panel.budget_note.visible
        fast, slow = FakeBrowser(101, 0.0), FakeBrowser(102, 0.6)
        for c in (fast, slow):
            app._clients[c.client_id] = SimpleNamespace(overlay=SimpleNamespace(stop=lambda: None))
        app._probe_client(fast)
        assert app.splat_budget == 1000  # the slow one is still unknown
        app._probe_client(slow)
        assert app.splat_budget == 1000
        app._on_disconnect(slow)
        assert app.splat_budget is None and app.shown_count == len(scene)
        assert not app.view_panel.budget_note.visible and app.view_panel.all_splats.value
        app.view_panel.all_splats.value = False  # back to automatic: only fast browsers remain
        assert app.splat_budget is None
        app.set_splat_budget(500)
        assert app.shown_count == 500
    finally:
        app.stop()


def test_sample_note_follows_the_scene_size(scene, tmp_path):
    """The "Showing M of N splats" note counts the scene as it is now: an insert (or undo)
    changes N and the note says so."""
    from fields import GaussianScene

    app = ViewerApp(scene, ViewerConfig(port=0, root=tmp_path, max_splats=700))
    try:
        note = app.view_panel.budget_note
        assert note.visible and f"of {len(scene):,} splats" in note.content
        extra = scene.subset(torch.arange(300))
        app.state.apply("insert", lambda s, _sel: GaussianScene.concat([s, extra]),
                        needs_selection=False)  # fmt: skip
        assert f"of {len(scene) + 300:,} splats" in note.content
        app.state.undo()
        assert f"of {len(scene):,} splats" in note.content
    finally:
        app.stop()


def test_fixed_budgets_from_the_config(scene, tmp_path):
    app = ViewerApp(scene, ViewerConfig(port=0, root=tmp_path, max_splats=700))
    try:
        assert app.shown_count == 700
    finally:
        app.stop()
    app = ViewerApp(scene, ViewerConfig(port=0, root=tmp_path, max_splats=0))
    try:
        assert app.shown_count == len(scene)
    finally:
        app.stop()
