"""What a cell must not take from llmrepl: its terminal and its timers.

Cells run in llmrepl's own process, so a cell can close or redirect fds 0/1/2, close
``sys.__stdout__``, make the terminal non-blocking, or leave an alarm armed that would end
llmrepl at the prompt a second later. :class:`TerminalStreams` keeps llmrepl's own copies of
fds 0/1/2 (close-on-exec, numbered above 2), which the display, the prompt and batch input
use, and after each cell puts back the ordinary fds and ``sys.__stdin__``/``__stdout__``/
``__stderr__``; :class:`SignalGuard` disarms timers a cell left armed and puts back the
handlers of SIGALRM and SIGPIPE. Each fix is a line of the cell's ``repairs``. Both run after
every cell, so the usual case (nothing touched) is a handful of system calls.
"""

from __future__ import annotations

import _signal
import os
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any, TextIO, cast

__all__ = ["TerminalStreams", "SignalGuard", "fd_ident", "PRIVATE_FLOOR"]

# Bound at import: this runs after a cell, which may have rebound anything.
_fstat, _dup2, _get_blocking, _set_blocking = os.fstat, os.dup2, os.get_blocking, os.set_blocking
_getsignal, _setsignal = _signal.getsignal, _signal.signal
_getitimer, _setitimer = _signal.getitimer, _signal.setitimer
_sys = sys
_NAMES = ("stdin", "stdout", "stderr")
_MODES = ("r", "w", "w")
_SIGALRM, _SIGPIPE = int(signal.SIGALRM), int(signal.SIGPIPE)
_ITIMER_REAL = int(signal.ITIMER_REAL)
# CPU timers: their signals' default action ends the process
_ITIMER_VIRTUAL, _ITIMER_PROF = int(signal.ITIMER_VIRTUAL), int(signal.ITIMER_PROF)
_SIGVTALRM, _SIGPROF = int(signal.SIGVTALRM), int(signal.SIGPROF)
_SIG_DFL = signal.SIG_DFL


def fd_ident(fd: int) -> tuple[int, int] | None:
    """What ``fd`` is open on (device, inode), or None when it is closed."""
    try:
        st = _fstat(fd)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def _private_floor() -> int:
    """The lowest number for llmrepl's private fds: high enough that a cell's ``os.dup2(x, 9)``
    or a library's next ``open()`` never lands on one (half the open-file limit, at most 512)."""
    import resource

    try:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (OSError, ValueError):
        return 3
    if soft == resource.RLIM_INFINITY:
        return 512
    return max(3, min(512, soft // 2))


PRIVATE_FLOOR = _private_floor()


def _dup_private(fd: int) -> int | None:
    """A close-on-exec copy of ``fd`` numbered 3 or more (never in a std slot); None if closed."""
    import fcntl

    try:
        return int(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, PRIVATE_FLOOR))
    except OSError:
        return None


class _Slot:
    """One of fds 0/1/2: llmrepl's private copy, and what the cell-visible fd is put back to:
    the same file, or ``/dev/null`` for batch stdin (``devnull``)."""

    __slots__ = ("fd", "name", "private", "private_id", "source_id", "devnull", "tty", "lost", "route")

    def __init__(self, fd: int, private: int, *, devnull: bool) -> None:
        self.fd, self.name = fd, _NAMES[fd]
        self.private, self.private_id = private, fd_ident(private)
        self.devnull, self.lost = devnull, False
        self.route: int | None = None  # put back from this fd instead (the output capture's pipe)
        if devnull:
            self.put_back()
        self.source_id = fd_ident(fd) if devnull else self.private_id
        try:
            self.tty: str | None = os.ttyname(private) if os.isatty(private) else None
        except OSError:
            self.tty = None

    def put_back(self) -> bool:
        """Make the cell-visible fd what it was; False when there is nothing to make it from."""
        if self.devnull:
            null = os.open(os.devnull, os.O_RDONLY)
            if null != self.fd:  # the lowest free number: fd 0 itself, if the cell closed it
                _dup2(null, self.fd)
                os.close(null)
            return True
        if self.route is not None:
            _dup2(self.route, self.fd)
            return True
        if self.lost:
            return False
        _dup2(self.private, self.fd)  # inheritable, as a std fd is
        return True


class TerminalStreams:
    """llmrepl's own terminal: text streams on private copies of fds 0/1/2.

    ``batch_input``: llmrepl reads its input lines from stdin (batch mode), so fd 0 becomes
    ``/dev/null`` for cells and the programs they start; a cell that reads or closes stdin
    then gets end-of-file instead of llmrepl's next lines. :meth:`repair` runs after each cell.
    While the output capture (``fdcapture.FdCapture``) owns fds 1/2, :meth:`route` makes the
    repair put its pipes back there, and :meth:`attach` lets it mend them first.
    """

    def __init__(self, *, batch_input: bool = False) -> None:
        self._slots: list[_Slot] = []
        self._std: list[Any] = [_sys.__stdin__, _sys.__stdout__, _sys.__stderr__]
        self.stdin: TextIO | None = None
        self.stdout: TextIO | None = None
        self.stderr: TextIO | None = None
        for fd in range(3):
            private = _dup_private(fd)
            if private is None:  # closed when llmrepl started: nothing to keep or put back
                continue
            self._slots.append(_Slot(fd, private, devnull=fd == 0 and batch_input))
            setattr(self, _NAMES[fd], self._open(fd, private))
        self._watch: tuple[tuple[int, tuple[int, int] | None], ...] = ()
        self._extra: tuple[tuple[int, tuple[int, int] | None], ...] = ()
        self._mend: Callable[[list[str]], None] | None = None
        self._rewatch()

    def _rewatch(self) -> None:
        """What the fast check after each cell compares: each fd and what it must be open on."""
        self._watch = tuple((s.private, s.private_id) for s in self._slots if not s.lost) + tuple(
            (s.fd, s.source_id) for s in self._slots) + self._extra

    def private(self, fd: int) -> int | None:
        """llmrepl's own copy of fd 0/1/2 (None when there is none, or it was lost)."""
        for slot in self._slots:
            if slot.fd == fd and not slot.lost:
                return slot.private
        return None

    def route(self, fd: int, source: int | None) -> None:
        """From now on, put ``fd`` back as a copy of ``source`` (an fd llmrepl owns: the
        output capture's pipe); None: as llmrepl's copy of the terminal again."""
        for slot in self._slots:
            if slot.fd == fd and not slot.devnull:
                slot.route = source
                slot.source_id = slot.private_id if source is None else fd_ident(source)
        self._rewatch()

    def attach(self, mend: Callable[[list[str]], None] | None,
               watched: tuple[tuple[int, tuple[int, int] | None], ...]) -> None:
        """``watched``: more fds the check after each cell compares (fd, what it is open on);
        when one differs, ``mend`` runs before fds 0/1/2 are put back (None: detach)."""
        self._mend, self._extra = mend, watched
        self._rewatch()

    def _open(self, fd: int, private: int) -> TextIO:
        std = self._std[fd]
        encoding = getattr(std, "encoding", None) or "utf-8"
        if fd == 0 and _is_ascii(encoding):
            encoding = "utf-8"  # a C locale: Python's own UTF-8 mode reads UTF-8 there too
        # errors="replace": bytes that are not text in this encoding (a strict locale, a
        # binary paste) become U+FFFD, never a traceback and never raw bytes on the screen
        return cast(TextIO, open(private, _MODES[fd], encoding=encoding, errors="replace", closefd=True))

    def lines(self) -> Iterator[str]:
        """Batch input, a line at a time, until end of input (or until a cell took it away)."""
        stream = self.stdin
        while stream is not None:
            try:
                line = stream.readline()
            except (OSError, ValueError):  # every copy closed by a cell: the repair said so
                return
            if not line:
                return
            yield line

    def repair(self, repairs: list[str]) -> None:
        """Put back fds 0/1/2, llmrepl's copies of them and ``sys.__std*__`` as they were at start."""
        for fd, want in self._watch:  # the usual case: six fstat calls and nothing to do
            try:
                st = _fstat(fd)
            except OSError:
                self._repair_fds(repairs)
                break
            if (st.st_dev, st.st_ino) != want:
                self._repair_fds(repairs)
                break
        blocking = []
        for slot in self._slots:
            try:
                if not slot.lost and not _get_blocking(slot.private):
                    _set_blocking(slot.private, True)
                    blocking.append(slot.name)
            except OSError:
                pass
            try:  # fd 1/2 itself: the output capture's pipe, shared with every program a cell
                if slot.fd != 0 and not _get_blocking(slot.fd):  # starts ("head: Resource
                    _set_blocking(slot.fd, True)  # temporarily unavailable" in a later cell)
                    if slot.name not in blocking:
                        blocking.append(slot.name)
            except OSError:
                pass
        if blocking:
            repairs.append(f"{'/'.join(blocking)} was left non-blocking; made blocking again")
        std, sys_ = self._std, _sys
        try:
            intact = (sys_.__stdin__ is std[0] and sys_.__stdout__ is std[1] and sys_.__stderr__ is std[2]
                      and not (std[0] is not None and std[0].closed) and not (std[1] is not None and std[1].closed)
                      and not (std[2] is not None and std[2].closed))
        except Exception:  # detached
            intact = False
        if not intact:
            self._repair_std(repairs)
        self.flush_std()

    def flush_std(self) -> None:
        """What a cell wrote to ``sys.__stdout__``/``__stderr__`` comes out now, in order."""
        for stream in (self._std[1], self._std[2]):
            try:
                if stream is not None:
                    stream.flush()
            except Exception:
                pass

    def _repair_fds(self, repairs: list[str]) -> None:
        slots = self._slots
        for slot in slots:
            if not slot.lost and fd_ident(slot.private) != slot.private_id:
                self._recover(slot, repairs)
        if self._mend is not None:  # the output capture's pipes, before they are put back
            self._mend(repairs)
        for slot in slots:
            now = fd_ident(slot.fd)
            if now != slot.source_id and slot.put_back():
                how = "closed" if now is None else "redirected"
                repairs.append(f"fd {slot.fd} ({slot.name}) was {how}; restored")
        self._rewatch()

    def _recover(self, slot: _Slot, repairs: list[str]) -> None:
        """The cell closed (or reused the number of) llmrepl's own copy: make it again, at the
        same number, from whatever still refers to the same terminal or pipe."""
        want = slot.private_id
        for fd in (slot.fd, *(s.private for s in self._slots), *(s.fd for s in self._slots)):
            if fd != slot.private and fd_ident(fd) == want:
                _dup2(fd, slot.private, inheritable=False)
                repairs.append(f"llmrepl's own copy of {slot.name} was closed; restored")
                return
        if slot.tty is not None:
            try:
                fd = os.open(slot.tty, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
                try:
                    if fd_ident(fd) == want:
                        _dup2(fd, slot.private, inheritable=False)
                        repairs.append(f"llmrepl's own copy of {slot.name} was closed; reopened the terminal")
                        return
                finally:
                    os.close(fd)
            except OSError:
                pass
        slot.lost = True
        what = "input lines" if slot.fd == 0 else "output"
        message = f"the cell closed every copy of {slot.name}: llmrepl's {what} from now on is lost"
        repairs.append(message)
        # The repairs are shown on stdout, which may be the one lost: the last place left to
        # say it (this is llmrepl's own terminal, not a cell's output)
        err = self.stderr if slot.fd != 2 else None
        try:
            if err is not None:
                err.write(f"llmrepl: {message}\n")
                err.flush()
        except (OSError, ValueError):
            pass

    def _repair_std(self, repairs: list[str]) -> None:
        """``sys.__stdin__``/``__stdout__``/``__stderr__``: the objects llmrepl started with,
        open; a closed one is opened again on its fd (as Python made it)."""
        std = self._std
        for fd in range(3):
            saved = std[fd]
            if saved is None:
                continue
            name = f"__{_NAMES[fd]}__"
            if getattr(_sys, name, None) is not saved:
                setattr(_sys, name, saved)
                repairs.append(f"sys.{name} was replaced; restored")
            try:
                closed = bool(saved.closed)
            except Exception:  # detached
                closed = True
            if not closed:
                continue
            try:
                line = bool(getattr(saved, "line_buffering", False))
                fresh = open(fd, _MODES[fd], buffering=1 if line else -1, closefd=False,
                             encoding=getattr(saved, "encoding", None), errors=getattr(saved, "errors", None))
            except (OSError, ValueError, LookupError):
                continue
            std[fd] = fresh
            setattr(_sys, name, fresh)
            plain = _NAMES[fd]
            if getattr(_sys, plain, None) is saved:  # an embedding program that never replaced it
                setattr(_sys, plain, fresh)
            repairs.append(f"sys.{name} was closed; reopened")


def _is_ascii(encoding: str) -> bool:
    import codecs

    try:
        return codecs.lookup(encoding).name == "ascii"
    except LookupError:
        return False


class SignalGuard:
    """Made as a cell starts (main thread). :meth:`restore` then disarms an alarm the cell left
    armed (ITIMER_REAL, as ``signal.alarm`` sets it) and puts back the handlers of SIGALRM and
    SIGPIPE (its default would end llmrepl at the first closed pipe); a CPU timer left armed
    with its signal's default action is disarmed too. An alarm running before the cell (the
    embedding program's, pytest-timeout's) is not the cell's and is left alone. ``own_alarm``:
    the executor's time limit owns SIGALRM and ITIMER_REAL for this cell and puts them back."""

    __slots__ = ("_alarm", "_pipe", "_armed", "_own_alarm")

    def __init__(self, own_alarm: bool = False) -> None:
        self._own_alarm = own_alarm
        self._alarm, self._pipe = _getsignal(_SIGALRM), _getsignal(_SIGPIPE)
        self._armed = own_alarm or _getitimer(_ITIMER_REAL)[0] > 0

    def restore(self, repairs: list[str]) -> None:
        # written out, no loops: this runs after every cell, and usually finds nothing
        if not self._armed and _getitimer(_ITIMER_REAL)[0] > 0:
            _setitimer(_ITIMER_REAL, 0)
            repairs.append("an alarm the cell left armed (signal.alarm or ITIMER_REAL) was disarmed")
        if not self._own_alarm and _getsignal(_SIGALRM) is not self._alarm:
            _put_back(_SIGALRM, self._alarm, repairs)
        if _getsignal(_SIGPIPE) is not self._pipe:
            _put_back(_SIGPIPE, self._pipe, repairs)
        if _getitimer(_ITIMER_VIRTUAL)[0] > 0:
            _disarm_cpu_timer(_ITIMER_VIRTUAL, _SIGVTALRM, "ITIMER_VIRTUAL", repairs)
        if _getitimer(_ITIMER_PROF)[0] > 0:
            _disarm_cpu_timer(_ITIMER_PROF, _SIGPROF, "ITIMER_PROF", repairs)


def _put_back(signum: int, old: Any, repairs: list[str]) -> None:
    if old is not None:  # None: a handler set outside Python, which cannot be put back from here
        _setsignal(signum, old)
        repairs.append(f"{signal.Signals(signum).name} handler was changed; restored")


def _disarm_cpu_timer(which: int, signum: int, name: str, repairs: list[str]) -> None:
    """Armed with its signal's default action it would end llmrepl; with a handler it is a
    profiler's, and left alone."""
    if _getsignal(signum) == _SIG_DFL:
        _setitimer(which, 0)
        repairs.append(f"a timer the cell left armed ({name}, whose signal would end llmrepl) was disarmed")
