"""Private, crash-safe file writes shared by export and snapshots (research A.4).

A temp file in the same folder (0600, O_EXCL, O_NOFOLLOW), fsynced, then ``os.replace``,
then the folder fsynced: a crash or a full disk leaves the old file or the new one, never
half of one.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["private_temp", "fsync_dir", "atomic_write_text"]


def private_temp(folder: Path) -> tuple[int, str]:
    """A new 0600 file in ``folder`` (opened for writing), and its name."""
    name = folder / f".{os.getpid()}-{os.urandom(6).hex()}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(name, flags, 0o600)
    os.fchmod(fd, 0o600)  # whatever the umask
    return fd, str(name)


def fsync_dir(folder: Path) -> None:
    """Persist a rename in ``folder``; quietly skipped where a filesystem refuses it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically, mode 0600. Raises OSError."""
    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp = private_temp(folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = ""
    finally:
        if tmp:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    fsync_dir(folder)
