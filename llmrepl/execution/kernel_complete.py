"""Tab completion from a kernel's namespace (``--kernel``): Jupyter's ``complete_request``.

``complete(executor, code)`` asks the kernel of a ``KernelExecutor`` what may end ``code``
(the text before the cursor) and returns the ``complete_reply``'s matches as ``Suggestion``s,
the type of each from ``metadata._jupyter_types_experimental`` when the kernel gives it
(IPython does). It runs on the prompt's completion thread while the main thread owns the
client, so it takes the executor's ``shell_lock`` (a cell, a silent request and a restart
hold it for their whole exchange) and gives up when ``wait`` seconds pass: a kernel that is
busy, slow, dead or restarting gives None, never an error and never a blocked key. Only the
reply whose parent is its own request is read; any other shell message is a late reply to a
request given up on, which nobody waits for, and a late ``complete_reply`` is dropped the
same way by whoever reads it (a cell matches its parent ``msg_id`` too).

Everything in a reply is the kernel's, hence hostile: at most ``MAX_MATCHES`` matches of at
most ``MAX_MATCH_CHARS`` characters, one line each, positions checked; the front end still
writes every text through ``sanitize``. No jupyter import here.
"""

from __future__ import annotations

import inspect
import queue
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from llmrepl.execution.complete import Suggestion
from llmrepl.execution.kernel_messages import parent_id

if TYPE_CHECKING:
    from llmrepl.execution.kernel import KernelExecutor

__all__ = ["COMPLETE_WAIT", "MAX_MATCHES", "MAX_MATCH_CHARS", "complete", "connected", "suggestions"]

COMPLETE_WAIT = 2.0  # seconds Tab waits for the kernel (as in-process: a cold jedi there takes ~0.5 s)
MAX_MATCHES = 200  # suggestions kept from one reply
MAX_MATCH_CHARS = 200  # a longer match is dropped
MAX_CODE = 20_000  # characters before the cursor sent (as in-process completion gives jedi)
_MAX_SCAN = 5_000  # entries of a reply looked at
_MAX_TYPE = 40  # characters of a match's type shown beside it


def connected(executor: KernelExecutor) -> bool:
    """Whether the kernel can be asked now: started, connected, not dead."""
    return executor.wait_ready(0) and not executor.needs_restart and executor.client is not None


def complete(executor: KernelExecutor, code: str, *, wait: float | None = None) -> list[Suggestion] | None:
    """The kernel's suggestions for the end of ``code``; None when it cannot answer within
    ``wait`` seconds (``COMPLETE_WAIT``: busy with a cell or another request, slow, dead, restarting)."""
    deadline = time.monotonic() + (COMPLETE_WAIT if wait is None else wait)
    if not connected(executor) or executor.running:
        return None
    client = executor.client
    ask = getattr(client, "complete", None)
    lost: object = getattr(client, "lost", None)  # a remote kernel the server saw end
    if not callable(ask) or lost:
        return None
    code = _tail(code)
    lock = executor.shell_lock
    if not lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
        return None  # a cell, a silent request or a restart has the shell channel
    try:
        if executor.needs_restart:
            return None
        msg_id = ask(code, len(code))
        read = _reader(client)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                msg = read(timeout=left)
            except queue.Empty:
                continue
            if isinstance(msg, dict) and parent_id(msg) == msg_id:
                return suggestions(msg.get("content"), len(code))
            # else a late reply to a request given up on (an earlier Tab): nobody waits for it
    except Exception:  # a closed channel, a broken connection, a malformed message
        return None
    finally:
        lock.release()


def _tail(code: str) -> str:
    """At most ``MAX_CODE`` characters, from the start of a line."""
    if len(code) <= MAX_CODE:
        return code
    tail = code[-MAX_CODE:]
    cut = tail.find("\n")
    return tail[cut + 1:] if cut >= 0 else tail


def _reader(client: Any) -> Callable[..., Any]:
    """How to read the shell channel from this thread. jupyter_client's blocking client wraps
    ``get_shell_msg`` in an asyncio loop per thread (``jupyter_core.utils.run_sync``), and the
    completion thread is a pool's, with a copy of the main thread's context: its own socket
    channel is read directly instead (synchronous, no loop made or shared)."""
    channel = getattr(client, "shell_channel", None)
    get = getattr(channel, "get_msg", None)
    if callable(get) and not inspect.iscoroutinefunction(get):
        return get
    reader: Callable[..., Any] = client.get_shell_msg
    return reader


def suggestions(content: object, cursor: int) -> list[Suggestion]:
    """A ``complete_reply``'s content as suggestions for code ending at ``cursor``."""
    if not isinstance(content, dict) or content.get("status") != "ok":
        return []
    start = _position(content.get("cursor_start"), cursor)
    metadata = content.get("metadata")
    typed = metadata.get("_jupyter_types_experimental") if isinstance(metadata, dict) else None
    matches = content.get("matches")
    entries: list[Any]
    if isinstance(typed, list) and typed:
        entries = typed[:_MAX_SCAN]
    elif isinstance(matches, list):
        entries = [{"text": m} for m in matches[:_MAX_SCAN]]
    else:
        return []
    found: list[Suggestion] = []
    seen: set[tuple[str, int]] = set()
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        text = entry.get("text")
        if not isinstance(text, str) or not text or len(text) > MAX_MATCH_CHARS or not _one_line(text):
            continue
        begin = _position(entry.get("start"), start)
        if not 0 <= begin <= cursor or (text, begin) in seen:
            continue
        seen.add((text, begin))
        kind = entry.get("type")
        meta = kind[:_MAX_TYPE] if isinstance(kind, str) and kind != "<unknown>" else ""
        found.append(Suggestion(text, begin - cursor, text, meta))
        if len(found) >= MAX_MATCHES:
            break
    return found


def _one_line(text: str) -> bool:
    """Whether ``text`` is one line that can be written, sent and run: no line break of any
    kind (``splitlines``': a form feed, NEL, U+2028... too, which the terminal shows as
    nothing) and no lone surrogate (the menu would show "?" and insert what no cell, journal
    or request can encode)."""
    if text.splitlines() != [text]:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _position(value: object, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default
