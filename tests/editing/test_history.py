import pytest
import torch

from editing import History, delete, recolor


def test_undo_redo_walks_states(scene):
    h = History(scene)
    assert not h.can_undo and not h.can_redo and h.steps == ["open"]
    mask = scene.extras["label"] == 1
    s1 = h.apply("delete", delete(scene, mask))
    s2 = h.apply("recolor", recolor(s1, torch.ones(len(s1), dtype=torch.bool), (1, 0, 0)))
    assert h.steps == ["open", "delete", "recolor"] and h.index == 2
    assert h.undo() is s1
    assert h.undo() is scene
    with pytest.raises(IndexError):
        h.undo()
    assert h.redo() is s1 and h.current is s1
    # A new step drops the redo branch.
    h.apply("delete again", delete(s1, torch.zeros(len(s1), dtype=torch.bool)))
    assert h.steps == ["open", "delete", "delete again"] and not h.can_redo
    assert s2 is not h.current


def test_callbacks_and_type_check(scene):
    h = History(scene)
    seen = []
    h.on_change(lambda hist: seen.append(hist.index))
    h.apply("x", scene.replace(means=scene.means + 1))
    h.undo()
    h.redo()
    assert seen == [1, 0, 1]
    with pytest.raises(TypeError):
        h.apply("bad", "not a scene")


def test_shared_tensors_counted_once_and_budget(scene):
    h = History(scene)
    base = h.nbytes()
    h.apply("recolor", recolor(scene, scene.extras["label"] == 0, (0, 1, 0)))
    # Only the new SH tensor is extra memory: positions etc. are shared.
    assert h.nbytes() - base == scene.sh.untyped_storage().nbytes()
    small = History(scene, max_bytes=base + 1)
    small.apply("a", scene.replace(means=scene.means + 1))
    small.apply("b", scene.replace(means=scene.means + 2))
    # Each state alone fits the budget, two do not: only the current one survives.
    assert small.steps == ["b"] and not small.can_undo
    assert small.current.means[0, 0] == scene.means[0, 0] + 2
