"""What the person sees: llmrepl's exact bytes, drawn by a terminal emulator (pyte).

A ``TerminalDisplay`` writes into a StringIO at a fixed width; the bytes go to a pyte
``Screen`` of that width (newline as the tty's ONLCR makes it: CR LF), and the tests read the
screen: Markdown without its marks, prose wrapped at words, indented bullets, ``Out[N]:``,
the status line, the spinner while waiting and gone once text arrives. The last test runs
the real ``llmrepl`` in a pty against the fake server with a slow first token.
"""

from __future__ import annotations

import io
import struct
import threading
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

import pyte
import pytest

from llmrepl.execution.executor import ExecResult
from llmrepl.terminal.display import TerminalDisplay

COLS = 40


def screen(data: str, cols: int = COLS, rows: int = 40) -> pyte.Screen:
    s = pyte.Screen(cols, rows)
    s.set_mode(pyte.modes.LNM)  # "\n" is CR LF, as a tty's ONLCR makes it
    pyte.Stream(s).feed(data)
    return s


def lines(data: str, cols: int = COLS) -> list[str]:
    rows = [row.rstrip() for row in screen(data, cols).display]
    while rows and not rows[-1]:
        rows.pop()
    return rows


def make(color: bool = True, **kw: Any) -> tuple[TerminalDisplay, io.StringIO]:
    out = io.StringIO()
    kw.setdefault("spinner", False)
    return TerminalDisplay(out, color=color, width=COLS, **kw), out


def stream(display: TerminalDisplay, text: str, size: int = 3) -> None:
    display.answer_start()
    for i in range(0, len(text), size):
        display.answer_text(text[i:i + size])
    display.answer_end(None)  # type: ignore[arg-type]


def wait_for(predicate: Any, timeout: float = 10.0) -> bool:
    """Polls until ``predicate()`` (no timing assertion beyond "eventually")."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


# -- Markdown prose --------------------------------------------------------------------------


def test_bold_shows_without_asterisks_and_in_bold():
    d, out = make()
    stream(d, "Some **bold** and *soft* words.")
    s = screen(out.getvalue())
    assert s.display[0].rstrip() == "Some bold and soft words."
    row = s.buffer[0]
    assert row[5].bold and row[8].bold and not row[4].bold and not row[10].bold
    assert row[14].italics


def test_without_colour_markdown_is_plain_text_with_no_escapes():
    d, out = make(color=False)
    stream(d, "# Result\nThe **mean** is `4.2`:\n- north\n- south")
    assert "\x1b" not in out.getvalue()
    assert lines(out.getvalue()) == ["Result", "The mean is `4.2`:", "  • north", "  • south"]


def test_a_long_paragraph_wraps_at_word_boundaries_at_40_columns():
    text = ("The revenue by region shows that the north region sold considerably more "
            "units than the south, while the east and west regions were roughly equal overall.")
    d, out = make()
    stream(d, text, size=4)
    rows = lines(out.getvalue())
    assert len(rows) > 2 and all(len(r) <= COLS for r in rows)
    assert " ".join(rows).split() == text.split()  # every word whole, in order: no mid-word break


def test_wrapping_is_the_same_whether_the_text_streams_or_arrives_at_once():
    text = "- " + "word " * 30 + "\nAnd **a bold phrase that runs long** past the edge of the screen, twice over."
    whole, out_whole = make()
    stream(whole, text, size=len(text))
    for size in (1, 2, 5):
        d, out = make()
        stream(d, text, size=size)
        assert lines(out.getvalue()) == lines(out_whole.getvalue())


def test_bullets_are_indented_so_they_never_look_like_the_users_message():
    d, out = make()
    stream(d, "Steps:\n- load the table\n- group by region\n  - then sum\n1. plot it")
    assert lines(out.getvalue()) == ["Steps:", "  • load the table", "  • group by region",
                                     "    ◦ then sum", "  1. plot it"]


def test_a_wrapped_list_item_hangs_under_its_text():
    d, out = make()
    stream(d, "- " + " ".join(["alpha"] * 12))
    rows = lines(out.getvalue())
    assert rows[0].startswith("  • alpha") and all(r.startswith("    alpha") for r in rows[1:])


def test_text_appears_within_the_line_before_its_newline():
    d, out = make()
    d.answer_start()
    d.answer_text("Hello the")
    assert lines(out.getvalue()) == ["Hello the"]
    d.answer_text("re **wor")
    d.answer_text("ld**")
    assert lines(out.getvalue())[0] == "Hello there world"


def test_code_fence_is_highlighted_and_its_text_kept():
    d, out = make()
    stream(d, "```python\nimport os\nx = [1, 2]\n```", size=2)
    rows = lines(out.getvalue())
    assert rows == ["```python", "import os", "x = [1, 2]", "```"]
    s = screen(out.getvalue())
    assert s.buffer[1][0].fg != "default"  # "import" has a colour


def test_links_show_their_url_and_no_escape_from_the_model_survives():
    d, out = make()
    stream(d, "See [the docs](https://example.org/x) \x1b]8;;https://evil\x07here\x1b[2J.")
    raw = out.getvalue()
    assert "\x1b]" not in raw and "\x1b[2J" not in raw
    assert lines(raw)[0].startswith("See the docs (https://example.org/x)")


# -- a cell's shape: Out[N], the status line, the blank line before prose ----------------------


def result(**kw: Any) -> ExecResult:
    kw.setdefault("cell", 3)
    kw.setdefault("source", "x")
    kw.setdefault("duration", 0.57)
    return ExecResult(**kw)


def test_out_n_before_a_value_and_the_status_line_after_the_cell():
    d, out = make()
    d.cell_output("stdout", "computing\n")
    d.cell_result(result(value_repr="42"))
    assert lines(out.getvalue()) == ["computing", "Out[3]: 42", "✓ cell 3 · 0.57 s"]
    assert screen(out.getvalue()).buffer[1][0].fg == "red"  # Out[3]: styled as IPython does


def test_a_multi_line_value_starts_below_out_n():
    d, out = make()
    d.cell_result(result(value_repr="   a\n0  1\n1  2"))
    assert lines(out.getvalue())[:2] == ["Out[3]:", "   a"]


def test_an_error_cell_ends_with_its_exception_type_and_time():
    d, out = make()
    d.cell_result(result(cell=9, error="Traceback ...\nKeyError: 'region'", error_type="KeyError", duration=0.01))
    assert lines(out.getvalue())[-1] == "✗ KeyError · 0.01 s"


def test_interrupted_and_timed_out_cells_say_so_in_the_status_line():
    d, out = make()
    d.cell_result(result(cell=4, interrupted=True, error="KeyboardInterrupt", duration=3.2))
    d.cell_result(result(cell=5, timed_out=True, error="CellTimeout", duration=12.0))
    rows = lines(out.getvalue())
    assert "✗ cell 4 interrupted · 3.20 s" in rows and "✗ cell 5 timed out · 12.0 s" in rows


def test_status_line_is_ascii_when_the_terminal_is_not_utf8():
    d, out = make(color=False, ascii=True)
    d.cell_result(result(cell=9))
    assert lines(out.getvalue()) == ["ok cell 9 - 0.57 s"]


def test_a_blank_line_separates_a_cells_result_from_the_next_prose():
    d, out = make()
    d.cell_result(result(value_repr="42"))
    stream(d, "- The answer is 42.")
    assert lines(out.getvalue()) == ["Out[3]: 42", "✓ cell 3 · 0.57 s", "", "  • The answer is 42."]


# -- display items -----------------------------------------------------------------------------


@dataclass
class Item:  # the shape of execution.outputs.DisplayData
    data: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)
    at: int = 0
    text: str = ""
    screen: str | None = None


def png(width: int = 2, height: int = 1) -> bytes:
    raw = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def figure(path: str = "/tmp/s/figure-003.png") -> Item:
    return Item({"text/plain": "<Figure size 640x480 with 1 Axes>", "image/png": png()},
                {"filename": path, "width": 640, "height": 480})


def test_a_figure_without_inline_images_is_a_line_naming_its_file():
    d, out = make()
    d.cell_display(figure())
    assert "".join(lines(out.getvalue())) == "[figure 3 · 640×480 · /tmp/s/figure-003.png]"


def test_a_figure_is_drawn_inline_when_the_terminal_can():
    d, out = make()
    d.images = "kitty"
    d.cell_display(figure())
    assert "\x1b_G" in out.getvalue() and "figure-003" not in out.getvalue()


def test_a_figure_value_follows_out_n():
    d, out = make(color=False)
    d.cell_result(result(value_repr="<Axes: >", value_data=figure("/f/figure-001.png")))  # type: ignore[arg-type]
    assert lines(out.getvalue()) == ["Out[3]:", "[figure 1 · 640×480 · /f/figure-001.png]", "✓ cell 3 · 0.57 s"]


def test_tables_markdown_and_html_only_bundles():
    d, out = make(color=False)
    d.cell_display(Item({"text/plain": "wide table", "text/html": "<table/>"}, screen="   a  b\n0  1  2"))
    d.cell_display(Item({"text/plain": "<Report>", "text/markdown": "**Total**: 3"}))
    d.cell_display(Item({"text/plain": "<IPython.core.display.HTML object>", "text/html": "<b>x</b>"}))
    assert lines(out.getvalue()) == ["   a  b", "0  1  2", "Total: 3", "<IPython.core.display.HTML object>"]


# -- never a blank screen: the spinner ---------------------------------------------------------


def test_the_spinner_shows_while_waiting_and_is_erased_by_the_first_text():
    d, out = make(spinner=True)
    d.answer_start()
    d.busy("waiting for gpt-4o")
    assert any(r.endswith(" s") and "waiting for gpt-4o ·" in r for r in lines(out.getvalue()))
    d.answer_text("Hel")
    d.answer_text("lo.")
    d.answer_end(None)  # type: ignore[arg-type]
    assert wait_for(lambda: not any(t.name == "llmrepl-spinner" for t in threading.enumerate()))
    assert lines(out.getvalue()) == ["Hello."]  # and no tick of its thread drew it again


def test_a_retry_wait_is_shown_with_its_countdown():
    d, out = make(spinner=True)
    d.answer_start()
    d.busy("waiting for m")
    d.retrying("rate limited", 3)
    assert "rate limited, retrying in 3 s" in lines(out.getvalue())[0]
    d.answer_text("ok")
    d.answer_end(None)  # type: ignore[arg-type]
    assert lines(out.getvalue()) == ["ok"]


def test_a_retry_without_a_spinner_is_one_line_on_stderr():
    err = io.StringIO()
    d = TerminalDisplay(io.StringIO(), color=False, err=err)
    d.retrying("rate limited", 2.5)
    assert err.getvalue() == "llmrepl: rate limited, retrying in 3 s\n"


def test_a_silent_cell_gets_a_spinner_that_output_erases():
    d, out = make(spinner=True)
    d.busy("running cell 4", delay=0.2)
    assert lines(out.getvalue()) == []  # not at once: a quick cell shows nothing
    assert wait_for(lambda: any("running cell 4" in r for r in lines(out.getvalue())))
    d.cell_output("stdout", "step 1\n")
    assert lines(out.getvalue()) == ["step 1"]  # erased before the output, never interleaved
    d.busy(None)
    d.cell_result(result(cell=4))
    assert lines(out.getvalue()) == ["step 1", "✓ cell 4 · 0.57 s"]


def test_the_client_says_when_it_retries_and_the_display_shows_it(server):
    from llmrepl.model.client import OpenAIModel

    server.fail(429, "Rate limit reached", code="rate_limit_exceeded", retry_after=0.05)
    server.reply("after the wait")
    model = OpenAIModel("fake-model", base_url=server.base_url, max_retries=2)
    d, out = make(spinner=True)
    seen: list[tuple[str, float]] = []

    def on_retry(reason: str, seconds: float) -> None:
        seen.append((reason, seconds))
        d.retrying(reason, seconds)
        assert "rate limited, retrying in 1 s" in lines(out.getvalue())[-1]  # on screen during the wait

    model.on_retry = on_retry
    d.answer_start()
    d.busy("waiting for fake-model")
    text = model.complete([{"role": "user", "content": "hi"}], on_text=d.answer_text).text
    d.answer_end(None)  # type: ignore[arg-type]
    assert text == "after the wait" and seen == [("rate limited", 0.05)]
    assert lines(out.getvalue()) == ["after the wait"]
    assert [h.get("x-stainless-retry-count") for h in server.headers] == ["0", "1"]


def test_ctrl_c_during_a_retry_wait_ends_the_request(server):
    from llmrepl.model.client import OpenAIModel

    server.fail(503, "busy", retry_after=30)
    model = OpenAIModel("fake-model", base_url=server.base_url, max_retries=2)

    def on_retry(reason: str, seconds: float) -> None:
        assert (reason, seconds) == ("server error 503", 30.0)
        raise KeyboardInterrupt  # as the person's Ctrl-C would, in the wait

    model.on_retry = on_retry
    done = model.complete([{"role": "user", "content": "hi"}])
    assert done.interrupted and len(server.requests) == 1


def test_no_spinner_without_colour():
    d, out = make(color=False, spinner=None)
    d.busy("waiting for m")
    d.busy("running cell 1", delay=0.0)
    assert out.getvalue() == ""


# -- the real thing in a pty ------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_pty_spinner_before_a_slow_first_token_and_gone_after(server):
    import pexpect
    from launch import PROMPT, spawn

    server.slow(2.0, "Here is **the** answer.")
    child = spawn(["--base-url", server.base_url])
    log = io.StringIO()
    child.logfile_read = log
    try:
        child.expect_exact(PROMPT)
        child.send("hi\r")
        child.expect_exact("waiting for fake-model")  # the model the server lists, before the first token
        child.expect_exact("answer.")
        child.expect_exact(PROMPT)
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.terminate(force=True)
    s = pyte.Screen(120, 40)
    s.set_mode(pyte.modes.LNM)
    pyte.Stream(s).feed(log.getvalue())
    shown = [r.rstrip() for r in s.display]
    assert "Here is the answer." in shown  # its own line, no asterisks
    assert not any("waiting for" in r for r in shown)  # erased, not left behind or scrolled
