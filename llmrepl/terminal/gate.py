"""The review gate on prompt_toolkit: ``Run this code?`` answered with one key, and a pager.

What the gate promises (the engine has already refused cells with hidden characters):

- a cell taller than the screen, or one whose answer the display had to cut, is read in
  the pager before ``y`` counts: ``y`` is accepted once every line of it has been drawn
  on the screen (the pager keeps track; it is not enough to open it and jump to the end);
- a cell with a high-risk label runs only on an explicit ``y`` (or the editor's Alt-Enter):
  Enter does not answer, and ``a`` (always) is not offered for it.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable

from prompt_toolkit import PromptSession, print_formatted_text
from prompt_toolkit.application import Application, get_app
from prompt_toolkit.formatted_text import StyleAndTextTuples
from prompt_toolkit.input import Input
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.layout import FormattedTextControl, HSplit, Layout, Window
from prompt_toolkit.output import Output
from prompt_toolkit.utils import get_cwidth

from llmrepl.engine.protocols import Decision
from llmrepl.execution.magics import describe_shell
from llmrepl.terminal.sanitize import sanitize

__all__ = ["TerminalReviewer", "Pager", "ask_key", "screen_rows"]

QUESTION = "Run this code? [Y/n/e/a] "
_NO = {"n": "no", "N": "no", "c-c": "no", "c-d": "no", "e": "edit", "E": "edit"}


def ask_key(message: str, keys: dict[str, str], *, input: Input | None, output: Output | None) -> str:
    """Show ``message`` and return the value of the first key in ``keys`` pressed (no Enter);
    the value is written after the question, so the screen records the answer."""
    state = {"answer": ""}
    kb = KeyBindings()

    def bind(key: str, value: str) -> None:
        @kb.add(key, eager=True)
        def _(event: KeyPressEvent) -> None:
            state["answer"] = value
            event.app.exit(result=value)

    for key, value in keys.items():
        bind(key, value)

    @kb.add("<any>")
    def _ignore(event: KeyPressEvent) -> None:
        pass

    control = FormattedTextControl(lambda: [("", message), ("bold", state["answer"])], show_cursor=True)
    app: Application[str] = Application(
        layout=Layout(Window(control, height=1, dont_extend_height=True)),
        key_bindings=kb,
        input=input,
        output=output,
        erase_when_done=False,
    )
    return app.run(handle_sigint=False)


def screen_rows(code: str, columns: int, stop: int) -> int:
    """Terminal rows ``code`` takes at ``columns`` wide (long lines wrap), counted up to ``stop``."""
    columns = max(columns, 1)
    rows = 0
    for line in code.split("\n"):
        width = len(line.expandtabs()) if line.isascii() else get_cwidth(line.expandtabs())
        rows += max(1, -(-width // columns))
        if rows > stop:
            break
    return rows


class Pager:
    """All of a cell, full screen, a page at a time, line-numbered, long lines wrapped (never
    cut off at the right edge). It remembers which characters have been drawn on the screen,
    across openings: ``all_shown`` is the gate's test."""

    def __init__(self, code: str) -> None:
        self.code = code
        self._seen = bytearray(len(code))
        self._unseen = len(code)
        self._top = 0      # index of the first row on the screen
        self._width = -1   # the width the rows were wrapped for
        # (line number, first row of its line?, text shown, first character, end of what it shows)
        self._rows: list[tuple[int, bool, str, int, int]] = []
        self._lines = code.count("\n") + 1

    @property
    def all_shown(self) -> bool:
        return self._unseen == 0

    @property
    def percent(self) -> int:
        return 100 if not self.code else int(100 * (len(self.code) - self._unseen) / len(self.code))

    def show(self, *, input: Input | None, output: Output | None) -> bool:
        """Page through the cell until ``q``; True when all of it has been on the screen."""
        kb = KeyBindings()

        def page() -> int:
            return max(get_app().output.get_size().rows - 1, 1)

        def move(rows: Callable[[], int]) -> Callable[[KeyPressEvent], None]:
            def handler(event: KeyPressEvent) -> None:
                step = rows()
                self._top = max(0, min(self._top + step, len(self._rows) - page()))
                if abs(step) > 1:
                    # a new page is painted whole, not as a diff of the last one: what is on
                    # the screen is the page, whatever else wrote to the terminal meanwhile
                    event.app.renderer.clear()
            return handler

        for keys, step in (((" ", "pagedown", "f", "c-f", "c-v"), page),
                           (("pageup", "b", "c-b"), lambda: -page()),
                           (("down", "j", "enter", "c-n"), lambda: 1),
                           (("up", "k", "c-p"), lambda: -1),
                           (("end", "G", ">"), lambda: len(self._rows)),
                           (("home", "g", "<"), lambda: -len(self._rows))):
            for key in keys:
                kb.add(key)(move(step))

        @kb.add("q")
        @kb.add("Q")
        @kb.add("c-c")
        @kb.add("c-d")
        def _quit(event: KeyPressEvent) -> None:
            event.app.exit()

        body = Window(FormattedTextControl(self._screen), wrap_lines=False)
        status = Window(FormattedTextControl(self._status), height=1, style="reverse")
        app: Application[None] = Application(layout=Layout(HSplit([body, status])), key_bindings=kb,
                                             full_screen=True, input=input, output=output)
        app.run(handle_sigint=False)
        return self.all_shown

    def _screen(self) -> StyleAndTextTuples:
        """The rows on the screen now; drawing them is what marks them shown (not the last
        drawing as ``q`` leaves, which the alternate screen takes away at once)."""
        app = get_app()
        size = app.output.get_size()
        height = max(size.rows - 1, 1)
        self._wrap(size.columns)
        self._top = max(0, min(self._top, len(self._rows) - height))
        gutter = len(str(self._lines))
        out: StyleAndTextTuples = []
        for number, first, text, start, end in self._rows[self._top : self._top + height]:
            if not app.is_done:
                self._mark(start, end)
            out.append(("class:gutter", f"{number:>{gutter}} │ " if first else f"{'':>{gutter}} ┆ "))
            out.append(("", text + "\n"))
        return out

    def _status(self) -> StyleAndTextTuples:
        rows = self._rows
        if not rows:
            return []
        height = max(get_app().output.get_size().rows - 1, 1)
        first, last = rows[self._top][0], rows[min(self._top + height, len(rows)) - 1][0]
        if self.all_shown:
            text = f" all {self._lines:,} lines shown · q: back to the question "
        else:
            text = (f" lines {first:,}-{last:,} of {self._lines:,} · {self.percent}% shown · "
                    "Space: next page · b: back · q: back to the question ")
        return [("", text)]

    def _mark(self, start: int, end: int) -> None:
        if end > start:
            self._unseen -= end - start - self._seen.count(1, start, end)
            self._seen[start:end] = b"\x01" * (end - start)

    def _wrap(self, columns: int) -> None:
        if columns == self._width:
            return
        at = self._rows[min(self._top, len(self._rows) - 1)][3] if self._rows else 0  # the top stays on a resize
        self._width = columns
        room = max(columns - len(str(self._lines)) - 3, 10)
        rows: list[tuple[int, bool, str, int, int]] = []
        offset = 0
        for number, line in enumerate(self.code.split("\n"), 1):
            pieces = _pieces(line, room)
            for k, (text, a, b) in enumerate(pieces):
                last = k == len(pieces) - 1
                # the last row of a line also accounts for its line end
                end = offset + b + (1 if last and offset + b < len(self.code) else 0)
                rows.append((number, k == 0, text, offset + a, end))
            offset += len(line) + 1
        self._rows = rows
        self._top = next((i for i, r in enumerate(rows) if r[4] > at), 0)


def _pieces(line: str, room: int) -> list[tuple[str, int, int]]:
    """``line`` cut into rows at most ``room`` columns wide: (text shown, start, end)."""
    if line.isascii() and line.isprintable():
        if not line:
            return [("", 0, 0)]
        return [(line[i : i + room], i, min(i + room, len(line))) for i in range(0, len(line), room)]
    # anything that is not drawn as itself (controls, format characters, odd spaces) is drawn
    # as a marker: the engine refuses cells with hidden characters, this is defence in depth
    hidden = {i for i, ch in enumerate(line) if ch != "\t" and not ch.isprintable()}
    pieces: list[tuple[str, int, int]] = []
    parts: list[str] = []
    col = linecol = start = 0
    for i, ch in enumerate(line):
        if ch == "\t":
            text = " " * (8 - linecol % 8)  # Python's and the terminal's tab stops
        elif i in hidden:
            text = f"<U+{ord(ch):04X}>"
        else:
            text = ch
        width = len(text) if len(text) > 1 else get_cwidth(text)
        if col + width > room and parts:
            pieces.append(("".join(parts), start, i))
            parts, col, start = [], 0, i
        parts.append(text)
        col += width
        linecol += width
    pieces.append(("".join(parts), start, len(line)))
    return pieces


class TerminalReviewer:
    """``Run this code? [Y/n/e/a]`` answered with one key; ``e`` opens an inline editor, ``v``
    the pager. ``code_cut`` tells whether the display had to cut the code it last showed."""

    def __init__(self, *, input: Input | None = None, output: Output | None = None,
                 code_cut: Callable[[], bool] | None = None) -> None:
        self.input = input
        self.output = output
        self.code_cut = code_cut or (lambda: False)

    def review(self, code: str, *, cell: int, high_risk: bool = False) -> Decision:
        with self.guard():
            return self._review(code, high_risk)

    def _review(self, code: str, high_risk: bool) -> Decision:
        pager: Pager | None = None
        shell = describe_shell(code)  # `!cmd` lines: shown as the shell commands they are
        if shell:
            self._say(sanitize(shell))
        unread = self._unread(code)  # why it must be read in the pager first, or ""
        while True:
            answer = ask_key(*self._question(high_risk, unread), input=self.input, output=self.output)
            if answer == "yes":
                return Decision("run", code)
            if answer == "always":
                return Decision("always", code)
            if answer == "no":
                return Decision("decline", code)
            if answer == "edit":
                edited = self.edit(code)
                if edited is not None and edited.strip():
                    return Decision("run", edited, edited=edited != code)
            elif answer == "view":
                pager = pager or Pager(code)
                if pager.show(input=self.input, output=self.output):
                    unread = ""
                elif unread:
                    self._say(f"{pager.percent}% of the cell has been on the screen; v goes on reading, "
                              "and y counts once all of it has")
            elif answer == "read it first":
                self._say(f"{unread}: press v to read all of it (y counts once every line has been "
                          "on the screen), e to edit it, n not to run it")
            else:  # an Enter or an `a` at a high-risk cell
                self._say("this cell has a high-risk label: only y runs it (n does not, e edits it)")

    def _question(self, high_risk: bool, unread: str) -> tuple[str, dict[str, str]]:
        keys = {"v": "view", "V": "view", **_NO}
        if unread:
            keys |= dict.fromkeys(("y", "Y", "enter", "c-m", "a", "A"), "read it first")
            return f"Run this code? [v/n/e] ({unread}: v shows all of it) ", keys
        if high_risk:
            keys |= {"y": "yes", "Y": "yes"} | dict.fromkeys(("enter", "c-m", "a", "A"), "high risk")
            return "Run this code? [y/n/e] (high risk: only y runs it) ", keys
        keys |= dict.fromkeys(("y", "Y", "enter", "c-m"), "yes") | {"a": "always", "A": "always"}
        return QUESTION, keys

    def _unread(self, code: str) -> str:
        if self.code_cut():
            return "the display had to cut it"
        size = self._size()
        if size is None:
            return ""
        rows, columns = size
        need = screen_rows(code, columns, stop=rows)
        return f"{code.count(chr(10)) + 1:,} lines, taller than the screen" if need > rows - 2 else ""

    def _size(self) -> tuple[int, int] | None:
        if self.output is not None:
            size = self.output.get_size()
            return size.rows, size.columns
        with contextlib.suppress(AttributeError, ValueError, OSError):
            s = os.get_terminal_size(sys.__stdout__.fileno())  # type: ignore[union-attr]
            return s.lines, s.columns
        return None

    def _say(self, text: str) -> None:
        print_formatted_text(f"llmrepl: {text}", style=None, output=self.output)

    def edit(self, code: str) -> str | None:
        """A multi-line editor prefilled with ``code``; None when cancelled (Ctrl-C / Ctrl-D)."""
        from prompt_toolkit.lexers import PygmentsLexer
        from pygments.lexers.python import PythonLexer

        editor: PromptSession[str] = PromptSession(input=self.input, output=self.output)
        print_formatted_text(
            "edit the code: Alt-Enter or Esc Enter runs your version · Ctrl-C cancels",
            style=None, output=self.output,
        )
        try:
            return editor.prompt(
                "",
                default=code,
                multiline=True,
                lexer=PygmentsLexer(PythonLexer),
                prompt_continuation="",
                bottom_toolbar=" Alt-Enter or Esc Enter runs the edited code · Ctrl-C cancels ",
            )
        except (KeyboardInterrupt, EOFError):
            return None

    def ask_input(self, prompt: str) -> str:
        """``input()`` inside a cell, answered at the terminal (the prompt is the cell's text)."""
        asker: PromptSession[str] = PromptSession(input=self.input, output=self.output)
        with self.guard():
            return asker.prompt(sanitize(prompt))

    def guard(self) -> contextlib.AbstractContextManager[None]:
        """While a prompt_toolkit app is on screen, other threads' output is held back
        (set by the UI; a no-op for a reviewer used on its own)."""
        return contextlib.nullcontext()
