"""The "Up & measure" sub-folder of the View folder: the world's up axis (a dropdown of the six
axes, or "estimated": what `fields.scene_up` decides from the file, its cameras or its floor),
"Measure" (click two points: their distance in scene units, drawn as a line with a label),
"Set scale" (the real length of the last measured segment scales the whole scene about the
origin) and "Level the scene" (click the floor or a table: the plane fitted around the click
becomes horizontal, up = +z). Set scale and Level are history steps (undo reverts them) and
record what they did in the scene's meta (`editing._align.align_scene`: "up", "units",
"alignment", the recorded cameras), which the sidecar saves. The math lives in `editing`; this
module only drives it and draws."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import viser

import editing
from editing import align_scene, level_transform, measure, scale_transform
from fields import Camera, scene_up
from fields.conventions import format_up, framing_view, parse_up

from ._camera import click_pixel
from ._state import PROJECT, SCENE

if TYPE_CHECKING:
    from ._app import ViewerApp

ESTIMATED = "estimated"
UP_CHOICES = ("+z", "-z", "+y", "-y", "+x", "-x", ESTIMATED)
MEASURE_NODE = "/measure"
MEASURE_COLOR = (250, 200, 30)


class AlignUI:
    """Build inside the View folder."""

    def __init__(self, app: ViewerApp) -> None:
        self.app = app
        self.points: list[np.ndarray] = []  # measured points (world), at most two
        self.distance: float | None = None  # of the last complete measurement
        self._handles: list[Any] = []
        self._seen_up: Any = app.state.scene.meta.get("up")
        gui = app.server.gui
        with gui.add_folder("Up & measure", expand_by_default=False) as self.folder:
            self.up_choice = gui.add_dropdown(
                "Up axis",
                UP_CHOICES,
                initial_value=self._choice_for(app.up, app.up_source),
                hint="The world's up for orbiting, framing, edits, insertion and grasps. "
                "'estimated': the file's, its cameras', or read from its floor or table.",
            )
            self.measure_mode = gui.add_checkbox(
                "Measure", False, hint="Click two points in the scene: their distance."
            )
            self.measure_note = gui.add_markdown("")
            self.real_length = gui.add_number(
                "Real length", 1.0, min=1e-9, step=0.01, hint="The true length of the segment."
            )
            self.units = gui.add_text("Units", "m", hint="Unit of the real length (meta units).")
            self.scale_button = gui.add_button(
                "Set scale",
                disabled=True,
                hint="Scale the whole scene about the origin so the last measured segment has "
                "the real length (undoable).",
            )
            self.level_mode = gui.add_checkbox(
                "Level: click the floor",
                False,
                hint="Click the floor or a table top: the plane there becomes level and up "
                "becomes +z (undoable; saved with the scene).",
            )
        self.up_choice.on_update(
            app.action("Up axis")(lambda _e: self.set_up_choice(str(self.up_choice.value)))
        )
        self.measure_mode.on_update(
            app.action("Measure")(lambda _e: self.set_mode("measure", self.measure_mode.value))
        )
        self.level_mode.on_update(
            app.action("Level")(lambda _e: self.set_mode("level", self.level_mode.value))
        )
        self.scale_button.on_click(
            app.action("Set scale")(
                lambda _e: self.set_scale(float(self.real_length.value), str(self.units.value))
            )
        )
        self._mode: str | None = None
        app.state.on_change(self._on_state)

    # ------------------------------------------------------------------ up axis
    @staticmethod
    def _choice_for(up: np.ndarray, source: str) -> str:
        label = format_up(up)
        if source in ("override", "project") and label in UP_CHOICES:
            return label
        return ESTIMATED

    def note(self) -> str:
        """The up read-out: "Up: +z (estimated, 95 %)"."""
        app = self.app
        source = app.up_source
        if source == "estimated":
            axis = scene_up(app.state.scene, app.cameras)
            if axis.source == "estimated":
                source = f"estimated from the splats, {100 * axis.confidence:.0f} % sure"
        return f"Up: {format_up(app.up)} ({source})"

    def set_up_choice(self, label: str) -> np.ndarray:
        """Use an axis ("+z", ...) as up, or `ESTIMATED`: what `fields.scene_up` decides."""
        if label not in UP_CHOICES:
            raise ValueError(f"unknown up choice {label!r}; expected one of {UP_CHOICES}")
        app = self.app
        if label == ESTIMATED:
            app.up_override = None
            axis = scene_up(app.state.scene, app.cameras)
            app.set_up(axis.vector, axis.source)
        else:
            app.up_override = parse_up(label)
            app.set_up(app.up_override, "override")
        if self.up_choice.value != label:
            self.up_choice.value = label
        return app.up

    def _on_state(self, kind: str) -> None:
        if kind not in (SCENE, PROJECT):
            return
        scene = self.app.state.scene
        up = scene.meta.get("up")
        if up != self._seen_up:  # levelled, or that undone: follow the scene's record
            self._seen_up = up
            if self.app.up_override is None:
                axis = scene_up(scene, self.app.cameras)
                self.app.set_up(axis.vector, axis.source)
        self.clear_measure()  # the points moved with the scene (or went)

    # ------------------------------------------------------------------ clicks
    def set_mode(self, mode: str, on: bool) -> None:
        """Turn click-to-measure or click-to-level on or off (one click tool at a time)."""
        pointer = self.app.state.pointer
        scene_api = self.app.server.scene
        if on:
            pointer.claim(f"align-{mode}", lambda m=mode: self.set_mode(m, False))
            scene_api.remove_click_callback(self._on_click)
            self._mode = mode
            scene_api.on_click()(self._on_click)
        else:
            pointer.release(f"align-{mode}")
            if self._mode == mode:
                scene_api.remove_click_callback(self._on_click)
                self._mode = None
        box = self.measure_mode if mode == "measure" else self.level_mode
        if box.value != on:
            box.value = on

    def _on_click(self, event: viser.SceneClickEvent) -> None:
        mode = self._mode

        @self.app.action("Measure" if mode == "measure" else "Level the scene")
        def run(_e: object) -> None:
            camera, u, v = click_pixel(event)
            if mode == "measure":
                self.measure_click(camera, u, v)
            elif mode == "level":
                self.level_click(camera, u, v)
                self.set_mode("level", False)

        run(event)

    def surface_point(self, camera: Camera, u: float, v: float) -> np.ndarray | None:
        """[3] the first opaque surface under pixel (u, v) of `camera`, or None."""
        scene = self.app.state.scene
        if not len(scene):
            return None
        o, d = editing.pixel_ray(camera, u, v)
        t, _ = editing.ray_hits(scene, o, d)
        i = int(torch.argmin(t))
        if not torch.isfinite(t[i]):
            return None
        return (o + float(t[i]) * d).double().numpy()

    # ------------------------------------------------------------------ measure
    def measure_click(self, camera: Camera, u: float, v: float) -> float | None:
        point = self.surface_point(camera, u, v)
        if point is None:
            self.measure_note.content = "Nothing under the click; click a surface."
            return None
        return self.add_point(point)

    def add_point(self, point: Any) -> float | None:
        """Add a measured point ([3] world); the second one gives the distance (returned), a
        third starts a new measurement."""
        p = np.asarray(point, dtype=np.float64).reshape(3)
        if len(self.points) >= 2:
            self.clear_measure()
        self.points.append(p)
        if len(self.points) == 1:
            self.measure_note.content = "First point set; click the second."
            self._draw()
            return None
        self.distance = measure(*self.points)
        units = self.app.state.scene.meta.get("units")
        unit = f" {units}" if isinstance(units, str) and units else " scene units"
        self.measure_note.content = f"Distance: **{self.distance:.4g}**{unit}"
        self.scale_button.disabled = not self.distance > 0
        self._draw()
        return self.distance

    def clear_measure(self) -> None:
        self.points = []
        self.distance = None
        self.scale_button.disabled = True
        for h in self._handles:
            try:
                h.remove()
            except Exception:  # already gone with its client
                pass
        self._handles = []
        if self.measure_note.content:
            self.measure_note.content = ""

    def _draw(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        scene_api = self.app.server.scene
        radius = 0.006 * self.app.scene_extent()
        for i, p in enumerate(self.points):
            self._handles.append(
                scene_api.add_icosphere(
                    f"{MEASURE_NODE}/point_{i}",
                    radius=radius,
                    color=MEASURE_COLOR,
                    position=tuple(float(x) for x in p),
                    cast_shadow=False,
                    receive_shadow=False,
                )
            )
        if len(self.points) == 2 and self.distance is not None:
            a, b = self.points
            self._handles.append(
                scene_api.add_line_segments(
                    f"{MEASURE_NODE}/line",
                    np.stack([a, b])[None].astype(np.float32),
                    MEASURE_COLOR,
                    thickness=3.0,
                    thickness_units="screen",
                )
            )
            self._handles.append(
                scene_api.add_label(
                    f"{MEASURE_NODE}/label",
                    f"{self.distance:.4g}",
                    position=tuple(float(x) for x in 0.5 * (a + b)),
                    anchor="bottom-center",
                )
            )

    # ------------------------------------------------------------------ set scale, level
    def set_scale(self, real: float, units: str = "") -> float:
        """Scale the scene about the origin so that the last measured segment is `real` long;
        one history step ("Set scale"). Returns the scale factor."""
        if self.distance is None:
            raise ValueError("measure a segment first (Measure, then click two points)")
        T = scale_transform(self.distance, real)
        factor = float(real) / self.distance
        units = units.strip() or None

        def op(scene, _sel):
            return align_scene(scene, T, units=units)

        self.app.state.apply("Set scale", op, needs_selection=False)
        self.app.notify(
            "Scaled", f"×{factor:.4g}: the measured segment is now {real:g} {units or ''}".strip()
        )
        return factor

    def level_click(self, camera: Camera, u: float, v: float) -> np.ndarray | None:
        point = self.surface_point(camera, u, v)
        if point is None:
            raise ValueError("nothing under the click: click the floor or a table top")
        return self.level_at(point, toward=camera.center.double().numpy())

    def level_at(self, point: Any, *, toward: Any = None) -> np.ndarray:
        """Level the scene on the plane around `point` ([3] world; `toward`: the clicking
        camera's position, the plane's up side). One history step ("Level the scene"); the
        scene then records up = +z. Returns the [4,4] transform applied."""
        scene = self.app.state.scene
        T = level_transform(scene, point, toward=toward, up=self.app.up)

        def op(s, _sel):
            return align_scene(s, T, up="+z")

        self.app.state.apply("Level the scene", op, needs_selection=False)
        if self.app.up_override is not None:  # the user's axis gives way to the level
            self.app.up_override = None
            self.app.set_up(np.array([0.0, 0.0, 1.0]), "scene")
        if self.up_choice.value != ESTIMATED:
            self.up_choice.value = ESTIMATED
        self._reframe()
        angle = float(np.degrees(np.arccos(np.clip(T[2, 2].item(), -1.0, 1.0))))
        self.app.notify("Levelled", f"Turned {angle:.1f}°: up is +z now (undo reverts it).")
        return T.numpy()

    def _reframe(self) -> None:
        """Point the initial view (and every browser) at the levelled scene."""
        app = self.app
        scene = app.state.scene
        if not len(scene):
            return
        eye, look_at = framing_view(scene, app.up)
        app.initial_view = (eye, look_at, app.up)
        for client in app.server.get_clients().values():
            app.reset_view(client)
