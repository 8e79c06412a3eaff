"""Turn whatever the openai SDK (or the endpoint behind it) throws into one-line ``ModelError``s.

Never imports openai itself: an openai exception can only exist once the SDK is loaded, so
the classes are looked up in ``sys.modules``. Every message goes through the one redactor
(``llmrepl.redact``: the API key, the base URL's credentials, key-shaped strings), is
stripped of terminal control characters and kept to one line; URLs are shown without their
``user:password@`` part.
"""

from __future__ import annotations

import errno
import json
import re
import sys
from typing import Any
from urllib.parse import urlsplit

from llmrepl.errors import ModelError
from llmrepl.redact import Redactor, safe_url

__all__ = [
    "DeadlineExceeded",
    "context_overflow",
    "stated_context_limit",
    "needs_jinja",
    "UnexpectedResponse",
    "to_model_error",
    "host_of",
]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
KEY_HINT = "set OPENAI_API_KEY (or the variable named by model.api_key_env)"
_TERM_CTRL = re.compile(
    r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])|[\x00-\x1f\x7f\x9b]"
)


class DeadlineExceeded(Exception):
    """The whole answer took longer than the per-answer deadline (a trickling stream)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"answer took longer than {seconds:g} s")
        self.seconds = seconds


class UnexpectedResponse(Exception):
    """The endpoint answered 200 with something that is not a chat completion."""


# What each server says when a request does not fit its context window, and where it states
# the limit. Shapes checked against each server's own words:
# - OpenAI, vLLM (vllm/entrypoints/openai/serving_engine.py), LiteLLM (litellm/exceptions.py,
#   ContextWindowExceededError, which wraps the provider's text): "This model's maximum context
#   length is N tokens"; LiteLLM prefixes "litellm.ContextWindowExceededError" and sends code "400".
# - llama.cpp llama-server (tools/server, ERROR_TYPE_EXCEED_CONTEXT_SIZE) and Ollama when it
#   stops truncating (ollama/ollama#16800 quotes the body): HTTP 400 {"error": {"code": 400,
#   "type": "exceed_context_size_error", "message": "request (2145 tokens) exceeds the available
#   context size (2048 tokens), try increasing it", "n_prompt_tokens": 2145, "n_ctx": 2048}}.
# - LM Studio (lmstudio-ai/lmstudio-bug-tracker#546, #237): 400 {"error": "The number of tokens to
#   keep from the initial prompt is greater than the context length (n_keep: 13055>= n_ctx: 4096)
#   ..."} or "... the model is loaded with context length of only 32768 tokens, which is not enough".
_OVERFLOW_WORDS = re.compile(
    r"context_length_exceeded|context length|context size|context window|contextwindowexceeded"
    r"|exceed_context_size|n_keep\W*\d+\s*>=\s*n_ctx", re.IGNORECASE)
_LIMIT_PATTERNS = (
    re.compile(r"maximum context length is (\d[\d,]*)", re.IGNORECASE),
    re.compile(r"available context size \((\d[\d,]*) tokens?\)", re.IGNORECASE),
    re.compile(r"context length of only (\d[\d,]*)", re.IGNORECASE),
    re.compile(r"\bn_ctx\W{0,4}(\d[\d,]*)", re.IGNORECASE),
    re.compile(r"context window of (\d[\d,]*) tokens", re.IGNORECASE),
    re.compile(r"server's limit: (\d[\d,]*) tokens", re.IGNORECASE),  # our own message, below
)
# llama.cpp without --jinja cannot use tools at all: HTTP 500 "tools param requires --jinja flag"
# (tools/server/utils.hpp, oaicompat_chat_params_parse). Retrying can never help.
_JINJA = re.compile(r"requires --jinja", re.IGNORECASE)


def stated_context_limit(text: str) -> int | None:
    """The context size (tokens) a server states in an overflow message, or None."""
    for pattern in _LIMIT_PATTERNS:
        m = pattern.search(text)
        if m:
            value = int(m.group(1).replace(",", ""))
            if 0 < value <= 100_000_000:
                return value
    return None


def _body_text(exc: BaseException) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if isinstance(body, dict):
        try:
            body = json.dumps(body)
        except (TypeError, ValueError):
            body = str(body)
    return f"{body if isinstance(body, str) else ''} {getattr(exc, 'message', '') or ''}"


def context_overflow(exc: BaseException) -> tuple[bool, int | None]:
    """(the request did not fit the window, the window the server states) for a status error."""
    body = getattr(exc, "body", None)
    limit: int | None = None
    if isinstance(body, dict):
        n_ctx = body.get("n_ctx")
        if isinstance(n_ctx, int) and not isinstance(n_ctx, bool) and n_ctx > 0:
            limit = n_ctx
        if body.get("type") == "exceed_context_size_error":
            return True, limit
    text = _body_text(exc)
    if getattr(exc, "code", None) == "context_length_exceeded" or _OVERFLOW_WORDS.search(text):
        return True, limit or stated_context_limit(text)
    return False, None


def needs_jinja(exc: BaseException) -> bool:
    """llama.cpp's "tools param requires --jinja flag": the server can take no tools."""
    return getattr(exc, "status_code", None) == 500 and bool(_JINJA.search(_body_text(exc)))


def host_of(base_url: str | None) -> str:
    """``http://127.0.0.1:8000/v1`` -> ``127.0.0.1:8000`` (the name people recognise); any
    ``user:password@`` is left out."""
    url = base_url or DEFAULT_BASE_URL
    try:
        netloc = urlsplit(url).netloc
    except ValueError:
        return safe_url(url)
    return netloc.rpartition("@")[2] or safe_url(url)


def _one_line(text: str, limit: int = 240) -> str:
    text = " ".join(_TERM_CTRL.sub(" ", text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _detail(exc: BaseException) -> str:
    """The server's own words: ``error.message`` from the body, else the page title or text."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        msg = body.get("message") or body.get("error")
        if isinstance(msg, dict):
            msg = msg.get("message")
        if isinstance(msg, str) and msg.strip():
            return msg
    if isinstance(body, (str, bytes)):
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        m = re.search(r"(?is)<title[^>]*>(.*?)</title>", text)
        if m:
            return m.group(1)
        return re.sub(r"(?s)<[^>]+>", " ", text)
    msg = getattr(exc, "message", None) or str(exc)
    return re.sub(r"^Error code: \d+( - )?", "", msg)


def _retry_after(exc: BaseException) -> float | None:
    headers = getattr(getattr(exc, "response", None), "headers", None)
    if headers is None:
        return None
    try:
        if headers.get("retry-after-ms"):
            return float(headers["retry-after-ms"]) / 1000
        if headers.get("retry-after"):
            return float(headers["retry-after"])
    except (TypeError, ValueError):  # an HTTP date: the SDK handled it, we just don't quote it
        return None
    return None


def _dropped(exc: BaseException) -> bool:
    """The server was reached and hung up mid-reply (httpx's RemoteProtocolError: "peer closed
    connection without sending complete message body", "Server disconnected ...")."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        text = f"{type(e).__name__} {e}".lower()
        if "remoteprotocolerror" in text or "peer closed connection" in text or "server disconnected" in text:
            return True
        e = e.__cause__ or e.__context__
    return False


def _connect_reason(exc: BaseException, host: str) -> str:
    """Walk the cause chain for the socket-level reason (refused, DNS, TLS, reset)."""
    seen: set[int] = set()
    e: BaseException | None = exc
    texts = []
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, ConnectionRefusedError) or getattr(e, "errno", None) == errno.ECONNREFUSED:
            return "connection refused. Is the server running?"
        texts.append(f"{type(e).__name__} {e}")
        e = e.__cause__ or e.__context__
    blob = " ".join(texts).lower()
    if "refused" in blob:
        return "connection refused. Is the server running?"
    if any(s in blob for s in ("name or service not known", "nodename nor servname", "getaddrinfo",
                               "name resolution", "no address associated")):
        return f"the host name in {host!r} could not be resolved (DNS). Check the base URL and your network."
    if "ssl" in blob or "certificate" in blob:
        return "the TLS handshake failed (certificate or proxy problem). Check the base URL (http vs https)."
    if "unreachable" in blob:
        return "the network is unreachable. Check your connection."
    return "no connection could be made. Check the base URL and your network."


def to_model_error(
    exc: BaseException,
    *,
    base_url: str | None,
    model: str,
    partial: str = "",
    api_key: str | None = None,
    timeout: float | None = None,
    max_retries: int | None = None,
    in_stream: bool = False,
) -> ModelError:
    """Map an SDK/transport/decoding failure to a ``ModelError`` worded for the user.

    ``in_stream`` says the failure came while reading an answer that had started, so
    ``partial`` holds real text and the connection, not the request, broke.
    """
    if isinstance(exc, ModelError):
        return exc
    url = safe_url(base_url or DEFAULT_BASE_URL)
    host = host_of(url)
    red = Redactor.for_model(api_key, base_url).redact

    def clean(text: str, limit: int) -> str:  # redacted before it is cut, so no piece is left
        return _one_line(red(text), limit)
    kept = " The partial answer is kept." if partial else ""
    resend = "send the message again to retry"
    tries = f" after {max_retries + 1} attempts" if max_retries else ""
    openai: Any = sys.modules.get("openai")
    kind, retryable, status = "bad_response", False, None

    def done(message: str) -> ModelError:
        return ModelError(clean(message, 400), kind=kind,
                          retryable=retryable, status=status, partial=partial)

    if isinstance(exc, DeadlineExceeded):
        kind, retryable = "timeout", True
        return done(f"the answer from {host} took longer than the {exc.seconds:g} s limit per answer "
                    f"(5 × model.timeout) and was stopped.{kept} Raise model.timeout in config.toml "
                    f"or {resend}.")
    if isinstance(exc, UnexpectedResponse):
        return done(f"{host} did not answer like an OpenAI-compatible API ({clean(str(exc), 160)}). "
                    f"Check the base URL {url} (it usually ends in /v1).{kept}")
    if isinstance(exc, UnicodeDecodeError):
        retryable = in_stream
        return done(f"{host} sent invalid UTF-8{' mid-answer' if in_stream else ''}.{kept}"
                    + (f" You can {resend}." if in_stream else ""))
    if isinstance(exc, json.JSONDecodeError):
        retryable = in_stream
        if in_stream:
            return done(f"{host} sent a malformed chunk mid-answer (not JSON).{kept} You can {resend}.")
        return done(f"{host} answered with something that is not JSON. Check the base URL {url} "
                    "(it usually ends in /v1).")

    if openai is None or not isinstance(exc, openai.OpenAIError):
        if isinstance(exc, OSError):
            kind, retryable = "connection", True
            return done(f"cannot reach {url}: {clean(str(exc), 120)}.{kept}")
        return done(f"unexpected response from {host}: {type(exc).__name__}: {clean(str(exc), 160)}."
                    f"{kept}")

    if isinstance(exc, openai.APITimeoutError):
        kind, retryable = "timeout", True
        limit = f"{timeout:g} s" if timeout is not None else "the time limit"
        if in_stream:
            return done(f"{host} went silent mid-answer for {limit} (model.timeout).{kept} "
                        f"You can {resend}, or raise model.timeout in config.toml.")
        return done(f"{host} did not answer within {limit}{tries} (model.timeout). Raise "
                    f"model.timeout in config.toml, or {resend}.")
    if isinstance(exc, openai.APIConnectionError):
        kind, retryable = "connection", True
        if in_stream:
            return done(f"the connection to {host} was lost mid-answer.{kept} You can {resend}.")
        if _dropped(exc):  # it answered, then closed the connection before the body was complete
            return done(f"the connection to {host} was dropped before the answer was complete (the "
                        f"server closed it: it may have crashed or restarted).{kept} You can {resend}.")
        return done(f"cannot reach {url}: {_connect_reason(exc, host)}")

    detail = clean(_detail(exc), 200)
    code = getattr(exc, "code", None)
    if isinstance(exc, openai.APIStatusError):
        status = int(exc.status_code)
        # llama.cpp, vLLM and LiteLLM send the status again as "code" (400 or "400")
        label = f"{status}, {code}" if code and str(code) != str(status) else f"{status}"
        if status in (400, 413, 422, 500):
            overflow, stated_limit = context_overflow(exc)
            if overflow:
                kind = "context_length"
                stated = f"the server's limit: {stated_limit} tokens; " if stated_limit else ""
                return done(f"the conversation no longer fits the context window of model '{model}' "
                            f"({stated}{detail}). Drop or shorten older turns, then send the message again.")
        if needs_jinja(exc):
            kind = "no_tools"
            return done(f"{host} cannot take tools: llama.cpp's server needs the --jinja flag for "
                        f"them ({status}: {detail}).")
        if status == 401:
            kind = "auth"
            return done(f"{host} rejected the API key ({label}). Check your API key: {KEY_HINT}.")
        if status == 403:
            kind = "auth"
            return done(f"{host} refused the request ({label}): {detail}. Check that your API key "
                        f"has access to model '{model}': {KEY_HINT}.")
        if status == 404:
            kind = "not_found"
            return done(f"model '{model}' not found at {url}. Check the name with /model, or the "
                        "base URL (it usually ends in /v1).")
        if status == 429:
            kind = "rate_limit"
            if code == "insufficient_quota" or "quota" in detail.lower():
                return done(f"{host} says your quota is used up (429 insufficient_quota): check your "
                            "plan and billing details. Waiting will not help.")
            retryable = True
            wait = _retry_after(exc)
            if wait is not None and wait > 120:
                return done(f"{host} is rate limiting requests (429) and asks to wait {wait:.0f} s. "
                            f"Then {resend}.")
            return done(f"{host} is still rate limiting requests (429){tries}. Wait a moment, then "
                        f"{resend}.")
        if status >= 500:
            kind, retryable = "server", True
            said = f": {detail}" if detail else ""
            return done(f"{host} had a server error ({status}{said}){tries}.{kept} Your message is "
                        f"kept: {resend}.")
        kind, retryable = "bad_request", status in (408, 409)
        return done(f"{host} rejected the request ({label}): {detail}")

    if isinstance(exc, openai.APIError):  # in-band error event in a stream, validation errors
        retryable = True
        return done(f"{host} reported an error{' mid-answer' if in_stream else ''}: {detail}.{kept} "
                    f"You can {resend}.")
    kind = "no_model"  # OpenAIError from client construction (missing credentials, ...)
    return done(f"the OpenAI client could not be set up: {detail}. To configure a model: {KEY_HINT}, "
                "or point model.base_url / --base-url at a local server such as Ollama.")
