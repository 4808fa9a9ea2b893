"""Cameras between viser and `fields`, and where the viewer's camera starts.

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

DEFAULT_FOV_DEG = 50.0


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


# ---------------------------------------------------------------------- up direction
def scene_up(scene: GaussianScene, cameras: Sequence[Camera] = ()) -> tuple[np.ndarray, str]:
    """The world's up direction and where it came from.

    1. `scene.meta["up"]` (scenelab's own worlds record it; "+z", "-y" or a 3-vector);
    2. the mean of the dataset cameras' up axes (−y in OpenCV camera axes), when they agree —
       people hold cameras upright, which is how nerfstudio orients captures too;
    3. −y: COLMAP and the INRIA 3DGS pipeline keep COLMAP's world, whose y usually points down.
    """
    up = scene.meta.get("up")
    if up is not None:
        vec = _parse_axis(up)
        if vec is not None:
            return vec, "scene"
    if cameras:
        ups = np.stack([-c.c2w.double()[:3, 1].numpy() for c in cameras])
        mean = ups.mean(0)
        if np.linalg.norm(mean) > 0.5:  # cameras broadly agree
            return mean / np.linalg.norm(mean), "cameras"
    return np.array([0.0, -1.0, 0.0]), "default"


def _parse_axis(up) -> np.ndarray | None:
    if isinstance(up, str):
        axes = {"x": 0, "y": 1, "z": 2}
        s = up.strip().lower()
        sign = -1.0 if s.startswith("-") else 1.0
        s = s.lstrip("+-")
        if s not in axes:
            return None
        v = np.zeros(3)
        v[axes[s]] = sign
        return v
    try:
        v = np.asarray(up, dtype=np.float64).reshape(3)
    except (TypeError, ValueError):
        return None
    n = np.linalg.norm(v)
    return v / n if np.isfinite(n) and n > 0 else None


# ---------------------------------------------------------------------- initial view
def framing_view(
    scene: GaussianScene, up: np.ndarray, fov_deg: float = DEFAULT_FOV_DEG
) -> tuple[np.ndarray, np.ndarray]:
    """(position, look_at) of a camera that sees the whole scene from above and to the side."""
    if len(scene) == 0:
        return np.array([3.0, 3.0, 3.0]), np.zeros(3)
    lo, hi = scene.bounds(quantile=0.02 if len(scene) > 100 else 0.0)
    lo, hi = lo.double().numpy(), hi.double().numpy()
    center = (lo + hi) / 2
    radius = max(0.5 * float(np.linalg.norm(hi - lo)), 1e-3)
    a = np.array([1.0, 0.0, 0.0])
    if abs(a @ up) > 0.9:
        a = np.array([0.0, 1.0, 0.0])
    e1 = a - (a @ up) * up
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(up, e1)
    direction = 0.75 * e1 + 0.45 * e2 + 0.55 * up
    direction /= np.linalg.norm(direction)
    dist = 1.1 * radius / math.sin(math.radians(fov_deg) / 2)
    return center + dist * direction, center


def camera_view(camera: Camera, scene: GaussianScene) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(position, look_at, up) that puts the viewer where a dataset camera is."""
    c2w = camera.c2w.double().numpy()
    eye, fwd, up = c2w[:3, 3], c2w[:3, 2], -c2w[:3, 1]
    dist = 1.0
    if len(scene):
        center = scene.means.detach().double().mean(0).numpy()
        dist = max(float((center - eye) @ fwd), 1e-2)
    return eye, eye + dist * fwd, up
