"""`DatasetError`: what every dataset loader raises for a dataset it refuses to read."""

from __future__ import annotations

from ..errors import SceneFormatError


class DatasetError(SceneFormatError):
    """A dataset (camera file, transforms.json, image or per-view map) cannot be read or is
    refused: malformed, inconsistent, an image too large to decode safely (a decompression
    bomb), or a path that leads outside the dataset folder. The message names the file and the
    problem. A `SceneFormatError` subclass, so code that catches that keeps working."""
