"""`scenelab objects` on a tiny synthetic world with an oracle-like field built from the ground
truth (no distillation): the JSON interface, file-order indices, vocabulary options, refusals."""

import json

import pytest
import torch

from app.cli import main
from fields import load_scene, save_scene
from fields.features import FeatureField
from fields.features._io import scene_hash
from fields.synthetic import WorldConfig, make_world
from tests.fields.test_objects import oracle_features, oracle_head

KEYS = {"id", "name", "score", "count", "bbox", "indices"}


@pytest.fixture(scope="module")
def world_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("objects")
    world = make_world(77, config=WorldConfig.preview())
    scene_path = save_scene(world.scene, root / "scene.ply")
    scene = load_scene(scene_path)
    names = world.label_names
    head = oracle_head([names[k] for k in sorted(names)], seed=77)
    field = FeatureField(
        oracle_features(scene.extras["label"].long(), names, head),
        {"oracle": head},
        teachers=[{"name": "oracle", "space": "oracle", "dim": 512, "seed": 0}],
        scene_hash=scene_hash(scene_path),
        meta={"label_names": {str(k): v for k, v in names.items()}},
    ).bind(scene)
    field_path = field.save(root / "scene.features.safetensors")
    return scene_path, field_path, scene, names


def run(scene_path, field_path, out, *extra):
    return main(["objects", str(scene_path), "--features", str(field_path), "--out", str(out), *extra])  # fmt: skip


def test_objects_cli_writes_the_object_list(world_files, tmp_path, capsys):
    scene_path, field_path, scene, names = world_files
    out = tmp_path / "objects.json"
    assert run(scene_path, field_path, out) == 0
    table = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["num_gaussians"] == len(scene)
    assert report["vocabulary_size"] >= 80 and report["space"] == "oracle"
    objects = report["objects"]
    assert [o["id"] for o in objects] == list(range(len(objects)))
    assert sorted(o["name"] for o in objects) == sorted(names.values())
    labels = scene.extras["label"].long()
    seen = set()
    for o in objects:
        assert set(o) == KEYS
        idx = o["indices"]
        assert all(type(i) is int for i in idx) and idx == sorted(idx) and len(idx) == o["count"]
        assert 0 <= idx[0] and idx[-1] < len(scene) and not seen & set(idx)
        seen |= set(idx)
        truth = labels == next(k for k, v in names.items() if v == o["name"])
        mask = torch.zeros(len(scene), dtype=torch.bool)
        mask[idx] = True
        assert int((mask & truth).sum()) / int((mask | truth).sum()) >= 0.9
        lo, hi = torch.tensor(o["bbox"])
        assert bool((scene.means[idx] >= lo - 1e-6).all() and (scene.means[idx] <= hi + 1e-6).all())
        assert f" {o['name']}" in table and str(o["count"]) in table

    # Nothing a user made is overwritten unasked.
    before = out.read_text()
    assert run(scene_path, field_path, out) == 2
    assert "exists" in capsys.readouterr().err and out.read_text() == before

    # Vocabulary options add names; --min-size above every object leaves none.
    words = tmp_path / "words.txt"
    words.write_text("# extra names\nwidget, sprocket\ngizmo\n")
    assert run(scene_path, field_path, out, "--overwrite", "--vocabulary", "doohickey,widget", "--vocabulary-file", str(words), "--min-size", str(len(scene) + 1)) == 0  # fmt: skip
    bigger = json.loads(out.read_text())
    assert bigger["vocabulary_size"] == report["vocabulary_size"] + 4
    assert bigger["objects"] == [] and bigger["config"]["min_size"] == len(scene) + 1


def test_objects_cli_refuses_bad_input(world_files, tmp_path, capsys):
    scene_path, field_path, _, _ = world_files
    out = tmp_path / "objects.json"
    assert run(scene_path, tmp_path / "absent.safetensors", out) == 2
    assert "no feature field" in capsys.readouterr().err
    assert run(scene_path, field_path, out, "--vocabulary-file", str(tmp_path / "no.txt")) == 2
    assert "no vocabulary file" in capsys.readouterr().err
    assert run(scene_path, field_path, out, "--space", "clip") == 2
    assert "no 'clip' head" in capsys.readouterr().err
    assert run(scene_path, field_path, out, "--min-size", "0") == 2
    assert not out.exists()
    # A field of another scene is refused.
    other = make_world(78, config=WorldConfig.preview()).scene
    other_path = save_scene(other, tmp_path / "other.ply")
    assert run(other_path, field_path, out) == 2
    assert "does not belong" in capsys.readouterr().err and not out.exists()
