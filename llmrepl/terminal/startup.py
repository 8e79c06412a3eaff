"""Starting a front end: the interactive one, fast, and the batch one, for pipes and ``-c``.

The interactive start draws its prompt before prompt_toolkit has loaded and warms up what
the first answer needs while the person types; batch mode reads one message or /command per
line and reports errors on stderr (:func:`report`, which ``cli`` uses too, so every
``llmrepl: ...`` line is written one way). ``llmrepl.app`` builds the session and calls in here.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from llmrepl import __version__

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from pathlib import Path
    from typing import Any, TextIO

    from llmrepl.config import Config
    from llmrepl.engine.protocols import Reviewer
    from llmrepl.engine.session import Session
    from llmrepl.model.setup import ModelSetup
    from llmrepl.terminal.display import TerminalDisplay

__all__ = ["EARLY_PROMPT", "report", "resume_confirm", "ask_to_replace", "own_the_keys", "run_interactive", "run_batch"]

EARLY_PROMPT = "llm> "  # the same text as interactive.PROMPT (a test checks it)


def report(text: str, stream: TextIO | None = None) -> None:
    """``llmrepl: text`` on the real stderr (``stream``: llmrepl's own copy of it, once the
    session captures sys.stderr and fd 2 for its cells). ``text`` may quote a server's error
    message or a file name: it goes through the terminal's one sanitizer (a tiny module:
    nothing slow on the way to --help)."""
    from llmrepl.terminal.sanitize import sanitize

    stream = stream or sys.__stderr__ or sys.stderr
    try:
        stream.write(f"llmrepl: {sanitize(text)}\n")
        stream.flush()
    except (OSError, ValueError):
        pass


def resume_confirm(interactive: bool, yes: bool, *, display: TerminalDisplay | None = None
                   ) -> Callable[[str, str], bool]:
    """How resume asks before re-running stored cells (shown above it): --yes skips it; batch
    never re-runs without it. A listing taller than the screen, or one the display had to
    cut, is read in the pager (as the gate's ``v``) before ``y`` counts."""
    if yes:
        return lambda question, listing: True
    if not interactive:
        return lambda question, listing: False

    def ask(question: str, listing: str) -> bool:
        return _ask_after_reading(question, listing, display)

    return ask


def _ask_after_reading(question: str, listing: str, display: TerminalDisplay | None) -> bool:
    from prompt_toolkit.output import create_output

    from llmrepl.terminal.gate import Pager, ask_key, screen_rows

    output = create_output(stdout=display.out if display is not None else sys.__stdout__)
    size = output.get_size()
    unread = ""
    if display is not None and display.code_cut:
        unread = "the display had to cut it"
    elif screen_rows(listing, size.columns, stop=size.rows) > size.rows - 2:
        unread = f"{listing.count(chr(10)) + 1:,} lines, taller than the screen"
    pager = Pager(listing)
    no = {"n": "no", "N": "no", "c-c": "no", "c-d": "no", "v": "view", "V": "view"}
    while True:
        if unread:
            keys = no | dict.fromkeys(("y", "Y", "enter", "c-m"), "read it first")
            message = question.replace("[Y/n]", f"[v/n] ({unread}: v shows all of it)")
        else:
            keys = no | dict.fromkeys(("y", "Y", "enter", "c-m"), "yes")
            message = question.rstrip() + " (v: page through them) "
        answer = ask_key(message, keys, input=None, output=output)
        if answer in ("yes", "no"):
            return answer == "yes"
        if answer == "view":
            if pager.show(input=None, output=output):
                unread = ""
        else:
            report("press v to read all of it (y counts once every line has been on the screen), n not to "
                   "re-run", display.err if display is not None else None)


def ask_to_replace(question: str, *, out: TextIO | None = None) -> bool:
    """/export onto an existing file: only an explicit y replaces it. ``out``: llmrepl's own
    copy of the terminal (fd 1 is the cells' while a session runs)."""
    from prompt_toolkit.output import create_output

    from llmrepl.terminal.gate import ask_key

    keys = {"y": "yes", "Y": "yes", "enter": "no", "c-m": "no", "n": "no", "N": "no", "c-c": "no", "c-d": "no"}
    output = create_output(stdout=out or sys.__stdout__)
    return ask_key(question, keys, input=None, output=output) == "yes"


def own_the_keys() -> None:
    """Interactive llmrepl promises that Ctrl-C interrupts and Ctrl-\\ is the last resort,
    even when it was started from something that ignores those signals (a background job of
    a non-interactive shell inherits SIGINT and SIGQUIT ignored). Batch mode keeps them as
    inherited (nohup semantics)."""
    import signal

    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if hasattr(signal, "SIGQUIT") and signal.getsignal(signal.SIGQUIT) is signal.SIG_IGN:
        signal.signal(signal.SIGQUIT, signal.SIG_DFL)


def _early_prompt(display: TerminalDisplay) -> Callable[[], None] | None:
    """Draw the prompt now, before prompt_toolkit has loaded (~100-150 ms on a slow machine).

    The terminal goes into raw mode at once (no echo, no signals, no CR translation), so what
    the person types meanwhile waits byte for byte and prompt_toolkit reads it as if typed at
    its own prompt (Ctrl-C included). Returns the function that restores the terminal (the UI
    calls it once its first prompt has returned), or None when not drawn (not a terminal).
    """
    import termios

    out = display.out  # llmrepl's own copy: fd 1 is the cells' (execution/fdcapture.py)
    if out is None or not out.isatty() or not sys.stdin.isatty():
        return None
    fd = sys.stdin.fileno()
    try:
        saved = termios.tcgetattr(fd)
        raw = termios.tcgetattr(fd)
        raw[0] &= ~(termios.ICRNL | termios.INLCR | termios.IXON)
        raw[3] &= ~(termios.ICANON | termios.ECHO | termios.ISIG | termios.IEXTEN)
        termios.tcsetattr(fd, termios.TCSANOW, raw)
    except (termios.error, OSError):
        return None
    display.write(EARLY_PROMPT)

    def restore() -> None:
        try:
            termios.tcsetattr(fd, termios.TCSANOW, saved)  # pending input is kept (no flush)
        except (termios.error, OSError):
            pass

    return restore


def run_interactive(session: Session, display: TerminalDisplay, setup: ModelSetup, config: Config,
                    state: Path) -> int:
    """The banner, then the prompt_toolkit UI (or the plain one for ``TERM=dumb``) until Ctrl-D."""
    from llmrepl.redact import safe_url  # the banner shows no user:password@ of the base URL

    if os.environ.get("TERM") == "dumb":  # no escape codes at all: the line-based front end
        from llmrepl.terminal.plain import run_plain

        display.show(f"llmrepl {__version__} · model {session.model.model} · /help for commands · Ctrl-D exits")
        setup.listen(lambda text, level: display.notice(text, level) if level != "info" else display.show(text))
        # lines from llmrepl's own copy of fd 0 (undecodable bytes read as U+FFFD; a cell may close fd 0)
        own = session.executor.terminal
        return run_plain(session, display, stdin=own.stdin if own is not None else None,
                         before_send=lambda: setup.wait(3.0))
    where = f" at {safe_url(config.model.base_url)}" if config.model.base_url else ""
    model_line = f"model {session.model.model}{where}" if setup.configured else "looking for a model..."
    display.show(f"llmrepl {__version__} · {model_line} · /help for commands · Ctrl-D exits")
    early = _early_prompt(display)
    try:
        return _run_ui(session, display, setup, config, state, early)
    finally:
        if early is not None:
            early()  # whatever happened, leave the terminal as we found it


def _run_ui(session: Any, display: TerminalDisplay, setup: ModelSetup, config: Config, state: Path,
            early: Callable[[], None] | None) -> int:
    # session is Any: the warm-up counts on what llmrepl.app built, an OpenAIModel (warm_up)
    # and an on_model_change that also takes the window the server reports
    from llmrepl.terminal.interactive import (
        TerminalUI,  # prompt_toolkit: the slowest import of the start
    )

    def warm_up() -> None:
        """While the person types: what the first answer needs, so it is not paid then."""
        from llmrepl.context.tokens import ApproxCounter
        from llmrepl.terminal.render import warm_up as warm_up_render

        try:
            warm_up_render()
            ApproxCounter().count("warm up the estimator")
        except Exception:
            pass
        setup.wait(10)
        if not setup.configured:
            return
        try:
            session.model.warm_up()
        except Exception:
            pass  # the first request will report it properly
        # the window a configured server runs with was asked for by ModelSetup (model/setup.py)

    ui = TerminalUI(
        session,
        display,
        history_path=state / "history",
        vi_mode=config.repl.vi_mode,
        before_send=lambda: setup.wait(3.0),
        after_first_prompt=warm_up,
        early_prompt=early,
    )
    setup.listen(ui.post)
    return ui.run()


def run_batch(session: Session, display: TerminalDisplay, setup: ModelSetup, reviewer: Reviewer,
              lines: Iterable[str]) -> int:
    """One message or /command per line; 1 when a message failed, so a script can tell (2 when
    no model is configured at all: the README's status for configuration errors)."""
    from llmrepl.engine.commands import is_command

    first_message = True
    failed = unconfigured = False
    if session.journal.error:
        report(session.journal.error, display.err)
        session.journal.error = ""
    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        if first_message:  # a /model or /tokens before the first message sees what the probe found
            setup.wait(5.0)
            if setup.message:
                report(setup.message[0], display.err)
            first_message = False
        # batch lines are messages (a file of questions never runs as code); /ask TEXT too
        asked = line[4:].strip() if line.split(maxsplit=1)[0] == "/ask" else ""
        if is_command(line) and not asked:
            leave = display.command(line, session)
            if session.journal.error:
                report(session.journal.error, display.err)  # a /py cell may have deleted the state folder
                session.journal.error = ""
            if leave:
                break
            continue
        turn = session.step(asked or line, reviewer)
        if session.journal.error:
            report(session.journal.error, display.err)  # once, as the interactive UI does
            session.journal.error = ""
        if turn.error is not None:
            # say it, and go on: later lines may be commands, or the server may be back;
            # the exit status still tells a script that a message failed
            if turn.error.kind == "no_model":  # nothing configured: a configuration error (status 2),
                unconfigured = True            # already explained once by the setup message above
                if not setup.message:
                    report(str(turn.error), display.err)
            else:
                report(str(turn.error), display.err)
            failed = True
    session.journal.append("session_end", status="model_error" if failed else "ok")
    return 2 if unconfigured else 1 if failed else 0
