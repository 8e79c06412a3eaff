"""The session journal: one JSON object per event, appended, flushed and fsynced as it happens.

A crash or ``kill -9`` loses nothing already written. Files are created 0600 in a 0700
folder; a torn last line left by a crash is terminated on open so the next record stays
readable. A journal that cannot be written keeps its records in memory and says so once.
One process owns a journal: it holds an exclusive lock on the file (``busy`` tells the
second one, which writes nothing), and a forked child of that process never writes to it.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from json import dumps as _dumps
from pathlib import Path
from typing import Any

from llmrepl.store.fileio import private_append, private_dirs, try_lock
from llmrepl.store.records import read_records

__all__ = ["Journal", "read_journal", "new_session_id"]

# Records that make a session worth coming back to: a message, a cell. A run with none of them
# (``llmrepl -c /help``) leaves no journal behind (``discard_if_empty``).
_SUBSTANTIVE = frozenset({"user", "py", "message", "cell_start", "cell_end"})


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
        self.busy = False                  # another process holds this journal: nothing was written
        self._pid = os.getpid()            # the process that owns it (a forked child does not)
        self._fd: int | None = None
        self._ident: tuple[int, int] | None = None  # (device, inode) of the file self._fd writes
        self._secrets: tuple[str, ...] = ()
        self._lock = threading.Lock()
        self.created = False               # this process made the file (it was absent or empty)
        self.substantive = False           # a message or a cell was recorded by this process
        if self.path is not None:
            self._open(self.path)

    def _open(self, path: Path) -> None:
        try:
            private_dirs(path.parent)
            fd = private_append(path)
            if not try_lock(fd):  # before any write: the torn-line repair below is a write too
                os.close(fd)
                self.busy = True
                self.error = f"the session journal {path} is open in another llmrepl process"
                return
            self._fd = fd
            size = os.fstat(fd).st_size
            self.created = size == 0
            if size and _last_byte(path, size) != b"\n":
                os.write(fd, b"\n")  # terminate a record torn by a crash
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
        if os.getpid() != self._pid:
            return  # a forked child (os.fork in a cell) must not interleave its records with ours
        if event in _SUBSTANTIVE:
            self.substantive = True
        record = {"t": round(time.time(), 3), "event": event, **fields}
        text = _dumps(record, ensure_ascii=False, separators=(",", ":"), default=str)
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "[REDACTED]")
        line = (text + "\n").encode("utf-8", "backslashreplace")  # always valid UTF-8 on disk
        with self._lock:  # late output from a cell's threads is journaled from those threads
            self._append_line(line)

    def _append_line(self, line: bytes) -> None:
        if self._fd is not None and not self._same_file():
            self._remake()
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

    def _same_file(self) -> bool:
        """Whether ``self._fd`` still writes the file at ``path``. A cell may delete the state
        folder (``rm -rf``), or close the fd (``os.closerange``) and reuse its number."""
        assert self._fd is not None and self.path is not None
        try:
            st = os.fstat(self._fd)
        except OSError:
            self._fd = None  # closed under us: nothing of ours left to close
            return False
        ident = (st.st_dev, st.st_ino)
        if self._ident is None:
            self._ident = ident
        elif ident != self._ident:
            self._fd = None  # the number now belongs to a file the cell opened
            return False
        # a file moved elsewhere (nlink > 0) with something else at its path keeps its records
        return st.st_nlink > 0 and os.path.lexists(self.path)

    def _remake(self) -> None:
        """The journal file is gone (or our fd is): make the folders (0700) and the file (0600)
        again at ``path``, copy the records the old file holds while it is still open, and say
        so once."""
        assert self.path is not None
        old, self._fd = self._fd, None
        path = self.path
        try:
            private_dirs(path.parent)
            fd = private_append(path)
            if not try_lock(fd):
                os.close(fd)
                raise OSError(errno.EBUSY, "it is open in another llmrepl process")
            st = os.fstat(fd)
            self._fd, self._ident = fd, (st.st_dev, st.st_ino)
            if st.st_size and old is None:
                return  # only our fd was closed: the file is intact, reopened
            kept = st.st_size > 0 or (old is not None and _copy_into(old, fd))
            kept_text = "rewrote the journal" if kept else "the records written before were lost"
            message = f"the session journal {path} was deleted while llmrepl ran; made it again and {kept_text}"
        except OSError as e:
            message = f"cannot write the session journal {path}: {e.strerror or e}; keeping records in memory"
        finally:
            if old is not None:
                try:
                    os.close(old)
                except OSError:
                    pass
        if not self.error:
            self.error = message

    def _write_all(self, data: bytes) -> None:
        assert self._fd is not None
        n = os.write(self._fd, data)
        if n != len(data):  # disk full or file size limit: end the torn line, report
            os.write(self._fd, b"\n")
            raise OSError(errno.ENOSPC, f"short write ({n} of {len(data)} bytes)")

    def discard_if_empty(self) -> bool:
        """Close, and delete the file if this process made it and recorded no message and no
        cell in it: nothing to resume. True if it was deleted. (The file is made at start, so
        a crash at any later point still leaves the records.)"""
        if os.getpid() != self._pid or self.busy or not self.created or self.substantive or self.path is None:
            self.close()
            return False
        with self._lock:
            ours = self._fd is not None and self._same_file()
            self.close()
            if not ours:
                return False
            try:
                os.unlink(self.path)
            except OSError:
                return False
        return True

    def close(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None


def read_journal(path: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], int]:
    """All good records of a journal (see :mod:`llmrepl.store.records`), and how many lines
    were skipped (torn, garbled, impossible or over-long)."""
    good, skipped = read_records(Path(path))
    return good, len(skipped)


def _copy_into(old: int, new: int) -> bool:
    """Copy the whole file open (write-only) as ``old``, deleted or not, to ``new``. Linux reads
    it through /proc/self/fd; elsewhere only a readable ``old`` works. False when nothing was
    copied."""
    try:
        src = os.open(f"/proc/self/fd/{old}", os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        src = old
    offset = 0
    try:
        while chunk := os.pread(src, 1 << 20, offset):
            view = memoryview(chunk)
            while view:
                view = view[os.write(new, view):]
            offset += len(chunk)
    except OSError:
        pass
    finally:
        if src != old:
            os.close(src)
    return offset > 0


def _last_byte(path: Path, size: int) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        return os.pread(fd, 1, size - 1)
    finally:
        os.close(fd)
