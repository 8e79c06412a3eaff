"""The terminal ``Display``: shows streamed answers, code, live cell output and results.

Used by the interactive UI and by one-shot/batch mode (where it is plain text). It writes
to the stream it was given, a reference taken before any cell could replace ``sys.stdout``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

from .render import StreamRenderer, highlight_code, strip_controls, style

if TYPE_CHECKING:
    from .executor import ExecResult
    from .model import Completion

__all__ = ["TerminalDisplay"]


class TerminalDisplay:
    """Implements ``session.Display`` by writing rendered text to ``out``."""

    def __init__(self, out: TextIO, *, color: bool = False, err: TextIO | None = None) -> None:
        self.out = out
        self.err = err or out
        self.color = color
        self._renderer: StreamRenderer | None = None
        self._at_line_start = True
        # set by the UI while its prompt is up: output from threads a cell left running must be
        # drawn above the prompt, never through it
        self.redirect: Callable[[str, str], None] | None = None

    def write(self, text: str, stream: TextIO | None = None) -> None:
        if not text:
            return
        target = stream or self.out
        try:
            target.write(text)
            target.flush()
        except (OSError, ValueError):
            pass  # a closed pipe must not end the session
        self._at_line_start = text.endswith("\n")

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
        self.write(self._renderer.feed(delta))

    def answer_end(self, completion: Completion) -> None:
        if self._renderer is not None:
            self.write(self._renderer.finish())
            self._renderer = None

    def tool_code(self, code: str) -> None:
        self._line_start()
        self.write(style("run_python:", "dim", self.color) + "\n")
        self.write(highlight_code(code, self.color))

    def cell_output(self, stream: str, text: str) -> None:
        redirect = self.redirect
        if redirect is not None:
            redirect(stream, text)
            return
        if stream == "stderr" and self.color:
            self.write(style(text, "red", True))
            self._at_line_start = text.endswith("\n")
        else:
            self.write(text)

    def cell_result(self, result: ExecResult) -> None:
        self._line_start()
        if result.value_repr is not None:
            self.write(result.value_repr + "\n")
        if result.timed_out:
            self.notice(f"cell {result.cell} stopped: it ran past the time limit (the namespace is intact)", "warning")
        elif result.interrupted:
            self.notice(f"cell {result.cell} interrupted (Ctrl-C); the namespace is intact", "warning")
        elif result.error:
            self.write(style(result.error.rstrip("\n"), "red", self.color) + "\n")

    def notice(self, text: str, level: str = "info") -> None:
        self._line_start()
        color = {"warning": "yellow", "error": "red"}.get(level, "dim")
        self.write(style(f"llmrepl: {strip_controls(text)}", color, self.color) + "\n")

    def show(self, text: str, level: str = "info") -> None:
        """Text from a command (already meant for the person)."""
        self._line_start()
        if level == "info":
            self.write(text.rstrip("\n") + "\n")
        else:
            self.notice(text, level)
