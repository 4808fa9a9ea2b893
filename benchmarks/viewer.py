"""Benchmark the viewer: time to first splats in a browser, view-dependent colour, and edits.

1. `first_splats`: seconds from starting `scenelab view SCENE --port P` (a fresh process) to the
   first frame in which Chromium (Debian's, via Playwright, software GL) shows the splats — the
   same check as the acceptance interface. Also when the server printed "ready". The scene is
   the bundled demo world when present (else a generated one).
2. `first_splats_large`: the same for capture-like scenes of 1M and 3M Gaussians (SH degree 3,
   `surface_scene`, saved as PLY), 3 runs each. Baselines in the same process: `--no-preview`
   (no first look while the file loads; interleaved run by run), and for 1M `--max-splats 0`
   (every splat sent, what the viewer did on a browser proven fast; capped at
   `--baseline-timeout` seconds).
3. `view_colour`: after a camera comes to rest, milliseconds until the buffer with SH colour
   baked toward it is handed to viser, at 1M Gaussians (SH degree 3) with every splat sent, and
   with a 200k budget (splats re-chosen by contribution too); plus the rest debounce. Baseline in
   the same process: the same push with DC colour (no SH evaluation).
4. `edits`: milliseconds to apply an op to the selection, record it in the history and push the
   new splat buffer to viser, on N = 500k Gaussians (SH degree 3, 10% selected): recolour,
   delete, undo; split into the op and the push. Baseline in the same process: pushing through
   viser's own `set_gaussians` from float arrays (what a viewer without a packed-geometry cache
   does on every change).

    python benchmarks/viewer.py [--n 500000] [--quick] [--no-browser] [--out results.json]
"""

from __future__ import annotations

import argparse
import io
import math
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


def surface_scene(n: int, sh_degree: int = 3, seed: int = 0) -> GaussianScene:
    """A capture-like scene of `n` Gaussians: flat splats tiling a 4 m floor and five balls at
    the density a real capture has (each splat about covers its share of the surface, opacity
    mostly high), with view-dependent SH. A random cloud (`random_scene`) has no surfaces, so a
    sample of it never looks like it."""
    g = torch.Generator().manual_seed(seed)
    n_floor = n // 2
    n_ball = (n - n_floor) // 5
    parts, normals = [], []
    parts.append(torch.cat([(torch.rand(n_floor, 2, generator=g) - 0.5) * 4.0,
                            torch.zeros(n_floor, 1)], 1))  # fmt: skip
    normals.append(torch.tensor([0.0, 0.0, 1.0]).expand(n_floor, 3))
    centres = torch.tensor([[0.0, 0.0, 0.3], [0.9, 0.5, 0.25], [-0.8, 0.6, 0.2],
                            [0.6, -0.9, 0.35], [-0.7, -0.6, 0.15]])  # fmt: skip
    radii = torch.tensor([0.3, 0.25, 0.2, 0.35, 0.15])
    for i in range(5):
        m = n_ball if i < 4 else n - n_floor - 4 * n_ball
        d = torch.randn(m, 3, generator=g)
        d = d / d.norm(dim=-1, keepdim=True)
        parts.append(centres[i] + radii[i] * d)
        normals.append(d)
    means = torch.cat(parts)
    normal = torch.cat(normals)
    area = 16.0 + float((4 * torch.pi * radii**2).sum())
    s = (area / n) ** 0.5 * 0.8
    # A flat disc: quaternion turning +z to the normal.
    z = torch.tensor([0.0, 0.0, 1.0]).expand_as(normal)
    axis = torch.linalg.cross(z, normal)
    w = 1.0 + normal[:, 2:3]
    quats = torch.cat([w, axis], 1)
    quats[w[:, 0] < 1e-6] = torch.tensor([0.0, 1.0, 0.0, 0.0])
    k = (sh_degree + 1) ** 2
    sh = torch.zeros(n, k, 3)
    base = 0.2 + 0.6 * torch.rand(n, 3, generator=g) * 0.3
    base[n_floor:] += (
        torch.rand(5, 3, generator=g).repeat_interleave(
            torch.tensor([n_ball] * 4 + [n - n_floor - 4 * n_ball]), dim=0
        )
        * 0.6
    )
    sh[:, 0] = (base - 0.5) / 0.28209479177387814
    if k > 1:
        sh[:, 1:] = 0.08 * torch.randn(n, k - 1, 3, generator=g)
        sh[:, 3] += torch.tensor([0.3, -0.3, 0.0])  # red-green shift with the view along x
    log_s = torch.log(torch.full((n, 3), s)) + 0.3 * torch.randn(n, 3, generator=g)
    log_s[:, 2] = math.log(s * 0.05)
    return GaussianScene(
        means=means,
        quats=quats,
        scales=log_s,
        opacities=2.0 + torch.randn(n, generator=g),
        sh=sh,
        meta={"up": "+z", "units": "m"},
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


# ---------------------------------------------------------------------- view colour
class _RestingTab:
    """A stand-in browser whose camera rests at a pose (what `_camera_rested` reads)."""

    def __init__(self, client_id: int, eye: tuple[float, float, float]) -> None:
        from app.viewer._camera import pose_of
        from fields import Camera

        f = 0.5 * 700 / math.tan(math.radians(50) / 2)
        K = torch.tensor([[f, 0, 500.0], [0, f, 350.0], [0, 0, 1]])
        cam = Camera.look_at(eye, (0.0, 0.0, 0.2), (0.0, 0.0, 1.0), K, 1000, 700)
        wxyz, pos = pose_of(cam)
        self.client_id = client_id
        self.camera = type("Cam", (), {})()
        self.camera.wxyz, self.camera.position = wxyz, pos
        self.camera.fov = math.radians(50)
        self.camera.image_width, self.camera.image_height = 1000, 700


def _view_colour_case(scene: GaussianScene, budget: int, repeat: int) -> dict[str, Any]:
    from app.viewer._sh_view import view_colors

    app = ViewerApp(scene, ViewerConfig(port=0, max_splats=budget))
    try:
        tabs = [
            _RestingTab(1, (3.0 * math.cos(a), 3.0 * math.sin(a), 1.5))
            for a in np.linspace(0.0, 2 * math.pi, repeat + 2)[:-1]
        ]
        rested = []
        for tab in tabs:  # (the first is the warm-up)
            t0 = time.perf_counter()
            app._camera_rested(tab)
            rested.append((time.perf_counter() - t0) * 1e3)
        rested = sorted(rested[1:])
        cam = app.view_camera()
        assert cam is not None
        snap = app.state.snapshot()
        dc_budget = None if budget == 0 else budget

        def dc_push() -> None:  # baseline: the same push with DC colour
            frame = app._buffer.build(snap.shown, snap.shown_selection, budget=dc_budget)
            app.splats.buffer = frame.buffer

        out: dict[str, Any] = {
            "shown": app.shown_count,
            "rest_to_buffer_ms": {
                "median_ms": round(float(np.median(rested)), 2),
                "min_ms": round(rested[0], 2),
                "runs": len(rested),
            },
            "baseline_dc_push_ms": timeit(dc_push, repeat=repeat),
        }
        if budget == 0:
            out["sh_eval_only_ms"] = timeit(
                lambda: view_colors(scene.means, scene.sh, cam.center), repeat=repeat
            )
        return out
    finally:
        app.stop()


def bench_view_colour(n: int, repeat: int) -> dict[str, Any]:
    import app.viewer._app as app_module

    scene = surface_scene(n)
    return {
        "n_gaussians": n,
        "sh_degree": 3,
        "all_splats": _view_colour_case(scene, 0, repeat),
        "budget_200k": _view_colour_case(scene, 200_000, repeat),
        "rest_debounce_ms": app_module.REST_S * 1e3,
        "note": "latency after the camera rests = rest_debounce_ms + rest_to_buffer_ms "
        "(+ the websocket transfer of 32 bytes/splat, not included)",
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


def bench_first_splats(
    scene_path: Path, repeat: int, extra: tuple[str, ...] = (), timeout: float = 120.0
) -> dict[str, Any]:
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
                [sys.executable, "-m", "app", "view", str(scene_path), "--port", str(port), *extra],
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
                    if time.monotonic() - t0 > timeout:
                        raise TimeoutError(f"no splats after {timeout:.0f} s")
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


def bench_first_splats_large(
    counts: list[int], baseline_timeout: float, repeat: int = 3
) -> dict[str, Any]:
    """Per scene size: the viewer as it starts (a first look at a strided sample while the file
    loads) against `--no-preview` (nothing until the whole scene is loaded), interleaved run by
    run so that both see the same machine; for the smallest, every splat sent too."""
    out: dict[str, Any] = {"scene": "surface_scene (capture-like, SH degree 3)"}
    with tempfile.TemporaryDirectory() as tmp:
        for n in counts:
            path = save_scene(surface_scene(n), Path(tmp) / f"scene_{n}.ply")
            runs: dict[str, list[dict[str, Any]]] = {"first_look": [], "no_preview": []}
            for _ in range(repeat):
                runs["first_look"].append(bench_first_splats(path, 1))
                if "skipped" in runs["first_look"][-1]:
                    return runs["first_look"][-1]
                runs["no_preview"].append(bench_first_splats(path, 1, ("--no-preview",)))
            case: dict[str, Any] = {}
            for key, results in runs.items():
                secs = sorted(r["seconds_to_first_splats"]["median"] for r in results)
                ready = [r["seconds_to_server_ready"] for r in results]
                ready = [x for x in ready if x is not None]
                case[key] = {
                    "seconds_to_first_splats": {
                        "median": round(float(np.median(secs)), 2),
                        "min": secs[0],
                        "runs": len(secs),
                    },
                    "seconds_to_server_ready_median": (
                        round(float(np.median(ready)), 2) if ready else None
                    ),
                }
            case["browser"] = results[0].get("browser")
            out[f"n_{n}"] = case
            if n == min(counts) and baseline_timeout > 0:
                try:
                    base = bench_first_splats(
                        path, 1, ("--max-splats", "0"), timeout=baseline_timeout
                    )
                except Exception as e:  # no splats in time (or the page stopped answering)
                    base = {"no_splats_within_s": baseline_timeout, "error": str(e)[:200]}
                out[f"baseline_every_splat_n_{n}"] = base
            path.unlink()
    return out


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
        "--large",
        type=int,
        nargs="*",
        default=[1_000_000, 3_000_000],
        help="Gaussian counts of the capture-like scenes timed to first splats",
    )
    ap.add_argument(
        "--baseline-timeout",
        type=float,
        default=90.0,
        help="seconds after which the every-splat baseline counts as a timeout (0: skip it)",
    )
    ap.add_argument(
        "--no-large", action="store_true", help="skip the 1M/3M and view-colour benchmarks"
    )
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
    if not args.no_large:
        result["view_colour"] = bench_view_colour(1_000_000, repeat)
        if not args.no_browser:
            result["first_splats_large"] = bench_first_splats_large(
                args.large, args.baseline_timeout
            )
    result["edits"] = bench_edits(n, repeat)
    emit(result, args.out)


if __name__ == "__main__":
    main()
