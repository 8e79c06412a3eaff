"""One process owns a session: a child a cell forks ends with that cell, and exit does not
wait forever for a thread a cell left running.

A cell that calls ``os.fork()`` makes a second llmrepl: without this, the child would
return from the cell into the REPL, read the same input and write the same journal. The
executor calls :func:`end_forked_child` when a cell ends in a process other than the one it
started in: the child shows its error (if any) as cell output, flushes, and leaves with
``os._exit``. ``multiprocessing`` children never get there (they run their target and leave
through ``os._exit`` themselves), and ``subprocess`` execs at once.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from llmrepl.execution.capture import CaptureRouter
    from llmrepl.execution.executor import ExecResult
    from llmrepl.execution.guards import TerminalStreams

__all__ = ["FORKED_INPUT", "end_forked_child", "exit_now", "exit_status", "lingering_threads", "wait_for_threads"]

FORKED_INPUT = (
    "input() is not available in a process the cell forked: only llmrepl itself reads the terminal"
)
_exit, _getpid = os._exit, os.getpid


def exit_status(error_type: str | None, exit_code: object) -> int:
    """The status a forked child leaves with, as Python's own would: SystemExit's code, 1 for
    an error, 0 when the cell ran to the end."""
    if error_type == "SystemExit":
        if exit_code is None:
            return 0
        return exit_code & 0xFF if isinstance(exit_code, int) else 1
    return 0 if error_type is None else 1


def end_forked_child(result: ExecResult, router: CaptureRouter, streams: TerminalStreams | None) -> NoReturn:
    """End the process a cell forked, at the end of that cell, without returning into the REPL.

    Its error goes to its own terminal the way its output did, live, through the sink (so it
    is redacted and shown like any cell output, and never journaled: a capture is installed
    while it is written). ``streams``: llmrepl's own terminal streams, if any.
    """
    from llmrepl.execution.capture import Capture

    status = exit_status(result.error_type, result.exit_code)
    text = result.error or ""
    if result.error_type == "SystemExit":  # as Python says it: only a code that is not a number
        code = result.exit_code
        text = "" if code is None or isinstance(code, int) else f"{code}\n"
    try:
        router.capture = Capture(0, router.sink)
        flush = getattr(router.sink, "flush", None)
        if callable(flush):  # output a sink held back (as the session does when a cell ends)
            flush()
        if text:
            router.write("stderr", f"[process {_getpid()}, forked by the cell] {text}")
    except BaseException:
        pass
    finally:
        _flush_and_exit(status, streams)


def lingering_threads() -> list[threading.Thread]:
    """Non-daemon threads still running besides this one: Python waits for them at exit."""
    current = threading.current_thread()
    return [t for t in threading.enumerate() if t is not current and not t.daemon and t.is_alive()
            and t is not threading.main_thread()]


def wait_for_threads(limit: float = 2.0) -> list[str]:
    """Join the non-daemon threads cells left running, for at most ``limit`` seconds in all.

    Returns the names of those still running (then the caller exits with ``os._exit``, as
    Python's own exit would wait for them forever). Ctrl-C stops the wait.
    """
    deadline = time.monotonic() + limit
    try:
        for thread in lingering_threads():
            thread.join(max(deadline - time.monotonic(), 0.0))
    except KeyboardInterrupt:
        pass
    return [t.name for t in lingering_threads()]


def exit_now(status: int, streams: TerminalStreams | None) -> NoReturn:
    """End llmrepl with ``status`` although threads are still running: flush what was written
    (the journal is already closed) and leave with ``os._exit``. atexit handlers do not run."""
    _flush_and_exit(status, streams)


def _flush_and_exit(status: int, streams: TerminalStreams | None) -> NoReturn:
    own = (streams.stdout, streams.stderr) if streams is not None else ()
    for stream in (*own, sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except BaseException:
            pass
    _exit(status)
