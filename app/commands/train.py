"""Train a 3D Gaussian Splatting scene from posed photos: COLMAP models (bin/txt; distorted
lenses are undistorted on load), nerfstudio / instant-ngp transforms.json, Blender
nerf_synthetic. The recipe is the 3DGS paper's (gsplat's simple_trainer): L1 + 0.2 D-SSIM, Adam
with per-parameter learning rates, SH warm-up, adaptive density control (`--strategy default`)
or 3DGS-MCMC (`--strategy mcmc`). Runs on the CPU with scenelab's compiled rasterizer or on CUDA
with gsplat. Writes an INRIA .ply (+ JSON sidecar: cameras, up axis, config, held-out metrics)
that any 3DGS viewer opens, and a checkpoint beside it (`--resume` continues it).

Ctrl-C stops cleanly: the checkpoint and the scene so far are written (atomically). Under
`torchrun --nproc_per_node K scenelab train ...` the views of each step are split over the
processes (gloo on CPU, NCCL on CUDA) and rank 0 writes the results.

`--model nerf` trains a NeRF instead (`fields.nerf`: an Instant-NGP style hash-grid field with
an occupancy grid) from the same data with the same shared options (steps, time budget,
downscale, background, held-out views, seed, device, checkpoints, --resume, --viewer, Ctrl-C)
and writes one `.nerf` file (safetensors; the same facts as the sidecar inside). The
Gaussian-only options (--max-gaussians, --strategy, --sh-degree, --batch-size) are refused
with --model nerf; `scenelab convert SCENE.nerf SCENE.ply` turns the NeRF into Gaussians."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ._dataset_args import add_allow_outside

HELP = "train a Gaussian-splatting scene (or a NeRF) from photos and camera poses"


MODELS = ("gaussians", "nerf")
DEFAULT_STEPS = {"gaussians": 7000, "nerf": 20_000}
# Options of Gaussian training only: their defaults live here so that an option given with
# --model nerf can be told apart from one left alone (argparse leaves them unset).
GAUSSIAN_DEFAULTS = {
    "max_gaussians": 1_000_000,
    "strategy": "default",
    "sh_degree": 3,
    "batch_size": 1,
}
NERF_DEFAULTS = {"nerf_preset": "base", "bound": "auto", "bound_radius": None}
NERF_PRESETS = ("base", "small")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", type=Path, help="dataset folder (COLMAP, transforms.json, Blender)")
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help="output scene: .ply (Gaussians) or .nerf (with --model nerf)",
    )
    p.add_argument(
        "--model",
        choices=MODELS,
        default="gaussians",
        help="what to train: 3D Gaussians, or a NeRF (hash-grid radiance field)",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="optimisation steps (when not given: 7000 for Gaussians, 20000 for a NeRF, or "
        "unlimited with only --time-budget)",
    )
    p.add_argument(
        "--time-budget",
        type=float,
        default=None,
        metavar="MIN",
        help="stop after MIN minutes of optimisation; schedules follow the time",
    )
    p.add_argument("--downscale", type=float, default=1.0, help="image downscale factor (>= 1)")
    add_allow_outside(p)
    gs = "Gaussians only"
    p.add_argument(
        "--max-gaussians",
        type=int,
        default=argparse.SUPPRESS,
        help=f"cap on the count ({gs}; default {GAUSSIAN_DEFAULTS['max_gaussians']})",
    )
    p.add_argument(
        "--strategy",
        choices=["default", "mcmc"],
        default=argparse.SUPPRESS,
        help="densification: the paper's clone/split/prune, or MCMC relocation "
        f"({gs}; default {GAUSSIAN_DEFAULTS['strategy']})",
    )
    p.add_argument(
        "--sh-degree",
        type=int,
        choices=[0, 1, 2, 3],
        default=argparse.SUPPRESS,
        help=f"SH degree ({gs}; default {GAUSSIAN_DEFAULTS['sh_degree']})",
    )
    p.add_argument(
        "--nerf-preset",
        choices=NERF_PRESETS,
        default=argparse.SUPPRESS,
        help="NeRF size (--model nerf only): base (12-level 2^17 hash grid, 128^3 occupancy) "
        "or small (6 levels of 2^14 up to 64^3, 32^3 occupancy, 16k samples per step: quick "
        "previews and smoke tests). Default: base, or the checkpoint's with --resume",
    )
    p.add_argument(
        "--bound",
        choices=["auto", "box", "contract"],
        default=argparse.SUPPRESS,
        help="where a NeRF lives (--model nerf only): box (around the point object-centric "
        "cameras look at) or contract (mip-NeRF 360 contraction beyond the cameras' bounds; "
        "forward-facing and walk-through captures). Default: auto (box when the cameras look at "
        "one point)",
    )
    p.add_argument(
        "--bound-radius",
        type=float,
        default=argparse.SUPPRESS,
        metavar="R",
        help="half-size of the NeRF's box (or inner box) in scene units (--model nerf only; "
        "default: from the cameras)",
    )
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
    p.add_argument(
        "--batch-size",
        type=int,
        default=argparse.SUPPRESS,
        help=f"views per step, split over ranks ({gs}; default {GAUSSIAN_DEFAULTS['batch_size']})",
    )
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


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def _check_model_options(args: argparse.Namespace) -> None:
    """Options of the other model kind are an error, not silently ignored."""
    other = GAUSSIAN_DEFAULTS if args.model == "nerf" else NERF_DEFAULTS
    given = [_option(k) for k in other if hasattr(args, k)]
    if given:
        what = "Gaussian training" if args.model == "nerf" else "--model nerf"
        raise ValueError(
            f"{', '.join(given)} applies to {what} only (this is --model {args.model})"
        )


def _steps(args: argparse.Namespace) -> int:
    if args.steps is not None:
        return args.steps
    return 10**9 if args.time_budget is not None else DEFAULT_STEPS[args.model]


def _config(args: argparse.Namespace):
    from fields.training import TrainConfig

    g = {k: getattr(args, k, v) for k, v in GAUSSIAN_DEFAULTS.items()}
    return TrainConfig(
        steps=_steps(args),
        time_budget_min=args.time_budget,
        downscale=args.downscale,
        background=args.background,
        eval_every=args.eval_every,
        seed=args.seed,
        **g,
    )


def nerf_preset(name: str) -> dict:
    """`NerfTrainConfig` fields of a named NeRF size (see --nerf-preset)."""
    from fields.nerf import NerfModelConfig

    if name == "base":
        return {"model": NerfModelConfig()}
    if name == "small":
        return {
            "model": NerfModelConfig(levels=6, log2_table=14, max_res=64, occupancy_res=32),
            "target_samples": 1 << 14,
            "rays_per_step": 256,
        }
    raise ValueError(f"unknown NeRF preset {name!r}; one of {NERF_PRESETS}")


def _nerf_config(args: argparse.Namespace, checkpoint: dict | None = None):
    """The run's `NerfTrainConfig`; with a checkpoint, its model unless --nerf-preset says
    another one (then an error: the weights would not fit)."""
    import dataclasses

    from fields.nerf import NerfTrainConfig

    preset = getattr(args, "nerf_preset", None)
    size = nerf_preset(preset or NERF_DEFAULTS["nerf_preset"])
    if checkpoint is not None:
        old = NerfTrainConfig.from_dict(checkpoint["config"])
        if preset is not None and size["model"] != old.model:
            raise ValueError(
                f"--nerf-preset {preset} does not match the checkpoint's NeRF model "
                f"({old.model.levels} levels, 2^{old.model.log2_table} table); drop --nerf-preset "
                "to continue it"
            )
        if preset is None:
            size = {k: getattr(old, k) for k in ("model", "target_samples", "rays_per_step")}
    cfg = NerfTrainConfig(
        steps=_steps(args),
        time_budget_min=args.time_budget,
        downscale=args.downscale,
        background=args.background,
        eval_every=args.eval_every,
        seed=args.seed,
        bound=getattr(args, "bound", NERF_DEFAULTS["bound"]),
        box_radius=getattr(args, "bound_radius", NERF_DEFAULTS["bound_radius"]),
    )
    return dataclasses.replace(cfg, **size)


class TrainProgress:
    """One progress line on stderr: step, steps/s, loss, train PSNR, Gaussians (a NeRF: rays
    per step and occupancy), ETA."""

    def __init__(self, total: int | None, quiet: bool) -> None:
        self.total = total
        self.quiet = quiet
        self.last = 0.0

    def __call__(self, s) -> None:  # s: StepStats or NerfStepStats
        from fields.training import format_seconds

        now = time.perf_counter()
        if self.quiet or now - self.last < 0.5:
            return
        self.last = now
        total = f"/{self.total}" if self.total else ""
        if hasattr(s, "n_gaussians"):
            size = f"{s.n_gaussians:,} Gaussians"
        else:
            size = f"{s.rays:,} rays | {100 * s.occupied:4.1f}% occupied"
        line = (
            f"\rtrain {100 * s.fraction:5.1f}% | step {s.step}{total} | {s.steps_per_s:5.1f} it/s"
            f" | loss {s.loss:.4f} | PSNR {s.psnr:5.2f} dB | {size}"
            f" | ETA {format_seconds(s.eta_s)}  "
        )
        sys.stderr.write(line)
        sys.stderr.flush()

    def end(self) -> None:
        if not self.quiet:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _check_out(args: argparse.Namespace) -> Path:
    from fields.nerf import is_nerf_path

    out: Path = args.out
    if args.model == "nerf" and not is_nerf_path(out):
        raise ValueError(
            f"--model nerf writes a .nerf file, got {out} (`scenelab convert` turns the NeRF "
            "into Gaussians afterwards)"
        )
    if args.model == "gaussians" and is_nerf_path(out):
        raise ValueError(f"{out} is a NeRF file name: pass --model nerf, or write a .ply")
    if args.model == "gaussians" and out.suffix.lower() != ".ply":
        raise ValueError(f"--out must be a .ply file (INRIA 3DGS), got {out}")
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} exists (pass --overwrite to replace it)")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"--out folder does not exist: {out.parent}")
    return out


def run(args: argparse.Namespace) -> int:
    from fields import load_dataset
    from fields.training import DistContext, resolve_device

    _check_model_options(args)
    out = _check_out(args)
    ckpt = args.checkpoint or out.with_suffix(".ckpt")
    if ckpt.resolve() == out.resolve():
        raise ValueError(f"the checkpoint and the scene are the same file: {out}")
    continuing = args.resume is not None and ckpt.resolve() == args.resume.resolve()
    if ckpt.exists() and not (args.overwrite or continuing):
        raise FileExistsError(
            f"checkpoint {ckpt} exists (pass --overwrite to replace it, --resume {ckpt} to "
            "continue it, or --checkpoint PATH)"
        )
    device = resolve_device(args.device)
    if args.model == "nerf":
        return _run_nerf(args, out, ckpt, device)
    config = _config(args)
    dist = DistContext.from_env(device)
    device = dist.device
    try:
        bg = config.eval_background
        dataset = load_dataset(
            args.data,
            downscale=args.downscale,
            background=bg,
            allow_outside=args.allow_outside,
        )
        trainer = _gaussian_trainer(args, dataset, config, device, dist)
        if args.viewer:
            return _run_with_viewer(trainer, out, ckpt, args)
        return _run_cli(trainer, out, ckpt, args)
    finally:
        dist.close()


def _gaussian_trainer(args, dataset, config, device, dist):
    from fields.training import Trainer

    if args.resume is None:
        return Trainer(dataset, config, device=device, dist=dist)
    try:
        return Trainer.resume(args.resume, dataset, device=device, dist=dist, config=config)
    except KeyError as e:  # a checkpoint of something else (e.g. a NeRF's)
        raise ValueError(
            f"{args.resume} is not a Gaussian training checkpoint (missing {e}; a NeRF's "
            "continues with --model nerf)"
        ) from e


def _run_nerf(args: argparse.Namespace, out: Path, ckpt: Path, device) -> int:
    import os

    from fields import load_dataset
    from fields.nerf import NerfTrainer
    from fields.training import load_checkpoint

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("NeRF training runs in one process: drop torchrun (or --model nerf)")
    state = None
    if args.resume is not None:
        state = load_checkpoint(args.resume)
        if not isinstance(state, dict) or state.get("model_kind") != "nerf":
            raise ValueError(
                f"{args.resume} is not a NeRF training checkpoint (a Gaussian one continues "
                "without --model nerf)"
            )
    config = _nerf_config(args, state)
    dataset = load_dataset(
        args.data,
        downscale=args.downscale,
        background=config.eval_background,
        allow_outside=args.allow_outside,
    )
    trainer = NerfTrainer(dataset, config, device=device)
    if state is not None:
        trainer.load_state_dict(state)
    if args.viewer:
        return _run_with_viewer(trainer, out, ckpt, args)
    return _run_cli(trainer, out, ckpt, args)


def _save(trainer, out: Path, metrics) -> dict:
    """Write the scene (replacing `out`); the summary's size facts."""
    if hasattr(trainer, "params"):
        from fields import save_scene

        save_scene(trainer.scene(metrics=metrics), out, overwrite=True)
        return {"model": "gaussians", "gaussians": len(trainer.params)}
    from fields.nerf import save_nerf

    scene = trainer.scene(metrics=metrics, final=True)
    save_nerf(scene, out, overwrite=True)
    return {"model": "nerf", "occupied": round(scene.occupied_fraction(), 4)}


def _run_cli(trainer, out: Path, ckpt: Path, args: argparse.Namespace) -> int:
    dist = getattr(trainer, "dist", None)
    main = dist is None or dist.is_main
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
    size = _save(trainer, out, metrics)
    summary = {
        "out": str(out),
        "checkpoint": str(ckpt),
        "steps": trainer.step_count,
        "seconds": round(trainer.elapsed_s, 1),
        **size,
        "interrupted": interrupted,
        "heldout": metrics,
    }
    print(json.dumps(summary))
    return 130 if interrupted else 0


def _run_with_viewer(trainer, out: Path, ckpt: Path, args: argparse.Namespace) -> int:
    dist = getattr(trainer, "dist", None)
    if dist is not None and dist.active:
        raise ValueError("--viewer runs in one process; drop torchrun or --viewer")
    from app.viewer import run_training_viewer
    from fields.training import TrainSession

    session = TrainSession(trainer, out=out, checkpoint=ckpt, overwrite=True)
    return run_training_viewer(session, host=args.host, port=args.port)
