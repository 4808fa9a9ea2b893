"""`TrainSession`: a trainer on a thread that others pause, resume, stop, save and watch.

A tiny synthetic dataset (8 views of 48x36, one held out) and 2,000 random initial Gaussians
keep each test to a few seconds on the CPU."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch

from fields import load_dataset, load_scene
from fields.synthetic import make_world, write_world
from fields.training import TrainConfig, Trainer, TrainSession, TrainStatus

FOREVER = 100_000  # steps of a run that only ends when stopped


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_session") / "data"
    write_world(make_world(0), root, n_views=8, width=48, height=36)
    return load_dataset(root)


def trainer(dataset, steps: int = FOREVER) -> Trainer:
    return Trainer(dataset, TrainConfig(steps=steps, init_points=2000, sh_degree=0))


def session(dataset, tmp_path: Path, steps: int = FOREVER, **kw) -> TrainSession:
    kw.setdefault("checkpoint", tmp_path / "out.ckpt")
    return TrainSession(trainer(dataset, steps), out=tmp_path / "out.ply", **kw)


def wait_until(cond, timeout: float = 30.0, what: str = "condition") -> None:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class Runner:
    """`session.run` on a thread, its result or exception kept."""

    def __init__(self, s: TrainSession, **kw) -> None:
        self.session = s
        self.result: TrainStatus | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, kwargs=kw, daemon=True)
        self.thread.start()

    def _run(self, **kw) -> None:
        try:
            self.result = self.session.run(**kw)
        except BaseException as e:
            self.error = e

    def join(self, timeout: float = 60.0) -> TrainStatus:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "run did not return"
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


def test_pause_holds_the_step_and_resume_continues(dataset, tmp_path):
    s = session(dataset, tmp_path)
    assert s.status().state == "ready"
    r = Runner(s)
    wait_until(lambda: s.status().step >= 3, what="steps")
    s.pause()
    wait_until(lambda: s.status().state == "paused", what="paused")
    held = s.status().step
    time.sleep(0.4)  # ~50 steps' worth at this size
    assert s.status().step == held == s.trainer.step_count
    s.resume()
    wait_until(lambda: s.status().step > held + 3, what="steps after resume")
    assert s.status().state == "running"
    s.stop()
    final = r.join()
    assert final.state == "stopped" and final.step == s.trainer.step_count > held


def test_stop_keeps_what_was_trained(dataset, tmp_path):
    s = session(dataset, tmp_path)
    _, initial = s.snapshot()
    r = Runner(s)
    wait_until(lambda: s.status().step >= 25, what="steps")
    s.stop()
    final = r.join()
    assert final.state == "stopped" and final.last_saved == tmp_path / "out.ply"
    saved = load_scene(tmp_path / "out.ply")
    version, shown = s.snapshot()
    assert version == final.version and shown.allclose(saved, atol=1e-6)  # what was trained...
    assert not torch.allclose(saved.means, initial.means)  # ...is not what it started from
    assert saved.meta["training"]["steps"] == final.step
    # The checkpoint beside it resumes at the same step with the same Gaussians.
    resumed = Trainer.resume(tmp_path / "out.ckpt", dataset)
    assert resumed.step_count == final.step
    assert torch.equal(
        resumed.params.tensors["means"].detach(), s.trainer.params.tensors["means"].detach()
    )


def test_a_finished_run_is_scored_on_every_held_out_view_and_saved(dataset, tmp_path):
    s = session(dataset, tmp_path, steps=12, eval_every_s=1e-3)
    fractions: list[float] = []
    final = s.run(progress=lambda f, text: fractions.append(f))
    assert final.state == "done" and final.step == 12 and final.fraction == 1.0
    assert fractions and fractions[-1] == 1.0
    held_out = s.trainer.splits.test
    assert final.heldout_views == len(held_out) > 0
    assert final.heldout_psnr is not None and len(final.history) >= 2
    assert [h["step"] for h in final.history] == sorted(h["step"] for h in final.history)
    metrics = load_scene(tmp_path / "out.ply").meta["metrics"]
    assert metrics["views"] == len(held_out) and "partial" not in metrics
    assert metrics["psnr"] == pytest.approx(final.heldout_psnr, abs=1e-3)
    with pytest.raises(RuntimeError, match="already ran"):
        s.run()


def test_held_out_psnr_is_scored_while_training(dataset, tmp_path):
    s = session(dataset, tmp_path, eval_every_s=0.05, eval_views=1)
    r = Runner(s)
    wait_until(lambda: len(s.status().history) >= 3, what="three held-out scores")
    st = s.status()
    assert st.heldout_psnr == st.history[-1]["psnr"] and st.train_psnr is not None
    assert st.steps_per_s > 0 and st.n_gaussians > 0
    s.stop()
    r.join()
    meta = load_scene(tmp_path / "out.ply").meta
    assert (
        meta["metrics"]["partial"] is True and meta["metrics"]["views"] == 1
    )  # not the full score


def test_request_save_writes_at_a_step_boundary_atomically(dataset, tmp_path):
    s = session(dataset, tmp_path)
    # Before the run, a save is written right away on the caller's thread.
    assert s.request_save().result(timeout=0) == tmp_path / "out.ply"
    assert load_scene(tmp_path / "out.ply").meta["training"]["steps"] == 0
    r = Runner(s)
    wait_until(lambda: s.status().step >= 5, what="steps")
    path = s.request_save().result(timeout=30)  # while running: the training thread writes it
    saved = load_scene(path)
    step = saved.meta["training"]["steps"]
    assert step >= 5 and s.status().saves == 2
    ckpt = torch.load(tmp_path / "out.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["step"] == step  # scene and checkpoint from the same step boundary
    assert torch.equal(ckpt["params"]["tensors"]["means"], saved.means)
    s.pause()
    wait_until(lambda: s.status().state == "paused", what="paused")
    paused_at = s.status().step
    path = s.request_save().result(timeout=30)  # a paused run still saves
    assert load_scene(path).meta["training"]["steps"] == paused_at
    s.stop()
    r.join()
    # Atomic writes: nothing but the files themselves, no temp files left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.ckpt", "out.ply", "out.ply.json"]


def test_snapshots_are_versioned_detached_copies(dataset, tmp_path):
    s = session(dataset, tmp_path, publish_every_s=1e-3)
    v0, first = s.snapshot()
    frozen = first.means.clone()
    r = Runner(s)
    versions = [v0]
    wait_until(lambda: s.status().step >= 10, what="steps")
    for _ in range(5):
        versions.append(s.snapshot()[0])
        time.sleep(0.02)
    s.stop()
    r.join()
    assert versions == sorted(versions) and versions[-1] > v0
    assert s.snapshot()[0] >= versions[-1]
    assert torch.equal(first.means, frozen)  # training never mutates a published scene


def test_cancelled_stops_like_stop(dataset, tmp_path):
    s = session(dataset, tmp_path, checkpoint=None)
    calls = []

    def cancelled() -> bool:
        calls.append(1)
        return len(calls) > 8

    final = s.run(cancelled=cancelled)
    assert final.state == "stopped" and 0 < final.step <= 8
    assert (tmp_path / "out.ply").is_file() and not (tmp_path / "out.ckpt").exists()


def test_never_overwrites_unasked(dataset, tmp_path):
    (tmp_path / "out.ply").write_text("mine")
    with pytest.raises(FileExistsError, match=r"out\.ply"):
        session(dataset, tmp_path)
    (tmp_path / "out.ply").unlink()
    (tmp_path / "out.ckpt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"out\.ckpt"):
        session(dataset, tmp_path)
    with pytest.raises(ValueError, match=r"\.ply or \.splat"):
        TrainSession(trainer(dataset), out=tmp_path / "out.txt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TrainSession(trainer(dataset), out=tmp_path / "missing" / "out.ply")
    # With permission the session replaces both.
    s = session(dataset, tmp_path, steps=3, overwrite=True)
    s.run()
    assert load_scene(tmp_path / "out.ply").meta["training"]["steps"] == 3


def test_a_failing_step_is_reported_and_what_was_trained_is_kept(dataset, tmp_path):
    s = session(dataset, tmp_path)
    step = s.trainer.step

    def flaky():
        if s.trainer.step_count == 6:
            raise RuntimeError("out of memory (simulated)")
        return step()

    s.trainer.step = flaky
    with pytest.raises(RuntimeError, match="simulated"):
        s.run()
    st = s.status()
    assert st.state == "failed" and "simulated" in st.error and st.finished
    assert load_scene(tmp_path / "out.ply").meta["training"]["steps"] == 6


def test_a_failed_save_does_not_stop_training(dataset, tmp_path):
    s = session(dataset, tmp_path, checkpoint=None)
    r = Runner(s)
    wait_until(lambda: s.status().step >= 3, what="steps")
    (tmp_path / "out.ply").mkdir()  # something in the way: the save fails
    with pytest.raises(OSError):
        s.request_save().result(timeout=30)
    assert "saving failed" in s.status().error
    n = s.status().step
    wait_until(lambda: s.status().step > n + 3, what="training going on")
    (tmp_path / "out.ply").rmdir()
    assert s.request_save().result(timeout=30) == tmp_path / "out.ply"
    assert s.status().error is None
    s.stop()
    assert r.join().state == "stopped"
