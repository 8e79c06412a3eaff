"""A cell's top-level statements and the names they bind and read: pure ``ast`` (magic
lines read as the calls ``magics`` makes of them), stdlib only.

A replay runs what completed of a cell, never the statement that failed: these functions
map a line (from a traceback) to the statement holding it, cut a cell's source after its
first ``done`` statements (exact slices of the original text), and tell, statically, which
names a piece of code binds at top level and which it reads without binding them first.
"""

from __future__ import annotations

import ast
from bisect import bisect_right
from types import CodeType

from llmrepl.execution.magics import as_python

__all__ = ["bound_and_used", "completed_part", "done_at", "statement_at", "top_level"]


def _parse(code: str) -> list[ast.stmt] | None:
    """The cell's top-level statements, read as the executor runs it: magic lines (``%time``,
    ``!ls``) as the calls they become, line for line (``magics.as_python``)."""
    try:
        return ast.parse(as_python(code), "<cell>", "exec").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def _first_line(stmt: ast.stmt) -> int:
    """A decorated def or class starts at its first decorator."""
    decorators = getattr(stmt, "decorator_list", None) or []
    return min([stmt.lineno, *(d.lineno for d in decorators)])


def _start(stmt: ast.stmt) -> tuple[int, int]:
    """(line, column in UTF-8 bytes) where a statement starts, decorators included."""
    decorators = getattr(stmt, "decorator_list", None) or []
    if decorators:
        first = min(decorators, key=lambda d: (d.lineno, d.col_offset))
        return first.lineno, 0  # the '@' is before the decorator expression
    return stmt.lineno, stmt.col_offset


def starts(body: list[ast.stmt]) -> list[tuple[int, int]]:
    """Where each top-level statement starts, as (line, byte column): for ``index_at``."""
    return [_start(s) for s in body]


def index_at(stmt_starts: list[tuple[int, int]], line: int, col: int = 0) -> int | None:
    """Index of the statement holding (line, col) given where each starts (``starts``). With
    ``col`` 0 and two statements on that line (``a = 1; b = f()``) the first is taken: a
    replay then stops early rather than run a statement that may have failed."""
    if not stmt_starts or line < stmt_starts[0][0]:
        return None
    return max(bisect_right(stmt_starts, (line, col)) - 1, 0)


def done_at(exc: BaseException, body: CodeType, expr: CodeType | None, stmts: list[ast.stmt]) -> int | None:
    """How many top-level statements completed before ``exc`` surfaced: the index of the
    statement the cell's own module frame was running (None: that frame is not in the
    traceback, e.g. a Ctrl-C between statements and the value's repr)."""
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code is expr:
            return len(stmts) - 1
        if code is body:
            line, col = tb.tb_lineno, 0
            positions = getattr(code, "co_positions", None)  # Python 3.11+
            try:  # the exact column tells apart statements that share a line (`a = 1; f()`)
                here = list(positions())[: tb.tb_lasti // 2 + 1] if positions is not None else []
                # an instruction without a line (a loop's jump back, where a Ctrl-C may land):
                # the nearest one before it that has one is in the same statement
                pos = next((p for p in reversed(here) if p[0] is not None), None)
                if pos is not None and (line is None or pos[0] == line):
                    line, col = pos[0], pos[2] or 0
            except (IndexError, ValueError, TypeError):
                pass
            return index_at(starts(stmts), line, col) if line is not None else None
        tb = tb.tb_next
    return None


def top_level(code: str) -> list[tuple[int, int]]:
    """(first_line, last_line), 1-based, of each top-level statement; [] on a SyntaxError."""
    body = _parse(code)
    if body is None:
        return []
    return [(_first_line(s), s.end_lineno or s.lineno) for s in body]


def statement_at(code: str, line: int, col: int = 0) -> int | None:
    """Index of the top-level statement holding ``line`` (None: no statement does, or the
    code does not parse). ``col`` (UTF-8 bytes) picks among statements sharing the line."""
    body = _parse(code)
    if not body:
        return None
    last = body[-1].end_lineno or body[-1].lineno
    if line > last:
        return None
    return index_at(starts(body), line, col)


def _byte_col_to_chars(line: str, col: int) -> int:
    return len(line.encode("utf-8")[:col].decode("utf-8", "replace"))


def completed_part(code: str, done: int | None) -> str:
    """The source of the first ``done`` top-level statements, as written (the comments and
    blank lines between them kept): "" for 0 or None, ``code`` itself when done >= total."""
    if not done or done <= 0:
        return ""
    body = _parse(code)
    if body is None:
        return ""
    if done >= len(body):
        return code
    lines = code.splitlines(True)
    last = body[done - 1]
    end_line = last.end_lineno or last.lineno
    next_line, next_col = _start(body[done])
    head = lines[: end_line - 1]
    tail = lines[end_line - 1] if end_line - 1 < len(lines) else ""
    if next_line == end_line:  # `a = 1; b = f()`: cut the line where the next one starts
        end_col = last.end_col_offset if last.end_col_offset is not None else len(tail.encode())
        tail = tail[: _byte_col_to_chars(tail, end_col)].rstrip() + "\n"
    text = "".join(head) + tail
    return text if text.endswith("\n") else text + "\n"


# -- names -------------------------------------------------------------------------------


def _assigned(nodes: list[ast.stmt], params: ast.arguments | None = None) -> set[str]:
    """The names a function body makes local: its parameters and every name it binds,
    without looking into nested functions, classes or comprehensions (their own scopes);
    names declared ``global`` or ``nonlocal`` are not local."""
    local: set[str] = set()
    declared: set[str] = set()
    if params is not None:
        args = [*params.posonlyargs, *params.args, *params.kwonlyargs]
        args += [a for a in (params.vararg, params.kwarg) if a is not None]
        local.update(a.arg for a in args)
    todo: list[ast.AST] = list(nodes)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            local.add(node.name)
            todo.extend(getattr(node, "decorator_list", []))
            continue
        if isinstance(node, (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
            continue
        if isinstance(node, (ast.Global, ast.Nonlocal)):
            declared.update(node.names)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            local.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            local.update(_import_names(node))
        elif isinstance(node, ast.ExceptHandler) and node.name:
            local.add(node.name)
        elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
            local.add(node.name)
        elif isinstance(node, ast.MatchMapping) and node.rest:
            local.add(node.rest)
        todo.extend(ast.iter_child_nodes(node))
    return local - declared


def _import_names(node: ast.Import | ast.ImportFrom) -> list[str]:
    names = []
    for alias in node.names:
        if alias.name == "*":
            continue
        names.append(alias.asname or alias.name.split(".")[0])
    return names


class _Names(ast.NodeVisitor):
    """Walks a module in evaluation order: ``bound`` are the names its top level binds,
    ``used`` the names it reads before (or without) binding them; reads inside functions and
    lambdas happen when they are called, so they count only if the code never binds them."""

    def __init__(self) -> None:
        self.bound: set[str] = set()
        self.used: set[str] = set()
        self.deferred: set[str] = set()   # globals read by function bodies
        self.scopes: list[tuple[str, set[str]]] = []  # (kind, locals) innermost last

    # names
    def _load(self, name: str) -> None:
        for _kind, names in reversed(self.scopes):
            if name in names:
                return
        if any(kind == "function" for kind, _ in self.scopes):
            self.deferred.add(name)
        elif name not in self.bound:
            self.used.add(name)

    def _store(self, name: str) -> None:
        if self.scopes:
            self.scopes[-1][1].add(name)
        else:
            self.bound.add(name)

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Store):
            self._store(node.id)
        else:  # Load, and Del: deleting needs the name and binds nothing
            self._load(node.id)

    # statements, in the order Python evaluates their parts
    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        for target in node.targets:
            self.visit(target)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self.visit(node.value)
        if isinstance(node.target, ast.Name):
            self._load(node.target.id)
            self._store(node.target.id)
        else:
            self.visit(node.target)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)
            self.visit(node.target)
        elif not isinstance(node.target, ast.Name):
            self.visit(node.target)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)
        # a walrus in a comprehension binds in the enclosing scope
        scopes = self.scopes
        while scopes and scopes[-1][0] == "comprehension":
            scopes = scopes[:-1]
        if scopes:
            scopes[-1][1].add(node.target.id)
        else:
            self.bound.add(node.target.id)

    def visit_For(self, node: ast.For | ast.AsyncFor) -> None:
        self.visit(node.iter)
        self.visit(node.target)
        for stmt in [*node.body, *node.orelse]:
            self.visit(stmt)

    visit_AsyncFor = visit_For

    def visit_With(self, node: ast.With | ast.AsyncWith) -> None:
        for item in node.items:
            self.visit(item.context_expr)
            if item.optional_vars is not None:
                self.visit(item.optional_vars)
        for stmt in node.body:
            self.visit(stmt)

    visit_AsyncWith = visit_With

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.type is not None:
            self.visit(node.type)
        if node.name:
            self._store(node.name)
        for stmt in node.body:
            self.visit(stmt)

    def visit_Import(self, node: ast.Import) -> None:
        for name in _import_names(node):
            self._store(name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        for name in _import_names(node):
            self._store(name)

    def visit_Global(self, node: ast.Global) -> None:
        pass

    def visit_MatchAs(self, node: ast.MatchAs) -> None:
        if node.pattern is not None:
            self.visit(node.pattern)
        if node.name:
            self._store(node.name)

    def visit_MatchStar(self, node: ast.MatchStar) -> None:
        if node.name:
            self._store(node.name)

    def visit_MatchMapping(self, node: ast.MatchMapping) -> None:
        for key in node.keys:
            self.visit(key)
        for pattern in node.patterns:
            self.visit(pattern)
        if node.rest:
            self._store(node.rest)

    # scopes
    def _arguments(self, args: ast.arguments) -> None:
        """Defaults and annotations are evaluated where the function is defined."""
        for default in [*args.defaults, *(d for d in args.kw_defaults if d is not None)]:
            self.visit(default)
        for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]:
            if arg is not None and arg.annotation is not None:
                self.visit(arg.annotation)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for decorator in node.decorator_list:
            self.visit(decorator)
        self._arguments(node.args)
        if node.returns is not None:
            self.visit(node.returns)
        self.scopes.append(("function", _assigned(node.body, node.args)))
        for stmt in node.body:
            self.visit(stmt)
        self.scopes.pop()
        self._store(node.name)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self._arguments(node.args)
        self.scopes.append(("function", _assigned([], node.args)))
        self.visit(node.body)
        self.scopes.pop()

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for expr in [*node.decorator_list, *node.bases, *(k.value for k in node.keywords)]:
            self.visit(expr)
        self.scopes.append(("class", set()))
        for stmt in node.body:
            self.visit(stmt)
        self.scopes.pop()
        self._store(node.name)

    def _comprehension(self, node: ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp,
                       parts: list[ast.expr]) -> None:
        generators = node.generators
        self.visit(generators[0].iter)  # evaluated in the enclosing scope
        self.scopes.append(("comprehension", set()))
        for i, gen in enumerate(generators):
            if i:
                self.visit(gen.iter)
            self.visit(gen.target)
            for cond in gen.ifs:
                self.visit(cond)
        for part in parts:
            self.visit(part)
        self.scopes.pop()

    def visit_ListComp(self, node: ast.ListComp) -> None:
        self._comprehension(node, [node.elt])

    def visit_SetComp(self, node: ast.SetComp) -> None:
        self._comprehension(node, [node.elt])

    def visit_GeneratorExp(self, node: ast.GeneratorExp) -> None:
        self._comprehension(node, [node.elt])

    def visit_DictComp(self, node: ast.DictComp) -> None:
        self._comprehension(node, [node.key, node.value])


def bound_and_used(code: str) -> tuple[set[str], set[str]]:
    """(names the code binds at top level, names it reads before or without binding them).
    Static and approximate (``globals()[...]``, ``exec`` and ``from m import *`` are not
    seen); "" or code that does not parse -> (set(), set())."""
    body = _parse(code)
    if not body:
        return set(), set()
    walker = _Names()
    for stmt in body:
        walker.visit(stmt)
    used = walker.used | (walker.deferred - walker.bound)
    return walker.bound, used
