"""Attacks on the newest features (kernel Tab completion, the cell compile path): one
regression test per real finding, each failing before its fix."""

from __future__ import annotations

import pytest
from kernel_fakes import FakeClient, fake_kernel
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document

from llmrepl.execution import kernel_complete
from llmrepl.execution.executor import Executor
from llmrepl.terminal.completion import PromptCompleter, kernel_of, live_namespace

# -- a traceback quotes the line that failed ---------------------------------------------------


@pytest.mark.parametrize("separator", ["\x0c", "\x0b", "\x1c", "\x85", "\u2028", "\u2029"])
def test_a_traceback_quotes_the_failing_line_after_a_character_splitlines_breaks_at(separator: str) -> None:
    """Python ends a line only at LF, CR LF or CR; ``str.splitlines`` also at a form feed,
    NEL, U+2028... A cell holding one (PEP 8's page break, a pasted string) had every later
    line of its traceback misquoted: the person and the model were shown ``y = 2`` (or a
    piece of a string) as the line that raised."""
    ex = Executor()
    r = ex.run(f"x = 1  # page{separator}\ny = 2\nz = 1 / 0\n")
    assert r.error_type == "ZeroDivisionError" and r.done == 2
    assert r.error is not None
    assert 'File "<cell-1>", line 3, in <module>\n    z = 1 / 0\n' in r.error, r.error
    assert "y = 2" not in r.error
    r = ex.run(f"s = 'a{separator}b'\nraise ValueError('boom')")
    assert r.error is not None and "    raise ValueError('boom')\n" in r.error, r.error


def test_a_traceback_still_quotes_lines_split_by_cr_and_crlf() -> None:
    ex = Executor()
    r = ex.run("a = 1\rb = 2\r\nc = 1 / 0")
    assert r.error is not None and 'line 3, in <module>\n    c = 1 / 0\n' in r.error, r.error


# -- kernel Tab completion: a match is one line that can be written, sent and run -------------


def test_kernel_tab_offers_no_match_that_breaks_the_line_or_cannot_be_encoded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel's match with U+2028 (shown as nothing, so the line silently holds a
    character Python refuses) or a lone surrogate (the menu shows "?", the line gets what no
    cell, journal or request can encode) is not offered; the plain one still is."""
    monkeypatch.setattr(kernel_complete, "COMPLETE_WAIT", 30.0)
    matches = ["sales_total\u2028", "sales_t\u2029otal", "sales_total\ud800", "sales_total"]
    ex = fake_kernel(FakeClient([{"status": "ok", "matches": matches, "cursor_start": 0, "cursor_end": 7,
                                  "metadata": {}}]))
    completer = PromptCompleter(lambda: live_namespace(ex), lambda: kernel_of(ex))
    found = list(completer.get_completions(Document("sales_t"), CompleteEvent(completion_requested=True)))
    assert [c.text for c in found] == ["sales_total"]
    assert [c.display_text for c in found] == ["sales_total"]
    ex.shutdown()
