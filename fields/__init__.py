"""scenelab's base layer: Gaussian scenes, file formats, cameras and datasets, rendering.

Public names are re-exported here; everything in `_modules` is private.
"""

from .camera import Camera, cameras_from_meta, cameras_to_meta
from .camera_path import (
    CameraPath,
    CameraPathFile,
    Keyframe,
    camera_path_from_json,
    camera_path_to_json,
    load_camera_path,
    save_camera_path,
)
from .conventions import (
    DEFAULT_UP,
    ESTIMATE_MIN_CONFIDENCE,
    UpAxis,
    UpEstimate,
    estimate_up,
    framing_sphere,
    framing_view,
    horizontal_basis,
    orbit_cameras,
    parse_up,
    robust_bounds,
    scene_up,
    support_side,
    up_vector,
)
from .datasets import Dataset, DatasetError, load_dataset
from .errors import SceneFormatError
from .formats import ExportOptions, load_scene, save_scene
from .rendering import RenderOutput, render
from .scene import GaussianScene

__all__ = [
    "DEFAULT_UP",
    "ESTIMATE_MIN_CONFIDENCE",
    "Camera",
    "CameraPath",
    "CameraPathFile",
    "Dataset",
    "DatasetError",
    "ExportOptions",
    "GaussianScene",
    "Keyframe",
    "RenderOutput",
    "SceneFormatError",
    "UpAxis",
    "UpEstimate",
    "camera_path_from_json",
    "camera_path_to_json",
    "cameras_from_meta",
    "cameras_to_meta",
    "estimate_up",
    "framing_sphere",
    "framing_view",
    "horizontal_basis",
    "load_camera_path",
    "load_dataset",
    "load_scene",
    "orbit_cameras",
    "parse_up",
    "render",
    "robust_bounds",
    "save_camera_path",
    "save_scene",
    "scene_up",
    "support_side",
    "up_vector",
]
