"""Parallel-jaw grasp candidates on a Gaussian-splat object.

    result = plan_grasps(scene, target_mask)            # top-10, Panda-like gripper, metres
    result.grasps[0].T_world_gripper                    # [4,4] x closing, z approach
    save_grasps("grasps.json", result, GripperConfig())

Surface points are the target's Gaussian means with their shortest axis as normal (floaters,
transparent and oversized splats dropped). Antipodal pairs come from lines along seed normals,
with contacts where closing fingers stop and both normals inside the friction cone. Approach
directions sweep around each closing axis; a candidate is rejected when its fingers, the region
they close over or its palm meet an opaque non-target Gaussian, when any part dips under the
support plane, or when a finger cuts into the target away from its contact. Survivors are
scored by antipodality, approach alignment with the facing surface's normal, clearance and
centring, and the best diverse top-k returned.
"""

from ._gripper import Grasp, GripperConfig, OrientedBox, gripper_boxes, gripper_mesh
from ._io import grasps_to_json, save_grasps
from ._plan import GraspConfig, GraspResult, plan_grasps
from ._score import COMPONENTS, QualityWeights, centre_of_mass
from ._surface import surface_normals
from ._target import object_at

__all__ = [
    "COMPONENTS",
    "Grasp",
    "GraspConfig",
    "GraspResult",
    "GripperConfig",
    "OrientedBox",
    "QualityWeights",
    "centre_of_mass",
    "grasps_to_json",
    "gripper_boxes",
    "gripper_mesh",
    "object_at",
    "plan_grasps",
    "save_grasps",
    "surface_normals",
]
