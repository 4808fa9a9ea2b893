"""Grasp candidates on synthetic objects with analytic surfaces: every returned grasp is checked
against the exact solids (contacts on the surface, friction cone of the true normals, opening,
gripper free of the table, the neighbours and the target away from the contacts)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from editing.grasp import (
    COMPONENTS,
    GraspConfig,
    GripperConfig,
    grasps_to_json,
    gripper_boxes,
    gripper_mesh,
    plan_grasps,
    save_grasps,
    surface_normals,
)
from fields.synthetic import WorldConfig, make_world
from fields.synthetic._sdf import pose_matrix

from ._grasp_worlds import Thing, big_ball, big_box, build, check_grasp, lying, model

GRIPPER = GripperConfig()


def assert_all_pass(result, world, name: str) -> None:
    target = world.thing(name)
    others = [t for t in world.things if t.name != name]
    assert result.grasps, result.message
    for g in result.grasps:
        problems = check_grasp(g, GRIPPER, target, others)
        assert not problems, problems


@pytest.fixture(scope="module")
def table_world():
    """A can lying on its side with a box 5 cm away, a ball, a standing box and a mug with a
    can close by, all on one table."""
    can = model("can", 1)
    parts = [
        ("lying can", can, lying(can, -0.18, -0.1, yaw=0.3)),
        ("box", model("box", 2), pose_matrix(0.4, (-0.05, -0.1, 0.0))),
        ("ball", model("ball", 3), pose_matrix(0.0, (0.1, -0.12, 0.0))),
        ("mug", model("mug", 4), pose_matrix(2.0, (0.0, 0.1, 0.0))),
        ("can", model("can", 5), pose_matrix(0.0, (0.125, 0.1, 0.0))),
    ]
    return build(parts)


def test_lying_cylinder_top_grasp_closes_across_the_diameter(table_world):
    result = plan_grasps(table_world.scene, table_world.mask("lying can"))
    assert_all_pass(result, table_world, "lying can")
    top = result.grasps[0]
    axis = pose_matrix(0.3)[:3, 0]  # the can's axis (world x turned by its yaw)
    assert abs(top.closing @ axis) < math.sin(math.radians(10))
    radius = model("can", 1).params["radius"]
    assert top.width == pytest.approx(2 * radius, abs=0.004)
    assert [g.score for g in result.grasps] == sorted(
        (g.score for g in result.grasps), reverse=True
    )


@pytest.mark.parametrize("name", ["box", "ball", "can"])
def test_grasps_pass_the_analytic_checks(table_world, name):
    result = plan_grasps(table_world.scene, table_world.mask(name), config=GraspConfig(top_k=8))
    assert 0 < len(result.grasps) <= 8
    assert_all_pass(result, table_world, name)
    for g in result.grasps:
        assert set(g.scores) == {*COMPONENTS, "thickness"}
        assert all(0.0 <= v <= 1.0 for v in g.scores.values()) and 0 <= g.score <= 1


def test_mug_grasps_on_body_or_handle_never_through_it(table_world):
    """Every collision-free candidate (no top-k cut, no diversity filter) holds the mug's body,
    rim or handle, and no finger cuts through its wall or handle."""
    config = GraspConfig(top_k=1000, nms_distance=0.0)
    result = plan_grasps(table_world.scene, table_world.mask("mug"), config=config)
    assert len(result.grasps) == result.stats["collision_free"] >= 100
    assert_all_pass(result, table_world, "mug")
    T = pose_matrix(2.0, (0.0, 0.1, 0.0))
    handle = model("mug", 4).solid.base.parts[1].transformed(T)  # the handle's torus arc
    on_handle = [np.abs(handle.signed_distance(g.contacts)).max() < 0.003 for g in result.grasps]
    assert 0 < sum(on_handle) < len(on_handle)
    # The handle is thin (1.2 cm): its grasps close across the tube.
    assert all(g.width < 0.016 for g, h in zip(result.grasps, on_handle, strict=True) if h)


def test_neighbour_blocks_grasps_that_would_hit_it():
    """The same can, alone and with a wall of boxes around it: fewer candidates survive and the
    survivors avoid the boxes."""
    can = model("can", 1)
    alone = build([("can", can, pose_matrix(0.0, (0.0, 0.0, 0.0)))])
    boxed = build(
        [("can", can, pose_matrix(0.0, (0.0, 0.0, 0.0)))]
        + [
            (
                f"box {i}",
                big_box(0.03),
                pose_matrix(a, (0.085 * math.cos(a), 0.085 * math.sin(a), 0.0)),
            )
            for i, a in enumerate(np.linspace(0, 2 * math.pi, 6, endpoint=False))
        ]
    )
    r_alone = plan_grasps(alone.scene, alone.mask("can"))
    r_boxed = plan_grasps(boxed.scene, boxed.mask("can"))
    assert r_boxed.stats["rejected"]["obstacles"] > 0 == r_alone.stats["rejected"]["obstacles"]
    assert r_boxed.stats["collision_free"] < r_alone.stats["collision_free"]
    assert_all_pass(r_boxed, boxed, "can")


@pytest.mark.parametrize("kind", ["ball", "box"])
def test_object_wider_than_the_gripper_gets_no_grasps_and_a_message(kind):
    m = big_ball(0.06) if kind == "ball" else big_box(0.05)
    world = build([(kind, m, pose_matrix(0.0, (0.0, 0.0, 0.0)))], spacing=0.004)
    result = plan_grasps(world.scene, world.mask(kind))
    assert result.grasps == []
    assert (
        result.message == "no grasps: the object is wider than the 8 cm opening in every direction"
    )
    # A wider gripper with longer fingers (to reach past the equator) takes it.
    wide = GripperConfig(max_opening=0.14, palm_width=0.3, finger_length=0.1)
    assert plan_grasps(world.scene, world.mask(kind), wide).grasps


def test_pass_rate_over_world_objects():
    """>= 95% of the grasps returned on make_world objects pass the analytic checks."""
    passed = total = 0
    failures = []
    for seed in (0, 3):
        world = make_world(seed, config=WorldConfig.preview(object_spacing=0.003))
        everything = [Thing(o.name, o.label, o.solid) for o in (world.table, *world.objects)]
        for obj in world.objects:
            target = world.scene.extras["label"] == obj.label
            result = plan_grasps(world.scene, target, config=GraspConfig(top_k=10))
            me = Thing(obj.name, obj.label, obj.solid)
            others = [t for t in everything if t.label != obj.label]
            for g in result.grasps:
                problems = check_grasp(g, GRIPPER, me, others)
                passed += not problems
                total += 1
                if problems:
                    failures.append((seed, obj.name, problems))
    assert total >= 60
    assert passed / total >= 0.95, failures


def test_surface_normals_point_outward_on_a_mug_and_a_bowl():
    world = make_world(0, config=WorldConfig.preview(object_spacing=0.003))
    for kind in ("mug", "bowl"):
        obj = next(o for o in world.objects if o.kind == kind)
        target = world.scene.extras["label"] == obj.label
        pts, normals, keep = surface_normals(world.scene, target)
        assert pts.shape == normals.shape == (int(target.sum()), 3) and keep.all()
        truth = obj.surface_normal(pts)
        agree = np.einsum("mk,mk->m", normals, truth) > 0
        assert agree.mean() > 0.95, (kind, agree.mean())


def test_floaters_are_dropped_and_do_not_become_contacts(table_world):
    scene = table_world.scene
    target = table_world.mask("ball")
    g = torch.Generator().manual_seed(0)
    centre = scene.means[target].mean(0)
    n = 30
    floaters = centre + 0.06 * torch.randn(n, 3, generator=g) + torch.tensor([0, 0, 0.08])
    extra = scene.subset(torch.nonzero(target).flatten()[:n]).replace(means=floaters)
    noisy = type(scene).concat([scene, extra])
    mask = torch.cat([target, torch.ones(n, dtype=torch.bool)])
    _, _, keep = surface_normals(noisy, mask)
    assert not keep[-n:].any() and keep[:-n].mean() > 0.99
    result = plan_grasps(noisy, mask)
    assert_all_pass(result, table_world, "ball")


def test_support_mask_and_up_from_meta(table_world):
    scene = table_world.scene
    target = table_world.mask("box")
    support = scene.extras["label"] == 0
    a = plan_grasps(scene, target, support=support)
    b = plan_grasps(scene.with_meta(up="+z"), target)
    assert a.stats["support_height"] == pytest.approx(0.0, abs=1e-4)
    assert b.stats["support_height"] == pytest.approx(0.0, abs=1e-4)
    assert_all_pass(a, table_world, "box")
    # Upside down ("up" is -z): the plane goes through the box's top and the table becomes an
    # obstacle above it.
    c = plan_grasps(scene, target, up=[0, 0, -1])
    top = 2 * model("box", 2).params["half_z"]
    assert c.stats["support_height"] == pytest.approx(-top, abs=0.004)
    assert c.stats["rejected"]["obstacles"] > a.stats["rejected"]["obstacles"]


def test_gripper_boxes_mesh_and_json(table_world, tmp_path):
    result = plan_grasps(table_world.scene, table_world.mask("ball"), config=GraspConfig(top_k=3))
    g = result.grasps[0]
    boxes = gripper_boxes(g, GRIPPER)
    assert [b.name for b in boxes] == ["finger_left", "finger_right", "palm"]
    # Fingers touch the contacts from outside; the palm sits behind the fingers.
    left, right, palm = boxes
    assert left.contains(g.contacts[0][None], margin=1e-9)[0]
    assert right.contains(g.contacts[1][None], margin=1e-9)[0]
    assert (palm.center - g.center) @ g.approach < -GRIPPER.finger_length + GRIPPER.tip_depth
    v, f = gripper_mesh(g, GRIPPER)  # fingers, bridge, stem: four boxes
    assert (
        v.shape == (32, 3) and v.dtype == np.float32 and f.shape == (48, 3) and f.dtype == np.int32
    )
    assert f.max() == 31
    # Every mesh vertex lies inside the collision boxes (the drawn gripper is what is checked).
    inside = np.zeros(len(v), dtype=bool)
    for b in boxes:
        inside |= b.contains(v.astype(np.float64), margin=1e-6)
    assert inside.all()

    data = grasps_to_json(result, GRIPPER)
    assert data["units"] == "metres" and data["gripper"]["max_opening"] == 0.08
    first = data["grasps"][0]
    assert np.allclose(first["pose"], g.T_world_gripper) and first["width"] == g.width
    path = save_grasps(tmp_path / "g.json", result, GRIPPER)
    assert json.loads(path.read_text()) == json.loads(json.dumps(data))
    with pytest.raises(FileExistsError):
        save_grasps(path, result, GRIPPER)
    save_grasps(path, result, GRIPPER, overwrite=True)


def test_bad_input_is_a_clear_error(table_world):
    scene = table_world.scene
    with pytest.raises(ValueError, match="empty"):
        plan_grasps(scene, torch.zeros(len(scene), dtype=torch.bool))
    with pytest.raises(ValueError):
        plan_grasps(scene, torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="up"):
        plan_grasps(scene, table_world.mask("ball"), up=[0, 0, 0])
    with pytest.raises(ValueError, match="positive"):
        GripperConfig(max_opening=-1)
    with pytest.raises(ValueError):
        GraspConfig(top_k=0)
