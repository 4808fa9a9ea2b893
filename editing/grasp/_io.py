"""Grasps as JSON: `{"grasps": [...], "gripper": {...}, "units": ..., "message": ...}`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fields.formats import write_files

from ._gripper import GripperConfig
from ._plan import GraspResult


def grasps_to_json(
    result: GraspResult, gripper: GripperConfig, units: str = "metres"
) -> dict[str, Any]:
    """JSON-able record: per grasp `pose` (4x4 gripper-to-world: x closing, z approach, origin
    between the contacts), `width`, `contacts` [[x,y,z],[x,y,z]], `score` and `scores`; the
    gripper's dimensions, the units, the planner's message and counts."""
    return {
        "grasps": [
            {
                "pose": g.T_world_gripper.tolist(),
                "width": g.width,
                "contacts": g.contacts.tolist(),
                "score": g.score,
                "scores": dict(g.scores),
            }
            for g in result.grasps
        ],
        "gripper": gripper.to_json(),
        "units": units,
        "message": result.message,
        "stats": json.loads(json.dumps(result.stats, default=float)),
    }


def save_grasps(
    path: str | Path,
    result: GraspResult,
    gripper: GripperConfig,
    *,
    units: str = "metres",
    overwrite: bool = False,
) -> Path:
    """Write `grasps_to_json` to `path` atomically; `FileExistsError` when it exists and
    `overwrite` is False."""
    path = Path(path)
    blob = (json.dumps(grasps_to_json(result, gripper, units), indent=2) + "\n").encode()
    write_files([(path, lambda f: f.write(blob))], overwrite=overwrite)
    return path
