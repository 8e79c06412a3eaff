"""The journal: append-only JSONL, private, fsynced, robust to torn lines and bad folders."""

from __future__ import annotations

from llmrepl.store.journal import Journal, read_journal


def test_records_are_appended_in_order_and_private(tmp_path):
    path = tmp_path / "sessions" / "a.jsonl"
    j = Journal(path)
    j.append("user", text="hi")
    j.append("assistant", text="héllo \ud800")  # a lone surrogate must not crash the write
    records, bad = read_journal(path)
    assert [r["event"] for r in records] == ["user", "assistant"] and bad == 0
    assert (path.stat().st_mode & 0o777) == 0o600
    assert (path.parent.stat().st_mode & 0o777) == 0o700


def test_torn_last_line_is_terminated_so_new_records_survive(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_bytes(b'{"event":"user","text":"ok"}\n{"event":"assis')
    j = Journal(path)
    j.append("user", text="after crash")
    records, bad = read_journal(path)
    assert [r.get("text") for r in records] == ["ok", "after crash"] and bad == 1


def test_api_key_is_never_written(tmp_path):
    path = tmp_path / "k.jsonl"
    j = Journal(path)
    j.redact("sk-secret-abcdefghijklmnop")
    j.append("cell_end", output="key=sk-secret-abcdefghijklmnop")
    assert "sk-secret-abcdefghijklmnop" not in path.read_text()


def test_missing_parent_that_cannot_be_created_keeps_records_in_memory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    j = Journal(blocker / "sessions" / "x.jsonl")
    j.append("user", text="kept")
    assert j.error and "in memory" in j.error
    assert len(j.unsaved) == 1


# -- one owner, private files, any line read back safely (issue 11) ------------------------


def test_a_second_journal_on_the_same_file_is_busy_and_writes_nothing(tmp_path):
    path = tmp_path / "s.jsonl"
    first = Journal(path)
    first.append("user", text="one")
    before = path.read_bytes()
    second = Journal(path)
    assert second.busy and second.error and "another llmrepl process" in second.error
    second.append("user", text="two")
    assert path.read_bytes() == before
    first.close()
    third = Journal(path)  # the lock goes with the first one's file
    assert not third.busy
    third.close()


def test_journal_is_0600_whatever_the_umask_and_never_a_fifo(tmp_path):
    import os

    old = os.umask(0o277)
    try:
        j = Journal(tmp_path / "new" / "u.jsonl")
        j.append("user", text="x")
        j.close()
    finally:
        os.umask(old)
    assert (tmp_path / "new" / "u.jsonl").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "new").stat().st_mode & 0o777 == 0o700
    fifo = tmp_path / "f.jsonl"
    os.mkfifo(fifo)
    j = Journal(fifo)  # would block forever in open() without O_NONBLOCK
    assert j.error and "in memory" in j.error  # ENXIO (no reader) or "not a regular file"


def test_read_journal_skips_lines_of_any_shape(tmp_path):
    from llmrepl.store.records import read_records

    path = tmp_path / "b.jsonl"
    path.write_bytes(
        b'{"t":1,"event":"user","text":"ok"}\n'
        b'{"t":1e400,"event":"user","text":"inf"}\n'
        b'{"t":1,"event":"cell_end","cell":"2"}\n'
        b'{"t":1,"event":"message","message":{"role":"system","content":"x"}}\n'
        + b"[" * 50_000 + b"]" * 50_000 + b"\n"
        b'{"t":1,"event":"user","text":"lone \\ud800"}\n'
    )
    records, skipped = read_records(path)
    assert [r["text"] for r in records] == ["ok", "lone \ufffd"]
    assert [s.line for s in skipped] == [2, 3, 4, 5]
    assert read_journal(path) == (records, 4)


# -- display bundles in cell_end (issue 12) -----------------------------------------------


def _rich_session(tmp_path, extras, *, max_capture_chars=200_000):
    from test_sessions import RichExecutor

    from llmrepl.engine.protocols import NullDisplay
    from llmrepl.engine.session import Session
    from llmrepl.model.client import ScriptedModel
    from llmrepl.redact import Redactor

    path = tmp_path / "sessions" / "rich.jsonl"
    executor = RichExecutor(figure_dir=tmp_path / "sessions" / "rich", max_capture_chars=max_capture_chars)
    executor.extras.extend(extras)
    redactor = Redactor.for_model("sk-proj-SECRETSECRETSECRET1234", None)
    session = Session(ScriptedModel([]), executor, display=NullDisplay(), journal=Journal(path), redactor=redactor)
    return session, path


def test_cell_end_keeps_display_text_and_the_figure_file_never_its_bytes(tmp_path):
    from test_sessions import DisplayData, figure_display, table_display

    from llmrepl.store.transcript import load_session

    fig = tmp_path / "sessions" / "rich" / "figure-001.png"
    secret = "sk-proj-SECRETSECRETSECRET1234"
    table = table_display(6, text=f"   key\n0  {secret}", html=f"<td>{secret}</td>")
    value = DisplayData({"text/plain": "3", "text/html": "<b>3</b>", "application/json": {"a": 1}}, {}, 0, "3")
    session, path = _rich_session(tmp_path, [([table, figure_display(fig, 6)], value)])
    session.run_direct("print('hello')\n3")
    raw = path.read_text()
    assert secret not in raw and "iVBORw0KGgo" not in raw and "\\u0089PNG" not in raw  # no key, no PNG bytes
    end = [r for r in read_journal(path)[0] if r["event"] == "cell_end"][0]
    shown_table, shown_fig = end["displays"]
    assert shown_table["data"]["text/html"] == "<td>[REDACTED]</td>" and shown_table["at"] == 6
    assert shown_table["text"] == "   key\n0  [REDACTED]"
    assert shown_fig["data"] == {"text/plain": "<Figure size 4x3 with 1 Axes>"}  # image/png stays on disk
    assert shown_fig["metadata"] == {"filename": str(fig), "width": 4, "height": 3}
    assert shown_fig["text"].startswith("figure 4x3 px")
    assert end["value_data"] == {"data": {"text/plain": "3", "text/html": "<b>3</b>"}, "metadata": {}, "at": 0,
                                 "text": "3"}
    # and read back into the stored cell
    stored = load_session(path)
    c = stored.cells[0]
    assert [d.at for d in c.displays] == [6, 6] and c.displays[1].filename == str(fig)
    assert c.value_data is not None and c.value_data.data["text/html"] == "<b>3</b>"


def test_display_text_is_cut_to_the_bound_the_output_has(tmp_path):
    from test_sessions import table_display

    big = "row\n" * 50_000
    session, path = _rich_session(tmp_path, [([table_display(0, text=big, html="<p>" + big)], None)],
                                  max_capture_chars=1000)
    session.run_direct("x = 1")
    end = [r for r in read_journal(path)[0] if r["event"] == "cell_end"][0]
    kept = end["displays"][0]
    assert len(kept["text"]) < 1100 and "characters omitted" in kept["text"]
    assert len(kept["data"]["text/html"]) < 1100 and kept["data"]["text/html"].startswith("<p>row")


def test_a_journal_from_before_display_bundles_still_loads(tmp_path):
    from test_sessions import cell, write_journal

    from llmrepl.store.transcript import load_session

    path = write_journal(tmp_path / "old.jsonl", [*cell(1, "print(1)", "1\n")])
    stored = load_session(path)
    assert stored.bad_lines == 0 and stored.cells[0].output == "1\n"
    assert stored.cells[0].displays == [] and stored.cells[0].value_data is None
