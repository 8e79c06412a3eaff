"""The fake OpenAI server speaks the wire format the SDK expects (checked with raw HTTP)."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

try:
    from fakeserver import FakeOpenAI
except ImportError:  # tests/ imported as a package
    from tests.fakeserver import FakeOpenAI

pytestmark = pytest.mark.timeout(30)


def post(srv: FakeOpenAI, body: dict[str, Any], headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
    conn.request("POST", "/v1/chat/completions", json.dumps(body),
                 {"Content-Type": "application/json", **(headers or {})})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


def test_sse_stream_layout() -> None:
    with FakeOpenAI() as srv:
        srv.reply("hello world", tool_calls=[("run_python", '{"code": "1"}')], chunk_size=6)
        status, data = post(srv, {"model": "m", "messages": [], "stream": True,
                                  "stream_options": {"include_usage": True}})
    assert status == 200
    events = [e.removeprefix("data: ") for e in data.decode().split("\n\n") if e]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == "hello world"
    first_tool = next(c for c in chunks if c["choices"] and "tool_calls" in c["choices"][0]["delta"])
    assert first_tool["choices"][0]["delta"]["tool_calls"][0]["function"]["name"] == "run_python"
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 15
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)


def test_non_stream_empty_queue_auth_and_strict_models() -> None:
    with FakeOpenAI() as srv:
        srv.reply("hi", usage=None)
        status, data = post(srv, {"model": "m", "messages": []})
        body = json.loads(data)
        assert status == 200 and body["choices"][0]["message"]["content"] == "hi" and "usage" not in body
        status, data = post(srv, {"model": "m", "messages": []})
        assert status == 500 and b"no reply queued" in data
        srv.require_key = "sk-test-123"
        status, data = post(srv, {"model": "m", "messages": []}, {"Authorization": "Bearer wrong-key-123"})
        assert status == 401 and json.loads(data)["error"]["code"] == "invalid_api_key"
        srv.require_key = None
        srv.strict_models = True
        status, data = post(srv, {"model": "nope", "messages": []})
        assert status == 404 and json.loads(data)["error"]["code"] == "model_not_found"
        assert [r["model"] for r in srv.requests] == ["m", "m", "m", "nope"]


def test_standalone_prints_base_url() -> None:
    script = Path(__file__).with_name("fakeserver.py")
    proc = subprocess.Popen([sys.executable, str(script), "--port", "0", "--reply", "x"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("http://127.0.0.1:") and line.endswith("/v1")
    finally:
        proc.terminate()
        proc.wait(5)
        proc.stdout.close()
