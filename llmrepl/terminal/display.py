"""The terminal ``Display``: shows streamed answers, code, live cell output and results.

Used by the interactive UI and by one-shot/batch mode (where it is plain text). It writes
to the stream it was given, a reference taken before any cell could replace ``sys.stdout``.
Every piece of foreign text it is handed (answers, code, cell output, values, tracebacks,
notices and listings that quote them) goes through ``sanitize`` on its way to ``write``;
``write`` itself is for llmrepl's own text.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TextIO

from llmrepl.terminal.cell_lines import figure_line, out_label, status_line
from llmrepl.terminal.limit import OutputLimit, not_shown
from llmrepl.terminal.render import highlight_code, style
from llmrepl.terminal.sanitize import sanitize
from llmrepl.terminal.spinner import Spinner

if TYPE_CHECKING:
    from llmrepl.engine.session import Session
    from llmrepl.execution.executor import ExecResult
    from llmrepl.model.client import Completion
    from llmrepl.terminal.markdown import MarkdownStream

__all__ = ["TerminalDisplay", "figure_line"]


def _plain_of(item: Any) -> str:
    text = item.data.get("text/plain") if isinstance(item.data, dict) else None
    return str(text if text is not None else getattr(item, "text", ""))


_displays: weakref.WeakSet[TerminalDisplay] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """In a process a cell forked, the threads that take the display's lock (the spinner's,
    the fd reader's) do not exist, and one may have held it at the fork: a fresh lock, and
    no spinner, or the child's first print waits forever."""
    for display in list(_displays):
        display._lock = threading.RLock()
        display._spinner = None


os.register_at_fork(after_in_child=_after_fork_in_child)


class TerminalDisplay:
    """Implements ``session.Display`` by writing rendered text to ``out``.

    ``width``: columns to wrap prose at (None: the terminal's, read at each answer; no
    wrapping into a pipe). ``spinner``: show one while waiting (default: with colour, which
    the app turns on only for a terminal). ``images``: the inline-image protocol (kitty,
    iterm2, sixel), set by the app; None shows a figure as its saved path."""

    def __init__(self, out: TextIO, *, color: bool = False, err: TextIO | None = None, width: int | None = None,
                 spinner: bool | None = None, ascii: bool | None = None) -> None:
        self.out = out
        self.err = err or out
        self.color = color
        self.width = width
        self.images: str | None = None
        if ascii is None:
            encoding = (getattr(out, "encoding", None) or "utf-8").lower().replace("-", "")
            ascii = "utf" not in encoding or os.environ.get("TERM") == "dumb"
        self.ascii = ascii
        self._lock = threading.RLock()
        _displays.add(self)
        self._renderer: MarkdownStream | None = None
        self._at_line_start = True
        self._after_cell = False  # a cell's result was the last thing shown: a blank line before prose
        self._spinner: Spinner | None = None
        if color if spinner is None else spinner:
            self._spinner = Spinner(self._raw, self._lock, ready=self._free_line, columns=self.columns,
                                    ascii=self.ascii, color=color)
        self._cell_limit = OutputLimit(head=200_000, tail=20_000)
        self._answer_limit = OutputLimit(head=200_000, tail=4_000)
        self._colored = False  # cell output left SGR colour on: reset it before llmrepl writes
        # True when the last code put up for review (an answer's fences, or a tool call's code)
        # was not shown whole: the review gate then shows all of it before "y" counts
        self.code_cut = False
        # set by the UI while its prompt is up: output from threads a cell left running must be
        # drawn above the prompt, never through it
        self._redirect: Callable[[str, str], None] | None = None

    def write(self, text: str, stream: TextIO | None = None) -> None:
        """Write llmrepl's own text (foreign text reaches here only through ``sanitize``)."""
        if not text:
            return
        with self._lock:  # threads a cell left running write here too
            if self._spinner is not None:
                self._spinner.hide()
            self._after_cell = False
            self._write(text, stream)

    def _write(self, text: str, stream: TextIO | None) -> None:
        target = stream or self.out
        try:
            try:
                target.write(text)
            except UnicodeEncodeError:  # a lone surrogate, or a terminal that is not UTF-8
                encoding = getattr(target, "encoding", None) or "utf-8"
                target.write(text.encode(encoding, "replace").decode(encoding, "replace"))
            target.flush()
        except (OSError, ValueError):
            pass  # a closed pipe must not end the session
        self._at_line_start = text.endswith("\n")

    def _raw(self, text: str) -> None:
        """The spinner's bytes: written as they are, no state changed (the lock is held)."""
        try:
            self.out.write(text)
            self.out.flush()
        except (OSError, ValueError):
            pass

    def _free_line(self) -> bool:
        return self._at_line_start and self._redirect is None

    def columns(self) -> int | None:
        """The width to wrap at: as given, else the terminal's (None for a pipe or a file)."""
        if self.width:
            return self.width
        try:
            if self.out.isatty():
                return os.get_terminal_size(self.out.fileno()).columns or None
        except (AttributeError, OSError, ValueError):
            pass
        return None

    def rows(self) -> int:
        try:
            return os.get_terminal_size(self.out.fileno()).lines or 24
        except (AttributeError, OSError, ValueError):
            return 24

    # -- waiting ------------------------------------------------------------------------

    def busy(self, label: str | None, *, delay: float = 0.0) -> None:
        """Show a spinner with ``label`` and the elapsed time (None ends it). With a ``delay``
        (a running cell) it shows after that long of quiet, and comes back after output."""
        with self._lock:
            if self._spinner is None:
                return
            if label is None:
                self._spinner.stop()
                return
            if self._redirect is None:
                self._line_start()
                self._spinner.start(sanitize(label), delay=delay, persistent=delay > 0)

    def settle(self) -> None:
        """The prompt is about to be drawn: no spinner, and what comes next is the person's."""
        self.busy(None)
        self._after_cell = False

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """No spinner while something else draws on the line (a cell's ``input()`` prompt)."""
        spinner = self._spinner
        if spinner is None:
            yield
            return
        spinner.pause()
        try:
            yield
        finally:
            spinner.resume()

    def retrying(self, reason: str, seconds: float) -> None:
        """The model client waits ``seconds`` before trying again (``reason``: "rate limited")."""
        reason = sanitize(reason)
        with self._lock:
            if self._spinner is None:
                self.write(f"llmrepl: {reason}, retrying in {math.ceil(seconds)} s\n", self.err)
                return
            until = time.monotonic() + seconds

            def label(now: float) -> str:
                return f"{reason}, retrying in {max(math.ceil(until - now), 0)} s"

            self._spinner.start(label, keep_time=True)

    def line_typed(self) -> None:
        """The person ended a line the terminal echoed (the plain front end): the cursor is at
        the start of a line now, though llmrepl's last write was a prompt."""
        self._at_line_start = True

    def clear_line(self) -> None:
        """Erase the current terminal line (the early prompt the real one replaces)."""
        self.write("\r\x1b[K")
        self._at_line_start = True

    def _line_start(self) -> None:
        if not self._at_line_start:
            self.write("\n")

    # -- Display protocol -------------------------------------------------------------

    def answer_start(self) -> None:
        self._line_start()
        if self._after_cell:  # the model's prose never runs on from the cell's result
            self._after_cell = False
            self.write("\n")
        # it sanitizes every delta; wraps prose at the terminal's width, read now (a resize
        # between answers is followed). Imported here, off the way to the first prompt (the
        # warm-up thread imports it while the person types).
        from llmrepl.terminal.markdown import MarkdownStream

        self._renderer = MarkdownStream(self.color, self.columns(), ascii=self.ascii)
        self.code_cut = False

    def answer_text(self, delta: str) -> None:
        if self._renderer is None:
            self.answer_start()
        assert self._renderer is not None
        # cut before rendering, so the cut never falls inside an escape code of our own
        self.write(self._renderer.feed(self._answer_limit.take(delta)))

    def answer_end(self, completion: Completion | None) -> None:
        if self._spinner is not None:
            self._spinner.stop()
        if self._renderer is not None:
            self.write(self._renderer.finish())
            self._renderer = None
        skipped, tail = self._answer_limit.flush()
        if skipped:
            self.code_cut = True
            self.write(not_shown(skipped, "this answer (the journal has all of it)") + sanitize(tail))
            self._line_start()

    def tool_code(self, code: str, label: str = "run_python") -> None:
        """Code put up for review outside an answer's text: a tool call's, or the cell several
        fenced blocks make (``label`` says which)."""
        limit = OutputLimit(head=200_000, tail=4_000)
        head = limit.take(code)
        skipped, tail = limit.flush()
        self._line_start()
        self.write(style(f"{label}:", "dim", self.color) + "\n")
        self.write(highlight_code(head, self.color))
        if skipped:
            self.write(not_shown(skipped, "this code") + highlight_code(tail, self.color))
        self.code_cut = bool(skipped)

    def listing(self, code: str) -> None:
        """All of ``code``, numbered, never cut (the plain front end's "v" at the question)."""
        lines = sanitize(code).split("\n")
        width = len(str(len(lines)))
        self._line_start()
        self.write("".join(f"{n:>{width}} | {line}\n" for n, line in enumerate(lines, 1)))

    @property
    def redirect(self) -> Callable[[str, str], None] | None:
        return self._redirect

    @redirect.setter
    def redirect(self, value: Callable[[str, str], None] | None) -> None:
        with self._lock:  # never while another thread is between reading it and writing
            self._redirect = value

    def cell_output(self, stream: str, text: str) -> None:
        with self._lock:
            redirect = self._redirect
            if redirect is not None:
                redirect(stream, text)
            else:
                self.draw_cell_output(stream, text)

    def draw_cell_output(self, stream: str, text: str) -> None:
        """Write cell output now, whatever ``redirect`` says (the UI draws held-back late output
        with this, above its prompt, without ever lifting the redirect other threads rely on)."""
        with self._lock:
            text = self._cell_limit.take(text)
            self._draw_output(stream, text)

    def _draw_output(self, stream: str, text: str) -> None:
        # colour (SGR) and "\r" survive in cell output: progress bars redraw their line
        text = sanitize(text, output=True, color=self.color)
        if not text:
            return
        if self.color and "\x1b[" in text:
            self._colored = True
        if stream == "stderr" and self.color:
            self.write(style(text, "red", True))
            self._at_line_start = text.endswith("\n")
        else:
            self.write(text)

    def end_output(self) -> None:
        """Colour a cell's output switched on ends with it (before llmrepl writes again)."""
        with self._lock:
            if self._colored:
                self._colored = False
                at_start = self._at_line_start
                self.write("\x1b[0m")
                self._at_line_start = at_start

    def cell_result(self, result: ExecResult) -> None:
        if self._spinner is not None:
            self._spinner.stop()
        skipped, tail = self._cell_limit.flush()
        if skipped:
            what = f"cell {result.cell}'s output (_out[{result.cell}] keeps up to 1M)"
            self.write(not_shown(skipped, what))
            self._draw_output("stdout", tail)
        self.end_output()
        self._line_start()
        value = getattr(result, "value_data", None)
        if value is not None and "image/png" in value.data:
            self.write(out_label(result.cell, "", self.color))
            self.cell_display(value)
        elif result.value_repr is not None:
            text = sanitize(getattr(value, "screen", None) or result.value_repr).rstrip("\n")
            self.write(out_label(result.cell, text, self.color) + text + "\n")
        if result.timed_out:
            self.notice(f"cell {result.cell} stopped: it ran past the time limit (the namespace is intact)", "warning")
        elif result.interrupted:
            self.notice(f"cell {result.cell} interrupted (Ctrl-C); the namespace is intact", "warning")
        elif result.error:
            self.write(style(sanitize(result.error).rstrip("\n"), "red", self.color) + "\n")
        if result.repairs:
            self.notice("restored after the cell: " + "; ".join(result.repairs))
        self.write(self.status_line(result) + "\n")
        self._after_cell = True

    def status_line(self, result: ExecResult) -> str:
        """``✓ cell 9 · 0.57 s``, ``✗ KeyError · 0.01 s``, ``✗ cell 4 interrupted · 3.2 s``."""
        return status_line(result, ascii=self.ascii, color=self.color)

    def cell_display(self, item: Any) -> None:
        """One rich output of a cell (``display()``, a figure, a value's bundle): an image
        inline when the terminal can show one, else a line naming the saved file; a table at
        the screen's width; Markdown rendered; anything else as its text/plain."""
        with self._lock:
            redirect = self._redirect
            if redirect is not None:  # a thread the cell left running, while the prompt is up
                redirect("stdout", _plain_of(item) + "\n")
                return
            self.end_output()
            self._line_start()
            data, meta = item.data, item.metadata
            png = data.get("image/png")
            if isinstance(png, (bytes, bytearray)):
                self._image(bytes(png), meta, item)
            elif getattr(item, "screen", None):
                self.write(sanitize(item.screen).rstrip("\n") + "\n")
            elif isinstance(data.get("text/markdown"), str):
                from llmrepl.terminal.markdown import render_markdown

                self.write(render_markdown(data["text/markdown"], self.color, self.columns(), ascii=self.ascii))
            else:
                self.write(sanitize(_plain_of(item)).rstrip("\n") + "\n")

    def _image(self, png: bytes, meta: dict[str, Any], item: Any) -> None:
        if self.images:
            from llmrepl.terminal.images import ImagesUnavailable, cell_pixels, encode_image

            try:
                try:
                    cell_px = cell_pixels(self.out.fileno())
                except (OSError, ValueError):  # not a terminal (a test's StringIO)
                    cell_px = None
                cols = self.columns() or 80
                drawn = encode_image(png, self.images, max_cols=cols, max_rows=max(self.rows() * 2 // 3, 5),
                                     cell_px=cell_px)
            except ImagesUnavailable as exc:  # the sixel encoder is not installed: say so once
                self.images = None
                self.notice(str(exc), "warning")
                drawn = ""
            except Exception:  # a PNG the encoder cannot read: the path will do
                drawn = ""
            if drawn:
                self.write(drawn + "\n")  # our own escape, built from the PNG's bytes
                return
        self.write(style(figure_line(meta, self.ascii), "dim", self.color) + "\n")

    def notice(self, text: str, level: str = "info") -> None:
        """One ``llmrepl: ...`` line; ``text`` may quote foreign text (a server's message, a
        file name, a stored session), so it is sanitized as a whole."""
        self._line_start()
        color = {"warning": "yellow", "error": "red"}.get(level, "dim")
        self.write(style(f"llmrepl: {sanitize(text)}", color, self.color) + "\n")

    def command(self, line: str, session: Session) -> bool:
        """Run a /command and show what it says; True when it asks to leave."""
        from llmrepl.engine.commands import dispatch

        try:
            result = dispatch(line, session)
        except Exception as e:  # a bug in a command costs that command, never the session
            self.notice(f"{line.split()[0]} failed: {type(e).__name__}: {e}", "error")
            return False
        if result.text:
            self.show(result.text, result.level)
        return result.exit

    def show(self, text: str, level: str = "info") -> None:
        """Text from a command: /history quotes the model, /sessions stored first messages."""
        self._line_start()
        if level == "info":
            self.write(sanitize(text).rstrip("\n") + "\n")
        else:
            self.notice(text, level)
