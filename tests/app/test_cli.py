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
