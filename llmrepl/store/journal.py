"""The session journal: one JSON object per event, appended, flushed and fsynced as it happens.

A crash or ``kill -9`` loses nothing already written. Files are created 0600 in a 0700
folder; a torn last line left by a crash is terminated on open so the next record stays
readable. A journal that cannot be written keeps its records in memory and says so once.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Iterator
from json import dumps as _dumps
from json import loads as _loads
from pathlib import Path
from typing import Any

__all__ = ["Journal", "read_journal", "new_session_id"]

_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def new_session_id() -> str:
    """A sortable, unique session id: UTC time plus the process id."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + f"-{os.getpid()}"


class Journal:
    """Append-only JSONL writer. ``append`` never raises: failures are recorded in ``error``."""

    def __init__(self, path: str | os.PathLike[str] | None, *, fsync: bool = True) -> None:
        self.path = Path(path) if path is not None else None
        self.fsync = fsync
        self.error: str | None = None      # first write failure, for the UI to report once
        self.unsaved: list[bytes] = []     # records kept in memory after a failure, retried later
        self._fd: int | None = None
        self._secrets: tuple[str, ...] = ()
        self._lock = threading.Lock()
        if self.path is not None:
            self._open(self.path)

    def _open(self, path: Path) -> None:
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._fd = os.open(path, _FLAGS, 0o600)
            size = os.fstat(self._fd).st_size
            if size:
                with open(path, "rb") as f:
                    f.seek(size - 1)
                    if f.read(1) != b"\n":
                        os.write(self._fd, b"\n")  # terminate a record torn by a crash
        except OSError as e:
            self._fd = None
            self.error = f"cannot write the session journal {path}: {e.strerror or e}; keeping this session in memory"

    @property
    def healthy(self) -> bool:
        """Open, and nothing held in memory: the file holds every record."""
        return self._fd is not None and not self.unsaved

    def redact(self, *secrets: str | None) -> None:
        """Never write these strings (the API key) into the journal."""
        self._secrets = tuple(s for s in secrets if s and len(s) >= 8)

    def append(self, event: str, /, **fields: Any) -> None:
        """Write one record ``{"t": time, "event": event, ...fields}`` and fsync it."""
        record = {"t": round(time.time(), 3), "event": event, **fields}
        text = _dumps(record, ensure_ascii=False, separators=(",", ":"), default=str)
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "[REDACTED]")
        line = (text + "\n").encode("utf-8", "backslashreplace")  # always valid UTF-8 on disk
        with self._lock:  # late output from a cell's threads is journaled from those threads
            self._append_line(line)

    def _append_line(self, line: bytes) -> None:
        if self._fd is None:
            self.unsaved.append(line)
            return
        try:
            while self.unsaved:
                self._write_all(self.unsaved[0])
                self.unsaved.pop(0)
            self._write_all(line)
            if self.fsync:
                os.fsync(self._fd)
        except OSError as e:
            self.unsaved.append(line)
            if self.error is None:
                self.error = f"cannot write the session journal {self.path}: {e.strerror or e}; keeping records in memory"

    def _write_all(self, data: bytes) -> None:
        assert self._fd is not None
        n = os.write(self._fd, data)
        if n != len(data):  # disk full or file size limit: end the torn line, report
            os.write(self._fd, b"\n")
            raise OSError(errno.ENOSPC, f"short write ({n} of {len(data)} bytes)")

    def close(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None


def read_journal(path: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], int]:
    """All intact records of a journal, and how many lines were unreadable (torn or garbled)."""
    good: list[dict[str, Any]] = []
    bad = 0
    with open(path, "rb") as f:
        for raw in _lines(f):
            try:
                if not raw.endswith(b"\n"):
                    raise ValueError("torn")
                rec = _loads(raw.decode("utf-8", "replace"))
                if not isinstance(rec, dict):
                    raise ValueError("not an object")
                good.append(rec)
            except ValueError:
                bad += 1
    return good, bad


def _lines(f: Any) -> Iterator[bytes]:
    for raw in f:
        if raw.strip():
            yield raw
