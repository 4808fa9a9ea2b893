"""Write a tiny random-weight Stable Diffusion pipeline (UNet + VAE + CLIP text model, diffusers'
`save_pretrained` layout, ~9 MB) for offline smoke runs and tests: `scenelab edit ... --model DIR`
then runs real SDS/DDS steps without downloading anything. Its edits are noise, not semantics.
`--inpainting` writes the 9-channel inpainting variant (`scenelab remove --inpaint-model DIR`)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

HELP = "write a tiny random-weight diffusion model folder (offline smoke tests of editing)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out_dir", type=Path, help="output folder (must be empty or missing)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the weights")
    p.add_argument(
        "--inpainting",
        action="store_true",
        help="an inpainting UNet (9 input channels: latents, mask, masked image), as SD-inpainting",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace the contents of a non-empty out_dir"
    )


def run(args: argparse.Namespace) -> int:
    from editing.score_distillation import make_tiny_pipeline

    t0 = time.perf_counter()
    out = make_tiny_pipeline(
        args.out_dir, seed=args.seed, overwrite=args.overwrite, inpainting=args.inpainting
    )
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    kind = "inpainting " if args.inpainting else ""
    print(
        f"wrote {out}: tiny random Stable Diffusion {kind}pipeline (seed {args.seed}), "
        f"{size / 1e6:.1f} MB in {time.perf_counter() - t0:.1f} s"
    )
    return 0
