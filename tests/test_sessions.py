"""Stored sessions: listing, finding by prefix, and replaying a journal into its conversation."""

from __future__ import annotations

import dataclasses
import json
import os
import struct
import zlib
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from llmrepl.engine.protocols import NullDisplay, ScriptedReviewer
from llmrepl.engine.session import Session
from llmrepl.errors import LLMReplError
from llmrepl.execution.executor import ExecResult, Executor
from llmrepl.model.client import Completion, ScriptedModel, ToolCall
from llmrepl.store.catalogue import find_session, list_sessions, render_session_list, sessions_dir
from llmrepl.store.journal import Journal
from llmrepl.store.transcript import load_session

FAIL_CODE = 'note = """line one\n  line two"""\nprint(note)\ntotal = sum(data)\nprint("total", total)\ntotal / 0'
FIX_CODE = 'mean = total / len(data)\nprint(f"mean {mean}")'
FIX_EDITED = 'mean = total / len(data)\nprint(f"mean {mean:.1f}")'
PLOT_CODE = (
    "import matplotlib.pyplot as plt\n"
    "print(sorted(data))\n"
    "plt.plot(data)\n"
    "plt.show()\n"
    "sum(data)"
)


try:  # engineer B's display bundles (issue 12); until they land, the same shape
    from llmrepl.execution.outputs import DisplayData
except ImportError:
    @dataclass
    class DisplayData:  # type: ignore[no-redef]
        data: dict[str, Any]
        metadata: dict[str, Any] = field(default_factory=dict)
        at: int = 0
        text: str = ""
        screen: str | None = None


@dataclass
class RichResult(ExecResult):
    """An ExecResult with display bundles (what the executor returns from issue 12 on)."""

    displays: list[Any] = field(default_factory=list)
    value_data: Any = None


def tiny_png(width: int = 4, height: int = 3) -> bytes:
    """A valid PNG of ``width`` x ``height`` grey pixels."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


TABLE_TEXT = "   a  b\n0  1  x\n1  2  y"
TABLE_HTML = "<table class=\"dataframe\"><tr><td>1</td><td>x</td></tr></table>"


def table_display(at: int, text: str = TABLE_TEXT, html: str = TABLE_HTML) -> Any:
    return DisplayData({"text/plain": text, "text/html": html}, {}, at, text)


def figure_display(path: Path, at: int, text: str = "figure 4x3 px: title 'by region'; 1 bar series") -> Any:
    png = tiny_png()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    return DisplayData({"image/png": png, "text/plain": "<Figure size 4x3 with 1 Axes>"},
                       {"filename": str(path), "width": 4, "height": 3}, at, text)


class RichExecutor(Executor):
    """The real executor, with the display bundles of each cell given by the test (as the
    executor of issue 12 makes them): ``extras`` is a queue of ``(displays, value_data)``,
    or a callable of the plain result returning them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.extras: deque[Any] = deque()

    def run(self, source: str) -> ExecResult:
        plain = super().run(source)
        extra = self.extras.popleft() if self.extras else ([], None)
        displays, value_data = extra(plain) if callable(extra) else extra
        fields = {f.name: getattr(plain, f.name) for f in dataclasses.fields(ExecResult)
                  if f.name not in ("displays", "value_data")}
        return RichResult(**fields, displays=list(displays), value_data=value_data)


def tool_answer(code: str, call_id: str = "call_1") -> Completion:
    return Completion(
        text="Plotting it.",
        tool_calls=[ToolCall(call_id, "run_python", json.dumps({"code": code}))],
        finish_reason="tool_calls",
    )


def build_session(state: Path, sid: str = "20260102-100000-1", *, undo_cells: bool = True) -> Path:
    """Drive the real engine (scripted model, real executor and journal) through a session
    with a fenced cell, a tool-call cell with a figure, a failing cell, an edited cell, a
    declined cell, a /py cell, an undone exchange and a SyntaxError; returns the journal."""
    path = sessions_dir(state) / f"{sid}.jsonl"
    journal = Journal(path)
    journal.append("session_start", id=sid, version="0.1.0", model="gpt-test", base_url=None,
                   cwd=str(state), pid=os.getpid(), mode="interactive")
    model = ScriptedModel([
        "Let me load them.\n\n```python\ndata = [3, 1, 2]\nprint('loaded', len(data))\n```",
        "Loaded 3 numbers.",
        tool_answer(PLOT_CODE),
        "Here is the plot.",
        f"```python\n{FAIL_CODE}\n```",
        f"That failed; take the mean instead:\n\n```python\n{FIX_CODE}\n```",
        "The mean is 2.",
        "```python\ndel data\n```",
        "```python\nwrong = 1\nprint('wrong turn')\n```",
        "Oops.",
        "```python\nprint('unclosed'\n```",
        "Sorry, that was broken.",
    ], model="gpt-test")
    executor = Executor(figure_dir=sessions_dir(state) / sid)
    session = Session(model, executor, display=NullDisplay(), journal=journal)
    session.step("load the numbers", ScriptedReviewer(["run"]))
    session.step("sort and plot them", ScriptedReviewer(["run"]))
    session.step("divide the total", ScriptedReviewer(["run", ("edit", FIX_EDITED)]))
    session.step("delete everything", ScriptedReviewer(["decline"]))
    session.run_direct("print('direct', total)")
    if undo_cells:
        session.step("take a wrong turn", ScriptedReviewer(["run"]))
        session.undo()
    session.step("something broken", ScriptedReviewer(["run"]))
    journal.append("session_end")
    journal.close()
    assert model.pending == 0
    return path


def write_journal(path: Path, records: list[tuple[str, dict]]) -> Path:
    journal = Journal(path, fsync=False)
    for event, fields in records:
        journal.append(event, **fields)
    journal.close()
    return path


def msg(role: str, content: str, start: bool = False) -> tuple[str, dict]:
    return ("message", {"message": {"role": role, "content": content}, "exchange_start": start})


def cell(n: int, code: str, out: str = "", **extra: object) -> list[tuple[str, dict]]:
    end = {"cell": n, "output": out, "stdout": out, "stderr": "", "value": None, "error": None,
           "error_type": None, "duration": 0.01, "interrupted": False, "timed_out": False,
           "figures": [], "output_chars": len(out)}
    end.update(extra)
    return [("decision", {"cell": n, "action": "run", "edited": False, "code": code, "reason": ""}),
            ("cell_start", {"cell": n, "code": code}), ("cell_end", end)]


def exchange(text: str, n: int, code: str, out: str) -> list[tuple[str, dict]]:
    return [("user", {"text": text}), msg("user", text, True),
            msg("assistant", f"```python\n{code}\n```"), *cell(n, code, out),
            msg("user", f"[llmrepl] llmrepl ran cell {n} (succeeded, 0.01 s).")]


# -- replaying a real session ------------------------------------------------------------


def test_replay_rebuilds_the_conversation_the_engine_had(tmp_path):
    state = tmp_path / "state"
    path = build_session(state)
    stored = load_session(path)
    assert stored.bad_lines == 0 and stored.model == "gpt-test" and stored.cwd == str(state)
    roles = [m["role"] for m in stored.messages]
    assert roles[:3] == ["user", "assistant", "user"]
    # the tool-call exchange is rebuilt with its call and the tool reply
    calls = [m for m in stored.messages if m.get("tool_calls")]
    assert calls and calls[0]["tool_calls"][0]["function"]["name"] == "run_python"
    assert any(m["role"] == "tool" and m["tool_call_id"] == "call_1" for m in stored.messages)
    # the undone exchange is gone from the conversation
    assert not any("wrong turn" in str(m.get("content")) for m in stored.messages)
    texts = [m["content"] for m in stored.messages if m["role"] == "user" and not m["content"].startswith("[llmrepl]")]
    assert texts == ["load the numbers", "sort and plot them", "divide the total", "delete everything",
                     "something broken"]
    # exchanges: one per message and one for /py
    assert len(stored.exchanges) == 6
    assert all(stored.messages[i]["role"] == "user" for i in stored.exchanges)


def test_replay_matches_the_live_session_messages(tmp_path):
    """What load_session rebuilds is exactly what the engine held in memory."""
    state = tmp_path / "state"
    path = sessions_dir(state) / "x.jsonl"
    journal = Journal(path)
    model = ScriptedModel(["```python\nx = 1\nx\n```", "one", tool_answer("print(2)"), "two", "three"])
    session = Session(model, Executor(), display=NullDisplay(), journal=journal)
    session.step("a", ScriptedReviewer(["run"]))
    session.step("b", ScriptedReviewer(["run"]))
    session.undo()
    session.step("c", ScriptedReviewer([]))
    journal.close()
    stored = load_session(path)
    assert stored.messages == session.messages
    assert stored.exchanges == session.exchanges


def test_cells_carry_how_they_ran(tmp_path):
    stored = load_session(build_session(tmp_path / "state"))
    cells = {c.cell: c for c in stored.cells}
    # 1 load, 2 plot, 3 failing, 4 edited, 5 /py, (6 wrong turn: undone and rewound), 7 SyntaxError
    assert sorted(cells) == [1, 2, 3, 4, 5, 7]
    assert cells[1].output == "loaded 3\n" and cells[1].source == "model" and not cells[1].edited
    assert cells[2].value == "6" and len(cells[2].figures) == 1 and Path(cells[2].figures[0]).is_file()
    assert cells[3].error_type == "ZeroDivisionError" and "total 6" in cells[3].output
    assert cells[4].edited and cells[4].code == FIX_EDITED and cells[4].output == "mean 2.0\n"
    assert cells[5].source == "py" and cells[5].output == "direct 6\n"
    assert cells[7].error_type == "SyntaxError"
    assert all(c.completed for c in stored.cells)
    assert stored.figures == cells[2].figures
    assert "del data" not in [c.code for c in stored.cells]


def test_timeline_marks_declined_and_kept_cells(tmp_path):
    stored = load_session(build_session(tmp_path / "state"))
    kinds = [e.kind for e in stored.timeline]
    assert kinds.count("user") == 5 and kinds.count("declined") == 1
    declined = next(e for e in stored.timeline if e.kind == "declined")
    assert declined.text == "del data"
    kept = [e.cell.cell for e in stored.timeline if e.kind == "cell" and e.kept]
    assert kept == []  # /undo rewinds (issue 14): only a journal from before then has kept cells
    # llmrepl's feedback messages duplicate the cells, so they are not in the timeline
    assert not any(e.kind == "note" for e in stored.timeline)


def test_rewound_undo_drops_the_cells_of_that_exchange(tmp_path):
    path = write_journal(tmp_path / "s.jsonl", [
        ("session_start", {"id": "s", "model": "m", "cwd": "/w"}),
        *exchange("one", 1, "a = 1", ""),
        *exchange("two", 2, "b = 2", ""),
        ("undo", {"removed": 3}),                      # variables kept: cell 2 stays
        *exchange("three", 3, "c = 3", ""),
        ("undo", {"removed": 3, "rewound": True}),     # rewound: cell 3 goes
    ])
    stored = load_session(path)
    assert [c.cell for c in stored.cells] == [1, 2]
    assert [m["content"] for m in stored.messages][0] == "one" and len(stored.messages) == 3
    assert stored.exchanges == [0] and stored.undone == 2
    # a rewind to before an exchange also drops cells kept from an exchange undone after it began
    path = write_journal(tmp_path / "t.jsonl", [
        *exchange("one", 1, "a = 1", ""),
        *exchange("two", 2, "b = 2", ""),
        ("undo", {"removed": 3}),
        ("undo", {"removed": 3, "rewound": True}),
    ])
    assert load_session(path).cells == []


def test_reset_clears_conversation_and_cells(tmp_path):
    path = write_journal(tmp_path / "s.jsonl", [
        *exchange("one", 1, "a = 1", ""),
        ("reset", {}),
        *exchange("two", 2, "b = 2", "x\n"),
    ])
    stored = load_session(path)
    assert [c.cell for c in stored.cells] == [2]
    assert stored.messages[0]["content"] == "two" and stored.exchanges == [0] and stored.resets == 1


def test_torn_last_line_is_skipped_and_counted(tmp_path):
    path = build_session(tmp_path / "state")
    with open(path, "ab") as f:
        f.write(b'{"t":1.0,"event":"cell_end","cell":9,"output":"half')
    stored = load_session(path)
    assert stored.bad_lines == 1 and stored.info.bad_lines == 1
    assert len(stored.cells) == 6  # the 7 that ran, less the one /undo rewound
    [info] = list_sessions(tmp_path / "state")
    assert info.cells == 7 and info.bad_lines == 1


def test_garbled_line_in_the_middle_is_skipped(tmp_path):
    path = write_journal(tmp_path / "s.jsonl", exchange("one", 1, "a = 1", ""))
    lines = path.read_bytes().splitlines(keepends=True)
    lines.insert(2, b'{"t":1.0,"event":"message","mess\n')
    lines.insert(3, b"\xff\xfe not json\n")
    path.write_bytes(b"".join(lines))
    stored = load_session(path)
    assert stored.bad_lines == 2 and len(stored.messages) == 3 and len(stored.cells) == 1


def test_a_long_line_with_a_malformed_time_is_skipped_when_listing(tmp_path):
    """A line too long to parse whole is read by its start; "t":1..2 there is a bad record,
    not a traceback that hides every session."""
    path = build_session(tmp_path / "state")
    with open(path, "ab") as f:
        f.write(b'{"t":1..2,"event":"user","text":"' + b"x" * (300 << 10) + b'"}\n')
    [info] = list_sessions(tmp_path / "state")
    assert info.cells == 7 and info.bad_lines == 1


def test_crashed_session_names_the_cell_it_died_in(tmp_path):
    state = tmp_path / "state"
    path = write_journal(sessions_dir(state) / "20260103-090000-7.jsonl", [
        ("session_start", {"id": "20260103-090000-7", "model": "m", "cwd": "/w"}),
        *exchange("load", 1, "a = 1", ""),
        ("user", {"text": "loop forever"}), msg("user", "loop forever", True),
        msg("assistant", "```python\nwhile True: pass\n```"),
        ("decision", {"cell": 2, "action": "run", "edited": False, "code": "while True: pass", "reason": ""}),
        ("cell_start", {"cell": 2, "code": "while True: pass"}),
    ])
    [info] = list_sessions(state)
    assert info.crashed_in_cell == 2 and not info.ended and info.cells == 1
    stored = load_session(path)
    assert [(c.cell, c.completed) for c in stored.cells] == [(1, True), (2, False)]
    assert "[crashed in cell 2]" in render_session_list([info])


# -- listing and finding --------------------------------------------------------------------


def make_state(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    folder = sessions_dir(state)
    for i, (sid, text) in enumerate([
        ("20260101-100000-11", "first day " + "x" * 100),
        ("20260102-100000-22", "second day"),
        ("20260102-110000-33", None),          # started, never sent a message
    ]):
        records = [("session_start", {"id": sid, "model": "m", "cwd": "/w"})]
        if text:
            records += exchange(text, 1, "a = 1", "")
        records.append(("session_end", {}))
        write_journal(folder / f"{sid}.jsonl", records)
        t = 1_767_261_600 + i * 86_400  # keep start times apart and ordered
        lines = (folder / f"{sid}.jsonl").read_text().splitlines()
        first = json.loads(lines[0])
        first["t"] = t
        lines[0] = json.dumps(first, separators=(",", ":"))
        (folder / f"{sid}.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "notes.txt").write_text("not a journal")
    (folder / "20260102-100000-22").mkdir()       # a figure folder next to the journal
    (folder / "empty.jsonl").write_text("")
    return state


def test_list_sessions_newest_first_with_summary(tmp_path):
    state = make_state(tmp_path)
    infos = list_sessions(state)
    assert [i.id for i in infos] == ["20260102-110000-33", "20260102-100000-22", "20260101-100000-11"]
    second = infos[1]
    assert second.first_message == "second day" and second.cells == 1 and second.ended
    assert second.crashed_in_cell is None and second.messages == 3
    assert second.started is not None and second.started.tzinfo is not None
    text = render_session_list(infos)
    assert "20260102-100000-22" in text and "second day" in text
    assert second.started.strftime("%Y-%m-%d %H:%M") in text
    long_line = next(line for line in text.splitlines() if "first day" in line)
    assert "…" in long_line and "x" * 70 not in long_line
    assert "(no messages)" in text
    assert "2 older sessions not shown" in render_session_list(infos, limit=1)
    assert render_session_list([]) == "no stored sessions yet"


def test_unreadable_file_is_skipped(tmp_path):
    state = make_state(tmp_path)
    bad = sessions_dir(state) / "20260104-100000-44.jsonl"
    bad.write_text('{"t":1,"event":"session_start"}\n')
    bad.chmod(0)
    try:
        ids = [i.id for i in list_sessions(state)]
    finally:
        bad.chmod(0o600)
    if os.geteuid() != 0:
        assert "20260104-100000-44" not in ids
    assert "20260102-100000-22" in ids


def test_list_sessions_without_folder(tmp_path):
    assert list_sessions(tmp_path / "nothing") == []


def test_find_session_default_is_newest_with_messages(tmp_path):
    state = make_state(tmp_path)
    assert find_session(state).id == "20260102-100000-22"
    assert find_session(state, "").id == "20260102-100000-22"


def test_find_session_exact_and_prefix(tmp_path):
    state = make_state(tmp_path)
    assert find_session(state, "20260101").id == "20260101-100000-11"
    assert find_session(state, "20260102-100000-22").id == "20260102-100000-22"
    assert find_session(state, "20260102-10").id == "20260102-100000-22"


def test_find_session_ambiguous_and_missing(tmp_path):
    state = make_state(tmp_path)
    with pytest.raises(LLMReplError, match=r"'2026' matches 3 sessions: 20260102-110000-33, "):
        find_session(state, "2026")
    with pytest.raises(LLMReplError, match=r"no stored session matches 'abc'; /sessions lists them"):
        find_session(state, "abc")
    with pytest.raises(LLMReplError, match="no stored session"):
        find_session(tmp_path / "empty-state")


def test_listing_hundreds_of_sessions(tmp_path):
    """Every journal is read once, and big cell outputs are not parsed."""
    state = tmp_path / "state"
    folder = sessions_dir(state)
    big = "y" * 50_000
    for i in range(300):
        write_journal(folder / f"20260101-{i:06d}-1.jsonl", [
            ("session_start", {"id": str(i), "model": "m"}), *exchange(f"msg {i}", 1, "print('y')", big),
        ])
    infos = list_sessions(state)
    assert len(infos) == 300 and all(i.cells == 1 and i.messages == 3 for i in infos)


def test_declined_tool_call_and_other_notes(tmp_path):
    path = sessions_dir(tmp_path / "state") / "d.jsonl"
    journal = Journal(path)
    model = ScriptedModel([tool_answer("import os\nos.remove('x')")])
    session = Session(model, Executor(), display=NullDisplay(), journal=journal)
    session.step("remove x", ScriptedReviewer(["decline"]))
    session._add({"role": "user", "content": "[llmrepl] The session was resumed.\nMore detail."})
    journal.close()
    stored = load_session(path)
    assert stored.messages == session.messages and stored.cells == []
    kinds = [(e.kind, e.text) for e in stored.timeline if e.kind != "assistant"]
    assert kinds == [("user", "remove x"), ("declined", "import os\nos.remove('x')"),
                     ("note", "The session was resumed.\nMore detail.")]


def test_answer_streaming_when_the_process_died_is_kept_marked_cut_off(tmp_path):
    path = tmp_path / "sessions" / "20260101-000000-1.jsonl"
    j = Journal(path)
    j.append("session_start", id="20260101-000000-1", model="m")
    j.append("user", text="talk")
    j.append("message", message={"role": "user", "content": "talk"}, exchange_start=True)
    j.append("assistant_partial", text="first line\n")
    j.append("assistant_partial", text="second line\n")
    stored = load_session(path)
    assert stored.messages[-1]["role"] == "assistant"
    assert stored.messages[-1]["content"].startswith("first line\nsecond line\n")
    assert "cut off" in stored.messages[-1]["content"]


def test_resume_answers_a_tool_call_whose_cell_never_finished(tmp_path):
    from llmrepl.engine.resume import resume

    path = tmp_path / "sessions" / "20260101-000000-2.jsonl"
    j = Journal(path)
    j.append("session_start", id="20260101-000000-2", model="m")
    j.append("user", text="go")
    j.append("message", message={"role": "user", "content": "go"}, exchange_start=True)
    call = {"id": "call_1", "type": "function", "function": {"name": "run_python", "arguments": '{"code": "x=1"}'}}
    j.append("message", message={"role": "assistant", "content": None, "tool_calls": [call]}, exchange_start=False)
    j.append("cell_start", cell=1, code="x=1")
    stored = load_session(path)
    from llmrepl.engine.protocols import NullDisplay
    from llmrepl.engine.session import Session
    from llmrepl.model.client import ScriptedModel

    session = Session(ScriptedModel([]), Executor(), display=NullDisplay())
    resume(session, stored, session.display, confirm=lambda q, listing: True)
    msgs = session.messages
    i = next(k for k, m in enumerate(msgs) if m.get("tool_calls"))
    assert msgs[i + 1]["role"] == "tool" and msgs[i + 1]["tool_call_id"] == "call_1"
    assert "Not finished" in msgs[i + 1]["content"]
    assert any("cell 1 was running" in (m.get("content") or "") for m in msgs if m["role"] == "user")


def test_a_crash_is_reported_by_one_resume_not_every_later_one(tmp_path):
    path = tmp_path / "sessions" / "20260101-000000-3.jsonl"
    j = Journal(path)
    j.append("session_start", id="20260101-000000-3", model="m")
    j.append("user", text="go")
    j.append("message", message={"role": "user", "content": "go"}, exchange_start=True)
    j.append("cell_start", cell=1, code="import os; os._exit(1)")
    assert load_session(path).info.crashed_in_cell == 1
    # a later run resumed it (re-running other cells as replay records)
    j.append("session_start", id="20260101-000000-3", model="m", resumed=True)
    j.append("resume", messages=1, cells=0)
    j.append("cell_start", cell=1, code="x = 1", replay=True)
    j.append("cell_end", cell=1, output="", replay=True)
    assert load_session(path).info.crashed_in_cell is None


# -- a bad journal never blocks the others (issue 11) ------------------------------------


def test_listing_skips_odd_names_and_names_bad_lines(tmp_path):
    state = tmp_path / "state"
    folder = sessions_dir(state)
    write_journal(folder / "20260101-100000-11.jsonl", [*exchange("fine", 1, "a = 1", "")])
    write_journal(folder / "x\nimport os.jsonl", [*exchange("odd name", 1, "a = 1", "")])
    bad = folder / "20260101-100000-12.jsonl"
    write_journal(bad, [*exchange("has a bad line", 1, "a = 1", "")])
    with open(bad, "ab") as f:
        f.write(b'{"t":1e400,"event":"user","text":"x"}\n{"t":1,"event":"cell_end","cell":[1]}\n')
    infos = list_sessions(state)
    assert [i.id for i in infos] == ["20260101-100000-12", "20260101-100000-11"]
    assert [s.line for s in infos[0].skipped] == [8, 9]  # after the exchange's 7 records
    text = render_session_list(infos)
    assert f"warning: skipped 2 unreadable journal line(s) of {bad}: line 8 (" in text


def test_a_long_replayed_cell_end_is_not_counted_again(tmp_path):
    path = write_journal(tmp_path / "r.jsonl", [
        *exchange("x", 1, "a = 1", "A" * 300_000),  # longer than the listing parses
        ("resume", {"messages": 3, "cells": 1}),
        ("cell_start", {"cell": 1, "code": "a = 1", "replay": True}),
        ("cell_end", {"cell": 1, "output": "A" * 300_000, "value": None, "error": None,
                      "error_type": None, "replay": True}),
    ])
    from llmrepl.store.catalogue import _light_records, summarize

    info = summarize(path, _light_records(path))
    assert info.cells == 1 and info.bad_lines == 0
