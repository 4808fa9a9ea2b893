"""Parallel-jaw grasp candidates on one object of a scene, written as JSON.

The object is a bool [N] mask (--selection, e.g. from `scenelab query`) or a language query on a
feature field (--features F "TEXT"). The JSON holds the top-k grasps, best first: "pose" (4x4
gripper-to-world; x = closing direction, z = approach direction, origin between the contacts),
"width" (opening at contact), "contacts" ([[x,y,z],[x,y,z]]), "score" and its components
"scores"; plus "gripper" (dimensions), "units" and the planner's "message". An object that no
grasp fits (e.g. wider than the opening in every direction) is not an error: the file is written
with an empty "grasps" list, the message is printed, and the exit code is 0. Scene units are
assumed metric (the gripper's dimensions are metres)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "parallel-jaw grasp candidates on an object (writes JSON)"

_METRES = {"m", "metre", "metres", "meter", "meters"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("scene", type=Path, help="scene file (.ply, .splat, .spz)")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--selection", type=Path, help="bool [N] .npy mask of the object")
    target.add_argument(
        "--features",
        nargs=2,
        metavar=("F", "TEXT"),
        help="feature field .safetensors and a text query naming the object",
    )
    p.add_argument("--top-k", type=int, default=10, help="number of grasps to keep")
    p.add_argument("--out", type=Path, required=True, help="output .json")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--max-opening", type=float, default=0.08, help="gripper stroke (metres)")
    p.add_argument("--friction", type=float, default=0.4, help="friction coefficient at the pads")
    p.add_argument("--samples", type=int, default=300, help="seed points on the object surface")
    p.add_argument("--seed", type=int, default=0, help="random seed of the sampling")
    p.add_argument(
        "--up",
        type=float,
        nargs=3,
        default=None,
        help="world up as three numbers (default: the scene's recorded up, else its cameras' mean "
        "up, else estimated from its floor or table, else -y)",
    )


def _query_mask(scene_path: Path, field_path: Path, text: str, scene):
    from ._features import load_field_for, require_match, text_query

    field = load_field_for(field_path, scene_path, scene, "grasp")
    return require_match(text_query(field, text), text).cpu()


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from editing.grasp import GraspConfig, GripperConfig, plan_grasps, save_grasps
    from fields import load_scene

    if args.out.exists() and not args.overwrite:
        raise FileExistsError(f"{args.out} exists (pass --overwrite to replace it)")
    if args.top_k < 1 or args.samples < 1:
        raise ValueError("--top-k and --samples must be at least 1")
    scene = load_scene(args.scene)
    if args.selection is not None:
        mask = np.load(args.selection, allow_pickle=False)
        if mask.shape != (len(scene),):
            raise ValueError(
                f"{args.selection} has shape {mask.shape}, the scene has {len(scene)} Gaussians"
            )
        target = torch.from_numpy(mask.astype(bool))
    else:
        target = _query_mask(args.scene, Path(args.features[0]), args.features[1], scene)
    if not bool(target.any()):
        raise ValueError("the target is empty: nothing to grasp")
    units = str(scene.meta.get("units", "m"))
    if units.lower() not in _METRES:
        print(
            f"scenelab grasp: warning: the scene's units are {units!r}; gripper sizes are metres",
            file=sys.stderr,
        )
    defaults = GripperConfig()
    gripper = GripperConfig(
        max_opening=args.max_opening,
        friction=args.friction,
        palm_width=max(defaults.palm_width, args.max_opening + 2 * defaults.finger_thickness),
    )
    config = GraspConfig(top_k=args.top_k, n_samples=args.samples, seed=args.seed)
    result = plan_grasps(scene, target, gripper, config, up=args.up)
    save_grasps(
        args.out,
        result,
        gripper,
        units="metres" if units.lower() in _METRES else units,
        overwrite=args.overwrite,
    )
    if result.grasps:
        best = result.grasps[0]
        print(
            f"{len(result.grasps)} grasps on {int(target.sum())} Gaussians (best score "
            f"{best.score:.3f}, opening {best.width * 100:.1f} cm) -> {args.out}"
        )
    else:
        print(f"{result.message} -> {args.out}")
    return 0
