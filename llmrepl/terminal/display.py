"""The terminal ``Display``: shows streamed answers, code, live cell output and results.

Used by the interactive UI and by one-shot/batch mode (where it is plain text). It writes
to the stream it was given, a reference taken before any cell could replace ``sys.stdout``.
Every piece of foreign text it is handed (answers, code, cell output, values, tracebacks,
notices and listings that quote them) goes through ``sanitize`` on its way to ``write``;
``write`` itself is for llmrepl's own text.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

from llmrepl.terminal.render import StreamRenderer, highlight_code, style
from llmrepl.terminal.sanitize import sanitize

if TYPE_CHECKING:
    from llmrepl.engine.session import Session
    from llmrepl.execution.executor import ExecResult
    from llmrepl.model.client import Completion

__all__ = ["TerminalDisplay"]


class _Limit:
    """Shows the first ``head`` characters, then only counts, keeping the last ``tail`` to show
    at the end: a cell printing 1 GB (or a 5 MB answer) costs the terminal ~250 KB, not 1 GB."""

    def __init__(self, head: int, tail: int) -> None:
        self.head, self.tail = head, tail
        self.shown = self.hidden = 0
        self._buf: deque[str] = deque()
        self._buflen = 0

    def take(self, text: str) -> str:
        room = self.head - self.shown
        if len(text) <= room:
            self.shown += len(text)
            return text
        now = text[: max(room, 0)]
        self.shown += len(now)
        rest = text[len(now):]
        self.hidden += len(rest)
        if len(rest) >= self.tail:  # never copy the middle of a huge string
            self._buf.clear()
            self._buf.append(rest[len(rest) - self.tail :])
            self._buflen = self.tail
        else:
            self._buf.append(rest)
            self._buflen += len(rest)
            while self._buflen - len(self._buf[0]) >= self.tail:
                self._buflen -= len(self._buf.popleft())
        return now

    def flush(self) -> tuple[int, str]:
        """How many characters were not shown and the kept tail (0 and "" when nothing was
        held back); then start over."""
        if not self.hidden:
            self.shown = 0
            return 0, ""
        tail = "".join(self._buf)[-self.tail :]
        tail = tail[tail.find("\n") + 1 :] if "\n" in tail[:-1] else tail  # start the tail at a line
        skipped = self.hidden - len(tail)
        self.shown = self.hidden = self._buflen = 0
        self._buf.clear()
        return skipped, tail


def _not_shown(skipped: int, what: str) -> str:
    return f"\nllmrepl: [... {skipped:,} characters of {what} not shown ...]\n"


class TerminalDisplay:
    """Implements ``session.Display`` by writing rendered text to ``out``."""

    def __init__(self, out: TextIO, *, color: bool = False, err: TextIO | None = None) -> None:
        self.out = out
        self.err = err or out
        self.color = color
        self._lock = threading.RLock()
        self._renderer: StreamRenderer | None = None
        self._at_line_start = True
        self._cell_limit = _Limit(head=200_000, tail=20_000)
        self._answer_limit = _Limit(head=200_000, tail=4_000)
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
        self._renderer = StreamRenderer(self.color)  # it sanitizes each completed line
        self.code_cut = False

    def answer_text(self, delta: str) -> None:
        if self._renderer is None:
            self.answer_start()
        assert self._renderer is not None
        # cut before rendering, so the cut never falls inside an escape code of our own
        self.write(self._renderer.feed(self._answer_limit.take(delta)))

    def answer_end(self, completion: Completion | None) -> None:
        if self._renderer is not None:
            self.write(self._renderer.finish())
            self._renderer = None
        skipped, tail = self._answer_limit.flush()
        if skipped:
            self.code_cut = True
            self.write(_not_shown(skipped, "this answer (the journal has all of it)") + sanitize(tail))
            self._line_start()

    def tool_code(self, code: str, label: str = "run_python") -> None:
        """Code put up for review outside an answer's text: a tool call's, or the cell several
        fenced blocks make (``label`` says which)."""
        limit = _Limit(head=200_000, tail=4_000)
        head = limit.take(code)
        skipped, tail = limit.flush()
        self._line_start()
        self.write(style(f"{label}:", "dim", self.color) + "\n")
        self.write(highlight_code(head, self.color))
        if skipped:
            self.write(_not_shown(skipped, "this code") + highlight_code(tail, self.color))
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
        skipped, tail = self._cell_limit.flush()
        if skipped:
            what = f"cell {result.cell}'s output (_out[{result.cell}] keeps up to 1M)"
            self.write(_not_shown(skipped, what))
            self._draw_output("stdout", tail)
        self.end_output()
        self._line_start()
        if result.value_repr is not None:
            self.write(sanitize(result.value_repr) + "\n")
        if result.timed_out:
            self.notice(f"cell {result.cell} stopped: it ran past the time limit (the namespace is intact)", "warning")
        elif result.interrupted:
            self.notice(f"cell {result.cell} interrupted (Ctrl-C); the namespace is intact", "warning")
        elif result.error:
            self.write(style(sanitize(result.error).rstrip("\n"), "red", self.color) + "\n")
        if result.repairs:
            self.notice("restored after the cell: " + "; ".join(result.repairs))

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
