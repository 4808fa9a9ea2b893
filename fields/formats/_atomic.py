"""Atomic file writes: temp file in the target's directory, fsync, then rename into place.

Temp files are named `.{name}.scenelab-{pid}-{rand}.tmp` (hidden, next to their target). A
save killed before its rename leaves one behind; `clean_stale_temps` removes those whose
writing process is gone, and `write_files` calls it for every directory it writes into.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

Writer = Callable[[BinaryIO], None]

_TEMP = re.compile(r"\.(?P<name>.+)\.scenelab-(?P<pid>[0-9]{1,10})-(?P<rand>[0-9a-f]{8})\.tmp")
_REFUSE = "refusing to overwrite (pass overwrite=True)"


def temp_path(target: Path, pid: int | None = None) -> Path:
    """A fresh temp name for `target` in its directory (not created)."""
    pid = os.getpid() if pid is None else pid
    return target.with_name(f".{target.name}.scenelab-{pid}-{secrets.token_hex(4)}.tmp")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by someone else
    except (OverflowError, OSError):
        return False  # no process can have that id
    return True


def clean_stale_temps(directory: str | Path) -> list[Path]:
    """Remove the temp files of our own naming in `directory` whose writer process is dead.

    Only regular files (not links, not folders) matching `.{name}.scenelab-{pid}-{rand}.tmp` are
    touched; a temp whose process is alive (a save in progress) is kept. Best effort: a missing or
    unreadable directory, or a file that cannot be removed, is skipped. Returns what was removed.
    A pid of a dead writer reused by a new process keeps its temp until that process ends too."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        m = _TEMP.fullmatch(entry.name)
        if m is None or _pid_alive(int(m.group("pid"))):
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            os.unlink(entry.path)
        except OSError:
            continue
        removed.append(Path(entry.path))
    return removed


def _refuse(path: Path) -> FileExistsError:
    return FileExistsError(errno.EEXIST, _REFUSE, str(path))


def write_files(targets: Sequence[tuple[Path, Writer]], *, overwrite: bool) -> None:
    """Write every target to a temp file next to it, then move them all into place.

    Nothing is moved until every writer has succeeded, so a failing writer leaves existing files
    untouched and no temp files behind. With `overwrite=False` no target may exist (the main file
    and its side files alike): that is checked before anything is written, and again, atomically
    where the filesystem has hard links, as each is moved into place; if one appears meanwhile,
    the files this call already placed are removed again. Stale temps of killed saves in the
    target directories are cleaned first (`clean_stale_temps`).
    """
    targets = [(Path(p), w) for p, w in targets]
    if not overwrite:
        for path, _ in targets:
            if os.path.lexists(path):
                raise _refuse(path)
    for directory in dict.fromkeys(p.parent for p, _ in targets):
        clean_stale_temps(directory)
    temps: list[Path] = []
    placed: list[Path] = []
    try:
        for path, write in targets:
            tmp = _create_temp(path)
            temps.append(tmp)
            with open(tmp, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
        for (path, _), tmp in zip(targets, temps, strict=True):
            if overwrite:
                os.replace(tmp, path)
            else:
                _move_no_clobber(tmp, path)
            placed.append(path)
    except BaseException:
        if not overwrite:  # placed files did not exist before this call: ours to take back
            for path in placed:
                with contextlib.suppress(OSError):
                    path.unlink()
        raise
    finally:
        for tmp in temps:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def _create_temp(target: Path) -> Path:
    for _ in range(100):
        tmp = temp_path(target)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(errno.EEXIST, "no free temp file name", str(target.parent))


def _move_no_clobber(tmp: Path, target: Path) -> None:
    try:
        os.link(tmp, target)  # fails with FileExistsError if the target appeared meanwhile
    except FileExistsError:
        raise _refuse(target) from None
    except OSError:
        # No hard links here (some network / FUSE filesystems): fall back to check-then-rename.
        if os.path.lexists(target):
            raise _refuse(target) from None
        os.replace(tmp, target)
