"""The "View" folder: what the browser shows (splat colours, or a server-rendered overlay; for a
NeRF: its colour, depth or a query's relevancy, all rendered on the server), the overlay
resolution, the dataset's camera frustums (click one to look through it), reset view, camera
bookmarks (`_panel_marks`) and "Up & measure" (`_panel_align`: the up axis, measure, set scale,
level the scene). The frustums follow the scene's `meta["alignment"]` (a level or a rescale
moves them with the splats)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

import editing
from fields import Camera

from ._camera import pose_of, vertical_fov
from ._panel_align import AlignUI
from ._panel_marks import BookmarksUI
from ._state import PROJECT, SCENE

if TYPE_CHECKING:
    from ._app import ViewerApp

# Display label -> (splat colour mode, server overlay or None).
DISPLAYS: dict[str, tuple[str, str | None]] = {
    "Colour": ("rgb", None),
    "Selection": ("selection", None),
    "Values": ("values", None),
    "Depth (rendered)": ("rgb", "depth"),
    "Coverage (rendered)": ("rgb", "alpha"),
    "Selection (rendered)": ("rgb", "selection"),
    "Values (rendered)": ("rgb", "values"),
}
# Display label -> what a NeRF shows (`NerfDisplay` modes).
NERF_DISPLAYS: dict[str, str] = {
    "Colour": "rgb",
    "Depth": "depth",
    "Relevancy": "relevancy",
}
CAMERAS_NODE = "/dataset_cameras"


class ViewPanel:
    def __init__(self, app: ViewerApp) -> None:
        self.app = app
        gui = app.server.gui
        with gui.add_folder("View") as self.folder:
            self.display = gui.add_dropdown(
                "Display",
                tuple(NERF_DISPLAYS if app.nerf is not None else DISPLAYS),
                initial_value="Colour",
                hint="Splat colours, or an overlay rendered on the server while the camera rests "
                "(a NeRF: all rendered on the server).",
            )
            self.overlay_size = gui.add_slider(
                "Overlay px", 128, 256, 32, app.overlay_size, hint="Long side of rendered overlays"
            )
            self.show_cameras = gui.add_checkbox(
                "Dataset cameras",
                bool(app.cameras) and app.config.show_cameras,
                disabled=not app.cameras,
            )
            self.all_splats = gui.add_checkbox(
                "Every splat",
                app.splat_budget is None,
                hint="Send every splat to the browser. Off: a widened sample while the browser "
                "renders slowly (software WebGL).",
            )
            self.budget_note = gui.add_markdown("", visible=False)
            self.view_colour = gui.add_checkbox(
                "View-dependent colour",
                app.view_colour,
                disabled=app.state.scene.sh.shape[1] <= 1,
                hint="Evaluate each splat's spherical harmonics toward the camera when it rests "
                "(shiny surfaces change with the view). Off: base colours.",
            )
            self.reset_button = gui.add_button("Reset view")
            self.up_note = gui.add_markdown("")
            self.align = AlignUI(app)
            self.bookmarks = BookmarksUI(app)
        self.show_up()
        self.display.on_update(
            app.action("Display")(lambda _e: self.set_display(self.display.value))
        )
        self.overlay_size.on_update(
            app.action("Overlay size")(
                lambda _e: app.set_overlay_size(int(self.overlay_size.value))
            )
        )
        self.show_cameras.on_update(
            app.action("Cameras")(lambda _e: self.set_cameras_visible(self.show_cameras.value))
        )
        self.reset_button.on_click(app.action("Reset view")(lambda e: app.reset_view(e.client)))
        self.all_splats.on_update(app.action("Every splat")(lambda _e: self._on_all_splats()))
        self.view_colour.on_update(
            app.action("View-dependent colour")(
                lambda _e: app.set_view_colour(bool(self.view_colour.value))
            )
        )
        self.sync_budget()
        self._alignment = self._scene_alignment()
        self.frustums = self._add_frustums() if app.cameras else []
        app.state.on_change(self._on_state)
        if self.frustums and not self.show_cameras.value:
            self.set_cameras_visible(False)
        self.sync_kind()

    def show_up(self) -> None:
        """Write the up read-out (and point the dropdown at it)."""
        self.up_note.content = self.align.note()

    def sync_kind(self) -> None:
        """Offer the displays of what is shown (a NeRF's, or the Gaussians'); Gaussian-only
        widgets hide while a NeRF is shown."""
        nerf = self.app.nerf is not None
        options = tuple(NERF_DISPLAYS if nerf else DISPLAYS)
        if tuple(self.display.options) != options:
            self.display.options = options
            self.display.value = "Colour"
        for w in (self.overlay_size, self.all_splats, self.view_colour):
            w.visible = not nerf
        if nerf:
            self.budget_note.visible = False
        else:
            self.sync_budget()

    def set_display(self, label: str) -> None:
        display = self.app.nerf_display
        if display is not None:
            if label not in NERF_DISPLAYS:
                raise ValueError(
                    f"unknown display {label!r}; expected one of {tuple(NERF_DISPLAYS)}"
                )
            try:
                display.set_mode(NERF_DISPLAYS[label])
            except ValueError:
                self.sync_display()
                raise
            if self.display.value != label:
                self.display.value = label
            return
        if label not in DISPLAYS:
            raise ValueError(f"unknown display {label!r}; expected one of {tuple(DISPLAYS)}")
        color_mode, overlay = DISPLAYS[label]
        snap = self.app.state.snapshot()
        if "values" in (color_mode, overlay) and snap.values is None:
            self.sync_display()
            raise ValueError("there are no per-Gaussian values to show yet")
        self.app.state.set_color_mode(color_mode)
        self.app.set_overlay(overlay)
        if self.display.value != label:
            self.display.value = label

    def sync_display(self) -> None:
        """Point the dropdown at what is actually shown (after a fallback)."""
        display = self.app.nerf_display
        if display is not None:
            for label, mode in NERF_DISPLAYS.items():
                if mode == display.mode and self.display.value != label:
                    self.display.value = label
            return
        mode, overlay = self.app.state.color_mode, self.app.overlay_mode
        for label, pair in DISPLAYS.items():
            if pair == (mode, overlay):
                if self.display.value != label:
                    self.display.value = label
                return

    # ------------------------------------------------------------------ splat budget
    def _on_all_splats(self) -> None:
        want_all = bool(self.all_splats.value)
        if want_all and self.app.splat_budget is not None:
            self.app.set_splat_budget(None)
        elif not want_all and self.app.splat_budget is None:
            self.app.set_splat_budget(None, auto=True)

    def sync_budget(self) -> None:
        if self.app.nerf is not None:
            return
        budget, n = self.app.splat_budget, len(self.app.state.scene)
        thinned = budget is not None and n > budget
        if thinned:
            self.budget_note.content = (
                f"Showing {budget:,} of {n:,} splats, those that matter most for the view "
                "(full detail where the camera rests): this browser renders slowly (software "
                "WebGL?). Tick *Every splat* to send all."
            )
        self.budget_note.visible = thinned
        if bool(self.all_splats.value) != (budget is None):
            self.all_splats.value = budget is None

    # ------------------------------------------------------------------ dataset cameras
    def _add_frustums(self) -> list:
        cams = self.app.cameras
        keep = np.unique(
            np.linspace(0, len(cams) - 1, min(len(cams), self.app.config.max_cameras))
            .round()
            .astype(int)
        )
        size = 0.04 * self.app.scene_extent()
        handles = []
        for i in keep:
            cam = self.aligned(cams[int(i)])
            wxyz, position = pose_of(cam)
            h = self.app.server.scene.add_camera_frustum(
                f"{CAMERAS_NODE}/{int(i):04d}",
                fov=vertical_fov(cam),
                aspect=cam.width / cam.height,
                scale=size,
                thickness=1.5,
                thickness_units="screen",  # thin even for the frustum the view starts in
                color=(60, 90, 200),
                wxyz=wxyz,
                position=position,
                cast_shadow=False,
                receive_shadow=False,
            )
            h.on_click(self._jump_to(int(i)))
            handles.append((int(i), h))
        return handles

    def _jump_to(self, i: int):
        return self.app.action("Look through camera")(
            lambda e: self.app.look_through(e.client, self.aligned(self.app.cameras[i]))
        )

    # ------------------------------------------------------------------ alignment
    def _scene_alignment(self) -> np.ndarray | None:
        """[4,4] the scene's `meta["alignment"]` (a level / rescale since the file), or None."""
        return editing.scene_alignment(self.app.state.scene)

    def aligned(self, cam: Camera) -> Camera:
        """A dataset camera moved by the scene's alignment (as the splats were)."""
        T = self._alignment
        return cam if T is None else editing.align_camera(cam, T)

    def _on_state(self, kind: str) -> None:
        if kind not in (SCENE, PROJECT):
            return
        self.sync_budget()  # the scene's size changed (an insert, a delete, an undo)
        self.view_colour.disabled = self.app.state.scene.sh.shape[1] <= 1
        T = self._scene_alignment()
        same = (T is None and self._alignment is None) or (
            T is not None and self._alignment is not None and np.allclose(T, self._alignment)
        )
        if same:
            return
        self._alignment = T
        for i, h in self.frustums:
            wxyz, position = pose_of(self.aligned(self.app.cameras[i]))
            h.wxyz, h.position = wxyz, position

    def set_cameras_visible(self, show: bool) -> None:
        for _i, h in self.frustums:
            h.visible = show
