"""Builds a session from a config and runs it: the one place that wires the parts together.

The model client, the executor, the request context, the terminal display, the journal and
the snapshots are made here and handed to :class:`~llmrepl.engine.session.Session`; so are
the local-server probe (:class:`~llmrepl.model.setup.ModelSetup`), the live-output sink and
the crash log. Every
heavy import happens inside a function, on the way to the first prompt and no earlier.
"""

from __future__ import annotations

import os
import sys
import threading
import weakref
from dataclasses import replace
from typing import TYPE_CHECKING

from llmrepl import __version__
from llmrepl.model.setup import NO_MODEL_HELP, ModelSetup

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path
    from typing import Any, TextIO

    from llmrepl.config import Config
    from llmrepl.execution.outputs import DisplayData
    from llmrepl.redact import Redactor
    from llmrepl.store.transcript import StoredSession
    from llmrepl.terminal.display import TerminalDisplay

__all__ = ["NO_MODEL_HELP", "ModelSetup", "load_stored", "export_session", "run"]

_sinks: weakref.WeakSet[_Sink] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """A thread that held a sink's lock at the fork does not exist in the child."""
    for sink in list(_sinks):
        sink._lock = threading.RLock()


os.register_at_fork(after_in_child=_after_fork_in_child)


class _Sink:
    """Live cell output goes to the display, secrets scrubbed; output arriving between cells
    (from threads a cell left running) is journaled too, since it was shown.

    A write that ends with what may be the start of the key is held back until the next
    write or the cell's end (``flush``), so a key printed in pieces is shown redacted."""

    def __init__(self, display: TerminalDisplay, redactor: Redactor) -> None:
        self.screen = display  # not ``display``: that is the method the executor calls for items
        self.redactor = redactor
        self.executor: Any = None
        self.journal: Any = None
        self._held: dict[str, str] = {}  # stream -> the held-back end of its output
        # the fd reader thread writes here while the cell's print does: one at a time, or a key
        # printed in two pieces (one from each) could pass the hold-back unredacted
        self._lock = threading.RLock()
        _sinks.add(self)

    def write(self, stream: str, text: str) -> None:
        with self._lock:
            late = self.journal is not None and self.executor is not None and not self.executor.running
            if not late:
                text = self._held.pop(stream, "") + text
                cut = self.redactor.open_tail(text)
                if cut < len(text):
                    text, self._held[stream] = text[:cut], text[cut:]
            text = self.redactor.redact(text)
            if late:
                self.journal.append("late_output", stream=stream, text=text, after_cell=self.executor.cell_count)
            if text:
                self.screen.cell_output(stream, text)

    def flush(self) -> None:
        """The cell ended: show what was held back (it is not the key: that never came)."""
        with self._lock:
            held, self._held = self._held, {}
            for stream, text in held.items():
                self.screen.cell_output(stream, self.redactor.redact(text))

    def display(self, item: DisplayData) -> None:
        """A display item (``display()``, a figure): shown, in order with the text, its text
        fields redacted; between cells (a thread's) journaled as late output, as text is."""
        self.flush()  # text held back before it comes first
        r = self.redactor.redact
        data = {mime: r(v) if isinstance(v, str) else v for mime, v in item.data.items()}
        notes = item.metadata.get("notes")
        metadata = dict(item.metadata, notes=[r(str(n)) for n in notes]) if notes else item.metadata
        item = replace(item, data=data, metadata=metadata, text=r(item.text),
                       screen=None if item.screen is None else r(item.screen))
        if self.journal is not None and self.executor is not None and not self.executor.running:
            self.journal.append("late_output", stream="stdout", text=item.text + "\n",
                                after_cell=self.executor.cell_count)
        self.screen.cell_display(item)


def load_stored(state: Path, ref: str) -> StoredSession:
    """The stored session ``--resume`` names (the last one for ``""``); raises LLMReplError."""
    from llmrepl.store.catalogue import find_session
    from llmrepl.store.transcript import load_session

    return load_session(find_session(state, ref).path)


def export_session(state: Path, path: str, ref: str, *, replace: bool = False,
                   keep_failed: bool = False) -> tuple[str, str | None]:
    """Write a stored session (the last one for ``""``) to ``path``: what was written, and a
    warning naming the journal lines skipped (or None). An existing ``path`` is replaced only
    with ``replace``; ``keep_failed`` keeps failed cells whole (``--keep-failed``).

    Raises LLMReplError for an unknown or unreadable session or an existing ``path``, and
    OSError when ``path`` cannot be written."""
    from pathlib import Path

    from llmrepl.store.export import write_export

    stored = load_stored(state, ref)
    return (write_export(stored, Path(path), replace=replace, keep_failed=keep_failed),  # expands ~ itself
            stored.info.skipped_warning())


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
    from llmrepl.execution.guards import TerminalStreams
    from llmrepl.execution.process import exit_now, wait_for_threads
    from llmrepl.model.client import OpenAIModel
    from llmrepl.redact import Redactor, safe_url
    from llmrepl.store.fileio import private_dirs
    from llmrepl.store.journal import Journal, new_session_id
    from llmrepl.terminal.display import TerminalDisplay
    from llmrepl.terminal.render import color_default

    api_key = resolve_api_key(config, env)
    try:  # the state folder and any folder made above it 0700, whatever the umask (it may be a link you made)
        private_dirs(state, top=state)
    except OSError:
        pass  # the journal reports it once and the session goes on in memory
    sid = stored.info.id if stored is not None else new_session_id()
    journal = Journal(state / "sessions" / f"{sid}.jsonl")
    if journal.busy:
        # One process owns a session: a second one would interleave its records (two cell 2s).
        # Refused rather than continued as a copy, which would fork one conversation in two.
        from llmrepl.terminal.startup import report

        pid = f" (pid {stored.info.pid})" if stored is not None and stored.info.pid else ""
        report(f"session {sid} is open in another llmrepl process{pid}: continue it there, or quit it "
               "first and resume again; nothing was changed")
        return 2
    redactor = Redactor.for_model(api_key, config.model.base_url)  # the key and the base URL's credentials
    if config.exec.kernel:  # a Jupyter Server URL's token is a secret too
        redactor = Redactor(*redactor.secrets, *_kernel_secrets(config.exec.kernel, env))
    journal.redact(*redactor.secrets)
    model = OpenAIModel(
        config.model.name,
        base_url=config.model.base_url,
        api_key=api_key,
        stream=config.repl.stream,
        temperature=config.model.temperature,
        max_output_tokens=config.model.max_output_tokens,
        timeout=config.model.timeout,
        cache_breakpoints=config.model.cache_breakpoints,
    )
    # llmrepl's own copies of fds 0/1/2: a cell that closes or redirects them (or sys.__stdout__)
    # cannot silence llmrepl or eat its batch input; the executor puts them back after each cell
    terminal = TerminalStreams(batch_input=not interactive and command is None)
    out: TextIO = terminal.stdout or sys.stdout
    display = TerminalDisplay(out, color=color_default(out, dict(env)), err=terminal.stderr or sys.stderr)
    model.on_retry = display.retrying  # "rate limited, retrying in 3 s" instead of a silent wait
    if out.isatty() and config.repl.inline_images != "off":  # a pipe gets the saved paths
        from llmrepl.terminal.images import TerminalQuery, choose_protocol

        ask = TerminalQuery(terminal.stdin.fileno(), out.fileno()) if terminal.stdin is not None else None
        display.images = choose_protocol(env, config.repl.inline_images, query=ask)
    sink = _Sink(display, redactor)
    executor: Any
    if config.exec.kernel or config.exec.sandbox:  # cells run in a Jupyter kernel, started in the background
        from llmrepl.execution.kernel import KernelExecutor, connector

        if config.exec.sandbox:  # inside bubblewrap (never in-process); the API key's variable is not passed in
            from llmrepl.execution.sandbox import sandboxed

            connect = sandboxed(config.exec.kernel or "python3", hide=(config.model.api_key_env,))
        else:
            connect = connector(config.exec.kernel)
        executor = KernelExecutor(connect, sink=sink, timeout=config.exec.timeout,
                                  figure_dir=state / "sessions" / sid, max_capture_chars=1_000_000,
                                  terminal=terminal)
        executor.start()
    else:
        executor = Executor(
            sink=sink,
            timeout=config.exec.timeout,
            figure_dir=state / "sessions" / sid,
            # kept whole up to 1M characters per stream (in _out[N] and the journal); beyond
            # that a head and a tail are kept and the rest counted, so 1 GB printed stays cheap
            max_capture_chars=1_000_000,
            terminal=terminal,
        )
    if out.isatty():  # tables on screen fit the terminal; the model's copy never depends on it
        try:
            executor.display_width = os.get_terminal_size(out.fileno()).columns
        except OSError:
            pass
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
        send_images=config.repl.send_images,
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
        if not config.model.context_window:  # a small window a server reports leaves room for history
            from llmrepl.engine.turn import fit_answer_to_window

            fit_answer_to_window(context, model)
        encoding = encoding_for_model(name, config.model.encoding)
        if encoding != getattr(context.counter, "encoding_name", encoding):
            context.counter = TiktokenCounter(encoding, on_fallback=tokenizer_fallback)

    session.on_model_change = model_changed
    explicit = bool(model_flag or env.get("LLMREPL_MODEL") or config.model.name != ModelConfig().name)

    def server_found(name: str, server_reported: int | None) -> None:
        model_changed(name, server_reported)
        journal.append("model", name=name, base_url=model.base_url, source="local server")

    setup = ModelSetup(model, api_key=api_key, base_url=config.model.base_url, explicit_model=explicit,
                       config_path=str(config.path or default_config_path(env)), on_server=server_found,
                       find_local=config.model.find_local, probe_ports=config.model.probe_ports)
    if config.exec.kernel:  # its values live in the kernel: /undo, resume and restarts replay cells
        executor.listen(setup.post if interactive else lambda text, level: display.notice(text, level))
    elif config.repl.snapshots:
        from llmrepl.store.snapshots import SnapshotStore

        session.enable_snapshots(SnapshotStore(state / "sessions" / sid / "snapshots"))
    from llmrepl.terminal import startup

    if interactive:
        startup.own_the_keys()  # before faulthandler chains to SIGQUIT's disposition
        session.ask = lambda question: startup.ask_to_replace(question, out=out)  # llmrepl's own fd 1
    _last_resort(state / "sessions" / sid)
    sink.executor, sink.journal = executor, journal
    executor.install_streams()  # the display keeps the real streams; see Executor.install_streams
    executor.capture_fds()  # what cells' programs and C code write to fds 1/2 is cell output too
    journal.append(
        "session_start", id=sid, version=__version__, model=config.model.name,
        base_url=config.model.base_url and safe_url(config.model.base_url), cwd=os.getcwd(), pid=os.getpid(),
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

            resume(session, stored, display, confirm=startup.resume_confirm(interactive, yes, display=display))
        if interactive:
            status = startup.run_interactive(session, display, setup, config, state)
            if journal.healthy and (journal.substantive or stored is not None):  # something to come back to
                display.notice(f"this session is saved: `llmrepl --resume {sid}` continues it")
        else:
            reviewer = AutoApprove() if yes else NoRun()
            status = startup.run_batch(session, display, setup, reviewer,
                                       [command] if command is not None else terminal.lines())
        lingering = wait_for_threads(2.0)  # Python's own exit would wait for them forever
    finally:
        executor.capture_fds(False)  # the real fds 1/2 back; what was on its way is late output
        if config.exec.kernel:
            executor.shutdown()  # a kernel llmrepl started ends with it (an attached one does not)
        if stored is not None:
            journal.close()
        elif journal.discard_if_empty():  # no message and no cell: nothing to resume
            _remove_unused(state / "sessions" / sid)
    if lingering:
        names = ", ".join(name[:40] for name in lingering[:5]) + (", ..." if len(lingering) > 5 else "")
        display.notice(f"exiting without waiting for threads a cell left running: {names}", "warning")
        exit_now(status, terminal)
    return status


def _remove_unused(folder: Path) -> None:
    """The folder of a session that recorded nothing worth resuming: its empty crash log and
    its first snapshot go, then the folder if nothing else is in it (never through a link)."""
    import shutil

    try:
        crash = folder / "crash.log"
        if crash.is_file() and not crash.is_symlink() and crash.stat().st_size == 0:
            crash.unlink()
        snapshots = folder / "snapshots"
        if snapshots.is_dir() and not snapshots.is_symlink():
            shutil.rmtree(snapshots)
        folder.rmdir()  # only when empty: anything else found there stays
    except OSError:
        pass


def _kernel_secrets(spec: str, env: Mapping[str, str]) -> list[str]:
    """The token (and any user:password) of a Jupyter Server URL given to --kernel, and
    ``JUPYTER_TOKEN``, which such a URL without a token uses."""
    from urllib.parse import parse_qs, urlsplit

    from llmrepl.redact import url_secrets

    if not spec.startswith(("http://", "https://")):
        return []
    query = parse_qs(urlsplit(spec).query)
    token = env.get("JUPYTER_TOKEN")
    return [*url_secrets(spec), *query.get("token", []), *([token] if token else [])]


_crash_log: int | None = None  # the fd faulthandler writes to, open for the life of the process


def _last_resort(folder: Path) -> None:
    """A segfault, or Ctrl-\\ (SIGQUIT) on a cell stuck in C code that ignores Ctrl-C, dumps
    every thread's stack to <session>/crash.log and ends the process; the journal already
    holds the session, so --resume brings it back."""
    global _crash_log
    import faulthandler
    import signal

    try:
        from llmrepl.store.fileio import private_append, private_dirs

        # sessions/<id>/crash.log: 0700 / 0600, never through a symbolic link
        fd = private_append(private_dirs(folder, top=folder.parent.parent) / "crash.log")
        # a bare fd, no file object: a cell that closes it (os.closerange) must not leave a
        # wrapper that fails when it is finalized at exit ("Exception ignored ... EBADF")
        _crash_log = fd
        faulthandler.enable(file=fd, all_threads=True)
        if hasattr(signal, "SIGQUIT"):
            # the current thread only: walking other threads from a signal handler can crash
            faulthandler.register(signal.SIGQUIT, file=fd, all_threads=False, chain=True)
    except (OSError, ValueError, RuntimeError):
        pass  # an unusable state folder: the journal says so once
