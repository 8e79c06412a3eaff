"""The interactive terminal front end: prompt_toolkit prompt, history, toolbar, Ctrl-C.

With ``gate`` (the review question and its pager), the only modules that import
prompt_toolkit. It drives a :class:`~llmrepl.engine.session.Session` and shows everything
through a :class:`~llmrepl.terminal.display.TerminalDisplay`.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import queue
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from prompt_toolkit import PromptSession
from prompt_toolkit.application.current import set_app
from prompt_toolkit.buffer import Buffer
from prompt_toolkit.enums import EditingMode
from prompt_toolkit.filters import Condition
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.input import Input
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.keys import Keys
from prompt_toolkit.output import Output, create_output
from prompt_toolkit.selection import SelectionState

from llmrepl.engine.session import Session
from llmrepl.execution.guards import TerminalStreams
from llmrepl.terminal.completion import MenuPromptSession, completer
from llmrepl.terminal.display import TerminalDisplay
from llmrepl.terminal.gate import TerminalReviewer
from llmrepl.terminal.routing import MODEL_PROMPT, InputRouter, RoutedLexer, continues_python
from llmrepl.terminal.sanitize import sanitize

__all__ = ["TerminalUI", "SafeFileHistory"]

PROMPT = MODEL_PROMPT  # " py> " while the input would run as Python (routing.py)
_MAX_HISTORY_ENTRY = 10_000


class SafeFileHistory(FileHistory):
    """FileHistory that is private (0600), scrubs secrets, keeps huge pastes out, writes each
    entry in one locked append (two llmrepl processes never interleave), and never breaks
    the prompt: a failure is reported once and the session goes on."""

    def __init__(self, filename: str | os.PathLike[str], redact: Callable[[str], str] | None = None) -> None:
        super().__init__(filename)
        self.failed: str | None = None
        self.redact = redact

    def load_history_strings(self) -> Iterable[str]:
        try:
            yield from super().load_history_strings()
        except (OSError, UnicodeDecodeError, ValueError):
            return

    def append_string(self, string: str) -> None:
        # what Up recalls in this session is what the file holds: redacted too
        super().append_string(self.redact(string) if self.redact is not None else string)

    def store_string(self, string: str) -> None:
        if self.redact is not None:
            string = self.redact(string)
        if len(string) > _MAX_HISTORY_ENTRY:
            string = string[:_MAX_HISTORY_ENTRY] + f"\n# ... ({len(string):,} characters in all; cut in history)"
        # prompt_toolkit's format: a blank line, "# <time>", then each line prefixed with "+"
        entry = "\n# " + str(datetime.datetime.now()) + "\n" + "".join(f"+{line}\n" for line in string.split("\n"))
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            path = Path(os.fsdecode(self.filename))
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, flags, 0o600)
            try:
                _lock(fd)
                os.write(fd, entry.encode("utf-8", "replace"))
            finally:
                os.close(fd)
        except OSError as e:
            self.failed = f"input history not saved ({e.strerror or e})"


def _lock(fd: int) -> None:
    try:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX)  # released when the fd is closed
    except (ImportError, OSError):
        pass  # no flock (Windows, some network filesystems): O_APPEND of one write still holds


def open_history(path: Path | None, redact: Callable[[str], str] | None = None) -> History:
    return SafeFileHistory(path, redact) if path is not None else InMemoryHistory()


def _terminal_input(terminal: TerminalStreams | None) -> Input | None:
    """Keys from llmrepl's own copy of fd 0 (a cell may close fd 0), with bytes that are not
    text in its encoding read as U+FFFD (prompt_toolkit keeps them as lone surrogates, which
    break the journal, the request and the cell's source). None: prompt_toolkit's default."""
    stdin = terminal.stdin if terminal is not None else None
    if stdin is None or sys.platform == "win32" or not stdin.isatty():
        return None
    from prompt_toolkit.input.posix_utils import PosixStdinReader
    from prompt_toolkit.input.vt100 import Vt100Input

    keys = Vt100Input(stdin)
    keys.stdin_reader = PosixStdinReader(stdin.fileno(), errors="replace", encoding=stdin.encoding or "utf-8")
    return keys


class TerminalUI:
    """The read-eval loop: prompt, command or message, stream, review, run, repeat."""

    def __init__(
        self,
        session: Session,
        display: TerminalDisplay,
        *,
        history_path: Path | None = None,
        vi_mode: bool = False,
        input: Input | None = None,
        output: Output | None = None,
        before_send: Callable[[], None] | None = None,
        after_first_prompt: Callable[[], None] | None = None,
        early_prompt: Callable[[], None] | None = None,
    ) -> None:
        self.session = session
        self.display = display
        self.before_send = before_send
        self.after_first_prompt = after_first_prompt
        self.early_prompt = early_prompt  # startup drew EARLY_PROMPT already: restores the terminal
        if output is None:
            # llmrepl's own copy of the terminal (display.out): sys.stdout is the session's
            # capture router, and a cell may close or redirect fd 1 or sys.__stdout__
            output = create_output(stdout=display.out)
        if input is None:
            input = _terminal_input(session.executor.terminal)
        self.reviewer = TerminalReviewer(input=input, output=output, code_cut=lambda: display.code_cut)
        self.history = open_history(history_path, session.redactor.redact)
        # which way Enter sends the input: the prompt says it, Python is highlighted (routing.py)
        self.router = InputRouter(lambda: session.executor.namespace)
        self.prompt: PromptSession[str] = MenuPromptSession(
            history=self.history,
            lexer=RoutedLexer(self.router.highlights),
            key_bindings=self._bindings(Condition(lambda: self._replace_armed)),
            vi_mode=vi_mode,
            # slash commands, and Python from the live namespace (terminal/completion.py)
            completer=completer(lambda: session.executor),
            complete_while_typing=True,  # room for the menu only while it is open (completion.py)
            bottom_toolbar=self.toolbar,
            input=input,
            output=output,
        )
        self._notices: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()
        self._resend = ""
        self._replace_armed = False  # the message put back is selected: the first key typed replaces it
        self.prompt.default_buffer.on_cursor_position_changed += self._disarm
        session.executor.input_func = self._ask_input
        self.reviewer.guard = self._hold_late_output  # type: ignore[method-assign]

    def _ask_input(self, prompt: str) -> str:
        """A cell's ``input()``: the spinner keeps off the line while the question is up."""
        with self.display.paused():
            return self.reviewer.ask_input(prompt)

    def toolbar(self) -> str:
        """Model, context fill, tokens used this session, auto-run: e.g.
        `` gpt-4.1 · ctx 12.3k/1.0M · 45.6k used (91% cached) · auto-run off `` (the cached
        share of prompt tokens, once the server reported any)."""
        s = self.session
        fit = s.context.last
        fill = _k(fit.tokens) if fit is not None else "–"
        used = s.usage["prompt_tokens"] + s.usage["completion_tokens"]
        cached = s.usage.get("cached_tokens", 0)
        share = f" ({cached / s.usage['prompt_tokens']:.0%} cached)" if cached and s.usage["prompt_tokens"] else ""
        auto = "on" if s.auto_run else "off"
        model = sanitize(s.model.model)  # a local server's own model id, perhaps
        return (f" {model} · ctx {fill}/{_k(s.context.context_window)} · {_k(used)} used{share}"
                f" · auto-run {auto} ")

    def _bindings(self, armed: Condition) -> KeyBindings:
        kb = KeyBindings()

        @kb.add("escape", "enter")
        def _newline(event: KeyPressEvent) -> None:
            event.current_buffer.insert_text("\n")

        # As in IPython: Enter in an unfinished block (``for i in x:``, an open bracket) starts
        # the next line, indented; Enter on a line of only spaces, or on finished code, sends.
        @kb.add("enter", filter=~armed & Condition(lambda: self._continues() is not None))
        def _continue(event: KeyPressEvent) -> None:
            event.current_buffer.insert_text("\n" + (self._continues() or ""))

        # A message put back after a failed request is shown selected, as the notice says:
        # Enter resends it, the first character typed (or pasted) replaces it, Backspace
        # clears it, and an arrow key keeps it for editing.
        @kb.add(Keys.Any, filter=armed)
        @kb.add(Keys.BracketedPaste, filter=armed)
        def _replace(event: KeyPressEvent) -> None:
            data = event.data.replace("\r\n", "\n").replace("\r", "\n")
            self._clear_put_back(event.current_buffer)
            event.current_buffer.insert_text(data)

        @kb.add("backspace", filter=armed)
        @kb.add("c-u", filter=armed)
        def _clear(event: KeyPressEvent) -> None:
            self._clear_put_back(event.current_buffer)

        return kb

    def _continues(self) -> str | None:
        return continues_python(self.prompt.default_buffer.text)

    def _clear_put_back(self, buffer: Buffer) -> None:
        self._replace_armed = False
        buffer.exit_selection()
        buffer.reset()

    def _arm_put_back(self) -> None:
        """Before the prompt shows a message put back: select it (the cursor is at its end)."""
        buffer = self.prompt.default_buffer
        if buffer.text:
            if self.prompt.app.editing_mode != EditingMode.VI:  # in vi a selection is visual mode
                buffer.selection_state = SelectionState(0)
            self._replace_armed = True

    def _disarm(self, buffer: Buffer) -> None:
        """The cursor moved (an arrow key): the message put back is being edited."""
        if self._replace_armed:
            self._replace_armed = False
            buffer.exit_selection()

    # -- notices from other threads (local-server probe, tokenizer load) ----------------

    def post(self, text: str, level: str = "info") -> None:
        """Show ``text`` above the prompt now if it is up, else before the next one."""
        self._notices.put((text, level))
        self._wake()

    @contextlib.contextmanager
    def _hold_late_output(self) -> Iterator[None]:
        previous, self.display.redirect = self.display.redirect, self._late_output
        try:
            yield
        finally:
            self.display.redirect = previous

    def _late_output(self, stream: str, text: str) -> None:
        """Output from a thread a cell left running, arriving while the prompt is up."""
        self._notices.put((text, "late-" + stream))
        self._wake()

    def _wake(self) -> None:
        app = self.prompt.app
        loop = getattr(app, "loop", None)
        if app.is_running and loop is not None:
            def show() -> None:
                # Draw above the prompt without leaving raw mode: run_in_terminal would switch
                # to cooked mode meanwhile, and a key typed in that instant is echoed raw by the
                # terminal into the middle of the output (seen 1 run in 12).
                if not app.is_running or self._notices.empty():
                    return
                with set_app(app):
                    app.renderer.erase()
                    self._drain()
                    app.renderer.reset()
                    app.invalidate()
            loop.call_soon_threadsafe(show)

    def _drain(self) -> None:
        while True:
            try:
                text, level = self._notices.get_nowait()
            except queue.Empty:
                return
            if level.startswith("late-"):
                self.display.draw_cell_output(level[5:], text)  # sanitized there, as all cell output
                self.display.end_output()
            else:
                self.display.show(text, level)

    # -- the loop ------------------------------------------------------------------------

    def run(self) -> int:
        first = True
        if self.early_prompt is not None:
            self.display.clear_line()  # the real prompt (and anything typed so far) goes here
        while True:
            self._drain()
            if isinstance(self.history, SafeFileHistory) and self.history.failed:
                self.display.notice(self.history.failed, "warning")
                self.history.failed = None
            if self.session.journal.error:
                self.display.notice(self.session.journal.error, "warning")
                self.session.journal.error = ""
            pre_run = self._first_prompt_drawn if first else (self._arm_put_back if self._resend else None)
            first = False
            self.display.settle()  # no spinner left over (a wait ended by an error), no blank line due
            self.display.redirect = self._late_output
            try:
                text = self.prompt.prompt(self._prompt_text, default=self._resend, pre_run=pre_run)
            except KeyboardInterrupt:
                self._resend = ""
                self._replace_armed = False
                continue
            except EOFError:
                break
            finally:
                self.display.redirect = None
                if self.early_prompt is not None:
                    # prompt_toolkit ran on top of the early raw mode (so no keystroke was ever
                    # translated by a cooked terminal) and restored that on exit: now put back
                    # the person's own settings, before any cell runs (Ctrl-C must be a signal)
                    self.early_prompt()
                    self.early_prompt = None
                self._drain()
            self._resend = ""
            self._replace_armed = False
            if not text.strip():
                continue
            # tables are formatted for the screen as it is now (the window may have been resized)
            self.session.executor.display_width = self.display.columns()
            decided = self.router.enter(text)  # Python runs as /py does; the rest asks the model
            self.router.forget()  # what runs may change the namespace
            if decided.kind == "command":
                if self._command(decided.text):
                    break
                continue
            if decided.kind == "python":
                self._command("/py " + decided.text)
                continue
            try:
                self._message(decided.text)
                if self._resend:
                    self._resend = text  # put back as typed: "/ask df" stays a question
            except KeyboardInterrupt:  # a second Ctrl-C that lands just as the turn ends
                self.display.notice("interrupted", "warning")
        self.session.journal.append("session_end")
        return 0

    def _prompt_text(self) -> str:
        """``llm> `` or `` py> ``: where Enter sends what is typed now."""
        return self.router.prompt(self.prompt.default_buffer.text)

    def _first_prompt_drawn(self) -> None:
        if self.after_first_prompt is not None:
            threading.Thread(target=self.after_first_prompt, name="llmrepl-warmup", daemon=True).start()

    def _command(self, line: str) -> bool:
        try:
            return self.display.command(line, self.session)
        except KeyboardInterrupt:
            self.display.notice("interrupted", "warning")
            return False

    def _message(self, text: str) -> None:
        try:
            if self.before_send is not None:
                self.before_send()
            turn = self.session.step(text, self.reviewer)
        except KeyboardInterrupt:
            self.display.notice("interrupted; the conversation and the namespace are kept", "warning")
            return
        if turn.error is not None:
            self.display.notice(str(turn.error), "error")
            if turn.steps == 1 and not turn.cells:
                self._resend = text  # put the message back at the prompt: Enter resends it
                self.display.notice("your message is back in the input line: Enter resends it; typing "
                                    "replaces it; an arrow key edits it")

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"TerminalUI(session={self.session!r})"


def _k(n: int) -> str:
    """12345 -> "12.3k", 1047576 -> "1.0M"."""
    if n >= 1_000_000:
        return f"{n / 1_000_000:.1f}M"
    if n >= 1_000:
        return f"{n / 1_000:.1f}k"
    return str(n)
