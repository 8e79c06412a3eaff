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
