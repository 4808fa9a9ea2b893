"""Benchmark project files: save and open time and file size of a `.scenelab` project.

The project: a random SH3 scene of N Gaussians with a 16-channel `feature` extra and its feature
field (CLIP and SAM heads), a history of 3 steps (open, recolour of 10%, delete of 1%; current =
the last), a selection, two named selections and a few bookmarks. Baseline in the same process:
the current scene alone through `fields.save_scene` / `fields.load_scene` as .ply (its features
go out as extra ply properties). Files are written to a temp dir and read back from the page
cache (what reopening a just-saved project costs); save times include the fsync.

    python benchmarks/project.py [--sizes 100000 1000000] [--repeat 3] [--out results.json]
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads libgomp

import argparse
import tempfile
from pathlib import Path
from typing import Any

import torch
from _common import emit, ensure_repo_on_path, machine_info, timeit

ensure_repo_on_path()

from editing import (  # noqa: E402
    Bookmark,
    History,
    Project,
    delete,
    load_project,
    recolor,
    save_project,
)
from fields import GaussianScene, load_scene, save_scene  # noqa: E402
from fields.features import FeatureField  # noqa: E402

CHANNELS = 16


def make_project(n: int, seed: int = 0) -> Project:
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(n, CHANNELS, generator=g)
    scene = GaussianScene(
        means=torch.rand(n, 3, generator=g) * 4 - 2,
        quats=torch.randn(n, 4, generator=g),
        scales=torch.log(torch.rand(n, 3, generator=g) * 0.02 + 0.002),
        opacities=torch.randn(n, generator=g),
        sh=torch.randn(n, 16, 3, generator=g) * 0.2,
        extras={"feature": features, "label": torch.randint(0, 8, (n,), generator=g)},
    )
    field = FeatureField(
        features=features,
        heads={"clip": torch.randn(512, CHANNELS, generator=g), "sam": torch.randn(256, CHANNELS)},
        config={"benchmark": True},
    )
    history = History(scene, max_bytes=1 << 34)
    s1 = history.apply("recolor", recolor(scene, scene.extras["label"] < 1, (1.0, 0.2, 0.1)))
    gone = torch.rand(n, generator=g) < 0.01
    s2 = history.apply("delete", delete(s1, gone))
    m = len(s2)
    sel = s2.extras["label"] == 3
    return Project(
        history=history,
        selection=sel,
        named_selections={"red": s2.extras["label"] < 1, "cup": sel},
        field=field,
        bookmarks=[
            Bookmark(f"view {i}", (i, -2.0, 1.0), (0.0, 0.0, 0.0), (0.0, 0.0, 1.0), 60.0)
            for i in range(4)
        ],
        up="+z",
        settings={"color_mode": "rgb", "n": m},
        source="bench.ply",
    )


def distinct_bytes(history: History) -> int:
    seen = {}
    for _, s in history.states():
        for t in [s.means, s.quats, s.scales, s.opacities, s.sh, *s.extras.values()]:
            seen[(t.untyped_storage().data_ptr(), t.storage_offset())] = (
                t.numel() * t.element_size()
            )
    return sum(seen.values())


def bench(n: int, repeat: int, tmp: Path) -> dict[str, Any]:
    project = make_project(n)
    path = tmp / f"bench-{n}.scenelab"
    save = timeit(
        lambda: save_project(project, path, overwrite=True, max_history_bytes=1 << 34),
        warmup=1,
        repeat=repeat,
    )
    size = path.stat().st_size
    opened = {}
    open_t = timeit(lambda: opened.setdefault("p", load_project(path)), warmup=1, repeat=repeat)
    back = load_project(path)
    assert back.history.steps == project.history.steps
    assert back.history.current.allclose(project.history.current)

    current = project.history.current
    ply = tmp / f"bench-{n}.ply"

    def save_ply() -> None:
        save_scene(current, ply, overwrite=True)

    ply_save = timeit(save_ply, warmup=1, repeat=repeat)
    ply_size = ply.stat().st_size + sum(
        p.stat().st_size for p in tmp.glob(f"bench-{n}.ply.*") if p.is_file()
    )
    ply_open = timeit(lambda: load_scene(ply), warmup=1, repeat=repeat)
    return {
        "gaussians": n,
        "sh_degree": 3,
        "feature_channels": CHANNELS,
        "history_steps": project.history.steps,
        "history_distinct_tensor_mb": round(distinct_bytes(project.history) / 1e6, 1),
        "current_scene_tensor_mb": round(
            sum(
                t.numel() * t.element_size()
                for t in [
                    current.means,
                    current.quats,
                    current.scales,
                    current.opacities,
                    current.sh,
                    *current.extras.values(),
                ]
            )
            / 1e6,
            1,
        ),
        "project": {
            "save_s": round(save["median_ms"] / 1e3, 3),
            "open_s": round(open_t["median_ms"] / 1e3, 3),
            "save_min_s": round(save["min_ms"] / 1e3, 3),
            "open_min_s": round(open_t["min_ms"] / 1e3, 3),
            "size_mb": round(size / 1e6, 1),
        },
        "baseline_ply_current_scene": {
            "save_s": round(ply_save["median_ms"] / 1e3, 3),
            "open_s": round(ply_open["median_ms"] / 1e3, 3),
            "size_mb": round(ply_size / 1e6, 1),
        },
        "ratio_project_to_ply": {
            "save": round(save["median_ms"] / ply_save["median_ms"], 2),
            "open": round(open_t["median_ms"] / ply_open["median_ms"], 2),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[100_000, 1_000_000], help="Gaussian counts"
    )
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per figure (median)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument(
        "--dir", default=None, help="where to write the files (default: a temp dir)"
    )
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        results = [bench(n, args.repeat, Path(d)) for n in args.sizes]
    emit({"benchmark": "project", "machine": machine_info(), "results": results}, args.out)


if __name__ == "__main__":
    sys.exit(main())
