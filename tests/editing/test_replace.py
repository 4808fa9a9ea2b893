"""Replace one object with another (`editing.replace`): removed with fill, the new object on the
same support at the same spot, scaled to the old footprint, without interpenetration."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from assets import OBJECTS_DIR
from editing import load_asset
from editing.replace import object_footprint, replace_object, replace_with_text
from fields.synthetic import make_world


@pytest.fixture(scope="module")
def world():
    return make_world(0)


@pytest.fixture(scope="module")
def can():
    return load_asset(OBJECTS_DIR / "can.ply")


def _mask(world, name):
    return world.scene.extras["label"] == world.object_named(name).label


@pytest.mark.parametrize("old", ["mug", "box"])
def test_replace_puts_the_new_object_on_the_same_spot_without_interpenetration(world, can, old):
    scene = world.scene
    mask = _mask(world, old)
    before = object_footprint(scene, mask)
    rep = replace_object(scene, mask, can, name="can")
    out = rep.scene
    n_rest = int((~mask).sum())
    # The rest is bit-identical and in order; then the fill, then the can.
    assert torch.equal(out.means[:n_rest], scene.means[~mask])
    assert torch.equal(out.sh[:n_rest], scene.sh[~mask])
    assert bool(rep.fill[n_rest : len(rep.removal.scene)].all()) and bool(rep.fill.any())
    assert bool(rep.mask[len(rep.removal.scene) :].all()) and not bool(rep.mask[:n_rest].any())
    # Semantics: the old label is gone, the new object has its own, named "can".
    labels = out.extras["label"]
    assert not bool((labels == world.object_named(old).label).any())
    new_label = int(labels[rep.mask][0])
    assert bool((labels[rep.mask] == new_label).all())
    assert out.meta["label_names"][str(new_label)] == "can"
    # Same spot (within the old footprint), same footprint area.
    after = object_footprint(out, rep.mask)
    assert np.linalg.norm((after.base - before.base)[:2]) < 0.5 * before.radius
    assert after.area == pytest.approx(before.area, rel=0.15)
    # On the table: the lowest opaque splats touch the top, none sinks into it.
    z = out.means[rep.mask, 2].double()
    opaque = torch.sigmoid(out.opacities[rep.mask]) > 0.2
    top = world.table_top_z
    assert float(z[opaque].min()) == pytest.approx(top, abs=0.004)
    assert float(z[opaque].min()) > top - 1e-4
    # No interpenetration: no splat of the can inside another object's solid, and no other
    # object's splat inside the can's footprint cylinder.
    for o in world.objects:
        if o.name == old:
            continue
        sd = o.signed_distance(out.means[rep.mask].double().numpy())
        assert float(sd.min()) > 0.0, o.name
    others = (labels != 0) & ~rep.mask
    d = np.linalg.norm(out.means[others, :2].double().numpy() - after.base[:2], axis=1)
    assert float(d.min()) > after.radius


def test_replace_refuses_bad_input_and_changes_nothing(world, can):
    scene = world.scene
    means = scene.means.clone()
    with pytest.raises(ValueError, match="empty"):
        replace_object(scene, torch.zeros(len(scene), dtype=torch.bool), can, name="can")
    with pytest.raises(ValueError, match="whole scene"):
        replace_object(scene, torch.ones(len(scene), dtype=torch.bool), can, name="can")
    nameless = can.replace(meta={})
    with pytest.raises(ValueError, match="name"):
        replace_object(scene, _mask(world, "mug"), nameless)
    with pytest.raises(ValueError, match="scale"):
        replace_object(scene, _mask(world, "mug"), can, name="can", scale=-1.0)
    assert torch.equal(scene.means, means)


def test_replace_with_text_grows_the_prompt_on_the_old_footprint(world):
    from editing import TextTo3DConfig
    from editing.score_distillation import toy_distiller

    scene = world.scene
    mask = _mask(world, "mug")
    before = object_footprint(scene, mask)
    distiller = toy_distiller(torch.tensor([0.2, 0.4, 0.9])[:, None, None].expand(3, 32, 32))
    config = TextTo3DConfig(n_gaussians=200, steps=4, size=32)
    rep = replace_with_text(scene, mask, "a blue vase", distiller, config, name="vase")
    assert rep.name == "vase" and bool(rep.mask.any())
    pts = rep.scene.means[rep.mask].double().numpy()
    # Grown inside a box on the old footprint.
    d = np.linalg.norm(pts[:, :2] - before.base[:2], axis=1)
    assert float(d.max()) <= before.radius * 1.5 + 1e-6
    assert float(pts[:, 2].min()) >= world.table_top_z - 0.005
    labels = rep.scene.extras["label"]
    assert not bool((labels == world.object_named("mug").label).any())
