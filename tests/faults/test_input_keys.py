"""User input faults (reliability.md §5 D): keys in a real pty, plus the few that need no terminal.

Every pty test ends with ``finish()``: the prompt must come back and a ``/py`` must work.
"""

from __future__ import annotations

import json
import signal
import termios
import time

import pytest

from llmrepl.context.builder import without_state
from llmrepl.engine.protocols import AutoApprove, NullDisplay
from llmrepl.engine.session import Session
from llmrepl.execution.executor import ExecResult, Executor
from llmrepl.model.client import ScriptedModel
from llmrepl.store.journal import Journal

from .harness import CONFIRM, PROMPT, fault_run, spawn_repl

MSG = "please propose a cell"
LONG = ("word " * 8 + "\n") * 80 + "END-OF-ANSWER"
_DRAWN = r"'ran'(\x1b\[[0-9;]*m)*\)"  # the last token of the prefilled code, as the editor draws it


def _not_run(r, marker: str) -> bool:
    return all(marker not in str(e.get("output", "")) for e in r.events("cell_end"))


def test_empty_line(server):
    """D10: Enter on an empty prompt — ignored, no API call."""
    repl = spawn_repl(server)
    repl.send("\r")
    repl.expect(PROMPT)
    r = repl.finish()
    r.assert_ok()
    assert server.requests == []


def test_whitespace_only_line(server):
    """D10: a line of spaces — ignored, no API call."""
    repl = spawn_repl(server)
    repl.send("      \r")
    repl.expect(PROMPT)
    r = repl.finish()
    r.assert_ok()
    assert server.requests == []


def test_one_megabyte_bracketed_paste(server):
    """D11: a 1 MB bracketed paste — one message, arrives whole; the journal keeps it; history a truncated copy."""
    line = "pasted data row " + "x" * 83 + "\n"
    payload = (line * (1_000_000 // len(line))).rstrip("\n") + "\nLAST-PASTED-LINE"
    server.reply("Got the paste.")
    # the server states a window the paste fits in (an unknown model is budgeted at 8,192
    # tokens, and ~250k tokens would not be sent)
    server.context_length = 1_000_000
    repl = spawn_repl(server)
    repl.send("\x1b[200~" + payload + "\x1b[201~")
    repl.send("\r")
    repl.expect("Got the paste.", timeout=60)
    repl.expect(PROMPT)
    r = repl.finish()
    r.assert_ok(journaled=[("user", "LAST-PASTED-LINE")])
    assert len(server.requests) == 1 and without_state(server.requests[0]["messages"][-1]["content"]) == payload
    assert any(e.get("text") == payload for e in r.events("user"))
    hist = r.history_bytes()
    assert b"pasted data row" in hist and len(hist) < 100_000, f"history holds {len(hist):,} bytes"


def test_ctrl_c_while_typing(server):
    """D2: Ctrl-C with text typed — the text is discarded, nothing is sent, the REPL stays."""
    repl = spawn_repl(server)
    repl.send("half a thought that is never sent")
    repl.intr()
    repl.expect(PROMPT)
    r = repl.finish()
    r.assert_ok()
    assert server.requests == []


def test_ctrl_c_while_streaming(server):
    """D6/B23: Ctrl-C mid-stream — the stream is closed (server sees it); the partial answer is kept and journaled."""
    server.reply(LONG, chunk_size=5, delay=0.02)
    repl = spawn_repl(server)
    repl.ask(MSG)
    repl.expect("word word word word")  # text shows within the line: wait until these arrived
    repl.intr()
    repl.expect(PROMPT)
    assert server.disconnected.wait(5), "the server never saw the client hang up"
    r = repl.finish()
    r.assert_ok(journaled=[("user", MSG), ("assistant", "word word word")])
    assert "END-OF-ANSWER" not in r.stdout
    assert r.said("stopped", "interrupted", "cancelled")


def test_ctrl_c_at_confirmation(server):
    """D5: Ctrl-C at "Run this code?" — treated as "don't run"; the decision is journaled."""
    server.reply("```python\nprint('confirm-' + 'ran')\n```")
    repl = spawn_repl(server)
    repl.ask(MSG)
    repl.expect(CONFIRM)
    repl.intr()
    repl.expect(PROMPT)
    r = repl.finish()
    r.assert_ok(journaled=[("decision", "decline"), ("assistant", "confirm-")])
    assert _not_run(r, "confirm-ran")


def test_ctrl_c_inside_the_editor(server):
    """D5: Ctrl-C in the code editor — the edit is cancelled, nothing runs without a further yes."""
    server.reply("```python\nprint('editor-' + 'ran')\n```")
    repl = spawn_repl(server)
    repl.ask(MSG)
    repl.expect(CONFIRM)
    repl.send("e")
    repl.expect_re(_DRAWN)  # the editor has drawn the prefilled code: it is up and reading keys
    repl.intr()
    i = repl.child.expect_exact([CONFIRM, PROMPT], timeout=10)
    if i == 0:  # back at the question: decline it
        repl.send("n")
        repl.expect(PROMPT)
    r = repl.finish()
    r.assert_ok(journaled=[("decision", "decline")])
    assert _not_run(r, "editor-ran")


def test_ctrl_c_while_a_cell_runs_and_prints(server):
    """D7/D8: Ctrl-C while a cell floods the terminal — interrupted; llmrepl's own writes are not torn."""
    server.reply("```python\nimport itertools\nfor i in itertools.count():\n    print('busy line', i)\n```")
    repl = spawn_repl(server)
    repl.ask(MSG)
    repl.expect(CONFIRM)
    repl.send("y")
    repl.expect("busy line 500")
    repl.intr()
    repl.expect("interrupted", timeout=30)
    repl.expect(PROMPT, timeout=30)
    r = repl.finish()
    r.assert_ok(journaled=[("cell_end", "busy line 0")])
    assert any(e.get("interrupted") for e in r.events("cell_end"))


def _keep_output_on_ctrl_c() -> None:
    """In the child, before llmrepl starts: NOFLSH. A terminal discards the output it has not
    yet delivered at each Ctrl-C; a real terminal reads at once, but this test reads when it
    gets round to it, and the second Ctrl-C of a pair would discard what llmrepl said about
    the first (the kernel's doing, not llmrepl's: seen about 1 run in 30 under load)."""
    attrs = termios.tcgetattr(0)
    attrs[3] |= termios.NOFLSH
    termios.tcsetattr(0, termios.TCSANOW, attrs)


@pytest.fixture
def keep_output_on_ctrl_c(monkeypatch):
    from . import harness

    spawn = harness.spawn
    monkeypatch.setattr(harness, "spawn", lambda *a, **kw: spawn(*a, preexec_fn=_keep_output_on_ctrl_c, **kw))


# Spacings between the two Ctrl-C: none (one write of two ^C), then from well inside the
# cell's wrap-up to after the prompt is back. The second Ctrl-C may land while the cell is
# still being interrupted, in the executor's or the session's bookkeeping after it, or at the
# prompt; the outcome must be the same every time. (The sleep is the spacing under test, not
# a wait for output.)
@pytest.mark.parametrize("gap", [None, 0.0, 0.001, 0.005, 0.02, 0.1])
def test_ctrl_c_twice_quickly(server, gap, keep_output_on_ctrl_c):
    """D7/D9: two Ctrl-C in quick succession during a cell — interrupted, reported as such, back at the prompt.

    The second one never escapes into llmrepl's own code (it used to lose the cell's record,
    or say "Ctrl-C after the cell finished" about a cell that had been interrupted)."""
    server.reply("```python\nimport time\nprint('double-' + 'start', flush=True)\ntime.sleep(60)\n```")
    repl = spawn_repl(server)
    repl.ask(MSG)
    repl.expect(CONFIRM)
    repl.send("y")
    repl.expect("double-start")
    repl.child.delaybeforesend = None  # pexpect waits 50 ms before each send: the gap is ours alone
    if gap is None:
        repl.send("\x03\x03")  # both in one write: the terminal turns each into a SIGINT
    else:
        repl.intr()
        time.sleep(gap)
        repl.intr()
    repl.expect("interrupted")
    repl.expect(PROMPT)
    r = repl.finish()
    r.assert_ok(journaled=[("cell_end", "double-start")])
    ends = [e for e in r.events("cell_end") if "double-start" in str(e.get("output", ""))]
    assert len(ends) == 1 and ends[0].get("interrupted") is True, "the cell is not recorded as interrupted"
    assert "after the cell finished" not in r.shown, "the interrupted cell was called finished"
    assert "conversation and the namespace are kept" not in r.shown, "the second Ctrl-C escaped into the turn"


# The same race, pinned: a real SIGINT raised at one exact place in llmrepl's own work after a
# cell (signal.raise_signal runs the handler at once), so each window is tested every time.


class _SignalingJournal(Journal):
    """A journal (in memory) that sends this process a SIGINT just before writing ``event``."""

    def __init__(self, event: str = "") -> None:
        super().__init__(None)
        self.event = event

    def append(self, event: str, /, **fields: object) -> None:
        if event == self.event:
            self.event = ""  # once
            signal.raise_signal(signal.SIGINT)
        super().append(event, **fields)

    def records(self) -> list[dict]:
        return [json.loads(line) for line in self.unsaved]


class _SignaledWhileFinishing(Executor):
    """An executor that gets a SIGINT once the cell is over, before ``run`` has returned its record
    (where the executor restores the interpreter and formats the cell's error)."""

    def run(self, source: str, **kw: object) -> ExecResult:
        result = super().run(source, **kw)  # type: ignore[arg-type]
        signal.raise_signal(signal.SIGINT)
        return result


def _engine(journal: Journal, *replies: str) -> tuple[Session, NullDisplay]:
    display = NullDisplay()
    return Session(ScriptedModel(list(replies)), Executor(), display=display, journal=journal), display


def _sigint_works_again() -> None:
    with pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGINT)


def _held_until_the_next_cell(session: Session) -> None:
    """After an interrupted cell, Ctrl-C stays the same interruption on the way back to the
    prompt; the person's next message, /py or cell ends that (here a /py), and it works again."""
    signal.raise_signal(signal.SIGINT)  # absorbed
    assert session.run_direct("pass").ok
    _sigint_works_again()


@pytest.mark.parametrize("where", ["cell_end", "message"])
def test_second_ctrl_c_in_the_bookkeeping_after_an_interrupted_cell(where):
    """D9: a Ctrl-C landing while the session records an interrupted cell (cell_end) or feeds it
    back (message) — the record is whole, the turn ends "interrupted" with no other message."""
    journal = _SignalingJournal()
    session, display = _engine(journal, "```python\nprint('begun')\nraise KeyboardInterrupt\n```")
    original = session.executor.run

    def run(code, **kw):
        result = original(code, **kw)
        if result.cell == 1:
            journal.event = where  # armed once the cell is over: the next "message" is its feedback
        return result

    session.executor.run = run
    turn = session.step("go", AutoApprove())
    assert turn.stop == "interrupted" and turn.cells and turn.cells[0].interrupted
    ends = [r for r in journal.records() if r["event"] == "cell_end"]
    assert len(ends) == 1 and ends[0]["interrupted"] and "begun" in ends[0]["output"]
    assert not [n for n in display.notices if "after the cell finished" in n or "namespace are kept" in n], display.notices
    fed_back = session.messages[-1]["content"]
    assert "ran cell 1" in fed_back and "begun" in fed_back, "the model is not told what the cell did"
    _held_until_the_next_cell(session)


def test_second_ctrl_c_while_the_executor_finishes_the_interrupted_cell():
    """D9: a Ctrl-C landing in the executor's own work after an interrupted cell — /py gets the
    record, interrupted and journaled, instead of a KeyboardInterrupt that loses it."""
    journal = Journal(None)
    display = NullDisplay()
    session = Session(ScriptedModel([]), _SignaledWhileFinishing(), display=display, journal=journal)
    try:
        result = session.run_direct("print('begun')\nraise KeyboardInterrupt")
    except KeyboardInterrupt:
        pytest.fail("the second Ctrl-C escaped from the cell's run: its record is lost")
    assert result.interrupted and "begun" in result.stdout
    ends = [json.loads(line) for line in journal.unsaved if b'"cell_end"' in line]
    assert len(ends) == 1 and ends[0]["interrupted"]
    assert not [n for n in display.notices if "after the cell finished" in n], display.notices
    _held_until_the_next_cell(session)


def test_ctrl_c_just_after_a_finished_cell_keeps_it_and_stops():
    """D9 (the other case): a Ctrl-C landing while a cell that finished is recorded — its record is
    whole, "Ctrl-C after the cell finished" is said, and the loop stops after this step."""
    journal = _SignalingJournal("cell_end")
    session, display = _engine(journal, "```python\nprint('all done')\n```", "never asked for")
    turn = session.step("go", AutoApprove())
    assert turn.stop == "interrupted" and turn.cells and not turn.cells[0].interrupted
    ends = [r for r in journal.records() if r["event"] == "cell_end"]
    assert len(ends) == 1 and "all done" in ends[0]["output"]
    assert any("after the cell finished" in n for n in display.notices), display.notices
    assert len(session.model.calls) == 1, "the loop went on after the Ctrl-C"
    _sigint_works_again()


def test_ctrl_d_at_confirmation(server):
    """D5 (Ctrl-D): Ctrl-D at "Run this code?" — don't run, and do not leave llmrepl."""
    server.reply("```python\nprint('ctrl-d-' + 'ran')\n```")
    repl = spawn_repl(server)
    repl.ask(MSG)
    repl.expect(CONFIRM)
    repl.child.sendeof()
    repl.expect(PROMPT)
    r = repl.finish()
    r.assert_ok(journaled=[("decision", "decline")])
    assert _not_run(r, "ctrl-d-ran")


def test_ctrl_d_in_the_editor(server):
    """D4/D5: Ctrl-D in the editor (text present) — ignored or cancels; never exits llmrepl or loses the cell."""
    server.reply("```python\nprint('edited-' + 'ran')\n```")
    server.reply("ok")
    repl = spawn_repl(server)
    repl.ask(MSG)
    repl.expect(CONFIRM)
    repl.send("e")
    repl.expect_re(_DRAWN)  # the editor has drawn the prefilled code: it is up and reading keys
    repl.child.sendeof()
    repl.send("\x1b\r")  # Esc Enter: accept the editor (or, back at the question, Enter = yes)
    repl.expect("edited-ran")
    repl.expect(PROMPT)
    r = repl.finish()
    r.assert_ok(journaled=[("cell_end", "edited-ran")])


def test_unknown_slash_command_suggests_the_nearest(server):
    """D14: ``/qiut`` — "unknown command /qiut — did you mean ...?"; not sent to the model."""
    r = fault_run(server, ["/qiut"])
    r.assert_ok()
    assert r.said("unknown command /qiut") and r.said("did you mean /quit", "did you mean /exit"), r.excerpt()
    assert server.requests == []


def test_py_with_a_syntax_error(server):
    """C2: ``/py`` with a SyntaxError — reported (the user's error, no llmrepl traceback), nothing runs."""
    r = fault_run(server, ["/py print('py-' + 'ran'"])
    r.assert_ok(journaled=[("cell_end", "SyntaxError")])
    assert r.said("SyntaxError") and "py-ran" not in r.stdout


def test_terminal_resized_while_streaming(server):
    """D6 (resize): the terminal is resized twice mid-stream — the whole answer arrives; the prompt returns."""
    server.reply(LONG, chunk_size=16, delay=0.01)
    repl = spawn_repl(server)
    repl.ask(MSG)
    repl.expect("word word")
    repl.child.setwinsize(20, 50)
    repl.expect("word word")
    repl.child.setwinsize(50, 160)
    repl.expect("END-OF-ANSWER")
    repl.expect(PROMPT)
    r = repl.finish()
    r.assert_ok(journaled=[("assistant", "END-OF-ANSWER")])


def test_term_dumb(server):
    """A12/D (TERM=dumb): plain output — no escape codes at all, the session still works."""
    server.reply("Plain answer.\n```python\nprint('dumb-' + 'ran')\n```")
    server.reply("done")
    repl = spawn_repl(server, "-y", term="dumb")
    repl.ask(MSG)
    repl.expect("dumb-ran")
    repl.expect(PROMPT)
    r = repl.finish()
    r.assert_ok(journaled=[("cell_end", "dumb-ran")])
    assert "\x1b" not in r.stdout, f"escape codes with TERM=dumb: {sorted(set(_escapes(r.stdout)))[:8]}"


def test_stdout_not_a_tty(server):
    """A12/D (pipe): stdout is not a terminal (TERM=xterm) — plain text, no escape codes."""
    server.reply("# Heading\n**bold** answer\n```python\nprint('piped-' + 'ran')\n```")
    server.reply("done")
    r = fault_run(server, [MSG], yes=True, env={"TERM": "xterm-256color"})
    r.assert_ok(journaled=[("cell_end", "piped-ran")])
    assert "\x1b" not in r.stdout and "\x1b" not in r.stderr


def _escapes(text: str) -> list[str]:
    import re

    return re.findall(r"\x1b[\[\]?]?[0-9;?]*[A-Za-z]?", text)
