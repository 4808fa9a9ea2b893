"""Camera conventions between viser and fields, the up direction, the initial view."""

import math
from types import SimpleNamespace

import numpy as np
import torch

from app.viewer._camera import (
    camera_from_pose,
    camera_view,
    click_pixel,
    pose_of,
    vertical_fov,
)
from fields import Camera, framing_view, scene_up

from .conftest import look_camera, project


def test_pose_round_trip_and_fov(scene):
    cam = look_camera(200, 100)
    wxyz, pos = pose_of(cam)
    back = camera_from_pose(wxyz, pos, vertical_fov(cam), 200, 100)
    assert torch.allclose(back.viewmat, cam.viewmat, atol=1e-5)
    assert torch.allclose(back.K, cam.K, atol=1e-3)


def test_viser_pose_is_opencv_camera_to_world():
    # viser: T_world_camera, +z forward. A camera at the origin with identity rotation looks
    # down world +z, so a point at (0, 0, 2) projects to the image centre.
    cam = camera_from_pose((1.0, 0.0, 0.0, 0.0), (0.0, 0.0, 0.0), math.radians(60), 64, 48)
    u, v = project(cam, (0.0, 0.0, 2.0))
    assert abs(u - 32) < 1e-4 and abs(v - 24) < 1e-4
    u, v = project(cam, (0.0, 0.5, 2.0))  # +y is down in the image
    assert v > 24


def test_up_from_meta_cameras_or_default(scene):
    up = scene_up(scene)
    assert up.source == "scene" and np.allclose(up.vector, [0, 0, 1])
    assert np.allclose(scene_up(scene.replace(meta={"up": [0, 0, 1]})).vector, [0, 0, 1])
    bare = scene.replace(meta={})
    up = scene_up(bare)  # the floor decides: estimated from the splats
    assert up.source == "estimated" and np.allclose(up.vector, [0, 0, 1], atol=1e-3)
    up = scene_up(bare, estimate=False)
    assert up.source == "default" and np.allclose(up.vector, [0, -1, 0])
    cams = [
        look_camera(eye=(2.0 * math.cos(a), 2.0 * math.sin(a), 1.0)) for a in np.linspace(0, 6, 8)
    ]
    up = scene_up(bare, cams)
    assert up.source == "cameras" and up.vector @ np.array([0, 0, 1.0]) > 0.8


def test_framing_view_sees_the_whole_scene(scene):
    up = np.array([0.0, 0.0, 1.0])
    eye, target = framing_view(scene, up)
    assert eye[2] > target[2]  # from above
    cam = Camera.look_at(tuple(eye), tuple(target), (0, 0, 1), look_camera().K, 160, 120)
    lo, hi = scene.bounds()
    corners = [(x, y, z) for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])]
    for c in corners:
        u, v = project(cam, [float(t) for t in c])
        assert -5 <= u <= 165 and -5 <= v <= 125


def test_camera_view_starts_at_the_dataset_camera(scene):
    cam = look_camera()
    eye, look_at, up = camera_view(cam, scene)
    assert np.allclose(eye, cam.center.numpy(), atol=1e-5)
    fwd = (look_at - eye) / np.linalg.norm(look_at - eye)
    assert np.allclose(fwd, cam.c2w[:3, 2].numpy(), atol=1e-5)
    assert up @ np.array([0, 0, 1.0]) > 0.5


def test_click_pixel_maps_screen_pos_to_the_clicked_point():
    """A scene click lands on the pixel that shows the point under the pointer."""
    cam = look_camera(320, 240)
    wxyz, pos = pose_of(cam)
    handle = SimpleNamespace(
        wxyz=wxyz, position=pos, fov=vertical_fov(cam), image_width=320, image_height=240
    )
    u, v = project(cam, (0.3, 0.1, 0.2))
    event = SimpleNamespace(client=SimpleNamespace(camera=handle), screen_pos=(u / 320, v / 240))
    got, pu, pv = click_pixel(event)
    assert (got.width, got.height) == (320, 240) and abs(pu - u) < 1e-6 and abs(pv - v) < 1e-6
    small, su, sv = click_pixel(event, max_side=160)  # the same point on a smaller canvas
    su2, sv2 = project(small, (0.3, 0.1, 0.2))
    assert small.width == 160 and abs(su - su2) < 1e-3 and abs(sv - sv2) < 1e-3
