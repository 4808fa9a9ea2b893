"""Fixtures for the viewer tests: a small seeded scene built in code, and a running viewer."""

from __future__ import annotations

import math

import pytest
import torch

from fields import Camera, GaussianScene


def blob_scene(seed: int = 0, floor: int = 40, per_blob: int = 1500) -> GaussianScene:
    """A grey floor (label 0) with a red (label 1) and a blue (label 2) blob on it; z up, metres."""
    g = torch.Generator().manual_seed(seed)
    xs = torch.linspace(-1.0, 1.0, floor)
    fx, fy = torch.meshgrid(xs, xs, indexing="ij")
    floor_means = torch.stack([fx.reshape(-1), fy.reshape(-1), torch.zeros(floor * floor)], -1)
    floor_scales = torch.tensor([1.0 / floor, 1.0 / floor, 0.004]).expand(floor * floor, 3)
    parts = [(floor_means, floor_scales, (0.6, 0.6, 0.6), 0)]
    for center, color, label in (
        ((0.4, 0.0, 0.2), (0.9, 0.1, 0.1), 1),
        ((-0.4, 0.0, 0.2), (0.1, 0.2, 0.9), 2),
    ):
        d = torch.randn(per_blob, 3, generator=g)
        d = (
            d
            / d.norm(dim=-1, keepdim=True)
            * 0.15
            * torch.rand(per_blob, 1, generator=g) ** (1 / 3)
        )
        means = torch.tensor(center) + d
        parts.append((means, torch.full((per_blob, 3), 0.015), color, label))
    means = torch.cat([p[0] for p in parts])
    scales = torch.cat([p[1] for p in parts])
    colors = torch.cat([torch.tensor(p[2]).expand(len(p[0]), 3) for p in parts])
    labels = torch.cat([torch.full((len(p[0]),), p[3], dtype=torch.int32) for p in parts])
    n = len(means)
    quats = torch.randn(n, 4, generator=g)
    quats[: floor * floor] = torch.tensor([1.0, 0.0, 0.0, 0.0])  # flat floor tiles
    return GaussianScene.from_activated(
        means,
        quats,
        scales,
        torch.full((n,), 0.9),
        colors,
        extras={"label": labels},
        meta={"up": "+z", "units": "m"},
    )


def look_camera(
    width: int = 160, height: int = 120, eye=(0.0, -2.5, 1.5), target=(0.0, 0.0, 0.1)
) -> Camera:
    f = 0.5 * height / math.tan(math.radians(50) / 2)
    K = torch.tensor([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]])
    return Camera.look_at(eye, target, (0.0, 0.0, 1.0), K, width, height)


def project(camera: Camera, point) -> tuple[float, float]:
    p = camera.viewmat.double() @ torch.tensor([*point, 1.0], dtype=torch.float64)
    uv = camera.K.double() @ (p[:3] / p[2])
    return float(uv[0]), float(uv[1])


@pytest.fixture(scope="module")
def scene() -> GaussianScene:
    return blob_scene()


@pytest.fixture
def viewer(scene, tmp_path):
    """A running viewer on a free port, GUI paths confined to `tmp_path`."""
    from app.viewer import ViewerApp, ViewerConfig
    from fields import save_scene

    src = save_scene(scene, tmp_path / "input.ply")
    app = ViewerApp(scene, ViewerConfig(port=0, root=tmp_path), source=src)
    try:
        yield app
    finally:
        app.stop()


@pytest.fixture
def no_wait(monkeypatch):
    """Let `ViewerApp.wait` return at once (recording the app, stopping the server) instead of
    serving forever; returns the list of apps that would have served."""
    from app.viewer._app import ViewerApp

    started = []

    def wait(self):
        started.append(self)
        self.stop()

    monkeypatch.setattr(ViewerApp, "wait", wait)
    return started


# ---------------------------------------------------------------------- browser tier
@pytest.fixture(scope="module")
def chromium():
    """Debian's Chromium through Playwright, one per test module (`_browser.BROWSER_TIER`)."""
    from ._browser import CHROMIUM, CHROMIUM_ARGS

    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="needs the playwright package (pip install playwright)"
    )
    if not CHROMIUM.exists():
        pytest.skip(f"needs Debian's Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def browser(chromium):
    """A fresh browser context per test, closed afterwards even when the test fails: a page left
    open keeps software WebGL drawing splats and starves every later test of CPU."""
    from ._browser import VIEWPORT

    context = chromium.new_context(viewport=VIEWPORT)
    yield context
    context.close()
