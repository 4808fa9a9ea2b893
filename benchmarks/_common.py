"""Shared benchmark helpers: machine facts, timing with warm-up (min and median), JSON output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


def ensure_repo_on_path() -> None:
    """Let `python benchmarks/x.py` import the repo's packages without an install."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on. `load_avg_1m` hints at other work sharing the cores."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    info: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    if hasattr(os, "getloadavg"):
        info["load_avg_1m"] = round(os.getloadavg()[0], 2)
    return info


def timeit(
    fn: Callable[[], Any],
    *,
    warmup: int = 1,
    repeat: int = 5,
    setup: Callable[[], Any] | None = None,
) -> dict[str, float]:
    """Wall-clock ms of `fn()` over `repeat` runs after `warmup` runs: median, min, runs.

    `setup()` runs untimed before every call and its result is passed to `fn` (e.g. a forward
    pass whose backward is timed)."""

    def once() -> float:
        arg = setup() if setup is not None else None
        t0 = time.perf_counter()
        fn() if setup is None else fn(arg)  # type: ignore[call-arg]
        return (time.perf_counter() - t0) * 1e3

    for _ in range(warmup):
        once()
    runs = [once() for _ in range(max(1, repeat))]
    return {
        "median_ms": round(statistics.median(runs), 2),
        "min_ms": round(min(runs), 2),
        "runs": len(runs),
    }


def emit(result: dict[str, Any], out: str | Path | None) -> None:
    """Print the JSON to stdout and, with `out`, write it there too (atomically)."""
    text = json.dumps(result, indent=2)
    print(text)
    if out is not None:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text + "\n")
        tmp.replace(path)
