"""Runs Python cells in one persistent namespace and returns a record of what happened.

Cells run in-process on the calling thread, compiled by ``cell_code`` with a trailing
expression split off to be evaluated for its value. ``run()`` never raises: exceptions, ``SystemExit``,
Ctrl-C and timeouts are stored on the :class:`ExecResult`. Global state a cell may break
is restored after every cell: builtins, std streams, hooks and the recursion limit by
``interpreter_state``, signal handlers here, timers and the terminal's fds by ``guards``; a
process the cell forked ends with the cell (``process``). See the project's research notes,
../shared/research/reliability.md §2.
"""

from __future__ import annotations

import _signal
import builtins
import os
import signal
import sys
import threading
import time
import weakref
from collections.abc import Callable
from types import FrameType
from typing import Any

from llmrepl.errors import InputNotAllowed
from llmrepl.execution import namespace as _namespace_mod
from llmrepl.execution import outputs as _outputs_mod
from llmrepl.execution import publisher as _publisher_mod
from llmrepl.execution.capture import (
    INPUT_NOT_ALLOWED,
    Capture,
    CaptureRouter,
    CaptureStream,
    FigureLog,
    OutputSink,
    StdinStub,
    format_exception,
    safe_str,
)
from llmrepl.execution.cell_code import CellCode, compile_cell, compile_error, show_in_tracebacks
from llmrepl.execution.fdcapture import FdCapture
from llmrepl.execution.guards import SignalGuard, TerminalStreams
from llmrepl.execution.interpreter_state import InterpreterState
from llmrepl.execution.magics import HELPER as _MAGIC_HELPER
from llmrepl.execution.magics import has_magic, transform
from llmrepl.execution.namespace import Quitter, is_user_name
from llmrepl.execution.outputs import Display
from llmrepl.execution.process import FORKED_INPUT, end_forked_child
from llmrepl.execution.publisher import Publisher
from llmrepl.execution.result import CellTimeout, ExecResult
from llmrepl.execution.statements import done_at as _done_at

__all__ = ["CellTimeout", "ExecResult", "Executor", "OutputSink"]

MPL_BACKEND = "module://llmrepl.execution.mpl_backend"
_MISSING = object()
# Frames left out of a cell's traceback: a cell's exception passes through them.
_HERE = os.path.dirname(__file__)
_OWN_FILES = (__file__, _namespace_mod.__file__, _outputs_mod.__file__, _publisher_mod.__file__,
              *(os.path.join(_HERE, f) for f in ("tables.py", "figures.py", "magic_commands.py")))

# Bound at import: the code that runs after a cell must not depend on anything the cell can rebind.
_BaseException = BaseException
_exec, _eval = exec, eval
_perf_counter = time.perf_counter
_modules = sys.modules
_get_ident, _getpid = threading.get_ident, os.getpid
_MAIN_IDENT = threading.main_thread().ident
# The C functions: the ``signal`` module's wrappers cost ~5 µs a call converting enums.
_setsignal, _getsignal, _setitimer = _signal.signal, _signal.getsignal, _signal.setitimer
_SIGINT, _SIGALRM, _ITIMER_REAL = int(signal.SIGINT), int(signal.SIGALRM), int(signal.ITIMER_REAL)
_default_int_handler, _SIG_DFL = signal.default_int_handler, signal.SIG_DFL
_EXIT_NOTE = "the cell ended; llmrepl keeps running — use /exit or Ctrl-D to leave"

_sigint_quiet = False  # True while an executor sets up or restores around a cell


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    """SIGINT while a cell runs, and after it (one handler for every Executor): interrupts
    the cell, or between cells whatever runs, as the default handler does; ignored only
    while the executor sets up or restores around a cell."""
    if not _sigint_quiet:
        raise KeyboardInterrupt


_executors: weakref.WeakSet[Executor] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """The fd reader thread may have held a capture's lock at the fork; it does not exist in
    the child, whose print would wait on that lock forever."""
    for executor in list(_executors):
        lock = executor._capture_lock = threading.Lock()
        cap = executor._router.capture
        if cap is not None:
            cap._lock = lock


os.register_at_fork(after_in_child=_after_fork_in_child)


class Executor:
    """A persistent namespace plus ``run(source) -> ExecResult``. Not thread-safe; one cell at a time."""

    in_process = True  # the namespace's values live here (KernelExecutor: in another process)

    def __init__(
        self,
        namespace: dict[str, Any] | None = None,
        *,
        sink: OutputSink | None = None,
        input_func: Callable[[str], str] | None = None,
        timeout: float = 0,
        figure_dir: str | os.PathLike[str] | None = None,
        max_capture_chars: int = 200_000,
        terminal: TerminalStreams | None = None,
    ) -> None:
        self._router = CaptureRouter(sink)
        self._capture_lock = threading.Lock()
        _executors.add(self)
        self._stdout = CaptureStream(self._router, "stdout")
        self._stderr = CaptureStream(self._router, "stderr")
        self._stdin = StdinStub(self._stdin_readline)
        self._streams = (self._stdout, self._stderr, self._stdin)
        self.input_func = input_func
        self.timeout = timeout
        self.max_capture_chars = max_capture_chars
        self.terminal = terminal  # llmrepl's own fds 0/1/2: put back after every cell
        self._fds: FdCapture | None = None  # fds 1/2 read into the cell's output: capture_fds()
        self.cell_count = 0
        self._cell_pid = _getpid()
        self._figures = FigureLog(figure_dir)
        self._figure_dir = figure_dir
        self._publisher = Publisher(self._figures, self._router, max_capture_chars)
        self._display = Display(self._publisher)
        self._exit, self._quit = Quitter("exit"), Quitter("quit")
        self.namespace: dict[str, Any] = {} if namespace is None else namespace
        self._prepare_namespace()
        self._armed = False
        self._timeout_fired = False
        self._timeout_msg = ""
        # Bound once so identity checks against signal.getsignal() work.
        self._alarm_handler = self._on_alarm
        self._publisher.cell_alarm = self._alarm_handler
        self._input_bound = self._input
        self._getpass_bound = self._getpass
        self._mpl_checked = False
        self._magics: Any = None  # magic_commands.Magics, made for the first cell with a magic
        self._mpl_env_prev: str | None | object = _MISSING
        if "matplotlib" not in sys.modules and os.environ.get("MPLBACKEND") != MPL_BACKEND:
            self._mpl_env_prev = os.environ.get("MPLBACKEND")
            os.environ["MPLBACKEND"] = MPL_BACKEND

    # -- public API ---------------------------------------------------------------------

    @property
    def sink(self) -> OutputSink | None:
        """Receives output live while a cell runs (and late output from its threads afterwards)."""
        return self._router.sink

    @sink.setter
    def sink(self, sink: OutputSink | None) -> None:
        self._router.sink = sink

    @property
    def display_width(self) -> int | None:
        """The screen's columns, for tables' ``screen`` text (None: the model's width only)."""
        return self._publisher.width

    @display_width.setter
    def display_width(self, width: int | None) -> None:
        self._publisher.width = width

    @property
    def save_figures(self) -> bool:
        """Whether images a cell shows are saved as figure files (off while a replay runs)."""
        return self._figures.enabled

    @save_figures.setter
    def save_figures(self, on: bool) -> None:
        self._figures.enabled = on

    @property
    def running(self) -> bool:
        """True while a cell runs (output then belongs to that cell's record)."""
        return self._router.capture is not None

    def install_streams(self) -> None:
        """Make the capture streams ``sys.stdout``/``sys.stderr`` for the whole session.

        Output from threads a cell left running then reaches the sink (shown above the
        prompt, journaled) instead of the raw terminal; cells restore to these streams.
        Call once, in the front end, after taking references to the real streams.
        """
        sys.stdout, sys.stderr = self._stdout, self._stderr

    def capture_fds(self, on: bool = True) -> None:
        """Capture what reaches fds 1 and 2 (programs a cell starts, C code, ``os.write``) as
        the cell's stdout/stderr, in order with ``print``; off (``on=False``) puts the real
        fds back and shows what was still on its way. See ``fdcapture``. For the front end,
        with ``install_streams``; the process has one fd 1, so one executor at a time."""
        if on and self._fds is None:
            self._fds = FdCapture(self._router, self.terminal)
            self._fds.start()
        elif not on and self._fds is not None:
            fds, self._fds = self._fds, None
            fds.stop()

    def reset(self) -> None:
        """A fresh namespace; settings stay and cell numbering continues."""
        self.namespace = {}
        self._prepare_namespace()

    def user_variables(self) -> dict[str, Any]:
        """The names the user's code made (the rule is ``namespace.is_user_name``)."""
        return {name: value for name, value in self.namespace.items() if is_user_name(name, value)}

    def run(self, source: str, *, timeout: float | None = None) -> ExecResult:
        """Compile and run one cell. Never raises; everything is on the returned record."""
        start = _perf_counter()
        self._cell_pid = pid = _getpid()
        self.cell_count += 1
        n = self.cell_count
        result = ExecResult(n, source)
        filename = f"<cell-{n}>"
        show_in_tracebacks(source, filename)
        try:
            code = compile_cell(self._python(source), filename)
        except BaseException as exc:  # SyntaxError, ValueError (NUL bytes), RecursionError, ...
            result.error_type, result.error = compile_error(exc)
            result.interrupted = isinstance(exc, KeyboardInterrupt)
            result.done = 0
        else:
            if not self._mpl_checked:
                self._check_matplotlib()
            limit = self.timeout if timeout is None else timeout
            self._execute(code, result, limit or 0)
            if _getpid() != pid:  # the cell forked, and this is the child: it ends here
                end_forked_child(result, self._router, self.terminal)
            if self._mpl_env_prev is not _MISSING and "matplotlib" in _modules:
                self._restore_mpl_env()
        result.duration = _perf_counter() - start
        return result

    # -- internals ----------------------------------------------------------------------

    def _python(self, source: str) -> str:
        """The cell as plain Python: magic lines (``%time``, ``!ls``, ``obj?``) become calls to
        the hidden helper, line for line (``magics``); a cell without ``%``, ``!`` or ``?``
        costs three substring tests. Raises MagicError for a magic llmrepl does not have."""
        if not has_magic(source):
            return source
        code = transform(source)
        if code is not source:
            if self._magics is None:
                from llmrepl.execution.magic_commands import Magics

                self._magics = Magics()
            self.namespace[_MAGIC_HELPER] = self._magics
        return code

    def _prepare_namespace(self) -> None:
        ns = self.namespace
        ns.setdefault("__name__", "__main__")
        ns.setdefault("__doc__", None)
        ns["__builtins__"] = builtins
        ns.setdefault("exit", self._exit)
        ns.setdefault("quit", self._quit)
        ns.setdefault("display", self._display)

    def _execute(self, code: CellCode, result: ExecResult, limit: float) -> None:
        global _sigint_quiet
        main = _get_ident() == _MAIN_IDENT
        if main:
            _sigint_quiet = True  # until the cell's code starts: our setup is not interrupted
        timed = main and limit > 0
        ns, repairs = self.namespace, result.repairs
        ns["__builtins__"] = builtins  # a cell may have deleted or replaced it
        router = self._router
        cap = router.capture = Capture(self.max_capture_chars, router.sink, self._capture_lock)
        publisher = self._publisher
        if _publisher_mod._active is not publisher:
            _publisher_mod.set_active_publisher(publisher)
        self._timeout_fired = False
        exc: BaseException | None = None
        ran_all = False
        old_handlers: tuple[Any, Any] = (None, None)
        state = InterpreterState(self._streams, self._input_bound, self._getpass_bound)
        signals = SignalGuard(own_alarm=timed) if main else None
        try:
            if main:
                old_handlers = self._install_handlers(limit)
            self._armed = True
            if main:
                _sigint_quiet = False
            if timed:
                # Re-fires, so a cell that swallows one CellTimeout is stopped by the next.
                _setitimer(_ITIMER_REAL, limit, min(limit, 1.0))
            _exec(code.body, ns)
            expr = code.expr
            if expr is not None:
                value = _eval(expr, ns)
                ran_all = True  # what fails from here on (the value's repr) is after every statement
                if value is not None:
                    ns["_"] = ns[f"_{result.cell}"] = value
                    # Off the main thread no timer can stop a repr; a timed cell's timer already does.
                    data = result.value_data = publisher.value(value, main and not timed)
                    result.value_repr = data.text
        except _BaseException as e:
            self._armed = False
            if main:
                _sigint_quiet = True
            exc = e
        finally:
            self._armed = False
            if main:
                _sigint_quiet = True
            if timed:
                _setitimer(_ITIMER_REAL, 0)
            state.restore(repairs)
            if self._fds is not None:  # nothing the cell wrote to fds 1/2 arrives after this
                self._fds.drain()
            router.capture = None
            if signals is not None:
                self._restore_handlers(*old_handlers, timed, repairs)
                signals.restore(repairs)
            if self.terminal is not None:
                self.terminal.repair(repairs)
            if main:
                _sigint_quiet = False
        if cap.written:
            result.stdout, result.stderr, result.output = cap.values()
            result.output_chars = cap.chars
        if "matplotlib" in _modules:  # Jupyter's inline backend: the cell's figures are drawn and closed
            publisher.end_cell(result, cap)
        items = publisher.take_items()  # the next cell starts empty
        if items is not None:
            result.displays = items
            result.figures = [i.metadata["filename"] for i in items if "filename" in i.metadata]
        result.timed_out = self._timeout_fired
        if cap.sink_error:
            repairs.append(cap.sink_error)
        result.done = code.count
        if exc is not None:
            self._record_exception(exc, result)
            if not ran_all:  # (the statements parsed only now if the compile did not keep them)
                result.done = _done_at(exc, code.body, code.expr, code.statements())

    def _install_handlers(self, limit: float) -> tuple[Any, Any]:
        """Ours for SIGINT, and for SIGALRM when the cell has a time ``limit``; returns the ones replaced."""
        old_int = _getsignal(_SIGINT)
        if old_int is _on_sigint:  # left by an earlier cell, in place of the default
            old_int = _default_int_handler
        else:
            _setsignal(_SIGINT, _on_sigint)
        old_alarm = None
        if limit > 0:
            self._timeout_msg = (
                f"the cell ran longer than {limit:g} s and was stopped (the namespace is "
                "intact; raise --timeout or exec.timeout to allow more)"
            )
            old_alarm = _setsignal(_SIGALRM, self._alarm_handler)
        return old_int, old_alarm

    def _restore_handlers(self, old_int: Any, old_alarm: Any, timed: bool, repairs: list[str]) -> None:
        """Put back the handlers ``_install_handlers`` replaced, noting any the cell changed."""
        # Where ours replaced the default handler it stays: between cells it acts as the
        # default does (KeyboardInterrupt), and the next cell needs no system call.
        keep = old_int is _default_int_handler
        if _getsignal(_SIGINT) is not _on_sigint:
            repairs.append("SIGINT handler was changed; restored")
            _setsignal(_SIGINT, _on_sigint if keep else _default_int_handler if old_int is None else old_int)
        elif not keep:
            _setsignal(_SIGINT, _default_int_handler if old_int is None else old_int)
        # signal.signal() returns the handler it replaced: ours, unless the cell changed it
        alarm = _SIG_DFL if old_alarm is None else old_alarm
        if timed and _setsignal(_SIGALRM, alarm) is not self._alarm_handler:
            repairs.append("SIGALRM handler was changed; restored")

    def _record_exception(self, exc: BaseException, result: ExecResult) -> None:
        result.error_type = type(exc).__name__
        if isinstance(exc, SystemExit):
            result.exit_code = exc.code
            code = "" if exc.code is None else f": {safe_str(exc.code)}"
            result.error = f"SystemExit{code} ({_EXIT_NOTE})\n"
            return
        if isinstance(exc, CellTimeout):
            result.timed_out = True
        elif isinstance(exc, KeyboardInterrupt):
            result.interrupted = True
        result.error = format_exception(exc, self.max_capture_chars, skip_files=_OWN_FILES)

    def _check_matplotlib(self) -> None:
        """If matplotlib was imported before us, switch it to the non-blocking backend once."""
        self._mpl_checked = True
        mpl = sys.modules.get("matplotlib")
        if mpl is None:
            return
        try:
            if mpl.rcParams._get_backend_or_none() != MPL_BACKEND:
                mpl.use(MPL_BACKEND)
        except Exception:  # an unusual matplotlib; plt.show() may then block or warn
            pass

    def _restore_mpl_env(self) -> None:
        """matplotlib read MPLBACKEND at import; stop it leaking into child processes."""
        prev, self._mpl_env_prev = self._mpl_env_prev, _MISSING
        if os.environ.get("MPLBACKEND") == MPL_BACKEND:
            if isinstance(prev, str):
                os.environ["MPLBACKEND"] = prev
            else:
                os.environ.pop("MPLBACKEND", None)

    # -- hooks active while a cell runs -------------------------------------------------

    def _on_alarm(self, signum: int, frame: FrameType | None) -> None:
        if self._armed:
            self._timeout_fired = True
            raise CellTimeout(self._timeout_msg)

    def _record_input(self, text: str, echo: bool) -> None:
        sync = self._router.sync  # a child's output before the question comes first
        if sync is not None:
            sync()
        cap = self._router.capture
        if cap is not None:
            cap.write("stdout", text, echo=echo)

    def _asker(self) -> Callable[[str], str]:
        """Who answers input() now: ``input_func``; nobody in a process the cell forked."""
        if _getpid() != self._cell_pid:
            raise InputNotAllowed(FORKED_INPUT)
        func = self.input_func
        if func is None:
            raise InputNotAllowed(INPUT_NOT_ALLOWED)
        return func

    def _input(self, prompt: object = "") -> str:
        """``input()`` during a cell: asks ``input_func``, or refuses when nobody can answer."""
        text = safe_str(prompt)
        try:
            func = self._asker()
        except InputNotAllowed:
            if text:
                self._record_input(text, echo=True)
            raise
        answer = func(text)  # EOFError propagates into the cell, as with a real input()
        # The front end showed the prompt and the typing; the transcript still needs both.
        self._record_input(f"{text}{answer}\n", echo=False)
        return answer

    def _getpass(self, prompt: str = "Password: ", stream: object = None) -> str:
        """``getpass.getpass()`` during a cell: like input(), but the answer is never recorded."""
        answer = self._asker()(prompt)
        self._record_input(f"{prompt}\n", echo=False)
        return answer

    def _stdin_readline(self) -> str:
        func = self._asker()
        try:
            line = func("")
        except EOFError:
            return ""
        self._record_input(f"{line}\n", echo=False)
        return line + "\n"
