"""When to try a model request again, how long to wait first, and what to tell the person.

The openai SDK retries by itself, silently: the screen stays blank through a rate limit.
``OpenAIModel`` builds its client with ``max_retries=0`` and retries here instead, with the
SDK's own rules (408, 409, 429, 5xx, connection errors and timeouts; ``Retry-After`` up to
two minutes, else exponential back-off from 0.5 s to 8 s with jitter; the server's
``x-should-retry`` obeyed), so each wait can be shown ("rate limited, retrying in 3 s") and
Ctrl-C during it stops the request. Never imports openai: its classes are looked up in
``sys.modules`` (an openai exception exists only once the SDK is loaded).
"""

from __future__ import annotations

import random
import sys
from typing import Any

from llmrepl.model.error_map import context_overflow, needs_jinja

__all__ = ["retry_delay", "retry_reason", "MAX_RETRY_AFTER"]

MAX_RETRY_AFTER = 120.0  # a server asking for longer is not waited for (the error says how long)


def _retry_after(headers: Any) -> float | None:
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name) if headers is not None else None
        if value is None:
            continue
        try:
            return float(value) / scale
        except (TypeError, ValueError):
            continue  # an HTTP date: back off instead
    return None


def _backoff(retries: int) -> float:
    return min(0.5 * 2.0 ** min(retries, 10), 8.0) * (1 - 0.25 * random.random())


def retry_delay(exc: BaseException, retries: int) -> float | None:
    """Seconds to wait before trying again after ``exc`` (``retries`` taken so far), or None
    when it is not worth retrying."""
    openai: Any = sys.modules.get("openai")
    if openai is None:
        return None
    if isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError)):
        return _backoff(retries)
    if not isinstance(exc, openai.APIStatusError):
        return None
    headers = getattr(getattr(exc, "response", None), "headers", None)
    after = _retry_after(headers)
    if after is not None and after > MAX_RETRY_AFTER:
        return None
    should = headers.get("x-should-retry") if headers is not None else None
    status = int(exc.status_code)
    if needs_jinja(exc) or context_overflow(exc)[0]:
        return None  # llama.cpp without --jinja, a window too small: the same request fails again
    if should == "false" or getattr(exc, "code", None) == "insufficient_quota":
        return None  # waiting does not bring a quota back
    if should != "true" and status not in (408, 409, 429) and status < 500:
        return None
    return after if after is not None and after > 0 else _backoff(retries)


def retry_reason(exc: BaseException) -> str:
    """What went wrong, in three words: "rate limited", "server error 503", "timed out"."""
    status = getattr(exc, "status_code", None)
    if status == 429:
        return "rate limited"
    if isinstance(status, int):
        return f"server error {status}" if status >= 500 else f"server said {status}"
    if "Timeout" in type(exc).__name__:
        return "no answer in time"
    return "connection failed"
