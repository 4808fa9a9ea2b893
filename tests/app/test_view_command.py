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


@pytest.mark.parametrize("flag", [[], ["--no-preview"], ["--max-splats", "0"]])
def test_a_large_ply_shows_a_first_look_while_it_loads(no_wait, tmp_path, monkeypatch, flag):
    """More than 24,000 Gaussians: a strided sample is sent before the whole file is read
    (`show_preview`), unless --no-preview or every splat is asked for."""
    import app.viewer._preview as preview

    sent = []
    monkeypatch.setattr(preview, "send_preview", lambda *a, **k: sent.append((a, k)))
    scene = blob_scene(floor=160)  # 25,600 floor splats + 3,000 in the blobs
    path = save_scene(scene, tmp_path / "s.ply")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["view", str(path), "--port", str(port), *flag]) == 0
    if flag:
        assert sent == []
    else:
        (((_started, sample, total), _),) = sent
        assert total == len(scene) and len(sample) <= preview.PREVIEW_SPLATS < len(scene)
