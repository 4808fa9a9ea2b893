"""Atomic file writes: temp file in the target's directory, fsync, then rename into place."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

Writer = Callable[[BinaryIO], None]


def write_files(targets: Sequence[tuple[Path, Writer]], *, overwrite: bool) -> None:
    """Write every target to a temp file next to it, then move them all into place.

    Nothing is moved until every writer has succeeded, so a failing writer leaves existing files
    untouched and no temp files behind. The first target is the main file: with
    `overwrite=False` it must not exist, which is checked before writing and again, atomically
    where the filesystem has hard links, when it is moved into place.
    """
    main = targets[0][0]
    if not overwrite and os.path.lexists(main):
        raise FileExistsError(
            errno.EEXIST, "refusing to overwrite (pass overwrite=True)", str(main)
        )
    temps: list[Path] = []
    try:
        for path, write in targets:
            fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            temps.append(Path(name))
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(name, 0o644)  # mkstemp creates 0600; scene files are meant to be shared
        for i, ((path, _), tmp) in enumerate(zip(targets, temps, strict=True)):
            if i == 0 and not overwrite:
                _move_no_clobber(tmp, path)
            else:
                os.replace(tmp, path)
    finally:
        for tmp in temps:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def _move_no_clobber(tmp: Path, target: Path) -> None:
    try:
        os.link(tmp, target)  # fails with FileExistsError if the target appeared meanwhile
    except FileExistsError:
        raise FileExistsError(
            errno.EEXIST, "refusing to overwrite (pass overwrite=True)", str(target)
        ) from None
    except OSError:
        # No hard links here (some network / FUSE filesystems): fall back to check-then-rename.
        if os.path.lexists(target):
            raise FileExistsError(
                errno.EEXIST, "refusing to overwrite (pass overwrite=True)", str(target)
            ) from None
        os.replace(tmp, target)
