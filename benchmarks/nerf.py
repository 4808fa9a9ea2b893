"""Benchmark scenelab's NeRF on the CPU.

1. Training throughput (rays/s and samples/s of one optimisation step: march, hash encoding,
   MLPs, compositing, backward, Adam) with our compiled kernels, and as the baseline in the same
   run the same steps in plain torch (`hash_encode_reference`, `march_rays_reference`).
2. Render time of a trained scene at 256x256 (and a 64x64 preview), kernels vs plain torch.
3. Time to 25 / 28 dB held-out PSNR on a nerf_synthetic scene at 200x200 (downscale 4, white
   background, its test split scored on `--eval-views` views every `--eval-every-s` seconds of
   training; evaluation time is not training time), the final PSNR on the whole test split after
   `--minutes`, and (when `fields.nerf.nerf_to_gaussians` exists) conversion time and PSNR drop.
   Without `--data`, a synthetic tabletop world stands in.

    python benchmarks/nerf.py [--data ../shared/data/nerf_synthetic_mic] [--minutes 10] [--out r.json]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads libgomp

import argparse
import contextlib
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import torch
from _common import emit, ensure_repo_on_path, machine_info

ensure_repo_on_path()

import fields.nerf as nerf  # noqa: E402
from fields import Camera, load_dataset  # noqa: E402
from fields.nerf import _encoding, _march  # noqa: E402
from fields.synthetic import make_world, write_world  # noqa: E402


@contextlib.contextmanager
def plain_torch() -> Iterator[None]:
    """Run the NeRF without the compiled kernels (the baseline)."""
    saved = (_encoding._kernel, _march._kernel)
    _encoding._kernel = lambda: None  # type: ignore[assignment]
    _march._kernel = lambda: None  # type: ignore[assignment]
    try:
        yield
    finally:
        _encoding._kernel, _march._kernel = saved


def step_rate(trainer: nerf.NerfTrainer, steps: int) -> dict[str, float]:
    """Rays/s and samples/s over `steps` steps (occupancy refreshes included)."""
    rays = samples = 0
    t0 = time.perf_counter()
    for _ in range(steps):
        s = trainer.step()
        rays += s.rays
        samples += s.samples
    dt = time.perf_counter() - t0
    return {
        "steps": steps,
        "seconds": round(dt, 3),
        "rays_per_s": round(rays / dt),
        "samples_per_s": round(samples / dt),
        "ms_per_step": round(1e3 * dt / steps, 1),
    }


def render_ms(scene: nerf.NerfScene, camera: Camera, size: int, repeats: int = 3) -> float:
    cam = camera.scaled(size / max(camera.width, camera.height))
    nerf.render_nerf(scene, cam)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        nerf.render_nerf(scene, cam)
        best = min(best, time.perf_counter() - t0)
    return round(1e3 * best, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", help="a nerf_synthetic scene folder (default: a synthetic world)")
    ap.add_argument("--downscale", type=float, default=4.0, help="image downscale of --data")
    ap.add_argument("--minutes", type=float, default=10.0, help="training budget for part 3")
    ap.add_argument("--eval-every-s", type=float, default=30.0, help="seconds between PSNR checks")
    ap.add_argument("--eval-views", type=int, default=8, help="held-out views per PSNR check")
    ap.add_argument("--rate-steps", type=int, default=20, help="steps timed for throughput")
    ap.add_argument("--convert-minutes", type=float, default=5.0, help="NeRF->Gaussians budget")
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args()

    result: dict[str, Any] = {"machine": machine_info()}
    if args.data:
        ds = load_dataset(args.data, downscale=args.downscale)
        result["data"] = {"path": args.data, "downscale": args.downscale}
    else:
        tmp = tempfile.mkdtemp()
        write_world(make_world(0), f"{tmp}/world", n_views=48, width=128, height=96)
        ds = load_dataset(f"{tmp}/world")
        result["data"] = {"path": "synthetic world 0, 48 views 128x96"}
    cfg = nerf.NerfTrainConfig(time_budget_min=args.minutes, steps=10**9, background="white")

    # 3 first (it is the long run), then 1 and 2 on the trained model.
    trainer = nerf.NerfTrainer(ds, cfg)
    marks: dict[str, float | None] = {"25": None, "28": None}
    curve = []
    next_eval = args.eval_every_s
    while not trainer.done:
        trainer.step()
        if trainer.elapsed_s >= next_eval or trainer.done:
            next_eval += args.eval_every_s
            r = trainer.evaluate(max_views=args.eval_views)
            if r is None:
                break
            curve.append(
                {
                    "seconds": round(trainer.elapsed_s, 1),
                    "step": trainer.step_count,
                    "psnr": round(r.psnr, 2),
                }
            )
            print(
                f"{trainer.elapsed_s:7.1f} s  step {trainer.step_count}  {r.psnr:.2f} dB",
                flush=True,
            )
            for k in marks:
                if marks[k] is None and r.psnr >= float(k):
                    marks[k] = round(trainer.elapsed_s, 1)
    final = trainer.evaluate()
    scene = trainer.scene(final=True)
    result["quality"] = {
        "minutes": args.minutes,
        "steps": trainer.step_count,
        "seconds_to_25dB": marks["25"],
        "seconds_to_28dB": marks["28"],
        "final_psnr_all_test_views": None if final is None else round(final.psnr, 2),
        "final_ssim": None if final is None else round(final.ssim, 4),
        "test_views": len(trainer.splits.test),
        "curve": curve,
        "occupied_fraction": round(scene.occupied_fraction(), 4),
    }

    cam = trainer.cameras[0]
    result["train_rate_kernels"] = step_rate(trainer, args.rate_steps)
    with plain_torch():
        result["train_rate_plain_torch"] = step_rate(trainer, max(3, args.rate_steps // 4))
    result["train_speedup"] = round(
        result["train_rate_kernels"]["rays_per_s"] / result["train_rate_plain_torch"]["rays_per_s"],
        2,
    )
    result["render_ms"] = {"256": render_ms(scene, cam, 256), "64": render_ms(scene, cam, 64, 10)}
    with plain_torch():
        result["render_ms_plain_torch"] = {"256": render_ms(scene, cam, 256, 1)}

    if hasattr(nerf, "nerf_to_gaussians") and final is not None:
        convert(result, nerf, scene, trainer, args.convert_minutes, final.psnr)
    emit(result, args.out)


def convert(
    result: dict[str, Any], nerf: Any, scene: Any, trainer: Any, minutes: float, psnr: float
) -> None:
    from fields.training import TrainImages, evaluate_views

    t0 = time.perf_counter()
    g = nerf.nerf_to_gaussians(scene, nerf.ConvertConfig(time_budget_min=minutes))
    dt = time.perf_counter() - t0
    ims = TrainImages(trainer.dataset, trainer.splits.test, check=False, exact=True)
    bg = torch.ones(3)
    r = evaluate_views(
        g,
        ims.cameras,
        [ims.target(j, bg) for j in range(len(ims))],
        background=(1.0, 1.0, 1.0),
        with_lpips=False,
    )
    result["conversion"] = {
        "seconds": round(dt, 1),
        "gaussians": len(g),
        "psnr_nerf": round(psnr, 2),
        "psnr_gaussians": round(r.psnr, 2),
        "psnr_drop": round(psnr - r.psnr, 2),
    }


if __name__ == "__main__":
    main()
