"""`scenelab remove`: remove an object by mask or by language query and fill the hole; the input
is never overwritten; bad input gets one clear line and writes nothing."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from app.cli import main
from fields import load_scene, save_scene
from fields.features import load_field
from fields.synthetic import WorldConfig, make_world

from .test_insert_cli import oracle_like_field


@pytest.fixture(scope="module")
def world_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("remove")
    world = make_world(0, config=WorldConfig.preview(table_spacing=0.008))
    scene_path = save_scene(world.scene, root / "scene.ply")
    field_path = oracle_like_field(world.scene, world.label_names).save(
        root / "scene.features.safetensors"
    )
    mug = world.scene.extras["label"] == world.object_named("mug").label
    mask_path = root / "mug.npy"
    np.save(mask_path, mug.numpy())
    return world, root, scene_path, field_path, mask_path


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_remove_by_selection_fills_the_table(world_files, tmp_path, capsys):
    world, _, scene_path, _, mask_path = world_files
    before = digest(scene_path)
    out = tmp_path / "out.ply"
    assert main(["remove", str(scene_path), "--selection", str(mask_path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "filled support" in printed
    assert digest(scene_path) == before
    new = load_scene(out)
    mug = np.load(mask_path)
    n_rest = int((~mug).sum())
    assert torch.equal(new.means[:n_rest], world.scene.means[torch.from_numpy(~mug)])
    fill = new.extras["label"][n_rest:]
    assert len(fill) > 0 and bool((fill == 0).all())  # the fill is table
    # The fill lies on the table top where the mug stood.
    pts = new.means[n_rest:].double().numpy()
    assert np.abs(pts[:, 2] - world.table_top_z).max() < 0.005
    centre = world.object_named("mug").position[:2]
    assert np.linalg.norm(pts[:, :2] - centre, axis=1).min() < 0.02


def test_remove_by_language_query_writes_the_field(world_files, tmp_path, capsys):
    world, _, scene_path, field_path, _mask_path = world_files
    out = tmp_path / "nomug.ply"
    args = ["remove", str(scene_path), "--features", str(field_path), "--select", "mug"]
    assert main([*args, "--out", str(out)]) == 0
    new = load_scene(out)
    field = load_field(tmp_path / "nomug.features.safetensors")
    assert field.features.shape[0] == len(new)
    assert len(new) != len(world.scene)
    assert not bool((new.extras["label"] == world.object_named("mug").label).any())
    # The written field is the result's: a second run refuses to overwrite it.
    assert main([*args, "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err


def test_remove_refuses_to_overwrite_its_input_or_outputs(world_files, tmp_path, capsys):
    _, _root, scene_path, _, mask_path = world_files
    before = digest(scene_path)
    args = ["remove", str(scene_path), "--selection", str(mask_path)]
    assert main([*args, "--out", str(scene_path)]) == 2
    assert "never overwritten" in capsys.readouterr().err
    assert main([*args, "--out", str(scene_path), "--overwrite"]) == 2
    assert digest(scene_path) == before
    taken = tmp_path / "taken.ply"
    taken.write_bytes(b"mine")
    assert main([*args, "--out", str(taken)]) == 2
    assert "exists" in capsys.readouterr().err
    assert taken.read_bytes() == b"mine"


def test_remove_bad_selections_get_one_line(world_files, tmp_path, capsys):
    world, _root, scene_path, _, _ = world_files
    n = len(world.scene)
    cases = {
        "empty": np.zeros(n, bool),
        "whole scene": np.ones(n, bool),
        "shape": np.zeros(n + 1, bool),
        "bool array": np.zeros(n, np.float32),
    }
    for message, arr in cases.items():
        path = tmp_path / "sel.npy"
        np.save(path, arr)
        out = tmp_path / "out.ply"
        args = ["remove", str(scene_path), "--selection", str(path), "--out", str(out)]
        assert main(args) == 2, message
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
        assert not out.exists()
    args = ["remove", str(scene_path), "--select", "mug", "--out", str(tmp_path / "o.ply")]
    assert main(args) == 2
    assert "--select needs --features" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("inpainting", [False, True])
def test_remove_refines_the_fill_with_a_tiny_model(world_files, tmp_path, capsys, inpainting):
    """--inpaint-model: a tiny SD pipeline (masked SDS) or a tiny 9-channel inpainting one (the
    UNet sees the mask and the masked image) refines only the fill's colours."""
    _, _, scene_path, _, mask_path = world_files
    model = tmp_path / "tiny"
    assert main(["make-tiny-model", str(model), *(["--inpainting"] if inpainting else [])]) == 0
    out = tmp_path / "refined.ply"
    args = ["remove", str(scene_path), "--selection", str(mask_path), "--out", str(out)]
    assert main([*args, "--inpaint-model", str(model), "--inpaint-steps", "3"]) == 0
    plain = tmp_path / "plain.ply"
    assert main([*args[:-2], "--out", str(plain)]) == 0
    a, b = load_scene(out), load_scene(plain)
    assert len(a) == len(b)
    n_rest = int((~np.load(mask_path)).sum())
    assert torch.equal(a.sh[:n_rest], b.sh[:n_rest])  # only the fill's colours change
    assert not torch.equal(a.sh[n_rest:], b.sh[n_rest:])
