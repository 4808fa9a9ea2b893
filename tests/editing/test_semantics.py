"""Semantics that survive edits: language queries on moved, duplicated and inserted Gaussians,
against an oracle feature field distilled on a synthetic world (and closed-form fields for the
fast checks)."""

from __future__ import annotations

import pytest
import torch

import editing
from assets import OBJECTS_DIR
from editing.semantics import (
    claim_direction,
    features_from_text,
    propagate_features,
    update_field,
)
from fields import load_dataset
from fields.features import (
    DistillConfig,
    FeatureField,
    FieldQuery,
    OracleTeacher,
    OracleText,
    distill,
    negatives_for,
)
from fields.features._oracle import name_embedding
from fields.synthetic import WorldConfig, make_world, write_world

D = 64


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return int((a & b).sum()) / max(1, int((a | b).sum()))


def query(field: FeatureField, text: str, encode) -> torch.Tensor:
    space = editing.semantics.text_space(field)
    fq = FieldQuery(field.features, field.head(space))
    return fq.query(encode([text]), encode(negatives_for())).mask


def closed_form_field(scene, names: dict[int, str], dim: int = 12) -> FeatureField:
    """A well-distilled oracle field in closed form (one-hot labels, spare channels)."""
    gen = torch.Generator().manual_seed(0)
    labels = scene.extras["label"].long()
    features = torch.zeros(len(scene), dim)
    features[torch.arange(len(scene)), labels] = 1.0
    features[:, : len(names)] += 0.03 * torch.rand(len(scene), len(names), generator=gen)
    head = torch.randn(D, dim, generator=gen) / D**0.5
    for k, n in names.items():
        head[:, k] = name_embedding(n, D, 0)
    teachers = [{"name": "oracle", "space": "oracle", "dim": D, "seed": 0}]
    return FeatureField(features, {"oracle": head}, teachers=teachers)


@pytest.fixture(scope="module")
def world():
    return make_world(0, config=WorldConfig.preview())


@pytest.fixture(scope="module")
def small():
    """The world with a closed-form field attached, and the oracle text side."""
    w = make_world(0, config=WorldConfig.preview())
    field = closed_form_field(w.scene, w.label_names)
    return w, field, field.attach(w.scene), OracleText(D, 0).encode_text


# ---------------------------------------------------------------------- ops carry features
def test_queries_follow_moved_and_duplicated_objects(small):
    w, field, scene, encode = small
    mug = scene.extras["label"] == w.object_named("mug").label
    T = editing.pivot_transform(torch.zeros(3), translation=torch.tensor([0.3, 0.1, 0.0]))
    moved = editing.transform(scene, mug, T)
    assert iou(query(FeatureField(moved.extras["feature"], field.heads), "mug", encode), mug) > 0.95
    dup = editing.duplicate(scene, mug, T)
    both = torch.cat([mug, torch.ones(int(mug.sum()), dtype=torch.bool)])
    found = query(FeatureField(dup.extras["feature"], field.heads), "mug", encode)
    assert iou(found, both) > 0.95


# ---------------------------------------------------------------------- building blocks
def test_features_from_text_decodes_to_the_text():
    gen = torch.Generator().manual_seed(1)
    W = torch.randn(D, 8, generator=gen)
    f_true = torch.randn(8, generator=gen)
    t = W @ f_true  # in the head's span
    f = features_from_text({"oracle": W}, t, norm=2.0)
    assert f.shape == (8,) and float(f.norm()) == pytest.approx(2.0, rel=1e-5)
    assert torch.nn.functional.cosine_similarity(W @ f, t, dim=0) > 0.9999
    with pytest.raises(ValueError, match="channels"):
        features_from_text({"oracle": W}, torch.ones(D + 1))


def test_claim_direction_keeps_old_decodings(small):
    _, field, _, encode = small
    t = encode(["teapot"])[0]
    new_field, f = claim_direction(field, t)
    W0, W1 = field.head("oracle"), new_field.head("oracle")
    cos = torch.nn.functional.cosine_similarity(W1 @ f, t, dim=0)
    assert cos > 0.999  # the claimed direction decodes to "teapot"
    before, after = field.features @ W0.T, field.features @ W1.T
    change = (after - before).norm(dim=1) / before.norm(dim=1)
    assert float(change.max()) < 0.05  # old Gaussians decode (almost) as before


def test_propagate_features_copies_neighbours(small):
    w, _, scene, _ = small
    mug = w.object_named("mug")
    # A blob of new Gaussians inside the mug's bounding region, with garbage features.
    blob = editing.duplicate(scene, scene.extras["label"] == mug.label)
    n = len(scene)
    garbage = blob.extras["feature"].clone()
    garbage[n:] = 100.0
    blob = blob.with_extras(feature=garbage)
    new_mask = torch.zeros(len(blob), dtype=torch.bool)
    new_mask[n:] = True
    out = propagate_features(blob, new_mask, k=4)
    assert torch.equal(out[:n], garbage[:n])  # old rows exactly kept
    expected = scene.extras["feature"][scene.extras["label"] == mug.label]
    assert torch.allclose(out[n:], expected, atol=1e-4)  # each copy sits on its original
    with pytest.raises(ValueError, match="no `feature` extra"):
        propagate_features(w.scene, torch.zeros(len(w.scene), dtype=torch.bool))


def test_update_field_without_a_name_propagates(small):
    w, field, scene, encode = small
    obj = editing.load_asset(OBJECTS_DIR / "ball.ply")
    # Drop a ball right into the mug's place (as if it were the mug's contents): neighbours
    # are the mug's Gaussians, so propagated features say "mug".
    T = torch.eye(4, dtype=torch.float64)
    T[:3, 3] = torch.as_tensor(w.object_named("mug").position)
    new, mask = editing.insert_object(scene, obj, T, name="thing")
    out = update_field(field, new, mask)
    assert torch.equal(out.features[~mask], scene.extras["feature"])
    found = query(out, "mug", encode)
    assert float(found[mask].float().mean()) > 0.9
    with pytest.raises(ValueError, match="must carry the field's features"):
        update_field(field, w.scene, torch.zeros(len(w.scene), dtype=torch.bool))


def test_inserted_object_answers_to_its_name_closed_form(small):
    w, field, scene, encode = small
    obj = editing.load_asset(OBJECTS_DIR / "can.ply")
    p = editing.place_object(scene, obj, scene.extras["label"] == 0)
    out = update_field(field, p.scene, p.mask, name="can", encode=encode)
    assert iou(query(out, "can", encode), p.mask) >= 0.9
    n = len(scene)
    for name in w.label_names.values():
        before = query(field, name, encode)
        after = query(out, name, encode)
        assert iou(after[:n], before) > 0.97 and not after[n:].any(), name
    # A second object with a name the field already knows reuses it (no new direction).
    again = editing.place_object(
        p.scene.with_extras(feature=out.features), obj, p.scene.extras["label"] == 0
    )
    out2 = update_field(out, again.scene, again.mask, name="can", encode=encode)
    assert torch.equal(out2.head("oracle"), out.head("oracle"))
    both = p.mask.new_zeros(len(again.scene))
    both[n:] = True
    assert iou(query(out2, "can", encode), both) >= 0.9


# ---------------------------------------------------------------------- distilled field
@pytest.mark.slow
def test_inserted_object_answers_to_its_name_distilled(world, tmp_path):
    """End to end on a distilled oracle field: insert a can (a class the field never saw) on
    the table; "can" selects (nearly) exactly it, and the old queries still find their
    objects."""
    data = write_world(world, tmp_path / "world", n_views=8, width=64, height=48)
    dataset = load_dataset(data)
    teacher = OracleTeacher(dataset)
    field = distill(world.scene, dataset, [teacher], DistillConfig(steps=80))
    encode = teacher.encode_text
    scene = field.attach(world.scene)
    labels = world.scene.extras["label"]
    before = {name: query(field, name, encode) for name in world.label_names.values()}
    assert "can" not in before and iou(before["mug"], labels == 4) > 0.7

    obj = editing.load_asset(OBJECTS_DIR / "can.ply")
    p = editing.place_object(scene, obj, labels == 0)
    out = update_field(field, p.scene, p.mask, name="can")
    assert len(out) == len(p.scene)
    assert iou(query(out, "can", encode), p.mask) >= 0.9
    n = len(world.scene)
    for name, mask in before.items():
        after = query(out, name, encode)
        # 0.94-1.0 measured: the book, whose base lies on the bare (carved) table top, moves
        # most when the least-used feature direction is claimed.
        assert iou(after[:n], mask) > 0.92 and int(after[n:].sum()) <= 0.02 * len(obj), name
