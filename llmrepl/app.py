"""Builds a session from a config and runs it: the one place that wires the parts together.

The model client, the executor, the request context, the terminal display, the journal and
the snapshots are made here and handed to :class:`~llmrepl.engine.session.Session`; so are
the local-server probe (:class:`ModelSetup`), the live-output sink and the crash log. Every
heavy import happens inside a function, on the way to the first prompt and no earlier.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from llmrepl import __version__

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path
    from typing import Any, TextIO

    from llmrepl.config import Config
    from llmrepl.model.client import OpenAIModel
    from llmrepl.store.transcript import StoredSession
    from llmrepl.terminal.display import TerminalDisplay

__all__ = ["NO_MODEL_HELP", "ModelSetup", "load_stored", "export_session", "run"]

NO_MODEL_HELP = """\
no model is configured, so messages cannot be answered yet. Set one up in any of these ways:
  - OpenAI: export OPENAI_API_KEY=sk-...   (or name another variable with model.api_key_env in {config})
  - any OpenAI-compatible server: llmrepl --base-url http://HOST:PORT/v1   (or model.base_url in the config)
  - a local server, found by itself on its usual port: Ollama (`ollama serve`, 11434), LM Studio (1234),
    llama.cpp (`llama-server`, 8080) or vLLM (8000)
/py CODE and the other commands work meanwhile."""


class ModelSetup:
    """Decides where requests go; probes for a local server in the background when needed."""

    def __init__(self, model: OpenAIModel, *, api_key: str | None, base_url: str | None, explicit_model: bool,
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

    def __init__(self, display: TerminalDisplay, redact: Callable[[str], str]) -> None:
        self.display = display
        self.redact = redact
        self.executor: Any = None
        self.journal: Any = None

    def write(self, stream: str, text: str) -> None:
        text = self.redact(text)
        if self.journal is not None and self.executor is not None and not self.executor.running:
            self.journal.append("late_output", stream=stream, text=text, after_cell=self.executor.cell_count)
        self.display.cell_output(stream, text)


def load_stored(state: Path, ref: str) -> StoredSession:
    """The stored session ``--resume`` names (the last one for ``""``); raises LLMReplError."""
    from llmrepl.store.catalogue import find_session
    from llmrepl.store.transcript import load_session

    return load_session(find_session(state, ref).path)


def export_session(state: Path, path: str, ref: str) -> str:
    """Write a stored session (the last one for ``""``) to ``path``; returns what was written.

    Raises LLMReplError for an unknown or unreadable session and OSError when ``path``
    cannot be written."""
    from pathlib import Path

    from llmrepl.store.export import write_export

    return write_export(load_stored(state, ref), Path(path))  # expands ~ itself


def run(config: Config, state: Path, env: Mapping[str, str], *, interactive: bool, command: str | None,
        yes: bool, model_flag: bool, stored: StoredSession | None = None) -> int:
    """Build the session and run it in the chosen mode: interactive, or batch (``-c`` or stdin).

    ``model_flag`` says a model was named on the command line, so a local server found by
    the probe does not replace it; ``stored`` is the session to resume, if any.
    """
    from llmrepl.config import ModelConfig, default_config_path, resolve_api_key
    from llmrepl.engine.protocols import AutoApprove, NoRun
    from llmrepl.engine.session import Session
    from llmrepl.execution.executor import Executor
    from llmrepl.model.client import OpenAIModel
    from llmrepl.redact import Redactor
    from llmrepl.store.journal import Journal, new_session_id
    from llmrepl.terminal.display import TerminalDisplay
    from llmrepl.terminal.render import color_default

    api_key = resolve_api_key(config, env)
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
        auto_run=(config.repl.auto_run or yes) if interactive else yes,
        # --yes is explicit consent for every cell; auto-run alone still asks for high-risk cells
        auto_run_risky=config.repl.auto_run_risky or yes,
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
    explicit = bool(model_flag or env.get("LLMREPL_MODEL") or config.model.name != ModelConfig().name)

    def server_found(name: str, server_reported: int | None) -> None:
        model_changed(name, server_reported)
        journal.append("model", name=name, base_url=model.base_url, source="local server")

    setup = ModelSetup(model, api_key=api_key, base_url=config.model.base_url, explicit_model=explicit,
                       config_path=str(config.path or default_config_path(env)), on_server=server_found)
    if config.repl.snapshots:
        from llmrepl.store.snapshots import SnapshotStore

        session.enable_snapshots(SnapshotStore(state / "sessions" / sid / "snapshots"))
    from llmrepl.terminal import startup

    if interactive:
        startup.own_the_keys()  # before faulthandler chains to SIGQUIT's disposition
    _last_resort(state / "sessions" / sid)
    sink.executor, sink.journal = executor, journal
    executor.install_streams()  # the display keeps the real streams; see Executor.install_streams
    journal.append(
        "session_start", id=sid, version=__version__, model=config.model.name,
        base_url=config.model.base_url, cwd=os.getcwd(), pid=os.getpid(),
        mode="interactive" if interactive else ("one-shot" if command is not None else "batch"),
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

            resume(session, stored, display, confirm=startup.resume_confirm(interactive, yes))
        if interactive:
            return startup.run_interactive(session, display, setup, config, state)
        reviewer = AutoApprove() if yes else NoRun()
        return startup.run_batch(session, display, setup, reviewer, [command] if command is not None else sys.stdin)
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
