"""Distill 2D teachers into a feature field: per-Gaussian low-dim features plus one linear head
per teacher space, saved as .safetensors next to the scene (never into the scene file).

Any scene works, with or without the photos it came from: with --data the teachers see the
dataset's views (every 8th held out, the views `eval-query` scores 2D IoU on); without it they
see the scene's own renders from the cameras in its sidecar, or from views placed automatically
around and inside it. `--method lift` (default) averages the teachers' maps onto the Gaussians
by their blending weights in one pass per view; `--method optimise` fits the features by
gradient descent (`--steps`). Teachers come from the registry (`oracle`: the dataset's label
maps, or the scene's per-Gaussian labels rendered; `clip`, `sam` with their weights). Teacher
maps are cached under --cache, so a second or interrupted run reuses them.

A NeRF (`SCENE.nerf`) gets a feature branch instead (GP-NeRF / LERF style: a small feature grid
decoded by the same linear heads, trained by rendering it along rays against the teachers' maps
of --data's views, density and colour frozen), written back into a .nerf: --out, or the scene
itself with --overwrite."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ._dataset_args import add_allow_outside

HELP = (
    "distill 2D teachers (oracle, clip, sam) into per-Gaussian features or a NeRF's feature branch"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "scene", type=Path, help="scene file (.ply, compressed .ply, .splat, .spz, or a .nerf)"
    )
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        help="dataset the scene was trained from (default: none; the scene's own renders); "
        "required for a .nerf",
    )
    p.add_argument(
        "--teacher",
        default="oracle",
        help="comma-separated teacher names: oracle, clip, sam, clip-levels (CLIP pooled in "
        "SAM's automatic masks at whole / part / subpart levels; needs both weights)",
    )
    p.add_argument(
        "--method",
        choices=["lift", "optimise"],
        default=None,
        help="lift: training-free weighted averaging (seconds); optimise: gradient descent "
        "(default: lift for Gaussians; a NeRF's branch is always optimised)",
    )
    p.add_argument(
        "--dim", type=int, default=16, help="feature channels per teacher space (and level)"
    )
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="optimisation steps (default: 600 with --method optimise; 400 for a .nerf)",
    )
    p.add_argument(
        "--view-side",
        type=int,
        default=None,
        help="long side of the rendered views without --data (default: the teachers' native)",
    )
    p.add_argument("--seed", type=int, default=0, help="initialisation and view-order seed")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output .safetensors (default: SCENE with suffix .features.safetensors); for a "
        ".nerf, the .nerf to write with the feature branch (default: the scene itself, which "
        "needs --overwrite)",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace an existing --out (or the .nerf itself)"
    )
    p.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="teacher-map cache folder (default: DATASET/.cache/teachers, or beside the scene)",
    )
    p.add_argument(
        "--all-views", action="store_true", help="train on every view (no held-out views)"
    )
    p.add_argument("--downscale", type=float, default=1.0, help="dataset downscale factor")
    add_allow_outside(p)
    p.add_argument("--device", default="auto", help="torch device: auto, cpu or cuda")
    p.add_argument(
        "--clip-model", default="ViT-B-16", help="open_clip architecture or hf-hub:/local-dir: id"
    )
    p.add_argument(
        "--clip-pretrained",
        default="laion2b_s34b_b88k",
        help="open_clip pretrained tag, hf-hub:org/name, or a local checkpoint file",
    )
    p.add_argument("--sam-model", default="vit_b", help="SAM model type: vit_b, vit_l or vit_h")
    p.add_argument(
        "--sam-checkpoint",
        type=Path,
        default=None,
        help="SAM checkpoint file (sam_vit_b_01ec64.pth)",
    )


def teacher_options(name: str, args: argparse.Namespace) -> dict:
    """Options a teacher's builder takes, from the command line."""
    clip = {"model": args.clip_model, "pretrained": args.clip_pretrained}
    ckpt = None if args.sam_checkpoint is None else str(args.sam_checkpoint)
    sam = {"model_type": args.sam_model, "checkpoint": ckpt}
    if name == "clip":
        return clip
    if name == "sam":
        return sam
    if name == "clip-levels":  # CLIP pooled in SAM's automatic masks: needs both
        return {**clip, **sam}
    return {}


class ProgressBar:
    """A one-line progress bar on stderr."""

    def __init__(self, width: int = 30) -> None:
        self.width = width
        self.start = time.perf_counter()
        self.last = 0.0

    def __call__(self, step: int, total: int, loss: float) -> None:
        now = time.perf_counter()
        if step < total and now - self.last < 0.2:
            return
        self.last = now
        filled = int(self.width * step / max(total, 1))
        bar = "#" * filled + "-" * (self.width - filled)
        stream = sys.stderr  # looked up per call: tests and the viewer may swap it
        stream.write(f"\rdistill [{bar}] {step}/{total} loss {loss:.4f} {now - self.start:.0f}s")
        if step >= total:
            stream.write("\n")
        stream.flush()


def features_path(scene: Path) -> Path:
    """Where a scene's feature field goes by default: SCENE's stem + .features.safetensors."""
    return scene.with_name(scene.name.split(".")[0] + ".features.safetensors")


def build_teachers(names: list[str], dataset, device: str, args: argparse.Namespace) -> list:
    """Registered teachers by name; an unknown name is a ValueError listing the known ones."""
    from fields.features import build_teacher

    teachers = []
    for name in names:
        try:
            teachers.append(
                build_teacher(name, dataset, device=device, **teacher_options(name, args))
            )
        except KeyError as e:
            raise ValueError(e.args[0]) from None
    return teachers


def teacher_names(args: argparse.Namespace) -> list[str]:
    names = [t.strip() for t in args.teacher.split(",") if t.strip()]
    if not names:
        raise ValueError("--teacher names no teacher")
    return names


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def run_nerf(args: argparse.Namespace) -> int:
    """The NeRF branch: a feature branch distilled into SCENE.nerf, written to --out."""
    from fields import load_dataset
    from fields.nerf import NerfDistillConfig, distill_nerf, is_nerf_path, load_nerf, save_nerf

    if args.data is None:
        raise ValueError(
            "distilling features into a NeRF needs the photos it was trained from: pass --data"
        )
    if args.method == "lift":
        raise ValueError(
            "--method lift is for Gaussian scenes; a NeRF's feature branch is optimised "
            "(leave --method out)"
        )
    out = args.out or args.scene
    if not is_nerf_path(out):
        raise ValueError(f"--out must be a .nerf file for a NeRF scene, got {out}")
    if out.exists() and not args.overwrite:
        hint = " or choose another --out" if out.resolve() == args.scene.resolve() else ""
        raise FileExistsError(f"{out} exists (pass --overwrite to replace it{hint})")
    device = resolve_device(args.device)
    scene = load_nerf(args.scene, device=device)
    dataset = load_dataset(args.data, downscale=args.downscale, allow_outside=args.allow_outside)
    if not args.all_views:
        dataset = dataset.split("train")
    teachers = build_teachers(teacher_names(args), dataset, device, args)
    cache = args.cache if args.cache is not None else args.data / ".cache" / "teachers"
    steps = {} if args.steps is None else {"steps": args.steps}
    config = NerfDistillConfig(dim=args.dim, seed=args.seed, cache_dir=str(cache), **steps)
    result = distill_nerf(scene, dataset, teachers, config, progress=ProgressBar())
    save_nerf(result, out, overwrite=args.overwrite)
    print(out)
    return 0


def run(args: argparse.Namespace) -> int:
    from fields.nerf import is_nerf_path

    if is_nerf_path(args.scene):
        return run_nerf(args)
    from fields import load_dataset, load_scene
    from fields.features import (
        DistillConfig,
        LiftConfig,
        SceneOracleTeacher,
        distill,
        lift,
        scene_hash,
        scene_views,
    )

    out = args.out or features_path(args.scene)
    if out.resolve() == args.scene.resolve():
        raise ValueError("--out must not be the scene file")
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} exists (pass --overwrite to replace it)")
    device = resolve_device(args.device)
    scene = load_scene(args.scene).to(device)
    dataset = None
    if args.data is not None:
        dataset = load_dataset(
            args.data, downscale=args.downscale, allow_outside=args.allow_outside
        )
        if not args.all_views:
            dataset = dataset.split("train")
    teachers = []
    for name in teacher_names(args):
        if name == "oracle" and dataset is None:
            teachers.append(SceneOracleTeacher(scene))
        else:
            teachers.extend(build_teachers([name], dataset, device, args))
    views = dataset if dataset is not None else scene_views(scene, teachers, side=args.view_side)
    if args.cache is not None:
        cache = args.cache
    elif args.data is not None:
        cache = args.data / ".cache" / "teachers"
    else:
        cache = args.scene.parent / ".cache" / "teachers"
    bar = ProgressBar()
    if (args.method or "lift") == "lift":
        config = LiftConfig(dim=args.dim, seed=args.seed, cache_dir=str(cache))
        field = lift(
            scene, views, teachers, config, progress=lambda f, _m: bar(round(1000 * f), 1000, 0.0)
        )
    else:
        if dataset is None:  # the scene oracle finds each rendered view's camera by its name
            for t in teachers:
                if isinstance(t, SceneOracleTeacher):
                    t.register_views(views.names, views.cameras)
        steps = 600 if args.steps is None else args.steps
        config = DistillConfig(dim=args.dim, steps=steps, seed=args.seed, cache_dir=str(cache))
        field = distill(scene, views, teachers, config, progress=bar).bind(scene)
    field.scene_hash = scene_hash(args.scene)
    label_names = scene.meta.get("label_names")
    if label_names:
        field.meta["label_names"] = label_names
    field.save(out, overwrite=args.overwrite)
    print(out)
    return 0
