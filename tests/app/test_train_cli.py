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
import torch
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


# ---------------------------------------------------------------------- --model nerf
def _train_nerf(world, out, *extra):
    """A small NeRF (--nerf-preset small) on half-size images: seconds, not minutes."""
    return main(
        [
            "train",
            str(world),
            "--model",
            "nerf",
            "--nerf-preset",
            "small",
            "--downscale",
            "2",
            "--out",
            str(out),
            "--quiet",
            *extra,
        ]
    )


def test_train_nerf_writes_a_nerf_that_eval_reads_and_resume_continues(world, tmp_path, capsys):
    from fields.nerf import load_nerf, render_nerf

    out = tmp_path / "s.nerf"
    assert _train_nerf(world, out, "--steps", "3", "--background", "black") == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["model"] == "nerf" and summary["steps"] == 3 and not summary["interrupted"]
    assert summary["heldout"]["views"] == 2 and "gaussians" not in summary
    scene = load_nerf(out)
    assert scene.config.levels == 6 and scene.config.log2_table == 14  # the small preset
    meta = scene.meta
    assert meta["metrics"] == summary["heldout"]  # held-out scores travel with the scene
    assert meta["training"]["model"] == "nerf" and meta["training"]["steps"] == 3
    assert meta["training"]["config"]["background"] == "black"
    assert meta["training"]["held_out"] == ["images/frame_00000.png", "images/frame_00008.png"]
    assert len(meta["cameras"]) == 16 and meta["up"]
    ckpt = tmp_path / "s.ckpt"
    assert ckpt.is_file()
    # Never over an existing scene unasked.
    before = out.read_bytes()
    assert _train_nerf(world, out, "--steps", "1") == 2
    assert "exists" in capsys.readouterr().err and out.read_bytes() == before

    # eval reads the .nerf: the views its training held out, at its downscale and background,
    # rendered by the NeRF (the left half of each side-by-side is `render_nerf`'s frame).
    imgs = tmp_path / "cmp"
    assert main(["eval", str(out), "--data", str(world), "--images", str(imgs), "--no-lpips"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"] == "nerf" and report["background"] == "black"
    assert [v["name"] for v in report["views"]] == meta["training"]["held_out"]
    pair = np.asarray(Image.open(imgs / "frame_00000.png"))
    assert pair.shape == (18, 48, 3)
    from fields import load_dataset

    cam = load_dataset(world, downscale=2).cameras[0]
    rgb = render_nerf(scene, cam, background=(0.0, 0.0, 0.0)).rgb
    expect = (rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
    assert np.abs(pair[:, :24].astype(int) - expect).max() <= 1

    # --resume continues the checkpoint with its preset; another preset is refused.
    out2 = tmp_path / "s2.nerf"
    resume = ["--resume", str(ckpt), "--steps", "4"]
    assert _train_nerf(world, out2, *resume, "--nerf-preset", "base") == 2
    assert "does not match the checkpoint" in capsys.readouterr().err
    base = ["train", str(world), "--model", "nerf", "--downscale", "2", "--quiet"]
    assert main([*base, "--out", str(out2), *resume]) == 0
    capsys.readouterr()
    resumed = load_nerf(out2)
    assert resumed.meta["training"]["steps"] == 4 and resumed.config == scene.config
    # A Gaussian run cannot continue a NeRF's checkpoint, nor a NeRF run a Gaussian one.
    assert _train(world, tmp_path / "g.ply", *resume) == 2
    assert "not a Gaussian training checkpoint" in capsys.readouterr().err
    assert _train(world, tmp_path / "g.ply", "--steps", "1") == 0
    capsys.readouterr()
    assert (
        main([*base, "--out", str(tmp_path / "n.nerf"), "--resume", str(tmp_path / "g.ckpt")]) == 2
    )
    assert "not a NeRF training checkpoint" in capsys.readouterr().err


def test_train_nerf_refuses_options_and_files_of_the_other_kind(world, tmp_path, capsys):
    nerf = ["train", str(world), "--model", "nerf", "--steps", "1", "--quiet"]
    for opt in (
        ["--sh-degree", "1"],
        ["--max-gaussians", "10"],
        ["--strategy", "mcmc"],
        ["--batch-size", "2"],
    ):
        assert main([*nerf, "--out", str(tmp_path / "x.nerf"), *opt]) == 2
        err = capsys.readouterr().err
        assert opt[0] in err and "Gaussian training only" in err
    assert main([*nerf, "--out", str(tmp_path / "x.ply")]) == 2
    assert "writes a .nerf file" in capsys.readouterr().err
    gauss = ["train", str(world), "--steps", "1", "--quiet"]
    assert main([*gauss, "--out", str(tmp_path / "x.nerf")]) == 2
    assert "--model nerf" in capsys.readouterr().err
    assert main([*gauss, "--out", str(tmp_path / "x.ply"), "--nerf-preset", "small"]) == 2
    assert "--nerf-preset applies to --model nerf only" in capsys.readouterr().err
    assert main([*gauss, "--out", str(tmp_path / "x.ply"), "--bound", "box"]) == 2
    assert "--bound applies to --model nerf only" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing written by a refused run


def test_train_nerf_bound_options_reach_the_config(world):
    import argparse

    from app.commands import train as train_cmd

    p = argparse.ArgumentParser()
    train_cmd.add_arguments(p)
    base = [str(world), "--model", "nerf", "--out", "x.nerf"]
    args = p.parse_args([*base, "--bound", "contract", "--bound-radius", "2"])
    cfg = train_cmd._nerf_config(args)
    assert cfg.bound == "contract" and cfg.box_radius == 2.0
    cfg = train_cmd._nerf_config(p.parse_args(base))
    assert cfg.bound == "auto" and cfg.box_radius is None


@pytest.mark.slow
def test_ctrl_c_writes_the_nerf_checkpoint_and_scene(world, tmp_path):
    out = tmp_path / "int.nerf"
    cmd = [
        sys.executable,
        "-m",
        "app.cli",
        "train",
        str(world),
        "--model",
        "nerf",
        "--nerf-preset",
        "small",
        "--downscale",
        "2",
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
        deadline = time.monotonic() + 180
        seen = ""
        while "step 3" not in seen and time.monotonic() < deadline:  # training is under way
            seen += proc.stderr.read(64)
        proc.send_signal(signal.SIGINT)
        stdout, _ = proc.communicate(timeout=180)
    finally:
        proc.kill()
    assert proc.returncode == 130
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["interrupted"] and summary["model"] == "nerf" and 3 <= summary["steps"]
    from fields.nerf import load_nerf

    assert load_nerf(out).meta["training"]["steps"] == summary["steps"]
    assert (tmp_path / "int.ckpt").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
