"""The "Edit" folder: ops on the selection — delete, remove (fill), isolate / show all, recolour,
move / rotate / scale with a gizmo, duplicate. Each op is a pure function from `editing` recorded
as one step of the undo history (`ViewerState.apply`); "Remove (fill)" runs as a job
(`editing.removal.remove_object`: delete the object, fill the surface it hid)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import viser

import editing
from editing.removal import Removal, RemovalConfig, remove_object
from fields.scene import quat_to_rotmat

from ._jobs import Job, JobContext
from ._state import SCENE, SELECTION, NothingSelectedError

if TYPE_CHECKING:
    from ._app import ViewerApp

GIZMO_NODE = "/edit_gizmo"
RECOLOR_MODES = ("replace", "tint")


def _pose_matrix(wxyz, position) -> np.ndarray:  # [4,4]
    T = np.eye(4)
    T[:3, :3] = quat_to_rotmat(torch.as_tensor(np.asarray(wxyz, dtype=np.float64))).numpy()
    T[:3, 3] = np.asarray(position, dtype=np.float64)
    return T


class EditPanel:
    def __init__(self, app: ViewerApp) -> None:
        self.app = app
        gui = app.server.gui
        with gui.add_folder("Edit") as self.folder:
            self.delete_button = gui.add_button("Delete", color="red")
            self.remove_button = gui.add_button(
                "Remove (fill)",
                color="red",
                hint="Delete the selected object and fill the surface it stood on or hid with "
                "new Gaussians that continue the surrounding texture (no model weights).",
            )
            self.isolate_button = gui.add_button("Isolate", hint="Hide everything else")
            self.unhide_button = gui.add_button("Show all")
            self.duplicate_button = gui.add_button(
                "Duplicate", hint="Copies are appended and selected"
            )
            with gui.add_folder("Recolour", expand_by_default=False):
                self.color = gui.add_rgb("Colour", (230, 60, 40))
                self.color_mode = gui.add_dropdown("Mode", RECOLOR_MODES, initial_value="replace")
                self.strength = gui.add_slider("Strength", 0.0, 1.0, 0.05, 1.0)
                self.recolor_button = gui.add_button("Recolour")
            with gui.add_folder("Transform", expand_by_default=False):
                self.show_gizmo = gui.add_checkbox(
                    "Gizmo", False, hint="Drag the gizmo; the move is applied when you let go."
                )
                self.scale_factor = gui.add_number("Scale factor", 1.25, min=1e-3, step=0.05)
                self.scale_button = gui.add_button("Scale about gizmo")

        self.delete_button.on_click(app.action("Delete")(lambda _e: self.delete()))
        self.remove_button.on_click(app.action("Remove (fill)")(lambda _e: self.remove_fill()))
        self.last_removal: Removal | None = None
        self.isolate_button.on_click(app.action("Isolate")(lambda _e: self.isolate()))
        self.unhide_button.on_click(app.action("Show all")(lambda _e: self.unhide()))
        self.duplicate_button.on_click(app.action("Duplicate")(lambda _e: self.duplicate()))
        self.recolor_button.on_click(
            app.action("Recolour")(
                lambda _e: self.recolor(
                    tuple(c / 255.0 for c in self.color.value),
                    str(self.color_mode.value),
                    float(self.strength.value),
                )
            )
        )
        self.show_gizmo.on_update(
            app.action("Gizmo")(lambda _e: self.set_gizmo(self.show_gizmo.value))
        )
        self.scale_button.on_click(
            app.action("Scale")(lambda _e: self.scale(float(self.scale_factor.value)))
        )
        self._gizmo: viser.TransformControlsHandle | None = None
        self._gizmo_start = np.eye(4)  # pose of the gizmo when the selection last moved
        app.state.on_change(self._on_state_change)

    # ------------------------------------------------------------------ ops
    def delete(self) -> int:
        """Delete the selection; returns how many Gaussians remain."""
        n = self.app.state.n_selected

        def op(scene, sel):
            new = editing.delete(scene, sel)
            self.app.derive(scene, new, index=~sel)
            return new

        return len(self.app.state.apply(f"delete {n:,}", op))

    def remove_fill(self, config: RemovalConfig | None = None) -> Job:
        """Remove the selection and fill its hole, as a job; the result lands as one history
        step (nothing selected, so the fill shows as it looks) unless the scene changed
        meanwhile."""
        snap = self.app.state.snapshot()
        if snap.n_selected == 0:
            raise NothingSelectedError("Remove (fill): nothing is selected")
        scene, sel = snap.scene, snap.selection.clone()
        config = config or RemovalConfig(up=self.app.up)
        n = int(sel.sum())

        def job(ctx: JobContext) -> Removal:
            ctx.progress(0.05, f"removing {n:,} Gaussians and finding the surfaces they hid")
            result = remove_object(scene, sel, config, should_stop=ctx.cancelled)
            ctx.check()
            fill = result.fill.cpu()

            def op(current, _sel):
                if current is not scene:
                    raise RuntimeError("the scene changed meanwhile; remove again")
                # Kept rows, then the fill: new Gaussians (-1), outside every named selection.
                gone = result.mask  # the selection and the unseen base it stood on
                rows = torch.cat([(~gone).nonzero().squeeze(1), torch.full((int(fill.sum()),), -1)])
                self.app.derive(current, result.scene, index=rows, changed=fill)
                return result.scene, torch.zeros(len(result.scene), dtype=torch.bool)

            self.app.state.apply(f"remove (fill) {result.removed:,}", op)
            self.last_removal = result
            kinds = ", ".join(f"{s['kind']} {s['count']:,}" for s in result.surfaces)
            self.app.notify(
                "Remove (fill)",
                f"Removed {result.removed:,} Gaussians, filled {int(fill.sum()):,} "
                f"({kinds or 'nothing to fill'}). Undo brings the object back.",
                seconds=6.0,
            )
            return result

        return self.app.jobs.submit(f"Remove (fill) {n:,}", job)

    def isolate(self) -> None:
        n = self.app.state.n_selected
        self.app.state.apply(f"isolate {n:,}", editing.isolate)

    def unhide(self) -> None:
        if "hidden" not in self.app.state.scene.extras:
            self.app.notify("Show all", "Nothing is hidden.", seconds=3.0)
            return
        self.app.state.apply("show all", lambda s, _sel: editing.unhide(s), needs_selection=False)

    def recolor(
        self, rgb: tuple[float, float, float], mode: str = "replace", strength: float = 1.0
    ) -> None:
        n = self.app.state.n_selected
        self.app.state.apply(
            f"recolour {n:,} ({mode})",
            lambda s, sel: editing.recolor(s, sel, torch.tensor(rgb), mode=mode, strength=strength),
        )

    def duplicate(self, T: torch.Tensor | None = None) -> None:
        """Append copies of the selection (optionally moved by `T`) and select the copies."""
        n = self.app.state.n_selected

        def op(scene, sel):
            new = editing.duplicate(scene, sel, T)
            copies = torch.zeros(len(new), dtype=torch.bool)
            copies[len(scene) :] = True
            rows = torch.cat([torch.arange(len(scene)), sel.nonzero().squeeze(1)])
            self.app.derive(scene, new, index=rows, changed=copies if T is not None else None)
            return new, copies

        self.app.state.apply(f"duplicate {n:,}", op)

    def transform(self, T: np.ndarray | torch.Tensor, name: str = "move") -> None:
        """Apply the world-frame similarity `T` [4,4] to the selection."""
        T = torch.as_tensor(np.asarray(T, dtype=np.float64))
        n = self.app.state.n_selected

        def op(scene, sel):
            new = editing.transform(scene, sel, T)
            self.app.derive(scene, new, changed=sel)
            return new

        self.app.state.apply(f"{name} {n:,}", op)

    def scale(self, factor: float) -> None:
        if factor <= 0:
            raise ValueError("the scale factor must be positive")
        pivot = self._pivot()
        self.transform(editing.pivot_transform(torch.as_tensor(pivot), scale=factor), "scale")

    # ------------------------------------------------------------------ gizmo
    def _pivot(self) -> np.ndarray:
        if self._gizmo is not None:
            return np.asarray(self._gizmo.position, dtype=np.float64)
        snap = self.app.state.snapshot()
        if snap.n_selected == 0:
            return np.zeros(3)
        return snap.scene.means[snap.selection].double().mean(0).numpy()

    def set_gizmo(self, show: bool) -> None:
        if show and self._gizmo is None:
            from ._panel_selection import scene_extent

            pivot = self._pivot()
            self._gizmo = self.app.server.scene.add_transform_controls(
                GIZMO_NODE,
                scale=0.2 * scene_extent(self.app.state.scene),
                position=tuple(float(x) for x in pivot),
                depth_test=False,
            )
            self._gizmo_start = _pose_matrix(self._gizmo.wxyz, self._gizmo.position)
            apply = self.app.action("Move")(lambda _e: self._apply_gizmo())

            @self._gizmo.on_update
            def _(event: viser.TransformControlsEvent) -> None:
                if event.phase == "end":  # one history step per drag, applied at release
                    apply(event)
        elif not show and self._gizmo is not None:
            self._gizmo.remove()
            self._gizmo = None
        if self.show_gizmo.value != show:
            self.show_gizmo.value = show

    def _apply_gizmo(self) -> None:
        if self._gizmo is None:
            return
        now = _pose_matrix(self._gizmo.wxyz, self._gizmo.position)
        T = now @ np.linalg.inv(self._gizmo_start)
        if np.allclose(T, np.eye(4), atol=1e-7):
            return
        self._gizmo_start = now
        self.transform(T, "move")

    def _recenter_gizmo(self) -> None:
        if self._gizmo is None:
            return
        snap = self.app.state.snapshot()
        if snap.n_selected == 0:
            return
        c = snap.scene.means[snap.selection].double().mean(0).numpy()
        if np.allclose(c, self._gizmo.position, atol=1e-6):
            return
        self._gizmo.position = tuple(float(x) for x in c)
        self._gizmo.wxyz = (1.0, 0.0, 0.0, 0.0)
        self._gizmo_start = _pose_matrix(self._gizmo.wxyz, self._gizmo.position)

    def _on_state_change(self, kind: str) -> None:
        # Keep the gizmo on the selection it moves: after a move the centroid already sits at
        # the gizmo; after a new selection, an undo or a redo it jumps there.
        if kind in (SCENE, SELECTION):
            self._recenter_gizmo()
