"""Data-parallel training over torch.distributed (gloo, 2 CPU processes) matches one process
with the same batch; `torchrun ... scenelab train` runs end to end."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from fields import load_dataset, load_scene
from fields.synthetic import make_world, write_world
from fields.training import DefaultStrategyConfig, DistContext, TrainConfig, Trainer

STEPS = 30


def _config() -> TrainConfig:
    # Densification every 10 steps from the start, so broadcast refinement is exercised.
    return TrainConfig(
        steps=STEPS,
        batch_size=2,
        init_points=2000,
        sh_degree=1,
        reference_steps=100,
        default=DefaultStrategyConfig(refine_start=0, refine_every=10, reset_every=1000),
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, data: str, out: str) -> None:
    os.environ.update(
        {
            "RANK": str(rank),
            "WORLD_SIZE": str(world),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
    )
    torch.set_num_threads(1)
    dist = DistContext.from_env(torch.device("cpu"))
    try:
        t = Trainer(load_dataset(data), _config(), dist=dist)
        sizes = []
        for _ in range(STEPS):
            sizes.append(t.step().n_gaussians)
        torch.save(
            {"params": {k: v.detach() for k, v in t.params.tensors.items()}, "sizes": sizes},
            f"{out}.{rank}",
        )
    finally:
        dist.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist") / "world"
    write_world(make_world(1), out, n_views=12, width=48, height=36)
    return out


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process(world, tmp_path):
    out = str(tmp_path / "rank")
    mp.spawn(_worker, args=(2, _free_port(), str(world), out), nprocs=2, join=True)
    r0, r1 = torch.load(f"{out}.0"), torch.load(f"{out}.1")
    # Every rank holds the same Gaussians after each broadcast densification.
    assert r0["sizes"] == r1["sizes"]
    for k in r0["params"]:
        assert torch.equal(r0["params"][k], r1["params"][k]), k

    torch.set_num_threads(1)
    single = Trainer(load_dataset(world), _config())
    sizes = [single.step().n_gaussians for _ in range(STEPS)]
    assert sizes == r0["sizes"]
    assert sizes[-1] != 2000  # densification changed the count
    for k, v in single.params.tensors.items():
        torch.testing.assert_close(r0["params"][k], v.detach(), rtol=1e-4, atol=1e-5, msg=k)


@pytest.mark.slow
def test_torchrun_scenelab_train(world, tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    scenelab = shutil.which("scenelab", path=str(Path(sys.executable).parent))
    if torchrun is None or scenelab is None:
        pytest.skip("torchrun / scenelab console scripts not installed in this environment")
    out = tmp_path / "scene.ply"
    cmd = [
        torchrun,
        "--nproc_per_node",
        "2",
        "--master_port",
        str(_free_port()),
        scenelab,
        "train",
        str(world),
        "--out",
        str(out),
        "--steps",
        "20",
        "--batch-size",
        "2",
        "--sh-degree",
        "0",
        "--quiet",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    scene = load_scene(out)
    assert len(scene) > 0
    assert scene.meta["training"]["steps"] == 20
    assert scene.meta["training"]["config"]["batch_size"] == 2
