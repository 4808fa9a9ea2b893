"""Lens undistortion with OpenCV: which lens models it can invert, the pinhole camera an
undistorted image is delivered with, and the remap tables from that pinhole to the photo.

Follows gsplat's `examples/datasets/colmap.py`: COLMAP's perspective models become OpenCV
`distCoeffs`, `cv2.getOptimalNewCameraMatrix(K, dist, (w, h), alpha=0)` picks a pinhole that sees
only valid pixels, and images are cropped to its `roi`. The equidistant fisheye models go through
`cv2.fisheye` with the same "valid pixels only" crop computed here.

Pixel centres: `Camera.K` (and COLMAP) put pixel centres at +0.5; OpenCV at integers. Every K
handed to OpenCV has 0.5 subtracted from its principal point and every K read back gets it
added again; remap tables are in OpenCV's convention (column index, row index)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..camera import Camera

# COLMAP's equidistant fisheyes are OpenCV's fisheye model with the first 1 or 2 coefficients.
_FISHEYE_COEFFS = {
    "OPENCV_FISHEYE": ("k1", "k2", "k3", "k4"),
    "SIMPLE_RADIAL_FISHEYE": ("k", "", "", ""),
    "RADIAL_FISHEYE": ("k1", "k2", "", ""),
}
# Models no OpenCV function inverts: left as they are (and warned about by the loaders).
_UNSUPPORTED = frozenset(
    {"FOV", "THIN_PRISM_FISHEYE", "RAD_TAN_THIN_PRISM_FISHEYE", "FISHEYE", "FISHEYE624"}
)


@dataclass(frozen=True)
class Lens:
    """A lens OpenCV can invert. `coeffs` in OpenCV's `distCoeffs` order: perspective
    (k1, k2, p1, p2, k3, k4, k5, k6) with the rational k4..k6 in the denominator; fisheye
    (k1, k2, k3, k4) of the equidistant model theta_d = theta (1 + k1 theta^2 + ...)."""

    fisheye: bool
    coeffs: tuple[float, ...]


def lens_for(model: str, params: Mapping[str, float]) -> Lens | None:
    """The OpenCV lens for a COLMAP model name (or nerfstudio `camera_model`) and its named
    coefficients; None when OpenCV cannot invert it.

    Perspective models: SIMPLE_RADIAL `k` -> (k, 0, 0, 0, 0); RADIAL -> (k1, k2, 0, 0, 0); OPENCV
    (and nerfstudio's OPENCV / PERSPECTIVE / PINHOLE with coefficients) -> (k1, k2, p1, p2, k3);
    FULL_OPENCV -> (k1, k2, p1, p2, k3, k4, k5, k6). Outside FULL_OPENCV a `k4` is nerfstudio's
    r^8 term of a polynomial OpenCV does not have: None when it is not zero."""
    p = {k: float(v) for k, v in params.items()}
    if model in _UNSUPPORTED:
        return None
    if model in _FISHEYE_COEFFS:
        return Lens(
            True, tuple(p.get(name, 0.0) if name else 0.0 for name in _FISHEYE_COEFFS[model])
        )
    if model == "FULL_OPENCV":
        names = ("k1", "k2", "p1", "p2", "k3", "k4", "k5", "k6")
        return Lens(False, tuple(p.get(n, 0.0) for n in names))
    if p.get("k4", 0.0) != 0.0:
        return None
    k1 = p.get("k", p.get("k1", 0.0))
    return Lens(False, (k1, p.get("k2", 0.0), p.get("p1", 0.0), p.get("p2", 0.0), p.get("k3", 0.0)))


def _cv2() -> Any:
    try:
        import cv2
    except ImportError as e:
        raise ImportError(
            "undistorting images needs OpenCV: pip install 'opencv-python-headless>=4.8,<5'"
        ) from e
    return cv2


def _cv_K(camera: Camera) -> np.ndarray:
    """[3,3] float64 K with OpenCV's pixel centres (at integers)."""
    K = camera.K.double().numpy().copy()
    K[0, 2] -= 0.5
    K[1, 2] -= 0.5
    return K


def _from_cv_K(K: np.ndarray, x0: float = 0.0, y0: float = 0.0) -> np.ndarray:
    """OpenCV K (pixel centres at integers) of an image cropped at (x0, y0) -> `Camera.K`."""
    K = np.array(K, dtype=np.float64)
    K[0, 2] += 0.5 - x0
    K[1, 2] += 0.5 - y0
    return K


def _dist(lens: Lens) -> np.ndarray:
    return np.asarray(lens.coeffs, dtype=np.float64)


def undistorted_camera(camera: Camera, lens: Lens) -> Camera:
    """The pinhole (same pose and name) that the photo of `camera` through `lens` is undistorted
    to: a focal length and principal point that keep only pixels the photo covers, cropped to
    them (perspective: `getOptimalNewCameraMatrix(alpha=0)` and its roi)."""
    cv2 = _cv2()
    w, h = camera.width, camera.height
    K = _cv_K(camera)
    try:
        if lens.fisheye:
            K_new = _fisheye_valid_K(camera, lens)
            x0, y0, rw, rh = 0, 0, w, h
        else:
            K_new, (x0, y0, rw, rh) = cv2.getOptimalNewCameraMatrix(K, _dist(lens), (w, h), 0)
    except cv2.error as e:
        raise ValueError(f"cannot undistort lens {lens.coeffs}: {e}") from e
    if rw <= 0 or rh <= 0 or not np.isfinite(K_new).all() or min(K_new[0, 0], K_new[1, 1]) <= 0:
        raise ValueError(f"cannot undistort: lens {lens.coeffs} leaves no valid image area")
    new = Camera(_from_cv_K(K_new, x0, y0), camera.viewmat, rw, rh, camera.name)
    _check_one_to_one(camera, lens, new)
    return new


def _check_one_to_one(src: Camera, lens: Lens, dst: Camera, n: int = 33) -> None:
    """ValueError unless the forward lens model (OpenCV's own, not the iterative inverse the
    new K came from) maps a grid over `dst` into the photo, in order along rows and columns.
    Coefficients too strong for their model fold the image over, and OpenCV's inverse then
    returns a meaningless camera instead of failing."""
    cv2 = _cv2()
    u, v = np.meshgrid(np.linspace(0, dst.width - 1, n), np.linspace(0, dst.height - 1, n))
    K_new = _cv_K(dst)
    rays = np.stack(
        [(u - K_new[0, 2]) / K_new[0, 0], (v - K_new[1, 2]) / K_new[1, 1], np.ones_like(u)], -1
    ).reshape(1, -1, 3)
    zero = np.zeros(3)
    if lens.fisheye:
        uv, _ = cv2.fisheye.projectPoints(rays, zero, zero, _cv_K(src), _dist(lens))
    else:
        uv, _ = cv2.projectPoints(rays, zero, zero, _cv_K(src), _dist(lens))
    x, y = uv.reshape(n, n, 2).transpose(2, 0, 1)
    ok = (
        np.isfinite(uv).all()
        and x.min() > -1.0
        and x.max() < src.width
        and y.min() > -1.0
        and y.max() < src.height
        and (np.diff(x, axis=1) > 0).all()
        and (np.diff(y, axis=0) > 0).all()
    )
    if not ok:
        raise ValueError(
            f"cannot undistort: lens {lens.coeffs} does not map the {src.width}x{src.height} "
            "image one-to-one (coefficients too strong for the model?)"
        )


def _fisheye_valid_K(camera: Camera, lens: Lens) -> np.ndarray:
    """OpenCV K of a w x h pinhole whose pixel centres span the largest axis-aligned rectangle
    inside the undistorted outline of the photo, as `getOptimalNewCameraMatrix(alpha=0)` does."""
    cv2 = _cv2()
    w, h = camera.width, camera.height
    n = 64
    xs, ys = np.linspace(0, w - 1, n), np.linspace(0, h - 1, n)
    edges = {
        "left": np.stack([np.zeros(n), ys], -1),
        "right": np.stack([np.full(n, w - 1.0), ys], -1),
        "top": np.stack([xs, np.zeros(n)], -1),
        "bottom": np.stack([xs, np.full(n, h - 1.0)], -1),
    }
    K = _cv_K(camera)
    und = {
        k: cv2.fisheye.undistortPoints(v.reshape(-1, 1, 2), K, _dist(lens)).reshape(-1, 2)
        for k, v in edges.items()
    }
    left, right = und["left"][:, 0].max(), und["right"][:, 0].min()
    top, bottom = und["top"][:, 1].max(), und["bottom"][:, 1].min()
    if not (np.isfinite([left, right, top, bottom]).all() and right > left and bottom > top):
        return np.full((3, 3), np.nan)
    fx, fy = (w - 1) / (right - left), (h - 1) / (bottom - top)
    return np.array([[fx, 0.0, -fx * left], [0.0, fy, -fy * top], [0.0, 0.0, 1.0]])


def undistort_maps(src: Camera, lens: Lens, dst: Camera) -> tuple[np.ndarray, np.ndarray]:
    """Remap tables (map_x, map_y), each float32 [dst.height, dst.width]: for every pixel of the
    pinhole `dst`, where its ray lands in the photo taken by `src` through `lens`, in OpenCV
    pixel coordinates of that photo (`cv2.initUndistortRectifyMap`)."""
    cv2 = _cv2()
    size = (dst.width, dst.height)
    K, K_new = _cv_K(src), _cv_K(dst)
    if lens.fisheye:
        mx, my = cv2.fisheye.initUndistortRectifyMap(
            K, _dist(lens), np.eye(3), K_new, size, cv2.CV_32FC1
        )
    else:
        mx, my = cv2.initUndistortRectifyMap(K, _dist(lens), None, K_new, size, cv2.CV_32FC1)
    return mx, my


def remap_linear(
    image: np.ndarray,  # [H,W,C] float32, C <= 4
    maps: tuple[np.ndarray, np.ndarray],
) -> np.ndarray:  # [h,w,C] float32
    """Bilinear resampling at the map positions; outside the photo the border pixel repeats."""
    cv2 = _cv2()
    out = cv2.remap(
        np.ascontiguousarray(image, dtype=np.float32),
        maps[0],
        maps[1],
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    return out.reshape(*maps[0].shape, image.shape[-1])


def remap_nearest(
    values: np.ndarray,  # [H,W] any dtype
    maps: tuple[np.ndarray, np.ndarray],
) -> np.ndarray:  # [h,w]
    """The photo pixel whose centre is nearest to each map position (any dtype: label ids stay
    label ids); positions outside the photo take the nearest border pixel."""
    h, w = values.shape
    cols = np.clip(np.floor(maps[0] + 0.5).astype(np.int64), 0, w - 1)
    rows = np.clip(np.floor(maps[1] + 0.5).astype(np.int64), 0, h - 1)
    return values[rows, cols]


def _camera_key(camera: Camera) -> tuple:
    return (tuple(camera.K.flatten().tolist()), camera.width, camera.height)


class MapCache:
    """Remap tables per (photo camera, lens, target camera), least recently used dropped
    beyond `capacity` (a 4K table pair is ~66 MB). Safe to share between threads."""

    def __init__(self, capacity: int = 8) -> None:
        self.capacity = capacity
        self._maps: OrderedDict[tuple, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, src: Camera, lens: Lens, dst: Camera) -> tuple[np.ndarray, np.ndarray]:
        key = (_camera_key(src), lens, _camera_key(dst))
        with self._lock:
            if key in self._maps:
                self._maps.move_to_end(key)
                return self._maps[key]
        maps = undistort_maps(src, lens, dst)
        with self._lock:
            self._maps[key] = maps
            while len(self._maps) > self.capacity:
                self._maps.popitem(last=False)
        return maps

    def __len__(self) -> int:
        return len(self._maps)
