"""Benchmark `accumulate_weights` (per-Gaussian sums of blending weights, training-free lifting)
on the demo world against the autograd route, in the same run.

The bundled demo (`assets/demo/scene.ply`, ~145k Gaussians) from its first view, at 320x240 (the
dataset's camera) and 512x512 (same pose and focal length scaled with the width), with a value
map of C = 17 channels (e.g. 16 feature channels and a mask). Per resolution, median ms per view:

- `kernel`: `accumulate_weights(scene, camera, values)` on CPU (projection + forward-only pass),
- `kernel_totals`: the same without values (total weights only),
- `kernel_pass`: the compiled pass alone on precomputed splats (`accumulate_splats`),
- `autograd`: `accumulate_weights_autograd` with backend "cpu" (render of C + 1 zero feature
  channels, backward of [V, 1]): the route `fields.features` lifting took before,

and the ratio autograd / kernel, plus the largest relative difference of the two results.

`--clock cpu` times single-threaded runs by the calling thread's CPU time instead of wall time:
on cores shared with other work, wall times of a 2-thread run swing by 2x while CPU time stays
put (the work is the same; only who else runs differs).

    python benchmarks/accumulate.py [--out results.json] [--threads 2] [--repeat 5] [--clock cpu]
"""

from __future__ import annotations

import os
import sys

if "--omp-spin" not in sys.argv:  # must happen before torch (libgomp) is loaded; see render.py
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from _common import REPO_ROOT, emit, ensure_repo_on_path, machine_info, timeit

ensure_repo_on_path()

from fields import Camera, load_dataset, load_scene  # noqa: E402
from fields.rendering import accumulate_weights  # noqa: E402
from fields.rendering._accumulate import (  # noqa: E402
    accumulate_splats,
    accumulate_weights_autograd,
    project_for_weights,
)


def square_camera(camera: Camera, size: int) -> Camera:
    """`camera`'s pose at size x size pixels, focal length scaled with the width."""
    s = size / camera.width
    K = torch.tensor(
        [[camera.fx * s, 0.0, size / 2], [0.0, camera.fy * s, size / 2], [0.0, 0.0, 1.0]]
    )
    return Camera(K, camera.viewmat, size, size, name=f"{camera.name}-{size}")


def thread_timeit(fn: Callable[[], Any], *, repeat: int = 5) -> dict[str, float]:
    """`timeit`'s figures, in CPU ms of the calling thread (run with one torch/OpenMP thread)."""
    fn()
    runs = []
    for _ in range(max(1, repeat)):
        t0 = time.thread_time()
        fn()
        runs.append((time.thread_time() - t0) * 1e3)
    return {
        "median_ms": round(statistics.median(runs), 2),
        "min_ms": round(min(runs), 2),
        "runs": len(runs),
    }


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def bench_view(scene, camera: Camera, channels: int, repeat: int, clock: str) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(0)
    values = torch.rand(camera.height, camera.width, channels, generator=gen)
    sp = project_for_weights(scene, camera)
    size = (camera.width, camera.height)
    timer = thread_timeit if clock == "cpu" else timeit
    times = {
        "kernel": timer(lambda: accumulate_weights(scene, camera, values), repeat=repeat),
        "kernel_totals": timer(lambda: accumulate_weights(scene, camera), repeat=repeat),
        "kernel_pass": timer(
            lambda: accumulate_splats(
                sp.means2d, sp.conics, sp.opacities, sp.depths, sp.radii, values, *size
            ),
            repeat=repeat,
        ),
        "autograd": timer(
            lambda: accumulate_weights_autograd(scene, camera, values, backend="cpu"),
            repeat=repeat,
        ),
    }
    got = accumulate_weights(scene, camera, values)
    ref = accumulate_weights_autograd(scene, camera, values, backend="cpu")
    assert got.sums is not None and ref.sums is not None
    return {
        "resolution": list(size),
        "channels": channels,
        "seen_gaussians": int((got.total > 0).sum()),
        "ms": times,
        "speedup_vs_autograd": round(
            times["autograd"]["median_ms"] / times["kernel"]["median_ms"], 2
        ),
        "max_rel_diff_vs_autograd": {
            "total": relative_difference(got.total, ref.total),
            "sums": relative_difference(got.sums, ref.sums),
        },
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(REPO_ROOT / "assets" / "demo"), help="a world folder")
    parser.add_argument("--view", type=int, default=0, help="index of the dataset camera")
    parser.add_argument("--channels", type=int, default=17, help="channels C of the value map")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per measurement")
    parser.add_argument("--threads", type=int, default=None, help="torch/OpenMP threads")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall: wall-clock ms with the thread count set; cpu: one thread, its CPU ms",
    )
    parser.add_argument("--omp-spin", action="store_true", help="keep libgomp's spin-waiting")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    if args.clock == "cpu":
        torch.set_num_threads(1)
    elif args.threads:
        torch.set_num_threads(args.threads)

    scene = load_scene(os.path.join(args.data, "scene.ply"))
    camera = load_dataset(args.data).cameras[args.view]
    cameras = [camera if camera.width == 320 else camera.scaled(320 / camera.width)]
    cameras.append(square_camera(cameras[0], 512))
    out: dict[str, Any] = {
        "benchmark": "accumulate",
        "machine": machine_info(),
        "num_gaussians": len(scene),
        "clock": args.clock,
        "views": [
            bench_view(scene, cam, args.channels, args.repeat, args.clock) for cam in cameras
        ],
    }
    emit(out, args.out)
    return out


if __name__ == "__main__":
    main()
