"""Images drawn in the terminal: which graphics protocol it speaks, and the escapes for it.

:func:`choose_protocol` reads the environment (and, for an xterm, asks the terminal) and
names one of kitty's graphics protocol, iTerm2's inline images or sixel, or None: then the
display shows the saved path instead. :func:`encode_image` turns a PNG into the escape string
that draws it, sized to fit the window. kitty and iTerm2 take the PNG itself (base64 framing
only, stdlib); sixel needs the pixels, encoded by ``timg`` (MIT, pure Python on Pillow) from
the optional ``images`` extra, imported on first use. :class:`TerminalQuery` asks the terminal
a question on llmrepl's private tty descriptors and never hangs or eats a typed key.

The display calls :func:`encode_image` with the cursor at the start of a line and writes a
newline after it: an image is never drawn in the middle of a line.
"""

from __future__ import annotations

import math
import os
import re
import struct
import time
from collections.abc import Callable, Mapping

__all__ = [
    "PROTOCOLS",
    "ImagesUnavailable",
    "TerminalQuery",
    "cell_pixels",
    "choose_protocol",
    "encode_image",
    "fit_cells",
    "png_size",
]

PROTOCOLS = ("kitty", "iterm2", "sixel")
DEFAULT_CELL = (10, 20)  # pixels of one character cell when the terminal does not say
QUERY_TIMEOUT = 0.1  # seconds to wait for a terminal's answer; every terminal answers in a few ms
_KITTY_CHUNK = 4096  # bytes of base64 per kitty escape, as the protocol requires
_DA1 = "\x1b[c"  # primary device attributes: the answer lists 4 when the terminal has sixel
_DA1_REPLY = re.compile(rb"\x1b\[\?([0-9;]*)c")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Pixels of an image drawn inline: more, and it is a decompression bomb (a few KB of PNG that
# says 100000x100000) that the terminal, or Pillow for sixel, would try to decode whole.
# A matplotlib figure at 300 dpi is a few million; the saved path is shown instead.
MAX_PIXELS = 40_000_000


class ImagesUnavailable(RuntimeError):
    """The encoder a protocol needs is not installed; the message says what to install.

    The display shows it once as a notice and goes on naming saved paths instead.
    """


# ---------------------------------------------------------------- which protocol


def _in_multiplexer(env: Mapping[str, str], term: str) -> bool:
    """tmux and screen draw their own screen: an image escape would be dropped or garbled.

    Passing it through (tmux's allow-passthrough with each escape wrapped, screen's DCS
    wrapping) is out of scope: whether it works depends on the multiplexer's settings and on
    the terminal outside, which llmrepl cannot see.
    """
    return bool(env.get("TMUX") or env.get("STY")) or term.startswith(("screen", "tmux"))


def _from_environment(env: Mapping[str, str], term: str) -> str | None:
    """The protocol of a terminal that says who it is, or None."""
    program = env.get("TERM_PROGRAM", "")
    if term == "xterm-kitty" or env.get("KITTY_WINDOW_ID"):
        return "kitty"
    if term == "xterm-ghostty" or env.get("GHOSTTY_RESOURCES_DIR") or program == "ghostty":
        return "kitty"
    if program == "WezTerm":
        return "iterm2"  # WezTerm's kitty graphics are off unless enable_kitty_graphics is set
    if program == "iTerm.app" or env.get("LC_TERMINAL") == "iTerm2":
        return "iterm2"
    if program == "vscode":
        return "iterm2"  # VS Code's terminal shows them with terminal.integrated.enableImages
    if env.get("KONSOLE_VERSION", "").isdigit() and int(env["KONSOLE_VERSION"]) >= 220400:
        return "kitty"  # Konsole 22.04 and later
    if term.startswith("foot") or term.startswith("mlterm") or env.get("MLTERM"):
        return "sixel"
    if env.get("WT_SESSION"):
        return "sixel"  # Windows Terminal 1.22 and later
    return None


def _has_sixel(query: Callable[[str, float], str] | None) -> bool:
    """Ask the terminal its primary device attributes: attribute 4 means sixel graphics."""
    if query is None:
        return False
    try:
        reply = query(_DA1, QUERY_TIMEOUT)
    except OSError:
        return False
    m = _DA1_REPLY.search(reply.encode("latin-1", "replace"))
    return m is not None and "4" in m[1].decode("ascii").split(";")


def choose_protocol(env: Mapping[str, str], setting: str = "auto", *,
                    query: Callable[[str, float], str] | None = None) -> str | None:
    """"kitty", "iterm2", "sixel" or None (show the saved path), from the environment first.

    ``setting`` is ``repl.inline_images``: "off" is always None; "auto" draws only on
    evidence (a terminal that names itself, or an xterm whose answer to ``query`` lists
    sixel); "on" also asks any other terminal, and draws on one that gives no evidence with
    kitty's protocol, whose escapes (APC) terminals without it discard unseen. Never in
    TERM=dumb, tmux or screen, whatever the setting. NO_COLOR does not matter: an image is
    content, not colour.
    """
    if setting == "off":
        return None
    term = env.get("TERM", "")
    if term in ("", "dumb") or _in_multiplexer(env, term):
        return None
    found = _from_environment(env, term)
    if found is not None:
        return found
    # Only a real xterm (it sets XTERM_VERSION) is asked under "auto": it has sixel when
    # started with -ti vt340 (or decTerminalID), and only its answer says so. Asking every
    # TERM=xterm would cost each start a round trip, or the whole wait where nothing answers.
    if (env.get("XTERM_VERSION") or setting == "on") and _has_sixel(query):
        return "sixel"
    return "kitty" if setting == "on" else None


# ---------------------------------------------------------------- asking the terminal


class TerminalQuery:
    """``query(sequence, timeout_s) -> reply`` on llmrepl's private tty descriptors.

    It writes the sequence and reads the terminal's answer with the tty in non-canonical mode
    for at most ``timeout_s``. It never hangs (a deadline on every wait) and never eats a
    typed key: it does not ask at all when input is already waiting, or when stdin and stdout
    are not the same terminal in the foreground; it reads only what is waiting when the answer
    arrives, and gives back anything that is not the answer (pushed back into the terminal's
    input where the system allows, else left in ``unread`` for the front end).
    """

    def __init__(self, fd_in: int, fd_out: int) -> None:
        self.fd_in, self.fd_out = fd_in, fd_out
        self.unread = b""  # typed bytes read with an answer that could not be pushed back

    def usable(self) -> bool:
        """Both ends one terminal, and llmrepl in its foreground (else tcsetattr stops us)."""
        try:
            if not (os.isatty(self.fd_in) and os.isatty(self.fd_out)):
                return False
            if os.fstat(self.fd_in).st_rdev != os.fstat(self.fd_out).st_rdev:
                return False
        except OSError:
            return False
        try:
            return os.tcgetpgrp(self.fd_in) == os.getpgrp()
        except OSError:  # not our controlling terminal: no job control to stop us
            return True
        except AttributeError:  # pragma: no cover - Windows: no termios either
            return False

    def __call__(self, sequence: str, timeout_s: float = QUERY_TIMEOUT) -> str:
        if not self.usable():
            return ""
        import termios

        fd = self.fd_in
        try:
            saved = termios.tcgetattr(fd)
        except termios.error:
            return ""
        raw = list(saved)
        raw[3] &= ~(termios.ICANON | termios.ECHO)  # lflags: bytes as they come, none echoed
        raw[6] = list(saved[6])
        raw[6][termios.VMIN], raw[6][termios.VTIME] = 0, 0
        try:
            termios.tcsetattr(fd, termios.TCSANOW, raw)  # TCSANOW: typed input is kept
            if _waiting(fd):
                return ""  # typed ahead: asking now would mix the answer with the keys
            os.write(self.fd_out, sequence.encode("ascii"))
            return self._read_reply(fd, time.monotonic() + max(0.0, timeout_s))
        except (OSError, termios.error):
            return ""
        finally:
            try:
                termios.tcsetattr(fd, termios.TCSANOW, saved)
            except termios.error:
                pass

    def _read_reply(self, fd: int, deadline: float) -> str:
        import select

        got = b""
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                break
            count = _waiting(fd)
            if not count:  # readable but nothing waiting: the terminal went away
                break
            got += os.read(fd, count)  # only what is there: a read never waits
            m = _DA1_REPLY.search(got) or re.search(rb"\x1b[\[\]P_][^\x1b\x07]*(\x07|\x1b\\)", got)
            if m is not None:
                late = _waiting(fd)  # keys queued behind the answer go back with those before it,
                rest = got[m.end():] + (os.read(fd, late) if late else b"")  # in the order typed
                self._give_back(got[:m.start()] + rest)
                return m[0].decode("latin-1")
        self._give_back(got)
        return ""

    def _give_back(self, typed: bytes) -> None:
        """Typed keys read with the answer go back into the terminal's input queue."""
        done = 0
        try:
            import fcntl
            import termios

            for done in range(len(typed)):
                fcntl.ioctl(self.fd_in, termios.TIOCSTI, typed[done:done + 1])
        except (OSError, AttributeError, ImportError):  # Linux 6.2+ may refuse TIOCSTI
            self.unread += typed[done:]


def _waiting(fd: int) -> int:
    """Bytes in the terminal's input queue now."""
    import fcntl
    import termios

    buf = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
    return int(struct.unpack("i", buf)[0])


def cell_pixels(fd: int) -> tuple[int, int] | None:
    """The size in pixels of one character cell, when the terminal reports it (TIOCGWINSZ)."""
    try:
        import fcntl
        import termios

        rows, cols, width, height = struct.unpack(
            "HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    except (OSError, ImportError, AttributeError):
        return None
    if not (rows and cols and width and height):
        return None
    return max(1, width // cols), max(1, height // rows)


# ---------------------------------------------------------------- drawing


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height in pixels from a PNG's header (no decoder needed)."""
    if len(png) < 24 or not png.startswith(_PNG_MAGIC) or png[12:16] != b"IHDR":
        raise ValueError("not a PNG image")
    width, height = struct.unpack(">II", png[16:24])
    if not (width and height):
        raise ValueError("a PNG image of no pixels")
    return int(width), int(height)


def fit_cells(width: int, height: int, *, max_cols: int, max_rows: int,
              cell_px: tuple[int, int] | None = None) -> tuple[int, int, int, int]:
    """(cols, rows, pixel width, pixel height) of an image scaled to fit, aspect kept.

    Never enlarged (a small image stays small), never more than ``max_cols`` x ``max_rows``
    cells, at least one pixel and one cell each way.
    """
    cw, ch = cell_px or DEFAULT_CELL
    max_cols, max_rows = max(1, max_cols), max(1, max_rows)
    scale = min(1.0, max_cols * cw / width, max_rows * ch / height)
    w = max(1, min(max_cols * cw, math.floor(width * scale)))
    h = max(1, min(max_rows * ch, math.floor(height * scale)))
    return min(max_cols, math.ceil(w / cw)), min(max_rows, math.ceil(h / ch)), w, h


def encode_image(png: bytes, protocol: str, *, max_cols: int, max_rows: int,
                 cell_px: tuple[int, int] | None = None) -> str:
    """The escape string that draws ``png`` in at most ``max_cols`` x ``max_rows`` cells.

    Raises ValueError for bytes that are not a PNG or an unknown protocol, and
    :class:`ImagesUnavailable` when sixel's encoder is not installed.
    """
    import base64  # only when there is an image to draw

    width, height = png_size(png)
    if width * height > MAX_PIXELS:
        raise ValueError(f"an image of {width}x{height} pixels is too large to draw inline")
    if protocol == "kitty":
        cols, rows, _, _ = fit_cells(width, height, max_cols=max_cols, max_rows=max_rows, cell_px=cell_px)
        return _kitty(png, cols, rows)
    if protocol == "iterm2":
        cols, rows, _, _ = fit_cells(width, height, max_cols=max_cols, max_rows=max_rows, cell_px=cell_px)
        data = base64.b64encode(png).decode("ascii")
        return (f"\x1b]1337;File=inline=1;size={len(png)};width={cols};height={rows};"
                f"preserveAspectRatio=1:{data}\x07")
    if protocol == "sixel":
        return _sixel(png, width, height, max_cols, max_rows, cell_px or DEFAULT_CELL)
    raise ValueError(f"unknown image protocol {protocol!r}")


def _kitty(png: bytes, cols: int, rows: int) -> str:
    """kitty's graphics protocol: transmit and show a PNG (f=100) in cols x rows cells.

    q=2: the terminal sends no reply, which would otherwise land in the input line.
    """
    import base64

    data = base64.b64encode(png).decode("ascii")
    chunks = [data[i:i + _KITTY_CHUNK] for i in range(0, len(data), _KITTY_CHUNK)]
    out = []
    for i, chunk in enumerate(chunks):
        more = 1 if i < len(chunks) - 1 else 0
        keys = f"a=T,f=100,q=2,c={cols},r={rows},m={more}" if i == 0 else f"q=2,m={more}"
        out.append(f"\x1b_G{keys};{chunk}\x1b\\")
    return "".join(out)


def _sixel(png: bytes, width: int, height: int, max_cols: int, max_rows: int,
           cell: tuple[int, int]) -> str:
    """Sixel (DEC's DCS graphics): the PNG decoded, scaled, put on white, 256 colours, encoded.

    The height is padded to whole six-pixel bands (white), within the rows allowed; the
    raster attributes ("1;1;W;H) say square pixels and the size.
    """
    try:
        import io

        from PIL import Image
        from timg import SixelMethod
    except ImportError:
        raise ImagesUnavailable(
            "sixel images need the optional extra: pip install 'llmrepl[images]' (timg and "
            "Pillow); showing the saved path instead") from None
    box_w = max(1, max_cols) * cell[0]
    box_h = max(6, max(1, max_rows) * cell[1] // 6 * 6)  # whole bands, so padding stays inside
    scale = min(1.0, box_w / width, box_h / height)
    w, h = max(1, math.floor(width * scale)), max(1, math.floor(height * scale))
    with Image.open(io.BytesIO(png)) as source:
        image = source.convert("RGBA")
    if image.size != (w, h):
        image = image.resize((w, h), Image.Resampling.LANCZOS)
    padded = Image.new("RGBA", (w, math.ceil(h / 6) * 6), (255, 255, 255, 255))
    padded.alpha_composite(image)
    indexed = padded.convert("RGB").quantize(colors=256)
    body = SixelMethod(indexed).to_string()
    header = SixelMethod.HEADER
    if not body.startswith(header):  # pragma: no cover - a timg that frames sixel differently
        raise ImagesUnavailable("the installed timg writes sixel this llmrepl does not know; "
                                "showing the saved path instead")
    return f'\x1bP0;1;0q"1;1;{padded.width};{padded.height}' + body[len(header):]
