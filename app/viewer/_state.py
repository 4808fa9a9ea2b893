"""The viewer's shared state: the scene's history, the selection, and how splats are coloured.

One `ViewerState` per server, shared by every browser tab (that is what makes two tabs see the
same scene). viser runs callbacks on a thread pool, so every read-modify-write happens under
`lock`; listeners are told what changed *after* the lock is released and read a consistent
`Snapshot` when they need one.

The state also owns the scene's feature field: the per-Gaussian features travel with the scene as
its `feature` extra (so edits and undo keep them aligned), the rest of the field (heads, teacher
records, levels) is kept here (`field`); `current_field()` joins the two and `text_query()` is the
one cached `TextQuery` every panel queries through. `combine_mode` is how panels combine a new
selection with the old one (the Selection panel's "Combine"), and `pointer` says which panel owns
the scene's pointer callbacks.

The selection is a bool mask over the current scene's Gaussians. It is not part of the undo
history, but each scene state remembers the selection it had when the user left it, so undoing a
delete brings back the deleted Gaussians *selected*, as they were.

Named selections ("Save selection as…") are kept as one mask per history state, so undo and redo
always find masks of the right length. An op that keeps the count (recolour, move, isolate, text
edit) carries them over unchanged; an op that changes it remaps them row by row when the op told
the viewer where each new row came from (`note_rows`, which `ViewerApp.derive` calls: delete,
duplicate, insert) — a kept Gaussian keeps its membership, new ones (copies, inserted objects)
start outside — and when only rows were appended. Otherwise they are dropped at the new state
(listed in `dropped_named`; the viewer says so) and come back on undo. A name saved or deleted
applies to the current state and to its neighbours in the history reached through steps that
kept the count (the same Gaussians, row for row).

Camera bookmarks, the named selections of the current state and everything else a project file
holds are gathered by `to_project` and restored by `from_project` (`editing.project`).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import editing
from editing.project import Bookmark, Project
from fields import GaussianScene
from fields.features import FeatureField, TextQuery, language_space

from ._splats import COLOR_MODES

# What changed, as told to listeners.
SCENE = "scene"  # the Gaussians (an op, undo, redo)
SELECTION = "selection"
DISPLAY = "display"  # colour mode or per-Gaussian values
SOURCE = "source"  # the scene file saved (or opened) last
FIELD = "field"  # the feature field of the current scene appeared, went or was replaced
NAMED = "named"  # a named selection was saved or deleted (or dropped by an op)
BOOKMARKS = "bookmarks"  # a camera bookmark was added or deleted
PROJECT = "project"  # a whole project was opened (told after the kinds it changed)
# Changes the user would lose: what autosave counts as edits.
EDIT_KINDS = (SCENE, NAMED, BOOKMARKS)
COMBINE_MODES = ("replace", "add", "subtract", "intersect")

TextEncoderFactory = Callable[[FeatureField, str], Callable[[list[str]], Tensor]]

OpResult = GaussianScene | tuple[GaussianScene, Tensor]


class NothingSelectedError(ValueError):
    """An op that works on the selection was asked to run with nothing selected."""


@dataclass(frozen=True)
class Snapshot:
    """A consistent view of the state at one moment (tensors are never mutated in place)."""

    scene: GaussianScene
    selection: Tensor  # [N] bool
    color_mode: str
    values: Tensor | None  # [N] float
    values_name: str | None
    version: int
    preview: GaussianScene | None = None  # a running edit's live preview (a growing edit's
    # may hold another count than `scene`)

    @property
    def shown(self) -> GaussianScene:
        """What the browsers show: the preview while one runs, else `scene`. Ops, saving and
        exporting use `scene` (the history's current step), never the preview."""
        return self.scene if self.preview is None else self.preview

    @property
    def _same_rows(self) -> bool:
        return self.preview is None or len(self.preview) == len(self.scene)

    @property
    def shown_selection(self) -> Tensor:
        """[len(shown)] bool: the selection over what the browsers show (nothing is highlighted
        on a preview whose rows are not the scene's)."""
        if self._same_rows:
            return self.selection
        return torch.zeros(len(self.shown), dtype=torch.bool)

    @property
    def shown_values(self) -> Tensor | None:
        """[len(shown)] float per-Gaussian values over what the browsers show, or None."""
        return self.values if self._same_rows else None

    @property
    def n_selected(self) -> int:
        return int(self.selection.sum())


class Pointer:
    """Who owns the scene's pointer callbacks (selection tools, click segmentation, grasp
    picking, insert picking): one owner at a time. `claim(owner, release)` calls the previous
    owner's `release()` (which removes its callbacks and resets its widgets) before recording the
    new one; `release(owner)` gives the pointer back (no-op unless `owner` holds it)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._owner: str | None = None
        self._release: Callable[[], None] | None = None

    @property
    def owner(self) -> str | None:
        return self._owner

    def claim(self, owner: str, release: Callable[[], None]) -> None:
        with self._lock:
            previous, undo = self._owner, self._release
            self._owner, self._release = owner, release
        if previous is not None and previous != owner and undo is not None:
            undo()

    def release(self, owner: str) -> None:
        with self._lock:
            if self._owner == owner:
                self._owner, self._release = None, None


class _FieldTexts:
    """One field's text embeddings, each string encoded once (shared by every `TextQuery`
    built for that field, so edits that replace the feature tensor do not re-encode)."""

    def __init__(self, factory: Callable[[], Callable[[list[str]], Tensor]], cheap: bool) -> None:
        self._factory = factory
        self._encode: Callable[[list[str]], Tensor] | None = None
        self._lock = threading.Lock()
        self.cache: dict[str, Tensor] = {}
        self.cheap = cheap  # no model to load (the oracle's text side, or an injected encoder)

    def ready(self, texts: Sequence[str]) -> bool:
        return self.cheap or all(t in self.cache for t in texts)

    def __call__(self, texts: list[str]) -> Tensor:
        with self._lock:
            missing = [t for t in dict.fromkeys(texts) if t not in self.cache]
            if missing:
                if self._encode is None:
                    self._encode = self._factory()
                out = torch.as_tensor(self._encode(missing)).detach().float().cpu()
                for t, e in zip(missing, out, strict=True):
                    self.cache[t] = e
            return torch.stack([self.cache[t] for t in texts])


class ViewerState:
    """See the module docstring. All methods are thread-safe."""

    def __init__(
        self,
        scene: GaussianScene,
        *,
        source: Path | None = None,
        max_history_bytes: int = 2**31,
    ) -> None:
        self.lock = threading.RLock()
        self.source = source  # the file the scene was opened from (never overwritten silently)
        self.history = editing.History(scene, max_bytes=max_history_bytes)
        self._max_history_bytes = max_history_bytes
        self._selection = torch.zeros(len(scene), dtype=torch.bool)
        self._left_with: weakref.WeakKeyDictionary[GaussianScene, Tensor] = (
            weakref.WeakKeyDictionary()
        )
        self._color_mode = "rgb"
        self._values: Tensor | None = None
        self._values_name: str | None = None
        self._version = 0
        self._listeners: list[Callable[[str], None]] = []
        self._field: FeatureField | None = None
        self._field_texts: _FieldTexts | None = None
        self._feature_seen: Any = None  # the `feature` extra listeners last heard about
        self._tq: tuple[Any, FeatureField, TextQuery] | None = None
        self.text_encoder: TextEncoderFactory | None = None  # default: the field's records
        self.text_encoder_cheap = False  # whether `text_encoder` loads no model
        self._combine_mode = "replace"
        self.pointer = Pointer()
        # Named selections, one {name: [N] bool} per scene state of the history.
        self._named_at: weakref.WeakKeyDictionary[GaussianScene, dict[str, Tensor]] = (
            weakref.WeakKeyDictionary()
        )
        # Where an op's rows came from (`note_rows`), consumed by `apply`.
        self._rows_of: weakref.WeakKeyDictionary[GaussianScene, tuple[Any, Tensor]] = (
            weakref.WeakKeyDictionary()
        )
        self.dropped_named: list[str] = []  # names the last count-changing op could not remap
        self._bookmarks: list[Bookmark] = []

    # ------------------------------------------------------------------ reading
    @property
    def scene(self) -> GaussianScene:
        return self.history.current

    @property
    def selection(self) -> Tensor:
        """[N] bool; treat as read-only (a new tensor replaces it on every change)."""
        with self.lock:
            return self._selection

    @property
    def n_selected(self) -> int:
        with self.lock:
            return int(self._selection.sum())

    @property
    def color_mode(self) -> str:
        return self._color_mode

    @property
    def version(self) -> int:
        return self._version

    # A transient scene shown instead of the current one (a running edit's live preview), as
    # (the scene it previews an edit of, the preview): never part of the history, and ignored
    # as soon as the current scene is another one.
    _preview: tuple[GaussianScene, GaussianScene] | None = None

    def show_preview(self, scene: GaussianScene | None, *, of: GaussianScene | None = None) -> bool:
        """Show `scene` in place of the current scene until the scene changes or
        `show_preview(None)`; ops and history never see it. A preview may hold another count
        than the scene (a growing edit): then no selection or values are drawn on it. With `of`
        (the scene the preview was computed from), nothing is shown unless that is still the
        current scene. Returns whether the preview is shown."""
        with self.lock:
            base = self.history.current
            if scene is not None and (of is not None and of is not base):
                return False
            shown = self._preview is not None and self._preview[0] is base
            self._preview = None if scene is None else (base, scene)
            if scene is None and not shown:
                return False
            self._version += 1
        self._emit(DISPLAY)
        return scene is not None

    def snapshot(self) -> Snapshot:
        with self.lock:
            scene = self.history.current
            preview = None
            if self._preview is not None and self._preview[0] is scene:
                preview = self._preview[1]
            return Snapshot(
                scene,
                self._selection,
                self._color_mode,
                self._values,
                self._values_name,
                self._version,
                preview,
            )

    def on_change(self, callback: Callable[[str], None]) -> Callable[[str], None]:
        """Call `callback(kind)` after each change; kind is "scene", "selection", "display" or
        "field" (after the "scene" that changed the features, or when the field is replaced).
        Runs on the thread that made the change, outside the lock."""
        with self.lock:
            self._listeners.append(callback)
        return callback

    def set_source(self, path: Path) -> None:
        """Record the file the scene was saved to last (what "the scene file" means now)."""
        with self.lock:
            self.source = Path(path)
        self._emit(SOURCE)

    # ------------------------------------------------------------------ feature field
    @property
    def field(self) -> FeatureField | None:
        """The loaded field's heads and records (its features: the scene's `feature` extra)."""
        return self._field

    def set_field(
        self, field: FeatureField, step: str = "features", *, of: GaussianScene | None = None
    ) -> GaussianScene:
        """Attach `field` to the current scene as a history step named `step`; refuses a field
        lifted on another scene (`FieldMismatchError`), and with `of` (the scene a job lifted it
        on) any scene but that one."""
        with self.lock:
            if of is not None and of is not self.history.current:
                raise RuntimeError("the scene changed while lifting; lift again")
            field.check_scene(self.history.current)
            self._keep(field, new_texts=True)
            return self.apply(step, lambda scene, _sel: field.attach(scene), needs_selection=False)

    def keep_field(self, field: FeatureField) -> None:
        """Replace the loaded field's heads and records (no history step: e.g. a head that an
        insertion extended); the text embeddings stay cached."""
        with self.lock:
            self._keep(field, new_texts=False)
        self._emit(FIELD)

    def _keep(self, field: FeatureField, *, new_texts: bool) -> None:
        self._field = field
        self._tq = None
        if new_texts or self._field_texts is None:
            self._field_texts = None

    def current_field(self) -> FeatureField | None:
        """The loaded field with the features the current scene carries (None when there is no
        field, no `feature` extra, or its width is not the field's)."""
        with self.lock:
            field = self._field
            features = self.history.current.extras.get("feature")
            if field is None or features is None:
                return None
            if features.ndim != 2 or features.shape[1] != field.channels:
                return None
            return field.with_features(features)

    def text_query(self) -> TextQuery | None:
        """The cached `TextQuery` on the current features (None without a field with a language
        head); rebuilt when the feature tensor or the field changes."""
        with self.lock:
            field = self._field
            features = self.history.current.extras.get("feature")
            if self._tq is not None and self._tq[0] is features and self._tq[1] is field:
                return self._tq[2]
            current = self.current_field()
            if current is None or field is None:
                return None
            space = language_space(field)
            if space is None:
                return None
            texts = self._texts_for(field, space)
            tq = TextQuery(current, texts, space=space)
            self._tq = (features, field, tq)
            return tq

    def text_ready(self, texts: Sequence[str]) -> bool:
        """Whether encoding `texts` needs no model load (cheap enough for a GUI callback)."""
        with self.lock:
            field = self._field
            space = None if field is None else language_space(field)
            if field is None or space is None:
                return True
            return self._texts_for(field, space).ready(texts)

    def encode_texts(self, texts: Sequence[str]) -> Tensor:
        """[T,D] embeddings of `texts` in the loaded field's language space, each string encoded
        once (the cache `text_query` uses). Works without per-Gaussian features: a NeRF's feature
        branch is decoded by the loaded field's heads. May load a text model: call it from a job
        unless `text_ready(texts)`."""
        with self.lock:
            field = self._field
            space = None if field is None else language_space(field)
            if field is None or space is None:
                raise ValueError("no feature field with a language head is loaded")
            encode = self._texts_for(field, space)
        return encode(list(texts))

    def _texts_for(self, field: FeatureField, space: str) -> _FieldTexts:
        if self._field_texts is None:
            factory = self.text_encoder

            def build() -> Callable[[list[str]], Tensor]:
                if factory is not None:
                    return factory(field, space)
                from fields.features import build_text_encoder

                return build_text_encoder(space, field.teachers)

            cheap = space == "oracle" or self.text_encoder_cheap
            self._field_texts = _FieldTexts(build, cheap)
        return self._field_texts

    # ------------------------------------------------------------------ combine mode
    @property
    def combine_mode(self) -> str:
        """How panels combine a new selection with the old one (`COMBINE_MODES`)."""
        return self._combine_mode

    @combine_mode.setter
    def combine_mode(self, mode: str) -> None:
        if mode not in COMBINE_MODES:
            raise ValueError(f"unknown combine mode {mode!r}; expected one of {COMBINE_MODES}")
        self._combine_mode = mode

    # ------------------------------------------------------------------ selection
    def select(self, mask: Tensor, mode: str = "replace") -> int:
        """Combine `mask` into the selection (replace, add, subtract, intersect); returns the
        number now selected."""
        with self.lock:
            mask = self._check(mask)
            self._set_selection(editing.combine(self._selection, mask, mode))
            n = int(self._selection.sum())
        self._emit(SELECTION)
        return n

    def select_with(
        self, fn: Callable[[GaussianScene, Tensor], Tensor], mode: str = "replace"
    ) -> int:
        """Compute a mask from the current scene and selection (`fn(scene, selection)`) and
        combine it, atomically: the scene cannot change between computing and combining."""
        with self.lock:
            mask = self._check(fn(self.history.current, self._selection))
            self._set_selection(editing.combine(self._selection, mask, mode))
            n = int(self._selection.sum())
        self._emit(SELECTION)
        return n

    def select_all(self) -> int:
        """Select every shown Gaussian (hidden ones stay out)."""
        return self.select_with(lambda scene, sel: shown_mask(scene))

    def clear_selection(self) -> None:
        with self.lock:
            self._set_selection(torch.zeros_like(self._selection))
        self._emit(SELECTION)

    def invert_selection(self) -> int:
        """Select every shown Gaussian that was not selected (hidden ones stay out)."""
        return self.select_with(lambda scene, sel: ~sel & shown_mask(scene))

    def _check(self, mask: Tensor) -> Tensor:
        mask = torch.as_tensor(mask).detach().cpu()
        n = len(self.history.current)
        if mask.dtype != torch.bool or mask.shape != (n,):
            raise ValueError(
                f"a selection must be a bool mask of shape ({n},), got {mask.dtype} {tuple(mask.shape)}"
            )
        return mask

    def _set_selection(self, mask: Tensor) -> None:
        self._selection = mask
        self._version += 1

    # ------------------------------------------------------------------ ops and history
    def apply(
        self,
        name: str,
        op: Callable[[GaussianScene, Tensor], OpResult],
        *,
        needs_selection: bool = True,
    ) -> GaussianScene:
        """Run `op(scene, selection)` and record its result as a history step named `name`.

        `op` returns the new scene, or (scene, selection) to choose the selection afterwards
        (e.g. duplicate selects the copies). Otherwise the selection is kept when the count is
        unchanged and cleared when it changed."""
        with self.lock:
            scene, sel = self.history.current, self._selection
            if needs_selection and not bool(sel.any()):
                raise NothingSelectedError(f"{name}: nothing is selected")
            result = op(scene, sel)
            new_scene, new_sel = result if isinstance(result, tuple) else (result, None)
            if new_sel is None:
                new_sel = sel if len(new_scene) == len(scene) else None
            self._left_with[scene] = sel
            named = self._carry_named(scene, new_scene)
            self.history.apply(name, new_scene)
            if named is not None:
                self._named_at[new_scene] = named
            self._adopt(new_scene, new_sel)
            dropped = bool(self.dropped_named)
        self._emit(SCENE)
        if dropped:
            self._emit(NAMED)
        return new_scene

    def replace_scene(self, scene: GaussianScene, name: str) -> None:
        """Show `scene` as a new starting point with no history behind it (a training run's
        snapshot: nothing before it is a state the user made and could return to)."""
        with self.lock:
            self.dropped_named = list(self._named_at.get(self.history.current, {}))
            self.history = editing.History(scene, max_bytes=self._max_history_bytes, name=name)
            self._adopt(scene, None)
            dropped = bool(self.dropped_named)
        self._emit(SCENE)
        if dropped:
            self._emit(NAMED)

    def undo(self) -> bool:
        return self._step(-1)

    def redo(self) -> bool:
        return self._step(+1)

    def _step(self, direction: int) -> bool:
        with self.lock:
            can = self.history.can_undo if direction < 0 else self.history.can_redo
            if not can:
                return False
            self._left_with[self.history.current] = self._selection
            scene = self.history.undo() if direction < 0 else self.history.redo()
            self._adopt(scene, self._left_with.get(scene))
        self._emit(SCENE)
        return True

    def _adopt(self, scene: GaussianScene, selection: Tensor | None) -> None:
        if selection is None or selection.shape != (len(scene),):
            selection = torch.zeros(len(scene), dtype=torch.bool)
        self._selection = selection.detach().cpu().bool()
        if self._values is not None and self._values.shape[0] != len(scene):
            # Per-Gaussian values belong to the Gaussians they were computed for.
            self._values, self._values_name = None, None
            if self._color_mode == "values":
                self._color_mode = "rgb"
        self._version += 1

    def history_steps(self) -> tuple[list[str], int]:
        with self.lock:
            return self.history.steps, self.history.index

    # ------------------------------------------------------------------ named selections
    @property
    def named_selections(self) -> dict[str, Tensor]:
        """{name: [N] bool} of the current state (a copy; the masks are read-only)."""
        with self.lock:
            return dict(self._named_at.get(self.history.current, {}))

    def save_named(self, name: str, mask: Tensor | None = None) -> int:
        """Keep `mask` (default: the selection) under `name`, replacing one of that name;
        returns how many Gaussians it holds."""
        name = str(name).strip()
        if not name:
            raise ValueError("a named selection needs a name")
        with self.lock:
            mask = self._selection if mask is None else self._check(mask)
            self.dropped_named = []  # (told once, with the op that dropped them)
            self._set_named(name, mask.clone())
            n = int(mask.sum())
        self._emit(NAMED)
        return n

    def restore_named(self, name: str, mode: str = "replace") -> int:
        """Combine the named selection into the selection; returns the number now selected."""

        def mask(scene: GaussianScene, _sel: Tensor) -> Tensor:
            named = self._named_at.get(scene, {})  # (select_with holds the lock)
            if name not in named:
                raise KeyError(f"no named selection {name!r} (there are: {sorted(named)})")
            return named[name]

        return self.select_with(mask, mode)

    def delete_named(self, name: str) -> None:
        """Forget `name` in every state of the history."""
        with self.lock:
            if name not in self._named_at.get(self.history.current, {}):
                raise KeyError(f"no named selection {name!r}")
            self.dropped_named = []
            for scene in list(self._named_at.keys()):
                named = self._named_at.get(scene)
                if named is not None and name in named:
                    self._named_at[scene] = {k: v for k, v in named.items() if k != name}
        self._emit(NAMED)

    def note_rows(self, old: GaussianScene, new: GaussianScene, index: Tensor) -> None:
        """Tell the state that row i of `new` is row `index[i]` of `old` (`index`: [M] int, or
        an [len(old)] bool mask of the rows kept in order); `apply` remaps named selections with
        it when the op changed the count."""
        index = torch.as_tensor(index).detach().cpu()
        if index.dtype == torch.bool:
            index = index.nonzero().squeeze(1)
        with self.lock:
            self._rows_of[new] = (weakref.ref(old), index.long())

    def _set_named(self, name: str, mask: Tensor) -> None:
        """Set `name` on the current state and on the same-count states around it."""
        for scene in self._same_rows_span():
            named = dict(self._named_at.get(scene, {}))
            named[name] = mask
            self._named_at[scene] = named

    def _same_rows_span(self) -> list[GaussianScene]:
        """The current scene and its history neighbours reached through count-keeping steps."""
        states = [scene for _name, scene in self.history.states()]
        i = self.history.index
        n = len(states[i])
        lo, hi = i, i
        while lo > 0 and len(states[lo - 1]) == n:
            lo -= 1
        while hi < len(states) - 1 and len(states[hi + 1]) == n:
            hi += 1
        return states[lo : hi + 1]

    def _carry_named(self, old: GaussianScene, new: GaussianScene) -> dict[str, Tensor] | None:
        """The named selections of `new`, from those of `old` (see the module docstring)."""
        self.dropped_named = []
        named = self._named_at.get(old)
        if not named:
            return None
        rows: Tensor | None = None
        noted = self._rows_of.pop(new, None)
        if noted is not None and noted[0]() is old and noted[1].shape == (len(new),):
            rows = noted[1]  # the op said where each row came from (even at the same count)
        elif len(new) == len(old):
            return dict(named)
        elif len(new) > len(old) and torch.equal(new.means[: len(old)], old.means):
            rows = torch.cat(
                [torch.arange(len(old)), torch.full((len(new) - len(old),), -1, dtype=torch.long)]
            )
        if rows is None or (len(rows) and int(rows.max()) >= len(old)):
            self.dropped_named = sorted(named)
            return {}
        return {k: remap_mask(v, rows, len(old)) for k, v in named.items()}

    # ------------------------------------------------------------------ bookmarks
    @property
    def bookmarks(self) -> list[Bookmark]:
        with self.lock:
            return list(self._bookmarks)

    def add_bookmark(self, bookmark: Bookmark) -> None:
        """Add a camera bookmark (one of the same name is replaced, in place)."""
        if not str(bookmark.name).strip():
            raise ValueError("a bookmark needs a name")
        with self.lock:
            names = [b.name for b in self._bookmarks]
            if bookmark.name in names:
                self._bookmarks[names.index(bookmark.name)] = bookmark
            else:
                self._bookmarks.append(bookmark)
        self._emit(BOOKMARKS)

    def bookmark(self, name: str) -> Bookmark:
        with self.lock:
            for b in self._bookmarks:
                if b.name == name:
                    return b
            raise KeyError(f"no bookmark {name!r} (there are: {[b.name for b in self._bookmarks]})")

    def delete_bookmark(self, name: str) -> None:
        with self.lock:
            self.bookmark(name)
            self._bookmarks = [b for b in self._bookmarks if b.name != name]
        self._emit(BOOKMARKS)

    # ------------------------------------------------------------------ projects
    def to_project(
        self,
        *,
        grasps: Sequence[Any] = (),
        up: str | None = None,
        settings: dict[str, Any] | None = None,
    ) -> Project:
        """Everything the state holds, as an `editing.project.Project` (a copy of the history:
        later edits do not change it). `grasps`, `up` and panel `settings` come from the app."""
        with self.lock:
            current = self.history.current
            field = self.current_field()
            if field is None:
                field = self._field
            return Project(
                history=self.history.copy(),
                selection=self._selection,
                named_selections=dict(self._named_at.get(current, {})),
                field=field,
                grasps=list(grasps),
                bookmarks=list(self._bookmarks),
                up=up,
                settings={"color_mode": self._color_mode, **(settings or {})},
                source=None if self.source is None else str(self.source),
            )

    def from_project(self, project: Project) -> None:
        """Replace everything with `project`'s: history (undo works as it did), selection,
        named selections, bookmarks, feature field, colour mode and source. Listeners hear
        every kind that changed, then `PROJECT`."""
        history = project.history
        if not isinstance(history, editing.History):
            raise TypeError(f"a project's history must be an editing.History, not {history!r}")
        with self.lock:
            self.history = history
            scene = history.current
            n = len(scene)
            self._left_with = weakref.WeakKeyDictionary()
            self._named_at = weakref.WeakKeyDictionary()
            self._rows_of = weakref.WeakKeyDictionary()
            self.dropped_named = []
            self._preview = None
            self._values, self._values_name = None, None
            selection = project.selection
            if selection is None or tuple(selection.shape) != (n,):
                selection = None
            self._adopt(scene, None if selection is None else selection.bool())
            for name, mask in project.named_selections.items():
                mask = torch.as_tensor(mask).detach().cpu()
                if mask.shape == (n,):
                    self._set_named(str(name), mask.bool())
            self._bookmarks = list(project.bookmarks)
            self._field, self._tq, self._field_texts = None, None, None
            if project.field is not None:
                self._keep(project.field, new_texts=True)
            mode = (project.settings or {}).get("color_mode", "rgb")
            self._color_mode = mode if mode in COLOR_MODES and mode != "values" else "rgb"
            if project.source:
                self.source = Path(project.source)
            self._version += 1
        for kind in (SCENE, SELECTION, DISPLAY, FIELD, NAMED, BOOKMARKS, SOURCE, PROJECT):
            self._emit(kind)

    # ------------------------------------------------------------------ display
    def set_color_mode(self, mode: str) -> None:
        if mode not in COLOR_MODES:
            raise ValueError(f"unknown colour mode {mode!r}; expected one of {COLOR_MODES}")
        with self.lock:
            if mode == self._color_mode:
                return
            self._color_mode = mode
            self._version += 1
        self._emit(DISPLAY)

    def set_values(self, name: str, values: Tensor | None) -> None:
        """Per-Gaussian values to colour by (relevancy, grasp score, ...); None clears them."""
        with self.lock:
            if values is not None:
                values = torch.as_tensor(values).detach().cpu().float().reshape(-1)
                n = len(self.history.current)
                if values.shape != (n,):
                    raise ValueError(f"values have {values.shape[0]} entries for {n} Gaussians")
            self._values = values
            self._values_name = None if values is None else name
            self._version += 1
        self._emit(DISPLAY)

    # ------------------------------------------------------------------ internals
    def _emit(self, kind: str) -> None:
        with self.lock:
            listeners = list(self._listeners)
            kinds = [kind]
            if kind == SCENE:
                features = self.history.current.extras.get("feature")
                if features is not self._feature_seen:
                    self._feature_seen = features
                    kinds.append(FIELD)
        for k in kinds:
            for cb in listeners:
                cb(k)


def shown_mask(scene: GaussianScene) -> Tensor:
    """[N] bool: Gaussians not hidden by `isolate`."""
    hidden = scene.extras.get("hidden")
    return torch.ones(len(scene), dtype=torch.bool) if hidden is None else ~hidden.cpu().bool()


def remap_mask(mask: Tensor, rows: Tensor, n_old: int) -> Tensor:
    """[M] bool: `mask` ([n_old] bool over the old rows) carried to new rows, where new row i
    is old row `rows[i]` (-1: a new Gaussian). Only the first new row of each old row inherits
    its membership: copies and inserted Gaussians start outside."""
    m = len(rows)
    order = torch.arange(m)
    valid = rows >= 0
    first = torch.full((n_old,), m, dtype=torch.long)
    if bool(valid.any()):
        first = first.scatter_reduce(0, rows[valid], order[valid], "amin")
    keep = valid.clone()
    keep[valid] = first[rows[valid]] == order[valid]
    out = torch.zeros(m, dtype=torch.bool)
    out[keep] = mask[rows[keep]]
    return out
