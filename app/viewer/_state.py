"""The viewer's shared state: the scene's history, the selection, and how splats are coloured.

One `ViewerState` per server, shared by every browser tab (that is what makes two tabs see the
same scene). viser runs callbacks on a thread pool, so every read-modify-write happens under
`lock`; listeners are told what changed *after* the lock is released and read a consistent
`Snapshot` when they need one.

The selection is a bool mask over the current scene's Gaussians. It is not part of the undo
history, but each scene state remembers the selection it had when the user left it, so undoing a
delete brings back the deleted Gaussians *selected*, as they were.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

import editing
from fields import GaussianScene

from ._splats import COLOR_MODES

# What changed, as told to listeners.
SCENE = "scene"  # the Gaussians (an op, undo, redo)
SELECTION = "selection"
DISPLAY = "display"  # colour mode or per-Gaussian values

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
    preview: GaussianScene | None = None  # a running edit's live preview, same count as `scene`

    @property
    def shown(self) -> GaussianScene:
        """What the browsers show: the preview while one runs, else `scene`. Ops, saving and
        exporting use `scene` (the history's current step), never the preview."""
        return self.scene if self.preview is None else self.preview

    @property
    def n_selected(self) -> int:
        return int(self.selection.sum())


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
        self._selection = torch.zeros(len(scene), dtype=torch.bool)
        self._left_with: weakref.WeakKeyDictionary[GaussianScene, Tensor] = (
            weakref.WeakKeyDictionary()
        )
        self._color_mode = "rgb"
        self._values: Tensor | None = None
        self._values_name: str | None = None
        self._version = 0
        self._listeners: list[Callable[[str], None]] = []

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
        """Show `scene` (same Gaussian count) in place of the current scene until the scene
        changes or `show_preview(None)`; ops and history never see it. With `of` (the scene
        the preview was computed from), nothing is shown unless that is still the current
        scene. Returns whether the preview is shown."""
        with self.lock:
            base = self.history.current
            if scene is not None and (of is not None and of is not base):
                return False
            if scene is not None and len(scene) != len(base):
                raise ValueError(f"a preview has {len(scene)} Gaussians, the scene {len(base)}")
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
        """Call `callback(kind)` after each change; kind is "scene", "selection" or "display".
        Runs on the thread that made the change, outside the lock."""
        with self.lock:
            self._listeners.append(callback)
        return callback

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
            self.history.apply(name, new_scene)
            self._adopt(new_scene, new_sel)
        self._emit(SCENE)
        return new_scene

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
        for cb in listeners:
            cb(kind)


def shown_mask(scene: GaussianScene) -> Tensor:
    """[N] bool: Gaussians not hidden by `isolate`."""
    hidden = scene.extras.get("hidden")
    return torch.ones(len(scene), dtype=torch.bool) if hidden is None else ~hidden.cpu().bool()
