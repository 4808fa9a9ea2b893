"""The "Text edit" folder: edit the selection towards a prompt by score distillation
(`editing.text_edit`, DDS or SDS under a diffusion model), as a job.

The model loads inside the job (a missing model fails the job with the message saying what to
fetch) and stays loaded for the next edit. While the job runs, the splats show the edit so far
every few steps — a preview (`ViewerState.show_preview`) that never enters the history. When it
finishes, the edited scene lands as ONE history step ("Text edit: <prompt>"), so one undo brings
back the scene as it was, bit for bit. Cancel drops the preview and leaves the scene unchanged.

"Grow geometry" makes it a densifying edit (`TextEditConfig.densify`): the object may gain and
lose Gaussians within its bounding box grown by "Margin", so the count changes; the result lists
the rest first and the object after it, and the selection follows the object. Its live previews
show the growing object (without the selection highlight: their rows are not the scene's).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from editing import TextEditConfig
from editing.text_edit import Distiller, text_edit_result
from fields import GaussianScene

from ._jobs import Job, JobContext, JobStatus
from ._models import DEFAULT_EDIT_MODEL, load_gui_distiller
from ._state import NothingSelectedError

if TYPE_CHECKING:
    from ._app import ViewerApp

METHODS = {"DDS": "dds", "SDS": "sds"}
PARAM_LABELS = {"color": "Colour", "opacity": "Opacity", "scale": "Scale", "position": "Position"}
# Steps between two previews: each one re-packs the splats' colours and sends them to the browsers.
PREVIEW_EVERY = 5


class SceneChangedError(RuntimeError):
    """The scene was changed by another op while the edit ran; the edit is not applied."""


class TextEditPanel:
    """See the module docstring. `load_distiller(model) -> Distiller` is swappable (tests inject
    a toy denoiser); `model` is the default in the Model box."""

    def __init__(
        self,
        app: ViewerApp,
        *,
        model: str | None = None,
        load_distiller: Callable[[str], Distiller] | None = None,
    ) -> None:
        self.app = app
        self.load_distiller = load_distiller or (lambda m: load_gui_distiller(m, app.root))
        model = model or app.config.edit_model or DEFAULT_EDIT_MODEL
        self._lock = threading.Lock()
        self._loaded: tuple[str, Distiller] | None = None  # (model, distiller) kept for reuse
        self.job: Job | None = None
        self.previews = 0  # previews shown by the current/last edit
        self.first_preview_s: float | None = None  # seconds from `run` to the first preview
        gui = app.server.gui
        with gui.add_folder("Text edit", expand_by_default=False) as self.folder:
            self.prompt = gui.add_text("Prompt", "", hint="What the selection should become.")
            self.source_prompt = gui.add_text(
                "Source prompt", "", hint="What it is now (DDS compares the two)."
            )
            self.method = gui.add_dropdown("Method", tuple(METHODS), initial_value="DDS")
            self.model = gui.add_text(
                "Model", model, hint="diffusers model: hub id or a folder saved by save_pretrained"
            )
            self.steps = gui.add_number("Steps", 200, min=1, max=5000, step=1)
            self.params = {
                name: gui.add_checkbox(label, name == "color", hint=f"Optimise {label.lower()}.")
                for name, label in PARAM_LABELS.items()
            }
            self.grow = gui.add_checkbox(
                "Grow geometry",
                False,
                hint="Clone/split/prune the selection's Gaussians so its shape can change.",
            )
            self.margin = gui.add_number(
                "Margin",
                0.2,
                min=0.0,
                max=2.0,
                step=0.05,
                hint="With Grow geometry: room around the selection's box, as a fraction of its "
                "longest side per side.",
            )
            self.edit_button = gui.add_button(
                "Edit selection", hint="Runs as a job; the splats preview the edit as it goes."
            )
            self.cancel_button = gui.add_button("Cancel edit", color="red", visible=False)
            self.status = gui.add_markdown("Select Gaussians, write a prompt, press Edit.")
        self.edit_button.on_click(app.action("Text edit")(lambda _e: self.run()))
        self.cancel_button.on_click(app.action("Cancel edit")(lambda _e: self.cancel()))

    # ------------------------------------------------------------------ config
    def config(self, **changes) -> TextEditConfig:
        """The edit the widgets describe (ValueError naming what is wrong)."""
        params = tuple(name for name, box in self.params.items() if box.value)
        values = {
            "prompt": str(self.prompt.value),
            "source_prompt": str(self.source_prompt.value),
            "method": METHODS[str(self.method.value)],
            "steps": int(self.steps.value),
            "params": params,
            "preview_every": PREVIEW_EVERY,
            "densify": bool(self.grow.value),
            "grow_margin": float(self.margin.value),
            "up": tuple(float(x) for x in self.app.up),  # the viewer's up (fields.scene_up)
        }
        return TextEditConfig(**{**values, **changes})

    # ------------------------------------------------------------------ run
    def run(self, **changes) -> Job:
        """Start editing the current selection (the Edit button); `changes` override config
        fields (tests: steps, size, ...). Returns the job."""
        config = self.config(**changes)
        model = str(self.model.value).strip()
        if not model:
            raise ValueError("no model: give a hub id or a pipeline folder")
        state = self.app.state
        with state.lock:
            scene, selection = state.scene, state.selection
        if not bool(selection.any()):
            raise NothingSelectedError("Text edit: nothing is selected")
        geometry = config.densify or any(p in config.params for p in ("position", "scale"))
        pressed = time.monotonic()
        self.previews, self.first_preview_s = 0, None
        name = f"Text edit: {config.prompt}"

        def on_step(ctx: JobContext, step: int, steps: int, preview: GaussianScene | None):
            ctx.progress(0.05 + 0.95 * step / steps, f"step {step}/{steps}")
            if preview is None or ctx.cancelled:
                return
            if geometry and not config.densify:  # a growing edit's rows are new: packed afresh
                self.app.derive(scene, preview, changed=selection)
            if not state.show_preview(preview, of=scene):
                return  # another op changed the scene meanwhile: this edit will not land
            self.previews += 1
            if self.first_preview_s is None:
                self.first_preview_s = time.monotonic() - pressed

        def job(ctx: JobContext) -> GaussianScene:
            ctx.progress(0.0, f"loading {model}")
            distiller = self._distiller(model)
            ctx.check()
            ctx.progress(0.05, "editing")
            result = text_edit_result(
                scene,
                selection,
                distiller,
                config,
                on_step=lambda *a: on_step(ctx, *a),
                should_stop=lambda: ctx.cancelled,
            )
            ctx.check()
            edited = result.scene

            def land(
                current: GaussianScene, _sel: torch.Tensor
            ) -> tuple[GaussianScene, torch.Tensor]:
                if current is not scene:
                    raise SceneChangedError(
                        "the scene changed while the edit ran; the edit was not applied"
                    )
                if config.densify:
                    # Row i of the result grew from row rows[i]: named selections follow it.
                    self.app.derive(scene, edited, index=result.rows, changed=result.mask)
                elif geometry:
                    self.app.derive(scene, edited, changed=selection)
                return edited, result.mask.cpu()

            state.apply(name, land, needs_selection=False)
            n = int(result.mask.sum())
            if config.densify:
                ctx.progress(1.0, f"{int(selection.sum())} Gaussians grew to {n}")
            else:
                ctx.progress(1.0, f"{n} Gaussians edited")
            return edited

        def done(job: Job) -> None:
            state.show_preview(None)  # after a cancel or failure: back to the scene as it is
            self.cancel_button.visible = False
            self.status.content = {
                JobStatus.DONE: f"Done: {config.prompt!r} (undo with Ctrl/Cmd+Z).",
                JobStatus.CANCELLED: "Cancelled; the scene is unchanged.",
            }.get(job.status, f"Failed: {job.error}")

        self.status.content = f"Editing {int(selection.sum()):,} Gaussians: {config.prompt!r}"
        if config.densify:
            self.status.content += " (growing geometry)"
        self.cancel_button.visible = True
        self.job = self.app.jobs.submit(name, job, on_done=done)
        return self.job

    def cancel(self) -> bool:
        job = self.job
        return job is not None and self.app.jobs.cancel(job)

    def _distiller(self, model: str) -> Distiller:
        with self._lock:
            if self._loaded is not None and self._loaded[0] == model:
                return self._loaded[1]
            self._loaded = None  # free the previous model before loading the next
        distiller = self.load_distiller(model)
        with self._lock:
            self._loaded = (model, distiller)
        return distiller
