"""Editing: pure ops on selections of Gaussians, model-free selection, and undo/redo history.

`editing` imports `fields` and never `app`.
"""

from .history import History
from .ops import check_mask, delete, duplicate, isolate, pivot_transform, recolor, transform, unhide
from .selection import (
    combine,
    grow,
    pick,
    pixel_ray,
    ray_hits,
    select_box,
    select_rect,
    select_sphere,
    visible,
)

__all__ = [
    "History",
    "check_mask",
    "combine",
    "delete",
    "duplicate",
    "grow",
    "isolate",
    "pick",
    "pivot_transform",
    "pixel_ray",
    "ray_hits",
    "recolor",
    "select_box",
    "select_rect",
    "select_sphere",
    "transform",
    "unhide",
    "visible",
]
