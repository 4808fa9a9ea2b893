"""Benchmark densifying text edits (`TextEditConfig(densify=True)`) on the bundled demo world
(145k Gaussians), CPU, tiny random-weight pipeline (`make_tiny_pipeline`), 128 px views, DDS.

Timed, in the same process:
- baseline: the non-densifying edit of the cup with the same optimised parameters (colour,
  opacity, scale, position), steps per second;
- the densifying edit (clone/split every `--densify-every` steps over the whole run, anchor loss,
  margin box), steps per second, with the object's Gaussian count before and after.

    python benchmarks/edit_densify.py [--out results.json] [--threads 2] [--steps 30]
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads libgomp

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import torch
from _common import emit, ensure_repo_on_path, machine_info, timeit

ensure_repo_on_path()

from assets import DEMO_DIR  # noqa: E402
from editing.score_distillation import make_tiny_pipeline  # noqa: E402
from editing.text_edit import TextEditConfig, load_edit_distiller, text_edit_result  # noqa: E402
from fields import load_scene  # noqa: E402

PARAMS = ("color", "opacity", "scale", "position")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--steps", type=int, default=30, help="text_edit steps per timing")
    parser.add_argument("--densify-every", type=int, default=5)
    parser.add_argument("--size", type=int, default=128, help="edit view size in pixels")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    scene = load_scene(DEMO_DIR / "scene.ply")
    labels = json.loads((DEMO_DIR / "labels.json").read_text())
    cup = scene.extras["label"] == next(int(k) for k, v in labels.items() if v == "cup")
    out: dict[str, Any] = {
        "benchmark": "edit_densify",
        "machine": machine_info(),
        "num_gaussians": len(scene),
        "selected": int(cup.sum()),
        "steps": args.steps,
        "size": args.size,
    }
    common = {
        "prompt": "a tall marble cup",
        "source_prompt": "a cup",
        "method": "dds",
        "steps": args.steps,
        "size": args.size,
        "params": PARAMS,
        "preview_every": 10**6,
    }
    configs = {
        "baseline_no_densify": TextEditConfig(**common),
        "densify": TextEditConfig(
            **common,
            densify=True,
            densify_every=args.densify_every,
            densify_from=0.0,
            densify_until=1.0,
        ),
    }
    with tempfile.TemporaryDirectory() as tmp:
        model = make_tiny_pipeline(Path(tmp) / "tiny")
        distiller = load_edit_distiller(str(model))
        for name, config in configs.items():
            last: dict[str, Any] = {}

            def run(c=config, last=last) -> None:
                last["result"] = text_edit_result(scene, cup, distiller, c)

            t = timeit(run, repeat=args.repeat)
            res = last["result"]
            out[name] = {
                **t,
                "steps_per_s": round(args.steps / (t["median_ms"] / 1e3), 2),
                "object_gaussians": int(res.mask.sum()),
                "born": res.born,
                "pruned": res.pruned,
            }
    out["densify_vs_baseline_speed"] = round(
        out["densify"]["steps_per_s"] / out["baseline_no_densify"]["steps_per_s"], 2
    )
    emit(out, args.out)
    return out


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
