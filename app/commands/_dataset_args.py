"""Options shared by every command that opens a dataset."""

from __future__ import annotations

import argparse

ALLOW_OUTSIDE_HELP = (
    "read images (and other files) that the dataset names outside its folder: '../x.png', "
    "absolute paths, symlinks pointing out (refused by default; use only for datasets you trust)"
)


def add_allow_outside(p: argparse.ArgumentParser) -> None:
    """`--allow-outside` (`args.allow_outside`): see `fields.load_dataset(allow_outside=...)`."""
    p.add_argument("--allow-outside", action="store_true", help=ALLOW_OUTSIDE_HELP)
