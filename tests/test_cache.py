"""Requests that servers can cache (issue 13): a stable prefix, trimming in large steps,
and cache use visible in /tokens, the toolbar and the cost.

The real openai SDK talks to tests/fakeserver.py, which reports ``cached_tokens`` as OpenAI
does (the longest prefix shared with an earlier request, 128-token blocks past 1,024)."""

from __future__ import annotations

import json
from typing import Any

from fakeserver import cached_tokens, render_prompt

from llmrepl.context.builder import LOW_WATER, STATE_PREFIX, Context, without_state
from llmrepl.engine.protocols import AutoApprove, NullDisplay
from llmrepl.engine.session import Session
from llmrepl.execution.executor import Executor
from llmrepl.model.client import OpenAIModel, ScriptedModel
from llmrepl.model.pricing import estimate_cost, price_for


def _stable(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A request's messages without the current-state part at the end."""
    *head, last = messages
    content = last.get("content")
    if isinstance(content, str) and content.startswith(STATE_PREFIX):
        return head
    if not (isinstance(content, str) and "\n\n" + STATE_PREFIX in content):
        return messages  # nothing changed since the last note: no note this time
    return [*head, {**last, "content": without_state(content)}]


def _is_prefix(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> bool:
    """``old`` (stable part) is a byte-prefix of ``new`` as serialised for the server: every
    message equal (same keys in the same order), the last one possibly continued."""
    if len(old) > len(new):
        return False
    for a, b in zip(old[:-1], new):
        if json.dumps(a) != json.dumps(b):
            return False
    return render_prompt({"messages": new}).startswith(render_prompt({"messages": old}).removesuffix("<|end|>"))


def _sdk_session(server: Any, window: int) -> Session:
    model = OpenAIModel("fake-model", base_url=server.base_url, api_key="k", max_retries=0)
    return Session(model, Executor(), display=NullDisplay(), context=Context(context_window=window, reserve=500))


def test_after_a_cell_changes_a_variable_the_next_request_extends_the_previous_one(server):
    session = _sdk_session(server, 100_000)
    for i in range(4):
        server.reply(tool_calls=[("run_python", json.dumps({"code": f"v{i} = {i} * 7\nprint(v{i})"}))])
        server.reply(f"v{i} is set.")
        session.step(f"set v{i} please", AutoApprove())
    reqs = server.requests
    assert len(reqs) == 8
    for prev, new in zip(reqs, reqs[1:]):
        # the same tools, the same request shape and key order
        assert json.dumps(prev["tools"]) == json.dumps(new["tools"])
        assert [k for k in prev if k != "messages"] == [k for k in new if k != "messages"]
        # byte for byte the previous request, only the trailing current state differs
        assert _is_prefix(_stable(prev["messages"]), new["messages"]), (prev["messages"], new["messages"])
    # the rules never change; the namespace is reported after the history, and is current
    assert len({json.dumps(r["messages"][0]) for r in reqs}) == 1
    assert "v3" not in reqs[0]["messages"][0]["content"]
    assert "- v3: 21" in reqs[-1]["messages"][-1]["content"]


def test_the_fake_server_reports_cached_prefixes_and_usage_shows_them(server):
    """cached_tokens grow with the session: /tokens and the toolbar-facing usage show them."""
    server.measure_usage = True
    session = _sdk_session(server, 100_000)
    for i in range(6):
        server.reply(tool_calls=[("run_python", json.dumps({"code": f"w{i} = list(range({i}))\n" + "# pad\n" * 400}))])
        server.reply("ok " * 50)
        session.step(f"step {i} " + "please go on. " * 40, AutoApprove())
    usage = session.usage
    assert usage["cached_tokens"] > 0.8 * usage["prompt_tokens"], usage
    report = session.token_report()
    share = f"{usage['cached_tokens'] / usage['prompt_tokens']:.0%}"
    assert f"{usage['cached_tokens']:,} prompt tokens ({share}) served from the server's cache" in report


def test_cached_tokens_follow_openais_blocks():
    base = "a" * 4 * 1000
    assert cached_tokens(base + "x", [base + "y"]) == 0                  # under 1,024 tokens
    long = "a" * 4 * 1300
    assert cached_tokens(long + "x", [long + "y"]) == 1024 + 256         # 1,300 -> 1,280
    assert cached_tokens(long, ["b" + long]) == 0                         # no shared prefix


def test_trimming_cuts_in_large_steps_so_the_prefix_changes_only_at_the_cuts():
    replies: list[Any] = []
    for i in range(80):
        replies += [f"```python\nv{i} = {i}\nprint('value', v{i}, 'x' * 200)\n```", f"done {i} " + "words " * 30]
    model = ScriptedModel(replies)
    ctx = Context(context_window=4000, reserve=500)
    session = Session(model, Executor(), display=NullDisplay(), context=ctx)
    for i in range(80):
        session.step(f"question {i} " + "detail " * 20, AutoApprove())
    calls = [c["messages"] for c in model.calls]
    changes = [n for n, (a, b) in enumerate(zip(calls, calls[1:]), 1) if not _is_prefix(_stable(a), b)]
    assert changes, "a long session at a small window must trim"
    # few cuts, each down to the low-water mark: many requests keep one prefix between cuts
    assert len(changes) <= len(calls) // 8, changes
    for n in changes:
        sent = sum(ctx.counter.count_message(m) for m in calls[n])
        assert sent <= ctx.budget * LOW_WATER + 600, (n, sent)      # + the state and newest step
        assert "left out to fit" in calls[n][-1]["content"]
    for n, msgs in enumerate(calls):
        assert sum(ctx.counter.count_message(m) for m in msgs) <= ctx.budget
        question = n // 2
        assert any(f"question {question} " in (m.get("content") or "") for m in msgs)  # newest kept


def test_trimming_never_splits_a_tool_call_from_its_result(server):
    session = _sdk_session(server, 3000)
    for i in range(30):
        server.reply(tool_calls=[("run_python", json.dumps({"code": f"t{i} = {i}\nprint('y' * 300)"}))])
        server.reply(f"set t{i}")
        session.step(f"set t{i} " + "now " * 30, AutoApprove())
    for req in server.requests:
        msgs = req["messages"]
        ids = {c["id"] for m in msgs for c in m.get("tool_calls") or []}
        answered = {m["tool_call_id"] for m in msgs if m["role"] == "tool"}
        assert ids == answered
        assert msgs[1]["role"] == "user"  # the history starts at a unit's start


def test_cached_input_is_priced_at_the_cached_rate():
    assert price_for("gpt-5.4-mini") is not None  # the default model has a price
    full = estimate_cost("gpt-5.4-mini", 1_000_000, 0)
    cached = estimate_cost("gpt-5.4-mini", 1_000_000, 0, cached_tokens=900_000)
    assert full == 0.75 and cached is not None and abs(cached - (0.075 + 0.9 * 0.075)) < 1e-9
    ctx = Context()
    report = ctx.report([{"role": "user", "content": "hi"}], {}, model="gpt-5.4-mini",
                        usage={"requests": 2, "prompt_tokens": 1_000_000, "completion_tokens": 0,
                               "cached_tokens": 900_000})
    assert "≈ $0.1425" in report and "900,000 prompt tokens (90%) served from the server's cache" in report


def test_a_retried_request_carries_one_state_note_with_the_changes():
    """The same request built twice (a retry after the server said the context was full)
    carries one note, and it still holds what changed."""
    ctx = Context(context_window=100_000)
    history: list[dict[str, Any]] = [{"role": "user", "content": "hi"}]
    ctx.observe({})
    ctx.build(history, {})
    history += [{"role": "assistant", "content": "```python\nspeed = 3\n```"},
                {"role": "user", "content": "[llmrepl] llmrepl ran cell 1 (succeeded)."}]
    ctx.observe({"speed": 3})
    first = ctx.build(history, {"speed": 3})
    again = ctx.build(history, {"speed": 3})
    assert again == first
    assert again[-1]["content"].count(STATE_PREFIX) == 1 and "- speed: 3" in again[-1]["content"]


def test_gpt_5_6_cache_writes_cost_more_than_input_and_show_in_tokens(server):
    """GPT-5.6 bills input written to the cache at 1.25x input: usage's cache_write_tokens is
    read through the real SDK, counted for the session, priced, and shown by /tokens."""
    write = estimate_cost("gpt-5.6-terra", 1_000_000, 0, cache_write_tokens=1_000_000)
    read = estimate_cost("gpt-5.6-terra", 1_000_000, 0, cached_tokens=1_000_000)
    assert write is not None and abs(write - 2.5 * 1.25) < 1e-9
    assert read is not None and abs(read - 0.25) < 1e-9
    assert estimate_cost("gpt-5.4-mini", 1_000_000, 0, cache_write_tokens=1_000_000) == 0.75  # no write premium
    model = OpenAIModel("gpt-5.6-terra", base_url=server.base_url, api_key="k", max_retries=0)
    session = Session(model, Executor(), display=NullDisplay(), context=Context(context_window=100_000))
    server.reply("first", usage=(2000, 10, 0, 1800))
    server.reply("second", usage=(2100, 10, 1800, 0))
    session.step("hello", AutoApprove())
    session.step("again", AutoApprove())
    assert session.usage["cache_write_tokens"] == 1800 and session.usage["cached_tokens"] == 1800
    report = session.token_report()
    assert "1,800 prompt tokens written to the server's cache (priced at its write rate)" in report
    # of 4,100 prompt tokens: 500 fresh at $2.50, 1,800 written at $3.125, 1,800 read at
    # $0.25; 20 out at $15 (per 1M)
    cost = (500 * 2.5 + 1800 * 3.125 + 1800 * 0.25 + 20 * 15) / 1e6
    assert f"≈ ${cost:,.4f}" in report


def test_a_breakpoint_marks_the_end_of_the_stable_system_prompt(server):
    """Where the endpoint takes explicit cache breakpoints (OpenAI, GPT-5.6 on), one marks the
    end of the system prompt, the part no trim changes; other servers get plain messages."""
    on = OpenAIModel("fake-model", base_url=server.base_url, api_key="k", max_retries=0, cache_breakpoints="on")
    session = Session(on, Executor(), display=NullDisplay(), context=Context(context_window=100_000))
    server.reply("a")
    server.reply("b")
    session.step("one", AutoApprove())
    session.step("two", AutoApprove())
    first, second = (r["messages"][0] for r in server.requests)
    assert first == second  # the marked prefix is the same in every request
    assert first["role"] == "system" and isinstance(first["content"], list)
    assert first["content"][0]["prompt_cache_breakpoint"] == {"mode": "explicit"}
    assert first["content"][0]["text"].startswith("You are")
    assert all(isinstance(m.get("content"), str) for r in server.requests for m in r["messages"][1:])
    # auto: only OpenAI's own endpoint with a model that takes them
    assert OpenAIModel("gpt-5.6-terra", api_key="k")._breakpoints()
    assert OpenAIModel("gpt-6", api_key="k")._breakpoints()
    assert not OpenAIModel("gpt-5.4-mini", api_key="k")._breakpoints()
    assert not OpenAIModel("gpt-5.6-terra", base_url=server.base_url, api_key="k")._breakpoints()
    assert not OpenAIModel("gpt-5.6-terra", api_key="k", cache_breakpoints="off")._breakpoints()


def test_a_server_that_rejects_the_breakpoint_gets_requests_without_it(server):
    model = OpenAIModel("fake-model", base_url=server.base_url, api_key="k", max_retries=0, cache_breakpoints="on")
    session = Session(model, Executor(), display=NullDisplay(), context=Context(context_window=100_000))
    server.fail(400, "Unrecognized request argument supplied: prompt_cache_breakpoint",
                code="unsupported_parameter", param="messages[0].content[0].prompt_cache_breakpoint")
    server.reply("fine")
    server.reply("still fine")
    session.step("one", AutoApprove())
    session.step("two", AutoApprove())
    assert [isinstance(r["messages"][0]["content"], list) for r in server.requests] == [True, False, False]
    assert session.messages[-1]["content"] == "still fine"


def test_a_tool_result_does_not_repeat_the_code_of_the_call_unless_it_was_edited(server):
    """The call's arguments already hold the code: quoting it again in the result would make
    every later request longer. Code the user edited is quoted (the model never saw it)."""
    from llmrepl.engine.protocols import Decision

    class EditOnce:
        def __init__(self) -> None:
            self.calls = 0

        def review(self, code: str, **_: Any) -> Decision:
            self.calls += 1
            if self.calls == 2:
                return Decision("run", code="edited_marker = 2\nprint(edited_marker)", edited=True)
            return Decision("run", code=code)

    session = _sdk_session(server, 100_000)
    reviewer = EditOnce()
    server.reply(tool_calls=[("run_python", json.dumps({"code": "orig_marker = 1\nprint(orig_marker)"}))])
    server.reply("done")
    session.step("first", reviewer)
    server.reply(tool_calls=[("run_python", json.dumps({"code": "unused_marker = 3"}))])
    server.reply("done")
    session.step("second", reviewer)
    tools = [m["content"] for m in session.messages if m.get("role") == "tool"]
    assert len(tools) == 2
    assert "orig_marker = 1" not in tools[0] and "the code of your call, unchanged" in tools[0]
    assert "1" in tools[0].split("Output")[1]
    assert "edited_marker = 2" in tools[1] and "The user edited your code" in tools[1]


def _data_session(server: Any, window: int, turns: int, first_lines: int = 6) -> Session:
    """``turns`` questions, each answered by a run_python call that prints ~lines of data."""
    session = _sdk_session(server, window)
    for i in range(turns):
        lines = first_lines if i == 0 else 6
        code = f"d{i} = {i}\nfor k in range({lines}):\n    print('row', k, 'value', k * {i}, 'text ' * 8)"
        server.reply(tool_calls=[("run_python", json.dumps({"code": code}))])
        server.reply(f"d{i} is set; " + "the rows look fine. " * 6)
        session.step(f"question {i}: " + "please look at the next part of the data. " * 6, AutoApprove())
    return session


def test_counts_follow_the_server_so_a_tokenizer_that_counts_more_never_overflows(server):
    """A llama.cpp model's tokenizer may count 40 % more tokens than the estimate: once the
    server reported its counts, requests are fitted in its tokens, so its context is never
    exceeded (the server here refuses as llama.cpp does) and history is cut instead."""
    server.measure_usage = True
    server.token_chars = 2.6   # more tokens per character than OpenAI's tokenizers
    server.n_ctx = 4096
    session = _data_session(server, 4096, 24)
    assert server.overflows == 0, "a request exceeded the server's context"
    assert 1.2 < session.context.scale <= 2.0
    assert any("left out to fit" in json.dumps(r["messages"][-1]) for r in server.requests)  # it was cut
    assert "scaled ×" in session.token_report()


def test_a_server_that_counts_fewer_tokens_lets_more_history_in_and_odd_counts_are_ignored(server):
    server.measure_usage = True
    server.token_chars = 6   # fewer tokens per character than the estimate
    session = _data_session(server, 100_000, 6, first_lines=60)  # long enough to be cached
    assert 0.85 <= session.context.scale < 1.0
    # a server that reports something else than the prompt's size (a scripted 10) is ignored
    server.measure_usage = False
    other = _data_session(server, 100_000, 3)
    assert other.context.scale == 1.0 and "scaled" not in other.token_report()


def test_a_lower_count_is_believed_only_from_a_server_that_reports_its_cache_use():
    """Some servers (older Ollama) leave the cached prefix out of prompt_tokens and report no
    cache use: a count under the estimate from them would let requests grow past the window."""
    ctx = Context(context_window=100_000)
    history = [{"role": "user", "content": "please look at the data. " * 200}]
    ctx.build(history, {})
    sent = ctx.last.tokens if ctx.last else 0
    ctx.observe_usage(int(sent * 0.7))                    # lower, and no cache use reported
    assert ctx.scale == 1.0
    ctx.observe_usage(int(sent * 0.9), cached_tokens=512)  # lower, from a server with a cache
    assert 0.85 <= ctx.scale < 1.0
    ctx.observe_usage(int(sent * 1.3))                    # higher is believed from any server
    assert ctx.scale >= 1.29


def test_the_first_exchange_stays_across_cuts_so_the_cached_prefix_outlives_them(server):
    """The first exchange (usually the task) is kept when older history is cut: each request
    after a cut still begins with it byte for byte, so the server serves that prefix from its
    cache at the cut (with OpenAI's rule, past 1,024 tokens)."""
    server.measure_usage = True
    session = _data_session(server, 6000, 24, first_lines=30)
    reqs = [r["messages"] for r in server.requests]
    first = reqs[2][1:5]   # question 0, its call, the result and the answer, as first sent
    cuts = [n for n, m in enumerate(reqs) if "after the first exchange" in json.dumps(m[-1])]
    assert cuts, "the session must outgrow the window"
    for n in cuts:
        assert reqs[n][1:5] == first
        assert "question 1:" not in json.dumps(reqs[n])
        assert server.cached[n] >= 1024, (n, server.cached[n])
    assert "question 0:" in json.dumps(reqs[-1]) and "question 23:" in json.dumps(reqs[-1])
    assert session.context.last is not None and session.context.last.tokens <= session.context.budget


def test_a_first_exchange_too_big_to_keep_is_cut_like_the_rest(server):
    session = _data_session(server, 6000, 20, first_lines=120)
    last = json.dumps(server.requests[-1]["messages"])
    assert "question 0:" not in last and "question 19:" in last
    assert not any("after the first exchange" in json.dumps(r["messages"]) for r in server.requests)
    assert session.context.last is not None


def test_a_message_after_which_nothing_changed_carries_no_state_note(server):
    session = _sdk_session(server, 100_000)
    server.reply(tool_calls=[("run_python", json.dumps({"code": "speed = 3"}))])
    server.reply("done")
    session.step("set speed", AutoApprove())
    server.reply("it is 3")
    session.step("what is speed?", AutoApprove())
    msgs = server.requests[-1]["messages"]
    assert msgs[-1]["content"] == "what is speed?"              # nothing changed since: no note
    assert "- speed: 3" in json.dumps(msgs[:-1])                   # the note after the cell stays
    assert "the latest\nnote is current" in msgs[0]["content"].replace(" \\\n", " ") or \
        "no new note means nothing changed" in msgs[0]["content"]  # the rules explain the notes
