"""`scenelab render SCENE --data DATA`: one PNG per dataset view, named after the view's photo,
the same for Gaussian scenes and NeRFs; never over existing images unasked."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from app.cli import main
from app.commands.render import view_file_names
from fields import load_dataset, load_scene, render
from fields.nerf import NerfModelConfig, NerfScene, SceneBox, render_nerf, save_nerf
from fields.synthetic import make_world, write_world

SMALL = NerfModelConfig(levels=6, log2_table=14, max_res=64, occupancy_res=32)
N_VIEWS = 6


def blob_nerf(center, radius: float) -> NerfScene:
    """A NeRF that is opaque in the middle eighth of its box and empty elsewhere (no training:
    a high density bias everywhere, and an occupancy grid that keeps only the middle cells)."""
    scene = NerfScene.create(SMALL, SceneBox(tuple(center), radius, "box"))
    with torch.no_grad():
        scene.field.density_mlp[2].bias[0] = 6.0
    G = SMALL.occupancy_res
    occ = torch.zeros(G, G, G, dtype=torch.bool)
    occ[G // 4 : 3 * G // 4, G // 4 : 3 * G // 4, G // 4 : 3 * G // 4] = True
    scene.occupancy = occ
    scene.meta = {"up": "+z"}
    return scene


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("render_cli")
    data = write_world(make_world(1), root / "world", n_views=N_VIEWS, width=32, height=24)
    means = load_scene(data / "scene.ply").means
    lo, hi = means.min(0).values, means.max(0).values
    nerf = blob_nerf(((lo + hi) / 2).tolist(), float((hi - lo).max()) / 2)
    save_nerf(nerf, root / "blob.nerf")
    return data, data / "scene.ply", root / "blob.nerf"


def _render(scene: Path, out: Path, *extra: str, data: Path | None = None) -> int:
    args = ["render", str(scene), "--out", str(out), "--quiet", *extra]
    if data is not None:
        args += ["--data", str(data)]
    return main(args)


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path)).astype(int)


def _u8(rgb: torch.Tensor) -> np.ndarray:
    return (rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy().astype(int)


@pytest.mark.parametrize("kind", ["gaussians", "nerf"])
def test_one_png_per_view_named_after_its_photo(world, tmp_path, kind):
    data, ply, nerf = world
    scene_path = ply if kind == "gaussians" else nerf
    out = tmp_path / "renders"
    assert _render(scene_path, out, data=data) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"frame_{i:05d}.png" for i in range(N_VIEWS)]
    # Each file holds its own view's render (not another view's, not blank).
    cams = load_dataset(data).cameras
    if kind == "gaussians":
        scene = load_scene(ply)
        expect = [_u8(render(scene, c, background=(1.0, 1.0, 1.0)).rgb) for c in cams[:2]]
    else:
        from fields.nerf import load_nerf

        scene = load_nerf(nerf)
        expect = [_u8(render_nerf(scene, c, background=(1.0, 1.0, 1.0)).rgb) for c in cams[:2]]
    for i in range(2):
        got = _png(out / f"frame_{i:05d}.png")
        assert got.shape == (24, 32, 3)
        assert np.abs(got - expect[i]).max() <= 1
    assert np.abs(expect[0] - expect[1]).max() > 20  # the two views differ: the test can tell
    assert (expect[0] < 250).any() and (expect[0] == 255).all(-1).any()  # object and background


def test_background_option_for_a_nerf(world, tmp_path):
    data, _, nerf = world
    assert _render(nerf, tmp_path / "w", "--max-views", "1", data=data) == 0
    assert (
        _render(nerf, tmp_path / "b", "--max-views", "1", "--background", "black", data=data) == 0
    )
    white, black = (
        _png(tmp_path / "w" / "frame_00000.png"),
        _png(tmp_path / "b" / "frame_00000.png"),
    )
    # Over a background b a pixel is premultiplied colour + (1 - alpha) b.
    from fields.nerf import load_nerf

    cam = load_dataset(data).cameras[0]
    alpha = render_nerf(load_nerf(nerf), cam).alpha.numpy()  # [H,W,1]
    assert (alpha > 0.99).any() and (alpha < 0.01).any()
    assert np.abs(white - black - 255 * (1 - alpha)).max() <= 2


def test_refuses_to_overwrite_renders_unless_asked(world, tmp_path, capsys):
    data, ply, nerf = world
    out = tmp_path / "renders"
    assert _render(ply, out, "--max-views", "2", data=data) == 0
    mine = out / "frame_00001.png"
    mine.write_bytes(b"my own picture")
    assert _render(nerf, out, "--max-views", "2", data=data) == 2
    assert "already exist" in capsys.readouterr().err
    assert mine.read_bytes() == b"my own picture"
    assert _render(nerf, out, "--max-views", "2", "--overwrite", data=data) == 0
    assert _png(mine).shape == (24, 32, 3)


def _blender(root: Path, splits: dict[str, list[str]]) -> Path:
    """A tiny nerf_synthetic-style folder: transforms_<split>.json + <split>/<name>.png."""
    for split, names in splits.items():
        (root / split).mkdir(parents=True)
        frames = []
        for k, name in enumerate(names):
            rgba = np.zeros((12, 16, 4), np.uint8)
            rgba[..., 3] = 255
            Image.fromarray(rgba).save(root / split / f"{name}.png")
            c2w = np.eye(4)
            c2w[:3, 3] = [0.1 * k, 0.0, 3.0]  # OpenGL camera on +z looking at the origin
            frames.append({"file_path": f"./{split}/{name}", "transform_matrix": c2w.tolist()})
        doc = {"camera_angle_x": 0.7, "frames": frames}
        (root / f"transforms_{split}.json").write_text(json.dumps(doc))
    return root


def test_blender_splits_with_the_same_photo_names_go_into_folders(world, tmp_path):
    _, _, nerf = world
    data = _blender(tmp_path / "lego", {"train": ["r_0", "r_1"], "test": ["r_0"]})
    out = tmp_path / "all"
    assert _render(nerf, out, data=data) == 0
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    assert files == ["test/r_0.png", "train/r_0.png", "train/r_1.png"]
    # One split: flat names, as the photos are named.
    assert _render(nerf, tmp_path / "test", "--split", "test", data=data) == 0
    assert sorted(p.name for p in (tmp_path / "test").iterdir()) == ["r_0.png"]
    # heldout without a training record: the dataset's own test split.
    assert _render(nerf, tmp_path / "held", "--split", "heldout", data=data) == 0
    assert sorted(p.name for p in (tmp_path / "held").iterdir()) == ["r_0.png"]


def test_view_file_names():
    assert view_file_names(["images/a.png", "images/b.jpg", "c"]) == ["a.png", "b.png", "c.png"]
    assert view_file_names(["/d/train/r_0.png", "/d/test/r_0.png", "/d/test/r_1.png"]) == [
        "train/r_0.png",
        "test/r_0.png",
        "test/r_1.png",
    ]
    with pytest.raises(ValueError, match=r"'x/cam/r_0.png' and 'y/cam/r_0.png'"):
        view_file_names(["x/cam/r_0.png", "y/cam/r_0.png"])


def test_orbit_renders_of_a_nerf_and_option_errors(world, tmp_path, capsys):
    _, _, nerf = world
    out = tmp_path / "orbit"
    assert _render(nerf, out, "--views", "2", "--width", "20", "--height", "16") == 0
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 2 and _png(pngs[0]).shape == (16, 20, 3)
    assert (_png(pngs[0]) < 250).any()  # the orbit frames the NeRF's box: the blob is in view
    assert _render(nerf, tmp_path / "x", "--split", "test") == 2
    assert "--data" in capsys.readouterr().err
    assert _render(tmp_path / "missing.nerf", tmp_path / "y") == 2
    assert "no such NeRF scene" in capsys.readouterr().err


# ---------------------------------------------------------------------- camera paths
def _orbit_path(scene_path: Path, width: int, height: int, fps: float = 10.0, seconds=0.6):
    """A keyframed nerfstudio path: four views around the scene, looking at its centre."""
    import math

    from fields import Camera, CameraPath, Keyframe

    means = load_scene(scene_path).means.double()
    centre = ((means.min(0).values + means.max(0).values) / 2).numpy()
    radius = float((means.max(0).values - means.min(0).values).norm())
    kfs = []
    for k in range(4):
        a = 2 * math.pi * k / 4
        eye = centre + radius * np.array([math.cos(a), math.sin(a), 0.5])
        cam = Camera.look_at(eye, centre, (0.0, 0.0, 1.0), torch.eye(3), 4, 4)
        kfs.append(Keyframe(cam.c2w.double().numpy(), 45.0))
    return CameraPath(tuple(kfs), seconds=seconds, fps=fps, width=width, height=height)


def _read_video(path: Path) -> tuple[list[np.ndarray], dict]:
    import imageio_ffmpeg

    gen = imageio_ffmpeg.read_frames(str(path))
    meta = next(gen)
    w, h = meta["size"]
    frames = [np.frombuffer(f, np.uint8).reshape(h, w, 3) for f in gen]
    return frames, meta


@pytest.mark.parametrize("kind", ["gaussians", "nerf"])
def test_camera_path_to_mp4_one_frame_per_entry(world, tmp_path, kind):
    from fields import load_camera_path, save_camera_path

    _, ply, nerf = world
    path = _orbit_path(ply, 48, 32, fps=10.0, seconds=0.7)
    file = save_camera_path(path, tmp_path / "camera_path.json")
    video = tmp_path / "out" / "orbit.mp4"
    scene_path = ply if kind == "gaussians" else nerf
    assert _render(scene_path, video, "--camera-path", str(file)) == 0
    frames, meta = _read_video(video)
    assert len(frames) == 7 and meta["size"] == (48, 32)
    assert meta["fps"] == pytest.approx(10.0)
    # Each frame is its own camera's render (H.264 is lossy: compare loosely) and they differ.
    cams = load_camera_path(file).cameras
    if kind == "gaussians":
        scene = load_scene(ply)
        want = [_u8(render(scene, c, background=(1.0, 1.0, 1.0)).rgb) for c in cams]
    else:
        from fields.nerf import load_nerf

        scene = load_nerf(nerf)
        want = [_u8(render_nerf(scene, c, background=(1.0, 1.0, 1.0)).rgb) for c in cams]
    err = np.array([[np.abs(g.astype(int) - w).mean() for w in want] for g in frames])
    assert np.diag(err).max() < 6
    # ... not the next frame's: the views differ more than the encoding loses.
    assert err[0, 1] > 2 * err[0, 0] and err[1, 0] > 2 * err[1, 1]
    # No temporary file is left behind.
    assert sorted(p.name for p in video.parent.iterdir()) == ["orbit.mp4"]


def test_camera_path_odd_size_refusal_and_pngs(world, tmp_path, capsys):
    from fields import save_camera_path

    _, ply, _ = world
    file = save_camera_path(_orbit_path(ply, 33, 25, fps=5.0, seconds=0.6), tmp_path / "p.json")
    video = tmp_path / "odd.mp4"
    assert _render(ply, video, "--camera-path", str(file)) == 0
    frames, meta = _read_video(video)
    assert len(frames) == 3 and meta["size"] == (34, 26)  # one more column and row, not scaled
    assert "H.264 needs even sizes" in capsys.readouterr().out
    # An existing video is kept unless --overwrite.
    before = video.read_bytes()
    assert _render(ply, video, "--camera-path", str(file), "--max-views", "1") == 2
    assert "already exists" in capsys.readouterr().err
    assert video.read_bytes() == before
    assert _render(ply, video, "--camera-path", str(file), "--max-views", "1", "--overwrite") == 0
    assert len(_read_video(video)[0]) == 1
    # Any other --out: one PNG per entry at the file's own (odd) size.
    assert _render(ply, tmp_path / "pngs", "--camera-path", str(file)) == 0
    pngs = sorted((tmp_path / "pngs").glob("*.png"))
    assert [p.name for p in pngs] == ["frame_00000.png", "frame_00001.png", "frame_00002.png"]
    assert _png(pngs[0]).shape == (25, 33, 3)


def test_camera_path_errors(world, tmp_path, capsys):
    data, ply, _ = world
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "render_width": 8,
                "render_height": 8,
                "fps": 4,
                "camera_path": [
                    {"camera_to_world": [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0], "fov": 50}
                ],
            }
        )
    )
    assert _render(ply, tmp_path / "v.mp4", "--camera-path", str(bad)) == 0  # 3x4 accepted
    bad.write_text(json.dumps({"render_width": 8, "fps": 4, "camera_path": []}))
    assert _render(ply, tmp_path / "w.mp4", "--camera-path", str(bad)) == 2
    assert "'render_height'" in capsys.readouterr().err
    good = tmp_path / "good.json"
    from fields import save_camera_path

    save_camera_path(_orbit_path(ply, 16, 16), good)
    assert _render(ply, tmp_path / "x.mp4", "--camera-path", str(good), data=data) == 2
    assert "--data" in capsys.readouterr().err
    assert _render(ply, tmp_path / "y.mp4", "--camera-path", str(tmp_path / "none.json")) == 2
    assert "no such camera path" in capsys.readouterr().err
