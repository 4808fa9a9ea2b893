"""The "Train" folder: train a scene from the dataset's photos and watch it in the browser.

Training is one `fields.training.TrainSession` run as a job on the viewer's job runner (the job
strip's progress bar and "Cancel job" are the session's; cancelling stops it, and a stopped run
keeps — saves — what it trained). Pause, Resume, Stop and "Save now" steer the session from the
GUI threads; a poller thread shows the session's newest snapshot every few seconds (as a history
step, so Undo goes back through the training) and refreshes the read-outs: step, Gaussians,
steps/s, train and held-out PSNR, ETA, and a chart of the held-out PSNR so far.

Two ways in: `scenelab view SCENE --data DATA` (the panel builds the trainer when "Start" is
pressed: new Gaussians or the open scene, on the dataset), and `scenelab train DATA --viewer`
(`run_training_viewer`: the panel is handed a session that starts at once). A session training
a NeRF (`scenelab train DATA --model nerf --viewer`) publishes NeRF snapshots: the viewer shows
them through its NeRF frame streamers (`ViewerApp.show_scene`), and the read-out gives the
occupancy grid's fill instead of a Gaussian count.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fields import GaussianScene, load_dataset
from fields.training import (
    TrainConfig,
    Trainer,
    TrainSession,
    TrainStatus,
    format_seconds,
    resolve_device,
)

from .._paths import confine, display
from ._jobs import Job, JobContext

if TYPE_CHECKING:
    from ._app import ViewerApp

_log = logging.getLogger(__name__)

START_FROM = ("new Gaussians", "the open scene")
STATE_LABEL = {
    "ready": "Ready",
    "running": "Running",
    "paused": "Paused",
    "stopped": "Stopped",
    "done": "Done",
    "failed": "Failed",
}
FOLDER_ORDER = 0.5  # right below the job strip (orders 0.0-0.3)


class TrainPanel:
    """See the module docstring. `data`/`dataset`: what "Start" trains on (view mode);
    `session`: a session to run and show at once (train mode). `refresh_s`: how often the
    poller looks for a new snapshot and refreshes the read-outs. `config`: the recipe "Start"
    trains with (its steps and downscale replaced by the widgets')."""

    def __init__(
        self,
        app: ViewerApp,
        *,
        data: Path | None = None,
        dataset: Any = None,
        session: TrainSession | None = None,
        refresh_s: float = 1.0,
        device: str = "auto",
        config: TrainConfig | None = None,
    ) -> None:
        if session is None and dataset is None:
            raise ValueError("the Train panel needs a dataset to train on, or a session")
        self.app = app
        self.data = data
        self.dataset = dataset
        self.device = device
        self.base_config = config or TrainConfig()  # "Start" replaces its steps and downscale
        self.refresh_s = float(refresh_s)
        self.session: TrainSession | None = None
        self.job: Job | None = None
        self._shown_version = 0
        self._lock = threading.Lock()  # one refresh at a time (poller vs. button callbacks)
        self._quit = threading.Event()
        self._poller: threading.Thread | None = None
        gui = app.server.gui
        with gui.add_folder("Train", order=FOLDER_ORDER) as self.folder:
            self.setup_widgets = []
            if session is None:
                self.steps = gui.add_number(
                    "Steps", self.base_config.steps, min=1, step=100, hint="Optimisation steps."
                )
                self.downscale = gui.add_number(
                    "Downscale",
                    1.0,
                    min=1.0,
                    step=1.0,
                    hint="Train on the photos shrunk by this factor (faster, coarser).",
                )
                self.start_from = gui.add_dropdown(
                    "Start from",
                    START_FROM,
                    initial_value=START_FROM[0],
                    hint="new Gaussians: the dataset's points (or random ones); the open "
                    "scene: continue training the Gaussians shown now.",
                )
                self.out = gui.add_text(
                    "Train to",
                    self._free_name(),
                    hint=f"The .ply to write (with a .ckpt beside it), inside {app.root}",
                )
                self.start_button = gui.add_button("Start training", color="green")
                self.setup_widgets = [self.steps, self.downscale, self.start_from, self.out]
                self.start_button.on_click(app.action("Start training")(lambda _e: self.start()))
            self.pause_button = gui.add_button("Pause", disabled=True)
            self.resume_button = gui.add_button("Resume", disabled=True)
            self.stop_button = gui.add_button("Stop", disabled=True, color="red")
            self.save_button = gui.add_button("Save now", disabled=True)
            self.readout = gui.add_markdown("Not started.")
            self.chart = _psnr_chart(gui)
        self.pause_button.on_click(app.action("Pause")(lambda _e: self.pause()))
        self.resume_button.on_click(app.action("Resume")(lambda _e: self.resume()))
        self.stop_button.on_click(app.action("Stop")(lambda _e: self.stop()))
        self.save_button.on_click(app.action("Save now")(lambda e: self.save_now(e.client)))
        if session is not None:
            self.run(session)

    # ------------------------------------------------------------------ actions (also for tests)
    def start(
        self,
        *,
        steps: int | None = None,
        out: str | None = None,
        downscale: float | None = None,
        start_from: str | None = None,
    ) -> Job:
        """Build a trainer on the dataset (in the job: loading photos takes a while) and run
        it; the widgets' values unless given."""
        if self.dataset is None:
            raise ValueError("no dataset to train on: open the viewer with --data")
        self._check_idle()
        steps = int(self.steps.value if steps is None else steps)
        scale = float(self.downscale.value if downscale is None else downscale)
        origin = str(self.start_from.value if start_from is None else start_from)
        if steps < 1 or scale < 1.0:
            raise ValueError(f"steps must be >= 1 and downscale >= 1, got {steps}, {scale}")
        if origin not in START_FROM:
            raise ValueError(f"start from one of {START_FROM}, got {origin!r}")
        path = confine(self.out.value if out is None else out, self.app.root)
        if path.suffix.lower() != ".ply":
            raise ValueError(f"{display(path, self.app.root)}: train to a .ply file")
        ckpt = path.with_suffix(".ckpt")
        for p in (path, ckpt):
            if p.exists():
                raise FileExistsError(
                    f"{display(p, self.app.root)} exists; choose another name to train to"
                )
        path.parent.mkdir(parents=True, exist_ok=True)  # inside the root: `path` is confined
        if origin == START_FROM[1] and self.app.nerf is not None:
            raise ValueError(
                "the open scene is a NeRF: train new Gaussians, or Convert to Gaussians first"
            )
        init = self.app.state.scene if origin == START_FROM[1] else None
        config = dataclasses.replace(self.base_config, steps=steps, downscale=scale)

        def build(ctx: JobContext) -> TrainSession:
            ctx.progress(0.0, "loading the photos")
            ds = self.dataset
            if scale != 1.0:
                ds = load_dataset(
                    self.data or ds.root, downscale=scale, allow_outside=ds.allow_outside
                )
            trainer = Trainer(ds, config, device=resolve_device(self.device), init=init)
            return TrainSession(trainer, out=path, checkpoint=ckpt)

        for w in self.setup_widgets:
            w.disabled = True
        self.start_button.disabled = True
        self.readout.content = "Loading the photos…"
        return self._submit(build)

    def run(self, session: TrainSession) -> Job:
        """Run `session` as a job and show it."""
        self._check_idle()
        return self._submit(lambda _ctx: session)

    def pause(self) -> None:
        self._need().pause()
        self.refresh(show_scene=False)

    def resume(self) -> None:
        self._need().resume()
        self.refresh(show_scene=False)

    def stop(self) -> None:
        """Stop training; the job saves what was trained and ends."""
        self._need().stop()
        self.refresh(show_scene=False)

    def save_now(self, client: Any = None) -> Future[Path]:
        """Write the scene and checkpoint as they are (at the next step boundary)."""
        session = self._need()
        fut = session.request_save()

        def told(f: Future[Path]) -> None:
            e = f.exception()
            if e is not None:
                self.app.notify(
                    "Save failed", f"{type(e).__name__}: {e}", client=client, color="red"
                )
            else:
                where = display(f.result(), self.app.root)
                self.app.notify("Saved", f"{where} (step {session.status().step:,})", client=client)

        fut.add_done_callback(told)
        return fut

    def close(self) -> None:
        """Stop the poller (the session itself is the job's to end)."""
        self._quit.set()

    # ------------------------------------------------------------------ the job
    def _submit(self, make: Any) -> Job:
        def job(ctx: JobContext) -> TrainStatus:
            session = make(ctx)
            self._attach(session)
            final = session.run(ctx.progress, lambda: ctx.cancelled)
            self.refresh()
            if final.last_saved is not None:
                self.app.state.set_source(final.last_saved)
                where = display(final.last_saved, self.app.root)
                what = (
                    "the NeRF"
                    if getattr(final, "kind", "gaussians") == "nerf"
                    else f"{final.n_gaussians:,} Gaussians"
                )
                ctx.progress(
                    final.fraction,
                    f"{STATE_LABEL[final.state]} at step {final.step:,}: saved {what} to {where}",
                )
            return final

        def done(job: Job) -> None:
            if job.error is not None:  # a failed build: give the setup back
                self._enable_setup()
            self.refresh()

        self.job = self.app.jobs.submit("Train", job, on_done=done)
        return self.job

    def _attach(self, session: TrainSession) -> None:
        with self._lock:
            self.session = session
            self._shown_version = 0
        self.refresh()
        self._poller = threading.Thread(target=self._poll, name="train-poller", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        session = self.session
        while session is not None and not self._quit.wait(self.refresh_s):
            try:
                self.refresh()
            except Exception:  # a closing server must not kill the poller with a traceback
                _log.debug("train panel refresh failed", exc_info=True)
            if session.status().finished:
                return

    # ------------------------------------------------------------------ read-outs
    def refresh(self, *, show_scene: bool = True) -> TrainStatus | None:
        """Show the newest snapshot (unless `show_scene` is False: GUI callbacks leave the
        splat push to the poller) and update the read-outs and buttons."""
        with self._lock:
            session = self.session
            if session is None:
                return None
            snap = session.snapshot()
            status = session.status()
            if show_scene and snap is not None and snap[0] > self._shown_version:
                self._shown_version = snap[0]
                self._show(snap[1])
            # Only what changed goes to the browsers (every assignment is a message).
            _assign(self.readout, "content", readout(status, session.out, self.app.root))
            _update_chart(self.chart, status)
            active = status.active
            _assign(self.pause_button, "disabled", status.state != "running")
            _assign(self.resume_button, "disabled", status.state != "paused")
            _assign(self.stop_button, "disabled", not active)
            _assign(self.save_button, "disabled", not active)
            if status.finished:
                self._enable_setup()
            return status

    def _show(self, scene: GaussianScene | Any) -> None:
        # Each snapshot replaces the scene with no history behind it (undo does not walk back
        # through training, and old snapshots are not kept); pushed from this poller thread.
        # A NeRF snapshot replaces the NeRF the streamers draw.
        step = int(scene.meta.get("training", {}).get("steps", 0))
        self.app.show_scene(scene, f"train step {step:,}")

    def _enable_setup(self) -> None:
        if not self.setup_widgets:
            return
        for w in [*self.setup_widgets, self.start_button]:
            _assign(w, "disabled", False)
        try:
            taken = confine(self.out.value, self.app.root).exists()
        except ValueError:  # a path outside the root: "Start" will say so
            taken = False
        if taken:
            self.out.value = self._free_name()

    def _check_idle(self) -> None:
        # The job (not the session) says: a session is only attached once its job built it.
        if self.job is not None and not self.job.status.finished:
            raise RuntimeError("training already runs; stop it first")

    def _need(self) -> TrainSession:
        if self.session is None:
            raise RuntimeError("no training session: start training first")
        return self.session

    def _free_name(self) -> str:
        """`<data>_trained.ply`, numbered past names that exist (with their checkpoints)."""
        stem = (self.data.stem if self.data is not None else "scene") + "_trained"
        root = self.app.root
        for i in range(1, 10_000):
            name = f"{stem}.ply" if i == 1 else f"{stem}_{i}.ply"
            if not (root / name).exists() and not (root / name).with_suffix(".ckpt").exists():
                return name
        return f"{stem}.ply"


def readout(s: TrainStatus, out: Path, root: Path) -> str:
    """The folder's read-out (markdown): state and step, then one line per figure."""
    total = f" / {s.total_steps:,}" if s.total_steps else ""
    lines = [f"**{STATE_LABEL[s.state]}** · step {s.step:,}{total} · {100 * s.fraction:.1f} %"]
    if getattr(s, "kind", "gaussians") == "nerf":
        occupied = getattr(s, "occupied", None)
        lines.append("NeRF occupancy: " + ("—" if occupied is None else f"{100 * occupied:.1f} %"))
    else:
        lines.append(f"Gaussians: {s.n_gaussians:,}")
    if s.state == "running":
        lines.append(f"Steps/s: {s.steps_per_s:.1f}")
        if math.isfinite(s.eta_s):
            lines.append(f"ETA: {format_seconds(s.eta_s)}")
    lines.append("Train PSNR: " + ("—" if s.train_psnr is None else f"{s.train_psnr:.2f} dB"))
    if s.heldout_views == 0:
        lines.append("Held-out PSNR: — (no views held out)")
    elif s.heldout_psnr is None:
        lines.append("Held-out PSNR: — (scored soon)")
    else:
        step = int(s.history[-1]["step"]) if s.history else s.step
        lines.append(f"Held-out PSNR: **{s.heldout_psnr:.2f} dB** (step {step:,})")
    if s.last_saved is None:
        lines.append(f"Saves to: `{display(out, root)}`")
    else:
        lines.append(f"Saved: `{display(s.last_saved, root)}` ({s.saves}×)")
    if s.error:
        lines.append(f"⚠ {s.error}")
    return "  \n".join(lines)


def _psnr_chart(gui: Any) -> Any:
    """A uPlot chart of held-out PSNR against step (viser >= 0.2); markdown where it is missing."""
    empty = np.zeros(0, np.float64)
    if not hasattr(gui, "add_uplot"):
        return gui.add_markdown("")
    return gui.add_uplot(
        (empty, empty),
        (
            {"label": "step"},
            {
                "label": "held-out PSNR (dB)",
                "stroke": "#1c7ed6",
                "width": 2,
                "points": {"show": True},
            },
        ),
        scales={"x": {"time": False}, "y": {"auto": True}},
        legend={"show": True},
        aspect=1.6,
        visible=False,
    )


def _update_chart(chart: Any, s: TrainStatus) -> None:
    if not s.history:
        return
    steps = np.array([h["step"] for h in s.history], np.float64)
    psnrs = np.array([h["psnr"] for h in s.history], np.float64)
    if hasattr(chart, "data"):
        if len(chart.data[0]) != len(steps):
            chart.data = (steps, psnrs)
        _assign(chart, "visible", True)
    else:
        recent = " → ".join(f"{p:.1f}" for p in psnrs[-8:])
        _assign(chart, "content", f"Held-out PSNR so far (dB): {recent}")


def _assign(handle: Any, name: str, value: Any) -> None:
    if getattr(handle, name) != value:
        setattr(handle, name, value)
