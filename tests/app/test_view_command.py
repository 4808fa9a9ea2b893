"""`scenelab view` / `scenelab demo` from the command line (server started, then returns)."""

import socket

import pytest

from app.cli import main
from fields import save_scene

from .conftest import blob_scene


def test_view_serves_on_the_port_and_binds_localhost(no_wait, tmp_path, capsys):
    path = save_scene(blob_scene(), tmp_path / "s.ply")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["view", str(path), "--port", str(port)]) == 0
    (app,) = no_wait
    assert app.port == port and app.config.host == "127.0.0.1" and app.share_url is None
    out = capsys.readouterr().out
    assert f"http://127.0.0.1:{port}" in out and "4,600 Gaussians" in out


def test_taken_port_is_reported(no_wait, tmp_path, capsys):
    path = save_scene(blob_scene(), tmp_path / "s.ply")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main(["view", str(path), "--port", str(port)]) == 0
    err = capsys.readouterr().err
    assert f"port {port} on 127.0.0.1 is already in use; serving on port {no_wait[0].port}" in err


def test_missing_scene_is_a_clear_error(tmp_path, capsys):
    assert main(["view", str(tmp_path / "nope.ply")]) == 2
    assert "no scene file" in capsys.readouterr().err


def test_demo_opens_the_bundled_world(no_wait, capsys):
    from assets import DEMO_DIR

    if not (DEMO_DIR / "scene.ply").is_file():
        pytest.skip("assets/demo is not bundled in this checkout")
    assert main(["demo", "--port", "0"]) == 2  # port 0 is refused on the command line
    assert main(["demo", "--port", "18931"]) == 0
    (app,) = no_wait
    assert app.title == "demo world" and len(app.cameras) > 0
    assert app.splat_budget is not None  # a sample first: the world has > 24k Gaussians
