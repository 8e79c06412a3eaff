"""The terminal ``Display``: shows streamed answers, code, live cell output and results.

Used by the interactive UI and by one-shot/batch mode (where it is plain text). It writes
to the stream it was given, a reference taken before any cell could replace ``sys.stdout``.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

from llmrepl.terminal.render import StreamRenderer, highlight_code, strip_controls, style

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

    def flush(self, what: str) -> str:
        """The marker and the kept tail, if anything was held back; then start over."""
        if not self.hidden:
            self.shown = 0
            return ""
        tail = "".join(self._buf)[-self.tail :]
        tail = tail[tail.find("\n") + 1 :] if "\n" in tail[:-1] else tail  # start the tail at a line
        skipped = self.hidden - len(tail)
        self.shown = self.hidden = self._buflen = 0
        self._buf.clear()
        return f"\nllmrepl: [... {skipped:,} characters of {what} not shown ...]\n{tail}"


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
        self._cell_number = 0
        # set by the UI while its prompt is up: output from threads a cell left running must be
        # drawn above the prompt, never through it
        self._redirect: Callable[[str, str], None] | None = None

    def write(self, text: str, stream: TextIO | None = None) -> None:
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
        self._renderer = StreamRenderer(self.color)

    def answer_text(self, delta: str) -> None:
        if self._renderer is None:
            self.answer_start()
        assert self._renderer is not None
        self.write(self._answer_limit.take(self._renderer.feed(delta)))

    def answer_end(self, completion: Completion | None) -> None:
        if self._renderer is not None:
            self.write(self._answer_limit.take(self._renderer.finish()))
            self._renderer = None
        self.write(self._answer_limit.flush("this answer (the journal has all of it)"))

    def tool_code(self, code: str) -> None:
        self._line_start()
        self.write(style("run_python:", "dim", self.color) + "\n")
        self.write(highlight_code(code, self.color))

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
        if not text:
            return
        if stream == "stderr" and self.color:
            self.write(style(text, "red", True))
            self._at_line_start = text.endswith("\n")
        else:
            self.write(text)

    def cell_result(self, result: ExecResult) -> None:
        self.write(self._cell_limit.flush(f"cell {result.cell}'s output (_out[{result.cell}] keeps up to 1M)"))
        self._line_start()
        if result.value_repr is not None:
            self.write(result.value_repr + "\n")
        if result.timed_out:
            self.notice(f"cell {result.cell} stopped: it ran past the time limit (the namespace is intact)", "warning")
        elif result.interrupted:
            self.notice(f"cell {result.cell} interrupted (Ctrl-C); the namespace is intact", "warning")
        elif result.error:
            self.write(style(result.error.rstrip("\n"), "red", self.color) + "\n")
        if result.repairs:
            self.notice("restored after the cell: " + "; ".join(result.repairs))

    def notice(self, text: str, level: str = "info") -> None:
        self._line_start()
        color = {"warning": "yellow", "error": "red"}.get(level, "dim")
        self.write(style(f"llmrepl: {strip_controls(text)}", color, self.color) + "\n")

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
        """Text from a command (already meant for the person)."""
        self._line_start()
        if level == "info":
            self.write(strip_controls(text).rstrip("\n") + "\n")  # /history shows model text
        else:
            self.notice(text, level)
