"""Asset insertion against a synthetic world's analytic ground truth (table top z = 0.75, exact
object solids) and the bundled assets (text-to-3D: test_text_to_3d.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

import editing
from assets import OBJECTS_DIR
from editing.insertion import AssetNotFoundError
from fields import GaussianScene
from fields.synthetic import WorldConfig, make_world

ASSETS = ("mug", "can", "ball", "book")


@pytest.fixture(scope="module")
def world():
    return make_world(0, config=WorldConfig.preview())


@pytest.fixture(scope="module")
def objects():
    return {name: editing.load_asset(OBJECTS_DIR / f"{name}.ply") for name in ASSETS}


def table_mask(world) -> torch.Tensor:
    return world.scene.extras["label"] == 0


# ---------------------------------------------------------------------- the bundled assets
def test_assets_are_small_metric_named_objects(objects):
    sizes = [p.stat().st_size for p in OBJECTS_DIR.glob("*.ply")]
    assert len(sizes) >= len(ASSETS) and max(sizes) < 1.5e6 and sum(sizes) < 4e6
    for name, obj in objects.items():
        assert obj.meta["name"] == name and obj.meta["units"] == "m"
        assert obj.meta["label_names"] == {"1": name}
        assert (obj.extras["label"] == 1).all()
        lo, hi = obj.bounds()
        assert abs(float(lo[2])) < 1e-3  # base on z = 0
        assert 0.02 < float(hi[2]) < 0.2  # real sizes, metres
        assert float((0.5 * (lo + hi))[:2].abs().max()) < 0.03  # base centre near the origin


def test_assets_are_reproducible(objects):
    from assets.objects.make_objects import build_object

    assert build_object("can").allclose(objects["can"], atol=1e-6)


# ---------------------------------------------------------------------- support plane
def test_fit_support_plane_finds_the_table_top(world):
    plane = editing.fit_support_plane(world.scene, table_mask(world))
    assert abs(plane.height - world.table_top_z) < 1e-3  # not the underside (0.72) or feet (0)
    assert plane.normal @ np.array([0.0, 0.0, 1.0]) > 0.9999
    lo, hi = plane.bounds2d
    size = sorted(hi - lo)
    table = sorted((world.table.params["size_x"], world.table.params["size_y"]))
    assert np.allclose(size, table, atol=0.05)


def test_fit_support_plane_follows_a_tilted_support(world):
    tilt = math.radians(20.0)
    R = torch.tensor(
        [[1.0, 0.0, 0.0], [0.0, math.cos(tilt), -math.sin(tilt)], [0.0, math.sin(tilt), math.cos(tilt)]],
        dtype=torch.float64,
    )  # fmt: skip
    T = torch.eye(4, dtype=torch.float64)
    T[:3, :3] = R
    scene = world.scene.transform(T)
    plane = editing.fit_support_plane(scene, table_mask(world), up=(0.0, 0.0, 1.0))
    expected = (R @ torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)).numpy()
    assert plane.normal @ expected > 0.9995
    assert abs(plane.height - world.table_top_z) < 1e-3


# ---------------------------------------------------------------------- placement
@pytest.mark.parametrize("name", ASSETS)
def test_asset_rests_on_the_table_without_interpenetration(world, objects, name):
    obj = objects[name]
    p = editing.place_object(world.scene, obj, table_mask(world), yaw=0.7)
    n = len(world.scene)
    # Existing Gaussians bit-identical and in order; the object appended under a new label.
    assert p.scene.subset(torch.arange(n)).allclose(world.scene)
    assert p.mask[n:].all() and not p.mask[:n].any() and int(p.mask.sum()) == len(obj)
    assert p.label == max(world.label_names) + 1
    assert p.scene.meta["label_names"][str(p.label)] == name
    assert (p.scene.extras["label"][p.mask] == p.label).all()
    assert p.scene.meta["inserted"][-1]["name"] == name

    inserted = p.scene.subset(p.mask).means.double().numpy()
    height = float(inserted[:, 2].max() - inserted[:, 2].min())
    top = world.table_top_z
    # The lowest surface point: the base (object z = 0) and the lowest splat centre.
    base = float(p.T_world_object[2, 3])
    assert 0.0 <= base - top <= 0.01 * height
    assert 0.0 < float(inserted[:, 2].min()) - top <= 0.01 * height
    assert p.T_world_object[:3, :3].double().det() == pytest.approx(1.0, abs=1e-9)
    # No interpenetration: every inserted Gaussian is outside the table and every object.
    for solid in (world.table, *world.objects):
        assert float(solid.signed_distance(inserted).min()) > 0.0
    # Footprints do not overlap: the object's and each other object's splats, seen from above.
    labels = world.scene.extras["label"].numpy()
    ours = cKDTree(inserted[:, :2])
    for o in world.objects:
        theirs = world.scene.means.double().numpy()[labels == o.label]
        d = float(ours.query(theirs[:, :2])[0].min())
        assert d > 0.01, f"{name} touches {o.name} from above ({d:.4f} m)"
    # The spot lies on the table, the footprint inside it.
    r, _ = editing.footprint(obj)
    hx, hy = 0.5 * world.table.params["size_x"], 0.5 * world.table.params["size_y"]
    assert abs(p.spot[0]) + r <= hx + 0.02 and abs(p.spot[1]) + r <= hy + 0.02


def test_insertion_is_one_undoable_step(world, objects):
    history = editing.History(world.scene)
    p = editing.place_object(world.scene, objects["mug"], table_mask(world))
    history.apply("insert mug", p.scene)
    assert len(history.current) == len(world.scene) + len(objects["mug"])
    assert history.undo() is world.scene


def test_spot_near_a_point_and_yaw(world, objects):
    obj = objects["book"]
    plane = editing.fit_support_plane(world.scene, table_mask(world))
    r, h = editing.footprint(obj)
    target = np.array([0.0, 0.0, world.table_top_z])
    spot = editing.find_free_spot(world.scene, plane, r, height=h, near=target)
    # Nearest free spot: no free candidate is nearer (checked by asking for a smaller circle).
    d = np.linalg.norm(spot - target)
    labels = world.scene.extras["label"].numpy()
    objs = world.scene.means.double().numpy()[labels > 0]
    assert np.linalg.norm(objs[:, :2] - spot[:2], axis=1).min() >= 1.2 * r - 1e-9
    other = editing.find_free_spot(world.scene, plane, r, height=h)
    assert d <= np.linalg.norm(other - target) + 1e-9
    placed, T = editing.place_on_support(obj, plane, spot, yaw=math.pi / 2, scale=1.5)
    x_axis = T[:3, 0].numpy() / 1.5
    assert np.allclose(x_axis, [0.0, 1.0, 0.0], atol=1e-9)  # object x turned onto world y
    # Placed in the z-up world (without meta an object's up would be the product default, -y).
    upright = placed.replace(meta={"up": "+z"})
    assert float(editing.footprint(upright)[1]) == pytest.approx(1.5 * h, rel=1e-4)


def test_feature_extra_is_filled_and_other_extras_kept(world, objects):
    scene = world.scene.with_extras(
        feature=torch.randn(len(world.scene), 5),
        hidden=torch.zeros(len(world.scene), dtype=torch.bool),
    )
    T = torch.eye(4, dtype=torch.float64)
    new, mask = editing.insert_object(scene, objects["ball"], T, name="ball")
    assert set(new.extras) == {"label", "part", "feature", "hidden"}
    assert torch.equal(new.extras["feature"][~mask], scene.extras["feature"])
    assert not new.extras["hidden"][mask].any()
    given = torch.ones(int(mask.sum()), 5)
    new2, _ = editing.insert_object(scene, objects["ball"], T, name="ball", features=given)
    assert torch.equal(new2.extras["feature"][mask], given)


# ---------------------------------------------------------------------- bad input
def test_bad_input_is_a_clear_value_error(world, objects, tmp_path):
    table = table_mask(world)
    with pytest.raises(ValueError, match="support selection is empty"):
        editing.place_object(world.scene, objects["can"], torch.zeros_like(table))
    with pytest.raises(ValueError, match="wider than the support"):
        editing.place_object(world.scene, objects["book"], table, scale=10.0)
    # A support patch around an existing object: every spot on it is taken.
    mug = world.object_named("mug")
    near_mug = np.linalg.norm(world.scene.means.numpy()[:, :2] - mug.position[:2], axis=1) < 0.09
    with pytest.raises(ValueError, match="no free spot"):
        editing.place_object(world.scene, objects["can"], table & torch.from_numpy(near_mug))
    with pytest.raises(ValueError, match="does not exist"):
        editing.load_asset(tmp_path / "missing.ply")
    with pytest.raises(AssetNotFoundError):
        editing.load_asset(tmp_path / "missing.ply")
    with pytest.raises(ValueError, match="needs a name"):
        editing.insert_object(world.scene, objects["can"], torch.eye(4), name=" ")


def test_object_takes_the_scenes_sh_degree(world, objects):
    scene = world.scene.with_sh_degree(2)
    new, mask = editing.insert_object(scene, objects["ball"], torch.eye(4), name="ball")
    assert new.sh.shape[1] == 9 and torch.equal(new.sh[~mask], scene.sh)
    rich = objects["ball"].with_sh_degree(1)
    new, mask = editing.insert_object(world.scene, rich, torch.eye(4), name="ball")
    assert new.sh_degree == 0 and torch.equal(new.sh[~mask], world.scene.sh)
    low = GaussianScene.empty().with_sh_degree(0)
    new, _ = editing.insert_object(low, rich, torch.eye(4), name="ball")
    assert new.sh_degree == 1  # an empty scene takes the object's
