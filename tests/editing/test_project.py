"""Project files (`editing.project`): round trips, history budget, bad files, autosave."""

from __future__ import annotations

import json
import os
import struct
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from editing import (
    Autosaver,
    Bookmark,
    Grasp,
    History,
    Project,
    ProjectFormatError,
    delete,
    discard_recovery,
    find_recovery,
    is_project,
    load_project,
    recolor,
    recovery_dir,
    recovery_path,
    save_project,
    transform,
)
from fields import GaussianScene
from fields.features import FeatureField

from .conftest import make_scene


@pytest.fixture(autouse=True)
def _recovery_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SCENELAB_RECOVERY_DIR", str(tmp_path / "recovery"))


def _bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _scene_bytes(scene: GaussianScene) -> int:
    ts = [scene.means, scene.quats, scene.scales, scene.opacities, scene.sh, *scene.extras.values()]
    return sum(_bytes(t) for t in ts)


def _distinct_bytes(scenes) -> int:
    seen = {}
    for s in scenes:
        for t in [s.means, s.quats, s.scales, s.opacities, s.sh, *s.extras.values()]:
            seen[(t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))] = _bytes(t)
    return sum(seen.values())


def _same_scene(a: GaussianScene, b: GaussianScene) -> bool:
    """Bit-identical tensors (dtypes included) and equal meta."""
    if set(a.extras) != set(b.extras) or dict(a.meta) != dict(b.meta):
        return False
    pairs = [
        (getattr(a, f), getattr(b, f)) for f in ("means", "quats", "scales", "opacities", "sh")
    ]
    pairs += [(a.extras[k], b.extras[k]) for k in a.extras]
    return all(_bit_equal(x, y) for x, y in pairs)


def _bit_equal(x: torch.Tensor, y: torch.Tensor) -> bool:
    """Same dtype, shape and bytes (NaN payloads and -0.0 included)."""
    if x.dtype != y.dtype or x.shape != y.shape:
        return False
    return torch.equal(
        x.contiguous().reshape(-1).view(torch.uint8), y.contiguous().reshape(-1).view(torch.uint8)
    )


def _three_step_history(n: int = 300, degree: int = 3) -> History:
    scene = make_scene(n, degree=degree).with_meta(units="m", labels=["a", "b"])
    h = History(scene)
    s1 = h.apply("recolor", recolor(scene, scene.extras["label"] == 1, (1.0, 0.0, 0.0)))
    s2 = h.apply("delete", delete(s1, s1.extras["label"] == 2))
    T = torch.tensor(
        [[0.0, -1.0, 0.0, 0.1], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
    )
    h.apply("move", transform(s2, torch.ones(len(s2), dtype=torch.bool), T))
    return h


def _project(history: History, **kw) -> Project:
    n = len(history.current)
    sel = torch.zeros(n, dtype=torch.bool)
    sel[::3] = True
    return Project(history=history, selection=sel, **kw)


# ---------------------------------------------------------------------------- round trips
def test_history_round_trip_undo_after_reopen_is_bit_identical(tmp_path):
    h = _three_step_history()
    h.undo()  # current = "delete", one redo step
    states = h.states()
    path = save_project(_project(h), tmp_path / "work.scenelab")
    assert path == tmp_path / "work.scenelab" and is_project(path)

    p = load_project(path)
    assert p.history.steps == ["open", "recolor", "delete", "move"]
    assert p.history.index == 2
    for (name, want), (name2, got) in zip(states, p.history.states(), strict=True):
        assert name == name2 and _same_scene(want, got), name
    assert _same_scene(p.history.undo(), states[1][1])
    assert _same_scene(p.history.undo(), states[0][1])
    assert not p.history.can_undo
    assert _same_scene(p.history.redo(), states[1][1])
    # Shared tensors come back shared (memory as before saving).
    assert p.history.nbytes() == h.nbytes()
    # The file holds the current state whole and each other state as its difference from its
    # neighbour: the undo of the delete = the deleted rows + a mask, the recolour = its changed
    # `sh` rows, the move (every row moved) = whole new means/quats/scales/sh.
    s0, s1, s2, s3 = (s for _, s in states)
    recoloured = int((s0.sh != s1.sh).reshape(len(s0), -1).any(1).sum())
    assert 0 < recoloured < len(s0) // 2
    deleted = len(s1) - len(s2)
    expected = _scene_bytes(s2) + len(s1) + deleted * _scene_bytes(s1) // len(s1)
    expected += recoloured * (8 + _bytes(s0.sh) // len(s0))
    expected += sum(_bytes(t) for t in (s3.means, s3.quats, s3.scales, s3.sh))
    size = path.stat().st_size
    assert expected <= size <= expected + 32 * 1024
    assert size < 0.7 * _distinct_bytes([s0, s1, s2, s3])  # less than whole states, shared once


def test_history_shares_tensors_in_the_file(tmp_path):
    """States that share tensors in memory share them in the file (no delta needed)."""
    scene = make_scene(500, degree=3)
    h = History(scene)
    h.apply("fade", scene.replace(opacities=scene.opacities - 1.0))  # every row changes
    h.apply("meta", h.current.with_meta(note="x"))  # the very same tensors
    path = save_project(_project(h), tmp_path / "p.scenelab")
    size = path.stat().st_size
    expected = _scene_bytes(scene) + _bytes(scene.opacities)
    assert expected <= size <= expected + 32 * 1024
    q = load_project(path)
    (_, a), (_, b), (_, c) = q.history.states()
    assert b.means is a.means and c.sh is b.sh and c.opacities is b.opacities
    assert c.meta == {"note": "x"} and _same_scene(a, scene)


def _varied_history() -> History:
    """Every kind of step: recolour, delete, duplicate (exact copies), move a subset, an extra
    added and one dropped, NaN and -0.0 values, a state shrinking to nothing."""
    from editing import duplicate, isolate

    scene = make_scene(120, degree=2)
    sh = scene.sh.clone()
    sh[5, 1, 0] = float("nan")
    sh[6, 0, 2] = -0.0
    scene = scene.replace(sh=sh)
    h = History(scene, max_bytes=1 << 30)
    label = scene.extras["label"]
    s = h.apply("recolor", recolor(scene, label == 0, (0.0, 1.0, 0.0)))
    s = h.apply("delete", delete(s, s.extras["label"] == 1))
    s = h.apply("duplicate", duplicate(s, s.extras["label"] == 2))
    T = torch.eye(4)
    T[:3, 3] = torch.tensor([0.0, 0.0, 0.5])
    s = h.apply("lift", transform(s, s.extras["label"] == 3, T))
    s = h.apply("tag", s.with_extras(selected=s.extras["label"] == 3, feature=None))
    s = h.apply("isolate", isolate(s, s.extras["label"] == 3))
    s = h.apply("clear", delete(s, torch.ones(len(s), dtype=torch.bool)))
    return h


@pytest.mark.parametrize("index", [0, 3, 7])
def test_every_kind_of_step_round_trips_from_any_current_state(tmp_path, index):
    h = _varied_history()
    while h.index > index:
        h.undo()
    states = h.states()
    q = load_project(save_project(_project(h), tmp_path / "p.scenelab"))
    assert q.history.index == index
    for (name, want), (name2, got) in zip(states, q.history.states(), strict=True):
        assert name == name2 and _same_scene(want, got), name
    whole = sum(_scene_bytes(s) for _, s in states)
    assert (tmp_path / "p.scenelab").stat().st_size < 0.6 * whole


def test_tensor_member_is_plain_safetensors(tmp_path):
    from safetensors.torch import load

    h = _three_step_history(100, degree=0)
    path = save_project(_project(h), tmp_path / "p.scenelab")
    with zipfile.ZipFile(path) as zf:
        assert zf.namelist()[0] == "manifest.json"
        assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
        manifest = json.loads(zf.read("manifest.json"))
        tensors = load(zf.read("tensors.safetensors"))
    cur = manifest["history"]["steps"][manifest["history"]["index"]]["scene"]
    assert torch.equal(tensors[cur["sh"]], h.current.sh)
    assert torch.equal(tensors[cur["extras"]["label"]], h.current.extras["label"])
    assert manifest["format"] == "scenelab.project" and manifest["version"] == 1


def test_every_part_of_the_state_round_trips(tmp_path):
    h = _three_step_history(200, degree=1)
    cur = h.current
    n = len(cur)
    # the field's features are the current scene's `feature` extra: stored once
    fld = FeatureField(
        features=cur.extras["feature"],
        heads={"clip": torch.randn(16, 6), "sam": torch.randn(4, 6)},
        config={"iters": 3},
        teachers=[{"name": "oracle", "seed": 1}],
        meta={"labels": ["mug", "table"]},
    )
    rng = np.random.default_rng(0)
    grasps = [
        Grasp(
            rng.standard_normal((4, 4)), 0.031, rng.standard_normal((2, 3)), 0.8, {"antipodal": 0.9}
        ),
        Grasp(
            rng.standard_normal((4, 4)).astype(np.float32),
            0.05,
            rng.standard_normal((2, 3)).astype(np.float32),
            0.25,
        ),
    ]
    marks = [Bookmark("front", (0.1, -2.0, 1.5), (0.0, 0.0, 0.0), (0.0, 0.0, 1.0), 55.0)]
    named = {"mug": torch.arange(n) % 2 == 0, "empty": torch.zeros(n, dtype=torch.bool)}
    settings = {"color_mode": "rgb", "point_size": 1.5, "levels": [0, 1], "nested": {"a": None}}
    p = _project(
        h,
        named_selections=named,
        field=fld,
        grasps=grasps,
        bookmarks=marks,
        up="-y",
        settings=settings,
        source="/data/room.ply",
    )
    path = save_project(p, tmp_path / "p.scenelab")
    q = load_project(path)
    assert torch.equal(q.selection, p.selection) and q.selection.dtype == torch.bool
    assert q.named_selections.keys() == named.keys()
    assert all(torch.equal(q.named_selections[k], v) for k, v in named.items())
    assert q.up == "-y" and q.settings == settings and q.source == "/data/room.ply"
    assert q.bookmarks == marks
    assert len(q.grasps) == 2
    for a, b in zip(grasps, q.grasps, strict=True):
        assert a.T_world_gripper.dtype == b.T_world_gripper.dtype
        assert np.array_equal(a.T_world_gripper, b.T_world_gripper)
        assert np.array_equal(a.contacts, b.contacts)
        assert (a.width, a.score, a.scores) == (b.width, b.score, b.scores)
    assert q.field is not None
    assert torch.equal(q.field.features, fld.features)
    assert q.field.heads.keys() == fld.heads.keys()
    assert all(torch.equal(q.field.heads[k], fld.heads[k]) for k in fld.heads)
    assert (q.field.config, q.field.teachers, q.field.meta, q.field.levels) == (
        fld.config,
        fld.teachers,
        fld.meta,
        fld.levels,
    )
    # features stored once, shared with the scene's extra after loading too
    assert q.field.features is q.history.current.extras["feature"]
    with zipfile.ZipFile(path) as zf:
        m = json.loads(zf.read("manifest.json"))
    step = m["history"]["steps"][m["history"]["index"]]["scene"]
    assert m["field"]["features"] == step["extras"]["feature"]
    # `created` survives a re-save; `saved` moves on
    assert q.created == pytest.approx(m["created"])
    save_project(q, tmp_path / "again.scenelab")
    r = load_project(tmp_path / "again.scenelab")
    assert r.created == q.created


@pytest.mark.parametrize(
    "dtype", [torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.uint8, torch.bool]
)
def test_extras_keep_their_dtype(tmp_path, dtype):
    scene = make_scene(50, degree=0)
    extra = (torch.randn(50, 2) * 3).to(dtype)
    h = History(scene.with_extras(x=extra))
    q = load_project(save_project(_project(h), tmp_path / "p.scenelab"))
    got = q.history.current.extras["x"]
    assert got.dtype == dtype and torch.equal(got, extra)


def test_empty_scene_and_non_contiguous_tensors(tmp_path):
    h = History(GaussianScene.empty(sh_degree=2))
    q = load_project(save_project(_project(h), tmp_path / "empty.scenelab"))
    assert len(q.history.current) == 0 and q.history.current.sh_degree == 2
    scene = make_scene(40)
    odd = scene.replace(means=torch.randn(3, 40).T)  # a transposed view
    q = load_project(save_project(_project(History(odd)), tmp_path / "odd.scenelab"))
    assert torch.equal(q.history.current.means, odd.means)


# ---------------------------------------------------------------------------- budget
def _chain(n_steps: int, n: int = 100) -> History:
    """Each step moves every Gaussian: one new `means` tensor per step."""
    scene = make_scene(n, degree=0)
    h = History(scene)
    for i in range(1, n_steps):
        scene = scene.replace(means=scene.means + 1.0)
        h.apply(f"move {i}", scene)
    return h


def _manifest(path: Path) -> dict:
    with zipfile.ZipFile(path) as zf:
        return json.loads(zf.read("manifest.json"))


def test_budget_drops_the_oldest_steps_first(tmp_path):
    h = _chain(6)
    base = _scene_bytes(h.current)
    step = _bytes(h.current.means)
    path = save_project(_project(h), tmp_path / "p.scenelab", max_history_bytes=base + 2 * step)
    q = load_project(path)
    assert q.history.steps == ["move 3", "move 4", "move 5"]
    assert q.history.index == 2 and torch.equal(q.history.current.means, h.current.means)
    assert _same_scene(q.history.undo(), h.states()[4][1])
    assert _manifest(path)["history"]["dropped"] == {"undo": 3, "redo": 0}


def test_budget_keeps_undo_and_redo_nearest_to_the_current_state(tmp_path):
    h = _chain(7)
    for _ in range(3):
        h.undo()  # current = "move 3"
    base = _scene_bytes(h.current)
    step = _bytes(h.current.means)
    path = save_project(_project(h), tmp_path / "p.scenelab", max_history_bytes=base + 3 * step)
    q = load_project(path)
    assert q.history.steps == ["move 1", "move 2", "move 3", "move 4"]
    assert q.history.current.means.equal(h.current.means)
    assert _manifest(path)["history"]["dropped"] == {"undo": 1, "redo": 2}
    # a budget below the current scene still keeps the current scene
    path = save_project(_project(h), tmp_path / "tiny.scenelab", max_history_bytes=1)
    q = load_project(path)
    assert q.history.steps == ["move 3"] and _same_scene(q.history.current, h.current)


# ---------------------------------------------------------------------------- writing rules
def test_never_overwrites_unasked(tmp_path):
    h = _chain(2)
    target = tmp_path / "p.scenelab"
    target.write_bytes(b"the user's file")
    with pytest.raises(FileExistsError):
        save_project(_project(h), target)
    assert target.read_bytes() == b"the user's file"
    save_project(_project(h), target, overwrite=True)
    assert load_project(target).history.steps == h.steps
    assert sorted(os.listdir(tmp_path)) == ["p.scenelab"]  # no temp files left
    with pytest.raises(ValueError, match=r"\.scenelab"):
        save_project(_project(h), tmp_path / "p.zip")


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(settings={"colors": {1, 2}}), "settings"),
        (dict(settings={"x": float("nan")}), "finite"),
        (dict(settings={1: "a"}), "key 1"),
        (dict(up="sideways"), "up"),
        (dict(selection=torch.zeros(3, dtype=torch.bool)), "selection"),
        (dict(selection=torch.zeros(100)), "selection"),
        (dict(named_selections={"a": torch.zeros(5, dtype=torch.bool)}), "'a'"),
        (dict(bookmarks=[Bookmark("b", (0, 0), (0, 0, 0), (0, 0, 1), 60)]), "position"),
        (dict(grasps=["not a grasp"]), "grasps"),
        (dict(meta=object()), "meta"),
    ],
)
def test_bad_content_is_refused_before_the_disk_is_touched(tmp_path, change, match):
    h = _chain(2)
    if "meta" in change:
        h.apply("meta", h.current.with_meta(bad=change.pop("meta")))
    p = _project(h)
    for k, v in change.items():
        setattr(p, k, v)
    with pytest.raises(ValueError, match=match):
        save_project(p, tmp_path / "p.scenelab")
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------- bad files
def _rezip(src: Path, dst: Path, *, drop=(), replace=None, deflate=()) -> Path:
    replace = replace or {}
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            if info.filename in drop:
                continue
            data = replace.get(info.filename, zin.read(info.filename))
            method = zipfile.ZIP_DEFLATED if info.filename in deflate else zipfile.ZIP_STORED
            zout.writestr(info.filename, data, compress_type=method)
    return dst


@pytest.fixture
def good(tmp_path) -> Path:
    return save_project(_project(_three_step_history(60, degree=0)), tmp_path / "good.scenelab")


def _with_manifest(good: Path, dst: Path, edit) -> Path:
    m = _manifest(good)
    edit(m)
    return _rezip(good, dst, replace={"manifest.json": json.dumps(m).encode()})


def _tensor_member(good: Path) -> bytes:
    with zipfile.ZipFile(good) as zf:
        return zf.read("tensors.safetensors")


def _bad_header(good: Path, dst: Path, edit) -> Path:
    raw = _tensor_member(good)
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    edit(header)
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    member = struct.pack("<Q", len(blob)) + blob + raw[8 + n :]
    return _rezip(good, dst, replace={"tensors.safetensors": member})


def _set_version(m):
    m["version"] = 99


def _set_format(m):
    m["format"] = "something.else"


def _missing_key(m):
    m["selection"] = "t9999"


def _bad_index(m):
    m["history"]["index"] = 7


def _no_history(m):
    del m["history"]


def _grow_first(h):
    key = next(k for k in h if k != "__metadata__")
    h[key]["shape"] = [h[key]["shape"][0] * 1000, *h[key]["shape"][1:]]


def _absurd_offsets(h):
    key = next(k for k in h if k != "__metadata__")
    h[key]["data_offsets"] = [0, 2**62]
    h[key]["shape"] = [2**60]
    h[key]["dtype"] = "U8"


def _unknown_dtype(h):
    key = next(k for k in h if k != "__metadata__")
    h[key]["dtype"] = "C64"


def _first_derived(m):
    return next(iter(m["derived"].values()))


def _cycle(m):
    ref = next(iter(m["derived"]))
    m["derived"][ref]["base"] = ref


def _unknown_op(m):
    _first_derived(m)["op"] = "rotate"


def _patch_out_of_range(m):
    spec = next(v for v in m["derived"].values() if v["op"] == "patch")
    spec["rows"] = spec["values"]  # float values as row numbers


def _select_wrong_mask(m):
    spec = next(v for v in m["derived"].values() if v["op"] in ("select", "expand"))
    spec["mask"] = m["selection"]  # a bool mask of another length


BAD = {
    "not a zip": lambda g, d: (d.write_bytes(b"PK\x03\x04" + os.urandom(200)), d)[1],
    "empty file": lambda g, d: (d.write_bytes(b""), d)[1],
    "no manifest": lambda g, d: _rezip(g, d, drop=("manifest.json",)),
    "no tensors": lambda g, d: _rezip(g, d, drop=("tensors.safetensors",)),
    "manifest not json": lambda g, d: _rezip(g, d, replace={"manifest.json": b"{nope"}),
    "manifest a list": lambda g, d: _rezip(g, d, replace={"manifest.json": b"[1, 2]"}),
    "newer version": lambda g, d: _with_manifest(g, d, _set_version),
    "other format": lambda g, d: _with_manifest(g, d, _set_format),
    "missing tensor": lambda g, d: _with_manifest(g, d, _missing_key),
    "bad index": lambda g, d: _with_manifest(g, d, _bad_index),
    "no history": lambda g, d: _with_manifest(g, d, _no_history),
    "derived cycle": lambda g, d: _with_manifest(g, d, _cycle),
    "unknown delta": lambda g, d: _with_manifest(g, d, _unknown_op),
    "patch rows": lambda g, d: _with_manifest(g, d, _patch_out_of_range),
    "delta mask": lambda g, d: _with_manifest(g, d, _select_wrong_mask),
    "deflated tensors": lambda g, d: _rezip(g, d, deflate=("tensors.safetensors",)),
    "truncated": lambda g, d: (d.write_bytes(g.read_bytes()[:-5000]), d)[1],
    "shape vs offsets": lambda g, d: _bad_header(g, d, _grow_first),
    "absurd size": lambda g, d: _bad_header(g, d, _absurd_offsets),
    "unknown dtype": lambda g, d: _bad_header(g, d, _unknown_dtype),
    "absurd header length": lambda g, d: _rezip(
        g, d, replace={"tensors.safetensors": struct.pack("<Q", 2**60) + b"{}" * 10}
    ),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_files_raise_project_format_error(tmp_path, good, kind):
    bad = BAD[kind](good, tmp_path / f"bad-{kind.replace(' ', '_')}.scenelab")
    with pytest.raises(ProjectFormatError, match=str(bad.name)):
        load_project(bad)


def test_rebuilding_the_history_is_bounded(tmp_path, good):
    from editing._project_io import Resolver, read_project

    manifest, tensors = read_project(good)
    ref = next(r for r, v in manifest["derived"].items() if v["op"] == "patch")
    with pytest.raises(ProjectFormatError, match="more than 100 bytes"):
        Resolver(tensors, manifest["derived"], good, limit=100)(ref, "a test")
    assert Resolver(tensors, manifest["derived"], good, limit=1 << 30)(ref, "a test").numel()


def test_corrupt_tensor_bytes_fail_the_crc(tmp_path, good):
    data = bytearray(good.read_bytes())
    with zipfile.ZipFile(good) as zf:
        info = zf.getinfo("tensors.safetensors")
    data[info.header_offset + 2000] ^= 0xFF  # inside the tensor data
    bad = tmp_path / "flipped.scenelab"
    bad.write_bytes(bytes(data))
    with pytest.raises(ProjectFormatError, match="CRC"):
        load_project(bad)


def test_directories_and_missing_files(tmp_path):
    d = tmp_path / "dir.scenelab"
    d.mkdir()
    with pytest.raises(ProjectFormatError, match="regular file"):
        load_project(d)
    with pytest.raises(FileNotFoundError):
        load_project(tmp_path / "none.scenelab")
    assert not is_project(d) and not is_project(tmp_path / "none.scenelab")


def test_is_project(tmp_path, good):
    assert is_project(good) and is_project(str(good))
    renamed = tmp_path / "good.zip"
    renamed.write_bytes(good.read_bytes())
    assert not is_project(renamed)  # suffix
    other = _rezip(good, tmp_path / "reordered.scenelab", drop=("manifest.json",))
    assert not is_project(other)  # first member is not the manifest
    ply = tmp_path / "scene.scenelab"
    ply.write_bytes(b"ply\nformat binary_little_endian 1.0\n")
    assert not is_project(ply)


# ---------------------------------------------------------------------------- History additions
def test_history_states_from_states_and_copy():
    h = _chain(4)
    h.undo()
    c = h.copy()
    assert c.steps == h.steps and c.index == h.index and c.max_bytes == h.max_bytes
    h.apply("new", h.current.replace(means=h.current.means * 2))  # drops the redo step in h only
    assert c.steps == ["open", "move 1", "move 2", "move 3"] and c.can_redo
    r = History.from_states(c.states(), 1, max_bytes=10**9)
    assert r.index == 1 and r.current is c.states()[1][1] and r.max_bytes == 10**9
    assert History.from_states(c.states()).index == 3
    with pytest.raises(IndexError):
        History.from_states(c.states(), 4)
    with pytest.raises(ValueError):
        History.from_states([])
    with pytest.raises(TypeError):
        History.from_states([("x", "not a scene")])
    # the budget applies as after apply: oldest states go, never the current one
    small = History.from_states(c.states(), 3, max_bytes=_scene_bytes(c.current) + 1)
    assert small.steps == ["move 3"]


# ---------------------------------------------------------------------------- recovery
def test_recovery_locations(tmp_path, monkeypatch):
    assert recovery_dir() == tmp_path / "recovery"
    monkeypatch.delenv("SCENELAB_RECOVERY_DIR")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert recovery_dir() == tmp_path / "state" / "scenelab" / "recovery"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert recovery_dir() == tmp_path / "home" / ".local" / "state" / "scenelab" / "recovery"
    monkeypatch.chdir(tmp_path)
    a = recovery_path("room.ply")
    assert (
        a == recovery_path(tmp_path / "room.ply") == recovery_path(str(tmp_path / "x/../room.ply"))
    )
    assert a != recovery_path(tmp_path / "other" / "room.ply")
    assert a.name.startswith("room.ply-") and a.suffix == ".scenelab"


def _wait_for(cond, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False


class _Session:
    """A stand-in for the viewer: a history edited under a lock, and its snapshot."""

    def __init__(self, n=80):
        self.lock = threading.Lock()
        self.history = History(make_scene(n, degree=0))
        self.calls = 0

    def edit(self, i):
        with self.lock:
            s = self.history.current
            self.history.apply(f"edit {i}", s.replace(means=s.means + 1.0))

    def snapshot(self) -> Project:
        with self.lock:
            self.calls += 1
            return _project(self.history.copy(), source="scene.ply")


def test_autosave_after_n_edits_never_next_to_the_user_files(tmp_path):
    src_dir = tmp_path / "user"
    src_dir.mkdir()
    source = src_dir / "scene.ply"
    source.write_bytes(b"user scene")
    sess = _Session()
    with Autosaver(source, sess.snapshot, every_edits=3, every_seconds=3600) as saver:
        for i in range(2):
            sess.edit(i)
            saver.mark_edit()
        time.sleep(0.3)
        assert find_recovery(source) is None and sess.calls == 0
        sess.edit(2)
        saver.mark_edit()
        assert _wait_for(lambda: find_recovery(source) is not None)
        rec = find_recovery(source)
        assert rec.path == recovery_path(source) and rec.path.parent == tmp_path / "recovery"
        assert rec.source == str(source.resolve()) and rec.edits == 3
        assert rec.steps == ["open", "edit 0", "edit 1", "edit 2"]
        assert rec.saved_at == pytest.approx(time.time(), abs=60)
        restored = load_project(rec.path)
        assert _same_scene(restored.history.current, sess.history.current)
        assert restored.history.undo() is not None
    assert sorted(os.listdir(src_dir)) == ["scene.ply"]
    assert source.read_bytes() == b"user scene"
    assert sorted(os.listdir(tmp_path / "recovery")) == [rec.path.name]  # no temp files


def test_autosave_after_t_seconds_then_mark_saved_discards(tmp_path):
    source = tmp_path / "scene.ply"
    sess = _Session()
    saver = Autosaver(source, sess.snapshot, every_edits=1000, every_seconds=0.2)
    try:
        assert saver.flush() is None  # nothing unsaved yet
        sess.edit(0)
        saver.mark_edit()
        assert saver.dirty
        assert _wait_for(lambda: saver.saves == 1)
        assert not saver.dirty and find_recovery(source).edits == 1
        sess.edit(1)
        saver.mark_edit()
        assert _wait_for(lambda: saver.saves == 2)
        assert find_recovery(source).edits == 2  # counted since the user last saved
        saver.mark_saved()
        assert find_recovery(source) is None and not recovery_path(source).exists()
        time.sleep(0.4)
        assert saver.saves == 2  # nothing unsaved: no autosave
    finally:
        saver.close()
    assert not saver._thread.is_alive()


def test_flush_saves_now_below_the_thresholds(tmp_path):
    source = tmp_path / "scene.ply"
    sess = _Session()
    saver = Autosaver(source, sess.snapshot, every_edits=100, every_seconds=3600)
    try:
        sess.edit(0)
        saver.mark_edit()
        assert saver.flush() == recovery_path(source)
        assert load_project(recovery_path(source)).history.steps == ["open", "edit 0"]
        assert saver.flush() is None
    finally:
        saver.close()
    discard_recovery(source)
    assert find_recovery(source) is None
    discard_recovery(source)  # no error when there is none


def test_failed_autosave_is_reported_and_retried(tmp_path):
    source = tmp_path / "scene.ply"
    sess = _Session()
    fail = {"on": True}

    def snapshot():
        if fail["on"]:
            raise RuntimeError("viewer busy")
        return sess.snapshot()

    saver = Autosaver(source, snapshot, every_edits=1, every_seconds=0.2)
    try:
        saver.mark_edit()
        assert _wait_for(lambda: saver.last_error is not None)
        assert saver._thread.is_alive() and saver.dirty
        fail["on"] = False
        assert _wait_for(lambda: saver.saves == 1)  # retried after every_seconds
        assert saver.last_error is None and find_recovery(source) is not None
    finally:
        saver.close()


def test_unreadable_recovery_file_is_ignored(tmp_path):
    source = tmp_path / "scene.ply"
    path = recovery_path(source)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"garbage")
    assert find_recovery(source) is None


def test_autosave_keeps_up_with_concurrent_edits(tmp_path):
    source = tmp_path / "scene.ply"
    sess = _Session(n=50)
    saver = Autosaver(source, sess.snapshot, every_edits=1, every_seconds=0.05)
    try:
        for i in range(40):
            sess.edit(i)
            saver.mark_edit()
        saver.flush()
        # every save was one consistent state; the last one is the final state
        q = load_project(recovery_path(source))
        assert _same_scene(q.history.current, sess.history.current)
        assert q.history.steps == sess.history.steps
    finally:
        saver.close()


# ---------------------------------------------------------------------------- fuzzing
FUZZ_EXAMPLES = int(os.environ.get("SCENELAB_FUZZ_EXAMPLES", "40"))


@pytest.fixture(scope="module")
def good_bytes(tmp_path_factory) -> bytes:
    h = _varied_history()
    for _ in range(3):
        h.undo()
    n = len(h.current)
    p = _project(
        h,
        named_selections={"a": torch.ones(n, dtype=torch.bool)},
        field=FeatureField(features=h.current.extras["feature"], heads={"clip": torch.ones(4, 6)}),
        grasps=[Grasp(np.eye(4), 0.03, np.zeros((2, 3)), 0.5, {"x": 0.5})],
        bookmarks=[Bookmark("b", (0, 0, 1), (0, 0, 0), (0, 1, 0), 50.0)],
        up="+z",
        settings={"k": [1, 2]},
    )
    return save_project(p, tmp_path_factory.mktemp("fuzz") / "good.scenelab").read_bytes()


def _load_or_refuse(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "fuzz.scenelab"
    path.write_bytes(data)
    try:
        load_project(path)
    except ProjectFormatError:
        pass


FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@FUZZ
@given(
    edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), max_size=8),
    cut=st.one_of(st.none(), st.floats(0, 1)),
)
def test_fuzz_damaged_files_load_or_raise_project_format_error(tmp_path, good_bytes, edits, cut):
    data = bytearray(good_bytes)
    for where, value in edits:
        data[int(where * len(data))] = value
    if cut is not None:
        data = data[: int(cut * len(data))]
    _load_or_refuse(tmp_path, bytes(data))


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*prefix, i))


@FUZZ
@given(data=st.data())
def test_fuzz_manifest_values_load_or_raise_project_format_error(tmp_path, good_bytes, data):
    src = tmp_path / "src.scenelab"
    src.write_bytes(good_bytes)
    manifest = _manifest(src)
    for _ in range(data.draw(st.integers(1, 3))):
        paths = [p for p in _paths(manifest) if p]
        path = data.draw(st.sampled_from(paths))
        node = manifest
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = data.draw(_JSON)
    text = json.dumps(manifest).encode()  # NaN/Infinity allowed: Python's json reads them
    out = _rezip(src, tmp_path / "m.scenelab", replace={"manifest.json": text})
    _load_or_refuse(tmp_path, out.read_bytes())
