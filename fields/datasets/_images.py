"""Decoding images and per-view maps, and fitting them to cameras.

Pure functions over PIL and numpy; the `Dataset` decides which file to read and which camera it
should match."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..camera import Camera
from ._errors import DatasetError

# Modes whose pixels are 16-bit (or wider) integers: 16-bit PNGs decode to one of these,
# depending on the Pillow version.
_WIDE_INT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def _open(path: Path) -> Image.Image:
    """`Image.open` (header only) with PIL's decompression-bomb guard made strict: images over
    `PIL.Image.MAX_IMAGE_PIXELS` (89.5M pixels by default; PIL only warns up to twice that)
    are refused with a `DatasetError` before any pixel is decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(path)
    except (FileNotFoundError, PermissionError):
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        raise DatasetError(
            path,
            f"image is too large to decode safely ({e}); if it is genuine, raise "
            "PIL.Image.MAX_IMAGE_PIXELS before loading the dataset",
        ) from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DatasetError(path, f"cannot decode image: {e}") from e


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header; no pixel data is decoded."""
    with _open(path) as im:
        return im.size


def read_rgb(path: Path, background: tuple[float, float, float]) -> np.ndarray:
    """Any image mode -> float32 [H,W,3] in [0,1]; alpha is composited over `background`."""
    with _open(path) as im:
        try:
            im.load()
            return _to_rgb(im, background)
        except (OSError, SyntaxError, ValueError, MemoryError) as e:
            raise DatasetError(path, f"cannot decode image: {str(e) or type(e).__name__}") from e


def read_rgba(path: Path) -> np.ndarray:
    """Any image mode -> float32 [H,W,4] in [0,1]: straight (not premultiplied) colour and
    alpha; alpha is 1 for images without one."""
    with _open(path) as im:
        try:
            im.load()
            if _has_alpha(im):
                return np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
            rgb = _to_rgb(im, (0.0, 0.0, 0.0))
        except (OSError, SyntaxError, ValueError, MemoryError) as e:
            raise DatasetError(path, f"cannot decode image: {str(e) or type(e).__name__}") from e
    return np.concatenate([rgb, np.ones_like(rgb[..., :1])], axis=-1)


def has_alpha(path: Path) -> bool:
    """Whether the image has an alpha channel (or a transparent colour), from its header."""
    with _open(path) as im:
        return _has_alpha(im)


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in _ALPHA_MODES or "transparency" in im.info


def _to_rgb(im: Image.Image, background: tuple[float, float, float]) -> np.ndarray:
    if im.mode in _WIDE_INT_MODES:
        gray = np.asarray(im).astype(np.float32) / 65535.0
        return np.repeat(np.clip(gray, 0.0, 1.0)[..., None], 3, axis=-1)
    if im.mode == "F":
        gray = np.asarray(im, dtype=np.float32)
        return np.repeat(np.clip(gray, 0.0, 1.0)[..., None], 3, axis=-1)
    if _has_alpha(im):
        rgba = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
        alpha = rgba[..., 3:]
        bg = np.asarray(background, dtype=np.float32)
        return rgba[..., :3] * alpha + bg * (1.0 - alpha)
    return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0


def resize_area(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """Box-filter resize of a float [H,W,C] image (exact area averaging when shrinking)."""
    if rgb.shape[1] == width and rgb.shape[0] == height:
        return rgb
    channels = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(rgb[..., c])).resize(
                (width, height), Image.Resampling.BOX
            )
        )
        for c in range(rgb.shape[-1])
    ]
    return np.stack(channels, axis=-1).astype(np.float32, copy=False)


def read_map(path: Path) -> np.ndarray:
    """A single-channel map: integer modes -> int64 [H,W] (raw values, e.g. label ids; palette
    images give their indices), mode 'F' -> float32 [H,W]. RGB is accepted only when it is gray."""
    with _open(path) as im:
        try:
            im.load()
            if im.mode in ("L", "P", "1", *_WIDE_INT_MODES):
                return np.asarray(im).astype(np.int64)
            if im.mode == "F":
                return np.asarray(im, dtype=np.float32)
            if im.mode == "RGB":
                rgb = np.asarray(im)
                if (rgb == rgb[..., :1]).all():
                    return rgb[..., 0].astype(np.int64)
        except (OSError, SyntaxError, ValueError, MemoryError) as e:
            raise DatasetError(path, f"cannot decode map: {str(e) or type(e).__name__}") from e
        raise DatasetError(path, f"expected a single-channel map, got image mode {im.mode!r}")


def resize_nearest(values: np.ndarray, width: int, height: int) -> np.ndarray:
    """Nearest-neighbour resize of [H,W] (sampling at pixel centres), any dtype."""
    h, w = values.shape[:2]
    if (w, h) == (width, height):
        return values
    rows = np.minimum(((np.arange(height) + 0.5) * (h / height)).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * (w / width)).astype(np.int64), w - 1)
    return values[rows[:, None], cols[None, :]]


# ---------------------------------------------------------------------- sizes and cameras
def is_uniform_rescale(width: int, height: int, file_w: int, file_h: int) -> bool:
    """Whether a file of `file_w x file_h` is the `width x height` picture rescaled by one factor,
    allowing each side to be rounded (floor, ceil or nearest) independently."""
    lo = max((file_w - 1) / width, (file_h - 1) / height)
    hi = min((file_w + 1) / width, (file_h + 1) / height)
    return lo <= hi


def camera_at_size(calibrated: Camera, width: int, height: int) -> Camera:
    """`calibrated` resampled to exactly `width x height` (K scaled per axis by the size ratio)."""
    if (width, height) == (calibrated.width, calibrated.height):
        return calibrated
    K = calibrated.K.clone()
    K[0] *= width / calibrated.width
    K[1] *= height / calibrated.height
    return Camera(K, calibrated.viewmat, width, height, calibrated.name)


def fit_camera(calibrated: Camera, nominal: Camera, file_w: int, file_h: int, path: Path) -> Camera:
    """The camera an image file of `file_w x file_h` is delivered with.

    `calibrated` is the camera as stored in the dataset file, `nominal` the one the caller asked
    for (calibrated / downscale). Rules:
      - file size == nominal size: `nominal`.
      - the file is not a uniform rescale of the calibrated size: DatasetError.
      - the file is at least the nominal size: `nominal` (the image is area-downsampled to it).
      - the file is smaller (pre-downscaled folder rounded down, or images stored below the
        calibration's resolution): the calibrated camera scaled to the file's size; images are
        never upsampled.
    """
    if (file_w, file_h) == (nominal.width, nominal.height):
        return nominal
    check_rescale(calibrated, file_w, file_h, path)
    if file_w >= nominal.width and file_h >= nominal.height:
        return nominal
    return camera_at_size(calibrated, file_w, file_h)


def check_rescale(calibrated: Camera, file_w: int, file_h: int, path: Path) -> None:
    """DatasetError unless a `file_w x file_h` file is the calibrated picture rescaled."""
    if not is_uniform_rescale(calibrated.width, calibrated.height, file_w, file_h):
        raise DatasetError(
            path,
            f"image is {file_w}x{file_h} but its camera is {calibrated.width}x{calibrated.height}, "
            "which is not a uniform rescale; the intrinsics do not belong to this image",
        )


def to_tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array))
