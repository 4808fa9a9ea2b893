"""The `scenelab` CLI end to end on a small synthetic world."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from app.cli import main
from fields import load_dataset, load_scene


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "world"
    assert (
        main(
            [
                "make-demo",
                str(out),
                "--seed",
                "3",
                "--views",
                "24",
                "--width",
                "64",
                "--height",
                "48",
            ]
        )
        == 0
    )
    return out


def test_make_demo_layout(world_dir):
    names = json.loads((world_dir / "labels.json").read_text())
    assert names["0"] == "table" and 5 <= len(names) <= 7
    scene = load_scene(world_dir / "scene.ply")
    labels = scene.extras["label"]
    assert labels.dtype == torch.int32
    assert set(labels.unique().tolist()) == {int(k) for k in names}
    tf = json.loads((world_dir / "transforms.json").read_text())
    assert len(tf["frames"]) == 24
    images = sorted(p.name for p in (world_dir / "images").iterdir())
    maps = sorted(p.name for p in (world_dir / "labels").iterdir())
    assert images == maps and len(images) == 24
    lab = np.asarray(Image.open(world_dir / "labels" / maps[0]))
    assert lab.shape == (48, 64) and set(np.unique(lab)) <= {*map(int, names), 255}
    ds = load_dataset(world_dir)
    assert len(ds) == 24 and ds.cameras[0].width == 64


def test_make_demo_refuses_to_overwrite(world_dir, capsys):
    assert main(["make-demo", str(world_dir), "--seed", "3"]) == 2
    assert "error" in capsys.readouterr().err


def test_make_demo_without_writes_the_removal_ground_truth(world_dir, tmp_path, capsys):
    names = json.loads((world_dir / "labels.json").read_text())
    gone = names["1"]
    out = tmp_path / "truth"
    args = ["make-demo", str(out), "--seed", "3", "--views", "24", "--width", "64"]
    assert main([*args, "--height", "48", "--without", gone]) == 0
    truth = json.loads((out / "labels.json").read_text())
    assert truth == {k: v for k, v in names.items() if k != "1"}
    assert f"without {gone}" in capsys.readouterr().out
    # Same views; the label maps no longer show the object.
    a = json.loads((world_dir / "transforms.json").read_text())["frames"]
    b = json.loads((out / "transforms.json").read_text())["frames"]
    assert [f["transform_matrix"] for f in a] == [f["transform_matrix"] for f in b]
    lab = np.stack(
        [np.asarray(Image.open(out / "labels" / p.name)) for p in (out / "labels").iterdir()]
    )
    assert not (lab == 1).any()
    assert main(["make-demo", str(tmp_path / "bad"), "--seed", "3", "--without", "unicorn"]) == 2
    assert "cannot leave out ['unicorn']" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_render_command(world_dir, tmp_path, capsys):
    out = tmp_path / "renders"
    assert (
        main(
            [
                "render",
                str(world_dir / "scene.ply"),
                "--data",
                str(world_dir),
                "--out",
                str(out),
                "--max-views",
                "2",
            ]
        )
        == 0
    )
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 2
    img = np.asarray(Image.open(pngs[0]))
    assert img.shape == (48, 64, 3) and img.std() > 5  # not a blank frame
    # Refuses to overwrite, then overwrites when asked.
    assert (
        main(
            [
                "render",
                str(world_dir / "scene.ply"),
                "--data",
                str(world_dir),
                "--out",
                str(out),
                "--max-views",
                "2",
            ]
        )
        == 2
    )
    assert (
        main(
            [
                "render",
                str(world_dir / "scene.ply"),
                "--out",
                str(out),
                "--views",
                "2",
                "--width",
                "32",
                "--height",
                "24",
                "--overwrite",
            ]
        )
        == 0
    )
