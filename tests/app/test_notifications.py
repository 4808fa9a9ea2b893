"""Notifications stay few, short and temporary: a browser shows at most `MAX_NOTES`, a repeat
replaces its twin, long reasons are cut, and errors close by themselves too."""

from __future__ import annotations

import pytest

from app.viewer import ViewerApp, ViewerConfig
from app.viewer._app import ERROR_NOTE_S, MAX_NOTE_CHARS, MAX_NOTES

from .conftest import blob_scene


class FakeNote:
    def __init__(self, log, title, body, seconds):
        self.title, self.body, self.seconds, self.removed = title, body, seconds, False
        log.append(self)

    def remove(self):
        self.removed = True


class FakeClient:
    client_id = 12345

    def __init__(self):
        self.notes: list[FakeNote] = []

    def add_notification(self, title, body, *, auto_close_seconds, color, with_close_button):
        return FakeNote(self.notes, title, body, auto_close_seconds)

    def shown(self) -> list[FakeNote]:
        return [n for n in self.notes if not n.removed]


@pytest.fixture
def app(tmp_path):
    app = ViewerApp(blob_scene(), ViewerConfig(port=0, root=tmp_path))
    yield app
    app.stop()


def test_errors_do_not_pile_up(app):
    client = FakeClient()
    for i in range(6):
        app.notify(f"Job {i} failed", f"reason {i}", client=client, color="red", seconds=None)
    shown = client.shown()
    assert len(shown) == MAX_NOTES
    assert [n.title for n in shown] == [f"Job {i} failed" for i in range(6 - MAX_NOTES, 6)]
    assert all(n.seconds == ERROR_NOTE_S for n in client.notes)  # errors close by themselves


def test_a_repeat_replaces_its_twin_and_long_reasons_are_cut(app):
    client = FakeClient()
    app.notify("Load features failed", "no file", client=client, seconds=None)
    app.notify("Load features failed", "no file", client=client, seconds=None)
    assert len(client.shown()) == 1 and len(client.notes) == 2
    app.notify("Save failed", "word " * 200, client=client)
    body = client.notes[-1].body
    assert len(body) <= MAX_NOTE_CHARS and body.endswith("…")


def test_a_failing_action_says_what_the_panel_can_do(app):
    client = FakeClient()

    class Event:
        pass

    event = Event()
    event.client = client
    app.action("Load features")(lambda _e: app.features_panel.load("missing.safetensors"))(event)
    (note,) = client.shown()
    assert note.title == "Load features failed" and "Lift features" in note.body
    assert note.seconds == ERROR_NOTE_S
