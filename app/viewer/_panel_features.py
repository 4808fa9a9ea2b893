"""The "Features" folder: the scene's feature field — load a `.safetensors` field, lift one
(dataset-free: the scene renders its own views; the oracle reads the scene's labels) or optimise
one on the dataset (`distill`), as a job with progress in the folder, and save it.

The field itself lives in `ViewerState` (`set_field`, `current_field`, `text_query`): this panel
only drives it. Saving binds the field to the current scene and names the file after the scene
file saved (or opened) last.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import editing
from fields.features import DEFAULT_CLIP_MODEL as DEFAULT_MODEL
from fields.features import DEFAULT_CLIP_PRETRAINED as DEFAULT_PRETRAINED
from fields.features import (
    DistillConfig,
    FeatureField,
    FieldMismatchError,
    LiftConfig,
    OracleTeacher,
    SceneOracleTeacher,
    distill,
    load_field,
    scene_views,
)
from fields.features import lift as lift_field

from .._paths import confine, display
from ._jobs import JobCancelled
from ._panel_file import confirm_overwrite
from ._state import FIELD

if TYPE_CHECKING:
    import viser

    from ._app import ViewerApp

_log = logging.getLogger(__name__)

TEACHER_SETS = ("oracle", "clip+sam")
FEATURE_SUFFIX = ".features.safetensors"


@dataclass
class FeatureOptions:
    """What the feature panels start with (the CLI's --features, --sam-checkpoint, --clip-*)."""

    features: Path | None = None
    """A feature field file to load at start."""
    field: FeatureField | None = None
    """Or a field already in memory (for the scene as it is opened)."""
    sam_checkpoint: Path | None = None
    """SAM weights for click segmentation and the SAM teacher (an official .pth)."""
    sam_model: str | None = None
    """SAM architecture (vit_h, vit_l, vit_b); None: the field's SAM teacher's, else guessed from
    the checkpoint's file name."""
    clip_model: str = DEFAULT_MODEL
    """open_clip architecture of the CLIP text encoder and teacher."""
    clip_pretrained: str = DEFAULT_PRETRAINED
    """open_clip pretrained tag or a local weights file."""
    sam_decoder: Any = None
    """An already built `SamDecoder` (tests: a tiny random-weight SAM); skips the checkpoint."""
    text_encoder: Callable[[list[str]], Any] | None = None
    """An already built text encoder `texts -> [T, D]` for the field's query space."""
    device: str = "cpu"
    lift_on_open: bool = False
    """Lift the oracle field as a job when the viewer opens without features (the demo:
    dataset-free, from the scene's own labels; seconds)."""


def sam_model_type(options: FeatureOptions, field: FeatureField | None) -> str:
    if options.sam_model:
        return options.sam_model
    for record in field.teachers if field is not None else ():
        if record.get("space") == "sam" and record.get("model_type"):
            return str(record["model_type"])
    name = options.sam_checkpoint.name if options.sam_checkpoint is not None else ""
    return next((k for k in ("vit_b", "vit_l", "vit_h") if k in name), "vit_h")


METHODS = ("lift", "optimise")


def configure_text_encoder(state: Any, options: FeatureOptions) -> None:
    """Tell a `ViewerState` how to encode query texts: the encoder `options` carries, else CLIP
    with the options' model (other spaces: the field's own teacher records). The Features panel
    does this; a viewer showing a NeRF (no Features panel) does it itself."""
    if options.text_encoder is not None:
        given = options.text_encoder
        state.text_encoder = lambda _field, _space: given
        state.text_encoder_cheap = True
    else:
        state.text_encoder = lambda field, space: _text_encoder(options, field, space)


def _text_encoder(options: FeatureOptions, field: FeatureField, space: str):
    if space == "clip":
        from fields.features import ClipTeacher

        return ClipTeacher(
            options.clip_model, options.clip_pretrained, device=options.device
        ).encode_text
    from fields.features import build_text_encoder

    return build_text_encoder(space, field.teachers)


class FeaturesPanel:
    def __init__(self, app: ViewerApp, options: FeatureOptions | None = None) -> None:
        self.app = app
        self.options = options = options or FeatureOptions()
        state = app.state
        configure_text_encoder(state, options)
        gui = app.server.gui
        with gui.add_folder("Features") as self.folder:
            self.path = gui.add_text(
                "Features file",
                self.default_path(),
                hint=f"A .safetensors feature field inside {app.root}",
            )
            self.load_button = gui.add_button("Load features")
            self.teachers = gui.add_dropdown(
                "Teachers",
                TEACHER_SETS,
                initial_value="oracle",
                hint="oracle: the scene's (or dataset's) labels (synthetic worlds); clip+sam: "
                "the models.",
            )
            self.method = gui.add_dropdown(
                "Method",
                METHODS,
                initial_value="lift",
                hint="lift: one weighted average per Gaussian (seconds, no dataset needed); "
                "optimise: gradient distillation on the dataset's views.",
            )
            self.steps = gui.add_number(
                "Steps", 600, min=1, step=1, hint="Optimisation steps (optimise only)."
            )
            self.lift_button = gui.add_button("Lift features")
            self.save_button = gui.add_button("Save features", disabled=True)
            self.status = gui.add_markdown("No features: lift or load them.")
        self.load_button.on_click(
            app.action("Load features")(lambda _e: self.load(self.path.value))
        )
        self.lift_button.on_click(
            app.action("Lift features")(
                lambda _e: self.lift(
                    str(self.teachers.value), str(self.method.value), int(self.steps.value)
                )
            )
        )
        self.save_button.on_click(
            app.action("Save features")(lambda e: self.save(self.path.value, client=e.client))
        )
        self._last_source = state.source
        state.on_change(self._on_state)
        if options.field is not None:
            self.adopt(options.field, "features")
        elif options.features is not None:
            self.adopt(load_field(options.features), f"features {options.features.name}")
        self._refresh()
        scene = state.scene
        labelled = "label" in scene.extras and bool(scene.meta.get("label_names"))
        if options.lift_on_open and self.current() is None and labelled:
            self.lift("oracle", "lift")

    # ------------------------------------------------------------------ reading
    def current(self) -> FeatureField | None:
        """The field for the current scene (`ViewerState.current_field`)."""
        return self.app.state.current_field()

    @property
    def field(self) -> FeatureField | None:
        return self.app.state.field

    def default_path(self) -> str:
        """`<scene stem>.features.safetensors` next to the scene file saved (or opened) last."""
        source = self.app.state.source
        if source is not None and _inside(source, self.app.root):
            return display(
                source.with_name(source.name.split(".")[0] + FEATURE_SUFFIX), self.app.root
            )
        return "scene" + FEATURE_SUFFIX

    def _on_state(self, kind: str) -> None:
        if kind == FIELD:
            self._refresh()
        source = self.app.state.source
        if source != self._last_source:  # the File panel saved the scene elsewhere
            self._last_source = source
            self.path.value = self.default_path()

    def _refresh(self) -> None:
        field = self.current()
        self.save_button.disabled = field is None
        if field is None:
            self.status.content = (
                "No features on this scene: **Lift features** (seconds with the oracle) or load a "
                "file."
            )
        else:
            self.status.content = _describe(field)

    def _text_encoder(self, field: FeatureField, space: str):
        return _text_encoder(self.options, field, space)

    # ------------------------------------------------------------------ actions (also for tests)
    def adopt(self, field: FeatureField, step: str = "features") -> None:
        """Attach `field` to the current scene (a history step; `ViewerState.set_field`)."""
        self.app.state.set_field(field, step)

    def load(self, text: str) -> FeatureField:
        path = confine(text, self.app.root)
        if not path.is_file():
            self.status.content = (
                f"No features file at `{display(path, self.app.root)}`: lift them, or type the "
                "file's name."
            )
            raise FileNotFoundError(
                f"no features file at {display(path, self.app.root)}: press Lift features, or "
                "type the name of a .safetensors file in the working folder"
            )
        field = load_field(path)
        try:
            self.adopt(field, f"features {path.name}")
        except FieldMismatchError as e:
            self.status.content = f"**Not loaded.** {e}"
            raise
        return field

    def save(
        self,
        text: str | None = None,
        *,
        overwrite: bool = False,
        client: viser.ClientHandle | None = None,
    ) -> Path | None:
        """Save the current scene's field, bound to it (its count and geometry fingerprint). An
        existing file is replaced only after the user confirms in `client`'s browser (returns
        None while asking; without a browser to ask: FileExistsError)."""
        field = self.current()
        if field is None:
            raise ValueError("there are no features to save")
        path = confine(self.path.value if text is None else text, self.app.root)
        if path.exists() and not overwrite:
            confirm_overwrite(
                self.app,
                client,
                path,
                "an existing file",
                lambda: self.save(text, overwrite=True, client=client),
                title="Save features",
            )
            return None
        out = field.bind(self.app.state.scene).save(path, overwrite=overwrite)
        self.app.notify("Features saved", display(out, self.app.root))
        return out

    def lift(self, teachers: str = "oracle", method: str = "lift", steps: int = 600):
        """Build a field for the current scene as a job; it is attached when done. `lift` needs
        no dataset (the scene renders its own views); `optimise` distils on the dataset."""
        if teachers not in TEACHER_SETS:
            raise ValueError(f"unknown teachers {teachers!r}; expected one of {TEACHER_SETS}")
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
        dataset = self.app.dataset
        if method == "optimise" and dataset is None:
            raise ValueError(
                "optimising needs a dataset (open the scene with --data); lift instead"
            )
        snap = self.app.state.snapshot()
        options = self.options
        status = self.status

        def report(ctx, fraction: float, text: str) -> None:
            ctx.progress(fraction, text)
            status.content = f"{method.capitalize()} ({teachers}): {100 * fraction:.0f}% — {text}"

        def job(ctx):
            report(ctx, 0.0, "loading teachers")
            built = self._build_teachers(teachers, dataset, snap.scene, method)
            ctx.check()
            scene = snap.scene
            own = dataset is None or (method == "lift" and isinstance(built[0], SceneOracleTeacher))
            if not own:  # the dataset's photos pair with the scene in its file's frame (rows and
                scene = editing.in_file_frame(scene)  # so features are the same after a level)
            scene = scene.to(options.device)
            cache = None
            if teachers != "oracle" and dataset is not None:
                cache = str(Path(dataset.root) / ".cache" / "teachers")
            try:
                if method == "optimise":
                    field = distill(
                        scene,
                        dataset,
                        built,
                        DistillConfig(steps=int(steps), cache_dir=cache),
                        progress=lambda s, t, loss: report(
                            ctx, s / t, f"step {s}/{t}, loss {loss:.3f}"
                        ),
                        cancel=lambda: ctx.cancelled,
                    )
                else:
                    views = scene_views(scene, built) if own else dataset
                    field = lift_field(
                        scene,
                        views,
                        built,
                        LiftConfig(cache_dir=cache),
                        progress=lambda f, m: report(ctx, f, m),
                        cancel=lambda: ctx.cancelled,
                    )
            except InterruptedError:
                status.content = "Cancelled."
                raise JobCancelled() from None
            names = snap.scene.meta.get("label_names")
            if names:
                field.meta["label_names"] = names
            field.bind(snap.scene)
            self.app.state.set_field(field, f"{method} {teachers}", of=snap.scene)
            return field

        return self.app.jobs.submit(f"{method.capitalize()} features ({teachers})", job)

    def distil(self, teachers: str = "oracle", steps: int = 600):
        """The optimising distillation (needs a dataset), as a job."""
        return self.lift(teachers, "optimise", steps)

    def _build_teachers(self, teachers: str, dataset, scene, method: str) -> list:
        if teachers == "oracle":
            labelled = "label" in scene.extras and bool(scene.meta.get("label_names"))
            if dataset is None or (labelled and method == "lift"):
                return [SceneOracleTeacher(scene)]
            return [OracleTeacher(dataset)]
        from fields.features import ClipTeacher, SamTeacher

        o = self.options
        return [
            ClipTeacher(o.clip_model, o.clip_pretrained, device=o.device),
            SamTeacher(sam_model_type(o, None), o.sam_checkpoint, device=o.device),
        ]


def _describe(field: FeatureField) -> str:
    heads = ", ".join(f"{k} ({v.shape[0]})" for k, v in sorted(field.heads.items()))
    levels = " / ".join(field.levels)
    return (
        f"{len(field):,} Gaussians × {field.dim} channels × {len(field.levels)} level(s) "
        f"({levels}); heads: {heads}"
    )


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root)
    except ValueError:
        return False
    return True
