"""One short run on a lent GPU: verify the CUDA paths and record GPU figures (JSON).

1. gsplat imports and its CUDA kernels load (they JIT-compile on first use unless a prebuilt
   wheel matches; the time that takes is recorded);
2. render parity: the same scene through backend="cpu" and backend="gsplat" (max |diff|);
3. training on CUDA: steps/s at 200x200 and 400x400 with 50k and 200k Gaussians, with the CPU
   figure for 200x200/50k measured in the same run as the baseline;
4. a nerf_synthetic scene at downscale 4 for `--minutes` (default 2), held-out PSNR;
5. `pytest -m gpu` (the tests that skip without CUDA).

    python benchmarks/gpu_check.py --out gpu.json [--mic ../shared/data/nerf_synthetic_mic]

Without CUDA it prints {"cuda": false, ...} and exits 0, so it is safe anywhere.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _common import REPO_ROOT, emit, ensure_repo_on_path, machine_info

ensure_repo_on_path()

from train import NO_DENSIFY, _scene_of, _steps_per_s  # noqa: E402

from fields import load_dataset, render  # noqa: E402
from fields.synthetic import make_world, write_world  # noqa: E402
from fields.training import TrainConfig, Trainer  # noqa: E402


def _parity(world) -> dict[str, Any]:
    scene = world.scene
    cam = world.cameras[0]
    t0 = time.perf_counter()
    gpu = render(scene.to("cuda"), cam, background=(1, 1, 1))
    torch.cuda.synchronize()
    first_s = time.perf_counter() - t0  # includes loading / compiling gsplat's kernels
    cpu = render(scene, cam, background=(1, 1, 1))
    return {
        "first_gsplat_render_s": round(first_s, 1),
        "max_abs_rgb_diff": float((gpu.rgb.cpu() - cpu.rgb).abs().max()),
        "max_abs_alpha_diff": float((gpu.alpha.cpu() - cpu.alpha).abs().max()),
        "radii_agree": float((gpu.radii.cpu() > 0).eq(cpu.radii > 0).float().mean()),
    }


def _train_rates(root: Path, world) -> list[dict[str, Any]]:
    rows = []
    for w in (200, 400):
        data = root / f"w{w}"
        write_world(world, data, n_views=16, width=w, height=w)
        ds = load_dataset(data)
        for n in (50_000, 200_000):
            init = _scene_of(world.scene, n).with_sh_degree(3)
            cfg = TrainConfig(steps=10**6, sh_degree_interval=0, default=NO_DENSIFY)
            t = Trainer(ds, cfg, device="cuda", init=init)
            row: dict[str, Any] = {"size": f"{w}x{w}", "gaussians": n}
            row["cuda_steps_per_s"] = round(_timed(t, 50), 1)
            if (w, n) == (200, 50_000):
                row["cpu_steps_per_s"] = round(_steps_per_s(Trainer(ds, cfg, init=init), 10), 2)
            rows.append(row)
            print(row, flush=True)
    return rows


def _timed(trainer: Trainer, steps: int) -> float:
    trainer.step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.step()
    torch.cuda.synchronize()
    return steps / (time.perf_counter() - t0)


def _mic(path: Path, minutes: float) -> dict[str, Any]:
    ds = load_dataset(path, downscale=4)
    t = Trainer(ds, TrainConfig(steps=10**9, time_budget_min=minutes), device="cuda")
    t.run()
    r = t.evaluate()
    assert r is not None
    return {
        "minutes": minutes,
        "steps": t.step_count,
        "gaussians": len(t.params),
        "psnr": round(r.psnr, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=None, help="also write the JSON here")
    ap.add_argument("--mic", type=Path, default=None, help="a nerf_synthetic scene folder")
    ap.add_argument("--minutes", type=float, default=2.0, help="training minutes on --mic")
    ap.add_argument("--no-tests", action="store_true", help="skip `pytest -m gpu`")
    args = ap.parse_args()
    result: dict[str, Any] = {"benchmark": "gpu_check", "machine": machine_info()}
    result["cuda"] = torch.cuda.is_available()
    if not result["cuda"]:
        emit(result, args.out)
        return
    world = make_world(0)
    steps = [("parity", lambda: _parity(world))]
    with tempfile.TemporaryDirectory() as tmp:
        steps.append(("train_steps_per_s", lambda: _train_rates(Path(tmp), world)))
        if args.mic is not None and args.mic.exists():
            steps.append(("nerf_synthetic", lambda: _mic(args.mic, args.minutes)))
        for name, fn in steps:  # one failure is recorded, not fatal: the rest still reports
            try:
                result[name] = fn()
            except Exception as e:
                result[name] = {"error": f"{type(e).__name__}: {e}"}
            print(name, result[name], flush=True)
    if not args.no_tests:
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
        )
        result["pytest_gpu"] = {"rc": proc.returncode, "tail": proc.stdout[-1500:]}
    emit(result, args.out)


if __name__ == "__main__":
    main()
