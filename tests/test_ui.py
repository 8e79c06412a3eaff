"""The terminal UI headless: keys through create_pipe_input(), screen to DummyOutput()."""

from __future__ import annotations

import io

import pytest
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from llmrepl.context.builder import without_state
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
    assert without_state(model.calls[0]["messages"][-1]["content"]) == "make z"
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


# -- the review gate and the display (issue 11) --------------------------------------------------

def test_enter_and_a_do_not_run_a_high_risk_cell(ui_factory, tmp_path):
    session, model, out, display = ui_factory("```python\nimport os\nhome = os.getenv('HOME')\n```", "ok")
    run_keys(session, display, "go\r\ran\x04", tmp_path)
    assert "home" not in session.executor.namespace and not session.auto_run


def test_y_runs_a_high_risk_cell(ui_factory, tmp_path):
    session, model, out, display = ui_factory("```python\nimport os\nhome = os.getenv('HOME')\n```", "ok")
    run_keys(session, display, "go\r\ry\x04", tmp_path)
    assert "home" in session.executor.namespace


def test_a_cell_the_display_cut_is_not_run_by_y_before_it_was_read(ui_factory, tmp_path):
    code = "\n".join(f"v{i} = '{'x' * 100}'" for i in range(2200))
    session, model, out, display = ui_factory(f"```python\n{code}\n```")
    run_keys(session, display, "go\ryan\x04", tmp_path)
    assert display.code_cut and "v0" not in session.executor.namespace
    assert "characters of this answer (the journal has all of it) not shown" in out.getvalue()


def test_a_cell_taller_than_the_screen_is_not_run_by_enter_before_it_was_read(ui_factory, tmp_path):
    code = "\n".join(f"t{i} = {i}" for i in range(45))  # DummyOutput is 40 rows
    session, model, out, display = ui_factory(f"```python\n{code}\n```")
    run_keys(session, display, "go\r\ryn\x04", tmp_path)
    assert "t0" not in session.executor.namespace


def _pager_screen(pager, top):
    pager._top = top
    return "".join(text for _, text in pager._screen())


def test_the_pager_counts_a_cell_shown_only_when_every_line_was_drawn():
    from llmrepl.terminal.gate import Pager

    pager = Pager("\n".join(f"line_{i} = {i}" for i in range(100)))  # 39 rows a page on DummyOutput
    first = _pager_screen(pager, 0)
    assert "  1 │ line_0 = 0\n" in first and "line_38 = 38" in first and "line_39 " not in first
    _pager_screen(pager, 10_000)  # straight to the end (clamped to the last page)
    assert not pager.all_shown and 0 < pager.percent < 100  # the middle was never on the screen
    _pager_screen(pager, 39)
    assert pager.all_shown and pager.percent == 100


def test_the_pager_wraps_long_lines_whole_and_shows_tabs_and_invisible_characters():
    from llmrepl.terminal.gate import Pager, screen_rows

    long = "x = '" + "abcdefghij" * 50 + "'"
    pager = Pager(long + "\n\tif x:  # 中文\u200b")
    screen = _pager_screen(pager, 0)
    rows = [line[4:] for line in screen.split("\n") if line]  # "1 │ " or "  ┆ " before each row
    assert "".join(rows[:-1]) == long  # wrapped at 80 columns, nothing cut off at the edge
    assert rows[-1] == "        if x:  # 中文<U+200B>"  # a tab to column 8, the invisible character shown
    assert pager.all_shown
    assert screen_rows(long, 80, stop=100) == 7 and screen_rows("a\nb", 80, stop=100) == 2


def test_cell_output_keeps_its_colour_until_the_cell_ends_and_nothing_else():
    from llmrepl.execution.executor import ExecResult

    out = io.StringIO()
    display = TerminalDisplay(out, color=True)
    display.cell_output("stdout", "\x1b[32mgreen\x1b]0;title\x07 \x9d2;t\x9c\r50%\r100%\n")
    display.cell_result(ExecResult(source="", cell=1, value_repr="R\x1b]52;c;QQ==\x07\x9bJ"))
    text = out.getvalue()
    assert text.startswith("\x1b[32mgreen \r50%\r100%\n\x1b[0m")  # colour reset after the cell
    assert "R\n" in text and "]0;" not in text and "]52" not in text and "\x9d" not in text and "\x9b" not in text


def test_the_answer_cap_marks_the_code_as_cut_and_the_tail_is_sanitized():
    out = io.StringIO()
    display = TerminalDisplay(out, color=False)
    display.answer_start()
    display.answer_text("y" * 250_000 + "\n\x1b]52;c;QQ==\x07TAIL\x9d0;t\x9c\n")
    display.answer_end(None)
    assert display.code_cut and "TAIL\n" in out.getvalue() and "\x1b" not in out.getvalue()
    display.tool_code("x = 1")
    assert not display.code_cut and "run_python:\nx = 1\n" in out.getvalue()


# -- what the screen shows (issue 12) -------------------------------------------------------------

def test_cell_status_line_and_a_blank_line_only_between_a_cell_and_the_models_words(ui_factory, tmp_path):
    session, model, out, display = ui_factory("```python\nz = 40 + 2\nz\n```", "z is **42**", "hi")
    run_keys(session, display, "make z\ry/py q = 1\rhello\r\x04", tmp_path)
    rows = out.getvalue().split("\n")
    at = next(i for i, r in enumerate(rows) if r.startswith("Out[1]: 42"))
    assert rows[at + 1].startswith("✓ cell 1 · ") and rows[at + 2] == "" and rows[at + 3] == "z is 42"
    after_py = next(i for i, r in enumerate(rows) if r.startswith("✓ cell 2 · "))
    assert rows[after_py + 1] == "hi"  # the prompt came between: no blank line there


def test_the_spinner_keeps_off_a_cells_input_question(tmp_path):
    display = TerminalDisplay(io.StringIO(), color=False, spinner=True)
    session = Session(ScriptedModel([]), Executor(sink=None), display=display)
    with create_pipe_input() as inp:
        ui = TerminalUI(session, display, history_path=tmp_path / "history", input=inp, output=DummyOutput())
        seen: list[str] = []

        def ask(prompt: str) -> str:
            seen.append(display.out.getvalue().rsplit("\r\x1b[K", 1)[-1])
            return "Ada"

        ui.reviewer.ask_input = ask  # type: ignore[method-assign]
        display.busy("running cell 1")  # drawn at once (no delay)
        assert "running cell 1" in display.out.getvalue()
        assert ui._ask_input("Name? ") == "Ada"
        assert seen == [""]  # erased before the question was asked, and not drawn during it
        display.busy(None)


def test_plain_front_end_has_the_same_markdown_and_status_line_and_no_escapes():
    from llmrepl.terminal.plain import run_plain

    out = io.StringIO()
    display = TerminalDisplay(out, color=False)
    session = Session(ScriptedModel(["Use **this**:\n- one"]), Executor(sink=None), display=display)
    assert run_plain(session, display, stdin=io.StringIO("/py 1 + 1\nhello\n")) == 0
    text = out.getvalue()
    assert "\x1b" not in text
    # (a terminal echoes the typed line and its newline: nothing more is written before Out[1])
    assert "llm> Out[1]: 2\n✓ cell 1 · " in text
    assert "llm> Use this:\n  • one\n" in text


def test_tables_follow_the_screen_width_after_a_resize(ui_factory, tmp_path):
    pytest.importorskip("pandas")
    code = ("```python\nimport pandas as pd\n"
            "df = pd.DataFrame({f'column_{i}': range(3) for i in range(12)})\ndf\n```")
    session, model, out, display = ui_factory(code, "done")
    session.executor.display_width = 200  # the width at start-up
    display.width = 50  # the window was narrowed before the next message
    assert run_keys(session, display, "show it\ry\x04", tmp_path) == 0
    table = out.getvalue().split("Out[1]:", 1)[1].split("cell 1", 1)[0]
    assert max(len(line) for line in table.splitlines()) <= 50, table
    assert "column_0" in table and "..." in table
