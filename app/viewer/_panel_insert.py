"""The "Insert" folder: put a bundled object (or any object scene inside the working folder) on
a support, at a clicked point, or grow one from text inside a box.

- "Place on support": the support is the current selection (select the table first), or, with
  nothing selected, the Gaussians a "Support query" names when a feature field with a language
  head is loaded. `editing.place_object` fits its top plane, finds a free spot and rests the
  object on it.
- "Pick spot" + a click in the scene, then "Place at last click": the free spot nearest the
  clicked point, on the surface around it.
- "Replace selection" (FreeEdit's object replacement): the selected object is removed, its
  hole filled (`editing.remove_object`), and the asset put on the same support at the same spot,
  scaled to the old footprint (`editing.replace_object`); "Replace with text" grows the prompt
  there instead (`editing.replace_with_text`). One undo step; the new object is selected.
- "Text to 3D": a box (its own gizmo) and a prompt; `editing.text_to_3d` with the score
  distiller of the model folder / hub id given, as a job with progress and cancel. The object
  starts from an "Init shape" (an ellipsoid, the old uniform cloud, or a bundled asset's shape
  fitted to the box), "Densify" grows Gaussians where the loss pulls, "Method" picks SDS or VSD
  (auto: VSD on CUDA), and the result rests on the support under the box.

Each insertion is one undoable history step whose result selects the new object, so the Edit
panel's gizmo ("Adjust") moves it. When the scene carries features, the new Gaussians get
features that answer to the object's name (`editing.semantics.update_field`).
"""

from __future__ import annotations

import math
import threading
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import viser

import editing
from assets import OBJECTS_DIR
from fields import GaussianScene
from fields.features import FeatureField

from .._paths import confine
from ._camera import click_pixel
from ._jobs import Job, JobCancelled, JobContext
from ._models import DEFAULT_EDIT_MODEL, load_gui_distiller
from ._panel_selection import scene_extent
from ._state import NothingSelectedError

if TYPE_CHECKING:
    from ._app import ViewerApp

BOX_NODE = "/insert_box"
_BOX_COLOR = (40, 160, 255)
INIT_SHAPES = ("ellipsoid", "box")  # then the bundled assets' names
METHODS = ("auto", "sds", "vsd")


def bundled_assets() -> list[str]:
    """Names of the objects shipped in `assets/objects/`."""
    return sorted(p.stem for p in OBJECTS_DIR.glob("*.ply"))


class InsertPanel:
    def __init__(self, app: ViewerApp) -> None:
        self.app = app
        self._assets: dict[str, GaussianScene] = {}
        self._assets_lock = threading.Lock()
        self.last_click: np.ndarray | None = None  # [3] world point of the last "Pick spot"
        self.last: editing.Placement | None = None
        self._picking = False
        self._box_gizmo: viser.TransformControlsHandle | None = None
        self._box_mesh: Any = None
        names = bundled_assets()
        extent = scene_extent(app.state.scene)
        gui = app.server.gui
        with gui.add_folder("Insert", expand_by_default=False) as self.folder:
            choices = [*names, "file…"]
            self.asset = gui.add_dropdown("Asset", choices, initial_value=choices[0])
            self.asset_path = gui.add_text(
                "Asset file", "", hint="With 'file…': an object scene file inside the folder."
            )
            self.name = gui.add_text("Name", "", hint="Label name (default: the asset's).")
            self.support_text = gui.add_text(
                "Support query",
                "table",
                hint="With nothing selected: the support a language query names (needs features).",
            )
            self.yaw = gui.add_slider("Yaw (deg)", 0.0, 360.0, 1.0, 0.0)
            self.scale = gui.add_number("Scale", 1.0, min=1e-3, step=0.05)
            self.place_button = gui.add_button(
                "Place on support", hint="On the selection (e.g. the table) or the support query."
            )
            self.pick_spot = gui.add_checkbox(
                "Pick spot", False, hint="Then click the scene where the object should go."
            )
            self.place_click_button = gui.add_button("Place at last click", disabled=True)
            self.replace_button = gui.add_button(
                "Replace selection",
                hint="Remove the selected object (filling its hole) and put the asset on the "
                "same spot, scaled to its footprint.",
            )
            self.adjust_button = gui.add_button(
                "Adjust", hint="The Edit panel's gizmo on the inserted object."
            )
            with gui.add_folder("Text to 3D", expand_by_default=False):
                self.prompt = gui.add_text("Prompt", "", hint="What to grow inside the box.")
                self.show_box = gui.add_checkbox("Show box gizmo", False)
                self.box_size = gui.add_vector3(
                    "Box size", (0.1 * extent,) * 3, min=(1e-4,) * 3, step=1e-3
                )
                self.model = gui.add_text(
                    "Model",
                    app.config.edit_model or DEFAULT_EDIT_MODEL,
                    hint="diffusers model folder (inside the working folder) or hub id",
                )
                self.steps = gui.add_number("Steps", 300, min=1, step=1)
                self.init_shape = gui.add_dropdown(
                    "Init shape",
                    INIT_SHAPES + tuple(names),
                    initial_value="ellipsoid",
                    hint="Start shape fitted to the box: an ellipsoid shell, a uniform cloud "
                    "('box') or a bundled object's shape.",
                )
                self.densify = gui.add_checkbox(
                    "Densify", True, hint="Clone/split Gaussians where the loss pulls hardest."
                )
                self.method = gui.add_dropdown(
                    "Method",
                    METHODS,
                    initial_value="auto",
                    hint="Score distillation: SDS, or VSD (a LoRA'd UNet copy; slower). "
                    "auto: VSD on CUDA when the model supports it, else SDS.",
                )
                self.generate_button = gui.add_button("Generate")
                self.replace_text_button = gui.add_button(
                    "Replace with text",
                    hint="Remove the selected object (filling its hole) and grow the prompt on "
                    "its footprint.",
                )
            self.status = gui.add_markdown("Select the support (e.g. the table), then place.")

        self.place_button.on_click(app.action("Place on support")(lambda _e: self.place()))
        self.place_click_button.on_click(
            app.action("Place at last click")(lambda _e: self.place_at_click())
        )
        self.pick_spot.on_update(
            app.action("Pick spot")(lambda _e: self.set_picking(self.pick_spot.value))
        )
        self.adjust_button.on_click(
            app.action("Adjust")(lambda _e: self.app.edit_panel.set_gizmo(True))
        )
        self.show_box.on_update(
            app.action("Box")(lambda _e: self.set_box_visible(self.show_box.value))
        )
        self.box_size.on_update(app.action("Box")(lambda _e: self._update_box_mesh()))
        self.generate_button.on_click(app.action("Text to 3D")(lambda _e: self.generate()))
        self.replace_button.on_click(app.action("Replace")(lambda _e: self.replace()))
        self.replace_text_button.on_click(
            app.action("Replace with text")(lambda _e: self.replace_with_text())
        )

    # ------------------------------------------------------------------ assets
    def load_asset(self, asset: str | None = None) -> GaussianScene:
        """A bundled object by name, or ("file…") the asset file typed in (confined to the
        working folder)."""
        asset = str(self.asset.value) if asset is None else asset
        if asset == "file…":
            path = confine(self.asset_path.value, self.app.root)
        elif asset in bundled_assets():
            path = OBJECTS_DIR / f"{asset}.ply"
        else:
            path = confine(asset, self.app.root)
        key = str(path)
        with self._assets_lock:
            if key not in self._assets:
                self._assets[key] = editing.load_asset(path)
            return self._assets[key]

    # ------------------------------------------------------------------ actions (also for tests)
    def place(self, asset: str | None = None, *, support_text: str | None = None) -> Job:
        """Place the asset on the support: the selection, else the support query's Gaussians.
        Runs as a job (returned; its result is the `editing.Placement`)."""
        obj = self.load_asset(asset)
        snap = self.app.state.snapshot()
        if snap.n_selected:
            return self._insert(obj, snap.selection, None, snap.scene)
        text = (self.support_text.value if support_text is None else support_text).strip()
        self._check_support_query(text)
        return self._insert(obj, lambda: self._query_support(text), None, snap.scene)

    def place_at_click(self, asset: str | None = None, point: Any = None) -> Job:
        """Place the asset at the free spot nearest `point` (default: the last picked spot), as
        a job (returned; its result is the `editing.Placement`)."""
        point = self.last_click if point is None else np.asarray(point, dtype=np.float64)
        if point is None:
            raise ValueError("turn on 'Pick spot' and click the scene first")
        obj = self.load_asset(asset)
        return self._insert(obj, None, point, self.app.state.snapshot().scene)

    def replace(self, asset: str | None = None) -> Job:
        """Replace the selected object with the asset, as a job (returned; its result is the
        `editing.Replacement`); one history step that selects the new object."""
        obj = self.load_asset(asset)
        snap = self.app.state.snapshot()
        if snap.n_selected == 0:
            raise NothingSelectedError("Replace: select the object to replace first")
        scene, sel = snap.scene, snap.selection.clone()
        name = self.name.value.strip() or str(obj.meta.get("name") or "").strip() or "object"
        yaw = math.radians(float(self.yaw.value))
        removal = editing.RemovalConfig(up=self.app.up)

        def job(ctx: JobContext) -> editing.Replacement:
            ctx.progress(0.1, "removing the object and filling its hole")
            rep = editing.replace_object(scene, sel, obj, name=name, yaw=yaw, removal=removal)
            ctx.check()
            self._land_replacement(ctx, scene, sel, rep)
            return rep

        return self.app.jobs.submit(f"Replace with {name}", job)

    def replace_with_text(
        self,
        prompt: str | None = None,
        *,
        distiller: Any = None,
        config: editing.TextTo3DConfig | None = None,
    ) -> Job:
        """Replace the selected object with one grown from the prompt on its footprint, as a
        job (returned); `distiller`: an already built score distiller (tests)."""
        prompt, model = self._prompt_and_model(prompt, distiller)
        snap = self.app.state.snapshot()
        if snap.n_selected == 0:
            raise NothingSelectedError("Replace with text: select the object to replace first")
        scene, sel = snap.scene, snap.selection.clone()
        config = config or self.text_to_3d_config()
        name = self.name.value.strip() or prompt
        root = self.app.root

        def job(ctx: JobContext) -> editing.Replacement:
            d = distiller
            if d is None:
                ctx.progress(0.0, "loading the diffusion model")
                d = load_gui_distiller(model, root)
            ctx.check()
            rep = editing.replace_with_text(
                scene,
                sel,
                prompt,
                d,
                config,
                name=name,
                removal=editing.RemovalConfig(up=self.app.up),
                on_step=lambda s, t, loss: ctx.progress(s / t, f"step {s}/{t}, loss {loss:.3f}"),
                should_stop=lambda: ctx.cancelled,
            )
            if ctx.cancelled:
                raise JobCancelled()
            self._land_replacement(ctx, scene, sel, rep)
            return rep

        return self.app.jobs.submit(f"Replace with text: {prompt}", job)

    def _prompt_and_model(self, prompt: str | None, distiller: Any) -> tuple[str, str]:
        """The text-to-3D prompt (argument or field) and model field, checked."""
        prompt = (self.prompt.value if prompt is None else prompt).strip()
        if not prompt:
            raise ValueError("type what to grow (the prompt)")
        model = self.model.value.strip()
        if distiller is None and not model:
            raise ValueError(
                "give a diffusion model (a folder inside the working folder or hub id)"
            )
        return prompt, model

    def _land_replacement(
        self, ctx: JobContext, scene: GaussianScene, sel: torch.Tensor, rep: editing.Replacement
    ) -> None:
        """Apply a replacement as one history step (features for the new object when the scene
        carries them); refuses when the scene changed meanwhile."""
        new = rep.scene
        field = self.app.state.current_field()
        if field is not None:
            ctx.progress(0.8, "features for the new Gaussians")
            new = self._with_features(field, new, rep.mask, rep.name, self._encode_name(rep.name))
        kept = (~rep.removal.mask).nonzero().squeeze(1)  # the selection and its unseen base go
        added = len(new) - len(kept)  # the fill, then the new object: new rows
        rows = torch.cat([kept, torch.full((added,), -1, dtype=torch.long)])
        changed = torch.zeros(len(new), dtype=torch.bool)
        changed[len(kept) :] = True

        def op(current: GaussianScene, _sel):
            if current is not scene:
                raise RuntimeError("the scene changed meanwhile; replace again")
            self.app.derive(current, new, index=rows, changed=changed)
            return new, rep.mask.cpu()

        self.app.state.apply(f"replace {int(sel.sum()):,} with {rep.name}", op)
        self.status.content = (
            f"Replaced the selection with **{rep.name}** ({int(rep.mask.sum()):,} Gaussians, "
            f"scale {rep.scale:.2f}); the hole was filled with "
            f"{int(rep.removal.fill.sum()):,} Gaussians. It is selected."
        )

    def _check_support_query(self, text: str) -> None:
        if not text or self.app.state.current_field() is None:
            raise ValueError(
                "select the support (e.g. the table) first, or load features to find it by a "
                "support query"
            )
        if self.app.state.text_query() is None:
            raise ValueError("the loaded features have no language head for a support query")

    def _query_support(self, text: str) -> torch.Tensor:
        self._check_support_query(text)
        tq = self.app.state.text_query()
        assert tq is not None
        res = tq.query(text)
        if not bool(res.mask.any()):
            why = f": {res.message}" if res.message else ""
            raise ValueError(f"the support query {text!r} selects nothing{why}")
        return res.mask.cpu()

    def _encode_name(self, name: str):
        """An encoder that returns `name`'s embedding (None without a language head)."""
        tq = self.app.state.text_query()
        if tq is None or not name:
            return None
        emb = tq.encode([name])
        return lambda _texts: emb

    def _insert(self, obj: GaussianScene, support, at, scene: GaussianScene) -> Job:
        """Place `obj` in `scene` (support: a mask, a callable giving one, or None with `at`)
        in a job; the result lands as one history step unless the scene changed meanwhile."""
        name = self.name.value.strip() or None
        yaw = math.radians(float(self.yaw.value))
        scale = float(self.scale.value)
        label_name = name or str(obj.meta.get("name") or "")

        def job(ctx: JobContext) -> editing.Placement:
            nonlocal support
            field = self.app.state.current_field()
            encode = None
            if field is not None and label_name:
                ctx.progress(0.05, "encoding the object's name")
                encode = self._encode_name(label_name)
            if callable(support):
                ctx.progress(0.1, "finding the support")
                support = support()
            ctx.check()
            ctx.progress(0.2, "fitting the support and finding a free spot")
            p = editing.place_object(
                scene, obj, support, name=name, at=at, yaw=yaw, scale=scale, up=self.app.up
            )
            ctx.check()
            new = p.scene
            if field is not None:
                ctx.progress(0.8, "features for the new Gaussians")
                new = self._with_features(field, new, p.mask, p.name, encode)

            def op(current: GaussianScene, _sel):
                if current is not scene:
                    raise RuntimeError("the scene changed meanwhile; place again")
                _derive_append(self.app, current, new, p.mask)
                return new, p.mask.cpu()

            self.app.state.apply(f"insert {label_name or 'object'}", op, needs_selection=False)
            self.last = p
            pos = ", ".join(f"{x:.3f}" for x in p.spot)
            self.status.content = (
                f"Inserted **{p.name}** ({int(p.mask.sum()):,} Gaussians) at ({pos}), "
                f"{p.gap * 1000:.2f} mm above the support. It is selected: **Adjust** moves it."
            )
            return p

        return self.app.jobs.submit(f"Insert {label_name or 'object'}", job)

    def _with_features(self, field: FeatureField, new: GaussianScene, mask, name, encode):
        updated = editing.semantics.update_field(
            field, new, mask, name=name if encode is not None else None, encode=encode
        )
        kept = self.app.state.field
        if kept is not None and any(
            updated.heads[k] is not kept.heads.get(k) for k in updated.heads
        ):
            # A claimed feature direction changed the language head: keep it for queries.
            self.app.state.keep_field(
                FeatureField(
                    features=kept.features,
                    heads=updated.heads,
                    config=kept.config,
                    teachers=kept.teachers,
                    scene_hash=kept.scene_hash,
                    meta=kept.meta,
                    levels=kept.levels,
                )
            )
        return new.with_extras(feature=updated.features.to(new.device))

    # ------------------------------------------------------------------ picking a spot
    def set_picking(self, on: bool) -> None:
        pointer = self.app.state.pointer
        if on:
            pointer.claim("insert", lambda: self.set_picking(False))
        else:
            pointer.release("insert")
        scene_api = self.app.server.scene
        scene_api.remove_click_callback(self._on_click)
        self._picking = bool(on)
        if on:
            scene_api.on_click()(self._on_click)
        if self.pick_spot.value != on:
            self.pick_spot.value = on

    def _on_click(self, event: viser.SceneClickEvent) -> None:
        @self.app.action("Pick spot")
        def run(_e: object) -> None:
            self.pick(*click_pixel(event))

        run(event)

    def pick(self, camera, u: float, v: float) -> np.ndarray | None:
        """Remember the surface point under pixel (u, v) of `camera` (None: nothing there)."""
        scene = self.app.state.scene
        o, d = editing.pixel_ray(camera, u, v)
        t, _ = editing.ray_hits(scene, o, d)
        i = int(torch.argmin(t)) if len(scene) else 0
        if not len(scene) or not torch.isfinite(t[i]):
            self.status.content = "Nothing under the click; click a surface."
            return None
        point = (o + float(t[i]) * d).numpy()
        self.set_click(point)
        return point

    def set_click(self, point: Any) -> None:
        self.last_click = np.asarray(point, dtype=np.float64).reshape(3)
        self.place_click_button.disabled = False
        pos = ", ".join(f"{x:.3f}" for x in self.last_click)
        self.status.content = f"Spot picked at ({pos}): **Place at last click**."

    # ------------------------------------------------------------------ text to 3D
    def box_pose(self) -> np.ndarray:  # [4,4] T_world_box
        T = np.eye(4)
        if self._box_gizmo is not None:
            from ._panel_selection import _wxyz_to_R

            T[:3, :3] = _wxyz_to_R(self._box_gizmo.wxyz)
            T[:3, 3] = self._box_gizmo.position
        elif self.last_click is not None:
            T[:3, 3] = self.last_click
        return T

    def set_box_visible(self, show: bool) -> None:
        if show and self._box_gizmo is None:
            start = self.box_pose()[:3, 3]
            if self.last_click is None:
                snap = self.app.state.snapshot()
                if len(snap.scene):
                    lo, hi = snap.scene.bounds(quantile=0.02 if len(snap.scene) > 100 else 0.0)
                    start = (0.5 * (lo + hi)).numpy()
            self._box_gizmo = self.app.server.scene.add_transform_controls(
                BOX_NODE,
                scale=0.15 * scene_extent(self.app.state.scene),
                position=tuple(float(x) for x in start),
                depth_test=False,
            )
            self._update_box_mesh()
        elif not show and self._box_gizmo is not None:
            self._box_gizmo.remove()
            self._box_gizmo = None
            self._box_mesh = None
        if self.show_box.value != show:
            self.show_box.value = show

    def _update_box_mesh(self) -> None:
        if self._box_gizmo is None:
            return
        if self._box_mesh is not None:
            self._box_mesh.remove()
        self._box_mesh = self.app.server.scene.add_box(
            f"{BOX_NODE}/box",
            color=_BOX_COLOR,
            dimensions=tuple(float(x) for x in self.box_size.value),
            wireframe=True,
            cast_shadow=False,
            receive_shadow=False,
        )

    def text_to_3d_config(self) -> editing.TextTo3DConfig:
        """The text-to-3D settings in the panel."""
        init = str(self.init_shape.value)
        if init not in INIT_SHAPES:
            init = str(OBJECTS_DIR / f"{init}.ply")
        method = str(self.method.value)
        return editing.TextTo3DConfig(
            steps=int(self.steps.value),
            up=tuple(float(x) for x in self.app.up),
            init=init,
            densify=bool(self.densify.value),
            method=None if method == "auto" else method,  # type: ignore[arg-type]
        )

    def generate(
        self,
        prompt: str | None = None,
        *,
        distiller: Any = None,
        config: editing.TextTo3DConfig | None = None,
    ):
        """Grow the prompt in the box as a job (returned); the result is one history step.
        `distiller`: an already built score distiller (tests); else the "Model" field's."""
        prompt, model = self._prompt_and_model(prompt, distiller)
        T = self.box_pose()
        box = (T[:3, 3], np.asarray(self.box_size.value, dtype=np.float64), T[:3, :3])
        config = config or self.text_to_3d_config()
        snap = self.app.state.snapshot()
        field = self.app.state.current_field()
        name = self.name.value.strip() or prompt
        root = self.app.root

        def job(ctx):
            d = distiller
            if d is None:
                ctx.progress(0.0, "loading the diffusion model")
                d = load_gui_distiller(model, root)
            ctx.check()
            new, mask = editing.text_to_3d(
                snap.scene,
                box,
                d,
                prompt,
                config,
                name=name,
                on_step=lambda s, t, loss: ctx.progress(s / t, f"step {s}/{t}, loss {loss:.3f}"),
                should_stop=lambda: ctx.cancelled,
            )
            if ctx.cancelled:
                raise JobCancelled()
            if field is not None:
                # The prompt names the new Gaussians for queries when the text side can say it;
                # otherwise they take their neighbours' features.
                encode = self._encode_name(name)
                new = self._with_features(field, new, mask, name, encode)

            def op(current, _sel):
                if current is not snap.scene:
                    raise RuntimeError("the scene changed while growing; generate again")
                _derive_append(self.app, current, new, mask)
                return new, mask.cpu()

            self.app.state.apply(f"text to 3D: {prompt}", op, needs_selection=False)
            note = new.meta["inserted"][-1].get("support_note", "")
            self.status.content = f"Grew **{prompt}** ({int(mask.sum()):,} Gaussians): {note}."
            return new

        return self.app.jobs.submit(f"Text to 3D: {prompt}", job)


def _derive_append(app: ViewerApp, old: GaussianScene, new: GaussianScene, added) -> None:
    """Tell the splat buffer that `new` is `old` plus appended rows (packed afresh)."""
    if len(old) == 0:
        return
    index = torch.cat([torch.arange(len(old)), torch.zeros(len(new) - len(old), dtype=torch.long)])
    app.derive(old, new, index=index, changed=torch.as_tensor(added).cpu())
