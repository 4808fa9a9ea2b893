"""GUI-typed paths stay inside the viewer's folder."""

import os

import pytest

from app._paths import PathOutsideRootError, confine, display


def test_relative_paths_resolve_inside_root(tmp_path):
    assert confine("out/scene.ply", tmp_path) == (tmp_path / "out" / "scene.ply").resolve()
    assert confine("  scene.ply ", tmp_path) == (tmp_path / "scene.ply").resolve()
    assert confine("a/../b.ply", tmp_path) == (tmp_path / "b.ply").resolve()


def test_absolute_path_inside_root_is_allowed(tmp_path):
    target = tmp_path / "x.ply"
    assert confine(str(target), tmp_path) == target.resolve()


@pytest.mark.parametrize(
    "text", ["../x.ply", "a/../../x.ply", "/etc/passwd", "/tmp", "~/x.ply", "", "  ", "a\x00b"]
)
def test_escapes_are_refused(tmp_path, text):
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(PathOutsideRootError):
        confine(text, root)


def test_symlink_leading_out_is_refused(tmp_path):
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    os.symlink(outside, root / "link")
    with pytest.raises(PathOutsideRootError):
        confine("link/x.ply", root)


def test_default_root_is_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert confine("s.ply") == (tmp_path / "s.ply").resolve()
    with pytest.raises(PathOutsideRootError):
        confine("../s.ply")


def test_errors_are_value_errors_and_display_is_relative(tmp_path):
    assert issubclass(PathOutsideRootError, ValueError)
    assert display(tmp_path / "a" / "b.ply", tmp_path) == os.path.join("a", "b.ply")
