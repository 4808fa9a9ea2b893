"""Headless tests of the View folder's "Up & measure": the up axis (estimated on open, the
dropdown, `--up`), measuring two clicked points, set scale and level the scene as undoable steps,
and the first view framing the bulk of a capture. A real viewer runs in-process; clicks go
through the panel's pixel entry points (what the scene-click callback calls)."""

from __future__ import annotations

import math
import socket

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from app.cli import main
from app.viewer import ViewerApp, ViewerConfig
from fields import Camera, GaussianScene, cameras_to_meta, save_scene

from .conftest import blob_scene, look_camera, project


def _angle(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    c = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    return math.degrees(math.acos(max(-1.0, min(1.0, c))))


def _T(seed: int) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = Rotation.random(random_state=seed).as_matrix()
    T[:3, 3] = (0.5, -0.3, 0.2)
    return T


def tilted_blobs(seed: int = 3, floaters: int = 0) -> tuple[GaussianScene, np.ndarray]:
    """The blob scene (a floor with two blobs, z up) turned by a random rotation, without a
    recorded up (a capture file); optionally with far floaters. (scene, T_new_old)."""
    T = _T(seed)
    scene = blob_scene().transform(torch.from_numpy(T)).replace(meta={"units": "m"})
    if floaters:
        g = torch.Generator().manual_seed(seed)
        far = 30.0 + 5.0 * torch.randn(floaters, 3, generator=g)
        junk = GaussianScene.from_activated(
            far,
            torch.tensor([1.0, 0.0, 0.0, 0.0]).expand(floaters, 4),
            torch.full((floaters, 3), 0.05),
            torch.full((floaters,), 0.9),
            torch.full((floaters, 3), 0.5),
            extras={"label": torch.zeros(floaters, dtype=torch.int32)},
        )
        scene = GaussianScene.concat([scene, junk]).replace(meta={"units": "m"})
    return scene, T


def moved_camera(cam: Camera, T: np.ndarray) -> Camera:
    """`cam` carried along with a scene moved by T (rigid)."""
    return cam.with_pose((cam.viewmat.double() @ torch.from_numpy(np.linalg.inv(T))).float())


@pytest.fixture
def make_viewer(tmp_path):
    apps = []

    def make(scene, **kwargs) -> ViewerApp:
        app = ViewerApp(scene, ViewerConfig(port=0, root=tmp_path), **kwargs)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.stop()


def test_a_tilted_capture_opens_upright_framing_the_bulk(make_viewer):
    scene, T = tilted_blobs(floaters=40)
    app = make_viewer(scene)
    true_up = T[:3, :3] @ [0.0, 0.0, 1.0]
    assert app.up_source == "estimated" and _angle(app.up, true_up) < 2.0
    align = app.view_panel.align
    assert align.up_choice.value == "estimated"
    assert "estimated" in app.view_panel.up_note.content
    eye, look_at, up = app.initial_view
    centre = T[:3, :3] @ [0.0, 0.0, 0.1] + T[:3, 3]
    assert np.linalg.norm(look_at - centre) < 0.5  # not pulled towards the floaters
    assert (eye - look_at) @ true_up > 0  # from above
    assert np.linalg.norm(eye - look_at) < 8.0  # the bulk fills the view, not a dot
    assert np.allclose(up, app.up)


def test_measure_two_clicks_draws_the_distance(make_viewer):
    app = make_viewer(blob_scene())
    align = app.view_panel.align
    cam = look_camera(320, 240)
    a, b = np.array([0.8, -0.6, 0.0]), np.array([-0.8, 0.6, 0.0])
    align.set_mode("measure", True)
    assert app.state.pointer.owner == "align-measure"
    assert align.measure_click(cam, *project(cam, a)) is None  # first point
    assert "second" in align.measure_note.content and len(align._handles) == 1
    d = align.measure_click(cam, *project(cam, b))
    assert d == pytest.approx(2.0, abs=0.03)  # |a - b| = 2 on the floor
    assert f"{d:.4g}" in align.measure_note.content and "m" in align.measure_note.content
    names = {h.name for h in align._handles}
    assert {"/measure/line", "/measure/label"} <= names
    assert not align.scale_button.disabled
    # Nothing under the click: says so, no point.
    assert align.measure_click(cam, 2.0, 2.0) is None or len(align.points) == 1
    # Another tool takes the pointer: measuring stops.
    align.set_mode("level", True)
    assert not align.measure_mode.value and app.state.pointer.owner == "align-level"
    align.set_mode("level", False)


def test_set_scale_is_one_undoable_step(make_viewer):
    scene = blob_scene()
    app = make_viewer(scene)
    align = app.view_panel.align
    with pytest.raises(ValueError, match="measure"):
        align.set_scale(1.0)
    align.add_point([0.0, 0.0, 0.0])
    align.add_point([0.5, 0.0, 0.0])
    steps = len(app.state.history.steps)
    factor = align.set_scale(2.0, "m")
    assert factor == pytest.approx(4.0)
    now = app.state.scene
    assert torch.allclose(now.means, 4.0 * scene.means, atol=1e-5)
    assert now.meta["units"] == "m" and np.allclose(now.meta["alignment"], np.diag([4, 4, 4, 1]))
    assert len(app.state.history.steps) == steps + 1
    assert align.distance is None and not align.points  # the old points moved away
    assert app.state.undo()
    assert torch.equal(app.state.scene.means, scene.means)


def test_level_the_scene_is_one_undoable_step(make_viewer):
    scene, T = tilted_blobs()
    app = make_viewer(scene.replace(meta={"units": "m", "up": "+x"}))  # a wrong recorded up
    assert app.up_source == "scene" and app.view_panel.align.up_choice.value == "estimated"
    align = app.view_panel.align
    cam = moved_camera(look_camera(320, 240), T)
    floor = T[:3, :3] @ np.array([0.7, -0.5, 0.0]) + T[:3, 3]
    steps = list(app.state.history.steps)
    align.set_mode("level", True)
    applied = align.level_click(cam, *project(cam, floor))
    levelled = app.state.scene
    assert app.state.history.steps == [*steps, "Level the scene"]
    floor_normal = applied[:3, :3] @ T[:3, :3] @ [0.0, 0.0, 1.0]
    assert _angle(floor_normal, [0, 0, 1]) < 1.0
    assert levelled.meta["up"] == "+z" and np.allclose(app.up, [0, 0, 1])
    assert "+z" in app.view_panel.up_note.content
    # The blobs stand above the floor now.
    z = levelled.means[:, 2]
    lab = levelled.extras["label"]
    assert float(z[lab > 0].mean()) > float(z[lab == 0].mean()) + 0.1
    # The initial view follows: looking at the levelled scene from above.
    eye, look_at, up = app.initial_view
    assert np.allclose(up, [0, 0, 1]) and eye[2] > look_at[2]
    # Undo: the tilt and the file's own up come back.
    assert app.state.undo()
    assert torch.equal(app.state.scene.means, scene.means)
    assert app.up_source == "scene" and np.allclose(app.up, [1, 0, 0])
    assert app.state.redo() and np.allclose(app.up, [0, 0, 1])
    # Clicking empty space is a clear error.
    with pytest.raises(ValueError, match="floor"):
        align.level_click(cam, 1.0, 1.0)


def test_up_dropdown_and_frustums_follow_a_level(make_viewer):
    scene, T = tilted_blobs(seed=5)
    cams = [
        moved_camera(look_camera(64, 48, eye=(2.0 * math.cos(a), 2.0 * math.sin(a), 1.0)), T)
        for a in np.linspace(0, 6, 4)
    ]
    recorded = scene.replace(meta={"cameras": cameras_to_meta(cams)})
    app = make_viewer(recorded, cameras=cams)
    true_up = T[:3, :3] @ [0.0, 0.0, 1.0]
    assert app.up_source == "cameras" and _angle(app.up, true_up) < 10.0  # they look down
    align = app.view_panel.align
    assert np.allclose(align.set_up_choice("-y"), [0, -1, 0])
    assert app.up_source == "override" and "override" in app.view_panel.up_note.content
    with pytest.raises(ValueError, match="up choice"):
        align.set_up_choice("sideways")
    align.set_up_choice("estimated")
    assert app.up_source == "cameras"
    floor = T[:3, :3] @ np.array([0.7, -0.5, 0.0]) + T[:3, 3]
    L = align.level_at(floor, toward=cams[0].center.numpy())
    # The frustums moved with the splats; the recorded cameras too.
    (i, h) = app.view_panel.frustums[1]
    want = L[:3, :3] @ cams[i].center.double().numpy() + L[:3, 3]
    assert np.allclose(h.position, want, atol=1e-4)
    assert app.up_source == "scene" and np.allclose(app.up, [0, 0, 1])
    app.state.undo()
    assert np.allclose(h.position, cams[i].center.numpy(), atol=1e-4)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_view_up_overrides_the_scene_and_rejects_nonsense(no_wait, tmp_path, capsys):
    path = save_scene(blob_scene(), tmp_path / "s.ply")  # records up +z
    assert main(["view", str(path), "--port", str(_free_port()), "--up=-x"]) == 0
    (app,) = no_wait
    assert app.up_source == "override" and np.allclose(app.up, [-1, 0, 0])
    assert app.view_panel.align.up_choice.value == "-x"
    eye, look_at, up = app.initial_view
    assert np.allclose(up, [-1, 0, 0]) and (eye - look_at) @ np.array([-1.0, 0, 0]) > 0
    assert main(["view", str(path), "--port", str(_free_port()), "--up", "sideways"]) == 2
    assert "--up" in capsys.readouterr().err
