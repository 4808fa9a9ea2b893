"""`History`: undo/redo over immutable scene states.

Scenes are values whose tensors are never mutated in place, so a step stores the whole resulting
scene and shares every tensor it did not change with its neighbours (a recolour stores one new
`sh` tensor, not a copy of the scene). A byte budget drops the oldest states when exceeded; the
current state is never dropped.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from fields import GaussianScene


@dataclass(frozen=True)
class _Step:
    name: str
    scene: GaussianScene


def _tensors(scene: GaussianScene):
    yield scene.means
    yield scene.quats
    yield scene.scales
    yield scene.opacities
    yield scene.sh
    yield from scene.extras.values()


class History:
    """Linear undo/redo history. Thread-safe: viewer callbacks run on a thread pool."""

    def __init__(self, scene: GaussianScene, *, max_bytes: int = 2**31, name: str = "open") -> None:
        self._lock = threading.RLock()
        self._steps: list[_Step] = [_Step(name, scene)]
        self._index = 0
        self._max_bytes = int(max_bytes)
        self._callbacks: list[Callable[[History], None]] = []

    # ------------------------------------------------------------------ state
    @property
    def current(self) -> GaussianScene:
        with self._lock:
            return self._steps[self._index].scene

    @property
    def steps(self) -> list[str]:
        """Step names, oldest first ("open" is the initial state)."""
        with self._lock:
            return [s.name for s in self._steps]

    @property
    def index(self) -> int:
        """Position of the current state in `steps`."""
        with self._lock:
            return self._index

    @property
    def can_undo(self) -> bool:
        with self._lock:
            return self._index > 0

    @property
    def can_redo(self) -> bool:
        with self._lock:
            return self._index < len(self._steps) - 1

    @property
    def max_bytes(self) -> int:
        """Byte budget of the states (shared tensors counted once)."""
        return self._max_bytes

    def states(self) -> list[tuple[str, GaussianScene]]:
        """Every state as (step name, scene), oldest first; `index` is the current one."""
        with self._lock:
            return [(s.name, s.scene) for s in self._steps]

    def copy(self) -> History:
        """An independent history with the same states, index and budget (tensors are shared,
        scenes being immutable); later edits to either do not touch the other. No callbacks."""
        with self._lock:
            return History.from_states(self.states(), self._index, max_bytes=self._max_bytes)

    @classmethod
    def from_states(
        cls,
        states: list[tuple[str, GaussianScene]],
        index: int | None = None,
        *,
        max_bytes: int = 2**31,
    ) -> History:
        """A history over `states` (oldest first) whose current state is `states[index]`
        (default: the last). The budget applies as after `apply`: the oldest states go while it
        is exceeded, never the current one."""
        states = list(states)
        if not states:
            raise ValueError("History.from_states needs at least one state")
        for name, scene in states:
            if not isinstance(scene, GaussianScene):
                raise TypeError(
                    f"History.from_states: state {name!r} is a {type(scene).__name__}, "
                    "not a GaussianScene"
                )
        index = len(states) - 1 if index is None else int(index)
        if not 0 <= index < len(states):
            raise IndexError(f"index {index} out of range for {len(states)} states")
        history = cls(states[0][1], max_bytes=max_bytes, name=str(states[0][0]))
        with history._lock:
            history._steps = [_Step(str(name), scene) for name, scene in states]
            history._index = index
            history._enforce_budget()
        return history

    def on_change(self, callback: Callable[[History], None]) -> None:
        """Call `callback(history)` after every apply/undo/redo (outside the lock)."""
        with self._lock:
            self._callbacks.append(callback)

    # ------------------------------------------------------------------ changes
    def apply(self, name: str, scene: GaussianScene) -> GaussianScene:
        """Record `scene` as the new current state; drops any redo branch."""
        if not isinstance(scene, GaussianScene):
            raise TypeError(f"History.apply expects a GaussianScene, got {type(scene).__name__}")
        with self._lock:
            del self._steps[self._index + 1 :]
            self._steps.append(_Step(name, scene))
            self._index = len(self._steps) - 1
            self._enforce_budget()
        self._notify()
        return scene

    def undo(self) -> GaussianScene:
        with self._lock:
            if self._index == 0:
                raise IndexError("nothing to undo")
            self._index -= 1
            scene = self._steps[self._index].scene
        self._notify()
        return scene

    def redo(self) -> GaussianScene:
        with self._lock:
            if self._index >= len(self._steps) - 1:
                raise IndexError("nothing to redo")
            self._index += 1
            scene = self._steps[self._index].scene
        self._notify()
        return scene

    def nbytes(self) -> int:
        """Bytes held by all states, counting shared tensors once."""
        with self._lock:
            return self._nbytes(self._steps)

    # ------------------------------------------------------------------ internals
    @staticmethod
    def _nbytes(steps: list[_Step]) -> int:
        seen: dict[int, int] = {}
        for step in steps:
            for t in _tensors(step.scene):
                st = t.untyped_storage()
                seen[st.data_ptr()] = st.nbytes()
        return sum(seen.values())

    def _enforce_budget(self) -> None:
        while (
            len(self._steps) > 1 and self._index > 0 and self._nbytes(self._steps) > self._max_bytes
        ):
            # Forget the oldest state; the one after it becomes the new base.
            self._steps.pop(0)
            self._index -= 1

    def _notify(self) -> None:
        for cb in list(self._callbacks):
            cb(self)
