"""Compiling a cell (execution/cell_code.py): a one-line assignment is compiled from its text
alone, and gives the same record as the AST path; the statements are parsed only when a
failed cell needs them."""

from __future__ import annotations

import ast
import re
import warnings
from types import SimpleNamespace
from typing import Any

import pytest

from llmrepl.execution import cell_code
from llmrepl.execution.cell_code import compile_cell
from llmrepl.execution.executor import ExecResult, Executor
from llmrepl.execution.statements import completed_part

# One-line cells near the edge of the text check, each way: (cell, takes the one-line path).
ONE_LINERS = [
    ("x = 1", True),
    ("x = 1\n", True),
    ("x = 1  # a comment; with a semicolon", False),
    ("x=1", True),
    ("x = y = 3", True),
    ("x = lambda: 1", True),
    ("x = 1 if True else 2", True),
    ("x = {'k': [1, 2]}", True),
    ("x = 'a;b'", False),
    ("x = 'a # b'", True),
    ("x = 1 / 0", True),
    ("x = undefined_name", True),
    ("x += 1", True),
    ("n = 1\nn += 1", False),
    ("x **= 2", True),
    ("x //= 2", True),
    ("x >>= 1", True),
    ("x.y = 1", True),
    ("obj.attr = 1", True),
    ("obj.attr.deeper = 1", True),
    ("match = 1", True),
    ("print = 5", True),
    ("ñ = 3", True),
    ("ﬁ = 3", True),  # NFKC: the name is "fi"
    ("x² = 1", True),  # not a name: a SyntaxError either way
    ("x = (yield)", True),  # a SyntaxError from the compiler, not the parser
    ("__debug__ = 1", True),
    ("x = 1 +", True),
    ("x = (1", True),
    ("x = '''", True),
    ("x = 1 \\", True),
    ("x = 1\x00", True),  # NUL: a ValueError, reported as a SyntaxError
    ("x = 1\xa0", True),
    ("x = 1\x0c", True),
    ("x = 1; y = 2", False),
    ("x = 1\ry = 2", False),
    ("x = 1\r\n", False),
    ("x = 1\n\n", False),
    ("x == 1", False),
    ("x <= 1", False),
    ("x != 1", False),
    ("(x := 1)", False),
    ("x := 1", False),
    ("x: int = 1", False),
    ("a, b = 1, 2", False),
    ("d[0] = 1", False),
    ("  x = 1", False),
    ("f(x=1)", False),
    ("x = 1 is 1", True),  # a SyntaxWarning, shown as before
]


def _count_parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The cells ``ast.parse`` is asked for from now on (a traceback's own parses of a
    line's pieces, which name no file, are not counted)."""
    parses: list[str] = []
    real_parse = ast.parse

    def counting_parse(source: str, filename: str = "<unknown>", mode: str = "exec", **kwargs: Any) -> ast.AST:
        if filename.startswith("<cell-"):
            parses.append(source)
        return real_parse(source, filename, mode, **kwargs)

    monkeypatch.setattr(cell_code.ast, "parse", counting_parse)
    return parses


def _record(r: ExecResult) -> dict[str, object]:
    fields = {name: getattr(r, name) for name in ExecResult.__slots__ if name != "duration"}
    if isinstance(fields["value_repr"], str):
        fields["value_repr"] = re.sub(" at 0x[0-9a-f]+", "", fields["value_repr"])
    fields["value_data"] = None if r.value_data is None else r.value_data.text
    return fields


def _run_both(src: str, monkeypatch: pytest.MonkeyPatch) -> tuple[ExecResult, ExecResult, Executor, Executor]:
    """The cell as the second cell of two fresh executors (after ``x = 2``, with an ``obj``),
    through the path it takes and through the AST path."""
    runs = []
    for ast_only in (False, True):
        with monkeypatch.context() as m:
            if ast_only:
                m.setattr(cell_code, "_ONE_ASSIGNMENT", re.compile(r"(?!)"))
            ex = Executor()
            ex.namespace["obj"] = SimpleNamespace()
            ex.run("x = 2")
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                r = ex.run(src)
            r.repairs.extend(f"warning {w.category.__name__}: {w.message}" for w in caught)
            runs.append((r, ex))
    (fast, ex_fast), (slow, ex_slow) = runs
    return fast, slow, ex_fast, ex_slow


@pytest.mark.parametrize(("src", "one_line"), ONE_LINERS)
def test_a_one_line_assignment_gives_the_ast_paths_record(src: str, one_line: bool,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as m, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parses = _count_parses(m)
        try:
            code = compile_cell(src, "<cell-t>")
        except (SyntaxError, ValueError):
            code = None
    if code is not None:
        assert (parses == []) == one_line, src
    fast, slow, ex_fast, ex_slow = _run_both(src, monkeypatch)
    assert _record(fast) == _record(slow), src
    assert _user_names(ex_fast) == _user_names(ex_slow), src


def _user_names(ex: Executor) -> dict[str, str]:
    return {name: re.sub(" at 0x[0-9a-f]+", "", repr(value)) for name, value in ex.user_variables().items()}


def test_a_failed_one_line_cell_still_says_how_far_it_got() -> None:
    ex = Executor()
    r = ex.run("total = 1 / 0")
    assert r.error_type == "ZeroDivisionError" and r.done == 0
    assert r.error is not None and 'File "<cell-1>", line 1, in <module>' in r.error and "total = 1 / 0" in r.error
    assert completed_part("total = 1 / 0", r.done) == ""  # a replay runs none of it
    r = ex.run("total = 6 * 7")
    assert r.ok and r.done == 1 and ex.namespace["total"] == 42
    assert completed_part("total = 6 * 7", r.done) == "total = 6 * 7"  # all of it


def test_the_statements_are_parsed_only_for_a_failed_one_line_cell(monkeypatch: pytest.MonkeyPatch) -> None:
    parses = _count_parses(monkeypatch)
    ex = Executor()
    for _ in range(3):
        assert ex.run("x = 1").ok
    assert parses == []
    r = ex.run("y = x.missing")
    assert r.error_type == "AttributeError" and r.done == 0 and parses == ["y = x.missing"]
    r = ex.run("a = 1\nb = a.missing\nc = 3")  # the AST path parses once, and keeps the statements
    assert r.error_type == "AttributeError" and r.done == 1 and parses[1:] == ["a = 1\nb = a.missing\nc = 3"]


def test_compiled_cell_parts() -> None:
    code = compile_cell("a = 1\nb = 2\na + b", "<cell-9>")
    assert code.count == 3 and code.expr is not None and code.body.co_filename == "<cell-9>"
    assert [type(s).__name__ for s in code.statements()] == ["Assign", "Assign", "Expr"]
    code = compile_cell("a = 1", "<cell-10>")
    assert code.count == 1 and code.expr is None and code.body.co_filename == "<cell-10>"
    assert [type(s).__name__ for s in code.statements()] == ["Assign"]
    assert compile_cell("", "<cell-11>").count == 0
