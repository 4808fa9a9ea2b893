"""The selection a command works on: a bool [N] mask file, or a language query on a feature
field (`--selection MASK.npy | --features F --select TEXT`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_selection_arguments(p: argparse.ArgumentParser, what: str) -> None:
    """--selection / --select (one required), --features and --negatives; `what` completes
    "the Gaussians to ..." in the help."""
    sel = p.add_mutually_exclusive_group(required=True)
    sel.add_argument(
        "--selection", type=Path, help=f"bool [N] .npy mask of the Gaussians to {what}"
    )
    sel.add_argument(
        "--select",
        metavar="TEXT",
        help=f'language query for the Gaussians to {what} ("the red mug"; needs --features)',
    )
    p.add_argument("--features", type=Path, default=None, help="feature field for --select")
    p.add_argument("--negatives", default="", help="extra negatives for --select, comma-separated")


def load_mask(path: Path, n: int, scene_name: Any) -> Any:
    """[N] bool tensor from a .npy file: a bool array (or 0/1 integers) of the scene's length."""
    import numpy as np
    import torch

    arr = np.load(path, allow_pickle=False)
    if arr.dtype != bool:
        if not (np.issubdtype(arr.dtype, np.integer) and np.isin(arr, (0, 1)).all()):
            raise ValueError(f"{path}: a selection must be a bool array, got {arr.dtype}")
        arr = arr.astype(bool)
    if arr.shape != (n,):
        raise ValueError(f"{path} has shape {arr.shape}; {scene_name} has {n} Gaussians")
    return torch.from_numpy(arr.copy())


def selection(args: argparse.Namespace, scene: Any, command: str) -> Any:
    """[N] bool mask from --selection or from --select on --features; `ValueError` when it is
    empty or --select lacks --features."""
    if args.selection is not None:
        mask = load_mask(args.selection, len(scene), args.scene)
    else:
        if args.features is None:
            raise ValueError("--select needs --features (a feature field of the scene)")
        from ._features import load_field_for, require_match, text_query

        field = load_field_for(args.features, args.scene, scene, command)
        res = text_query(field, args.select, negatives=args.negatives)
        mask = require_match(res, args.select).cpu().bool()
        print(f"--select {args.select!r}: level {res.level}, threshold {res.threshold:.3f}")
    if not bool(mask.any()):
        raise ValueError(f"the selection is empty: nothing to {command}")
    return mask
