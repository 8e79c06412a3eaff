"""One prompt, two languages, in a real pseudo-terminal: Python runs without the model, English
reaches it once, the prompt says which while typing, and Python (only) is highlighted.

The screen is what a terminal shows: every byte llmrepl writes goes through pyte, and the
tests read rows and character colours from it (prompt_toolkit redraws only what changed, so
the raw bytes alone would not spell ``py>``).
"""

from __future__ import annotations

import time

import pexpect
import pyte
import pytest
from launch import DIMENSIONS, PROMPT

from llmrepl.context.builder import without_state

pytestmark = pytest.mark.timeout(90)


class Terminal:
    """A child llmrepl and the screen its output draws."""

    def __init__(self, child: pexpect.spawn) -> None:
        self.child = child
        rows, cols = DIMENSIONS
        self.screen = pyte.Screen(cols, rows)
        self.stream = pyte.Stream(self.screen)

    def pump(self) -> None:
        try:
            while True:
                self.stream.feed(self.child.read_nonblocking(65536, timeout=0.05))
        except pexpect.TIMEOUT:
            return

    def wait(self, what: str, condition, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"waited for {what}; the screen shows:\n" + "\n".join(self.rows()))
            self.pump()

    def rows(self) -> list[str]:
        return [row.rstrip() for row in self.screen.display]

    def cursor_row(self) -> str:
        return self.screen.display[self.screen.cursor.y].rstrip()

    def shows(self, text: str, timeout: float = 30) -> None:
        self.wait(repr(text), lambda: any(text in row for row in self.rows()), timeout)

    def input_line(self, prompt: str, typed: str) -> None:
        """Wait until the cursor's row reads ``prompt`` + ``typed``."""
        self.wait(f"{prompt!r} + {typed!r} at the cursor", lambda: self.cursor_row() == (prompt + typed).rstrip())

    def colours(self, typed: str) -> set[str]:
        """The foreground colours of the characters of ``typed`` on the cursor's row."""
        y = self.screen.cursor.y
        row = self.screen.display[y]
        start = row.index(typed)
        return {self.screen.buffer[y][x].fg for x in range(start, start + len(typed)) if row[x] != " "}

    def type(self, text: str) -> None:
        self.child.send(text)


@pytest.fixture
def terminal(pty_llmrepl):
    def start() -> Terminal:
        term = Terminal(pty_llmrepl(wait=False))
        term.shows(PROMPT)
        return term

    return start


def test_python_never_reaches_the_server_and_english_reaches_it_once(terminal, server) -> None:
    server.reply("The mean is 42.")
    term = terminal()
    term.type("answer = 6 * 7\r")
    term.wait("the cell to run", lambda: term.cursor_row() == "llm>")
    term.type("answer\r")
    term.shows("Out[2]: 42")
    term.wait("the next prompt", lambda: term.cursor_row() == "llm>")
    assert server.requests == []  # two Python lines, no request
    term.type("what is the mean of answer?\r")
    term.shows("The mean is 42.")
    term.wait("the next prompt", lambda: term.cursor_row() == "llm>")
    assert len(server.requests) == 1
    sent = server.requests[0]["messages"]
    assert without_state(sent[-1]["content"]).endswith("\nwhat is the mean of answer?")
    assert any("answer = 6 * 7" in str(m.get("content")) for m in sent)  # told the person ran code


def test_the_prompt_says_where_enter_sends_while_typing(terminal, server) -> None:
    server.reply("asked")
    term = terminal()
    term.type("/py frame = 1\r")
    term.wait("the next prompt", lambda: term.cursor_row() == "llm>")
    term.type("frame")
    term.input_line(" py> ", "frame")  # a defined name: Enter runs it
    term.type("s")
    term.input_line("llm> ", "frames")  # not defined: Enter asks the model
    term.type("\x15")  # Ctrl-U clears
    term.type("frame.real")
    term.input_line(" py> ", "frame.real")
    term.type("\x15/ask frame")
    term.input_line("llm> ", "/ask frame")
    term.type("\r")
    term.shows("asked")
    assert len(server.requests) == 1
    assert without_state(server.requests[0]["messages"][-1]["content"]).endswith("\nframe")


def test_python_is_highlighted_and_prose_is_not(terminal, server) -> None:
    term = terminal()
    term.type("import os; print(42)")
    term.input_line(" py> ", "import os; print(42)")
    colours = term.colours("import os; print(42)")
    assert len(colours - {"default"}) >= 2, colours  # keyword, number, ... in their colours
    term.type("\x15" + "import the sales data please")
    term.input_line("llm> ", "import the sales data please")
    assert term.colours("import the sales data please") == {"default"}
    assert server.requests == []
