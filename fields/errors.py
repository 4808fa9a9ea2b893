"""Exceptions raised by `fields`."""

from __future__ import annotations

from pathlib import Path


class SceneFormatError(ValueError):
    """A scene or dataset file cannot be read: malformed, truncated, inconsistent or unsupported.

    The message always names the file and the problem. Readers raise only this type for bad
    input (plus `FileNotFoundError`/`PermissionError` for files that cannot be opened at all)."""

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = None if path is None else Path(path)
        self.problem = problem
        where = f"{self.path}: " if self.path is not None else ""
        super().__init__(f"{where}{problem}")
