"""The "Grasps" folder: parallel-jaw grasp candidates on one object, drawn as gripper meshes.

Target: the selection (any selection tool), a language query (the Language query panel's field
and text encoder), or a click on the object: the clicked Gaussian grown to its object by feature
affinity when features are loaded, else by geometry (`editing.grasp.object_at`: the Gaussians
linked to it once the surface it stands on is cut away). "Find grasps" runs `editing.plan_grasps` as a job; the top-k
appear as two-finger gripper meshes coloured by score (a legend maps the colours: red the lowest
shown, green the best). One grasp is highlighted at a time (the best first): "Next" / "Previous"
or a click on a gripper choose it and show its score components; the others are dimmed, or
hidden unless "Show all grasps" is on. "Export JSON" writes what `scenelab grasp` writes.
"""

from __future__ import annotations

import colorsys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import viser
from torch import Tensor

import editing
from editing.grasp import (
    GraspConfig,
    GraspResult,
    GripperConfig,
    gripper_mesh,
    object_at,
    save_grasps,
)
from fields import GaussianScene

from .._paths import confine, display
from ._camera import click_pixel
from ._jobs import JobContext
from ._panel_file import confirm_overwrite
from ._state import NothingSelectedError

if TYPE_CHECKING:
    from ._app import ViewerApp

TARGETS = ("Selection", "Query", "Click")
GRASPS_NODE = "/grasps"
DIM_OPACITY = 0.25  # the grasps not chosen, when all are shown


@dataclass
class _Shown:
    scene: GaussianScene
    target: Tensor  # [N] bool
    result: GraspResult
    gripper: GripperConfig
    handles: list[viser.MeshHandle]


def _ramp_rgb(t: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(float(t) / 3.0, 0.85, 0.95)
    return round(r * 255), round(g * 255), round(b * 255)


def score_colors(scores: np.ndarray) -> np.ndarray:
    """[K] scores -> [K,3] uint8: hue from red (lowest) to green (highest) over the shown range."""
    s = np.asarray(scores, dtype=np.float64)
    span = float(s.max() - s.min()) if s.size else 0.0
    t = (s - s.min()) / span if span > 1e-12 else np.ones_like(s)
    return np.asarray([_ramp_rgb(x) for x in t], dtype=np.uint8).reshape(-1, 3)


def legend_html(scores: np.ndarray) -> str:
    """The colour legend of `score_colors` for these scores: a red-to-green bar labelled with
    the lowest and highest score shown (empty without scores)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        return ""
    stops = ", ".join("rgb({},{},{})".format(*_ramp_rgb(t)) for t in np.linspace(0, 1, 7))
    lo, hi = float(s.min()), float(s.max())
    return (
        '<div style="font-size:0.8em;padding:2px 0">'
        f'<div style="height:10px;border-radius:3px;background:linear-gradient(to right, {stops})">'
        "</div>"
        '<div style="display:flex;justify-content:space-between">'
        f"<span>{lo:.2f}</span><span>grasp quality</span><span>{hi:.2f}</span></div></div>"
    )


class GraspPanel:
    def __init__(self, app: ViewerApp) -> None:
        self.app = app
        self._lock = threading.Lock()
        self.shown: _Shown | None = None
        self.chosen: int | None = None
        self._clicking = False
        self._syncing = False
        defaults = GripperConfig()
        gui = app.server.gui
        with gui.add_folder("Grasps", expand_by_default=False) as self.folder:
            self.target = gui.add_dropdown(
                "Target",
                TARGETS,
                initial_value="Selection",
                hint="The object: the selection, a language query, or a click on it.",
            )
            self.text = gui.add_text("Object", "", hint="What to grasp (target Query).")
            self.top_k = gui.add_slider("Top k", 1, 50, 1, 10)
            self.opening = gui.add_slider(
                "Max opening (cm)",
                1.0,
                20.0,
                0.5,
                round(defaults.max_opening * 100, 1),
                hint="The gripper's largest finger gap.",
            )
            self.friction = gui.add_slider(
                "Friction", 0.05, 1.5, 0.05, round(defaults.friction, 2), hint="Coulomb μ."
            )
            self.find_button = gui.add_button("Find grasps")
            self.legend = gui.add_html("")
            self.previous_button = gui.add_button(
                "Previous", hint="Highlight the next better grasp."
            )
            self.next_button = gui.add_button("Next", hint="Highlight the next worse grasp.")
            self.show_all = gui.add_checkbox(
                "Show all grasps", False, hint="Draw every grasp (dimmed), not only the chosen one."
            )
            self.details = gui.add_markdown("")
            self.path = gui.add_text("Export as", "grasps.json", hint=f"A .json inside {app.root}")
            self.export_button = gui.add_button("Export JSON")
            self.clear_button = gui.add_button("Clear grasps")
        self.find_button.on_click(app.action("Find grasps")(lambda _e: self.find()))
        self.export_button.on_click(
            app.action("Export grasps")(lambda e: self.export(self.path.value, client=e.client))
        )
        self.clear_button.on_click(app.action("Clear grasps")(lambda _e: self.clear()))
        self.next_button.on_click(app.action("Next grasp")(lambda _e: self.step(1)))
        self.previous_button.on_click(app.action("Previous grasp")(lambda _e: self.step(-1)))
        self.show_all.on_update(app.action("Show all grasps")(lambda _e: self._highlight()))
        self.target.on_update(app.action("Grasp target")(lambda _e: self._on_target()))

    # ------------------------------------------------------------------ target
    def gripper(self) -> GripperConfig:
        return GripperConfig(
            max_opening=float(self.opening.value) / 100.0, friction=float(self.friction.value)
        )

    def _on_target(self) -> None:
        if not self._syncing:
            self.set_target(str(self.target.value))

    def set_target(self, kind: str) -> None:
        """Choose the target kind (`TARGETS`); "Click" takes the scene's clicks."""
        if kind not in TARGETS:
            raise ValueError(f"unknown grasp target {kind!r}; expected one of {TARGETS}")
        self._set_dropdown(kind)
        self._set_clicking(kind == "Click")
        if kind == "Click":
            self.details.content = "Click the object to grasp."

    def _set_dropdown(self, kind: str) -> None:
        self._syncing = True
        try:
            if self.target.value != kind:
                self.target.value = kind
        finally:
            self._syncing = False

    def _set_clicking(self, on: bool) -> None:
        pointer = self.app.state.pointer
        if on:
            pointer.claim("grasp", self._pointer_lost)  # one owner of scene clicks at a time
        else:
            pointer.release("grasp")
        scene_api = self.app.server.scene
        scene_api.remove_click_callback(self._on_click)
        self._clicking = on
        if on:
            scene_api.on_click()(self._on_click)

    def _pointer_lost(self) -> None:
        # Another panel or a selection tool took the pointer.
        self.app.server.scene.remove_click_callback(self._on_click)
        self._clicking = False
        self._set_dropdown("Selection")

    def _on_click(self, event: viser.SceneClickEvent) -> None:
        @self.app.action("Grasp target")
        def run(_e: object) -> None:
            self.click(*click_pixel(event))

        run(event)

    def click(self, camera, u: float, v: float):
        """Target the object under pixel (u, v) of `camera` and find its grasps (a job)."""
        scene = self.app.state.scene
        i = editing.pick(scene, camera, u, v)
        if i is None:
            raise ValueError("nothing under the click")
        return self.find(target=self._grow_from(scene, i))

    def _grow_from(self, scene: GaussianScene, index: int) -> Tensor:
        """[N] bool: the clicked Gaussian's object, by feature affinity when features are
        loaded, else by geometry."""
        field = self.app.state.current_field()
        if field is None:
            return object_at(scene, index, up=np.asarray(self.app.up, dtype=np.float64))
        from fields.features import grow_by_affinity

        seed = torch.zeros(len(scene), dtype=torch.bool)
        seed[index] = True
        return grow_by_affinity(field.level(0), seed, 0.5, means=scene.means)

    def _target_mask(self, scene: GaussianScene, selection: Tensor) -> Tensor:
        kind = self.target.value
        if kind == "Query":
            tq = self.app.state.text_query()
            if tq is None:
                raise ValueError("no features with a language head: lift or load them first")
            res = tq.query(str(self.text.value))
            if not res.confident:
                raise ValueError(res.message)
            return res.mask
        if not bool(selection.any()):
            raise NothingSelectedError("Grasps: select the object first")
        return selection

    # ------------------------------------------------------------------ planning
    def find(self, target: Tensor | None = None):
        """Plan grasps on the target as a job (returned); the meshes replace any shown."""
        snap = self.app.state.snapshot()
        gripper = self.gripper()
        config = GraspConfig(top_k=int(self.top_k.value))
        up = np.asarray(self.app.up, dtype=np.float64)
        if target is None and self.target.value == "Selection":
            target = self._target_mask(snap.scene, snap.selection)

        def job(ctx: JobContext) -> GraspResult:
            nonlocal target
            if target is None:
                ctx.progress(0.05, "finding the object")
                target = self._target_mask(snap.scene, snap.selection)
            if not bool(target.any()):
                raise ValueError("the target is empty: nothing to grasp")
            ctx.check()
            ctx.progress(0.2, f"sampling grasps on {int(target.sum()):,} Gaussians")
            result = editing.plan_grasps(snap.scene, target, gripper, config, up=up)
            ctx.check()
            self._show(snap.scene, target, result, gripper)
            ctx.progress(1.0, result.message)
            return result

        return self.app.jobs.submit("Find grasps", job)

    def _show(
        self, scene: GaussianScene, target: Tensor, result: GraspResult, gripper: GripperConfig
    ) -> None:
        with self._lock:
            self._remove_meshes()
            colors = score_colors(np.array([g.score for g in result.grasps]))
            handles = []
            for i, (grasp, color) in enumerate(zip(result.grasps, colors, strict=True)):
                vertices, faces = gripper_mesh(grasp, gripper)
                h = self.app.server.scene.add_mesh_simple(
                    f"{GRASPS_NODE}/{i:03d}",
                    vertices,
                    faces,
                    color=tuple(int(c) for c in color),
                    flat_shading=True,
                    cast_shadow=False,
                    receive_shadow=False,
                )
                h.on_click(lambda e, i=i: self.app.action("Grasp")(lambda _e: self.choose(i))(e))
                handles.append(h)
            self.shown = _Shown(scene, target, result, gripper, handles)
            self.chosen = None
        self.legend.content = legend_html(np.array([g.score for g in result.grasps]))
        if result.grasps:
            self.choose(0)
        else:
            self.details.content = f"**No grasps.** {result.message}"

    def _highlight(self) -> None:
        """The chosen grasp opaque, the others dimmed (Show all) or hidden."""
        with self._lock:
            shown, chosen = self.shown, self.chosen
            if shown is None:
                return
            every = bool(self.show_all.value)
            for j, h in enumerate(shown.handles):
                h.visible = every or j == chosen
                h.opacity = 1.0 if j == chosen else DIM_OPACITY

    def step(self, delta: int) -> int:
        """Highlight the grasp `delta` places after the chosen one (wrapping); returns it."""
        shown = self.shown
        if shown is None or not shown.result.grasps:
            raise ValueError("find grasps first")
        n = len(shown.result.grasps)
        index = ((self.chosen or 0) + delta) % n
        self.choose(index)
        return index

    def choose(self, index: int) -> dict[str, float]:
        """Show grasp `index`'s scores (what clicking its mesh does); returns them."""
        with self._lock:
            shown = self.shown
            if shown is None or not 0 <= index < len(shown.result.grasps):
                raise ValueError(f"no grasp {index} is shown")
            grasp = shown.result.grasps[index]
            self.chosen = index
        self._highlight()
        parts = ", ".join(f"{k} {v:.2f}" for k, v in grasp.scores.items())
        c = grasp.contacts
        self.details.content = (
            f"**Grasp {index + 1}** of {len(shown.result.grasps)}: score **{grasp.score:.3f}** "
            f"({parts}); opening {grasp.width * 100:.1f} cm; contacts "
            f"({', '.join(f'{x:.3f}' for x in c[0])}) and ({', '.join(f'{x:.3f}' for x in c[1])}). "
            "Next / Previous or a click on a gripper chooses another."
        )
        return dict(grasp.scores)

    def grasps(self) -> list:
        """The grasps shown, best first (what a project keeps)."""
        with self._lock:
            return [] if self.shown is None else list(self.shown.result.grasps)

    def restore(self, grasps) -> None:
        """Show `grasps` (from a project) with the current gripper settings; none: clear."""
        grasps = list(grasps)
        if not grasps:
            self.clear()
            return
        scene = self.app.state.scene
        target = torch.zeros(len(scene), dtype=torch.bool)  # not kept in projects
        result = GraspResult(grasps, f"{len(grasps)} grasps restored from the project")
        self._show(scene, target, result, self.gripper())

    def _remove_meshes(self) -> None:
        if self.shown is not None:
            for h in self.shown.handles:
                h.remove()
        self.shown = None
        self.chosen = None

    def clear(self) -> None:
        with self._lock:
            self._remove_meshes()
        self.details.content = ""
        self.legend.content = ""

    # ------------------------------------------------------------------ export
    def export(
        self, text: str, *, confirmed: bool = False, client: viser.ClientHandle | None = None
    ) -> Path | None:
        """Write the shown grasps as JSON (confined to the viewer's root); an existing file is
        replaced only after confirmation (without a browser to ask: FileExistsError)."""
        shown = self.shown
        if shown is None:
            raise ValueError("find grasps first")
        path = confine(text, self.app.root)
        if path.suffix.lower() != ".json":
            raise ValueError(f"{text!r}: grasps are written as .json")
        if path.exists() and not confirmed:
            confirm_overwrite(
                self.app,
                client,
                path,
                "an existing file",
                lambda: self.export(text, confirmed=True, client=client),
                title="Export grasps",
            )
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        out = save_grasps(path, shown.result, shown.gripper, overwrite=confirmed)
        self.app.notify(
            "Grasps exported",
            f"{len(shown.result.grasps)} grasps -> {display(out, self.app.root)}",
            client=client,
        )
        return out
