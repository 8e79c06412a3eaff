"""The ``llmrepl`` command: arguments, configuration, modes, and exit codes.

``--help`` and ``--version`` are answered before anything heavy is imported; prompt_toolkit
is imported only for the interactive mode, openai only when the first request is made (or
in the background while the person types).
"""

from __future__ import annotations

import os
import sys

from llmrepl import __version__

# typing, pathlib and threading stay off the --help / --version path (a few ms each), and
# argparse (with re, gettext, enum: ~10 ms here) off the --version path
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Mapping
    from pathlib import Path
    from typing import Any, TextIO

__all__ = ["main", "build_parser"]

NO_MODEL_HELP = """\
no model is configured, so messages cannot be answered yet. Set one up in any of these ways:
  - OpenAI: export OPENAI_API_KEY=sk-...   (or name another variable with model.api_key_env in {config})
  - any OpenAI-compatible server: llmrepl --base-url http://HOST:PORT/v1   (or model.base_url in the config)
  - a local server, found by itself on its usual port: Ollama (`ollama serve`, 11434), LM Studio (1234),
    llama.cpp (`llama-server`, 8080) or vLLM (8000)
/py CODE and the other commands work meanwhile."""


def _formatter(prog: str) -> argparse.HelpFormatter:
    import argparse

    # argparse would import shutil (and with it bz2/lzma) just to learn the terminal width
    try:
        width = os.get_terminal_size().columns - 2
    except OSError:
        width = 78
    return argparse.HelpFormatter(prog, width=max(width, 40))


def build_parser() -> argparse.ArgumentParser:
    import argparse

    p = argparse.ArgumentParser(
        prog="llmrepl",
        formatter_class=_formatter,
        description="Talk to an LLM that writes Python; you confirm, edit or decline each cell; "
        "it runs here, in one namespace that persists.",
        epilog="Standard input that is not a terminal is read as one message or /command per line.",
    )
    p.add_argument("-c", dest="command", metavar="MESSAGE", help="send one message, then exit (one-shot)")
    p.add_argument("-y", "--yes", action="store_true", help="run generated code without asking")
    p.add_argument("-m", "--model", metavar="NAME", help="model name")
    p.add_argument("--base-url", metavar="URL", help="any OpenAI-compatible endpoint")
    p.add_argument("--config", metavar="PATH", help="config file (default: $XDG_CONFIG_HOME/llmrepl/config.toml)")
    p.add_argument("--resume", nargs="?", const="", metavar="ID", help="continue the last session, or session ID")
    p.add_argument("--export", nargs="+", metavar=("PATH", "ID"),
                   help="write a stored session (the last, or ID) as .py, .ipynb or .md, without opening the REPL")
    p.add_argument("--max-steps", type=_positive_int, metavar="N", help="model calls allowed per message (default 6)")
    p.add_argument("--timeout", type=_non_negative_float, metavar="S", help="time limit for one code cell, 0 = none")
    p.add_argument("--no-stream", action="store_true", help="wait for whole answers instead of streaming")
    p.add_argument("--version", action="version", version=f"llmrepl {__version__}")
    return p


def _positive_int(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


class ModelSetup:
    """Decides where requests go; probes for a local server in the background when needed."""

    def __init__(self, model: Any, *, api_key: str | None, base_url: str | None, explicit_model: bool,
                 config_path: str, on_server: Callable[[str, int | None], None] | None = None) -> None:
        import threading

        self.model = model
        self.api_key = api_key
        self.on_server = on_server  # (model name, context length the server reports) when one is found
        self.explicit_model = explicit_model
        self.config_path = config_path
        self.done = threading.Event()
        self.message: tuple[str, str] | None = None
        self._lock = threading.Lock()
        self._listener: Callable[[str, str], None] | None = None
        self.configured = bool(api_key or base_url)
        if self.configured:
            self.done.set()
        else:
            threading.Thread(target=self._probe, name="llmrepl-probe", daemon=True).start()

    def _probe(self) -> None:
        try:
            from llmrepl.model.probe import find_local_server

            server = find_local_server()
        except Exception:  # a probe must never take the REPL down
            server = None
        if server is not None:
            self.model.base_url = server.base_url
            if not self.explicit_model and server.models:
                self.model.model = server.models[0]
            self.configured = True
            if self.on_server is not None:
                self.on_server(self.model.model, server.context_length)
            msg = (f"no API key set; using {server.name} at {server.base_url} with model {self.model.model}", "info")
        else:
            msg = (NO_MODEL_HELP.format(config=self.config_path), "warning")
        with self._lock:
            self.message = msg
            listener = self._listener
            self.done.set()
        if listener is not None:
            listener(*msg)

    def listen(self, listener: Callable[[str, str], None]) -> None:
        """Call ``listener(text, level)`` with the probe's outcome, now if it is known."""
        with self._lock:
            self._listener = listener
            msg = self.message
        if msg is not None:
            listener(*msg)

    def wait(self, timeout: float = 3.0) -> None:
        self.done.wait(timeout)


class _Sink:
    """Live cell output goes to the display, secrets scrubbed; output arriving between cells
    (from threads a cell left running) is journaled too, since it was shown."""

    def __init__(self, display: Any, redact: Callable[[str], str]) -> None:
        self.display = display
        self.redact = redact
        self.executor: Any = None
        self.journal: Any = None

    def write(self, stream: str, text: str) -> None:
        text = self.redact(text)
        if self.journal is not None and self.executor is not None and not self.executor.running:
            self.journal.append("late_output", stream=stream, text=text, after_cell=self.executor.cell_count)
        self.display.cell_output(stream, text)


def _err(text: str) -> None:
    # the real stderr: once the session starts, sys.stderr is the cell-capture router
    stream = sys.__stderr__ or sys.stderr
    try:
        stream.write(f"llmrepl: {text}\n")
        stream.flush()
    except (OSError, ValueError):
        pass


def main(argv: list[str] | None = None) -> int:
    if (sys.argv[1:] if argv is None else argv) == ["--version"]:
        sys.stdout.write(f"llmrepl {__version__}\n")  # before building the parser: the common case, instant
        return 0
    args = build_parser().parse_args(argv)
    env: Mapping[str, str] = os.environ
    from llmrepl.config import (
        config_warnings,
        default_config_path,
        load_config,
        resolve_api_key,
        state_dir,
    )
    from llmrepl.errors import ConfigError

    if args.export is not None:
        return _export(args.export, state_dir(env))
    overrides = {
        "model.name": args.model,
        "model.base_url": args.base_url,
        "repl.max_steps": args.max_steps,
        "repl.stream": False if args.no_stream else None,
        "exec.timeout": args.timeout,
    }
    try:
        config = load_config(args.config, env=env, overrides=overrides)
    except ConfigError as e:
        _err(str(e))
        return 2
    for warning in config_warnings(config):
        _err(warning)
    interactive = args.command is None and sys.stdin.isatty()
    try:
        return _run(args, config, env, interactive, resolve_api_key(config, env), state_dir(env),
                    str(config.path or default_config_path(env)))
    except KeyboardInterrupt:
        return 130


def _export(spec: list[str], state: Path) -> int:
    from pathlib import Path

    from llmrepl.errors import LLMReplError
    from llmrepl.store.catalogue import find_session, load_session
    from llmrepl.store.export import write_export

    if len(spec) > 2:
        _err("--export takes PATH and optionally a session ID")
        return 2
    try:
        info = find_session(state, spec[1] if len(spec) > 1 else "")
        message = write_export(load_session(info.path), Path(spec[0]))  # expands ~ itself
    except LLMReplError as e:
        _err(str(e))
        return 2
    except OSError as e:
        _err(f"cannot write {spec[0]}: {e.strerror or e}")
        return 2
    sys.stdout.write(message + "\n")
    return 0


def _run(args: argparse.Namespace, config: Any, env: Mapping[str, str], interactive: bool,
         api_key: str | None, state: Path, config_path: str) -> int:
    from llmrepl.engine.session import AutoApprove, NoRun, Session
    from llmrepl.errors import LLMReplError
    from llmrepl.execution.executor import Executor
    from llmrepl.model.client import OpenAIModel
    from llmrepl.redact import Redactor
    from llmrepl.store.journal import Journal, new_session_id
    from llmrepl.terminal.display import TerminalDisplay
    from llmrepl.terminal.render import color_default

    stored = None
    if args.resume is not None:
        from llmrepl.store.catalogue import find_session, load_session

        try:
            stored = load_session(find_session(state, args.resume).path)
        except LLMReplError as e:
            _err(str(e))
            return 2
    try:  # the state folder itself private too (mkdir(parents=True) would leave it to the umask)
        state.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError:
        pass  # the journal reports it once and the session goes on in memory
    sid = stored.info.id if stored is not None else new_session_id()
    journal = Journal(state / "sessions" / f"{sid}.jsonl")
    journal.redact(api_key)
    model = OpenAIModel(
        config.model.name,
        base_url=config.model.base_url,
        api_key=api_key,
        stream=config.repl.stream,
        temperature=config.model.temperature,
        max_output_tokens=config.model.max_output_tokens,
        timeout=config.model.timeout,
    )
    out: TextIO = sys.stdout
    display = TerminalDisplay(out, color=color_default(out, dict(env)), err=sys.stderr)
    redactor = Redactor(api_key)
    sink = _Sink(display, redactor.redact)
    executor = Executor(
        sink=sink,
        timeout=config.exec.timeout,
        figure_dir=state / "sessions" / sid,
        # kept whole up to 1M characters per stream (in _out[N] and the journal); beyond
        # that a head and a tail are kept and the rest counted, so 1 GB printed stays cheap
        max_capture_chars=1_000_000,
    )
    from llmrepl.context.builder import Context
    from llmrepl.context.tokens import TiktokenCounter, context_window_for, encoding_for_model

    def tokenizer_fallback(message: str) -> None:
        display.notice(message, "warning")

    context = Context(
        counter=TiktokenCounter(encoding_for_model(config.model.name, config.model.encoding),
                                on_fallback=tokenizer_fallback),
        context_window=context_window_for(config.model.name, config.model.context_window),
        reserve=config.model.max_output_tokens,
        digest_tokens=config.repl.digest_tokens,
        max_output_chars=config.exec.max_output_chars,
    )
    session = Session(
        model,
        executor,
        context=context,
        display=display,
        journal=journal,
        max_steps=config.repl.max_steps,
        max_output_chars=config.exec.max_output_chars,
        auto_run=(config.repl.auto_run or args.yes) if interactive else args.yes,
        # --yes is explicit consent for every cell; auto-run alone still asks for high-risk cells
        auto_run_risky=config.repl.auto_run_risky or args.yes,
        redactor=redactor,
    )
    session.session_id, session.state_dir = sid, state
    session.input_price, session.output_price = config.model.input_price, config.model.output_price

    def model_changed(name: str, server_reported: int | None = None) -> None:
        """A new model (by /model or found by the probe): its window and its encoding."""
        context.context_window = context_window_for(name, config.model.context_window, server_reported)
        encoding = encoding_for_model(name, config.model.encoding)
        if encoding != getattr(context.counter, "encoding_name", encoding):
            context.counter = TiktokenCounter(encoding, on_fallback=tokenizer_fallback)

    session.on_model_change = model_changed
    from llmrepl.config import ModelConfig

    explicit = bool(args.model or env.get("LLMREPL_MODEL") or config.model.name != ModelConfig().name)
    def server_found(name: str, server_reported: int | None) -> None:
        model_changed(name, server_reported)
        journal.append("model", name=name, base_url=model.base_url, source="local server")

    setup = ModelSetup(model, api_key=api_key, base_url=config.model.base_url, explicit_model=explicit,
                       config_path=config_path, on_server=server_found)
    if config.repl.snapshots:
        from llmrepl.store.snapshots import SnapshotStore

        session.enable_snapshots(SnapshotStore(state / "sessions" / sid / "snapshots"))
    if interactive:
        _own_the_keys()  # before faulthandler chains to SIGQUIT's disposition
    _last_resort(state / "sessions" / sid)
    sink.executor, sink.journal = executor, journal
    executor.install_streams()  # the display keeps the real streams; see Executor.install_streams
    journal.append(
        "session_start", id=sid, version=__version__, model=config.model.name,
        base_url=config.model.base_url, cwd=os.getcwd(), pid=os.getpid(),
        mode="interactive" if interactive else ("one-shot" if args.command is not None else "batch"),
        resumed=stored is not None,
    )
    if stored is None:
        from llmrepl.store.catalogue import previous_crash

        crash = previous_crash(state, sid)
        if crash is not None:
            display.notice(
                f"the previous session ({crash[0]}) ended while cell {crash[1]} was running (os._exit, a "
                f"crash, or a kill): `llmrepl --resume {crash[0]}` brings its conversation back", "warning")
    try:
        if stored is not None:
            from llmrepl.engine.resume import resume

            resume(session, stored, display, confirm=_resume_confirm(interactive, args.yes))
        if interactive:
            return _interactive(session, display, setup, config, state)
        reviewer = AutoApprove() if args.yes else NoRun()
        lines = [args.command] if args.command is not None else sys.stdin
        return _batch(session, display, setup, reviewer, lines)
    finally:
        journal.close()


_crash_log: Any = None  # kept open for faulthandler for the life of the process


def _last_resort(folder: Path) -> None:
    """A segfault, or Ctrl-\\ (SIGQUIT) on a cell stuck in C code that ignores Ctrl-C, dumps
    every thread's stack to <session>/crash.log and ends the process; the journal already
    holds the session, so --resume brings it back."""
    global _crash_log
    import faulthandler
    import signal

    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(folder / "crash.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
        _crash_log = os.fdopen(fd, "a", encoding="utf-8")
        faulthandler.enable(file=_crash_log, all_threads=True)
        if hasattr(signal, "SIGQUIT"):
            # the current thread only: walking other threads from a signal handler can crash
            faulthandler.register(signal.SIGQUIT, file=_crash_log, all_threads=False, chain=True)
    except (OSError, ValueError, RuntimeError):
        pass  # an unusable state folder: the journal says so once


def _resume_confirm(interactive: bool, yes: bool) -> Callable[[str], bool]:
    """How resume asks before re-running stored cells: --yes skips it; batch never re-runs without it."""
    if yes:
        return lambda question: True
    if not interactive:
        return lambda question: False

    def ask(question: str) -> bool:
        from llmrepl.terminal.interactive import ask_yes_no

        return ask_yes_no(question)

    return ask


_EARLY_PROMPT = "llm> "  # the same text as ui.PROMPT (a test checks it)


def _early_prompt(display: Any) -> Callable[[], None] | None:
    """Draw the prompt now, before prompt_toolkit has loaded (~100-150 ms on a slow machine).

    The terminal goes into raw mode at once (no echo, no signals, no CR translation), so what
    the person types meanwhile waits byte for byte and prompt_toolkit reads it as if typed at
    its own prompt (Ctrl-C included). Returns the function that restores the terminal (the UI
    calls it once its first prompt has returned), or None when not drawn (not a terminal).
    """
    import termios

    out = sys.__stdout__
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
    display.write(_EARLY_PROMPT)

    def restore() -> None:
        try:
            termios.tcsetattr(fd, termios.TCSANOW, saved)  # pending input is kept (no flush)
        except (termios.error, OSError):
            pass

    return restore


def _own_the_keys() -> None:
    """Interactive llmrepl promises that Ctrl-C interrupts and Ctrl-\\ is the last resort,
    even when it was started from something that ignores those signals (a background job of
    a non-interactive shell inherits SIGINT and SIGQUIT ignored). Batch mode keeps them as
    inherited (nohup semantics)."""
    import signal

    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if hasattr(signal, "SIGQUIT") and signal.getsignal(signal.SIGQUIT) is signal.SIG_IGN:
        signal.signal(signal.SIGQUIT, signal.SIG_DFL)


def _interactive(session: Any, display: Any, setup: ModelSetup, config: Any, state: Path) -> int:
    if os.environ.get("TERM") == "dumb":  # no escape codes at all: the line-based front end
        from llmrepl.terminal.plain import run_plain

        display.show(f"llmrepl {__version__} · model {session.model.model} · /help for commands · Ctrl-D exits")
        setup.listen(lambda text, level: display.notice(text, level) if level != "info" else display.show(text))
        return run_plain(session, display, before_send=lambda: setup.wait(3.0))
    where = f" at {config.model.base_url}" if config.model.base_url else ""
    model_line = f"model {session.model.model}{where}" if setup.configured else "looking for a model..."
    display.show(f"llmrepl {__version__} · {model_line} · /help for commands · Ctrl-D exits")
    early = _early_prompt(display)
    try:
        return _run_ui(session, display, setup, config, state, early)
    finally:
        if early is not None:
            early()  # whatever happened, leave the terminal as we found it


def _run_ui(session: Any, display: Any, setup: ModelSetup, config: Any, state: Path,
            early: Callable[[], None] | None) -> int:
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
        base_url = config.model.base_url
        if base_url and not config.model.context_window and session.on_model_change is not None:
            from llmrepl.model.probe import server_context_length

            reported = server_context_length(base_url, api_key=setup.api_key)
            if reported:
                session.on_model_change(session.model.model, reported)

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


def _batch(session: Any, display: Any, setup: ModelSetup, reviewer: Any, lines: Any) -> int:
    from llmrepl.engine.commands import is_command

    first_message = True
    failed = False
    if session.journal.error:
        _err(session.journal.error)
        session.journal.error = ""
    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        if is_command(line):
            if display.command(line, session):
                break
            continue
        if first_message:
            setup.wait(5.0)
            if setup.message:
                _err(setup.message[0])
            first_message = False
        turn = session.step(line, reviewer)
        if session.journal.error:
            _err(session.journal.error)  # once, as the interactive UI does
            session.journal.error = ""
        if turn.error is not None:
            # say it, and go on: later lines may be commands, or the server may be back;
            # the exit status still tells a script that a message failed
            _err(str(turn.error))
            failed = True
    session.journal.append("session_end", status="model_error" if failed else "ok")
    return 1 if failed else 0
