"""The "File" folder: save the edited scene, or export only the selection, in any format scenelab
writes (INRIA .ply, PlayCanvas compressed .ply, .splat, Niantic .spz, SuperSplat .sog); save the
whole session as a project file (`editing.project`: history, selections, field, grasps,
bookmarks, settings) and open one.

Paths typed here are confined to the viewer's root folder (`app._paths.confine`); an existing
file — above all the scene's own input, and side files such as a .ply's `.json` sidecar — is only
replaced after the user confirms in a dialog, and opening a project over unsaved edits asks
first. Writing and reading run as jobs; `fields.save_scene` and `save_project` write atomically.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import viser

from editing.project import PROJECT_SUFFIX, is_project, load_project, save_project
from fields import ExportOptions, save_scene
from fields.formats import format_for_path, side_files

from .._paths import confine, display
from ._jobs import Job, JobContext
from ._state import NothingSelectedError

if TYPE_CHECKING:
    from ._app import ViewerApp

# Dropdown label -> (format name for `save_scene`, file name ending).
FORMATS: dict[str, tuple[str, str]] = {
    "ply": ("ply", ".ply"),
    "compressed ply": ("compressed-ply", ".compressed.ply"),
    "splat": ("splat", ".splat"),
    "spz": ("spz", ".spz"),
    "sog": ("sog", ".sog"),
}
SUFFIXES = tuple(end for _fmt, end in FORMATS.values())


def format_of(path: Path) -> str | None:
    """The format a file name asks for (`fields.formats.format_for_path`), or None."""
    try:
        return format_for_path(path)
    except ValueError:
        return None


def with_format(text: str, label: str) -> str:
    """`text` with its scene ending replaced by the one of format `label`."""
    end = FORMATS[label][1]
    low = text.lower()
    for other in sorted(SUFFIXES, key=len, reverse=True):
        if low.endswith(other):
            return text[: len(text) - len(other)] + end
    return text + end


class FilePanel:
    def __init__(self, app: ViewerApp) -> None:
        self.app = app
        gui = app.server.gui
        stem = app.state.source.name.split(".")[0] if app.state.source is not None else "scene"
        with gui.add_folder("File") as self.folder:
            self.path = gui.add_text(
                "Save as",
                f"{stem}_edited.ply",
                hint=f"A scene path inside {app.root}: .ply, .compressed.ply, .splat, .spz, .sog",
            )
            self.format = gui.add_dropdown(
                "Format",
                tuple(FORMATS),
                initial_value="ply",
                hint="ply keeps everything (SH, extras); compressed ply, spz and sog are the "
                "compact web formats (quantised); splat keeps base colour only.",
            )
            defaults = ExportOptions()
            self.spz_version = gui.add_dropdown(
                "SPZ version",
                ("2", "3", "4"),
                initial_value=str(defaults.spz_version),
                hint="3 is read by every SPZ viewer; 4 (zstd) is smaller and what splat-transform "
                "writes; 2 stores rotations coarsely.",
            )
            self.sog_iterations = gui.add_number(
                "SOG iterations",
                defaults.sog_iterations,
                min=1,
                max=100,
                step=1,
                hint="k-means rounds of the SOG SH palette: more is closer to the scene, slower.",
            )
            self.save_button = gui.add_button("Save scene")
            self.export_button = gui.add_button("Export selection")
            self.project_path = gui.add_text(
                "Project",
                self.default_project_path(),
                hint=f"A {PROJECT_SUFFIX} file inside {app.root}: the scene with its history, "
                "selections, features, grasps, bookmarks and settings.",
            )
            self.save_project_button = gui.add_button("Save project")
            self.open_project_button = gui.add_button("Open project")
        self.format.on_update(app.action("Format")(lambda _e: self._on_format()))
        self.path.on_update(app.action("Save as")(lambda _e: self._sync_format()))
        self.save_button.on_click(
            app.action("Save")(lambda e: self.save(self.path.value, client=e.client))
        )
        self.export_button.on_click(
            app.action("Export")(
                lambda e: self.save(self.path.value, selection_only=True, client=e.client)
            )
        )
        self.save_project_button.on_click(
            app.action("Save project")(
                lambda e: self.save_project(self.project_path.value, client=e.client)
            )
        )
        self.open_project_button.on_click(
            app.action("Open project")(
                lambda e: self.open_project(self.project_path.value, client=e.client)
            )
        )

    # ------------------------------------------------------------------ format widget
    def _on_format(self) -> None:
        new = with_format(str(self.path.value), str(self.format.value))
        if new != self.path.value:
            self.path.value = new

    def _sync_format(self) -> None:
        fmt = format_of(Path(str(self.path.value)))
        for label, (name, _end) in FORMATS.items():
            if name == fmt and self.format.value != label:
                self.format.value = label

    def export_options(self) -> ExportOptions:
        """The quality settings of the web formats, as the widgets hold them."""
        return ExportOptions(
            spz_version=int(self.spz_version.value),
            sog_iterations=max(1, int(self.sog_iterations.value)),
        )

    def default_project_path(self) -> str:
        if self.app.project_path is not None:
            return display(self.app.project_path, self.app.root)
        source = self.app.state.source
        stem = source.name.split(".")[0] if source is not None else "scene"
        return stem + PROJECT_SUFFIX

    # ------------------------------------------------------------------ scenes
    def resolve(self, text: str) -> tuple[Path, str]:
        """The absolute target for a typed path and its format; raises ValueError outside the
        root or for an unknown extension."""
        path = confine(text, self.app.root)
        fmt = format_of(path)
        if fmt is None:
            raise ValueError(
                f"{text!r}: save as .ply (INRIA, keeps SH and extras), .compressed.ply, .splat, "
                ".spz or .sog"
            )
        if path.is_dir():
            raise ValueError(f"{text!r} is a folder")
        return path, fmt

    def save(
        self,
        text: str,
        *,
        selection_only: bool = False,
        confirmed: bool = False,
        client: viser.ClientHandle | None = None,
    ) -> Job | None:
        """Start saving; returns the job, or None while waiting for the user to confirm an
        overwrite (without a browser to ask, an existing target raises FileExistsError)."""
        path, fmt = self.resolve(text)
        snap = self.app.state.snapshot()
        scene = snap.scene
        if selection_only:
            if snap.n_selected == 0:
                raise NothingSelectedError("Export: nothing is selected")
            scene = scene.subset(snap.selection)
        source = self.app.state.source
        is_input = source is not None and path == source.resolve()
        existing = [p for p in (path, *side_files(path, fmt)) if p.exists()]
        if (is_input or existing) and not confirmed:
            if is_input:
                what = "the scene's input file"
            elif existing[0] == path:
                what = "an existing file"
            else:
                what = f"not there, but its side file `{display(existing[0], self.app.root)}` is"
            confirm_overwrite(
                self.app,
                client,
                path,
                what,
                lambda: self.save(
                    text, selection_only=selection_only, confirmed=True, client=client
                ),
            )
            return None
        steps, index = self.app.state.history_steps()
        provenance: dict[str, object] = {"edits": steps[1 : index + 1]}
        if source is not None:
            provenance["edited_from"] = source.name
        scene = scene.with_meta(**provenance)
        shown = display(path, self.app.root)
        what = "selection" if selection_only else "scene"
        options = self.export_options()

        def job(ctx: JobContext) -> Path:
            ctx.progress(0.05, f"writing {len(scene):,} Gaussians to {shown} ({fmt})")
            path.parent.mkdir(parents=True, exist_ok=True)  # inside the root: `path` is confined
            out = save_scene(scene, path, format=fmt, overwrite=confirmed, options=options)
            if not selection_only:
                self.app.state.set_source(out)  # the Features panel names its file after it
                self.app.mark_saved()
            ctx.progress(1.0, f"Saved the {what} ({len(scene):,} Gaussians) to {shown}")
            return out

        return self.app.jobs.submit(f"Save {what}", job)

    # ------------------------------------------------------------------ projects
    def resolve_project(self, text: str) -> Path:
        path = confine(text, self.app.root)
        if not path.name.lower().endswith(PROJECT_SUFFIX):
            raise ValueError(f"{text!r}: a project file ends in {PROJECT_SUFFIX}")
        if path.is_dir():
            raise ValueError(f"{text!r} is a folder")
        return path

    def save_project(
        self, text: str, *, confirmed: bool = False, client: viser.ClientHandle | None = None
    ) -> Job | None:
        """Save the session as a project (a job), or None while asking to overwrite (without a
        browser to ask, an existing file raises FileExistsError)."""
        path = self.resolve_project(text)
        shown = display(path, self.app.root)
        if path.exists() and not confirmed:
            confirm_overwrite(
                self.app,
                client,
                path,
                "an existing file",
                lambda: self.save_project(text, confirmed=True, client=client),
                title="Save project",
            )
            return None
        project = self.app.project()  # what the user sees now, not after later edits
        steps = len(project.history.steps)
        budget = self.app.config.history_bytes

        def job(ctx: JobContext) -> Path:
            ctx.progress(0.05, f"writing {shown} ({steps} history states)")
            out = save_project(project, path, overwrite=confirmed, max_history_bytes=budget)
            self.app.mark_saved(project_path=out)
            if self.project_path.value != shown:
                self.project_path.value = shown
            ctx.progress(1.0, f"Saved the project to {shown}")
            return out

        return self.app.jobs.submit("Save project", job, on_done=self._tell("Project saved"))

    def open_project(
        self, text: str, *, confirmed: bool = False, client: viser.ClientHandle | None = None
    ) -> Job | None:
        """Open a project in place of the session (a job), or None while asking whether to
        discard unsaved edits (without a browser to ask, raises RuntimeError)."""
        path = self.resolve_project(text)
        shown = display(path, self.app.root)
        if not path.is_file():
            raise FileNotFoundError(f"no project file at {shown}")
        if not is_project(path):
            raise ValueError(f"{shown} is not a scenelab project")
        if self.app.unsaved_edits > 0 and not confirmed:
            if client is None:
                raise RuntimeError(
                    f"{self.app.unsaved_edits} unsaved edit(s) would be lost; confirm to open"
                )
            confirm_discard(
                self.app,
                client,
                self.app.unsaved_edits,
                lambda: self.open_project(text, confirmed=True, client=client),
            )
            return None

        def job(ctx: JobContext):
            ctx.progress(0.05, f"reading {shown}")
            project = load_project(path)
            ctx.check()
            ctx.progress(0.8, "opening")
            self.app.open_project(project, path=path)
            ctx.progress(1.0, f"Opened {shown} ({len(project.history.current):,} Gaussians)")
            return project

        return self.app.jobs.submit("Open project", job, on_done=self._tell("Project opened"))

    def _tell(self, title: str) -> Callable[[Job], None]:
        def done(job: Job) -> None:
            if job.error is not None:
                self.app.notify(f"{job.name} failed", job.error, color="red", seconds=None)
            elif job.status.value == "done":
                self.app.notify(title, job.text, seconds=4.0)

        return done


def confirm_overwrite(
    app: ViewerApp,
    client: viser.ClientHandle | None,
    path: Path,
    what: str,
    then: Callable[[], object],
    title: str = "Save",
) -> None:
    """Ask in `client`'s browser whether to replace `path` (`what` it is); run `then` on yes.
    Errors in `then` become a notification titled `title`. Without a browser to ask (`client`
    None: a script or test) nothing is replaced: FileExistsError."""
    shown = display(path, app.root)
    if client is None:
        raise FileExistsError(f"{shown} is {what}; confirm to overwrite")
    with client.gui.add_modal("Overwrite?") as modal:
        client.gui.add_markdown(f"`{shown}` is {what}. Replace it?")
        yes = client.gui.add_button("Overwrite", color="red")
        no = client.gui.add_button("Cancel")

    @yes.on_click
    def _(_e) -> None:
        modal.close()
        app.action(title)(lambda _e2: then())(_e)

    @no.on_click
    def _(_e) -> None:
        modal.close()


def confirm_discard(
    app: ViewerApp, client: viser.ClientHandle, edits: int, then: Callable[[], object]
) -> None:
    """Ask in `client`'s browser whether to drop `edits` unsaved edits; run `then` on yes."""
    with client.gui.add_modal("Discard unsaved edits?") as modal:
        client.gui.add_markdown(
            f"{edits} edit(s) since the last save would be lost. Open the project anyway?"
        )
        yes = client.gui.add_button("Discard and open", color="red")
        no = client.gui.add_button("Cancel")

    @yes.on_click
    def _(_e) -> None:
        modal.close()
        app.action("Open project")(lambda _e2: then())(_e)

    @no.on_click
    def _(_e) -> None:
        modal.close()
