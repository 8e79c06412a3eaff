"""Every common server, by its own answers: the real openai SDK against the fake server
serving each server's exact error body (shapes and sources: llmrepl/model/error_map.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fakeserver import FakeOpenAI

from llmrepl.context.builder import Context
from llmrepl.engine.protocols import AutoApprove, NullDisplay, ScriptedReviewer
from llmrepl.engine.session import Session
from llmrepl.execution.executor import Executor
from llmrepl.model.client import OpenAIModel

pytestmark = pytest.mark.timeout(60)


class Notices(NullDisplay):
    def __init__(self) -> None:
        super().__init__()
        self.notices: list[str] = []

    def notice(self, text: str, level: str = "info") -> None:
        self.notices.append(text)


@pytest.fixture
def srv(server: FakeOpenAI) -> FakeOpenAI:
    """conftest's fake server (conftest also clears OPENAI_* from the environment)."""
    return server


def session(srv: FakeOpenAI, window: int = 128_000, **kw: Any) -> tuple[Session, Notices]:
    model = OpenAIModel("fake-model", base_url=srv.base_url, max_retries=2, timeout=5.0)
    display = Notices()
    s = Session(model, Executor(), display=display,
                context=Context(context_window=window, reserve=256), **kw)
    return s, display


def fill(s: Session, n: int = 40) -> None:
    """A long history: n earlier exchanges of ~100 tokens each."""
    for i in range(n):
        s.messages.append({"role": "user", "content": f"question {i} " + "word " * 100})
        s.messages.append({"role": "assistant", "content": f"answer {i}"})


# Each server's body when a request does not fit, and the window it states.
LLAMA_CPP = json.dumps({"error": {
    "code": 400, "type": "exceed_context_size_error", "n_prompt_tokens": 4145, "n_ctx": 2048,
    "message": "request (4145 tokens) exceeds the available context size (2048 tokens), try increasing it"}})
VLLM = json.dumps({"object": "error", "type": "BadRequestError", "param": None, "code": 400,
                   "message": "This model's maximum context length is 2048 tokens. However, you requested "
                              "4145 tokens (3145 in the messages, 1000 in the completion). Please reduce the "
                              "length of the messages or completion."})
OLLAMA = json.dumps({"error": {"message": '{"error":{"code":400,"message":"request (4145 tokens) exceeds '
                                          'the available context size (2048 tokens), try increasing it",'
                                          '"type":"exceed_context_size_error","n_prompt_tokens":4145,"n_ctx":2048}}',
                               "type": "invalid_request_error", "param": None, "code": None}})
LM_STUDIO = json.dumps({"error": "The number of tokens to keep from the initial prompt is greater than the "
                                 "context length (n_keep: 4145>= n_ctx: 2048). Try to load the model with a "
                                 "larger context length, or provide a shorter input."})
LM_STUDIO_OLD = json.dumps({"error": "Trying to keep the first 4145 tokens when context the overflows. However, "
                                     "the model is loaded with context length of only 2048 tokens, which is not "
                                     "enough. Try to load the model with a larger context length, or provide a "
                                     "shorter input."})
LITELLM = json.dumps({"error": {
    "message": "litellm.ContextWindowExceededError: litellm.BadRequestError: ContextWindowExceededError: "
               "OpenAIException - This model's maximum context length is 2048 tokens. However, your messages "
               "resulted in 4145 tokens.", "type": None, "param": None, "code": "400"}})


@pytest.mark.parametrize("status,body", [
    (400, LLAMA_CPP), (400, VLLM), (400, OLLAMA), (400, LM_STUDIO), (400, LM_STUDIO_OLD), (400, LITELLM),
    (500, OLLAMA),
], ids=["llama.cpp", "vLLM", "Ollama", "LM Studio", "LM Studio 0.3", "LiteLLM", "Ollama 500"])
def test_context_overflow_adopts_the_stated_window_and_later_messages_fit(
        srv: FakeOpenAI, status: int, body: str) -> None:
    s, display = session(srv)
    fill(s)
    srv.fail(status, body=body, content_type="application/json")
    srv.reply("first answer")
    result = s.step("hello", ScriptedReviewer([]))
    assert result.error is None and result.stop == "done"
    assert s.context.context_window == 2048
    assert any("2,048 tokens" in n and "retrying with less history" in n for n in display.notices)
    assert len(srv.requests) == 2  # not retried as a server error: one retry, with less history
    first, second = srv.requests
    assert len(second["messages"]) < len(first["messages"])
    # every later message fits the stated window from the start: no more failures
    srv.reply("second answer")
    assert s.step("again", ScriptedReviewer([])).error is None
    assert len(srv.requests) == 3 and len(srv.requests[2]["messages"]) < len(first["messages"])


def test_context_overflow_error_is_shown_once_with_its_status_once(srv: FakeOpenAI) -> None:
    s, _ = session(srv)
    srv.fail(400, body=LLAMA_CPP, content_type="application/json", times=2)
    result = s.step("hello", ScriptedReviewer([]))
    assert result.error is not None and result.error.kind == "context_length"
    assert "2048 tokens" in str(result.error)
    assert len(srv.requests) == 2


def test_litellm_bad_request_status_is_not_printed_twice(srv: FakeOpenAI) -> None:
    s, _ = session(srv)
    srv.fail(400, body=json.dumps({"error": {"message": "litellm.BadRequestError: invalid model group",
                                             "type": None, "param": None, "code": "400"}}),
             content_type="application/json")
    result = s.step("hello", ScriptedReviewer([]))
    assert result.error is not None
    assert "(400)" in str(result.error) and "400, 400" not in str(result.error)


# llama.cpp started without --jinja (tools/server/utils.hpp): HTTP 500, type "server_error".
JINJA = json.dumps({"error": {"code": 500, "type": "server_error",
                              "message": "tools param requires --jinja flag"}})


def test_llama_cpp_without_jinja_turns_tools_off_at_once(srv: FakeOpenAI) -> None:
    s, display = session(srv, use_tools=True)
    srv.fail(500, body=JINJA, content_type="application/json")
    srv.reply("fine without tools")
    result = s.step("hello", ScriptedReviewer([]))
    assert result.error is None
    # no retries of the 500: the first request had tools, the very next one none
    assert "tools" in srv.requests[0] and "tools" not in srv.requests[1]
    assert len(srv.requests) == 2
    assert s.use_tools is False
    assert any("--jinja" in n and "Tools are off" in n for n in display.notices)
    srv.reply("still fine")
    assert s.step("again", ScriptedReviewer([])).error is None
    assert "tools" not in srv.requests[2]


@pytest.mark.parametrize("usage,window,full", [
    ((2000, 48), 2048, True),     # llama.cpp: the window filled up mid-answer
    ((900, 40), 128_000, True),   # we think the window is larger, but the answer stopped short of its limit
    ((100, 1000), 2048, False),   # the answer used all of model.max_output_tokens
])
def test_finish_length_from_a_full_context_is_reported_as_such(
        srv: FakeOpenAI, usage: tuple[int, int], window: int, full: bool) -> None:
    s, display = session(srv, window=window)
    s.model.max_output_tokens = 1000  # type: ignore[attr-defined]
    srv.reply("The answer goes on and on", finish_reason="length", usage=usage)
    result = s.step("hello", ScriptedReviewer([]))
    assert result.stop == "cut_off"
    cut = [n for n in display.notices if "cut off" in n]
    assert len(cut) == 1
    assert ("context window is full" in cut[0]) is full
    assert ("output limit" in cut[0]) is not full


# -- the installed command: a server's model list ----------------------------------------------


def test_base_url_without_model_uses_the_model_the_server_lists(srv: FakeOpenAI) -> None:
    from launch import run

    srv.models = ["qwen2.5-0.5b-instruct-q4_k_m.gguf"]
    srv.reply("hello back")
    p = run(["--base-url", srv.base_url, "-c", "hi"], timeout=60)
    assert p.returncode == 0, p.stderr
    assert "hello back" in p.stdout
    assert srv.requests[0]["model"] == "qwen2.5-0.5b-instruct-q4_k_m.gguf"
    assert "using qwen2.5-0.5b-instruct-q4_k_m.gguf" in p.stderr


def test_base_url_with_model_keeps_it(srv: FakeOpenAI) -> None:
    from launch import run

    srv.models = ["listed-model"]
    srv.reply("hello back")
    p = run(["--base-url", srv.base_url, "-m", "my-model", "-c", "hi"], timeout=60)
    assert p.returncode == 0, p.stderr
    assert srv.requests[0]["model"] == "my-model"


def test_probe_ports_are_configurable_and_batch_model_waits_for_the_probe(srv: FakeOpenAI) -> None:
    from launch import closed_port, run

    srv.models = ["local-model"]
    srv.context_length = 4096  # vLLM's max_model_len: a small window
    srv.reply("hi there")
    p = run([], input="/model\nhello\n", LLMREPL_FIND_LOCAL="true",
            LLMREPL_PROBE_PORTS=f"{closed_port()},{srv.port}")
    assert p.returncode == 0, p.stderr
    # /model before the first message shows what the probe found, not the default name
    assert p.stdout.startswith(f"model: local-model at {srv.base_url}")
    # named by its answer (max_model_len), on a port that is nobody's usual one
    assert f"using vLLM at {srv.base_url} with model local-model" in p.stderr
    assert "hi there" in p.stdout
    # the 4,096-token window leaves room for the conversation: the answer asks for a quarter
    assert srv.requests[0]["model"] == "local-model"
    assert srv.requests[0]["max_completion_tokens"] == 1024


def test_unidentified_server_is_not_named_by_its_port(srv: FakeOpenAI) -> None:
    from launch import run

    srv.models = ["local-model"]
    srv.reply("hi there")
    p = run(["-c", "hello"], LLMREPL_FIND_LOCAL="true", LLMREPL_PROBE_PORTS=str(srv.port))
    assert p.returncode == 0, p.stderr
    assert f"using an OpenAI-compatible server at {srv.base_url}" in p.stderr


def test_nothing_configured_says_so_once_with_the_configuration_exit_status() -> None:
    from launch import run

    p = run(["-c", "hi"], timeout=60)
    assert p.returncode == 2, p.stderr
    assert p.stderr.count("llmrepl:") == 1 and "no model is configured" in p.stderr
    assert "No model configured" not in p.stderr


def test_model_named_without_a_key_says_where_is_missing() -> None:
    from launch import run

    p = run(["-m", "llama3.2", "-c", "hi"], timeout=60)
    assert p.returncode == 2, p.stderr
    assert "'llama3.2' is named, but there is no API key and no base URL" in p.stderr
    assert "no model is configured" not in p.stderr and p.stderr.count("llmrepl:") == 1


def test_base_url_listing_many_unknown_models_keeps_the_default_name(srv: FakeOpenAI) -> None:
    from launch import run

    srv.models = ["openai/gpt-x", "anthropic/claude-y", "meta/llama-z"]  # a gateway, not a local server
    srv.reply("hello back")
    p = run(["--base-url", srv.base_url, "-c", "hi"], timeout=60)
    assert p.returncode == 0, p.stderr
    assert srv.requests[0]["model"] not in srv.models


def test_after_tools_go_off_earlier_tool_calls_are_sent_as_text(srv: FakeOpenAI) -> None:
    """A session whose history holds tool calls moves to a server that takes no tools
    (llama.cpp without --jinja): the next requests carry those calls and results as text,
    with no tool role or tool_calls field that the server's template cannot render."""
    s, display = session(srv, use_tools=True)
    srv.reply(tool_calls=[("run_python", json.dumps({"code": "kept_value = 6 * 7\nprint(kept_value)"}))])
    srv.reply("It is 42.")
    assert s.step("compute it", AutoApprove()).error is None
    srv.fail(500, body=JINJA, content_type="application/json")
    srv.reply("fine without tools")
    assert s.step("and now?", ScriptedReviewer([])).error is None
    sent = srv.requests[-1]["messages"]
    assert "tools" not in srv.requests[-1]
    assert all(m["role"] in ("system", "user", "assistant") and "tool_calls" not in m for m in sent), sent
    roles = [m["role"] for m in sent[1:]]
    assert all(a != b for a, b in zip(roles, roles[1:])), roles  # user and assistant alternate
    text = json.dumps(sent)
    assert "kept_value = 6 * 7" in text and "Result of your run_python call" in text and "42" in text
