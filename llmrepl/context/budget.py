"""Fitting the history into the context window before each request.

The system prompt, the newest user message and the latest cell result always stay; the rest
goes oldest first in whole units, so an assistant message with tool calls never loses its
tool results. The walk starts at the newest message and stops once the budget is full, and
per-message counts come from the counter's cache, so the work per request depends on what
fits, not on how long the session has run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from llmrepl.context.tokens import REPLY_PRIMING, TokenCounter

__all__ = ["NOTE_PREFIX", "is_llmrepl_note", "FitResult", "fit_messages", "dropped_note"]

NOTE_PREFIX = "[llmrepl] "
_NOTE_SLACK = 4  # appending to the system prompt can shift a token or two at the seam

Message = dict[str, Any]


def is_llmrepl_note(message: Message) -> bool:
    """A user message written by llmrepl itself (a cell result, a declined cell)."""
    content = message.get("content")
    return message.get("role") == "user" and isinstance(content, str) and content.startswith(NOTE_PREFIX)


def dropped_note(n: int, *, after_first: bool = False) -> str:
    """What the model is told when messages were left out (``after_first``: between the
    first exchange, which was kept, and the rest)."""
    where = " after the first exchange" if after_first else ""
    return (
        f"{NOTE_PREFIX}{n} earlier message{'s' if n != 1 else ''} of this conversation{where} "
        f"{'were' if n != 1 else 'was'} left out to fit the context window."
    )


@dataclass
class FitResult:
    """The messages to send and what fitting them did.

    ``tokens`` is ``sum(parts.values())`` plus the few tokens the API adds to prime the reply.
    ``fits`` is False when the system prompt and the pinned messages alone exceed the budget:
    then ``messages`` holds just those, and the caller should tell the user instead of sending.
    """

    messages: list[Message]
    dropped: int
    tokens: int
    budget: int
    fits: bool
    parts: dict[str, int] = field(default_factory=dict)  # system, history, newest, note


def _is_call(message: Message) -> bool:
    return message.get("role") == "assistant" and bool(message.get("tool_calls"))


def _step_start(messages: list[Message], end: int, lo: int) -> int:
    """Start of the smallest valid group ending at ``end`` (not before ``lo``): tool results
    with the assistant call they answer, or a result with the assistant code it ran."""
    i = end
    role = messages[i].get("role")
    if role == "tool":
        while i > lo and messages[i - 1].get("role") == "tool":
            i -= 1
        if i > lo and _is_call(messages[i - 1]):
            i -= 1
    elif role == "user" and i > lo:
        prev = messages[i - 1]
        if prev.get("role") == "assistant" and not prev.get("tool_calls"):
            i -= 1
    return i


def fit_messages(
    messages: list[Message],
    *,
    budget: int,
    counter: TokenCounter,
    is_note: Callable[[Message], bool] = is_llmrepl_note,
    note: bool = True,
) -> FitResult:
    """Keep the system prompt (``messages[0]`` when its role is "system"), the newest real
    user message and the latest step; add the newest of everything else that fits, whole
    units at a time; tell the model (in a copy of the system prompt) how many were left out.
    With ``note=False`` the note is only counted (``parts["note"]``): the caller places it
    (the builder puts it after the history, where it keeps the prefix cacheable).
    The inputs are not modified."""
    n = len(messages)
    parts = {"system": 0, "history": 0, "newest": 0, "note": 0}
    if n == 0:
        return FitResult([], 0, 0, budget, budget >= 0, parts)
    count = counter.count_message
    first = 1 if messages[0].get("role") == "system" else 0
    parts["system"] = count(messages[0]) if first else 0
    if n == first:  # nothing but the system prompt (/tokens before the first message)
        tokens = parts["system"] + REPLY_PRIMING
        return FitResult(list(messages), 0, tokens, budget, tokens <= budget, parts)

    # the newest exchange: the last real user message, then its steps
    u: int | None = n - 1
    while u is not None and u >= first:
        m = messages[u]
        if m.get("role") == "user" and not is_note(m):
            break
        u = u - 1 if u > first else None
    lo = first if u is None else u + 1
    t = _step_start(messages, n - 1, lo) if n - 1 >= lo else n  # the latest step: messages[t:]

    pinned = [] if u is None else [messages[u]]
    pinned_tokens = sum(count(m) for m in pinned) + sum(count(m) for m in messages[t:])
    parts["newest"] = pinned_tokens
    avail = budget - REPLY_PRIMING - parts["system"] - pinned_tokens
    if avail < 0:
        kept = messages[:first] + pinned + messages[t:]
        return FitResult(kept, n - len(kept), budget - avail, budget, False, parts)

    reserve = counter.count("\n\n" + dropped_note(n)) + _NOTE_SLACK
    mid_from, old_from = t, u if u is not None else first
    for start, cost, older in _groups(messages, first, u, lo, t, avail, count, is_note):
        is_last = start == first if older else start == lo and (u is None or u == first)
        if cost > avail - (0 if is_last else reserve):
            break  # this unit and everything older stay out
        avail -= cost
        parts["history"] += cost
        if older:
            old_from = start
        else:
            mid_from = start

    if u is None:
        body = messages[mid_from:]
    elif mid_from == lo:
        body = messages[old_from:]
    else:
        body = [messages[u], *messages[mid_from:]]
    dropped = (n - first) - len(body)
    system = list(messages[:first])
    if dropped and not note:
        parts["note"] = counter.count("\n\n" + dropped_note(dropped))
    elif dropped:
        system = _with_note(system, dropped)
        parts["note"] = count(system[-1]) - parts["system"] if first else count(system[0])
    tokens = sum(parts.values()) + REPLY_PRIMING
    # only possible when nothing but the pinned messages fit and the note tipped them over
    return FitResult(system + body, dropped, tokens, budget, tokens <= budget, parts)


def _groups(
    messages: list[Message],
    first: int,
    u: int | None,
    lo: int,
    t: int,
    avail: int,
    count: Callable[[Message], int],
    is_note: Callable[[Message], bool],
) -> Iterator[tuple[int, int, bool]]:
    """Droppable groups, newest first, as (start, tokens, older): the middle steps of
    the newest exchange, then older units, each starting at a real user message. A unit
    longer than the whole remaining budget is reported as soon as that is clear, so one huge
    old unit is never walked to its start."""
    i = t - 1
    while i >= lo:
        s = _step_start(messages, i, lo)
        yield s, sum(count(m) for m in messages[s : i + 1]), False
        i = s - 1
    if u is None:
        return
    i = u - 1
    while i >= first:
        s, cost = i, 0
        while True:
            cost += count(messages[s])
            if s == first or cost > avail:
                break
            m = messages[s]
            if m.get("role") == "user" and not is_note(m):
                break
            s -= 1
        yield s, cost, True
        avail -= cost
        i = s - 1


def _with_note(system: list[Message], dropped: int) -> list[Message]:
    note = dropped_note(dropped)
    if system and isinstance(system[0].get("content"), str):
        return [{**system[0], "content": f"{system[0]['content']}\n\n{note}"}]
    return [*system, {"role": "system", "content": note}]
