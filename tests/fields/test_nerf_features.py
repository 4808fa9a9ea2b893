"""Feature fields on a NeRF (`fields.nerf.distill_nerf`, `NerfQuery`, `QueryRegion`): on a small
synthetic tabletop with the oracle teacher, distil a trained NeRF's feature branch, then check
that an object's relevancy heat map covers its pixels in held-out views, that its query region
holds its Gaussians (the world's ground truth) and not the others', and that a saved and
reloaded NeRF answers the same.

One world (3 objects, 32 views at 64x48, every 8th held out), one NeRF (600 steps: ~27 dB
held-out) and one distillation are shared by the module."""

from __future__ import annotations

import pytest
import torch

from fields import load_dataset
from fields.camera import cameras_from_meta
from fields.features import LiftConfig, OracleTeacher, lift
from fields.nerf import (
    MarchSettings,
    NerfDistillConfig,
    NerfModelConfig,
    NerfQuery,
    NerfScene,
    NerfTrainConfig,
    NerfTrainer,
    QueryRegion,
    camera_rays,
    distill_nerf,
    load_nerf,
    nerf_query_region,
    nerf_relevancy,
    render_nerf,
    save_nerf,
)
from fields.nerf._features import _RaySamples, _region, _voxel_centres
from fields.synthetic import WorldConfig, make_world, write_world

pytestmark = pytest.mark.slow  # one NeRF trained and distilled for the module (~1 min)

MODEL = NerfModelConfig(
    levels=8, log2_table=15, max_res=128, occupancy_res=32, hidden=32, color_hidden=32
)
DIM = 8


@pytest.fixture(scope="module")
def world():
    return make_world(0, config=WorldConfig.preview(n_objects=(3, 3)))


@pytest.fixture(scope="module")
def data(world, tmp_path_factory):
    root = tmp_path_factory.mktemp("nerf_features") / "world"
    write_world(world, root, n_views=32, width=64, height=48)
    return root


@pytest.fixture(scope="module")
def nerf(data) -> NerfScene:
    # A box around the table top (the cameras stay outside it) and coarse steps: fast to train.
    cfg = NerfTrainConfig(
        steps=600, model=MODEL, target_samples=1 << 15, bound="box", box_radius=0.62
    )
    trainer = NerfTrainer(load_dataset(data), cfg)
    trainer.model.march = MarchSettings.for_box(trainer.model.box, steps_across=128)
    trainer.run()
    return trainer.scene(final=True)


@pytest.fixture(scope="module")
def train(data):
    return load_dataset(data).split("train")


@pytest.fixture(scope="module")
def oracle(train):
    return OracleTeacher(train)


@pytest.fixture(scope="module")
def distilled(nerf, train, oracle) -> NerfScene:
    return distill_nerf(nerf, train, [oracle], NerfDistillConfig(dim=DIM, steps=150))


@pytest.fixture(scope="module")
def query(distilled) -> NerfQuery:
    return NerfQuery(distilled)


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    union = int((a | b).sum())
    return int((a & b).sum()) / union if union else 1.0


# ---------------------------------------------------------------------- distillation
def test_distillation_adds_a_branch_and_keeps_the_radiance(nerf, distilled, oracle):
    assert not nerf.has_features and nerf.feature_field is None  # the input is untouched
    assert distilled.has_features
    ff = distilled.feature_field
    assert ff is not None and ff.features.shape == (0, DIM) and ff.levels == ("default",)
    assert set(ff.heads) == {"oracle"} and ff.heads["oracle"].shape == (512, DIM)
    assert ff.teachers[0]["name"] == "oracle" and ff.teachers[0]["label_names"]
    assert distilled.field.feature_dim == DIM
    before, after = nerf.field.state_dict(), distilled.field.state_dict()
    for k, v in before.items():  # density and colour frozen
        assert torch.equal(after[k], v), k
    assert torch.equal(nerf.occupancy, distilled.occupancy)
    cam = a_camera(distilled)
    assert torch.equal(render_nerf(nerf, cam).rgb, render_nerf(distilled, cam).rgb)


def a_camera(scene: NerfScene, i: int = 1):
    cams = cameras_from_meta(scene.meta)
    assert cams
    return cams[i]


def test_heads_are_the_ones_lift_builds_from_the_same_views(world, train, oracle, distilled):
    lifted = lift(world.scene, train, [oracle], LiftConfig(dim=DIM))
    assert torch.allclose(distilled.feature_field.heads["oracle"], lifted.heads["oracle"])


def test_cached_ray_samples_render_the_branch_like_render_rays(distilled):
    cam = a_camera(distilled).scaled(0.25)
    o, d, _ = camera_rays(cam)
    samples = _RaySamples(distilled, o, d, min_weight=0.0)
    pts, w, owner = samples.gather(torch.arange(o.shape[0]))
    fast = torch.zeros(o.shape[0], DIM).index_add_(
        0, owner, w[:, None] * distilled.field.features(pts)
    )
    with torch.enable_grad():  # the differentiable path: every sample, no pruning
        ref = distilled.render_rays(o, d, torch.ones(3), features=True).features
    assert torch.allclose(fast, ref.detach(), atol=1e-5)
    # A subset gathers exactly its own rays' samples.
    some = torch.tensor([5, 0, 7, 7])
    p2, w2, o2 = samples.gather(some)
    for j, r in enumerate(some.tolist()):
        assert torch.equal(p2[o2 == j], pts[owner == r]) and torch.equal(w2[o2 == j], w[owner == r])


# ---------------------------------------------------------------------- queries
def test_relevancy_heat_map_covers_each_object_in_held_out_views(world, data, query):
    test = load_dataset(data).split("test")
    for obj in world.objects:
        threshold = query.region(obj.name).threshold  # the query's automatic cut
        ious = []
        for i in range(len(test)):
            cam, _ = test[i]
            truth = test.load_map("labels", i) == obj.label
            if int(truth.sum()) < 20:
                continue
            heat = query.relevancy(cam, obj.name)
            assert heat.shape == (cam.height, cam.width)
            assert float(heat.min()) >= 0.0 and float(heat.max()) <= 1.0
            # It peaks on the object: relevancy inside its pixels well above outside.
            assert float(heat[truth].mean()) > float(heat[~truth].mean()) + 0.5
            ious.append(_iou(heat > threshold, truth))
        assert ious and sum(ious) / len(ious) > 0.7, (obj.name, ious)


def test_query_region_holds_the_object_and_not_the_others(world, query):
    scene = world.scene
    labels = scene.extras["label"]
    cell = 2 * query.scene.box.radius / 32
    for obj in world.objects:
        region = query.region(obj.name)
        assert isinstance(region, QueryRegion) and region.confident and not region.empty
        assert region.voxels.shape == (32, 32, 32) and region.centers.shape == (region.count, 3)
        inside = region.contains(scene.means)
        own = float(inside[labels == obj.label].float().mean())
        others = float(inside[labels != obj.label].float().mean())
        assert own > 0.8 and others < 0.01, (obj.name, own, others)
        # Its cells hug the object: every centre within a few cells of its Gaussians (no stray
        # cells elsewhere), most within one or two.
        pts = scene.means[labels == obj.label]
        gap = (region.centers[:, None] - pts[None]).abs().amax(-1).amin(1) / cell
        assert float(gap.max()) < 6.0 and float(gap.median()) < 1.5, (obj.name, gap)
    # A query's region decides a Gaussian selection: the whole table minus what sits on it.
    table = query.region("table").contains(scene.means)
    assert float(table[labels == 0].float().mean()) > 0.8


def test_unknown_words_get_no_region_and_embeddings_match_text(query, oracle, world):
    none = query.region("giraffe")
    assert none.empty and not none.confident and "knows only" in none.message
    name = world.objects[0].name
    by_text = query.region(name, level=0)
    emb = oracle.encode_text([name])
    by_emb = query.region(emb, threshold=by_text.threshold)
    assert torch.equal(by_emb.voxels, by_text.voxels)
    cam = a_camera(query.scene)
    assert torch.equal(query.relevancy(cam, emb), query.relevancy(cam, name))
    # Negatives as text or as embeddings give the same map.
    negs = oracle.encode_text(["object", "things", "stuff", "texture", "table"])
    assert torch.allclose(
        query.relevancy(cam, name, negs), query.relevancy(cam, name, "table"), atol=1e-6
    )


def test_saved_nerf_answers_the_same(distilled, query, world, tmp_path):
    path = save_nerf(distilled, tmp_path / "scene.nerf")
    loaded = load_nerf(path)
    assert loaded.feature_field is not None and loaded.feature_field.levels == ("default",)
    heads = loaded.feature_field.heads["oracle"]
    assert torch.equal(heads, distilled.feature_field.heads["oracle"])
    cam = a_camera(loaded)
    name = world.objects[1].name
    assert torch.equal(nerf_relevancy(loaded, cam, name), query.relevancy(cam, name))
    assert torch.equal(nerf_query_region(loaded, name).voxels, query.region(name).voxels)


def test_bad_inputs_are_clear_errors(nerf, distilled, query, train, world):
    with pytest.raises(ValueError, match="no feature field"):
        NerfQuery(nerf)
    with pytest.raises(ValueError, match="at least one teacher"):
        distill_nerf(nerf, train, [])
    with pytest.raises(ValueError, match="dim"):
        NerfDistillConfig(dim=0)
    cam = a_camera(distilled)
    with pytest.raises(KeyError, match="no level"):
        query.relevancy(cam, "mug", level="part")
    with pytest.raises(ValueError, match=r"\[T,512\]"):
        query.region(torch.ones(3, 7))
    with pytest.raises(ValueError, match="type what to find"):
        query.region(" , ")
    with pytest.raises(ValueError, match=r"\[N,3\]"):
        query.region(world.objects[0].name).contains(torch.zeros(4, 2))


# ---------------------------------------------------------------------- regions
def test_region_membership_against_a_brute_force_reference(nerf):
    g = torch.Generator().manual_seed(0)
    R = 8
    voxels = torch.rand(R, R, R, generator=g) > 0.7
    region = _region(voxels, nerf.box)
    assert region.count == int(voxels.sum()) and region.centers.shape == (region.count, 3)
    c = torch.tensor(nerf.box.center, dtype=torch.float32)
    pts = c + (torch.rand(4000, 3, generator=g) * 2.4 - 1.2) * nerf.box.radius
    half = nerf.box.radius / R
    expected = torch.zeros(len(pts), dtype=torch.bool)
    for centre in region.centers:  # a point is in a set voxel's axis-aligned cube
        expected |= ((pts - centre).abs() < half).all(-1)
    assert torch.equal(region.contains(pts), expected)
    # Dilation: a voxel is set when any voxel within one step (26-neighbourhood) was.
    ref = torch.zeros_like(voxels)
    for z, y, x in voxels.nonzero().tolist():
        ref[max(z - 1, 0) : z + 2, max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2] = True
    assert torch.equal(region.dilate(1).voxels, ref)
    # A box region holds exactly the voxels whose centres the box holds.
    lo, hi = c - 0.3 * nerf.box.radius, c + 0.5 * nerf.box.radius
    box = QueryRegion.from_box(nerf, lo, hi, resolution=R)
    every = _voxel_centres(nerf.box, R)
    held = ((every >= lo) & (every <= hi)).all(-1)
    assert box.count == int(held.sum()) and torch.equal(box.centers, every[held])


# ---------------------------------------------------------------------- the command
def test_distill_command_writes_the_branch_into_the_nerf(nerf, data, world, tmp_path, capsys):
    from app.cli import main

    scene = save_nerf(nerf, tmp_path / "scene.nerf")
    args = ["distill", str(scene), "--data", str(data), "--steps", "30", "--dim", "4"]
    assert main(args) == 2  # the scene itself needs --overwrite
    assert "--overwrite" in capsys.readouterr().err
    out = tmp_path / "with_features.nerf"
    assert main([*args, "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "distill [" in captured.err and str(out) in captured.out
    loaded = load_nerf(out)
    assert loaded.has_features and loaded.feature_field.dim == 4
    assert set(loaded.feature_field.heads) == {"oracle"}
    assert not load_nerf(scene).has_features  # the input file is untouched
    assert main([*args, "--out", str(out)]) == 2  # refuses to overwrite
    assert "exists" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0 and load_nerf(scene).has_features
    for bad, why in (
        (["--method", "lift"], "Gaussian scenes"),
        (["--out", str(tmp_path / "x.ply")], "must be a .nerf"),
    ):
        assert main([*args, "--overwrite", *bad]) == 2
        assert why in capsys.readouterr().err
    assert main(["distill", str(scene), "--overwrite"]) == 2
    assert "--data" in capsys.readouterr().err
