"""The "Click segmentation" folder: SAM prompts on the rendered feature field, lifted to 3D.

Mode positive / negative: a click in the scene adds a point prompt; mode box: a dragged rectangle
is the box prompt. The prompts of one view go together (moving the camera starts a new prompt
set). A thin user of `fields.features.ClickSegmenter`: `set_view` (the field's SAM embedding of
the view, the Gaussians it sees) when the prompt view changes, `predict` per prompt change (a
job), `regrow` for the granularity slider (no render).

Scene clicks are one owner's at a time (`ViewerState.pointer`): turning a mode on takes the
pointer from the selection tool or another panel, and any of those taking it turns the mode
off. Without
SAM weights the folder says which file is missing and how to pass it; the model-free selection
tools do not depend on it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import viser
from torch import Tensor

from fields import Camera, GaussianScene
from fields.features import ClickResult, ClickSegmenter

from ._camera import click_pixel, client_camera
from ._panel_features import sam_model_type
from ._panel_query import LiveSelection
from ._state import FIELD, shown_mask

if TYPE_CHECKING:
    from ._app import ViewerApp

MODES = ("off", "positive", "negative", "box")
# Long side of the view the pipeline runs on: SAM's mask comes back at this size and the lift
# renders it once with a backward pass, so it bounds the cost of a click on a CPU server.
SEGMENT_SIDE = 320


@dataclass
class Prompts:
    camera: Camera
    points: list[tuple[float, float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    box: tuple[float, float, float, float] | None = None

    def empty(self) -> bool:
        return not self.points and self.box is None


class ClickPanel:
    def __init__(self, app: ViewerApp) -> None:
        self.app = app
        self.state = app.state
        self.options = app.feature_options
        self._decoder: Any = self.options.sam_decoder
        self._decoder_lock = threading.Lock()
        self.prompts: Prompts | None = None
        self.segmenter: ClickSegmenter | None = None
        self.lift: ClickResult | None = None  # the last click's result
        self._lift_scene: GaussianScene | None = None
        self._seg_scene: GaussianScene | None = None
        self.live = LiveSelection(app.state)
        self._mode = "off"
        gui = app.server.gui
        with gui.add_folder("Click segmentation") as self.folder:
            self.mode = gui.add_dropdown(
                "Prompt",
                MODES,
                initial_value="off",
                hint="positive / negative: click the scene; box: drag a rectangle.",
            )
            self.granularity = gui.add_slider(
                "Granularity",
                0.0,
                1.0,
                0.01,
                0.5,
                hint="Shrink (left) or grow (right) the selection by feature affinity.",
            )
            self.clear_button = gui.add_button("Clear prompts")
            self.status = gui.add_markdown("")
        self.mode.on_update(app.action("Prompt mode")(lambda _e: self.set_mode(self.mode.value)))
        self.granularity.on_update(
            app.action("Granularity")(lambda _e: self.regrow(float(self.granularity.value)))
        )
        self.clear_button.on_click(app.action("Clear prompts")(lambda _e: self.clear()))
        app.state.on_change(lambda kind: self._sync() if kind == FIELD else None)
        self._sync()

    # ------------------------------------------------------------------ availability
    def unavailable(self) -> str | None:
        """Why click segmentation cannot run (None when it can)."""
        field = self.state.current_field()
        if field is None:
            return "Lift or load features (with a SAM head) to segment by clicks."
        if "sam" not in field.heads:
            return (
                "These features have no SAM head: distil them with the SAM teacher "
                "(teachers clip+sam) to segment by clicks."
            )
        if self._decoder is not None:
            return None
        checkpoint = self.options.sam_checkpoint
        if checkpoint is None or not checkpoint.expanduser().is_file():
            try:
                from fields.features import load_sam

                load_sam(sam_model_type(self.options, self.state.field), checkpoint)
            except Exception as e:  # MissingWeightsError, or segment-anything not installed
                return f"**SAM weights missing.** {e}"
        return None

    def _sync(self) -> None:
        why = self.unavailable()
        for h in (self.mode, self.granularity, self.clear_button):
            h.disabled = why is not None
        self.status.content = why or "Pick a prompt mode, then click the object."
        if why is not None and self._mode != "off":
            self.set_mode("off")

    def _decoder_or_load(self):
        with self._decoder_lock:
            if self._decoder is None:
                from fields.features import SamDecoder, load_sam

                o = self.options
                sam = load_sam(
                    sam_model_type(o, self.state.field), o.sam_checkpoint, device=o.device
                )
                self._decoder = SamDecoder(sam)
            return self._decoder

    # ------------------------------------------------------------------ pointer plumbing
    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown prompt mode {mode!r}; expected one of {MODES}")
        if mode != "off":
            why = self.unavailable()
            if why is not None:
                raise RuntimeError(why.replace("**", ""))
        pointer = self.state.pointer
        if mode != "off":
            pointer.claim("click", lambda: self.set_mode("off"))
        else:
            pointer.release("click")
        scene_api = self.app.server.scene
        scene_api.remove_click_callback(self._on_click)
        scene_api.remove_rect_select_callback(self._on_rect)
        self._mode = mode
        if mode != "off":
            if mode == "box":
                scene_api.on_rect_select()(self._on_rect)
            else:
                scene_api.on_click()(self._on_click)
        if self.mode.value != mode:
            self.mode.value = mode

    def _on_click(self, event: viser.SceneClickEvent) -> None:
        @self.app.action("Click segmentation")
        def run(_e: object) -> None:
            cam, u, v = click_pixel(event, max_side=SEGMENT_SIDE)
            self.add_point(cam, u, v, self._mode != "negative")

        run(event)

    def _on_rect(self, event: viser.SceneRectSelectEvent) -> None:
        @self.app.action("Box prompt")
        def run(_e: object) -> None:
            cam = client_camera(event.client.camera, max_side=SEGMENT_SIDE)
            (u0, v0), (u1, v1) = event.screen_min, event.screen_max
            self.set_box(cam, (u0 * cam.width, v0 * cam.height, u1 * cam.width, v1 * cam.height))

        run(event)

    # ------------------------------------------------------------------ actions (also for tests)
    def _prompts_for(self, camera: Camera) -> Prompts:
        p = self.prompts
        same = (
            p is not None
            and (p.camera.width, p.camera.height) == (camera.width, camera.height)
            and torch.allclose(p.camera.viewmat, camera.viewmat, atol=1e-6)
            and torch.allclose(p.camera.K, camera.K, atol=1e-6)
        )
        if not same:
            self.prompts = p = Prompts(camera)
            self.live.reset()  # a new view, a new object: combine with the selection anew
        assert p is not None
        return p

    def add_point(self, camera: Camera, u: float, v: float, positive: bool = True):
        """Add a point prompt at pixel (u, v) of `camera` and segment (a job, returned)."""
        p = self._prompts_for(camera)
        p.points.append((float(u), float(v)))
        p.labels.append(1 if positive else 0)
        return self.segment()

    def set_box(self, camera: Camera, box: tuple[float, float, float, float]):
        """Set the box prompt (pixels of `camera`) and segment (a job, returned)."""
        p = self._prompts_for(camera)
        p.box = tuple(float(x) for x in box)  # type: ignore[assignment]
        return self.segment()

    def clear(self) -> None:
        self.prompts = None
        self.segmenter = self._seg_scene = None
        self.lift = None
        self.live.reset()
        self.status.content = "Prompts cleared."

    def segment(self, mode: str | None = None):
        """Run the segmenter on the current prompts as a job; the result becomes the selection."""
        why = self.unavailable()
        if why is not None:
            raise RuntimeError(why.replace("**", ""))
        prompts = self.prompts
        if prompts is None or prompts.empty():
            raise ValueError("add a click or a box first")
        scene = self.state.scene
        field = self.state.current_field()
        assert field is not None
        mode = mode or self.state.combine_mode
        points = list(prompts.points) or None
        labels = list(prompts.labels) or None
        box, cam = prompts.box, prompts.camera
        granularity = float(self.granularity.value)

        def job(ctx):
            ctx.progress(0.05, "loading SAM")
            decoder = self._decoder_or_load()
            ctx.check()
            seg = self.segmenter
            if seg is None or self._seg_scene is not scene or seg.decoder is not decoder:
                seg = ClickSegmenter(scene, field, decoder)  # one per scene state
                self.segmenter, self._seg_scene = seg, scene
            if seg.camera is not cam:
                ctx.progress(0.2, "rendering the SAM embedding of the view")
                seg.set_view(cam)
            ctx.check()
            ctx.progress(0.5, "segmenting")
            res = seg.predict(points=points, labels=labels, box=box, granularity=granularity)
            self.lift, self._lift_scene = res, scene
            return self._select(res.mask3d, res.timings, mode)

        return self.app.jobs.submit("Click segmentation", job)

    def regrow(self, granularity: float, mode: str | None = None) -> int:
        """Grow or shrink the last click's selection by feature affinity (no render)."""
        seg, lift = self.segmenter, self.lift
        if seg is None or lift is None:
            return self.state.n_selected
        if self.state.scene is not self._lift_scene:
            self.lift = None
            raise ValueError("the scene changed since the click; click again")
        t = _Timer()
        mask = seg.regrow(granularity) & shown_mask(self.state.scene)
        t.lap("growth_ms")
        timings = {
            k: v for k, v in lift.timings.items() if k in ("view_ms", "decoder_ms", "lift_ms")
        }
        return self._select(mask, {**timings, **t.laps}, mode)

    def _select(self, mask: Tensor, timings: dict[str, float], mode: str | None) -> int:
        n = self.live.apply(mask, mode or self.state.combine_mode)
        ms = {
            k: v
            for k, v in timings.items()
            if k.endswith("_ms") and k not in ("click_ms", "total_ms")
        }
        score = self.lift.score if self.lift is not None else float("nan")
        self.status.content = (
            f"{int(mask.sum()):,} Gaussians (SAM score {score:.2f}; "
            f"{sum(ms.values()):.0f} ms: "
            + ", ".join(f"{k[:-3]} {v:.0f}" for k, v in ms.items())
            + ")"
        )
        return n


class _Timer:
    def __init__(self) -> None:
        import time

        self._clock = time.perf_counter
        self._t = self._clock()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = self._clock()
        self.laps[name] = 1e3 * (now - self._t)
        self._t = now
