"""Two small sub-folders that a project keeps: "Named selections" (in the Selection folder:
save the selection under a name, restore it, delete it) and "Bookmarks" (in the View folder: add
the browser's camera under a name, go back to it, delete it). The data lives in `ViewerState`
(`save_named`, `add_bookmark`, ...); these widgets only drive it and follow its changes."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import viser

from editing.project import Bookmark

from ._state import BOOKMARKS, NAMED, PROJECT, SCENE

if TYPE_CHECKING:
    from ._app import ViewerApp

NONE = "(none)"  # a dropdown needs one option


class NamedSelectionsUI:
    """Build inside the Selection folder."""

    def __init__(self, app: ViewerApp) -> None:
        self.app = app
        gui = app.server.gui
        with gui.add_folder("Named selections", expand_by_default=False) as self.folder:
            self.name = gui.add_text("Name", "", hint="Name for the current selection.")
            self.save_button = gui.add_button("Save selection as…")
            self.choice = gui.add_dropdown("Saved", (NONE,), initial_value=NONE)
            self.restore_button = gui.add_button(
                "Restore", hint="Combine the saved selection into the selection (Combine mode)."
            )
            self.delete_button = gui.add_button("Forget name")
        self.save_button.on_click(
            app.action("Save selection")(lambda _e: self.save(str(self.name.value)))
        )
        self.restore_button.on_click(
            app.action("Restore selection")(lambda _e: self.restore(str(self.choice.value)))
        )
        self.delete_button.on_click(
            app.action("Delete named selection")(lambda _e: self.delete(str(self.choice.value)))
        )
        app.state.on_change(self._on_state)
        self.refresh()

    def save(self, name: str) -> int:
        name = name.strip()
        if not name:
            raise ValueError("type a name for the selection first")
        n = self.app.state.save_named(name)
        self.choice.value = name
        self.app.notify("Selection saved", f"{name!r}: {n:,} Gaussians", seconds=3.0)
        return n

    def restore(self, name: str) -> int:
        if name == NONE:
            raise ValueError("no named selection is chosen")
        state = self.app.state
        return state.restore_named(name, state.combine_mode)

    def delete(self, name: str) -> None:
        if name == NONE:
            raise ValueError("no named selection is chosen")
        self.app.state.delete_named(name)

    def _on_state(self, kind: str) -> None:
        if kind in (NAMED, PROJECT, SCENE):
            dropped = self.app.state.dropped_named
            if kind == NAMED and dropped:
                self.app.notify(
                    "Named selections",
                    f"This edit changed the Gaussians in a way they cannot follow: "
                    f"{', '.join(dropped)} are not kept here (undo brings them back).",
                    color="yellow",
                )
            self.refresh()

    def refresh(self) -> None:
        names = tuple(sorted(self.app.state.named_selections)) or (NONE,)
        if tuple(self.choice.options) != names:
            current = self.choice.value
            self.choice.options = names
            self.choice.value = current if current in names else names[0]
        empty = names == (NONE,)
        self.restore_button.disabled = empty
        self.delete_button.disabled = empty


def bookmark_from_camera(name: str, camera: viser.CameraHandle) -> Bookmark:
    """A bookmark of a browser's camera (viser: world frame, vertical fov in radians)."""
    return Bookmark(
        name=name,
        position=tuple(float(x) for x in camera.position),
        look_at=tuple(float(x) for x in camera.look_at),
        up=tuple(float(x) for x in camera.up_direction),
        fov_deg=float(math.degrees(camera.fov)),
    )


def go_to(client: viser.ClientHandle, bookmark: Bookmark) -> None:
    """Move one browser's camera to `bookmark`."""
    with client.atomic():
        client.camera.up_direction = np.asarray(bookmark.up, dtype=np.float64)
        client.camera.position = np.asarray(bookmark.position, dtype=np.float64)
        client.camera.look_at = np.asarray(bookmark.look_at, dtype=np.float64)
        client.camera.fov = math.radians(bookmark.fov_deg)


class BookmarksUI:
    """Build inside the View folder."""

    def __init__(self, app: ViewerApp) -> None:
        self.app = app
        gui = app.server.gui
        with gui.add_folder("Bookmarks", expand_by_default=False) as self.folder:
            self.name = gui.add_text("Name", "view 1", hint="Name for this browser's camera.")
            self.add_button = gui.add_button("Add bookmark", hint="Keep the current camera.")
            self.choice = gui.add_dropdown("Bookmark", (NONE,), initial_value=NONE)
            self.go_button = gui.add_button("Go to")
            self.delete_button = gui.add_button("Remove bookmark")
        self.add_button.on_click(
            app.action("Add bookmark")(lambda e: self.add(str(self.name.value), e.client))
        )
        self.go_button.on_click(
            app.action("Go to bookmark")(lambda e: self.go(str(self.choice.value), e.client))
        )
        self.delete_button.on_click(
            app.action("Delete bookmark")(lambda _e: self.delete(str(self.choice.value)))
        )
        app.state.on_change(self._on_state)
        self.refresh()

    def add(self, name: str, client: viser.ClientHandle) -> Bookmark:
        name = name.strip()
        if not name:
            raise ValueError("type a name for the bookmark first")
        bookmark = bookmark_from_camera(name, client.camera)
        self.app.state.add_bookmark(bookmark)
        self.choice.value = name
        self.name.value = _next_name(name, [b.name for b in self.app.state.bookmarks])
        return bookmark

    def go(self, name: str, client: viser.ClientHandle) -> None:
        if name == NONE:
            raise ValueError("no bookmark is chosen")
        go_to(client, self.app.state.bookmark(name))

    def delete(self, name: str) -> None:
        if name == NONE:
            raise ValueError("no bookmark is chosen")
        self.app.state.delete_bookmark(name)

    def _on_state(self, kind: str) -> None:
        if kind in (BOOKMARKS, PROJECT):
            self.refresh()

    def refresh(self) -> None:
        names = tuple(b.name for b in self.app.state.bookmarks) or (NONE,)
        if tuple(self.choice.options) != names:
            current = self.choice.value
            self.choice.options = names
            self.choice.value = current if current in names else names[-1]
        empty = names == (NONE,)
        self.go_button.disabled = empty
        self.delete_button.disabled = empty


def _next_name(name: str, taken: list[str]) -> str:
    """'view 2' after 'view 1' (the first free number)."""
    stem = name.rstrip("0123456789").rstrip() or "view"
    i = 1
    while f"{stem} {i}" in taken:
        i += 1
    return f"{stem} {i}"
