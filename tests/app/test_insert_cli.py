"""`scenelab insert`: an asset on the table of a synthetic world, by mask, by language query (the
updated feature field makes `scenelab query` find it by name) and at a point; bad input."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from app.cli import main
from fields import load_scene, save_scene
from fields.features import FeatureField, load_field
from fields.features._oracle import name_embedding
from fields.synthetic import WorldConfig, make_world

DIM, D = 12, 64  # feature channels (more than the classes: room for a new name), oracle space


def oracle_like_field(scene, names: dict[int, str]) -> FeatureField:
    """A well-distilled oracle field in closed form: label one-hots (plus a little noise) in the
    first channels, a head mapping them to the names' embeddings and the rest to random ones."""
    gen = torch.Generator().manual_seed(0)
    labels = scene.extras["label"].long()
    features = torch.zeros(len(scene), DIM)
    features[torch.arange(len(scene)), labels] = 1.0
    features[:, : len(names)] += 0.03 * torch.rand(len(scene), len(names), generator=gen)
    head = torch.randn(D, DIM, generator=gen) / D**0.5
    for k, n in names.items():
        head[:, k] = name_embedding(n, D, 0)
    teachers = [{"name": "oracle", "space": "oracle", "dim": D, "seed": 0}]
    meta = {"label_names": {str(k): v for k, v in names.items()}}
    return FeatureField(features, {"oracle": head}, teachers=teachers, meta=meta)


@pytest.fixture(scope="module")
def world_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("insert")
    world = make_world(0, config=WorldConfig.preview())
    scene_path = save_scene(world.scene, root / "scene.ply")
    field_path = oracle_like_field(world.scene, world.label_names).save(
        root / "scene.features.safetensors"
    )
    mask_path = root / "table.npy"
    np.save(mask_path, (world.scene.extras["label"] == 0).numpy())
    return world, root, scene_path, field_path, mask_path


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_insert_on_selection(world_files, tmp_path, capsys):
    world, _, scene_path, _, mask_path = world_files
    before = digest(scene_path)
    out = tmp_path / "out.ply"
    args = ["insert", str(scene_path), "--asset", "can", "--on-selection", str(mask_path)]
    assert main([*args, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "placed 'can'" in printed and "gap" in printed
    assert digest(scene_path) == before  # the input is never touched
    new = load_scene(out)
    n = len(world.scene)
    assert new.subset(torch.arange(n)).allclose(world.scene)  # old Gaussians bit-identical
    inserted = new.subset(torch.arange(n, len(new)))
    label = int(inserted.extras["label"][0])
    assert (inserted.extras["label"] == label).all()
    assert new.meta["label_names"][str(label)] == "can"
    top = world.table_top_z
    height = float(inserted.means[:, 2].max() - inserted.means[:, 2].min())
    gap = float(inserted.means[:, 2].min()) - top
    assert 0.0 < gap <= 0.01 * height
    assert main([*args, "--out", str(out)]) == 2  # refuses to overwrite
    assert "exists" in capsys.readouterr().err


def test_insert_on_query_updates_features_and_query_finds_it(world_files, tmp_path, capsys):
    world, _, scene_path, field_path, _ = world_files
    assert "can" not in world.label_names.values()
    out = tmp_path / "edited.ply"
    args = ["insert", str(scene_path), "--asset", "can", "--on", "table"]
    assert main([*args, "--features", str(field_path), "--out", str(out)]) == 0
    assert "query 'can' finds the object" in capsys.readouterr().out
    feats = tmp_path / "edited.features.safetensors"
    field = load_field(feats)
    new = load_scene(out)
    assert "feature" not in new.extras and len(field) == len(new)
    inserted = torch.zeros(len(new), dtype=torch.bool)
    inserted[len(world.scene) :] = True

    def query(text: str) -> np.ndarray:
        mask_path = tmp_path / f"{text}.npy"
        cmd = ["query", str(out), text, "--features", str(feats), "--out", str(mask_path)]
        assert main(cmd) == 0
        return np.load(mask_path)

    def iou(a, b) -> float:
        a, b = np.asarray(a), np.asarray(b)
        return (a & b).sum() / max(1, (a | b).sum())

    assert iou(query("can"), inserted.numpy()) >= 0.9
    mug_label = next(k for k, v in world.label_names.items() if v == "mug")
    old_mug = np.zeros(len(new), dtype=bool)
    old_mug[: len(world.scene)] = world.scene.extras["label"].numpy() == mug_label
    assert iou(query("mug"), old_mug) >= 0.9


def test_insert_at_point(world_files, tmp_path):
    world, _, scene_path, _, _ = world_files
    out = tmp_path / "at.ply"
    # A free point on the table: far from every object's footprint.
    hx, hy = 0.5 * world.table.params["size_x"], 0.5 * world.table.params["size_y"]
    grid = np.stack(np.meshgrid(np.linspace(-hx + 0.15, hx - 0.15, 15), np.linspace(-hy + 0.15, hy - 0.15, 9)), -1).reshape(-1, 2)  # fmt: skip
    clear = np.min([np.linalg.norm(grid - o.position[:2], axis=1) - o.footprint_radius for o in world.objects], axis=0)  # fmt: skip
    x, y = grid[int(np.argmax(clear))]
    at = f"{x:.4f},{y:.4f},{world.table_top_z}"
    assert main(["insert", str(scene_path), "--asset", "ball", "--at", at, "--out", str(out)]) == 0
    new = load_scene(out)
    ball = new.means[len(world.scene) :].double()
    centre = ball.mean(0)
    assert np.hypot(float(centre[0]) - x, float(centre[1]) - y) < 0.02
    assert 0.0 < float(ball[:, 2].min()) - world.table_top_z < 0.001


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--asset", "no-such-object", "--at", "0,0,0.75"], "no asset 'no-such-object'"),
        (["--asset", "mug"], "say where"),
        (
            ["--text", "a cup", "--box", "0,0,0.8,0.1,0.1,0.1", "--model", "m", "--init", "nope"],
            "no asset 'nope'",
        ),
        (["--asset", "mug", "--on", "table"], "--on needs --features"),
        (["--asset", "book", "--at", "0,0,0.75", "--scale", "20"], "wider than the support"),
    ],
)
def test_bad_input_is_a_clear_error(world_files, tmp_path, capsys, extra, message):
    _, _, scene_path, _, _ = world_files
    out = tmp_path / "bad.ply"
    assert main(["insert", str(scene_path), *extra, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_text_to_3d_with_a_tiny_model(world_files, tmp_path, capsys):
    """The CLI's text-to-3D path end to end with a tiny random-weight diffusion pipeline (checks
    the plumbing, not the looks): the object grows in a box over a free spot and rests on the
    table."""
    sd = pytest.importorskip("editing.score_distillation")
    world, _, scene_path, _, _ = world_files
    model = sd.make_tiny_pipeline(tmp_path / "tiny")
    out = tmp_path / "t3d.ply"
    x, y = free_xy(world)
    box = f"{x},{y},{world.table_top_z + 0.05},0.08,0.08,0.1"
    args = ["insert", str(scene_path), "--text", "a red apple", f"--box={box}"]
    assert main([*args, "--model", str(model), "--steps", "1", "--out", str(out)]) == 0
    assert "grew 'a red apple'" in capsys.readouterr().out
    new = load_scene(out)
    n = len(world.scene)
    assert new.subset(torch.arange(n)).allclose(world.scene)
    grown = new.means[n:].double()
    assert len(grown) > 0
    # In the box (whose bottom is the table top), lifted by the resting gap at most.
    assert (grown[:, 2] - (world.table_top_z + 0.05)).abs().max() <= 0.05 + 0.002
    assert 0.0 <= float(grown[:, 2].min()) - world.table_top_z < 0.002
    assert "a red apple" in new.meta["label_names"].values()


def free_xy(world) -> tuple[float, float]:
    """A point of the table top far from every object's footprint."""
    hx, hy = 0.5 * world.table.params["size_x"], 0.5 * world.table.params["size_y"]
    grid = np.stack(np.meshgrid(np.linspace(-hx + 0.15, hx - 0.15, 15), np.linspace(-hy + 0.15, hy - 0.15, 9)), -1).reshape(-1, 2)  # fmt: skip
    clear = np.min([np.linalg.norm(grid - o.position[:2], axis=1) - o.footprint_radius for o in world.objects], axis=0)  # fmt: skip
    x, y = grid[int(np.argmax(clear))]
    return float(x), float(y)


def test_text_to_3d_options_reach_the_config(world_files, tmp_path, capsys, monkeypatch):
    """--init/--no-densify/--method/--no-support end up in the run (a toy denoiser stands in
    for the model) and the object rests on the table under the box."""
    import editing.score_distillation as sd

    world, _, scene_path, _, _ = world_files
    target = torch.full((3, 64, 64), 0.5)
    monkeypatch.setattr(sd, "load_distiller", lambda model: sd.toy_distiller(target))
    x, y = free_xy(world)
    box = f"{x},{y},{world.table_top_z + 0.08},0.08,0.08,0.1"
    base = ["insert", str(scene_path), "--text", "a pear", f"--box={box}", "--model", "toy"]
    out = tmp_path / "pear.ply"
    opts = ["--steps", "4", "--init", "mug", "--no-densify", "--method", "sds"]
    assert main([*base, *opts, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "grew 'a pear'" in printed and "sds, init mug" in printed and "rests on" in printed
    new = load_scene(out)
    n = len(world.scene)
    assert new.subset(torch.arange(n)).allclose(world.scene)
    record = new.meta["inserted"][-1]
    assert record["init"].endswith("mug.ply") and record["densify"] is False
    assert record["method"] == "sds" and record["support"] is not None
    z = new.means[n:, 2].double()
    assert 0.0 <= float(z.min()) - world.table_top_z < 0.002

    out2 = tmp_path / "pear2.ply"
    assert main([*base, "--steps", "2", "--no-support", "--out", str(out2)]) == 0
    z = load_scene(out2).means[n:, 2].double()
    assert float(z.min()) > world.table_top_z + 0.02  # left where it grew (box bottom +3 cm)
    assert main([*base, "--method", "vsd", "--out", str(tmp_path / "v.ply")]) == 2
    assert "does not support method='vsd'" in capsys.readouterr().err
