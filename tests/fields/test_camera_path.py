"""Camera paths: the spline passes through its keyframes, is smooth, is slerp between two
keyframes (against a slow axis-angle reference) and a scalar spline for rotations about one axis;
nerfstudio's camera_path.json round-trips and a hand-written one reads as nerfstudio means it."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from fields import (
    CameraPath,
    Keyframe,
    camera_path_from_json,
    camera_path_to_json,
    load_camera_path,
    save_camera_path,
)


def random_keyframes(n: int, seed: int = 0, times=None) -> tuple[Keyframe, ...]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        c2w = np.eye(4)
        c2w[:3, :3] = Rotation.random(random_state=rng).as_matrix()
        c2w[:3, 3] = rng.normal(size=3)
        out.append(Keyframe(c2w, 30 + 40 * rng.random(), None if times is None else times[i]))
    return tuple(out)


def rot_angle(Ra: np.ndarray, Rb: np.ndarray) -> float:
    c = (np.trace(Ra.T @ Rb) - 1) / 2
    return math.acos(min(1.0, max(-1.0, c)))


# ---------------------------------------------------------------------- interpolation
@pytest.mark.parametrize("loop", [False, True])
@pytest.mark.parametrize("tension", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("times", [None, (0.0, 0.3, 1.9, 2.2, 3.5)])
def test_passes_through_every_keyframe_at_its_time(loop, tension, times):
    kfs = random_keyframes(5, seed=1, times=times)
    path = CameraPath(kfs, seconds=4.0, tension=tension, loop=loop)
    t = path.keyframe_times()
    if times is not None:
        assert np.allclose(t, times if loop else [*times[:-1], 4.0])  # open: ends at `seconds`
    elif loop:
        assert np.allclose(t, [0, 0.8, 1.6, 2.4, 3.2])
    else:
        assert np.allclose(t, [0, 1, 2, 3, 4])
    c2w, fov = path.evaluate(t)
    for k, kf in enumerate(kfs):
        assert np.abs(c2w[k] - kf.c2w).max() < 1e-9
        assert fov[k] == pytest.approx(kf.fov_deg)
    if loop:  # a loop comes back to its first keyframe at the end
        end, _ = path.evaluate(path.seconds)
        assert np.abs(end[0] - kfs[0].c2w).max() < 1e-9


def _velocity(path: CameraPath, t: float, h: float = 1e-5):
    """(position, rotation) velocity just before and just after `t` (one-sided differences)."""
    c, _ = path.evaluate([t - 2 * h, t - h, t, t + h, t + 2 * h])
    p = c[:, :3, 3]
    before = (3 * p[2] - 4 * p[1] + p[0]) / (2 * h)
    after = (-3 * p[2] + 4 * p[3] - p[4]) / (2 * h)
    # Angular velocity vectors (world frame) from the rotation steps on each side.
    R = c[:, :3, :3]
    w_before = Rotation.from_matrix(R[2] @ R[1].T).as_rotvec() / h
    w_after = Rotation.from_matrix(R[3] @ R[2].T).as_rotvec() / h
    return before, after, w_before, w_after


@pytest.mark.parametrize("times", [None, (0.0, 0.4, 2.5, 3.0, 4.0)])
def test_smooth_through_interior_keyframes(times):
    path = CameraPath(random_keyframes(5, seed=2, times=times), seconds=4.0, tension=0.3)
    for t in path.keyframe_times()[1:-1]:
        v0, v1, w0, w1 = _velocity(path, float(t))
        assert np.linalg.norm(v0 - v1) < 1e-3 * max(1.0, np.linalg.norm(v0))
        assert np.linalg.norm(w0 - w1) < 2e-3 * max(1.0, np.linalg.norm(w0))
    # Between keyframes the move is not a straight line (the test can see a kink-free curve).
    c, _ = path.evaluate(np.linspace(0, 4, 9))
    assert np.abs(np.diff(c[:, :3, 3], 2, axis=0)).max() > 1e-3


def slerp_reference(R0: np.ndarray, R1: np.ndarray, s: float) -> np.ndarray:
    """R0 · exp(s · log(R0ᵀ R1)) by Rodrigues' formula (the short way round)."""
    M = R0.T @ R1
    angle = math.acos(min(1.0, max(-1.0, (np.trace(M) - 1) / 2)))
    axis = np.array([M[2, 1] - M[1, 2], M[0, 2] - M[2, 0], M[1, 0] - M[0, 1]])
    axis /= np.linalg.norm(axis)
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    a = s * angle
    return R0 @ (np.eye(3) + math.sin(a) * K + (1 - math.cos(a)) * K @ K)


@pytest.mark.parametrize("seed", range(4))
def test_two_keyframes_are_slerp_and_a_straight_line(seed):
    kfs = random_keyframes(2, seed=seed)
    path = CameraPath(kfs, seconds=2.0, tension=0.5)
    for s in (0.0, 0.1, 0.37, 0.5, 0.9, 1.0):
        c2w, fov = path.evaluate(2.0 * s)
        ref = slerp_reference(kfs[0].c2w[:3, :3], kfs[1].c2w[:3, :3], s)
        assert np.abs(c2w[0, :3, :3] - ref).max() < 1e-9
        pos = (1 - s) * kfs[0].position + s * kfs[1].position
        assert np.abs(c2w[0, :3, 3] - pos).max() < 1e-9
        assert fov[0] == pytest.approx((1 - s) * kfs[0].fov_deg + s * kfs[1].fov_deg)


def cardinal_reference(values: list[float], u: float, tension: float) -> float:
    """An open Kochanek-Bartels (tension only) spline with natural ends, written out per segment."""
    n = len(values)
    m = [0.0] * n
    for i in range(1, n - 1):
        m[i] = (1 - tension) / 2 * (values[i + 1] - values[i - 1])
    m[0] = (3 * (values[1] - values[0]) - m[1]) / 2
    m[-1] = (3 * (values[-1] - values[-2]) - m[-2]) / 2
    i = min(int(u), n - 2)
    s = u - i
    return (
        (2 * s**3 - 3 * s**2 + 1) * values[i]
        + (s**3 - 2 * s**2 + s) * m[i]
        + (-2 * s**3 + 3 * s**2) * values[i + 1]
        + (s**3 - s**2) * m[i + 1]
    )


def test_rotations_about_one_axis_follow_the_scalar_spline_of_their_angles():
    angles = [0.0, 0.7, 0.9, 2.4, 2.0]
    axis = np.array([1.0, 2.0, -0.5]) / np.linalg.norm([1.0, 2.0, -0.5])
    kfs = []
    for k, a in enumerate(angles):
        c2w = np.eye(4)
        c2w[:3, :3] = Rotation.from_rotvec(a * axis).as_matrix()
        c2w[:3, 3] = [k, k * k * 0.1, 0.0]
        kfs.append(Keyframe(c2w, 50.0))
    path = CameraPath(tuple(kfs), seconds=4.0, tension=0.25)  # uniform: u = t
    for u in np.linspace(0, 4, 23):
        c2w, _ = path.evaluate(u)
        want = cardinal_reference(angles, u, 0.25)
        assert np.abs(c2w[0, :3, :3] - Rotation.from_rotvec(want * axis).as_matrix()).max() < 1e-9
        for d in range(3):
            ref = cardinal_reference([kf.position[d] for kf in kfs], u, 0.25)
            assert c2w[0, d, 3] == pytest.approx(ref, abs=1e-9)


def test_tension_one_stops_at_keyframes_and_evenly_spaced_collinear_keys_are_linear():
    kfs = []
    for k in range(4):
        c2w = np.eye(4)
        c2w[:3, 3] = [2.0 * k, 0.0, 0.0]
        kfs.append(Keyframe(c2w, 50.0))
    smooth = CameraPath(tuple(kfs), seconds=3.0, tension=0.0)
    t = np.linspace(0, 3, 31)
    c, _ = smooth.evaluate(t)
    assert np.allclose(c[:, 0, 3], 2.0 * t)  # Catmull-Rom: constant speed
    stop = CameraPath(tuple(kfs), seconds=3.0, tension=1.0)
    v0, v1, _, _ = _velocity(stop, 1.0)
    assert np.linalg.norm(v0) < 1e-3 and np.linalg.norm(v1) < 1e-3


def test_frames_cameras_and_edits():
    kfs = random_keyframes(3, seed=5)
    path = CameraPath(kfs, seconds=2.0, fps=10.0, width=64, height=48)
    assert path.n_frames == 20 and len(path.frame_times()) == 20
    assert path.frame_times()[0] == 0 and path.frame_times()[-1] == pytest.approx(2.0)
    cams = path.cameras()
    assert len(cams) == 20 and (cams[0].width, cams[0].height) == (64, 48)
    assert np.allclose(cams[0].c2w.double().numpy(), kfs[0].c2w, atol=1e-5)
    assert cams[-1].fy == pytest.approx(0.5 * 48 / math.tan(math.radians(kfs[2].fov_deg) / 2))
    loop = path.with_settings(loop=True)
    assert loop.frame_times()[-1] == pytest.approx(2.0 - 0.1)  # the first frame is not repeated
    moved = path.moved(2, 0)
    assert [k.fov_deg for k in moved.keyframes] == [kfs[2].fov_deg, kfs[0].fov_deg, kfs[1].fov_deg]
    assert len(path.removed(1)) == 2 and path.removed(-1).keyframes == kfs[:2]
    assert path.added(kfs[0], 1).keyframes[1] is kfs[0]
    with pytest.raises(IndexError, match="keyframe 3"):
        path.removed(3)
    timed = CameraPath(random_keyframes(3, times=(0.0, 1.5, 2.0)), seconds=2.0)
    assert all(k.time is None for k in timed.moved(0, 2).keyframes)  # order changed: even times
    with pytest.raises(ValueError, match="must increase"):
        CameraPath(random_keyframes(4, times=(0.0, 1.5, 1.0, 2.0)), seconds=2.0).keyframe_times()
    with pytest.raises(ValueError, match="no keyframes"):
        CameraPath().evaluate(0.0)
    one = CameraPath(kfs[:1], seconds=1.0, fps=5)
    assert np.allclose(one.evaluate([0, 0.5])[0], kfs[0].c2w)


def test_keyframe_checks_and_pose_constructor():
    with pytest.raises(ValueError, match=r"Keyframe.c2w is not a rotation"):
        Keyframe(np.diag([2.0, 1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="fov_deg"):
        Keyframe(np.eye(4), 0.0)
    q = Rotation.from_euler("xyz", [0.3, -1.0, 2.0]).as_quat(scalar_first=True)
    kf = Keyframe.from_pose(2.0 * q, [1, 2, 3], 45.0)
    assert np.allclose(kf.wxyz, q if q[0] > 0 else -q) and np.allclose(kf.position, [1, 2, 3])


# ---------------------------------------------------------------------- nerfstudio's file
@pytest.mark.parametrize("loop", [False, True])
@pytest.mark.parametrize("times", [None, (0.0, 0.5, 2.0, 2.4)])  # open: the last is at 3 s
def test_json_round_trip(tmp_path, loop, times):
    path = CameraPath(
        random_keyframes(4, seed=3, times=times),
        seconds=3.0,
        fps=12.0,
        width=96,
        height=54,
        tension=0.4,
        loop=loop,
    )
    file = save_camera_path(path, tmp_path / "camera_path.json")
    doc = json.loads(file.read_text())
    assert len(doc["camera_path"]) == path.n_frames == 36
    assert len(doc["camera_path"][0]["camera_to_world"]) == 16
    got = load_camera_path(file)
    assert (got.width, got.height, got.fps, got.seconds) == (96, 54, 12.0, 3.0)
    c2w, fov = path.evaluate(path.frame_times())
    for cam, m, f in zip(got.cameras, c2w, fov, strict=True):
        assert np.abs(cam.c2w.double().numpy() - m).max() < 1e-5
        assert cam.fy == pytest.approx(0.5 * 54 / math.tan(math.radians(f) / 2), rel=1e-5)
    p = got.path
    assert p is not None and p.loop == loop and p.tension == pytest.approx(0.4)
    assert np.allclose(p.keyframe_times(), path.keyframe_times())
    for a, b in zip(p.keyframes, path.keyframes, strict=True):
        assert np.abs(a.c2w - b.c2w).max() < 1e-12 and a.fov_deg == b.fov_deg
    # ... and the re-read path samples the same cameras.
    assert np.abs(p.evaluate(p.frame_times())[0] - c2w).max() < 1e-9
    with pytest.raises(FileExistsError):
        save_camera_path(path, file)
    save_camera_path(path.with_settings(fps=6.0), file, overwrite=True)
    assert load_camera_path(file).fps == 6.0


def handwritten() -> dict:
    """What nerfstudio's render panel writes (abridged): OpenGL camera-to-world, row-major."""
    at_z3 = [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 0, 0, 0, 1]  # on +z, looking down -z
    at_x3 = [0, 0, 1, 3, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1]  # on +x, looking down -x, up +z
    return {
        "default_fov": 60.0,
        "default_transition_sec": 2.0,
        "keyframes": [
            {
                "matrix": at_z3,
                "fov": 60.0,
                "aspect": 1.333,
                "override_transition_enabled": False,
                "override_transition_sec": None,
            },
            {
                "matrix": at_x3,
                "fov": 40.0,
                "aspect": 1.333,
                "override_transition_enabled": True,
                "override_transition_sec": 1.0,
            },
        ],
        "camera_type": "perspective",
        "render_height": 48,
        "render_width": 64,
        "fps": 24,
        "seconds": 1.0,
        "is_cycle": False,
        "smoothness_value": 0.5,
        "camera_path": [
            {"camera_to_world": at_z3, "fov": 60.0, "aspect": 1.333},
            {"camera_to_world": at_x3, "fov": 40.0, "aspect": 1.333},
        ],
        "crop": None,
    }


def test_reads_a_hand_written_nerfstudio_file(tmp_path):
    file = tmp_path / "camera_path.json"
    file.write_text(json.dumps(handwritten()))
    got = load_camera_path(file)
    assert len(got.cameras) == 2 and (got.width, got.height, got.fps) == (64, 48, 24.0)
    a, b = got.cameras
    f60 = 0.5 * 48 / math.tan(math.radians(30))
    assert a.fx == pytest.approx(f60) and a.fy == pytest.approx(f60)
    assert (a.cx, a.cy) == (32.0, 24.0)
    assert np.allclose(a.center.numpy(), [0, 0, 3]) and np.allclose(b.center.numpy(), [3, 0, 0])
    # The origin is straight ahead of both cameras (at the principal point) ...
    for cam in (a, b):
        p = cam.viewmat.double() @ torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64)
        assert p[2] == pytest.approx(3.0) and abs(p[0]) < 1e-6 and abs(p[1]) < 1e-6
    # ... and world +z is image-up for the second (OpenCV y points down the image).
    up = b.viewmat.double()[:3, :3] @ torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    assert up[1] == pytest.approx(-1.0)
    path = got.path
    assert path is not None and len(path) == 2 and path.tension == 0.5
    assert [k.fov_deg for k in path.keyframes] == [60.0, 40.0]
    assert np.allclose(path.keyframe_times(), [0.0, 1.0])  # one 1 s transition, 1 s long path
    assert path.meta == {"crop": None}  # kept, and written back
    assert "crop" in camera_path_to_json(path)


@pytest.mark.parametrize(
    "change, field",
    [
        (lambda d: d.pop("render_width"), "render_width"),
        (lambda d: d.update(render_height=0), "render_height"),
        (lambda d: d.update(render_height=10.5), "render_height"),
        (lambda d: d.update(camera_path=[]), "camera_path"),
        (lambda d: d.update(camera_type="fisheye"), "camera_type"),
        (lambda d: d.update(fps=-1), "fps"),
        (lambda d: (d.pop("fps"), d.pop("seconds")), "fps"),
        (lambda d: d["camera_path"][1].pop("fov"), r"camera_path\[1\].fov"),
        (lambda d: d["camera_path"][1].update(fov=180), r"camera_path\[1\].fov"),
        (
            lambda d: d["camera_path"][0].update(camera_to_world=[1, 2, 3]),
            r"camera_path\[0\].camera_to_world",
        ),
        (
            lambda d: d["camera_path"][0].update(camera_to_world=[2.0] + [0] * 15),
            r"camera_path\[0\].camera_to_world",
        ),
        (
            lambda d: d["camera_path"][0].update(camera_to_world=["a"] * 16),
            r"camera_path\[0\].camera_to_world",
        ),
        (lambda d: d["keyframes"][1].update(matrix=None), r"keyframes\[1\].matrix"),
        (
            lambda d: d["keyframes"][1].update(override_transition_sec=-2),
            r"keyframes\[1\].override_transition_sec",
        ),
        (lambda d: d.update(smoothness_value=3), "smoothness_value"),
    ],
)
def test_bad_files_name_the_field(change, field):
    doc = handwritten()
    change(doc)
    with pytest.raises(ValueError, match=f"'{field}'"):
        camera_path_from_json(doc, "x.json")


def test_bad_json_and_missing_file(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_camera_path(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="expected a JSON object"):
        camera_path_from_json([1, 2])
    with pytest.raises(FileNotFoundError, match="no such camera path"):
        load_camera_path(tmp_path / "missing.json")


def test_fps_from_seconds_when_missing_as_ns_render_does():
    doc = handwritten()
    doc.pop("fps")
    doc["seconds"] = 0.5
    assert camera_path_from_json(doc).fps == 4.0  # 2 frames in 0.5 s
