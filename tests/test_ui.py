"""The terminal UI headless: keys through create_pipe_input(), screen to DummyOutput()."""

from __future__ import annotations

import io

import pytest
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from llmrepl.engine.session import Session
from llmrepl.execution.executor import Executor
from llmrepl.model.client import ScriptedModel
from llmrepl.terminal.display import TerminalDisplay
from llmrepl.terminal.interactive import TerminalUI


@pytest.fixture
def ui_factory(tmp_path):
    def make(*replies):
        out = io.StringIO()
        display = TerminalDisplay(out, color=False)
        model = ScriptedModel(list(replies))
        session = Session(model, Executor(sink=None), display=display)
        session.executor.sink = type("S", (), {"write": lambda self, s, t: display.cell_output(s, t)})()
        return session, model, out, display

    return make


def run_keys(session, display, keys: str, tmp_path) -> int:
    with create_pipe_input() as inp:
        inp.send_text(keys)
        ui = TerminalUI(session, display, history_path=tmp_path / "history", input=inp, output=DummyOutput())
        return ui.run()


def test_message_confirm_run_and_exit(ui_factory, tmp_path):
    session, model, out, display = ui_factory("```python\nz = 40 + 2\nprint(z)\n```", "z is 42")
    assert run_keys(session, display, "make z\ry\x04", tmp_path) == 0
    assert session.executor.namespace["z"] == 42
    text = out.getvalue()
    assert "42\n" in text and "z is 42" in text
    assert model.calls[0]["messages"][-1]["content"] == "make z"
    assert (tmp_path / "history").read_text().count("make z") == 1


def test_decline_key(ui_factory, tmp_path):
    session, model, out, display = ui_factory("```python\nboom = 1\n```")
    run_keys(session, display, "go\rn\x04", tmp_path)
    assert "boom" not in session.executor.namespace and len(model.calls) == 1


def test_slash_command_and_unknown_command(ui_factory, tmp_path):
    session, model, out, display = ui_factory()
    run_keys(session, display, "/py q = 7\r/vars\r/qiut\r/exit\r", tmp_path)
    text = out.getvalue()
    assert "q  int  7" in text
    assert "unknown command /qiut" in text and "/quit" not in text.replace("/qiut", "") or "did you mean" in text
    assert not model.calls


def test_input_inside_a_cell_is_answered_at_the_prompt(ui_factory, tmp_path):
    session, model, out, display = ui_factory("```python\nname = input('Name? ')\n```", "hi Ada")
    run_keys(session, display, "ask\ryAda\r\x04", tmp_path)
    assert session.executor.namespace["name"] == "Ada"
    assert "Name? Ada" in model.calls[1]["messages"][-1]["content"]


def test_empty_and_whitespace_lines_send_nothing(ui_factory, tmp_path):
    session, model, out, display = ui_factory()
    run_keys(session, display, "\r   \r\x04", tmp_path)
    assert not model.calls


def test_bottom_toolbar_shows_model_context_fill_tokens_and_auto_run(ui_factory, tmp_path):
    from llmrepl.model.client import Completion, Usage

    session, model, out, display = ui_factory(Completion(text="hi", finish_reason="stop", usage=Usage(1500, 200, 1700)))
    run_keys(session, display, "hello\r\x04", tmp_path)
    with create_pipe_input() as inp:
        ui = TerminalUI(session, display, input=inp, output=DummyOutput())
        bar = ui.toolbar()
    assert "scripted" in bar and "1.7k used" in bar and "auto-run off" in bar
    assert f"/{session.context.context_window / 1000:.1f}k" in bar and "ctx –/" not in bar
