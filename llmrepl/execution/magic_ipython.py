"""The magics where IPython, not llmrepl, may run a cell: what the risk scan must read as
code, and a cell made safe for a notebook.

IPython (``--kernel``, a notebook's Run All) reads some magic lines unlike llmrepl: it
evaluates ``{expr}`` in ``!`` lines and in most magics' arguments, joins a line ending in
``\\`` with the next, hands ``%pip``'s arguments to a shell, runs ``%%timeit``'s setup
statement, and has magics llmrepl does not (``%%bash``, ``%sx``). ``embedded_statements``
gives the risk scan the Python hidden in such strings; ``for_ipython`` writes a cell for a
notebook so IPython does what llmrepl did. Stdlib only.
"""

from __future__ import annotations

import re

from llmrepl.execution.magics import (
    MagicError,
    _cell_magic,
    _export_line,
    _magics,
    exportable,
    has_magic,
    timeit_options,
)

__all__ = ["embedded_statements", "for_ipython"]


def embedded_statements(code: str) -> list[str]:
    """The Python a magic runs from a string, for the risk scan to read as code: ``%timeit
    STMT``'s statement, and the ``{expr}`` IPython evaluates in a ``!`` line or a magic's
    arguments (with ``--kernel``, IPython runs the cell); [] when none or it does not transform."""
    if not has_magic(code):
        return []
    try:
        lines = code.splitlines(True)
        cell = _cell_magic(lines)
        if cell is not None:
            return embedded_statements("".join(lines[cell[0]:]))
        found = _magics(lines, strict=False)
    except MagicError:
        return []
    out = []
    for m in found:
        if m.kind == "line" and m.name == "timeit":
            try:
                out.append(timeit_options(m.args)[3])
            except MagicError:
                out.append(m.args)
        elif m.kind == "shell" or (m.kind == "line" and m.name in (*_IPYTHON_EXPANDS, "pip")):
            out += _ipython_fields(m.args)
    return out


def _ipython_fields(args: str) -> list[str]:
    """The expressions IPython's ``var_expand`` evaluates in ``args`` (``{expr}``, parsed as
    it parses them: ``string.Formatter``, a format spec joined back on)."""
    import string

    try:
        fields = [(name, spec) for _, name, spec, _ in string.Formatter().parse(args) if name]
    except ValueError:
        return []  # IPython leaves such a line as it is
    return [part for name, spec in fields for part in (name, f"({name}:{spec})" if spec else "")]


# IPython expands {expr} and $name in these magics' arguments and in `!` lines (llmrepl never
# does), joins a line ending in a backslash with the next, and hands %pip's arguments to a shell
_IPYTHON_EXPANDS = ("cd", "run", "who", "whos", "pwd", "matplotlib")
_PLAIN_PIP = re.compile(r"[\w.,:/@=+ -]*")


def for_ipython(code: str) -> str:
    """``code`` for a notebook that IPython runs: a magic line IPython would read differently
    from llmrepl (``!echo {os.system("x")}`` evaluates the braces there; ``%pip a; b`` runs
    ``b`` in a shell) is written as the standard-library Python that does what llmrepl did,
    and a magic llmrepl does not have (``%%bash``, ``%env``: the cell never ran) as comments."""
    if not has_magic(code):
        return code
    lines = code.splitlines(True)
    try:
        cell = _cell_magic(lines)
    except MagicError:  # never ran in llmrepl (a journal may say otherwise): comments only
        return exportable(code)
    if cell is not None:
        return "".join(lines[: cell[0]]) + for_ipython("".join(lines[cell[0]:]))
    for m in _magics(lines, strict=False):
        args = m.args
        differs = any(c in args for c in "{}$") or args.rstrip().endswith("\\")
        if m.kind == "unknown" or (m.kind == "shell" and differs) or (m.kind == "line" and (
                (m.name in _IPYTHON_EXPANDS and differs) or (m.name == "pip" and not _PLAIN_PIP.fullmatch(args)))):
            end = lines[m.line - 1][len(lines[m.line - 1].rstrip("\r\n")):]
            lines[m.line - 1] = m.indent + _export_line(m) + end
    return "".join(lines)
