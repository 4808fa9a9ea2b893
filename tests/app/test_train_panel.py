"""The Train folder: a `TrainSession` run as a job in a real viewer — the splats shown follow
the training, Pause/Resume/Stop/Save steer it, stopping keeps what was trained; and the two ways
in (`scenelab view SCENE --data DATA`, `run_training_viewer`), Ctrl+C included."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from app.cli import main
from app.viewer import ViewerApp, ViewerConfig, run_training_viewer
from app.viewer._jobs import JobStatus
from app.viewer._panel_train import START_FROM, TrainPanel
from fields import load_dataset, load_scene, save_scene
from fields.synthetic import make_world, write_world
from fields.training import TrainConfig, Trainer, TrainSession

FOREVER = 100_000
REPO = Path(__file__).resolve().parents[2]
TINY = TrainConfig(steps=FOREVER, init_points=2000, sh_degree=0)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train_panel") / "data"
    write_world(make_world(0), root, n_views=8, width=48, height=36)
    return root


@pytest.fixture(scope="module")
def dataset(data_dir):
    return load_dataset(data_dir)


def make_session(dataset, out: Path, **kw) -> TrainSession:
    kw.setdefault("publish_every_s", 0.05)
    kw.setdefault("eval_every_s", 0.1)
    return TrainSession(Trainer(dataset, TINY), out=out, checkpoint=out.with_suffix(".ckpt"), **kw)


@pytest.fixture
def viewers():
    apps: list[ViewerApp] = []
    yield apps
    for app in apps:
        app.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(cond, timeout: float = 60.0, what: str = "condition") -> None:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


_SHOWN: dict[int, list[str]] = {}


def train_steps(app: ViewerApp) -> list[str]:
    """The training snapshots the viewer has shown so far (each replaces the scene and its
    history, so the state's one history step names the latest)."""
    seen = _SHOWN.setdefault(id(app), [])
    steps, _ = app.state.history_steps()
    assert len(steps) == 1 or not steps[-1].startswith("train step")  # no history of snapshots
    if steps[0].startswith("train step") and (not seen or seen[-1] != steps[0]):
        seen.append(steps[0])
    return seen


def test_the_viewer_follows_a_running_session(dataset, tmp_path, viewers):
    s = make_session(dataset, tmp_path / "out.ply")
    _, initial = s.snapshot()
    app = ViewerApp(initial, ViewerConfig(port=0, root=tmp_path), cameras=dataset.cameras)
    viewers.append(app)
    panel = TrainPanel(app, session=s, refresh_s=0.05)
    assert panel.job is not None

    # The scene shown changes as training advances: each new snapshot replaces the scene (no
    # undo history of snapshots) and is pushed to the browsers.
    wait_until(lambda: len(train_steps(app)) >= 3, what="three snapshots shown")
    shown = app.state.scene
    assert not torch.equal(shown.means, initial.means)
    v = app.state.version
    wait_until(lambda: app.push_stats.version >= v, what="the push")  # on the poller thread
    assert app.shown_count == len(shown) == s.status().n_gaussians
    wait_until(lambda: s.status().heldout_psnr is not None and len(s.status().history) >= 2)
    panel.refresh()
    assert "Held-out PSNR: **" in panel.readout.content and " dB" in panel.readout.content
    assert "Running" in panel.readout.content and "Steps/s" in panel.readout.content
    assert len(panel.chart.data[0]) == len(s.status().history) and panel.chart.visible

    # Pause: the step holds and the splats stay; the buttons say what can be done.
    panel.pause()
    wait_until(lambda: s.status().state == "paused", what="paused")
    panel.refresh()
    held, n_shown = s.status().step, len(train_steps(app))
    assert panel.pause_button.disabled and not panel.resume_button.disabled
    assert "Paused" in panel.readout.content
    time.sleep(0.3)
    panel.refresh()
    assert s.status().step == held and len(train_steps(app)) <= n_shown + 1

    # Save now, while paused.
    path = panel.save_now().result(timeout=30)
    assert load_scene(path).meta["training"]["steps"] == held

    panel.resume()
    wait_until(lambda: s.status().step > held + 5, what="steps after resume")

    # Stop: the job ends, what was trained is saved and shown.
    panel.stop()
    assert panel.job.wait(60) and panel.job.status is JobStatus.DONE, panel.job.error
    final = s.status()
    assert final.state == "stopped" and final.step > held + 5
    saved = load_scene(tmp_path / "out.ply")
    assert saved.meta["training"]["steps"] == final.step
    assert app.state.scene.allclose(saved, atol=1e-6)
    assert app.state.source == tmp_path / "out.ply"
    assert panel.stop_button.disabled and panel.save_button.disabled
    assert "Stopped" in panel.readout.content and "Saved: `out.ply`" in panel.readout.content


def test_cancel_job_stops_and_keeps_the_training(dataset, tmp_path, viewers):
    s = make_session(dataset, tmp_path / "out.ply")
    app = ViewerApp(s.snapshot()[1], ViewerConfig(port=0, root=tmp_path))
    viewers.append(app)
    panel = TrainPanel(app, session=s, refresh_s=0.05)
    wait_until(lambda: s.status().step >= 10, what="steps")
    assert app.jobs.cancel()  # the job strip's "Cancel job"
    assert panel.job.wait(60) and panel.job.status is JobStatus.DONE
    assert s.status().state == "stopped"
    assert load_scene(tmp_path / "out.ply").meta["training"]["steps"] == s.status().step


def test_view_mode_starts_from_the_open_scene_and_stops(data_dir, dataset, tmp_path, viewers):
    opened = load_scene(data_dir / "scene.ply")
    src = save_scene(opened, tmp_path / "input.ply")
    app = ViewerApp(
        opened,
        ViewerConfig(port=0, root=tmp_path),
        source=src,
        cameras=dataset.cameras,
        dataset=dataset,
    )
    viewers.append(app)
    panel = TrainPanel(app, data=data_dir, dataset=dataset, refresh_s=0.05, config=TINY)
    assert panel.out.value == "data_trained.ply" and panel.pause_button.disabled
    with pytest.raises(FileExistsError, match="input"):
        panel.start(out="input.ply")  # nothing the user made is overwritten
    job = panel.start(out="trained.ply", start_from=START_FROM[1])
    assert panel.start_button.disabled and panel.steps.disabled
    wait_until(lambda: panel.session is not None and panel.session.status().step >= 5)
    s = panel.session
    assert s.trainer.config.steps == FOREVER and s.trainer.config.sh_degree == 0
    wait_until(lambda: len(train_steps(app)) >= 1, what="a snapshot shown")
    with pytest.raises(RuntimeError, match="already runs"):
        panel.start(out="other.ply")
    panel.pause()
    wait_until(lambda: s.status().state == "paused", what="paused")
    panel.stop()
    assert job.wait(60) and job.status is JobStatus.DONE, job.error
    saved = load_scene(tmp_path / "trained.ply")
    assert (tmp_path / "trained.ckpt").is_file()
    # Started from the open scene's Gaussians (not new random ones), then trained.
    assert saved.meta["training"]["steps"] == s.status().step > 0
    assert not torch.equal(saved.means, opened.means)
    assert load_scene(src).allclose(opened)  # the input is untouched
    assert not panel.start_button.disabled and not panel.steps.disabled


def test_view_with_data_shows_the_train_folder(no_wait, data_dir, tmp_path):
    scene = save_scene(load_scene(data_dir / "scene.ply"), tmp_path / "s.ply")
    port = str(free_port())
    assert main(["view", str(scene), "--data", str(data_dir), "--port", port]) == 0
    (app,) = no_wait
    assert isinstance(app.train_panel, TrainPanel) and app.train_panel.session is None
    assert main(["view", str(scene), "--port", port]) == 0  # no --data, no Train folder
    assert not hasattr(no_wait[1], "train_panel")


def test_run_training_viewer_saves_when_it_closes(dataset, tmp_path, capsys):
    s = make_session(dataset, tmp_path / "out.ply")
    assert run_training_viewer(s, port=0, open_seconds=1.0) == 0
    st = s.status()
    assert st.state == "stopped" and st.step > 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["out"] == str(tmp_path / "out.ply") and summary["steps"] == st.step
    assert load_scene(tmp_path / "out.ply").meta["training"]["steps"] == st.step


def test_ctrl_c_stops_training_and_keeps_it(data_dir, tmp_path):
    """The real thing: SIGINT to a process serving `run_training_viewer`."""
    script = f"""
import sys
from pathlib import Path
from fields import load_dataset
from fields.training import Trainer, TrainConfig, TrainSession
from app.viewer import run_training_viewer
ds = load_dataset({str(data_dir)!r})
t = Trainer(ds, TrainConfig(steps={FOREVER}, init_points=2000, sh_degree=0))
s = TrainSession(t, out=Path({str(tmp_path / "out.ply")!r}), checkpoint=Path({str(tmp_path / "out.ckpt")!r}))
sys.exit(run_training_viewer(s, port=0))
"""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    watchdog = threading.Timer(120, proc.kill)  # never hang the suite
    watchdog.start()
    try:
        seen = []
        while not any("watch at http://127.0.0.1:" in line for line in seen):
            line = proc.stdout.readline()
            assert line, "".join(seen)  # the process ended before serving
            seen.append(line)
        time.sleep(1.0)  # some steps
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
    out = "".join(seen) + out
    assert proc.returncode == 0, out
    summary = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
    assert summary["state"] == "stopped" and summary["steps"] > 0
    assert "saving what was trained" in out
    assert load_scene(tmp_path / "out.ply").meta["training"]["steps"] == summary["steps"]
    resumed = Trainer.resume(tmp_path / "out.ckpt", load_dataset(data_dir))
    assert resumed.step_count == summary["steps"]
