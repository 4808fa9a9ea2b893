"""Training-free lifting, levels, dataset-free features and `TextQuery` on synthetic worlds."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fields import Camera, GaussianScene
from fields.features import (
    FieldMismatchError,
    LiftConfig,
    OracleTeacher,
    SceneOracleTeacher,
    TextQuery,
    build_text_encoder,
    evaluate_queries,
    lift,
    lift_values,
    load_field,
    scene_views,
)
from fields.features._segment import blending_weights
from fields.synthetic import WorldConfig, make_world, write_world


def _camera(width=48, height=36, eye=(0.0, 0.0, -4.0)) -> Camera:
    f = 0.5 * width / math.tan(math.radians(25))
    K = torch.tensor([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1.0]])
    return Camera.look_at(
        torch.tensor(eye), torch.zeros(3), torch.tensor([0.0, -1, 0]), K, width, height
    )


def _blobs(n=200, seed=0) -> GaussianScene:
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g) - 0.5) * 2.0
    quats = torch.randn(n, 4, generator=g)
    scales = torch.full((n, 3), 0.08) * (0.5 + torch.rand(n, 3, generator=g))
    opac = 0.3 + 0.6 * torch.rand(n, generator=g)
    rgb = torch.rand(n, 3, generator=g)
    return GaussianScene.from_activated(means, quats, scales, opac, rgb)


class _MapTeacher:
    """A teacher returning fixed random maps per view (D channels, NaN outside a disc)."""

    name, space, dim = "maps", "maps", 6

    def __init__(self, cameras, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.maps = {}
        for i, c in enumerate(cameras):
            m = torch.randn(c.height, c.width, self.dim, generator=g)
            yy, xx = torch.meshgrid(torch.arange(c.height), torch.arange(c.width), indexing="ij")
            m[(yy - c.height / 2) ** 2 + (xx - c.width / 2) ** 2 > (0.45 * c.width) ** 2] = float(
                "nan"
            )
            self.maps[f"v{i}"] = m

    def config(self):
        return {}

    def __call__(self, image, view_name):
        return self.maps[view_name]


class _Views:
    def __init__(self, cameras):
        self.cameras = list(cameras)
        self.names = [f"v{i}" for i in range(len(cameras))]

    def __len__(self):
        return len(self.cameras)

    def __getitem__(self, i):
        c = self.cameras[i]
        return c, torch.zeros(c.height, c.width, 3)


def test_lift_matches_brute_force_reference():
    """lift == per-view autograd blending weights over the full-D unit maps, then projected by
    the field's head (projection and averaging commute)."""
    scene = _blobs()
    cams = [_camera(eye=(0, 0, -4.0)), _camera(eye=(3.0, 0.5, -2.5)), _camera(eye=(-3, -1, -2))]
    teacher = _MapTeacher(cams)
    field = lift(scene, _Views(cams), [teacher], LiftConfig(dim=6, min_side=1, fill_unseen=False))
    head = field.head("maps")  # [6,6], orthonormal
    sums = torch.zeros(len(scene), teacher.dim)
    total = torch.zeros(len(scene))
    for i, cam in enumerate(cams):
        m = teacher.maps[f"v{i}"]
        valid = torch.isfinite(m).all(-1, keepdim=True)
        unit = F.normalize(torch.nan_to_num(m), dim=-1) * valid
        w = blending_weights(scene, cam, torch.cat([unit, valid.float()], -1))
        sums += w[:, :-1]
        total += w[:, -1]
    seen = total > 1e-3
    ref = F.normalize((sums[seen] / total[seen, None]) @ head, dim=-1)
    assert seen.sum() > 50
    torch.testing.assert_close(field.features[seen], ref, atol=2e-4, rtol=1e-3)
    assert torch.allclose(head.T @ head, torch.eye(6), atol=1e-5)


def test_lifting_own_renders_recovers_colours():
    """Well separated splats seen head-on: each one's lifted (un-premultiplied) colour is its
    own."""
    xs = torch.linspace(-0.8, 0.8, 5)
    means = torch.stack(torch.meshgrid(xs, xs, indexing="ij"), -1).reshape(-1, 2)
    means = torch.cat([means, torch.zeros(len(means), 1)], 1)
    rgb = torch.rand(len(means), 3, generator=torch.Generator().manual_seed(1))
    scene = GaussianScene.from_activated(
        means, torch.tensor([[1.0, 0, 0, 0]]).repeat(len(means), 1),
        torch.full((len(means), 3), 0.05), torch.full((len(means),), 0.99), rgb,
    )  # fmt: skip
    cams = [_camera(96, 96, eye=(0, 0, -4.0)), _camera(96, 96, eye=(0.5, 0.3, -4.0))]
    from fields import render

    maps = []
    for c in cams:  # the colour of the surface (un-premultiplied), none where nothing is drawn
        out = render(scene, c, background=(0.0, 0.0, 0.0))
        alpha = out.alpha.clamp_min(1e-6)
        maps.append(torch.where(out.alpha > 0.05, out.rgb / alpha, float("nan")))
    values, weight = lift_values(scene, cams, maps)
    assert bool((weight > 1).all())
    torch.testing.assert_close(values, scene.colors, atol=0.03, rtol=0)


@pytest.fixture(scope="module")
def world_data(tmp_path_factory):
    world = make_world(3, config=WorldConfig.preview())
    data = write_world(world, tmp_path_factory.mktemp("w") / "w", n_views=12, width=160, height=120)
    return world, data


def test_dataset_oracle_lift_reaches_high_miou(world_data):
    from fields import load_dataset

    world, data = world_data
    ds = load_dataset(data)
    field = lift(world.scene, ds, [OracleTeacher(ds)])
    enc = build_text_encoder("oracle", field.teachers)
    report = evaluate_queries(
        field, world.scene, ds, enc, space="oracle", label_names=world.label_names
    )
    assert report["miou_3d"] >= 0.9, report
    field.check_scene(world.scene)


@pytest.mark.parametrize("seed", [1, 4, 7])
def test_dataset_free_lift_and_queries(seed):
    """No dataset: the scene's own views, oracle labels rendered from the per-Gaussian labels."""
    world = make_world(seed, config=WorldConfig.preview())
    scene = world.scene
    teacher = SceneOracleTeacher(scene)
    field = lift(scene, scene_views(scene, [teacher], side=192), [teacher])
    assert field.levels == ("whole", "part") or "part" not in str(scene.meta.get("part_names"))
    assert field.meta["lift"]["observed_fraction"] > 0.8
    tq = TextQuery(field)
    labels = scene.extras["label"].long()
    ious = []
    for k, name in world.label_names.items():
        res = tq.query(name)
        assert res.confident, (name, res.message)
        gt = labels == k
        ious.append(int((res.mask & gt).sum()) / int((res.mask | gt).sum()))
    assert sum(ious) / len(ious) >= 0.85, ious


def test_part_query_selects_the_handle():
    world = make_world(0, config=WorldConfig.preview())
    scene = world.scene
    assert "mug" in world.label_names.values()
    teacher = SceneOracleTeacher(scene)
    field = lift(scene, scene_views(scene, [teacher], side=192), [teacher])
    tq = TextQuery(field)
    mug = tq.query("mug")
    assert mug.level == "whole" and mug.confident
    handle = tq.query("handle", within=mug.mask)
    assert handle.level == "part" and handle.confident
    gt = scene.extras["part"] == 0
    assert int((handle.mask & gt).sum()) / int(gt.sum()) > 0.9  # recall
    assert int((handle.mask & gt).sum()) / int(handle.mask.sum()) > 0.5  # precision
    assert int(handle.mask.sum()) < 0.5 * int(mug.mask.sum())
    # choosing the level by hand: "handle" on the whole level is not something it knows
    assert tq.query("handle", level="whole").level == "whole"


def test_no_confident_match_selects_nothing(world_data):
    world, _ = world_data
    scene = world.scene
    teacher = SceneOracleTeacher(scene, parts=False)
    field = lift(scene, scene_views(scene, [teacher], side=160), [teacher])
    tq = TextQuery(field)
    res = tq.query("coffee mug")
    assert not res.confident and res.count == 0
    assert "knows only" in res.message and res.suggestions[0] == "mug"
    res = tq.query("handle")  # one-level field: the part is outside its vocabulary
    assert not res.confident and res.count == 0
    assert tq.query("mug").confident
    # a user's threshold is an explicit answer
    assert tq.query("coffee mug", threshold=0.5).confident


def test_agreement_is_high_for_objects(world_data):
    from fields import load_dataset

    world, data = world_data
    ds = load_dataset(data)
    field = lift(world.scene, ds, [OracleTeacher(ds)])
    tq = TextQuery(field)
    res = tq.query("bowl")
    score = tq.agreement(world.scene, res, ds.cameras[:4])
    assert score is not None and score > 0.7
    empty = tq.query("coffee mug")
    assert tq.agreement(world.scene, empty, ds.cameras[:4]) is None


def test_field_belongs_to_its_scene(world_data, tmp_path):
    world, _ = world_data
    scene = world.scene
    teacher = SceneOracleTeacher(scene)
    field = lift(scene, scene_views(scene, [teacher], side=96), [teacher])
    path = field.save(tmp_path / "f.safetensors")
    back = load_field(path)
    assert back.levels == field.levels and back.scene_fingerprint == field.scene_fingerprint
    back.check_scene(scene)
    moved = scene.replace(means=scene.means + 0.001)
    with pytest.raises(FieldMismatchError, match="fingerprint"):
        back.check_scene(moved)
    with pytest.raises(FieldMismatchError, match="Gaussians"):
        back.check_scene(scene.subset(torch.arange(10)))
    recoloured = scene.replace(sh=scene.sh * 0.5)
    back.check_scene(recoloured)  # colours are not geometry


def test_scene_oracle_needs_labels():
    with pytest.raises(ValueError, match="labelled scene"):
        SceneOracleTeacher(_blobs())


@pytest.mark.parametrize("seed", [2, 6])
def test_object_list_on_a_lifted_field(seed):
    """Dataset-free lifting, then "segment everything": every object of the world comes back
    with IoU >= 0.7 and its own name, over the Gaussians a camera can see (as `evaluate_queries`
    scores: a book's face lying on the table is seen by no view and shares its place with the
    table, so no view-based method can tell which it is)."""
    from fields.features import list_objects, observed_gaussians

    world = make_world(seed, config=WorldConfig.preview())
    scene = world.scene
    teacher = SceneOracleTeacher(scene)
    views = scene_views(scene, [teacher], side=192)
    field = lift(scene, views, [teacher])
    tq = TextQuery(field)
    objects = list_objects(field, scene.means, scene.opacities, tq.encode, tq.space)
    seen = observed_gaussians(scene, world.cameras)
    labels = scene.extras["label"].long()
    for k, name in world.label_names.items():
        gt = (labels == k) & seen
        best = (0.0, "")
        for o in objects:
            mask = torch.zeros(len(scene), dtype=torch.bool)
            mask[o.indices] = True
            mask &= seen
            best = max(best, (int((mask & gt).sum()) / int((mask | gt).sum()), o.name))
        assert best[0] >= 0.7 and best[1] == name, (name, best)
