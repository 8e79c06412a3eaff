"""What a running cell produces: bounded stdout/stderr capture with live echo, stdin stubs, figures.

The capture keeps the head and tail of each stream in constant memory (a cell may print
gigabytes), echoes writes live to an :class:`OutputSink`, and survives user code that
"closes" it. Hot-path names are bound at import so a cell that sabotages builtins cannot
break the capture. See the project's research notes, ../shared/research/reliability.md §2.5 and A.2.
"""

from __future__ import annotations

import codecs
import io
import os
import tempfile
import threading
import traceback
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from llmrepl.errors import InputNotAllowed

__all__ = [
    "OutputSink",
    "CappedBuffer",
    "Capture",
    "CaptureRouter",
    "CaptureStream",
    "StdinStub",
    "FigureLog",
    "INPUT_NOT_ALLOWED",
    "format_exception",
    "safe_str",
]

# Immune to a cell rebinding builtins (research §2.11, "a real bug this found").
_len, _isinstance, _str, _type = len, isinstance, str, type

INPUT_NOT_ALLOWED = (
    "input() is not available here: llmrepl runs this cell without a terminal to ask you. "
    "Put the value in the code instead."
)


class OutputSink(Protocol):
    """Receives a cell's output live; ``stream`` is ``"stdout"`` or ``"stderr"``."""

    def write(self, stream: str, text: str) -> None: ...


class CappedBuffer:
    """Keeps the first ~80 % and the last ~20 % of ``limit`` characters and counts the rest.

    Never copies the middle of a huge string, so memory stays flat whatever is written.
    """

    __slots__ = ("head_cap", "tail_cap", "_head", "_head_len", "_tail", "_tail_len", "total")

    def __init__(self, limit: int) -> None:
        limit = max(int(limit), 0)
        self.tail_cap = limit // 5
        self.head_cap = limit - self.tail_cap
        self._head: list[str] = []
        self._head_len = 0
        self._tail: deque[str] = deque()
        self._tail_len = 0
        self.total = 0

    def add(self, s: str) -> None:
        n = _len(s)
        self.total += n
        start = 0
        room = self.head_cap - self._head_len
        if room > 0:
            if n <= room:
                self._head.append(s)
                self._head_len += n
                return
            self._head.append(s[:room])
            self._head_len = self.head_cap
            start = room
        rest = n - start
        if rest >= self.tail_cap:
            self._tail.clear()
            self._tail_len = self.tail_cap
            if self.tail_cap:
                self._tail.append(s[n - self.tail_cap :])
        elif rest > 0:
            self._tail.append(s[start:] if start else s)
            self._tail_len += rest
            tail = self._tail
            while self._tail_len - _len(tail[0]) >= self.tail_cap:
                self._tail_len -= _len(tail.popleft())

    @property
    def omitted(self) -> int:
        """Characters written but not kept."""
        return self.total - self._head_len - min(self._tail_len, self.tail_cap)

    def getvalue(self) -> str:
        """Head, then a marker line saying how much was left out (if anything), then tail."""
        head = "".join(self._head)
        tail = "".join(self._tail)
        if _len(tail) > self.tail_cap:
            tail = tail[_len(tail) - self.tail_cap :]
        omitted = self.total - _len(head) - _len(tail)
        if omitted <= 0:
            return head + tail
        sep = "" if not head or head.endswith("\n") else "\n"
        return f"{head}{sep}[... {omitted:,} characters omitted ...]\n{tail}"


class Capture:
    """One cell's output: stdout, stderr and both interleaved, each bounded; live echo to a sink.

    The buffers are made on the first write: most cells print nothing, and a cell that does
    not should cost nothing here (see :meth:`values`).
    """

    __slots__ = ("limit", "_stdout", "_stderr", "_output", "sink", "sink_error", "_lock")

    def __init__(self, limit: int, sink: OutputSink | None, lock: threading.Lock | None = None) -> None:
        self.limit = limit
        self._stdout: CappedBuffer | None = None
        self._stderr: CappedBuffer | None = None
        self._output: CappedBuffer | None = None
        self.sink = sink
        self.sink_error: str | None = None
        # one cell's capture at a time: an executor passes one lock for all its cells (no new one per cell)
        self._lock = threading.Lock() if lock is None else lock

    def write(self, stream: str, text: str, echo: bool = True) -> None:
        with self._lock:
            if stream == "stdout":
                buf = self._stdout
                if buf is None:
                    buf = self._stdout = CappedBuffer(self.limit)
            else:
                buf = self._stderr
                if buf is None:
                    buf = self._stderr = CappedBuffer(self.limit)
            buf.add(text)
            out = self._output
            if out is None:
                out = self._output = CappedBuffer(self.limit)
            out.add(text)
        sink = self.sink
        if echo and sink is not None:
            try:
                sink.write(stream, text)
            except Exception as exc:  # a broken terminal must not break the user's print()
                self.sink = None
                self.sink_error = f"live output stopped ({_type(exc).__name__}); the rest was captured"

    def _buffer(self, name: str) -> CappedBuffer:
        with self._lock:
            buf: CappedBuffer | None = getattr(self, name)
            if buf is None:
                buf = CappedBuffer(self.limit)
                setattr(self, name, buf)
            return buf

    @property
    def stdout(self) -> CappedBuffer:
        return self._stdout if self._stdout is not None else self._buffer("_stdout")

    @property
    def stderr(self) -> CappedBuffer:
        return self._stderr if self._stderr is not None else self._buffer("_stderr")

    @property
    def output(self) -> CappedBuffer:
        return self._output if self._output is not None else self._buffer("_output")

    def values(self) -> tuple[str, str, str]:
        """``(stdout, stderr, output)`` as text; ``""`` for a stream nothing was written to."""
        if self._output is None:
            return "", "", ""
        out, err = self._stdout, self._stderr
        return (
            "" if out is None else out.getvalue(),
            "" if err is None else err.getvalue(),
            self._output.getvalue(),
        )

    @property
    def written(self) -> bool:
        """Whether anything was written (else :meth:`values` is three empty strings)."""
        return self._output is not None

    @property
    def chars(self) -> int:
        out, err = self._stdout, self._stderr
        return (0 if out is None else out.total) + (0 if err is None else err.total)


class CaptureRouter:
    """Where the capture streams write: the running cell's :class:`Capture`.

    Between cells (a thread a cell started, a logging handler bound to the stream) writes
    go to the sink only, so they are still shown but never land in another cell's record.
    """

    __slots__ = ("capture", "sink", "sync")

    def __init__(self, sink: OutputSink | None = None) -> None:
        self.capture: Capture | None = None
        self.sink = sink
        # set while fds 1/2 are captured (execution/fdcapture.py): first take what they hold
        self.sync: Callable[[], None] | None = None

    def write(self, stream: str, text: str) -> None:
        sync = self.sync
        if sync is not None:
            sync()
        self.route(stream, text)

    def route(self, stream: str, text: str) -> None:
        """Into the running cell's record, or between cells to the sink alone."""
        cap = self.capture
        if cap is not None:
            cap.write(stream, text)
            return
        sink = self.sink
        if sink is not None:
            try:
                sink.write(stream, text)
            except Exception:  # nowhere left to report it
                pass


class _BufferShim:
    """``sys.stdout.buffer`` for code that writes bytes: decoded as UTF-8 with replacement."""

    def __init__(self, stream: CaptureStream) -> None:
        self._stream = stream
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if _isinstance(data, _str):
            raise TypeError("a bytes-like object is required, not 'str'")
        raw = bytes(data)
        text = self._decoder.decode(raw)
        if text:
            self._stream.write(text)
        return _len(raw)

    def flush(self) -> None:
        text = self._decoder.decode(b"", final=True)
        if text:
            self._stream.write(text)

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        raise io.UnsupportedOperation("llmrepl's captured output has no file descriptor")

    def close(self) -> None:
        pass

    @property
    def closed(self) -> bool:
        return False


class CaptureStream(io.TextIOBase):
    """``sys.stdout``/``sys.stderr`` during a cell. ``close()`` is a no-op; there is no fd."""

    encoding = "utf-8"
    errors = "strict"
    newlines = None
    line_buffering = False

    def __init__(self, router: CaptureRouter, stream: str) -> None:
        super().__init__()
        self._router = router
        self._stream = stream
        self.name = f"<{stream}>"
        self._buffer: _BufferShim | None = None

    def write(self, s: str) -> int:
        if not _isinstance(s, _str):
            raise TypeError(f"write() argument must be str, not {_type(s).__name__}")
        if s:
            self._router.write(self._stream, s)
        return _len(s)

    @property
    def buffer(self) -> _BufferShim:
        if self._buffer is None:
            self._buffer = _BufferShim(self)
        return self._buffer

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        raise io.UnsupportedOperation("llmrepl's captured output has no file descriptor")

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class StdinStub(io.TextIOBase):
    """``sys.stdin`` during a cell: reads go to ``readline_func`` (None: raise InputNotAllowed).

    ``close()`` is a no-op, so ``exit()``/``quit()`` (which close stdin) leave the real one intact.
    """

    encoding = "utf-8"
    errors = "strict"
    name = "<stdin>"

    def __init__(self, readline_func: Callable[[], str] | None = None) -> None:
        super().__init__()
        self._readline_func = readline_func

    def readable(self) -> bool:
        return True

    def readline(self, size: int | None = -1) -> str:  # type: ignore[override]
        if self._readline_func is None:
            raise InputNotAllowed(INPUT_NOT_ALLOWED)
        return self._readline_func()

    def read(self, size: int | None = -1) -> str:
        if self._readline_func is None:
            raise InputNotAllowed(INPUT_NOT_ALLOWED)
        parts: list[str] = []
        while True:
            line = self._readline_func()
            if not line:
                return "".join(parts)
            parts.append(line)

    def readlines(self, hint: int = -1) -> list[str]:  # type: ignore[override]
        return self.read().splitlines(True)

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        raise io.UnsupportedOperation("llmrepl's cell stdin has no file descriptor")

    def close(self) -> None:
        pass


def safe_str(obj: object) -> str:
    try:
        return str(obj)
    except BaseException:
        return f"<unprintable {type(obj).__name__} object>"


def _trim_frames(te: traceback.TracebackException, skip: frozenset[str], seen: set[int]) -> None:
    """Drop llmrepl's own frames from an exception and everything chained to it."""
    if id(te) in seen:
        return
    seen.add(id(te))
    te.stack = traceback.StackSummary.from_list([f for f in te.stack if f.filename not in skip])
    for sub in (te.__cause__, te.__context__, *(getattr(te, "exceptions", None) or ())):
        if sub is not None:
            _trim_frames(sub, skip, seen)


def format_exception(exc: BaseException, limit: int, skip_files: tuple[str, ...] = ()) -> str:
    """Python's traceback format without llmrepl's own frames, capped to ``limit`` chars."""
    try:
        te = traceback.TracebackException(type(exc), exc, exc.__traceback__, compact=True)
        _trim_frames(te, frozenset((__file__, *skip_files)), set())
        text = "".join(te.format())
    except Exception as fail:  # formatting must never take the REPL down
        text = f"{type(exc).__name__}: {safe_str(exc)}\n(traceback unavailable: {type(fail).__name__})\n"
    for long_name in ("llmrepl.execution.executor.CellTimeout", "llmrepl.errors.InputNotAllowed"):
        text = text.replace(long_name + ":", long_name.rsplit(".", 1)[1] + ":")
    buf = CappedBuffer(limit)
    buf.add(text)
    return buf.getvalue()


class FigureLog:
    """Where matplotlib figures go: ``figure-NNN.png`` in one folder (0700), numbered per session."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self._directory = os.fspath(directory) if directory is not None else None
        self._next = 0  # 0: not known yet; after the highest figure-NNN.png already there
        self.saved: list[str] = []
        self.enabled = True  # False while a replay re-runs cells: their figures were saved once

    @property
    def directory(self) -> str:
        if self._directory is None:
            self._directory = tempfile.mkdtemp(prefix="llmrepl-figures-")
        return self._directory

    def next_path(self) -> str:
        """A fresh ``figure-NNN.png`` path (creating the folder 0700); never overwrites a file."""
        directory = self.directory
        _private_dirs(directory)
        if not self._next:  # a resumed session's folder: numbers never repeat, even past a gap
            self._next = _highest_figure(directory) + 1
        while True:
            path = os.path.join(directory, f"figure-{self._next:03d}.png")
            self._next += 1
            if not os.path.exists(path):
                return path

    def save(self, figure: Any) -> str:
        """Save a matplotlib Figure as PNG and record its path."""
        path = self.next_path()
        figure.savefig(path, format="png")
        self.saved.append(path)
        return path

    def save_png(self, png: bytes) -> str:
        """Save PNG bytes (a rendered figure, an object's ``_repr_png_``) 0600; returns the path."""
        path = self.next_path()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(png)
        self.saved.append(path)
        return path


def _highest_figure(directory: str) -> int:
    """The highest NNN of the ``figure-NNN.png`` files in ``directory`` (0: none)."""
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    numbers = [int(n[7:-4]) for n in names
               if n.startswith("figure-") and n.endswith(".png") and n[7:-4].isdigit() and len(n) < 40]
    return max(numbers, default=0)


def _private_dirs(directory: str) -> None:
    """``directory`` and every missing folder above it, 0700: a cell may have deleted the whole
    state folder (os.makedirs would make the folders above with the umask's mode)."""
    if os.path.isdir(directory):
        return
    parent = os.path.dirname(directory)
    if parent and parent != directory:
        _private_dirs(parent)
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        pass

