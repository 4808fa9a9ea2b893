"""Benchmark the viewer: time to first splats in a browser, and the cost of an edit.

1. `first_splats`: seconds from starting `scenelab view SCENE --port P` (a fresh process) to the
   first frame in which Chromium (Debian's, via Playwright, software GL) shows the splats — the
   same check as the acceptance interface. Also when the server printed "ready". The scene is
   the bundled demo world when present (else a generated one).
2. `edits`: milliseconds to apply an op to the selection, record it in the history and push the
   new splat buffer to viser, on N = 500k Gaussians (SH degree 3, 10% selected): recolour,
   delete, undo; split into the op and the push. Baseline in the same process: pushing through
   viser's own `set_gaussians` from float arrays (what a viewer without a packed-geometry cache
   does on every change).

    python benchmarks/viewer.py [--n 500000] [--quick] [--no-browser] [--out results.json]
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import REPO_ROOT, emit, ensure_repo_on_path, machine_info, timeit

ensure_repo_on_path()

import editing  # noqa: E402
from app.viewer import ViewerApp, ViewerConfig  # noqa: E402
from app.viewer._splats import base_alphas, base_colors, covariances  # noqa: E402
from fields import GaussianScene, save_scene  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--use-gl=swiftshader",
    "--enable-unsafe-swiftshader",
    "--disable-background-networking",
]


def random_scene(n: int, sh_degree: int = 3, seed: int = 0) -> GaussianScene:
    g = torch.Generator().manual_seed(seed)
    k = (sh_degree + 1) ** 2
    sh = torch.randn(n, k, 3, generator=g) * 0.1
    sh[:, 0] = torch.rand(n, 3, generator=g) * 2 - 1
    return GaussianScene(
        means=torch.randn(n, 3, generator=g),
        quats=torch.randn(n, 4, generator=g),
        scales=torch.rand(n, 3, generator=g) * 2 - 6,
        opacities=torch.randn(n, generator=g),
        sh=sh,
        extras={"label": torch.randint(0, 8, (n,), generator=g, dtype=torch.int32)},
        meta={"up": "+z"},
    )


# ---------------------------------------------------------------------- edits
def bench_edits(n: int, repeat: int) -> dict[str, Any]:
    scene = random_scene(n)
    sel = scene.means[:, 0] > float(torch.quantile(scene.means[:200_000, 0], 0.9))
    app = ViewerApp(scene, ViewerConfig(port=0))
    try:
        app.state.select(sel)
        panel = app.edit_panel
        colors = iter(np.random.default_rng(0).random((1000, 3)))

        def recolour() -> None:
            panel.recolor(tuple(float(c) for c in next(colors)), "replace", 1.0)

        def delete_then_undo() -> tuple[float, float]:
            t0 = time.perf_counter()
            panel.delete()
            t1 = time.perf_counter()
            app.state.undo()
            return (t1 - t0) * 1e3, (time.perf_counter() - t1) * 1e3

        recolour_total = timeit(recolour, warmup=1, repeat=repeat)
        recolour_op = timeit(
            lambda: editing.recolor(app.state.scene, sel, torch.tensor([0.2, 0.4, 0.6])),
            repeat=repeat,
        )
        recolour_push = timeit(lambda: app.push(force=True), repeat=repeat)

        delete_then_undo()  # warm-up
        runs = [delete_then_undo() for _ in range(repeat)]
        delete_ms = sorted(r[0] for r in runs)
        undo_ms = sorted(r[1] for r in runs)
        delete_op = timeit(lambda: editing.delete(app.state.scene, sel), repeat=repeat)

        # Baseline: viser's own packing from float arrays on every change (no cached geometry).
        def viser_set_gaussians() -> None:
            s = app.state.scene
            cov = covariances(s.quats, s.scales).numpy()
            app.splats.set_gaussians(s.means.numpy(), cov, base_colors(s), base_alphas(s)[:, None])

        baseline = timeit(viser_set_gaussians, repeat=repeat)
        sel_count = int(sel.sum())
    finally:
        app.stop()
    med = lambda xs: round(float(np.median(xs)), 2)  # noqa: E731
    return {
        "n_gaussians": n,
        "sh_degree": 3,
        "selected": sel_count,
        "buffer_mb": round(n * 32 / 2**20, 1),
        "recolour": {
            "apply_and_push_ms": recolour_total,
            "op_ms": recolour_op,
            "push_ms": recolour_push,
        },
        "delete": {
            "apply_and_push_ms": {"median_ms": med(delete_ms), "min_ms": round(delete_ms[0], 2)},
            "op_ms": delete_op,
        },
        "undo_delete": {
            "apply_and_push_ms": {"median_ms": med(undo_ms), "min_ms": round(undo_ms[0], 2)}
        },
        "baseline_viser_set_gaussians_ms": baseline,
        "ratio_recolour_push_vs_baseline": round(
            recolour_push["median_ms"] / baseline["median_ms"], 3
        ),
    }


# ---------------------------------------------------------------------- first splats
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _scene_pixels(img: np.ndarray) -> int:
    # Left part of the canvas (the GUI panel sits on the right), below the notifications.
    r = img[160:640, 70:650].astype(int)
    return int(((255 - r).max(-1) > 40).sum())


def bench_first_splats(scene_path: Path, repeat: int) -> dict[str, Any]:
    if not Path(CHROMIUM).exists():
        return {"skipped": f"{CHROMIUM} not found"}
    try:
        from PIL import Image
        from playwright.sync_api import sync_playwright
    except ImportError as e:
        return {"skipped": f"playwright missing: {e}"}
    totals, readies = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for _ in range(repeat):
            port = _free_port()
            page = browser.new_page(viewport={"width": 1000, "height": 700})
            env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
            t0 = time.monotonic()
            proc = subprocess.Popen(
                [sys.executable, "-m", "app", "view", str(scene_path), "--port", str(port)],
                cwd=tempfile.gettempdir(),
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            try:
                while True:
                    try:
                        page.goto(f"http://127.0.0.1:{port}", timeout=2000)
                        break
                    except Exception:
                        if time.monotonic() - t0 > 60:
                            raise
                        time.sleep(0.1)
                while True:
                    img = np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("RGB"))
                    if _scene_pixels(img) > 20_000:
                        break
                    if time.monotonic() - t0 > 120:
                        raise TimeoutError("no splats after 120 s")
                totals.append(time.monotonic() - t0)
                for line in proc.stdout:  # the "ready in X s" line
                    if "ready in" in line:
                        readies.append(float(line.split("ready in")[1].split("s")[0]))
                        break
            finally:
                page.close()
                proc.terminate()
                proc.wait(timeout=10)
        browser.close()
    return {
        "scene": str(scene_path),
        "seconds_to_first_splats": {
            "median": round(float(np.median(totals)), 2),
            "min": round(min(totals), 2),
            "runs": len(totals),
        },
        "seconds_to_server_ready": round(float(np.median(readies)), 2) if readies else None,
        "browser": "Debian Chromium, SwiftShader (software GL)",
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=500_000, help="Gaussians for the edit benchmark")
    ap.add_argument("--quick", action="store_true", help="fewer repeats (and N=100k)")
    ap.add_argument("--no-browser", action="store_true", help="skip the time-to-first-splats run")
    ap.add_argument(
        "--scene", type=Path, default=None, help="scene for first splats (default: demo)"
    )
    ap.add_argument("--out", default=None, help="also write the JSON here")
    ap.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: as `scenelab view`)"
    )
    args = ap.parse_args()
    from app.commands.view import default_threads

    torch.set_num_threads(args.threads or default_threads())  # what the viewer process uses
    repeat = 3 if args.quick else 5
    n = min(args.n, 100_000) if args.quick else args.n
    result: dict[str, Any] = {"benchmark": "viewer", "machine": machine_info()}
    if not args.no_browser:
        scene_path = args.scene or REPO_ROOT / "assets" / "demo" / "scene.ply"
        tmp = None
        if not scene_path.is_file():
            tmp = tempfile.TemporaryDirectory()
            from fields.synthetic import make_world

            scene_path = save_scene(make_world(0).scene, Path(tmp.name) / "scene.ply")
        result["first_splats"] = bench_first_splats(scene_path, 2 if args.quick else 3)
        if tmp is not None:
            tmp.cleanup()
    result["edits"] = bench_edits(n, repeat)
    emit(result, args.out)


if __name__ == "__main__":
    main()
