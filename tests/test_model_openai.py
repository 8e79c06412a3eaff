"""OpenAIModel through the real openai SDK against the local fake server (never the internet)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fakeserver import FakeOpenAI
from launch import closed_port

from llmrepl.errors import ModelError
from llmrepl.model.client import Completion, OpenAIModel, to_model_error

pytestmark = pytest.mark.timeout(30)

SECRET = "sk-secret-abcdefghijklmnop1234"
USER = [{"role": "user", "content": "add one and one"}]
TOOLS = [{"type": "function", "function": {"name": "run_python", "parameters": {"type": "object"}}}]


@pytest.fixture
def srv() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as s:
        yield s


@pytest.fixture(autouse=True)
def _no_openai_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID"):
        monkeypatch.delenv(var, raising=False)


def make(srv: FakeOpenAI, **kw: Any) -> OpenAIModel:
    kw.setdefault("max_retries", 0)
    kw.setdefault("timeout", 5.0)
    return OpenAIModel("fake-model", base_url=srv.base_url, **kw)


def fail_with(model: OpenAIModel, **kw: Any) -> ModelError:
    with pytest.raises(ModelError) as ei:
        model.complete(USER, **kw)
    return ei.value


# -- answers ---------------------------------------------------------------------------


def test_streamed_text_arrives_in_pieces_with_finish_and_usage(srv: FakeOpenAI) -> None:
    srv.reply("The answer is 2. Here it is.", chunk_size=5, usage=(12, 7))
    pieces: list[str] = []
    c = make(srv).complete(USER, on_text=pieces.append)
    assert len(pieces) > 3 and "".join(pieces) == "The answer is 2. Here it is."
    assert c.text == "The answer is 2. Here it is."
    assert c.finish_reason == "stop" and c.complete and not c.interrupted
    assert (c.usage.prompt_tokens, c.usage.completion_tokens, c.usage.total_tokens) == (12, 7, 19)
    assert c.model == "fake-model"


@pytest.mark.parametrize("odd", [float("nan"), float("inf"), -3])
def test_a_server_reporting_odd_token_counts_loses_no_answer(srv: FakeOpenAI, odd: float) -> None:
    """usage.prompt_tokens as NaN, Infinity or a negative number (a broken proxy): the answer
    is kept and the count taken as unknown (0), never "unexpected response"."""
    srv.reply("the answer survives", usage=(odd, 5))  # type: ignore[arg-type]
    c = make(srv).complete(USER)
    assert c.text == "the answer survives"
    assert c.usage is not None and c.usage.prompt_tokens == 0 and c.usage.completion_tokens == 5


def test_non_stream_mode_calls_on_text_once(srv: FakeOpenAI) -> None:
    srv.reply("whole answer", usage=(3, 2))
    pieces: list[str] = []
    c = make(srv, stream=False).complete(USER, on_text=pieces.append)
    assert pieces == ["whole answer"]
    assert c.finish_reason == "stop" and c.usage is not None and c.usage.total_tokens == 5
    assert srv.requests[0]["stream"] is False and "stream_options" not in srv.requests[0]


@pytest.mark.parametrize("stream", [True, False])
def test_tool_calls_are_merged_into_complete_arguments(srv: FakeOpenAI, stream: bool) -> None:
    args0 = json.dumps({"code": "import math\nprint(math.pi * 2)"})
    srv.reply("Running it.", tool_calls=[("run_python", args0), ("run_python", '{"code": "1+1"}')],
              chunk_size=4)
    c = make(srv, stream=stream).complete(USER, tools=TOOLS)
    assert c.finish_reason == "tool_calls" and c.complete
    assert [t.name for t in c.tool_calls] == ["run_python", "run_python"]
    assert [t.id for t in c.tool_calls] == ["call_fake0", "call_fake1"]
    assert json.loads(c.tool_calls[0].arguments)["code"] == "import math\nprint(math.pi * 2)"
    assert json.loads(c.tool_calls[1].arguments) == {"code": "1+1"}


def test_request_body_has_the_expected_parameters(srv: FakeOpenAI) -> None:
    srv.reply("a")
    srv.reply("b")
    m = make(srv, max_output_tokens=256, api_key="sk-test-123")
    m.complete(USER, tools=TOOLS)
    body = srv.requests[0]
    assert body["max_completion_tokens"] == 256 and "max_tokens" not in body
    assert "temperature" not in body
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["tools"] == TOOLS and body["messages"] == USER and body["model"] == "fake-model"
    assert srv.headers[0]["authorization"] == "Bearer sk-test-123"
    m.temperature = 0.2
    m.model = "other-model"  # /model NAME switches it
    m.complete(USER)
    assert srv.requests[1]["temperature"] == 0.2 and srv.requests[1]["model"] == "other-model"
    assert "tools" not in srv.requests[1]


def test_local_server_without_key_gets_a_placeholder(srv: FakeOpenAI) -> None:
    srv.reply("ok")
    assert make(srv).complete(USER).text == "ok"
    assert srv.headers[0]["authorization"] == "Bearer sk-no-key-required"


def test_no_key_and_no_base_url_says_how_to_configure() -> None:
    m = OpenAIModel("gpt-4o")  # checked on first use: a local-server probe may set base_url
    with pytest.raises(ModelError) as ei:
        m.complete(USER)
    assert ei.value.kind == "no_model"
    assert "OPENAI_API_KEY" in str(ei.value) and "base_url" in str(ei.value)


def test_stream_without_finish_reason_is_incomplete(srv: FakeOpenAI) -> None:
    srv.reply("cut short", finish_reason="", done=False)
    c = make(srv).complete(USER)
    assert c.text == "cut short" and c.finish_reason is None and not c.complete


def test_server_that_ignores_stream_is_accepted(srv: FakeOpenAI) -> None:
    body = {"id": "x", "object": "chat.completion", "created": 0, "model": "fake-model",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "not streamed"}}]}
    srv.raw(json.dumps(body), content_type="application/json")
    pieces: list[str] = []
    c = make(srv).complete(USER, on_text=pieces.append)
    assert c.text == "not streamed" and pieces == ["not streamed"] and c.complete


# -- unsupported parameters ------------------------------------------------------------------


def test_unsupported_max_completion_tokens_falls_back_to_max_tokens_and_is_remembered(
    srv: FakeOpenAI,
) -> None:
    srv.fail(400, "Unsupported parameter: 'max_completion_tokens' is not supported with this "
             "model. Use 'max_tokens' instead.", code="unsupported_parameter",
             param="max_completion_tokens")
    srv.reply("first")
    srv.reply("second")
    m = make(srv, max_output_tokens=100)
    assert m.complete(USER).text == "first"
    assert m.complete(USER).text == "second"
    first, retry, later = srv.requests
    assert first["max_completion_tokens"] == 100
    assert retry["max_tokens"] == 100 and "max_completion_tokens" not in retry
    assert later["max_tokens"] == 100 and "max_completion_tokens" not in later
    assert m.unsupported == {"fake-model": {"max_completion_tokens"}}


@pytest.mark.parametrize("param, message", [
    ("temperature", "'temperature' is not supported with this model."),
    ("stream_options", "Unrecognized request argument supplied: stream_options"),
    ("tools", "tools param requires --jinja flag"),
])
def test_rejected_parameter_is_dropped_once_by_message(
    srv: FakeOpenAI, param: str, message: str
) -> None:
    srv.fail(400, message)
    srv.reply("fine")
    srv.reply("fine again")
    m = make(srv, temperature=0.5)
    assert m.complete(USER, tools=TOOLS).text == "fine"
    assert param in srv.requests[0] and param not in srv.requests[1]
    m.complete(USER, tools=TOOLS)
    assert param not in srv.requests[2]
    m.model = "another"  # remembered per model: a different model gets it again
    srv.reply("x")
    m.complete(USER, tools=TOOLS)
    assert param in srv.requests[3]


def test_same_parameter_rejected_twice_is_an_error_not_a_loop(srv: FakeOpenAI) -> None:
    srv.fail(400, "'temperature' is not supported with this model.", times=2)
    e = fail_with(make(srv, temperature=0.5))
    assert len(srv.requests) == 2 and e.kind == "bad_request" and e.status == 400


def test_context_length_is_not_mistaken_for_an_unsupported_parameter(srv: FakeOpenAI) -> None:
    srv.fail(400, "'max_tokens' or 'max_completion_tokens' is too large: 900. This model's "
             "maximum context length is 1024 tokens.", code="context_length_exceeded")
    e = fail_with(make(srv, max_output_tokens=900))
    assert e.kind == "context_length" and len(srv.requests) == 1


# -- HTTP errors --------------------------------------------------------------------------


def test_401_names_the_fix_and_never_shows_the_key(srv: FakeOpenAI) -> None:
    srv.require_key = "sk-test-123"
    e = fail_with(make(srv, api_key=SECRET))
    assert e.kind == "auth" and e.status == 401 and not e.retryable
    assert "rejected the API key (401" in str(e) and "OPENAI_API_KEY" in str(e)
    assert SECRET not in str(e)
    # a server that echoes the whole key back
    srv.require_key = None
    srv.fail(401, f"Incorrect API key provided: {SECRET} (Bearer {SECRET})", code="invalid_api_key")
    e = fail_with(make(srv, api_key=SECRET))
    assert SECRET not in str(e) and "\n" not in str(e)


def test_403_explains_access(srv: FakeOpenAI) -> None:
    srv.fail(403, "Project does not have access to model fake-model", code="model_not_allowed")
    e = fail_with(make(srv))
    assert e.kind == "auth" and "does not have access" in str(e)


def test_404_names_model_and_base_url(srv: FakeOpenAI) -> None:
    srv.fail(404, "The model `nope` does not exist", code="model_not_found")
    e = fail_with(make(srv))
    assert e.kind == "not_found" and e.status == 404
    assert f"model 'fake-model' not found at {srv.base_url}" in str(e) and "/v1" in str(e)


def test_connection_refused() -> None:
    url = f"http://127.0.0.1:{closed_port()}/v1"
    e = fail_with(OpenAIModel("m", base_url=url, max_retries=0))
    assert e.kind == "connection" and e.retryable
    assert str(e) == f"cannot reach {url}: connection refused. Is the server running?"


def test_429_then_success_is_retried_by_the_sdk(srv: FakeOpenAI) -> None:
    srv.fail(429, "Rate limit reached", code="rate_limit_exceeded", retry_after=0.05)
    srv.reply("after the wait")
    assert make(srv, max_retries=1).complete(USER).text == "after the wait"
    assert [h.get("x-stainless-retry-count") for h in srv.headers] == ["0", "1"]


def test_429_with_long_retry_after_says_how_long(srv: FakeOpenAI) -> None:
    srv.fail(429, "Rate limit reached", code="rate_limit_exceeded", retry_after=3600)
    e = fail_with(make(srv, max_retries=2))
    assert len(srv.requests) == 1  # the SDK does not wait an hour
    assert e.kind == "rate_limit" and e.retryable and "3600 s" in str(e)


def test_429_insufficient_quota_is_a_billing_problem(srv: FakeOpenAI) -> None:
    srv.fail(429, "You exceeded your current quota", code="insufficient_quota")
    e = fail_with(make(srv))
    assert e.kind == "rate_limit" and not e.retryable and "billing" in str(e)


def test_500_three_times_is_a_retryable_server_error(srv: FakeOpenAI) -> None:
    srv.fail(500, "The server had an error", retry_after=0.01, times=3)
    e = fail_with(make(srv, max_retries=2))
    assert len(srv.requests) == 3
    assert e.kind == "server" and e.retryable and e.status == 500
    assert "after 3 attempts" in str(e) and "again" in str(e)


def test_502_html_page_is_summarised(srv: FakeOpenAI) -> None:
    srv.fail(502, body="<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>")
    e = fail_with(make(srv))
    assert e.kind == "server" and "502 Bad Gateway" in str(e) and "<" not in str(e)


# -- broken answers -----------------------------------------------------------------------


def test_cut_stream_keeps_the_partial_text(srv: FakeOpenAI) -> None:
    srv.cut("half of the answer")
    pieces: list[str] = []
    e = fail_with(make(srv), on_text=pieces.append)
    assert e.kind == "connection" and e.retryable and e.partial == "half of the answer"
    assert "".join(pieces) == "half of the answer" and "mid-answer" in str(e)


def test_stall_beyond_the_timeout_keeps_the_partial_text(srv: FakeOpenAI) -> None:
    srv.stall("started", 20)
    t0 = time.monotonic()
    e = fail_with(make(srv, timeout=0.5))
    assert time.monotonic() - t0 < 10  # well before the stall ends
    assert e.kind == "timeout" and e.retryable and e.partial == "started"
    assert "0.5 s" in str(e) and "model.timeout" in str(e)


def test_trickling_stream_hits_the_total_deadline(srv: FakeOpenAI) -> None:
    srv.reply("x" * 400, chunk_size=2, delay=0.02)
    m = make(srv)
    m.deadline = 0.3
    e = fail_with(m)
    assert e.kind == "timeout" and 0 < len(e.partial) < 400
    assert srv.disconnected.wait(3)  # the stream was closed, generation can stop


def test_in_band_error_event(srv: FakeOpenAI) -> None:
    srv.stream_error("so far", "upstream overloaded")
    e = fail_with(make(srv))
    assert e.kind == "bad_response" and e.partial == "so far" and "upstream overloaded" in str(e)


def test_malformed_chunk(srv: FakeOpenAI) -> None:
    srv.bad_chunk("so far")
    e = fail_with(make(srv))
    assert e.kind == "bad_response" and e.partial == "so far" and "malformed" in str(e)


@pytest.mark.parametrize("stream", [True, False])
def test_html_page_instead_of_an_answer(srv: FakeOpenAI, stream: bool) -> None:
    srv.raw("<html><title>Please log in</title><body>portal</body></html>")
    e = fail_with(make(srv, stream=stream))
    assert e.kind == "bad_response" and "Please log in" in str(e) and "/v1" in str(e)


def test_non_json_body(srv: FakeOpenAI) -> None:
    srv.raw("this is not json", content_type="application/json")
    e = fail_with(make(srv, stream=False))
    assert e.kind == "bad_response" and "not JSON" in str(e)


def test_errors_in_on_text_are_not_blamed_on_the_server(srv: FakeOpenAI) -> None:
    srv.reply("hello")

    def boom(_: str) -> None:
        raise ValueError("renderer bug")

    with pytest.raises(ValueError, match="renderer bug"):
        make(srv).complete(USER, on_text=boom)


def test_to_model_error_redacts_any_text() -> None:
    e = to_model_error(RuntimeError(f"weird {SECRET} Bearer abcdefghijklmnopqrstuvwxyz"),
                       base_url=None, model="m", partial="p", api_key=SECRET)
    assert SECRET not in str(e) and "abcdefghijklmnopqrstuvwxyz" not in str(e)
    assert e.partial == "p" and "api.openai.com" in str(e)


# -- Ctrl-C ---------------------------------------------------------------------------------


def _sigint_self_after(seconds: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sh", "-c", f"sleep {seconds}; kill -INT {os.getpid()}"])


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="needs main thread")
def test_ctrl_c_mid_stream_returns_partial_and_closes(srv: FakeOpenAI) -> None:
    srv.reply("word " * 200, chunk_size=5, delay=0.02)
    pieces: list[str] = []
    m = make(srv)
    m.warm_up()  # import openai first, so the signal lands mid-stream
    killer = _sigint_self_after(0.3)
    try:
        c = m.complete(USER, on_text=pieces.append)
    finally:
        killer.wait()
    assert isinstance(c, Completion) and c.interrupted and not c.complete
    assert c.text and c.text == "".join(pieces) and len(c.text) < 1000
    assert srv.disconnected.wait(3)


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="needs main thread")
def test_ctrl_c_while_waiting_returns_interrupted(srv: FakeOpenAI) -> None:
    srv.slow(20.0, "too late")
    m = make(srv, stream=False)
    m.warm_up()
    killer = _sigint_self_after(0.3)
    t0 = time.monotonic()
    try:
        c = m.complete(USER)
    finally:
        killer.wait()
    assert c.interrupted and c.text == "" and time.monotonic() - t0 < 10
    assert srv.disconnected.wait(3)  # the server noticed the connection close


# -- client plumbing ------------------------------------------------------------------------


def test_list_models_and_warm_up_from_threads(srv: FakeOpenAI) -> None:
    srv.models = ["b-model", "a-model"]
    m = make(srv)
    threads = [threading.Thread(target=m.warm_up) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    client = m._client
    m.warm_up()
    assert client is not None and m._client is client
    assert m.list_models() == ["a-model", "b-model"]


def test_list_models_auth_error(srv: FakeOpenAI) -> None:
    srv.require_key = "sk-right-key"
    with pytest.raises(ModelError) as ei:
        make(srv, api_key=SECRET).list_models()
    assert ei.value.kind == "auth" and SECRET not in str(ei.value)


def test_importing_the_module_does_not_import_openai() -> None:
    code = "import sys, llmrepl.model.client; assert 'openai' not in sys.modules; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_base_url_set_after_warm_up_rebuilds_the_client(srv: FakeOpenAI) -> None:
    m = OpenAIModel("fake-model", base_url=f"http://127.0.0.1:{closed_port()}/v1", max_retries=0)
    m.warm_up()
    m.base_url = srv.base_url  # as the local-server probe does
    srv.reply("found you")
    assert m.complete(USER).text == "found you"


# -- a base URL with credentials ------------------------------------------------------------


def test_errors_show_a_base_url_without_its_credentials(srv: FakeOpenAI) -> None:
    from llmrepl.model.error_map import host_of

    password = "hunter2-url-password-77"
    url = f"http://alice:{password}@127.0.0.1:{closed_port()}/v1"
    e = fail_with(OpenAIModel("m", base_url=url, max_retries=0, timeout=5.0))
    assert e.kind == "connection" and password not in str(e) and "http://[REDACTED]@127.0.0.1" in str(e)
    assert host_of(url) == f"127.0.0.1:{url.rsplit(':', 1)[1].split('/')[0]}"
    srv.require_key = SECRET
    e = fail_with(OpenAIModel("m", base_url=srv.base_url.replace("//", f"//alice:{password}@"),
                              api_key=SECRET, max_retries=0, timeout=5.0))
    assert e.kind == "auth" and password not in str(e) and "alice" not in str(e)
    assert password not in repr(OpenAIModel("m", base_url=url))


def test_a_piece_of_the_key_in_a_server_message_is_redacted() -> None:
    e = to_model_error(RuntimeError(f"key ending {SECRET[6:]} revoked"), base_url=None, model="m", api_key=SECRET)
    assert SECRET[6:] not in str(e) and "[REDACTED]" in str(e)


def test_connection_dropped_mid_answer_without_stream_is_not_called_unreachable(srv: FakeOpenAI) -> None:
    srv.cut("the answer that never arrives whole")
    e = fail_with(make(srv, stream=False))
    assert e.kind == "connection"
    assert "dropped before the answer was complete" in str(e)
    assert "no connection could be made" not in str(e) and "cannot reach" not in str(e)


def test_llama_cpp_status_error_shows_its_status_once(srv: FakeOpenAI) -> None:
    # llama.cpp (and vLLM) repeat the HTTP status as the error's "code"
    srv.fail(400, body=json.dumps({"error": {"code": 400, "type": "invalid_request_error",
                                             "message": "'messages' is required"}}),
             content_type="application/json")
    e = fail_with(make(srv))
    assert "(400)" in str(e) and "400, 400" not in str(e)


def test_a_server_reporting_a_huge_integer_prompt_count_loses_no_answer(srv: FakeOpenAI) -> None:
    """usage.prompt_tokens as a 401-digit integer (valid JSON, a Python int): every answer
    was lost ("internal error: OverflowError") in Context.observe_usage and the cost
    estimate. The count is taken as unknown instead, as NaN and Infinity are."""
    from llmrepl.context.builder import Context
    from llmrepl.engine.protocols import AutoApprove, NullDisplay
    from llmrepl.engine.session import Session
    from llmrepl.execution.executor import Executor

    notices: list[str] = []

    class Notices(NullDisplay):
        def notice(self, text: str, level: str = "info", *args: Any, **kwargs: Any) -> None:
            notices.append(text)

    srv.reply("the answer survives", usage=(10**400, 5))
    srv.reply("and the next one", usage=(10**400, 5))
    session = Session(make(srv), Executor(), display=Notices(), context=Context(context_window=32_000))
    session.step("hi " + "there " * 200, AutoApprove())
    session.step("more", AutoApprove())
    said = [m.get("content") for m in session.messages if m.get("role") == "assistant"]
    assert said == ["the answer survives", "and the next one"], notices
    assert not [text for text in notices if "internal error" in text]
    assert session.context.scale == 1.0 and "10,000,000" not in session.token_report()
