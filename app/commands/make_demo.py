"""Write a synthetic metric tabletop world with ground truth: scene.ply (per-Gaussian `label`),
labels.json, transforms.json with rendered views in images/ and per-view label maps in labels/.

Like a real capture, the table top holds no Gaussians under an object. `--without NAME` writes
the same world (layout, colours, label ids, views) without that object and with the table fully
sampled where it stood: what a perfect removal would look like (`scenelab remove` is judged
against it)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

HELP = "write a synthetic tabletop world with ground-truth labels"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out_dir", type=Path, help="output folder (must be empty or missing)")
    p.add_argument("--seed", type=int, default=0, help="random seed: objects, placement, colours")
    p.add_argument("--views", type=int, default=32, help="number of rendered views (>= 1)")
    p.add_argument("--width", type=int, default=320, help="image width in pixels")
    p.add_argument("--height", type=int, default=240, help="image height in pixels")
    p.add_argument(
        "--without",
        action="append",
        default=[],
        metavar="NAME",
        help="leave this object out (repeatable; names as in labels.json, e.g. mug): the "
        "ground truth of removing it",
    )
    p.add_argument(
        "--no-carve",
        action="store_true",
        help="sample the table top under the objects too (a capture never sees it)",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace the contents of a non-empty out_dir"
    )


def run(args: argparse.Namespace) -> int:
    from fields.synthetic import WorldConfig, make_world, write_world

    if args.views < 1 or args.width < 1 or args.height < 1:
        raise ValueError("--views, --width and --height must be positive")
    t0 = time.perf_counter()
    config = WorldConfig(carve_support=not args.no_carve)
    world = make_world(args.seed, config=config, without=args.without)
    out = write_world(
        world,
        args.out_dir,
        n_views=args.views,
        width=args.width,
        height=args.height,
        overwrite=args.overwrite,
    )
    names = ", ".join(world.label_names[k] for k in sorted(world.label_names) if k != 0)
    left_out = f" (without {', '.join(world.without)})" if world.without else ""
    print(
        f"wrote {out}: {len(world.scene)} Gaussians (table + {names}){left_out}, "
        f"{args.views} views at {args.width}x{args.height} in {time.perf_counter() - t0:.1f} s"
    )
    return 0
