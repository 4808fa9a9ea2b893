"""scenelab's base layer: Gaussian scenes, file formats, cameras and datasets, rendering.

Public names are re-exported here; everything in `_modules` is private.
"""

from .camera import Camera, cameras_from_meta, cameras_to_meta
from .conventions import (
    DEFAULT_UP,
    UpAxis,
    framing_sphere,
    framing_view,
    horizontal_basis,
    orbit_cameras,
    parse_up,
    robust_bounds,
    scene_up,
    up_vector,
)
from .datasets import Dataset, DatasetError, load_dataset
from .errors import SceneFormatError
from .formats import ExportOptions, load_scene, save_scene
from .rendering import RenderOutput, render
from .scene import GaussianScene

__all__ = [
    "DEFAULT_UP",
    "Camera",
    "Dataset",
    "DatasetError",
    "ExportOptions",
    "GaussianScene",
    "RenderOutput",
    "SceneFormatError",
    "UpAxis",
    "cameras_from_meta",
    "cameras_to_meta",
    "framing_sphere",
    "framing_view",
    "horizontal_basis",
    "load_dataset",
    "load_scene",
    "orbit_cameras",
    "parse_up",
    "render",
    "robust_bounds",
    "save_scene",
    "scene_up",
    "up_vector",
]
