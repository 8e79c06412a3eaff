"""A line-based front end for terminals that cannot take escape codes (``TERM=dumb``).

The same loop as the full UI, read with plain ``readline``: no colours, no cursor moves,
no editor (``e`` says so), answers ended with Enter.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TextIO

from llmrepl.engine.commands import is_command
from llmrepl.engine.protocols import Decision
from llmrepl.engine.session import Session
from llmrepl.terminal.display import TerminalDisplay

__all__ = ["PlainReviewer", "run_plain"]

PROMPT = "llm> "


class PlainReviewer:
    """``Run this code? [Y/n/a]`` answered with a line."""

    def __init__(self, read: Callable[[str], str], note: Callable[[str], None]) -> None:
        self.read = read
        self.note = note

    def review(self, code: str, *, cell: int) -> Decision:
        while True:
            answer = self.read("Run this code? [Y/n/a] ").strip().lower()
            if answer in ("", "y", "yes"):
                return Decision("run", code)
            if answer in ("n", "no"):
                return Decision("decline", code)
            if answer in ("a", "always"):
                return Decision("always", code)
            self.note("answer y (run), n (don't) or a (run this and later cells); editing needs a full terminal")


def run_plain(session: Session, display: TerminalDisplay, *, stdin: TextIO | None = None,
              before_send: Callable[[], None] | None = None) -> int:
    """The interactive loop without prompt_toolkit."""
    source = stdin or sys.__stdin__ or sys.stdin

    def read(prompt: str) -> str:
        display.write(prompt)
        line = source.readline()
        if not line:
            raise EOFError
        display.write("" if line.endswith("\n") else "\n")
        return line.rstrip("\n")

    reviewer = PlainReviewer(read, display.notice)
    session.executor.input_func = read
    while True:
        if session.journal.error:
            display.notice(session.journal.error, "warning")
            session.journal.error = ""
        try:
            text = read(PROMPT)
        except KeyboardInterrupt:
            display.write("\n")
            continue
        except EOFError:
            break
        line = text.strip()
        if not line:
            continue
        try:
            if is_command(line):
                if display.command(line, session):
                    break
                continue
            if before_send is not None:
                before_send()
            turn = session.step(text, reviewer)
            if turn.error is not None:
                display.notice(str(turn.error), "error")
        except KeyboardInterrupt:
            display.notice("interrupted; the conversation and the namespace are kept", "warning")
    session.journal.append("session_end")
    return 0
