"""The "Camera path" folder (nerfstudio's render panel is the model): add the browser's view as
a keyframe, choose / go to / move / replace / delete keyframes; duration, FOV, smoothness, loop,
fps and resolution; a preview that flies the browser's camera along the path (a time slider and
Play), with the path drawn in the scene (its curve and a frustum per keyframe); save / load
nerfstudio's `camera_path.json`; "Render video" as a job (progress, cancel) writing an MP4
through the server renderer (gsplat on CUDA, the CPU rasterizer otherwise; a NeRF with its own
marcher). Typed paths stay inside the viewer's root folder (`app._paths.confine`).

The path itself is a `fields.CameraPath` (pure, immutable); every control replaces it under a
lock and redraws. "Smoothness" is 1 - the spline's tension (nerfstudio's `smoothness_value`
field stores the tension)."""

from __future__ import annotations

import logging
import math
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import viser

from fields import (
    CameraPath,
    GaussianScene,
    Keyframe,
    camera_path_from_json,
    camera_path_to_json,
    load_camera_path,
    save_camera_path,
)

from .._paths import confine, display
from ..commands.render import render_video, scene_renderer
from ._camera import pose_of
from ._state import shown_mask

if TYPE_CHECKING:
    from ._app import ViewerApp
    from ._jobs import Job, JobContext

_log = logging.getLogger(__name__)

NONE = "(no keyframes)"
PATH_NODE = "/camera_path"
CURVE_SAMPLES_PER_KEY = 24  # points of the drawn curve per keyframe
PREVIEW_MAX_FPS = 30.0  # "Play" moves the browser's camera at most this often
BACKGROUNDS = {"White": (1.0, 1.0, 1.0), "Black": (0.0, 0.0, 0.0)}


class RenderPanel:
    def __init__(self, app: ViewerApp) -> None:
        self.app = app
        # One re-entrant lock over the path and its widgets: each edit reads and replaces the
        # path atomically (callbacks run on viser's thread pool), and widget updates made by
        # `_refresh` run their callbacks at once on the same thread, which must not read
        # half-updated widgets back into the path (`_syncing`).
        self._lock = threading.RLock()
        self._widgets = self._lock
        self._syncing = False
        self._path = CameraPath()
        self._nodes: list[Any] = []
        self._playing: threading.Event | None = None
        self.last_job: Job | None = None
        gui = app.server.gui
        p = self._path
        with gui.add_folder("Camera path", expand_by_default=False) as self.folder:
            self.add_button = gui.add_button(
                "Add keyframe", hint="Add this browser's view after the chosen keyframe."
            )
            self.keyframe = gui.add_dropdown("Keyframe", (NONE,), initial_value=NONE)
            self.go_button = gui.add_button("Go to keyframe")
            self.earlier_button = gui.add_button("Move earlier")
            self.later_button = gui.add_button("Move later")
            self.replace_button = gui.add_button(
                "Replace with view", hint="Set the chosen keyframe to this browser's view."
            )
            self.delete_button = gui.add_button("Delete keyframe", color="red")
            self.clear_button = gui.add_button("Clear path", color="red")
            self.summary = gui.add_markdown("")
            self.seconds = gui.add_number("Duration (s)", p.seconds, min=0.1, max=3600, step=0.1)
            self.fov = gui.add_slider(
                "FOV (°)", 10.0, 120.0, 1.0, 50.0, hint="Vertical field of view of every keyframe."
            )
            self.smoothness = gui.add_slider(
                "Smoothness",
                0.0,
                1.0,
                0.05,
                1.0 - p.tension,
                hint="1: one smooth curve (Catmull-Rom); 0: the camera eases in and out of "
                "every keyframe.",
            )
            self.loop = gui.add_checkbox("Loop", p.loop, hint="Return to the first keyframe.")
            self.fps = gui.add_number("FPS", p.fps, min=1.0, max=120.0, step=0.01)
            self.resolution = gui.add_vector2(
                "Resolution", (p.width, p.height), min=(16, 16), max=(7680, 4320), step=1
            )
            self.show_path = gui.add_checkbox("Show path", True)
            self.preview_time = gui.add_slider(
                "Preview (s)",
                0.0,
                p.seconds,
                0.01,
                0.0,
                hint="Move this browser's camera to that moment of the path.",
            )
            self.play_button = gui.add_button("Play", hint="Fly this browser's camera along it.")
            self.stop_button = gui.add_button("Stop", visible=False)
            self.file = gui.add_text("Path file", "camera_path.json", hint="nerfstudio format.")
            self.save_button = gui.add_button("Save path")
            self.load_button = gui.add_button("Load path")
            self.video = gui.add_text("Video file", "camera_path.mp4")
            self.background = gui.add_dropdown(
                "Background", tuple(BACKGROUNDS), initial_value="White"
            )
            self.overwrite = gui.add_checkbox("Overwrite files", False)
            self.render_button = gui.add_button("Render video", color="green")

        act = app.action
        self.add_button.on_click(act("Add keyframe")(lambda e: self.add_keyframe(e.client)))
        self.go_button.on_click(act("Go to keyframe")(lambda e: self.go_to(e.client)))
        self.earlier_button.on_click(act("Move keyframe")(lambda _e: self.move(-1)))
        self.later_button.on_click(act("Move keyframe")(lambda _e: self.move(+1)))
        self.replace_button.on_click(act("Replace keyframe")(lambda e: self.replace(e.client)))
        self.delete_button.on_click(act("Delete keyframe")(lambda _e: self.delete()))
        self.clear_button.on_click(act("Clear path")(lambda _e: self.clear()))
        for widget in (self.seconds, self.smoothness, self.loop, self.fps, self.resolution):
            widget.on_update(act("Camera path")(lambda _e: self._apply_settings()))
        self.fov.on_update(act("FOV")(lambda _e: self.set_fov(float(self.fov.value))))
        self.show_path.on_update(act("Show path")(lambda _e: self.redraw()))
        self.keyframe.on_update(act("Keyframe")(lambda _e: self._on_choose()))
        self.preview_time.on_update(act("Preview")(self._on_preview))
        self.play_button.on_click(act("Play")(lambda e: self.play(e.client)))
        self.stop_button.on_click(act("Stop")(lambda _e: self.stop_playing()))
        self.save_button.on_click(act("Save path")(lambda _e: self.save(str(self.file.value))))
        self.load_button.on_click(act("Load path")(lambda _e: self.load(str(self.file.value))))
        self.render_button.on_click(
            act("Render video")(lambda _e: self.render(str(self.video.value)))
        )
        self._refresh()

    # ------------------------------------------------------------------ the path
    @property
    def path(self) -> CameraPath:
        """The path as it stands (immutable)."""
        with self._lock:
            return self._path

    def set_path(self, path: CameraPath, *, chosen: int | None = None) -> None:
        """Replace the path (widgets and drawing follow); `chosen`: the keyframe to select."""
        with self._lock:
            self._path = path
        self._refresh(chosen)

    def chosen(self) -> int | None:
        """Index of the keyframe chosen in the dropdown (None: no keyframes)."""
        value = str(self.keyframe.value)
        options = list(self.keyframe.options)
        if value == NONE or value not in options:
            return None
        return options.index(value)

    def _on_choose(self) -> None:
        with self._lock:
            if not self._syncing:
                self.redraw()  # the chosen keyframe's frustum is drawn in orange

    def _need_chosen(self) -> int:
        i = self.chosen()
        if i is None:
            raise ValueError("the path has no keyframes yet: add one from the view first")
        return i

    def add_keyframe(self, client: viser.ClientHandle) -> Keyframe:
        """Add the client's view (with the panel's FOV) after the chosen keyframe."""
        kf = self._keyframe_of(client)
        with self._lock:
            i = self.chosen()
            at = len(self.path) if i is None else i + 1
            self.set_path(self.path.added(kf, at), chosen=at)
        return kf

    def replace(self, client: viser.ClientHandle) -> None:
        kf = self._keyframe_of(client)
        with self._lock:
            i = self._need_chosen()
            old = self.path.keyframes[i]
            self.set_path(self.path.replaced(i, Keyframe(kf.c2w, old.fov_deg, old.time)), chosen=i)

    def delete(self) -> None:
        with self._lock:
            i = self._need_chosen()
            path = self.path.removed(i)
            self.set_path(path, chosen=min(i, len(path) - 1) if len(path) else None)

    def clear(self) -> None:
        with self._lock:
            self.set_path(self.path.with_settings(keyframes=()))

    def move(self, step: int) -> None:
        """Move the chosen keyframe `step` places (-1: earlier); clamped at the ends."""
        with self._lock:
            i = self._need_chosen()
            to = min(len(self.path) - 1, max(0, i + step))
            if to != i:
                self.set_path(self.path.moved(i, to), chosen=to)

    def set_fov(self, fov_deg: float) -> None:
        """Give every keyframe (and those added later) this vertical FOV."""
        with self._lock:
            path = self.path
            if all(abs(k.fov_deg - fov_deg) < 1e-9 for k in path.keyframes):
                return
            kfs = tuple(Keyframe(k.c2w, fov_deg, k.time) for k in path.keyframes)
            self.set_path(path.with_settings(keyframes=kfs), chosen=self.chosen())

    def go_to(self, client: viser.ClientHandle) -> None:
        kf = self.path.keyframes[self._need_chosen()]
        self._move_camera(client, kf.c2w, kf.fov_deg)

    def _keyframe_of(self, client: viser.ClientHandle) -> Keyframe:
        cam = client.camera
        return Keyframe.from_pose(cam.wxyz, cam.position, float(self.fov.value))

    def _apply_settings(self) -> None:
        """Copy duration, smoothness, loop, fps and resolution from the widgets (a no-op when
        they already match, so that widget updates made by `_refresh` do not loop)."""
        with self._widgets:
            if self._syncing:
                return
            w, h = (round(float(x)) for x in self.resolution.value)
            settings = {
                "seconds": float(self.seconds.value),
                "tension": round(1.0 - float(self.smoothness.value), 6),
                "loop": bool(self.loop.value),
                "fps": float(self.fps.value),
                "width": max(1, w),
                "height": max(1, h),
            }
            path = self.path
            if all(getattr(path, k) == v for k, v in settings.items()):
                return
            self.set_path(path.with_settings(**settings), chosen=self.chosen())

    # ------------------------------------------------------------------ widgets and drawing
    def _refresh(self, chosen: int | None = None) -> None:
        with self._widgets:
            was, self._syncing = self._syncing, True
            try:
                self._sync_widgets(chosen)
            finally:
                self._syncing = was
        self.redraw()

    def _sync_widgets(self, chosen: int | None) -> None:
        path = self.path
        n = len(path)
        try:
            times = path.keyframe_times()
        except ValueError:
            times = np.full(n, np.nan)
        options = tuple(f"{k + 1} · {t:.2f} s" for k, t in enumerate(times)) or (NONE,)
        if tuple(self.keyframe.options) != options:
            self.keyframe.options = options
        if chosen is not None and 0 <= chosen < n:
            self.keyframe.value = options[chosen]
        elif self.keyframe.value not in options:
            self.keyframe.value = options[-1]
        for b in (self.go_button, self.replace_button, self.delete_button, self.clear_button):
            b.disabled = n == 0
        for b in (self.earlier_button, self.later_button):
            b.disabled = n < 2
        ready = n >= 1
        self.render_button.disabled = self.save_button.disabled = not ready
        self.play_button.disabled = n < 2
        self.summary.content = (
            f"{n} keyframe{'s' if n != 1 else ''} · {path.n_frames} frames "
            f"({path.seconds:g} s at {path.fps:g} fps) · {path.width}x{path.height}"
        )
        # Widgets follow the path (a loaded file, an edit); their callbacks see no change.
        for widget, value in (
            (self.seconds, path.seconds),
            (self.fps, path.fps),
            (self.loop, path.loop),
        ):
            if widget.value != value:
                widget.value = value
        if abs(float(self.smoothness.value) - (1.0 - path.tension)) > 1e-6:
            self.smoothness.value = 1.0 - path.tension
        if tuple(round(float(x)) for x in self.resolution.value) != (path.width, path.height):
            self.resolution.value = (path.width, path.height)
        if float(self.preview_time.max) != path.seconds:
            self.preview_time.max = path.seconds

    def redraw(self) -> None:
        """Draw the path: its curve (sampled from the same spline as the video) and a frustum
        per keyframe (the chosen one in orange)."""
        for node in self._nodes:
            try:
                node.remove()
            except Exception as e:  # a node the server dropped already
                _log.debug("removing a camera path node failed: %s", e)
        self._nodes = []
        path = self.path
        if not self.show_path.value or len(path) == 0:
            return
        scene = self.app.server.scene
        size = 0.05 * max(self.app.scene_extent(), 1e-3)
        chosen = self.chosen()
        for k, kf in enumerate(path.keyframes):
            wxyz = kf.wxyz
            self._nodes.append(
                scene.add_camera_frustum(
                    f"{PATH_NODE}/keyframe_{k}",
                    fov=math.radians(kf.fov_deg),
                    aspect=path.width / path.height,
                    scale=size,
                    color=(255, 140, 0) if k == chosen else (40, 120, 255),
                    wxyz=wxyz,
                    position=kf.position,
                )
            )
        if len(path) >= 2:
            try:
                t = np.linspace(0.0, path.seconds, CURVE_SAMPLES_PER_KEY * len(path) + 1)
                pts = path.evaluate(t)[0][:, :3, 3]
            except ValueError as e:  # e.g. keyframe times past a shortened duration
                _log.info("camera path not drawn: %s", e)
                return
            segments = np.stack([pts[:-1], pts[1:]], axis=1).astype(np.float32)  # [S,2,3]
            self._nodes.append(
                scene.add_line_segments(
                    f"{PATH_NODE}/curve",
                    points=segments,
                    colors=(40, 120, 255),
                    thickness=2.0,
                    thickness_units="screen",
                )
            )

    # ------------------------------------------------------------------ preview
    def _on_preview(self, event: Any) -> None:
        client = getattr(event, "client", None)
        if client is None or len(self.path) == 0:
            return
        self.preview(client, float(self.preview_time.value))

    def preview(self, client: viser.ClientHandle, t: float) -> None:
        """Move the client's camera to the path at time `t` (s)."""
        c2w, fov = self.path.evaluate(t)
        self._move_camera(client, c2w[0], float(fov[0]))

    def _move_camera(self, client: Any, c2w: np.ndarray, fov_deg: float) -> None:
        from fields import Camera

        cam = Camera.from_fov(fov_deg, 4, 4, torch.from_numpy(np.asarray(c2w)))
        wxyz, position = pose_of(cam)
        with client.atomic():
            client.camera.fov = math.radians(fov_deg)
            client.camera.wxyz = wxyz
            client.camera.position = position

    def play(self, client: viser.ClientHandle) -> threading.Thread:
        """Fly the client's camera along the path in real time (a loop repeats until Stop)."""
        path = self.path
        if len(path) < 2:
            raise ValueError("add at least two keyframes to play the path")
        self.stop_playing()
        stop = threading.Event()
        self._playing = stop
        self.play_button.visible, self.stop_button.visible = False, True
        step = 1.0 / min(path.fps, PREVIEW_MAX_FPS)

        def run() -> None:
            t0 = time.monotonic()
            try:
                while not stop.is_set():
                    t = time.monotonic() - t0
                    if t > path.seconds:
                        if not path.loop:
                            self.preview(client, path.seconds)
                            break
                        t0 += path.seconds
                        t -= path.seconds
                    self.preview(client, t)
                    stop.wait(step)
            except Exception as e:  # the browser went away, or the path broke
                _log.info("camera path preview stopped: %s", e)
            finally:
                if self._playing is stop:
                    self._playing = None
                    self.play_button.visible, self.stop_button.visible = True, False

        thread = threading.Thread(target=run, name="camera-path-play", daemon=True)
        thread.start()
        return thread

    def stop_playing(self) -> None:
        stop = self._playing
        if stop is not None:
            stop.set()

    # ------------------------------------------------------------------ files
    def save(self, text: str) -> Path:
        """Write the path as nerfstudio's camera_path.json (inside the root folder)."""
        target = confine(text, self.app.root)
        if target.suffix.lower() != ".json":
            raise ValueError(f"{text!r}: a camera path is saved as .json")
        if target.exists() and not self.overwrite.value:
            raise FileExistsError(
                f"{display(target, self.app.root)} exists: tick 'Overwrite files' to replace it"
            )
        save_camera_path(self.path, target, overwrite=True)
        self.app.notify(
            "Camera path saved",
            f"{display(target, self.app.root)}: {len(self.path)} keyframes, "
            f"{self.path.n_frames} frames",
            seconds=4.0,
        )
        return target

    def load(self, text: str) -> CameraPath:
        """Open a camera_path.json (nerfstudio's or ours) that has keyframes."""
        source = confine(text, self.app.root)
        doc = load_camera_path(source)
        if doc.path is None:
            raise ValueError(
                f"{display(source, self.app.root)} has frames but no keyframes to edit; render "
                "it with `scenelab render SCENE --camera-path FILE --out VIDEO.mp4`"
            )
        return self._adopt(doc.path)

    def settings(self) -> dict[str, Any] | None:
        """The path as a project keeps it (nerfstudio's document), None without keyframes."""
        path = self.path
        return camera_path_to_json(path) if len(path) else None

    def restore(self, doc: Any) -> CameraPath | None:
        """Show the path a project kept (`settings()`); None (and an empty path) without one."""
        if doc is None:
            self.stop_playing()
            self.set_path(self.path.with_settings(keyframes=()))
            return None
        found = camera_path_from_json(doc, "the project's camera path").path
        if found is None:
            raise ValueError("the project's camera path has no keyframes")
        return self._adopt(found)

    def _adopt(self, path: CameraPath) -> CameraPath:
        self.stop_playing()
        self.set_path(path, chosen=0)
        fovs = {round(k.fov_deg, 6) for k in path.keyframes}
        if len(fovs) == 1:  # one FOV for the whole path: show it
            fov = float(fovs.pop())
            if 10.0 <= fov <= 120.0 and float(self.fov.value) != fov:
                self.fov.value = fov
        return path

    # ------------------------------------------------------------------ video
    def render(self, text: str) -> Job:
        """Render the path to an MP4 inside the root folder, as a job (progress, cancel)."""
        path = self.path
        if len(path) == 0:
            raise ValueError("the path has no keyframes yet: add one from the view first")
        target = confine(text, self.app.root)
        if target.suffix.lower() != ".mp4":
            raise ValueError(f"{text!r}: the video is written as .mp4")
        overwrite = bool(self.overwrite.value)
        if target.exists() and not overwrite:
            raise FileExistsError(
                f"{display(target, self.app.root)} exists: tick 'Overwrite files' to replace it"
            )
        cameras = path.cameras()  # a bad path fails here, not in the job
        background = BACKGROUNDS[str(self.background.value)]
        scene = self._scene_to_render()
        shown = display(target, self.app.root)

        def job(ctx: JobContext) -> Path:
            draw = scene_renderer(scene, "auto")
            t0 = time.monotonic()

            def progress(done: int, total: int) -> None:
                ctx.check()
                rate = done / max(1e-9, time.monotonic() - t0)
                ctx.progress(done / total, f"frame {done}/{total} ({rate:.1f} frames/s)")

            ctx.progress(0.0, f"{len(cameras)} frames at {path.width}x{path.height}")
            w, h = render_video(
                lambda cam: draw(cam, background),
                cameras,
                target,
                path.fps,
                overwrite=overwrite,
                progress=progress,
            )
            seconds = time.monotonic() - t0
            ctx.progress(
                1.0,
                f"{shown}: {len(cameras)} frames, {w}x{h}, {len(cameras) / seconds:.1f} frames/s",
            )
            return target

        self.last_job = self.app.jobs.submit("Render video", job)
        return self.last_job

    def _scene_to_render(self) -> Any:
        """What the browsers show, on the GPU when there is one: the NeRF, or the Gaussians
        without the hidden ones."""
        device = "cuda" if torch.cuda.is_available() else "cpu"
        nerf = self.app.nerf
        if nerf is not None:
            return nerf.to(device) if device != "cpu" else nerf
        scene: GaussianScene = self.app.state.snapshot().shown
        mask = shown_mask(scene)
        if not bool(mask.all()):
            scene = scene.subset(mask)
        if len(scene) == 0:
            raise ValueError("there are no Gaussians to render (all deleted or hidden)")
        return scene.to(device)
