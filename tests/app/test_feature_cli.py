"""`scenelab distill` -> `query` -> `eval-query` end to end on a tiny synthetic world."""

import json

import numpy as np
import pytest

from app.cli import main
from fields import load_scene
from fields.features import load_field
from fields.synthetic import WorldConfig, make_world, write_world


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("features") / "world"
    write_world(make_world(202, config=WorldConfig.preview()), out, n_views=12, width=64, height=48)
    return out


def test_distill_query_eval(world_dir, capsys):
    scene_path = world_dir / "scene.ply"
    features = world_dir / "scene.features.safetensors"
    args = ["distill", str(scene_path), "--data", str(world_dir), "--steps", "120"]
    args += ["--method", "optimise"]
    assert main(args) == 0
    assert "distill [" in capsys.readouterr().err  # progress bar on stderr
    field = load_field(features)
    scene = load_scene(scene_path)
    assert field.features.shape == (len(scene), 16)
    assert field.meta["label_names"]["0"] == "table"
    assert main(args) == 2  # refuses to overwrite
    assert "exists" in capsys.readouterr().err

    names = json.loads((world_dir / "labels.json").read_text())
    label, name = next((int(k), v) for k, v in names.items() if k != "0")
    mask_path = world_dir / "mask.npy"
    assert (
        main(["query", str(scene_path), name, "--features", str(features), "--out", str(mask_path)])
        == 0
    )
    mask = np.load(mask_path)
    assert mask.dtype == bool and mask.shape == (len(scene),)
    truth = scene.extras["label"].numpy() == label
    assert (mask & truth).sum() / (mask | truth).sum() > 0.6

    report_path = world_dir / "eval.json"
    assert (
        main(["eval-query", str(world_dir), "--features", str(features), "--out", str(report_path)])
        == 0
    )
    report = json.loads(report_path.read_text())
    assert {o["name"] for o in report["objects"]} == set(names.values())
    assert report["miou_3d"] >= 0.85 and report["miou_2d"] >= 0.85


def test_unregistered_teacher_is_a_clear_error(world_dir, capsys):
    out = world_dir / "unknown.safetensors"
    code = main(
        [
            "distill",
            str(world_dir / "scene.ply"),
            "--data",
            str(world_dir),
            "--teacher",
            "no-such-teacher",
            "--out",
            str(out),
        ]
    )
    assert code == 2
    assert "no teacher 'no-such-teacher' is registered" in capsys.readouterr().err
    assert not out.exists()


def test_distill_without_dataset_then_query(tmp_path, capsys):
    """The acceptance interface: `distill SCENE --teacher oracle` with no --data on a world whose
    labels live in the scene, then `query`; a field from another scene is refused."""
    world = make_world(5, config=WorldConfig.preview())
    from fields import save_scene

    scene_path = save_scene(world.scene, tmp_path / "scene.ply")
    features = tmp_path / "f.safetensors"
    assert main(["distill", str(scene_path), "--teacher", "oracle", "--out", str(features)]) == 0
    field = load_field(features)
    assert field.levels[0] == "whole" and field.config["method"] == "lift"
    scene = load_scene(scene_path)
    field.check_scene(scene)
    labels = scene.extras["label"].numpy()
    ious = []
    for label, name in world.label_names.items():
        out = tmp_path / f"{label}.npy"
        cmd = ["query", str(scene_path), name, "--features", str(features), "--out", str(out)]
        assert main(cmd) == 0
        mask = np.load(out)
        truth = labels == label
        ious.append((mask & truth).sum() / (mask | truth).sum())
    assert np.mean(ious) >= 0.85, ious
    capsys.readouterr()
    # an unknown word: an empty mask and the names the field knows
    out = tmp_path / "none.npy"
    cmd = ["query", str(scene_path), "coffee mug", "--features", str(features), "--out", str(out)]
    assert main(cmd) == 0
    assert not np.load(out).any()
    assert "No confident match" in capsys.readouterr().err
    # a field from another scene is refused, with both names
    other = save_scene(world.scene.subset(np.arange(100)), tmp_path / "other.ply")
    out = tmp_path / "other.npy"
    cmd = ["query", str(other), "table", "--features", str(features), "--out", str(out)]
    assert main(cmd) == 2
    err = capsys.readouterr().err
    assert "does not belong to" in err and "other.ply" in err
    assert not out.exists()
