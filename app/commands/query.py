"""Language query on a distilled feature field: per-Gaussian LERF relevancy against canonical
negatives ("object", "things", "stuff", "texture") plus yours, thresholded automatically (Otsu)
unless --threshold is given. Writes a bool [N] .npy mask in the scene's file order."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "select the Gaussians a text query names (writes a bool mask .npy)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("scene", type=Path, help="scene file the features belong to")
    p.add_argument("text", help="what to find; several positives separated by commas")
    p.add_argument("--features", type=Path, required=True, help="feature field .safetensors")
    p.add_argument("--negatives", default="", help="extra negatives, comma-separated")
    p.add_argument("--threshold", type=float, default=None, help="relevancy cut (default: auto)")
    p.add_argument("--within", type=Path, default=None, help="bool [N] .npy: query only inside")
    p.add_argument("--space", default=None, help="head to query (default: clip, else oracle)")
    p.add_argument(
        "--level",
        default="auto",
        help="semantic level to answer on (a name such as whole or part, or an index; "
        "default auto: the level where the text scores best)",
    )
    p.add_argument("--out", type=Path, required=True, help="output .npy (bool [N])")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")


def run(args: argparse.Namespace) -> int:
    import io
    import sys

    import numpy as np
    import torch

    from fields import load_scene
    from fields.formats import write_files

    from ._features import load_field_for, text_query

    if args.out.exists() and not args.overwrite:
        raise FileExistsError(f"{args.out} exists (pass --overwrite to replace it)")
    field = load_field_for(args.features, args.scene, load_scene(args.scene), "query")
    within = None
    if args.within is not None:
        within = torch.from_numpy(np.load(args.within, allow_pickle=False).astype(bool))
    res = text_query(
        field,
        args.text,
        negatives=args.negatives,
        threshold=args.threshold,
        within=within,
        space=args.space,
        level=args.level,
    )
    mask = res.mask.cpu().numpy()
    buf = io.BytesIO()
    np.save(buf, mask)
    write_files([(args.out, lambda f: f.write(buf.getvalue()))], overwrite=args.overwrite)
    if not res.confident:
        print(f"scenelab query: {res.message}", file=sys.stderr)
        if res.suggestions:
            print(f"scenelab query: try: {', '.join(res.suggestions)}", file=sys.stderr)
    print(
        f"{int(mask.sum())} of {mask.size} Gaussians (level {res.level}, threshold "
        f"{res.threshold:.3f}) -> {args.out}"
    )
    return 0
