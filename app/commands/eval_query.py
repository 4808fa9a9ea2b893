"""Score language queries on a synthetic world: every label name is queried; 3D IoU against
the scene's per-Gaussian `label` (over observed Gaussians, and over all) and 2D IoU on the
held-out views (every 8th) against the label maps. Writes JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "score language queries of a feature field against a synthetic world's ground truth"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", type=Path, help="synthetic world folder (labels.json, labels/)")
    p.add_argument("--features", type=Path, required=True, help="feature field .safetensors")
    p.add_argument("--scene", type=Path, default=None, help="scene (default: DATASET/scene.ply)")
    p.add_argument("--space", default=None, help="head to query (default: clip, else oracle)")
    p.add_argument("--negatives", default="", help="extra negatives, comma-separated")
    p.add_argument("--out", type=Path, required=True, help="output JSON")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")


def run(args: argparse.Namespace) -> int:
    from fields import load_dataset, load_scene
    from fields.features import build_text_encoder, evaluate_queries, load_field, read_label_names
    from fields.formats import write_files

    if args.out.exists() and not args.overwrite:
        raise FileExistsError(f"{args.out} exists (pass --overwrite to replace it)")
    scene = load_scene(args.scene or args.data / "scene.ply")
    dataset = load_dataset(args.data)
    field = load_field(args.features)
    space = args.space or ("clip" if "clip" in field.heads else sorted(field.heads)[0])
    try:
        encode = build_text_encoder(space, field.teachers)
    except KeyError as e:
        raise ValueError(e.args[0]) from None
    report = evaluate_queries(
        field,
        scene,
        dataset,
        encode,
        space=space,
        label_names=read_label_names(args.data),
        negatives=[n for n in args.negatives.split(",") if n.strip()],
    )
    report["features"] = str(args.features)
    blob = json.dumps(report, indent=2).encode()
    write_files([(args.out, lambda f: f.write(blob))], overwrite=args.overwrite)
    print(
        f"mIoU 3D {report['miou_3d']:.3f} (all Gaussians {report['miou_3d_all']:.3f}), "
        f"2D {report['miou_2d']:.3f} -> {args.out}"
    )
    return 0
