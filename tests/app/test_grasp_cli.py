"""`scenelab grasp` end to end on a small synthetic world: selection mask and language query
targets, the JSON fields, refusing to overwrite, and an object no grasp fits."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from app.cli import main
from editing.grasp import COMPONENTS
from fields import load_scene, save_scene
from fields.features import FeatureField
from fields.features._oracle import name_embedding
from fields.synthetic import WorldConfig, make_world, write_world
from fields.synthetic._sdf import pose_matrix

from ..editing._grasp_worlds import big_ball, build

DIM = 32


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("grasp") / "world"
    world = make_world(0, config=WorldConfig.preview(object_spacing=0.004))
    write_world(world, out, n_views=2, width=32, height=24)
    return out, world


def check_pose(grasp: dict, world_obj) -> None:
    T = np.asarray(grasp["pose"])
    assert T.shape == (4, 4) and np.allclose(T[3], [0, 0, 0, 1])
    R = T[:3, :3]
    assert np.allclose(R.T @ R, np.eye(3), atol=1e-6) and np.linalg.det(R) == pytest.approx(1.0)
    c = np.asarray(grasp["contacts"])
    assert c.shape == (2, 3)
    d = c[1] - c[0]
    assert np.allclose(R[:, 0], d / np.linalg.norm(d), atol=1e-6)  # x closes from c0 to c1
    assert np.allclose(T[:3, 3], c.mean(0), atol=1e-6)  # origin between the contacts
    assert grasp["width"] == pytest.approx(np.linalg.norm(d)) and 0 < grasp["width"] <= 0.08
    assert np.abs(world_obj.signed_distance(c)).max() < 0.003  # contacts on the object
    assert set(grasp["scores"]) == {*COMPONENTS, "thickness"}
    assert 0.0 <= grasp["score"] <= 1.0


def test_selection_mask_to_json(world_dir, tmp_path, capsys):
    root, world = world_dir
    scene_path = root / "scene.ply"
    labels = load_scene(scene_path).extras["label"].numpy()
    mug = world.object_named("mug")
    mask_path = tmp_path / "mug.npy"
    np.save(mask_path, labels == mug.label)
    out = tmp_path / "grasps.json"
    args = ["grasp", str(scene_path), "--selection", str(mask_path), "--top-k", "5"]
    assert main([*args, "--out", str(out)]) == 0
    assert "5 grasps" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["units"] == "metres" and data["gripper"]["max_opening"] == 0.08
    assert len(data["grasps"]) == 5
    scores = [g["score"] for g in data["grasps"]]
    assert scores == sorted(scores, reverse=True)
    for g in data["grasps"]:
        check_pose(g, mug)

    # Never over an existing file unless asked.
    assert main([*args, "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert main([*args, "--out", str(out), "--overwrite", "--top-k", "3"]) == 0
    assert len(json.loads(out.read_text())["grasps"]) == 3

    # A mask of the wrong size is a clear error.
    np.save(mask_path, np.ones(7, dtype=bool))
    assert main([*args, "--out", str(tmp_path / "x.json")]) == 2
    assert "shape" in capsys.readouterr().err


def test_language_query_target(world_dir, tmp_path):
    root, world = world_dir
    scene_path = root / "scene.ply"
    scene = load_scene(scene_path)
    names = {int(k): v for k, v in scene.meta["label_names"].items()}
    labels = scene.extras["label"].long()
    c = max(names) + 1
    features = torch.nn.functional.one_hot(labels, c).float()
    head = torch.stack([name_embedding(names[k], DIM, 0) for k in range(c)], dim=1)  # [D,c]
    teachers = [{"name": "oracle", "space": "oracle", "dim": DIM, "seed": 0}]
    field_path = FeatureField(features, {"oracle": head}, teachers=teachers).save(
        tmp_path / "f.safetensors"
    )
    out = tmp_path / "grasps.json"
    code = main(
        ["grasp", str(scene_path), "--features", str(field_path), "bottle", "--out", str(out)]
    )
    assert code == 0
    data = json.loads(out.read_text())
    assert data["grasps"]
    for g in data["grasps"]:
        check_pose(g, world.object_named("bottle"))


def test_object_wider_than_the_gripper(tmp_path, capsys):
    world = build([("ball", big_ball(0.06), pose_matrix(0.0, (0.0, 0.0, 0.0)))], spacing=0.005)
    scene_path = save_scene(world.scene, tmp_path / "ball.ply")
    mask_path = tmp_path / "ball.npy"
    np.save(mask_path, world.mask("ball").numpy())
    out = tmp_path / "grasps.json"
    code = main(["grasp", str(scene_path), "--selection", str(mask_path), "--out", str(out)])
    assert code == 0
    message = "no grasps: the object is wider than the 8 cm opening in every direction"
    assert message in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["grasps"] == [] and data["message"] == message
    # A 14 cm stroke spans it, but 5 cm fingers cannot reach its equator without the palm
    # hitting its top: still no grasps, for that reason.
    wide = tmp_path / "wide.json"
    args = ["--selection", str(mask_path), "--max-opening", "0.14", "--out", str(wide)]
    assert main(["grasp", str(scene_path), *args]) == 0
    data = json.loads(wide.read_text())
    assert data["grasps"] == [] and "collide" in data["message"]
    assert data["gripper"]["max_opening"] == 0.14
