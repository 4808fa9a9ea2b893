"""`ViewerApp`: one viser server showing one scene, with its panels, jobs and overlays.

Layers: `ViewerState` (scene history, selection) and `JobRunner` know nothing about viser; this
module wires them to the server — pushing splat buffers when the state changes, keeping one
overlay worker per browser, routing errors into notifications — and the `_panel_*` modules build
one GUI folder each on top of it.

The scene is Gaussians or a NeRF. A NeRF is drawn on the server (`_nerf_view`: a `NerfDisplay`
shared by the browsers, one `NerfFrameStreamer` per browser sending frames with depth as the
background image) while the state holds an empty Gaussian scene; the Gaussian tools (selection,
edits, history, file, features, click, objects, text edit, insert, grasps) are built only once
there are Gaussians — at start, or when "Convert to Gaussians" swaps the converted scene in
(`show_gaussians`). The View, Language query and Radiance field folders know both kinds.

Projects (`editing.project`): `project()` gathers one from the state and the panels (grasps, up
axis, display settings), `open_project()` replaces the session with one; saving and loading the
file run as jobs in the File panel. `start_autosave()` (the CLI's default, never in tests unless
asked) feeds an `Autosaver` from the state's change listeners; `offer_recovery()` asks every
browser whether to restore the unsaved work a killed session left in the recovery folder.
"""

from __future__ import annotations

import datetime
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
import torch
import viser

from editing.project import Autosaver, Project, Recovery, discard_recovery, load_project
from fields import Camera, GaussianScene, framing_view, scene_up
from fields.camera import cameras_from_meta
from fields.conventions import (
    DEFAULT_FOV_DEG,
    fit_distance,
    format_up,
    horizontal_basis,
    parse_up,
)
from fields.features import FeatureField
from fields.nerf import NerfScene

from ._camera import camera_view, client_camera, pose_of, vertical_fov
from ._jobs import JobRunner
from ._lod import BudgetController
from ._nerf_view import (
    NerfDisplay,
    NerfFrame,
    NerfFrameStreamer,
    ViewPose,
    nerf_bounds,
)
from ._overlay import OVERLAY_MODES, OverlayWorker
from ._panel_click import ClickPanel
from ._panel_edit import EditPanel
from ._panel_features import FeatureOptions, FeaturesPanel, configure_text_encoder
from ._panel_file import FilePanel
from ._panel_grasp import GraspPanel
from ._panel_history import HistoryPanel
from ._panel_insert import InsertPanel
from ._panel_jobs import JobsPanel
from ._panel_nerf import NerfPanel
from ._panel_objects import ObjectsPanel
from ._panel_query import QueryPanel
from ._panel_render import RenderPanel
from ._panel_selection import SelectionPanel, scene_extent
from ._panel_text_edit import TextEditPanel
from ._panel_view import ViewPanel
from ._server import ServerStart, ViewerConfig, start_server
from ._splats import SPLATS_NODE, SplatBuffer, SplatFrame, unpack
from ._state import EDIT_KINDS, NothingSelectedError, Snapshot, ViewerState

_log = logging.getLogger(__name__)

MAX_NOTES = 3  # notifications one browser shows at once
MAX_NOTE_CHARS = 240
ERROR_NOTE_S = 15.0  # errors close by themselves too (the Jobs panel keeps the full reason)
# Automatic splat budget: the sample a browser gets until it has been measured, and the time
# one small render ("probe") of what it was sent should take (hardware GL: tens of ms incl. the
# round trip; software GL: seconds for 10^5 splats). Each browser's budget then adapts to its
# probes (`_lod.BudgetController`): the splat count whose probe would take FAST_PROBE_S, at most
# MAX_PROBES probes after a connection.
COARSE_SPLATS = 24_000
FAST_PROBE_S = 0.35
PROBE_SETTLE_S = 0.5  # lets the splat buffer reach the browser before the probe
MAX_PROBES = 4
BUDGET_HYSTERESIS = 1.25  # the shared budget changes only by more than this factor
# A camera is "at rest" this long after its last update: then the splats are re-chosen and SH
# colour re-baked for it (when either depends on the view).
REST_S = 0.12
LOD_VIEW_SIZE = (640, 480)  # the canvas assumed before a browser reports its camera
JPEG_QUALITY = 85  # NeRF frames travel as JPEG (depth as a lossless PNG beside it)

# Where each folder sits (the job strip is at 0.0-0.3, the Train folder at 0.5). Explicit, so
# that Gaussian tools built after a conversion still appear where they always do.
FOLDER_ORDER = {
    "selection": 1.0,
    "edit": 2.0,
    "history": 3.0,
    "file": 4.0,
    "nerf": 4.5,
    "view": 5.0,
    "features": 6.0,
    "query": 7.0,
    "click": 8.0,
    "objects": 9.0,
    "text_edit": 10.0,
    "insert": 11.0,
    "grasp": 12.0,
    "camera_path": 13.0,
}
GAUSSIAN_TOOLS = (
    "selection",
    "edit",
    "history",
    "file",
    "features",
    "click",
    "objects",
    "text_edit",
    "insert",
    "grasp",
)


@dataclass
class _ClientExtras:
    overlay: OverlayWorker
    client: viser.ClientHandle
    streamer: NerfFrameStreamer | None = None  # while a NeRF is shown


@dataclass
class PushStats:
    """What the last splat push did (tests and benchmarks)."""

    count: int = 0
    thinned: bool = False
    version: int = -1
    seconds: float = 0.0
    pushes: int = 0
    history: list[float] = field(default_factory=list)
    view_colored: bool = False  # SH evaluated toward `view` (a camera that came to rest)
    widen: float = 1.0  # covariance factor of a thinned sample
    view_pushes: int = 0  # pushes caused by a camera coming to rest
    view_seconds: float = 0.0  # the last such push: rest detected -> buffer handed to viser


class ViewerApp:
    """See the module docstring. Construct, then `wait()` (the CLI) or drive it from tests."""

    def __init__(
        self,
        scene: GaussianScene | NerfScene,
        config: ViewerConfig | None = None,
        *,
        cameras: Sequence[Camera] = (),
        source: Path | None = None,
        title: str | None = None,
        server: ServerStart | None = None,
        dataset: Any = None,
        features: FeatureOptions | None = None,
        project: Project | None = None,
        project_path: Path | None = None,
        up: Any = None,
    ) -> None:
        """Serve `scene` (Gaussians or a NeRF). `server`: one already started with
        `start_server(config)` (the CLI starts it before loading the scene); by default a new
        one is started here. `project`: a loaded project to open (its current scene should be
        `scene`), read from `project_path`. `up`: the world's up ("+z", a 3-vector; `view --up`),
        overriding what the scene, its cameras, the estimate and a project say."""
        self.config = config = config or ViewerConfig()
        nerf = scene if isinstance(scene, NerfScene) else None
        if nerf is not None:
            # The state's scene while a NeRF is shown: no Gaussians, the NeRF's facts (up axis).
            scene = GaussianScene.empty().replace(meta=dict(nerf.meta))
        assert isinstance(scene, GaussianScene)
        self.root = (config.root or Path.cwd()).resolve()
        self.title = title or (source.name if source is not None else "scene")
        self.cameras = list(cameras)
        self.dataset = dataset  # a `fields.Dataset` (images, label maps) to distil features from
        self.feature_options = features or FeatureOptions()
        self.state = ViewerState(scene, source=source, max_history_bytes=config.history_bytes)
        self.nerf_display: NerfDisplay | None = None if nerf is None else NerfDisplay(nerf)
        self.nerf_preview_side = int(config.nerf_preview)
        self.nerf_frame_side = int(config.nerf_size)
        self._nerf_lock = threading.Lock()
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
        self._client_budgets: dict[int, BudgetController] = {}  # probe results by client id
        # The camera the splats are chosen and coloured for: the most recent browser camera to
        # come to rest (viser's scene is shared by every tab; see `_camera_rested`).
        self._view = None
        self._view_key: tuple | None = None
        self._view_client: int | None = None
        self._rest_cond = threading.Condition()
        self._mover: viser.ClientHandle | None = None
        self._moved_at = 0.0
        self.view_colour = True  # SH toward the resting camera (View panel: View-dependent colour)
        self._auto_budget = config.max_splats is None
        self._budget: int | None
        if self._auto_budget:
            self._budget = COARSE_SPLATS if len(scene) > COARSE_SPLATS else None
        else:
            self._budget = int(config.max_splats) or None  # 0: every splat
        self._clients_lock = threading.Lock()
        self._notes: dict[int, list[Any]] = {}  # per browser: its notifications, oldest first
        self._notes_lock = threading.Lock()
        self._closed = False
        self.project_path: Path | None = project_path  # the project saved or opened last
        self.autosaver: Autosaver | None = None
        self._autosave_args: tuple[Path, int, float] | None = None
        self.unsaved_edits = 0  # edits since the last save or open ("Open project" asks)
        self._opening = False  # while a project is opened: its changes are not edits
        self._recovery: Recovery | None = None  # a recovery offer not answered yet
        self._recovery_modals: list[Any] = []
        self._recovery_asked: set[int] = set()  # clients shown the offer
        self._recovery_lock = threading.Lock()

        # A NeRF opened on its own still knows where it was photographed from.
        view_cameras = self.cameras or (self._recorded_cameras(nerf) if nerf is not None else [])
        self.up_override = None if up is None else parse_up(up)
        axis = scene_up(scene, view_cameras, override=self.up_override)
        self.up, self.up_source = axis.vector, axis.source
        self.server.scene.set_up_direction(tuple(float(x) for x in self.up))
        self._set_initial_camera(scene, view_cameras)

        # Splats first, then the panels' own listeners (they only update widgets).
        self.state.on_change(self._on_state_change)
        self.state.on_change(self._count_edit)

        # One GUI folder per panel (their order: `FOLDER_ORDER`).
        self.jobs_panel = JobsPanel(self)
        self.nerf_panel: NerfPanel | None = None
        self.gaussian_tools = False  # whether the Gaussian-only panels exist
        if nerf is not None:
            assert self.nerf_display is not None
            if nerf.feature_field is not None:
                # Its heads decode the NeRF's feature branch (and, after a conversion, the
                # Gaussians' features); queries encode texts through the state.
                self.state.keep_field(nerf.feature_field)
            configure_text_encoder(self.state, self.feature_options)
            self.nerf_panel = self._ordered("nerf", NerfPanel(self))
            self.nerf_display.on_change(self._on_nerf_change)
        else:
            self._build_gaussian_tools(before_view=True)
        self.view_panel = self._ordered("view", ViewPanel(self))
        self.render_panel = self._ordered("camera_path", RenderPanel(self))
        if nerf is None:
            self.features_panel = self._ordered(
                "features", FeaturesPanel(self, self.feature_options)
            )
        self.query_panel = self._ordered("query", QueryPanel(self))
        if nerf is None:
            self._build_gaussian_tools(before_view=False)

        if project is not None and nerf is None:
            self.open_project(project, path=project_path)
        self.push()
        threading.Thread(target=self._rest_loop, name="splat-view", daemon=True).start()
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
        with self._rest_cond:
            self._rest_cond.notify_all()  # ends the camera-rest worker
        self.jobs.shutdown(timeout=2.0)
        saver, self.autosaver = self.autosaver, None
        if saver is not None:
            try:
                saver.flush()  # a clean stop keeps unsaved work for the next start
            except Exception as e:
                _log.warning("autosave on exit failed: %s", e)
            saver.close()
        with self._clients_lock:
            extras = list(self._clients.values())
            self._clients.clear()
        for ex in extras:
            ex.overlay.stop()
            self._stop_streamer(ex, clear=False)
        self.server.stop()

    def __enter__(self) -> ViewerApp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ splats
    def push(self, *, force: bool = False) -> SplatFrame | None:
        """Send the current state's splats to every browser (no-op when nothing changed):
        within the splat budget, the splats that contribute most to the view camera's picture
        (`view_camera`), coloured toward it when the scene has SH of degree >= 1."""
        with self._push_lock:
            snap = self.state.snapshot()
            if snap.version == self.push_stats.version and not force:
                return None
            t0 = time.perf_counter()
            frame = self._buffer.build(
                snap.shown,
                snap.shown_selection,
                snap.color_mode,
                snap.shown_values,
                budget=self._budget,
                view=self.view_camera(),
                view_colour=self.view_colour,
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
            st.view_colored, st.widen = frame.view_colored, frame.widen
            st.pushes += 1
            st.history = [*st.history[-99:], dt]
            return frame

    def view_camera(self) -> Camera | None:
        """The camera pushes choose and colour splats for: the last browser camera that came
        to rest, else the initial view at `LOD_VIEW_SIZE` (None while a NeRF is shown)."""
        if self._view is not None:
            return self._view
        if self.nerf is not None or not hasattr(self, "initial_view"):
            return None
        eye, look_at, up = self.initial_view
        w, h = LOD_VIEW_SIZE
        try:
            return _view_from(eye, look_at, up, w, h)
        except ValueError:  # eye on the target, or looking along up
            return None

    def _view_dependent(self) -> bool:
        """Whether what the browsers are sent depends on the camera: SH colour, or a sample."""
        scene = self.state.scene
        if self.nerf is not None or len(scene) == 0:
            return False
        budget = self._budget
        sh = self.view_colour and scene.sh.shape[1] > 1
        return sh or (budget is not None and len(scene) > budget)

    def set_view_colour(self, on: bool) -> None:
        """Show SH colour toward the resting camera (on), or every splat's base colour (off)."""
        if bool(on) == self.view_colour:
            return
        self.view_colour = bool(on)
        self.push(force=True)

    def _camera_moved(self, client: viser.ClientHandle) -> None:
        with self._rest_cond:
            self._mover, self._moved_at = client, time.monotonic()
            self._rest_cond.notify()

    def _rest_loop(self) -> None:
        """Wait for a camera to rest (REST_S without updates), then `_camera_rested`."""
        while True:
            with self._rest_cond:
                while self._mover is None and not self._closed:
                    self._rest_cond.wait(1.0)
                if self._closed:
                    return
                wait = self._moved_at + REST_S - time.monotonic()
                if wait > 0:
                    self._rest_cond.wait(wait)
                    continue
                client, self._mover = self._mover, None
            try:
                self._camera_rested(client)
            except Exception:  # a tab that went away mid-way; the next rest tries again
                _log.debug("refreshing the splats for a resting camera failed", exc_info=True)

    def _camera_rested(self, client: viser.ClientHandle) -> None:
        """Re-choose the sample and re-bake SH colour for this browser's camera.

        viser's scene (and so the splat buffer) is shared by every tab: with several tabs the
        splats follow the most recent camera to come to rest (other tabs see colour baked for
        that viewpoint until their own camera rests). Per-tab buffers (`client.scene`) would
        cost one buffer copy per tab; one shared buffer keeps the server's memory at one copy."""
        if self._closed:
            return
        try:
            cam = client_camera(client.camera)
        except AssertionError:  # no camera message from this client yet
            return
        key = (
            tuple(np.round(np.asarray(client.camera.wxyz, dtype=float), 6)),
            tuple(np.round(np.asarray(client.camera.position, dtype=float), 6)),
            round(float(client.camera.fov), 6),
            cam.width,
            cam.height,
        )
        if key == self._view_key:
            return
        self._view, self._view_key, self._view_client = cam, key, client.client_id
        if not self._view_dependent():
            return
        t0 = time.perf_counter()
        if self.push(force=True) is not None:
            st = self.push_stats
            st.view_pushes += 1
            st.view_seconds = time.perf_counter() - t0

    def derive(
        self,
        old: GaussianScene,
        new: GaussianScene,
        index: Any = None,
        changed: Any = None,
    ) -> None:
        """Tell the splat buffer how an op's result relates to its input (see
        `SplatBuffer.derive`), so the push re-packs only the Gaussians that changed; the state
        remaps named selections with `index`."""
        self._buffer.derive(old, new, index, changed)
        if index is not None:
            self.state.note_rows(old, new, index)

    # ------------------------------------------------------------------ panels
    def _ordered(self, name: str, panel: Any) -> Any:
        panel.folder.order = FOLDER_ORDER[name]
        return panel

    def _build_gaussian_tools(self, *, before_view: bool | None = None) -> None:
        """Build the Gaussian-only panels: those above the View folder (`before_view=True`),
        below it (False), or all (None)."""
        first = before_view is None or before_view
        rest = before_view is None or not before_view
        if first:
            self.selection_panel = self._ordered("selection", SelectionPanel(self))
            self.edit_panel = self._ordered("edit", EditPanel(self))
            self.history_panel = self._ordered("history", HistoryPanel(self))
            self.file_panel = self._ordered("file", FilePanel(self))
        if rest:
            if before_view is None:
                self.features_panel = self._ordered(
                    "features", FeaturesPanel(self, self.feature_options)
                )
            self.click_panel = self._ordered("click", ClickPanel(self))
            self.objects_panel = self._ordered("objects", ObjectsPanel(self))
            self.text_edit_panel = self._ordered("text_edit", TextEditPanel(self))
            self.insert_panel = self._ordered("insert", InsertPanel(self))
            self.grasp_panel = self._ordered("grasp", GraspPanel(self))
            self.gaussian_tools = True

    # ------------------------------------------------------------------ NeRF
    @property
    def nerf(self) -> NerfScene | None:
        """The NeRF shown, or None while Gaussians are."""
        display = self.nerf_display
        return None if display is None else display.scene

    def scene_extent(self) -> float:
        """Size of what is shown (the robust diagonal of the Gaussians, or of the NeRF's
        occupied cells): what gizmos and frustums scale with."""
        nerf = self.nerf
        if nerf is not None:
            return 2.0 * nerf_bounds(nerf)[1]
        return scene_extent(self.state.scene)

    def show_nerf(self, scene: NerfScene) -> None:
        """Show another NeRF in place of the one shown (a training snapshot)."""
        display = self.nerf_display
        if display is None:
            raise RuntimeError("this viewer shows Gaussians; it cannot switch to a NeRF")
        display.set_scene(scene)
        if self.nerf_panel is not None:
            self.nerf_panel.refresh()
        self.jobs_panel.refresh_summary()

    def show_scene(self, scene: GaussianScene | NerfScene, name: str) -> None:
        """Show `scene` with no history behind it (a training run's snapshot), whatever its
        kind: a NeRF in place of the NeRF, Gaussians in place of the scene (or of the NeRF)."""
        if isinstance(scene, NerfScene):
            self.show_nerf(scene)
        elif self.nerf_display is not None:
            self.show_gaussians(scene, name)
        else:
            self.state.replace_scene(scene, name)

    def show_gaussians(
        self, scene: GaussianScene, name: str, *, field: FeatureField | None = None
    ) -> None:
        """Stop showing the NeRF and show `scene` (a conversion of it) with every Gaussian tool;
        `field`: the feature field its `feature` extra belongs to."""
        with self._nerf_lock:
            display, self.nerf_display = self.nerf_display, None
            if display is not None:
                for ex in self._client_extras():
                    self._stop_streamer(ex, clear=True)
            self.state.replace_scene(scene, name)
            if field is not None:
                self.state.keep_field(field)
            if not self.gaussian_tools:
                self._build_gaussian_tools()
            if self.nerf_panel is not None:
                self.nerf_panel.folder.visible = False
        self.view_panel.sync_kind()
        self.query_panel.sync()

    def set_nerf_sides(self, *, preview: int | None = None, full: int | None = None) -> None:
        """Long sides (px) of the frames drawn while the camera moves / once it rests."""
        if preview is not None:
            self.nerf_preview_side = int(preview)
        if full is not None:
            self.nerf_frame_side = int(full)
        # New sizes: new streamers (their preview adaptation starts over at the new size).
        with self._nerf_lock:
            for ex in self._client_extras():
                if ex.streamer is not None:
                    self._start_streamer(ex)

    def nerf_streamer(self, client_id: int) -> NerfFrameStreamer | None:
        with self._clients_lock:
            ex = self._clients.get(client_id)
        return None if ex is None else ex.streamer

    def _start_streamer(self, ex: _ClientExtras) -> None:
        display = self.nerf_display
        if display is None or self._closed:
            return
        client = ex.client

        def send(frame: NerfFrame) -> None:
            client.scene.set_background_image(
                frame.image, format="jpeg", jpeg_quality=JPEG_QUALITY, depth=frame.depth
            )

        def on_error(e: Exception) -> None:
            self.notify("NeRF view failed", _reason(e), client=client, color="red")
            shown = self.nerf_display
            if shown is not None and shown.mode != "rgb":
                shown.set_mode("rgb")
                self.view_panel.sync_display()

        preview = min(self.nerf_preview_side, self.nerf_frame_side)
        streamer = NerfFrameStreamer(
            display.frame,
            send,
            preview_side=preview,
            full_side=self.nerf_frame_side,
            on_error=on_error,
            name=f"nerf-{client.client_id}",
        )
        old, ex.streamer = ex.streamer, streamer
        if old is not None:
            old.stop()
        self._request_frame(ex)

    def _stop_streamer(self, ex: _ClientExtras, *, clear: bool) -> None:
        streamer = getattr(ex, "streamer", None)  # (tests register bare stand-ins)
        if streamer is None:
            return
        ex.streamer = None
        streamer.stop()
        if clear:
            try:
                ex.client.scene.set_background_image(None)
            except Exception as e:  # the client may have gone away
                _log.debug("clearing the background failed: %s", e)

    def _request_frame(self, ex: _ClientExtras) -> None:
        streamer = ex.streamer
        if streamer is None:
            return
        try:
            pose = ViewPose.of(ex.client.camera)
        except AssertionError:  # no camera message from this client yet
            return
        streamer.request(pose)

    def _on_nerf_change(self) -> None:
        for ex in self._client_extras():
            if ex.streamer is not None:
                ex.streamer.refresh()

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

    def _refresh_budget(self, *, force_push: bool = False) -> bool:
        """Set the shared budget from the browsers' own (the smallest: every tab shares one
        scene, and the slowest must stay interactive); True when it changed."""
        if not self._auto_budget:
            return False
        n = len(self.state.scene)
        with self._clients_lock:
            # A tab not measured yet gets the coarse sample.
            own = [self._client_budgets.get(i) for i in self._clients]
            wanted = [COARSE_SPLATS if c is None or c.budget is None else c.budget for c in own]
        budget = min(wanted) if wanted else COARSE_SPLATS
        new = None if budget >= n else budget
        old = self._budget
        # Small steps up wait (probes are noisy); steps down never do.
        small_step = new is not None and old is not None and old < new < BUDGET_HYSTERESIS * old
        if (new != old and not small_step) or force_push:
            self._budget = new
            self.push(force=True)
            self._budget_changed()
            return new != old
        return False

    def _budget_changed(self) -> None:
        panel = getattr(self, "view_panel", None)
        if panel is not None:
            panel.sync_budget()

    def _probe_client(self, client: viser.ClientHandle) -> None:
        """Time a small render in this browser with what it was sent, size its budget from that
        (`BudgetController`), update the shared budget, and measure again while it changes."""
        if not self._auto_budget or len(self.state.scene) <= COARSE_SPLATS:
            return
        for _ in range(MAX_PROBES):
            time.sleep(PROBE_SETTLE_S)
            count = self.shown_count
            t0 = time.monotonic()
            try:
                client.get_render(48, 64, transport_format="jpeg", timeout=120.0)
            except Exception as e:  # disconnected, or timed out: leave it unknown
                _log.debug("render probe failed: %s", e)
                return
            seconds = time.monotonic() - t0
            _log.info("client %s rendered %s splats in %.2f s", client.client_id, count, seconds)
            with self._clients_lock:
                if client.client_id not in self._clients or self._closed:
                    return
                ctl = self._client_budgets.setdefault(
                    client.client_id, BudgetController(COARSE_SPLATS, FAST_PROBE_S)
                )
                ctl.update(seconds, count, len(self.state.scene))
            if not self._refresh_budget():
                return

    def client_budget(self, client_id: int) -> int | None:
        """The budget measured for one browser (None: not measured yet)."""
        with self._clients_lock:
            c = self._client_budgets.get(client_id)
        return None if c is None else c.budget

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
        ex = _ClientExtras(worker, client)
        with self._clients_lock:
            if self._closed:
                worker.stop()
                return
            self._clients[client.client_id] = ex
        client.camera.on_update(lambda _cam: worker.poke(camera_moved=True))
        client.camera.on_update(lambda _cam: self._camera_moved(client))
        client.camera.on_update(lambda _cam: self._request_frame(ex))
        with self._nerf_lock:
            if self.nerf_display is not None:
                self._start_streamer(ex)
        if self._overlay_mode is not None:
            worker.poke()
        threading.Thread(
            target=self._probe_client, args=(client,), name="splat-probe", daemon=True
        ).start()
        self._show_recovery(client)

    def _on_disconnect(self, client: viser.ClientHandle) -> None:
        with self._notes_lock:
            self._notes.pop(client.client_id, None)
        with self._clients_lock:
            ex = self._clients.pop(client.client_id, None)
            self._client_budgets.pop(client.client_id, None)
        if ex is not None:
            ex.overlay.stop()
            self._stop_streamer(ex, clear=False)
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
        """A notification in one browser (`client`) or in all of them. Bodies are cut to
        `MAX_NOTE_CHARS`; a browser shows at most `MAX_NOTES` at once (the oldest goes, and one
        repeating the last is replaced); every notification closes by itself (`seconds` None:
        after `ERROR_NOTE_S`)."""
        body = _short(body)
        seconds = ERROR_NOTE_S if seconds is None else seconds
        clients = [client] if client is not None else list(self.server.get_clients().values())
        for c in clients:
            try:
                handle = c.add_notification(
                    title, body, auto_close_seconds=seconds, color=color, with_close_button=True
                )
            except Exception as e:  # a closing tab must not break the caller
                _log.debug("notification to client failed: %s", e)
                continue
            with self._notes_lock:
                notes = self._notes.setdefault(c.client_id, [])
                now = time.monotonic()
                live = [n for n in notes if n[1] > now]
                gone = [n for n in notes if n[1] <= now]
                if live and live[-1][2] == (title, body):
                    gone.append(live.pop())  # the same message again: show it once
                while len(live) >= MAX_NOTES:
                    gone.append(live.pop(0))
                live.append((handle, now + seconds, (title, body)))
                self._notes[c.client_id] = live
            for old in gone:
                try:
                    old[0].remove()
                except Exception:  # already closed in the browser
                    pass

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

    # ------------------------------------------------------------------ projects
    def panel_settings(self) -> dict[str, Any]:
        """The panel settings a project keeps (JSON-able)."""
        settings: dict[str, Any] = {
            "color_mode": self.state.color_mode,
            "combine_mode": self.state.combine_mode,
            "overlay_size": self.overlay_size,
        }
        view = getattr(self, "view_panel", None)
        if view is not None:
            settings["display"] = str(view.display.value)
        render = getattr(self, "render_panel", None)
        path = render.settings() if render is not None else None
        if path is not None:
            settings["camera_path"] = path  # nerfstudio's camera_path.json document
        return settings

    def project(self) -> Project:
        """The session as a project: the state's history, selections, field and bookmarks,
        the grasps shown, the up axis and the panel settings."""
        grasp_panel = getattr(self, "grasp_panel", None)
        grasps = grasp_panel.grasps() if grasp_panel is not None else []
        return self.state.to_project(
            grasps=grasps, up=format_up(self.up), settings=self.panel_settings()
        )

    def open_project(self, project: Project, *, path: Path | None = None) -> None:
        """Replace the session with `project` (no edit counted; unsaved edits are gone: ask
        first). `path`: the file it came from (what "Save project" writes next)."""
        if self.nerf is not None:
            raise ValueError("this viewer shows a NeRF; open a project in a new viewer")
        self._opening = True
        try:
            self.state.from_project(project)
        finally:
            self._opening = False
        self.unsaved_edits = 0
        if path is not None:
            self.project_path = Path(path)
            if self.autosaver is not None:  # autosave now follows the opened file
                self.autosaver.mark_saved()  # the user chose to drop the unsaved work
                self._restart_autosave(Path(path))
            file_panel = getattr(self, "file_panel", None)
            if file_panel is not None:
                file_panel.project_path.value = file_panel.default_project_path()
        if project.up and self.up_override is None:
            self.set_up(parse_up(project.up), "project")
        settings = project.settings or {}
        if isinstance(settings.get("combine_mode"), str):
            try:
                self.selection_panel.set_combine(settings["combine_mode"])
            except (ValueError, AttributeError) as e:
                _log.info("project combine mode not restored: %s", e)
        size = settings.get("overlay_size")
        if isinstance(size, int) and not isinstance(size, bool):
            self.set_overlay_size(size)
        view = getattr(self, "view_panel", None)
        if view is not None:
            label = settings.get("display")
            try:
                view.set_display(label if isinstance(label, str) else "Colour")
            except ValueError:  # e.g. "Values": per-Gaussian values are not kept
                view.set_display("Colour")
        grasp_panel = getattr(self, "grasp_panel", None)
        if grasp_panel is not None:
            grasp_panel.restore(project.grasps)
        render = getattr(self, "render_panel", None)
        if render is not None:
            try:
                render.restore(settings.get("camera_path"))
            except ValueError as e:  # a damaged path must not block the rest of the project
                _log.info("project camera path not restored: %s", e)
                self.notify("Camera path not restored", str(e), color="yellow")
        self.push(force=True)

    def set_up(self, up: np.ndarray, source: str) -> None:
        """Use `up` ([3]) as the scene's up axis (`source`: where it came from)."""
        up = np.asarray(up, dtype=np.float64)
        self.up, self.up_source = up / np.linalg.norm(up), source
        self.server.scene.set_up_direction(tuple(float(x) for x in self.up))
        eye, look_at, _old = self.initial_view
        self.initial_view = (eye, look_at, self.up)
        view = getattr(self, "view_panel", None)
        if view is not None:
            view.show_up()

    # ------------------------------------------------------------------ autosave
    def start_autosave(
        self, source: Path, *, every_edits: int = 5, every_seconds: float = 30.0
    ) -> Autosaver | None:
        """Autosave the session to the recovery folder, keyed by `source` (the file the user
        opened). While a recovery offer waits for an answer, nothing is saved (that would
        replace the work it offers); it starts once the user answered."""
        self._autosave_args = (Path(source), int(every_edits), float(every_seconds))
        with self._recovery_lock:
            if self._recovery is not None:
                return None
        return self._restart_autosave()

    def _restart_autosave(self, source: Path | None = None) -> Autosaver | None:
        if self._autosave_args is None or self._closed:
            return None
        if source is not None:
            self._autosave_args = (Path(source), *self._autosave_args[1:])
        key, edits, seconds = self._autosave_args
        old = self.autosaver
        if old is not None:
            old.close()
        self.autosaver = Autosaver(key, self.project, every_edits=edits, every_seconds=seconds)
        return self.autosaver

    def mark_saved(self, project_path: Path | None = None) -> None:
        """The user saved (the scene, or the project to `project_path`): nothing is unsaved,
        the recovery file goes; after a project save, autosave follows that file."""
        self.unsaved_edits = 0
        saver = self.autosaver
        if saver is not None:
            saver.mark_saved()
        if project_path is not None:
            self.project_path = Path(project_path)
            if saver is not None and self._autosave_args is not None:
                if Path(project_path).resolve() != self._autosave_args[0].resolve():
                    self._restart_autosave(Path(project_path))

    def _count_edit(self, kind: str) -> None:
        if kind not in EDIT_KINDS or self._opening:
            return
        self.unsaved_edits += 1
        saver = self.autosaver
        if saver is not None:
            saver.mark_edit()

    def offer_recovery(self, recovery: Recovery) -> None:
        """Ask every browser (those open and those that connect) whether to restore the
        unsaved work in `recovery`; the first answer applies to all."""
        with self._recovery_lock:
            self._recovery = recovery
        for client in self.server.get_clients().values():
            self._show_recovery(client)

    @property
    def recovery_offer(self) -> Recovery | None:
        return self._recovery

    def _show_recovery(self, client: viser.ClientHandle) -> None:
        with self._recovery_lock:
            rec = self._recovery
            if rec is None or client.client_id in self._recovery_asked:
                return  # (a tab connecting while the offer is made: ask it once)
            self._recovery_asked.add(client.client_id)
            when = datetime.datetime.fromtimestamp(rec.saved_at).strftime("%Y-%m-%d %H:%M:%S")
            with client.gui.add_modal("Restore unsaved work?") as modal:
                client.gui.add_markdown(
                    f"Unsaved work from {when} ({rec.edits} edit{'s' if rec.edits != 1 else ''}"
                    f"; last step: {rec.steps[-1] if rec.steps else '-'}) was found for "
                    f"`{Path(rec.source).name}`."
                )
                restore = client.gui.add_button("Restore")
                discard = client.gui.add_button("Discard", color="red")
            self._recovery_modals.append(modal)
        restore.on_click(self.action("Restore")(lambda _e: self.answer_recovery(True)))
        discard.on_click(self.action("Discard")(lambda _e: self.answer_recovery(False)))

    def answer_recovery(self, restore: bool):
        """Restore (as a job, returned) or discard the offered recovery; then autosave."""
        with self._recovery_lock:
            rec, self._recovery = self._recovery, None
            modals, self._recovery_modals = self._recovery_modals, []
            self._recovery_asked = set()
        for m in modals:
            try:
                m.close()
            except Exception as e:  # the tab may be gone
                _log.debug("closing a recovery modal failed: %s", e)
        if rec is None:
            return None
        if not restore:
            discard_recovery(rec.source)
            self._restart_autosave()
            self.notify("Discarded", "The unsaved work of the earlier session was discarded.")
            return None

        def job(ctx) -> Project:
            ctx.progress(0.1, f"reading {rec.path.name}")
            project = load_project(rec.path)
            ctx.check()
            self.open_project(project)
            self.unsaved_edits = max(1, rec.edits)  # restored, still not saved by the user
            ctx.progress(1.0, f"Restored {rec.edits} edit(s) of the earlier session")
            return project

        def done(j) -> None:
            self._restart_autosave()
            if j.error is not None:
                self.notify("Restore failed", j.error, color="red", seconds=None)

        return self.jobs.submit("Restore unsaved work", job, on_done=done)

    # ------------------------------------------------------------------ camera
    @staticmethod
    def _recorded_cameras(nerf: NerfScene) -> list[Camera]:
        try:
            return cameras_from_meta(nerf.meta) or []
        except ValueError as e:
            _log.warning("ignoring the NeRF's recorded cameras: %s", e)
            return []

    def _set_initial_camera(self, scene: GaussianScene, cameras: Sequence[Camera]) -> None:
        ic = self.server.initial_camera
        nerf = self.nerf
        if cameras:
            eye, look_at, up = camera_view(cameras[0], scene)
            if nerf is not None:  # orbit about the NeRF's centre, not a point 1 unit ahead
                fwd = look_at - eye
                centre = nerf_bounds(nerf)[0]
                look_at = eye + fwd * max(float((centre - eye) @ fwd), 1e-2)
            ic.fov = vertical_fov(cameras[0])
        elif nerf is not None:
            centre, radius = nerf_bounds(nerf)
            e1, e2 = horizontal_basis(self.up)
            direction = 0.75 * e1 + 0.45 * e2 + 0.55 * self.up
            direction /= np.linalg.norm(direction)
            eye = centre + fit_distance(radius, DEFAULT_FOV_DEG, 1.1) * direction
            look_at, up = centre, self.up
            ic.fov = math.radians(DEFAULT_FOV_DEG)
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


def _view_from(eye: Any, look_at: Any, up: Any, width: int, height: int) -> Camera:
    """A `fields.Camera` at the viewer's default field of view (a view with no browser yet)."""
    f = 0.5 * height / math.tan(math.radians(DEFAULT_FOV_DEG) / 2)
    K = torch.tensor([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]])
    return Camera.look_at(
        tuple(float(x) for x in eye),
        tuple(float(x) for x in look_at),
        tuple(float(x) for x in up),
        K,
        width,
        height,
    )


def _short(text: str, limit: int | None = None) -> str:
    """`text` cut to `limit` characters (default `MAX_NOTE_CHARS`) at a word, with an ellipsis."""
    limit = MAX_NOTE_CHARS if limit is None else limit
    text = " ".join(str(text).split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0]
    return cut + "…"


def _reason(e: BaseException) -> str:
    msg = str(e)
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__
