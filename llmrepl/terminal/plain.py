"""A line-based front end for terminals that cannot take escape codes (``TERM=dumb``).

The same loop as the full UI, read with plain ``readline``: no colours, no cursor moves,
no editor (``e`` says so), no pager (``v`` prints the cell), answers ended with Enter.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TextIO

from llmrepl.engine.classify import defined_names, route
from llmrepl.engine.protocols import Decision
from llmrepl.engine.session import Session
from llmrepl.execution.magics import describe_shell
from llmrepl.terminal.display import TerminalDisplay
from llmrepl.terminal.sanitize import sanitize

__all__ = ["PlainReviewer", "run_plain"]

PROMPT = "llm> "


class PlainReviewer:
    """``Run this code? [Y/n/a]`` answered with a line.

    The same gate as the full UI, without a pager: a cell the display had to cut is printed
    whole (``v``) before ``y`` counts, and a high-risk cell runs only on ``y``."""

    def __init__(self, read: Callable[[str], str], display: TerminalDisplay) -> None:
        self.read = read
        self.display = display

    def review(self, code: str, *, cell: int, high_risk: bool = False) -> Decision:
        unread = self.display.code_cut
        shell = describe_shell(code)  # `!cmd` lines: shown as the shell commands they are
        if shell:
            self.display.notice(shell)
        while True:
            if unread:
                question = "Run this code? [v/n] (the display had to cut it: v prints all of it) "
            elif high_risk:
                question = "Run this code? [y/n] (high risk: only y runs it) "
            else:
                question = "Run this code? [Y/n/a] "
            answer = self.read(question).strip().lower()
            if answer in ("n", "no"):
                return Decision("decline", code)
            if answer in ("v", "view"):
                self.display.listing(code)
                unread = False
            elif unread:
                self.display.notice("v prints the whole cell; y counts once it has been shown, n declines")
            elif answer in ("y", "yes") or answer == "" and not high_risk:
                return Decision("run", code)
            elif answer in ("a", "always") and not high_risk:
                return Decision("always", code)
            elif high_risk:
                self.display.notice("this cell has a high-risk label: only y runs it, n does not")
            else:
                self.display.notice("answer y (run), n (don't) or a (run this and later cells); "
                                    "editing needs a full terminal")


def run_plain(session: Session, display: TerminalDisplay, *, stdin: TextIO | None = None,
              before_send: Callable[[], None] | None = None) -> int:
    """The interactive loop without prompt_toolkit."""
    source = stdin or sys.__stdin__ or sys.stdin

    def read(prompt: str) -> str:
        display.write(sanitize(prompt))  # llmrepl's questions, or the prompt of a cell's input()
        line = source.readline()
        if not line:
            raise EOFError
        if line.endswith("\n"):
            display.line_typed()  # the terminal echoed it: no blank line before what follows
        else:
            display.write("\n")
        return line.rstrip("\n")

    def ask(question: str) -> bool:  # /export onto an existing file: only "y" replaces it
        try:
            return read(question).strip().lower() in ("y", "yes")
        except (EOFError, KeyboardInterrupt):
            return False

    reviewer = PlainReviewer(read, display)
    def cell_input(prompt: str) -> str:  # a cell's input(): no spinner over its question
        with display.paused():
            return read(prompt)

    session.executor.input_func = cell_input
    session.ask = ask
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
            # Python runs as /py does, the rest asks the model (engine/classify.py); no
            # indicator here: the prompt is printed before the line is typed
            decided = route(text, defined_names(session.executor.namespace))
            if decided.kind != "model":
                command = decided.text if decided.kind == "command" else "/py " + decided.text
                if display.command(command, session):
                    break
                continue
            if before_send is not None:
                before_send()
            turn = session.step(decided.text, reviewer)
            if turn.error is not None:
                display.notice(str(turn.error), "error")
        except KeyboardInterrupt:
            display.notice("interrupted; the conversation and the namespace are kept", "warning")
    session.journal.append("session_end")
    return 0
