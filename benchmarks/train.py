"""Benchmark `scenelab train` on the CPU.

1. Steps/s of one optimisation step (render, L1 + D-SSIM, backward, Adam; densification off so
   N stays put) at 200x200 and 400x400 with 50k and 200k Gaussians, on a synthetic tabletop
   (make-demo's world) - and, as the baseline in the same run, the same step through the
   pure-torch tiled reference rasterizer (what training would cost without our compiled kernel;
   measured at 50k only, it is slow).
2. Time to reach 25 / 28 / 30 dB held-out PSNR training the synthetic world from its own
   renders (128x96, 48 views, every 8th held out), with the paper's densification and with
   MCMC (the baseline for each other).
3. Peak resident memory (the process's high-water mark after each phase; phases run in order).
4. Optional (`--mic DIR --mic-minutes M`): a nerf_synthetic scene at downscale 4, its test split
   scored, after M minutes.

    python benchmarks/train.py [--quick] [--out results.json] [--mic ../shared/data/nerf_synthetic_mic]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads libgomp

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _common import emit, ensure_repo_on_path, machine_info

ensure_repo_on_path()

from fields import GaussianScene, load_dataset  # noqa: E402
from fields.rendering import _render as render_module  # noqa: E402
from fields.rendering._reference import render_reference  # noqa: E402
from fields.synthetic import make_world, write_world  # noqa: E402
from fields.training import DefaultStrategyConfig, TrainConfig, Trainer  # noqa: E402

NO_DENSIFY = DefaultStrategyConfig(refine_start=10**9, refine_stop=10**9 + 1, reset_every=10**9)


def _peak_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def _scene_of(world_scene: GaussianScene, n: int, seed: int = 0) -> GaussianScene:
    """n Gaussians from the world's (repeated with jitter when n exceeds it)."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(world_scene), (n,), generator=g)
    s = world_scene.subset(idx)
    jitter = torch.randn(n, 3, generator=g) * 0.002
    return GaussianScene(s.means + jitter, s.quats, s.scales, s.opacities, s.sh)


def _steps_per_s(trainer: Trainer, steps: int) -> float:
    trainer.step()  # warm-up (first-touch allocations)
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.step()
    return steps / (time.perf_counter() - t0)


def bench_steps(root: Path, world, quick: bool) -> list[dict[str, Any]]:
    out = []
    sizes = [(200, 200)] if quick else [(200, 200), (400, 400)]
    counts = [50_000] if quick else [50_000, 200_000]
    for w, h in sizes:
        data = root / f"world_{w}"
        write_world(world, data, n_views=16, width=w, height=h)
        ds = load_dataset(data)
        for n in counts:
            init = _scene_of(world.scene, n).with_sh_degree(3)
            cfg = TrainConfig(steps=10**6, sh_degree=3, sh_degree_interval=0, default=NO_DENSIFY)
            t = Trainer(ds, cfg, init=init)
            sps = _steps_per_s(t, 10 if quick else 30)
            row: dict[str, Any] = {
                "size": f"{w}x{h}",
                "gaussians": n,
                "steps_per_s": round(sps, 2),
                "ms_per_step": round(1e3 / sps, 1),
                "peak_rss_mb": _peak_mb(),
            }
            if n == counts[0]:
                row["baseline_reference_steps_per_s"] = round(_reference_steps(t, 2), 3)
                row["speedup_vs_reference"] = round(sps / row["baseline_reference_steps_per_s"], 1)
            out.append(row)
            print(row, flush=True)
    return out


def _reference_steps(trainer: Trainer, steps: int) -> float:
    """Steps/s with the pure-torch tiled reference rasterizer swapped in for the kernel."""

    def backend(scene, camera, features, args):
        out = render_reference(
            scene,
            camera,
            features=features,
            eps2d=args.eps2d,
            sh_degree=args.sh_degree,
            rasterizer="tiled",
            dtype=torch.float32,
        )
        image = torch.cat(
            [out.rgb, out.depth * out.alpha] + ([out.features] if features is not None else []), -1
        )
        return render_module.RawRender(image, out.alpha, out.radii, out.means2d)

    saved = render_module.BACKENDS["cpu"]
    render_module.BACKENDS["cpu"] = backend
    try:
        return _steps_per_s(trainer, steps)
    finally:
        render_module.BACKENDS["cpu"] = saved


def bench_time_to_psnr(root: Path, world, quick: bool) -> list[dict[str, Any]]:
    data = root / "world_ttp"
    write_world(world, data, n_views=48, width=128, height=96)
    ds = load_dataset(data)
    rows = []
    steps = 1500 if quick else 6000
    for strategy in ("default", "mcmc"):
        # MCMC grows 5% per refinement up to its cap: the cap is how its cost is chosen.
        cap = 60_000 if strategy == "mcmc" else 1_000_000
        cfg = TrainConfig(
            steps=steps, strategy=strategy, init_points=20_000, sh_degree=1, max_gaussians=cap
        )
        t = Trainer(ds, cfg)
        reached: dict[str, float | None] = {"25": None, "28": None, "30": None}
        curve = []
        while not t.done:
            t.step()
            if t.step_count % 250 == 0 or t.done:
                r = t.evaluate()
                assert r is not None
                curve.append((t.step_count, round(t.elapsed_s, 1), round(r.psnr, 2)))
                for k in reached:
                    if reached[k] is None and r.psnr >= float(k):
                        reached[k] = round(t.elapsed_s, 1)
                if all(v is not None for v in reached.values()) and quick:
                    break
        row = {
            "strategy": strategy,
            "max_gaussians": cap,
            "size": "128x96",
            "views": f"{len(t.splits.train)} train / {len(t.splits.test)} held out",
            "seconds_to_db": reached,
            "final_psnr": curve[-1][2],
            "final_gaussians": len(t.params),
            "curve_step_seconds_psnr": curve,
            "peak_rss_mb": _peak_mb(),
        }
        rows.append(row)
        print({k: v for k, v in row.items() if k != "curve_step_seconds_psnr"}, flush=True)
    return rows


def bench_mic(path: Path, minutes: float) -> dict[str, Any]:
    ds = load_dataset(path, downscale=4)
    cfg = TrainConfig(steps=10**9, time_budget_min=minutes, background="white")
    t = Trainer(ds, cfg)
    t.run()
    r = t.evaluate()
    assert r is not None
    return {
        "dataset": str(path),
        "downscale": 4,
        "minutes": minutes,
        "steps": t.step_count,
        "gaussians": len(t.params),
        "heldout_psnr": round(r.psnr, 3),
        "heldout_ssim": round(r.ssim, 4),
        "heldout_views": len(r.views),
        "peak_rss_mb": _peak_mb(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one size, fewer steps")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    ap.add_argument("--mic", type=Path, default=None, help="a nerf_synthetic scene folder")
    ap.add_argument("--mic-minutes", type=float, default=10.0, help="training minutes on --mic")
    ap.add_argument("--skip-steps", action="store_true", help="skip the steps/s table")
    ap.add_argument("--skip-psnr", action="store_true", help="skip the time-to-PSNR runs")
    args = ap.parse_args()
    world = make_world(0)
    result: dict[str, Any] = {"benchmark": "train", "machine": machine_info()}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if not args.skip_steps:
            result["steps_per_s"] = bench_steps(root, world, args.quick)
        if not args.skip_psnr:
            result["time_to_psnr"] = bench_time_to_psnr(root, world, args.quick)
    if args.mic is not None:
        result["nerf_synthetic"] = bench_mic(args.mic, args.mic_minutes)
    result["machine"]["load_avg_1m_end"] = (
        round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    )
    emit(result, args.out)


if __name__ == "__main__":
    main()
