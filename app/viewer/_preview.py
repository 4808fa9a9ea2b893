"""A first look while a large scene loads: a strided sample of the file (`fields.formats.
load_preview`) framed and sent to the browsers as soon as it is read, so the page shows the
scene within a couple of seconds of `scenelab view` starting, before the whole file is parsed
and the viewer's tools exist. `ViewerApp` replaces it (same scene node) when it is ready."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from fields import GaussianScene, framing_view, scene_up
from fields.conventions import DEFAULT_FOV_DEG
from fields.formats import load_preview

from ._server import ServerStart
from ._splats import SPLATS_NODE, SplatBuffer, unpack, widen

PREVIEW_SPLATS = 24_000  # as many as the viewer's first sample for an unmeasured browser


def show_preview(
    started: ServerStart,
    path: Path,
    *,
    up: Any = None,  # `view --up`, else the sample's own (`fields.scene_up`)
    max_splats: int = PREVIEW_SPLATS,
) -> bool:
    """Show a sample of the scene file at `path` when it is a PLY of more than `max_splats`
    Gaussians; False (nothing shown) otherwise."""
    found = load_preview(path, max_splats)
    if found is None:
        return False
    send_preview(started, *found, up=up)
    return True


def send_preview(
    started: ServerStart,
    sample: GaussianScene,  # [M] Gaussians, every k-th of the file's
    total: int,  # N: the file's count (each sample splat stands for N / M)
    *,
    up: Any = None,
) -> None:
    """Frame `sample` and send it (base colours, widened to cover the splats left out)."""
    server = started.server
    axis = scene_up(sample, override=up)
    vec = tuple(float(x) for x in axis.vector)
    server.scene.set_up_direction(vec)
    eye, look_at = framing_view(sample, axis.vector)
    ic = server.initial_camera
    ic.fov = math.radians(DEFAULT_FOV_DEG)
    ic.position = tuple(float(x) for x in eye)
    ic.look_at = tuple(float(x) for x in look_at)
    ic.up = vec
    buf = SplatBuffer().build(sample).buffer
    widen(buf, max(1.0, total / max(len(sample), 1)))
    parts = unpack(buf)
    server.scene.add_gaussian_splats(
        SPLATS_NODE,  # the viewer's first push replaces it
        centers=parts["centers"],
        covariances=parts["covariances"],
        rgbs=parts["rgb"],
        opacities=parts["alpha"][:, None],
    )
