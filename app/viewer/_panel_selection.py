"""The "Selection" folder: model-free selection of Gaussians.

Tools: click to pick (the nearest Gaussian the ray hits, optionally with a brush radius around
it), drag a rectangle (visible Gaussians only, or the whole column "through" the scene), or a box
/ sphere volume moved by a transform gizmo. Shift adds to the selection, Ctrl/Cmd subtracts;
without a modifier the "Combine" setting applies. All the selection math is `editing`'s.
"Named selections" (`_panel_marks`) keeps selections under names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import viser

import editing
from fields import Camera
from fields.scene import quat_to_rotmat

from ._camera import click_pixel, client_camera
from ._panel_marks import NamedSelectionsUI
from ._state import NothingSelectedError, shown_mask

if TYPE_CHECKING:
    from ._app import ViewerApp

TOOLS = ("Navigate", "Click", "Rectangle")
COMBINE = ("replace", "add", "subtract", "intersect")
SHAPES = ("box", "sphere")
VOLUME_NODE = "/selection_volume"
_MODIFIER_MODE = {"shift": "add", "cmd/ctrl": "subtract"}
_VOLUME_COLOR = (255, 120, 0)
# A visible-only rectangle hints at what it left behind when that is this many Gaussians and
# this share of the selection.
HIDDEN_HINT_MIN = 50
HIDDEN_HINT_SHARE = 0.2


def scene_extent(scene) -> float:
    """Diagonal of the robust bounding box (1.0 for an empty scene)."""
    if len(scene) == 0:
        return 1.0
    lo, hi = scene.bounds(quantile=0.02 if len(scene) > 100 else 0.0)
    return max(float((hi - lo).norm()), 1e-3)


class SelectionPanel:
    def __init__(self, app: ViewerApp) -> None:
        self.app = app
        gui = app.server.gui
        extent = scene_extent(app.state.scene)
        self.extent = extent
        self._tool = "Navigate"
        self.last_hidden = 0  # Gaussians a visible-only rectangle left behind the selected ones
        with gui.add_folder("Selection") as self.folder:
            self.tool = gui.add_dropdown(
                "Tool",
                TOOLS,
                initial_value="Navigate",
                hint="Click: pick Gaussians. Rectangle: drag a box. Shift adds, Ctrl/Cmd subtracts.",
            )
            self.visible_only = gui.add_checkbox(
                "Visible only",
                True,
                hint="Rectangle selects only what you see; off selects through the scene.",
            )
            self.combine = gui.add_dropdown(
                "Combine",
                COMBINE,
                initial_value="replace",
                hint="How a new selection meets the old one.",
            )
            self.brush = gui.add_number(
                "Click brush",
                0.0,
                min=0.0,
                step=_nice_step(extent),
                hint="Also select Gaussians within this distance of the picked one (scene units).",
            )
            self.all_button = gui.add_button("Select all")
            self.invert_button = gui.add_button("Invert")
            self.clear_button = gui.add_button("Clear")
            self.grow_distance = gui.add_number(
                "Grow by",
                round(0.01 * extent, 4),
                step=_nice_step(extent),
                hint="Grow (positive) or shrink (negative) the selection by a distance.",
            )
            self.grow_button = gui.add_button("Grow / shrink")
            with gui.add_folder("Volume", expand_by_default=False):
                self.shape = gui.add_dropdown("Shape", SHAPES, initial_value="box")
                self.show_volume = gui.add_checkbox("Show volume gizmo", False)
                self.box_size = gui.add_vector3(
                    "Box size", (0.3 * extent,) * 3, min=(1e-4,) * 3, step=_nice_step(extent)
                )
                self.radius = gui.add_number(
                    "Sphere radius", 0.15 * extent, min=1e-4, step=_nice_step(extent)
                )
                self.volume_button = gui.add_button("Select inside")
            self.named = NamedSelectionsUI(app)

        self.tool.on_update(app.action("Selection tool")(lambda _e: self.set_tool(self.tool.value)))
        self.combine.on_update(
            app.action("Combine")(lambda _e: self.set_combine(self.combine.value))
        )
        self.all_button.on_click(app.action("Select all")(lambda _e: app.state.select_all()))
        self.invert_button.on_click(app.action("Invert")(lambda _e: app.state.invert_selection()))
        self.clear_button.on_click(app.action("Clear")(lambda _e: app.state.clear_selection()))
        self.grow_button.on_click(
            app.action("Grow")(lambda _e: self.grow(float(self.grow_distance.value)))
        )
        self.show_volume.on_update(
            app.action("Volume")(lambda _e: self.set_volume_visible(self.show_volume.value))
        )
        for h in (self.shape, self.box_size, self.radius):
            h.on_update(app.action("Volume")(lambda _e: self._update_volume_mesh()))
        self.volume_button.on_click(app.action("Select inside")(lambda _e: self.select_volume()))

        self._gizmo: viser.TransformControlsHandle | None = None
        self._volume_mesh = None

    # ------------------------------------------------------------------ tools
    @property
    def active_tool(self) -> str:
        return self._tool

    def set_combine(self, mode: str) -> None:
        """How new selections meet the old one, for every panel (`ViewerState.combine_mode`)."""
        self.app.state.combine_mode = mode
        if self.combine.value != mode:
            self.combine.value = mode

    def set_tool(self, tool: str) -> None:
        """Register the scene pointer callbacks of `tool` (server-wide: every tab shares it);
        a tool other than Navigate claims the pointer from whichever panel held it."""
        if tool not in TOOLS:
            raise ValueError(f"unknown tool {tool!r}; expected one of {TOOLS}")
        pointer = self.app.state.pointer
        if tool != "Navigate":
            pointer.claim("selection", lambda: self.set_tool("Navigate"))
        else:
            pointer.release("selection")
        scene_api = self.app.server.scene
        scene_api.remove_click_callback(self._on_click)
        scene_api.remove_rect_select_callback(self._on_rect)
        if tool != "Navigate":
            for modifier in (None, "shift", "cmd/ctrl"):
                scene_api.on_click(modifier=modifier)(self._on_click)
                if tool == "Rectangle":
                    scene_api.on_rect_select(modifier=modifier)(self._on_rect)
        self._tool = tool
        if self.tool.value != tool:
            self.tool.value = tool

    def _mode(self, modifier: str | None) -> str:
        return _MODIFIER_MODE.get(modifier or "", self.app.state.combine_mode)

    def _on_click(self, event: viser.SceneClickEvent) -> None:
        @self.app.action("Pick")
        def run(_e: object) -> None:
            self.pick(*click_pixel(event), self._mode(event.modifier))

        run(event)

    def _on_rect(self, event: viser.SceneRectSelectEvent) -> None:
        @self.app.action("Rectangle select")
        def run(_e: object) -> None:
            cam = client_camera(event.client.camera)
            (u0, v0), (u1, v1) = event.screen_min, event.screen_max
            rect = (u0 * cam.width, v0 * cam.height, u1 * cam.width, v1 * cam.height)
            self.select_rect(
                cam,
                rect,
                self._mode(event.modifier),
                through=not self.visible_only.value,
                client=event.client,
            )

        run(event)

    # ------------------------------------------------------------------ actions (also for tests)
    def pick(self, camera: Camera, u: float, v: float, mode: str = "replace") -> int | None:
        """Pick the Gaussian under pixel (u, v) of `camera` and combine it into the selection.

        Returns its index, or None when the ray hits nothing (a "replace" click on empty space
        clears the selection, as in every editor)."""
        brush = float(self.brush.value)
        hit: list[int | None] = [None]

        def compute(scene, _sel):
            idx = editing.pick(scene, camera, u, v)
            hit[0] = idx
            mask = torch.zeros(len(scene), dtype=torch.bool)
            if idx is None:
                return mask
            if brush > 0:
                mask = editing.select_sphere(scene, scene.means[idx], brush).cpu()
                hidden = scene.extras.get("hidden")
                if hidden is not None:
                    mask &= ~hidden.cpu().bool()
            mask[idx] = True
            return mask

        self.app.state.select_with(compute, mode)
        return hit[0]

    def select_rect(
        self,
        camera: Camera,
        rect: tuple[float, float, float, float],  # pixel coords (u0, v0, u1, v1) in `camera`
        mode: str = "replace",
        *,
        through: bool = False,
        client: viser.ClientHandle | None = None,
    ) -> int:
        """Select the Gaussians in the rectangle (visible ones only unless `through`). When
        "Visible only" leaves many Gaussians behind the selected ones in the rectangle (an
        object's far side), the browser that dragged gets a hint; `self.last_hidden` counts
        them."""
        hidden = [0]

        def compute(scene, _sel):
            mask = editing.select_rect(scene, camera, rect, through=through).cpu()
            if not through:
                column = editing.select_rect(scene, camera, rect, through=True).cpu()
                hidden[0] = int((column & ~mask).sum())
            return mask

        n = self.app.state.select_with(compute, mode)
        self.last_hidden = hidden[0]
        chosen = int(self.app.state.n_selected)
        if hidden[0] > max(HIDDEN_HINT_MIN, HIDDEN_HINT_SHARE * max(chosen, 1)):
            self.app.notify(
                "Visible only",
                f"{hidden[0]:,} more Gaussians lie behind the selected ones in the rectangle "
                "(the far side). Untick Visible only to select through, or Grow / shrink.",
                client=client,
                seconds=8.0,
            )
        return n

    def grow(self, distance: float) -> None:
        """Grow or shrink the selection by `distance`, as a job (a KD-tree over N points)."""
        state = self.app.state
        if distance == 0:
            return
        snap = state.snapshot()
        if snap.n_selected == 0:
            raise NothingSelectedError("Grow: nothing is selected")

        def job(ctx) -> None:
            ctx.progress(0.1, "building neighbourhoods")
            mask = editing.grow(snap.scene, snap.selection, distance).cpu()
            ctx.check()

            def grown(scene, _sel):
                # Checked under the state lock; listeners run after it is released.
                if scene is not snap.scene:
                    raise RuntimeError("the scene changed while growing; grow again")
                return mask

            n = state.select_with(grown, "replace")
            ctx.progress(1.0, f"{n:,} selected")

        self.app.jobs.submit("Grow selection" if distance > 0 else "Shrink selection", job)

    # ------------------------------------------------------------------ volume
    def volume_pose(self) -> np.ndarray:  # [4,4] T_world_volume
        T = np.eye(4)
        if self._gizmo is not None:
            T[:3, :3] = _wxyz_to_R(self._gizmo.wxyz)
            T[:3, 3] = self._gizmo.position
        return T

    def set_volume_visible(self, show: bool) -> None:
        if show and self._gizmo is None:
            snap = self.app.state.snapshot()
            scene = snap.scene
            if snap.n_selected:
                center = scene.means[snap.selection].mean(0)
            elif len(scene):
                lo, hi = scene.bounds(quantile=0.02 if len(scene) > 100 else 0.0)
                center = (lo + hi) / 2
            else:
                center = torch.zeros(3)
            self._gizmo = self.app.server.scene.add_transform_controls(
                VOLUME_NODE,
                scale=0.25 * self.extent,
                position=tuple(float(x) for x in center),
                depth_test=False,
            )
            self._update_volume_mesh()
        elif not show and self._gizmo is not None:
            self._gizmo.remove()
            self._gizmo = None
            self._volume_mesh = None
        if self.show_volume.value != show:
            self.show_volume.value = show

    def _update_volume_mesh(self) -> None:
        if self._gizmo is None:
            return
        scene_api = self.app.server.scene
        if self._volume_mesh is not None:
            self._volume_mesh.remove()
        if self.shape.value == "box":
            self._volume_mesh = scene_api.add_box(
                f"{VOLUME_NODE}/box",
                color=_VOLUME_COLOR,
                dimensions=tuple(float(x) for x in self.box_size.value),
                wireframe=True,
                cast_shadow=False,
                receive_shadow=False,
            )
        else:
            self._volume_mesh = scene_api.add_icosphere(
                f"{VOLUME_NODE}/sphere",
                radius=float(self.radius.value),
                color=_VOLUME_COLOR,
                wireframe=True,
                cast_shadow=False,
                receive_shadow=False,
            )

    def select_volume(self, mode: str | None = None) -> int:
        """Select Gaussians inside the volume (shown at the gizmo's pose)."""
        if self._gizmo is None:
            self.set_volume_visible(True)
        T = torch.as_tensor(self.volume_pose())
        mode = mode or self.app.state.combine_mode
        if self.shape.value == "box":
            half = torch.as_tensor(np.asarray(self.box_size.value, dtype=np.float64) / 2)
            return self.app.state.select_with(
                lambda scene, _sel: editing.select_box(scene, T, half).cpu() & shown_mask(scene),
                mode,
            )
        radius = float(self.radius.value)
        return self.app.state.select_with(
            lambda scene, _sel: (
                editing.select_sphere(scene, T[:3, 3], radius).cpu() & shown_mask(scene)
            ),
            mode,
        )


def _wxyz_to_R(wxyz) -> np.ndarray:
    return quat_to_rotmat(torch.as_tensor(np.asarray(wxyz, dtype=np.float64))).numpy()


def _nice_step(extent: float) -> float:
    """A round step about a thousandth of the scene's size."""
    return float(10.0 ** np.floor(np.log10(max(extent, 1e-6) / 1000.0)))
