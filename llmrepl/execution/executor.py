"""Runs Python cells in one persistent namespace and returns a record of what happened.

Cells run in-process on the calling thread. ``run()`` never raises: exceptions,
``SystemExit``, Ctrl-C and timeouts are stored on the :class:`ExecResult`. Global state a
cell may break (std streams, builtins, hooks, signal handlers, recursion limit) is
restored after every cell, builtins first. See the project's research notes, ../shared/research/reliability.md §2.
"""

from __future__ import annotations

import _signal
import ast
import builtins
import getpass
import linecache
import os
import re
import signal
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from opcode import opmap as _OP
from types import CodeType, FrameType
from typing import Any

from llmrepl.context.digest import is_user_name
from llmrepl.errors import InputNotAllowed
from llmrepl.execution import capture as _capture_mod
from llmrepl.execution.capture import (
    INPUT_NOT_ALLOWED,
    CappedBuffer,
    Capture,
    CaptureRouter,
    CaptureStream,
    FigureLog,
    OutputSink,
    StdinStub,
    format_exception,
    safe_str,
)

__all__ = ["CellTimeout", "ExecResult", "Executor", "OutputSink"]

MPL_BACKEND = "module://llmrepl.execution.mpl_backend"
_MISSING = object()

# Bound at import: the code that runs after a cell must not depend on anything the cell can rebind.
_BaseException, _SystemExit, _KeyboardInterrupt = BaseException, SystemExit, KeyboardInterrupt
_len, _type = len, type
_exec, _eval, _repr, _str = exec, eval, repr, str
_perf_counter = time.perf_counter
_get_ident = threading.get_ident
_MAIN_IDENT = threading.main_thread().ident
# The C functions: the ``signal`` module's wrappers cost ~5 µs a call converting enums.
_setsignal, _getsignal, _setitimer = _signal.signal, _signal.getsignal, _signal.setitimer
_SIGINT, _SIGALRM, _ITIMER_REAL = int(signal.SIGINT), int(signal.SIGALRM), int(signal.ITIMER_REAL)
_getrecursionlimit, _setrecursionlimit = sys.getrecursionlimit, sys.setrecursionlimit
_default_int_handler, _SIG_DFL = signal.default_int_handler, signal.SIG_DFL
_BUILTINS = builtins.__dict__
_sys, _getpass_mod = sys, getpass
_EXIT_NOTE = "the cell ended; llmrepl keeps running — use /exit or Ctrl-D to leave"

# -- compile fast path ------------------------------------------------------------------
# Most cells end in a statement, and for them the AST round trip (ast.parse + compile(tree),
# ~2x compile(source)) only finds out there is no trailing expression to show. A cell skips
# it when one compile(source) and cheap checks prove its last statement is an assignment
# (or import) to a plain name: the last non-blank line starts in column 0 with ``name =``,
# ``a, b =``, ``name op=`` or ``import`` and has no ``;``, and the code ends with STORE_NAME
# on that line followed by ``return None``. A trailing expression statement cannot pass:
# its value must leave the stack (POP_TOP), or, a constant, it compiles to nothing and the
# last instruction belongs to a statement on an earlier line (or before a ``;``). Anything
# else takes the AST path, as before. tests/test_executor.py checks both against the AST.
_STORE_NAME = _OP["STORE_NAME"]
_LOAD_CONST = _OP["LOAD_CONST"]
_RETURN_VALUE = _OP["RETURN_VALUE"]
_RETURN_CONST = _OP.get("RETURN_CONST", -1)  # 3.12, 3.13
_ASSIGN_LINE = re.compile(
    r"(?:[^\W\d][\w, \t]*(?:[-+*/%@&|^]|//|\*\*|>>|<<)?=(?!=)|import[ \t])"
)
# A cell of one line with a ``=`` or an import is compiled in 'single' mode instead, the
# interactive interpreter's: ~15 % cheaper than 'exec', and the proof is simpler. 'single'
# mode rejects a compound statement without a trailing newline, and an expression statement
# shows in its byte code as PRINT_EXPR (3.12+: CALL_INTRINSIC_1 INTRINSIC_PRINT); without
# one, that code is the cell, run as it is (sys.displayhook is never involved). Python's
# tokenizer treats only _BLANK as trailing whitespace (str.rstrip() would also strip U+00A0
# and others, which are syntax errors in a cell).
_BLANK = " \t\n\f"
_PRINT_EXPR = _OP.get("PRINT_EXPR", -1)  # 3.10, 3.11
_INTRINSIC_1 = _OP.get("CALL_INTRINSIC_1", -1)  # 3.12+, with oparg 1 (INTRINSIC_PRINT)


def _prints(co: bytes) -> bool:
    """Whether 'single'-mode byte code shows an expression's value (opcodes sit at even offsets)."""
    ops = co[::2]
    if _PRINT_EXPR >= 0:
        return _PRINT_EXPR in ops
    i = ops.find(_INTRINSIC_1) if _INTRINSIC_1 >= 0 else -1
    while i >= 0:
        if co[2 * i + 1] == 1:
            return True
        i = ops.find(_INTRINSIC_1, i + 1)
    return False


# A Python whose byte code says this differently gets the 'exec' path for one-liners too.
_SINGLE_OK = _prints(compile("f(1)", "<c>", "single").co_code) and not _prints(
    compile("x = f(1)", "<c>", "single").co_code
)


_sigint_quiet = False  # True while an executor sets up or restores around a cell


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    """SIGINT while a cell runs, and after it (one handler for every Executor): interrupts
    the cell, or between cells whatever runs, as the default handler does; ignored only
    while the executor sets up or restores around a cell."""
    if not _sigint_quiet:
        raise KeyboardInterrupt


class CellTimeout(BaseException):
    """Raised inside a cell that ran past its time limit (a BaseException: ``except Exception`` misses it)."""


@dataclass(slots=True)
class ExecResult:
    """Everything one ``Executor.run()`` produced."""

    cell: int
    source: str
    stdout: str = ""
    stderr: str = ""
    output: str = ""
    value_repr: str | None = None
    error: str | None = None
    error_type: str | None = None
    duration: float = 0.0
    interrupted: bool = False
    timed_out: bool = False
    exit_code: object = None
    figures: list[str] = field(default_factory=list)
    output_chars: int = 0
    repairs: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None


class _Quitter:
    """``exit``/``quit`` in the namespace: end the cell, not llmrepl."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Use {self.name}() to end this cell; use /exit or Ctrl-D to leave llmrepl"

    def __call__(self, code: object = None) -> None:
        raise SystemExit(code)


def _restore_builtins(snapshot: dict[str, Any], repairs: list[str]) -> None:
    """Put back builtins a cell rebound or deleted (names it added stay). Uses no builtins."""
    bd = _BUILTINS
    for name, value in snapshot.items():
        current = bd.get(name, _MISSING)
        if current is not value:
            bd[name] = value
            how = "deleted" if current is _MISSING else "changed"
            repairs.append(f"builtins.{name} was {how}; restored")


class Executor:
    """A persistent namespace plus ``run(source) -> ExecResult``. Not thread-safe; one cell at a time."""

    def __init__(
        self,
        namespace: dict[str, Any] | None = None,
        *,
        sink: OutputSink | None = None,
        input_func: Callable[[str], str] | None = None,
        timeout: float = 0,
        figure_dir: str | os.PathLike[str] | None = None,
        max_capture_chars: int = 200_000,
    ) -> None:
        self._router = CaptureRouter(sink)
        self._stdout = CaptureStream(self._router, "stdout")
        self._stderr = CaptureStream(self._router, "stderr")
        self._stdin = StdinStub(self._stdin_readline)
        self.input_func = input_func
        self.timeout = timeout
        self.max_capture_chars = max_capture_chars
        self.cell_count = 0
        self._figures = FigureLog(figure_dir)
        self._figure_dir = figure_dir
        self._exit, self._quit = _Quitter("exit"), _Quitter("quit")
        self.namespace: dict[str, Any] = {} if namespace is None else namespace
        self._prepare_namespace()
        self._armed = False
        self._timeout_fired = False
        self._timeout_msg = ""
        # Bound once so identity checks against signal.getsignal() work.
        self._alarm_handler = self._on_alarm
        self._input_bound = self._input
        self._getpass_bound = self._getpass
        self._mpl_checked = False
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

    def reset(self) -> None:
        """A fresh namespace; settings stay and cell numbering continues."""
        self.namespace = {}
        self._prepare_namespace()

    def user_variables(self) -> dict[str, Any]:
        """The names the user's code made (the rule is ``digest.is_user_name``)."""
        return {name: value for name, value in self.namespace.items() if is_user_name(name, value)}

    def run(self, source: str, *, timeout: float | None = None) -> ExecResult:
        """Compile and run one cell. Never raises; everything is on the returned record."""
        start = _perf_counter()
        self.cell_count += 1
        n = self.cell_count
        result = ExecResult(n, source)
        filename = f"<cell-{n}>"
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        try:
            body, expr = self._compile(source, filename)
        except BaseException as exc:  # SyntaxError, ValueError (NUL bytes), RecursionError, ...
            result.error_type = "SyntaxError" if isinstance(exc, ValueError) else type(exc).__name__
            if isinstance(exc, SyntaxError):
                result.error = "".join(traceback.format_exception_only(type(exc), exc))
            else:
                result.error = f"{result.error_type}: {safe_str(exc)}\n"
            result.interrupted = isinstance(exc, KeyboardInterrupt)
        else:
            if not self._mpl_checked:
                self._check_matplotlib()
            limit = self.timeout if timeout is None else timeout
            self._execute(body, expr, result, limit or 0)
            if self._mpl_env_prev is not _MISSING and "matplotlib" in sys.modules:
                self._restore_mpl_env()
        result.duration = _perf_counter() - start
        return result

    # -- internals ----------------------------------------------------------------------

    def _prepare_namespace(self) -> None:
        ns = self.namespace
        ns.setdefault("__name__", "__main__")
        ns.setdefault("__doc__", None)
        ns["__builtins__"] = builtins
        ns.setdefault("exit", self._exit)
        ns.setdefault("quit", self._quit)

    @staticmethod
    def _compile(source: str, filename: str) -> tuple[CodeType, CodeType | None]:
        # The fast path (see the note at _ASSIGN_LINE), inlined: it runs for every cell.
        if "\r" in source:
            return Executor._compile_ast(source, filename)
        text = source.rstrip(_BLANK)
        cut = text.rfind("\n") + 1
        if not cut and _SINGLE_OK:
            # One line. An assignment or import, by a cheap look ('single' mode proves it)?
            if ";" in text or not ("=" in text or text.startswith(("import", "from"))):
                return Executor._compile_ast(source, filename)
            # The stripped text: 'single' mode must then reject a compound statement.
            try:
                code = compile(text, filename, "single", dont_inherit=True)
            except Exception:  # its parser warnings were shown; the AST path reports the error
                return Executor._compile_ast(source, filename, quiet_parse=True)
            if not _prints(code.co_code):
                return code, None
        else:
            last = text[cut:]
            if ";" in last or _ASSIGN_LINE.match(last) is None:
                return Executor._compile_ast(source, filename)
            try:
                code = compile(source, filename, "exec", dont_inherit=True)
            except Exception:  # as above
                return Executor._compile_ast(source, filename, quiet_parse=True)
            if Executor._ends_in_a_store(code, text.count("\n", 0, cut) + 1):
                return code, None
        # Compiling again must not repeat the SyntaxWarnings the user just saw.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Executor._compile_ast(source, filename)

    @staticmethod
    def _ends_in_a_store(code: CodeType, line: int) -> bool:
        """Does the module end with STORE_NAME, then ``return None``, on ``line``?"""
        co, consts = code.co_code, code.co_consts
        size = _len(co)
        store = -1
        if size >= 4 and co[-2] == _RETURN_CONST and consts[co[-1]] is None:
            store = size - 4
        elif size >= 6 and co[-2] == _RETURN_VALUE and co[-4] == _LOAD_CONST and consts[co[-3]] is None:
            store = size - 6
        if store >= 0 and co[store] == _STORE_NAME:
            for start, end, lineno in code.co_lines():
                if start <= store < end:
                    return lineno == line
        return False

    @staticmethod
    def _compile_ast(source: str, filename: str, quiet_parse: bool = False) -> tuple[CodeType, CodeType | None]:
        """The general path: split a trailing expression statement off to evaluate it.

        ``quiet_parse``: a compile that just failed already showed the parser's warnings."""
        if quiet_parse:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tree = ast.parse(source, filename, "exec")
        else:
            tree = ast.parse(source, filename, "exec")
        expr = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = tree.body.pop()
            assert isinstance(last, ast.Expr)
            expr = compile(ast.Expression(last.value), filename, "eval", dont_inherit=True)
        return compile(tree, filename, "exec", dont_inherit=True), expr

    def _execute(self, body: CodeType, expr: CodeType | None, result: ExecResult, limit: float) -> None:
        global _sigint_quiet
        main = _get_ident() == _MAIN_IDENT
        if main:
            _sigint_quiet = True  # until the cell's code starts: our setup is not interrupted
        ns, bd, n, sys_ = self.namespace, _BUILTINS, result.cell, _sys
        ns["__builtins__"] = builtins  # a cell may have deleted or replaced it
        orig_input = bd.get("input", _MISSING)
        bd["input"] = self._input_bound
        # Copied for every cell: whatever rebinds a builtin between cells (a thread or signal
        # handler a cell left, the program embedding the engine) is not this cell's to undo.
        snapshot = bd.copy()
        orig_getpass = _getpass_mod.getpass
        getpass_bound = _getpass_mod.getpass = self._getpass_bound
        saved = (sys_.stdout, sys_.stderr, sys_.stdin, sys_.excepthook, sys_.displayhook)
        old_limit = _getrecursionlimit()
        my_out, my_err, my_in = self._stdout, self._stderr, self._stdin
        router = self._router
        cap = router.capture = Capture(self.max_capture_chars, router.sink)
        figures = self._figures
        if _capture_mod._active_figure_log is not figures:
            _capture_mod.set_active_figure_log(figures)
        first_figure = _len(figures.saved)
        timed = main and limit > 0
        sigint_handler = _on_sigint
        old_int: Any = None
        old_alarm: Any = None
        self._timeout_fired = False
        exc: BaseException | None = None
        try:
            if main:
                old_int = _getsignal(_SIGINT)
                if old_int is sigint_handler:  # left by an earlier cell, in place of the default
                    old_int = _default_int_handler
                else:
                    _setsignal(_SIGINT, sigint_handler)
                if timed:
                    self._timeout_msg = (
                        f"the cell ran longer than {limit:g} s and was stopped (the namespace is "
                        "intact; raise --timeout or exec.timeout to allow more)"
                    )
                    old_alarm = _setsignal(_SIGALRM, self._alarm_handler)
            sys_.stdout, sys_.stderr, sys_.stdin = my_out, my_err, my_in
            self._armed = True
            if main:
                _sigint_quiet = False
            if timed:
                # Re-fires, so a cell that swallows one CellTimeout is stopped by the next.
                _setitimer(_ITIMER_REAL, limit, min(limit, 1.0))
            _exec(body, ns)
            if expr is not None:
                value = _eval(expr, ns)
                if value is not None:
                    ns["_"] = ns[f"_{n}"] = value
                    buf = CappedBuffer(self.max_capture_chars)
                    buf.add(_bounded_repr(value) if main and not timed else _repr(value))
                    result.value_repr = buf.getvalue()
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
            repairs = result.repairs
            # FIRST: everything below relies on builtins. dict == compares by identity
            # first, so this is a fast C loop when nothing changed.
            try:
                builtins_intact = _len(bd) == _len(snapshot) and snapshot == bd
            except _BaseException:  # a replacement object's __eq__ raised: check one by one
                builtins_intact = False
            if not builtins_intact:
                _restore_builtins(snapshot, repairs)
            if orig_input is _MISSING:
                bd.pop("input", None)
            else:
                bd["input"] = orig_input
            router.capture = None
            # The usual case, nothing replaced, without the per-name loop of _restore_sys.
            try:
                untouched = (
                    sys_.stdout is my_out and sys_.stderr is my_err and sys_.stdin is my_in
                    and sys_.excepthook is saved[3] and sys_.displayhook is saved[4]
                )
            except _BaseException:  # a name was deleted
                untouched = False
            if untouched:
                sys_.stdout, sys_.stderr, sys_.stdin = saved[0], saved[1], saved[2]
            else:
                self._restore_sys(saved, repairs)
            current_limit = _getrecursionlimit()
            if current_limit != old_limit:
                repairs.append(f"recursion limit was {current_limit}; reset to {old_limit}")
                _setrecursionlimit(old_limit)
            if _getpass_mod.getpass is not getpass_bound:
                repairs.append("getpass.getpass was replaced; restored")
            _getpass_mod.getpass = orig_getpass
            if main:
                # Where ours replaced the default handler it stays: between cells it acts as the
                # default does (KeyboardInterrupt), and the next cell needs no system call.
                keep = old_int is _default_int_handler
                if _getsignal(_SIGINT) is not sigint_handler:
                    repairs.append("SIGINT handler was changed; restored")
                    _setsignal(_SIGINT, sigint_handler if keep else _default_int_handler if old_int is None else old_int)
                elif not keep:
                    _setsignal(_SIGINT, _default_int_handler if old_int is None else old_int)
                # signal.signal() returns the handler it replaced: ours, unless the cell changed it
                if timed and _setsignal(_SIGALRM, _SIG_DFL if old_alarm is None else old_alarm) is not self._alarm_handler:
                    repairs.append("SIGALRM handler was changed; restored")
                _sigint_quiet = False
        if cap.written:
            result.stdout, result.stderr, result.output = cap.values()
            result.output_chars = cap.chars
        if _len(figures.saved) > first_figure:
            result.figures = figures.saved[first_figure:]
        result.timed_out = self._timeout_fired
        if cap.sink_error:
            repairs.append(cap.sink_error)
        if exc is not None:
            self._record_exception(exc, result)

    def _restore_sys(self, saved: tuple[Any, ...], repairs: list[str]) -> None:
        ours = (self._stdout, self._stderr, self._stdin, saved[3], saved[4])
        names = ("stdout", "stderr", "stdin", "excepthook", "displayhook")
        for name, mine, old in zip(names, ours, saved, strict=True):
            if getattr(sys, name, None) is not mine:
                repairs.append(f"sys.{name} was replaced; restored")
            setattr(sys, name, old)

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
        result.error = format_exception(exc, self.max_capture_chars, skip_files=(__file__,))

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
        cap = self._router.capture
        if cap is not None:
            cap.write("stdout", text, echo=echo)

    def _input(self, prompt: object = "") -> str:
        """``input()`` during a cell: asks ``input_func``, or refuses when nobody can answer."""
        text = safe_str(prompt)
        func = self.input_func
        if func is None:
            if text:
                self._record_input(text, echo=True)
            raise InputNotAllowed(INPUT_NOT_ALLOWED)
        answer = func(text)  # EOFError propagates into the cell, as with a real input()
        # The front end showed the prompt and the typing; the transcript still needs both.
        self._record_input(f"{text}{answer}\n", echo=False)
        return answer

    def _getpass(self, prompt: str = "Password: ", stream: object = None) -> str:
        """``getpass.getpass()`` during a cell: like input(), but the answer is never recorded."""
        func = self.input_func
        if func is None:
            raise InputNotAllowed(INPUT_NOT_ALLOWED)
        answer = func(prompt)
        self._record_input(f"{prompt}\n", echo=False)
        return answer

    def _stdin_readline(self) -> str:
        func = self.input_func
        if func is None:
            raise InputNotAllowed(INPUT_NOT_ALLOWED)
        try:
            line = func("")
        except EOFError:
            return ""
        self._record_input(f"{line}\n", echo=False)
        return line + "\n"


REPR_LIMIT = 3.0  # seconds a value's repr may take before the REPL shows a placeholder


class _ReprTimeout(BaseException):
    pass


def _raise_repr_timeout(signum: int, frame: FrameType | None) -> None:
    raise _ReprTimeout


def _bounded_repr(value: Any) -> str:
    """repr() under a SIGALRM limit (re-firing, so a repr that swallows one is still stopped):
    a __repr__ that hangs must not hang the REPL. Main thread only; the cell's own timeout,
    when set, already covers it."""
    old = _setsignal(_SIGALRM, _raise_repr_timeout)
    _setitimer(_ITIMER_REAL, REPR_LIMIT, 0.5)
    try:
        return _repr(value)
    except _ReprTimeout:
        return f"<repr of {type(value).__name__} took longer than {REPR_LIMIT:g} s; the value itself is in _>"
    finally:
        _setitimer(_ITIMER_REAL, 0)
        _setsignal(_SIGALRM, old)

