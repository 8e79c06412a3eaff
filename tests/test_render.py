"""Rendering: streamed Markdown, Python highlighted, plain without colour; the sanitizer."""

from __future__ import annotations

import pytest

from llmrepl.terminal.markdown import MarkdownStream, render_markdown
from llmrepl.terminal.render import highlight_code
from llmrepl.terminal.sanitize import sanitize


def StreamRenderer(color: bool) -> MarkdownStream:  # noqa: N802 - the old name, for these tests
    return MarkdownStream(color)


def test_plain_output_is_exactly_the_text_and_streams_within_the_line():
    r = StreamRenderer(color=False)
    text = "Here:\n```python\nx = 1\n```\nDone."
    out = [r.feed(text[i : i + 3]) for i in range(0, len(text), 3)]
    assert "".join(out) + r.finish() == text + "\n"
    assert all("\x1b" not in piece for piece in out)
    assert r.feed("no newline yet") == "no newline yet"  # within the line, not at its end


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


# -- Markdown ----------------------------------------------------------------------------------

def test_markdown_marks_are_rendered_not_shown():
    out = render_markdown("Some **bold**, *em*, ~~old~~ and a [link](https://e.x/a).\n", color=False)
    assert out == "Some bold, em, old and a link (https://e.x/a).\n"
    lit = render_markdown("Some **bold** and *em*\n", color=True)
    assert "\x1b[0;1mbold" in lit and "\x1b[0;3mem" in lit and "*" not in lit


def test_literal_stars_and_underscores_stay():
    text = "snake_case_name, 2*3*4 = 24, a * b stays\n"
    assert render_markdown(text, color=False) == text


def test_inline_code_keeps_its_backticks_without_colour_and_is_styled_with_it():
    assert render_markdown("run `df.head()` now\n", color=False) == "run `df.head()` now\n"
    lit = render_markdown("run `df.**x**` now\n", color=True)
    assert "\x1b[0;36mdf.**x**" in lit  # nothing inside a code span is markup


def test_lists_are_indented_and_headings_lose_their_hashes():
    out = render_markdown("## Steps\n- load\n  - parse\n1. sum\n", color=False)
    assert out == "Steps\n  • load\n    ◦ parse\n  1. sum\n"
    assert render_markdown("- a\n", color=False, ascii=True) == "  - a\n"


def test_prose_wraps_at_word_boundaries():
    text = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu\n"
    out = render_markdown(text, color=False, width=20)
    assert all(len(line) <= 20 for line in out.splitlines())
    assert out.split() == text.split()  # no word was cut


def test_a_link_is_text_and_url_never_an_osc_8_hyperlink():
    out = render_markdown("[click](javascript:alert\x1b]8;;x\x07)\n", color=True)
    assert "\x1b]" not in out and "\x07" not in out


@pytest.mark.parametrize("size", [1, 2, 3, 7])
def test_streaming_in_any_pieces_gives_the_same_text(size):
    text = "# T\nSome **bold** `c` [l](u) text\n- item\n```python\nx = 1\n```\nend"
    r = MarkdownStream(color=False)
    out = "".join(r.feed(text[i:i + size]) for i in range(0, len(text), size)) + r.finish()
    assert out == render_markdown(text, color=False)


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8])
def test_an_escape_sequence_cut_by_a_delta_never_shows_a_piece(size):
    attack = "\x1b]52;c;ZWNobyBwd25lZA==\x07\x1b]0;pwned\x1b\\\x9d2;c1-title\x9c\x1b[21t\x9b2J"
    text = f"Here {attack}VISIBLE done.\nnext {attack}line"
    r = MarkdownStream(color=False)
    out = "".join(r.feed(text[i:i + size]) for i in range(0, len(text), size)) + r.finish()
    assert out == "Here VISIBLE done.\nnext line\n"
