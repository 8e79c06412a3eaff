"""Which description of a kernel's variables llmrepl holds, and when it must ask again.

The kernel describes its namespace (``kernel_values.HELPER``) on every ``execute_reply``, as
a JSON summary numbered ``seq`` or as ``"=N"`` (unchanged since summary N). ``NamespaceSummary``
keeps the newest one it could read: an ``"=N"`` counts only when N is the summary held and
none was lost since; a lost or unreadable answer makes the next request ask for the whole
summary (``FRESH``), and a reply without one leaves it ``stale``: ``KernelExecutor`` asks
with a silent request when the namespace is next read.
"""

from __future__ import annotations

import ast
from typing import Any

from llmrepl.execution.kernel_values import EXPRESSION, FRESH, KernelNamespace

__all__ = ["NamespaceSummary"]


class NamespaceSummary:
    """The kernel's user variables as last described (``namespace``), and whether that is current."""

    def __init__(self) -> None:
        self.namespace = KernelNamespace()
        self.stale = False  # the summary must be asked for before it is read
        self.usable = True  # the describer is installed in the kernel (else never asked)
        self.missed = False  # a summary answer was lost: the next one must be whole

    def installed(self, ok: bool) -> None:
        """The describer was defined in a fresh kernel (``ok``: it worked): nothing is held."""
        self.usable = ok
        self.missed = False
        self.namespace = KernelNamespace()
        self.stale = True

    def expression(self) -> str:
        """The summary's user expression: the whole summary after one was missed."""
        return FRESH if self.missed else EXPRESSION

    def take_payload(self, reply: dict[str, Any]) -> None:
        """The summary an ``execute_reply`` carries as a payload; none: ask when read."""
        for payload in reply.get("payload") or []:
            if isinstance(payload, dict) and payload.get("source") == "llmrepl_namespace":
                self.take_text(payload.get("data"))
                break
        else:
            self.stale = True  # no summary came with it: asked for when the namespace is read

    def take_reply(self, reply: dict[str, Any]) -> None:
        """The summary a silent request asked for as the user expression ``ns``."""
        expr = (reply.get("user_expressions") or {}).get("ns")
        if not isinstance(expr, dict) or expr.get("status") != "ok":
            self.stale = self.usable  # a failed cell's reply has none: asked for when read
            return
        text = (expr.get("data") or {}).get("text/plain")
        try:
            value = ast.literal_eval(text) if isinstance(text, str) else None
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            value = None
        self.take_text(value)

    def take_text(self, value: object) -> None:
        """A summary: JSON, or "=N" (unchanged since summary N; good if N is the one we hold)."""
        if isinstance(value, str) and value.startswith("="):
            if value[1:] == str(self.namespace.seq) and not self.missed:
                previous = self.namespace  # a new mapping all the same: a namespace copied
                self.namespace = KernelNamespace(previous)  # before this cell is not this one
                self.namespace.more, self.namespace.seq = previous.more, previous.seq
                self.stale = False
                return
        elif isinstance(value, str):
            try:
                self.namespace = KernelNamespace.from_json(value, self.namespace)
                self.stale = self.missed = False
                return
            except (ValueError, RecursionError, MemoryError):
                pass
        self.missed = self.stale = True  # asked for, whole, when the namespace is read
