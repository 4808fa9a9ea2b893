"""`scenelab train` and `scenelab eval` end to end on a small synthetic world."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from app.cli import main
from fields import load_scene
from fields.formats import read_point_cloud
from fields.synthetic import make_world, write_world


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("train_cli") / "world"
    write_world(make_world(2), out, n_views=16, width=48, height=36)
    return out


def _train(world, out, *extra):
    return main(["train", str(world), "--out", str(out), "--sh-degree", "1", "--quiet", *extra])


def test_train_writes_an_inria_ply_and_refuses_to_overwrite(world, tmp_path, capsys):
    out = tmp_path / "scene.ply"
    rc = _train(world, out, "--time-budget", "0.05", "--eval-every", "0", "--background", "white")
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] > 0 and summary["heldout"] is None  # nothing held out
    # Any 3DGS viewer reads the INRIA layout: exactly these vertex properties.
    xyz, _ = read_point_cloud(out)
    head = out.read_bytes()[:2000].decode("latin-1")
    for prop in ("x", "y", "z", "f_dc_0", "f_rest_0", "opacity", "scale_0", "rot_0"):
        assert f"property float {prop}\n" in head
    assert len(xyz) == summary["gaussians"]
    scene = load_scene(out)
    meta = scene.meta
    assert len(meta["cameras"]) == 16 and meta["up"]
    assert meta["training"]["config"]["background"] == "white"
    assert (tmp_path / "scene.ckpt").is_file()
    before = out.read_bytes()
    assert _train(world, out, "--steps", "2") == 2  # no --overwrite: refused
    assert "exists" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert _train(world, out, "--steps", "2", "--overwrite") == 0


def test_train_then_eval_and_resume(world, tmp_path, capsys):
    out = tmp_path / "s.ply"
    assert _train(world, out, "--steps", "30") == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["heldout"]["views"] == 2 and summary["heldout"]["psnr"] > 5
    # eval scores the views the sidecar says were held out, and writes side-by-sides
    imgs = tmp_path / "cmp"
    report_path = tmp_path / "eval.json"
    rc = main(
        ["eval", str(out), "--data", str(world), "--images", str(imgs), "--json", str(report_path)]
    )
    assert rc == 0
    report = json.loads(report_path.read_text())
    assert [v["name"] for v in report["views"]] == [
        "images/frame_00000.png",
        "images/frame_00008.png",
    ]
    assert report["psnr"] == pytest.approx(summary["heldout"]["psnr"], abs=1e-3)
    pair = np.asarray(Image.open(imgs / "frame_00000.png"))
    assert pair.shape == (36, 96, 3)
    assert main(["eval", str(out), "--data", str(world), "--json", str(report_path)]) == 2
    # resume continues the checkpoint to a longer run
    out2 = tmp_path / "s2.ply"
    assert _train(world, out2, "--resume", str(tmp_path / "s.ckpt"), "--steps", "40") == 0
    assert load_scene(out2).meta["training"]["steps"] == 40
    # a checkpoint of another run is not replaced unasked; continuing the same one is fine
    out2.unlink()
    assert _train(world, out2, "--steps", "5") == 2
    assert "checkpoint" in capsys.readouterr().err
    ckpt2 = tmp_path / "s2.ckpt"
    assert _train(world, out2, "--resume", str(ckpt2), "--steps", "45") == 0


def test_bad_data_gets_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert _train(tmp_path / "empty", tmp_path / "x.ply", "--steps", "1") == 2
    assert "no dataset found" in capsys.readouterr().err
    assert _train(tmp_path / "empty", tmp_path / "x.txt", "--steps", "1") == 2
    assert ".ply" in capsys.readouterr().err


@pytest.mark.slow
def test_ctrl_c_writes_the_checkpoint_and_the_scene(world, tmp_path):
    out = tmp_path / "int.ply"
    cmd = [
        sys.executable,
        "-m",
        "app.cli",
        "train",
        str(world),
        "--out",
        str(out),
        "--steps",
        "100000",
    ]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 120
        seen = ""
        while "step 20" not in seen and time.monotonic() < deadline:  # training is under way
            seen += proc.stderr.read(64)
        proc.send_signal(signal.SIGINT)
        stdout, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["interrupted"] and 20 <= summary["steps"] < 100000
    assert load_scene(out).meta["training"]["steps"] == summary["steps"]
    assert (tmp_path / "int.ckpt").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # nothing half-written
