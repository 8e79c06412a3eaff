"""IPython's magics in a cell, as plain Python: ``%time``, ``%timeit``, ``%who``, ``%whos``,
``%pwd``, ``%cd``, ``%run``, ``%pip``, ``!command`` and ``obj?``.

``transform(code)`` rewrites each magic line into one call to a hidden helper object
(``__llmrepl_magic__``, a dunder: /vars, the digest and snapshots never show it; the calls
are in ``magic_commands``), one physical line for one, so line numbers, tracebacks and the
count of top-level statements stay those of the cell as written. A magic counts where a
statement may start (at top level or indented in a block); a ``%`` or ``!`` inside a string,
a bracket or after ``\\`` is Python's. ``exportable(code)`` writes the same cell as
standalone standard-library Python (the ``.py`` export and the risk scan read that).
Stdlib only; importing this module costs next to nothing (no timeit, inspect, subprocess).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

__all__ = ["HELPER", "LINE_MAGICS", "CELL_MAGICS", "MagicError", "as_python", "describe_shell",
           "exportable", "has_magic", "is_magic", "shell_commands", "shell_lines",
           "transform"]

HELPER = "__llmrepl_magic__"
# name -> one line of help (docs/usage.md lists the same)
LINE_MAGICS = {
    "time": "run a statement once and print how long it took",
    "timeit": "time a statement over many runs: %timeit [-n N] [-r R] STMT",
    "who": "list your variables (optionally only those of given types: %who int str)",
    "whos": "your variables with their types and values",
    "pwd": "the working folder",
    "cd": "change the working folder (%cd - goes back; %cd alone goes home)",
    "run": "run a Python file in this namespace: %run FILE [ARGS]",
    "pip": "run pip in this Python: %pip install PACKAGE",
    "matplotlib": "accepted and ignored: figures are always shown",
}
CELL_MAGICS = {"time": LINE_MAGICS["time"], "timeit": LINE_MAGICS["timeit"]}

_ASSIGNED = re.compile(r"[ \t]*[A-Za-z_]\w*[ \t]*=[ \t]*")  # what stands before `!` in `x = !ls`
_NAME = re.compile(r"[A-Za-z_]\w*")
_LINE = re.compile(r"%([A-Za-z_]\w*)(?:[ \t]+(.*?))?[ \t]*$")
_HELP = re.compile(r"(\?\??)?([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)[ \t]*(\?\??)?[ \t]*$")
_ASSIGN = re.compile(r"([A-Za-z_]\w*)[ \t]*=[ \t]*([%!].*)$")


class MagicError(Exception):
    """A magic llmrepl does not have, or used wrongly: the cell does not run, and this message
    (not a SyntaxError's caret) is what the person or the model reads."""


@dataclass(frozen=True)
class _Magic:
    line: int        # 1-based
    indent: str
    kind: str        # "line" | "shell" | "help"
    name: str        # magic name; for help: the dotted name; for shell: "" or "!" (``!!cmd``)
    args: str        # the rest of the line; for shell: the command; for help: "?" or "??"
    target: str = ""  # ``x = !ls``: "x"


def has_magic(code: str) -> bool:
    """A cheap test: False means ``code`` certainly holds no magic (then nothing else runs).
    Looks only at each ``%``, ``!`` and ``?`` (a regex anchored at every line start costs
    ~100x more on a long cell that formats strings with ``%``)."""
    if "%" not in code and "!" not in code and "?" not in code:
        return False
    for ch in "%!?":
        i = code.find(ch)
        while i != -1:
            start = code.rfind("\n", 0, i) + 1
            before = code[start:i]
            if not before.strip(" \t") or (ch != "?" and _ASSIGNED.fullmatch(before)):
                return True
            if ch == "?":
                end = code.find("\n", i)
                if not code[i + 1 : end if end != -1 else len(code)].strip(" \t\r?"):
                    return True
            i = code.find(ch, i + 1)
    return False


def is_magic(line: str, namespace: dict[str, object] | None = None) -> bool:
    """Whether a line typed at the prompt is a magic: ``%name ...``, ``!command``, ``x = !cmd``
    or a dotted name with ``?``/``??`` (``df.describe?``). With ``namespace``, ``word?`` counts
    only when ``word`` is defined there or is a builtin, so ``why?`` stays a question."""
    s = line.strip()
    if not s or "\n" in s:
        return False
    if s[0] == "%":
        return _LINE.fullmatch(s[1:] if s.startswith("%%") else s) is not None
    if s[0] == "!":
        return len(s) > 1 and s[1] != "="
    m = _ASSIGN.fullmatch(s)
    if m and (m[2][0] == "!" or _LINE.fullmatch(m[2])):
        return not (m[2][0] == "!" and m[2][1:2] == "=")
    h = _HELP.fullmatch(s)
    if not h or not (h[1] or h[3]) or (h[1] and h[3]):
        return False
    if namespace is None:
        return True
    import builtins

    head = h[2].split(".")[0]
    return head in namespace or hasattr(builtins, head)


# -- finding magic lines -------------------------------------------------------------------


def _scan_python(line: str, quote: str | None, depth: int) -> tuple[str | None, int, bool]:
    """Python's state after ``line``: the string still open, the bracket depth, and whether
    the line ends with a backslash continuation."""
    i, n = 0, len(line)
    while i < n:
        c = line[i]
        if quote is not None:
            if c == "\\":
                i += 2
                continue
            if line.startswith(quote, i):
                i += len(quote)
                quote = None
                continue
            i += 1
            continue
        if c == "#":
            return None, depth, False
        if c in "'\"":
            quote = c * 3 if line.startswith(c * 3, i) else c
            i += len(quote)
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth = max(depth - 1, 0)
        elif c == "\\" and i == n - 1:
            return quote, depth, True
        i += 1
    if quote is not None and len(quote) == 1:
        # a one-quote string runs on only after a backslash; otherwise it is Python's error
        return (quote if line.endswith("\\") else None), depth, line.endswith("\\")
    return quote, depth, False


def _magics(lines: list[str], strict: bool = True) -> list[_Magic]:
    """The magic lines of a cell (a line that starts a statement and reads as a magic). Not
    ``strict``: a magic llmrepl does not have is returned as kind "unknown", not raised."""
    found: list[_Magic] = []
    quote: str | None = None
    depth, cont = 0, False
    for number, raw in enumerate(lines, 1):
        line = raw.rstrip("\r\n")
        if quote is None and depth == 0 and not cont:
            stripped = line.lstrip(" \t")
            indent = line[: len(line) - len(stripped)]
            try:
                magic = _read_magic(number, indent, stripped)
            except MagicError:
                if strict:
                    raise
                magic = _Magic(number, indent, "unknown", "", stripped)
            if magic is not None:
                found.append(magic)
                continue
        quote, depth, cont = _scan_python(line, quote, depth)
    return found


def _read_magic(number: int, indent: str, s: str) -> _Magic | None:
    if not s:
        return None
    target = ""
    m = _ASSIGN.fullmatch(s)
    if m and (m[2][0] == "!" and m[2][1:2] != "=" or _LINE.fullmatch(m[2])):
        target, s = m[1], m[2]
    if s[0] == "%":
        if s.startswith("%%"):
            raise MagicError(f"line {number}: a cell magic ({s.split()[0]}) must be the cell's first line")
        lm = _LINE.fullmatch(s)
        if lm is None:
            return None
        name = lm[1]
        if name not in LINE_MAGICS:
            raise MagicError(_unknown(f"%{name}", number))
        return _Magic(number, indent, "line", name, lm[2] or "", target)
    if s[0] == "!" and len(s) > 1 and s[1] != "=":
        bang = s.startswith("!!")
        command = s[2:] if bang else s[1:]
        if not command.strip():
            raise MagicError(f"line {number}: ! needs a shell command after it (!ls)")
        return _Magic(number, indent, "shell", "!" if bang else "", command.strip(), target)
    if target:
        return None
    h = _HELP.fullmatch(s)
    if h and (h[1] or h[3]) and not (h[1] and h[3]):
        return _Magic(number, indent, "help", h[2], h[1] or h[3])
    return None


def _unknown(what: str, number: int) -> str:
    known = ", ".join(f"%{n}" for n in LINE_MAGICS)
    return (f"line {number}: {what} is not a magic llmrepl has (it has {known}, %%time, %%timeit, "
            "!command and obj?); write plain Python instead")


def _cell_magic(lines: list[str]) -> tuple[int, str, str] | None:
    """``(line, name, args)`` when the cell's first non-blank line is ``%%name args``."""
    for number, line in enumerate(lines, 1):
        s = line.strip()
        if not s:
            continue
        if not s.startswith("%%"):
            return None
        m = _LINE.fullmatch(s[1:])
        if m is None:
            raise MagicError(f"line {number}: {s.split()[0]} is not a cell magic llmrepl has")
        if m[1] not in CELL_MAGICS:
            known = ", ".join(f"%%{n}" for n in CELL_MAGICS)
            raise MagicError(f"line {number}: %%{m[1]} is not a cell magic llmrepl has (it has {known}); "
                             "write plain Python instead")
        # a statement on the magic's own line: IPython's %%timeit runs it as setup (and %%time
        # refuses it); ignoring it would run less than the review showed, and a notebook more
        stmt = m[2] or ""
        if m[1] == "timeit":
            stmt = timeit_options(stmt)[3]
        if stmt.strip():
            raise MagicError(f"line {number}: %%{m[1]} takes no statement on its own line ({stmt.strip()!r}); "
                             "put it in the cell's body, or in a cell before")
        return number, m[1], m[2] or ""
    return None


# -- plain Python -----------------------------------------------------------------------------


def transform(code: str) -> str:
    """``code`` with each magic line made a call to the helper, line for line (``code`` itself
    when it holds none). Raises MagicError for a magic llmrepl does not have."""
    if not has_magic(code):
        return code
    lines = code.splitlines(True)
    cell = _cell_magic(lines)
    if cell is not None:
        number, name, args = cell
        body = "".join(lines[number:])
        head = "\n" * (number - 1)
        return f"{head}{HELPER}.cell({name!r}, {args!r}, {body!r}, {number})\n"
    found = _magics(lines)
    if not found:
        return code
    for m in found:
        if m.kind == "line":
            call = f"{HELPER}.line({m.name!r}, {m.args!r})"
        elif m.kind == "shell":
            call = f"{HELPER}.shell({m.args!r}, capture={bool(m.target or m.name)})"
        else:
            call = f"{HELPER}.help({m.name!r}, {m.args == '??'})"
        end = lines[m.line - 1][len(lines[m.line - 1].rstrip("\r\n")):]
        lines[m.line - 1] = f"{m.indent}{m.target + ' = ' if m.target else ''}{call}{end}"
    return "".join(lines)


def as_python(code: str) -> str:
    """``transform(code)``, or ``code`` unchanged when it uses a magic llmrepl does not have
    (for readers that only need the statements: replay, statement counting)."""
    try:
        return transform(code)
    except MagicError:
        return code


def _shell_magics(code: str) -> list[_Magic]:
    """The ``!cmd`` and ``%pip`` lines of a cell, numbered as in ``code``; [] when none or the
    cell does not transform."""
    if not has_magic(code):
        return []
    try:
        lines = code.splitlines(True)
        cell = _cell_magic(lines)
        skip = cell[0] if cell else 0
        found = _magics(lines[skip:], strict=False)
    except MagicError:
        return []
    return [replace(m, line=m.line + skip) for m in found if m.kind == "shell" or (m.kind == "line" and m.name == "pip")]


def shell_commands(code: str) -> list[str]:
    """The shell commands a cell runs (``!cmd`` lines, and ``%pip`` as ``pip ...``), for the
    review to show as such."""
    return [m.args if m.kind == "shell" else f"pip {m.args}" for m in _shell_magics(code)]


def shell_lines(code: str) -> set[int]:
    """The numbers (1-based, as ``splitlines`` counts) of the lines that are ``!command``
    lines the shell runs, for drawing them as shell: not a ``!`` inside a string."""
    return {m.line for m in _shell_magics(code) if m.kind == "shell" and not m.target}


def describe_shell(code: str, limit: int = 10) -> str:
    """For the review: ``runs shell commands:`` and each command on a ``$`` line ("" when the
    cell runs none). Foreign text: the front end sanitizes it."""
    commands = shell_commands(code)
    if not commands:
        return ""
    lines = [f"  $ {c}" for c in commands[:limit]]
    if len(commands) > limit:
        lines.append(f"  ... and {len(commands) - limit} more")
    word = "command" if len(commands) == 1 else "commands"
    return f"this cell runs shell {word}:\n" + "\n".join(lines)


# -- standalone Python (export, risk scan) ------------------------------------------------------


def exportable(code: str) -> str:
    """``code`` as standalone standard-library Python doing the same, line for line (``!ls`` ->
    ``subprocess.run("ls", shell=True)``, ``%cd d`` -> ``os.chdir(...)``); a magic llmrepl does
    not have becomes a comment. What is not Python (a shell command, a file or folder name,
    pip's arguments) is only ever written as a string literal."""
    if not has_magic(code):
        return code
    lines = code.splitlines(True)
    try:
        cell = _cell_magic(lines)
    except MagicError:
        out = [f"# {line.rstrip(chr(13) + chr(10))}\n" for line in lines]
        out[0] = out[0][:-1] + "  (not run: not a cell magic llmrepl has)\n"
        return "".join(out)
    if cell is not None:
        number, name, args = cell
        return _export_cell(lines, number, name, args)
    for m in _magics(lines, strict=False):
        end = lines[m.line - 1][len(lines[m.line - 1].rstrip("\r\n")):]
        lines[m.line - 1] = m.indent + _export_line(m) + (end or "")
    return "".join(lines)


def _export_line(m: _Magic) -> str:
    target = f"{m.target} = " if m.target else ""
    if m.kind == "unknown":
        return f"pass  # not run: {m.args!r} is not a magic llmrepl has"
    if m.kind == "shell":
        if target or m.name:
            run = f"subprocess.run({m.args!r}, shell=True, capture_output=True, text=True).stdout.splitlines()"
            return f"import subprocess; {target or '_ = '}{run}"
        return f"import subprocess; subprocess.run({m.args!r}, shell=True)"
    if m.kind == "help":
        if m.args == "??":
            return f"import inspect; print(inspect.getsource({m.name}))"
        # help() would open a pager in a terminal and stop the script there
        return f"import pydoc; print(pydoc.render_doc({m.name}, renderer=pydoc.plaintext))"
    args = m.args
    if m.name == "time":
        if not _simple(args):  # a compound statement cannot follow a semicolon
            return f"{target}{args}  # %time".rstrip() if args.strip() else "pass  # %time"
        return (f"import time; _t0 = time.perf_counter(); {target}{args.strip()}; "
                "print(f'Wall time: {time.perf_counter() - _t0:.3g} s')")
    if m.name == "timeit":
        try:
            number, _, _, stmt = timeit_options(args)
        except MagicError:
            number, stmt = 0, args
        count = f"{number}, timeit.Timer({stmt!r}, globals=globals()).timeit({number})" if number else (
            f"timeit.Timer({stmt!r}, globals=globals()).autorange()")
        return f"import timeit; _n, _s = {count}; print(f'{{_s / _n * 1e6:.3g}} µs per loop ({{_n}} loops)')"
    if m.name == "pwd":
        return f"import os; {target}os.getcwd()"
    if m.name == "cd":
        where = args.strip() or "~"
        return f"import os; os.chdir(os.path.expanduser({where!r})); {target}None"
    if m.name == "who":
        return f"{target}print(' '.join(sorted(n for n in globals() if not n.startswith('_'))))"
    if m.name == "whos":
        return (f"{target}print('\\n'.join(f'{{n}}  {{type(v).__name__}}' "
                "for n, v in sorted(globals().items()) if not n.startswith('_')))")
    if m.name == "run":
        parts = args.split()
        if parts[:1] == ["-i"]:
            parts = parts[1:]
        path = parts[0] if parts else ""
        return (f"import runpy; {target}globals().update(runpy.run_path({path!r}, init_globals=globals(), "
                "run_name='__main__'))")
    if m.name == "pip":
        return f"import shlex, subprocess, sys; subprocess.run([sys.executable, '-m', *shlex.split({'pip ' + args!r})])"
    return f"pass  # %{m.name} {args}".rstrip()


def timeit_options(args: str) -> tuple[int, int, bool, str]:
    """``-n N -r R -q`` before the statement; the rest is the statement."""
    number, repeat, quiet = 0, 7, False
    rest = args.lstrip()
    while rest.startswith("-"):
        flag, _, tail = rest.partition(" ")
        if flag[:2] in ("-n", "-r") and flag[2:].isdigit():  # -n10, as IPython takes it too
            flag, tail = flag[:2], f"{flag[2:]} {tail}"
        if flag in ("-n", "-r"):
            value, _, tail = tail.lstrip().partition(" ")
            if not value.isdigit() or int(value) < 1:
                raise MagicError(f"%timeit {flag} needs a positive whole number, not {value!r}")
            if flag == "-n":
                number = int(value)
            else:
                repeat = int(value)
        elif flag == "-q":
            quiet = True
        else:
            break  # a statement that starts with a minus sign
        rest = tail.lstrip()
    return number, repeat, quiet, rest


def _simple(stmt: str) -> bool:
    """Whether ``stmt`` is one line of simple statements (it may follow a ``;``)."""
    import ast

    try:
        body = ast.parse(stmt).body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    simple = (ast.Expr, ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Pass, ast.Delete, ast.Import,
              ast.ImportFrom, ast.Raise, ast.Assert, ast.Global, ast.Nonlocal)
    return bool(body) and all(isinstance(b, simple) for b in body)


def _export_cell(lines: list[str], number: int, name: str, args: str) -> str:
    """``%%time``/``%%timeit``: the body (its own magics exported too), timed once."""
    body = exportable("".join(lines[number:]))
    head = "".join(lines[: number - 1])
    tail = "" if body.endswith("\n") or not body else "\n"
    note = "%%timeit, timed once" if name == "timeit" else "%%time"
    return (f"{head}import time; _t0 = time.perf_counter()  # {note}\n{body}{tail}"
            "print(f'Wall time: {time.perf_counter() - _t0:.3g} s')\n")
