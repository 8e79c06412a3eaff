"""User input faults (reliability.md §5 D): keys in a real pty, plus the few that need no terminal.

Every pty test ends with ``finish()``: the prompt must come back and a ``/py`` must work.
"""

from __future__ import annotations

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
    repl = spawn_repl(server)
    repl.send("\x1b[200~" + payload + "\x1b[201~")
    repl.send("\r")
    repl.expect("Got the paste.", timeout=60)
    repl.expect(PROMPT)
    r = repl.finish()
    r.assert_ok(journaled=[("user", "LAST-PASTED-LINE")])
    assert len(server.requests) == 1 and server.requests[0]["messages"][-1]["content"] == payload
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
    repl.expect("word word")
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


def test_ctrl_c_twice_quickly(server):
    """D7/D9: two Ctrl-C in quick succession during a cell — the second never escapes into llmrepl's own code."""
    server.reply("```python\nimport time\nprint('double-' + 'start', flush=True)\ntime.sleep(60)\n```")
    repl = spawn_repl(server)
    repl.ask(MSG)
    repl.expect(CONFIRM)
    repl.send("y")
    repl.expect("double-start")
    repl.intr()
    repl.intr()
    repl.expect("interrupted")
    repl.expect(PROMPT)
    r = repl.finish()
    r.assert_ok(journaled=[("cell_end", "double-start")])
    assert len(r.events("cell_end")) == 2, "the interrupted cell's record (cell_end) is missing"


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
