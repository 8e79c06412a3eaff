"""Which way Enter sends a line: run it as Python, or ask the model.

Pure logic on the text and the names the namespace defines; no terminal, no execution of
anything. The rule is conservative: input is Python only when it parses *and* looks like
code (docs/usage.md, "One prompt, two languages"):

- a statement that only code has: an assignment, an import, ``def``/``class``/``for``/
  ``while``/``with``/``try``/``if``, ``del``, ``assert`` (bare keywords such as ``pass``,
  ``continue`` or ``return`` are English words, and go to the model);
- an expression built on something real: a call, attribute access or subscript whose root
  is a defined name, a builtin, or a literal (``df.describe()``, ``print(x)``, ``"a,b".split(",")``);
  a bare defined name (``df``); operators, tuples and lists of such parts (``a, b``,
  ``x > 3``, ``2 ** 10``); comprehensions, lambdas, f-strings;
- a magic: a line starting with ``%`` or ``!``, or ``name?`` / ``name??`` on a defined name.

Everything else goes to the model: single English words (``help``, ``continue``), sentences
that happen to parse (``not working``), undefined names (``计算每列的平均值`` is a valid
identifier), bare literals (an answer such as ``42`` or ``None`` to the model's question).
``/py CODE`` forces Python and ``/ask TEXT`` forces the model.
"""

from __future__ import annotations

import ast
import builtins
import re
import textwrap
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass

from llmrepl.execution.risk import hidden_characters

__all__ = ["Route", "route", "looks_like_python", "defined_names", "ASK", "LEAVE"]

ASK = "/ask"
LEAVE = frozenset({"exit", "exit()", "quit", "quit()"})  # IPython's habit: these leave

_BUILTINS = frozenset(vars(builtins))
# statements that are single English words when typed alone ("pass", "continue", "return"),
# or read as prose ("global warming"); typed at the prompt they do nothing
_WORD_STATEMENTS = (ast.Pass, ast.Break, ast.Continue, ast.Global, ast.Nonlocal)
_MAGIC = re.compile(r"%%?[A-Za-z_]")  # %time, %%timeit; "% of rows" is prose
_SHELL = re.compile(r"![^\s=!]")      # !ls; "! " and "!=" are not commands
# df?  df.merge??  ?df: IPython's help (prose such as "why?" fails the name check)
_HELP = re.compile(r"(?:\?\??)?([^\W\d]\w*(?:\.[^\W\d]\w*)*)\s*(?:\?\??)?")
_ASSIGN_MAGIC = re.compile(r"[^\W\d]\w*[ \t]*=[ \t]*[%!]")  # files = !ls
_MAX_CHARS = 1_000_000  # beyond this an input is not parsed: it goes to the model as typed
_is_magic: Callable[[str], bool] | None = None


@dataclass(frozen=True)
class Route:
    """Where an input goes: ``"python"`` (run ``text`` directly), ``"model"`` (send ``text``),
    or ``"command"`` (dispatch ``text`` as a slash command); ``reason`` says why, briefly."""

    kind: str
    text: str
    reason: str = ""


def route(text: str, defined: Container[str]) -> Route:
    """Decide where ``text``, as typed at the prompt, goes (``defined``: the namespace's names)."""
    line = text.strip()
    if line in LEAVE:
        return Route("command", "/exit", "exit/quit leave, as in IPython")
    if line == ASK or line.startswith(ASK + " ") or line.startswith(ASK + "\n"):
        rest = line[len(ASK):].strip()
        return Route("model", rest, "/ask") if rest else Route("command", line, "/ask without text")
    if len(line) > 1 and line[0] == "/" and line[1].isalpha():
        if line.startswith("/py ") or line.startswith("/py\n"):
            return Route("command", line, "/py forces Python")
        return Route("command", line, "a slash command")
    code = textwrap.dedent(text).strip("\n").rstrip()
    reason = _python_reason(code, defined)
    if reason:
        return Route("python", code, reason)
    return Route("model", text, "not code" if line else "empty")


def looks_like_python(text: str, defined: Container[str]) -> bool:
    """True when ``text`` (no slash command) would run as Python."""
    return bool(_python_reason(textwrap.dedent(text).strip("\n").rstrip(), defined))


def defined_names(namespace: Mapping[str, object]) -> Container[str]:
    """The names of ``namespace`` that count as defined: the user's variables and IPython's
    history names (``_``, ``_3``, ``_out``), not llmrepl's injected ``exit``/``quit``/``display``
    nor dunders."""
    return _Defined(namespace)


class _Defined:
    def __init__(self, namespace: Mapping[str, object]) -> None:
        self.namespace = namespace

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        try:
            value = self.namespace[name]
        except Exception:  # missing; or a hostile mapping: not defined, as far as routing cares
            return False
        if name in ("_", "_out") or (name[:1] == "_" and name[1:].isdigit()):
            return True
        from llmrepl.execution.namespace import is_user_name

        return is_user_name(name, value)


# -- the rule ------------------------------------------------------------------------------


def _python_reason(code: str, defined: Container[str]) -> str:
    """Why ``code`` is Python ("" when it is not)."""
    if not code.strip() or len(code) > _MAX_CHARS or hidden_characters(code):
        return ""  # hidden characters: what shows is not what would run (the model's cells are refused)
    first = code.lstrip().split("\n", 1)[0]
    if first[:1] in ("%", "!"):
        return "a magic" if _magic(first) else ""
    if "\n" not in code and ("?" in (code[0], code[-1])):
        m = _HELP.fullmatch(code)
        return "help on a defined name (name?)" if m and _known(m.group(1).split(".")[0].strip(), defined) else ""
    if "\n" not in code and _ASSIGN_MAGIC.match(code):
        return "a magic's output assigned" if _magic(code.split("=", 1)[1]) else ""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):
        return ""
    if not tree.body:
        return ""  # only comments: "# Analysis" is a heading
    try:
        known = _Known(defined, tree, code)
        for stmt in tree.body:  # a statement only code has decides at once
            if _strong(stmt, known):
                return f"{type(stmt).__name__} statement"
        for stmt in tree.body:
            if not (isinstance(stmt, ast.Expr) and _codelike(stmt.value, known, top=True)):
                return ""
    except RecursionError:  # nested deeper than the walk goes: not something typed as a question
        return ""
    return "an expression on defined names"


def _magic(first: str) -> bool:
    line = first.strip()
    if not (_MAGIC.match(line) or _SHELL.match(line)):
        return False
    check = _magic_check()
    if check is None:
        return True
    # a cell magic (%%time) is judged by its name as a line magic's (%time)
    return check(line[1:] if line.startswith("%%") else line)


def _magic_check() -> Callable[[str], bool] | None:
    """The magics module's own ``is_magic`` (stricter: it knows which magics exist)."""
    global _is_magic
    if _is_magic is None:
        try:
            from llmrepl.execution.magics import is_magic
        except ImportError:
            return None
        _is_magic = is_magic
    return _is_magic


class _Known:
    """Names that count: the namespace's, and those the input binds itself (found on first
    need: most inputs are decided by their first statement, and a big paste is walked once)."""

    def __init__(self, defined: Container[str], tree: ast.Module, source: str) -> None:
        self.defined = defined
        self.tree = tree
        self.source = source
        self._bound: set[str] | None = None
        self._lines: list[str] | None = None

    def line(self, number: int) -> str:
        """Line ``number`` (1-based) of the input."""
        if self._lines is None:
            self._lines = self.source.split("\n")
        return self._lines[number - 1] if 0 < number <= len(self._lines) else ""

    @property
    def bound(self) -> set[str]:
        if self._bound is None:
            self._bound = _bound(self.tree)
        return self._bound

    def user(self, name: str) -> bool:
        return name in self.defined or name in self.bound

    def any(self, name: str) -> bool:
        return self.user(name) or name in _BUILTINS


def _known(name: str, defined: Container[str]) -> bool:
    return name in defined or name in _BUILTINS


def _bound(tree: ast.Module) -> set[str]:
    """Names the input itself binds (so a paste that defines and then uses them is code)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def _strong(stmt: ast.stmt, known: _Known) -> bool:
    """A statement only code has."""
    if isinstance(stmt, ast.Expr) or isinstance(stmt, _WORD_STATEMENTS):
        return False
    if isinstance(stmt, ast.Return):
        return stmt.value is not None and _codelike(stmt.value, known)
    if isinstance(stmt, ast.Raise):
        return stmt.exc is not None and _codelike(stmt.exc, known)
    if isinstance(stmt, ast.Assert):  # "assert dominance" is prose; assert len(df) > 0 is code
        return _codelike(stmt.test, known)
    if isinstance(stmt, ast.AnnAssign) and stmt.value is None:
        # "Note: slow" parses as an annotation; "x: int" is code
        ann = stmt.annotation
        return isinstance(stmt.target, ast.Name) and isinstance(ann, (ast.Name, ast.Attribute, ast.Subscript)) \
            and _root_known(ann, known, builtins_ok=True)
    return True


def _root(node: ast.expr) -> ast.expr:
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node


def _root_known(node: ast.expr, known: _Known, *, builtins_ok: bool) -> bool:
    root = _root(node)
    if isinstance(root, ast.Name):
        return known.any(root.id) if builtins_ok else known.user(root.id)
    # a literal, a display, a parenthesised expression: "abc".upper(), [1, 2][0], (a + b).sum()
    return not isinstance(root, ast.Starred)


def _codelike(node: ast.expr, known: _Known, *, top: bool = False) -> bool:
    """Whether an expression looks like code (``top``: the whole statement, where a bare
    literal is an answer to the model, not code)."""
    if isinstance(node, ast.Name):
        return known.user(node.id)
    if isinstance(node, ast.Constant):
        return not top
    if isinstance(node, ast.Call):
        if not _root_known(node.func, known, builtins_ok=True):
            return False
        if isinstance(node.func, ast.Name):
            # "help (me)", "sales (2023)": prose with a parenthesis; code writes f(x)
            return _adjacent_paren(node, known)
        return True
    if isinstance(node, (ast.Attribute, ast.Subscript)):
        return _root_known(node, known, builtins_ok=True)
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return bool(node.elts) and all(_codelike(e, known) for e in node.elts if not isinstance(e, ast.Starred))
    if isinstance(node, ast.Dict):
        return all(_codelike(v, known) for v in node.values) and all(
            k is None or _codelike(k, known) for k in node.keys)
    if isinstance(node, ast.BinOp):
        return _codelike(node.left, known) and _codelike(node.right, known)
    if isinstance(node, ast.UnaryOp):
        return _codelike(node.operand, known)
    if isinstance(node, ast.BoolOp):
        return all(_codelike(v, known) for v in node.values)
    if isinstance(node, ast.Compare):
        return _codelike(node.left, known) and all(_codelike(c, known) for c in node.comparators)
    if isinstance(node, ast.IfExp):
        return all(_codelike(n, known) for n in (node.body, node.test, node.orelse))
    if isinstance(node, ast.JoinedStr):
        return True
    if isinstance(node, (ast.Await, ast.Yield, ast.YieldFrom)):  # "await approval", "yield results"
        return node.value is not None and _codelike(node.value, known)
    if isinstance(node, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.Lambda, ast.NamedExpr)):
        return True
    return False


def _adjacent_paren(call: ast.Call, known: _Known) -> bool:
    """Whether the ``(`` of a call follows its name directly (``help(x)``, not ``help (x)``)."""
    func = call.func
    if func.end_lineno is None or func.end_col_offset is None:
        return True
    at = func.end_col_offset  # a UTF-8 byte offset
    return known.line(func.end_lineno).encode("utf-8")[at:at + 1] == b"("
