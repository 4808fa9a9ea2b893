"""`TrainSession` driving a `NerfTrainer`: the same pause/stop/save/snapshot API as for Gaussians,
with `.nerf` files, `NerfScene` snapshots and `kind == "nerf"` in the status.

A tiny synthetic dataset (8 views at 24x18, one held out) and a small NeRF (6 levels of a 2^14
table, 32^3 occupancy, a box bound) keep each test to a few seconds on the CPU."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch

from fields import load_dataset
from fields.nerf import NerfModelConfig, NerfScene, NerfTrainConfig, NerfTrainer, load_nerf
from fields.synthetic import make_world, write_world
from fields.training import TrainConfig, Trainer, TrainSession, TrainStatus

FOREVER = 100_000
SMALL = NerfModelConfig(levels=6, log2_table=14, max_res=64, occupancy_res=32)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("nerf_session") / "data"
    write_world(make_world(0), root, n_views=8, width=48, height=36)
    return load_dataset(root, downscale=2)


def nerf_trainer(dataset, steps: int = FOREVER) -> NerfTrainer:
    cfg = NerfTrainConfig(
        steps=steps, model=SMALL, rays_per_step=256, target_samples=1 << 12, bound="box"
    )
    return NerfTrainer(dataset, cfg)


def session(dataset, tmp_path: Path, steps: int = FOREVER, **kw) -> TrainSession:
    kw.setdefault("checkpoint", tmp_path / "out.ckpt")
    return TrainSession(nerf_trainer(dataset, steps), out=tmp_path / "out.nerf", **kw)


def wait_until(cond, timeout: float = 60.0, what: str = "condition") -> None:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class Runner:
    """`session.run` on a thread, its result or exception kept."""

    def __init__(self, s: TrainSession) -> None:
        self.session = s
        self.result: TrainStatus | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.result = self.session.run()
        except BaseException as e:
            self.error = e

    def join(self, timeout: float = 120.0) -> TrainStatus:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "run did not return"
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


def test_a_nerf_run_is_scored_and_saved_as_a_nerf_file(dataset, tmp_path):
    s = session(dataset, tmp_path, steps=3, eval_every_s=1e-3)
    assert s.kind == "nerf"
    first = s.status()
    assert first.kind == "nerf" and first.n_gaussians == 0 and first.occupied is not None
    reports: list[tuple[float, str]] = []
    final = s.run(progress=lambda f, text: reports.append((f, text)))
    assert final.state == "done" and final.step == 3 and reports[-1][0] == 1.0
    assert final.kind == "nerf" and 0.0 <= final.occupied <= 1.0
    assert final.heldout_views == len(s.trainer.splits.test) > 0
    assert final.last_saved == tmp_path / "out.nerf"
    saved = load_nerf(tmp_path / "out.nerf")
    assert saved.config == SMALL
    assert saved.meta["training"]["model"] == "nerf" and saved.meta["training"]["steps"] == 3
    metrics = saved.meta["metrics"]
    assert metrics["views"] == final.heldout_views and "partial" not in metrics
    assert metrics["psnr"] == pytest.approx(final.heldout_psnr, abs=1e-3)
    # What was trained is what was saved (the occupancy grid aside: a save rebuilds it).
    assert torch.equal(saved.field.table, s.trainer.model.field.table.detach().cpu())
    line = reports[-1][1]  # the progress text names the NeRF's occupancy, not Gaussians
    assert "occupied" in line and "Gaussians" not in line
    resumed = NerfTrainer.resume(tmp_path / "out.ckpt", dataset)
    assert resumed.step_count == 3
    assert torch.equal(resumed.model.field.table.detach(), saved.field.table)


def test_nerf_snapshots_are_versioned_detached_copies_and_stop_keeps_the_training(
    dataset, tmp_path
):
    s = session(dataset, tmp_path, publish_every_s=1e-3)
    v0, first = s.snapshot()
    assert isinstance(first, NerfScene)
    frozen = first.field.table.detach().clone()
    r = Runner(s)
    wait_until(lambda: s.status().step >= 3, what="steps")
    versions = [s.snapshot()[0] for _ in range(3)]
    s.stop()
    final = r.join()
    assert final.state == "stopped" and final.step >= 3
    assert versions == sorted(versions) and s.snapshot()[0] > v0
    assert torch.equal(first.field.table, frozen)  # training never mutates a published scene
    _, last = s.snapshot()
    assert not torch.equal(last.field.table, frozen)  # ...and later snapshots show training
    saved = load_nerf(tmp_path / "out.nerf")
    assert saved.meta["training"]["steps"] == final.step
    assert torch.equal(saved.field.table, last.field.table)


def test_a_paused_nerf_run_saves_on_request(dataset, tmp_path):
    s = session(dataset, tmp_path)
    # Before the run, a save is written right away on the caller's thread.
    assert s.request_save().result(timeout=0) == tmp_path / "out.nerf"
    assert load_nerf(tmp_path / "out.nerf").meta["training"]["steps"] == 0
    r = Runner(s)
    wait_until(lambda: s.status().step >= 2, what="steps")
    s.pause()
    wait_until(lambda: s.status().state == "paused", what="paused")
    at = s.status().step
    path = s.request_save().result(timeout=60)
    assert load_nerf(path).meta["training"]["steps"] == at
    ckpt = torch.load(tmp_path / "out.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["model_kind"] == "nerf" and ckpt["step"] == at
    s.stop()
    r.join()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.ckpt", "out.nerf"]


def test_scene_files_match_the_trainer_kind(dataset, tmp_path):
    with pytest.raises(ValueError, match=r"\.nerf"):
        TrainSession(nerf_trainer(dataset), out=tmp_path / "out.ply")
    gaussians = Trainer(dataset, TrainConfig(steps=5, init_points=200, sh_degree=0))
    with pytest.raises(ValueError, match=r"\.ply or \.splat"):
        TrainSession(gaussians, out=tmp_path / "out.nerf")
    assert TrainSession(gaussians, out=tmp_path / "g.ply").status().kind == "gaussians"
    (tmp_path / "out.nerf").write_text("mine")
    with pytest.raises(FileExistsError, match=r"out\.nerf"):
        session(dataset, tmp_path)
    assert (tmp_path / "out.nerf").read_text() == "mine"
