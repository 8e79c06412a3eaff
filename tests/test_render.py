"""Rendering: completed lines only, Python highlighted, plain without colour, controls stripped."""

from __future__ import annotations

from llmrepl.terminal.render import StreamRenderer, highlight_code, strip_controls


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
    assert strip_controls("Done.\x1b]0;pwned\x07\x1b[2Jred\x00") == "Done.red"
    r = StreamRenderer(color=False)
    assert r.feed("a\x1b[2Jb\n") == "ab\n"


def test_highlight_code_plain_when_colour_off():
    assert highlight_code("x = 1", False) == "x = 1\n"
