"""Language query on a distilled feature field: per-Gaussian LERF relevancy against canonical
negatives ("object", "things", "stuff", "texture") plus yours, thresholded automatically (Otsu)
unless --threshold is given. Writes a bool [N] .npy mask in the scene's file order."""

from __future__ import annotations

import argparse
import sys
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
    p.add_argument("--out", type=Path, required=True, help="output .npy (bool [N])")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")


def run(args: argparse.Namespace) -> int:
    import io

    import numpy as np
    import torch

    from fields.features import FieldQuery, build_text_encoder, load_field, negatives_for
    from fields.features._io import scene_hash
    from fields.formats._atomic import write_files

    if args.out.exists() and not args.overwrite:
        raise FileExistsError(f"{args.out} exists (pass --overwrite to replace it)")
    field = load_field(args.features)
    if field.scene_hash is not None and field.scene_hash != scene_hash(args.scene):
        print(
            f"scenelab query: warning: {args.features} was distilled from another version of "
            f"{args.scene}",
            file=sys.stderr,
        )
    space = args.space or ("clip" if "clip" in field.heads else sorted(field.heads)[0])
    try:
        encode = build_text_encoder(space, field.teachers)
        head = field.head(space)
    except KeyError as e:
        raise ValueError(e.args[0]) from None
    positives = [t.strip() for t in args.text.split(",") if t.strip()]
    if not positives:
        raise ValueError("empty query text")
    negatives = negatives_for(args.negatives.split(","))
    within = None
    if args.within is not None:
        within = torch.from_numpy(np.load(args.within, allow_pickle=False).astype(bool))
    fq = FieldQuery(field.features, head)
    res = fq.query(encode(positives), encode(negatives), threshold=args.threshold, within=within)
    mask = res.mask.cpu().numpy()
    buf = io.BytesIO()
    np.save(buf, mask)
    write_files([(args.out, lambda f: f.write(buf.getvalue()))], overwrite=args.overwrite)
    print(
        f"{int(mask.sum())} of {mask.size} Gaussians (threshold {res.threshold:.3f}) -> {args.out}"
    )
    return 0
