"""/undo rewinds the namespace: from the snapshot taken before the undone exchange
(repl.snapshots), from the copy kept at its start when the namespace is small plain data, or
else by replaying what the earlier cells completed into a fresh namespace."""

from __future__ import annotations

import os

from llmrepl.engine.commands import dispatch
from llmrepl.engine.protocols import AutoApprove, NullDisplay
from llmrepl.engine.resume import resume
from llmrepl.engine.session import Session
from llmrepl.execution.executor import Executor
from llmrepl.model.client import ScriptedModel
from llmrepl.store.journal import Journal, read_journal
from llmrepl.store.transcript import load_session


class Sink:
    """The live output of cells, as the screen would get it."""

    def __init__(self) -> None:
        self.text = ""

    def write(self, stream: str, text: str) -> None:
        self.text += text


def fenced(code: str) -> str:
    return f"```python\n{code}\n```"


def make(*replies: str, journal: Journal | None = None) -> tuple[Session, Sink]:
    sink = Sink()
    session = Session(ScriptedModel(list(replies)), Executor(sink=sink), display=NullDisplay(), journal=journal)
    return session, sink


def names(session: Session) -> set[str]:
    return set(session.executor.user_variables())


# A value that is not plain data: no copy is kept, so /undo replays.
NOT_PLAIN = "from fractions import Fraction\nhalf = Fraction(1, 2)\n"


# -- from the copy kept at the start of the exchange (small plain data) --------------------


def test_undo_restores_plain_data_from_a_copy_without_re_running(tmp_path):
    log = tmp_path / "runs.log"
    session, _ = make(fenced(f"with open({str(log)!r}, 'a') as f:\n    f.write('x')\ndel f\n"
                             "import math\ntable = {'a': [1, 2], 'b': (3, 'c')}\ndef area(r):\n    return math.pi * r * r"),
                      "ok", fenced("table['a'].append(3)\ntable['new'] = {1}\nextra = area(1)"), "ok")
    session.step("one", AutoApprove())
    session.step("two", AutoApprove())
    result = dispatch("/undo", session)
    assert result.text == ("forgot the last exchange (4 messages); 1 cell had run in it; rewound: "
                           "restored the copy of the namespace kept before cell 2 (nothing re-ran)")
    ns = session.executor.namespace
    assert ns["table"] == {"a": [1, 2], "b": (3, "c")} and "extra" not in ns
    assert ns["area"](1) == ns["math"].pi  # a function still sees the namespace
    assert log.read_text() == "x"  # cell 1 did not run again
    session.run_direct("table['a'].append(4)")  # the copy is not shared with the namespace
    assert dispatch("/undo", session).text.endswith("restored the copy of the namespace kept before cell 3 (nothing re-ran)")
    assert ns["table"]["a"] == [1, 2]


def test_no_copy_is_kept_of_a_namespace_that_is_not_small_plain_data():
    from llmrepl.engine.rewind import copy_of

    assert copy_of({"n": 1, "rows": [[i, str(i)] for i in range(100)]}) is not None
    assert copy_of({"n": 1, "big": list(range(20_000))}) is None
    assert copy_of({"n": 1, "half": __import__("fractions").Fraction(1, 2)}) is None
    loop: list = []
    loop.append(loop)
    assert copy_of({"loop": loop}) is None


# -- by replay -----------------------------------------------------------------------------


def test_undo_rewinds_variables_made_and_changed_in_the_undone_exchange():
    session, sink = make(fenced(NOT_PLAIN + "data = [1, 2, 3]\nprint('loaded')"), "ok",
                         fenced("data.append(99)\ntotal = sum(data)"), "ok")
    session.step("load", AutoApprove())
    session.step("extend", AutoApprove())
    assert session.executor.namespace["data"] == [1, 2, 3, 99] and "total" in names(session)
    shown = sink.text
    result = dispatch("/undo", session)
    ns = session.executor.namespace
    assert ns["data"] == [1, 2, 3] and "total" not in ns  # the change to data is taken back too
    assert result.level == "info"
    assert result.text.startswith("forgot the last exchange (4 messages); 1 cell had run in it; "
                                  "rewound: replayed cell 1 into a fresh namespace (")
    assert sink.text == shown  # the replayed cell's output was not shown again
    # numbers never repeat: the next cell is 3, not 2
    assert session.run_direct("x = 1").cell == 3


def test_undo_replays_a_failed_cell_up_to_the_statement_that_failed():
    session, _ = make(fenced(NOT_PLAIN + "side = []\nimport math"), "ok",
                      fenced("a = 1\nside.append('ran')\nboom = {}['missing']\nafter = 2"), "ok",
                      fenced("b = a + 1"), "ok",
                      fenced("c = 3"), "ok")
    for text in ("start", "fail", "fix", "more"):
        session.step(text, AutoApprove())
    assert session.executor.namespace["side"] == ["ran"]
    text = dispatch("/undo", session).text
    ns = session.executor.namespace
    assert (ns["a"], ns["b"], ns["side"]) == (1, 2, ["ran"])  # completed statements re-ran once
    assert "boom" not in ns and "after" not in ns and "c" not in ns and ns["math"].pi > 3
    assert "replayed cells 1-3 into a fresh namespace" in text
    assert "partly: cell 2 (failed (KeyError) after 2 of 4 statements)" in text


def test_undo_says_when_a_replayed_cell_fails_now(tmp_path):
    source = tmp_path / "numbers.txt"
    source.write_text("4\n5\n")
    session, _ = make(fenced(f"{NOT_PLAIN}import pathlib\nrows = pathlib.Path({str(source)!r}).read_text().split()"), "ok",
                      fenced("n = len(rows)"), "ok")
    session.step("read", AutoApprove())
    session.step("count", AutoApprove())
    source.unlink()
    result = dispatch("/undo", session)
    assert result.level == "warning"
    assert "failed now: cell 1 (FileNotFoundError); what they would have made may be missing" in result.text
    assert not {"rows", "n"} & names(session) and "pathlib" in names(session)


def test_undo_of_the_first_exchange_and_plural_wording():
    session, _ = make()
    session.run_direct("x = 1")
    text = dispatch("/undo", session).text
    assert text == ("forgot the last exchange (1 message); 1 cell had run in it; "
                    "rewound: restored the copy of the namespace kept before cell 1 (nothing re-ran)")

    assert "x" not in names(session)


def test_undo_journals_a_rewind_so_a_resume_leaves_the_undone_cells_out(tmp_path):
    path = tmp_path / "s.jsonl"
    session, _ = make(fenced(NOT_PLAIN + "keep = 1"), "ok", fenced("gone = 2"), "ok", journal=Journal(path))
    session.step("one", AutoApprove())
    session.step("two", AutoApprove())
    session.undo()
    session.journal.close()
    undo = [r for r in read_journal(path)[0] if r["event"] == "undo"]
    assert undo[0]["rewound"] is True and "replayed cell 1" in undo[0]["note"]
    assert [c.code for c in load_session(path).cells] == [NOT_PLAIN + "keep = 1"]


def test_undo_after_resume_replays_the_earlier_runs_cells(tmp_path):
    path = tmp_path / "s.jsonl"
    first, _ = make(fenced(NOT_PLAIN + "base = [1, 2]"), "ok", fenced("import math\nextra = 5\n{}['x']"), "ok",
                    journal=Journal(path))
    first.step("one", AutoApprove())
    first.step("two", AutoApprove())
    first.journal.close()

    session, _ = make(fenced("base.append(3)\nnew = 1"), "ok", journal=Journal(path))
    resume(session, load_session(path), NullDisplay(), confirm=lambda question, listing: True)
    assert session.executor.namespace["base"] == [1, 2] and "extra" in names(session)
    session.step("three", AutoApprove())
    assert session.executor.namespace["base"] == [1, 2, 3]
    text = dispatch("/undo", session).text
    ns = session.executor.namespace
    assert ns["base"] == [1, 2] and "new" not in ns and ns["extra"] == 5  # the earlier run's cells replayed
    assert "replayed cells 1-2" in text and "partly: cell 2" in text
    # an exchange of the earlier run can be undone too
    text = dispatch("/undo", session).text
    assert "1 cell had run in it" in text and "extra" not in names(session) and "math" not in names(session)
    assert session.executor.namespace["base"] == [1, 2]


def test_undo_after_a_declined_resume_never_re_runs_the_declined_cells(tmp_path):
    path, log = tmp_path / "s.jsonl", tmp_path / "runs.log"
    first, _ = make(fenced(f"with open({str(log)!r}, 'a') as f:\n    f.write('x')\ndel f\nold = 1"), "ok", journal=Journal(path))
    first.step("one", AutoApprove())
    first.journal.close()

    session, _ = make(fenced(NOT_PLAIN), "ok", fenced("later = 2"), "ok", journal=Journal(path))
    resume(session, load_session(path), NullDisplay(), confirm=lambda question, listing: False)  # "n"
    session.step("two", AutoApprove())
    session.step("three", AutoApprove())
    text = dispatch("/undo", session).text
    assert "replayed cell 2 " in text and log.read_text() == "x"  # cell 1 ran once, in the first run
    assert names(session) == {"Fraction", "half"}  # `old` stays gone, as the user chose
    session.journal.close()


# -- by snapshot (repl.snapshots on) ----------------------------------------------------


def test_undo_with_snapshots_restores_without_re_running(tmp_path):
    from llmrepl.store.snapshots import SnapshotStore

    log = tmp_path / "runs.log"
    session, _ = make(fenced(f"with open({str(log)!r}, 'a') as f:\n    f.write('x')\ndel f\nvalue = 10"), "ok",
                      fenced("value = 11\nother = 1"), "ok")
    session.enable_snapshots(SnapshotStore(tmp_path / "snaps"))
    session.step("one", AutoApprove())
    session.step("two", AutoApprove())
    result = session.undo()
    assert result.how == "snapshot" and result.rewound
    assert result.summary == "restored the snapshot taken before cell 2"
    assert session.executor.namespace["value"] == 10 and "other" not in names(session)
    assert log.read_text() == "x"  # cell 1 did not run again


def test_undo_replays_when_the_snapshot_is_gone(tmp_path):
    from llmrepl.store.snapshots import SnapshotStore

    session, _ = make(fenced("value = 10"), "ok", fenced("value = 11"), "ok")
    session.enable_snapshots(SnapshotStore(tmp_path / "snaps", keep=1))  # only the newest is kept
    session.step("one", AutoApprove())
    session.step("two", AutoApprove())
    result = session.undo()
    assert result.how == "replay" and session.executor.namespace["value"] == 10
    assert result.summary.startswith("the snapshot could not be used (no snapshot named 'cell-0001'")
    assert "so replayed cell 1 into a fresh namespace" in result.summary


# -- leaving: a run with nothing to resume leaves no journal -----------------------------


def test_a_journal_with_no_message_and_no_cell_is_deleted_at_the_end(tmp_path):
    empty = Journal(tmp_path / "a.jsonl")
    empty.append("session_start", id="a")
    assert empty.discard_if_empty() and not (tmp_path / "a.jsonl").exists()
    used = Journal(tmp_path / "b.jsonl")
    used.append("session_start", id="b")
    used.append("cell_start", cell=1, code="x = 1")
    assert not used.discard_if_empty() and (tmp_path / "b.jsonl").exists()
    again = Journal(tmp_path / "b.jsonl")  # a resumed session's journal is never deleted
    assert not again.discard_if_empty() and (tmp_path / "b.jsonl").exists()
    assert os.stat(tmp_path / "b.jsonl").st_size > 0


def test_a_copy_keeps_two_names_for_one_list_one_list():
    session, _ = make()
    session.run_direct("row = [1, 2]\ngrid = [row, row]")
    session.run_direct("row.append(3)")
    assert dispatch("/undo", session).text.endswith("(nothing re-ran)")
    ns = session.executor.namespace
    assert ns["grid"] == [[1, 2], [1, 2]] and ns["grid"][0] is ns["grid"][1] is ns["row"]
