"""A cell's Python compiled to run: the code, a trailing expression split off to be evaluated
for its value, and how many top-level statements it has (``ExecResult.done`` on success).

Most cells go through the AST: ``ast.parse`` once, the last statement split off when it is
an expression, the rest compiled from the tree. A cell of one line that plainly assigns to a
name (``x = 1``, ``df.a = f(y)``, ``n += 1``) skips that round trip, which costs about twice
a bare ``compile(source)``: the text alone proves what the AST would say (see
``_ONE_ASSIGNMENT``), so it is compiled from the source, once. The top-level statements are
parsed only when a cell fails (``CellCode.statements``, for ``statements.done_at``).
"""

from __future__ import annotations

import ast
import io
import linecache
import re
import traceback
from types import CodeType

from llmrepl.execution.capture import safe_str

__all__ = ["CellCode", "compile_cell", "compile_error", "show_in_tracebacks"]

# The start of an assignment statement: a name, or a dotted one, then ``=`` or an augmented
# ``op=`` (never ``==``, ``<=``, ``:=``...). On ONE physical line with no ``;`` (and no
# ``\r``, which Python also reads as a line break) the cell is one simple statement, and
# one that starts this way and compiles can only be an assignment: never an expression, so
# there is no value to show, and its statement count is 1. Anything else takes the AST path.
_ONE_ASSIGNMENT = re.compile(r"[^\W\d]\w*(?:\.[^\W\d]\w*)*[ \t]*(?:[-+*/%@&|^]|//|\*\*|>>|<<)?=(?!=)")


class CellCode:
    """One cell, compiled: ``body`` runs, then ``expr`` (None: the cell does not end in an
    expression) is evaluated for the value; ``count`` top-level statements, ``expr``'s
    included. ``statements()`` gives the statements themselves."""

    __slots__ = ("body", "expr", "count", "python", "filename", "_statements")

    def __init__(self, body: CodeType, expr: CodeType | None, count: int, python: str, filename: str,
                 statements: list[ast.stmt] | None = None) -> None:
        self.body, self.expr, self.count = body, expr, count
        self.python, self.filename = python, filename
        self._statements = statements

    def statements(self) -> list[ast.stmt]:
        """The cell's top-level statements, parsed now if the compile did not keep them
        ([] if they cannot be had: ``done_at`` then answers None, not known)."""
        if self._statements is None:
            try:
                self._statements = ast.parse(self.python, self.filename, "exec").body
            except (SyntaxError, ValueError, RecursionError, MemoryError):
                self._statements = []
        return self._statements


def compile_cell(python: str, filename: str) -> CellCode:
    """Compile a cell's Python (magic lines already rewritten) as ``filename``. Raises what
    ``compile`` raises: SyntaxError, ValueError (NUL bytes), RecursionError, MemoryError."""
    if ";" not in python and "\r" not in python and "\n" not in python[:-1] and _ONE_ASSIGNMENT.match(python):
        return CellCode(compile(python, filename, "exec", dont_inherit=True), None, 1, python, filename)
    tree = ast.parse(python, filename, "exec")
    stmts = tree.body[:]
    expr = None
    if stmts and isinstance(stmts[-1], ast.Expr):
        tree.body.pop()
        expr = compile(ast.Expression(stmts[-1].value), filename, "eval", dont_inherit=True)
    return CellCode(compile(tree, filename, "exec", dont_inherit=True), expr, len(stmts), python, filename, stmts)


def compile_error(exc: BaseException) -> tuple[str, str]:
    """(error_type, error) for a cell that did not compile: a SyntaxError as Python shows it
    (NUL bytes, a ValueError, count as one); anything else (RecursionError, MemoryError,
    Ctrl-C) in one line."""
    error_type = "SyntaxError" if isinstance(exc, ValueError) else type(exc).__name__
    if isinstance(exc, SyntaxError):  # IndentationError and TabError keep their names
        return error_type, "".join(traceback.format_exception_only(type(exc), exc))
    return error_type, f"{error_type}: {safe_str(exc)}\n"


def show_in_tracebacks(source: str, filename: str) -> None:
    """Make the cell's text what tracebacks quote for ``filename`` (``linecache``), split
    where Python's tokenizer ends a line (LF, CR LF or CR). Not ``splitlines``: it also splits
    at a form feed, NEL, U+2028..., and every line after one would be misquoted."""
    lines = io.StringIO(source, newline="").readlines()
    if lines and not lines[-1].endswith("\n"):  # else 3.11+ puts a traceback's carets one column right
        lines[-1] += "\n"
    linecache.cache[filename] = (len(source), None, lines, filename)
