"""The "Objects" folder: the scene cut into named objects ("segment everything").

"Find objects" runs `fields.features.list_objects` on the current features as a job; the answer
is one button per object ("name · count · score"), largest first, and clicking one selects that
object (combined by the state's combine mode). The extra-vocabulary box adds words to the names
objects are chosen from (comma-separated).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from fields import GaussianScene
from fields.features import list_objects, split_terms

from ._state import FIELD

if TYPE_CHECKING:
    from ._app import ViewerApp

MAX_ROWS = 40  # buttons shown; the rest are summarised in the status


class ObjectsPanel:
    def __init__(self, app: ViewerApp) -> None:
        self.app = app
        self.state = app.state
        self.objects: Any = None  # the last `ObjectList`
        self._scene: GaussianScene | None = None  # the scene it was found on
        self.rows: list[Any] = []  # one button per object
        gui = app.server.gui
        with gui.add_folder("Objects", expand_by_default=False) as self.folder:
            self.vocabulary = gui.add_text(
                "Extra words",
                "",
                hint="More names to choose from (comma-separated), besides the built-in "
                "vocabulary and the field's own label names.",
            )
            self.find_button = gui.add_button("Find objects")
            self.status = gui.add_markdown("")
        self.find_button.on_click(app.action("Find objects")(lambda _e: self.find()))
        app.state.on_change(lambda kind: self._sync() if kind == FIELD else None)
        self._sync()

    def _sync(self) -> None:
        ok = self.state.text_query() is not None
        self.find_button.disabled = not ok
        if not ok:
            self.status.content = "Lift or load features (with a language head) to list objects."
        elif self.objects is None:
            self.status.content = "**Find objects** cuts the scene into named objects."

    # ------------------------------------------------------------------ actions (also for tests)
    def find(self, vocabulary: str | None = None):
        """List the objects of the current scene as a job (returned; its result is the list)."""
        tq = self.state.text_query()
        field = self.state.current_field()
        if tq is None or field is None:
            raise ValueError("no features with a language head: lift or load them first")
        scene = self.state.scene
        words = split_terms(self.vocabulary.value if vocabulary is None else vocabulary)

        def job(ctx):
            ctx.progress(0.1, "clustering the features")
            objects = list_objects(
                field, scene.means, scene.opacities, tq.encode, tq.space, words, level=0
            )
            ctx.check()
            self.objects, self._scene = objects, scene
            self._show_rows()
            return objects

        self.status.content = "Finding objects…"
        return self.app.jobs.submit("Find objects", job)

    def select_row(self, index: int, mode: str | None = None) -> int:
        """Select object `index` of the last list (combined by `mode`, default the state's)."""
        if self.objects is None:
            raise ValueError("find objects first")
        scene = self.state.scene
        if self._scene is not scene and len(scene) != self.objects.num_gaussians:
            raise ValueError("the scene changed since the objects were found; find them again")
        obj = self.objects[index]
        mask = torch.zeros(len(scene), dtype=torch.bool)
        mask[obj.indices] = True
        return self.state.select(mask, mode or self.state.combine_mode)

    # ------------------------------------------------------------------ widgets
    def _show_rows(self) -> None:
        for button in self.rows:
            button.remove()
        self.rows = []
        objects = self.objects
        gui = self.app.server.gui
        with self.folder:
            for i, obj in enumerate(list(objects)[:MAX_ROWS]):
                button = gui.add_button(row_label(obj))
                button.on_click(
                    self.app.action("Select object")(lambda _e, i=i: self.select_row(i))
                )
                self.rows.append(button)
        more = f" ({len(objects) - MAX_ROWS} more not shown)" if len(objects) > MAX_ROWS else ""
        self.status.content = (
            f"{len(objects)} objects{more}; click one to select it."
            if len(objects)
            else "No objects found."
        )


def row_label(obj: Any) -> str:
    return f"{obj.name} · {obj.count:,} · {obj.score:.2f}"
