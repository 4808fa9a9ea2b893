"""Headless tests of the "Insert" panel: a real viewer in-process on a synthetic world, driven
through the panel's actions (what its buttons call)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import editing
from app.viewer import ViewerApp, ViewerConfig
from app.viewer._jobs import JobStatus
from app.viewer._panel_features import FeatureOptions
from app.viewer._panel_insert import bundled_assets
from app.viewer._state import NothingSelectedError
from fields import Camera
from fields.synthetic import WorldConfig, make_world

from .conftest import project
from .test_insert_cli import oracle_like_field


@pytest.fixture(scope="module")
def world():
    return make_world(0, config=WorldConfig.preview())


@pytest.fixture
def make_viewer(world, tmp_path):
    apps = []

    def make(**options) -> ViewerApp:
        app = ViewerApp(
            world.scene, ViewerConfig(port=0, root=tmp_path), features=FeatureOptions(**options)
        )
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.stop()


def free_table_point(world) -> np.ndarray:
    hx, hy = 0.5 * world.table.params["size_x"], 0.5 * world.table.params["size_y"]
    gx, gy = np.meshgrid(
        np.linspace(-hx + 0.15, hx - 0.15, 15), np.linspace(-hy + 0.15, hy - 0.15, 9)
    )
    grid = np.stack([gx.ravel(), gy.ravel()], -1)
    clear = np.min(
        [np.linalg.norm(grid - o.position[:2], axis=1) - o.footprint_radius for o in world.objects],
        axis=0,
    )
    return np.array([*grid[int(np.argmax(clear))], world.table_top_z])


def placed(job):
    """The placement an insertion job produced (placing runs as a job)."""
    assert job.wait(60), "insertion job did not finish"
    assert job.status is JobStatus.DONE, job.error
    return job.result


def test_assets_are_listed(make_viewer):
    app = make_viewer()
    assert {"mug", "can", "ball", "book"} <= set(bundled_assets())
    assert app.insert_panel.asset.value in bundled_assets()


def test_place_on_selection_is_one_undoable_step_selecting_the_object(make_viewer, world):
    app = make_viewer()
    panel = app.insert_panel
    state = app.state
    state.select(world.scene.extras["label"] == 0)  # the table
    n_steps = len(state.history.steps)
    p = placed(panel.place("can"))
    n = len(world.scene)
    scene = state.scene
    assert len(scene) == n + int(p.mask.sum()) and len(state.history.steps) == n_steps + 1
    assert state.history.steps[-1] == "insert can"
    assert torch.equal(state.selection, p.mask)  # the new object is the selection
    assert scene.subset(torch.arange(n)).allclose(world.scene)
    assert scene.meta["label_names"][str(p.label)] == "can"
    assert 0 < float(scene.means[p.mask, 2].min()) - world.table_top_z < 0.001
    assert "Inserted **can**" in panel.status.content
    assert app.push_stats.count == len(scene)  # the browsers got the new splats

    # Adjust: the Edit panel's gizmo moves the inserted object only.
    app.edit_panel.set_gizmo(True)
    centre = scene.means[p.mask].double().mean(0).numpy()
    assert np.allclose(app.edit_panel._gizmo.position, centre, atol=1e-5)
    app.edit_panel.transform(editing.pivot_transform(torch.zeros(3), translation=torch.tensor([0.0, 0.05, 0.0])))  # fmt: skip
    moved = state.scene
    assert torch.equal(moved.means[:n], scene.means[:n])
    assert torch.allclose(moved.means[n:, 1], scene.means[n:, 1] + 0.05, atol=1e-6)

    assert state.undo() and state.undo()
    assert state.scene is world.scene
    assert state.redo() and len(state.scene) == len(scene)


def test_support_query_and_name_query_with_features(make_viewer, world):
    field = oracle_like_field(world.scene, world.label_names)
    app = make_viewer(field=field)
    panel = app.insert_panel
    app.state.clear_selection()
    p = placed(
        panel.place("can", support_text="table")
    )  # nothing selected: the query finds the table
    assert abs(p.plane.height - world.table_top_z) < 1e-3
    assert app.features_panel.current() is not None  # features cover the new Gaussians too
    app.query_panel.run("can", select=True, mode="replace")
    sel = app.state.selection
    iou = int((sel & p.mask).sum()) / int((sel | p.mask).sum())
    assert iou >= 0.9
    app.query_panel.run("mug", select=True, mode="replace")
    mug = torch.zeros(len(app.state.scene), dtype=torch.bool)
    mug[: len(world.scene)] = world.scene.extras["label"] == world.object_named("mug").label
    sel = app.state.selection
    assert int((sel & mug).sum()) / int((sel | mug).sum()) >= 0.9


def test_pick_spot_then_place_at_click(make_viewer, world):
    app = make_viewer()
    panel = app.insert_panel
    target = free_table_point(world)
    K = torch.tensor([[200.0, 0, 160], [0, 200.0, 120], [0, 0, 1]])
    cam = Camera.look_at(target + np.array([0.0, -0.6, 0.6]), target, (0.0, 0.0, 1.0), K, 320, 240)
    panel.set_picking(True)
    assert app.selection_panel.active_tool == "Navigate"
    u, v = project(cam, target)
    point = panel.pick(cam, u, v)
    assert point is not None and np.linalg.norm(point - target) < 0.01
    assert not panel.place_click_button.disabled
    p = placed(panel.place_at_click("ball"))
    assert np.linalg.norm(p.spot[:2] - target[:2]) < 0.02
    app.selection_panel.set_tool("Click")  # a selection tool takes the pointer back
    assert not panel.pick_spot.value


def test_bad_input_reports_clear_errors(make_viewer):
    app = make_viewer()
    panel = app.insert_panel
    app.state.clear_selection()
    with pytest.raises(ValueError, match="select the support"):
        panel.place("mug")
    with pytest.raises(ValueError, match="Pick spot"):
        panel.place_at_click("mug")
    with pytest.raises(ValueError, match="outside"):
        panel.load_asset("../elsewhere.ply")


class _TowardsImage:
    def __init__(self, value: float) -> None:
        self.value = value

    def loss(self, images, prompt, **_):
        return ((images - self.value) ** 2).mean()


def test_text_to_3d_job(make_viewer, world):
    app = make_viewer(field=oracle_like_field(world.scene, world.label_names))
    panel = app.insert_panel
    panel.set_click(free_table_point(world) + np.array([0.0, 0.0, 0.05]))
    panel.box_size.value = (0.08, 0.08, 0.1)
    config = editing.TextTo3DConfig(n_gaussians=100, steps=5, size=16)
    job = panel.generate("a red apple", distiller=_TowardsImage(0.2), config=config)
    assert job.wait(60) and job.status is JobStatus.DONE, job.error
    scene = app.state.scene
    grown = app.state.selection.clone()
    n_new = int(grown.sum())
    assert 0 < n_new <= 100 and len(scene) == len(world.scene) + n_new
    assert grown[len(world.scene) :].all()
    assert app.state.history.steps[-1] == "text to 3D: a red apple"
    z = scene.means[grown, 2].double()
    assert 0.0 <= float(z.min()) - world.table_top_z < 0.002  # resting on the table
    assert "rests on the support" in panel.status.content
    app.query_panel.run("a red apple", select=True, mode="replace")  # the prompt finds them
    sel = app.state.selection
    assert int((sel & grown).sum()) / int((sel | grown).sum()) >= 0.9
    panel.model.value = ""
    with pytest.raises(ValueError, match="diffusion model"):
        panel.generate("a pear")


def test_text_to_3d_controls_make_the_config(make_viewer, world):
    app = make_viewer()
    panel = app.insert_panel
    config = panel.text_to_3d_config()  # the defaults: ellipsoid, densify, auto method
    assert config.init == "ellipsoid" and config.densify and config.method is None
    assert "box" in panel.init_shape.options and "mug" in panel.init_shape.options
    panel.init_shape.value = "mug"
    panel.densify.value = False
    panel.method.value = "sds"
    panel.steps.value = 3
    config = panel.text_to_3d_config()
    assert config.init.endswith("mug.ply") and not config.densify and config.method == "sds"
    assert config.steps == 3
    panel.set_click(free_table_point(world) + np.array([0.0, 0.0, 0.05]))
    panel.box_size.value = (0.08, 0.08, 0.1)
    job = panel.generate("a pear", distiller=_TowardsImage(0.3))  # the panel's own settings
    assert job.wait(60) and job.status is JobStatus.DONE, job.error
    record = app.state.scene.meta["inserted"][-1]
    assert record["init"].endswith("mug.ply") and record["densify"] is False
    assert record["method"] == "sds" and record["steps"] == 3


def test_text_to_3d_job_cancels_without_a_step(make_viewer, world):
    app = make_viewer()
    panel = app.insert_panel
    panel.set_click(free_table_point(world) + np.array([0.0, 0.0, 0.05]))
    steps_before = list(app.state.history.steps)

    class CancelAfterTwo(_TowardsImage):
        calls = 0

        def loss(self, images, prompt, **kw):
            self.calls += 1
            if self.calls == 2:
                app.jobs.cancel()
            return super().loss(images, prompt, **kw)

    distiller = CancelAfterTwo(0.5)
    config = editing.TextTo3DConfig(n_gaussians=50, steps=500, size=16, context=False)
    job = panel.generate("a pear", distiller=distiller, config=config)
    assert job.wait(60) and job.status is JobStatus.CANCELLED
    assert distiller.calls < 10
    assert app.state.history.steps == steps_before and app.state.scene is world.scene


def test_replace_selection_is_one_undoable_step(make_viewer, world):
    """The mug replaced by the can: one history step, the mug's label gone, the can (named,
    queryable) selected on the same spot; one undo brings the mug back."""
    app = make_viewer(field=oracle_like_field(world.scene, world.label_names))
    panel, state = app.insert_panel, app.state
    mug = world.object_named("mug")
    before = state.scene
    state.select(before.extras["label"] == mug.label)
    n_steps = len(state.history.steps)
    job = panel.replace("can")
    assert job.wait(60) and job.status is JobStatus.DONE, job.error
    rep = job.result
    scene = state.scene
    assert len(state.history.steps) == n_steps + 1 and state.history.steps[-1].startswith("replace")
    assert not bool((scene.extras["label"] == mug.label).any())
    assert torch.equal(state.selection, rep.mask)  # the new object is selected
    spot = scene.means[rep.mask].double().mean(0).numpy()
    assert np.linalg.norm(spot[:2] - mug.position[:2]) < mug.footprint_radius
    assert "Replaced the selection with **can**" in panel.status.content
    app.query_panel.run("can", select=True, mode="replace")
    sel = state.selection
    assert int((sel & rep.mask).sum()) / int((sel | rep.mask).sum()) >= 0.9
    assert state.undo()
    assert state.scene is before


def test_replace_with_text_and_bad_input(make_viewer, world):
    app = make_viewer()
    panel, state = app.insert_panel, app.state
    state.clear_selection()
    with pytest.raises(NothingSelectedError):
        panel.replace("can")
    cup = world.object_named("cup")
    state.select(state.scene.extras["label"] == cup.label)
    config = editing.TextTo3DConfig(n_gaussians=100, steps=3, size=16)
    job = panel.replace_with_text("a red apple", distiller=_TowardsImage(0.2), config=config)
    assert job.wait(60) and job.status is JobStatus.DONE, job.error
    scene = state.scene
    assert not bool((scene.extras["label"] == cup.label).any())
    grown = state.selection
    assert bool(grown.any()) and state.history.steps[-1].startswith("replace")
    xy = scene.means[grown, :2].double().numpy()
    assert np.linalg.norm(xy.mean(0) - cup.position[:2]) < cup.footprint_radius
    with pytest.raises(ValueError, match="prompt"):
        panel.replace_with_text("  ")
