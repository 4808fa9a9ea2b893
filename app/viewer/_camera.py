"""Cameras between viser and `fields`, and where the viewer's camera starts (the up axis and the
framing view come from `fields.conventions`).

Frames: viser reports each browser's camera as `T_world_camera` (`wxyz`, `position`) in OpenCV
axes (x right, y down, z forward), with a vertical field of view `fov` (radians) and the canvas
size in pixels — the same axes as `fields.Camera`, whose `viewmat` is the inverse.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from fields import Camera, GaussianScene
from fields.scene import quat_to_rotmat, rotmat_to_quat


def camera_from_pose(
    wxyz: Sequence[float] | np.ndarray,
    position: Sequence[float] | np.ndarray,
    fov_y: float,  # radians
    width: int,
    height: int,
) -> Camera:
    """A centred pinhole with square pixels at the given `T_world_camera` (OpenCV axes)."""
    R = quat_to_rotmat(torch.as_tensor(np.asarray(wxyz, dtype=np.float64)))
    c2w = torch.eye(4, dtype=torch.float64)
    c2w[:3, :3] = R
    c2w[:3, 3] = torch.as_tensor(np.asarray(position, dtype=np.float64))
    return Camera.from_fov(math.degrees(fov_y), int(width), int(height), c2w)


def client_camera(camera_handle, max_side: int | None = None) -> Camera:
    """The `fields.Camera` a browser is looking through (a `viser.CameraHandle`).

    `max_side` scales the canvas size down (aspect kept) for server-side overlays."""
    w, h = int(camera_handle.image_width), int(camera_handle.image_height)
    if w <= 0 or h <= 0:
        w, h = 640, 480  # the client has not reported its canvas yet
    if max_side is not None and max(w, h) > max_side:
        f = max_side / max(w, h)
        w, h = max(1, round(w * f)), max(1, round(h * f))
    return camera_from_pose(camera_handle.wxyz, camera_handle.position, camera_handle.fov, w, h)


def click_pixel(event, max_side: int | None = None) -> tuple[Camera, float, float]:
    """(camera, u, v): the clicking browser's camera (see `client_camera`) and the clicked pixel
    of a `viser.SceneClickEvent` (whose `screen_pos` is in [0, 1]²)."""
    cam = client_camera(event.client.camera, max_side=max_side)
    u, v = event.screen_pos
    return cam, u * cam.width, v * cam.height


def pose_of(camera: Camera) -> tuple[np.ndarray, np.ndarray]:
    """`T_world_camera` of a `fields.Camera` as viser wants it: (wxyz [4], position [3])."""
    c2w = camera.c2w.double()
    wxyz = rotmat_to_quat(c2w[:3, :3]).numpy()
    return wxyz, c2w[:3, 3].numpy()


def vertical_fov(camera: Camera) -> float:
    """Vertical field of view in radians."""
    return 2.0 * math.atan(0.5 * camera.height / camera.fy)


# ---------------------------------------------------------------------- initial view
def camera_view(camera: Camera, scene: GaussianScene) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(position, look_at, up) that puts the viewer where a dataset camera is."""
    c2w = camera.c2w.double().numpy()
    eye, fwd, up = c2w[:3, 3], c2w[:3, 2], -c2w[:3, 1]
    dist = 1.0
    if len(scene):
        center = scene.means.detach().double().mean(0).numpy()
        dist = max(float((center - eye) @ fwd), 1e-2)
    return eye, eye + dist * fwd, up
