"""Cells in a Jupyter kernel (``--kernel``): the same surface as ``Executor``, another process.

``KernelExecutor`` sends each cell as an ``execute_request`` and turns the kernel's messages
into the ``ExecResult`` the in-process executor returns: stream text into the same bounded
capture and live sink (so redaction and sanitizing hold), ``display_data`` and
``execute_result`` as ``DisplayData`` (images saved as ``figure-NNN.png``), the ``error``
traceback with its colours stripped. ``input()`` is answered through the stdin channel by
the same ``input_func``; Ctrl-C and a time limit interrupt the kernel. The namespace never
travels: the kernel describes it after every cell and the description rides on the
``execute_reply`` (``kernel_values``); ``namespace`` is that description.

A kernel that dies (a segfault, ``os._exit``, out of memory, a kill from outside) ends the
cell with ``error_type`` "KernelDied" and ``needs_restart``; ``restart()`` gives a fresh one.
The kernel is reached through the seam of ``kernel_seam`` (``kernel_local``: a kernelspec
or a connection file; ``kernel_remote``: a Jupyter Server URL) and started in a thread, so
the prompt is drawn before it is ready. This module runs the exchange on the channels;
``kernel_output.CellOutput`` gathers what a cell's messages say, and
``kernel_summary.NamespaceSummary`` keeps the namespace's description current.
"""

from __future__ import annotations

import queue
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from llmrepl.execution.capture import Capture, FigureLog, OutputSink, safe_str
from llmrepl.execution.kernel_local import connector
from llmrepl.execution.kernel_messages import (
    EXIT_NOTE,
    answer_input,
    close_thread_loop,
    done_count,
    parent_id,
)
from llmrepl.execution.kernel_output import CellOutput
from llmrepl.execution.kernel_seam import KernelClient, KernelDied, KernelHandle, KernelUnavailable
from llmrepl.execution.kernel_summary import NamespaceSummary
from llmrepl.execution.kernel_values import HELPER, KernelNamespace
from llmrepl.execution.namespace import is_user_name
from llmrepl.execution.result import ExecResult

__all__ = ["KernelClient", "KernelDied", "KernelExecutor", "KernelHandle", "KernelUnavailable", "connector"]

POLL = 0.05  # seconds between looks at the stdin channel and the kernel's health while a cell is silent
STOP_GRACE = 10.0  # seconds an interrupted kernel may take to stop before llmrepl gives up waiting
REPLY_WAIT = 30.0  # seconds to wait for a silent request's reply (the namespace summary, a reset)
_DIED = ("the kernel died while cell {n} ran{how}: os._exit, a crash (a segfault), running out of "
         "memory or a kill from outside. llmrepl, the conversation and the journal are intact; the "
         "kernel's variables are gone.")


class KernelExecutor:
    """Runs cells in a Jupyter kernel; ``run(source) -> ExecResult``, never raising."""

    in_process = False  # ``namespace`` holds stand-ins; the values live in the kernel

    def __init__(
        self,
        connect: Callable[[], tuple[KernelClient, KernelHandle]],
        *,
        sink: OutputSink | None = None,
        input_func: Callable[[str], str] | None = None,
        timeout: float = 0,
        figure_dir: str | Any | None = None,
        max_capture_chars: int = 200_000,
        terminal: Any = None,
        name: str = "kernel",
    ) -> None:
        self._connect = connect
        self.sink = sink
        self.input_func = input_func
        self.timeout = timeout
        self.max_capture_chars = max_capture_chars
        self.terminal = terminal  # llmrepl's own fds (the front end reads its input through them)
        self.display_width: int | None = None
        self.cell_count = 0
        self.name = name
        self.client: KernelClient | None = None
        self.handle: KernelHandle | None = None
        self.start_seconds: float | None = None
        self.start_error: str | None = None
        self.needs_restart = False  # the kernel died or stopped answering: restart() before the next cell
        self.death: str = ""  # how it died, for the user
        self._figures = FigureLog(figure_dir)
        self.save_figures = True  # off during a replay: figures are not written again
        self._ready = threading.Event()
        self._lock = threading.Lock()  # one request at a time on the client
        # the shell channel, for a whole request and its reply: a cell, a silent request, a
        # restart, a Tab completion (kernel_complete, on the prompt's completion thread)
        self.shell_lock = threading.Lock()
        self._running = False
        self._summary = NamespaceSummary()  # the kernel's variables as last described
        self._interrupts = 0
        self._limit = 0.0
        self._listener: Callable[[str, str], None] | None = None
        self._news: list[tuple[str, str]] = []
        self._thread: threading.Thread | None = None

    # -- starting ---------------------------------------------------------------------------

    def start(self) -> None:
        """Connect in a background thread (the prompt does not wait); ``listen`` hears when
        it is ready and how long it took, or why it failed."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._start, name="llmrepl-kernel", daemon=True)
            self._thread.start()

    def listen(self, listener: Callable[[str, str], None]) -> None:
        """``listener(text, level)`` hears the kernel's news (ready, failed); now if known."""
        with self._lock:
            self._listener = listener
            news, self._news = self._news, []
        for text, level in news:
            listener(text, level)

    def _say(self, text: str, level: str = "info") -> None:
        with self._lock:
            listener = self._listener
            if listener is None:
                self._news.append((text, level))
        if listener is not None:
            listener(text, level)

    def _start(self) -> None:
        begin = time.perf_counter()
        try:
            self.client, self.handle = self._connect()
            self._install_helper()
        except KernelUnavailable as exc:
            self.start_error = str(exc)
        except Exception as exc:  # whatever a library raised: said, never a traceback
            self.start_error = f"the kernel could not start ({type(exc).__name__}: {safe_str(exc)[:300]})"
        self.start_seconds = time.perf_counter() - begin
        close_thread_loop()  # this thread ends here
        self._ready.set()
        if self.start_error is not None:
            self._say(f"kernel: {self.start_error}; cells cannot run (fix it and restart llmrepl)", "error")
        else:
            self._say(f"kernel {self.description} ready in {self.start_seconds:.1f} s")

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Start if not started; True once connected (False: failed, or ``timeout`` passed)."""
        self.start()
        self._ready.wait(timeout)
        return self._ready.is_set() and self.start_error is None

    @property
    def description(self) -> str:
        handle = self.handle
        return getattr(handle, "description", self.name) if handle is not None else self.name

    def _install_helper(self) -> None:
        """The namespace describer, defined in the kernel outside the user's names."""
        reply = self._silent(HELPER, {})
        self._summary.installed(reply.get("status") == "ok")

    # -- the Executor surface -----------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._running

    @property
    def namespace(self) -> KernelNamespace:
        """The kernel's user variables, described inside it (stand-ins, never the values)."""
        summary = self._summary
        if (summary.stale and summary.usable and not self.needs_restart and self._ready.is_set()
                and self.client is not None and not self._running
                and threading.current_thread() is threading.main_thread()):  # the client's thread
            summary.stale = False
            try:
                summary.take_reply(self._silent("", {"ns": summary.expression()}))
            except (KernelDied, queue.Empty):
                summary.missed = True
        return summary.namespace

    def user_variables(self) -> dict[str, Any]:
        return {name: value for name, value in self.namespace.items() if is_user_name(name, value)}

    def install_streams(self) -> None:
        """Nothing to do: cells write in the kernel's process, never to llmrepl's streams."""

    def capture_fds(self, on: bool = True) -> None:
        """Nothing to do: the kernel's fds are its own; its output arrives as messages."""

    def reset(self) -> None:
        """A fresh namespace in the same kernel (IPython's reset); imports stay loaded."""
        if not self.wait_ready(0) or self.needs_restart:
            return
        try:
            reply = self._silent("get_ipython().reset(new_session=False)", {})
        except (KernelDied, queue.Empty):
            reply = {"status": "error"}
        if reply.get("status") != "ok":
            self.restart()
        self._summary.stale = True

    def restart(self) -> None:
        """A fresh kernel process (empty namespace); raises KernelUnavailable when it cannot."""
        if not self.wait_ready():
            raise KernelUnavailable(self.start_error or "the kernel never started")
        assert self.handle is not None and self.client is not None
        with self.shell_lock:
            self.handle.restart()
            waiter = getattr(self.client, "wait_for_ready", None)
            if callable(waiter):
                try:
                    waiter(timeout=60)
                except RuntimeError as exc:
                    raise KernelUnavailable(f"the restarted kernel does not answer: {exc}") from None
        self.needs_restart = False
        self.death = ""
        self._install_helper()

    def shutdown(self) -> None:
        """End the kernel llmrepl started (an attached one is left running) and the channels."""
        if not self._ready.is_set():
            self._ready.wait(5)
        held = self.shell_lock.acquire(timeout=5)  # a Tab completion ends within seconds
        if self.client is not None:
            try:
                self.client.stop_channels()
            except Exception:
                pass
        if held:
            self.shell_lock.release()
        if self.handle is not None:
            try:
                self.handle.shutdown()
            except Exception:
                pass
        close_thread_loop()

    def run(self, source: str, *, timeout: float | None = None) -> ExecResult:
        """Run one cell in the kernel. Never raises; everything is on the returned record."""
        begin = time.perf_counter()
        self.cell_count += 1
        result = ExecResult(self.cell_count, source)
        limit = self.timeout if timeout is None else timeout
        self._limit = limit or 0
        old_handler = self._catch_sigint()
        self._running = True
        try:
            self._run(source, result, limit or 0)
        except Exception as exc:  # a library or protocol surprise: the cell's record says so
            result.error = f"llmrepl could not talk to the kernel ({type(exc).__name__}: {safe_str(exc)[:300]})\n"
            result.error_type = "KernelError"
        finally:
            self._running = False
            if old_handler is not None:
                signal.signal(signal.SIGINT, old_handler)
        result.duration = time.perf_counter() - begin
        result.done = done_count(source, result)
        return result

    # -- one cell -------------------------------------------------------------------------------

    def _catch_sigint(self) -> Any:
        """Ctrl-C while a cell runs becomes a kernel interrupt (on the main thread only)."""
        self._interrupts = 0
        if threading.current_thread() is not threading.main_thread():
            return None

        def on_sigint(signum: int, frame: Any) -> None:
            self._interrupts += 1

        return signal.signal(signal.SIGINT, on_sigint)

    def _unavailable(self, result: ExecResult, text: str) -> None:
        result.error = text + "\n"
        result.error_type = "KernelDied" if self.needs_restart else "KernelUnavailable"

    def _run(self, source: str, result: ExecResult, limit: float) -> None:
        while not self._ready.wait(POLL):  # still starting: the cell waits (Ctrl-C: it never runs)
            if self._interrupts:
                result.interrupted = True
                self._unavailable(result, "KeyboardInterrupt: the kernel was still starting; the cell did not run")
                return
        if self.start_error is not None:
            self._unavailable(result, f"the kernel is not available: {self.start_error}")
            return
        client, handle = self.client, self.handle
        assert client is not None and handle is not None
        if self.needs_restart or not handle.is_alive():
            self._mark_dead(handle, between=True)
            self._unavailable(result, f"the kernel is not running ({self.death}); it needs a restart")
            return
        with self.shell_lock:
            self._exchange(client, handle, source, result, limit)

    def _exchange(self, client: KernelClient, handle: KernelHandle, source: str, result: ExecResult,
                  limit: float) -> None:
        output = CellOutput(result, self.sink, max_chars=self.max_capture_chars,
                            figures=self._figures if self.save_figures else None, time_limit=self._limit)
        ask = self.input_func is not None
        with self._lock:
            msg_id = client.execute(source, silent=False, store_history=True, user_expressions={},
                                    allow_stdin=ask)
        deadline = time.monotonic() + limit if limit > 0 else None
        interrupted_at: float | None = None
        idle = False
        reply: dict[str, Any] | None = None
        while not idle or reply is None:
            if self._interrupts and interrupted_at is None:
                interrupted_at = self._interrupt(handle)
                result.interrupted = True
            if deadline is not None and interrupted_at is None and time.monotonic() > deadline:
                interrupted_at = self._interrupt(handle)
                result.timed_out = True
            if interrupted_at is not None and (time.monotonic() - interrupted_at > STOP_GRACE or self._interrupts > 1):
                self.needs_restart = True
                self.death = "it did not stop after an interrupt"
                self._unavailable(result, "the kernel did not stop when interrupted (stuck in C code?); "
                                          "it needs a restart")
                break
            if idle:
                try:
                    msg = client.get_shell_msg(timeout=POLL)
                except queue.Empty:
                    if not handle.is_alive():
                        self._died(handle, result)
                        break
                    continue
                if parent_id(msg) == msg_id:
                    reply = msg.get("content") or {}
                continue
            try:
                msg = client.get_iopub_msg(timeout=POLL)
            except queue.Empty:
                if ask and self._answer_stdin(client, handle, output.cap):
                    continue
                if not handle.is_alive():
                    self._died(handle, result)
                    break
                continue
            if parent_id(msg) != msg_id:
                self._stray(msg)
            elif output.take(msg):
                idle = True
        output.close()
        if reply is not None:
            self._finish(reply, result)
        else:
            self._summary.missed = True  # its summary, if it ever comes, is not read

    def _interrupt(self, handle: KernelHandle) -> float:
        try:
            handle.interrupt()
        except Exception:  # the kernel may have just died; the loop notices
            pass
        return time.monotonic()

    def _mark_dead(self, handle: KernelHandle, between: bool = False) -> None:
        status = getattr(handle, "exit_status", None)
        how = status() if callable(status) else ""
        self.needs_restart = True
        self.death = ("it ended between cells" if between else "it died") + (f": {how}" if how else "")

    def _died(self, handle: KernelHandle, result: ExecResult) -> None:
        self._mark_dead(handle)
        status = getattr(handle, "exit_status", None)
        how = status() if callable(status) else ""
        result.error = _DIED.format(n=result.cell, how=f" ({how})" if how else "") + "\n"
        result.error_type = "KernelDied"
        self._summary.namespace = KernelNamespace()

    def _answer_stdin(self, client: KernelClient, handle: KernelHandle, cap: Capture) -> bool:
        """An ``input_request``, asked through ``input_func``; True if one was answered."""
        func = self.input_func
        assert func is not None
        answered = answer_input(client, cap, func)
        if answered == "interrupted":
            self._interrupts += 1
        return answered != ""
    def _stray(self, msg: dict[str, Any]) -> None:
        """Output of an earlier request (a thread a cell left running): shown, not recorded."""
        if (msg.get("msg_type") or "") == "stream" and self.sink is not None:
            content = msg.get("content") or {}
            try:
                self.sink.write("stderr" if content.get("name") == "stderr" else "stdout", str(content.get("text", "")))
            except Exception:
                pass

    def _finish(self, reply: dict[str, Any], result: ExecResult) -> None:
        for payload in reply.get("payload") or []:
            if isinstance(payload, dict) and payload.get("source") == "ask_exit" and result.error is None:
                result.exit_code = None
                result.error_type = "SystemExit"
                result.error = f"SystemExit ({EXIT_NOTE})\n"
        self._summary.take_payload(reply)

    def _silent(self, code: str, expressions: dict[str, str]) -> dict[str, Any]:
        """A request the user does not see (no history, no output); its reply content."""
        client, handle = self.client, self.handle
        assert client is not None and handle is not None
        with self.shell_lock:
            return self._silent_reply(client, handle, code, expressions)

    def _silent_reply(self, client: KernelClient, handle: KernelHandle, code: str,
                      expressions: dict[str, str]) -> dict[str, Any]:
        with self._lock:
            msg_id = client.execute(code, silent=True, store_history=False, user_expressions=expressions,
                                    allow_stdin=False)
        end = time.monotonic() + REPLY_WAIT
        while time.monotonic() < end:
            try:
                msg = client.get_shell_msg(timeout=POLL * 4)
            except queue.Empty:
                if not handle.is_alive():
                    self._mark_dead(handle)
                    raise KernelDied(self.death) from None
                continue
            if parent_id(msg) == msg_id:
                content: dict[str, Any] = msg.get("content") or {}
                return content
        raise queue.Empty
