"""A scriptable OpenAI-compatible HTTP server on 127.0.0.1 for tests (no internet needed).

Queue one reply or fault per chat-completion request, point the SDK (or ``llmrepl
--base-url``) at ``srv.base_url``, then inspect ``srv.requests``. Streams are written
with hand-made chunked transfer encoding, so a clean end and a dropped connection
(``cut``) look to the client exactly as they would from a real server.

Usage carries ``prompt_tokens_details.cached_tokens`` as OpenAI reports it: the longest
prefix this request shares with an earlier one, counted in whole 128-token blocks past the
first 1,024 (0 below that). Tokens here are 4 characters of the prompt rendered as a chat
template would (tools, then each message's role, content and tool calls, in the order and
key order received). ``measure_usage = True`` reports the rendered prompt's own token count
as ``prompt_tokens``; otherwise a reply's scripted count (10 by default) is kept and the
cached count never exceeds it.

Standalone: ``python tests/fakeserver.py --port 0 --reply "hello"`` prints the base URL.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["FakeOpenAI"]

_AUTO = object()


@dataclass
class _Reply:
    kind: str  # "reply" | "fail" | "raw"
    text: str = ""
    tool_calls: list[tuple[str, str]] = field(default_factory=list)
    finish_reason: Any = _AUTO  # _AUTO: "tool_calls"/"stop"; "" or None-after-explicit: omit
    usage: tuple[int, ...] | None = (10, 5)  # (prompt, completion[, cached[, cache written]])
    chunk_size: int = 8
    delay: float = 0.0  # between stream chunks (once, before answering, without stream)
    before: float = 0.0  # wait before sending anything (slow)
    stall_after: float = 0.0  # go silent this long after the text (stall)
    cut: bool = False  # drop the connection after the text (no finish, no [DONE])
    inband_error: str | None = None  # send an in-band {"error": ...} event after the text
    bad_line: str | None = None  # send this raw line after the text (malformed SSE)
    done: bool = True  # send "data: [DONE]"
    status: int = 200
    body: bytes | None = None
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


class FakeOpenAI:
    """The server; ``with FakeOpenAI() as srv:`` or ``srv.start()`` ... ``srv.stop()``."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.requests: list[dict[str, Any]] = []  # JSON bodies of POST chat/completions
        self.headers: list[dict[str, str]] = []  # their headers (lower-case names)
        self.log: list[tuple[str, str]] = []  # (method, path) of every request
        self.models: list[str] = ["fake-model"]
        self.context_length: int | None = None  # vLLM-style "max_model_len" in /models
        self.require_key: str | None = None  # 401 unless "Authorization: Bearer <key>"
        self.strict_models = False  # 404 model_not_found for models not in self.models
        self.default_reply: str | None = None  # answer with this when the queue is empty
        self.measure_usage = False  # prompt_tokens: the rendered prompt's count (see above)
        self.token_chars = CHARS_PER_TOKEN  # what measure_usage counts as a token (its tokenizer)
        self.n_ctx: int | None = None  # llama.cpp's -c: a longer measured prompt gets its HTTP 400
        self.overflows = 0  # requests refused for that
        self.prompts: list[str] = []  # each chat request rendered as the cache sees it
        self.cached: list[int] = []  # cached_tokens reported for each (before any cap)
        self.disconnects = 0  # streams the client closed before the end
        self.disconnected = threading.Event()
        self._queue: collections.deque[_Reply] = collections.deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd = _Server((host, port), _Handler)
        self._httpd.fake = self
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------
    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FakeOpenAI:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pending(self) -> int:
        """Replies still queued."""
        with self._lock:
            return len(self._queue)

    # -- scripting -------------------------------------------------------------------
    def reply(
        self,
        text: str = "",
        *,
        tool_calls: list[tuple[str, str]] | None = None,
        finish_reason: Any = _AUTO,
        usage: tuple[int, ...] | None = (10, 5),
        chunk_size: int = 8,
        delay: float = 0.0,
        done: bool = True,
    ) -> None:
        """Answer the next request. ``finish_reason=""`` sends no finish_reason at all."""
        if finish_reason is None:
            finish_reason = _AUTO
        self._push(
            _Reply(
                "reply", text, list(tool_calls or []), finish_reason, usage,
                max(1, chunk_size), delay, done=done,
            )
        )

    def fail(
        self,
        status: int,
        message: str = "fake server error",
        *,
        code: str | None = None,
        type: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
        times: int = 1,
        body: str | bytes | None = None,
        content_type: str | None = None,
    ) -> None:
        """Answer the next ``times`` requests with an HTTP error (OpenAI-style JSON body)."""
        if body is None:
            err_type = type or ("server_error" if status >= 500 else "invalid_request_error")
            raw = json.dumps(
                {"error": {"message": message, "type": err_type, "param": param, "code": code}}
            ).encode()
            ctype = content_type or "application/json"
        else:
            raw = body.encode() if isinstance(body, str) else body
            ctype = content_type or ("text/html" if raw.lstrip().startswith(b"<") else "text/plain")
        headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
        for _ in range(times):
            self._push(_Reply("fail", status=status, body=raw, content_type=ctype, headers=headers))

    def raw(self, body: str | bytes, *, status: int = 200, content_type: str = "text/html") -> None:
        """Answer the next request with this body as-is (a captive portal, non-JSON, ...)."""
        raw = body.encode() if isinstance(body, str) else body
        self._push(_Reply("raw", status=status, body=raw, content_type=content_type))

    def cut(self, text: str, *, chunk_size: int = 8) -> None:
        """Stream ``text`` then drop the TCP connection (no finish_reason, no [DONE]); without
        stream, send half the JSON body then drop it."""
        self._push(_Reply("reply", text, chunk_size=max(1, chunk_size), cut=True, usage=None))

    def stall(self, text: str, seconds: float, *, chunk_size: int = 8) -> None:
        """Stream ``text`` then go silent for ``seconds`` (then finish normally)."""
        self._push(_Reply("reply", text, chunk_size=max(1, chunk_size), stall_after=seconds))

    def slow(self, seconds: float, text: str = "") -> None:
        """Wait ``seconds`` before answering with ``text``."""
        self._push(_Reply("reply", text, before=seconds))

    def stream_error(self, text: str, message: str = "upstream overloaded") -> None:
        """Stream ``text`` then an in-band ``{"error": ...}`` event (as some proxies do)."""
        self._push(_Reply("reply", text, inband_error=message, usage=None))

    def bad_chunk(self, text: str, line: str = "data: {not json") -> None:
        """Stream ``text`` then a malformed SSE line."""
        self._push(_Reply("reply", text, bad_line=line, usage=None))

    def _push(self, r: _Reply) -> None:
        with self._lock:
            self._queue.append(r)

    def _pop(self) -> _Reply | None:
        with self._lock:
            if self._queue:
                return self._queue.popleft()
        if self.default_reply is not None:
            return _Reply("reply", self.default_reply)
        return None

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    fake: FakeOpenAI

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client that hangs up (Ctrl-C, timeout, closed pool) is normal here, not a failure
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _ClientGone(Exception):
    pass


def _error_body(message: str, code: str | None, type_: str = "invalid_request_error") -> bytes:
    return json.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}}).encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    # -- plumbing --------------------------------------------------------------------
    def _send(self, status: int, body: bytes, ctype: str = "application/json",
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-request-id", f"req_fake_{len(self.server.fake.log)}")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def _authorized(self) -> bool:
        key = self.server.fake.require_key
        if key is None:
            return True
        got = self.headers.get("Authorization", "")
        if got == f"Bearer {key}":
            return True
        token = got.removeprefix("Bearer ").strip()
        masked = (token[:3] + "*" * 8 + token[-4:]) if len(token) > 8 else "***"
        self._send(401, _error_body(
            f"Incorrect API key provided: {masked}. You can find your API key at "
            "https://platform.openai.com/account/api-keys.", "invalid_api_key"))
        return False

    def _not_found(self) -> None:
        self._send(404, _error_body(f"Invalid URL ({self.command} {self.path})", None))

    # -- routes ----------------------------------------------------------------------
    def do_GET(self) -> None:
        fake = self.server.fake
        fake.log.append(("GET", self.path))
        if not self._authorized():
            return
        if self.path.rstrip("/") != "/v1/models":
            return self._not_found()
        data = []
        for m in fake.models:
            entry: dict[str, Any] = {"id": m, "object": "model", "created": 0, "owned_by": "fake"}
            if fake.context_length is not None:
                entry["max_model_len"] = fake.context_length
            data.append(entry)
        self._send(200, json.dumps({"object": "list", "data": data}).encode())

    def do_POST(self) -> None:
        fake = self.server.fake
        fake.log.append(("POST", self.path))
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.path.rstrip("/") != "/v1/chat/completions":
            return self._not_found()
        try:
            req = json.loads(raw or b"{}")
        except ValueError:
            return self._send(400, _error_body("We could not parse the JSON body of your request.", None))
        fake.requests.append(req)
        prompt = render_prompt(req)
        measured = int(len(prompt) / fake.token_chars + 0.999)
        if fake.n_ctx is not None and measured > fake.n_ctx:  # server-context.cpp's error, verbatim shape
            fake.overflows += 1
            return self._send(400, json.dumps({"error": {
                "code": 400, "type": "exceed_context_size_error", "n_prompt_tokens": measured, "n_ctx": fake.n_ctx,
                "message": f"request ({measured} tokens) exceeds the available context size ({fake.n_ctx} tokens), "
                           "try increasing it"}}).encode())
        fake.cached.append(cached_tokens(prompt, fake.prompts, fake.token_chars))
        fake.prompts.append(prompt)
        fake.headers.append({k.lower(): v for k, v in self.headers.items()})
        if not self._authorized():
            return
        model = str(req.get("model", ""))
        if fake.strict_models and model not in fake.models:
            return self._send(404, _error_body(
                f"The model `{model}` does not exist or you do not have access to it.",
                "model_not_found"))
        r = fake._pop()
        if r is not None and r.usage is not None and len(r.usage) == 2:
            p = measured if fake.measure_usage else r.usage[0]
            r.usage = (p, r.usage[1], min(fake.cached[-1], p))
        if r is None:
            return self._send(500, _error_body(
                "fake server: no reply queued", "no_reply_queued", "server_error"))
        try:
            self._wait(r.before)
            if r.kind in ("fail", "raw"):
                return self._send(r.status, r.body or b"", r.content_type, r.headers)
            if req.get("stream"):
                self._stream(r, model, bool((req.get("stream_options") or {}).get("include_usage")))
            elif r.cut:  # without stream: half the body, then the connection drops
                body = json.dumps(_completion_json(r, model)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
            else:
                self._wait(r.delay)
                self._send(200, json.dumps(_completion_json(r, model)).encode())
        except (_ClientGone, BrokenPipeError, ConnectionResetError):
            fake.disconnects += 1
            fake.disconnected.set()
            self.close_connection = True

    def _wait(self, seconds: float) -> None:
        """Sleep, but notice a client that hangs up meanwhile (raises _ClientGone)."""
        fake = self.server.fake
        end = time.monotonic() + seconds
        while not fake._stopping.is_set() and (left := end - time.monotonic()) > 0:
            ready, _, _ = select.select([self.connection], [], [], min(left, 0.05))
            if ready:
                try:
                    gone = self.connection.recv(1, socket.MSG_PEEK) == b""
                except OSError:
                    gone = True
                if gone:
                    raise _ClientGone()
                fake._sleep(end - time.monotonic())  # data pending (pipelining): just wait

    # -- streaming -------------------------------------------------------------------
    def _chunk(self, data: bytes) -> None:
        try:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        except OSError as e:
            raise _ClientGone() from e

    def _event(self, obj: Any) -> None:
        self._chunk(b"data: " + json.dumps(obj).encode() + b"\n\n")

    def _stream(self, r: _Reply, model: str, include_usage: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": model, "system_fingerprint": None}

        def delta(d: dict[str, Any], finish: str | None = None) -> None:
            self._event({**base, "choices": [
                {"index": 0, "delta": d, "logprobs": None, "finish_reason": finish}]})
            self._wait(r.delay)

        delta({"role": "assistant", "content": ""})
        for i in range(0, len(r.text), r.chunk_size):
            delta({"content": r.text[i:i + r.chunk_size]})
        if r.cut:
            # shutdown without the terminating zero-length chunk: an incomplete body
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        for n, (name, args) in enumerate(r.tool_calls):
            delta({"tool_calls": [{"index": n, "id": f"call_fake{n}", "type": "function",
                                   "function": {"name": name, "arguments": ""}}]})
            for i in range(0, len(args), r.chunk_size):
                delta({"tool_calls": [{"index": n, "function": {"arguments": args[i:i + r.chunk_size]}}]})
        if r.inband_error is not None:
            self._event({"error": {"message": r.inband_error, "type": "server_error", "code": None}})
        elif r.bad_line is not None:
            self._chunk(r.bad_line.encode() + b"\n\n")
        else:
            if r.stall_after:
                self._wait(r.stall_after)
            finish = _finish(r)
            if finish:
                delta({}, finish)
            if include_usage and r.usage is not None:
                self._event({**base, "choices": [], "usage": _usage(r.usage)})
            if r.done:
                self._chunk(b"data: [DONE]\n\n")
        self._chunk(b"")  # zero-length chunk: clean end of body


def _finish(r: _Reply) -> str:
    if r.finish_reason is _AUTO:
        return "tool_calls" if r.tool_calls else "stop"
    return str(r.finish_reason or "")


def _usage(u: tuple[int, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {"prompt_tokens": u[0], "completion_tokens": u[1], "total_tokens": u[0] + u[1]}
    if len(u) > 2:
        out["prompt_tokens_details"] = {"cached_tokens": u[2], "audio_tokens": 0}
    if len(u) > 3:  # GPT-5.6's usage: prompt tokens written to the cache
        out["prompt_tokens_details"]["cache_write_tokens"] = u[3]
    return out


CHARS_PER_TOKEN = 4


def render_prompt(req: dict[str, Any]) -> str:
    """The request's prompt as a server's chat template lays it out: tools first, then each
    message in order. JSON keeps the key order the client sent, so an unstable order shows."""
    out = [json.dumps(t) for t in req.get("tools") or []]
    for m in req.get("messages") or []:
        content = m.get("content")
        text = content if isinstance(content, str) else json.dumps(content)
        calls = json.dumps(m["tool_calls"]) if m.get("tool_calls") else ""
        out.append(f"<|{m.get('role')}|>{m.get('tool_call_id') or ''}{text}{calls}<|end|>")
    return "".join(out)


def cached_tokens(prompt: str, earlier: list[str], chars_per_token: float = CHARS_PER_TOKEN) -> int:
    """OpenAI's rule: the longest prefix shared with an earlier request, in 128-token blocks
    past the first 1,024 tokens; nothing below 1,024."""
    best = 0
    for old in earlier:
        n = len(os.path.commonprefix([old, prompt]))
        best = max(best, n)
    tokens = int(best // chars_per_token)
    if tokens < 1024:
        return 0
    return 1024 + (tokens - 1024) // 128 * 128


def _completion_json(r: _Reply, model: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": r.text or None, "refusal": None}
    if r.tool_calls:
        message["tool_calls"] = [
            {"id": f"call_fake{n}", "type": "function", "function": {"name": name, "arguments": args}}
            for n, (name, args) in enumerate(r.tool_calls)
        ]
    out: dict[str, Any] = {
        "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": _finish(r) or None}],
    }
    if r.usage is not None:
        out["usage"] = _usage(r.usage)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Run the fake OpenAI-compatible server.")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--reply", action="append", default=[], help="queue a reply (repeatable)")
    p.add_argument("--forever", action="store_true", help="keep answering with the last --reply")
    p.add_argument("--require-key", default=None)
    args = p.parse_args(argv)
    srv = FakeOpenAI(port=args.port)
    for text in args.reply:
        srv.reply(text)
    if args.forever and args.reply:
        srv.default_reply = args.reply[-1]
    srv.require_key = args.require_key
    srv.start()
    print(srv.base_url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        srv.stop()


if __name__ == "__main__":
    main()
