"""`editing.grasp.object_at`: the object a clicked Gaussian belongs to, by geometry alone,
checked against the synthetic worlds' ground-truth labels."""

from __future__ import annotations

import pytest
import torch

from editing.grasp import object_at
from editing.grasp._target import support_height
from fields.synthetic import WorldConfig, make_world

# The table as densely sampled as the objects (as in a capture): plain connectivity from a click
# would run into it.
DENSE_TABLE = {"table_spacing": 0.006}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_click_selects_its_object_and_not_the_table(seed):
    world = make_world(seed, config=WorldConfig.preview(**DENSE_TABLE))
    scene = world.scene
    labels, z = scene.extras["label"], scene.means[:, 2]
    for obj in world.objects:
        truth = labels == obj.label
        above = truth & (z > world.table_top_z + 0.005)  # what rests on the table is cut away
        idx = torch.nonzero(truth).squeeze(1)
        h = z[idx]
        for frac in (0.5, 0.95):  # a click on its middle, and one near its top
            i = int(idx[torch.argmin((h - (h.min() + frac * (h.max() - h.min()))).abs())])
            mask = object_at(scene, i)
            assert mask[i]
            precision = int((mask & truth).sum()) / int(mask.sum())
            recall = int((mask & above).sum()) / int(above.sum())
            assert precision > 0.98, (obj.name, frac, precision)  # no table, no neighbour
            assert recall > 0.95, (obj.name, frac, recall)


def test_the_support_is_the_table_top_not_an_objects_own_level_parts():
    world = make_world(0, config=WorldConfig.preview())
    scene = world.scene
    cup = world.object_named("cup")
    idx = torch.nonzero(scene.extras["label"] == cup.label).squeeze(1)
    i = int(idx[torch.argmax(scene.means[idx, 2])])  # the rim: the cup's floor lies below it
    p = scene.means[i].double().numpy()
    near = torch.nonzero((scene.means - scene.means[i]).norm(dim=1) < 0.25).squeeze(1)
    from fields.scene import quat_to_rotmat

    R = quat_to_rotmat(scene.quats[near].double())
    axis = scene.scales[near].argmin(dim=1)
    normals = R[torch.arange(len(near)), :, axis].numpy()
    h = support_height(scene.means[near].double().numpy(), normals, [0.0, 0.0, 1.0], p[2])
    assert h is not None and abs(h - world.table_top_z) < 0.003


def test_bad_index():
    world = make_world(0, config=WorldConfig.preview())
    with pytest.raises(ValueError, match="out of range"):
        object_at(world.scene, len(world.scene))
