"""`scenelab edit`: end to end through a tiny random-weight Stable Diffusion pipeline saved with
`save_pretrained` (real UNet/VAE/CLIP steps, no downloads), plus the refusals that protect files."""

from __future__ import annotations

import argparse
import hashlib

import numpy as np
import pytest
import torch

from app.cli import main
from fields import load_scene, save_scene
from fields.synthetic import WorldConfig, make_world


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A coarse synthetic world saved as PLY, a mask file of its label-1 object, the mask."""
    root = tmp_path_factory.mktemp("edit_world")
    world = make_world(2, config=WorldConfig.preview())
    scene_path = save_scene(world.scene, root / "scene.ply")
    mask = (world.scene.extras["label"] == 1).numpy()
    np.save(root / "mask.npy", mask)
    return scene_path, root / "mask.npy", mask


@pytest.mark.slow
def test_edit_runs_real_steps_through_a_tiny_pipeline(world, tmp_path, capsys):
    sd = pytest.importorskip("editing.score_distillation")
    model = sd.make_tiny_pipeline(tmp_path / "tiny")
    scene_path, mask_path, mask = world
    before = digest(scene_path), digest(scene_path.with_name("scene.ply.json"))
    out = tmp_path / "edited.ply"
    argv = [
        "edit",
        str(scene_path),
        "--selection",
        str(mask_path),
        "--prompt",
        "a green bottle",
        "--source-prompt",
        "a bottle",
        "--method",
        "dds",
        "--model",
        str(model),
        "--steps",
        "3",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "step 3/3" in printed and str(out) in printed

    src, edited = load_scene(scene_path), load_scene(out)
    m = torch.from_numpy(mask)
    assert len(edited) == len(src)
    for name in ("means", "quats", "scales", "opacities", "sh"):
        a, b = getattr(src, name), getattr(edited, name)
        assert torch.equal(a[~m], b[~m]), name  # unselected: bit-identical, same order
    assert not torch.equal(src.sh[m], edited.sh[m])  # the selection did change
    assert torch.equal(src.means[m], edited.means[m])  # colour only by default
    assert torch.equal(src.extras["label"], edited.extras["label"]) and src.meta == edited.meta
    assert (digest(scene_path), digest(scene_path.with_name("scene.ply.json"))) == before

    # An existing --out is kept unless --overwrite; the input is refused even with it.
    again = out.read_bytes()
    assert main(argv) == 2
    assert out.read_bytes() == again
    assert "exists" in capsys.readouterr().err
    onto_input = [*argv[:-1], str(scene_path), "--overwrite"]
    assert main(onto_input) == 2
    assert "input" in capsys.readouterr().err
    assert (digest(scene_path), digest(scene_path.with_name("scene.ply.json"))) == before

    # --lora reaches the loader: a missing LoRA file is named, and nothing is written.
    with_lora = tmp_path / "with_lora.ply"
    no_lora = [*argv[:-1], str(with_lora), "--lora", str(tmp_path / "missing.safetensors")]
    assert main(no_lora) == 2
    assert "LoRA" in capsys.readouterr().err and not with_lora.exists()


def _args(scene_path, mask_path, out, *extra: str) -> list[str]:
    return [
        "edit",
        str(scene_path),
        "--selection",
        str(mask_path),
        "--prompt",
        "a red mug",
        "--out",
        str(out),
        *extra,
    ]


def test_edit_refuses_bad_input_before_loading_a_model(world, tmp_path, capsys):
    scene_path, mask_path, mask = world
    missing_model = str(tmp_path / "no-such-model")
    cases = [
        (_args(scene_path, mask_path, scene_path, "--overwrite"), "input"),
        (_args(scene_path, mask_path, tmp_path / "out.txt"), ".ply"),
        (_args(scene_path, mask_path, tmp_path / "o.ply", "--params", "color,hue"), "params"),
        (_args(scene_path, mask_path, tmp_path / "o.ply", "--steps", "0"), "steps"),
        (_args(scene_path, mask_path, tmp_path / "o.ply", "--up", "sideways"), "up"),
    ]
    short = tmp_path / "short.npy"
    np.save(short, mask[:-1])
    cases.append((_args(scene_path, short, tmp_path / "o.ply", "--model", missing_model), "shape"))
    empty = tmp_path / "empty.npy"
    np.save(empty, np.zeros_like(mask))
    cases.append((_args(scene_path, empty, tmp_path / "o.ply", "--model", missing_model), "empty"))
    floats = tmp_path / "floats.npy"
    np.save(floats, mask.astype(np.float32) * 0.5)
    cases.append((_args(scene_path, floats, tmp_path / "o.ply"), "bool"))
    # A model folder that does not exist: a clear message naming what to do.
    cases.append(
        (_args(scene_path, mask_path, tmp_path / "o.ply", "--model", missing_model), "not exist")
    )
    for argv, needle in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "scenelab edit: error:" in err and needle in err, (argv, err)
    assert not (tmp_path / "o.ply").exists()
    # --select needs a feature field.
    with pytest.raises(SystemExit):
        main(["edit", str(scene_path), "--prompt", "x", "--out", str(tmp_path / "o.ply")])
    capsys.readouterr()
    argv = ["edit", str(scene_path), "--select", "mug", "--prompt", "x", "--out", "o.ply"]
    assert main(argv) == 2 and "--features" in capsys.readouterr().err


def test_select_uses_the_language_query_on_a_feature_field(world, tmp_path):
    """--select TEXT --features F selects what `scenelab query` would (oracle field here)."""
    from app.commands.edit import _selection
    from fields.features import FeatureField
    from fields.features._oracle import name_embedding

    scene_path, _, _ = world
    scene = load_scene(scene_path)
    names = {int(k): v for k, v in scene.meta["label_names"].items()}
    labels = scene.extras["label"].long()
    dim = 64
    features = torch.nn.functional.one_hot(labels, len(names)).float()
    head = torch.stack([name_embedding(names[k], dim, 0) for k in range(len(names))], dim=1)
    teachers = [{"name": "oracle", "space": "oracle", "dim": dim, "seed": 0}]
    path = tmp_path / "scene.features.safetensors"
    FeatureField(features, {"oracle": head}, teachers=teachers).save(path)

    target = next(k for k, v in names.items() if k != 0)
    args = argparse.Namespace(
        scene=scene_path, selection=None, select=names[target], features=path, negatives=""
    )
    mask = _selection(args, scene)
    assert mask.dtype == torch.bool and torch.equal(mask, labels == target)


def test_densify_grows_the_object_and_writes_its_selection(world, tmp_path, monkeypatch, capsys):
    """--densify --margin through the CLI with the toy denoiser standing in for the model."""
    sd = pytest.importorskip("editing.score_distillation")
    import app.commands.edit as edit_cmd

    green = torch.tensor([0.1, 0.8, 0.15])[:, None, None].expand(3, 64, 64).clone()
    monkeypatch.setattr(edit_cmd, "_load_distiller", lambda args, device: sd.toy_distiller(green))
    scene_path, mask_path, mask = world
    before = digest(scene_path)
    out, sel_out = tmp_path / "grown.ply", tmp_path / "grown.npy"
    argv = _args(
        scene_path, mask_path, out, "--densify", "--margin", "0.25", "--method", "sds",
        "--steps", "12", "--densify-every", "3", "--size", "64", "--views", "4", "--params", "color,position,scale",
        "--selection-out", str(sel_out),
    )  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "the object has" in printed and str(sel_out) in printed

    src, grown = load_scene(scene_path), load_scene(out)
    m = torch.from_numpy(mask)
    new = torch.from_numpy(np.load(sel_out))
    n_rest = int((~m).sum())
    assert new.dtype == torch.bool and new.shape == (len(grown),)
    assert len(grown) > len(src)  # it grew
    assert not bool(new[:n_rest].any()) and bool(new[n_rest:].all())
    for name in ("means", "quats", "scales", "opacities", "sh"):
        assert torch.equal(getattr(grown, name)[:n_rest], getattr(src, name)[~m]), name
    assert torch.equal(grown.extras["label"][:n_rest], src.extras["label"][~m])
    assert bool((grown.extras["label"][new] == 1).all())
    # The object's means stay in its bounding box grown by 0.25 x its longest side.
    lo, hi = src.means[m].amin(0), src.means[m].amax(0)
    pad = 0.25 * float((hi - lo).max())
    assert bool(
        ((grown.means[new] >= lo - pad - 1e-6) & (grown.means[new] <= hi + pad + 1e-6)).all()
    )
    assert digest(scene_path) == before

    # The grow options need --densify; an existing --selection-out is kept.
    kept = sel_out.read_bytes()
    plain = _args(scene_path, mask_path, tmp_path / "p.ply", "--margin", "0.3")
    assert main(plain) == 2 and "--densify" in capsys.readouterr().err
    again = _args(scene_path, mask_path, tmp_path / "q.ply", "--selection-out", str(sel_out))
    assert main(again) == 2 and "exists" in capsys.readouterr().err
    assert sel_out.read_bytes() == kept
    onto_mask = _args(scene_path, mask_path, tmp_path / "r.ply", "--selection-out", str(mask_path))
    assert main([*onto_mask, "--overwrite"]) == 2 and "input selection" in capsys.readouterr().err
    assert not (tmp_path / "p.ply").exists() and not (tmp_path / "q.ply").exists()
