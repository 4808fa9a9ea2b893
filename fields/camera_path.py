"""Camera paths: keyframed camera moves sampled into video frames, and nerfstudio's
`camera_path.json` (what its render panel writes and `ns-render camera-path` reads).

Frames: a `Keyframe` holds `c2w` = T_world_cam in OpenCV axes (x right, y down, z forward), the
same as `Camera.c2w` and viser's camera; the JSON file holds OpenGL camera axes (y up, z backward)
like transforms.json, converted on read and write. Field of view is vertical, in degrees.

Interpolation (nerfstudio's, re-derived): the spline parameter u runs over keyframe indices
(keyframe k at u = k); positions and the field of view follow a Kochanek-Bartels spline with
tension τ and no bias/continuity (τ = 0: Catmull-Rom; τ = 1: the camera eases to a stop at every
keyframe) with "natural" ends on an open path; rotations follow the same spline on the unit
quaternions (tangents in the tangent space, Bézier control rotations, de Casteljau with slerp), so
two keyframes give exactly slerp. Time maps to u by a monotone cubic (PCHIP) through
(keyframe time, k), so speed changes smoothly where keyframes are unevenly spaced in time.

The file (nerfstudio's format; every field is written, the ones marked * are read):
    {"camera_type": "perspective"*, "render_width"*: 640, "render_height"*: 480,
     "fps"*: 30, "seconds"*: 4.0, "is_cycle"*: false, "smoothness_value"*: 0.0 (the tension),
     "default_fov"*: 50.0, "default_transition_sec"*: 1.0,
     "keyframes"*: [{"matrix": [16 numbers, OpenGL c2w row-major], "fov": 50.0, "aspect": 1.33,
                    "override_transition_enabled": false, "override_transition_sec": null}],
     "camera_path"*: [{"camera_to_world": [16 numbers], "fov": 50.0, "aspect": 1.33}, ...]}
`camera_path` (one entry per video frame) is what gets rendered; `keyframes` let an editor open
the path again. A nerfstudio keyframe's transition is the time to reach it from the previous one
(on a loop, keyframe 0's is the closing move). nerfstudio samples `i / n` for i < n frames and so
never reaches the last keyframe of an open path; here an open path's frames run from the first
keyframe to the last one inclusive.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .camera import Camera


def _rotation():  # scipy's Rotation, imported when a path is used (not when `fields` loads)
    from scipy.spatial.transform import Rotation

    return Rotation


__all__ = [
    "CameraPath",
    "CameraPathFile",
    "Keyframe",
    "camera_path_from_json",
    "camera_path_to_json",
    "load_camera_path",
    "save_camera_path",
]

_GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])  # flips camera y and z (its own inverse)
_ORTHO_TOL = 1e-3  # how far a file's rotation may be from orthonormal (float32 round trips)


# ---------------------------------------------------------------------- keyframes and paths
@dataclass(frozen=True, eq=False)
class Keyframe:
    """One camera the path passes through: `c2w` [4,4] T_world_cam (OpenCV axes, float64),
    vertical field of view `fov_deg`, and `time` (seconds from the start) or None to be spread
    evenly between its neighbours."""

    c2w: np.ndarray  # [4,4]
    fov_deg: float = 50.0
    time: float | None = None

    def __post_init__(self) -> None:
        try:
            c2w = _rigid(self.c2w)
        except ValueError as e:
            raise ValueError(f"Keyframe.c2w {e}") from None
        object.__setattr__(self, "c2w", c2w)
        fov = float(self.fov_deg)
        if not 0.0 < fov < 180.0:
            raise ValueError(f"Keyframe.fov_deg must be in (0, 180), got {fov}")
        object.__setattr__(self, "fov_deg", fov)
        if self.time is not None:
            t = float(self.time)
            if not (math.isfinite(t) and t >= 0.0):
                raise ValueError(f"Keyframe.time must be a finite number >= 0, got {t}")
            object.__setattr__(self, "time", t)

    @classmethod
    def from_pose(
        cls,
        wxyz: Sequence[float] | np.ndarray,  # [4] rotation of T_world_cam
        position: Sequence[float] | np.ndarray,  # [3] camera centre in the world
        fov_deg: float,
    ) -> Keyframe:
        """From a viser-style camera (OpenCV axes; `wxyz` need not be normalised)."""
        q = np.asarray(wxyz, dtype=np.float64).reshape(4)
        c2w = np.eye(4)
        c2w[:3, :3] = _rotation().from_quat(q, scalar_first=True).as_matrix()
        c2w[:3, 3] = np.asarray(position, dtype=np.float64).reshape(3)
        return cls(c2w, fov_deg)

    @property
    def wxyz(self) -> np.ndarray:
        """[4] unit quaternion of the rotation (w >= 0)."""
        q = _rotation().from_matrix(self.c2w[:3, :3]).as_quat(scalar_first=True)
        return q if q[0] >= 0 else -q

    @property
    def position(self) -> np.ndarray:
        """[3] camera centre."""
        return self.c2w[:3, 3].copy()


@dataclass(frozen=True, eq=False)
class CameraPath:
    """Keyframes and how to film them: `seconds` long at `fps`, `width`x`height` pixels, spline
    `tension` in [0, 1] (0 = smoothest), `loop` back to the first keyframe. Immutable: the
    editing methods return new paths."""

    keyframes: tuple[Keyframe, ...] = ()
    seconds: float = 4.0
    fps: float = 30.0
    width: int = 640
    height: int = 480
    tension: float = 0.0
    loop: bool = False
    meta: dict[str, Any] = field(default_factory=dict)  # anything else a file carried

    def __post_init__(self) -> None:
        object.__setattr__(self, "keyframes", tuple(self.keyframes))
        for i, kf in enumerate(self.keyframes):
            if not isinstance(kf, Keyframe):
                raise TypeError(f"CameraPath.keyframes[{i}] is a {type(kf).__name__}")
        _positive(self.seconds, "CameraPath.seconds")
        _positive(self.fps, "CameraPath.fps")
        for name in ("width", "height"):
            v = getattr(self, name)
            if int(v) != v or int(v) <= 0:
                raise ValueError(f"CameraPath.{name} must be a positive integer, got {v}")
            object.__setattr__(self, name, int(v))
        if not 0.0 <= float(self.tension) <= 1.0:
            raise ValueError(f"CameraPath.tension must be in [0, 1], got {self.tension}")
        object.__setattr__(self, "seconds", float(self.seconds))
        object.__setattr__(self, "fps", float(self.fps))
        object.__setattr__(self, "tension", float(self.tension))
        object.__setattr__(self, "loop", bool(self.loop))

    def __len__(self) -> int:
        return len(self.keyframes)

    # ------------------------------------------------------------------ editing
    def with_settings(self, **changes: Any) -> CameraPath:
        """The same keyframes with other settings (seconds, fps, width, height, tension, loop)."""
        return replace(self, **changes)

    def added(self, keyframe: Keyframe, index: int | None = None) -> CameraPath:
        """`keyframe` inserted before `index` (default: at the end)."""
        kfs = list(self.keyframes)
        kfs.insert(len(kfs) if index is None else self._check_index(index, insert=True), keyframe)
        return replace(self, keyframes=tuple(kfs))

    def replaced(self, index: int, keyframe: Keyframe) -> CameraPath:
        kfs = list(self.keyframes)
        kfs[self._check_index(index)] = keyframe
        return replace(self, keyframes=tuple(kfs))

    def removed(self, index: int) -> CameraPath:
        kfs = list(self.keyframes)
        del kfs[self._check_index(index)]
        return replace(self, keyframes=tuple(kfs))

    def moved(self, index: int, to: int) -> CameraPath:
        """Keyframe `index` moved to position `to`. Explicit keyframe times are dropped (the
        keyframes are then spread evenly over `seconds`): they would no longer increase."""
        kfs = list(self.keyframes)
        kf = kfs.pop(self._check_index(index))
        kfs.insert(self._check_index(to), kf)
        return replace(self, keyframes=tuple(replace(k, time=None) for k in kfs))

    def _check_index(self, i: int, insert: bool = False) -> int:
        n = len(self.keyframes) + (1 if insert else 0)
        if not -n <= int(i) < n:
            raise IndexError(f"keyframe {i} does not exist (the path has {len(self)})")
        return int(i) % n

    # ------------------------------------------------------------------ timing
    def keyframe_times(self) -> np.ndarray:
        """[K] when the camera passes each keyframe (s). The path starts at its first keyframe
        (time 0) and an open path ends at its last one (time `seconds`), whatever times they
        carry (as in nerfstudio, where a path is its transitions); keyframes without a time are
        spread evenly between the known ones (on a loop, up to the return at `seconds`)."""
        n = len(self.keyframes)
        if n == 0:
            return np.zeros(0)
        t = [kf.time for kf in self.keyframes]
        end = self.seconds
        t[0] = 0.0
        if n > 1 and not self.loop:
            t[-1] = end
        # Known times (plus, on a loop, the return to the start at `seconds`); the keyframes
        # between two known ones are spread evenly.
        known = [i for i, x in enumerate(t) if x is not None]
        ends = {**{i: float(t[i]) for i in known}, n: end}
        for a, b in zip(known, [*known[1:], n], strict=True):
            for i in range(a + 1, b):
                t[i] = ends[a] + (ends[b] - ends[a]) * (i - a) / (b - a)
        t = np.asarray(t, dtype=np.float64)
        if n > 1 and np.any(np.diff(t) <= 0):
            raise ValueError(f"keyframe times must increase, got {np.round(t, 4).tolist()}")
        if t[-1] > end + 1e-9 or (self.loop and n > 1 and t[-1] >= end):
            raise ValueError(
                f"keyframe at {t[-1]:.3f} s is past the path's end ({end:.3f} s); lengthen "
                "'seconds'"
            )
        return t

    @property
    def n_frames(self) -> int:
        """Video frames: round(fps x seconds), at least 1."""
        return max(1, round(self.fps * self.seconds))

    def frame_times(self) -> np.ndarray:
        """[F] the time (s) of each frame: an open path from 0 to `seconds` inclusive (first and
        last keyframe on screen), a loop at i/F of its length (the first frame is not repeated)."""
        n = self.n_frames
        if self.loop:
            return np.arange(n) * (self.seconds / n)
        return np.linspace(0.0, self.seconds, n) if n > 1 else np.zeros(1)

    # ------------------------------------------------------------------ sampling
    def evaluate(
        self, times: np.ndarray | Sequence[float] | float
    ) -> tuple[np.ndarray, np.ndarray]:
        """(c2w [T,4,4] OpenCV axes, fov_deg [T]) at `times` (s, clipped to the path)."""
        t = np.atleast_1d(np.asarray(times, dtype=np.float64))
        n = len(self.keyframes)
        if n == 0:
            raise ValueError("the camera path has no keyframes")
        if n == 1:
            kf = self.keyframes[0]
            return np.repeat(kf.c2w[None], len(t), 0), np.full(len(t), kf.fov_deg)
        u = self._spline_param(t)
        tension, loop = self.tension, self.loop
        pos = _kb_curve(np.stack([kf.position for kf in self.keyframes]), u, tension, loop)
        fov = _kb_curve(np.array([[kf.fov_deg] for kf in self.keyframes]), u, tension, loop)[:, 0]
        rot = _quat_curve(np.stack([kf.wxyz for kf in self.keyframes]), u, tension, loop)
        c2w = np.tile(np.eye(4), (len(t), 1, 1))
        c2w[:, :3, :3] = _rotation().from_quat(rot, scalar_first=True).as_matrix()
        c2w[:, :3, 3] = pos
        return c2w, np.clip(fov, 1e-3, 179.0)

    def _spline_param(self, t: np.ndarray) -> np.ndarray:
        """[T] spline parameter u (keyframe k at u = k) at times `t`."""
        knots = self.keyframe_times()
        idx = np.arange(len(knots), dtype=np.float64)
        if self.loop:
            knots, idx = np.append(knots, self.seconds), np.append(idx, len(knots))
        span = knots[-1]
        from scipy.interpolate import PchipInterpolator  # (scipy.interpolate: 0.3 s to import)

        return np.clip(PchipInterpolator(knots, idx)(np.clip(t, knots[0], span)), 0, idx[-1])

    def cameras(self, times: np.ndarray | None = None) -> list[Camera]:
        """One `Camera` (width x height, centred principal point) per frame (default: every
        video frame, `frame_times()`)."""
        t = self.frame_times() if times is None else np.asarray(times, dtype=np.float64)
        c2w, fov = self.evaluate(t)
        return [
            Camera.from_fov(
                float(f), self.width, self.height, torch.from_numpy(m), f"frame_{i:05d}"
            )
            for i, (m, f) in enumerate(zip(c2w, fov, strict=True))
        ]


# ---------------------------------------------------------------------- splines
def _kb_tangents(d: np.ndarray, tension: float, loop: bool) -> np.ndarray:
    """[K,D] tangents at the keyframes from the segment differences `d` ([K-1,D], or [K,D] on a
    loop: d[i] = p[i+1] - p[i]) of a uniform Kochanek-Bartels spline (no bias/continuity)."""
    s = 0.5 * (1.0 - tension)
    if loop:
        return s * (np.roll(d, 1, axis=0) + d)
    k = len(d) + 1
    m = np.empty((k, d.shape[1]))
    if k == 2:  # both ends natural: a straight, evenly paced move
        m[:] = d[0]
        return m
    m[1:-1] = s * (d[:-1] + d[1:])
    # "Natural" ends: zero second derivative, m0 = (3 d0 - m1) / 2.
    m[0] = 0.5 * (3.0 * d[0] - m[1])
    m[-1] = 0.5 * (3.0 * d[-1] - m[-2])
    return m


def _segments(u: np.ndarray, n_segments: int) -> tuple[np.ndarray, np.ndarray]:
    i = np.clip(np.floor(u).astype(np.int64), 0, n_segments - 1)
    return i, u - i


def _kb_curve(p: np.ndarray, u: np.ndarray, tension: float, loop: bool) -> np.ndarray:
    """[T,D] cubic Hermite curve through the points `p` [K,D] at parameters `u`."""
    nxt = np.roll(p, -1, axis=0) if loop else p[1:]
    d = nxt - p[: len(nxt)]
    m = _kb_tangents(d, tension, loop)
    i, s = _segments(u, len(d))
    j = (i + 1) % len(p)
    s = s[:, None]
    h00, h10 = 2 * s**3 - 3 * s**2 + 1, s**3 - 2 * s**2 + s
    h01, h11 = -2 * s**3 + 3 * s**2, s**3 - s**2
    return h00 * p[i] + h10 * m[i] + h01 * p[j] + h11 * m[j]


def _qmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product of wxyz quaternions ([...,4])."""
    aw, av = a[..., :1], a[..., 1:]
    bw, bv = b[..., :1], b[..., 1:]
    w = aw * bw - np.sum(av * bv, axis=-1, keepdims=True)
    v = aw * bv + bw * av + np.cross(av, bv)
    return np.concatenate([w, v], axis=-1)


def _qconj(q: np.ndarray) -> np.ndarray:
    return q * np.array([1.0, -1.0, -1.0, -1.0])


def _qlog(q: np.ndarray) -> np.ndarray:
    """[...,3] half-angle axis vector of unit quaternions [...,4] (w >= 0 taken: shortest)."""
    q = np.where(q[..., :1] < 0, -q, q)
    v = q[..., 1:]
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    theta = np.arctan2(n, q[..., :1])
    scale = np.where(n > 1e-12, theta / np.maximum(n, 1e-12), 1.0)
    return v * scale


def _qexp(r: np.ndarray) -> np.ndarray:
    """[...,4] unit quaternions of half-angle axis vectors [...,3]."""
    a = np.linalg.norm(r, axis=-1, keepdims=True)
    sinc = np.where(a > 1e-12, np.sin(a) / np.maximum(a, 1e-12), 1.0)
    return np.concatenate([np.cos(a), r * sinc], axis=-1)


def _slerp(a: np.ndarray, b: np.ndarray, s: np.ndarray) -> np.ndarray:
    """[T,4] spherical linear interpolation from `a` to `b` ([T,4]) at `s` ([T,1]), the short
    way round."""
    return _qmul(a, _qexp(s * _qlog(_qmul(_qconj(a), b))))


def _quat_curve(q: np.ndarray, u: np.ndarray, tension: float, loop: bool) -> np.ndarray:
    """[T,4] Kochanek-Bartels spline on unit quaternions `q` [K,4] (wxyz) at parameters `u`:
    tangents from the body-frame steps log(q_i^-1 q_i+1), Bézier control rotations
    q_i exp(m_i / 3) and q_i+1 exp(-m_i+1 / 3), evaluated by de Casteljau with slerp."""
    k = len(q)
    nxt = np.roll(q, -1, axis=0) if loop else q[1:]
    d = _qlog(_qmul(_qconj(q[: len(nxt)]), nxt))  # [S,3]; the same vector in either frame
    m = _kb_tangents(d, tension, loop)
    i, s = _segments(u, len(d))
    j = (i + 1) % k
    b0 = q[i]
    b3 = _qmul(b0, _qexp(d[i]))  # = ±q[j], on the short side of b0
    b1 = _qmul(b0, _qexp(m[i] / 3.0))
    b2 = _qmul(b3, _qexp(-m[j] / 3.0))
    s = s[:, None]
    c0, c1, c2 = _slerp(b0, b1, s), _slerp(b1, b2, s), _slerp(b2, b3, s)
    e0, e1 = _slerp(c0, c1, s), _slerp(c1, c2, s)
    out = _slerp(e0, e1, s)
    return out / np.linalg.norm(out, axis=-1, keepdims=True)


# ---------------------------------------------------------------------- nerfstudio's file
@dataclass(frozen=True, eq=False)
class CameraPathFile:
    """What a `camera_path.json` holds: the cameras of its frames (`camera_path`, in order; what
    gets rendered), their fps, duration and size, and the keyframed `path` when the file has
    `keyframes` (None otherwise)."""

    cameras: tuple[Camera, ...]
    fps: float
    seconds: float
    width: int
    height: int
    path: CameraPath | None = None


def camera_path_to_json(path: CameraPath) -> dict[str, Any]:
    """nerfstudio's `camera_path.json` document for `path`: its keyframes and one
    `camera_path` entry per video frame."""
    if len(path) == 0:
        raise ValueError("the camera path has no keyframes")
    aspect = path.width / path.height
    times = path.keyframe_times()
    transitions = _transitions(times, path.seconds, path.loop)  # [K], into keyframe k
    n_moves = len(path) if path.loop else len(path) - 1
    default_transition = path.seconds / max(1, n_moves)
    keyframes = []
    for k, kf in enumerate(path.keyframes):
        tr = transitions[k]
        override = tr is not None and abs(tr - default_transition) > 1e-6
        keyframes.append(
            {
                "matrix": _gl_list(kf.c2w),
                "fov": kf.fov_deg,
                "aspect": aspect,
                "override_transition_enabled": bool(override),
                "override_transition_sec": float(tr) if override else None,
            }
        )
    c2w, fov = path.evaluate(path.frame_times())
    frames = [
        {"camera_to_world": _gl_list(m), "fov": float(f), "aspect": aspect}
        for m, f in zip(c2w, fov, strict=True)
    ]
    return {
        **{k: v for k, v in path.meta.items() if k not in _WRITTEN},
        "camera_type": "perspective",
        "render_width": path.width,
        "render_height": path.height,
        "fps": path.fps,
        "seconds": path.seconds,
        "is_cycle": path.loop,
        "smoothness_value": path.tension,
        "default_fov": path.keyframes[0].fov_deg,
        "default_transition_sec": default_transition,
        "keyframes": keyframes,
        "camera_path": frames,
    }


_WRITTEN = {
    "camera_type",
    "render_width",
    "render_height",
    "fps",
    "seconds",
    "is_cycle",
    "smoothness_value",
    "default_fov",
    "default_transition_sec",
    "keyframes",
    "camera_path",
}


def camera_path_from_json(doc: Any, source: str = "camera path") -> CameraPathFile:
    """Read nerfstudio's `camera_path.json` document (a parsed JSON object). A missing or bad
    field raises `ValueError` naming it (`source`: the file, for the message)."""
    if not isinstance(doc, Mapping):
        raise ValueError(f"{source}: expected a JSON object, got {type(doc).__name__}")

    def bad(name: str, why: str) -> ValueError:
        return ValueError(f"{source}: '{name}' {why}")

    kind = doc.get("camera_type", "perspective")
    if not isinstance(kind, str) or kind.lower() != "perspective":
        raise bad("camera_type", f"is {kind!r}; only 'perspective' cameras can be rendered")
    width = _int_field(doc, "render_width", bad)
    height = _int_field(doc, "render_height", bad)
    entries = doc.get("camera_path")
    if not isinstance(entries, list) or not entries:
        raise bad("camera_path", "must be a non-empty list of frames")
    seconds = _number(doc, "seconds", bad, required=False)
    fps = _number(doc, "fps", bad, required=False)
    if fps is None and seconds is None:
        raise bad("fps", "is missing (and so is 'seconds')")
    if fps is None:
        fps = len(entries) / seconds  # what ns-render does
    if seconds is None:
        seconds = len(entries) / fps
    cameras = []
    for i, entry in enumerate(entries):
        where = f"camera_path[{i}]"
        if not isinstance(entry, Mapping):
            raise bad(where, "must be an object")
        c2w = _matrix(entry.get("camera_to_world"), f"{where}.camera_to_world", bad) @ _GL_TO_CV
        fov = _fov(entry.get("fov"), f"{where}.fov", bad)
        cameras.append(Camera.from_fov(fov, width, height, torch.from_numpy(c2w), f"frame_{i:05d}"))
    path = None
    if doc.get("keyframes"):
        path = _keyframed_path(doc, width, height, fps, seconds, bad)
    return CameraPathFile(tuple(cameras), float(fps), float(seconds), width, height, path)


def _keyframed_path(doc, width, height, fps, seconds, bad) -> CameraPath:
    raw = doc["keyframes"]
    if not isinstance(raw, list):
        raise bad("keyframes", "must be a list")
    default_fov = _number(doc, "default_fov", bad, required=False)
    default_tr = _number(doc, "default_transition_sec", bad, required=False)
    loop = bool(doc.get("is_cycle", False))
    tension = _number(doc, "smoothness_value", bad, required=False) or 0.0
    if not 0.0 <= tension <= 1.0:
        raise bad("smoothness_value", f"must be in [0, 1], got {tension}")
    c2ws, fovs, overrides = [], [], []
    for i, entry in enumerate(raw):
        where = f"keyframes[{i}]"
        if not isinstance(entry, Mapping):
            raise bad(where, "must be an object")
        c2ws.append(_matrix(entry.get("matrix"), f"{where}.matrix", bad) @ _GL_TO_CV)
        fov = entry.get("fov", default_fov)
        fovs.append(_fov(fov, f"{where}.fov", bad))
        tr = entry.get("override_transition_sec")
        if entry.get("override_transition_enabled") and tr is not None:
            if not _is_number(tr) or not tr > 0:
                raise bad(f"{where}.override_transition_sec", f"must be > 0 seconds, got {tr!r}")
            overrides.append(float(tr))
        else:
            overrides.append(None)
    times: list[float | None] = [None] * len(raw)
    if any(o is not None for o in overrides) and len(raw) > 1:
        base = default_tr if default_tr and default_tr > 0 else 1.0
        moves = [o if o is not None else base for o in overrides]
        into = moves[1:] + ([moves[0]] if loop else [])
        total = float(sum(into))
        scale = seconds / total if total > 0 else 1.0  # fit the file's stated duration
        times = [0.0, *np.cumsum(np.array(moves[1:]) * scale).tolist()]
    keyframes = tuple(Keyframe(c2w, fov, t) for c2w, fov, t in zip(c2ws, fovs, times, strict=True))
    meta = {k: v for k, v in doc.items() if k not in _WRITTEN}
    return CameraPath(keyframes, seconds, fps, width, height, tension, loop, meta)


def _transitions(times: np.ndarray, seconds: float, loop: bool) -> list[float | None]:
    """Seconds to reach each keyframe from the one before (keyframe 0: the loop's closing
    move, or None)."""
    into: list[float | None] = [None, *np.diff(times).tolist()]
    if loop and len(times) > 0:
        into[0] = float(seconds - times[-1] + times[0])
    return into


def load_camera_path(file: str | Path) -> CameraPathFile:
    """Read a nerfstudio `camera_path.json` (see the module docstring)."""
    file = Path(file)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"no such camera path file: {file}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{file}: not valid JSON ({e})") from None
    return camera_path_from_json(doc, str(file))


def save_camera_path(path: CameraPath, file: str | Path, *, overwrite: bool = False) -> Path:
    """Write `path` as nerfstudio's `camera_path.json` (atomically). An existing file is kept
    (`FileExistsError`) unless `overwrite`."""
    file = Path(file)
    if file.exists() and not overwrite:
        raise FileExistsError(f"{file} exists; pass overwrite=True to replace it")
    text = json.dumps(camera_path_to_json(path), indent=1)
    file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{file.name}.", dir=file.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text + "\n")
        os.replace(tmp, file)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return file


# ---------------------------------------------------------------------- checks
def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _number(doc: Mapping, name: str, bad, *, required: bool = True) -> float | None:
    v = doc.get(name)
    if v is None:
        if required:
            raise bad(name, "is missing")
        return None
    if not _is_number(v) or (name in ("fps", "seconds") and not v > 0):
        raise bad(name, f"must be a positive number, got {v!r}")
    return float(v)


def _int_field(doc: Mapping, name: str, bad) -> int:
    v = doc.get(name)
    if v is None:
        raise bad(name, "is missing")
    if not _is_number(v) or int(v) != v or int(v) <= 0:
        raise bad(name, f"must be a positive whole number of pixels, got {v!r}")
    return int(v)


def _fov(v: Any, name: str, bad) -> float:
    if v is None:
        raise bad(name, "is missing")
    if not _is_number(v) or not 0.0 < v < 180.0:
        raise bad(name, f"must be a vertical field of view in degrees in (0, 180), got {v!r}")
    return float(v)


def _matrix(v: Any, name: str, bad) -> np.ndarray:
    """[4,4] from 16 numbers (row-major) or nested rows (4x4 or 3x4)."""
    if v is None:
        raise bad(name, "is missing")
    try:
        a = np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError):
        raise bad(name, "must be 16 numbers (a 4x4 matrix, row-major)") from None
    if a.size not in (12, 16) or a.ndim not in (1, 2):
        raise bad(name, f"must be 16 numbers (a 4x4 matrix, row-major), got shape {a.shape}")
    m = np.eye(4)
    m[: a.size // 4] = a.reshape(-1, 4)
    try:
        return _rigid(m)
    except ValueError as e:
        raise bad(name, str(e)) from None


def _rigid(m: Any) -> np.ndarray:
    """A copy of the camera-to-world `m` [4,4] with its rotation snapped to the nearest one;
    `ValueError` (the reason, without a name) when it is not rotation + translation."""
    a = np.asarray(m, dtype=np.float64)
    if a.shape != (4, 4):
        raise ValueError(f"must be [4,4], got {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError("must be finite")
    R = a[:3, :3]
    if np.abs(R.T @ R - np.eye(3)).max() > _ORTHO_TOL or np.linalg.det(R) <= 0:
        raise ValueError("is not a rotation and a translation (camera-to-world, no scale)")
    if np.abs(a[3] - [0, 0, 0, 1]).max() > 1e-6:
        raise ValueError("must have a last row of 0 0 0 1")
    out = a.copy()
    U, _, Vt = np.linalg.svd(R)  # snap to the nearest rotation (files carry float32 noise)
    out[:3, :3] = U @ Vt
    return out


def _positive(v: Any, name: str) -> None:
    if not _is_number(v) or not v > 0:
        raise ValueError(f"{name} must be a positive number, got {v!r}")


def _gl_list(c2w_cv: np.ndarray) -> list[float]:
    return (c2w_cv @ _GL_TO_CV).reshape(-1).tolist()
