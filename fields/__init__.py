"""scenelab's base layer: Gaussian scenes, file formats, cameras and datasets, rendering.

Public names are re-exported here; everything in `_modules` is private.
"""

from .camera import Camera
from .datasets import Dataset, load_dataset
from .errors import SceneFormatError
from .formats import load_scene, save_scene
from .rendering import RenderOutput, render
from .scene import GaussianScene

__all__ = [
    "Camera",
    "Dataset",
    "GaussianScene",
    "RenderOutput",
    "SceneFormatError",
    "load_dataset",
    "load_scene",
    "render",
    "save_scene",
]
