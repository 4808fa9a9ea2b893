"""The real CLIP and SAM teacher code end to end, with tiny random-weight models built in code and
loaded through the real weight-loading paths: distil (CLI) -> language query (CLI, CLIP text side
rebuilt from the field's metadata) -> click segmentation with SAM's prompt encoder + mask decoder
on the rendered + decoded feature map. Random weights: this checks the plumbing, not accuracy
(the oracle tests score accuracy)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

open_clip = pytest.importorskip("open_clip")
segment_anything = pytest.importorskip("segment_anything")

from app.cli import main  # noqa: E402
from fields import load_dataset, load_scene  # noqa: E402
from fields.features import SamTeacher, load_field, segment_click  # noqa: E402
from fields.synthetic import WorldConfig, make_world, write_world  # noqa: E402

from .test_teachers import TINY_CLIP_CFG, tiny_clip, tiny_sam  # noqa: E402


@pytest.fixture
def tiny_weights(tmp_path, monkeypatch):
    config_dir = tmp_path / "clip_configs"
    config_dir.mkdir()
    (config_dir / "scenelab-tiny-clip.json").write_text(json.dumps(TINY_CLIP_CFG))
    open_clip.add_model_config(config_dir)
    clip_path = tmp_path / "open_clip_pytorch_model.bin"
    torch.save(tiny_clip().state_dict(), clip_path)
    sam_path = tmp_path / "sam_tiny.pth"
    torch.save(tiny_sam().state_dict(), sam_path)
    # The registry builds an untrained model of this type; the checkpoint then fills it.
    monkeypatch.setitem(
        segment_anything.sam_model_registry, "tiny", lambda checkpoint=None: tiny_sam(seed=1)
    )
    return clip_path, sam_path


@pytest.mark.parametrize("method", ["lift", "optimise"])
def test_clip_sam_distill_query_click(tmp_path, tiny_weights, method):
    clip_path, sam_path = tiny_weights
    world = make_world(11, config=WorldConfig.preview())
    data = write_world(world, tmp_path / "world", n_views=4, width=64, height=48)
    scene_path = data / "scene.ply"
    field_path = tmp_path / "scene.features.safetensors"
    assert (
        main(
            [
                "distill", str(scene_path), "--data", str(data), "--teacher", "clip,sam",
                "--clip-model", "scenelab-tiny-clip", "--clip-pretrained", str(clip_path),
                "--sam-model", "tiny", "--sam-checkpoint", str(sam_path),
                "--steps", "12", "--dim", "8", "--all-views", "--out", str(field_path),
                "--method", method,
            ]
        )
        == 0
    )  # fmt: skip
    field = load_field(field_path)
    scene = load_scene(scene_path)
    # lift: one 8-channel block per teacher space (block-diagonal heads); optimise: shared 8
    d = 16 if method == "lift" else 8
    assert set(field.heads) == {"clip", "sam"} and field.features.shape == (len(scene), d)
    assert field.head("clip").shape == (TINY_CLIP_CFG["embed_dim"], d)
    assert field.head("sam").shape == (256, d)
    field.check_scene(scene)
    assert field.meta["sam_cell_norm"] > 0
    # Teacher maps were cached: a second run computes none of them.
    cache = data / ".cache" / "teachers"
    assert len(list(cache.rglob("*.npy"))) == 8  # 4 views x 2 teachers

    mask_path = tmp_path / "mug.npy"
    assert (
        main(
            [
                "query", str(scene_path), "mug", "--features", str(field_path),
                "--space", "clip", "--out", str(mask_path),
            ]
        )
        == 0
    )  # fmt: skip
    mask = np.load(mask_path)
    assert mask.dtype == bool and mask.shape == (len(scene),)

    decoder = SamTeacher("tiny", sam_path).decoder()  # the real checkpoint path
    camera = load_dataset(data).cameras[0]
    res = segment_click(scene, field, decoder, camera, points=[[32.0, 30.0]], labels=[1])
    assert res.mask3d.dtype == torch.bool and res.mask3d.shape == (len(scene),)
    assert res.mask2d.shape == (camera.height, camera.width)
    assert res.timings["total_ms"] > 0
