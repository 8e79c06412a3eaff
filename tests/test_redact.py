"""Secrets are scrubbed from what is shown, journaled and sent to the model."""

from __future__ import annotations

import json

import pytest

from llmrepl.context.builder import without_state
from llmrepl.engine.protocols import AutoApprove, NullDisplay
from llmrepl.engine.session import Session
from llmrepl.execution.executor import Executor
from llmrepl.model.client import ScriptedModel
from llmrepl.redact import Redactor, SecretInData, safe_url, url_secrets
from llmrepl.store.journal import Journal

KEY = "my-very-own-secret-key-0123456789"


def test_exact_key_and_key_shaped_strings_are_replaced():
    r = Redactor(KEY)
    text = f"key={KEY} other=sk-proj-abcdefghijklmnopqrstuvwx auth: Bearer abcdefghijklmnopqrstu"
    out = r.redact(text)
    assert KEY not in out and "sk-proj-abcdef" not in out and "abcdefghijklmnopqrstu" not in out
    assert out.count("[REDACTED]") == 3


def test_short_or_missing_secrets_are_ignored():
    assert Redactor(None, "", "abc").redact("abc sk-short") == "abc sk-short"


def test_a_cell_printing_the_key_never_reaches_the_model():
    model = ScriptedModel([f"```python\nsecret = {KEY!r}\nprint(secret)\nsecret\n```", "ok"])
    session = Session(model, Executor(), display=NullDisplay(), redactor=Redactor(KEY))
    turn = session.step("show me", AutoApprove())
    fed_back = model.calls[1]["messages"][-1]["content"]
    assert "[REDACTED]" in turn.cells[0].output and KEY not in turn.cells[0].output
    assert KEY not in turn.cells[0].value_repr
    assert KEY not in fed_back and "print(secret)" in fed_back


# -- pieces, line breaks, URLs ------------------------------------------------------------


def test_a_piece_of_the_key_twelve_characters_or_longer_is_replaced():
    r = Redactor(KEY)
    assert r.redact(f"x{KEY[5:17]}y") == "x[REDACTED]y"        # 12 characters from its middle
    assert r.redact(f"{KEY[:20]}…") == "[REDACTED]…"            # a value cut short
    assert r.redact(KEY[:11]) == KEY[:11]                        # shorter pieces are not the key
    assert r.holds_secret(f"a {KEY[3:20]} b") and not r.holds_secret("sk-proj-abcdefghijklmnopqrstuvwx")


def test_the_key_broken_across_lines_is_replaced_whole():
    r = Redactor(KEY)
    assert r.redact(f"a {KEY[:5]}\n{KEY[5:]} b") == "a [REDACTED] b"
    assert r.redact(f"key: {KEY[:20]}\r\n        {KEY[20:]}!") == "key: [REDACTED]!"
    assert r.redact(KEY[::-1]) == KEY[::-1] and r.redact(" ".join(KEY)) == " ".join(KEY)  # the documented limit


def test_url_credentials_are_replaced_and_other_urls_kept():
    r = Redactor()
    assert r.redact("at https://alice:p@ss:word@host:8/v1 ok") == "at https://[REDACTED]@host:8/v1 ok"
    for text in ("ssh://git@github.com/x", "http://host:8080/a@b", "mail me: a@b.example"):
        assert r.redact(text) == text


def test_safe_url_and_url_secrets():
    assert safe_url("https://alice:pw@h:1/v1?q=@") == "https://[REDACTED]@h:1/v1?q=@"
    assert safe_url("https://TOKEN12345@h/v1") == "https://[REDACTED]@h/v1"
    assert safe_url("http://h/v1") == "http://h/v1" and safe_url("not a url") == "not a url"
    assert url_secrets("https://alice:p%40ssword1@h/v1") == (
        "alice:p%40ssword1", "alice:p@ssword1", "p%40ssword1", "p@ssword1")
    assert url_secrets("http://h/v1") == () and url_secrets(None) == ()
    r = Redactor.for_model(None, "https://alice:p%40ssword1@h/v1")
    assert r.redact("password p@ssword1 and alice:p%40ssword1") == "password [REDACTED] and [REDACTED]"


def test_open_tail_holds_back_what_may_start_the_key():
    r = Redactor(KEY)
    assert r.open_tail(f"hello {KEY[:10]}") == 6
    assert r.open_tail(f"hello {KEY[:10]}\n") == 6         # the rest may follow on the next line
    assert r.open_tail(f"hello {KEY[:3]}") == 9             # three characters say nothing
    assert r.open_tail(f"x {KEY}") == len(KEY) + 2          # the whole key: redact() replaces it
    assert r.open_tail("progress 50%") == 12 and Redactor().open_tail("abc") == 3


def test_guard_refuses_bytes_holding_the_key_in_any_of_its_encodings():
    import io
    import pickle

    import numpy as np

    r = Redactor(KEY)
    for value in (KEY, KEY.encode(), {"k": [KEY]}, np.array(["x", KEY])):
        with pytest.raises(SecretInData):
            pickle.dump(value, r.guard(io.BytesIO()), protocol=5)
    out = io.BytesIO()
    guarded = r.guard(out)
    guarded.write(b"head " + KEY[:20].encode())
    with pytest.raises(SecretInData):  # split between two writes
        guarded.write(KEY[20:].encode())
    clean = io.BytesIO()
    pickle.dump(np.zeros(1000), r.guard(clean), protocol=5)
    assert clean.getvalue() and Redactor().guard(clean) is clean


# -- the session's gates ------------------------------------------------------------------


class _Notices(NullDisplay):
    def __init__(self) -> None:
        self.notices: list[str] = []

    def notice(self, text: str, level: str = "info") -> None:
        self.notices.append(text)


def test_a_message_holding_the_key_is_redacted_before_it_is_sent_with_a_notice(tmp_path):
    model = ScriptedModel(["ok"])
    display = _Notices()
    journal = Journal(tmp_path / "j.jsonl")
    session = Session(model, Executor(), display=display, journal=journal, redactor=Redactor(KEY))
    session.step(f"why does {KEY} fail", AutoApprove())
    assert without_state(model.calls[0]["messages"][-1]["content"]) == "why does [REDACTED] fail"
    assert session.messages[0]["content"] == "why does [REDACTED] fail"
    assert any("your message contained the API key" in n for n in display.notices)
    assert KEY[:12] not in (tmp_path / "j.jsonl").read_text()


def test_the_request_is_the_gate_digest_names_and_tool_call_arguments():
    model = ScriptedModel(["ok"])
    session = Session(model, Executor(), display=NullDisplay(), redactor=Redactor(KEY))
    session.run_direct(f"token = {KEY!r}; globals()[token] = 1; blurb = 'x' * 30 + token + 'y' * 80")
    session.messages.append({"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "run_python", "arguments": json.dumps({"code": KEY})}}]})
    session.messages.append({"role": "tool", "tool_call_id": "c1", "content": "done"})
    session.step("go on", AutoApprove())
    sent = json.dumps(model.calls[0]["messages"])
    assert KEY not in sent and KEY[:10] not in sent and KEY[-12:] not in sent
    assert "- token: '[REDACTED]'" in model.calls[0]["messages"][-1]["content"]


def test_a_snapshot_leaves_out_a_value_holding_the_key_and_says_why(tmp_path):
    from llmrepl.store.snapshots import SnapshotStore

    display = _Notices()
    session = Session(ScriptedModel([]), Executor(), display=display, redactor=Redactor(KEY))
    session.enable_snapshots(SnapshotStore(tmp_path / "snaps"))
    session.run_direct(f"token = {KEY!r}; n = 1; globals()[{KEY!r}] = 2")
    session.run_direct("m = 3")
    files = b"".join(p.read_bytes() for p in (tmp_path / "snaps").rglob("*") if p.is_file())
    assert KEY.encode() not in files and b"[REDACTED]" in files
    assert any("token (holds the API key" in n for n in display.notices)
    undo = session.undo()
    assert "token (holds the API key, kept off disk)" in undo.summary
    assert session.executor.namespace["token"] == KEY and session.executor.namespace[KEY] == 2  # kept
    assert "m" not in session.executor.namespace  # the rest was rewound
