"""ScriptedModel: the engine's fake model plays queued replies and records what it was sent."""

from __future__ import annotations

import pytest

from llmrepl.errors import ModelError
from llmrepl.model.client import Completion, ModelClient, ScriptedModel, ToolCall


def test_str_reply_is_streamed_and_the_call_is_recorded() -> None:
    m = ScriptedModel(["Here is the code you asked for."])
    msgs = [{"role": "user", "content": "hi"}]
    pieces: list[str] = []
    c = m.complete(msgs, tools=[{"type": "function"}], on_text=pieces.append)
    assert c == Completion(text="Here is the code you asked for.", finish_reason="stop", model="scripted")
    assert c.complete and len(pieces) > 1 and "".join(pieces) == c.text
    msgs[0]["content"] = "changed later"  # the record is a deep copy
    assert m.calls == [{"messages": [{"role": "user", "content": "hi"}],
                        "tools": [{"type": "function"}], "model": "scripted"}]


def test_completion_and_exception_replies_in_order() -> None:
    tool = Completion(tool_calls=[ToolCall("c1", "run_python", '{"code": "1"}')], finish_reason="tool_calls")
    m = ScriptedModel([tool], model="m1")
    m.enqueue(ModelError("boom", kind="server", retryable=True), "last")
    assert m.complete([]).tool_calls[0].name == "run_python"
    with pytest.raises(ModelError, match="boom"):
        m.complete([])
    assert m.complete([]).text == "last"
    assert len(m.calls) == 3 and m.pending == 0


def test_replayed_completion_is_a_copy() -> None:
    c = Completion(text="x", tool_calls=[ToolCall("c1", "f", "{}")], finish_reason="tool_calls")
    m = ScriptedModel([c])
    out = m.complete([])
    out.tool_calls[0].arguments = "changed"
    assert c.tool_calls[0].arguments == "{}"


def test_empty_queue_fails_loudly() -> None:
    with pytest.raises(AssertionError, match="no reply queued"):
        ScriptedModel().complete([])


def test_interrupted_and_truncated_completions_are_not_complete() -> None:
    assert not Completion(text="x", finish_reason="stop", interrupted=True).complete
    assert not Completion(text="x", finish_reason="length").complete
    assert not Completion(text="x").complete
    assert Completion(finish_reason="tool_calls").complete


def test_scripted_model_satisfies_the_protocol() -> None:
    m: ModelClient = ScriptedModel(["a"])
    m.model = "switched"
    assert m.complete([]).model == "switched"
