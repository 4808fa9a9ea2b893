"""The "File" folder: save the edited scene, or export only the selection, as INRIA .ply or
.splat. Paths typed here are confined to the viewer's root folder (`app._paths.confine`); an
existing file — above all the scene's own input — is only replaced after the user confirms in a
dialog. Writing runs as a job; `fields.save_scene` makes it atomic and writes the JSON sidecar
that carries extras and meta."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import viser

from fields import save_scene

from .._paths import confine, display
from ._jobs import Job, JobContext
from ._state import NothingSelectedError

if TYPE_CHECKING:
    from ._app import ViewerApp

SUFFIXES = (".ply", ".splat")


class FilePanel:
    def __init__(self, app: ViewerApp) -> None:
        self.app = app
        gui = app.server.gui
        stem = app.state.source.stem if app.state.source is not None else "scene"
        with gui.add_folder("File") as self.folder:
            self.path = gui.add_text(
                "Save as",
                f"{stem}_edited.ply",
                hint=f"A .ply or .splat path inside {app.root}",
            )
            self.save_button = gui.add_button("Save scene")
            self.export_button = gui.add_button("Export selection")
        self.save_button.on_click(
            app.action("Save")(lambda e: self.save(self.path.value, client=e.client))
        )
        self.export_button.on_click(
            app.action("Export")(
                lambda e: self.save(self.path.value, selection_only=True, client=e.client)
            )
        )

    def resolve(self, text: str) -> Path:
        """The absolute target for a typed path; raises ValueError outside the root or for an
        unknown extension."""
        path = confine(text, self.app.root)
        if path.suffix.lower() not in SUFFIXES:
            raise ValueError(f"{text!r}: save as .ply (INRIA, keeps SH and extras) or .splat")
        if path.is_dir():
            raise ValueError(f"{text!r} is a folder")
        return path

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
        path = self.resolve(text)
        snap = self.app.state.snapshot()
        scene = snap.scene
        if selection_only:
            if snap.n_selected == 0:
                raise NothingSelectedError("Export: nothing is selected")
            scene = scene.subset(snap.selection)
        source = self.app.state.source
        is_input = source is not None and path == source.resolve()
        if (is_input or path.exists()) and not confirmed:
            what = "the scene's input file" if is_input else "an existing file"
            if client is None:
                raise FileExistsError(
                    f"{display(path, self.app.root)} is {what}; confirm to overwrite"
                )
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

        def job(ctx: JobContext) -> Path:
            ctx.progress(0.05, f"writing {len(scene):,} Gaussians to {shown}")
            path.parent.mkdir(parents=True, exist_ok=True)  # inside the root: `path` is confined
            out = save_scene(scene, path, overwrite=confirmed)
            if not selection_only:
                self.app.state.set_source(out)  # the Features panel names its file after it
            ctx.progress(1.0, f"Saved the {what} ({len(scene):,} Gaussians) to {shown}")
            return out

        return self.app.jobs.submit(f"Save {what}", job)


def confirm_overwrite(
    app: ViewerApp,
    client: viser.ClientHandle,
    path: Path,
    what: str,
    then: Callable[[], object],
    title: str = "Save",
) -> None:
    """Ask in `client`'s browser whether to replace `path` (`what` it is); run `then` on yes.
    Errors in `then` become a notification titled `title`."""
    shown = display(path, app.root)
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
