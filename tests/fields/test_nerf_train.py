"""fields.nerf training: the box choice, a synthetic world learnt to held-out quality,
bit-exact resume, what a trained scene records, bad settings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fields import load_dataset, parse_up
from fields.nerf import (
    NerfModelConfig,
    NerfTrainConfig,
    NerfTrainer,
    load_nerf,
    render_nerf,
    save_nerf,
    scene_box,
)
from fields.synthetic import make_world, write_world

SMALL = NerfModelConfig(levels=6, log2_table=14, base_res=8, max_res=64, occupancy_res=32)


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    out = tmp_path_factory.mktemp("nerf") / "world"
    write_world(make_world(0), out, n_views=48, width=64, height=48)
    return out


def _cfg(**kw) -> NerfTrainConfig:
    base = dict(steps=30, model=SMALL, target_samples=1 << 12, rays_per_step=256)
    base.update(kw)
    return NerfTrainConfig(**base)


def test_scene_box_boxes_object_centric_rigs_and_contracts_others(tiny_world):
    ds = load_dataset(tiny_world)
    cams = ds.cameras
    tight = scene_box(cams, has_alpha=True)
    wide = scene_box(cams, has_alpha=False)
    assert tight.mode == wide.mode == "box"
    # the rig looks at the table: the box is centred where the axes meet, framed by the cameras
    meet = np.asarray(tight.center)
    dist = np.median([np.linalg.norm(c.center.numpy() - meet) for c in cams])
    assert 0.1 * dist < tight.radius < wide.radius == pytest.approx(0.9 * dist)
    assert scene_box(cams, "box", 2.5).radius == 2.5
    assert scene_box(cams, "contract").mode == "contract"
    # a forward-facing rig (parallel axes): contraction around the cameras
    import torch as _t

    from fields import Camera

    K = _t.tensor([[50.0, 0, 32], [0, 50.0, 24], [0, 0, 1]])
    ff = [
        Camera(K, _t.eye(4) + _t.tensor([[0, 0, 0, 0.1 * i], [0] * 4, [0] * 4, [0] * 4]), 64, 48)
        for i in range(5)
    ]
    assert scene_box(ff).mode == "contract"
    assert NerfTrainer(ds, _cfg(steps=1)).model.box.mode == "box"


def test_resume_continues_bit_for_bit(tiny_world, tmp_path):
    ds = load_dataset(tiny_world)
    cfg = _cfg(steps=24, occupancy_every=4)
    straight = NerfTrainer(ds, cfg)
    straight.run()
    half = NerfTrainer(ds, cfg)
    for _ in range(13):
        half.step()
    ckpt = half.save_checkpoint(tmp_path / "run.ckpt")
    resumed = NerfTrainer.resume(ckpt, ds)
    assert resumed.step_count == 13
    resumed.run()
    a, b = straight.model.field.state_dict(), resumed.model.field.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert torch.equal(straight.model.occupancy, resumed.model.occupancy)
    with pytest.raises(ValueError, match="other views"):
        NerfTrainer.resume(ckpt, ds.subset(range(24)))


def test_scene_records_facts_and_saved_scores_match_the_file(tiny_world, tmp_path):
    ds = load_dataset(tiny_world)
    t = NerfTrainer(ds, _cfg(steps=40))
    t.run()
    result = t.evaluate(max_views=2)
    scene = t.scene(metrics=result.to_dict(), final=True)
    assert scene.meta["training"]["model"] == "nerf"
    assert len(scene.meta["cameras"]) == 48 and scene.meta["metrics"]["psnr"] == result.psnr
    np.testing.assert_allclose(parse_up(scene.meta["up"]), [0, 0, 1], atol=0.05)
    back = load_nerf(save_nerf(scene, tmp_path / "w.nerf"))
    # the file renders what was scored
    cam = ds.cameras[t.splits.test[0]]
    ref = t._eval_images.target(0, torch.ones(3))
    pred = render_nerf(back, cam).rgb.clamp(0, 1)
    score = -10 * torch.log10(((pred - ref) ** 2).mean())
    assert float(score) == pytest.approx(result.views[0].psnr, abs=1e-3)


def test_bad_settings_are_refused(tiny_world):
    with pytest.raises(ValueError, match="steps"):
        NerfTrainConfig(steps=0)
    with pytest.raises(ValueError, match="background"):
        NerfTrainConfig(background="grey")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bound"):
        NerfTrainConfig(bound="sphere")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="log2_table"):
        NerfModelConfig(log2_table=40)
    with pytest.raises(ValueError, match="no views"):
        NerfTrainer(load_dataset(tiny_world).subset([]), _cfg())


@pytest.mark.slow
def test_learns_a_synthetic_world_to_28db_on_views_it_never_saw(tmp_path):
    """The world's own renders (128 views of 64x48, every 8th held out) train a NeRF that scores
    >= 28 dB on the held-out views."""
    out = tmp_path / "world"
    write_world(make_world(0), out, n_views=128, width=64, height=48)
    ds = load_dataset(out)
    model = NerfModelConfig(levels=8, log2_table=15, max_res=128, occupancy_res=64)
    t = NerfTrainer(
        ds, NerfTrainConfig(steps=900, model=model, target_samples=1 << 15, rays_per_step=1024)
    )
    first = t.evaluate(max_views=4)
    t.run()
    result = t.evaluate()
    assert result is not None and len(result.views) == 16
    assert result.psnr >= 28.0, result.psnr
    assert first is not None and first.psnr < 15.0
