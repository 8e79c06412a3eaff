"""The state note and the shape of a request's messages.

The state note tells the model what the namespace holds (``state_note``): whole after a
cut or at the start, else only what changed since the notes still in the history, or
nothing at all when nothing did. It is appended to the last message (``with_state``) and
stays with it, byte for byte, in later requests. Also here: adjacent user messages merged
(``merge_user_runs``), tool calls as text for servers without tools (``without_tools``),
which notes belong to the step before them (``is_step_result``), and the redaction every
message passes on its way out (``redacted``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llmrepl.context.budget import NOTE_PREFIX, dropped_note, is_llmrepl_note
from llmrepl.context.prompts import without_tool_calls
from llmrepl.redact import Redactor

__all__ = [
    "STATE_PREFIX", "WHOLE_PREFIX", "STANDALONE_NOTES", "state_note", "is_step_result", "without_tools",
    "merge_user_runs", "line_key", "without_state", "with_state", "redacted",
]

# The current-state message after the history. A user message, not a system one: chat
# templates of local servers (llama.cpp, vLLM, Ollama) reject or misplace a system message
# that is not first, and a note the model reads last is the one it treats as current.
STATE_PREFIX = f"{NOTE_PREFIX}Session state"
WHOLE_PREFIX = f"{STATE_PREFIX} now (it replaces earlier state notes):"  # a note that says everything


def state_note(digest: str, namespace: Mapping[str, Any], dropped: int,
               known: dict[str, str] | None, *, after_first: bool = False) -> tuple[str, dict[str, str]]:
    """(state text, what the model knows after reading it). With ``known`` (what the state
    notes still in the history told it) only the changes are written: the earlier notes
    stay in the history unchanged, so the cached prefix keeps growing."""
    header, *lines = digest.split("\n")
    now = {line_key(line): line for line in lines if not line.startswith("- ... and ")}
    if known is None:
        left_out = f" {dropped_note(dropped, after_first=after_first)[len(NOTE_PREFIX):]}" if dropped else ""
        return f"{WHOLE_PREFIX}{left_out}\nThe namespace holds:\n{digest}", now
    new = [line for key, line in now.items() if known.get(key) != line]
    # a key still in the digest is not gone ("- modules" is the line of all modules, not a name)
    gone = [k[2:] for k in known
            if k.startswith("- ") and k not in now and k[2:].isidentifier() and k[2:] not in namespace]
    told = {k: v for k, v in known.items() if k[2:] not in gone}
    told.update(now)
    if not new and not gone:
        return "", told   # no note: the last one above still holds
    text = f"{STATE_PREFIX}: changes since the last state note ({header.rstrip(':')}):"
    if new:
        text += "\n" + "\n".join(new)
    if gone:
        text += "\n- no longer defined: " + ", ".join(gone)
    return text, told


STANDALONE_NOTES = (
    f"{NOTE_PREFIX}The user ran code directly",      # session.run_direct (/py)
    f"{NOTE_PREFIX}This session was resumed",        # resume.py
    f"{NOTE_PREFIX}The previous llmrepl process",    # resume.py: a cell died with the process
)


def is_step_result(message: dict[str, Any]) -> bool:
    """A note that belongs to the model step before it (a cell result, a declined cell).

    /py results and resume notes stand on their own: for fitting they are units like a
    message the person typed, so a run of them is not dropped (or kept) all at once."""
    content = message.get("content")
    return (
        is_llmrepl_note(message)
        and isinstance(content, str)
        and not content.startswith(STANDALONE_NOTES)
    )


def without_tools(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A built request for a server that takes no tools: tool calls and results as text."""
    plain = without_tool_calls(messages)
    return plain if plain is messages else merge_user_runs(plain)


def merge_user_runs(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Adjacent user messages become one: some chat templates insist on alternation."""
    merged: list[dict[str, Any]] = []
    for msg in messages:
        prev = merged[-1] if merged else None
        if prev is not None and msg["role"] == "user" and prev["role"] == "user":
            a, b = prev["content"], msg["content"]
            if isinstance(a, list) or isinstance(b, list):  # image parts: merge the part lists
                merged[-1] = {"role": "user", "content": [*_parts(a), *_parts(b, "\n\n")]}
            else:
                merged[-1] = {"role": "user", "content": f"{a}\n\n{b}"}
        else:
            merged.append(msg)
    return merged


def line_key(line: str) -> str:
    """What a digest line is about: "- name" for a name's line, else the line itself."""
    return line.split(":", 1)[0] if line.startswith("- ") and ":" in line else line


def without_state(text: str) -> str:
    """A sent message's text without the current-state part ``build`` appended."""
    return text.split("\n\n" + STATE_PREFIX, 1)[0] if text != STATE_PREFIX else text


def with_state(messages: list[dict[str, Any]], state: str) -> list[dict[str, Any]]:
    """The state appended to the last message when that is the newest user message or a
    tool result (the message count and roles stay as they were), else as its own user
    message. The next request sends that message without it, so the cached prefix runs
    up to the state."""
    last = messages[-1] if messages else None
    if not state:
        return messages
    if last is None or last.get("role") not in ("user", "tool"):
        return [*messages, {"role": "user", "content": state}]
    content = last.get("content")
    if isinstance(content, list):
        merged: Any = [*content, {"type": "text", "text": "\n\n" + state}]
    else:
        merged = f"{content or ''}\n\n{state}"
    return [*messages[:-1], {**last, "content": merged}]


def _parts(content: Any, sep: str = "") -> list[dict[str, Any]]:
    if isinstance(content, list):
        if sep and content and content[0].get("type") == "text":
            return [{**content[0], "text": sep + str(content[0].get("text", ""))}, *content[1:]]
        return list(content)
    return [{"type": "text", "text": sep + str(content or "")}]


def redacted(message: dict[str, Any], redactor: Redactor) -> dict[str, Any]:
    """``message`` as it may leave the machine: its text and tool-call arguments redacted."""
    content, calls = message.get("content"), message.get("tool_calls")
    if isinstance(content, str):
        clean = redactor.redact(content)
        if clean != content:
            message = {**message, "content": clean}
    elif isinstance(content, list):  # text parts redacted; image parts are PNGs llmrepl drew
        message = {**message, "content": [
            {**p, "text": redactor.redact(p["text"])} if isinstance(p.get("text"), str) else p
            for p in content
        ]}
    if calls:
        fixed = []
        for call in calls:
            function = call.get("function") or {}
            args = function.get("arguments")
            scrubbed = redactor.redact(args) if isinstance(args, str) else args
            if scrubbed != args:
                call = {**call, "function": {**function, "arguments": scrubbed}}
            fixed.append(call)
        message = {**message, "tool_calls": fixed}
    return message
