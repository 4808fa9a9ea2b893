"""Open the bundled demo world (`assets/demo/`: a synthetic tabletop with labelled objects and its
camera rig) in the browser viewer, ready to query: its oracle feature field is lifted as a job
when it opens (dataset-free, from the scene's labels; seconds). Same server options as `view`."""

from __future__ import annotations

import argparse
import sys
import time

from .view import add_feature_arguments, add_server_arguments, serve

HELP = "open the bundled demo world in the browser viewer"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_server_arguments(p)
    add_feature_arguments(p)
    p.add_argument(
        "--no-lift",
        action="store_true",
        help="do not lift the oracle feature field when the demo opens (it takes seconds and "
        "makes the scene queryable at once)",
    )


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    from assets import DEMO_DIR

    args.lift_on_open = args.features is None and not args.no_lift

    def load() -> dict:
        from fields import load_dataset, load_scene

        scene_path = DEMO_DIR / "scene.ply"
        if scene_path.is_file():
            has_views = (DEMO_DIR / "transforms.json").is_file()
            dataset = load_dataset(DEMO_DIR) if has_views else None
            return {
                "scene": load_scene(scene_path),
                "cameras": dataset.cameras if dataset is not None else [],
                "dataset": dataset,
                "source": scene_path,
                "title": "demo world",
            }
        # A source checkout without the bundled files: build the same world (seed 0) in memory.
        from fields.synthetic import make_world

        print(
            f"scenelab demo: {scene_path} is missing; generating the seed-0 world in memory "
            "(`scenelab make-demo assets/demo --seed 0` bundles it)",
            file=sys.stderr,
        )
        world = make_world(0)
        return {"scene": world.scene, "cameras": world.cameras, "title": "demo world"}

    return serve(args, load, t0=t0)
