"""An attacker's pass over the output paths of issues 11 and 12: fd capture, MIME bundles and
display(), inline images, Markdown streaming, the spinner, the journal and the exports.

Every byte from the model, a cell, a child process, a file or a stored journal is hostile.
Each case says in its docstring whether it FAILED before the fix that came with it (and what
happened then) or passed on first try (the catalogue grows either way). Unit-level cases are
used where the unit is the whole path (the renderer, the encoder, the spinner); the rest run
the installed ``llmrepl`` through the fault harness and look at what reached stdout, the pty,
the journal, the server and the exports.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import pytest

from llmrepl.execution.outputs import DisplayData
from llmrepl.terminal.display import TerminalDisplay, figure_line
from llmrepl.terminal.images import encode_image
from llmrepl.terminal.markdown import MarkdownStream, render_markdown
from llmrepl.terminal.render import text_width
from llmrepl.terminal.spinner import Spinner

from .harness import ALIVE_OUT, CONFIRM, KEY, PROMPT, fault_run, spawn_repl

# the key, written in cells only as two pieces (a cell's code is journaled as typed)
K1, K2 = KEY[:12], KEY[12:]
KEY_EXPR = f"{K1!r} + {K2!r}"
ESC_EXPR = "chr(27) + ']52;c;QUFB' + chr(7) + chr(0x9d) + '0;t' + chr(0x9c) + chr(27) + '[21t'"


def _drivers(raw: str, own: tuple[str, ...] = ()) -> list[str]:
    """Terminal-driving sequences in ``raw`` (after removing ``own``: llmrepl's image escapes)."""
    for o in own:
        raw = raw.replace(o, "")
    found = [name for name, needle in (("OSC", "\x1b]"), ("DCS", "\x1bP"), ("APC", "\x1b_"),
                                       ("title report", "\x1b[21t"), ("clear", "\x1b[2J"), ("BEL", "\x07"))
             if needle in raw]
    c1 = sorted({f"U+{ord(c):04X}" for c in raw if "\x80" <= c <= "\x9f"})
    return found + (["C1 " + ", ".join(c1)] if c1 else [])


def _png(width: int, height: int, extra: bytes = b"") -> bytes:
    """A PNG whose header says ``width`` x ``height`` (its pixel data is a few bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + extra + chunk(b"IEND", b""))


# Bounds that tell linear from quadratic with room for a loaded 2-core CI machine: the
# quadratic cases took 6 to 343 s; linear ones take well under a second alone.
LINEAR = 15.0


def _stream(text: str, step: int, color: bool = True, width: int | None = 80) -> tuple[str, float]:
    md = MarkdownStream(color, width)
    start = time.perf_counter()
    out = [md.feed(text[i:i + step]) for i in range(0, len(text), step)]
    out.append(md.finish())
    return "".join(out), time.perf_counter() - start


def _shown(item: DisplayData, images: str | None = None, color: bool = True) -> str:
    out = io.StringIO()
    d = TerminalDisplay(out, color=color, spinner=False, width=80)
    d.images = images
    d.cell_display(item)
    return out.getvalue()


# -------------------------------------------------------------------------------------------
# Markdown: pathological model text
# -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, text", [
    ("1 MB of spaces", " " * 1_000_000),
    ("100k asterisks", "*" * 100_000),
    ("100k spaced asterisks (a rule so far)", "* " * 50_000),
    ("a bullet indented 20k columns", " " * 20_000 + "- item\n"),
])
def test_markdown_long_undecided_line_streams_in_linear_time(name, text):
    """FAILED before: a line whose block was not decided yet (blank so far, a rule so far, an
    indent) was joined and matched again at every delta: 1 MB of spaces in 7-character deltas
    took 343 s, 100k '*' 30 s. Now it is tried again only as it doubles past 256 characters."""
    out, took = _stream(text, 7)
    whole, _ = _stream(text, len(text))
    assert took < LINEAR, f"{name}: {took:.1f} s"
    assert _drivers(out) == []
    assert re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", out).strip() == re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", whole).strip()


@pytest.mark.parametrize("mark", ["*", "`", "~", "_"])
def test_markdown_long_delimiter_runs_stream_in_linear_time(mark):
    """FAILED before: a run of one delimiter at a delta's end was held and scanned again with
    each next delta: ``x `` + 200k of ``*`` (or backticks, ``~``, ``_``) in 7-character deltas
    ran past 20 s. Now a run longer than any mark is literal text at once."""
    text = "x " + mark * 200_000 + " y"
    for color in (True, False):
        out, took = _stream(text, 7, color)
        assert took < LINEAR, f"{took:.1f} s"
    assert out.count(mark) == 200_000 and out.rstrip().endswith("y")  # plain: written once


@pytest.mark.parametrize("name, text", [
    ("1 MB line without spaces", "a" * 1_000_000),
    ("3000 nested list levels", "".join("  " * i + "- x\n" for i in range(0, 3000, 7))),
    ("200k open brackets", "x " + "[" * 200_000),
    ("100k unclosed links", "x " + "[a](b" * 100_000),
    ("200k backslashes", "\\" * 200_000),
    ("200k hashes", "#" * 200_000),
    ("1 MB fence info string", "```" + "p" * 1_000_000 + "\nx\n```"),
    ("1 MB code line", "```python\n" + "x" * 1_000_000 + "\n```"),
    ("100k quote marks", ">" * 100_000),
    ("100k ESC [", "\x1b[" * 100_000),
    ("500k wide characters", "全" * 500_000),
])
def test_markdown_pathological_input_no_exception_no_blow_up(name, text):
    """Passed on first try: no exception, no quadratic time, no escape from the text."""
    for step in (len(text), 7):
        out, took = _stream(text, step)
        assert took < 4 * LINEAR, f"{name}, deltas of {step}: {took:.1f} s"
        assert _drivers(out) == []


def test_markdown_escapes_in_links_headings_fences_and_tables_are_dropped():
    """Passed on first try: OSC 52, a title change, 8-bit C1 and a title report in a link's
    URL and text, a heading, a code fence's info string, a table row and a code line, streamed
    one character at a time (so every escape is split across deltas), drive nothing."""
    attack = "\x1b]52;c;QUFB\x07\x9d0;t\x9c\x1b[21t\x1b]8;;http://evil\x1b\\"
    text = (f"# Head{attack}ing\n\nSee [the{attack} docs](http://x.example/{attack}a) now.\n\n"
            f"```py{attack}thon\nprint(1){attack}\n```\n\n| a{attack} | b |\n|---|---|\n"
            f"- item {attack}**bold**\n")
    for color in (True, False):
        out, _ = _stream(text, 1, color)
        assert _drivers(out) == [], repr(out)
        seen = re.sub(r"\x1b\[[0-9;]*m", "", out)
        assert "Heading" in seen and "docs" in seen and "bold" in seen and "print(1)" in seen
        assert _drivers(render_markdown(text, color, 60)) == []


# -------------------------------------------------------------------------------------------
# inline images and the [figure ...] line
# -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", ["kitty", "iterm2", "sixel"])
@pytest.mark.parametrize("side", [100_000, 12_000])
def test_a_decompression_bomb_png_is_not_drawn_inline(protocol, side, recwarn):
    """FAILED before: a 200-byte PNG whose header says 100000x100000 (or 12000x12000) went to
    kitty and iTerm2 whole, for the terminal to decode (40 GB of pixels), and sixel had Pillow
    decode 144 M pixels (a DecompressionBombWarning on stderr). Now more than 40 M pixels is
    shown as its saved path."""
    item = DisplayData({"text/plain": "x", "image/png": _png(side, side)},
                       {"filename": "/s/figure-004.png", "width": side, "height": side})
    shown = _shown(item, protocol)
    assert "\x1b_G" not in shown and "\x1b]1337" not in shown and "\x1bP" not in shown
    assert f"[figure 4 · {side}×{side} · /s/figure-004.png]" in shown
    assert not [w for w in recwarn if "DecompressionBomb" in type(w.message).__name__]


@pytest.mark.parametrize("protocol", ["kitty", "iterm2"])
def test_png_bytes_holding_esc_and_bel_reach_the_terminal_only_as_base64(protocol):
    """Passed on first try: a PNG whose bytes hold ESC ] ... BEL and C1 controls is framed as
    base64; decoding the escape gives back the PNG, and nothing else drives the terminal."""
    png = _png(8, 8, extra=b"\x1b]0;pwned\x07\x9d\x1b_Gevil\x1b\\")
    drawn = encode_image(png, protocol, max_cols=40, max_rows=10)
    if protocol == "kitty":
        chunks = re.findall(r"\x1b_G([^;]*);([A-Za-z0-9+/=]*)\x1b\\", drawn)
        assert "".join(f"\x1b_G{k};{d}\x1b\\" for k, d in chunks) == drawn
        payload = "".join(d for _, d in chunks)
    else:
        m = re.fullmatch(r"\x1b\]1337;File=inline=1;size=\d+;width=\d+;height=\d+;preserveAspectRatio=1:"
                         r"([A-Za-z0-9+/=]*)\x07", drawn)
        assert m is not None
        payload = m[1]
    assert base64.b64decode(payload) == png


def test_a_garbage_png_is_shown_as_its_path_not_an_exception():
    """Passed on first try: bytes that start like a PNG but are not one (a hostile
    ``_repr_png_``) reach the encoder; the display names the file instead."""
    item = DisplayData({"text/plain": "x", "image/png": b"\x89PNG\r\n\x1a\n" + b"\x1b]0;t\x07" * 10},
                       {"filename": "/s/figure-002.png"})
    for protocol in ("kitty", "iterm2", "sixel"):
        shown = _shown(item, protocol)
        assert "[figure 2 · /s/figure-002.png]" in shown and _drivers(shown) == []


def test_hostile_image_metadata_cannot_fake_a_line_or_break_the_display():
    """FAILED before: a file name holding a newline put a fake ``llmrepl:`` line on the
    screen, and ``width`` = a 5,000-digit int raised ValueError out of ``cell_display`` (the
    int cannot be printed). Now the name stays on its line and only sane sizes are shown."""
    meta = {"filename": "/s/x.png\nllmrepl: all clear\x1b]0;t\x07\x9d", "width": 10 ** 5000, "height": -5}
    line = figure_line(meta)
    assert "\n" not in line and _drivers(line) == []
    shown = _shown(DisplayData({"text/plain": "x", "image/png": _png(4, 4)}, meta))
    assert shown.count("\n") == 1 and "llmrepl: all clear" in shown  # one line, the name quoted in it
    assert _drivers(shown) == []
    assert figure_line({"filename": "/s/figure-001.png", "width": "1\x1b[2J", "height": 2}) == \
        "[figure 1 · /s/figure-001.png]"


# -------------------------------------------------------------------------------------------
# the spinner: a model name or retry reason from a server
# -------------------------------------------------------------------------------------------

def test_the_spinner_label_from_a_server_stays_on_one_row():
    """FAILED before: a model name with a newline drew the spinner on two rows, and ``\\r``
    + erase-line took back only the last: each redraw left a row behind; 60 wide characters
    (a CJK model name) counted as 60 columns, not 120, and wrapped. Now the label is one row
    within the terminal's width, whatever it holds."""
    raw = io.StringIO()
    display = TerminalDisplay(raw, color=True, spinner=True, width=40)
    display.busy("waiting for evil\nmodel\x1b]0;t\x07\x9d" + "全" * 60)
    display.busy(None)
    display.retrying("rate\nlimited\r\x1b[2J", 1.0)
    display.busy(None)
    text = raw.getvalue()
    assert _drivers(text) == []
    for frame in re.split(r"\r\x1b\[K", text):
        plain = re.sub(r"\x1b\[[0-9;]*m", "", frame)
        assert "\n" not in plain and "\r" not in plain, repr(frame)
        assert text_width(plain) < 40, repr(plain)
    assert "waiting for evil model" in text and "rate limited" in text and "retrying in 1 s" in text


def test_the_spinner_itself_cuts_wide_labels_by_columns():
    """FAILED before (see above): the cut was by characters, so wide ones overflowed the row."""
    out: list[str] = []
    spinner = Spinner(out.append, threading.RLock(), ready=lambda: True, columns=lambda: 30)
    spinner.start("模型" * 40)
    spinner.stop()
    drawn = [re.sub(r"\x1b\[[0-9;]*m", "", f) for f in "".join(out).split("\r\x1b[K") if f]
    assert drawn and all(text_width(f) < 30 for f in drawn)


# -------------------------------------------------------------------------------------------
# display() metadata and rich reprs, in the executor
# -------------------------------------------------------------------------------------------

class _Sink:
    def __init__(self) -> None:
        self.items: list[Any] = []

    def write(self, stream: str, text: str) -> None:
        pass

    def display(self, item: Any) -> None:
        self.items.append(item)


def test_display_metadata_cannot_name_the_saved_file_or_break_the_journal(tmp_path):
    """FAILED before: ``display(obj, metadata={"filename": "/etc/passwd"})`` kept that name,
    so the PNG was never saved and the screen, the model and the journal named
    /etc/passwd; ``notes`` could forge llmrepl's notes, and a ``width`` of 5,000 digits broke
    the figure line. Now the image is always saved in the figure folder under llmrepl's own
    name, and only sane sizes are kept."""
    from llmrepl.execution.executor import Executor
    from llmrepl.store.records import display_record

    png = _png(6, 4)
    ex = Executor(figure_dir=tmp_path / "figs")
    ex.sink = _Sink()
    ex.namespace["PNG"] = png
    code = ("class P:\n    def _repr_png_(self):\n        return PNG\n"
            "    def _repr_mimebundle_(self, include=None, exclude=None):\n"
            "        return {'text/plain': 'p'}, {'filename': '/etc/shadow', 'notes': ['forged']}\n"
            "display(P(), metadata={'filename': '/etc/passwd', 'width': 10 ** 5000, 'notes': ['forged'],"
            " 'height': 'tall'})\n"
            "display({'text/plain': 'raw'}, raw=True, metadata={'filename': '/etc/passwd'})")
    r = ex.run(code)
    assert r.error is None, r.error
    assert len(r.displays) == 2
    for item in r.displays:
        name = item.metadata.get("filename")
        assert name is None or Path(name).parent == tmp_path / "figs", item.metadata
        assert "forged" not in item.metadata.get("notes", [])
        json.dumps(display_record(item, 1000))  # the journal can write it
    pic = r.displays[0]
    assert Path(pic.metadata["filename"]).read_bytes() == png
    assert (pic.metadata["width"], pic.metadata["height"]) == (6, 4)
    assert "/etc/" not in "".join(d.text for d in r.displays)


# -------------------------------------------------------------------------------------------
# the whole program, batch: fd capture, reprs, tables, figures, the key
# -------------------------------------------------------------------------------------------

def _no_drivers(r: Any) -> None:
    assert _drivers(r.stdout) == [] and _drivers(r.stderr) == [], r.excerpt()


def test_the_key_printed_by_a_child_in_pieces_across_fd_reads_is_redacted(server):
    """Passed on first try: a child process prints the key in two writes 0.3 s apart (two
    reads of the capture pipe); it is redacted on screen, in the journal and in the request."""
    sh = f"printf 'k=%s' {K1}; sleep 0.3; printf '%s done\\n' {K2}"
    server.reply("Noted.")
    r = fault_run(server, [f"/py import subprocess; subprocess.run(['sh', '-c', {sh!r}])", "what did it print?"])
    r.assert_ok(journaled=["k="])
    assert "done" in r.shown
    assert not any(KEY in t for t in r.request_texts())


def test_the_key_in_reprs_tables_and_figure_titles_is_redacted_everywhere(server, tmp_path):
    """Passed on first try: the key inside a display item's HTML and Markdown, a DataFrame's
    values and a figure's title is on no screen, journal line, request or export."""
    pytest.importorskip("pandas")
    pytest.importorskip("matplotlib")
    lines = [
        f"/py k = {KEY_EXPR}",
        "/py H = type('H', (), {'_repr_html_': lambda s: '<b>' + k + '</b>', "
        "'_repr_markdown_': lambda s: '**' + k + '**', '__repr__': lambda s: 'H()'}); display(H())",
        "/py import pandas as pd; df = pd.DataFrame({'c': [k, 'x']}); display(df); df",
        "/py import matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot as plt; "
        "plt.plot([1, 2]); plt.title('t ' + k)",
        "tell me about it",
        f"/export {tmp_path / 'k.ipynb'}",
        f"/export {tmp_path / 'k.py'}",
        f"/export {tmp_path / 'k.md'}",
    ]
    r = fault_run(server, lines, env={"MPLBACKEND": "Agg"})
    r.assert_ok(check_shown=False)  # (the [figure ...] line and /export's notices are llmrepl's own)
    assert not any(KEY in t for t in r.request_texts())  # (the cell's code holds it in two pieces)
    for name in ("k.ipynb", "k.py", "k.md"):
        data = (tmp_path / name).read_text()
        assert KEY not in data and "[REDACTED]" in data, name
    assert r.stdout.count("[REDACTED]") >= 3


def test_escapes_from_child_processes_reprs_tables_and_figure_titles_drive_nothing(server):
    """Passed on first try: OSC 52, a title, C1 controls (one split across two fd reads, the
    UTF-8 of U+009D in two writes) and a title report from a child process, ``_repr_markdown_``,
    ``_repr_html_``'s plain text, display() metadata, DataFrame cells and column names, and a
    figure title; batch stdout gets none of them."""
    pytest.importorskip("pandas")
    sh = r"printf 'A\033]52;c;QUFB'; sleep 0.2; printf '\007\302'; sleep 0.2; printf '\2350;t\234B\n'"
    lines = [
        f"/py import subprocess; subprocess.run(['sh', '-c', {sh!r}])",
        f"/py e = {ESC_EXPR}",
        "/py M = type('M', (), {'_repr_markdown_': lambda s: '# h' + e + '\\n[l' + e + '](u' + e + ')', "
        "'__repr__': lambda s: '<M object>'}); display(M(), metadata={'width': e, 'filename': e})",
        "/py import pandas as pd; df = pd.DataFrame({'col' + e: ['v' + e, 'w']}); display(df); df",
        "/py import matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot as plt; plt.plot([1]); plt.title('T' + e)",
    ]
    r = fault_run(server, lines)
    r.assert_ok(check_shown=False)  # (a display's Markdown is shown rendered, journaled as written)
    _no_drivers(r)
    out = [e for e in r.events("cell_end") if e.get("cell") == 1][0]["output"]
    assert out.startswith("A") and "B\n" in out  # the child's text around the escapes is kept


def test_a_child_writing_100_mb_costs_bounded_time_memory_and_journal(server):
    """Passed on first try: ``yes | head -c 100M`` through fd 1; llmrepl survives, shows the head
    and tail, and the journal stays small."""
    r = fault_run(server, ["/py import subprocess; subprocess.run('yes | head -c 100000000', shell=True)"],
                  timeout=120, measure_rss=True)
    r.assert_ok(check_shown=False)
    size = sum(p.stat().st_size for p in r.journal_files())
    assert size < 10_000_000, size
    assert r.rss_kb is not None and r.rss_kb < 1_500_000, r.rss_kb
    assert r.elapsed < 90


def test_a_child_that_keeps_its_copy_of_the_pipe_open_holds_nothing(server):
    """Passed on first try: a background child inherits fd 1 and sleeps; the cell ends at
    once, the next cell runs, and llmrepl exits without waiting for the child."""
    r = fault_run(server, ["/py import subprocess; p = subprocess.Popen(['sleep', '30']); print('started')",
                           "/py print('next-' + 'cell')"], timeout=40)
    r.assert_ok()
    assert "next-cell" in r.shown and r.elapsed < 20, r.elapsed


def test_a_cell_that_makes_fd_1_non_blocking_loses_no_later_output(server):
    """Checks the pipe's file status after a cell: a cell that sets fd 1 non-blocking (the pipe
    of the capture is shared with every child) must not make a later child's big write fail."""
    lines = ["/py import os; os.set_blocking(1, False); print('nb-set')",
             "/py import subprocess; c = subprocess.run('yes abcdefghij | head -c 3000000 | wc -c; "
             "yes abcdefghij | head -c 3000000', shell=True, capture_output=False).returncode; print('rc', c)"]
    r = fault_run(server, lines, timeout=60)
    r.assert_ok(check_shown=False)
    ends = [e for e in r.events("cell_end") if "rc " in str(e.get("output", ""))]
    assert ends and "rc 0" in ends[0]["output"], r.excerpt()
    assert "Resource temporarily unavailable" not in r.shown


def test_a_cell_that_reads_or_dup2s_fd_1_keeps_later_output(server):
    """Passed on first try: ``os.read(1, ...)`` on the capture's write end fails in the cell,
    ``os.dup2(2, 1)`` and a dup2 of /dev/null onto fd 2 are repaired, the pipe dup2'd onto
    fd 0 and kept open on fd 9 holds nothing (batch input goes on, exit does not wait), and
    later child output is captured again."""
    lines = ["/py import os; exec(\"try:\\n os.read(1, 10)\\nexcept OSError as e:\\n print('read-failed', e.errno)\")",
             "/py import os; os.dup2(2, 1); os.dup2(os.open(os.devnull, os.O_WRONLY), 2)",
             "/py import os; os.dup2(1, 0); os.dup2(1, 9); os.set_inheritable(9, True)",
             "/py import os; os.system('echo child-' + 'after')"]
    r = fault_run(server, lines)
    r.assert_ok()
    assert "read-failed" in r.shown and "child-after" in r.shown
    assert any("child-after" in str(e.get("output", "")) for e in r.events("cell_end"))


def test_invalid_utf8_and_lone_surrogates_reach_no_traceback_and_a_valid_journal(server):
    """Passed on first try: invalid UTF-8 through fd 1 (a truncated character at a cell's end
    too), a lone surrogate through print and in a display item."""
    lines = ["/py import os; os.write(1, b'bad \\xff\\xfe \\xed\\xa0\\x80 end\\n'); os.write(1, b'cut \\xe2\\x82')",
             "/py print('sur \\udc80 rogate'); display('x\\ud800y')",
             "/py '\\udcff'"]
    r = fault_run(server, lines)
    r.assert_ok(check_shown=False)
    assert "end" in r.shown and "rogate" in r.shown


def test_hostile_png_reprs_cost_only_the_image(server):
    """Passed on first try: ``_repr_png_`` returning garbage, a non-base64 str, an int, and a
    bomb header; each costs its image only, the cell and the session go on."""
    bomb = _png(100_000, 100_000)
    lines = [f"/py B = {bomb!r}",
             "/py [display(type('P', (), {'_repr_png_': (lambda s, v=v: v), '__repr__': lambda s: 'P()'})()) "
             "for v in (b'\\x89PNG garbage', 'not base64!', 42, B)]; print('shown-' + 'all')"]
    r = fault_run(server, lines)
    r.assert_ok(check_shown=False)
    assert "shown-all" in r.shown


# -------------------------------------------------------------------------------------------
# exports and a hostile journal
# -------------------------------------------------------------------------------------------

def test_notebook_export_keeps_html_as_untrusted_data_and_is_not_signed(server, tmp_path):
    """Passed on first try: a display item's text/html with ``<script>`` is written as data
    (Jupyter shows outputs of an untrusted notebook sanitized); the notebook carries no
    signature and llmrepl trusts nothing in Jupyter's database; a raw bundle's
    ``application/javascript`` is dropped; text/plain that looks like code is no code cell."""
    nbformat = pytest.importorskip("nbformat")
    out = tmp_path / "s.ipynb"
    py = tmp_path / "s.py"
    lines = ["/py display({'text/html': '<script>alert(1)</script><b>hi</b>', "
             "'application/javascript': 'alert(2)', 'text/plain': \"\\nimport os; os.system('echo PWNED')\"}, raw=True)",
             f"/export {out}", f"/export {py}"]
    r = fault_run(server, lines, env={"JUPYTER_DATA_DIR": str(tmp_path / "jdata")})
    r.assert_ok(check_shown=False)
    nb = nbformat.read(str(out), as_version=4)
    nbformat.validate(nb)
    assert "signature" not in nb.metadata
    outs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "display_data"]
    assert outs and "<script>" in outs[0].data["text/html"]
    assert "application/javascript" not in outs[0].data
    assert not (tmp_path / "jdata").exists()  # no trust database written
    code_cells = [c.source for c in nb.cells if c.cell_type == "code"]
    assert len(code_cells) == 1 and code_cells[0].startswith("display(")  # the output is no cell
    for line in py.read_text().splitlines():  # in the script, the output is only ever a comment
        if "PWNED" in line:
            assert line.lstrip().startswith("#") or line.startswith("display("), line
    done = subprocess.run([sys.executable, "-I", str(py)], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path, env={"PATH": os.environ.get("PATH", "")})
    assert "PWNED" not in done.stdout.splitlines()  # echo never ran (a repr of the bundle may print)


def _journal(home: Path, sid: str, records: list[dict[str, Any]]) -> Path:
    folder = home / "sessions"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / f"{sid}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_a_hostile_journal_display_names_no_file_outside_and_no_script(clean_env, tmp_path):
    """Passed on first try: a journal's ``displays`` naming ``../../etc/passwd``, a symlink to
    a file outside the session folder and a FIFO as figures, with ``application/javascript``
    and an ``image/png`` string as MIME types; ``--export`` does not hang and embeds none."""
    sid = "20260102-000000-7"
    own = clean_env / "sessions" / sid
    own.mkdir(parents=True)
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"\x89PNG\r\n\x1a\nTOP-SECRET")
    (own / "figure-001.png").symlink_to(secret)
    os.mkfifo(own / "figure-002.png")
    names = [str(own / "figure-001.png"), str(own / "figure-002.png"), str(own / ".." / ".." / ".." / "etc" / "passwd"),
             "../../etc/passwd"]
    displays = [{"data": {"text/plain": f"d{i}", "application/javascript": "alert(1)",
                          "image/png": base64.b64encode(b"\x89PNG\r\n\x1a\nFAKE").decode()},
                 "metadata": {"filename": n, "width": 10, "height": 10}, "at": 0, "text": f"d{i}"}
                for i, n in enumerate(names)]
    _journal(clean_env, sid, [
        {"t": 1.0, "event": "session_start", "id": sid, "model": "m", "cwd": "/tmp", "version": "1"},
        {"t": 1.0, "event": "user", "text": "plot"},
        {"t": 1.0, "event": "cell_start", "cell": 1, "code": "x = 1"},
        {"t": 1.0, "event": "cell_end", "cell": 1, "output": "", "stdout": "", "stderr": "", "value": None,
         "error": None, "error_type": None, "duration": 0.1, "interrupted": False, "timed_out": False,
         "figures": [], "output_chars": 0, "displays": displays},
    ])
    out = tmp_path / "h.ipynb"
    e = fault_run(None, [], args=["--export", str(out), sid], alive=False, timeout=30)
    assert e.returncode == 0 and not e.timed_out, e.excerpt()
    text = out.read_text()
    assert "TOP-SECRET" not in text and base64.b64encode(b"\x89PNG\r\n\x1a\nTOP-SECRET").decode() not in text
    assert "root:" not in text and "alert(1)" not in text and "FAKE" not in text
    assert base64.b64encode(b"\x89PNG\r\n\x1a\nFAKE").decode() not in text


def test_resume_of_a_journal_with_escapes_in_displays_drives_nothing(server, clean_env):
    """Passed on first try: ``--resume`` of a journal whose display texts and value bundle
    carry OSC 52, a title and C1 controls, and ``/history`` after it."""
    sid = "20260102-000000-8"
    attack = "\x1b]52;c;QUFB\x07\x9d0;t\x9c\x1b[21t"
    item = {"data": {"text/plain": "D" + attack, "text/markdown": "# M" + attack}, "metadata": {"filename": "f" + attack},
            "at": 0, "text": "D" + attack}
    _journal(clean_env, sid, [
        {"t": 1.0, "event": "session_start", "id": sid, "model": "m" + attack, "cwd": "/tmp", "version": "1"},
        {"t": 1.0, "event": "user", "text": "u" + attack},
        {"t": 1.0, "event": "assistant", "text": "a" + attack + "\n```python\nx = 1\n```"},
        {"t": 1.0, "event": "cell_start", "cell": 1, "code": "x = 1"},
        {"t": 1.0, "event": "cell_end", "cell": 1, "output": "o" + attack, "stdout": "o" + attack, "stderr": "",
         "value": "v" + attack, "error": None, "error_type": None, "duration": 0.1, "interrupted": False,
         "timed_out": False, "figures": [], "output_chars": 1, "displays": [item], "value_data": item},
    ])
    r = fault_run(server, ["/history"], args=["--resume", sid])
    _no_drivers(r)
    assert ALIVE_OUT in r.stdout


# -------------------------------------------------------------------------------------------
# pty: what the terminal receives
# -------------------------------------------------------------------------------------------

def test_pty_model_markdown_links_headings_fences_and_tables_drive_nothing(server):
    """Passed on first try: the model's answer, streamed in 3-character deltas, puts OSC 52,
    a title, C1 controls, an OSC 8 hyperlink and a title report in a heading, a link's text and
    URL, a fence's info string and a table row; the terminal gets none of them."""
    attack = "\x1b]52;c;QUFB\x07\x9d0;t\x9c\x1b]8;;http://evil\x1b\\\x1b[21t"
    server.reply(f"# Head{attack}\n\nA [li{attack}nk](http://x/{attack}) and **bo{attack}ld**.\n\n"
                 f"```text{attack}\nfenced{attack}\n```\n\n| t{attack} | u |\n\nEND-OF-ANSWER", chunk_size=3)
    repl = spawn_repl(server)
    repl.ask("hello")
    repl.expect("END-OF-ANSWER")
    repl.expect(PROMPT)
    r = repl.finish()
    r.assert_ok()
    assert _drivers(r.stdout) == []


def test_pty_kitty_image_is_the_only_escape_and_decodes_to_the_png(server):
    """Passed on first try: with TERM=xterm-kitty, a ``_repr_png_`` whose bytes hold ESC and
    BEL is drawn with kitty escapes whose base64 decodes to exactly the PNG; no other escape
    (OSC, C1) from the cell's text, display text or file name reaches the terminal."""
    png = _png(16, 8, extra=b"\x1b]0;pwned\x07\x9d")
    code = (f"P = type('P', (), {{'_repr_png_': lambda s: {png!r}, '__repr__': lambda s: 'P' + {ESC_EXPR}}}); "
            f"display(P()); print('after-' + 'image' + {ESC_EXPR})")
    server.reply(f"Here:\n```python\n{code}\n```")
    repl = spawn_repl(server, env={"TERM": "xterm-kitty"})
    repl.ask("draw")
    repl.expect(CONFIRM)
    repl.send("y")
    repl.expect("after-image")
    repl.expect(PROMPT)
    r = repl.finish()
    r.assert_ok()
    kitty = re.findall(r"\x1b_G([^;]*);([A-Za-z0-9+/=]*)\x1b\\", r.stdout)
    assert kitty, "no kitty image drawn"
    assert base64.b64decode("".join(d for _, d in kitty)) == png
    assert _drivers(r.stdout, own=tuple(f"\x1b_G{k};{d}\x1b\\" for k, d in kitty)) == []


def test_image_parts_for_the_model_survive_hostile_sizes():
    """FAILED before: with ``repl.send_images``, an image item whose ``width`` was a string
    (``display(obj, metadata={"width": "abc"})`` kept it) raised ValueError while the
    result was fed back, ending the turn (a 5,000-digit int could not be sent as JSON). Now a
    size that is not a sane int is the PNG's own (and the executor no longer keeps such
    metadata at all)."""
    from llmrepl.context.images import ImageParts

    class Result:
        cell = 1
        displays = [DisplayData({"text/plain": "x", "image/png": _png(7, 5)},
                                {"filename": "/s/figure-001.png", "width": "abc", "height": 10 ** 5000})]
        value_data = None

    refs = ImageParts(enabled=True).refs(Result())  # type: ignore[arg-type]
    (ref,) = next(iter(refs.values()))
    assert (ref["width"], ref["height"]) == (7, 5)
    json.dumps(ref)  # a request can carry it


@pytest.mark.parametrize("markup", ["<!--" * 20_000, "<script" * 12_000, "<" * 80_000, "<style>" * 11_000])
def test_html_only_output_becomes_model_text_in_linear_time(markup):
    """FAILED before: the model's text of an HTML-only object (``_repr_html_`` and a default
    repr) was made with a regular expression that scanned to the end from every ``<``: 80 KB
    of ``<!--`` took 12 s (``<script``: 6 s) inside the cell. Now one pass."""
    from llmrepl.execution.outputs import build

    obj = type("Hostile", (), {"_repr_html_": lambda self: markup})()
    start = time.perf_counter()
    item = build(obj, bounded=False)
    assert time.perf_counter() - start < LINEAR / 3  # was 6-12 s; now milliseconds
    assert item.data["text/html"] == markup


def test_html_to_model_text_keeps_text_and_drops_script():
    """Passed before and after the rewrite: tags, comments, script and style go; text and a
    bare ``<`` stay."""
    from llmrepl.execution.outputs import build

    html = "<p>a &amp; b</p><script>alert(1)</script><!-- c --><style>x{}</style><b>bold</b> 1 < 2"
    obj = type("H", (), {"_repr_html_": lambda self: html})()
    assert build(obj, bounded=False).text == "a & b\nbold 1 < 2"


def test_a_journal_display_cannot_inject_markup_into_the_transcript_or_code_into_the_script(clean_env, tmp_path):
    """FAILED before (the .md part): a display's file name ``x>`` + newline + ``<script>``
    closed the ``<...>`` link target of the figure and put raw HTML on a line of its own in
    the exported transcript; ``]`` in the name ended the alt text. Now the target is
    percent-encoded and the alt text plain. The .py part passed on first try: a display text
    with ``\\r``, U+2028 and a newline stays a comment."""
    sid = "20260102-000000-9"
    evil = "x>\n<script>alert(1)</script>](javascript:alert(2)) <img src=x onerror=alert(3)>.png"
    item = {"data": {"text/plain": "d\rprint('PWNED-' + 'R')\u2028print('PWNED-' + 'L')\nprint('PWNED-' + 'N')"},
            "metadata": {"filename": str(clean_env / "sessions" / sid / evil)}, "at": 0,
            "text": "d\nprint('PWNED-' + 'T')"}
    plain = dict(item, metadata={})
    _journal(clean_env, sid, [
        {"t": 1.0, "event": "session_start", "id": sid, "model": "m", "cwd": "/tmp", "version": "1"},
        {"t": 1.0, "event": "user", "text": "go"},
        {"t": 1.0, "event": "cell_start", "cell": 1, "code": "x = 1"},
        {"t": 1.0, "event": "cell_end", "cell": 1, "output": "", "stdout": "", "stderr": "", "value": "1",
         "error": None, "error_type": None, "duration": 0.1, "interrupted": False, "timed_out": False,
         "figures": [], "output_chars": 0, "displays": [item, plain], "value_data": plain},
    ])
    md, py = tmp_path / "t.md", tmp_path / "t.py"
    for target in (md, py):
        e = fault_run(None, [], args=["--export", str(target), sid], alive=False, timeout=30)
        assert e.returncode == 0, e.excerpt()
    text = md.read_text()
    assert "<script>" not in text and "<img" not in text and "](javascript:" not in text
    assert not any(line.lstrip().startswith("<") for line in text.splitlines())
    done = subprocess.run([sys.executable, "-I", str(py)], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path, env={"PATH": os.environ.get("PATH", "")})
    assert done.returncode == 0, done.stderr
    assert "PWNED" not in done.stdout


def test_pty_a_threads_display_between_cells_is_sanitized_and_redacted(server):
    """Passed on first try: a thread the cell left running calls display() while the prompt
    is up, with an object whose text/plain carries escapes and the key; it is drawn above the
    prompt with neither."""
    code = (f"import threading, time; e = {ESC_EXPR}; k = {KEY_EXPR}; "
            "O = type('O', (), {'__repr__': lambda s: 'LATE-' + e + k + '-IT' + 'EM'}); "
            "threading.Thread(target=lambda: (time.sleep(1.0), display(O())), daemon=True).start()")
    repl = spawn_repl(server)
    repl.ask("/py " + code)
    repl.expect(PROMPT)
    repl.expect("-ITEM", timeout=20)
    r = repl.finish()
    r.assert_ok()
    assert _drivers(r.stdout) == []
    assert "LATE-[REDACTED]-ITEM" in r.shown
