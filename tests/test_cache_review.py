"""Review of the cache-friendly context (issue 13): the first exchange kept across cuts, the
state note left out when nothing changed, counts matched to the server's. Each test is a
case those changes got wrong: a message refused although it fits the window, a retried
request that forgot what was left out, a whole state note sent but never counted, /tokens
figures that did not add up, a /model switch that kept the old model's scale, and a unit
dropped per request (no cache) when the newest exchange outgrew the low-water mark."""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

from llmrepl.context.builder import STATE_PREFIX, Context
from llmrepl.context.tokens import REPLY_PRIMING, ApproxCounter
from llmrepl.engine.protocols import AutoApprove, NullDisplay
from llmrepl.engine.session import Session
from llmrepl.errors import ModelError
from llmrepl.execution.executor import Executor
from llmrepl.model.client import Completion, ScriptedModel, Usage

COUNTER = ApproxCounter()
WHOLE_PREFIX = f"{STATE_PREFIX} now (it replaces earlier state notes):"  # a note that says everything


def _talk(ctx: Context, turns: int, namespace: dict[str, Any]) -> list[dict[str, Any]]:
    """``turns`` questions and answers, each request built as a session would."""
    history: list[dict[str, Any]] = []
    for i in range(turns):
        history.append({"role": "user", "content": f"question {i}: " + "word " * 60})
        ctx.build(history, namespace)
        history.append({"role": "assistant", "content": f"answer {i}: " + "word " * 60})
    return history


def _sent(messages: list[dict[str, Any]]) -> int:
    return sum(COUNTER.count_message(m) for m in messages) + REPLY_PRIMING


def _words_for(tokens: int) -> str:
    """A message of about ``tokens`` tokens (never more)."""
    words = tokens
    while COUNTER.count_message({"role": "user", "content": "big " + "word " * words}) > tokens:
        words -= 5
    return "big " + "word " * words


def test_a_message_that_fits_the_window_is_sent_even_if_the_first_exchange_must_make_room():
    """After a cut the first exchange is kept, but a newest message that needs its room gets
    it: the request goes without the first exchange instead of "not sent"."""
    ctx = Context(context_window=3000, reserve=500)
    namespace = {"x": 1}
    history = _talk(ctx, 30, namespace)
    assert ctx._cut > 0 and "question 0:" in str(ctx.build(history, namespace, commit=False))
    rules = COUNTER.count_message({"role": "system", "content": ctx.system_prompt()})
    history.append({"role": "user", "content": _words_for(ctx.budget - rules - 120)})
    messages = ctx.build(history, namespace)   # raised ModelError(kind="too_long") before
    text = str(messages)
    assert "big word" in text and "question 0:" not in text
    # the model is told what was left out (the first exchange too, so no "after the first")
    assert "earlier messages of this conversation were left out" in messages[-1]["content"]
    assert _sent(messages) <= ctx.budget


def test_every_request_fits_the_budget_with_the_whole_state_note_counted():
    """A request that rewrites the state note whole (a cut, the first exchange left out)
    fits with that note, not with the few changed lines that were counted before; and the
    figure the toolbar and /tokens show is what is sent."""
    namespace = {f"name{i}": list(range(i)) for i in range(30)}   # a digest of ~400 tokens
    for size in (900, 1200, 1500):
        ctx = Context(context_window=3000, reserve=500)
        history = _talk(ctx, 30, namespace)
        history.append({"role": "user", "content": "big " + "word " * size})
        try:
            messages = ctx.build(history, namespace)
        except ModelError as e:
            assert e.kind == "too_long"
            continue
        assert _sent(messages) <= ctx.budget, size
        assert ctx.last is not None and ctx.last.tokens >= _sent(messages) - 8, size


class _RefusesToolsOnce(ScriptedModel):
    """llama.cpp without --jinja, met on the request where history is first cut: the same
    request is sent again without tools."""

    refused = False

    def complete(self, messages: list[dict[str, Any]], **kw: Any) -> Completion:
        if not self.refused and "left out to fit" in str(messages[-1].get("content")):
            self.refused = True
            self.calls.append({"messages": messages, "tools": kw.get("tools"), "model": self.model})
            raise ModelError("tools param requires --jinja flag", kind="no_tools")
        return super().complete(messages, **kw)


def test_a_request_sent_again_after_a_cut_still_says_what_was_left_out():
    replies: list[Any] = []
    for i in range(40):
        replies += [f"```python\nv{i} = {i}\n```", f"v{i} is set. " + "fine " * 30]
    model = _RefusesToolsOnce(replies)
    session = Session(model, Executor(), display=NullDisplay(), context=Context(context_window=3000, reserve=500))
    for i in range(40):
        session.step(f"question {i}: set v{i} " + "please " * 40, AutoApprove())
        if model.refused:
            break
    assert model.refused, "the session must outgrow the window"
    n = next(i for i, c in enumerate(model.calls) if c["tools"] and "left out to fit" in str(c["messages"][-1]))
    first, again = model.calls[n]["messages"], model.calls[n + 1]["messages"]
    assert str(first[:-1]) == str(again[:-1])   # the same request once more
    note = again[-1]["content"]
    # whole, with the count of what was left out and every name (the notes that named the
    # older ones were cut away): not the changes since a note the model no longer sees
    assert re.search(r"\d+ earlier messages of this conversation after the first exchange were left out", note)
    assert WHOLE_PREFIX in note and "- v0: 0" in note and f"- v{i - 1}: {i - 1}" in note


def test_tokens_report_figures_are_the_parts_of_the_next_request():
    """/tokens: the system prompt row is the rules, the digest row the state note the next
    request carries (none when nothing changed), and the rows add up to the total."""
    ctx = Context(context_window=100_000, reserve=500)
    namespace = {f"var{i}": list(range(i * 3)) for i in range(40)}
    history: list[dict[str, Any]] = [{"role": "user", "content": "hi"}]
    ctx.build(history, namespace)
    history += [{"role": "assistant", "content": "hello"}, {"role": "user", "content": "and now?"}]
    ctx.build(history, namespace)
    history.append({"role": "assistant", "content": "nothing changed"})
    report = ctx.report(history, namespace, model="gpt-4o", usage={})
    rows = {name.strip(): int(n.replace(",", "")) for name, n in re.findall(r"^  (\w[\w ]+?) +(-?[\d,]+)$", report, re.M)}
    total = int(re.search(r"total +([\d,]+) of", report).group(1).replace(",", ""))
    rules = COUNTER.count_message({"role": "system", "content": ctx.system_prompt()})
    assert rows["system prompt"] == rules, report
    assert rows["namespace digest"] == 0, report      # the next request has no state note
    assert sum(rows.values()) + REPLY_PRIMING == total, report


class _CountsMore(ScriptedModel):
    """A server whose tokenizer counts 40 % more than the estimate (its usage says so)."""

    def complete(self, messages: list[dict[str, Any]], **kw: Any) -> Completion:
        reply = super().complete(messages, **kw)
        n = int(_sent(messages) * 1.4)
        return dataclasses.replace(reply, usage=Usage(n, 5, n + 5))


def test_a_model_switch_counts_afresh_even_with_the_same_encoding():
    """The scale learnt from one model's server does not carry over to the next model
    (docs/context.md: "A new model (/model) starts again at 1"), also when both use the same
    tiktoken encoding (every local model does) and the counter is not replaced."""
    model = _CountsMore(["hello", "hi again"], model="llama-3-8b")
    session = Session(model, Executor(), display=NullDisplay(), context=Context(context_window=32_000))
    session.step("hi " + "there " * 200, AutoApprove())
    assert 1.3 < session.context.scale < 1.5 and "scaled ×1.4" in session.token_report()
    session.switch_model("qwen2.5-7b")
    assert "scaled" not in session.token_report()
    assert session.context.scale == 1.0
    session.step("and now?", AutoApprove())    # the new model's server is learnt afresh
    assert 1.3 < session.context.scale < 1.5


def _moved(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> bool:
    """``new`` does not begin with ``old``'s messages (all but its last, which carries the
    state note): the server's cached prefix ends early."""
    return json.dumps(old[:-1]) != json.dumps(new[: len(old) - 1])


def test_a_newest_exchange_larger_than_the_low_water_mark_is_cut_once_not_a_unit_per_request():
    """When the newest message alone takes more than the low-water mark, history is still cut
    in one step (down to the newest exchange), not one unit per request: every request of that
    exchange would otherwise start differently and none could come from the server's cache."""
    namespace = {"x": 1}
    ctx = Context(context_window=6000, reserve=500)
    history: list[dict[str, Any]] = []
    requests = []
    for i in range(40):
        history.append({"role": "user", "content": f"question {i}: " + "word " * 60})
        requests.append(ctx.build(history, namespace))
        history.append({"role": "assistant", "content": f"answer {i}: " + "word " * 60})
    history.append({"role": "user", "content": "big " + "word " * int(ctx.budget * 0.45)})
    requests.append(ctx.build(history, namespace))
    big = len(requests) - 1
    for k in range(6):
        history.append({"role": "assistant", "content": f"```python\nstep{k} = {k}\n```"})
        history.append({"role": "user", "content": f"[llmrepl] result {k}: " + "ok " * 40})
        requests.append(ctx.build(history, namespace))
    moves = [n for n in range(big, len(requests)) if _moved(requests[n - 1], requests[n])]
    assert 1 <= len(moves) <= 2, moves   # the cut for the big message (and at most one more)
    assert all(_sent(r) <= ctx.budget for r in requests)
    assert "step5 = 5" in str(requests[-1]) and "big word" in str(requests[-1])
