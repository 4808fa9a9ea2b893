"""Benchmark the scene writers and readers per format, beside PlayCanvas's splat-transform.

One scene (default 1M Gaussians, SH degree 3: the synthetic tabletop world tiled on a grid, with
small random higher SH bands) is written by scenelab in every format it writes (.ply,
.compressed.ply, .splat, .spz v3 and v4, .sog), and by splat-transform from the same .ply in the
same run (its own process, so its time includes Node's start-up, ~0.3 s, which is reported on
its own). For each file: write seconds, size MB, our read seconds, and the largest errors
against the source scene (`fields.formats.scene_errors`). The baseline is splat-transform's
write of the same format (and plain .ply for sizes).

    python benchmarks/formats.py [--gaussians 1000000] [--sh-degree 3] [--formats sog spz-v4]
                                 [--peer-timeout 600] [--out formats.json]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _common import REPO_ROOT, emit, ensure_repo_on_path, machine_info

ensure_repo_on_path()

from fields import GaussianScene, load_scene, save_scene  # noqa: E402
from fields.formats import ExportOptions, scene_errors  # noqa: E402
from fields.synthetic import make_world  # noqa: E402

# (label, file name, our options, splat-transform's extra arguments or None if it cannot write it)
FORMATS: list[tuple[str, str, ExportOptions, list[str] | None]] = [
    ("ply", "scene.ply", ExportOptions(), []),
    ("compressed-ply", "scene.compressed.ply", ExportOptions(), []),
    ("splat", "scene.splat", ExportOptions(), None),
    ("spz-v3", "scene.spz", ExportOptions(spz_version=3), ["--spz-version", "3"]),
    ("spz-v4", "scene.spz", ExportOptions(spz_version=4), ["--spz-version", "4"]),
    ("sog", "scene.sog", ExportOptions(), []),
]


def bench_scene(n: int, degree: int, seed: int = 0) -> GaussianScene:
    """The synthetic world tiled on a grid until it holds `n` Gaussians, SH `degree`."""
    world = make_world(seed).scene
    lo, hi = world.bounds()
    step = float((hi - lo).max()) * 1.1
    tiles, k = [], 0
    while sum(len(t) for t in tiles) < n:
        shift = torch.tensor([(k % 4) * step, 0.0, (k // 4) * step])
        tiles.append(world.replace(means=world.means + shift))
        k += 1
    scene = GaussianScene.concat(tiles).subset(torch.arange(n))
    scene = scene.with_sh_degree(degree)
    g = torch.Generator().manual_seed(seed)
    sh = scene.sh.clone()
    sh[:, 1:] = torch.randn(sh[:, 1:].shape, generator=g) * 0.05
    return scene.replace(sh=sh, extras={}, meta={})


def peer() -> str | None:
    local = REPO_ROOT / ".tools" / "node_modules" / ".bin" / "splat-transform"
    return str(local) if local.exists() else shutil.which("splat-transform")


def run_peer(exe: str, src: Path, dst: Path, extra: list[str], timeout: float) -> float | None:
    """splat-transform's write time in seconds (None when it ran past `timeout`)."""
    t0 = time.perf_counter()
    try:
        subprocess.run(
            [exe, "-q", "-w", "-g", "cpu", str(src), str(dst), *extra],
            check=True,
            capture_output=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return None
    return time.perf_counter() - t0


def rounded(err: dict[str, Any]) -> dict[str, Any]:
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in err.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gaussians", type=int, default=1_000_000, help="scene size")
    ap.add_argument("--sh-degree", type=int, default=3, help="SH degree of the scene")
    ap.add_argument("--no-peer", action="store_true", help="skip splat-transform")
    ap.add_argument(
        "--peer-timeout",
        type=float,
        default=600,
        help="seconds splat-transform may take per file (its CPU SOG encoder of SH bands is slow)",
    )
    ap.add_argument(
        "--formats",
        nargs="+",
        choices=[label for label, *_ in FORMATS],
        default=None,
        help="only these formats (default: all)",
    )
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args()

    scene = bench_scene(args.gaussians, args.sh_degree)
    exe = None if args.no_peer else peer()
    result: dict[str, Any] = {
        "benchmark": "formats",
        "machine": machine_info(),
        "gaussians": len(scene),
        "sh_degree": scene.sh_degree,
        "peer": None,
        "formats": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = tmp / "source.ply"
        save_scene(scene, src)
        if exe is not None:
            version = subprocess.run([exe, "--version"], capture_output=True, text=True)
            t0 = time.perf_counter()
            subprocess.run(["node", "-e", "0"], check=True)
            result["peer"] = {
                "tool": "splat-transform",
                "version": (version.stdout or version.stderr).strip(),  # it prints to stderr
                "node_start_s": round(time.perf_counter() - t0, 3),
            }
        for label, name, options, peer_args in FORMATS:
            if args.formats is not None and label not in args.formats:
                continue
            ours_dir, theirs_dir = tmp / f"ours_{label}", tmp / f"theirs_{label}"
            ours_dir.mkdir()
            theirs_dir.mkdir()
            ours = ours_dir / name
            t0 = time.perf_counter()
            save_scene(scene, ours, options=options)
            write_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            back = load_scene(ours)
            read_s = time.perf_counter() - t0
            row: dict[str, Any] = {
                "ours": {
                    "write_s": round(write_s, 3),
                    "read_s": round(read_s, 3),
                    "size_mb": round(sum(f.stat().st_size for f in ours_dir.iterdir()) / 1e6, 2),
                    "errors": rounded(scene_errors(scene, back)),
                }
            }
            del back
            if exe is not None and peer_args is not None:
                theirs = theirs_dir / name
                peer_s = run_peer(exe, src, theirs, peer_args, args.peer_timeout)
                if peer_s is None:
                    row["splat_transform"] = {"timed_out_after_s": args.peer_timeout}
                    result["formats"][label] = row
                    continue
                t0 = time.perf_counter()
                back = load_scene(theirs)
                row["splat_transform"] = {
                    "write_s": round(peer_s, 3),
                    "size_mb": round(theirs.stat().st_size / 1e6, 2),
                    "our_read_s": round(time.perf_counter() - t0, 3),
                    "errors": rounded(scene_errors(scene, back)),
                }
                del back
            result["formats"][label] = row
            print(f"{label}: {row}", file=sys.stderr)
    emit(result, args.out)


if __name__ == "__main__":
    main()
