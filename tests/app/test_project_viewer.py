"""Projects in the viewer: `ViewerState` -> project file -> a new viewer (history, selections,
named selections, bookmarks, grasps, settings, field), the File panel's project and export
buttons, named selections across count-changing edits, autosave + recovery (in process, and
the issue's end-to-end test: a `scenelab view` server killed with SIGKILL, its edits restored),
and `scenelab save-project`."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from app.cli import build_parser, main
from app.viewer import ViewerApp, ViewerConfig
from app.viewer._jobs import JobStatus
from app.viewer._panel_file import FORMATS
from app.viewer._state import remap_mask
from editing.grasp import Grasp
from editing.project import (
    Bookmark,
    find_recovery,
    is_project,
    load_project,
    recovery_dir,
)
from fields import load_scene, save_scene
from fields.features import FeatureField

from ._browser import CHROMIUM, CHROMIUM_ARGS
from .conftest import blob_scene

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def recovery_in_tmp(tmp_path, monkeypatch):
    """Autosaves of these tests go to a folder of their own, never the user's."""
    folder = tmp_path / "recovery"
    monkeypatch.setenv("SCENELAB_RECOVERY_DIR", str(folder))
    return folder


@pytest.fixture
def make_app(tmp_path):
    apps: list[ViewerApp] = []

    def make(scene=None, **kwargs) -> ViewerApp:
        scene = blob_scene() if scene is None else scene
        kwargs.setdefault("source", tmp_path / "input.ply")
        app = ViewerApp(scene, ViewerConfig(port=0, root=tmp_path), **kwargs)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.stop()


@pytest.fixture
def scene_file(tmp_path):
    return save_scene(blob_scene(), tmp_path / "input.ply")


def done(job, timeout: float = 60.0):
    assert job is not None
    assert job.wait(timeout), f"job {job.name} did not finish"
    assert job.status is JobStatus.DONE, job.error
    return job.result


def fake_client(position=(1.0, -2.0, 1.5), look_at=(0.0, 0.0, 0.2), up=(0, 0, 1), fov=0.8):
    camera = SimpleNamespace(
        position=np.array(position, float),
        look_at=np.array(look_at, float),
        up_direction=np.array(up, float),
        fov=fov,
    )
    return SimpleNamespace(camera=camera, atomic=contextlib.nullcontext)


def label(app, k: int) -> torch.Tensor:
    return app.state.scene.extras["label"] == k


def tiny_field(scene) -> FeatureField:
    """A 2-level, 3-channel field with one head (its values: the labels, one-hot)."""
    one_hot = torch.nn.functional.one_hot(scene.extras["label"].long(), 3).float()
    features = torch.cat([one_hot, 0.5 * one_hot], dim=1)  # [N, 2*3]
    return FeatureField(
        features,
        {"oracle": torch.eye(3)},
        teachers=[{"name": "oracle", "space": "oracle", "dim": 3}],
        levels=("whole", "part"),
    )


# ---------------------------------------------------------------------- round trip
def test_viewer_state_project_round_trip(make_app, tmp_path):
    app = make_app()
    scene0 = app.state.scene
    field = tiny_field(scene0)
    app.features_panel.adopt(field, "features")  # step 1: the field rides as `feature`
    app.state.select(label(app, 1))
    assert app.selection_panel.named.save("red") == int(label(app, 1).sum())
    app.edit_panel.recolor((0.1, 0.9, 0.1))  # step 2: same count
    recoloured = app.state.scene
    app.state.select(label(app, 2))
    app.edit_panel.delete()  # step 3: the blue blob goes, "red" follows its Gaussians
    assert torch.equal(app.state.named_selections["red"], label(app, 1))
    app.state.select(label(app, 0)[:] & (app.state.scene.means[:, 0] > 0))
    app.view_panel.bookmarks.add("front", fake_client())
    app.view_panel.set_display("Selection")
    app.selection_panel.set_combine("add")
    grasp = Grasp(np.eye(4), 0.04, np.array([[0, 0, 0], [0.04, 0, 0]], float), 0.7, {"a": 0.7})
    app.grasp_panel.restore([grasp])

    job = app.file_panel.save_project("session.scenelab")
    out = done(job)
    assert out == tmp_path / "session.scenelab" and is_project(out)
    assert app.unsaved_edits == 0 and app.project_path == out

    project = load_project(out)
    other = make_app(project.history.current, project=project, project_path=out)
    st = other.state
    assert st.history_steps() == app.state.history_steps()
    assert st.history_steps()[0] == ["open", "features", "recolour 1,500 (replace)", "delete 1,500"]
    assert torch.equal(st.selection, app.state.selection)
    assert torch.equal(st.named_selections["red"], app.state.named_selections["red"])
    assert [b.name for b in st.bookmarks] == ["front"]
    b = st.bookmarks[0]
    assert np.allclose(b.position, (1.0, -2.0, 1.5)) and math.isclose(b.fov_deg, math.degrees(0.8))
    assert st.color_mode == "selection" and other.view_panel.display.value == "Selection"
    assert st.combine_mode == "add"
    assert other.view_panel.bookmarks.choice.options == ("front",)
    assert other.selection_panel.named.choice.options == ("red",)
    (g,) = other.grasp_panel.grasps()
    assert np.allclose(g.T_world_gripper, np.eye(4)) and g.score == pytest.approx(0.7)
    assert len(other.grasp_panel.shown.handles) == 1  # drawn in the Grasps folder
    assert np.allclose(other.up, app.up)
    # The field: heads and records, with the features the current scene carries.
    current = st.current_field()
    assert current is not None and torch.equal(current.heads["oracle"], torch.eye(3))
    assert current.levels == ("whole", "part")
    assert other.features_panel.save_button.disabled is False
    # Undo after reopening gives the earlier scenes bit for bit.
    assert other.history_panel.undo()
    assert len(st.scene) == len(scene0)
    for name in ("means", "quats", "scales", "opacities", "sh"):
        assert torch.equal(getattr(st.scene, name), getattr(recoloured, name))
    assert other.history_panel.undo()
    assert torch.equal(st.scene.sh, scene0.sh)
    assert torch.equal(st.scene.extras["feature"], field.features)
    assert other.splats.buffer.shape[0] == len(scene0)  # the browsers follow


def test_to_project_is_a_copy(make_app):
    app = make_app()
    app.state.select(label(app, 1))
    app.edit_panel.delete()
    project = app.project()
    app.state.select_all()
    app.edit_panel.delete()  # after the snapshot: not in it
    assert project.history.steps == ["open", "delete 1,500"]
    assert len(project.selection) == len(project.history.current) == 3100


# ---------------------------------------------------------------------- named selections
def test_named_selections_follow_count_changes(make_app):
    app = make_app()
    st = app.state
    red, blue = label(app, 1), label(app, 2)
    st.select(red)
    st.save_named("red")
    st.select(blue)
    st.save_named("blue")
    # Duplicate the red blob: the copies are new Gaussians, outside "red".
    st.select(red)
    app.edit_panel.duplicate()
    n = len(st.scene)
    assert n == len(red) + int(red.sum())
    assert torch.equal(st.named_selections["red"][: len(red)], red)
    assert not st.named_selections["red"][len(red) :].any()
    assert torch.equal(st.named_selections["blue"][: len(red)], blue)
    # Delete the blue blob: both names follow their Gaussians.
    st.select(label(app, 2))
    app.edit_panel.delete()
    assert not st.named_selections["blue"].any()
    assert int(st.named_selections["red"].sum()) == int(red.sum())
    assert (st.scene.extras["label"][st.named_selections["red"]] == 1).all()
    # Restore combines into the selection.
    st.clear_selection()
    assert st.restore_named("red") == int(red.sum())
    assert torch.equal(st.selection, st.named_selections["red"])
    # An op that says nothing about its rows: the names are dropped there, with a notice ...
    st.apply(
        "keep half", lambda s, _sel: s.subset(torch.arange(len(s) // 2)), needs_selection=False
    )
    assert st.named_selections == {} and st.dropped_named == ["blue", "red"]
    assert app.selection_panel.named.choice.options == ("(none)",)
    # ... and undo brings them back.
    assert st.undo()
    assert set(st.named_selections) == {"red", "blue"}
    assert st.undo() and st.undo()
    assert torch.equal(st.named_selections["red"], red)
    # Deleting a name forgets it in every state.
    st.delete_named("red")
    assert st.redo() and "red" not in st.named_selections
    with pytest.raises(KeyError):
        st.restore_named("red")
    with pytest.raises(ValueError):
        app.selection_panel.named.save("  ")


def test_remap_mask_against_a_loop():
    g = torch.Generator().manual_seed(0)
    n_old = 50
    mask = torch.rand(n_old, generator=g) > 0.5
    rows = torch.cat([torch.randperm(n_old, generator=g)[:30], torch.randint(0, n_old, (20,))])
    rows = torch.cat([rows, torch.full((5,), -1)])
    got = remap_mask(mask, rows, n_old)
    seen, want = set(), []
    for r in rows.tolist():
        want.append(r >= 0 and r not in seen and bool(mask[r]))
        if r >= 0:
            seen.add(r)
    assert got.tolist() == want


def test_a_name_saved_now_also_names_the_same_rows_before_a_recolour(make_app):
    app = make_app()
    st = app.state
    st.select(label(app, 1))
    app.edit_panel.recolor((0, 0, 1))
    st.save_named("red")
    assert st.undo()
    assert torch.equal(st.named_selections["red"], label(app, 1))


# ---------------------------------------------------------------------- bookmarks
def test_bookmarks_add_go_delete(make_app):
    app = make_app()
    ui = app.view_panel.bookmarks
    client = fake_client()
    b = ui.add("desk", client)
    assert b == Bookmark("desk", (1.0, -2.0, 1.5), (0.0, 0.0, 0.2), (0.0, 0.0, 1.0), b.fov_deg)
    assert ui.name.value == "desk 1"  # ready for the next one
    ui.add("desk", fake_client(position=(3, 3, 3)))  # same name: replaced
    assert [x.name for x in app.state.bookmarks] == ["desk"]
    other = fake_client(position=(9, 9, 9), fov=0.3)
    ui.go("desk", other)
    assert np.allclose(other.camera.position, (3, 3, 3)) and math.isclose(other.camera.fov, 0.8)
    ui.delete("desk")
    assert app.state.bookmarks == [] and ui.go_button.disabled
    with pytest.raises(ValueError):
        ui.go("(none)", other)


# ---------------------------------------------------------------------- File panel
def test_file_panel_project_buttons(make_app, tmp_path):
    app = make_app()
    panel = app.file_panel
    assert panel.project_path.value == "input.scenelab"
    app.state.select(label(app, 1))
    app.edit_panel.delete()
    done(panel.save_project("input.scenelab"))
    with pytest.raises(FileExistsError):  # no overwrite unasked
        panel.save_project("input.scenelab")
    with pytest.raises(ValueError):
        panel.save_project("../out.scenelab")
    with pytest.raises(ValueError):
        panel.save_project("notes.zip")
    (tmp_path / "fake.scenelab").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a scenelab project"):
        panel.open_project("fake.scenelab")
    app.state.select(label(app, 2))
    app.edit_panel.delete()
    assert app.unsaved_edits == 1
    with pytest.raises(RuntimeError, match="unsaved"):  # asks before dropping edits
        panel.open_project("input.scenelab")
    done(panel.open_project("input.scenelab", confirmed=True))
    assert app.state.history_steps() == (["open", "delete 1,500"], 1)
    assert app.unsaved_edits == 0 and len(app.state.scene) == 3100
    done(panel.save_project("input.scenelab", confirmed=True))


@pytest.mark.parametrize(
    "name", ["out.ply", "out.compressed.ply", "out.splat", "out.spz", "out.sog"]
)
def test_file_panel_exports_each_format(make_app, tmp_path, name):
    app = make_app()
    panel = app.file_panel
    panel.path.value = "out.ply"
    by_end = {end: label for label, (_fmt, end) in FORMATS.items()}
    panel.format.value = by_end[name[3:]]
    panel._on_format()
    assert panel.path.value == name
    with warnings_ok():
        done(panel.save(name), timeout=120)
    back = load_scene(tmp_path / name)
    assert len(back) == len(app.state.scene)
    # Within the format's quantisation, in any order (compressed ply and sog reorder).
    gap = torch.cdist(back.means.float(), app.state.scene.means.float()).min(1).values
    assert float(gap.max()) < 0.01


def test_file_panel_quality_settings_reach_the_file(make_app, tmp_path):
    app = make_app()
    panel = app.file_panel
    panel.spz_version.value = "4"
    done(panel.save("v4.spz"), timeout=120)
    assert (tmp_path / "v4.spz").read_bytes()[:4] == b"NGSP"  # the v4 container
    panel.spz_version.value = "3"
    done(panel.save("v3.spz"), timeout=120)
    assert (tmp_path / "v3.spz").read_bytes()[:2] == b"\x1f\x8b"  # gzip: v2/v3
    panel.sog_iterations.value = 3
    assert panel.export_options().sog_iterations == 3


@contextlib.contextmanager
def warnings_ok():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def test_save_asks_before_replacing_a_side_file(make_app, tmp_path):
    app = make_app()
    (tmp_path / "notes.ply.json").write_text("{}")  # someone's unrelated notes
    with pytest.raises(FileExistsError, match=r"notes\.ply\.json"):
        app.file_panel.save("notes.ply")
    assert (tmp_path / "notes.ply.json").read_text() == "{}"


# ---------------------------------------------------------------------- autosave, recovery
def wait_for(cond, timeout: float = 30.0, what: str = "condition"):
    t0 = time.monotonic()
    while True:
        value = cond()
        if value:
            return value
        assert time.monotonic() - t0 < timeout, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_autosave_follows_edits_and_saving_clears_it(
    make_app, scene_file, recovery_in_tmp, tmp_path
):
    app = make_app(source=scene_file)
    app.start_autosave(scene_file, every_edits=2, every_seconds=60)
    app.state.select(label(app, 1))
    app.edit_panel.delete()
    time.sleep(0.3)
    assert find_recovery(scene_file) is None  # 1 edit of 2
    app.state.select(label(app, 2))
    app.edit_panel.delete()
    rec = wait_for(lambda: find_recovery(scene_file), what="autosave")
    assert rec.steps == ["open", "delete 1,500", "delete 1,500"] and rec.edits == 2
    assert rec.path.parent == recovery_dir() == recovery_in_tmp
    assert sorted(p.name for p in scene_file.parent.iterdir()) == [
        "input.ply",
        "input.ply.json",
        "recovery",
    ]  # nothing written beside the user's files
    done(app.file_panel.save("saved.ply"))
    assert find_recovery(scene_file) is None  # the user saved: nothing to recover
    app.state.undo()
    app.state.undo()
    wait_for(lambda: find_recovery(scene_file), what="autosave after undo")
    done(app.file_panel.save_project("work.scenelab"))
    assert find_recovery(scene_file) is None
    assert app.autosaver.path.parent == recovery_in_tmp  # autosave now follows the project
    app.state.select(label(app, 2))
    app.edit_panel.delete()
    app.state.undo()
    rec = wait_for(lambda: find_recovery(tmp_path / "work.scenelab"), what="project autosave")
    assert rec.source == str(tmp_path / "work.scenelab")


def test_recovery_offer_restore_and_discard(make_app, scene_file):
    first = make_app(source=scene_file)
    first.start_autosave(scene_file, every_edits=1, every_seconds=60)
    first.state.select(label(first, 1))
    first.edit_panel.delete()
    first.view_panel.bookmarks.add("top", fake_client())
    wait_for(lambda: (r := find_recovery(scene_file)) and r.edits == 2, what="autosave")
    first.autosaver.close()
    first.autosaver = None  # as if killed: no flush, no clean-up

    second = make_app(load_scene(scene_file), source=scene_file)
    rec = find_recovery(scene_file)
    second.offer_recovery(rec)
    assert second.start_autosave(scene_file, every_edits=1) is None  # waits for the answer
    second.state.select(label(second, 2))
    second.edit_panel.delete()  # an edit before answering must not replace the offer
    time.sleep(0.3)
    assert find_recovery(scene_file).steps == ["open", "delete 1,500"]
    done(second.answer_recovery(True))
    assert second.state.history_steps() == (["open", "delete 1,500"], 1)
    assert [b.name for b in second.state.bookmarks] == ["top"]
    assert second.autosaver is not None and second.recovery_offer is None
    assert second.state.undo() and len(second.state.scene) == 4600
    second.stop()  # its autosaver must not write again after the third session discards

    third = make_app(load_scene(scene_file), source=scene_file)
    third.offer_recovery(find_recovery(scene_file))
    assert third.answer_recovery(False) is None
    assert find_recovery(scene_file) is None and len(third.state.scene) == 4600


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_view_opens_a_project_and_the_recover_flags(no_wait, make_app, scene_file, tmp_path):
    app = make_app(source=scene_file)
    app.state.select(label(app, 1))
    app.edit_panel.delete()
    done(app.file_panel.save_project("p.scenelab"))
    port = str(free_port())
    assert main(["view", str(tmp_path / "p.scenelab"), "--port", port, "--no-autosave"]) == 0
    opened = no_wait.pop()
    assert opened.state.history_steps() == (["open", "delete 1,500"], 1)
    assert opened.project_path == tmp_path / "p.scenelab" and opened.autosaver is None
    assert len(opened.state.history.undo()) == 4600  # (the server has stopped: no GUI)
    assert main(["view", str(tmp_path / "p.scenelab"), "--features", "x.safetensors"]) == 2

    # A recovery left behind, restored at start with --recover yes ...
    app.start_autosave(scene_file, every_edits=1)
    app.state.select(label(app, 2))
    app.edit_panel.delete()
    wait_for(lambda: (r := find_recovery(scene_file)) and len(r.steps) == 3, what="autosave")
    args = ["view", str(scene_file), "--port", port, "--autosave-edits", "1"]
    assert main([*args, "--recover", "yes"]) == 0
    restored = no_wait.pop()
    assert restored.state.history_steps()[0] == ["open", "delete 1,500", "delete 1,500"]
    assert restored.unsaved_edits >= 1
    # ... offered with the default (ask) ...
    assert main(args) == 0
    asked = no_wait.pop()
    assert asked.recovery_offer is not None and len(asked.state.scene) == 4600
    # ... and discarded with --recover no.
    assert main([*args, "--recover", "no"]) == 0
    assert find_recovery(scene_file) is None and len(no_wait.pop().state.scene) == 4600
    assert main([*args, "--autosave-edits", "0"]) == 2


# ---------------------------------------------------------------------- save-project
def test_save_project_command(tmp_path, scene_file, capsys):
    field = tiny_field(load_scene(scene_file))
    field.bind(load_scene(scene_file)).save(tmp_path / "input.features.safetensors")
    out = tmp_path / "p.scenelab"
    assert main(["save-project", str(scene_file), "--out", str(out)]) == 0
    project = load_project(out)
    assert project.history.steps == ["open"] and len(project.history.current) == 4600
    assert project.field is not None and torch.equal(
        project.history.current.extras["feature"], field.features
    )
    assert project.source == str(scene_file.resolve())
    assert main(["save-project", str(scene_file), "--out", str(out)]) == 2  # exists
    assert "exists" in capsys.readouterr().err
    assert (
        main(["save-project", str(scene_file), "--out", str(out), "--overwrite", "--no-features"])
        == 0
    )
    assert load_project(out).field is None
    assert main(["save-project", str(scene_file), "--out", str(tmp_path / "x.zip")]) == 2
    other = blob_scene(seed=1).subset(torch.arange(100))
    tiny_field(other).save(tmp_path / "wrong.safetensors")
    bad = ["save-project", str(scene_file), "--out", str(tmp_path / "y.scenelab")]
    assert main([*bad, "--features", str(tmp_path / "wrong.safetensors")]) == 2
    assert "lifted on another scene" in capsys.readouterr().err
    assert not (tmp_path / "y.scenelab").exists()


def test_every_new_option_has_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, opts in (
        ("save-project", ("--out", "--features", "--no-features", "--overwrite")),
        ("view", ("--autosave-edits", "--autosave-seconds", "--no-autosave", "--recover")),
    ):
        p = sub.choices[name]
        for action in p._actions:
            if set(action.option_strings) & set(opts) or action.dest == "scene":
                assert action.help and len(action.help) > 10, (name, action.dest)


# ---------------------------------------------------------------------- SIGKILL -> restore
KILL_SCRIPT = r"""
import sys, time, torch
from pathlib import Path
from app.viewer import ViewerApp, ViewerConfig
from fields import load_scene
src = Path(sys.argv[1])
app = ViewerApp(load_scene(src), ViewerConfig(port=0, root=src.parent), source=src)
app.start_autosave(src, every_edits=1, every_seconds=3600)
st = app.state
for k in (1, 2):
    st.select(st.scene.extras["label"] == k)
    app.edit_panel.delete()
    while app.autosaver.saves < k:   # each edit autosaved before the next
        time.sleep(0.02)
st.select_all()
app.edit_panel.recolor((0.0, 1.0, 0.0))   # made after the last autosave? no: also saved
while app.autosaver.saves < 3:
    time.sleep(0.02)
print("AUTOSAVED", flush=True)
app.autosaver.every_edits = 10**9           # the next edit is never autosaved
st.select(st.scene.extras["label"] == 0)
app.edit_panel.delete()
print("UNSAVED EDIT", flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_sigkill_in_process_session_restores_every_autosaved_edit(scene_file, recovery_in_tmp):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(scene_file)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("UNSAVED EDIT"):
                break
        assert any(x.startswith("AUTOSAVED") for x in lines), "".join(lines)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    rec = find_recovery(scene_file)
    assert rec is not None and rec.steps == [
        "open",
        "delete 1,500",
        "delete 1,500",
        "recolour 1,600 (replace)",
    ]
    project = load_project(rec.path)
    assert len(project.history.current) == 1600
    assert project.history.current.sh[:, 0].std(0).max() == 0  # every Gaussian recoloured
    assert [p.name for p in scene_file.parent.iterdir() if p.suffix == ".tmp"] == []


# ---------------------------------------------------------------------- browser: kill the CLI
SHOTS = Path(os.environ.get("SCENELAB_SHOTS", "/tmp/scenelab_shots"))


def start_view(args: list[str], cwd: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "app", "view", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def open_viewer(browser, url: str, proc: subprocess.Popen):
    page = browser.new_page(viewport={"width": 1000, "height": 700})
    t0 = time.monotonic()
    while True:
        try:
            page.goto(url, timeout=2000)
            page.get_by_role("button", name="Select all").wait_for(timeout=5000)
            return page
        except Exception:
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() - t0 < 120, "the viewer did not come up"
            time.sleep(0.3)


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's Chromium at /usr/bin/chromium")
def test_sigkill_view_server_then_restore(tmp_path, scene_file, recovery_in_tmp, no_wait):
    """The issue's end-to-end test: `scenelab view SCENE --autosave-edits 1` driven through a
    real browser, killed with SIGKILL; the next start restores every autosaved edit, both with
    --recover yes and by answering the browser's question (default --recover ask)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright")
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "SCENELAB_RECOVERY_DIR": str(recovery_in_tmp),
        "OMP_NUM_THREADS": "1",
    }
    original = scene_file.read_bytes()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    common = [str(scene_file), "--port", str(port), "--max-splats", "2000"]
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        proc = start_view([*common, "--autosave-edits", "1"], tmp_path, env)
        try:
            page = open_viewer(chromium, url, proc)
            expected = ["open"]

            def click(name: str, step: str | None = None) -> None:
                page.get_by_role("button", name=name, exact=True).click()
                if step is not None:
                    expected.append(step)
                    wait_for(
                        lambda: (r := find_recovery(scene_file)) and r.steps == expected,
                        timeout=60,
                        what=f"autosave of {step!r}",
                    )

            click("Select all")
            time.sleep(0.5)  # the selection reaches the server before the op
            click("Duplicate", "duplicate 4,600")
            click("Delete", "delete 4,600")  # the copies (selected after duplicating)
            click("Select all")
            time.sleep(0.5)
            click("Duplicate", "duplicate 4,600")
            SHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SHOTS / "project_before_kill.png"))
            page.close()
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        rec = find_recovery(scene_file)
        assert rec.steps == expected and rec.edits == 3

        # Restore at start (in process, to look at the state).
        assert main(["view", *common, "--recover", "yes", "--no-autosave"]) == 0
        app = no_wait.pop()
        assert app.state.history_steps() == (expected, 3)
        assert len(app.state.scene) == 9200
        assert len(app.state.history.undo()) == 4600  # undo after the restore

        # The default asks in the browser; "Restore" brings the steps into the History list.
        proc = start_view(common, tmp_path, env)
        try:
            page = open_viewer(chromium, url, proc)
            page.get_by_text("Restore unsaved work?").wait_for(timeout=30000)
            page.screenshot(path=str(SHOTS / "project_recovery_modal.png"))
            page.get_by_role("button", name="Restore", exact=True).click()
            page.get_by_text("3 · duplicate 4,600").wait_for(timeout=60000)
            page.screenshot(path=str(SHOTS / "project_restored.png"))
            page.close()
        finally:
            proc.terminate()
            out, _ = proc.communicate(timeout=20)
        assert "unsaved work from" in out
        chromium.close()
    assert scene_file.read_bytes() == original  # the input is untouched


def test_a_damaged_recovery_file_does_not_block_the_scene(no_wait, make_app, scene_file, capsys):
    app = make_app(source=scene_file)
    app.start_autosave(scene_file, every_edits=1)
    app.state.select(label(app, 1))
    app.edit_panel.delete()
    rec = wait_for(lambda: find_recovery(scene_file), what="autosave")
    app.autosaver.close()
    data = bytearray(rec.path.read_bytes())
    i = len(data) * 3 // 4  # inside the tensors member: the manifest survives, its CRC fails
    data[i : i + 64] = bytes(64)
    rec.path.write_bytes(bytes(data))
    assert find_recovery(scene_file) is not None
    with pytest.raises(ValueError):
        load_project(rec.path)
    port = str(free_port())
    assert main(["view", str(scene_file), "--port", port, "--recover", "yes"]) == 0
    assert len(no_wait.pop().state.scene) == 4600
    assert "cannot restore" in capsys.readouterr().err
