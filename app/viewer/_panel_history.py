"""The "History" folder: undo / redo buttons, the list of steps with the current one marked, and
keyboard shortcuts (viser commands: Ctrl/Cmd+Z, Ctrl/Cmd+Shift+Z or Ctrl/Cmd+Y, Delete)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._state import SCENE

if TYPE_CHECKING:
    from ._app import ViewerApp

MAX_LISTED = 12


def history_markdown(steps: list[str], index: int) -> str:
    """Steps oldest first; the current one bold with an arrow, undone ones struck through."""
    lines = []
    first = max(0, len(steps) - MAX_LISTED)
    if first:
        lines.append(f"… {first} older step(s)")
    for i in range(first, len(steps)):
        name = steps[i].replace("|", "/")
        # "i · name", not "i. name": markdown would turn the latter into a list.
        if i == index:
            lines.append(f"**▶ {i} · {name}**")
        elif i > index:
            lines.append(f"~~{i} · {name}~~")
        else:
            lines.append(f"{i} · {name}")
    return "  \n".join(lines)


class HistoryPanel:
    def __init__(self, app: ViewerApp) -> None:
        self.app = app
        gui = app.server.gui
        with gui.add_folder("History") as self.folder:
            self.undo_button = gui.add_button("Undo", disabled=True)
            self.redo_button = gui.add_button("Redo", disabled=True)
            self.steps = gui.add_markdown("")
        undo = app.action("Undo")(lambda _e: self.undo())
        redo = app.action("Redo")(lambda _e: self.redo())
        self.undo_button.on_click(undo)
        self.redo_button.on_click(redo)
        self.commands = [
            gui.add_command("Undo", hotkey="Z", modifier="cmd/ctrl"),
            gui.add_command("Redo", hotkey="Z", modifier="cmd/ctrl+shift"),
            gui.add_command("Redo (Ctrl+Y)", hotkey="Y", modifier="cmd/ctrl"),
            gui.add_command(
                "Delete selection", hotkey="delete", description="Delete the selected Gaussians"
            ),
        ]
        self.commands[0].on_trigger(undo)
        self.commands[1].on_trigger(redo)
        self.commands[2].on_trigger(redo)
        self.commands[3].on_trigger(app.action("Delete")(lambda _e: app.edit_panel.delete()))
        app.state.on_change(self._on_state_change)
        self.refresh()

    def undo(self) -> bool:
        done = self.app.state.undo()
        if not done:
            self.app.notify("Undo", "Nothing to undo.", seconds=2.0)
        return done

    def redo(self) -> bool:
        done = self.app.state.redo()
        if not done:
            self.app.notify("Redo", "Nothing to redo.", seconds=2.0)
        return done

    def _on_state_change(self, kind: str) -> None:
        if kind == SCENE:
            self.refresh()

    def refresh(self) -> None:
        steps, index = self.app.state.history_steps()
        self.steps.content = history_markdown(steps, index)
        self.undo_button.disabled = index == 0
        self.redo_button.disabled = index >= len(steps) - 1
