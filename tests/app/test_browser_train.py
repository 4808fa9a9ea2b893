"""Browser tier for the Train folder: Chromium watches a training session — the splats change as
it trains, the held-out PSNR read-out shows a number, and the Pause / Save now / Resume / Stop
buttons steer it. Run with `pytest -m browser`; screenshots (`train_*.png`) go to
$SCENELAB_SHOTS (default /tmp/scenelab_shots)."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
import torch

from fields import load_dataset, load_scene
from fields.synthetic import make_world, write_world
from fields.training import TrainConfig, Trainer, TrainSession

from ._browser import (
    BROWSER_TIER,
    REGION,
    grab,
    open_page,
    poll,
    scene_pixels,
    wait_until,
)

pytestmark = [*BROWSER_TIER, pytest.mark.slow]

HELDOUT = re.compile(r"Held-out PSNR: (\d+\.\d\d) dB")


def page_text(page) -> str:
    return page.evaluate("() => document.body.innerText")


@pytest.fixture
def training_viewer(tmp_path):
    """What `run_training_viewer` serves, without its blocking loop: a viewer on a session's
    snapshot, and `start()` to add the Train folder running it (once the page is up: software
    WebGL takes a while to load, and the test wants to see the training from its start)."""
    from app.viewer import ViewerApp, ViewerConfig
    from app.viewer._panel_train import TrainPanel

    root = tmp_path / "data"
    write_world(make_world(0), root, n_views=12, width=80, height=60)
    ds = load_dataset(root)
    trainer = Trainer(ds, TrainConfig(steps=30_000, init_points=3000, sh_degree=0))
    session = TrainSession(
        trainer,
        out=tmp_path / "trained.ply",
        checkpoint=tmp_path / "trained.ckpt",
        eval_every_s=2.0,
    )
    app = ViewerApp(
        session.snapshot()[1],
        ViewerConfig(port=0, root=tmp_path),
        cameras=ds.cameras,
        title="training trained.ply",
    )
    panels: list[TrainPanel] = []

    def start() -> TrainPanel:
        panels.append(TrainPanel(app, session=session, refresh_s=0.5))
        return panels[-1]

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # leave the other core to software WebGL
    try:
        yield app, start, session
    finally:
        session.stop()
        for panel in panels:
            panel.job.wait(60)
        app.stop()
        torch.set_num_threads(threads)


def test_watch_training_in_the_browser(browser, training_viewer, tmp_path):
    app, start, session = training_viewer
    t0 = time.monotonic()

    def mark(what: str) -> None:  # where the time goes (printed, not asserted)
        st = session.status()
        print(f"{time.monotonic() - t0:6.1f} s  step {st.step:>6}  {what}")

    page = open_page(browser, app.url)
    first = poll(page, lambda im: scene_pixels(im) > 3000, what="splats")
    mark("splats shown")
    panel = start()

    # The held-out PSNR read-out shows a number.
    page.wait_for_function(
        "() => /Held-out PSNR: \\d+\\.\\d\\d dB/.test(document.body.innerText)",
        timeout=60_000,
        polling=300,
    )
    mark("held-out PSNR read-out")
    early = float(HELDOUT.search(page_text(page)).group(1))
    grab(page, "train_01_started")
    mark("started")

    # Train a while: the splats the browser shows change, and the chart fills.
    wait_until(
        lambda: session.status().step >= 150 and len(session.status().history) >= 3,
        timeout=120,
        what="150 steps and 3 held-out scores",
    )
    version = session.status().version
    wait_until(lambda: panel._shown_version >= version, what="the newest snapshot shown")

    def changed(im: np.ndarray) -> int:
        d = np.abs(im[REGION].astype(int) - first[REGION].astype(int)).max(-1)
        return int((d > 40).sum())

    poll(page, lambda im: changed(im) > 2000, what="the splats changing as training advances")
    page.wait_for_function(
        "() => /Held-out PSNR: \\d+\\.\\d\\d dB/.test(document.body.innerText)",
        timeout=30_000,
        polling=300,
    )
    later = float(HELDOUT.search(page_text(page)).group(1))
    assert later > early  # held-out PSNR improved
    grab(page, "train_02_training")
    mark("training")

    # Pause through the GUI: the step holds.
    page.get_by_role("button", name="Pause", exact=True).click()
    wait_until(lambda: session.status().state == "paused", what="paused")
    page.get_by_text("Paused", exact=False).first.wait_for(timeout=30_000)
    held = session.status().step
    time.sleep(1.0)
    assert session.status().step == held
    grab(page, "train_03_paused")
    mark("paused")

    # Save now (while paused), then resume.
    page.get_by_role("button", name="Save now", exact=True).click()
    wait_until(lambda: (tmp_path / "trained.ply").exists(), what="saved now")
    assert load_scene(tmp_path / "trained.ply").meta["training"]["steps"] == held
    page.get_by_role("button", name="Resume", exact=True).click()
    wait_until(lambda: session.status().step > held, what="steps after resume")

    # Stop: the job ends and what was trained is saved and shown.
    page.get_by_role("button", name="Stop", exact=True).click()
    assert panel.job.wait(60)
    final = session.status()
    assert final.state == "stopped"
    page.get_by_text("Saved: trained.ply", exact=False).first.wait_for(timeout=30_000)
    assert load_scene(tmp_path / "trained.ply").meta["training"]["steps"] == final.step
    time.sleep(1.0)  # the final push and the job's notification reach the browser
    grab(page, "train_04_stopped")
    mark("stopped")
    page.close()
