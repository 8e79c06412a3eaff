"""What reaches fds 1 and 2 while llmrepl runs becomes cell output.

``print`` goes through the capture streams, but ``subprocess.run(["ls"])``, ``os.system``,
a C extension's ``printf`` and ``os.write(1, ...)`` write to the file descriptors. As
ipykernel's ``OutStream`` does (``iostream.py``, ``watchfd``), fds 1 and 2 become the write
ends of two pipes for the whole session, and a reader thread turns what arrives into text
for the :class:`~llmrepl.execution.capture.CaptureRouter`: the running cell's record (shown
live through the sink, which sanitizes and redacts it, fed back, journaled) or, between
cells, the sink's late path (a child process the cell left running).

Unlike ipykernel's, nothing a cell wrote arrives after its record closes: the executor calls
:meth:`FdCapture.drain` at the end of each cell (C stdio buffers flushed, the pipes read to
empty), and every write through the router first takes what the pipes hold
(:meth:`FdCapture.sync`, one ``poll`` call), so ``print("a"); os.system("echo b");
print("c")`` reads a, b, c. llmrepl's own terminal writes use the private copies
:class:`~llmrepl.execution.guards.TerminalStreams` keeps, and its repair after each cell puts
these pipes back on fds 1/2 (and makes them again if a cell closed them).

Limits, as in Jupyter: programs a cell starts see a pipe, not a terminal, on fds 1/2
(``ls`` prints one column, no colour; full-screen programs such as ``vim`` are not
supported). A C extension that writes more than the pipe holds (1 MiB where Linux allows)
while holding the GIL would wait for the reader forever.
"""

from __future__ import annotations

import codecs
import os
import select
import sys
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from llmrepl.execution.guards import PRIVATE_FLOOR, fd_ident

if TYPE_CHECKING:
    from llmrepl.execution.capture import CaptureRouter
    from llmrepl.execution.guards import TerminalStreams

__all__ = ["FdCapture"]

_CHUNK = 1 << 16
_PIPE_SIZE = 1 << 20  # asked for; Linux's default limit for an unprivileged process
_POLLIN = select.POLLIN
# Bound at import: these run after a cell, which may have rebound anything.
_read, _dup2, _close, _fstat = os.read, os.dup2, os.close, os.fstat
_STREAMS = ((1, "stdout"), (2, "stderr"))


def _private(fd: int) -> int:
    """Move ``fd`` to a close-on-exec number at or above ``PRIVATE_FLOOR``: never a std slot (a
    pipe made while fd 0 is closed would land there), and out of the way of a cell's
    ``os.dup2(1, 9)``, which would otherwise replace the pipe's read end with its write end."""
    import fcntl

    if fd >= PRIVATE_FLOOR:
        return fd
    moved = int(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, PRIVATE_FLOOR))
    _close(fd)
    return moved


def _close_if(fd: int, ident: tuple[int, int] | None) -> None:
    """Close ``fd`` only if it is still what we opened (a cell may have closed it, and the
    number may now be someone else's file)."""
    if fd >= 0 and ident is not None and fd_ident(fd) == ident:
        try:
            _close(fd)
        except OSError:
            pass


class _Pipe:
    """One captured fd: the pipe whose write end is dup2'd onto it."""

    __slots__ = ("fd", "stream", "r", "w", "ident", "decoder", "broken", "partial")

    def __init__(self, fd: int, stream: str) -> None:
        import fcntl

        r, w = os.pipe()  # both close-on-exec: only fd 1/2 itself is inherited
        self.r, self.w = _private(r), _private(w)
        try:  # a bigger buffer: C code that prints while holding the GIL waits later, if ever
            fcntl.fcntl(self.w, getattr(fcntl, "F_SETPIPE_SZ", 1031), _PIPE_SIZE)
        except OSError:
            pass
        os.set_blocking(self.r, False)
        self.fd, self.stream = fd, stream
        self.ident = fd_ident(self.r)  # both ends of a pipe share its inode
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.broken = False
        self.partial = False  # the decoder holds the start of a character

    def intact(self) -> bool:
        return not self.broken and fd_ident(self.r) == self.ident and fd_ident(self.w) == self.ident


class FdCapture:
    """fds 1 and 2 as pipes read into ``router``; :meth:`start` once, :meth:`stop` at exit.

    ``terminal``: llmrepl's private copies of its terminal (what fds 1/2 go back to at
    :meth:`stop`), whose repair after each cell then puts these pipes back on fds 1/2.
    """

    def __init__(self, router: CaptureRouter, terminal: TerminalStreams | None = None) -> None:
        self._router = router
        self._terminal = terminal
        self._lock = threading.RLock()
        self._pipes: list[_Pipe] = []
        self._saved: dict[int, int] = {}  # fd -> our own copy of what it was (without a terminal)
        self._poll: Any = None  # the poll object of sync(); the reader thread has its own
        self._wake: tuple[int, int, tuple[int, int] | None] = (-1, -1, None)
        self._generation = 0
        self._thread: threading.Thread | None = None
        self._fflush: Callable[[Any], Any] | None | bool = False  # False: not looked up yet
        self.active = False
        self.forked = False  # set in a child process forked from this one: the pipes are the parent's

    # -- session ----------------------------------------------------------------------

    def start(self) -> None:
        """Put the pipes on fds 1 and 2 (a closed one is left alone) and start reading."""
        if self.active:
            return
        terminal = self._terminal
        try:
            for fd, stream in _STREAMS:
                if fd_ident(fd) is None:
                    continue
                if terminal is None or terminal.private(fd) is None:
                    import fcntl

                    self._saved[fd] = int(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, PRIVATE_FLOOR))
                self._pipes.append(_Pipe(fd, stream))
        except OSError:  # no fds to spare: cells' fd output goes where it went before
            for own in self._saved.values():
                _close(own)
            for pipe in self._pipes:
                _close(pipe.r)
                _close(pipe.w)
            self._saved, self._pipes = {}, []
            return
        for pipe in self._pipes:
            _dup2(pipe.w, pipe.fd)  # inheritable: the programs a cell starts write here
        self.active = True
        self._spawn()
        if terminal is not None:
            for pipe in self._pipes:
                terminal.route(pipe.fd, pipe.w)
            terminal.attach(self.mend, self._watched())
        self._router.sync = self.sync
        _live.add(self)

    def stop(self) -> None:
        """Put the real fds 1/2 back, show what the pipes still hold (late output), stop the
        reader and close the pipes (a child still writing to one then gets a broken pipe)."""
        if not self.active or self.forked:
            return
        self._router.sync = None
        self.drain()
        terminal = self._terminal
        with self._lock:
            for pipe in self._pipes:
                own = self._saved.pop(pipe.fd, None)
                real = own if own is not None or terminal is None else terminal.private(pipe.fd)
                if real is not None and fd_ident(pipe.fd) == pipe.ident:
                    _dup2(real, pipe.fd)
                if own is not None:
                    _close_if(own, fd_ident(own))
                if terminal is not None:
                    terminal.route(pipe.fd, None)
                _close_if(pipe.w, pipe.ident)
            if terminal is not None:
                terminal.attach(None, ())
            for pipe in self._pipes:  # what arrived meanwhile; the write ends left are children's
                self._read(pipe)
            self.active = False
            self._generation += 1
        self._end_reader(join=True)
        for pipe in self._pipes:
            _close_if(pipe.r, pipe.ident)
        self._pipes = []
        _live.discard(self)

    # -- per cell -----------------------------------------------------------------------

    def sync(self) -> None:
        """Before a write through the router: route what the pipes hold now, so that output
        written to the fds before a ``print`` comes before it. One ``poll`` when empty."""
        if self.forked:
            return
        with self._lock:
            if self.active and self._poll.poll(0):
                for pipe in self._pipes:
                    if not pipe.broken:
                        self._read(pipe)

    def drain(self) -> None:
        """At the end of a cell (before its record closes): flush Python's and C's buffered
        std streams, then route everything the pipes hold, an unfinished character included."""
        if self.forked or not self.active:
            return
        terminal = self._terminal
        if terminal is not None:
            terminal.flush_std()
        else:
            for stream in (sys.__stdout__, sys.__stderr__):
                try:
                    if stream is not None:
                        stream.flush()
                except Exception:
                    pass
        flush = self._fflush
        if flush is False:
            flush = self._fflush = _c_fflush()
        if flush is not None and flush is not True:
            try:
                flush(None)  # every C FILE*: a C extension's printf is block-buffered on a pipe
            except Exception:
                pass
        thread = self._thread
        if thread is not None and not thread.is_alive():  # a cell closed its wake pipe
            try:
                self._restart()
            except OSError:  # no fds left: sync and drain still read, during cells
                pass
        with self._lock:
            if self._poll.poll(0):  # one system call when the cell wrote nothing to the fds
                for pipe in self._pipes:
                    if not pipe.broken:
                        self._read(pipe)
            for pipe in self._pipes:
                if pipe.partial:  # an unfinished character: the cell's, shown as U+FFFD
                    pipe.partial = False
                    text = pipe.decoder.decode(b"", final=True)
                    if text:
                        self._router.route(pipe.stream, text)

    def mend(self, repairs: list[str]) -> None:
        """After a cell (from the terminal's repair): make again a pipe the cell closed."""
        if self.forked or not self.active:
            return
        try:
            self._mend(repairs)
        except OSError as exc:  # no fds left (EMFILE): fds 1/2 keep what they have
            repairs.append(f"llmrepl's capture of fds 1/2 could not be made again ({exc.strerror})")

    def _mend(self, repairs: list[str]) -> None:
        broken = [pipe for pipe in self._pipes if not pipe.intact()]
        thread = self._thread
        if not broken and thread is not None and thread.is_alive():
            return
        with self._lock:
            for old in broken:
                new = _Pipe(old.fd, old.stream)
                if old.ident is not None and fd_ident(old.fd) == old.ident:
                    _dup2(new.w, old.fd)  # fd 1/2 is on the broken pipe: move it quietly
                _close_if(old.r, old.ident)
                _close_if(old.w, old.ident)
                self._pipes[self._pipes.index(old)] = new
                if self._terminal is not None:
                    self._terminal.route(new.fd, new.w)
                repairs.append(f"llmrepl's capture of fd {old.fd} ({old.stream}) was closed; made again")
        self._restart()

    def _restart(self) -> None:
        """A new reader (for new pipes, or because the last one ended)."""
        with self._lock:
            self._generation += 1
        self._end_reader(join=False)
        self._spawn()
        if self._terminal is not None:
            self._terminal.attach(self.mend, self._watched())

    # -- internals ----------------------------------------------------------------------

    def _watched(self) -> tuple[tuple[int, tuple[int, int] | None], ...]:
        pipes = tuple((fd, pipe.ident) for pipe in self._pipes for fd in (pipe.r, pipe.w))
        return (*pipes, (self._wake[0], self._wake[2]))  # the reader's own, watched too

    def _read(self, pipe: _Pipe) -> None:
        """Route what ``pipe`` holds, up to one pipe's worth (a child that never stops writing
        cannot hold this here). Called with the lock held."""
        if fd_ident(pipe.r) != pipe.ident:  # closed by a cell, its number maybe reused
            pipe.broken = True
            return
        route, total = self._router.route, 0
        while total <= _PIPE_SIZE:
            try:
                data = _read(pipe.r, _CHUNK)
            except BlockingIOError:
                break
            except OSError:
                pipe.broken = True
                break
            if not data:  # every write end closed (a cell closed fd 1 and our copy)
                pipe.broken = True
                break
            total += len(data)
            text = pipe.decoder.decode(data)
            pipe.partial = data[-1] >= 0x80 and bool(pipe.decoder.getstate()[0])
            if text:
                route(pipe.stream, text)
            if len(data) < _CHUNK:  # the pipe was empty after this read
                break

    def _spawn(self) -> None:
        """A reader thread for the current pipes (generation), woken to end by its own pipe."""
        wake_r, wake_w = os.pipe()
        wake_r, wake_w = _private(wake_r), _private(wake_w)
        self._wake = (wake_r, wake_w, fd_ident(wake_r))
        poller = select.poll()
        for pipe in self._pipes:
            poller.register(pipe.r, _POLLIN)
        self._poll = poller
        thread = threading.Thread(target=self._pump, args=(self._generation, list(self._pipes), self._wake),
                                  name="llmrepl-fd-capture", daemon=True)
        self._thread = thread
        thread.start()

    def _end_reader(self, *, join: bool) -> None:
        """Wake the reader (closing its wake pipe's write end); it sees a new generation and ends."""
        wake_r, wake_w, ident = self._wake
        _close_if(wake_w, ident)
        thread = self._thread
        if join and thread is not None:
            thread.join(1.0)

    def _pump(self, generation: int, pipes: list[_Pipe], wake: tuple[int, int, tuple[int, int] | None]) -> None:
        poller = select.poll()
        by_fd = {pipe.r: pipe for pipe in pipes}
        for fd in by_fd:
            poller.register(fd, _POLLIN)
        poller.register(wake[0], _POLLIN)
        try:
            while True:
                events = poller.poll()
                with self._lock:
                    if generation != self._generation or self.forked:
                        return
                    for fd, _ in events:
                        pipe = by_fd.get(fd)
                        if pipe is None:  # the wake pipe, closed: only a new generation does that
                            return
                        if not pipe.broken:
                            self._read(pipe)
                        if pipe.broken:  # stop polling it (a hang-up would wake us forever)
                            poller.unregister(fd)
                            del by_fd[fd]
        except Exception:  # a sink that fails, an fd a cell closed under us: stop reading
            return
        finally:
            _close_if(wake[0], wake[2])


def _c_fflush() -> Callable[[Any], Any] | None:
    """libc's ``fflush``, looked up once (ctypes loads on the first cell, not at start-up)."""
    try:
        import ctypes

        fflush = ctypes.CDLL(None).fflush
        fflush.argtypes = [ctypes.c_void_p]
        return fflush
    except Exception:
        return None


_live: weakref.WeakSet[FdCapture] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # The child shares the parent's pipes: only the parent reads them. Its reader thread did
    # not survive the fork, and its lock may have been held when it happened.
    for capture in list(_live):
        capture.forked = True
        capture._lock = threading.RLock()


os.register_at_fork(after_in_child=_after_fork_in_child)
