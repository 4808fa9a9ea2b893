"""Editing: pure ops on selections of Gaussians, model-free selection, undo/redo history,
grasp candidates (`editing.grasp`), SDS/DDS score distillation (`editing.score_distillation`),
text edits of a selection (and of a NeRF inside a region, `nerf_text_edit`), object insertion
and semantics that survive edits (`editing.semantics`).

`editing` imports `fields` and never `app`; diffusers and transformers load only when a model
is loaded.
"""

from . import semantics
from ._nerf_edit import NerfEditConfig, nerf_edit_views, nerf_region, nerf_text_edit
from .grasp import (
    Grasp,
    GraspConfig,
    GraspResult,
    GripperConfig,
    grasps_to_json,
    gripper_mesh,
    plan_grasps,
    save_grasps,
    surface_normals,
)
from .history import History
from .insertion import (
    Placement,
    SupportPlane,
    TextTo3DConfig,
    find_free_spot,
    fit_support_plane,
    footprint,
    insert_object,
    load_asset,
    place_object,
    place_on_support,
    text_to_3d,
)
from .ops import check_mask, delete, duplicate, isolate, pivot_transform, recolor, transform, unhide
from .score_distillation import (
    DistillationConfig,
    ScoreDistiller,
    load_distiller,
    make_tiny_pipeline,
)
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
from .text_edit import TextEditConfig, edit_views, sample_edit_views, text_edit

__all__ = [
    "DistillationConfig",
    "Grasp",
    "GraspConfig",
    "GraspResult",
    "GripperConfig",
    "History",
    "NerfEditConfig",
    "Placement",
    "ScoreDistiller",
    "SupportPlane",
    "TextEditConfig",
    "TextTo3DConfig",
    "check_mask",
    "combine",
    "delete",
    "duplicate",
    "edit_views",
    "find_free_spot",
    "fit_support_plane",
    "footprint",
    "grasps_to_json",
    "gripper_mesh",
    "grow",
    "insert_object",
    "isolate",
    "load_asset",
    "load_distiller",
    "make_tiny_pipeline",
    "nerf_edit_views",
    "nerf_region",
    "nerf_text_edit",
    "pick",
    "pivot_transform",
    "pixel_ray",
    "place_object",
    "place_on_support",
    "plan_grasps",
    "ray_hits",
    "recolor",
    "sample_edit_views",
    "save_grasps",
    "select_box",
    "select_rect",
    "select_sphere",
    "semantics",
    "surface_normals",
    "text_edit",
    "text_to_3d",
    "transform",
    "unhide",
    "visible",
]
