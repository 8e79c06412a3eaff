"""The model boundary: the ``ModelClient`` protocol, the ``openai`` adapter and a scripted fake.

``OpenAIModel`` is the only code that touches the openai SDK, and imports it lazily (inside
functions) so startup stays fast. ``complete()`` always returns a ``Completion`` or raises a
``ModelError`` worded for the user; Ctrl-C while waiting or streaming returns the text that
had arrived with ``interrupted=True`` (an answer is assembled by ``answer.Answer``).
"""

from __future__ import annotations

import copy
import dataclasses
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Protocol
from urllib.parse import urlsplit

from llmrepl.errors import ModelError
from llmrepl.model.answer import Answer, CallbackError, Completion, ToolCall, Usage, read_usage
from llmrepl.model.error_map import (
    KEY_HINT,
    DeadlineExceeded,
    UnexpectedResponse,
    context_overflow,
    host_of,
    to_model_error,
)
from llmrepl.model.retry import retry_delay, retry_reason
from llmrepl.redact import safe_url

__all__ = [
    "ToolCall",
    "Usage",
    "Completion",
    "ModelClient",
    "OpenAIModel",
    "ScriptedModel",
    "to_model_error",
]

NO_KEY_PLACEHOLDER = "sk-no-key-required"
# request parameters a server may reject; retried once without them, then remembered per model
DROPPABLE = ("max_completion_tokens", "max_tokens", "temperature", "stream_options", "tools")
_UNSUPPORTED_WORDS = re.compile(
    r"(?i)unsupported|not supported|does not support|unknown|unrecognized|not permitted|"
    r"extra (fields|inputs)|not allowed|unexpected (keyword|field|argument)|invalid (parameter|field)|"
    r"requires --jinja"
)


class ModelClient(Protocol):
    model: str

    def complete(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> Completion: ...


_BREAKPOINT = {"mode": "explicit"}


def _with_breakpoint(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages with an explicit cache breakpoint where the stable part ends: the end of
    the system prompt, the one part no trim ever changes (the API's implicit breakpoint
    covers the newest message). Other messages are passed as they are."""
    if not messages or messages[0].get("role") != "system" or not isinstance(messages[0].get("content"), str):
        return messages
    first = {**messages[0], "content": [{"type": "text", "text": messages[0]["content"],
                                         "prompt_cache_breakpoint": dict(_BREAKPOINT)}]}
    return [first, *messages[1:]]


def _has_breakpoint(message: dict[str, Any]) -> bool:
    content = message.get("content")
    return isinstance(content, list) and any(isinstance(p, dict) and "prompt_cache_breakpoint" in p for p in content)


def _describe_body(body: str | bytes) -> str:
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    m = re.search(r"(?is)<title[^>]*>(.*?)</title>", text)
    if m or "<html" in text[:500].lower():
        return f"it sent a web page{': ' + m.group(1).strip() if m else ''}"
    return f"it sent text: {text[:80]!r}"


class OpenAIModel:
    """``ModelClient`` over the openai SDK's Chat Completions API (OpenAI or any compatible server)."""

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        stream: bool = True,
        temperature: float | None = None,
        max_output_tokens: int | None = None,
        timeout: float = 60.0,
        max_retries: int = 2,
        client: Any | None = None,
        cache_breakpoints: str = "auto",
    ) -> None:
        self.model = model
        self.cache_breakpoints = cache_breakpoints  # model.cache_breakpoints: auto | on | off
        # config.py already folded OPENAI_BASE_URL / the api_key_env variable into these:
        # reading the environment again here would bypass model.api_key_env
        self.base_url = base_url or None
        self.stream = stream
        self.temperature = temperature
        self.max_output_tokens = max_output_tokens
        self.timeout = timeout
        self.max_retries = max_retries  # ours (model/retry.py), shown as they happen; the SDK's are off
        # called before each retry's wait with what went wrong and how long the wait is
        self.on_retry: Callable[[str, float], None] | None = None
        self.deadline = max(timeout * 5, 300.0)  # total per answer: the SDK timeout is per read
        self.unsupported: dict[str, set[str]] = {}  # model -> request parameters it rejected
        self._api_key = api_key or None
        self._client = client
        self._built_for: tuple[str | None] | None = None  # (base_url,) our own client was built for
        self._lock = threading.Lock()

    # -- client ----------------------------------------------------------------------
    def warm_up(self) -> None:
        """Import openai and build the client (idempotent, thread-safe; raises ModelError)."""
        self._get_client()

    def _get_client(self) -> Any:
        if not self._stale():
            return self._client
        if not self._api_key and not self.base_url:
            # checked here, not in __init__: a local-server probe may still set base_url
            raise ModelError(
                f"No model configured: no API key and no base URL. {KEY_HINT[0].upper()}"
                f"{KEY_HINT[1:]} for OpenAI, or set model.base_url / --base-url to a local "
                "OpenAI-compatible server such as Ollama (http://localhost:11434/v1).",
                kind="no_model",
            )
        with self._lock:
            if self._stale():
                import openai

                try:
                    self._client = openai.OpenAI(
                        api_key=self._api_key or NO_KEY_PLACEHOLDER,
                        base_url=self.base_url,
                        timeout=self._timeout(),
                        max_retries=0,  # retried in complete(), visibly
                    )
                    self._built_for = (self.base_url,)
                except openai.OpenAIError as e:
                    raise self._error(e) from None
        return self._client

    def _stale(self) -> bool:
        """No client yet, or ours was built for another base_url (set later, e.g. by a probe)."""
        return self._client is None or (
            self._built_for is not None and self._built_for[0] != self.base_url
        )

    def _timeout(self) -> Any:
        import openai

        return openai.Timeout(self.timeout, connect=min(5.0, self.timeout))

    def _error(self, exc: BaseException, answer: Answer | None = None) -> ModelError:
        return to_model_error(
            exc, base_url=self.base_url, model=self.model, partial=answer.text if answer else "",
            api_key=self._api_key, timeout=self.timeout, max_retries=self.max_retries,
            in_stream=bool(answer and answer.streaming),
        )

    def list_models(self) -> list[str]:
        """Model names the server lists (GET /models), sorted."""
        client = self._get_client()
        try:
            return sorted(str(m.id) for m in client.models.list())
        except Exception as e:
            if getattr(e, "status_code", None) == 404:
                url = safe_url(self.base_url or "https://api.openai.com/v1")
                raise ModelError(
                    f"{url}/models was not found: the server may not list its models, or the "
                    "base URL is wrong (it usually ends in /v1).", kind="not_found", status=404,
                ) from None
            raise self._error(e) from None

    # -- completion ------------------------------------------------------------------
    def complete(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> Completion:
        answer = Answer(on_text)
        try:
            client = self._get_client()
            dropped: set[str] = set()
            retries = 0
            while True:
                kwargs = self._request(messages, tools)
                if retries:  # what the SDK would send on its own retries
                    kwargs["extra_headers"] = {"x-stainless-retry-count": str(retries)}
                try:
                    if self.stream:
                        return self._streamed(client, kwargs, answer)
                    return self._whole(client, kwargs, answer)
                except Exception as e:
                    param = None if answer.streaming else self._rejected_param(e, kwargs)
                    if param is not None and param not in dropped:
                        dropped.add(param)
                        self.unsupported.setdefault(self.model, set()).add(param)
                        continue
                    wait = None
                    if not answer.streaming and not answer.parts and retries < self.max_retries:
                        wait = retry_delay(e, retries)
                    if wait is None:
                        raise
                    retries += 1
                    if self.on_retry is not None:
                        self.on_retry(retry_reason(e), wait)
                    time.sleep(wait)  # Ctrl-C here ends the request like Ctrl-C while waiting
        except KeyboardInterrupt:
            return answer.result(interrupted=True, model=self.model)
        except CallbackError as e:
            raise e.original from None
        except ModelError:
            raise
        except Exception as e:
            raise self._error(e, answer) from e

    def _request(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> dict[str, Any]:
        skip = self.unsupported.get(self.model, set())
        kw: dict[str, Any] = {"model": self.model, "messages": messages, "stream": self.stream}
        if tools and "tools" not in skip:
            kw["tools"] = tools
        if self.max_output_tokens is not None:
            if "max_completion_tokens" not in skip:
                kw["max_completion_tokens"] = self.max_output_tokens
            elif "max_tokens" not in skip:  # older servers only know the deprecated name
                kw["max_tokens"] = self.max_output_tokens
        if self.temperature is not None and "temperature" not in skip:
            kw["temperature"] = self.temperature
        if self.stream and "stream_options" not in skip:
            kw["stream_options"] = {"include_usage": True}
        if "prompt_cache_breakpoint" not in skip and self._breakpoints():
            kw["messages"] = _with_breakpoint(messages)
        return kw

    def _breakpoints(self) -> bool:
        """Mark where the stable prefix ends? ``auto``: on OpenAI's own endpoint for the
        GPT-5.6 family and later, the first that take explicit breakpoints."""
        if self.cache_breakpoints != "auto":
            return self.cache_breakpoints == "on"
        host = urlsplit(self.base_url or "https://api.openai.com/v1").hostname or ""
        m = re.match(r"gpt-(\d+)(?:\.(\d+))?", self.model.lower().rsplit("/", 1)[-1])
        return host == "api.openai.com" and m is not None and (int(m[1]), int(m[2] or 0)) >= (5, 6)

    @staticmethod
    def _rejected_param(exc: Exception, kwargs: dict[str, Any]) -> str | None:
        """The request parameter a 400/422 says the model does not support, if any."""
        if getattr(exc, "status_code", None) not in (400, 422):
            return None
        code = getattr(exc, "code", None)
        if code == "context_length_exceeded" or context_overflow(exc)[0]:
            return None  # the window, not a parameter: every server's wording, see error_map
        body = getattr(exc, "body", None)
        text = f"{exc} {body if isinstance(body, (str, dict)) else ''}"
        if code not in ("unsupported_parameter", "unsupported_value") and not _UNSUPPORTED_WORDS.search(text):
            return None
        sent = [k for k in DROPPABLE if k in kwargs]
        if kwargs.get("messages") and _has_breakpoint(kwargs["messages"][0]):
            sent.append("prompt_cache_breakpoint")
        param = str(getattr(exc, "param", None) or "").split(".")[0].split("[")[0]
        if param in sent:
            return param
        hits = [(m.start(), k) for k in sent if (m := re.search(rf"\b{k}\b", text))]
        return min(hits)[1] if hits else None

    def _streamed(self, client: Any, kwargs: dict[str, Any], answer: Answer) -> Completion:
        deadline = time.monotonic() + self.deadline
        stream = client.chat.completions.create(**kwargs, timeout=self._timeout())
        with stream:  # closes the HTTP response on every exit path, Ctrl-C included
            response = getattr(stream, "response", None)
            ctype = str(getattr(response, "headers", {}).get("content-type", "")).lower()
            if response is not None and ("html" in ctype or "json" in ctype):
                return self._not_a_stream(response.read(), answer)
            answer.streaming = True
            for chunk in stream:
                answer.add_chunk(chunk)
                if time.monotonic() > deadline:
                    raise DeadlineExceeded(self.deadline)
        return answer.result(model=self.model)

    def _not_a_stream(self, body: bytes, answer: Answer) -> Completion:
        """A server that ignored ``stream``: accept a whole JSON completion, reject anything else."""
        import json

        from openai.types.chat import ChatCompletion

        try:
            data = json.loads(body)
        except ValueError:
            raise UnexpectedResponse(_describe_body(body)) from None
        if isinstance(data, dict) and data.get("choices"):
            return self._fill(ChatCompletion.construct(**data), answer)  # recursive, lenient
        raise UnexpectedResponse(f"it sent JSON that is not a stream: {body[:120]!r}")

    def _whole(self, client: Any, kwargs: dict[str, Any], answer: Answer) -> Completion:
        return self._fill(client.chat.completions.create(**kwargs, timeout=self._timeout()), answer)

    def _fill(self, resp: Any, answer: Answer) -> Completion:
        if isinstance(resp, (str, bytes)):
            raise UnexpectedResponse(_describe_body(resp))
        choices = getattr(resp, "choices", None)
        if not choices:
            raise UnexpectedResponse("the answer had no choices")
        choice = choices[0]
        msg = getattr(choice, "message", None)
        answer.model = getattr(resp, "model", None)
        answer.usage = read_usage(getattr(resp, "usage", None))
        answer.finish = getattr(choice, "finish_reason", None)
        answer.refusal = getattr(msg, "refusal", None) or ""
        for n, tc in enumerate(getattr(msg, "tool_calls", None) or []):
            fn = getattr(tc, "function", None)
            if fn is not None:  # custom (non-function) tool calls are not ours
                answer.tools.append(ToolCall(tc.id or f"call_{n}", fn.name or "", fn.arguments or ""))
        text = getattr(msg, "content", None) or ""
        if text:
            answer.emit(text)
        return answer.result(model=self.model)

    def __repr__(self) -> str:
        return f"OpenAIModel(model={self.model!r}, host={host_of(self.base_url)!r}, stream={self.stream})"


class ScriptedModel:
    """A ``ModelClient`` that plays queued replies and records every call (for engine tests)."""

    def __init__(self, replies: Iterable[str | Completion | BaseException] = (), *,
                 model: str = "scripted") -> None:
        self.model = model
        self._queue: deque[str | Completion | BaseException] = deque(replies)
        self.calls: list[dict[str, Any]] = []

    def enqueue(self, *replies: str | Completion | BaseException) -> None:
        self._queue.extend(replies)

    @property
    def pending(self) -> int:
        """Replies still queued."""
        return len(self._queue)

    def complete(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> Completion:
        self.calls.append({"messages": copy.deepcopy(messages), "tools": copy.deepcopy(tools),
                           "model": self.model})
        if not self._queue:
            raise AssertionError("ScriptedModel: no reply queued")
        reply = self._queue.popleft()
        if isinstance(reply, BaseException):
            raise reply
        if isinstance(reply, str):
            reply = Completion(text=reply, finish_reason="stop", model=self.model)
        else:
            reply = dataclasses.replace(reply, tool_calls=[dataclasses.replace(t) for t in reply.tool_calls])
        if on_text is not None and reply.text:
            size = max(1, -(-len(reply.text) // 3))  # about three chunks, like a short stream
            for i in range(0, len(reply.text), size):
                on_text(reply.text[i:i + size])
        return reply
