"""Jupyter messages into llmrepl's records: display bundles, tracebacks, how far a cell got.

Pure functions for ``KernelExecutor`` (``kernel.py``): ``bundle`` turns a ``display_data`` /
``execute_result`` content into a ``DisplayData`` (PNG decoded from base64), ``record_error``
puts an ``error`` content on the ``ExecResult`` (colours stripped, bounded; an interrupt the
time limit caused becomes ``CellTimeout``), ``done_count`` reads ``ExecResult.done`` from the
kernel's traceback (``Cell In[N], line L``: the outermost frame in the cell is its module
code), and ``close_thread_loop`` closes the asyncio loop jupyter_client leaves per thread.
"""

from __future__ import annotations

import base64
import binascii
import queue
import re
import sys
from collections.abc import Callable
from typing import Any

from llmrepl.execution.capture import Capture, FigureLog, safe_str
from llmrepl.execution.outputs import DisplayData, from_bundle
from llmrepl.execution.result import ExecResult
from llmrepl.execution.statements import statement_at, top_level

__all__ = ["EXIT_NOTE", "answer_input", "bundle", "close_thread_loop", "done_count", "parent_id", "record_error",
           "show_display"]

MAX_ITEMS = 1000  # display items kept per cell, as in-process

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")
_CELL_LINE = re.compile(r"Cell In\[(\d+)\], line (\d+)")
EXIT_NOTE = "the cell ended; llmrepl keeps running — use /exit or Ctrl-D to leave"


def bundle(content: dict[str, Any], limit: int) -> DisplayData:
    """A display_data or execute_result content as a DisplayData (the PNG as bytes)."""
    raw = content.get("data")
    data = dict(raw) if isinstance(raw, dict) else {}
    png = data.get("image/png")
    if isinstance(png, str):
        try:
            data["image/png"] = base64.b64decode(png, validate=False)
        except (binascii.Error, ValueError):
            del data["image/png"]
    return from_bundle(data, content.get("metadata") or {}, limit=limit)


def show_display(item: DisplayData, cap: Capture, items: list[DisplayData], figures: FigureLog | None) -> None:
    """A display item of the running cell: its image saved as a figure (``figures`` None: a
    replay, not saved again), recorded at its place in the output, shown live."""
    png = item.data.get("image/png")
    if png is not None and figures is not None:
        try:
            item.metadata["filename"] = figures.save_png(png)
        except OSError as exc:
            note = f"the image could not be saved ({type(exc).__name__}: {safe_str(exc)[:200]})"
            item.metadata.setdefault("notes", []).append(note)
            item.text += f"\n[llmrepl: {note}]"
    item.at = cap.chars
    if len(items) < MAX_ITEMS:
        items.append(item)
    show = getattr(cap.sink, "display", None) if cap.sink is not None else None
    if show is not None:
        try:
            show(item)
        except Exception as exc:
            cap.sink = None
            cap.sink_error = f"live output stopped ({type(exc).__name__}); the rest was captured"


def answer_input(client: Any, cap: Capture, func: Callable[[str], str]) -> str:
    """An ``input_request`` waiting on the stdin channel, asked through ``func`` (the front
    end's question) and answered; its prompt and answer join the cell's output as
    in-process (a password's answer never). Returns "" (none waiting), "answered" or
    "interrupted" (Ctrl-C at the question: the kernel is to be interrupted)."""
    try:
        msg = client.get_stdin_msg(timeout=0)
    except queue.Empty:
        return ""
    if (msg.get("msg_type") or msg.get("header", {}).get("msg_type")) != "input_request":
        return "answered"
    content = msg.get("content") or {}
    prompt = str(content.get("prompt", ""))
    password = bool(content.get("password"))
    outcome = "answered"
    try:
        answer = func(prompt)
    except EOFError:
        answer = "\x04"  # ipykernel raises EOFError in the cell for this answer
    except KeyboardInterrupt:
        answer, outcome = "", "interrupted"
    client.input(answer)
    if password:
        cap.write("stdout", f"{prompt}\n", echo=False)
    elif answer != "\x04":
        cap.write("stdout", f"{prompt}{answer}\n", echo=False)
    return outcome


def record_error(content: dict[str, Any], result: ExecResult, limit: int, time_limit: float) -> None:
    """An error message's content on ``result``: the traceback, colours stripped, bounded."""
    name = str(content.get("ename") or "Error")
    lines = content.get("traceback")
    text = _ANSI.sub("", "\n".join(str(x) for x in lines)) if isinstance(lines, list) and lines else ""
    if not text:
        text = f"{name}: {content.get('evalue', '')}"
    if len(text) > limit:
        keep = limit
        text = text[: keep * 4 // 5] + f"\n[... {len(text) - keep:,} characters omitted ...]\n" + text[-keep // 5:]
    result.error_type = name
    result.error = text.rstrip("\n") + "\n"
    if name == "KeyboardInterrupt":
        if result.timed_out:
            result.error_type = "CellTimeout"
            result.error += (f"CellTimeout: the cell ran longer than {time_limit:g} s and was stopped "
                             "(the namespace is intact; raise --timeout or exec.timeout to allow more)\n")
        else:
            result.interrupted = True
    elif name == "SystemExit":
        result.error = f"SystemExit: {content.get('evalue', '')} ({EXIT_NOTE})\n"


def close_thread_loop() -> None:
    """jupyter_client runs its coroutines on an asyncio loop per thread that it never closes
    (its sockets would be reported unclosed); close this thread's, once done with it."""
    utils = sys.modules.get("jupyter_core.utils")
    var = getattr(utils, "_loop", None)
    loop = var.get() if var is not None else None
    if loop is not None and not loop.is_running() and not loop.is_closed():
        loop.close()


def parent_id(msg: dict[str, Any]) -> str | None:
    parent = msg.get("parent_header") or {}
    value = parent.get("msg_id") if isinstance(parent, dict) else None
    return value if isinstance(value, str) else None


def done_count(source: str, result: ExecResult) -> int | None:
    """How many top-level statements completed (spec14 §1), from the kernel's traceback."""
    if result.error is None:
        return len(top_level(source))
    if result.error_type == "SyntaxError":
        return 0
    if result.error_type == "KernelUnavailable":
        return 0  # it never ran
    if result.error_type in ("KernelDied", "KernelError"):
        return None
    match = _CELL_LINE.search(result.error)  # the outermost frame in the cell: its module code
    if match is None:
        return None
    return statement_at(source, int(match.group(2)))
