"""editing._align: measure, fit a plane at a click, level a tilted capture, set its scale."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from editing import (
    align_scene,
    fit_plane_at,
    level_transform,
    measure,
    rotation_between,
    scale_transform,
)
from fields import Camera, GaussianScene, cameras_from_meta, cameras_to_meta, scene_up
from fields.conventions import support_side
from fields.synthetic import WorldConfig, make_world


def _angle_deg(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    c = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    return math.degrees(math.acos(max(-1.0, min(1.0, c))))


@pytest.fixture(scope="module")
def world():
    return make_world(0, config=WorldConfig.preview())


def tilted(world, seed: int):
    """The world turned by a random rotation and moved, its meta["up"] dropped; (scene, T)."""
    T = np.eye(4)
    T[:3, :3] = Rotation.random(random_state=seed).as_matrix()
    T[:3, 3] = np.random.default_rng(seed).normal(size=3)
    meta = {k: v for k, v in world.scene.meta.items() if k != "up"}
    meta["cameras"] = cameras_to_meta(world.cameras[:3])
    scene = world.scene.replace(meta=meta).transform(torch.from_numpy(T))
    return scene, T


def table_point(world) -> np.ndarray:
    """A point of the table top away from the objects (world frame, z up)."""
    p = world.table.params
    return np.array([0.42 * p["size_x"], -0.40 * p["size_y"], p["top_z"]])


def test_measure_and_rotation_between():
    assert measure((0, 0, 0), (3, 4, 0)) == pytest.approx(5.0)
    rng = np.random.default_rng(0)
    for _ in range(20):
        a, b = rng.normal(size=3), rng.normal(size=3)
        R = rotation_between(a, b)
        assert np.allclose(R @ R.T, np.eye(3), atol=1e-9) and np.linalg.det(R) > 0
        assert _angle_deg(R @ a, b) < 1e-4
    R = rotation_between([0, 0, 1], [0, 0, -1])  # opposite: a half turn
    assert np.allclose(R @ [0, 0, 1], [0, 0, -1]) and np.linalg.det(R) > 0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_level_a_tilted_world_recovers_plus_z_within_a_degree(world, seed):
    scene, T = tilted(world, seed)
    click = T[:3, :3] @ table_point(world) + T[:3, 3]
    eye = T[:3, :3] @ np.array([0.0, -1.5, 1.8]) + T[:3, 3]  # a camera above the table
    L = level_transform(scene, click, toward=eye)
    levelled = align_scene(scene, L, up="+z")
    # The table's true up, carried through both transforms, is +z now.
    true_up = L[:3, :3].numpy() @ T[:3, :3] @ np.array([0.0, 0.0, 1.0])
    assert _angle_deg(true_up, [0, 0, 1]) < 1.0
    assert levelled.meta["up"] == "+z"
    assert scene_up(levelled).source == "scene"
    # The clicked point stays put (rotation about the plane's centroid, which is near it).
    plane = fit_plane_at(scene, click, toward=eye)
    assert np.allclose(L.numpy() @ np.append(plane.point, 1.0), np.append(plane.point, 1.0))
    # Objects stand above the table after levelling.
    z = levelled.means[:, 2]
    labels = levelled.extras["label"]
    assert float(z[labels > 0].median()) > float(z[labels == 0].median())
    # meta["alignment"] is the transform from the file's frame; the cameras moved with it.
    assert np.allclose(np.array(levelled.meta["alignment"]), L.numpy())
    before = cameras_from_meta(scene.meta)
    after = cameras_from_meta(levelled.meta)
    for a, b in zip(before, after, strict=True):
        moved = L.numpy() @ np.append(a.center.double().numpy(), 1.0)
        assert np.allclose(moved[:3], b.center.double().numpy(), atol=1e-4)


def lone_floor(n: int = 40, meta=None) -> GaussianScene:
    """A flat square of flat splats in the plane z = 0 with nothing on either side."""
    xs = torch.linspace(-1.0, 1.0, n)
    gx, gy = torch.meshgrid(xs, xs, indexing="ij")
    means = torch.stack([gx.reshape(-1), gy.reshape(-1), torch.zeros(n * n)], -1)
    m = len(means)
    return GaussianScene.from_activated(
        means,
        torch.tensor([1.0, 0.0, 0.0, 0.0]).expand(m, 4),
        torch.tensor([1.0 / n, 1.0 / n, 0.002]).expand(m, 3),
        torch.full((m,), 0.9),
        torch.full((m, 3), 0.5),
        meta=meta or {},
    )


def test_which_side_is_up_the_splats_then_the_camera_then_up(world):
    # The splats decide when they can: objects on the table, its underside just below.
    scene = world.scene.replace(meta={"up": "-z"})  # a wrong recorded up...
    below = table_point(world) - np.array([0.0, 0.0, 2.0])  # ...and a camera under the table
    L = level_transform(scene, table_point(world), toward=below)
    assert np.allclose(L[:3, :3].numpy(), np.eye(3), atol=1e-3)  # already level, +z up
    plane = fit_plane_at(world.scene, table_point(world))
    assert _angle_deg(plane.normal, [0, 0, 1]) < 0.5
    assert abs(plane.point[2] - world.table.params["top_z"]) < 0.01
    assert plane.rms < 0.005 and len(plane.inliers) > 30
    # A lone plane says nothing about its sides: the clicking camera's side is up, else `up`.
    floor = lone_floor(meta={"up": "-z"})
    assert abs(support_side(floor, (0, 0, 0), (0, 0, 1))) < 0.3
    L = level_transform(floor, (0.1, 0.1, 0.0), toward=(0.0, 0.0, -3.0))
    assert np.allclose(L[:3, :3].numpy() @ [0, 0, -1.0], [0, 0, 1], atol=1e-3)
    L = level_transform(floor, (0.1, 0.1, 0.0), toward=(0.0, 0.0, 3.0))
    assert np.allclose(L[:3, :3].numpy(), np.eye(3), atol=1e-3)
    L = level_transform(floor, (0.1, 0.1, 0.0))  # no camera: the scene's up (-z)
    assert np.allclose(L[:3, :3].numpy() @ [0, 0, -1.0], [0, 0, 1], atol=1e-3)


def test_fit_plane_from_a_mask_and_errors(world):
    scene = world.scene
    top = (scene.extras["label"] == 0) & (
        (scene.means[:, 2] - world.table.params["top_z"]).abs() < 0.003
    )
    plane = fit_plane_at(scene, top, up="+z")
    assert _angle_deg(plane.normal, [0, 0, 1]) < 0.5
    with pytest.raises(ValueError, match="fewer than 3"):
        fit_plane_at(scene, torch.zeros(len(scene), dtype=torch.bool))
    with pytest.raises(ValueError, match="shape"):
        fit_plane_at(scene, torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="surface"):
        fit_plane_at(scene, (100.0, 100.0, 100.0), radius=0.01)


def test_set_scale_makes_the_measured_length_real(world):
    scene = world.scene
    a, b = scene.means[0].double().numpy(), scene.means[500].double().numpy()
    d = measure(a, b)
    S = scale_transform(d, 2.5)
    scaled = align_scene(scene, S, units="m")
    a2, b2 = scaled.means[0].double().numpy(), scaled.means[500].double().numpy()
    assert measure(a2, b2) == pytest.approx(2.5, rel=1e-5)
    assert np.allclose(a2, a * 2.5 / d, atol=1e-5)  # about the origin
    ratio = torch.exp(scaled.scales - scene.scales)
    assert torch.allclose(ratio, torch.full_like(ratio, 2.5 / d), rtol=1e-4)
    assert scaled.meta["units"] == "m" and scaled.meta["up"] == scene.meta["up"]
    # About a pivot: the pivot stays.
    P = scale_transform(1.0, 3.0, pivot=a)
    assert np.allclose(P.numpy() @ np.append(a, 1.0), np.append(a, 1.0))
    for bad in ((0.0, 1.0), (1.0, -2.0), (float("nan"), 1.0)):
        with pytest.raises(ValueError, match="length"):
            scale_transform(*bad)


def test_align_scene_rotates_a_recorded_up_and_keeps_the_input(world):
    scene = world.scene.replace(meta={"up": "+z"})
    R = np.eye(4)
    R[:3, :3] = rotation_between([0, 0, 1], [0, -1, 0])
    moved = align_scene(scene, R)
    assert moved.meta["up"] == "-y" and scene.meta["up"] == "+z"
    again = align_scene(moved, np.linalg.inv(R))
    assert np.allclose(np.array(again.meta["alignment"]), np.eye(4), atol=1e-12)
    assert torch.allclose(again.means, scene.means, atol=1e-5)
    with pytest.raises(ValueError, match="4x4"):
        align_scene(scene, np.eye(3))


def test_cameras_follow_a_scale(world):
    cams: list[Camera] = world.cameras[:2]
    scene = world.scene.replace(meta={"cameras": cameras_to_meta(cams), "up": "+z"})
    scaled = align_scene(scene, scale_transform(1.0, 2.0))
    for a, b in zip(cams, cameras_from_meta(scaled.meta), strict=True):
        assert np.allclose(2.0 * a.center.numpy(), b.center.numpy(), atol=1e-4)
        assert torch.allclose(a.viewmat[:3, :3], b.viewmat[:3, :3], atol=1e-5)


def test_cameras_and_the_file_frame_follow_an_alignment(world):
    """`align_camera` moves a camera exactly as `align_scene` moves the recorded ones;
    `in_file_frame` undoes every level and rescale since the file (rows unchanged)."""
    import editing

    cams: list[Camera] = world.cameras[:3]
    scene = world.scene.replace(meta={"cameras": cameras_to_meta(cams), "up": "+z"})
    assert editing.scene_alignment(scene) is None and editing.in_file_frame(scene) is scene
    T1 = np.eye(4)
    T1[:3, :3] = Rotation.from_euler("xz", [30.0, 70.0], degrees=True).as_matrix()
    T1[:3, 3] = [0.3, -0.2, 0.1]
    twice = align_scene(align_scene(scene, T1), scale_transform(1.0, 2.5))
    T = editing.scene_alignment(twice)
    for a, b in zip(cams, cameras_from_meta(twice.meta), strict=True):
        assert torch.allclose(editing.align_camera(a, T).viewmat, b.viewmat, atol=1e-4)
    back = editing.in_file_frame(twice)
    assert torch.allclose(back.means, scene.means, atol=1e-4)
    assert torch.allclose(back.scales, scene.scales, atol=1e-4)
    assert editing.scene_alignment(back) is None
    bad = scene.replace(meta={"alignment": [[1, 2], [3, 4]]})
    assert editing.scene_alignment(bad) is None
