"""The "Features" folder: the scene's feature field — load a `.safetensors` field, or distil one
from the loaded dataset with the oracle or the CLIP + SAM teachers (a job with progress and
cancel), and save it.

The per-Gaussian features travel with the scene as its `feature` extra (`FeatureField.attach`,
recorded as a history step), so deletes, duplicates and undo keep them aligned with the
Gaussians; this panel keeps the rest of the field (heads, teacher records, meta) and hands the
query and click panels a `FeatureField` for the current scene (`current()`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fields.features import DistillConfig, FeatureField, OracleTeacher, distill, load_field
from fields.features._clip import DEFAULT_MODEL, DEFAULT_PRETRAINED

from .._paths import confine, display
from ._jobs import JobCancelled

if TYPE_CHECKING:
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


def field_for(scene, field: FeatureField | None) -> FeatureField | None:
    """`field`'s heads with the features `scene` carries now (None without either)."""
    features = scene.extras.get("feature")
    if field is None or features is None or features.ndim != 2 or features.shape[1] != field.dim:
        return None
    return FeatureField(
        features=features,
        heads=field.heads,
        config=field.config,
        teachers=field.teachers,
        scene_hash=field.scene_hash,
        meta=field.meta,
    )


def sam_model_type(options: FeatureOptions, field: FeatureField | None) -> str:
    if options.sam_model:
        return options.sam_model
    for record in field.teachers if field is not None else ():
        if record.get("space") == "sam" and record.get("model_type"):
            return str(record["model_type"])
    name = options.sam_checkpoint.name if options.sam_checkpoint is not None else ""
    return next((k for k in ("vit_b", "vit_l", "vit_h") if k in name), "vit_h")


class FeaturesPanel:
    def __init__(self, app: ViewerApp, options: FeatureOptions | None = None) -> None:
        self.app = app
        self.options = options or FeatureOptions()
        self.field: FeatureField | None = None  # heads and records; features are scene extras
        self._listeners: list[Callable[[], None]] = []
        self._feature_tensor: Any = None
        gui = app.server.gui
        dataset = app.dataset
        source = app.state.source
        default = (
            display(source.with_name(source.name.split(".")[0] + FEATURE_SUFFIX), app.root)
            if source is not None and _inside(source, app.root)
            else "scene" + FEATURE_SUFFIX
        )
        with gui.add_folder("Features"):
            self.path = gui.add_text(
                "Features file", default, hint=f"A .safetensors feature field inside {app.root}"
            )
            self.load_button = gui.add_button("Load features")
            self.teachers = gui.add_dropdown(
                "Teachers",
                TEACHER_SETS,
                initial_value="oracle",
                disabled=dataset is None,
                hint="oracle: the dataset's label maps (synthetic worlds); clip+sam: the models.",
            )
            self.steps = gui.add_number("Steps", 600, min=1, step=1, disabled=dataset is None)
            self.distil_button = gui.add_button("Distil", disabled=dataset is None)
            self.save_button = gui.add_button("Save features", disabled=True)
            self.status = gui.add_markdown(
                "No features."
                if dataset is not None
                else "No features. Open a dataset (`--data`) to distil them here."
            )
        self.load_button.on_click(
            app.action("Load features")(lambda _e: self.load(self.path.value))
        )
        self.distil_button.on_click(
            app.action("Distil")(
                lambda _e: self.distil(str(self.teachers.value), int(self.steps.value))
            )
        )
        self.save_button.on_click(
            app.action("Save features")(lambda _e: self.save(self.path.value))
        )
        app.state.on_change(lambda _kind: self._check_scene())
        if self.options.field is not None:
            self.adopt(self.options.field, "features")
        elif self.options.features is not None:
            self.adopt(load_field(self.options.features), f"features {self.options.features.name}")

    # ------------------------------------------------------------------ reading
    def current(self) -> FeatureField | None:
        """The field for the current scene (its `feature` extra with the loaded heads)."""
        return field_for(self.app.state.scene, self.field)

    def on_change(self, callback: Callable[[], None]) -> None:
        """`callback()` when the field appears, goes (undo past it) or is replaced."""
        self._listeners.append(callback)

    def _check_scene(self) -> None:
        features = self.app.state.scene.extras.get("feature")
        if features is self._feature_tensor:
            return
        self._feature_tensor = features
        field = self.current()
        self.save_button.disabled = field is None
        if field is None:
            self.status.content = "No features on this scene (load or distil them)."
        else:
            self.status.content = _describe(field)
        for cb in list(self._listeners):
            try:
                cb()
            except Exception:
                _log.exception("feature listener raised")

    # ------------------------------------------------------------------ actions (also for tests)
    def adopt(self, field: FeatureField, step: str = "features") -> None:
        """Attach `field` to the current scene (a history step) and keep its heads."""
        n = len(self.app.state.scene)
        if len(field) != n:
            raise ValueError(
                f"the field has {len(field):,} Gaussians, the scene {n:,}: it belongs to another "
                "scene (or to this one before an edit)"
            )
        self.field = field
        self.app.state.apply(step, lambda scene, _sel: field.attach(scene), needs_selection=False)

    def load(self, text: str) -> FeatureField:
        path = confine(text, self.app.root)
        field = load_field(path)
        self.adopt(field, f"features {path.name}")
        return field

    def save(self, text: str, *, overwrite: bool = False) -> Path:
        field = self.current()
        if field is None:
            raise ValueError("there are no features to save")
        path = confine(text, self.app.root)
        out = field.save(path, overwrite=overwrite)
        self.app.notify("Features saved", display(out, self.app.root))
        return out

    def distil(self, teachers: str = "oracle", steps: int = 600):
        """Distil a field from the dataset as a job; it is attached when done."""
        dataset = self.app.dataset
        if dataset is None:
            raise ValueError("no dataset is loaded (open the scene with --data)")
        if teachers not in TEACHER_SETS:
            raise ValueError(f"unknown teachers {teachers!r}; expected one of {TEACHER_SETS}")
        snap = self.app.state.snapshot()
        options = self.options

        def job(ctx):
            ctx.progress(0.0, "loading teachers")
            built = self._build_teachers(teachers, dataset)
            ctx.check()
            cache = (
                None if teachers == "oracle" else str(Path(dataset.root) / ".cache" / "teachers")
            )
            config = DistillConfig(steps=int(steps), cache_dir=cache)
            try:
                field = distill(
                    snap.scene.to(options.device),
                    dataset,
                    built,
                    config,
                    progress=lambda s, t, loss: ctx.progress(
                        s / t, f"step {s}/{t}, loss {loss:.3f}"
                    ),
                    cancel=lambda: ctx.cancelled,
                )
            except InterruptedError:
                raise JobCancelled() from None
            names = snap.scene.meta.get("label_names")
            if names:
                field.meta["label_names"] = names

            def attach(scene, _sel):
                if scene is not snap.scene:
                    raise RuntimeError("the scene changed while distilling; distil again")
                return field.attach(scene)

            self.field = field
            self.app.state.apply(f"distil {teachers}", attach, needs_selection=False)
            return field

        return self.app.jobs.submit(f"Distil features ({teachers})", job)

    def _build_teachers(self, teachers: str, dataset) -> list:
        if teachers == "oracle":
            return [OracleTeacher(dataset)]
        from fields.features._clip import ClipTeacher
        from fields.features._sam import SamTeacher

        o = self.options
        return [
            ClipTeacher(o.clip_model, o.clip_pretrained, device=o.device),
            SamTeacher(sam_model_type(o, None), o.sam_checkpoint, device=o.device),
        ]


def _describe(field: FeatureField) -> str:
    heads = ", ".join(f"{k} ({v.shape[0]})" for k, v in sorted(field.heads.items()))
    return f"{len(field):,} Gaussians × {field.dim} channels; heads: {heads}"


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root)
    except ValueError:
        return False
    return True
