"""Project files (`NAME.scenelab`): a whole editing session in one file, plus autosave and
crash recovery.

A project is ONE zip file, every member stored uncompressed (fast to write and read, one file to
replace atomically and to move around):

- `manifest.json`: format "scenelab.project", version, the scenelab version, created/saved
  times, the source scene path, the up axis, panel settings, camera bookmarks, grasps, and the
  edit history: each kept step's name and, per scene field (means, quats, scales, opacities, sh,
  each extra), the key of its tensor, plus the scene's `meta`; the current and named selections
  and the feature field (its heads, config, teachers, levels, scene records) as tensor keys and
  JSON. Written first, so a reader recognises a project from its first bytes.
- `tensors.safetensors`: every distinct tensor once (a plain safetensors file). History states
  share every tensor an edit left alone, and so does the file. The feature field's per-Gaussian
  features are one more tensor of the pool, so when they ride on the scene as its `feature`
  extra (as in the viewer) they are stored once; there is no separate field member.

The current state is stored whole. Every other kept state is stored as its difference from its
neighbour nearer the current state (an op log recovered from the states themselves, checked bit
for bit before use): a tensor with a few changed rows (recolour, moving a selection) as those
rows; a state with rows removed in order (delete) as a row mask over its neighbour; a
state with rows added (the state before a delete, a duplicate) as the mask plus the added rows.
Anything else is stored whole. The manifest's "derived" table holds these recipes; loading
rebuilds each state (bounded: the rebuilt bytes may not exceed 64 times the file size + 1 GiB).
A 3-step history of a 1M-Gaussian SH3 scene (open, recolour 10%, delete 1%) takes 336 MB, about
one scene, where whole states would take 805 MB.

Saving keeps the current state always, then adds the undo and redo states nearest to it, one of
each in turn, while the bytes the history stores fit `max_history_bytes`; the manifest records
how many were dropped on each side. Tensors round-trip bit for bit with their dtypes;
settings, scene metas, bookmarks and grasps must be JSON (checked before the disk is touched).

Crash recovery: `Autosaver` writes the session to `recovery_path(source)` (in `recovery_dir()`,
never next to the user's files) every few edits or seconds on its own thread; `find_recovery`
reads such a file's manifest at the next start, `load_project` restores it.

    project = Project(history, selection, bookmarks=[...], settings={"color_mode": "rgb"})
    save_project(project, "room.scenelab")
    project = load_project("room.scenelab")      # project.history.undo() works
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as _field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fields import GaussianScene
from fields.conventions import parse_up
from fields.features import FeatureField
from fields.formats import write_files

from ._project_io import (
    FORMAT,
    VERSION,
    ProjectFormatError,
    Resolver,
    TensorPool,
    encode_state,
    fail,
    iter_json_problems,
    read_manifest,
    read_project,
    sniff,
    write_project,
)
from .grasp import Grasp
from .history import History

__all__ = [
    "PROJECT_SUFFIX",
    "Autosaver",
    "Bookmark",
    "Project",
    "ProjectFormatError",
    "Recovery",
    "discard_recovery",
    "find_recovery",
    "is_project",
    "load_project",
    "recovery_dir",
    "recovery_path",
    "save_project",
]

PROJECT_SUFFIX = ".scenelab"
_SCENE_FIELDS = ("means", "quats", "scales", "opacities", "sh")
_log = logging.getLogger(__name__)


@dataclass
class Bookmark:
    """A saved camera (world frame)."""

    name: str
    position: tuple[float, float, float]  # camera centre
    look_at: tuple[float, float, float]
    up: tuple[float, float, float]
    fov_deg: float  # vertical field of view


@dataclass
class Project:
    """Everything a session saves: the edit history and the state around it."""

    history: History  # steps (name, scene) + index; current = history.current
    selection: Tensor  # [N] bool over history.current
    named_selections: dict[str, Tensor] = _field(default_factory=dict)  # name -> [N] bool
    field: FeatureField | None = None  # heads and records (its features may be the `feature` extra)
    grasps: list[Grasp] = _field(default_factory=list)
    bookmarks: list[Bookmark] = _field(default_factory=list)
    up: str | None = None  # fields.conventions.format_up spelling; None = scene default
    settings: dict[str, Any] = _field(default_factory=dict)  # JSON-able panel settings
    source: str | None = None  # the scene file the work started from
    created: float | None = None  # Unix time of the first save (set by load_project)


# ---------------------------------------------------------------------------- checks
def _check_json(value: Any, where: str) -> None:
    problems = list(iter_json_problems(value, where))
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ValueError(f"cannot save the project: {problems[0]}{more}")


def _check_mask(mask: Any, n: int, where: str) -> None:
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != (n,):
        got = (
            f"{mask.dtype} {tuple(mask.shape)}" if isinstance(mask, Tensor) else type(mask).__name__
        )
        raise ValueError(
            f"cannot save the project: {where} must be a [N] bool tensor over the current "
            f"scene (N={n:,}), got {got}"
        )


def _vec3(v: Any, where: str) -> list[float]:
    try:
        out = [float(x) for x in v]
    except (TypeError, ValueError):
        out = []
    if len(out) != 3 or not all(math.isfinite(x) for x in out):
        raise ValueError(f"cannot save the project: {where} must be 3 finite numbers, got {v!r}")
    return out


def _array_json(a: Any, shape: tuple[int, ...], where: str) -> dict[str, Any]:
    arr = np.asarray(a)
    if arr.shape != shape or arr.dtype.kind not in "fiu" or not np.isfinite(arr).all():
        raise ValueError(
            f"cannot save the project: {where} must be a finite {list(shape)} array, "
            f"got {arr.dtype} {list(arr.shape)}"
        )
    return {"dtype": arr.dtype.str, "data": arr.ravel().tolist()}


def _array_from_json(spec: Any, shape: tuple[int, ...]) -> np.ndarray:
    dtype = np.dtype(spec["dtype"])
    if dtype.kind not in "fiu":
        raise ValueError(f"dtype {dtype} is not numeric")
    return np.asarray(spec["data"], dtype=dtype).reshape(shape)


def _grasp_json(g: Any, i: int) -> dict[str, Any]:
    if not isinstance(g, Grasp):
        raise ValueError(
            f"cannot save the project: grasps[{i}] is a {type(g).__name__}, not a Grasp"
        )
    out = {
        "T_world_gripper": _array_json(g.T_world_gripper, (4, 4), f"grasps[{i}].T_world_gripper"),
        "width": float(g.width),
        "contacts": _array_json(g.contacts, (2, 3), f"grasps[{i}].contacts"),
        "score": float(g.score),
        "scores": {str(k): float(v) for k, v in dict(g.scores).items()},
    }
    _check_json(out, f"grasps[{i}]")
    return out


def _bookmark_json(b: Any, i: int) -> dict[str, Any]:
    if not isinstance(b, Bookmark):
        raise ValueError(
            f"cannot save the project: bookmarks[{i}] is a {type(b).__name__}, not a Bookmark"
        )
    fov = float(b.fov_deg)
    if not 0 < fov < 180:
        raise ValueError(f"cannot save the project: bookmarks[{i}].fov_deg {fov} not in (0, 180)")
    return {
        "name": str(b.name),
        "position": _vec3(b.position, f"bookmarks[{i}].position"),
        "look_at": _vec3(b.look_at, f"bookmarks[{i}].look_at"),
        "up": _vec3(b.up, f"bookmarks[{i}].up"),
        "fov_deg": fov,
    }


# ---------------------------------------------------------------------------- history budget
def _encode_history(
    pool: TensorPool, scenes: list[GaussianScene], index: int, budget: int
) -> tuple[int, int, dict[int, dict]]:
    """(lo, hi, {i: refs}) of the states to keep: the current one always (whole), then undo and
    redo neighbours, one each in turn, each stored as its delta from the neighbour nearer the
    current state, while the stored bytes fit `budget`."""
    refs = {index: encode_state(pool, scenes[index], None, _SCENE_FIELDS)}
    lo = hi = index
    grow = {-1: True, 1: True}
    while any(grow.values()):
        for side in (-1, 1):
            j = lo - 1 if side < 0 else hi + 1
            if not grow[side] or not 0 <= j < len(scenes):
                grow[side] = False
                continue
            mark = pool.mark()
            enc = encode_state(pool, scenes[j], scenes[j - side], _SCENE_FIELDS)
            if pool.nbytes > budget:
                pool.rollback(mark)
                grow[side] = False  # keep the history contiguous: stop on this side
                continue
            refs[j] = enc
            lo, hi = min(lo, j), max(hi, j)
    return lo, hi, refs


# ---------------------------------------------------------------------------- save
def _version() -> str:
    try:
        from importlib.metadata import version

        return version("scenelab")
    except Exception:
        return "unknown"


def _build(
    project: Project, max_history_bytes: int, extra: dict[str, Any] | None
) -> tuple[dict[str, Any], TensorPool]:
    """Validate `project` and lay out its manifest and tensors (touches no file)."""
    if not isinstance(project, Project):
        raise TypeError(f"save_project expects a Project, got {type(project).__name__}")
    if not isinstance(project.history, History):
        raise TypeError(f"Project.history must be a History, got {type(project.history).__name__}")
    history = project.history.copy()  # one consistent (states, index) even if edits go on
    states, index = history.states(), history.index
    n = len(states[index][1])
    _check_mask(project.selection, n, "selection")
    for name, mask in project.named_selections.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"cannot save the project: selection name {name!r} must be a string")
        _check_mask(mask, n, f"named selection {name!r}")
    if project.up is not None:
        if not isinstance(project.up, str):
            raise ValueError(f"cannot save the project: up must be a string, got {project.up!r}")
        try:
            parse_up(project.up)
        except ValueError as e:
            raise ValueError(f"cannot save the project: up {project.up!r}: {e}") from None
    if not isinstance(project.settings, dict):
        raise ValueError("cannot save the project: settings must be a dict")
    _check_json(project.settings, "settings")
    if project.field is not None and not isinstance(project.field, FeatureField):
        raise ValueError(
            f"cannot save the project: field must be a FeatureField, got "
            f"{type(project.field).__name__}"
        )
    pool = TensorPool()
    lo, hi, refs = _encode_history(pool, [s for _, s in states], index, int(max_history_bytes))
    steps = []
    for i in range(lo, hi + 1):
        name, scene = states[i]
        _check_json(scene.meta, f"the meta of history step {i} ({name!r})")
        steps.append({"name": name, "scene": {**refs[i], "meta": scene.meta}})
    manifest_field = None
    if project.field is not None:
        fld = project.field
        record = {k: v for k, v in fld.metadata().items() if k not in ("format", "version")}
        _check_json(record, "the feature field's records")
        manifest_field = {
            "features": pool.add(fld.features),
            "heads": {str(k): pool.add(w) for k, w in fld.heads.items()},
            "record": record,
        }
    now = time.time()
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "scenelab": _version(),
        "created": now if project.created is None else float(project.created),
        "saved": now,
        "source": None if project.source is None else str(project.source),
        "up": project.up,
        "settings": project.settings,
        "history": {
            "index": index - lo,
            "max_bytes": history.max_bytes,
            "dropped": {"undo": lo, "redo": len(states) - 1 - hi},
            "steps": steps,
        },
        "selection": pool.add(project.selection),
        "named_selections": {k: pool.add(v) for k, v in project.named_selections.items()},
        "field": manifest_field,
        "grasps": [_grasp_json(g, i) for i, g in enumerate(project.grasps)],
        "bookmarks": [_bookmark_json(b, i) for i, b in enumerate(project.bookmarks)],
        "derived": pool.derived,
        "tensors": {"count": len(pool.tensors), "bytes": pool.nbytes},
    }
    if extra:
        manifest.update(extra)
    return manifest, pool


def _check_suffix(path: Path) -> None:
    if not path.name.endswith(PROJECT_SUFFIX) or path.name == PROJECT_SUFFIX:
        raise ValueError(f"{path}: project files are named NAME{PROJECT_SUFFIX}")


def save_project(
    project: Project,
    path: str | Path,
    *,
    overwrite: bool = False,
    max_history_bytes: int = 1 << 30,
) -> Path:
    """Write `project` to `path` (NAME.scenelab) atomically; `FileExistsError` when it exists
    and `overwrite` is False. History states are kept nearest to the current one first while
    the bytes the history stores (the current state whole, the others as deltas) fit
    `max_history_bytes`; the current state is always saved. Bad content (a selection of the
    wrong size, non-JSON settings) raises `ValueError` before anything is written."""
    path = Path(path)
    _check_suffix(path)
    return _save(project, path, overwrite=overwrite, max_history_bytes=max_history_bytes)


def _save(
    project: Project,
    path: Path,
    *,
    overwrite: bool,
    max_history_bytes: int,
    extra: dict[str, Any] | None = None,
) -> Path:
    manifest, pool = _build(project, max_history_bytes, extra)
    write_files([(path, lambda f: write_project(f, manifest, pool))], overwrite=overwrite)
    return path


# ---------------------------------------------------------------------------- load
def load_project(path: str | Path) -> Project:
    """Read a project written by `save_project`. `ProjectFormatError` (a `ValueError`) names the
    problem for a file that is not a readable project (not a zip, missing members, a newer
    version, a corrupt or inconsistent manifest or tensor member); `FileNotFoundError` when
    there is no file."""
    path = Path(path)
    manifest, tensors = read_project(path)
    try:
        limit = 64 * path.stat().st_size + (1 << 30)
        resolve = Resolver(tensors, manifest.get("derived", {}), path, limit)
        return _project_from(manifest, resolve, path)
    except ProjectFormatError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
        raise fail(path, f"inconsistent manifest ({type(e).__name__}: {e})") from None


def _project_from(manifest: dict[str, Any], resolve: Resolver, path: Path) -> Project:
    hist = manifest["history"]
    states: list[tuple[str, GaussianScene]] = []
    for i, step in enumerate(hist["steps"]):
        spec = step["scene"]
        what = f"history step {i} ({step.get('name')!r})"
        try:
            scene = GaussianScene(
                **{f: resolve(spec[f], what) for f in _SCENE_FIELDS},
                extras={str(k): resolve(v, what) for k, v in spec.get("extras", {}).items()},
                meta=spec.get("meta") or {},
            )
        except ProjectFormatError:
            raise
        except (ValueError, TypeError) as e:
            raise fail(path, f"{what}: {e}") from None
        states.append((str(step["name"]), scene))
    if not states:
        raise fail(path, "the history has no steps")
    index = hist["index"]
    if not isinstance(index, int) or not 0 <= index < len(states):
        raise fail(path, f"history index {index!r} out of range for {len(states)} steps")
    history = History.from_states(states, index, max_bytes=int(hist.get("max_bytes", 2**31)))
    n = len(history.current)

    def mask(key: Any, what: str) -> Tensor:
        t = resolve(key, what)
        if t.dtype != torch.bool or tuple(t.shape) != (n,):
            raise fail(path, f"{what} is {t.dtype} {tuple(t.shape)}, not [N={n}] bool")
        return t

    fld = None
    spec = manifest.get("field")
    if spec is not None:
        record = spec.get("record", {})
        try:
            fld = FeatureField(
                features=resolve(spec["features"], "the feature field"),
                heads={str(k): resolve(v, "the feature field") for k, v in spec["heads"].items()},
                config=record.get("config", {}),
                teachers=record.get("teachers", []),
                scene_hash=record.get("scene_hash"),
                meta=record.get("meta", {}),
                levels=tuple(record.get("levels") or ("default",)),
                scene_count=record.get("scene_count"),
                scene_fingerprint=record.get("scene_fingerprint"),
            )
        except ProjectFormatError:
            raise
        except ValueError as e:
            raise fail(path, f"feature field: {e}") from None
    grasps = [
        Grasp(
            T_world_gripper=_array_from_json(g["T_world_gripper"], (4, 4)),
            width=float(g["width"]),
            contacts=_array_from_json(g["contacts"], (2, 3)),
            score=float(g["score"]),
            scores={str(k): float(v) for k, v in g.get("scores", {}).items()},
        )
        for g in manifest.get("grasps", [])
    ]
    bookmarks = [
        Bookmark(
            name=str(b["name"]),
            position=_vec3_from(b["position"], path, "a bookmark's position"),
            look_at=_vec3_from(b["look_at"], path, "a bookmark's look_at"),
            up=_vec3_from(b["up"], path, "a bookmark's up"),
            fov_deg=float(b["fov_deg"]),
        )
        for b in manifest.get("bookmarks", [])
    ]
    up = manifest.get("up")
    if up is not None and not isinstance(up, str):
        raise fail(path, f"up {up!r} is not a string")
    settings = manifest.get("settings") or {}
    if not isinstance(settings, dict):
        raise fail(path, "settings is not a JSON object")
    source = manifest.get("source")
    created = manifest.get("created")
    return Project(
        history=history,
        selection=mask(manifest["selection"], "the selection"),
        named_selections={
            str(k): mask(v, f"named selection {k!r}")
            for k, v in (manifest.get("named_selections") or {}).items()
        },
        field=fld,
        grasps=grasps,
        bookmarks=bookmarks,
        up=up,
        settings=settings,
        source=None if source is None else str(source),
        created=float(created) if isinstance(created, (int, float)) else None,
    )


def _vec3_from(v: Any, path: Path, what: str) -> tuple[float, float, float]:
    if not isinstance(v, list) or len(v) != 3:
        raise fail(path, f"{what} is not 3 numbers")
    x, y, z = (float(c) for c in v)
    return (x, y, z)


def is_project(path: str | Path) -> bool:
    """True when `path` ends in .scenelab and is a zip whose first member is the manifest
    (reads 43 bytes; does not validate the rest)."""
    path = Path(path)
    return path.name.endswith(PROJECT_SUFFIX) and sniff(path)


# ---------------------------------------------------------------------------- recovery
def recovery_dir() -> Path:
    """Where autosaves go: $SCENELAB_RECOVERY_DIR, else $XDG_STATE_HOME/scenelab/recovery, else
    ~/.local/state/scenelab/recovery. Not created here."""
    env = os.environ.get("SCENELAB_RECOVERY_DIR")
    if env:
        return Path(env).expanduser()
    state = os.environ.get("XDG_STATE_HOME")
    base = Path(state) if state and os.path.isabs(state) else Path.home() / ".local" / "state"
    return base / "scenelab" / "recovery"


def _source_key(source: str | Path) -> str:
    if source is None:
        raise TypeError("crash recovery needs the path of the source scene, got None")
    return str(Path(source).expanduser().resolve())


def recovery_path(source: str | Path) -> Path:
    """The recovery file of the scene at `source`: stable per absolute (resolved) path."""
    key = _source_key(source)
    digest = hashlib.sha1(key.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(key).name).lstrip(".")[:40] or "scene"
    return recovery_dir() / f"{stem}-{digest}{PROJECT_SUFFIX}"


@dataclass
class Recovery:
    """An autosaved session found for a source scene."""

    path: Path  # the recovery project file (load it with load_project)
    source: str  # absolute path of the scene it was made from
    saved_at: float  # Unix time of the autosave
    edits: int  # edits recorded since the last user save
    steps: list[str]  # history step names in the file


def find_recovery(source: str | Path) -> Recovery | None:
    """The autosave of the scene at `source`, or None when there is none (or it is unreadable:
    a recovery file is a convenience, never a reason to refuse to open the scene). Reads only
    the manifest."""
    path = recovery_path(source)
    try:
        manifest = read_manifest(path)
        rec = manifest.get("recovery") or {}
        if rec.get("source") != _source_key(source):
            return None
        return Recovery(
            path=path,
            source=str(rec["source"]),
            saved_at=float(manifest["saved"]),
            edits=int(rec.get("edits", 0)),
            steps=[str(s["name"]) for s in manifest["history"]["steps"]],
        )
    except FileNotFoundError:
        return None
    except (ProjectFormatError, KeyError, TypeError, ValueError, OSError) as e:
        _log.warning("ignoring unreadable recovery file %s: %s", path, e)
        return None


def discard_recovery(source: str | Path) -> None:
    """Delete the autosave of the scene at `source` (no error when there is none)."""
    with contextlib.suppress(FileNotFoundError):
        recovery_path(source).unlink()


class Autosaver:
    """Saves `snapshot()` (-> Project) to `recovery_path(source)` every `every_edits` edits or
    `every_seconds` seconds after an unsaved edit, on its own daemon thread (never blocks the
    caller); atomic; never writes anywhere but the recovery dir; `mark_edit()` from state change
    listeners; `mark_saved()` when the user saved (clears dirty, deletes the recovery file);
    `flush()` saves now if dirty (blocking, for tests and for clean shutdown); `close()`;
    thread-safe.

    `snapshot` runs on the autosave thread with no Autosaver lock held; it should copy what it
    returns under the caller's own lock (`history.copy()`, the selection tensor...), since the
    save runs while edits go on. The first autosave replaces an older recovery file of the same
    source: offer `find_recovery(source)` first. A failed save is logged (`last_error`) and
    retried `every_seconds` later."""

    def __init__(
        self,
        source: str | Path,
        snapshot: Callable[[], Project],
        *,
        every_edits: int = 5,
        every_seconds: float = 30.0,
        max_history_bytes: int = 1 << 30,
    ) -> None:
        if every_edits < 1 or not every_seconds > 0:
            raise ValueError("every_edits must be >= 1 and every_seconds > 0")
        self.source = _source_key(source)
        self.path = recovery_path(source)
        self._snapshot = snapshot
        self.every_edits = int(every_edits)
        self.every_seconds = float(every_seconds)
        self.max_history_bytes = int(max_history_bytes)
        self._cond = threading.Condition(threading.Lock())
        self._io = threading.Lock()  # one disk operation at a time (save or discard)
        self._pending = 0  # edits since the last autosave started
        self._edits = 0  # edits since the user last saved
        self._dirty_since: float | None = None  # monotonic time of the first unsaved edit
        self._generation = 0  # bumped by mark_saved: a save that began before it is void
        self._closed = False
        self._inflight = 0  # saves between their decision and their end
        self._seq = 0  # save decisions so far; every edit marked before one is in its snapshot
        self._written = 0  # the decision whose snapshot the recovery file holds
        self.saves = 0  # autosaves written
        self.last_error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="scenelab-autosave", daemon=True)
        self._thread.start()

    @property
    def dirty(self) -> bool:
        with self._cond:
            return self._dirty_since is not None

    def mark_edit(self) -> None:
        """One more unsaved edit (cheap; call from change listeners)."""
        with self._cond:
            self._pending += 1
            self._edits += 1
            if self._dirty_since is None:
                self._dirty_since = time.monotonic()
            self._cond.notify_all()

    def mark_saved(self) -> None:
        """The user saved: nothing is unsaved, and the recovery file goes (waits for an autosave
        being written, so it cannot reappear afterwards)."""
        with self._cond:
            self._pending = 0
            self._edits = 0
            self._dirty_since = None
            self._generation += 1
        with self._io:
            discard_recovery(self.source)

    def flush(self) -> Path | None:
        """Save now when there are unsaved edits (blocking); the recovery path, or None when
        nothing was unsaved. Waits for an autosave in progress first, so on return the
        recovery file holds every edit marked before the call."""
        with self._cond:
            while self._inflight:
                self._cond.wait()
        return self._save_if(lambda: self._dirty_since is not None)

    def close(self, timeout: float | None = 10.0) -> None:
        """Stop the thread (an autosave in progress finishes). Leaves the recovery file."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def __enter__(self) -> Autosaver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals
    def _due(self) -> bool:
        if self._dirty_since is None:
            return False
        if self._pending >= self.every_edits:
            return True
        return time.monotonic() - self._dirty_since >= self.every_seconds

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self._due():
                    timeout = None
                    if self._dirty_since is not None:
                        timeout = max(
                            0.0, self._dirty_since + self.every_seconds - time.monotonic()
                        )
                    self._cond.wait(timeout)
                if self._closed:
                    return
            self._save_if(self._due)

    def _save_if(self, condition: Callable[[], bool]) -> Path | None:
        with self._cond:
            if not condition():
                return None
            generation = self._generation
            edits = self._edits
            self._pending, self._dirty_since = 0, None
            self._inflight += 1
            self._seq += 1
            seq = self._seq
        try:
            return self._save(generation, edits, seq)
        finally:
            with self._cond:
                self._inflight -= 1
                self._cond.notify_all()

    def _save(self, generation: int, edits: int, seq: int) -> Path | None:
        try:
            project = self._snapshot()  # no lock of ours held: it may take the viewer's
            with self._io:
                with self._cond:
                    if self._generation != generation:
                        return None  # the user saved meanwhile
                    if seq < self._written:
                        return self.path  # a later decision's snapshot is already written
                self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                _save(
                    project,
                    self.path,
                    overwrite=True,
                    max_history_bytes=self.max_history_bytes,
                    extra={"recovery": {"source": self.source, "edits": edits}},
                )
                with self._cond:
                    self._written = seq
                    self.saves += 1
                    self.last_error = None
            return self.path
        except Exception as e:
            _log.warning("autosave to %s failed: %s", self.path, e)
            with self._cond:
                self.last_error = e
                if self._generation == generation:  # still unsaved: retry after every_seconds
                    self._dirty_since = self._dirty_since or time.monotonic()
            if threading.current_thread() is not self._thread:
                raise
            return None
