"""Headless tests of the Grasps panel: a real viewer in-process on a synthetic tabletop world
(analytic object surfaces), targets by selection, language query and click, gripper meshes
coloured by score, a click on a mesh showing its scores, and JSON export."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from app._paths import PathOutsideRootError
from app.viewer import ViewerApp, ViewerConfig
from app.viewer._jobs import JobStatus
from app.viewer._panel_features import FeatureOptions
from app.viewer._panel_grasp import legend_html, score_colors
from editing.grasp import grasps_to_json
from fields import Camera, save_scene
from fields.features import FeatureField
from fields.features._oracle import name_embedding
from fields.synthetic import WorldConfig, make_world

from .conftest import blob_scene, project

DIM = 512


@pytest.fixture(scope="module")
def world():
    return make_world(0, config=WorldConfig.preview())


def label_field(scene, names: dict[int, str], seed: int = 0) -> FeatureField:
    """A well-distilled oracle field: one-hot label features (plus a little noise), the head maps
    them to the names' embeddings."""
    gen = torch.Generator().manual_seed(seed)
    labels = scene.extras["label"].long()
    c = max(names) + 1
    features = torch.nn.functional.one_hot(labels, c).float()
    features = features + 0.05 * torch.rand(features.shape, generator=gen)
    head = torch.stack([name_embedding(names[k], DIM, 0) for k in range(c)], dim=1)  # [D,c]
    teachers = [{"name": "oracle", "space": "oracle", "dim": DIM, "seed": 0}]
    return FeatureField(features, {"oracle": head}, teachers=teachers, meta={"label_names": names})


@pytest.fixture
def viewer(world, tmp_path):
    apps = []

    def make(scene=None, field=None) -> ViewerApp:
        scene = world.scene if scene is None else scene
        src = save_scene(scene, tmp_path / "input.ply", overwrite=True)
        app = ViewerApp(
            scene,
            ViewerConfig(port=0, root=tmp_path),
            source=src,
            features=FeatureOptions(field=field),
        )
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.stop()


def finished(job) -> None:
    assert job.wait(120), "grasp job did not finish"
    assert job.status is JobStatus.DONE, job.error


def on_object(world, name: str, points: np.ndarray, tol: float = 0.006) -> bool:
    sdf = world.object_named(name).signed_distance(np.asarray(points, dtype=np.float64))
    return bool(np.all(np.abs(sdf) < tol))


def test_selection_target_meshes_scores_and_export(viewer, world, tmp_path):
    app = viewer()
    panel = app.grasp_panel
    labels = world.scene.extras["label"]
    bottle = world.object_named("bottle")
    app.state.select(labels == bottle.label)
    panel.top_k.value = 6
    finished(panel.find())
    shown = panel.shown
    grasps = shown.result.grasps
    assert 0 < len(grasps) <= 6 and len(shown.handles) == len(grasps)
    assert [g.score for g in grasps] == sorted((g.score for g in grasps), reverse=True)
    for g in grasps:
        assert on_object(world, "bottle", g.contacts)
    # The best is highlighted, alone; the legend spans the shown scores.
    assert panel.chosen == 0 and f"{grasps[0].score:.3f}" in panel.details.content
    assert [h.visible for h in shown.handles] == [True] + [False] * (len(grasps) - 1)
    assert f"{grasps[-1].score:.2f}" in panel.legend.content
    assert f"{grasps[0].score:.2f}" in panel.legend.content

    # Clicking a gripper mesh (its on_click does this) shows that grasp's score components.
    scores = panel.choose(len(grasps) - 1)
    assert scores == grasps[-1].scores
    assert set(scores) >= {"antipodality", "contact", "margin", "stability", "clearance"}
    assert f"{grasps[-1].score:.3f}" in panel.details.content
    assert shown.handles[-1].visible and not shown.handles[0].visible
    with pytest.raises(ValueError, match="no grasp"):
        panel.choose(len(grasps))
    # Next / Previous step through them (wrapping); "Show all" dims the others instead.
    assert panel.step(1) == 0 and panel.step(-1) == len(grasps) - 1
    panel.show_all.value = True
    panel.step(1)
    assert all(h.visible for h in shown.handles)
    assert shown.handles[0].opacity == 1.0 and all(h.opacity < 1.0 for h in shown.handles[1:])

    # Export: the same JSON as `scenelab grasp`; never replaced without confirmation; confined.
    out = panel.export("grasps.json")
    data = json.loads(out.read_text())
    assert data == json.loads(json.dumps(grasps_to_json(shown.result, shown.gripper)))
    assert len(data["grasps"]) == len(grasps) and data["units"]
    with pytest.raises(FileExistsError):
        panel.export("grasps.json")
    with pytest.raises(PathOutsideRootError):
        panel.export("../grasps.json")
    with pytest.raises(ValueError, match="json"):
        panel.export("grasps.txt")

    panel.clear()
    assert panel.shown is None and panel.details.content == ""


def test_score_colours_run_red_to_green_as_the_legend_says():
    c = score_colors(np.array([0.9, 0.5, 0.1])).astype(int)
    assert c[0, 1] > c[0, 0]  # best: green
    assert c[2, 0] > c[2, 1]  # worst: red
    assert score_colors(np.array([0.4])).shape == (1, 3)
    html = legend_html(np.array([0.9, 0.5, 0.1]))
    lo, hi = (tuple(int(v) for v in c[i]) for i in (2, 0))
    assert "0.10" in html and "0.90" in html
    assert html.index("rgb({},{},{})".format(*lo)) < html.index("rgb({},{},{})".format(*hi))
    assert legend_html(np.array([])) == ""


def test_query_target(viewer, world):
    names = {int(k): v for k, v in world.scene.meta["label_names"].items()}
    app = viewer(field=label_field(world.scene, names))
    panel = app.grasp_panel
    panel.set_target("Query")
    panel.text.value = "bottle"
    before = app.state.selection.clone()
    finished(panel.find())
    grasps = panel.shown.result.grasps
    assert grasps and all(on_object(world, "bottle", g.contacts) for g in grasps)
    assert torch.equal(app.state.selection, before)  # the query did not touch the selection


def bottle_view(world):
    """A camera looking at the bottle's middle, and that point's pixel."""
    centre = world.object_named("bottle").position + np.array([0.0, 0.0, 0.08])
    cam = Camera.look_at(
        tuple(centre + np.array([0.0, -0.6, 0.35])),
        tuple(centre),
        (0.0, 0.0, 1.0),
        torch.tensor([[200.0, 0, 160], [0, 200.0, 120], [0, 0, 1]]),
        320,
        240,
    )
    return cam, project(cam, centre)


@pytest.mark.parametrize("with_features", [False, True])
def test_click_target_grasps_the_clicked_object(viewer, world, with_features):
    """A click grows the clicked Gaussian to its object: by feature affinity when features are
    loaded, else by geometry (the table it stands on cut away)."""
    names = {int(k): v for k, v in world.scene.meta["label_names"].items()}
    app = viewer(field=label_field(world.scene, names) if with_features else None)
    panel = app.grasp_panel
    panel.set_target("Click")
    assert panel.target.value == "Click"
    cam, (u, v) = bottle_view(world)
    finished(panel.click(cam, u, v))
    grasps = panel.shown.result.grasps
    assert grasps and all(on_object(world, "bottle", g.contacts) for g in grasps)
    target = panel.shown.target
    truth = world.scene.extras["label"] == world.object_named("bottle").label
    precision = int((target & truth).sum()) / int(target.sum())
    above = truth & (world.scene.means[:, 2] > world.table_top_z + 0.005)
    recall = int((target & above).sum()) / int(above.sum())
    assert precision > 0.98 and recall > 0.95


def test_an_object_wider_than_the_gripper_gets_a_message(viewer):
    scene = blob_scene()  # blobs 30 cm across, the gripper opens 8 cm
    app = viewer(scene=scene)
    app.state.select(scene.extras["label"] == 1)
    finished(app.grasp_panel.find())
    assert app.grasp_panel.shown.result.grasps == []
    assert "No grasps" in app.grasp_panel.details.content
    with pytest.raises(ValueError, match="select the object"):
        app.state.clear_selection()
        app.grasp_panel.find()
