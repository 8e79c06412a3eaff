"""Rendering: completed lines only, Python highlighted, plain without colour; the sanitizer."""

from __future__ import annotations

import pytest

from llmrepl.terminal.render import StreamRenderer, highlight_code
from llmrepl.terminal.sanitize import sanitize


def test_plain_output_is_exactly_the_text_once_per_completed_line():
    r = StreamRenderer(color=False)
    text = "Here:\n```python\nx = 1\n```\nDone."
    out = [r.feed(text[i : i + 3]) for i in range(0, len(text), 3)]
    assert "".join(out) + r.finish() == text + "\n"
    assert all("\x1b" not in piece for piece in out)
    assert r.feed("no newline yet") == ""


def test_code_lines_are_highlighted_and_prose_is_not_run_through_python_lexer():
    r = StreamRenderer(color=True)
    out = r.feed("Some *prose*\n```python\nimport os\n```\n") + r.finish()
    assert "\x1b[" in out
    assert "import" in out and "os" in out


def test_terminal_escapes_from_the_model_are_stripped():
    assert sanitize("Done.\x1b]0;pwned\x07\x1b[2Jred\x00") == "Done.red"
    r = StreamRenderer(color=False)
    assert r.feed("a\x1b[2Jb\n") == "ab\n"


def test_highlight_code_plain_when_colour_off():
    assert highlight_code("x = 1", False) == "x = 1\n"


# -- the sanitizer: one gate for every foreign byte on its way to the terminal ------------------

DRIVERS = {
    "OSC 52 clipboard (BEL)": "\x1b]52;c;ZWNobyBwd25lZA==\x07",
    "OSC 52 clipboard (ST)": "\x1b]52;c;ZWNobyBwd25lZA==\x1b\\",
    "OSC 0 window title": "\x1b]0;pwned\x07",
    "OSC 8 hyperlink": "\x1b]8;;https://evil.example\x1b\\",
    "8-bit OSC title": "\x9d0;pwned\x9c",
    "8-bit CSI clear": "\x9b2J",
    "CSI clear screen": "\x1b[2J",
    "CSI cursor up": "\x1b[3A",
    "DEC private mode": "\x1b[?1049h",
    "DCS": "\x1bPq#0;2;0;0;0\x1b\\",
    "APC": "\x1b_payload\x1b\\",
    "full reset": "\x1bc",
    "DECALN": "\x1b#8",
    "charset switch": "\x1b(0",
    "unterminated OSC": "\x1b]0;never ended",
    "lone ESC": "\x1b\t",
    "C1 NEL": "\x85",
    "backspace": "\x08\x08",
    "BEL": "\x07",
}


@pytest.mark.parametrize("output", [False, True])
@pytest.mark.parametrize("name", list(DRIVERS))
def test_nothing_that_drives_the_terminal_survives(name, output):
    out = sanitize(f"before{DRIVERS[name]}after\n", output=output, color=True)
    assert out.startswith("before") and out.endswith("after\n") or out == "before\n"
    assert "\x1b" not in out and not any("\x80" <= c <= "\x9f" for c in out)
    assert not any(c < " " and c not in "\n\t\r" for c in out)
    assert "pwned" not in out and "ZWNob" not in out


def test_split_sequences_cannot_reassemble_across_writes():
    pieces = ["a\x1b", "]0;title\x07b", "c\x1b[3", "1mred", "\x1b]52;c;QUFB", "QQ==\x07end"]
    joined = "".join(sanitize(p, output=True, color=True) for p in pieces)
    assert "\x1b" not in joined and "\x07" not in joined


def test_cell_output_keeps_colour_and_carriage_returns_only():
    bar = "\r 10%|#         |\r 50%|#####     |\r100%|##########|\n"
    assert sanitize(bar, output=True) == bar
    assert sanitize("\x1b[1;31mred\x1b[0m\x1b[2K", output=True, color=True) == "\x1b[1;31mred\x1b[0m"
    assert sanitize("\x1b[31mred\x1b[0m", output=True, color=False) == "red"
    assert sanitize("\x1b[31mred\x1b[0m") == "red"  # model text, reprs, tracebacks: no colour of theirs


def test_text_turns_carriage_returns_into_line_breaks_and_shows_bidi_controls():
    # as Python reads it: "x = 1 # c" then "import os" on a line of its own
    assert sanitize("x = 1 # c\rimport os\r\n") == "x = 1 # c\nimport os\n"
    assert sanitize("access = 'user\u202e \u2066// admin\u2069\u2066'") == (
        "access = 'user<U+202E> <U+2066>// admin<U+2069><U+2066>'")
    assert sanitize("naïve 中文 🧑\u200d💻\ttab") == "naïve 中文 🧑\u200d💻\ttab"  # text is left alone


def test_renderer_shows_a_lone_carriage_return_as_the_line_break_python_sees():
    r = StreamRenderer(color=False)
    out = r.feed("```python\nx = 1  # harmless\rimport os\n```\n") + r.finish()
    assert "x = 1  # harmless\nimport os\n" in out


def test_renderer_joins_a_crlf_split_across_deltas():
    r = StreamRenderer(color=False)
    assert r.feed("one\r") + r.feed("\ntwo\r\n") + r.finish() == "one\ntwo\n"
