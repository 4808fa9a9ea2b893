"""A job runner for long work (feature distillation, edits, saving, grasp search, ...).

One worker thread runs jobs in submission order, so GUI callbacks return at once and the server
stays responsive. A job is a function `fn(ctx: JobContext) -> result`; it reports progress with
`ctx.progress(fraction, text)` and stops early when `ctx.cancelled` (or `ctx.check()` raises
`JobCancelled`). Whatever a job raises is caught and recorded on the `Job`: a crash inside a job
never reaches the server. Listeners (`on_update`) hear every state change; the GUI's progress
bar, cancel button and notifications are one such listener.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

_log = logging.getLogger(__name__)


class JobCancelled(Exception):
    """Raised inside a job (by `JobContext.check`) when the user asked it to stop."""


class JobStatus(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED)


@dataclass(eq=False)
class Job:
    """One unit of work and what became of it. Read-only for everyone but the runner."""

    id: int
    name: str
    fn: Callable[[JobContext], Any] = field(repr=False)
    status: JobStatus = JobStatus.QUEUED
    fraction: float = 0.0
    text: str = ""
    result: Any = field(default=None, repr=False)
    error: str | None = None  # one line: exception type and message
    traceback: str | None = field(default=None, repr=False)
    submitted_at: float = field(default_factory=time.monotonic)
    started_at: float | None = None
    finished_at: float | None = None
    on_done: Callable[[Job], None] | None = field(default=None, repr=False)
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    _finished: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job finished (any outcome); False on timeout."""
        return self._finished.wait(timeout)


class JobContext:
    """What a running job sees: progress reporting and the cancel flag."""

    def __init__(self, runner: JobRunner, job: Job) -> None:
        self._runner = runner
        self._job = job
        self._last_emit = 0.0

    @property
    def cancelled(self) -> bool:
        return self._job._cancel.is_set()

    def check(self) -> None:
        """Raise `JobCancelled` when cancel was requested; call this between steps."""
        if self._job._cancel.is_set():
            raise JobCancelled()

    def progress(self, fraction: float, text: str | None = None) -> None:
        """Report progress in [0, 1]. Listener updates are throttled to ~20 per second."""
        self._job.fraction = min(1.0, max(0.0, float(fraction)))
        if text is not None:
            self._job.text = text
        now = time.monotonic()
        if now - self._last_emit >= 0.05 or self._job.fraction >= 1.0:
            self._last_emit = now
            self._runner._emit(self._job)


class JobRunner:
    """Runs jobs one at a time on a daemon worker thread; see the module docstring."""

    def __init__(self, name: str = "scenelab-jobs") -> None:
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._listeners: list[Callable[[Job], None]] = []
        self._jobs: list[Job] = []  # recent jobs, newest last (bounded)
        self._current: Job | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ public API
    def submit(
        self,
        name: str,
        fn: Callable[[JobContext], Any],
        *,
        on_done: Callable[[Job], None] | None = None,
    ) -> Job:
        """Queue `fn` to run; returns at once. `on_done(job)` runs on the worker after it
        finished (any outcome); its own exceptions are logged and swallowed."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the job runner has been shut down")
            job = Job(next(self._ids), name, fn, on_done=on_done)
            self._jobs.append(job)
            del self._jobs[:-50]
        self._emit(job)
        self._queue.put(job)
        return job

    def cancel(self, job: Job | None = None) -> bool:
        """Ask `job` (default: the running one) to stop. A queued job is dropped before it
        starts; a running job stops at its next `ctx.check()`. Returns whether a job was asked."""
        job = job if job is not None else self._current
        if job is None or job.status.finished:
            return False
        job._cancel.set()
        self._emit(job)
        return True

    def cancel_all(self) -> None:
        with self._lock:
            pending = [j for j in self._jobs if not j.status.finished]
        for job in pending:
            self.cancel(job)

    @property
    def current(self) -> Job | None:
        """The running job, if any."""
        return self._current

    @property
    def busy(self) -> bool:
        with self._lock:
            return any(not j.status.finished for j in self._jobs)

    def jobs(self) -> list[Job]:
        with self._lock:
            return list(self._jobs)

    def on_update(self, callback: Callable[[Job], None]) -> Callable[[Job], None]:
        """Call `callback(job)` on every change of a job (submitted, progress, finished).

        Runs on the thread that caused the change; keep it short and never raise."""
        with self._lock:
            self._listeners.append(callback)
        return callback

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until every submitted job finished; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for job in self.jobs():
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not job.wait(left):
                return False
        return True

    def shutdown(self, timeout: float = 5.0) -> None:
        """Cancel everything and stop the worker (waits up to `timeout` for the running job)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.cancel_all()
        self._queue.put(None)
        self._thread.join(timeout)

    # ------------------------------------------------------------------ worker
    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            self._run(job)

    def _run(self, job: Job) -> None:
        if job._cancel.is_set():
            self._finish(job, JobStatus.CANCELLED)
            return
        self._current = job
        job.status = JobStatus.RUNNING
        job.started_at = time.monotonic()
        self._emit(job)
        try:
            job.result = job.fn(JobContext(self, job))
        except JobCancelled:
            self._finish(job, JobStatus.CANCELLED)
        except BaseException as e:  # even SystemExit: a job must never take the server down
            job.error = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            job.traceback = traceback.format_exc()
            _log.warning("job %r failed: %s\n%s", job.name, job.error, job.traceback)
            self._finish(job, JobStatus.FAILED)
        else:
            job.fraction = 1.0
            self._finish(job, JobStatus.DONE)
        finally:
            self._current = None

    def _finish(self, job: Job, status: JobStatus) -> None:
        job.status = status
        job.finished_at = time.monotonic()
        if job.on_done is not None:
            try:
                job.on_done(job)
            except Exception:
                _log.exception("on_done of job %r raised", job.name)
        job._finished.set()
        self._emit(job)

    def _emit(self, job: Job) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for cb in listeners:
            try:
                cb(job)
            except Exception:
                _log.exception("job listener raised")
