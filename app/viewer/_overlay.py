"""Server-rendered overlays: depth, coverage, selection and per-Gaussian values, drawn with
`fields.render` at 128–256 px from each browser's own camera and sent as its background image.

The browser's splats are hidden while an overlay shows (the background image lies behind them).
Each client gets one `OverlayWorker` thread: camera moves only mark the view stale; the worker
renders once the camera has rested for a moment, always from the latest pose, and drops a frame
that a newer request made obsolete. So a slow render never queues up behind a moving camera.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import numpy as np
import torch

from fields import Camera, GaussianScene, render

from ._camera import client_camera
from ._splats import HIGHLIGHT, normalize_values, turbo
from ._state import Snapshot

_log = logging.getLogger(__name__)

OVERLAY_MODES = ("depth", "alpha", "selection", "values")
BACKGROUND = (1.0, 1.0, 1.0)


def _shown_scene(scene: GaussianScene) -> GaussianScene:
    hidden = scene.extras.get("hidden")
    if hidden is None:
        return scene
    opac = torch.where(hidden.bool(), torch.full_like(scene.opacities, -30.0), scene.opacities)
    return scene.replace(opacities=opac)


def overlay_image(snapshot: Snapshot, camera: Camera, mode: str) -> np.ndarray:  # [H,W,3] uint8
    """Render overlay `mode` of the snapshot's scene from `camera` (pure: no viewer state)."""
    if mode not in OVERLAY_MODES:
        raise ValueError(f"unknown overlay {mode!r}; expected one of {OVERLAY_MODES}")
    scene = _shown_scene(snapshot.shown)
    h, w = camera.height, camera.width
    if len(scene) == 0:
        return np.full((h, w, 3), 255, np.uint8)
    features = None
    if mode == "selection":
        features = snapshot.shown_selection.to(scene.device).float()[:, None]
    elif mode == "values":
        if snapshot.shown_values is None:
            raise ValueError("no per-Gaussian values to show; compute some first")
        v = normalize_values(snapshot.shown_values.numpy())
        features = torch.from_numpy(v).to(scene.device)[:, None]
    with torch.no_grad():
        out = render(scene, camera, features=features)
    alpha = out.alpha[..., 0].detach().cpu().float().numpy()
    bg = np.asarray(BACKGROUND, np.float32)
    if mode == "alpha":
        rgb = np.repeat((1.0 - alpha)[..., None], 3, axis=-1)  # dark = covered
    elif mode == "depth":
        depth = out.depth[..., 0].detach().cpu().float().numpy()
        covered = alpha > 0.5
        surf = depth  # expected depth, already divided by alpha
        if covered.any():
            lo, hi = np.percentile(surf[covered], [2.0, 98.0])
        else:
            lo, hi = 0.0, 1.0
        t = np.clip((surf - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
        color = turbo(1.0 - t)  # near = red, far = blue
        rgb = alpha[..., None] * color + (1.0 - alpha[..., None]) * bg
    else:
        # Features accumulate without background: divide by alpha for the blended value.
        feat = out.features[..., 0].detach().cpu().float().numpy()
        frac = np.where(alpha > 1e-4, feat / np.maximum(alpha, 1e-4), 0.0).clip(0.0, 1.0)
        if mode == "selection":
            grey = out.rgb.detach().cpu().float().numpy().mean(-1, keepdims=True) * 0.5 + 0.25
            hl = np.asarray(HIGHLIGHT, np.float32)
            color = (1.0 - frac[..., None]) * grey + frac[..., None] * hl
        else:
            color = turbo(frac)
        rgb = alpha[..., None] * color + (1.0 - alpha[..., None]) * bg
    return (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


class OverlayWorker:
    """Renders overlays for one browser; see the module docstring.

    `request()` returns (mode, snapshot) to draw, or None when no overlay is on."""

    def __init__(
        self,
        client,  # viser.ClientHandle
        request: Callable[[], tuple[str, Snapshot] | None],
        *,
        max_side: int = 192,
        rest_s: float = 0.12,
        on_error: Callable[[Exception], None] | None = None,
    ) -> None:
        self.client = client
        self.max_side = max_side
        self.rest_s = rest_s
        self._request = request
        self._on_error = on_error
        self._cond = threading.Condition()
        self._stale = True
        self._last_poke = 0.0
        self._showing = False
        self._stop = False
        self.frames = 0  # rendered and sent; tests and benchmarks read it
        self.last_image: np.ndarray | None = None
        self._thread = threading.Thread(
            target=self._loop, name=f"overlay-{client.client_id}", daemon=True
        )
        self._thread.start()

    def poke(self, *, camera_moved: bool = False) -> None:
        """The view or the state changed: render again once the camera rests."""
        with self._cond:
            self._stale = True
            self._last_poke = time.monotonic()
            clear = camera_moved and self._showing
            if clear:
                self._showing = False
            self._cond.notify()
        if clear:
            # A stale overlay drawn under a moving camera would mislead: blank it while moving.
            self._send(None)

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout=2.0)

    def _send(self, image: np.ndarray | None) -> None:
        try:
            self.client.scene.set_background_image(image, format="png")
        except Exception as e:  # the client may have gone away
            _log.debug("overlay send failed: %s", e)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stale and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                # Wait for the camera to rest.
                while not self._stop:
                    left = self._last_poke + self.rest_s - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                if self._stop:
                    return
                self._stale = False
            try:
                self._render_once()
            except Exception as e:
                _log.warning("overlay render failed: %s", e)
                if self._on_error is not None:
                    self._on_error(e)

    def _render_once(self) -> None:
        req = self._request()
        if req is None:
            if self._showing:
                self._showing = False
                self._send(None)
            return
        mode, snapshot = req
        try:
            camera = client_camera(self.client.camera, self.max_side)
        except AssertionError:  # no camera message from this client yet
            return
        image = overlay_image(snapshot, camera, mode)
        with self._cond:
            if self._stale:  # a newer request arrived while rendering: draw that one instead
                return
            self._showing = True
        self._send(image)
        self.last_image = image
        self.frames += 1
