"""The Objects folder: "Find objects" lists the scene's objects as rows; a row selects its
object (with the state's combine mode)."""

from __future__ import annotations

from app.viewer._jobs import JobStatus
from app.viewer._panel_objects import row_label

from .test_feature_panels import iou, make_viewer, oracle_field  # noqa: F401  (fixture)


def test_find_objects_and_select_one_by_its_row(make_viewer, scene):  # noqa: F811
    app = make_viewer(field=oracle_field(scene))
    op = app.objects_panel
    assert not op.find_button.disabled
    job = op.find()
    assert job.wait(120) and job.status is JobStatus.DONE, job.error
    names = [o.name for o in op.objects]
    assert "mug" in names and "bowl" in names
    assert len(op.rows) == len(op.objects)
    i = names.index("mug")
    obj = op.objects[i]
    assert op.rows[i].label == row_label(obj) and obj.name in op.rows[i].label
    labels = scene.extras["label"]
    op.select_row(i)
    assert iou(app.state.selection, labels == 1) > 0.8
    # The combine mode comes from the state (the Selection panel's "Combine").
    app.selection_panel.set_combine("add")
    assert app.state.combine_mode == "add"
    op.select_row(names.index("bowl"))
    assert iou(app.state.selection, (labels == 1) | (labels == 2)) > 0.8
    # Without features there is nothing to find.
    app.history_panel.undo()
    assert op.find_button.disabled and app.state.text_query() is None
