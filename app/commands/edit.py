"""Edit the selected Gaussians towards a text prompt by score distillation (DDS or SDS) under a
latent diffusion model, and write the edited scene. The selection comes from a mask file
(`scenelab query` writes one) or from a language query on a feature field. Only the selected
Gaussians change (colour/SH by default; --params adds opacity, scale, position); every other
Gaussian is bit-identical and keeps its place. With --densify the edit grows geometry: the
selection's Gaussians are cloned/split and pruned inside its bounding box grown by --margin, and
the output lists the unselected Gaussians first (bit-identical, in order), then the edited
object; --selection-out writes the object's mask in the output. The input file is never
touched."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

HELP = "edit the selection towards a text prompt (DDS/SDS under a diffusion model)"

DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("scene", type=Path, help="scene file (.ply, compressed .ply, .splat, .spz)")
    sel = p.add_mutually_exclusive_group(required=True)
    sel.add_argument("--selection", type=Path, help="bool [N] .npy mask of the Gaussians to edit")
    sel.add_argument(
        "--select", metavar="TEXT", help="select by a language query (needs --features)"
    )
    p.add_argument("--features", type=Path, default=None, help="feature field for --select")
    p.add_argument("--negatives", default="", help="extra negatives for --select, comma-separated")
    p.add_argument("--prompt", required=True, help="what the selection should become")
    p.add_argument("--source-prompt", default="", help="what it is now (DDS's source branch)")
    p.add_argument("--method", choices=["dds", "sds"], default="dds", help="distillation method")
    p.add_argument(
        "--model", default=DEFAULT_MODEL, help="diffusers model: hub id or a local directory"
    )
    p.add_argument("--steps", type=int, default=200, help="optimisation steps")
    p.add_argument("--lr", type=float, default=0.05, help="learning rate of the colours (SH)")
    p.add_argument("--size", type=int, default=128, help="rendered view size in pixels")
    p.add_argument(
        "--params",
        default="color",
        help="what to optimise, comma-separated: color, opacity, scale, position",
    )
    p.add_argument("--views", type=int, default=32, help="cameras sampled around the selection")
    p.add_argument(
        "--preserve", type=float, default=0.0, help="weight of the pull back to the original"
    )
    p.add_argument(
        "--guidance-scale",
        type=float,
        default=None,
        help="classifier-free guidance; unset: SDS 100, DDS 7.5",
    )
    p.add_argument(
        "--latent",
        choices=["vae", "rgb"],
        default="vae",
        help="vae: encode renders with the VAE; rgb: cheap linear RGB->latent map",
    )
    p.add_argument(
        "--resolution",
        type=int,
        default=None,
        help="model input size in pixels; unset: the model's own",
    )
    p.add_argument(
        "--lora",
        default=None,
        help="UNet LoRA fused into the model: a .safetensors file, or a folder / hub id (with "
        "--lora-weight-name), e.g. latent-consistency/lcm-lora-sdv1-5 for few-step edits "
        "(use --guidance-scale 1-2 with it)",
    )
    p.add_argument("--lora-scale", type=float, default=1.0, help="strength of the --lora")
    p.add_argument(
        "--lora-weight-name", default=None, help="file inside a --lora folder or hub repo"
    )
    p.add_argument(
        "--up",
        default=None,
        help="world up: +z, -y, ... or x,y,z; unset: the scene's, else estimated, else -y",
    )
    p.add_argument(
        "--densify",
        action="store_true",
        help="grow geometry: clone/split the selection's Gaussians where the gradient is high, "
        "prune transparent ones (position, scale, rotation and opacity are then optimised too); "
        "the output lists the rest first, then the edited object",
    )
    p.add_argument(
        "--margin",
        type=float,
        default=None,
        help="with --densify: the object may change shape within the selection's bounding box "
        "grown by this fraction of its longest side on every side (default 0.2)",
    )
    p.add_argument(
        "--max-gaussians",
        type=float,
        default=None,
        help="with --densify: cap on the object's Gaussians, as a multiple of the selection's "
        "(default 4)",
    )
    p.add_argument(
        "--densify-every",
        type=int,
        default=None,
        help="with --densify: steps between two densifications (default 20)",
    )
    p.add_argument(
        "--anchor-weight",
        type=float,
        default=None,
        help="with --densify: pull of each Gaussian towards its anchor state (GaussianEditor's "
        "anchor loss; default 1)",
    )
    p.add_argument(
        "--selection-out",
        type=Path,
        default=None,
        help="write the edited object's bool [N'] mask in the output scene here (.npy)",
    )
    p.add_argument("--seed", type=int, default=0, help="seeds views and noise")
    p.add_argument("--device", default="auto", help="torch device: auto, cpu or cuda")
    p.add_argument("--out", type=Path, required=True, help="output scene (.ply or .splat)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")


def run(args: argparse.Namespace) -> int:
    import torch

    from editing.text_edit import TextEditConfig, text_edit_result
    from fields import load_scene, save_scene

    out, src = args.out, args.scene
    if out.resolve() == src.resolve():
        raise ValueError(f"--out {out} is the input scene; the input is never overwritten")
    if out.suffix.lower() not in (".ply", ".splat"):
        raise ValueError(f"--out must end in .ply or .splat, got {out.name}")
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} exists (pass --overwrite to replace it)")
    sel_out = args.selection_out
    if sel_out is not None:
        if sel_out.suffix.lower() != ".npy":
            raise ValueError(f"--selection-out must end in .npy, got {sel_out.name}")
        if sel_out.exists() and not args.overwrite:
            raise FileExistsError(f"{sel_out} exists (pass --overwrite to replace it)")
        if args.selection is not None and sel_out.resolve() == args.selection.resolve():
            raise ValueError(
                f"--selection-out {sel_out} is the input selection; it is never overwritten"
            )
    grow = {
        "grow_margin": args.margin,
        "max_gaussians": args.max_gaussians,
        "densify_every": args.densify_every,
        "anchor_weight": args.anchor_weight,
    }
    grow = {k: v for k, v in grow.items() if v is not None}
    if grow and not args.densify:
        raise ValueError(
            "--margin, --max-gaussians, --densify-every and --anchor-weight need --densify"
        )
    if args.select is not None and args.features is None:
        raise ValueError("--select needs --features (a feature field of the scene)")
    params = tuple(p.strip() for p in args.params.split(",") if p.strip())
    up = args.up
    config = TextEditConfig(
        args.prompt,
        source_prompt=args.source_prompt,
        method=args.method,
        steps=args.steps,
        params=params,
        lr_color=args.lr,
        views=args.views,
        size=args.size,
        preserve_weight=args.preserve,
        up=up,
        seed=args.seed,
        preview_every=max(1, args.steps // 10),
        densify=args.densify,
        **grow,
    )
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"

    scene = load_scene(src)
    mask = _selection(args, scene)
    print(f"editing {int(mask.sum())} of {len(scene)} Gaussians: {args.method} {args.prompt!r}")

    t0 = time.perf_counter()
    distiller = _load_distiller(args, device)
    print(f"loaded {args.model} on {device} in {time.perf_counter() - t0:.1f} s", flush=True)

    every = max(1, args.steps // 10)
    t1 = time.perf_counter()

    def on_step(step: int, steps: int, _preview) -> None:
        if step == 1 or step % every == 0 or step == steps:
            dt = time.perf_counter() - t1
            print(f"step {step}/{steps} ({dt:.1f} s)", flush=True)

    res = text_edit_result(scene.to(device), mask.to(device), distiller, config, on_step=on_step)
    save_scene(res.scene.to("cpu"), out, overwrite=args.overwrite)
    grew = ""
    if args.densify:
        grew = f"; the object has {int(res.mask.sum())} Gaussians (was {int(mask.sum())})"
    print(f"edited in {time.perf_counter() - t1:.1f} s -> {out}{grew}")
    if sel_out is not None:
        import numpy as np

        np.save(sel_out, res.mask.cpu().numpy())
        print(f"selection of the edited object -> {sel_out}")
    return 0


def _selection(args: argparse.Namespace, scene):
    """[N] bool mask from --selection or from --select on --features."""
    import numpy as np
    import torch

    n = len(scene)
    if args.selection is not None:
        arr = np.load(args.selection, allow_pickle=False)
        if arr.dtype != bool:
            if not (np.issubdtype(arr.dtype, np.integer) and np.isin(arr, (0, 1)).all()):
                raise ValueError(
                    f"{args.selection}: a selection must be a bool array, got {arr.dtype}"
                )
            arr = arr.astype(bool)
        if arr.shape != (n,):
            raise ValueError(
                f"{args.selection} has shape {arr.shape}; {args.scene} has {n} Gaussians"
            )
        mask = torch.from_numpy(arr.copy())
    else:
        from fields import load_scene

        from ._features import load_field_for, require_match, text_query

        field = load_field_for(args.features, args.scene, load_scene(args.scene), "edit")
        res = text_query(field, args.select, negatives=args.negatives)
        mask = require_match(res, args.select).cpu().bool()
        print(f"--select {args.select!r}: level {res.level}, threshold {res.threshold:.3f}")
    if not bool(mask.any()):
        raise ValueError("the selection is empty: nothing to edit")
    return mask


def _load_distiller(args: argparse.Namespace, device: str):
    from editing.text_edit import load_edit_distiller

    return load_edit_distiller(
        args.model,
        guidance_scale=args.guidance_scale,
        latent_mode=args.latent,
        resolution=args.resolution,
        device=device,
        lora=args.lora,
        lora_scale=args.lora_scale,
        lora_weight_name=args.lora_weight_name,
    )
