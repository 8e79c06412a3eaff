"""Secrets are scrubbed from what is shown, journaled and sent to the model."""

from __future__ import annotations

from llmrepl.engine.protocols import AutoApprove, NullDisplay
from llmrepl.engine.session import Session
from llmrepl.execution.executor import Executor
from llmrepl.model.client import ScriptedModel
from llmrepl.redact import Redactor

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
