"""The run/feed-back loop, driven by a scripted model that records every request."""

from __future__ import annotations

import json

from llmrepl.context.builder import without_state
from llmrepl.engine.protocols import AutoApprove, Decision, NoRun, NullDisplay, ScriptedReviewer
from llmrepl.engine.session import Session
from llmrepl.errors import ModelError
from llmrepl.execution.executor import Executor
from llmrepl.model.client import Completion, ScriptedModel, ToolCall
from llmrepl.store.journal import Journal, read_journal


def make(*replies, **kw):
    model = ScriptedModel(list(replies))
    display = NullDisplay()
    session = Session(model, Executor(), display=display, **kw)
    return session, model, display


def test_answer_without_code_ends_the_loop():
    session, model, _ = make("Hello! How can I help?")
    turn = session.step("hi", ScriptedReviewer([]))
    assert turn.stop == "done" and turn.steps == 1 and not turn.cells
    sent = model.calls[0]["messages"]
    assert sent[0]["role"] == "system" and {**sent[-1], "content": without_state(sent[-1]["content"])} == {"role": "user", "content": "hi"}
    assert model.calls[0]["tools"][0]["function"]["name"] == "run_python"


def test_code_runs_and_its_result_goes_back_to_the_model():
    session, model, _ = make("```python\nx = 6 * 7\nx\n```", "x is 42.")
    turn = session.step("compute", ScriptedReviewer(["run"]))
    assert [c.value_repr for c in turn.cells] == ["42"]
    assert session.executor.namespace["x"] == 42
    feedback = model.calls[1]["messages"][-1]
    assert feedback["role"] == "user"
    assert "x = 6 * 7" in feedback["content"] and "42" in feedback["content"]
    assert turn.stop == "done" and turn.steps == 2


def test_second_message_uses_a_variable_from_the_first():
    session, model, _ = make(
        "```python\ndata = [3, 1, 2]\nprint(len(data))\n```", "Made a list.",
        "```python\nsorted(data)\n```", "Sorted.",
    )
    session.step("make data", ScriptedReviewer(["run"]))
    turn = session.step("sort it", ScriptedReviewer(["run"]))
    assert turn.cells[0].value_repr == "[1, 2, 3]"
    # the second request carries the whole history, and a state note tells of `data`
    req = model.calls[2]["messages"]
    assert "- data: [3, 1, 2]" in json.dumps(req)  # in the state note after the cell that made it
    assert [m["role"] for m in req[1:]] == ["user", "assistant", "user", "assistant", "user"]


def test_traceback_goes_back_and_model_can_fix_it():
    session, model, _ = make("```python\n1/0\n```", "```python\n1/1\n```", "fixed")
    turn = session.step("divide", ScriptedReviewer(["run", "run"]))
    assert turn.cells[0].error_type == "ZeroDivisionError"
    assert "ZeroDivisionError" in model.calls[1]["messages"][-1]["content"]
    assert turn.cells[1].value_repr == "1.0"


def test_declined_cell_ends_loop_and_next_request_says_so():
    session, model, _ = make("```python\nimport os\n```", "ok")
    turn = session.step("do it", ScriptedReviewer(["decline"]))
    assert turn.stop == "declined" and not turn.cells and len(model.calls) == 1
    session.step("why not?", ScriptedReviewer([]))
    last = model.calls[1]["messages"][-1]
    assert last["role"] == "user"
    assert "not run" in last["content"] and "declined" in last["content"]
    assert without_state(last["content"]).endswith("why not?")  # merged: the note then the message


def test_edited_cell_runs_the_edit_and_model_is_told():
    session, model, _ = make("```python\ny = 1\n```", "done")
    turn = session.step("go", ScriptedReviewer([("edit", "y = 2")]))
    assert session.executor.namespace["y"] == 2
    fb = model.calls[1]["messages"][-1]["content"]
    assert "edited" in fb and "y = 2" in fb and "y = 1" not in fb
    assert turn.cells[0].source == "y = 2"


def test_always_runs_this_and_later_cells_without_asking():
    session, model, _ = make("```python\na = 1\n```", "```python\nb = 2\n```", "done")
    reviewer = ScriptedReviewer(["always"])
    session.step("go", reviewer)
    assert session.auto_run and session.executor.namespace["b"] == 2
    assert len(reviewer.seen) == 1


def test_max_steps_stops_the_loop_and_says_so():
    replies = [f"```python\nn = {i}\n```" for i in range(10)]
    session, model, display = make(*replies, max_steps=3)
    turn = session.step("loop forever", AutoApprove())
    assert turn.stop == "max_steps" and turn.steps == 3 and len(model.calls) == 3
    assert any("3 model calls" in n for n in display.notices)


def test_norun_reviewer_shows_code_but_never_runs_it():
    session, model, display = make("```python\nboom = 1\n```")
    turn = session.step("x", NoRun())
    assert "boom" not in session.executor.namespace and turn.stop == "declined"
    assert any("--yes" in n for n in display.notices)


def test_other_languages_are_shown_never_run():
    session, model, display = make("```bash\nrm -rf /tmp/x\n```")
    turn = session.step("x", ScriptedReviewer([]))
    assert turn.stop == "done" and not turn.cells
    assert any("bash" in n and "Python only" in n for n in display.notices)


def test_unterminated_block_is_not_run_and_user_is_told():
    session, model, display = make(Completion(text="```python\nx = 1\n", finish_reason="length"))
    turn = session.step("x", ScriptedReviewer(["run"]))
    assert turn.stop == "cut_off" and "x" not in session.executor.namespace
    assert any("cut off" in n and "not run" in n for n in display.notices)


def test_tool_call_runs_and_is_answered_with_a_tool_message():
    call = ToolCall(id="call_1", name="run_python", arguments=json.dumps({"code": "z = 5\nz * 2"}))
    session, model, _ = make(Completion(tool_calls=[call], finish_reason="tool_calls"), "z doubled is 10")
    turn = session.step("double", ScriptedReviewer(["run"]))
    assert turn.cells[0].value_repr == "10"
    sent = model.calls[1]["messages"]
    assert sent[-2]["tool_calls"][0]["id"] == "call_1"
    assert sent[-1]["role"] == "tool" and sent[-1]["tool_call_id"] == "call_1" and "10" in sent[-1]["content"]


def test_declined_tool_call_still_gets_a_tool_message():
    calls = [ToolCall("c1", "run_python", '{"code": "a=1"}'), ToolCall("c2", "run_python", '{"code": "b=1"}')]
    session, model, _ = make(Completion(tool_calls=calls, finish_reason="tool_calls"), "ok")
    turn = session.step("x", ScriptedReviewer(["decline"]))
    assert turn.stop == "declined"
    session.step("next", ScriptedReviewer([]))
    tools = [m for m in model.calls[1]["messages"] if m["role"] == "tool"]
    assert [t["tool_call_id"] for t in tools] == ["c1", "c2"] and all("Not run" in t["content"] for t in tools)


def test_broken_tool_arguments_are_reported_not_run():
    call = ToolCall("c1", "run_python", '{"code": "x = 1')
    session, model, display = make(Completion(tool_calls=[call], finish_reason="tool_calls"), "sorry")
    turn = session.step("x", ScriptedReviewer([]))
    assert not turn.cells and "x" not in session.executor.namespace
    tool_msg = model.calls[1]["messages"][-1]
    assert tool_msg["role"] == "tool" and "Error" in tool_msg["content"]
    json.loads(model.calls[1]["messages"][-2]["tool_calls"][0]["function"]["arguments"])


def test_model_error_on_first_call_forgets_the_message_so_it_can_be_resent():
    session, model, _ = make(ModelError("rate limited", kind="rate_limit", retryable=True), "hello")
    turn = session.step("hi", ScriptedReviewer([]))
    assert turn.stop == "error" and turn.error.kind == "rate_limit"
    assert session.messages == []
    session.step("hi", ScriptedReviewer([]))
    assert [without_state(m["content"]) for m in model.calls[1]["messages"][1:]] == ["hi"]


def test_interrupted_answer_is_kept_marked_and_not_run():
    session, model, display = make(Completion(text="```python\nq = 1\n```", interrupted=True))
    turn = session.step("x", ScriptedReviewer([]))
    assert turn.stop == "interrupted" and "q" not in session.executor.namespace
    assert "interrupted" in session.messages[-1]["content"]


def test_run_direct_joins_the_conversation():
    session, model, _ = make("noted")
    session.run_direct("w = 3\nprint('w is', w)")
    session.step("what is w?", ScriptedReviewer([]))
    content = model.calls[0]["messages"][-1]["content"]
    assert "/py" in content and "w is 3" in content and without_state(content).endswith("what is w?")


def test_undo_forgets_the_last_exchange():
    session, model, _ = make("one", "two", "three")
    session.step("first", ScriptedReviewer([]))
    session.step("second", ScriptedReviewer([]))
    assert session.undo().removed == 2
    session.step("again", ScriptedReviewer([]))
    contents = [without_state(m["content"]) for m in model.calls[2]["messages"][1:]]
    assert contents == ["first", "one", "again"]


def test_journal_records_everything_needed_to_rebuild(tmp_path):
    path = tmp_path / "s.jsonl"
    session, model, _ = make("```python\nv = 9\nprint(v)\n```", "nine", journal=Journal(path))
    session.step("make v", ScriptedReviewer(["run"]))
    records, bad = read_journal(path)
    kinds = [r["event"] for r in records if r["event"] not in ("message", "assistant_partial")]
    assert bad == 0
    assert kinds == ["user", "assistant", "decision", "cell_start", "cell_end", "assistant"]
    messages = [r["message"] for r in records if r["event"] == "message"]
    assert messages == session.messages  # enough to rebuild the conversation exactly
    end = [r for r in records if r["event"] == "cell_end"][0]
    assert end["output"] == "9\n" and end["cell"] == 1
    assert (path.stat().st_mode & 0o777) == 0o600


def test_full_output_stays_in_the_namespace_as_out_n():
    session, model, _ = make("```python\nfor i in range(5000):\n    print('line', i)\n```",
                             "```python\nlen(_out[1].splitlines())\n```", "ok", max_output_chars=500)
    turn = session.step("print a lot", AutoApprove())
    fed_back = model.calls[1]["messages"][-1]["content"]
    assert "lines, " in fed_back and "left out" in fed_back and len(fed_back) < 2000
    assert turn.cells[1].value_repr == "5000"  # the model can look at any part later
    assert "_out" not in session.executor.user_variables()


def test_risky_cell_shows_labels_and_auto_run_still_asks():
    session, model, display = make("```python\nimport subprocess\nsubprocess.run(['true'])\n```", "ok",
                                   auto_run=True)
    reviewer = ScriptedReviewer(["decline"])
    turn = session.step("run a process", reviewer)
    assert reviewer.seen and turn.stop == "declined"  # asked despite auto-run
    assert any("run processes" in n for n in display.notices)


def test_auto_run_risky_runs_high_risk_cells_without_asking():
    session, model, display = make("```python\nimport os\nhome = os.environ.get('HOME')\n```", "ok",
                                   auto_run=True, auto_run_risky=True)
    reviewer = ScriptedReviewer([])
    session.step("read env", reviewer)
    assert not reviewer.seen and "home" in session.executor.namespace
    assert any("read secrets" in n for n in display.notices)


def test_low_risk_labels_do_not_stop_auto_run(tmp_path):
    target = tmp_path / "out.txt"
    session, model, display = make(f"```python\nwith open({str(target)!r}, 'w') as f:\n    f.write('x')\n```", "ok",
                                   auto_run=True)
    reviewer = ScriptedReviewer([])
    session.step("write", reviewer)
    assert not reviewer.seen and target.exists()
    assert any("write files" in n for n in display.notices)


def test_undo_with_snapshots_rewinds_the_namespace(tmp_path):
    from llmrepl.store.snapshots import SnapshotStore

    session, model, _ = make("```python\na = 1\n```", "one", "```python\na = 2\nb = 3\n```", "two")
    session.enable_snapshots(SnapshotStore(tmp_path / "snaps"))
    session.step("set a", AutoApprove())
    session.step("change a, add b", AutoApprove())
    ns = session.executor.namespace
    assert (ns["a"], ns["b"]) == (2, 3)
    result = session.undo()
    assert result.rewound and "restored" in result.summary
    assert ns["a"] == 1 and "b" not in ns
    session.undo()
    assert "a" not in ns  # back to before the first cell


def test_undo_with_snapshots_reports_what_could_not_be_rewound(tmp_path):
    from llmrepl.store.snapshots import SnapshotStore

    session, model, display = make("```python\nimport threading\nlock = threading.Lock()\nn = 1\n```", "ok",
                                   "```python\nn = 2\nlock = threading.RLock()\n```", "ok")
    session.enable_snapshots(SnapshotStore(tmp_path / "snaps"))
    session.step("make a lock", AutoApprove())
    assert any("lock" in n and "undo cannot rewind" in n for n in display.notices)
    session.step("change both", AutoApprove())
    result = session.undo()
    # n is rewound; the lock could not be saved, so it stays as it is now, and the summary says so
    assert session.executor.namespace["n"] == 1 and "lock" in result.summary


def test_context_length_error_refits_with_less_and_retries_once():
    session, model, display = make(ModelError("too long", kind="context_length"), "fine now")
    for i in range(30):
        session.messages.append({"role": "user", "content": f"old question {i} " + "x" * 400})
        session.messages.append({"role": "assistant", "content": f"old answer {i}"})
    before = session.context.budget
    turn = session.step("new question", ScriptedReviewer([]))
    assert turn.stop == "done" and len(model.calls) == 2
    assert session.context.budget < before
    assert len(model.calls[1]["messages"]) <= len(model.calls[0]["messages"])
    assert any("context window" in n for n in display.notices)


def test_newest_message_too_big_is_not_sent_and_user_is_told():
    from llmrepl.context.builder import Context

    model = ScriptedModel([])
    session = Session(model, Executor(), display=NullDisplay(), context=Context(context_window=2000, reserve=500))
    turn = session.step("word " * 4000, ScriptedReviewer([]))
    assert turn.stop == "error" and turn.error.kind == "too_long" and not model.calls
    assert "context_window" in str(turn.error) and session.messages == []


def test_long_session_stays_inside_a_small_window_with_newest_message_present():
    from llmrepl.context.builder import Context

    replies = []
    for i in range(60):
        replies += [f"```python\nv{i} = {i}\nprint('value', v{i})\n```", f"done {i}"]
    model = ScriptedModel(replies)
    session = Session(model, Executor(), display=NullDisplay(), context=Context(context_window=3000, reserve=500))
    for i in range(60):
        session.step(f"question {i}", AutoApprove())
    for call in model.calls:
        total = sum(session.context.counter.count_message(m) for m in call["messages"])
        assert total <= 2500
    last = model.calls[-1]["messages"]
    assert any("question 59" in (m.get("content") or "") for m in last)
    firsts = [(m.get("content") or "").split("\n")[0] for m in last]
    assert "question 1" not in firsts  # the oldest were cut,
    assert "question 0" in firsts      # except the first exchange
    # the model is told so, in the state note of the request where the cut happened
    assert any("left out" in (c["messages"][-1].get("content") or "") for c in model.calls)


def test_tokens_report_shows_parts_budget_and_usage():
    from llmrepl.model.client import Usage

    session, model, _ = make(Completion(text="hi", finish_reason="stop", usage=Usage(1200, 300, 1500)))
    session.step("hello", ScriptedReviewer([]))
    report = session.token_report()
    for part in ("system prompt", "namespace digest", "history", "newest message", "total", "kept for the answer"):
        assert part in report
    assert "1,200 prompt + 300 completion tokens in 1 request(s)" in report


def test_streamed_lines_are_journaled_before_they_are_shown(tmp_path):
    path = tmp_path / "s.jsonl"
    events = []

    class Watching(NullDisplay):
        def answer_text(self, delta):
            events.append(("shown", delta))

    journal = Journal(path)
    original = journal.append

    def append(event, **fields):
        if event == "assistant_partial":
            events.append(("journaled", fields["text"]))
        original(event, **fields)

    journal.append = append
    session = Session(ScriptedModel(["line one\nline two\nend"]), Executor(), display=Watching(), journal=journal)
    session.step("talk", ScriptedReviewer([]))
    journaled = "".join(t for kind, t in events if kind == "journaled")
    assert "line one\n" in journaled and "line two\n" in journaled
    first_shown_newline = next(i for i, (k, t) in enumerate(events) if k == "shown" and "\n" in t)
    assert events[first_shown_newline - 1][0] == "journaled"


def test_ctrl_c_after_a_tool_call_cell_still_answers_the_call():
    calls = [ToolCall("c1", "run_python", '{"code": "v = 1"}')]

    class Breaking(NullDisplay):
        def cell_result(self, result):
            raise KeyboardInterrupt  # lands in llmrepl's own work right after the cell

    model = ScriptedModel([Completion(tool_calls=calls, finish_reason="tool_calls"), "ok"])
    session = Session(model, Executor(), display=Breaking())
    turn = session.step("go", AutoApprove())
    assert turn.stop == "interrupted" and session.executor.namespace["v"] == 1
    session.display = NullDisplay()
    session.step("next", ScriptedReviewer([]))
    sent = model.calls[1]["messages"]
    i = next(k for k, m in enumerate(sent) if m.get("tool_calls"))
    assert sent[i + 1]["role"] == "tool" and sent[i + 1]["tool_call_id"] == "c1"


def test_ctrl_c_in_the_middle_of_the_loop_leaves_a_valid_history():
    calls = [ToolCall("c1", "run_python", '{"code": "w = 1"}'), ToolCall("c2", "run_python", '{"code": "w = 2"}')]

    class Reviewer:
        def review(self, code, *, cell, high_risk=False):
            if "w = 2" in code:
                raise SystemError("unreachable")
            return Decision("run", code)

    model = ScriptedModel([Completion(tool_calls=calls, finish_reason="tool_calls"), "ok"])
    session = Session(model, Executor(), display=NullDisplay())
    original = session.run_cell

    def run_then_interrupt(code):
        original(code)
        raise KeyboardInterrupt

    session.run_cell = run_then_interrupt
    turn = session.step("go", Reviewer())
    assert turn.stop == "interrupted"
    tool_ids = [m["tool_call_id"] for m in session.messages if m["role"] == "tool"]
    assert sorted(tool_ids) == ["c1", "c2"]


def test_snapshots_never_bring_back_what_was_reset_or_undone(tmp_path):
    from llmrepl.engine.resume import _from_snapshot
    from llmrepl.store.snapshots import SnapshotStore

    session, model, _ = make("```python\nold_secret = 1\n```", "a", "```python\nfresh = 2\n```", "b",
                             "```python\nundone_var = 3\n```", "c")
    store = SnapshotStore(tmp_path / "snaps")
    session.enable_snapshots(store)
    session.step("one", AutoApprove())
    session.reset()
    session.step("two", AutoApprove())
    session.undo()  # back to just after the reset: empty
    assert "old_secret" not in session.executor.namespace and "fresh" not in session.executor.namespace
    session.step("three", AutoApprove())
    session.undo()
    assert "undone_var" not in session.executor.namespace
    # a later resume from the newest snapshot sees the same namespace as the live session
    other = Session(ScriptedModel([]), Executor(), display=NullDisplay())
    other.snapshots = store
    assert _from_snapshot(other, other.display)
    assert not ({"old_secret", "fresh", "undone_var"} & set(other.executor.user_variables()))


def test_a_resume_never_restores_a_snapshot_older_than_the_last_cell(tmp_path):
    from llmrepl.engine.resume import resume
    from llmrepl.store.snapshots import SnapshotError, SnapshotStore
    from llmrepl.store.transcript import load_session

    path = tmp_path / "s.jsonl"
    session = Session(ScriptedModel(["```python\na = 1\n```", "ok", "```python\nb = 2\n```", "ok"]), Executor(),
                      display=NullDisplay(), journal=Journal(path))
    store = SnapshotStore(tmp_path / "snaps")
    session.enable_snapshots(store)
    session.step("one", AutoApprove())

    def disk_full(*args: object, **kwargs: object) -> None:
        raise SnapshotError("disk full")

    store.save = disk_full  # type: ignore[method-assign]  # snapshots turn off: cell 2 has none
    session.step("two", AutoApprove())
    session.journal.close()
    again = Session(ScriptedModel([]), Executor(), display=NullDisplay(), journal=Journal(None))
    again.enable_snapshots(SnapshotStore(tmp_path / "snaps"))
    resume(again, load_session(path), again.display, confirm=lambda question, listing: True)
    assert again.executor.namespace["b"] == 2  # cell 2 re-run, not lost behind the snapshot of cell 1
    assert "rebuilt by re-running 2 earlier cells" in again.messages[-1]["content"]


def test_an_internal_error_costs_the_message_not_the_session():
    class Broken(NullDisplay):
        def answer_end(self, completion):
            raise ValueError("display bug")

    model = ScriptedModel(["hello", "again"])
    session = Session(model, Executor(), display=Broken())
    turn = session.step("hi", ScriptedReviewer([]))
    assert turn.stop == "error"
    session.display = NullDisplay()
    assert session.step("next", ScriptedReviewer([])).stop == "done"


# -- the review gate (issue 11) ------------------------------------------------------------------

def test_a_cell_with_hidden_characters_is_refused_before_any_reviewer_and_the_model_told():
    session, model, display = make("```python\nok = 'x\u202e'\n```", "I see.")
    reviewer = AutoApprove()  # --yes: consent to every cell, but not to one nobody could read
    turn = session.step("go", reviewer)
    assert turn.stop == "declined" and not turn.cells and "ok" not in session.executor.namespace
    assert any("U+202E RIGHT-TO-LEFT OVERRIDE on line 1" in n for n in display.notices)
    session.step("why?", ScriptedReviewer([]))
    told = json.dumps(model.calls[1]["messages"][2:])
    assert "not run (refused" in told and "U+202E" in told


def test_a_lone_carriage_return_in_the_answer_refuses_its_fenced_cell():
    session, model, display = make("```python\nx = 1  # c\rimport os\n```")
    reviewer = ScriptedReviewer(["run"])
    turn = session.step("go", reviewer)
    assert turn.stop == "declined" and reviewer.seen == []
    assert any("U+000D CARRIAGE RETURN" in n for n in display.notices)


def test_a_crlf_answer_is_not_refused():
    session, model, _ = make("```python\r\nx = 1\r\ny = 2\r\n```\r\n", "done")
    turn = session.step("go", ScriptedReviewer(["run"]))
    assert session.executor.namespace["y"] == 2 and turn.cells


def test_hidden_characters_in_tool_call_code_are_refused_with_the_reason_in_the_tool_reply():
    call = ToolCall("c1", "run_python", json.dumps({"code": "x = 1\n\x0cy = 2"}))
    session, model, _ = make(Completion(tool_calls=[call], finish_reason="tool_calls"))
    turn = session.step("go", AutoApprove())
    reply = next(m for m in session.messages if m["role"] == "tool")
    assert reply["content"].startswith("Not run: refused") and "U+000C FORM FEED" in reply["content"]
    assert not turn.cells


def test_the_reviewer_is_told_when_a_cell_is_high_risk_and_auto_run_asks_for_it():
    session, model, _ = make("```python\na = 1\n```", "```python\nimport os\nb = os.getenv('HOME')\n```", "ok")
    reviewer = ScriptedReviewer(["always", "decline"])
    session.step("go", reviewer)
    assert reviewer.high_risk == [False, True]  # auto-run was on, yet the high-risk cell was asked about
    assert session.auto_run and "b" not in session.executor.namespace


def test_several_blocks_are_shown_as_the_one_cell_they_make():
    shown = []

    class Display(NullDisplay):
        def tool_code(self, code, label="run_python"):
            shown.append((label, code))

    session, model, _ = make("```python\na = 1\n```\ntext\n```python\nb = a + 1\n```", "ok")
    session.display = Display()
    session.step("go", ScriptedReviewer(["run"]))
    assert shown == [("llmrepl: the cell to run (2 code blocks, in order)", "a = 1\n\nb = a + 1")]
