"""Images in the terminal: which protocol each terminal gets, each escape decoded back to the
image it draws, sizing, and the terminal query on a real pty (never hangs, never eats keys)."""

from __future__ import annotations

import base64
import fcntl
import io
import os
import re
import select
import struct
import sys
import termios
import threading
import time
from collections.abc import Iterator

import pytest
from PIL import Image

from llmrepl.terminal.images import (
    ImagesUnavailable,
    TerminalQuery,
    cell_pixels,
    choose_protocol,
    encode_image,
    fit_cells,
    png_size,
)


def make_png(width: int, height: int, *, colors: bool = True) -> bytes:
    """A test picture: coloured blocks (few colours, so sixel's palette can hold them exactly)."""
    image = Image.new("RGB", (width, height), (255, 255, 255))
    if colors:
        palette = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (0, 0, 0), (128, 128, 128)]
        for y in range(height):
            for x in range(width):
                image.putpixel((x, y), palette[(x // 7 + y // 5) % len(palette)])
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


# ---------------------------------------------------------------- which protocol

XTERM_SIXEL = "\x1b[?63;1;2;4;6;9;15;22c"  # xterm -ti vt340
XTERM_PLAIN = "\x1b[?64;1;2;6;9;15;16;17;18;21;22;28c"  # xterm as shipped: no 4


@pytest.mark.parametrize(("env", "expected"), [
    ({"TERM": "xterm-kitty"}, "kitty"),
    ({"TERM": "xterm-256color", "KITTY_WINDOW_ID": "1"}, "kitty"),
    ({"TERM": "xterm-ghostty"}, "kitty"),
    ({"TERM": "xterm-256color", "GHOSTTY_RESOURCES_DIR": "/usr/share/ghostty"}, "kitty"),
    ({"TERM": "xterm-256color", "TERM_PROGRAM": "WezTerm"}, "iterm2"),
    ({"TERM": "xterm-256color", "KONSOLE_VERSION": "230804"}, "kitty"),
    ({"TERM": "xterm-256color", "KONSOLE_VERSION": "211200"}, None),  # before Konsole 22.04
    ({"TERM": "xterm-256color", "TERM_PROGRAM": "iTerm.app"}, "iterm2"),
    ({"TERM": "xterm-256color", "LC_TERMINAL": "iTerm2"}, "iterm2"),  # iTerm2 over ssh
    ({"TERM": "xterm-256color", "TERM_PROGRAM": "vscode"}, "iterm2"),
    ({"TERM": "foot"}, "sixel"),
    ({"TERM": "foot-extra"}, "sixel"),
    ({"TERM": "mlterm"}, "sixel"),
    ({"TERM": "xterm", "MLTERM": "3.9.3"}, "sixel"),
    ({"TERM": "xterm-256color", "WT_SESSION": "5f1c"}, "sixel"),
    ({"TERM": "xterm-256color"}, None),  # no evidence, no query
    ({"TERM": "xterm-256color", "TERM_PROGRAM": "Apple_Terminal"}, None),
    ({"TERM": "linux"}, None),
    ({}, None),
])
def test_detection_from_the_environment(env: dict[str, str], expected: str | None) -> None:
    assert choose_protocol(env, "auto") == expected


@pytest.mark.parametrize("env", [
    {"TERM": "xterm-kitty", "TMUX": "/tmp/tmux-0/default,1,0"},
    {"TERM": "screen-256color", "KITTY_WINDOW_ID": "1"},
    {"TERM": "tmux-256color", "TERM_PROGRAM": "iTerm.app"},
    {"TERM": "xterm-256color", "STY": "1234.pts-0.host", "WT_SESSION": "x"},
    {"TERM": "dumb", "KITTY_WINDOW_ID": "1"},
])
def test_tmux_screen_and_dumb_get_no_images_whatever_the_setting(env: dict[str, str]) -> None:
    def query(sequence: str, timeout: float) -> str:
        return XTERM_SIXEL

    for setting in ("auto", "on"):
        assert choose_protocol(env, setting, query=query) is None


def test_off_is_none_and_on_guesses_kitty_without_evidence() -> None:
    for env in ({"TERM": "xterm-kitty"}, {"TERM": "foot"}, {"TERM": "xterm-256color"}):
        assert choose_protocol(env, "off", query=lambda s, t: XTERM_SIXEL) is None
    assert choose_protocol({"TERM": "xterm-256color"}, "on") == "kitty"
    assert choose_protocol({"TERM": "xterm-256color"}, "auto") is None
    assert choose_protocol({"TERM": "foot"}, "on") == "sixel"  # evidence wins over the guess
    assert choose_protocol({"TERM": "xterm-256color", "NO_COLOR": "1", "TERM_PROGRAM": "WezTerm"}) == "iterm2"


def test_an_xterm_gets_sixel_only_when_its_answer_lists_it() -> None:
    asked: list[tuple[str, float]] = []

    def answering(reply: str):  # type: ignore[no-untyped-def]
        def query(sequence: str, timeout: float) -> str:
            asked.append((sequence, timeout))
            return reply
        return query

    env = {"TERM": "xterm-256color", "XTERM_VERSION": "XTerm(390)"}
    assert choose_protocol(env, "auto", query=answering(XTERM_SIXEL)) == "sixel"
    assert asked == [("\x1b[c", 0.1)]
    assert choose_protocol(env, "auto", query=answering(XTERM_PLAIN)) is None  # 46 and 14 are not 4
    assert choose_protocol(env, "auto", query=answering("\x1b[?1;2;4c")) == "sixel"
    assert choose_protocol(env, "auto", query=answering("")) is None  # no answer in time
    assert choose_protocol(env, "auto", query=answering("garbage 4;")) is None

    def broken(sequence: str, timeout: float) -> str:
        raise OSError("EIO")

    assert choose_protocol(env, "auto", query=broken) is None
    asked.clear()
    assert choose_protocol({"TERM": "xterm-kitty"}, "auto", query=answering(XTERM_SIXEL)) == "kitty"
    assert asked == []  # the environment was enough: the terminal is not asked
    # another TERM=xterm (pexpect, GNOME Terminal, Alacritty...) is not asked under "auto": no
    # round trip at every start, nor the whole wait where nothing answers; "on" asks it
    assert choose_protocol({"TERM": "xterm"}, "auto", query=answering(XTERM_SIXEL)) is None
    assert asked == []
    assert choose_protocol({"TERM": "xterm"}, "on", query=answering(XTERM_SIXEL)) == "sixel"
    assert choose_protocol({"TERM": "xterm"}, "on", query=answering(XTERM_PLAIN)) == "kitty"


# ---------------------------------------------------------------- each escape decoded back


def test_kitty_escape_decodes_to_the_png() -> None:
    png = make_png(300, 200) + b"\0" * 9000  # long enough for several chunks
    escape = encode_image(png, "kitty", max_cols=80, max_rows=24)
    parts = re.findall(r"\x1b_G([^;]*);([A-Za-z0-9+/=]*)\x1b\\", escape)
    assert "".join(f"\x1b_G{k};{d}\x1b\\" for k, d in parts) == escape  # nothing else in it
    assert len(parts) > 2
    keys = [dict(kv.split("=") for kv in k.split(",")) for k, _ in parts]
    first = keys[0]
    assert (first["a"], first["f"], first["q"]) == ("T", "100", "2")  # transmit+show a PNG, no replies
    assert (first["c"], first["r"]) == ("30", "10")  # 300x200 px at 10x20 px cells
    assert [k["m"] for k in keys] == ["1"] * (len(parts) - 1) + ["0"]
    assert all(k["q"] == "2" for k in keys)
    assert all(len(d) <= 4096 and len(d) % 4 == 0 for _, d in parts[:-1])
    assert base64.b64decode("".join(d for _, d in parts)) == png


def test_iterm2_escape_decodes_to_the_png() -> None:
    png = make_png(640, 480)
    escape = encode_image(png, "iterm2", max_cols=100, max_rows=50)
    m = re.fullmatch(r"\x1b\]1337;File=([^:]*):([A-Za-z0-9+/=]*)\x07", escape)
    assert m is not None
    args = dict(kv.split("=") for kv in m[1].split(";"))
    assert args == {"inline": "1", "size": str(len(png)), "width": "64", "height": "24",
                    "preserveAspectRatio": "1"}
    assert base64.b64decode(m[2]) == png


def decode_sixel(escape: str) -> tuple[tuple[int, int], list[list[tuple[int, int, int] | None]], int]:
    """A small sixel decoder: (raster attributes' size, rows of RGB percent pixels, registers)."""
    m = re.fullmatch(r'\x1bP([0-9;]*)q"1;1;(\d+);(\d+)(.*)\x1b\\', escape, re.S)
    assert m is not None, escape[:40]
    size = (int(m[2]), int(m[3]))
    body = m[4]
    assert re.fullmatch(r"[#!$\-0-9;?-~]*", body)  # nothing but sixel's own characters
    palette: dict[int, tuple[int, int, int]] = {}
    pixels: list[list[tuple[int, int, int] | None]] = []
    color = (0, 0, 0)
    x = band = 0
    for token in re.finditer(r"#(\d+)(?:;2;(\d+);(\d+);(\d+))?|!(\d+)([?-~])|([?-~])|(\$)|(-)", body):
        if token[1] is not None:
            if token[2] is not None:
                palette[int(token[1])] = (int(token[2]), int(token[3]), int(token[4]))
            else:
                color = palette[int(token[1])]
        elif token[8]:
            x = 0
        elif token[9]:
            x, band = 0, band + 1
        else:
            count, char = (int(token[5]), token[6]) if token[5] else (1, token[7])
            bits = ord(char) - 63
            while len(pixels) < band * 6 + 6:
                pixels.append([])
            for _ in range(count):
                for bit in range(6):
                    row = pixels[band * 6 + bit]
                    while len(row) <= x:
                        row.append(None)
                    if bits & (1 << bit):
                        row[x] = color
                x += 1
    return size, pixels, len(palette)


def test_sixel_escape_decodes_to_the_image_s_pixels() -> None:
    """Every pixel of a few-colour image comes back in its colour (sixel's 0-100 % scale)."""
    png = make_png(90, 60)
    escape = encode_image(png, "sixel", max_cols=80, max_rows=24)
    (width, height), pixels, registers = decode_sixel(escape)
    assert (width, height) == (90, 60)  # not scaled: it fits; 60 is whole bands already
    assert len(pixels) == 60 and all(len(row) == 90 for row in pixels)
    assert registers <= 256
    with Image.open(io.BytesIO(png)) as image:
        source = image.convert("RGB")
        for y in range(60):
            for x in range(90):
                got = pixels[y][x]
                assert got is not None, (x, y)
                want = source.getpixel((x, y))
                assert all(abs(g * 255 / 100 - w) <= 3 for g, w in zip(got, want)), (x, y, got, want)


def test_sixel_of_a_figure_keeps_its_look_and_pads_to_whole_bands() -> None:
    """A real matplotlib figure (anti-aliased: more than 256 colours) is quantised, not garbled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3.01), dpi=100)
    ax.plot([0, 1, 2], [0, 1, 0], color="tab:red")
    ax.set_title("peak")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    png = buf.getvalue()
    assert png_size(png) == (400, 301)
    (width, height), pixels, registers = decode_sixel(encode_image(png, "sixel", max_cols=80, max_rows=40))
    assert (width, height) == (400, 306) and len(pixels) == 306  # 301 rows padded to 51 bands
    assert registers <= 256
    assert all(p == (100, 100, 100) for row in pixels[301:] for p in row)  # the padding is white
    with Image.open(io.BytesIO(png)) as image:
        source = image.convert("RGB")
        error = sum(abs(g * 255 / 100 - w)
                    for y in range(0, 301, 3) for x in range(0, 400, 3)
                    for g, w in zip(pixels[y][x] or (0, 0, 0), source.getpixel((x, y))))
    assert error / (101 * 134 * 3) < 4  # mean error per channel, out of 255
    red = sum(1 for row in pixels for p in row if p is not None and p[0] > 70 and p[1] < 45)
    assert red > 300  # the red line is there


def test_sixel_without_its_encoder_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timg", None)  # import timg -> ImportError
    with pytest.raises(ImagesUnavailable, match=r"pip install 'llmrepl\[images\]'"):
        encode_image(make_png(10, 10), "sixel", max_cols=10, max_rows=10)
    assert encode_image(make_png(10, 10), "kitty", max_cols=10, max_rows=10)  # stdlib only


def test_bad_input_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="not a PNG"):
        encode_image(b"GIF89a" + b"\0" * 40, "kitty", max_cols=10, max_rows=10)
    with pytest.raises(ValueError, match="unknown image protocol"):
        encode_image(make_png(4, 4), "braille", max_cols=10, max_rows=10)


# ---------------------------------------------------------------- sizing


@pytest.mark.parametrize(("size", "box", "cell", "expected"), [
    ((640, 480), (100, 50), None, (64, 24)),     # fits: drawn at its own size
    ((1600, 400), (80, 40), None, (80, 10)),     # wide: the width binds
    ((400, 1600), (80, 20), None, (10, 20)),     # tall: the height binds (100 x 400 px)
    ((50, 30), (80, 24), None, (5, 2)),          # small: never enlarged
    ((640, 480), (100, 50), (8, 16), (80, 30)),  # the terminal's own cell size
    ((5000, 5000), (1, 1), None, (1, 1)),
])
def test_sizing_keeps_the_aspect_ratio_and_fits(size: tuple[int, int], box: tuple[int, int],
                                                 cell: tuple[int, int] | None,
                                                 expected: tuple[int, int]) -> None:
    cols, rows, w, h = fit_cells(*size, max_cols=box[0], max_rows=box[1], cell_px=cell)
    assert (cols, rows) == expected
    assert cols <= box[0] and rows <= box[1]
    assert abs(w / h - size[0] / size[1]) < 0.02 * size[0] / size[1] + 1 / h


@pytest.mark.parametrize("protocol", ["kitty", "iterm2", "sixel"])
def test_every_protocol_fits_the_window(protocol: str) -> None:
    png = make_png(1200, 300, colors=False)
    escape = encode_image(png, protocol, max_cols=40, max_rows=10, cell_px=(9, 18))
    if protocol == "sixel":
        (w, h), _, _ = decode_sixel(escape)
        assert w <= 40 * 9 and h <= 10 * 18 and h % 6 == 0
        assert abs(w / h - 4) < 0.1  # 360 x 90 pixels
    else:
        cols = int(re.search(r"[,;]?(?:c|width)=(\d+)", escape)[1])  # type: ignore[index]
        rows = int(re.search(r"[,;]?(?:r|height)=(\d+)", escape)[1])  # type: ignore[index]
        assert (cols, rows) == (40, 5)


# ---------------------------------------------------------------- asking the terminal


@pytest.fixture
def pty_pair() -> Iterator[tuple[int, int]]:
    """(master, slave) of a real pty; the test plays the terminal on the master side."""
    master, slave = os.openpty()
    try:
        yield master, slave
    finally:
        os.close(master)
        os.close(slave)


def readable(fd: int, timeout: float = 0.0) -> bytes:
    out = b""
    while select.select([fd], [], [], timeout)[0]:
        chunk = os.read(fd, 1024)
        if not chunk:
            break
        out += chunk
        timeout = 0.05
    return out


def wait_queued(slave: int, count: int) -> None:
    """Wait until ``count`` bytes sit in the slave's input queue; leave its modes as they were."""
    saved = termios.tcgetattr(slave)
    raw_slave(slave)  # a canonical tty counts only whole lines
    deadline = time.monotonic() + 5
    try:
        while struct.unpack("i", fcntl.ioctl(slave, termios.FIONREAD, b"\0" * 4))[0] < count:
            assert time.monotonic() < deadline
            select.select([slave], [], [], 0.01)
    finally:
        termios.tcsetattr(slave, termios.TCSANOW, saved)


def raw_slave(slave: int) -> None:
    attrs = termios.tcgetattr(slave)
    attrs[3] &= ~(termios.ICANON | termios.ECHO)
    termios.tcsetattr(slave, termios.TCSANOW, attrs)


def test_query_of_a_terminal_that_never_answers_returns_in_time(pty_pair: tuple[int, int]) -> None:
    master, slave = pty_pair
    before = termios.tcgetattr(slave)
    query = TerminalQuery(slave, slave)
    start = time.monotonic()
    assert query("\x1b[c", 0.1) == ""
    assert time.monotonic() - start < 0.6
    assert readable(master, 0.5) == b"\x1b[c"  # it did ask
    assert termios.tcgetattr(slave) == before  # the tty is as it was
    os.write(master, b"typed later\n")
    assert readable(slave, 1.0) == b"typed later\n"  # nothing of it was taken


def test_query_never_asks_when_keys_are_waiting_and_leaves_them(pty_pair: tuple[int, int]) -> None:
    master, slave = pty_pair
    attrs = termios.tcgetattr(slave)
    attrs[3] &= ~termios.ECHO  # canonical still, but the tty's echo is not mistaken for a query
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    os.write(master, b"hello")  # typed ahead, no newline yet (a partial line)
    wait_queued(slave, 5)  # the pty hands bytes to the slave side a moment later
    query = TerminalQuery(slave, slave)
    start = time.monotonic()
    assert query("\x1b[c", 0.5) == ""
    assert time.monotonic() - start < 0.3  # it did not wait for an answer either
    assert readable(master, 0.2) == b""  # nothing was written to the terminal
    raw_slave(slave)
    assert readable(slave, 1.0) == b"hello"


def terminal_that_answers(master: int, reply: bytes) -> threading.Thread:
    def run() -> None:
        seen = b""
        while b"\x1b[c" not in seen and select.select([master], [], [], 2.0)[0]:
            seen += os.read(master, 100)
        os.write(master, reply)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_query_reads_the_answer(pty_pair: tuple[int, int]) -> None:
    master, slave = pty_pair
    before = termios.tcgetattr(slave)
    thread = terminal_that_answers(master, XTERM_SIXEL.encode())
    assert TerminalQuery(slave, slave)("\x1b[c", 1.0) == XTERM_SIXEL
    thread.join(2)
    assert termios.tcgetattr(slave) == before
    env = {"TERM": "xterm-256color", "XTERM_VERSION": "XTerm(390)"}
    thread = terminal_that_answers(master, XTERM_SIXEL.encode())
    assert choose_protocol(env, "auto", query=TerminalQuery(slave, slave)) == "sixel"
    thread.join(2)


def test_a_key_typed_with_the_answer_is_given_back(pty_pair: tuple[int, int]) -> None:
    master, slave = pty_pair
    thread = terminal_that_answers(master, b"x" + XTERM_SIXEL.encode() + b"y")
    query = TerminalQuery(slave, slave)
    assert query("\x1b[c", 1.0) == XTERM_SIXEL
    thread.join(2)
    raw_slave(slave)
    # pushed back into the tty's input (TIOCSTI), or, where the kernel refuses that, kept for
    # the front end: either way both keys are still there, in order
    assert readable(slave, 0.3) + query.unread == b"xy"
    assert query.unread in (b"", b"xy")


def test_keys_the_kernel_will_not_take_back_are_kept_for_the_front_end(
        pty_pair: tuple[int, int], monkeypatch: pytest.MonkeyPatch) -> None:
    """Linux 6.2+ may refuse TIOCSTI (dev.tty.legacy_tiocsti=0): the keys go to ``unread``."""
    real_ioctl = fcntl.ioctl

    def ioctl(fd: int, request: int, arg: object = 0, *rest: object) -> object:
        if request == termios.TIOCSTI:
            raise PermissionError(1, "Operation not permitted")
        return real_ioctl(fd, request, arg, *rest)  # type: ignore[call-overload]

    monkeypatch.setattr(fcntl, "ioctl", ioctl)
    master, slave = pty_pair
    thread = terminal_that_answers(master, b"ab" + XTERM_SIXEL.encode())
    query = TerminalQuery(slave, slave)
    assert query("\x1b[c", 1.0) == XTERM_SIXEL
    thread.join(2)
    assert query.unread == b"ab"


def test_query_never_asks_a_pipe() -> None:
    r, w = os.pipe()
    try:
        assert TerminalQuery(r, w)("\x1b[c", 0.1) == ""
        assert readable(r) == b""
    finally:
        os.close(r)
        os.close(w)


def test_cell_pixels_from_the_window_size(pty_pair: tuple[int, int]) -> None:
    _, slave = pty_pair
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 900, 800))
    assert cell_pixels(slave) == (9, 20)
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
    assert cell_pixels(slave) is None  # the terminal does not say
    r, w = os.pipe()
    try:
        assert cell_pixels(r) is None
    finally:
        os.close(r)
        os.close(w)
