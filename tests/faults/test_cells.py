"""Faults in executed code (reliability.md §5 C): the model proposes a cell that misbehaves.

Batch mode with ``-y`` unless the fault needs a terminal (Ctrl-C, answering ``input()``, late
thread output over the prompt), which runs in a pty.
"""

from __future__ import annotations

import re
import time

from llmrepl.context.builder import without_state

from .harness import CONFIRM, PROMPT, fault_run, spawn_repl, written_mid_line

MSG = "run the cell please"


def _without_code(text: str) -> str:
    """Request text (JSON, so newlines are ``\\n`` escapes) without its fenced blocks — the echoed
    code and output — leaving what llmrepl itself tells the model."""
    return re.sub(r"(`{3,})[A-Za-z0-9]*\\n.*?\\n\1", "", text, flags=re.S)


def _cell(code: str) -> str:
    return f"Running it:\n```python\n{code}\n```"


def _cell_ends(r):
    return [e for e in r.events("cell_end") if "alive-" not in str(e.get("output", ""))]


def _risk_notice_before(r, marker: str | None = None) -> bool:
    """A line from llmrepl (not the code echo) warned that the cell can end the process."""
    words = ("risk", "kill", "terminat", "may end", "end or signal", "signal process", "exit the process",
             "ends llmrepl", "_exit")
    for line in r.shown.splitlines():
        s = line.strip().lower()
        if s.startswith("llmrepl:") and any(w in s for w in words):
            return True
    return False


def test_infinite_loop_with_timeout(server):
    """C5: ``while True: pass`` with --timeout 1 — stopped at the limit with a clear message; state kept."""
    server.reply(_cell("spins = 0\nwhile True:\n    spins += 1"))
    r = fault_run(server, [MSG, "/py print('spins kept', spins > 0)"], yes=True, args=["--timeout", "1"], timeout=30)
    r.assert_ok(journaled=[("cell_start", "while True")])
    assert r.said("time limit"), r.excerpt()
    assert any(e.get("timed_out") for e in _cell_ends(r))
    assert "spins kept True" in r.stdout


def test_ctrl_c_in_busy_loop(server):
    """C5/D7: Ctrl-C in ``while True: pass`` — the cell is interrupted, the namespace and prompt survive."""
    server.reply(_cell("kept_value = 'still-here'\nprint('spin-' + 'start', flush=True)\nwhile True:\n    pass"))
    repl = spawn_repl(server)
    repl.ask(MSG)
    repl.expect(CONFIRM)
    repl.send("y")
    repl.expect("spin-start")
    repl.intr()
    repl.expect("interrupted")
    repl.expect(PROMPT)
    repl.ask("/py print(kept_value)")
    repl.expect("still-here")
    r = repl.finish()
    r.assert_ok(journaled=[("cell_end", "spin-start"), ("user", MSG)])
    assert any(e.get("interrupted") for e in _cell_ends(r))


def test_ctrl_c_in_time_sleep(server):
    """C9: Ctrl-C in ``time.sleep(60)`` — interrupted at once; prompt back."""
    server.reply(_cell("import time\nprint('sleep-' + 'start', flush=True)\ntime.sleep(60)"))
    repl = spawn_repl(server)
    repl.ask(MSG)
    repl.expect(CONFIRM)
    repl.send("y")
    repl.expect("sleep-start")
    t0 = time.monotonic()
    repl.intr()
    repl.expect("interrupted")
    assert time.monotonic() - t0 < 5
    r = repl.finish()
    r.assert_ok(journaled=[("cell_end", "sleep-start")])


def _system_exit_case(server, code: str):
    server.reply(_cell(f"print('before-' + 'the-exit')\n{code}"))
    r = fault_run(server, [MSG], yes=True)
    r.assert_ok(journaled=[("cell_end", "before-the-exit"), ("cell_end", "SystemExit")])
    assert any(e.get("error_type") == "SystemExit" for e in _cell_ends(r))
    assert r.said("keeps running", "ignored", "to leave"), "not told that llmrepl carries on\n" + r.excerpt()
    return r


def test_sys_exit_3(server):
    """C3: ``sys.exit(3)`` — "SystemExit: 3" reported; llmrepl keeps running."""
    r = _system_exit_case(server, "import sys\nsys.exit(3)")
    assert r.said("SystemExit: 3", "SystemExit(3)")


def test_exit_builtin(server):
    """C4: ``exit()`` — ends the cell, not llmrepl; the real stdin stays open (later lines are read)."""
    _system_exit_case(server, "exit()")


def test_quit_builtin(server):
    """C4: ``quit()`` — as exit()."""
    _system_exit_case(server, "quit()")


def test_raise_system_exit(server):
    """C3: ``raise SystemExit`` — as sys.exit()."""
    _system_exit_case(server, "raise SystemExit")


def _hard_exit_case(server, code: str, expect_rc: int):
    server.reply(_cell(code))
    r = fault_run(server, [MSG], yes=True)
    # the process cannot survive this; the journal must already hold everything shown
    r.assert_ok(survived=False, journaled=[("user", MSG), ("assistant", code), ("cell_start", code)])
    assert r.returncode == expect_rc, r.excerpt()
    assert _risk_notice_before(r), "the risk (the cell can end llmrepl) was not shown before it ran\n" + r.excerpt()
    # the next start works, and says the previous session died in that cell (§4.1 restart report)
    again = fault_run(server, [])
    again.assert_ok()
    assert again.said("previous session", "crashed", "ended while running", "died"), again.excerpt()


def test_os_exit(server):
    """C18: ``os._exit(1)`` — the process dies; cell_start was journaled first; the risk was shown first."""
    _hard_exit_case(server, "import os\nos._exit(1)", 1)


def test_sigkill_self(server):
    """C18: ``os.kill(os.getpid(), SIGKILL)`` — as os._exit."""
    _hard_exit_case(server, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", -9)


def test_input_interactive_is_answered_at_the_terminal(server):
    """C11: ``input()`` in the interactive REPL — asked at the terminal; the answer reaches the cell."""
    server.reply(_cell("name = input('your name? ')\nprint('hello ' + name + '!')"))
    repl = spawn_repl(server)
    repl.ask(MSG)
    repl.expect(CONFIRM)
    repl.send("y")
    repl.expect("your name?")
    repl.send("Ada\r")
    repl.expect("hello Ada!")
    r = repl.finish()
    r.assert_ok(journaled=[("cell_end", "hello Ada!")])


def test_input_in_batch_mode(server):
    """C11: ``input()`` in batch mode — a clear InputNotAllowed at once, never a hang."""
    server.reply(_cell("answer = input('number? ')"))
    r = fault_run(server, [MSG], yes=True, timeout=30)
    r.assert_ok()
    assert r.said("input() is not available"), r.excerpt()
    assert r.elapsed < 20


def test_sys_stdout_set_to_none(server):
    """C14: ``sys.stdout = None`` — restored after the cell and listed in the result."""
    server.reply(_cell("import sys\nprint('before-' + 'none')\nsys.stdout = None\nprint('lost')"))
    r = fault_run(server, [MSG], yes=True)
    r.assert_ok(journaled=[("cell_end", "before-none")])
    repaired = re.compile(r"sys\.stdout[^\n]{0,60}(restored|replaced|repaired)")
    told = repaired.search(r.shown) or any(repaired.search(_without_code(t)) for t in r.request_texts()[1:])
    assert told, "the repair of sys.stdout was not reported (to the person or the model)\n" + r.excerpt()


def test_sys_stdout_close(server):
    """C14/C15: ``sys.stdout.close()`` — harmless; later prints in the cell and llmrepl still work."""
    server.reply(_cell("import sys\nsys.stdout.close()\nprint('after-' + 'close')"))
    r = fault_run(server, [MSG], yes=True)
    r.assert_ok(journaled=[("cell_end", "after-close")])


def test_one_gigabyte_of_output(server):
    """C12: 1 GiB printed — memory stays bounded; head and tail kept (shown and journaled); display capped."""
    code = ("print('FIRST-' + 'LINE')\nchunk = 'x' * 1048575\nfor _ in range(1024):\n    print(chunk)\n"
            "print('LAST-' + 'LINE')")
    server.reply(_cell(code))
    r = fault_run(server, [MSG], yes=True, measure_rss=True, timeout=120)
    r.assert_ok(journaled=[("cell_end", "FIRST-LINE"), ("cell_end", "LAST-LINE")])
    assert r.rss_kb is not None and r.rss_kb < 400 * 1024, f"peak RSS {r.rss_kb} KiB"
    assert "FIRST-LINE" in r.stdout and "LAST-LINE" in r.stdout
    end = _cell_ends(r)[0]
    assert end["output_chars"] >= 1 << 30 and len(end["output"]) < 2_000_000
    assert r.stdout_bytes < 10_000_000, f"{r.stdout_bytes:,} bytes written to the terminal: the display is not capped"


def test_hundred_megabyte_single_line(server):
    """C12: one 100 MB line with no newline — bounded memory; head/tail kept; display capped."""
    server.reply(_cell("import sys\nsys.stdout.write('HEAD' + 'y' * 100_000_000 + 'TAIL')"))
    r = fault_run(server, [MSG], yes=True, measure_rss=True, timeout=60)
    r.assert_ok(journaled=[("cell_end", "HEADyyy"), ("cell_end", "yyyTAIL")])
    assert r.rss_kb is not None and r.rss_kb < 400 * 1024, f"peak RSS {r.rss_kb} KiB"
    end = _cell_ends(r)[0]
    assert end["output_chars"] >= 100_000_000 and len(end["output"]) < 2_000_000
    assert r.stdout_bytes < 10_000_000, f"{r.stdout_bytes:,} bytes written to the terminal: the display is not capped"


def test_deep_recursion(server):
    """C16: unbounded recursion — RecursionError with a short, collapsed traceback."""
    server.reply(_cell("def dive(n):\n    return dive(n + 1)\ndive(0)"))
    r = fault_run(server, [MSG], yes=True)
    r.assert_ok(journaled=[("cell_end", "RecursionError")])
    assert r.said("RecursionError")
    err = _cell_ends(r)[0]["error"]
    assert len(err) < 5000, f"traceback of {len(err):,} characters"


def test_memory_error(server):
    """C20: a huge allocation fails with MemoryError — reported; the REPL allocates fine afterwards."""
    server.reply(_cell("blob = bytearray(1 << 60)"))
    r = fault_run(server, [MSG, "/py print('alloc-ok', len(bytearray(10**7)))"], yes=True)
    r.assert_ok()
    assert r.said("MemoryError") and "alloc-ok 10000000" in r.stdout, r.excerpt()


def test_thread_keeps_printing_after_the_cell(server):
    """C19: a thread prints after its cell ended — the prompt survives; a message typed meanwhile arrives intact."""
    code = ("import threading, time\n"
            "def _ticker():\n"
            "    for i in range(40):\n"
            "        print(f'late tick {i}', flush=True)\n"
            "        time.sleep(0.05)\n"
            "threading.Thread(target=_ticker, daemon=True).start()\n"
            "print('cell-' + 'done')")
    server.reply(_cell(code))
    server.reply("The thread is running.")
    server.reply("Got your message.")
    repl = spawn_repl(server)
    repl.ask(MSG)
    repl.expect(CONFIRM)
    repl.send("y")
    repl.expect("The thread is running.")
    repl.expect(PROMPT)
    typed = "this message must arrive intact 0123456789"
    for ch in typed:  # typed key by key while the ticks are still coming
        repl.send(ch)
    repl.send("\r")
    repl.expect("Got your message.")
    repl.expect(PROMPT)
    deadline = time.monotonic() + 10
    while "late tick 39" not in repl.transcript and time.monotonic() < deadline:
        repl.try_expect("late tick 39", 0.2)
    r = repl.finish()
    r.assert_ok(journaled=[("cell_end", "cell-done"), "late tick 39"])
    assert without_state(server.requests[2]["messages"][-1]["content"]) == typed
    corrupt = written_mid_line(r.stdout, r"late tick \d+")
    assert not corrupt, f"late output written into the prompt line {len(corrupt)} times, e.g. {corrupt[:3]}"


def test_cell_changes_cwd_and_sys_path(server, tmp_path):
    """C25: ``os.chdir`` and ``sys.path`` changes — allowed, shown in the digest; the journal is unaffected."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    server.reply(_cell(f"import os, sys\nos.chdir({str(elsewhere)!r})\nsys.path.insert(0, '/fault-test-path')\n"
                       "print('moved to', os.getcwd())"))
    server.reply("Moved.")
    r = fault_run(server, [MSG], yes=True)
    r.assert_ok(journaled=[("cell_end", f"moved to {elsewhere}")])
    follow_up = _without_code(r.request_texts()[1])  # what the model is told, minus the code and output echoes
    assert str(elsewhere) in follow_up, "the new working directory is not in the digest"
    assert "/fault-test-path" in follow_up, "the sys.path change is not in the digest"


def test_del_builtins_and_rebind_print(server):
    """C14/C22: ``del __builtins__`` and rebinding ``builtins.print``/``len`` — restored; llmrepl keeps working."""
    server.reply(_cell("import builtins\nbuiltins.print = lambda *a, **k: None\nbuiltins.len = None\n"
                       "del __builtins__"))
    server.reply("Sabotage complete.")
    r = fault_run(server, [MSG, "and after that?"], yes=True)
    r.assert_ok(journaled=[("assistant", "Sabotage complete.")])
    assert len(server.requests) == 3, "the conversation did not carry on after the cell"


def test_exception_whose_str_raises(server):
    """C1: an exception whose ``__str__`` raises — still reported (type named), no llmrepl traceback."""
    server.reply(_cell("class Weird(Exception):\n    def __str__(self):\n        raise RuntimeError('str exploded')\n"
                       "raise Weird()"))
    r = fault_run(server, [MSG], yes=True)
    r.assert_ok(journaled=[("cell_end", "Weird")])
    assert r.said("<exception str() failed>", "unprintable"), r.excerpt()


def test_repr_that_hangs(server):
    """C5 (value display): the cell's value has a ``__repr__`` that never returns — display is time-bounded."""
    server.reply(_cell("class Stuck:\n    def __repr__(self):\n        while True:\n            pass\nStuck()"))
    r = fault_run(server, [MSG], yes=True, timeout=15)
    r.assert_ok(journaled=[("cell_start", "Stuck()")])
    assert r.said("repr"), r.excerpt()
