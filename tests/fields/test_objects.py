"""The object list ("segment everything") on synthetic tabletop worlds with an oracle-like field
built from the ground truth: segmentation, naming, the spatial split, edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fields import GaussianScene
from fields.features import CANONICAL_NEGATIVES, FeatureField, relevancy
from fields.features._objects import (
    DEFAULT_VOCABULARY,
    ObjectsConfig,
    list_objects,
    name_objects,
    object_vocabulary,
    segment_objects,
    voxel_components,
)
from fields.features._oracle import OracleText, name_embedding
from fields.features._query import decoded_norms, negatives_for
from fields.features._segment import connected_to
from fields.synthetic import WorldConfig, make_world

SEEDS = (41, 52, 63)  # none of them used while developing the segmentation
encode = OracleText(512).encode_text


def oracle_head(names: list[str], seed: int = 0, *, span_labels: bool = True) -> torch.Tensor:
    """A random orthonormal head W [512, 16]. With `span_labels`, its span holds the label
    embeddings (as a distilled head's must, to decode every class; its basis is still random);
    otherwise a random 16-d subspace of the 512-d space."""
    g = torch.Generator().manual_seed(seed)
    cols = torch.randn(512, 16, generator=g)
    if span_labels:
        cols[:, : len(names)] = torch.stack([name_embedding(n, 512) for n in names]).T
    q, _ = torch.linalg.qr(cols)
    rot, _ = torch.linalg.qr(torch.randn(16, 16, generator=g))
    return q @ rot


def oracle_features(
    labels: torch.Tensor, names: dict[int, str], head: torch.Tensor, noise: float = 0.01, seed=0
) -> torch.Tensor:
    """Per-Gaussian feature = its label's oracle embedding @ W, plus Gaussian noise [N, 16]."""
    g = torch.Generator().manual_seed(seed + 1)
    table = torch.stack([name_embedding(names[k], 512) for k in sorted(names)]) @ head
    row = {k: i for i, k in enumerate(sorted(names))}
    idx = torch.tensor([row[int(v)] for v in labels.tolist()])
    return table[idx] + noise * torch.randn(len(labels), head.shape[1], generator=g)


def iou(indices: torch.Tensor, truth: torch.Tensor) -> float:
    mask = torch.zeros_like(truth)
    mask[indices] = True
    return int((mask & truth).sum()) / int((mask | truth).sum())


def best_match(objects, truth: torch.Tensor) -> tuple[int, float]:
    scores = [iou(o, truth) for o in objects]
    i = int(np.argmax(scores))
    return i, scores[i]


@pytest.fixture(scope="module", params=SEEDS)
def world(request):
    return make_world(request.param, config=WorldConfig.preview())


# ------------------------------------------------------------------------------ whole worlds
def test_every_object_is_recovered_and_named(world):
    scene, names = world.scene, world.label_names
    labels = scene.extras["label"].long()
    head = oracle_head([names[k] for k in sorted(names)], seed=world.seed)
    feats = oracle_features(labels, names, head, seed=world.seed)
    objects = segment_objects(feats, scene.means, opacities=scene.opacities)
    assert len(objects) == len(names)  # one per label, table included; no extra pieces
    assert all(torch.equal(o, o.sort().values) and o.dtype == torch.int64 for o in objects)
    assert [len(o) for o in objects] == sorted((len(o) for o in objects), reverse=True)
    assert len(torch.cat(objects).unique()) == sum(len(o) for o in objects)  # disjoint

    unit = F.normalize(feats, dim=1)
    means = torch.stack([F.normalize(unit[o].mean(0), dim=0) for o in objects])
    vocab = [*DEFAULT_VOCABULARY, *names.values()]
    named = name_objects(means, head, encode, vocab, negatives_for())
    for label, name in names.items():
        i, score = best_match(objects, labels == label)
        assert score >= 0.7, (name, score)
        assert named[i][0] == name, (name, named[i])
        assert 0.5 < named[i][1] < 1.0


def test_segmentation_survives_a_random_subspace_head(world):
    """Features projected to a random 16-d subspace: the classes' features are no longer near
    orthogonal (cosines up to ~0.5), the segmentation must still separate them."""
    scene, names = world.scene, world.label_names
    labels = scene.extras["label"].long()
    head = oracle_head([], seed=world.seed + 7, span_labels=False)
    feats = oracle_features(labels, names, head, noise=0.015, seed=world.seed)
    objects = segment_objects(feats, scene.means, opacities=scene.opacities)
    assert len(objects) == len(names)
    for label, name in names.items():
        assert best_match(objects, labels == label)[1] >= 0.7, name


def test_list_objects_names_from_the_fields_labels(world):
    scene, names = world.scene, world.label_names
    labels = scene.extras["label"].long()
    order = [names[k] for k in sorted(names)]
    head = oracle_head(order, seed=world.seed)
    record = {"name": "oracle", "space": "oracle", "dim": 512, "seed": 0, "text_encoder": False}
    field = FeatureField(
        oracle_features(labels, names, head, seed=world.seed),
        {"oracle": head},
        teachers=[{**record, "label_names": {str(k): v for k, v in names.items()}}],
    )
    # Only the teacher record knows the names; the default vocabulary is swapped for one word.
    result = list_objects(
        field, scene.means, scene.opacities, encode, "oracle", vocabulary=["gizmo"]
    )
    assert "gizmo" in result.vocabulary and set(order) <= set(result.vocabulary)
    assert sorted(o.name for o in result) == sorted(order)
    labels_out = result.labels()
    for obj in result:
        assert torch.equal(labels_out[obj.indices], torch.full((obj.count,), obj.id))
        lo, hi = torch.tensor(obj.bbox)
        pts = scene.means[obj.indices]
        assert torch.allclose(pts.min(0).values, lo) and torch.allclose(pts.max(0).values, hi)
    # A field with levels: objects come from the first (whole objects), whatever the others.
    noise = torch.randn(len(scene), 16, generator=torch.Generator().manual_seed(9))
    levelled = FeatureField(
        torch.cat([field.features, noise], dim=1),
        field.heads,
        teachers=field.teachers,
        levels=("whole", "part"),
    )
    again = list_objects(levelled, scene.means, scene.opacities, encode, "oracle")
    assert [(o.name, o.count) for o in again] == [(o.name, o.count) for o in result]
    js = result.to_json()
    assert js["num_gaussians"] == len(scene) and js["vocabulary_size"] == len(result.vocabulary)
    assert set(js["objects"][0]) == {"id", "name", "score", "count", "bbox", "indices"}


# ------------------------------------------------------------------------------ special scenes
@pytest.fixture(scope="module")
def small_world():
    return make_world(SEEDS[0], config=WorldConfig.preview())


def test_identical_objects_far_apart_are_two_objects(small_world):
    scene, names = small_world.scene, small_world.label_names
    labels = scene.extras["label"].long()
    k = max((k for k in names if k), key=lambda k: int((labels == k).sum()))
    copy = scene.subset((labels == k).nonzero()[:, 0])
    shift = torch.tensor([float(scene.means[:, 0].max() - copy.means[:, 0].min()) + 0.5, 0, 0])
    copy = copy.replace(means=copy.means + shift)  # off the table, the same class
    both = GaussianScene.concat([scene, copy])
    both_labels = torch.cat([labels, torch.full((len(copy),), -1)])
    head = oracle_head([names[i] for i in sorted(names)], seed=1)
    feats = oracle_features(torch.where(both_labels < 0, k, both_labels), names, head)
    objects = segment_objects(feats, both.means, opacities=both.opacities)
    assert len(objects) == len(names) + 1
    for truth in (both_labels == k, both_labels == -1):
        assert best_match(objects, truth)[1] >= 0.95
    unit = F.normalize(feats, dim=1)
    feats_obj = torch.stack([F.normalize(unit[o].mean(0), dim=0) for o in objects])
    named = name_objects(feats_obj, head, encode, [*names.values()], negatives_for())
    assert [n for n, _ in named].count(names[k]) == 2


def test_a_scene_with_one_object(small_world):
    scene, names = small_world.scene, small_world.label_names
    labels = scene.extras["label"].long()
    solo = scene.subset((labels == 1).nonzero()[:, 0])
    head = oracle_head([names[k] for k in sorted(names)], seed=2)
    feats = oracle_features(torch.ones(len(solo), dtype=torch.long), names, head)
    objects = segment_objects(feats, solo.means, opacities=solo.opacities)
    assert len(objects) == 1 and torch.equal(objects[0], torch.arange(len(solo)))
    (name, _), = name_objects(F.normalize(feats.mean(0, keepdim=True)), head, encode, DEFAULT_VOCABULARY, negatives_for())  # fmt: skip
    assert name == names[1] or names[1] not in DEFAULT_VOCABULARY


def test_transparent_splats_neither_seed_nor_stray(small_world):
    """Near-transparent splats with a class of their own: no object of theirs; those on an
    object's surface join it, those far from everything stay out."""
    scene, names = small_world.scene, small_world.label_names
    labels = scene.extras["label"].long()
    g = torch.Generator().manual_seed(3)
    on_obj = scene.means[labels == 1][:300] + 0.001 * torch.randn(300, 3, generator=g)
    far = scene.means.max(0).values + 2.0 + 0.05 * torch.rand(300, 3, generator=g)
    means = torch.cat([scene.means, on_obj, far])
    opac = torch.cat([scene.opacities, torch.full((600,), -8.0)])  # sigmoid(-8) ~ 3e-4
    all_names = {**names, 99: "ghost"}
    head = oracle_head([all_names[k] for k in sorted(all_names)], seed=3)
    lab = torch.cat([labels, torch.full((600,), 99)])
    objects = segment_objects(oracle_features(lab, all_names, head), means, opacities=opac)
    assert len(objects) == len(names)
    n = len(scene)
    on_book = torch.cat([labels == 1, torch.ones(300, dtype=torch.bool), torch.zeros(300, dtype=torch.bool)])  # fmt: skip
    assert best_match(objects, on_book)[1] >= 0.95
    assert not bool((torch.cat(objects) >= n + 300).any())  # the far ones are in no object
    # Without opacities the ghosts are opaque and make objects of their own.
    opaque = segment_objects(oracle_features(lab, all_names, head), means)
    assert any(bool((o >= n + 300).all()) for o in opaque)


def test_layers_between_objects_are_not_objects():
    """A distilled field gives hidden contact surfaces (an object's base on the table) the
    features of something else: that layer, touching the object above and the table below,
    must join them, not become an object (it does when the contact test is off). The table is
    sampled under the objects here, as a trainer that hallucinated it would."""
    small_world = make_world(SEEDS[0], config=WorldConfig.preview(carve_support=False))
    scene, names = small_world.scene, small_world.label_names
    labels = scene.extras["label"].long()
    base = scene.means[:, 2] < small_world.table_top_z + 0.004

    def layer(k):
        return (labels == k) & base

    candidates = [k for k in names if k and 0.3 * int((labels == k).sum()) > int(layer(k).sum())]
    k = max(candidates, key=lambda k: int(layer(k).sum()))
    assert int(layer(k).sum()) >= 100  # above the minimum object size
    contaminated = torch.where(layer(k), 99, labels)
    all_names = {**names, 99: "ghost"}
    head = oracle_head([all_names[i] for i in sorted(all_names)], seed=6)
    feats = oracle_features(contaminated, all_names, head)
    objects = segment_objects(feats, scene.means, opacities=scene.opacities)
    assert len(objects) == len(names)
    assert best_match(objects, labels == k)[1] >= 0.85
    off = ObjectsConfig(max_contact=1.0)
    assert len(segment_objects(feats, scene.means, opacities=scene.opacities, config=off)) == len(names) + 1  # fmt: skip


def test_min_size_drops_or_merges_small_pieces(small_world):
    scene, names = small_world.scene, small_world.label_names
    labels = scene.extras["label"].long()
    head = oracle_head([names[k] for k in sorted(names)], seed=4)
    feats = oracle_features(labels, names, head)
    counts = torch.bincount(labels)
    smallest = int(counts.argmin())
    config = ObjectsConfig(min_size=int(counts.min()) + 1, min_fraction=0.0)
    objects = segment_objects(feats, scene.means, opacities=scene.opacities, config=config)
    assert len(objects) == len(names) - 1  # the smallest object is too small to be one
    assert all(len(o) >= config.min_size for o in objects)
    assert best_match(objects, labels == smallest)[1] < 0.5


def test_deterministic(small_world):
    scene, names = small_world.scene, small_world.label_names
    head = oracle_head([names[k] for k in sorted(names)], seed=5)
    feats = oracle_features(scene.extras["label"].long(), names, head)
    a = segment_objects(feats, scene.means, opacities=scene.opacities)
    b = segment_objects(feats.clone(), scene.means.clone(), opacities=scene.opacities)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_bad_inputs_are_clear_errors():
    f, m = torch.randn(10, 4), torch.randn(10, 3)
    with pytest.raises(ValueError, match="at least one Gaussian"):
        segment_objects(torch.zeros(0, 4), torch.zeros(0, 3))
    with pytest.raises(ValueError, match="means must be"):
        segment_objects(f, torch.randn(9, 3))
    with pytest.raises(ValueError, match="means must be"):
        segment_objects(f, torch.randn(10, 2))
    with pytest.raises(ValueError, match="features must be"):
        segment_objects(torch.randn(10), m)
    with pytest.raises(ValueError, match="opacities"):
        segment_objects(f, m, opacities=torch.zeros(11))
    with pytest.raises(ValueError, match="finite"):
        segment_objects(f, m.masked_fill(torch.arange(10)[:, None] == 3, float("nan")))
    with pytest.raises(ValueError):
        ObjectsConfig(min_size=0)
    head = torch.randn(512, 4)
    with pytest.raises(ValueError, match="vocabulary"):
        name_objects(f, head, encode, ["  ", "object"], ["object"])
    with pytest.raises(ValueError, match="head"):
        name_objects(f, torch.randn(512, 5), encode, ["mug"])
    with pytest.raises(ValueError, match="encode_text returned"):
        name_objects(f, torch.randn(256, 4), encode, ["mug"])
    assert name_objects(torch.zeros(0, 4), head, encode, ["mug"]) == []


# ------------------------------------------------------------------------------ pieces
def test_voxel_components_match_connected_to():
    """All components at once against the one-component reference, `connected_to`."""
    g = np.random.default_rng(0)
    centres = g.uniform(0, 1, (12, 3))
    points = np.concatenate([c + 0.02 * g.standard_normal((80, 3)) for c in centres])
    points = np.concatenate([points, g.uniform(0, 1, (40, 3))])  # isolated specks
    for gap in (0.01, 0.03, 0.1):
        comp = voxel_components(points, gap)
        assert comp.min() == 0 and set(np.unique(comp)) == set(range(comp.max() + 1))
        for c in np.unique(comp):
            start = np.zeros(len(points), dtype=bool)
            start[np.argmax(comp == c)] = True
            assert np.array_equal(connected_to(points, start, gap), comp == c)


def test_name_objects_matches_lerf_relevancy():
    """Scores and choices against `relevancy`, one term at a time (the slow reference)."""
    g = torch.Generator().manual_seed(0)
    feats, head = torch.randn(5, 8, generator=g), torch.randn(512, 8, generator=g)
    vocab = ["mug", "cup", "bowl", "plate", "book", "object", "mug "]
    negs = negatives_for(["plate"])
    named = name_objects(feats, head, encode, vocab, negs)
    terms = ["mug", "cup", "bowl", "book"]  # deduplicated, negatives skipped
    norms = decoded_norms(feats, head)
    rel = torch.stack(
        [relevancy(feats, norms, head, encode([t]), encode(negs)) for t in terms], dim=1
    )
    for (name, score), row in zip(named, rel, strict=True):
        assert name == terms[int(row.argmax())]
        assert score == pytest.approx(float(row.max()), abs=1e-5)
    # Without negatives: sigmoid(10 cos), as `relevancy` with an empty negative set.
    (name, score), *_ = name_objects(feats, head, encode, ["mug", "cup"], [])
    ref = [float(relevancy(feats[:1], norms[:1], head, encode([t]), torch.zeros(0, 512))) for t in ("mug", "cup")]  # fmt: skip
    assert score == pytest.approx(max(ref), abs=1e-5)


def test_object_vocabulary_sources():
    field = FeatureField(
        torch.zeros(2, 4),
        {},
        teachers=[{"space": "oracle", "label_names": {"0": "table", "1": "widget"}}],
        meta={"label_names": {"2": "sprocket", "3": "mug"}},
    )
    words = object_vocabulary(field, ["gizmo", " mug", ""])
    assert words[: len(DEFAULT_VOCABULARY)] == list(DEFAULT_VOCABULARY)
    assert {"gizmo", "widget", "sprocket", "table"} <= set(words)
    assert len(words) == len(set(words)) == len(DEFAULT_VOCABULARY) + 3
    assert not set(CANONICAL_NEGATIVES) & set(DEFAULT_VOCABULARY)
    assert 80 <= len(DEFAULT_VOCABULARY) <= 150
