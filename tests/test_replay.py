"""Replaying exactly what ran (issue 14, items 1, 2 and 5): how far a cell got, the statements
and names of a cell, the replay plan, ``--resume`` showing and running it, and numbers that
never repeat after a resume.

Engine level (fast): sessions are built with ``Session.run_direct`` into a real journal, then
resumed into a fresh Session as ``llmrepl --resume`` does. The pty version, with a real
Ctrl-C, is ``tests/e2e/test_replay_e2e.py``.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from llmrepl.engine.protocols import NullDisplay
from llmrepl.engine.resume import resume
from llmrepl.engine.session import Session
from llmrepl.execution.executor import Executor
from llmrepl.execution.statements import bound_and_used, completed_part, statement_at, top_level
from llmrepl.model.client import ScriptedModel
from llmrepl.store.journal import Journal
from llmrepl.store.replay import highest_cell, plan_replay
from llmrepl.store.transcript import CellRecord, load_session

# -- statements ---------------------------------------------------------------------------

DECORATED = '''\
import functools

@functools.lru_cache
@staticmethod
def f(x):
    return x

doc = """a string
over lines"""
class C:
    pass
'''


def test_top_level_ranges_hold_decorators_and_multiline_strings():
    assert top_level(DECORATED) == [(1, 1), (3, 6), (8, 9), (10, 11)]
    assert top_level("x = (\n 1)\n") == [(1, 2)]
    assert top_level("if x:\n  y\nelse:\n  z\nw") == [(1, 4), (5, 5)]
    assert top_level("def (") == [] and top_level("") == []


def test_statement_at_maps_a_line_to_its_statement():
    assert statement_at(DECORATED, 4) == 1        # a decorator line belongs to its def
    assert statement_at(DECORATED, 9) == 2        # inside the multi-line string
    assert statement_at(DECORATED, 7) == 1        # the blank line after the def: still before the next
    assert statement_at(DECORATED, 99) is None
    assert statement_at("a = 1; b = 1 / 0", 1) == 0  # without a column: the first (replay stops early)
    assert statement_at("a = 1; b = 1 / 0", 1, 7) == 1


def test_completed_part_is_the_original_text_of_the_first_statements():
    code = "import os  # the os\n\n# a comment before x\nx = [\n  1,\n]\ny = 1 / 0\nz = 2\n"
    assert completed_part(code, 2) == "import os  # the os\n\n# a comment before x\nx = [\n  1,\n]\n"
    assert completed_part(code, 1) == "import os  # the os\n"
    assert completed_part(code, 0) == "" and completed_part(code, None) == ""
    assert completed_part(code, 3).endswith("]\ny = 1 / 0\n") and completed_part(code, 4) == code
    assert completed_part("a = 'é'; b = 1 / 0", 1) == "a = 'é'\n"  # cut where the next one starts
    assert completed_part("broken (", 1) == ""


def test_bound_and_used_reads_before_binding():
    bound, used = bound_and_used("import numpy as np\nx = np.zeros(3) + y\nfor i in range(3):\n    total += i\n")
    assert bound == {"np", "x", "i", "total"}
    assert used == {"y", "range", "total"}  # np was bound first; total is read by +=
    bound, used = bound_and_used("def f(a):\n    b = a + c\n    return b\nc = 1\nprint(f(2))")
    assert bound == {"f", "c"} and used == {"print"}  # c is bound by the cell before f can run
    bound, used = bound_and_used("def f():\n    return np.pi\n")
    assert used == {"np"}
    bound, used = bound_and_used("from os import path as p, sep\nwith open(p) as fh:\n    pass\n"
                                 "try:\n    pass\nexcept E as err:\n    pass\n[k for k in q]\n"
                                 "if (n := 3):\n    pass\nclass K(Base):\n    attr = other\ndel gone\n")
    assert bound == {"p", "sep", "fh", "err", "n", "K"}
    assert used == {"open", "E", "q", "Base", "other", "gone"}
    assert bound_and_used("") == (set(), set()) and bound_and_used("x = (") == (set(), set())
    assert bound_and_used("lambda a: a + b")[1] == {"b"}


# -- how far a cell got: ExecResult.done ------------------------------------------------------


@pytest.fixture
def ex(tmp_path):
    return Executor(figure_dir=tmp_path / "figs")


def test_done_counts_the_statements_that_completed(ex):
    assert ex.run("a = 1\nb = 2\na + b").done == 3  # the trailing expression counts
    assert ex.run("x = 1; y = {}['k']; z = 2").done == 1  # the column tells which one on the line
    r = ex.run("def f():\n    raise KeyError('k')\nbefore = 1\nf()\nafter = 2")
    assert r.error_type == "KeyError" and r.done == 2  # failed inside a function it called
    r = ex.run("first = 1\n{}['missing']")
    assert r.error_type == "KeyError" and r.done == 1  # the failing last expression
    r = ex.run("total = 0\nfor i in range(5):\n    total += i\n    if i == 2:\n        raise ValueError(i)\nend = 1")
    assert r.done == 1 and ex.namespace["total"] == 3  # the loop half done is not complete
    assert ex.run("this is not python").done == 0
    r = ex.run("class A:\n    def __repr__(self):\n        raise ValueError('repr')\nA()")
    assert r.error_type == "ValueError" and r.done == 2  # every statement ran; the value's repr failed


def test_done_of_an_interrupted_and_a_timed_out_cell(ex):
    r = ex.run("import signal\nstarted = 1\nsignal.raise_signal(signal.SIGINT)\nnever = 1")
    assert r.interrupted and r.done == 2
    r = ex.run("a = 1\nwhile True:\n    pass\nb = 2", timeout=0.2)
    assert r.timed_out and r.done == 1


# -- the journal keeps it; old journals derive it ------------------------------------------


def _session(tmp_path: Path, name: str = "20260101-000000-1") -> tuple[Session, Path]:
    path = tmp_path / "state" / "sessions" / f"{name}.jsonl"
    journal = Journal(path, fsync=False)
    journal.append("session_start", id=name, model="m")
    ex = Executor(figure_dir=path.with_suffix(""))
    return Session(ScriptedModel([]), ex, display=NullDisplay(), journal=journal), path


def test_cell_end_journals_done_and_old_journals_derive_it_from_the_traceback(tmp_path):
    session, path = _session(tmp_path)
    session.run_direct("a = 1\nb = {}['k']\nc = 3")
    session.journal.close()
    ends = [json.loads(line) for line in path.read_text().splitlines() if '"cell_end"' in line]
    assert ends[0]["done"] == 1
    assert load_session(path).cells[0].done == 1
    # the same journal as an llmrepl before this field wrote it
    old = path.with_name("20260101-000000-2.jsonl")
    lines = []
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        rec.pop("done", None)
        lines.append(json.dumps(rec))
    old.write_text("\n".join(lines) + "\n")
    cell = load_session(old).cells[0]
    assert 'File "<cell-1>", line 2, in <module>' in cell.error and cell.done == 1
    assert plan_replay([cell]).to_run() == [(1, "a = 1\n")]


def _rec(n: int, code: str, **kw: object) -> CellRecord:
    return CellRecord(cell=n, code=code, completed=True, **kw)  # type: ignore[arg-type]


def test_plan_runs_what_completed_and_says_why_not_the_rest():
    cells = [
        _rec(1, "data = {'a': 1}"),
        _rec(2, "share = data['b']", error="KeyError: 'b'", error_type="KeyError", done=0),
        _rec(3, "import numpy as np\nfor chunk in range(10**9):\n    pass\nafter = 1",
             error="KeyboardInterrupt", error_type="KeyboardInterrupt", interrupted=True, done=1),
        _rec(4, "x = (", error="SyntaxError", error_type="SyntaxError", done=0),
        _rec(5, "last = chunk + np.e"),
        _rec(6, "w = 1\nwhile True: pass", error="CellTimeout", error_type="CellTimeout", timed_out=True, done=1),
        CellRecord(cell=7, code="crashed = 1\nimport os; os._exit(1)"),
        _rec(8, "z = crashed"),
        _rec(9, "h = '\u200b'"),
        _rec(10, "q = 1", error="E", error_type="E", done=None),
        _rec(11, "undone = 1", undone=True),
        _rec(12, "%nosuchmagic", error="MagicError: ...", error_type="MagicError", done=0),
        _rec(13, "class A:\n    def __repr__(self):\n        1 / 0\nA()", error="ZeroDivisionError",
             error_type="ZeroDivisionError", done=2),
    ]
    plan = plan_replay(cells)
    assert [(p.cell, p.action) for p in plan.cells] == [
        (1, "run"), (2, "skip"), (3, "partial"), (4, "skip"), (5, "run"), (6, "partial"), (7, "skip"),
        (8, "run"), (9, "skip"), (10, "skip"), (11, "skip"), (12, "skip"), (13, "run")]
    assert plan.to_run() == [(1, "data = {'a': 1}"), (3, "import numpy as np\n"), (5, "last = chunk + np.e"),
                             (6, "w = 1\n"), (8, "z = crashed"), (13, cells[-1].code)]
    assert plan.describe() == [
        "cells 1, 5, 8, 13 will be re-run",
        "cell 2 will not be re-run: failed at its first statement (KeyError)",
        "cell 3 will be re-run only up to where it stopped: interrupted (Ctrl-C) after 1 of 3 statements",
        "cell 4 will not be re-run: SyntaxError",
        "cell 6 will be re-run only up to where it stopped: stopped by the time limit after 1 of 2 statements",
        "cell 7 will not be re-run: the process died while it ran",
        "cell 9 will not be re-run: hidden characters (U+200B ZERO WIDTH SPACE on line 1)",
        "cell 10 will not be re-run: failed (E) at a statement that is not known",
        "cell 11 will not be re-run: its exchange was undone (/undo)",
        "cell 12 will not be re-run: failed at its first statement (MagicError)",
        "cell 5 uses `chunk`, which only the skipped part of cell 3 bound",
        "cell 8 uses `crashed`, which only the skipped cell 7 bound",
    ]
    assert plan.missing == [(5, "chunk", 3), (8, "crashed", 7)]
    assert [p.cell for p in plan_replay(cells, upto=4).cells] == [1, 2, 3]


def test_a_name_bound_again_later_is_not_missing():
    cells = [_rec(1, "np = 1\nboom()", error="NameError", error_type="NameError", done=1),
             _rec(2, "import math\nv = 1 / 0", error="ZeroDivisionError", error_type="ZeroDivisionError", done=1),
             _rec(3, "v = 2"), _rec(4, "print(v, np, math)")]
    assert plan_replay(cells).missing == []


def test_highest_cell_counts_every_record_of_the_journal():
    records = [{"event": "cell_start", "cell": 3}, {"event": "decision", "cell": 7},
               {"event": "cell_end", "cell": 5, "replay": True}, {"event": "user", "text": "x"}]
    assert highest_cell(records) == 7 and highest_cell([]) == 0


# -- resume: the issue's session -------------------------------------------------------------


class Recording(NullDisplay):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def notice(self, text: str, level: str = "info") -> None:
        self.lines.append(text)

    def tool_code(self, code: str, label: str = "run_python") -> None:
        self.lines.append(f"{label}\n{code}")


SCENARIO = [
    "data = {'north': 412, 'west': 380, 'south': 201}",
    "total = sum(data.values())",
    "print('total', total)",
    "share = data['east'] / total",                                         # 4: KeyError
    "share = data.get('east', 0) / total\nci = (round(share, 3), 0.9)",     # 5: the fix
    "gap = data['north'] - data['west']",
    "names = sorted(data)",
    "import numpy as np\nimport signal\nfor chunk in range(10**9):\n"   # 8: Ctrl-C mid-loop
    "    if chunk == 1000:\n        signal.raise_signal(signal.SIGINT)\nafter = 1",
    "arr = np.array([ci[1], gap])\nprint('arr', arr)",                      # 9: uses np
    "import matplotlib.pyplot as plt\nplt.plot(arr)\nplt.show()",           # 10: a figure
]


def test_resume_replays_the_issue_session_with_no_failure_and_no_new_figure(tmp_path):
    session, path = _session(tmp_path)
    results = [session.run_direct(code) for code in SCENARIO]
    assert [r.error_type for r in results] == [None, None, None, "KeyError", None, None, None,
                                               "KeyboardInterrupt", None, None]
    folder = path.with_suffix("")
    figures = sorted(os.listdir(folder))
    assert figures == ["figure-001.png"]
    session.journal.close()

    stored = load_session(path)
    new = Executor(figure_dir=folder)
    display = Recording()
    journal = Journal(path, fsync=False)
    again = Session(ScriptedModel([]), new, display=display, journal=journal)
    asked: list[str] = []
    resume(again, stored, display, confirm=lambda q, listing: asked.append(listing) or True)
    shown = "\n".join(display.lines)
    assert "cells 1-3, 5-7, 9-10 will be re-run" in shown
    assert "cell 4 will not be re-run: failed at its first statement (KeyError)" in shown
    assert "cell 8 will be re-run only up to where it stopped: interrupted (Ctrl-C) after 2 of 4 statements" in shown
    assert "llmrepl: cell 8, to re-run (only the statements that completed)\nimport numpy as np\nimport signal\n" in shown
    assert "for chunk" not in asked[0] and "share = data['east']" not in asked[0]
    assert "re-ran 9 cells (1 of them up to where they stopped); 1 not re-run; the namespace is rebuilt" in shown
    ns = new.namespace
    assert ns["np"].__name__ == "numpy" and ns["ci"] == (0.0, 0.9) and ns["gap"] == 32 and "chunk" not in ns
    assert sorted(os.listdir(folder)) == figures  # the replayed plot wrote no file
    note = again.messages[-1]["content"]
    assert "re-running 9 earlier cells: what they made exists again." in note
    assert "Cell 8 was re-run only up to where it stopped the first time (interrupted (Ctrl-C) after 2 of 4" in note
    assert "Not re-run, so what they made does not exist now: cell 4 (failed at its first statement (KeyError))" in note
    # the next new cell is numbered after every cell of the journal, and its figure after figure-001
    r = again.run_direct("plt.plot([1, 2])\nplt.show()")
    assert r.cell == 11 and r.figures and os.path.basename(r.figures[0]) == "figure-002.png"
    journal.close()


def test_resume_warns_of_a_name_only_a_skipped_part_bound(tmp_path):
    session, path = _session(tmp_path)
    session.run_direct("import signal\nfor chunk in range(10**9):\n    if chunk == 5:\n"
                       "        signal.raise_signal(signal.SIGINT)")
    session.run_direct("last = chunk")
    session.journal.close()
    display = Recording()
    again = Session(ScriptedModel([]), Executor(), display=display, journal=Journal(None))
    resume(again, load_session(path), display, confirm=lambda q, listing: True)
    assert "cell 2 uses `chunk`, which only the skipped part of cell 1 bound" in display.lines
    assert "re-ran 2 cells (1 of them up to where they stopped); 1 failed now: cell 2 (NameError)" in "\n".join(
        display.lines)
    assert "chunk (cell 1)" in again.messages[-1]["content"]


def test_numbers_continue_after_the_highest_in_the_journal_even_when_undone_or_crashed(tmp_path):
    path = tmp_path / "state" / "sessions" / "20260101-000000-9.jsonl"
    j = Journal(path, fsync=False)
    j.append("session_start", id="20260101-000000-9", model="m")
    j.append("py", code="a = 1")
    j.append("message", message={"role": "user", "content": "[llmrepl] ran"}, exchange_start=True)
    j.append("cell_start", cell=1, code="a = 1")
    j.append("cell_end", cell=1, output="", done=1)
    j.append("reset")
    j.append("py", code="b = 2")
    j.append("message", message={"role": "user", "content": "[llmrepl] ran"}, exchange_start=True)
    j.append("cell_start", cell=2, code="b = 2")
    j.append("cell_end", cell=2, output="", done=1)
    j.append("cell_start", cell=3, code="import os; os._exit(1)")  # the process died here
    j.close()
    stored = load_session(path)
    assert [c.cell for c in stored.cells] == [2, 3]
    again = Session(ScriptedModel([]), Executor(), display=NullDisplay(), journal=Journal(None))
    resume(again, stored, again.display, confirm=lambda q, listing: True)
    assert again.executor.namespace["b"] == 2 and again.executor.cell_count == 3
    assert again.run_direct("c = 3").cell == 4


def test_a_ctrl_c_during_the_replay_stops_it_there(tmp_path):
    session, path = _session(tmp_path)
    for code in ("a = 1", "import signal\nsignal.raise_signal(signal.SIGINT)", "b = 2"):
        session.run_direct(code)
    session.journal.close()
    stored = load_session(path)
    stored.cells[1].error = stored.cells[1].error_type = stored.cells[1].done = None  # as if it had run
    stored.cells[1].interrupted = False
    display = Recording()
    again = Session(ScriptedModel([]), Executor(), display=display, journal=Journal(None))
    resume(again, stored, display, confirm=lambda q, listing: True)
    assert "re-ran 2 cells; you interrupted the replay at cell 2: the 1 cells after it were not re-run" in display.lines
    assert "b" not in again.executor.namespace and again.executor.cell_count == 3
    assert "the replay was interrupted at cell 2" in again.messages[-1]["content"]


def test_numbers_continue_after_an_undone_exchange_that_rewound(tmp_path):
    path = tmp_path / "state" / "sessions" / "20260101-000000-8.jsonl"
    j = Journal(path, fsync=False)
    j.append("session_start", id="20260101-000000-8", model="m")
    for n in (1, 2):
        j.append("py", code=f"v{n} = {n}")
        j.append("message", message={"role": "user", "content": "[llmrepl] ran"}, exchange_start=True)
        j.append("cell_start", cell=n, code=f"v{n} = {n}")
        j.append("cell_end", cell=n, output="", done=1)
    j.append("undo", removed=1, rewound=True)
    j.close()
    stored = load_session(path)
    assert [c.cell for c in stored.cells] == [1]
    again = Session(ScriptedModel([]), Executor(), display=NullDisplay(), journal=Journal(None))
    resume(again, stored, again.display, confirm=lambda q, listing: True)
    assert again.run_direct("w = 1").cell == 3  # cell 2 of the journal is never numbered again


def test_figures_continue_after_the_highest_file_in_the_folder(tmp_path):
    folder = tmp_path / "session"
    folder.mkdir()
    (folder / "figure-003.png").write_bytes(b"an earlier run's figure")
    ex = Executor(figure_dir=folder)
    r = ex.run("import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()")
    assert [os.path.basename(f) for f in r.figures] == ["figure-004.png"]  # not figure-001 beside it
    ex.save_figures = False
    r = ex.run("plt.plot([3, 4])\nplt.show()")
    assert r.figures == [] and r.displays and sorted(os.listdir(folder)) == ["figure-003.png", "figure-004.png"]


def test_a_cell_with_magics_is_cut_at_the_statement_that_failed(ex):
    code = "x = 1\n!echo hi\nfiles = !echo a\n%time y = 1 / 0\nz = 2\n"
    r = ex.run(code)
    assert r.error_type == "ZeroDivisionError" and r.done == 3
    assert top_level(code) == [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5)]
    assert completed_part(code, r.done) == "x = 1\n!echo hi\nfiles = !echo a\n"  # as written, magics kept
    assert bound_and_used(code)[0] == {"x", "files", "z"}


def test_a_ctrl_c_between_replayed_cells_ends_the_replay_without_a_traceback(tmp_path):
    session, path = _session(tmp_path)
    for code in ("a = 1", "b = 2", "c = 3"):
        session.run_direct(code)
    session.journal.close()
    display = Recording()
    again = Session(ScriptedModel([]), Executor(), display=display, journal=Journal(None))
    append = again.journal.append

    def ctrl_c_after_cell_1(event: str, **fields: object) -> None:
        append(event, **fields)
        if event == "cell_end" and fields.get("cell") == 1:
            signal.raise_signal(signal.SIGINT)  # lands in llmrepl's own work, between two cells

    again.journal.append = ctrl_c_after_cell_1  # type: ignore[method-assign]
    resume(again, load_session(path), display, confirm=lambda q, listing: True)
    assert "re-ran 1 cells; you interrupted the replay at cell 1: the 2 cells after it were not re-run" in display.lines
    assert again.executor.namespace["a"] == 1 and "b" not in again.executor.namespace
    assert again.run_direct("d = 4").cell == 4
    # an /undo that replays (not plain data) runs only what the interrupted replay ran, then d
    again.journal.append = append  # type: ignore[method-assign]
    again.run_direct("from fractions import Fraction\nhalf = Fraction(1, 2)")
    again.run_direct("e = 5")
    assert "replayed cells 1, 4-5" in again.undo().summary
    assert set(again.executor.user_variables()) == {"a", "d", "Fraction", "half"}
