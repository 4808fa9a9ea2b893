"""The "Radiance field" folder, shown while the viewer shows a NeRF: what it is, how the server
draws it (preview and full frame sizes), and "Convert to Gaussians" — a job
(`fields.nerf.nerf_to_gaussians`, progress and cancel in the job strip) that swaps the converted
Gaussians in, after which every Gaussian tool (selection, edits, features, objects, text edits,
insertion, grasps, saving) appears and this folder goes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._jobs import Job, JobCancelled, JobContext
from ._nerf_view import MIN_PREVIEW_SIDE

if TYPE_CHECKING:
    from ._app import ViewerApp

GAUSSIAN_TOOLS_NOTE = (
    "Selection, edits, features, objects, text edits, insertion, grasps and saving work on "
    "Gaussians: **Convert to Gaussians** first."
)


class NerfPanel:
    def __init__(self, app: ViewerApp) -> None:
        self.app = app
        self.job: Job | None = None
        gui = app.server.gui
        with gui.add_folder("Radiance field") as self.folder:
            self.info = gui.add_markdown("")
            self.preview_px = gui.add_slider(
                "Preview px",
                min(MIN_PREVIEW_SIDE, app.nerf_preview_side),
                max(128, app.nerf_preview_side),
                8,
                app.nerf_preview_side,
                hint="Long side of the frames drawn while the camera moves (lowered "
                "automatically when they render slowly).",
            )
            self.frame_px = gui.add_slider(
                "Frame px",
                min(128, app.nerf_frame_side),
                max(1024, app.nerf_frame_side),
                32,
                app.nerf_frame_side,
                hint="Long side of the frame drawn once the camera rests (bigger: sharper, "
                "slower; never above the browser's canvas).",
            )
            self.budget = gui.add_number(
                "Convert minutes",
                5.0,
                min=0.1,
                step=0.5,
                hint="Time budget of the conversion to Gaussians (teacher renders included).",
            )
            self.convert_button = gui.add_button(
                "Convert to Gaussians",
                hint="Distil the NeRF into Gaussians (PVD) as a job, then show them with every "
                "Gaussian tool.",
            )
            gui.add_markdown(GAUSSIAN_TOOLS_NOTE)
        self.preview_px.on_update(
            app.action("Preview px")(
                lambda _e: app.set_nerf_sides(preview=int(self.preview_px.value))
            )
        )
        self.frame_px.on_update(
            app.action("Frame px")(lambda _e: app.set_nerf_sides(full=int(self.frame_px.value)))
        )
        self.convert_button.on_click(app.action("Convert to Gaussians")(lambda _e: self.convert()))
        self.refresh()

    def refresh(self) -> None:
        """The read-out: the field's occupancy, training and scores."""
        nerf = self.app.nerf
        if nerf is None:
            self.info.content = "No NeRF shown."
            return
        meta = nerf.meta
        lines = [f"**NeRF** · occupancy {100 * nerf.occupied_fraction():.1f} %"]
        training = meta.get("training") if isinstance(meta.get("training"), dict) else {}
        if training.get("steps"):
            lines.append(f"Trained {int(training['steps']):,} steps")
        metrics = meta.get("metrics") if isinstance(meta.get("metrics"), dict) else {}
        if isinstance(metrics.get("psnr"), int | float):
            lines.append(f"Held-out PSNR {float(metrics['psnr']):.2f} dB")
        lines.append("Feature branch: " + ("yes" if nerf.has_features else "none"))
        text = "  \n".join(lines)
        if self.info.content != text:
            self.info.content = text

    # ------------------------------------------------------------------ actions (also for tests)
    def convert(self, config: Any = None) -> Job:
        """Convert the shown NeRF to Gaussians as a job, then swap them in. `config`: a
        `fields.nerf.ConvertConfig` (default: the folder's time budget)."""
        from fields.nerf import ConvertConfig, nerf_to_gaussians

        nerf = self.app.nerf
        if nerf is None:
            raise ValueError("no NeRF is shown")
        if self.job is not None and not self.job.status.finished:
            raise RuntimeError("a conversion is already running")
        if config is None:
            config = ConvertConfig(time_budget_min=float(self.budget.value))

        def job(ctx: JobContext) -> int:
            ctx.progress(0.0, "rendering the NeRF's views")
            try:
                gaussians = nerf_to_gaussians(
                    nerf, config, on_progress=ctx.progress, should_stop=lambda: ctx.cancelled
                )
            except InterruptedError:
                if ctx.cancelled:
                    raise JobCancelled() from None
                raise
            ctx.check()
            field = converted_field(gaussians, nerf)
            if self.app.nerf is not nerf:
                raise RuntimeError("the NeRF changed while converting; convert again")
            self.app.show_gaussians(gaussians, "converted from NeRF", field=field)
            ctx.progress(1.0, f"Converted to {len(gaussians):,} Gaussians")
            return len(gaussians)

        self.convert_button.disabled = True

        def done(_job: Job) -> None:
            self.convert_button.disabled = False

        self.job = self.app.jobs.submit("Convert to Gaussians", job, on_done=done)
        return self.job


def converted_field(gaussians: Any, nerf: Any) -> Any:
    """The `FeatureField` a conversion's Gaussians carry (None without a feature branch)."""
    if not nerf.has_features or nerf.feature_field is None:
        return None
    from fields.nerf import converted_feature_field

    return converted_feature_field(gaussians, nerf)
