"""`TrainSession`: a trainer run on one thread that other threads watch and steer.

The trainer is a Gaussian `Trainer` or a `fields.nerf.NerfTrainer` (anything with the
`SessionTrainer` surface); `kind` says which ("gaussians" | "nerf"), `snapshot()` gives a
`GaussianScene` or a `NerfScene` accordingly, and saves go to `.ply`/`.splat` or `.nerf`.

The viewer's Train panel (and `scenelab train --viewer`) runs `session.run(...)` as a job and,
from other threads, calls `pause()`, `resume()`, `stop()`, `request_save()`, reads `status()`
and polls `snapshot()` for the newest published scene. Only the thread inside `run` touches the
trainer while it runs; the others exchange flags and immutable values under one lock, so a
snapshot or a save always shows the Gaussians between two steps, never in the middle of one.

What the loop does besides stepping:
- every `eval_every_s` seconds it scores a few held-out views (`eval_views`; the trainer keeps
  the history of those PSNRs), so the read-out shows held-out PSNR improving as training goes;
- every `publish_every_s` seconds it publishes a detached copy of the scene with a version number
  one higher than the last;
- a save asked for with `request_save()` is written at the next step boundary (the scene, then
  the checkpoint beside it; each atomically);
- when the run ends, stopped or finished, it saves what was trained ("stopping keeps what was
  trained"). A finished run also scores every held-out view and records that in the scene's
  `metrics`.

Overwriting: with `overwrite=False` an `out` (or `checkpoint`) that exists when the session is
created is an error; once the session has written a file it owns it and replaces it on later
saves.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from ..scene import GaussianScene
from ._data import Splits
from ._eval import EvalResult

if TYPE_CHECKING:
    from ..datasets import Dataset

# A `GaussianScene` or a `fields.nerf.NerfScene` (fields.nerf builds on this package, so the
# session knows NeRFs only through their trainer: `scene_kind` and `SessionTrainer.save_scene`).
AnyScene = Any

_log = logging.getLogger(__name__)

SessionState = Literal["ready", "running", "paused", "stopped", "done", "failed"]
SceneKind = Literal["gaussians", "nerf"]
SCENE_SUFFIXES = (".ply", ".splat")  # Gaussian scenes
NERF_SUFFIXES = (".nerf",)
TRAIN_PSNR_WINDOW = 20  # steps the train PSNR read-out averages (one step's view is noisy)
RATE_WINDOW_S = 2.0  # optimisation seconds the steps/s read-out spans
UNLIMITED_STEPS = 10**9  # `TrainConfig.steps` the CLI uses for time-budget-only runs


@dataclass(frozen=True)
class TrainStatus:
    """Where a `TrainSession` stands (a value: read it, never mutate it)."""

    state: SessionState
    step: int
    total_steps: int | None  # None: the run ends by its time budget only
    fraction: float  # of the run done, [0, 1]
    n_gaussians: int
    steps_per_s: float  # over the last few seconds of optimisation
    eta_s: float  # inf until there is a step
    elapsed_s: float  # optimisation time (evaluation, saving and pauses excluded)
    train_psnr: float | None  # mean over the last steps' training views
    heldout_psnr: float | None  # latest held-out score (None: not scored yet, or none held out)
    heldout_views: int  # views in the held-out split (0: nothing to score)
    history: tuple[dict[str, float], ...]  # held-out scores so far: {"step", "seconds", "psnr"}
    version: int  # of the newest published snapshot
    last_saved: Path | None  # the scene file written last
    saves: int  # how many times the scene was written
    error: str | None = None  # why the run failed (state "failed") or the last save failed
    kind: SceneKind = "gaussians"  # what trains: Gaussians, or a NeRF (n_gaussians is then 0)
    occupied: float | None = None  # NeRF: fraction of occupancy-grid cells set (else None)

    @property
    def active(self) -> bool:
        """Running or paused: `run` has not returned."""
        return self.state in ("running", "paused")

    @property
    def finished(self) -> bool:
        return self.state in ("stopped", "done", "failed")


class SessionTrainer(Protocol):
    """What a `TrainSession` drives: `fields.training.Trainer` and `fields.nerf.NerfTrainer`.
    `step()` returns stats with `step`, `psnr`, `elapsed_s`, `fraction`, `steps_per_s`, `eta_s`
    (and `n_gaussians` for Gaussians, `occupied` for a NeRF)."""

    config: Any  # has `steps`
    dataset: Dataset
    splits: Splits
    step_count: int
    elapsed_s: float
    last: Any
    history: list[dict[str, float]]

    @property
    def done(self) -> bool: ...

    def fraction(self) -> float: ...

    def step(self) -> Any: ...

    def scene(self, metrics: dict[str, Any] | None = None) -> AnyScene: ...

    def evaluate(
        self, *, with_lpips: bool = False, max_views: int | None = None
    ) -> EvalResult | None: ...

    def save_checkpoint(self, path: str | Path) -> Path: ...

    def save_scene(self, scene: AnyScene, path: str | Path, *, overwrite: bool) -> Path: ...


def scene_kind(scene: object) -> SceneKind:
    """ "gaussians" for a `GaussianScene`, "nerf" for a `fields.nerf.NerfScene`."""
    if isinstance(scene, GaussianScene):
        return "gaussians"
    if hasattr(scene, "field") and hasattr(scene, "occupancy"):
        return "nerf"
    raise TypeError(f"a trainer's scene must be Gaussians or a NeRF, got {type(scene).__name__}")


class TrainSession:
    """See the module docstring. `out`: the scene file (.ply or .splat for Gaussians, .nerf for
    a NeRF); `checkpoint`: the resumable checkpoint written with it (None: none)."""

    def __init__(
        self,
        trainer: SessionTrainer,
        *,
        out: str | Path,
        checkpoint: str | Path | None = None,
        overwrite: bool = False,
        publish_every_s: float = 3.0,
        eval_every_s: float = 15.0,
        eval_views: int | None = 4,
    ) -> None:
        out = Path(out)
        first = trainer.scene()  # a copy; also says what kind of scene trains
        self.kind: SceneKind = scene_kind(first)
        if self.kind == "nerf" and out.suffix.lower() not in NERF_SUFFIXES:
            raise ValueError(f"a NeRF is written as a .nerf file, got {out}")
        if self.kind == "gaussians" and out.suffix.lower() not in SCENE_SUFFIXES:
            raise ValueError(f"the scene is written as .ply or .splat, got {out}")
        if out.is_dir():
            raise ValueError(f"{out} is a folder; name the scene file to write")
        if not out.parent.is_dir():
            raise FileNotFoundError(
                f"the folder to write {out.name} into does not exist: {out.parent}"
            )
        ckpt = Path(checkpoint) if checkpoint is not None else None
        if ckpt is not None and ckpt.resolve() == out.resolve():
            raise ValueError(f"the checkpoint and the scene are the same file: {out}")
        if not overwrite:
            for path in (out, ckpt):
                if path is not None and path.exists():
                    raise FileExistsError(
                        f"{path} exists; refusing to overwrite it (allow overwriting, or choose "
                        "another path)"
                    )
        if publish_every_s <= 0 or eval_every_s <= 0:
            raise ValueError("publish_every_s and eval_every_s must be > 0")
        if eval_views is not None and eval_views < 1:
            raise ValueError(f"eval_views must be >= 1 (or None for all), got {eval_views}")
        self.trainer = trainer
        self.out = out
        self.checkpoint = ckpt
        self.publish_every_s = float(publish_every_s)
        self.eval_every_s = float(eval_every_s)
        self.eval_views = eval_views
        self._owns = bool(overwrite)  # may replace `out` / `checkpoint`

        self._cond = threading.Condition()  # guards everything below; wakes a paused loop
        self._work = threading.Lock()  # held by whoever drives the trainer (run, or a save)
        self._state: SessionState = "ready"
        self._pause = False
        self._stop = False
        self._loop_active = False
        self._save_requests: list[Future[Path]] = []
        self._version = 0
        self._published: AnyScene | None = None
        self._last: Any = trainer.last  # the trainer's step stats
        self._train_psnrs: deque[float] = deque(maxlen=TRAIN_PSNR_WINDOW)
        self._rate: deque[tuple[float, int]] = deque()
        self._heldout: EvalResult | None = None
        self._history: tuple[dict[str, float], ...] = tuple(trainer.history)
        self._last_saved: Path | None = None
        self._saves = 0
        self._error: str | None = None
        self._n_gaussians = 0
        self._occupied: float | None = None
        self._publish(first)

    # ------------------------------------------------------------------ steering (any thread)
    def pause(self) -> None:
        """Stop stepping at the next step boundary (the thread in `run` waits, idle)."""
        with self._cond:
            self._pause = True
            self._cond.notify_all()

    def resume(self) -> None:
        with self._cond:
            self._pause = False
            self._cond.notify_all()

    def stop(self) -> None:
        """End the run at the next step boundary; `run` saves what was trained and returns."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()

    def request_save(self) -> Future[Path]:
        """Write the scene (and checkpoint) as they are: at the next step boundary while `run`
        runs (also while paused), else right away on this thread. The future resolves to the
        scene's path, or to the exception that stopped the save."""
        fut: Future[Path] = Future()
        with self._cond:
            if self._loop_active:
                self._save_requests.append(fut)
                self._cond.notify_all()
                return fut
        with self._work:
            self._save_now([fut])
        return fut

    # ------------------------------------------------------------------ watching (any thread)
    def snapshot(self) -> tuple[int, AnyScene] | None:
        """(version, scene) of the newest published snapshot; versions only grow. The scene is
        a detached CPU copy nobody mutates: a `GaussianScene`, or a `NerfScene` when `kind` is
        "nerf" (its occupancy grid as training uses it, not the conservative one of a save)."""
        with self._cond:
            if self._published is None:
                return None
            return self._version, self._published

    def status(self) -> TrainStatus:
        with self._cond:
            t = self.trainer
            last = self._last
            steps = t.config.steps
            rate = 0.0
            if len(self._rate) >= 2:
                (e0, s0), (e1, s1) = self._rate[0], self._rate[-1]
                rate = (s1 - s0) / (e1 - e0) if e1 > e0 else 0.0
            elif last is not None:
                rate = last.steps_per_s
            return TrainStatus(
                state=self._state,
                step=last.step if last is not None else t.step_count,
                total_steps=None if steps >= UNLIMITED_STEPS else steps,
                fraction=last.fraction if last is not None else t.fraction(),
                n_gaussians=self._n_gaussians,
                steps_per_s=rate,
                eta_s=last.eta_s if last is not None else math.inf,
                elapsed_s=last.elapsed_s if last is not None else t.elapsed_s,
                train_psnr=(
                    sum(self._train_psnrs) / len(self._train_psnrs) if self._train_psnrs else None
                ),
                heldout_psnr=None if self._heldout is None else self._heldout.psnr,
                heldout_views=len(t.splits.test),
                history=self._history,
                version=self._version,
                last_saved=self._last_saved,
                saves=self._saves,
                error=self._error,
                kind=self.kind,
                occupied=self._occupied,
            )

    # ------------------------------------------------------------------ the loop
    def run(
        self,
        progress: Callable[[float, str], None] | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> TrainStatus:
        """Train until the run is done or stopped (`stop()`, or `cancelled()` turning True),
        then save what was trained; returns the final status. `progress(fraction, text)` hears
        about every step (throttled to a few per second). Runs once per session."""
        with self._cond:
            if self._state != "ready":
                raise RuntimeError(f"this training session already ran ({self._state})")
            self._state = "running"
            self._loop_active = True
        with self._work:
            try:
                finished = self._loop(progress, cancelled)
            except KeyboardInterrupt:  # Ctrl-C where `run` is on the main thread: a stop
                finished = False
            except BaseException as e:
                self._fail(e)
                raise
            self._finish(finished, progress)
        return self.status()

    def _loop(
        self,
        progress: Callable[[float, str], None] | None,
        cancelled: Callable[[], bool] | None,
    ) -> bool:
        """Step until done (True) or stopped (False)."""
        t = self.trainer
        clock = time.monotonic
        last_publish = last_eval = last_report = clock()
        evaluated = False
        while True:
            if cancelled is not None and cancelled():
                self.stop()
            with self._cond:
                saves, self._save_requests = self._save_requests, []
                stop, pause = self._stop, self._pause
            if saves:
                self._save_now(saves)
            if stop:
                return False
            if t.done:
                return True
            if pause:
                with self._cond:
                    newly, self._state = self._state != "paused", "paused"
                if newly:
                    self._report(progress)
                with self._cond:
                    # Woken by resume/stop/save; the timeout only polls `cancelled`.
                    self._cond.wait_for(
                        lambda: not self._pause or self._stop or bool(self._save_requests),
                        timeout=0.25 if cancelled is not None else None,
                    )
                continue
            stats = t.step()
            with self._cond:
                self._state = "running"
                self._last = stats
                self._n_gaussians = getattr(stats, "n_gaussians", self._n_gaussians)
                self._occupied = getattr(stats, "occupied", self._occupied)
                self._train_psnrs.append(stats.psnr)
                self._rate.append((stats.elapsed_s, stats.step))
                while len(self._rate) > 2 and stats.elapsed_s - self._rate[0][0] > RATE_WINDOW_S:
                    self._rate.popleft()
            now = clock()
            if t.splits.test and (not evaluated or now - last_eval >= self.eval_every_s):
                self._evaluate(self.eval_views)
                evaluated, last_eval = True, clock()
            if now - last_publish >= self.publish_every_s:
                self._publish()
                last_publish = clock()
            if progress is not None and now - last_report >= 0.25:
                self._report(progress)
                last_report = now

    def _finish(self, finished: bool, progress: Callable[[float, str], None] | None) -> None:
        """Score (a finished run: every held-out view), publish and save what was trained."""
        metrics = None
        if finished and self.trainer.splits.test:
            metrics = _metrics(self._evaluate(None, with_lpips=True))
        elif self._heldout is not None:
            metrics = {**_metrics(self._heldout), "partial": True}
        self._publish()
        with self._cond:
            self._loop_active = False  # later save requests are written on their own thread
            saves, self._save_requests = self._save_requests, []
        try:
            self._save_now(saves, metrics=metrics, raise_errors=True)
        finally:
            with self._cond:
                self._state = "done" if finished else "stopped"
        self._report(progress)

    def _fail(self, e: BaseException) -> None:
        """A step raised: save what can be saved, then let `run` re-raise."""
        _log.warning("training failed at step %s: %s", self.trainer.step_count, e)
        with self._cond:
            self._loop_active = False
            self._state = "failed"
            self._error = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            saves, self._save_requests = self._save_requests, []
        try:
            self._save_now(saves)
        except Exception:  # non-finite parameters cannot be saved; the error above says why
            _log.warning("could not save after the failure", exc_info=True)
        for fut in saves:
            if not fut.done():
                fut.set_exception(RuntimeError(f"training failed: {self._error}"))

    # ------------------------------------------------------------------ work (training thread)
    def _evaluate(self, max_views: int | None, *, with_lpips: bool = False) -> EvalResult | None:
        result = self.trainer.evaluate(max_views=max_views, with_lpips=with_lpips)
        if result is not None:
            with self._cond:
                self._heldout = result
                self._history = tuple(self.trainer.history)
        return result

    def _publish(self, scene: AnyScene | None = None) -> None:
        if scene is None:
            scene = self.trainer.scene()  # a copy: never changes under its readers
        with self._cond:
            self._version += 1
            self._published = scene
            if self.kind == "gaussians":
                self._n_gaussians = len(scene)
            else:
                self._occupied = float(scene.occupied_fraction())

    def _saved_scene(self, metrics: dict[str, Any] | None) -> AnyScene:
        if self.kind == "nerf":  # a saved NeRF gets the conservative occupancy grid
            return self.trainer.scene(metrics=metrics, final=True)  # type: ignore[call-arg]
        return self.trainer.scene(metrics=metrics)

    def _write(self, scene: AnyScene, overwrite: bool) -> Path:
        return self.trainer.save_scene(scene, self.out, overwrite=overwrite)

    def _save_now(
        self,
        waiters: list[Future[Path]],
        *,
        metrics: dict[str, Any] | None = None,
        raise_errors: bool = False,
    ) -> Path | None:
        """Write the scene, then the checkpoint; resolve `waiters` with the outcome."""
        try:
            if metrics is None and self._heldout is not None:
                metrics = {**_metrics(self._heldout), "partial": True}
            scene = self._saved_scene(metrics)
            owns = self._owns
            if not owns and self.checkpoint is not None and self.checkpoint.exists():
                raise FileExistsError(f"{self.checkpoint} appeared meanwhile; not overwriting it")
            path = self._write(scene, owns)
            self._owns = True  # written by us from now on
            if self.checkpoint is not None:
                self.trainer.save_checkpoint(self.checkpoint)
        except Exception as e:
            _log.warning("saving %s failed: %s", self.out, e)
            with self._cond:
                if self._state != "failed":  # keep the reason training failed
                    self._error = f"saving failed: {type(e).__name__}: {e}"
            for fut in waiters:
                if not fut.done():
                    fut.set_exception(e)
            if raise_errors:
                raise
            return None
        with self._cond:
            self._last_saved = path
            self._saves += 1
            if self._state != "failed":
                self._error = None  # an earlier save's failure is history now
        for fut in waiters:
            if not fut.done():
                fut.set_result(path)
        return path

    def _report(self, progress: Callable[[float, str], None] | None) -> None:
        if progress is None:
            return
        s = self.status()
        progress(s.fraction, describe(s))


def describe(s: TrainStatus) -> str:
    """One line for a progress bar: state, step, Gaussians (NeRF: occupancy), speed, PSNRs,
    ETA."""
    total = f"/{s.total_steps:,}" if s.total_steps else ""
    if s.kind == "nerf":
        size = "NeRF" if s.occupied is None else f"NeRF, {100 * s.occupied:.1f}% occupied"
    else:
        size = f"{s.n_gaussians:,} Gaussians"
    parts = [f"step {s.step:,}{total}", size]
    if s.state == "running":
        parts.append(f"{s.steps_per_s:.1f} steps/s")
    if s.train_psnr is not None:
        parts.append(f"train PSNR {s.train_psnr:.2f}")
    if s.heldout_psnr is not None:
        parts.append(f"held-out PSNR {s.heldout_psnr:.2f}")
    if s.state == "running" and math.isfinite(s.eta_s):
        parts.append(f"ETA {format_seconds(s.eta_s)}")
    if s.state != "running":
        parts.insert(0, s.state)
    return " · ".join(parts)


def format_seconds(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    s = round(s)
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"


def _metrics(result: EvalResult | None) -> dict[str, Any] | None:
    return None if result is None else result.summary()
