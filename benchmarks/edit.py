"""Benchmark live edits on the bundled demo world (145k Gaussians), CPU, tiny random pipeline.

Timed:
- "Edit pressed -> first preview" in a fresh Python process, as the viewer's Text edit job does
  it: import diffusers, load the tiny pipeline (`make_tiny_pipeline`, `load_edit_distiller`),
  sample views around the selection (the cup) and run `text_edit` until its first preview
  (target: within 10 s on CPU). Baseline in the same run: the same with everything imported and
  loaded already (what a second edit in the same viewer costs).
- `text_edit` steps per second at 128 px (DDS, VAE latents and the cheap RGB->latent mode).
- `place_object` of a bundled asset on the table (support fit, free spot, resting).

    python benchmarks/edit.py [--out results.json] [--threads 2] [--steps 10]
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads libgomp

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _common import REPO_ROOT, emit, ensure_repo_on_path, machine_info, timeit

ensure_repo_on_path()

import editing  # noqa: E402
from assets import DEMO_DIR, OBJECTS_DIR  # noqa: E402
from fields import load_scene  # noqa: E402

# Runs in a fresh interpreter: what pressing Edit costs before the first preview.
_FIRST_PREVIEW = r"""
import os, sys, time, json
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
t0 = time.perf_counter()
import torch
torch.set_num_threads({threads})
sys.path.insert(0, {repo!r})
from fields import load_scene
scene = load_scene({scene!r})
labels = json.loads(open({labels!r}).read())
cup = [int(k) for k, v in labels.items() if v == "cup"][0]
mask = scene.extras["label"] == cup
t_pressed = time.perf_counter()
from editing.text_edit import TextEditConfig, load_edit_distiller, text_edit
distiller = load_edit_distiller({model!r})
t_loaded = time.perf_counter()
first = []
class Stop(Exception):
    pass
def on_step(step, steps, preview):
    if preview is not None:
        first.append(time.perf_counter())
        raise Stop
try:
    text_edit(scene, mask, distiller, TextEditConfig(prompt="a marble cup", steps=50, size=128),
              on_step=on_step)
except Stop:
    pass
print(json.dumps({{"load_scene_s": t_pressed - t0, "import_and_load_model_s": t_loaded - t_pressed,
                  "first_preview_s": first[0] - t_pressed}}))
"""


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--steps", type=int, default=10, help="text_edit steps per timing")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()

    scene = load_scene(DEMO_DIR / "scene.ply")
    labels = json.loads((DEMO_DIR / "labels.json").read_text())
    cup = scene.extras["label"] == next(int(k) for k, v in labels.items() if v == "cup")
    out: dict[str, Any] = {
        "benchmark": "edit",
        "machine": machine_info(),
        "num_gaussians": len(scene),
        "selected": int(cup.sum()),
    }
    with tempfile.TemporaryDirectory() as tmp:
        model = editing.make_tiny_pipeline(Path(tmp) / "tiny")
        code = _FIRST_PREVIEW.format(
            threads=threads,
            repo=str(REPO_ROOT),
            scene=str(DEMO_DIR / "scene.ply"),
            labels=str(DEMO_DIR / "labels.json"),
            model=str(model),
        )
        fresh = []
        for _ in range(max(1, args.repeat)):
            run = subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, check=True
            )
            fresh.append(json.loads(run.stdout.strip().splitlines()[-1]))
        first = sorted(f["first_preview_s"] for f in fresh)
        out["fresh_process"] = {
            "first_preview_s_median": round(first[len(first) // 2], 2),
            "first_preview_s_max": round(first[-1], 2),
            "import_and_load_model_s": [round(f["import_and_load_model_s"], 2) for f in fresh],
            "target_s": 10.0,
        }

        from editing.text_edit import TextEditConfig, load_edit_distiller, text_edit

        for mode in ("vae", "rgb"):
            distiller = load_edit_distiller(str(model), latent_mode=mode)

            def first_preview(d=distiller) -> None:
                class Stop(Exception):
                    pass

                def on_step(step, steps, preview):
                    if preview is not None:
                        raise Stop

                try:
                    text_edit(
                        scene,
                        cup,
                        d,
                        TextEditConfig("a marble cup", steps=5, size=128),
                        on_step=on_step,
                    )
                except Stop:
                    pass

            config = TextEditConfig("a marble cup", steps=args.steps, size=128, preview_every=10**6)
            t = timeit(
                lambda d=distiller, c=config: text_edit(scene, cup, d, c), repeat=args.repeat
            )
            out[f"text_edit_{mode}"] = {
                **t,
                "steps": args.steps,
                "steps_per_s": round(args.steps / (t["median_ms"] / 1e3), 2),
            }
            if mode == "vae":
                out["warm_first_preview"] = timeit(first_preview, repeat=args.repeat)
        out["ratio_fresh_vs_warm_first_preview"] = round(
            out["fresh_process"]["first_preview_s_median"]
            / (out["warm_first_preview"]["median_ms"] / 1e3),
            1,
        )

    obj = editing.load_asset(OBJECTS_DIR / "can.ply")
    table = scene.extras["label"] == 0
    t0 = time.perf_counter()
    placement = editing.place_object(scene, obj, table, name="can")
    out["place_object_first_s"] = round(time.perf_counter() - t0, 2)
    out["place_object"] = timeit(
        lambda: editing.place_object(scene, obj, table, name="can"), repeat=args.repeat
    )
    out["place_gap_mm"] = round(placement.gap * 1000, 3)
    emit(out, args.out)
    return out


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
