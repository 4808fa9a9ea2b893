"""NeRF scenes: an Instant-NGP style radiance field (multi-resolution hash grid, small MLPs,
occupancy grid) that trains, renders, distils features and converts to and from Gaussians.

    scene = load_nerf("mic.nerf")
    out = render_nerf(scene, camera, background=(1, 1, 1))   # rgb, alpha, depth [H,W,...]

On CPU the hash encoding and the ray marcher are compiled kernels (`fields._nerf_cpu`); on CUDA
(or without the kernels) the same functions run in plain torch. Files: see `_io`.
"""

from ._convert import (
    ConvertConfig,
    conversion_views,
    converted_feature_field,
    gaussians_to_nerf,
    nerf_box,
    nerf_to_gaussians,
)
from ._encoding import GridLayout, grid_layout, hash_encode, hash_encode_reference
from ._features import (
    EditedNerfField,
    NerfDistillConfig,
    NerfQuery,
    QueryRegion,
    RegionEdit,
    distill_nerf,
    nerf_query_region,
    nerf_relevancy,
)
from ._field import NerfField, NerfModelConfig, SceneBox
from ._io import is_nerf_path, load_nerf, save_nerf
from ._march import MarchSettings, Samples, composite_weights, march_rays, ray_bounds
from ._scene import NerfRender, NerfScene, RayOutput, camera_rays, render_nerf
from ._trainer import NerfStepStats, NerfTrainConfig, NerfTrainer, scene_box

__all__ = [
    "ConvertConfig",
    "EditedNerfField",
    "GridLayout",
    "MarchSettings",
    "NerfDistillConfig",
    "NerfField",
    "NerfModelConfig",
    "NerfQuery",
    "NerfRender",
    "NerfScene",
    "NerfStepStats",
    "NerfTrainConfig",
    "NerfTrainer",
    "QueryRegion",
    "RayOutput",
    "RegionEdit",
    "Samples",
    "SceneBox",
    "camera_rays",
    "composite_weights",
    "conversion_views",
    "converted_feature_field",
    "distill_nerf",
    "gaussians_to_nerf",
    "grid_layout",
    "hash_encode",
    "hash_encode_reference",
    "is_nerf_path",
    "load_nerf",
    "march_rays",
    "nerf_box",
    "nerf_query_region",
    "nerf_relevancy",
    "nerf_to_gaussians",
    "ray_bounds",
    "render_nerf",
    "save_nerf",
    "scene_box",
]
