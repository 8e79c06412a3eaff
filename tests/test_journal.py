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
