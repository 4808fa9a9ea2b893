"""Server-rendered NeRF frames streamed into the browser's scene as its background image with
depth (as nerfstudio's viewer does), so the grid, frustums and any splats composite with it.

Three UI-free pieces, none of which knows viser:

- `render_nerf_frame` / `render_interruptible`: one frame of a `NerfScene` from a `Camera`, in row
  bands so a newer request can abandon it between bands.
- `NerfDisplay`: what the browsers show of the NeRF (the scene, the display mode — colour, depth,
  relevancy — and the relevancy scorer), shared by every browser; `frame(camera, cancelled)`
  draws it: an RGB uint8 image [H,W,3] and the camera-z depth [H,W] viser composites with.
- `NerfFrameStreamer`: one per browser, on its own thread. A camera move is a `request(pose)`;
  the newest pose wins (requests that arrive while a frame renders replace each other, only the
  last is drawn). While the camera moves it draws a small preview (`preview_side`, lowered
  automatically when previews take longer than `preview_budget_s`); once the camera has rested
  for `rest_s` it refines the view in steps that double the long side up to `full_side`, and
  abandons (or drops unsent) a resting frame as soon as the camera moved. `refresh()` (the scene
  or the mode changed) redraws the current view at full resolution. `stop()` ends the thread; a
  render in progress stops at its next band.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fields import Camera
from fields.nerf import NerfRender, NerfScene, render_nerf

from ._camera import camera_from_pose
from ._splats import turbo

_log = logging.getLogger(__name__)

NERF_MODES = ("rgb", "depth", "relevancy")
PREVIEW_SIDE = 64  # long side of frames drawn while the camera moves
MIN_PREVIEW_SIDE = 24
FULL_SIDE = 256  # long side of frames drawn once it rests
BAND_PIXELS = 1 << 13  # rays per band of an interruptible render
# Depth sent where the NeRF is (nearly) empty: beyond anything, so the grid and frustums show
# through. viser encodes depth as 24-bit fixed point up to (2^24 - 1) / 1e5 = 167.77 units.
FAR_DEPTH = 167.0
COVERED_ALPHA = 0.5  # pixels at least this opaque have a surface (depth, relevancy)
BACKGROUND = (1.0, 1.0, 1.0)

Cancelled = Callable[[], bool]


# ---------------------------------------------------------------------- poses and cameras
@dataclass(frozen=True)
class ViewPose:
    """A browser's view: `T_world_camera` (wxyz, position; OpenCV axes, as viser reports it),
    the vertical field of view (radians) and the canvas size in pixels."""

    wxyz: tuple[float, float, float, float]
    position: tuple[float, float, float]
    fov_y: float
    width: int
    height: int

    @classmethod
    def of(cls, handle: Any) -> ViewPose:
        """From a `viser.CameraHandle` (a canvas not reported yet counts as 640x480)."""
        w, h = int(handle.image_width), int(handle.image_height)
        if w <= 0 or h <= 0:
            w, h = 640, 480
        return cls(
            tuple(float(x) for x in handle.wxyz),  # type: ignore[arg-type]
            tuple(float(x) for x in handle.position),  # type: ignore[arg-type]
            float(handle.fov),
            w,
            h,
        )

    @classmethod
    def of_camera(cls, camera: Camera) -> ViewPose:
        """The pose of a `fields.Camera` (a centred pinhole)."""
        from ._camera import pose_of, vertical_fov

        wxyz, position = pose_of(camera)
        return cls(
            tuple(float(x) for x in wxyz),  # type: ignore[arg-type]
            tuple(float(x) for x in position),  # type: ignore[arg-type]
            vertical_fov(camera),
            camera.width,
            camera.height,
        )

    def camera(self, long_side: int) -> Camera:
        """The camera at this pose with the canvas scaled so its long side is `long_side` px
        (aspect kept; never above the canvas itself)."""
        w, h = self.width, self.height
        f = min(1.0, long_side / max(w, h))
        w, h = max(1, round(w * f)), max(1, round(h * f))
        return camera_from_pose(self.wxyz, self.position, self.fov_y, w, h)


def nerf_bounds(scene: NerfScene, quantile: float = 0.02) -> tuple[np.ndarray, float]:
    """(centre [3], radius) of the sphere around the occupied cells inside the scene box (the
    inner box of a contracted scene), between the `quantile` and 1 - `quantile` of their
    centres per axis; the box itself when no cell is occupied. What the first view frames."""
    box = scene.box
    cells = scene.occupancy.reshape(-1).nonzero()[:, 0].cpu()
    centre = np.asarray(box.center, np.float64)
    if len(cells):
        step = max(1, len(cells) // 200_000)
        pts = scene.cell_points(cells[::step], jitter=False).double()
        inner = (box.normalize(pts).abs() <= 1.0).all(-1)
        if bool(inner.any()):
            p = pts[inner].numpy()
            lo, hi = (
                np.quantile(p, [quantile, 1 - quantile], axis=0)
                if len(p) > 100
                else (
                    p.min(0),
                    p.max(0),
                )
            )
            half_cell = box.radius / scene.config.occupancy_res
            return 0.5 * (lo + hi), max(0.5 * float(np.linalg.norm(hi - lo)), half_cell)
    return centre, float(box.radius) * math.sqrt(3.0)


# ---------------------------------------------------------------------- rendering
def render_interruptible(
    scene: NerfScene,
    camera: Camera,
    *,
    features: bool = False,
    background: Sequence[float] = BACKGROUND,
    cancelled: Cancelled | None = None,
    band_pixels: int = BAND_PIXELS,
) -> NerfRender | None:
    """`render_nerf` in bands of rows (about `band_pixels` rays each); None as soon as
    `cancelled()` turns True between two bands. Same images as one `render_nerf` call."""
    H, W = camera.height, camera.width
    rows = max(1, band_pixels // W)
    parts: list[NerfRender] = []
    for r0 in range(0, H, rows):
        if cancelled is not None and cancelled():
            return None
        n = min(rows, H - r0)
        K = camera.K.clone()
        K[1, 2] -= r0  # the band's rows r0..r0+n of the full image
        band = Camera(K, camera.viewmat, W, n, camera.name)
        parts.append(render_nerf(scene, band, background=tuple(background), features=features))
    if cancelled is not None and cancelled():
        return None
    feats = [p.features for p in parts]
    return NerfRender(
        torch.cat([p.rgb for p in parts]),
        torch.cat([p.alpha for p in parts]),
        torch.cat([p.depth for p in parts]),
        None if any(f is None for f in feats) else torch.cat(feats),  # type: ignore[arg-type]
        sum(p.n_samples for p in parts),
    )


def compositing_depth(
    depth: np.ndarray,  # [H,W] camera z
    alpha: np.ndarray,  # [H,W]
) -> np.ndarray:  # [H,W] float32
    """The depth viser composites with: the surface's camera z where the NeRF is opaque
    (alpha >= `COVERED_ALPHA`), `FAR_DEPTH` elsewhere."""
    d = np.where(alpha >= COVERED_ALPHA, depth, FAR_DEPTH).astype(np.float32)
    return np.clip(d, 0.0, FAR_DEPTH)


def depth_colors(depth: np.ndarray, alpha: np.ndarray) -> np.ndarray:  # [H,W,3] float in [0,1]
    """Depth heat map: near red, far blue — turbo over the inverse depth between its 2nd and
    98th percentiles on the covered pixels (inverse depth, so that a contracted background
    hundreds of units away does not squash the scene itself into one colour), blended over the
    white background by alpha."""
    covered = alpha > COVERED_ALPHA
    disparity = 1.0 / np.maximum(depth, 1e-6)
    if covered.any():
        lo, hi = np.percentile(disparity[covered], [2.0, 98.0])
    else:
        lo, hi = 0.0, 1.0
    t = np.clip((disparity - lo) / max(float(hi - lo), 1e-9), 0.0, 1.0)
    bg = np.asarray(BACKGROUND, np.float32)
    return alpha[..., None] * turbo(t) + (1.0 - alpha[..., None]) * bg


def relevancy_colors(
    relevancy: np.ndarray,  # [H,W] in [0,1]
    alpha: np.ndarray,  # [H,W]
    rgb: np.ndarray,  # [H,W,3] the NeRF's colour over the background
) -> np.ndarray:  # [H,W,3]
    """Relevancy heat map on LERF's scale over a pale grey copy of the scene: pixels that prefer
    the query over the negatives (relevancy above 0.5) take turbo's colour of (r - 0.5) * 2, fully
    from r = 0.6 up; the rest show the scene in grey, so one sees what did not answer."""
    grey = 0.55 + 0.4 * rgb.mean(-1, keepdims=True)
    t = np.clip((relevancy - 0.5) * 2.0, 0.0, 1.0)
    m = (np.clip((relevancy - 0.5) * 10.0, 0.0, 1.0) * alpha)[..., None]
    return (1.0 - m) * grey + m * turbo(t)


def _to_uint8(rgb: np.ndarray) -> np.ndarray:
    return (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


@dataclass(frozen=True)
class Relevancy:
    """A per-pixel relevancy to show: `score(camera, features [H,W,C], alpha [H,W,1]) -> [H,W]`
    in [0,1] from a render's feature-branch values (`fields.nerf.NerfQuery.relevancy` with
    `features=`, `alpha=`), and what it answers (for read-outs)."""

    name: str
    score: Callable[[Camera, Tensor, Tensor], Tensor]


def render_nerf_frame(
    scene: NerfScene,
    camera: Camera,
    mode: str = "rgb",
    *,
    relevancy: Relevancy | None = None,
    cancelled: Cancelled | None = None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """(image [H,W,3] uint8, compositing depth [H,W] float32) of `mode` from `camera`, or None
    when cancelled. Pure: no viewer state."""
    if mode not in NERF_MODES:
        raise ValueError(f"unknown NeRF display {mode!r}; expected one of {NERF_MODES}")
    if mode == "relevancy":
        if relevancy is None:
            raise ValueError("no query to show: run a language query first")
        if not scene.has_features:
            raise ValueError("this NeRF has no feature branch: run `scenelab distill` on it first")
    out = render_interruptible(
        scene, camera, features=mode == "relevancy", background=BACKGROUND, cancelled=cancelled
    )
    if out is None:
        return None
    alpha = out.alpha[..., 0].cpu().float().numpy()
    depth = out.depth[..., 0].cpu().float().numpy()
    if mode == "rgb":
        image = _to_uint8(out.rgb.cpu().float().numpy())
    elif mode == "depth":
        image = _to_uint8(depth_colors(depth, alpha))
    else:
        assert relevancy is not None and out.features is not None
        rel = relevancy.score(camera, out.features, out.alpha).detach().cpu().float().numpy()
        if rel.shape != alpha.shape:
            raise ValueError(f"the relevancy scorer returned {rel.shape} for a {alpha.shape} frame")
        image = _to_uint8(relevancy_colors(rel, alpha, out.rgb.cpu().float().numpy()))
    return image, compositing_depth(depth, alpha)


class NerfDisplay:
    """What every browser shows of the NeRF (see the module docstring). Thread-safe: the scene
    is replaced, never mutated, and `frame` reads one consistent (scene, mode, relevancy)."""

    def __init__(self, scene: NerfScene, mode: str = "rgb") -> None:
        self._lock = threading.Lock()
        self._scene = scene
        self._mode = "rgb"
        self._relevancy: Relevancy | None = None
        self._version = 0
        self._listeners: list[Callable[[], None]] = []
        self.set_mode(mode)

    @property
    def scene(self) -> NerfScene:
        return self._scene

    @property
    def mode(self) -> str:
        return self._mode

    @property
    def relevancy(self) -> Relevancy | None:
        return self._relevancy

    @property
    def version(self) -> int:
        return self._version

    def on_change(self, callback: Callable[[], None]) -> None:
        """`callback()` after every change (the streamers redraw)."""
        with self._lock:
            self._listeners.append(callback)

    def set_scene(self, scene: NerfScene) -> None:
        """Show another NeRF (a training snapshot, an edit)."""
        with self._lock:
            self._scene = scene
            self._version += 1
        self._emit()

    def set_mode(self, mode: str) -> None:
        if mode not in NERF_MODES:
            raise ValueError(f"unknown NeRF display {mode!r}; expected one of {NERF_MODES}")
        with self._lock:
            if mode == "relevancy" and self._relevancy is None:
                raise ValueError("no query to show: run a language query first")
            if mode == "relevancy" and not self._scene.has_features:
                raise ValueError(
                    "this NeRF has no feature branch: run `scenelab distill` on it first"
                )
            if mode == self._mode:
                return
            self._mode = mode
            self._version += 1
        self._emit()

    def set_relevancy(self, relevancy: Relevancy | None, *, show: bool = True) -> None:
        """The query to draw in relevancy mode (None: none; the display falls back to colour).
        With `show`, switch to relevancy mode."""
        with self._lock:
            if relevancy is not None and not self._scene.has_features:
                raise ValueError(
                    "this NeRF has no feature branch: run `scenelab distill` on it first"
                )
            self._relevancy = relevancy
            if relevancy is None and self._mode == "relevancy":
                self._mode = "rgb"
            elif relevancy is not None and show:
                self._mode = "relevancy"
            self._version += 1
        self._emit()

    def frame(
        self, camera: Camera, cancelled: Cancelled | None = None
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Draw the current display from `camera` (see `render_nerf_frame`)."""
        with self._lock:
            scene, mode, rel = self._scene, self._mode, self._relevancy
        return render_nerf_frame(scene, camera, mode, relevancy=rel, cancelled=cancelled)

    def _emit(self) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for cb in listeners:
            cb()


# ---------------------------------------------------------------------- streaming
@dataclass(frozen=True)
class NerfFrame:
    """A frame the streamer sent."""

    image: np.ndarray  # [H,W,3] uint8
    depth: np.ndarray  # [H,W] float32 camera z (`FAR_DEPTH` where empty)
    quality: str  # "preview" (camera moving), "refine" (resting, on the way), "full"
    pose: ViewPose
    request: int  # the request (pose) number it answers
    seconds: float  # render time


FrameFn = Callable[[Camera, Cancelled], "tuple[np.ndarray, np.ndarray] | None"]


class NerfFrameStreamer:
    """Draws frames for one browser on its own thread (see the module docstring).

    `render(camera, cancelled)` -> (image, depth) or None (cancelled); `send(frame)` delivers
    a frame (the viewer: `set_background_image(image, depth=depth)`).

    Once the camera rests the frame is refined in steps that double the long side, from twice
    the preview's up to `full_side` (64 -> 128 -> 256): each step costs about four times the one
    before, so a slow NeRF shows a sharper picture early for a third more work in all. A
    `refresh()` (same view, new content: a training snapshot) goes straight to `full_side`."""

    def __init__(
        self,
        render: FrameFn,
        send: Callable[[NerfFrame], None],
        *,
        preview_side: int = PREVIEW_SIDE,
        full_side: int = FULL_SIDE,
        rest_s: float = 0.15,
        preview_budget_s: float = 0.1,
        on_error: Callable[[Exception], None] | None = None,
        name: str = "nerf-stream",
    ) -> None:
        if not 1 <= preview_side <= full_side:
            raise ValueError(
                f"need 1 <= preview_side <= full_side, got {preview_side}, {full_side}"
            )
        self._render = render
        self._send = send
        self.max_preview_side = int(preview_side)
        self.preview_side = int(preview_side)  # adapted to `preview_budget_s`
        self.full_side = int(full_side)
        self.rest_s = float(rest_s)
        self.preview_budget_s = float(preview_budget_s)
        self._on_error = on_error
        self._cond = threading.Condition()
        self._pose: ViewPose | None = None
        self._request = 0  # grows with every pose
        self._content = 0  # grows with every refresh
        self._moved_at = 0.0
        # (request, content, level) of the last frame sent; level 0: preview, then `sides()`.
        self._shown: tuple[int, int, int] | None = None
        self._stop = False
        # Read-outs for tests and benchmarks.
        self.sent: list[tuple[str, int, tuple[int, int]]] = []  # (quality, request, (H, W))
        self.rendered = 0
        self.dropped = 0  # resting frames abandoned or discarded because the view changed
        self.last_frame: NerfFrame | None = None
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def sides(self) -> list[int]:
        """Long sides of the frames drawn for a resting camera, the last one `full_side`."""
        out = []
        side = 2 * self.max_preview_side
        while side < self.full_side:
            out.append(side)
            side *= 2
        return [*out, self.full_side]

    # ------------------------------------------------------------------ any thread
    def request(self, pose: ViewPose) -> int:
        """The camera moved to `pose`: returns the request's number."""
        with self._cond:
            self._pose = pose
            self._request += 1
            self._moved_at = time.monotonic()
            self._cond.notify_all()
            return self._request

    def refresh(self) -> None:
        """What is shown changed (scene, mode): redraw the current pose at full resolution."""
        with self._cond:
            self._content += 1
            self._cond.notify_all()

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def idle(self) -> bool:
        """True when the newest request is drawn at full resolution (or there is none)."""
        with self._cond:
            if self._pose is None:
                return True
            return self._shown == (self._request, self._content, len(self.sides()))

    def wait_idle(self, timeout: float = 30.0) -> bool:
        t0 = time.monotonic()
        while not self.idle():
            if time.monotonic() - t0 > timeout:
                return False
            time.sleep(0.01)
        return True

    # ------------------------------------------------------------------ the thread
    def _next(self) -> tuple[ViewPose, int, int, int] | None:
        """Block until there is something to draw: (pose, request, content, level); None to
        stop."""
        with self._cond:
            while True:
                if self._stop:
                    return None
                pose, req, content = self._pose, self._request, self._content
                shown, last = self._shown, len(self.sides())
                if pose is None or shown == (req, content, last):
                    self._cond.wait()
                    continue
                if shown is None or shown[0] != req:
                    # The camera moved: show something of the new view right away.
                    return pose, req, content, 0
                left = self._moved_at + self.rest_s - time.monotonic()
                if left > 0:  # refine once it rests
                    self._cond.wait(left)
                    continue
                level = min(shown[2] + 1, last) if shown[1] == content else last
                return pose, req, content, level

    def _stopped(self) -> bool:
        return self._stop

    def _moved(self, req: int) -> bool:
        # Read without the lock: ints are replaced atomically, and a late answer only means
        # one more band rendered. New content alone does not cancel a resting frame: it is
        # still this view, and training snapshots arriving faster than a slow NeRF renders
        # would otherwise starve the browser; the new content is drawn right after it.
        return self._stop or self._request != req

    def _loop(self) -> None:
        while True:
            job = self._next()
            if job is None:
                return
            pose, req, content, level = job
            sides = self.sides()
            quality = "preview" if level == 0 else "full" if level == len(sides) else "refine"
            camera = pose.camera(self.preview_side if level == 0 else sides[level - 1])
            # A preview always completes (the newest pose is drawn next anyway); a resting
            # frame is abandoned as soon as the camera moves.
            if level == 0:
                cancelled = self._stopped
            else:
                cancelled = functools.partial(self._moved, req)
            t0 = time.perf_counter()
            try:
                out = self._render(camera, cancelled)
            except Exception as e:
                _log.warning("NeRF frame failed: %s", e)
                with self._cond:
                    # Do not retry the same request in a loop: wait for the next change.
                    self._shown = (req, content, len(sides))
                if self._on_error is not None:
                    self._on_error(e)
                continue
            seconds = time.perf_counter() - t0
            self.rendered += 1
            if level == 0:
                self._adapt_preview(camera, seconds)
            with self._cond:
                if out is None or (level > 0 and self._moved(req)):
                    if level > 0 and not self._stop:
                        self.dropped += 1
                    continue
            image, depth = out
            frame = NerfFrame(image, depth, quality, pose, req, seconds)
            try:
                self._send(frame)
            except Exception as e:  # the browser may have gone away
                _log.debug("NeRF frame send failed: %s", e)
            with self._cond:  # only this thread changes `_shown`: set once the frame is out
                self._shown = (req, content, level)
                self.last_frame = frame
                self.sent.append((quality, req, (image.shape[0], image.shape[1])))
                del self.sent[:-200]

    def _adapt_preview(self, camera: Camera, seconds: float) -> None:
        """Size previews so they take about `preview_budget_s` (at most `max_preview_side`)."""
        if seconds <= 0 or self.preview_budget_s <= 0:
            return
        per_pixel = seconds / (camera.width * camera.height)
        pixels = self.preview_budget_s / per_pixel
        aspect = max(camera.width, camera.height) / min(camera.width, camera.height)
        side = int(math.sqrt(pixels * aspect))
        target = max(MIN_PREVIEW_SIDE, min(self.max_preview_side, side))
        # Move halfway: one slow frame (a busy machine) must not halve the preview.
        self.preview_side = max(
            MIN_PREVIEW_SIDE, min(self.max_preview_side, (self.preview_side + target + 1) // 2)
        )
