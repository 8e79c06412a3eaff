"""The interactive REPL in a real pseudo-terminal, driven key by key with pexpect."""

from __future__ import annotations

import pexpect
import pytest
from launch import PROMPT, spawn

from llmrepl.context.builder import without_state

# pexpect's own default size: the runs that start without the fixture also cover 80 columns
SMALL = (24, 80)


@pytest.fixture
def repl(pty_llmrepl):
    """Start the real command in a pty, pointed at the fake server, and wait for ``llm>``."""
    return pty_llmrepl


def ask(child: pexpect.spawn, text: str) -> None:
    child.send(text + "\r")


def test_confirm_runs_code_and_the_model_sees_the_result(repl, server):
    server.reply("Let me compute.\n```python\nanswer = 6 * 7\nprint('answer is', answer)\n```")
    server.reply("The answer is 42.")
    child = repl()
    ask(child, "compute it")
    child.expect_exact("Run this code? [Y/n/e/a]")
    child.send("y")
    child.expect_exact("answer is 42")
    child.expect_exact("The answer is 42.")
    child.expect_exact(PROMPT)
    assert "answer is 42" in server.requests[1]["messages"][-1]["content"]
    child.sendeof()  # Ctrl-D on an empty line exits
    child.expect(pexpect.EOF)
    child.wait()
    assert child.exitstatus == 0


def test_decline_tells_the_model_next_time(repl, server):
    server.reply("```python\nimport shutil\n```")
    server.reply("Understood.")
    child = repl()
    ask(child, "clean up")
    child.expect_exact("Run this code? [Y/n/e/a]")
    child.send("n")
    child.expect_exact(PROMPT)
    assert len(server.requests) == 1
    ask(child, "ok then")
    child.expect_exact("Understood.")
    child.expect_exact(PROMPT)
    last = server.requests[1]["messages"][-1]["content"]
    assert "declined" in last and without_state(last).endswith("ok then")


def test_edit_then_run_runs_the_edited_code(repl, server):
    server.reply("```python\nv = 1\nprint('v is', v)\n```")
    server.reply("You changed it.")
    child = repl()
    ask(child, "set v")
    child.expect_exact("Run this code? [Y/n/e/a]")
    child.send("e")
    child.expect_exact("Esc Enter runs your version")
    child.expect_exact("print")  # the prefilled code is drawn
    # the cursor is at the end of the prefilled code: go up to line 1, end of line, replace 1 with 2
    child.send("\x1b[A")   # up
    child.send("\x05")     # Ctrl-E: end of line
    child.send("\x08")     # backspace
    child.send("2")
    child.send("\x1b\r")   # Esc Enter accepts
    child.expect_exact("v is 2")
    child.expect_exact("You changed it.")
    child.expect_exact(PROMPT)
    content = server.requests[1]["messages"][-1]["content"]
    assert "edited" in content and "v = 2" in content


def test_ctrl_c_interrupts_a_running_cell_and_the_namespace_survives(repl, server):
    server.reply("```python\nkept = 'still here'\nimport time\nprint('sleeping', flush=True)\ntime.sleep(60)\n```")
    child = repl()
    ask(child, "sleep a while")
    child.expect_exact("Run this code? [Y/n/e/a]")
    child.send("y")
    child.expect_exact("sleeping")
    child.sendintr()
    child.expect_exact("interrupted")
    child.expect_exact(PROMPT)
    ask(child, "/py print(kept)")
    child.expect_exact("still here")
    child.expect_exact(PROMPT)


def test_ctrl_c_while_typing_clears_the_line_and_keeps_the_repl(repl, server):
    server.reply("fresh answer")
    child = repl()
    child.send("half a thought")
    child.sendintr()
    child.expect_exact(PROMPT)
    ask(child, "a full one")
    child.expect_exact("fresh answer")
    assert without_state(server.requests[0]["messages"][-1]["content"]) == "a full one"


def test_ctrl_c_while_streaming_stops_the_answer_and_keeps_it(repl, server):
    server.reply(("word " * 8 + "\n") * 60, chunk_size=5, delay=0.02)
    server.reply("next answer")
    child = repl()
    ask(child, "talk a lot")
    child.expect_exact("word word")
    child.sendintr()
    child.expect_exact("answer stopped")
    child.expect_exact(PROMPT)
    ask(child, "and now?")
    child.expect_exact("next answer")
    history = server.requests[-1]["messages"]
    assert "interrupted" in history[-2]["content"] and history[-2]["role"] == "assistant"


def test_ctrl_c_while_streaming_the_answer_to_a_cells_result(repl, server):
    # After a cell, llmrepl's SIGINT handler stays installed between cells: Ctrl-C must still
    # stop a streaming answer exactly as with Python's default handler.
    server.reply("```python\nx = 6 * 7\nprint(x)\n```")
    server.reply(("more " * 8 + "\n") * 60, chunk_size=5, delay=0.02)
    server.reply("next answer")
    child = repl()
    ask(child, "compute")
    child.expect_exact("Run this code? [Y/n/e/a]")
    child.send("y")
    child.expect_exact("42")
    child.expect_exact("more more")
    child.sendintr()
    child.expect_exact("answer stopped")
    child.expect_exact(PROMPT)
    ask(child, "/py print(x + 1)")
    child.expect_exact("43")
    child.expect_exact(PROMPT)
    child.sendintr()  # at the prompt, between cells: clears the line, the REPL stays
    child.expect_exact(PROMPT)
    ask(child, "and now?")
    child.expect_exact("next answer")


def test_alt_enter_inserts_a_newline_and_enter_sends_both_lines(repl, server):
    server.reply("got two lines")
    child = repl()
    child.send("line one")
    child.send("\x1b\r")
    child.send("line two\r")
    child.expect_exact("got two lines")
    assert without_state(server.requests[0]["messages"][-1]["content"]) == "line one\nline two"


def test_bracketed_paste_of_many_lines_is_one_message(repl, server):
    server.reply("one message")
    child = repl()
    child.send("\x1b[200~first\rsecond\rthird\x1b[201~")
    child.send("\r")
    child.expect_exact("one message")
    assert without_state(server.requests[0]["messages"][-1]["content"]) == "first\nsecond\nthird"


def test_always_runs_later_cells_without_asking(repl, server):
    server.reply("```python\na = 1\n```")
    server.reply("```python\nprint('b ran', a + 1)\n```")
    server.reply("done")
    child = repl()
    ask(child, "go")
    child.expect_exact("Run this code? [Y/n/e/a]")
    child.send("a")
    child.expect_exact("b ran 2")
    child.expect_exact("done")
    child.expect_exact(PROMPT)


def test_history_persists_across_runs(repl, server):
    server.reply("first answer")
    child = repl()
    ask(child, "remember me")
    child.expect_exact("first answer")
    child.expect_exact(PROMPT)
    child.sendeof()
    child.expect(pexpect.EOF)
    server.reply("second answer")
    child2 = repl()
    child2.send("\x1b[A")  # up arrow recalls the previous run's message
    child2.send("\r")
    child2.expect_exact("second answer")
    assert without_state(server.requests[-1]["messages"][-1]["content"]) == "remember me"


def test_ctrl_backslash_ends_a_cell_stuck_in_c_and_resume_reports_it(repl, server, clean_env):
    """The last resort for a C call that holds the GIL: Ctrl-\\ dumps the stack and ends llmrepl."""
    child = repl()
    ask(child, "/py print('bu' + 'sy', flush=True); sum(range(10**12))")
    child.expect_exact("busy")  # built at run time: the echo of the typed line does not match
    child.sendcontrol("\\")
    child.expect(pexpect.EOF)
    child.close()
    assert child.signalstatus == 3  # SIGQUIT
    (log,) = clean_env.glob("sessions/*/crash.log")
    assert '"<cell-1>", line 1' in log.read_text()
    server.reply("welcome back")
    again = spawn(["--base-url", server.base_url, "--resume"], dimensions=SMALL)
    again.expect_exact("cell 1 was running")
    again.expect_exact("crash.log")
    again.expect_exact(PROMPT)
    again.terminate(force=True)


def test_keys_typed_as_soon_as_the_prompt_appears_are_kept(server):
    """The prompt is drawn before prompt_toolkit has loaded; what is typed at once (Ctrl-C,
    Alt-Enter included) reaches it byte for byte."""
    server.reply("got it")
    child = spawn(["--base-url", server.base_url], dimensions=SMALL)
    child.expect_exact(PROMPT)
    child.send("\x03first\x1b\rsecond\r")  # no waiting: Ctrl-C clears, Alt-Enter adds a line
    child.expect_exact("got it")
    assert without_state(server.requests[0]["messages"][-1]["content"]) == "first\nsecond"
    child.terminate(force=True)
