"""One answer from the model as it arrives: the types a ``ModelClient`` returns, and their assembly.

``Completion`` (text, tool calls, finish reason, usage) is what every ``ModelClient``
returns. ``Answer`` builds one from stream chunks (or a whole response), so a failure or
Ctrl-C keeps what had arrived: text deltas in order (lone surrogates replaced), tool-call
fragments merged by index (or by id, for servers that omit it), the refusal, the finish
reason and the usage. ``read_usage`` reads every server's usage shape; a server's odd value
(text, NaN, a float, a negative number) counts as 0, never an error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ToolCall", "Usage", "Completion", "Answer", "CallbackError", "read_usage"]


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str  # raw JSON text as the model sent it (may be broken)


@dataclass
class Usage:
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cached_tokens: int = 0  # of prompt_tokens, served from the server's prompt cache
    cache_write_tokens: int = 0  # of the rest, written to the cache (billed above input on GPT-5.6)


@dataclass
class Completion:
    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None  # stop | tool_calls | length | content_filter | None
    usage: Usage | None = None
    interrupted: bool = False  # Ctrl-C while waiting/streaming; `text` holds what arrived
    model: str | None = None
    refusal: str | None = None  # the model's refusal message, when it sent one

    @property
    def complete(self) -> bool:
        """True when the model finished on its own (not cut, not truncated, not interrupted)."""
        return self.finish_reason in ("stop", "tool_calls") and not self.interrupted


class CallbackError(Exception):
    """An exception raised by the caller's ``on_text``: re-raised as-is, never blamed on the server."""

    def __init__(self, original: Exception) -> None:
        super().__init__(str(original))
        self.original = original


class Answer:
    """Accumulates one answer (streamed or not) so a failure or Ctrl-C can keep what arrived."""

    def __init__(self, on_text: Callable[[str], None] | None) -> None:
        self.on_text = on_text
        self.parts: list[str] = []
        self.tools: list[ToolCall] = []
        self.by_index: dict[int, ToolCall] = {}
        self.finish: str | None = None
        self.usage: Usage | None = None
        self.model: str | None = None
        self.refusal = ""
        self.chunks = 0
        self.streaming = False  # the response had started, failures are mid-answer

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def emit(self, text: str) -> None:
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:  # lone surrogates from a broken server: replace, never crash
                text = text.encode("utf-8", "replace").decode("utf-8")
        self.parts.append(text)
        if self.on_text is not None:
            try:
                self.on_text(text)
            except Exception as e:
                raise CallbackError(e) from e

    def add_chunk(self, chunk: Any) -> None:
        self.chunks += 1
        self.model = getattr(chunk, "model", None) or self.model
        self.usage = read_usage(getattr(chunk, "usage", None)) or self.usage
        for choice in getattr(chunk, "choices", None) or []:  # usage-only final chunk: []
            if getattr(choice, "index", 0) not in (0, None):
                continue
            delta = getattr(choice, "delta", None)
            if delta is not None:
                if getattr(delta, "refusal", None):
                    self.refusal += delta.refusal
                for tc in getattr(delta, "tool_calls", None) or []:
                    self._merge_tool(tc)
                if getattr(delta, "content", None):
                    self.emit(delta.content)
            self.finish = getattr(choice, "finish_reason", None) or self.finish

    def _merge_tool(self, tc: Any) -> None:
        index, tc_id, fn = getattr(tc, "index", None), getattr(tc, "id", None), getattr(tc, "function", None)
        if isinstance(index, int):
            entry = self.by_index.get(index)
            if entry is None:
                entry = self.by_index[index] = ToolCall("", "", "")
                self.tools.append(entry)
        elif not self.tools or (tc_id and self.tools[-1].id and self.tools[-1].id != tc_id):
            entry = ToolCall("", "", "")  # servers that omit `index`: a new id starts a new call
            self.tools.append(entry)
        else:
            entry = self.tools[-1]
        if tc_id and not entry.id:
            entry.id = tc_id
        if fn is not None:
            if getattr(fn, "name", None) and not entry.name:
                entry.name = fn.name
            if getattr(fn, "arguments", None):
                entry.arguments += fn.arguments

    def result(self, *, interrupted: bool = False, model: str | None = None) -> Completion:
        for n, tc in enumerate(self.tools):
            tc.id = tc.id or f"call_{n}"
        return Completion(self.text, list(self.tools), self.finish, self.usage, interrupted,
                          self.model or model, self.refusal or None)


def read_usage(u: Any) -> Usage | None:
    if u is None:
        return None
    # read like the cache counts: a server's NaN, 1e400 or text is 0, never a lost answer
    p, c = _count(u, (("prompt_tokens",),)), _count(u, (("completion_tokens",),))
    cached = min(_cached(u), p)
    written = _count(u, (("prompt_tokens_details", "cache_write_tokens"), ("cache_creation_input_tokens",)))
    return Usage(p, c, _count(u, (("total_tokens",),)) or p + c, cached, min(written, p - cached))


def _field(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def _cached(u: Any) -> int:
    """Prompt tokens the server took from its cache. OpenAI, vLLM and llama.cpp's server
    (server-task.cpp ``usage_json_oaicompat``) send ``prompt_tokens_details.cached_tokens``;
    DeepSeek sends ``prompt_cache_hit_tokens``; Anthropic-shaped usage (LiteLLM passing it
    through) ``cache_read_input_tokens``. Ollama reports none: 0."""
    return _count(u, (("prompt_tokens_details", "cached_tokens"), ("prompt_cache_hit_tokens",),
                      ("cache_read_input_tokens",)))


# No request has a trillion tokens: a larger count is a server's garbage (and a 400-digit
# integer overflows every float it meets).
MAX_COUNT = 10**12


def _count(u: Any, paths: tuple[tuple[str, ...], ...]) -> int:
    """The first positive whole number up to ``MAX_COUNT`` found along ``paths`` (each a chain
    of field names) in a usage object or dict; 0 when none. A server's odd value (text, a
    float, NaN, null, a huge number) is passed over, never an error."""
    for path in paths:
        value = u
        for name in path:
            value = _field(value, name) if value is not None else None
        try:
            if value is not None and not isinstance(value, bool) and 0 < int(value) <= MAX_COUNT:
                return int(value)
        except (TypeError, ValueError, OverflowError):
            continue
    return 0
