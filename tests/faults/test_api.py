"""API and network faults (reliability.md §5 B): the fake server fails, or there is no server.

Batch mode: the faulty message is followed by the harness's ``/py`` alive check, so a
session that gives up after a failed request fails property (a). The person's message
must be in the journal whatever happened, and the key must never be echoed.
"""

from __future__ import annotations

import time

from launch import closed_port

from .harness import fault_run, spawn_repl, write_config

MSG = "please answer this fault message"


def _timeout_config(tmp_path, seconds: float = 1):
    return ["--config", str(write_config(tmp_path / "cfg" / "config.toml", f"[model]\ntimeout = {seconds}\n"))]


def test_401_bad_key(server):
    """B1: 401 — "API key rejected" at once, no retries, the key never shown."""
    server.require_key = "sk-the-right-one-000000000000000000"
    r = fault_run(server, [MSG])
    r.assert_ok(journaled=[("user", MSG)])
    assert r.said("API key") and r.said("401"), r.excerpt()
    assert len(server.requests) == 1, "a 401 must not be retried"


def test_403_forbidden(server):
    """B1 (403 variant): permission denied — says refused/403 and what to check."""
    server.fail(403, "You are not allowed to sample from this model", code="model_access_denied")
    r = fault_run(server, [MSG])
    r.assert_ok(journaled=[("user", MSG)])
    assert r.said("403") and r.said("not allowed to sample"), r.excerpt()


def test_404_unknown_model(server):
    """B10: 404 model_not_found — names the model and hints at /model and the base URL."""
    server.strict_models = True
    r = fault_run(server, [MSG], args=["-m", "no-such-model-xyz"])
    r.assert_ok(journaled=[("user", MSG)])
    assert r.said("no-such-model-xyz") and r.said("not found"), r.excerpt()


def test_400_context_length_exceeded(server):
    """B9: 400 context_length_exceeded — says the conversation no longer fits; nothing dropped silently."""
    server.fail(400, "This model's maximum context length is 8192 tokens. However, your messages "
                "resulted in 9001 tokens.", code="context_length_exceeded")
    r = fault_run(server, [MSG])
    r.assert_ok(journaled=[("user", MSG)])
    assert r.said("context"), r.excerpt()


def test_llama_cpp_context_overflow_then_every_message_fits(server):
    """B9 (llama.cpp): 400 exceed_context_size_error with n_ctx — the stated window is adopted,
    the message is retried with less history, and the next message does not fail the same way."""
    import json

    server.fail(400, body=json.dumps({"error": {
        "code": 400, "type": "exceed_context_size_error", "n_prompt_tokens": 9001, "n_ctx": 2048,
        "message": "request (9001 tokens) exceeds the available context size (2048 tokens), try increasing it"}}),
        content_type="application/json")
    server.reply("first answer")
    server.reply("second answer")
    r = fault_run(server, [MSG, "and a second message"])
    r.assert_ok(journaled=[("user", MSG)])
    assert r.said("2,048 tokens") and r.said("first answer") and r.said("second answer"), r.excerpt()
    assert len(server.requests) == 3
    assert server.requests[1]["max_completion_tokens"] == 512  # a quarter of the window for the answer


def test_llama_cpp_without_jinja_turns_tools_off_without_retries(server):
    """llama.cpp started without --jinja: HTTP 500 "tools param requires --jinja flag" — tools go
    off at once, with a notice; the same message is answered without them."""
    import json

    server.fail(500, body=json.dumps({"error": {"code": 500, "type": "server_error",
                                                "message": "tools param requires --jinja flag"}}),
                content_type="application/json")
    server.reply("answer without tools")
    r = fault_run(server, [MSG])
    r.assert_ok(journaled=[("user", MSG)])
    assert r.said("--jinja") and r.said("answer without tools"), r.excerpt()
    assert len(server.requests) == 2 and "tools" in server.requests[0] and "tools" not in server.requests[1]


def test_429_with_retry_after_then_success(server):
    """B4: 429 with Retry-After: 1 — the wait is honoured, the retry's answer arrives."""
    server.fail(429, "Rate limit reached", code="rate_limit_exceeded", retry_after=1)
    server.reply("answer after the rate limit")
    r = fault_run(server, [MSG])
    r.assert_ok(journaled=[("assistant", "answer after the rate limit")])
    assert "answer after the rate limit" in r.stdout
    assert r.elapsed >= 1.0 and len(server.requests) == 2


def test_500_then_success(server):
    """B7: one 500, then a good answer — retried transparently; the answer is shown and journaled."""
    server.fail(500, "The server had an error")
    server.reply("recovered answer text")
    r = fault_run(server, [MSG])
    r.assert_ok(journaled=[("assistant", "recovered answer text")])
    assert "recovered answer text" in r.stdout


def test_503_three_times(server):
    """B7: 503 on every attempt — gives up after the retries, says so with the status; message kept for a resend."""
    server.fail(503, "Service temporarily overloaded", times=3)
    r = fault_run(server, [MSG])
    r.assert_ok(journaled=[("user", MSG)])
    assert r.said("503") and r.said("again", "retry", "resend"), r.excerpt()
    assert len(server.requests) == 3


def test_connection_refused(server):
    """B11: nothing listens on the port — "cannot reach <url>: connection refused"."""
    url = f"http://127.0.0.1:{closed_port()}/v1"
    r = fault_run(server, [MSG], base_url=url, timeout=30)
    r.assert_ok(journaled=[("user", MSG)])
    assert r.said("cannot reach") and r.said("refused"), r.excerpt()


def test_dns_failure(server):
    """B11: the host name does not resolve (reserved .invalid TLD) — says DNS / could not be resolved, fast."""
    r = fault_run(server, [MSG], base_url="http://llmrepl-test.invalid/v1", timeout=30)
    r.assert_ok(journaled=[("user", MSG)])
    assert r.said("resolve", "DNS"), r.excerpt()
    assert r.elapsed < 20


def test_server_accepts_and_never_answers(server, tmp_path):
    """B12: the server accepts and stays silent — llmrepl's own timeout (model.timeout = 1 s) fires with a clear message."""
    for _ in range(3):  # the first attempt and the SDK's two retries
        server.slow(30, "far too late")
    r = fault_run(server, [MSG], args=_timeout_config(tmp_path), timeout=40)
    r.assert_ok(journaled=[("user", MSG)])
    assert r.said("model.timeout") and r.said("1 s"), r.excerpt()
    assert r.elapsed < 15, f"took {r.elapsed:.1f} s with model.timeout = 1"


def test_stream_cut_mid_answer(server):
    """B14: the connection drops mid-stream — the partial answer is kept (shown and journaled) and marked incomplete."""
    server.cut("The first half of the answer arrived and then")
    r = fault_run(server, [MSG])
    r.assert_ok(journaled=[("user", MSG), "The first half of the answer arrived"])
    assert "The first half of the answer arrived and then" in r.stdout, "the partial answer was never shown"
    assert r.said("lost", "cut", "incomplete"), r.excerpt()
    # batch mode has no input line to press Enter on: the advice must not say so
    assert r.said("send the message again") and not r.said("press Enter"), r.excerpt()


def test_stream_stalls_longer_than_timeout(server, tmp_path):
    """B13: the stream goes silent mid-answer for longer than model.timeout — stopped, partial kept."""
    server.stall("Partial text before the stall", 30)
    r = fault_run(server, [MSG], args=_timeout_config(tmp_path), timeout=40)
    r.assert_ok(journaled=[("user", MSG), "Partial text before the stall"])
    assert "Partial text before the stall" in r.stdout, "the partial answer was never shown"
    assert r.said("silent", "timeout", "timed out"), r.excerpt()
    assert r.elapsed < 15


def test_ctrl_c_during_slow_answer_abandons_the_request(server):
    """B22: Ctrl-C while waiting for a slow answer — request abandoned, connection closed (server sees it), prompt back."""
    server.slow(30, "this answer comes far too late")
    repl = spawn_repl(server)
    repl.ask(MSG)
    deadline = time.monotonic() + 15
    while not server.requests and time.monotonic() < deadline:
        time.sleep(0.05)  # wait for the request to arrive (a condition, not a fixed delay)
    assert server.requests, "the request never reached the server"
    repl.intr()
    assert server.disconnected.wait(5), "the server never saw the client hang up"
    r = repl.finish()
    r.assert_ok(journaled=[("user", MSG)])
    assert "far too late" not in r.stdout
