"""Headless tests of "Remove (fill)" in the Edit panel: a real viewer in-process on a synthetic
world, driven through the panel's action (what its button calls)."""

from __future__ import annotations

import pytest
import torch

from app.viewer import ViewerApp, ViewerConfig
from app.viewer._jobs import JobStatus
from app.viewer._state import NothingSelectedError
from fields.synthetic import WorldConfig, make_world

from .test_insert_cli import oracle_like_field


@pytest.fixture(scope="module")
def world():
    return make_world(0, config=WorldConfig.preview(table_spacing=0.008))


@pytest.fixture
def app(world, tmp_path):
    app = ViewerApp(world.scene, ViewerConfig(port=0, root=tmp_path))
    yield app
    app.stop()


def finished(job):
    assert job.wait(60), "the removal job did not finish"
    assert job.status is JobStatus.DONE, job.error
    return job.result


def test_remove_fill_is_one_undoable_step_and_the_fill_is_table(app, world):
    state = app.state
    field = oracle_like_field(world.scene, world.label_names)
    state.set_field(field)
    before = state.scene
    mug = world.object_named("mug").label
    state.select(before.extras["label"] == mug)
    n_steps = len(state.history.steps)
    removal = finished(app.edit_panel.remove_fill())
    after = state.scene
    assert len(state.history.steps) == n_steps + 1
    assert state.history.steps[-1].startswith("remove (fill)")
    assert not bool((after.extras["label"] == mug).any())
    fill = removal.fill
    assert bool(fill.any()) and not bool(state.selection.any())  # the fill shows as it looks
    assert bool((after.extras["label"][fill] == 0).all())
    # Its features are the table's: each fill row copies a table row of the field.
    table = before.extras["feature"][before.extras["label"] == 0]
    for row in after.extras["feature"][fill][:20]:
        assert bool((table == row).all(1).any())
    # One undo brings the mug back exactly.
    assert state.undo()
    assert state.scene is before or torch.equal(state.scene.means, before.means)
    assert int((state.scene.extras["label"] == mug).sum()) == int(
        (before.extras["label"] == mug).sum()
    )


def test_remove_fill_needs_a_selection(app):
    app.state.select(torch.zeros(len(app.state.scene), dtype=torch.bool))
    with pytest.raises(NothingSelectedError):
        app.edit_panel.remove_fill()


def test_remove_fill_of_the_whole_scene_fails_cleanly(app):
    state = app.state
    before = state.scene
    state.select(torch.ones(len(before), dtype=torch.bool))
    job = app.edit_panel.remove_fill()
    assert job.wait(60)
    assert job.status is JobStatus.FAILED
    assert "whole scene" in str(job.error)
    assert state.scene is before
