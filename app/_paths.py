"""Confine file paths typed into the GUI to one folder (the working directory by default).

Anyone who can reach the viewer can type a path, so a typed path must never name a file outside
the folder the user started `scenelab` in: no absolute paths elsewhere, no `..` escapes, no
symlinks that lead out, no `~` expansion. Paths given on the command line are the user's own and
are not checked here.
"""

from __future__ import annotations

from pathlib import Path


class PathOutsideRootError(ValueError):
    """A GUI-typed path names a file outside the allowed folder."""


def confine(text: str | Path, root: str | Path | None = None) -> Path:
    """Resolve `text` (relative to `root`, default the current working directory) and return the
    absolute path, or raise `PathOutsideRootError` when it would leave `root`.

    Symlinks are resolved before the check, so a link inside `root` that points outside is refused.
    The file itself need not exist (save targets usually do not)."""
    raw = str(text).strip()
    if not raw:
        raise PathOutsideRootError("empty path")
    if "\x00" in raw:
        raise PathOutsideRootError("path contains a NUL character")
    if raw.startswith("~"):
        raise PathOutsideRootError(f"{raw!r}: '~' is not expanded; give a path inside the folder")
    base = Path.cwd() if root is None else Path(root)
    base = base.resolve()
    candidate = Path(raw)
    if not candidate.is_absolute():
        candidate = base / candidate
    resolved = candidate.resolve(strict=False)
    if resolved != base and not resolved.is_relative_to(base):
        raise PathOutsideRootError(f"{raw!r} is outside the allowed folder {base}")
    return resolved


def display(path: Path, root: str | Path | None = None) -> str:
    """`path` relative to `root` when it lies inside, for messages; else the absolute path."""
    base = (Path.cwd() if root is None else Path(root)).resolve()
    try:
        return str(path.resolve().relative_to(base))
    except ValueError:
        return str(path)
