"""`ViewerApp`: one viser server showing one scene, with its panels, jobs and overlays.

Layers: `ViewerState` (scene history, selection) and `JobRunner` know nothing about viser; this
module wires them to the server — pushing splat buffers when the state changes, keeping one
overlay worker per browser, routing errors into notifications — and the `_panel_*` modules build
one GUI folder each on top of it.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import viser

from fields import Camera, GaussianScene, framing_view, scene_up
from fields.conventions import DEFAULT_FOV_DEG

from ._camera import camera_view, pose_of, vertical_fov
from ._jobs import JobRunner
from ._overlay import OVERLAY_MODES, OverlayWorker
from ._panel_click import ClickPanel
from ._panel_edit import EditPanel
from ._panel_features import FeatureOptions, FeaturesPanel
from ._panel_file import FilePanel
from ._panel_grasp import GraspPanel
from ._panel_history import HistoryPanel
from ._panel_insert import InsertPanel
from ._panel_jobs import JobsPanel
from ._panel_objects import ObjectsPanel
from ._panel_query import QueryPanel
from ._panel_selection import SelectionPanel
from ._panel_text_edit import TextEditPanel
from ._panel_view import ViewPanel
from ._server import ServerStart, ViewerConfig, start_server
from ._splats import SplatBuffer, SplatFrame, unpack
from ._state import NothingSelectedError, Snapshot, ViewerState

_log = logging.getLogger(__name__)

SPLATS_NODE = "/scene/splats"
# Automatic splat budget: the sample a browser gets until it proves fast, and what "fast" means
# for rendering that sample once (hardware GL: tens of ms incl. the round trip; software GL:
# seconds).
COARSE_SPLATS = 24_000
FAST_PROBE_S = 1.0
PROBE_SETTLE_S = 0.5  # lets the splat buffer reach the browser before the probe


@dataclass
class _ClientExtras:
    overlay: OverlayWorker


@dataclass
class PushStats:
    """What the last splat push did (tests and benchmarks)."""

    count: int = 0
    thinned: bool = False
    version: int = -1
    seconds: float = 0.0
    pushes: int = 0
    history: list[float] = field(default_factory=list)


class ViewerApp:
    """See the module docstring. Construct, then `wait()` (the CLI) or drive it from tests."""

    def __init__(
        self,
        scene: GaussianScene,
        config: ViewerConfig | None = None,
        *,
        cameras: Sequence[Camera] = (),
        source: Path | None = None,
        title: str | None = None,
        server: ServerStart | None = None,
        dataset: Any = None,
        features: FeatureOptions | None = None,
    ) -> None:
        """Serve `scene`. `server`: one already started with `start_server(config)` (the CLI
        starts it before loading the scene); by default a new one is started here."""
        self.config = config = config or ViewerConfig()
        self.root = (config.root or Path.cwd()).resolve()
        self.title = title or (source.name if source is not None else "scene")
        self.cameras = list(cameras)
        self.dataset = dataset  # a `fields.Dataset` (images, label maps) to distil features from
        self.feature_options = features or FeatureOptions()
        self.state = ViewerState(scene, source=source, max_history_bytes=config.history_bytes)
        self.jobs = JobRunner()
        started = server if server is not None else start_server(config)
        self.server = started.server
        self.port = started.port
        self.requested_port = started.requested_port
        self.port_was_taken = started.port_was_taken
        self.share_url = started.share_url

        self._buffer = SplatBuffer()
        self._push_lock = threading.Lock()
        self.push_stats = PushStats()
        self.splats: viser.GaussianSplatHandle | None = None
        self._overlay_mode: str | None = None
        self.overlay_size = int(min(256, max(128, config.overlay_size)))
        self._clients: dict[int, _ClientExtras] = {}
        self._client_fast: dict[int, bool] = {}  # probe results by client id
        self._auto_budget = config.max_splats is None
        self._budget: int | None
        if self._auto_budget:
            self._budget = COARSE_SPLATS if len(scene) > COARSE_SPLATS else None
        else:
            self._budget = int(config.max_splats) or None  # 0: every splat
        self._clients_lock = threading.Lock()
        self._closed = False

        axis = scene_up(scene, self.cameras)
        self.up, self.up_source = axis.vector, axis.source
        self.server.scene.set_up_direction(tuple(float(x) for x in self.up))
        self._set_initial_camera(scene)

        # Splats first, then the panels' own listeners (they only update widgets).
        self.state.on_change(self._on_state_change)

        # One GUI folder per panel, top to bottom.
        self.jobs_panel = JobsPanel(self)
        self.selection_panel = SelectionPanel(self)
        self.edit_panel = EditPanel(self)
        self.history_panel = HistoryPanel(self)
        self.file_panel = FilePanel(self)
        self.view_panel = ViewPanel(self)
        self.features_panel = FeaturesPanel(self, self.feature_options)
        self.query_panel = QueryPanel(self)
        self.click_panel = ClickPanel(self)
        self.objects_panel = ObjectsPanel(self)
        self.text_edit_panel = TextEditPanel(self)
        self.insert_panel = InsertPanel(self)
        self.grasp_panel = GraspPanel(self)

        self.push()
        self.server.on_client_connect(self._on_connect)  # also runs for tabs already open
        self.server.on_client_disconnect(self._on_disconnect)
        for client in self.server.get_clients().values():
            # Tabs that opened while the scene was loading keep their camera otherwise.
            self.reset_view(client)

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        host = self.config.host
        shown = "localhost" if host in ("0.0.0.0", "::") else host
        return f"http://{shown}:{self.port}"

    def wait(self) -> None:
        """Serve until interrupted (Ctrl+C)."""
        try:
            while not self._closed:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def stop(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.jobs.shutdown(timeout=2.0)
        with self._clients_lock:
            extras = list(self._clients.values())
            self._clients.clear()
        for ex in extras:
            ex.overlay.stop()
        self.server.stop()

    def __enter__(self) -> ViewerApp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ splats
    def push(self, *, force: bool = False) -> SplatFrame | None:
        """Send the current state's splats to every browser (no-op when nothing changed)."""
        with self._push_lock:
            snap = self.state.snapshot()
            if snap.version == self.push_stats.version and not force:
                return None
            t0 = time.perf_counter()
            frame = self._buffer.build(
                snap.shown, snap.selection, snap.color_mode, snap.values, budget=self._budget
            )
            buf = frame.buffer
            if buf.shape[0] == 0:
                # Every Gaussian is gone or hidden: keep one fully transparent splat so that the
                # browser's splat renderer always has a valid buffer.
                buf = np.zeros((1, 8), np.uint32)
            if self.splats is None:
                parts = unpack(buf)
                self.splats = self.server.scene.add_gaussian_splats(
                    SPLATS_NODE,
                    centers=parts["centers"],
                    covariances=parts["covariances"],
                    rgbs=parts["rgb"],
                    opacities=parts["alpha"][:, None],
                    visible=self._overlay_mode is None,
                )
            else:
                self.splats.buffer = buf
            dt = time.perf_counter() - t0
            st = self.push_stats
            st.count, st.version, st.seconds = frame.count, snap.version, dt
            st.thinned = frame.thinned
            st.pushes += 1
            st.history = [*st.history[-99:], dt]
            return frame

    def derive(
        self,
        old: GaussianScene,
        new: GaussianScene,
        index: Any = None,
        changed: Any = None,
    ) -> None:
        """Tell the splat buffer how an op's result relates to its input (see
        `SplatBuffer.derive`), so the push re-packs only the Gaussians that changed."""
        self._buffer.derive(old, new, index, changed)

    # ------------------------------------------------------------------ splat budget
    @property
    def splat_budget(self) -> int | None:
        """Most splats the browsers are sent now (None: all)."""
        return self._budget

    def set_splat_budget(self, budget: int | None, *, auto: bool = False) -> None:
        """Fix the budget (None: all), or return to the automatic one (`auto=True`)."""
        self._auto_budget = auto
        if auto:
            self._refresh_budget(force_push=True)
            return
        self._budget = budget
        self.push(force=True)
        self._budget_changed()

    def _refresh_budget(self, *, force_push: bool = False) -> None:
        if not self._auto_budget:
            return
        n = len(self.state.scene)
        with self._clients_lock:
            # Until every open tab has shown that it renders fast, assume it might not.
            ids = list(self._clients)
            all_fast = bool(ids) and all(self._client_fast.get(i) is True for i in ids)
        budget = COARSE_SPLATS if n > COARSE_SPLATS and not all_fast else None
        if budget != self._budget or force_push:
            self._budget = budget
            self.push(force=True)
            self._budget_changed()

    def _budget_changed(self) -> None:
        panel = getattr(self, "view_panel", None)
        if panel is not None:
            panel.sync_budget()

    def _probe_client(self, client: viser.ClientHandle) -> None:
        """Time one small render in this browser (with the sample loaded) to learn whether it
        renders splats in hardware; then pick the budget for everyone."""
        if not self._auto_budget or len(self.state.scene) <= COARSE_SPLATS:
            return
        time.sleep(PROBE_SETTLE_S)
        t0 = time.monotonic()
        try:
            client.get_render(48, 64, transport_format="jpeg", timeout=120.0)
        except Exception as e:  # disconnected, or timed out: leave it unknown
            _log.debug("render probe failed: %s", e)
            return
        seconds = time.monotonic() - t0
        fast = seconds < FAST_PROBE_S
        _log.info(
            "client %s rendered %s splats in %.2f s", client.client_id, self.shown_count, seconds
        )
        with self._clients_lock:
            if client.client_id not in self._clients:
                return
            self._client_fast[client.client_id] = fast
        self._refresh_budget()

    @property
    def shown_count(self) -> int:
        """Gaussians in the buffer the browsers were last sent."""
        return self.push_stats.count

    # ------------------------------------------------------------------ overlays
    @property
    def overlay_mode(self) -> str | None:
        return self._overlay_mode

    def set_overlay(self, mode: str | None) -> None:
        """Show a server-rendered overlay (`OVERLAY_MODES`) instead of the splats, or None."""
        if mode is not None and mode not in OVERLAY_MODES:
            raise ValueError(f"unknown overlay {mode!r}; expected one of {OVERLAY_MODES}")
        self._overlay_mode = mode
        if self.splats is not None:
            self.splats.visible = mode is None
        self._poke_overlays()

    def set_overlay_size(self, size: int) -> None:
        self.overlay_size = int(min(256, max(128, size)))
        for ex in self._client_extras():
            ex.overlay.max_side = self.overlay_size
        self._poke_overlays()

    def _overlay_request(self) -> tuple[str, Snapshot] | None:
        mode = self._overlay_mode
        return None if mode is None else (mode, self.state.snapshot())

    def overlay_worker(self, client_id: int) -> OverlayWorker | None:
        with self._clients_lock:
            ex = self._clients.get(client_id)
        return None if ex is None else ex.overlay

    def _client_extras(self) -> list[_ClientExtras]:
        with self._clients_lock:
            return list(self._clients.values())

    def _poke_overlays(self) -> None:
        for ex in self._client_extras():
            ex.overlay.poke()

    # ------------------------------------------------------------------ clients
    def _on_connect(self, client: viser.ClientHandle) -> None:
        def on_overlay_error(e: Exception) -> None:
            self.notify("Overlay failed", _reason(e), client=client, color="red")
            self.set_overlay(None)
            self.view_panel.sync_display()

        worker = OverlayWorker(
            client,
            self._overlay_request,
            max_side=self.overlay_size,
            on_error=on_overlay_error,
        )
        with self._clients_lock:
            if self._closed:
                worker.stop()
                return
            self._clients[client.client_id] = _ClientExtras(worker)
        client.camera.on_update(lambda _cam: worker.poke(camera_moved=True))
        if self._overlay_mode is not None:
            worker.poke()
        threading.Thread(
            target=self._probe_client, args=(client,), name="splat-probe", daemon=True
        ).start()

    def _on_disconnect(self, client: viser.ClientHandle) -> None:
        with self._clients_lock:
            ex = self._clients.pop(client.client_id, None)
            self._client_fast.pop(client.client_id, None)
        if ex is not None:
            ex.overlay.stop()
        if not self._closed:
            self._refresh_budget()

    def notify(
        self,
        title: str,
        body: str,
        *,
        client: viser.ClientHandle | None = None,
        color: str | None = None,
        seconds: float | None = 5.0,
    ) -> None:
        """A notification in one browser (`client`) or in all of them."""
        clients = [client] if client is not None else list(self.server.get_clients().values())
        for c in clients:
            try:
                c.add_notification(
                    title, body, auto_close_seconds=seconds, color=color, with_close_button=True
                )
            except Exception as e:  # a closing tab must not break the caller
                _log.debug("notification to client failed: %s", e)

    def action(self, title: str) -> Callable[[Callable[..., Any]], Callable[..., None]]:
        """Decorate a GUI callback: any exception becomes a notification with the reason in
        the browser that caused it, instead of a traceback in the server log only."""

        def deco(fn: Callable[..., Any]) -> Callable[..., None]:
            @functools.wraps(fn)
            def wrapper(event: Any = None) -> None:
                client = getattr(event, "client", None)
                try:
                    fn(event)
                except NothingSelectedError:
                    self.notify(
                        title, "Select some Gaussians first.", client=client, color="yellow"
                    )
                except Exception as e:
                    _log.warning("%s failed", title, exc_info=True)
                    self.notify(
                        f"{title} failed", _reason(e), client=client, color="red", seconds=None
                    )

            return wrapper

        return deco

    # ------------------------------------------------------------------ camera
    def _set_initial_camera(self, scene: GaussianScene) -> None:
        ic = self.server.initial_camera
        if self.cameras:
            eye, look_at, up = camera_view(self.cameras[0], scene)
            ic.fov = vertical_fov(self.cameras[0])
        else:
            eye, look_at = framing_view(scene, self.up)
            up = self.up
            ic.fov = math.radians(DEFAULT_FOV_DEG)
        ic.position = tuple(float(x) for x in eye)
        ic.look_at = tuple(float(x) for x in look_at)
        ic.up = tuple(float(x) for x in up)
        self.initial_view = (np.asarray(eye), np.asarray(look_at), np.asarray(up))

    def look_through(self, client: viser.ClientHandle, camera: Camera) -> None:
        """Move one browser's camera to a dataset camera."""
        wxyz, position = pose_of(camera)
        with client.atomic():
            client.camera.fov = vertical_fov(camera)
            client.camera.wxyz = wxyz
            client.camera.position = position

    def reset_view(self, client: viser.ClientHandle) -> None:
        eye, look_at, up = self.initial_view
        with client.atomic():
            client.camera.up_direction = up
            client.camera.position = eye
            client.camera.look_at = look_at

    # ------------------------------------------------------------------ state changes
    def _on_state_change(self, kind: str) -> None:
        if self._closed:
            return
        self.push()
        if self._overlay_mode is not None:
            self._poke_overlays()


def _reason(e: BaseException) -> str:
    msg = str(e)
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__
