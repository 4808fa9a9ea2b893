"""`scenelab` command line: one module per command under `app/commands/`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

# OpenMP threads (torch's and our rasterizer's) must sleep, not spin, while waiting: the browser
# and the viewer share the cores, and spinning made renders several times slower there. This must
# be set before torch loads its OpenMP runtime.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .commands import COMMANDS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scenelab",
        description="Interactive 3D Gaussian-splatting scene understanding and editing.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in COMMANDS.items():
        p = sub.add_parser(
            name,
            help=module.HELP,
            description=module.__doc__,
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except (OSError, ValueError) as e:
        # Bad input from the user (a missing, unreadable or malformed file, an existing output,
        # a bad option): one clear line, no traceback.
        print(f"scenelab {args.command}: error: {e}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"scenelab {args.command}: error: out of memory", file=sys.stderr)
        return 2


def entrypoint() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entrypoint()
