"""The job strip at the top of the GUI: what runs, a progress bar, a cancel button; and a
notification in every browser when a job ends (with the reason when it failed)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from ._jobs import Job, JobStatus

if TYPE_CHECKING:
    from ._app import ViewerApp


class JobsPanel:
    def __init__(self, app: ViewerApp) -> None:
        self.app = app
        gui = app.server.gui
        self._lock = threading.Lock()
        self.summary = gui.add_markdown(self._summary_text(), order=0.0)
        self.status = gui.add_markdown("", visible=False, order=0.1)
        self.progress = gui.add_progress_bar(0.0, visible=False, animated=True, order=0.2)
        self.cancel = gui.add_button("Cancel job", visible=False, color="red", order=0.3)
        self.cancel.on_click(app.action("Cancel")(lambda _e: app.jobs.cancel()))
        app.jobs.on_update(self._on_job)
        app.state.on_change(lambda _kind: self.refresh_summary())

    def _summary_text(self) -> str:
        nerf = getattr(self.app, "nerf", None)
        if nerf is not None:
            return (
                f"**{self.app.title}** · NeRF · {100 * nerf.occupied_fraction():.1f} % of the "
                "grid occupied"
            )
        snap = self.app.state.snapshot()
        n = len(snap.scene)
        hidden = snap.scene.extras.get("hidden")
        shown = n - int(hidden.sum()) if hidden is not None else n
        parts = [f"**{self.app.title}** · {n:,} Gaussians"]
        if shown != n:
            parts.append(f"{shown:,} shown")
        parts.append(f"{snap.n_selected:,} selected")
        return " · ".join(parts)

    def refresh_summary(self) -> None:
        self.summary.content = self._summary_text()

    def _on_job(self, job: Job) -> None:
        with self._lock:
            running = job.status in (JobStatus.RUNNING, JobStatus.QUEUED)
            if running:
                pct = 100.0 * job.fraction
                text = f"**{job.name}**" + (f" — {job.text}" if job.text else "")
                if job.cancel_requested:
                    text += " (cancelling…)"
                self.status.content = text
                self.progress.value = max(0.0, min(100.0, pct))
                self.status.visible = self.progress.visible = self.cancel.visible = True
                return
            if self.app.jobs.busy:  # another job is queued: its own update will show it
                return
            self.status.visible = self.progress.visible = self.cancel.visible = False
        if job.status == JobStatus.DONE:
            self.app.notify(job.name, job.text or "Done.", color="green")
        elif job.status == JobStatus.CANCELLED:
            self.app.notify(job.name, "Cancelled.", color="yellow")
        elif job.status == JobStatus.FAILED:
            self.app.notify(
                f"{job.name} failed", job.error or "unknown error", color="red", seconds=None
            )
