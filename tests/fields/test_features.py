"""Feature fields: teacher cache, oracle, distillation, language-query math, evaluation, I/O."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fields import load_dataset, load_scene
from fields.features import (
    DistillConfig,
    FeatureField,
    FieldQuery,
    OracleTeacher,
    TeacherCache,
    auto_threshold,
    build_teacher,
    build_text_encoder,
    decoded_norms,
    distill,
    evaluate_queries,
    load_field,
    negatives_for,
    otsu_threshold,
    query,
    relevancy,
)
from fields.features._query import cosines
from fields.synthetic import WorldConfig, make_world, write_world


def _world(tmp_path_factory, seed: int):
    out = tmp_path_factory.mktemp(f"world{seed}")
    world = make_world(seed, config=WorldConfig.preview())
    write_world(world, out, n_views=12, width=80, height=60, overwrite=True)
    return load_scene(out / "scene.ply"), load_dataset(out)


@pytest.fixture(scope="module")
def world101(tmp_path_factory):
    return _world(tmp_path_factory, 101)


# ------------------------------------------------------------------------ query math
def _reference_relevancy(features, head, positives, negatives):
    """Decode every Gaussian, then LERF's softmax pairs, min over negatives, max over positives."""
    decoded = F.normalize(features @ head.T, dim=-1)  # [N,D]
    pos = decoded @ F.normalize(positives, dim=-1).T  # [N,P]
    neg = decoded @ F.normalize(negatives, dim=-1).T  # [N,M]
    per_pos = []
    for p in range(pos.shape[1]):
        pairs = torch.stack([pos[:, p : p + 1].expand_as(neg), neg], dim=-1)  # [N,M,2]
        per_pos.append(torch.softmax(10 * pairs, dim=-1)[..., 0].amin(dim=1))
    return torch.stack(per_pos, dim=1).amax(dim=1)


def test_folded_head_equals_decode_then_cosine():
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(500, 16, generator=gen, dtype=torch.float64)
    head = torch.randn(64, 16, generator=gen, dtype=torch.float64)
    texts = torch.randn(5, 64, generator=gen, dtype=torch.float64)
    norms = decoded_norms(features, head)
    torch.testing.assert_close(norms, (features @ head.T).norm(dim=1))
    expected = F.normalize(features @ head.T, dim=-1) @ F.normalize(texts, dim=-1).T
    torch.testing.assert_close(cosines(features, norms, head, texts), expected)


def test_relevancy_matches_reference():
    gen = torch.Generator().manual_seed(1)
    features = torch.randn(400, 8, generator=gen, dtype=torch.float64)
    head = torch.randn(32, 8, generator=gen, dtype=torch.float64)
    positives = torch.randn(2, 32, generator=gen, dtype=torch.float64)
    negatives = torch.randn(5, 32, generator=gen, dtype=torch.float64)
    norms = decoded_norms(features, head)
    fast = relevancy(features, norms, head, positives, negatives)
    torch.testing.assert_close(fast, _reference_relevancy(features, head, positives, negatives))
    fq = FieldQuery(features.float(), head.float())
    torch.testing.assert_close(
        fq.relevancy(positives.float(), negatives.float()), fast.float(), atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize(("n", "n_pos", "n_neg"), [(1, 1, 0), (1500, 3, 4), (4099, 1, 1)])
def test_compiled_relevancy_matches_torch(n, n_pos, n_neg):
    """The one-pass compiled relevancy (FieldQuery on CPU) against the torch fold and the float64
    decode-everything reference, across block boundaries and without negatives."""
    from fields.features._query import _relevancy_unit, relevancy_cpu

    gen = torch.Generator().manual_seed(n)
    features = torch.randn(n, 12, generator=gen, dtype=torch.float64)
    head = torch.randn(48, 12, generator=gen, dtype=torch.float64)
    pos = torch.randn(n_pos, 48, generator=gen, dtype=torch.float64)
    neg = torch.randn(n_neg, 48, generator=gen, dtype=torch.float64)
    reference = _reference_relevancy(features, head, pos, neg) if n_neg else None
    fq = FieldQuery(features.float(), head.float())
    compiled = relevancy_cpu(fq._unit_t, fq.head, pos.float(), neg.float())
    torched = _relevancy_unit(fq._unit_t, fq.head, pos.float(), neg.float())
    torch.testing.assert_close(compiled, torched, atol=2e-6, rtol=1e-5)
    if reference is not None:
        torch.testing.assert_close(compiled.double(), reference, atol=1e-5, rtol=1e-5)


def test_otsu_splits_a_bimodal_histogram():
    gen = torch.Generator().manual_seed(2)
    low = 0.2 + 0.03 * torch.randn(3000, generator=gen)
    high = 0.8 + 0.03 * torch.randn(500, generator=gen)
    t = otsu_threshold(torch.cat([low, high]))
    assert 0.3 < t < 0.7
    # The automatic threshold looks only above 0.5: candidates 0.6 vs 0.95.
    rel = torch.cat([torch.full((5000,), 0.45), 0.6 + 0.02 * torch.randn(800, generator=gen)])
    rel = torch.cat([rel, 0.95 + 0.01 * torch.randn(300, generator=gen)])
    assert 0.65 < auto_threshold(rel) < 0.92


def test_part_query_is_restricted_to_the_mask():
    gen = torch.Generator().manual_seed(3)
    head = torch.linalg.qr(torch.randn(32, 8, generator=gen))[0]  # orthonormal columns
    texts = head.T.clone()  # 8 unit "classes" in the head's span
    cls = torch.randint(0, 3, (300,), generator=gen)
    features = F.one_hot(cls, 8).float() + 0.01 * torch.randn(300, 8, generator=gen)
    within = torch.arange(300) < 120
    norms = decoded_norms(features, head)
    res = query(features, norms, head, texts[[1]], texts[[5, 6]], within=within)
    assert not res.mask[~within].any()
    assert torch.equal(res.mask, within & (cls == 1))
    assert res.threshold == auto_threshold(res.relevancy[within])
    full = query(features, norms, head, texts[[1]], texts[[5, 6]])
    assert torch.equal(full.mask, cls == 1)
    fixed = query(features, norms, head, texts[[1]], texts[[5, 6]], threshold=0.99999)
    assert fixed.threshold == 0.99999 and not fixed.mask.any()


# ------------------------------------------------------------------------ oracle
def test_oracle_maps_and_text_side(world101):
    _, ds = world101
    oracle = build_teacher("oracle", ds)
    _, image = ds[0]
    fmap = oracle(image, ds.names[0])
    labels = ds.load_map("labels", 0)
    assert fmap.shape == (*labels.shape, 512)
    background = labels == 255
    assert torch.isnan(fmap[background]).all() and torch.isfinite(fmap[~background]).all()
    k = int(labels[~background][0])
    name = oracle.label_names[k]
    where = labels == k
    torch.testing.assert_close(fmap[where][0], oracle.encode_text([name])[0])
    # The text side rebuilt from a field's teacher record gives the same embeddings.
    record = {"name": oracle.name, "space": oracle.space, "dim": oracle.dim, **oracle.config()}
    encode = build_text_encoder("oracle", [record])
    torch.testing.assert_close(encode([name, "stuff"]), oracle.encode_text([name, "stuff"]))


# ------------------------------------------------------------------------ distillation
@pytest.mark.parametrize("seed", [101, 202])
def test_oracle_distillation_reaches_target_iou(tmp_path_factory, world101, seed):
    scene, ds = world101 if seed == 101 else _world(tmp_path_factory, seed)
    train = ds.split("train")
    oracle = OracleTeacher(train)
    seen = []
    field = distill(
        scene,
        train,
        [oracle],
        DistillConfig(steps=160),
        progress=lambda step, total, loss: seen.append((step, total, loss)),
    )
    assert seen[-1][:2] == (160, 160) and seen[-1][2] < 0.05
    assert field.features.shape == (len(scene), 16) and field.head("oracle").shape == (512, 16)
    report = evaluate_queries(
        field, scene, ds, oracle.encode_text, space="oracle", label_names=oracle.label_names
    )
    assert report["miou_3d"] >= 0.90, report
    assert report["miou_2d"] >= 0.90, report


def test_distill_cancel(world101):
    scene, ds = world101
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(InterruptedError):
        distill(scene, ds, [OracleTeacher(ds)], DistillConfig(steps=50), cancel=cancel)


class _CountingTeacher:
    """A cacheable teacher (the oracle at a small dimension) that counts its calls."""

    name = "counting"
    space = "oracle"
    dim = 8

    def __init__(self, ds):
        self.oracle = OracleTeacher(ds, dim=8)
        self.calls = 0

    def config(self):
        return self.oracle.config()

    def __call__(self, image, view_name):
        self.calls += 1
        return self.oracle(image, view_name)


def test_teacher_cache_reuse(world101, tmp_path):
    scene, ds = world101
    ds = ds.subset([0, 1, 2])
    config = DistillConfig(steps=6, cache_dir=str(tmp_path / "cache"))
    first = _CountingTeacher(ds)
    distill(scene, ds, [first], config)
    assert first.calls == 3
    folder = TeacherCache(tmp_path / "cache").folder(first)
    assert (folder / "config.json").is_file() and len(list(folder.glob("*.npy"))) == 3
    second = _CountingTeacher(ds)
    distill(scene, ds, [second], config)
    assert second.calls == 0
    # Another config is another key.
    other = _CountingTeacher(ds)
    other.oracle.seed = 7
    assert TeacherCache(tmp_path / "cache").folder(other) != folder


# ------------------------------------------------------------------------ I/O
def test_safetensors_round_trip_and_overwrite_refusal(world101, tmp_path):
    scene, _ = world101
    field = FeatureField(
        features=torch.randn(len(scene), 16),
        heads={"oracle": torch.randn(512, 16), "sam": torch.randn(256, 16)},
        config={"dim": 16},
        teachers=[{"name": "oracle", "space": "oracle", "dim": 512, "seed": 0}],
        scene_hash="abc",
        meta={"label_names": {"0": "table"}},
    )
    path = field.save(tmp_path / "f.safetensors")
    back = load_field(path)
    torch.testing.assert_close(back.features, field.features)
    assert set(back.heads) == {"oracle", "sam"}
    torch.testing.assert_close(back.heads["sam"], field.heads["sam"])
    assert back.teachers == field.teachers and back.scene_hash == "abc"
    assert back.meta == field.meta and back.config == field.config
    with pytest.raises(FileExistsError):
        field.save(path)
    field.save(path, overwrite=True)
    attached = back.attach(scene)
    torch.testing.assert_close(attached.extras["feature"], field.features)
    with pytest.raises(ValueError):
        back.attach(scene.subset(torch.arange(10)))


def test_negatives_are_canonical_plus_user():
    assert negatives_for([" mug", "stuff", ""]) == ["object", "things", "stuff", "texture", "mug"]
