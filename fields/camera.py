"""Pinhole cameras. Frames: `viewmat` = T_cam_world (world-to-camera), OpenCV axes
(x right, y down, z forward). `c2w` / `T_world_cam` is its inverse. OpenGL/Blender/NeRF files use
camera-to-world with (x right, y up, z backward); `opengl_to_opencv` converts.

Cameras recorded with a scene: its sidecar may hold them under `meta["cameras"]`, a JSON list
with one object per camera,

    {"name": "frame_00000",          # str, optional
     "width": 640, "height": 480,   # ints, pixels
     "K": [[fx, 0, cx], [0, fy, cy], [0, 0, 1]],   # 3x3 pinhole intrinsics, pixels
     "c2w": [[...4 numbers...] x 4]}                # camera-to-world, OpenCV axes

`cameras_to_meta` writes that list and `cameras_from_meta` reads it back (the file keeps
camera-to-world as viser and most viewers do)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

# Flip y and z: OpenGL camera axes <-> OpenCV camera axes (its own inverse).
_GL_TO_CV = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64))


@dataclass(frozen=True, eq=False)
class Camera:
    """A pinhole camera: intrinsics `K [3,3]` (pixels; pixel centres at +0.5), `viewmat [4,4]`
    world-to-camera in OpenCV axes, image size in pixels. Tensors are float32."""

    K: Tensor  # [3,3]
    viewmat: Tensor  # [4,4] T_cam_world
    width: int
    height: int
    name: str = ""

    def __post_init__(self) -> None:
        K = torch.as_tensor(self.K, dtype=torch.float32)
        V = torch.as_tensor(self.viewmat, dtype=torch.float32)
        if K.shape != (3, 3):
            raise ValueError(f"Camera.K has shape {tuple(K.shape)}, expected (3, 3)")
        if V.shape != (4, 4):
            raise ValueError(f"Camera.viewmat has shape {tuple(V.shape)}, expected (4, 4)")
        if int(self.width) <= 0 or int(self.height) <= 0:
            raise ValueError(f"Camera size must be positive, got {self.width}x{self.height}")
        if not (torch.isfinite(K).all() and torch.isfinite(V).all()):
            raise ValueError("Camera.K and Camera.viewmat must be finite")
        object.__setattr__(self, "K", K)
        object.__setattr__(self, "viewmat", V)
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_c2w(
        cls,
        c2w: Tensor,  # [4,4] or [3,4] T_world_cam, OpenCV axes
        K: Tensor,
        width: int,
        height: int,
        name: str = "",
        opengl: bool = False,
    ) -> Camera:
        """From camera-to-world; `opengl=True` when the file uses OpenGL camera axes."""
        M = torch.eye(4, dtype=torch.float64)
        M[: c2w.shape[0], :4] = torch.as_tensor(c2w, dtype=torch.float64)[:, :4]
        if opengl:
            M = M @ _GL_TO_CV
        return cls(K, torch.linalg.inv(M), width, height, name)

    @classmethod
    def from_fov(
        cls, fov_y_deg: float, width: int, height: int, c2w: Tensor, name: str = ""
    ) -> Camera:
        """A centred pinhole with square pixels and vertical field of view `fov_y_deg`."""
        f = 0.5 * height / math.tan(math.radians(fov_y_deg) / 2)
        K = torch.tensor([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]])
        return cls.from_c2w(c2w, K, width, height, name)

    @classmethod
    def look_at(
        cls,
        eye: Tensor | tuple[float, float, float],
        target: Tensor | tuple[float, float, float],
        up: Tensor | tuple[float, float, float],
        K: Tensor,
        width: int,
        height: int,
        name: str = "",
    ) -> Camera:
        """A camera at `eye` looking at `target`, image 'up' towards world `up`."""
        eye_t = torch.as_tensor(eye, dtype=torch.float64)
        fwd = torch.as_tensor(target, dtype=torch.float64) - eye_t
        fwd = fwd / fwd.norm()
        right = torch.linalg.cross(fwd, torch.as_tensor(up, dtype=torch.float64))
        if right.norm() < 1e-9:
            raise ValueError("look_at: view direction is parallel to 'up'")
        right = right / right.norm()
        down = torch.linalg.cross(fwd, right)
        c2w = torch.eye(4, dtype=torch.float64)
        c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, down, fwd, eye_t
        return cls.from_c2w(c2w, K, width, height, name)

    # ------------------------------------------------------------------ facts
    @property
    def c2w(self) -> Tensor:
        """[4,4] T_world_cam, OpenCV axes."""
        return torch.linalg.inv(self.viewmat.double()).float()

    @property
    def center(self) -> Tensor:
        """[3] camera centre in world coordinates."""
        return self.c2w[:3, 3]

    @property
    def fx(self) -> float:
        return float(self.K[0, 0])

    @property
    def fy(self) -> float:
        return float(self.K[1, 1])

    @property
    def cx(self) -> float:
        return float(self.K[0, 2])

    @property
    def cy(self) -> float:
        return float(self.K[1, 2])

    def scaled(self, factor: float) -> Camera:
        """The same view at `factor` times the resolution (e.g. 0.5 halves width and height).

        Sizes round like image resizes (at least one pixel); K scales with the actual size ratio."""
        w = max(1, round(self.width * factor))
        h = max(1, round(self.height * factor))
        sx, sy = w / self.width, h / self.height
        K = self.K.clone()
        K[0] *= sx
        K[1] *= sy
        return Camera(K, self.viewmat, w, h, self.name)

    def with_pose(self, viewmat: Tensor) -> Camera:
        return Camera(self.K, viewmat, self.width, self.height, self.name)

    def __repr__(self) -> str:
        return (
            f"Camera({self.name!r}, {self.width}x{self.height}, fx={self.fx:.1f}, fy={self.fy:.1f}, "
            f"center={[round(float(v), 3) for v in self.center]})"
        )


# ---------------------------------------------------------------------- cameras <-> meta
def cameras_to_meta(cameras: Sequence[Camera]) -> list[dict[str, Any]]:
    """The JSON-able `meta["cameras"]` list of `cameras` (see the module docstring)."""
    out = []
    for cam in cameras:
        out.append(
            {
                "name": cam.name,
                "width": int(cam.width),
                "height": int(cam.height),
                "K": cam.K.double().tolist(),
                "c2w": torch.linalg.inv(cam.viewmat.double()).tolist(),
            }
        )
    return out


def cameras_from_meta(meta: Mapping[str, Any]) -> list[Camera] | None:
    """The cameras a scene's `meta["cameras"]` records (module docstring), or None when it
    records none. Raises `ValueError` naming the camera and field that is malformed."""
    records = meta.get("cameras") if isinstance(meta, Mapping) else None
    if records is None:
        return None
    if not isinstance(records, Sequence) or isinstance(records, str):
        raise ValueError(
            f'meta["cameras"] must be a list of camera objects, got {type(records).__name__}'
        )
    cams = []
    for i, rec in enumerate(records):
        where = f'meta["cameras"][{i}]'
        if not isinstance(rec, Mapping):
            raise ValueError(f"{where} must be an object with width, height, K and c2w")
        missing = [k for k in ("width", "height", "K", "c2w") if k not in rec]
        if missing:
            raise ValueError(f"{where} lacks {', '.join(missing)}")
        try:
            w, h = int(rec["width"]), int(rec["height"])
        except (TypeError, ValueError):
            raise ValueError(f"{where}: width and height must be integers") from None
        K = _matrix(rec["K"], (3, 3), f"{where}.K")
        c2w = _matrix(rec["c2w"], (4, 4), f"{where}.c2w")
        R = c2w[:3, :3]
        if np.abs(R @ R.T - np.eye(3)).max() > 1e-3 or np.linalg.det(R) < 0:
            raise ValueError(f"{where}.c2w: its upper-left 3x3 block is not a rotation")
        if np.abs(c2w[3] - [0.0, 0.0, 0.0, 1.0]).max() > 1e-6:
            raise ValueError(f"{where}.c2w: the last row must be [0, 0, 0, 1]")
        try:
            cams.append(
                Camera.from_c2w(
                    torch.from_numpy(c2w), torch.from_numpy(K), w, h, str(rec.get("name", ""))
                )
            )
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
    return cams


def _matrix(value: Any, shape: tuple[int, int], where: str) -> np.ndarray:
    try:
        m = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{where} must be a {shape[0]}x{shape[1]} matrix of numbers") from None
    if m.shape != shape or not np.isfinite(m).all():
        raise ValueError(
            f"{where} must be a finite {shape[0]}x{shape[1]} matrix, got shape {m.shape}"
        )
    return m
