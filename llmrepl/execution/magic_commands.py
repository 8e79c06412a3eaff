"""What the magics do when a cell runs: the hidden helper ``__llmrepl_magic__`` that
``magics.transform`` makes magic lines call.

Standard library only, each part imported on first use (timeit, inspect, subprocess, shlex).
Each call reads the calling cell's globals and locals from its frame, so a magic inside a
function body sees that function's variables. Output goes to ``sys.stdout``/``sys.stderr``,
which during a cell are the cell's capture: a child's output is read through pipes and
written there as it comes, so it is recorded and shown like any cell output.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

from llmrepl.execution.magics import MagicError, timeit_options, transform
from llmrepl.execution.namespace import bounded_repr, is_user_name, repr_can_be_bounded, type_name

__all__ = ["Magics"]

_PIP_NOTE = ("Note: a package that was already imported keeps its old version until llmrepl "
             "restarts (/exit, then llmrepl --resume).\n")


def _say(text: str) -> None:
    """A line of the magic's output, to the cell's stdout."""
    sys.stdout.write(text + "\n")


def _format_time(seconds: float) -> str:
    """``1.23 ms``, as IPython writes times."""
    if seconds >= 60:
        minutes, s = divmod(seconds, 60)
        return f"{int(minutes)} min {s:.1f} s"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds * 1e9:.3g} ns"


def _scopes(frame: FrameType) -> tuple[dict[str, Any], dict[str, Any]]:
    return frame.f_globals, frame.f_locals


class Magics:
    """The helper a transformed cell calls. One per executor; holds ``%cd -``'s last folder."""

    def __init__(self) -> None:
        self._last_dir: str | None = None

    def __repr__(self) -> str:
        return "<llmrepl magics>"

    # -- entry points (called from cell code) ------------------------------------------------

    def line(self, name: str, args: str) -> Any:
        """``%name args``."""
        frame = sys._getframe(1)
        method: Callable[[str, FrameType], Any] = getattr(self, f"_{name}", self._unknown(name))
        return method(args, frame)

    def cell(self, name: str, args: str, body: str, line: int) -> Any:
        """``%%name args`` on line ``line``, then ``body``."""
        frame = sys._getframe(1)
        code = transform(body)
        if name == "timeit":
            return self._timeit(f"{args} ", frame, body=code)
        return self._run_timed(code, frame, first_line=line + 1)

    def shell(self, command: str, capture: bool = False) -> list[str] | None:
        """``!command``: run by the shell, its output shown as the cell's; with ``capture``
        (``x = !cmd``) its stdout is returned as a list of lines instead."""
        return _run_child(command, shell=True, capture=capture)

    def help(self, name: str, source: bool = False) -> None:
        """``obj?``: type, signature and docstring; ``obj??`` adds the source."""
        import inspect

        frame = sys._getframe(1)
        g, loc = _scopes(frame)
        try:
            obj = eval(name, g, loc)  # a dotted name only (magics checked it)
        except (NameError, AttributeError):
            _say(f"Object `{name}` not found.")
            return
        out = [f"Type:      {type_name(type(obj))}"]
        if repr_can_be_bounded():
            text = bounded_repr(obj, 1.0)
            if text is not None:
                out.append(f"String form: {text if len(text) <= 200 else text[:200] + '...'}")
        if callable(obj):
            try:
                sig = str(inspect.signature(obj))
                out.append(f"{'Init signature' if inspect.isclass(obj) else 'Signature'}: {name.split('.')[-1]}{sig}")
            except (TypeError, ValueError):
                pass
        try:
            where = inspect.getsourcefile(obj) if not isinstance(obj, (int, float, str, bytes)) else None
        except TypeError:
            where = None
        if where:
            out.append(f"File:      {where}")
        doc = inspect.getdoc(obj)
        out.append("Docstring:\n" + (doc if doc else "<no docstring>"))
        if source:
            try:
                out.append("Source:\n" + inspect.getsource(obj).rstrip("\n"))
            except (OSError, TypeError):
                out.append("Source:    not available (defined in C, or at the prompt before this session)")
        _say("\n".join(out))

    # -- the line magics ------------------------------------------------------------------------

    def _unknown(self, name: str) -> Callable[[str, FrameType], Any]:
        def fail(args: str, frame: FrameType) -> Any:
            raise MagicError(f"%{name} is not a magic llmrepl has")
        return fail

    def _time(self, args: str, frame: FrameType) -> Any:
        if not args.strip():
            raise MagicError("%time needs a statement to time: %time total = df.sum()")
        return self._run_timed(args.strip(), frame, first_line=frame.f_lineno, column=_column(args, frame))

    def _run_timed(self, code: str, frame: FrameType, first_line: int, column: int = 0) -> Any:
        import ast
        import time

        filename = frame.f_code.co_filename
        tree = ast.parse(code, filename, "exec")
        if column:  # a traceback's caret points into the cell's own line
            for node in ast.walk(tree):
                if getattr(node, "lineno", None) == 1:
                    node.col_offset += column  # type: ignore[attr-defined]
                    if getattr(node, "end_lineno", None) == 1 and node.end_col_offset is not None:  # type: ignore[attr-defined]
                        node.end_col_offset += column  # type: ignore[attr-defined]
        ast.increment_lineno(tree, first_line - 1)
        expr = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            expr = compile(ast.Expression(tree.body.pop().value), filename, "eval")  # type: ignore[attr-defined]
        body = compile(tree, filename, "exec")
        g, loc = _scopes(frame)
        wall, cpu = time.perf_counter(), time.process_time()
        exec(body, g, loc)
        value = eval(expr, g, loc) if expr is not None else None
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        _say(f"CPU time: {_format_time(cpu)}\nWall time: {_format_time(wall)}")
        return value

    def _timeit(self, args: str, frame: FrameType, body: str | None = None) -> None:
        import math
        import timeit

        number, repeat, quiet, stmt = timeit_options(args)
        if body is not None:
            stmt = body
        if not stmt.strip():
            raise MagicError("%timeit needs a statement to time: %timeit sorted(values)")
        g, loc = _scopes(frame)
        scope = g if loc is g else {**g, **loc}
        timer = timeit.Timer(stmt, globals=scope)
        if number == 0:
            number = 1
            while number < 10**9:  # IPython's rule: the first power of ten that takes 0.2 s
                if timer.timeit(number) >= 0.2:
                    break
                number *= 10
        runs = [t / number for t in timer.repeat(repeat, number)]
        if quiet:
            return
        mean = sum(runs) / len(runs)
        std = math.sqrt(sum((r - mean) ** 2 for r in runs) / len(runs))
        loops = "loop" if number == 1 else "loops"
        runs_word = "run" if repeat == 1 else "runs"
        _say(f"{_format_time(mean)} ± {_format_time(std)} per loop (mean ± std. dev. of {repeat} "
              f"{runs_word}, {number:,} {loops} each)")

    def _who(self, args: str, frame: FrameType) -> None:
        kinds = set(args.split())
        names = [n for n, v in _user_items(frame) if not kinds or type_name(type(v)) in kinds]
        _say("  ".join(names) if names else "Interactive namespace is empty.")

    def _whos(self, args: str, frame: FrameType) -> None:
        kinds = set(args.split())
        rows = [(n, type_name(type(v)), _info(v)) for n, v in _user_items(frame)
                if not kinds or type_name(type(v)) in kinds]
        if not rows:
            _say("Interactive namespace is empty.")
            return
        w1 = max(8, *(len(r[0]) for r in rows))
        w2 = max(4, *(len(r[1]) for r in rows))
        lines = [f"{'Variable':<{w1}}   {'Type':<{w2}}   Data/Info", "-" * (w1 + w2 + 20)]
        lines += [f"{n:<{w1}}   {t:<{w2}}   {i}" for n, t, i in rows]
        _say("\n".join(lines))

    def _pwd(self, args: str, frame: FrameType) -> str:
        return os.getcwd()

    def _cd(self, args: str, frame: FrameType) -> None:
        where = args.strip()
        if where in ("", "~"):
            where = os.path.expanduser("~")
        elif where == "-":
            if self._last_dir is None:
                raise MagicError("%cd -: no earlier folder yet")
            where = self._last_dir
        where = os.path.expanduser(where.strip("'\"") if where[:1] in "'\"" else where)
        before = os.getcwd()
        try:
            os.chdir(where)
        except FileNotFoundError:
            raise MagicError(f"%cd: no such folder: {where}") from None
        except NotADirectoryError:
            raise MagicError(f"%cd: not a folder: {where}") from None
        except PermissionError:
            raise MagicError(f"%cd: permission denied: {where}") from None
        self._last_dir = before
        _say(os.getcwd())

    def _run(self, args: str, frame: FrameType) -> None:
        import shlex
        import tokenize

        try:
            argv = shlex.split(args)
        except ValueError as e:
            raise MagicError(f"%run: {e}") from None
        if argv[:1] == ["-i"]:
            argv = argv[1:]
        if not argv:
            raise MagicError("%run needs a file: %run script.py [ARGS]")
        path = os.path.expanduser(argv[0])
        if not os.path.isfile(path) and os.path.isfile(path + ".py"):
            path += ".py"
        if os.path.exists(path) and not os.path.isfile(path):  # a FIFO, /dev/stdin: reading would wait
            raise MagicError(f"%run: not a file: {path}")
        try:
            with tokenize.open(path) as f:
                source = f.read()
        except FileNotFoundError:
            raise MagicError(f"%run: no such file: {path}") from None
        except (OSError, SyntaxError, UnicodeDecodeError) as e:
            raise MagicError(f"%run: cannot read {path}: {e}") from None
        g = frame.f_globals
        code = compile(source, os.path.abspath(path), "exec", dont_inherit=True)
        saved_argv, had_file, old_file = sys.argv, "__file__" in g, g.get("__file__")
        sys.argv = [path, *argv[1:]]
        g["__file__"] = os.path.abspath(path)
        try:
            exec(code, g)
        except SystemExit as e:
            if e.code not in (None, 0):
                raise
        finally:
            sys.argv = saved_argv
            if had_file:
                g["__file__"] = old_file
            else:
                g.pop("__file__", None)

    def _pip(self, args: str, frame: FrameType) -> None:
        import importlib
        import shlex

        try:
            argv = shlex.split(args)
        except ValueError as e:
            raise MagicError(f"%pip: {e}") from None
        if not argv:
            raise MagicError("%pip needs a pip command: %pip install PACKAGE")
        _run_child([sys.executable, "-m", "pip", *argv], shell=False, capture=False)
        importlib.invalidate_caches()  # a package just installed imports without a restart
        if argv[0] in ("install", "uninstall"):
            sys.stdout.write(_PIP_NOTE)

    def _matplotlib(self, args: str, frame: FrameType) -> None:
        """Accepted for notebooks' sake: llmrepl always shows figures."""


def _column(args: str, frame: FrameType) -> int:
    """Where (UTF-8 bytes) ``args`` starts on the cell's line the frame is at; 0 if unknown."""
    import linecache

    line = linecache.getline(frame.f_code.co_filename, frame.f_lineno)
    i = line.find(args.strip()) if args.strip() else -1
    return len(line[:i].encode()) if i > 0 else 0


def _user_items(frame: FrameType) -> list[tuple[str, Any]]:
    return sorted((n, v) for n, v in frame.f_globals.items() if is_user_name(n, v))


def _info(value: Any) -> str:
    shape = getattr(type(value), "shape", None)
    if shape is not None and type_name(type(value)) in ("ndarray", "DataFrame", "Series"):
        try:
            return f"shape {tuple(value.shape)}"
        except Exception:
            pass
    if type_name(type(value)) in ("module", "function", "type", "builtin_function_or_method"):
        return getattr(value, "__name__", "") if isinstance(getattr(value, "__name__", ""), str) else ""
    if not repr_can_be_bounded():
        return ""
    try:
        text = bounded_repr(value, 0.5)
    except Exception:
        return "<repr failed>"
    if text is None:
        return "<repr too slow>"
    text = " ".join(text.split())
    return text if len(text) <= 60 else text[:57] + "..."


def _run_child(command: str | list[str], *, shell: bool, capture: bool) -> list[str] | None:
    """Run a child with its stdout and stderr read through pipes and written to this cell's
    streams as they come; stdin is /dev/null and the child runs in a session of its own, with no
    controlling terminal: nothing it runs can open /dev/tty, to write escape sequences past
    ``sanitize`` or read keys meant for llmrepl (a password prompt fails at once instead).
    Ctrl-C or a timeout ends the child and everything it started (``cmd &`` too). A non-zero
    exit status is noted on stderr."""
    import codecs
    import selectors
    import signal
    import subprocess

    proc = subprocess.Popen(command, shell=shell, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    captured: list[str] = []
    with proc:
        assert proc.stdout is not None and proc.stderr is not None
        try:
            with selectors.DefaultSelector() as sel:
                decoders = {}
                for pipe, stream in ((proc.stdout, "stdout"), (proc.stderr, "stderr")):
                    sel.register(pipe, selectors.EVENT_READ, stream)
                    decoders[stream] = codecs.getincrementaldecoder("utf-8")("replace")
                open_pipes = 2
                while open_pipes:
                    for key, _ in sel.select():
                        chunk = os.read(key.fd, 65536)
                        stream = key.data
                        text = decoders[stream].decode(chunk, final=not chunk)
                        if not chunk:
                            sel.unregister(key.fileobj)
                            open_pipes -= 1
                        if not text:
                            continue
                        if capture and stream == "stdout":
                            captured.append(text)
                        else:
                            (sys.stdout if stream == "stdout" else sys.stderr).write(text)
            code = proc.wait()
        except BaseException:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # its session's only group: the child's own
            except OSError:
                proc.kill()
            proc.wait()
            raise
    if code:
        sys.stderr.write(f"[exit status {code}]\n" if code > 0 else f"[ended by signal {-code}]\n")
    return "".join(captured).splitlines() if capture else None
