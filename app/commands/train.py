"""Train a 3D Gaussian Splatting scene from posed photos: COLMAP models (bin/txt; distorted
lenses are undistorted on load), nerfstudio / instant-ngp transforms.json, Blender
nerf_synthetic. The recipe is the 3DGS paper's (gsplat's simple_trainer): L1 + 0.2 D-SSIM, Adam
with per-parameter learning rates, SH warm-up, adaptive density control (`--strategy default`)
or 3DGS-MCMC (`--strategy mcmc`). Runs on the CPU with scenelab's compiled rasterizer or on CUDA
with gsplat. Writes an INRIA .ply (+ JSON sidecar: cameras, up axis, config, held-out metrics)
that any 3DGS viewer opens, and a checkpoint beside it (`--resume` continues it).

Ctrl-C stops cleanly: the checkpoint and the scene so far are written (atomically). Under
`torchrun --nproc_per_node K scenelab train ...` the views of each step are split over the
processes (gloo on CPU, NCCL on CUDA) and rank 0 writes the results."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HELP = "train a Gaussian-splatting scene from photos and camera poses"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", type=Path, help="dataset folder (COLMAP, transforms.json, Blender)")
    p.add_argument("--out", type=Path, required=True, help="output scene (.ply)")
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="optimisation steps (when not given: 7000, or unlimited with only --time-budget)",
    )
    p.add_argument(
        "--time-budget",
        type=float,
        default=None,
        metavar="MIN",
        help="stop after MIN minutes of optimisation; schedules follow the time",
    )
    p.add_argument("--downscale", type=float, default=1.0, help="image downscale factor (>= 1)")
    p.add_argument("--max-gaussians", type=int, default=1_000_000, help="cap on the count")
    p.add_argument(
        "--strategy",
        choices=["default", "mcmc"],
        default="default",
        help="densification: the paper's clone/split/prune, or MCMC relocation",
    )
    p.add_argument("--sh-degree", type=int, default=3, choices=[0, 1, 2, 3], help="SH degree")
    p.add_argument(
        "--background",
        choices=["white", "black", "random"],
        default="white",
        help="colour behind transparent pixels (RGBA data) and the render (random: per step)",
    )
    p.add_argument(
        "--eval-every",
        type=int,
        default=8,
        help="hold out every K-th view to score (0: train on all; the files' splits win)",
    )
    p.add_argument("--batch-size", type=int, default=1, help="views per step (split over ranks)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--seed", type=int, default=0, help="initialisation, view order, noise")
    p.add_argument(
        "--resume", type=Path, default=None, metavar="CKPT", help="continue a checkpoint"
    )
    p.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="checkpoint path (when not given: OUT with suffix .ckpt)",
    )
    p.add_argument(
        "--checkpoint-every",
        type=float,
        default=10.0,
        metavar="MIN",
        help="also write the checkpoint every MIN minutes (0: only at the end and on Ctrl-C)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--viewer", action="store_true", help="watch (and steer) training in a browser")
    p.add_argument("--host", default="127.0.0.1", help="viewer interface (with --viewer)")
    p.add_argument("--port", type=int, default=8080, help="viewer port (with --viewer)")
    p.add_argument("--quiet", action="store_true", help="no progress line")


def _config(args: argparse.Namespace):
    from fields.training import TrainConfig

    steps = args.steps
    if steps is None:
        steps = 10**9 if args.time_budget is not None else 7000
    return TrainConfig(
        steps=steps,
        time_budget_min=args.time_budget,
        downscale=args.downscale,
        max_gaussians=args.max_gaussians,
        strategy=args.strategy,
        sh_degree=args.sh_degree,
        background=args.background,
        eval_every=args.eval_every,
        batch_size=args.batch_size,
        seed=args.seed,
    )


class TrainProgress:
    """One progress line on stderr: step, steps/s, loss, train PSNR, Gaussians, ETA."""

    def __init__(self, total: int | None, quiet: bool) -> None:
        self.total = total
        self.quiet = quiet
        self.last = 0.0

    def __call__(self, s) -> None:  # s: StepStats
        from fields.training import format_seconds

        now = time.perf_counter()
        if self.quiet or now - self.last < 0.5:
            return
        self.last = now
        total = f"/{self.total}" if self.total else ""
        line = (
            f"\rtrain {100 * s.fraction:5.1f}% | step {s.step}{total} | {s.steps_per_s:5.1f} it/s"
            f" | loss {s.loss:.4f} | PSNR {s.psnr:5.2f} dB | {s.n_gaussians:,} Gaussians"
            f" | ETA {format_seconds(s.eta_s)}  "
        )
        sys.stderr.write(line)
        sys.stderr.flush()

    def end(self) -> None:
        if not self.quiet:
            sys.stderr.write("\n")
            sys.stderr.flush()


def run(args: argparse.Namespace) -> int:
    from fields import load_dataset, save_scene
    from fields.training import DistContext, Trainer, resolve_device

    out: Path = args.out
    if out.suffix.lower() != ".ply":
        raise ValueError(f"--out must be a .ply file (INRIA 3DGS), got {out}")
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} exists (pass --overwrite to replace it)")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"--out folder does not exist: {out.parent}")
    ckpt = args.checkpoint or out.with_suffix(".ckpt")
    continuing = args.resume is not None and ckpt.resolve() == args.resume.resolve()
    if ckpt.exists() and not (args.overwrite or continuing):
        raise FileExistsError(
            f"checkpoint {ckpt} exists (pass --overwrite to replace it, --resume {ckpt} to "
            "continue it, or --checkpoint PATH)"
        )
    config = _config(args)
    device = resolve_device(args.device)
    dist = DistContext.from_env(device)
    device = dist.device
    try:
        bg = config.eval_background
        dataset = load_dataset(args.data, downscale=args.downscale, background=bg)
        if args.resume is not None:
            trainer = Trainer.resume(args.resume, dataset, device=device, dist=dist, config=config)
        else:
            trainer = Trainer(dataset, config, device=device, dist=dist)
        if args.viewer:
            return _run_with_viewer(trainer, out, ckpt, args)
        return _run_cli(trainer, out, ckpt, args, save_scene)
    finally:
        dist.close()


def _run_cli(trainer, out: Path, ckpt: Path, args: argparse.Namespace, save_scene) -> int:
    dist = trainer.dist
    main = dist.is_main
    bar = TrainProgress(
        None if trainer.config.steps >= 10**9 else trainer.config.steps, args.quiet or not main
    )
    every_s = 60.0 * args.checkpoint_every
    last_ckpt = time.perf_counter()
    interrupted = False
    try:
        while not trainer.done:
            stats = trainer.step()
            bar(stats)
            if main and every_s > 0 and time.perf_counter() - last_ckpt > every_s:
                trainer.save_checkpoint(ckpt)
                last_ckpt = time.perf_counter()
    except KeyboardInterrupt:
        interrupted = True
    bar.end()
    if not main:
        return 0
    metrics = None
    if not interrupted:
        result = trainer.evaluate(with_lpips=True)
        metrics = None if result is None else result.summary()
    trainer.save_checkpoint(ckpt)
    save_scene(trainer.scene(metrics=metrics), out, overwrite=True)
    summary = {
        "out": str(out),
        "checkpoint": str(ckpt),
        "steps": trainer.step_count,
        "seconds": round(trainer.elapsed_s, 1),
        "gaussians": len(trainer.params),
        "interrupted": interrupted,
        "heldout": metrics,
    }
    print(json.dumps(summary))
    return 130 if interrupted else 0


def _run_with_viewer(trainer, out: Path, ckpt: Path, args: argparse.Namespace) -> int:
    if trainer.dist.active:
        raise ValueError("--viewer runs in one process; drop torchrun or --viewer")
    from app.viewer import run_training_viewer
    from fields.training import TrainSession

    session = TrainSession(trainer, out=out, checkpoint=ckpt, overwrite=True)
    return run_training_viewer(session, host=args.host, port=args.port)
