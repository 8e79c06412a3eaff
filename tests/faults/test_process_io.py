"""Faults of issue 11, classes 5 and 7: one process owns a session, and llmrepl's own I/O
survives any cell.

A cell runs in llmrepl's process: it can fork it, close or redirect fds 0/1/2 and
``sys.__stdout__``, leave an alarm armed, change a signal that ends the process, read
llmrepl's batch input, delete the state folder or leave a thread that Python would wait for
at exit. Each case below failed before ``llmrepl/execution/guards.py`` (the terminal's
private fds, timers, signals), ``llmrepl/execution/process.py`` (a forked child ends with its
cell; exit waits at most 2 s) and the journal's recovery of a deleted folder
(``store/journal.py``); the docstring of each says how it failed.
"""

from __future__ import annotations

import json
import os
import stat
import time

from .harness import PROMPT, fault_run, spawn_repl

MSG = "run the cell please"
ASK = "Run this code?"  # the keys offered differ for a high-risk cell; "y" runs any


def _cell(code: str) -> str:
    return f"Running it:\n```python\n{code}\n```"


def _ends(r):
    return [e for e in r.events("cell_end") if "alive-" not in str(e.get("output", ""))]


def _repairs(r) -> str:
    return "\n".join(x for e in r.events("cell_end") for x in e.get("repairs") or [])


def _lines(text: str, needle: str) -> list[str]:
    return [line for line in text.splitlines() if needle in line]


# -- class 5: one process owns a session ------------------------------------------------


def test_fork_child_ends_with_its_cell(server):
    """``os.fork()`` in a cell: the child ends when the cell ends. Before: two REPLs read the
    same input and wrote the same journal (every later line ran twice, two session_end)."""
    server.reply(_cell("import os\npid = os.fork()\nprint('forked-' + ('child' if pid == 0 else 'parent'))"))
    r = fault_run(server, [MSG, "/py print('after-fork', os.getpid())"], yes=True)
    # check_shown=False: the child's own output is shown (as a multiprocessing child's is) but
    # is not the session's: only the process that owns the journal writes to it
    r.assert_ok(journaled=[("cell_end", "forked-parent")], check_shown=False)
    assert len(_lines(r.stdout, "after-fork")) == 1, r.excerpt()
    assert "forked-child" in r.stdout  # the child's own output is still shown, live
    assert len(r.events("session_end")) == 1 and len(r.events("session_start")) == 1
    pids = {e.get("pid") for e in r.events("session_start")}
    assert len(pids) == 1
    # exactly one cell_end per cell: the child wrote nothing to the journal
    cells = [e["cell"] for e in r.events("cell_end")]
    assert len(cells) == len(set(cells)), cells
    assert len(server.requests) == 2  # the message and one feedback, not one more from the child


def test_fork_child_error_is_its_exit_status(server):
    """A forked child whose cell fails shows its error and leaves with status 1 (SystemExit's
    code likewise). Before: the child returned into the REPL, read the remaining input and
    ended with status 0, so the parent saw ``child 0 0``."""
    code = ("import os\n"
            "a = os.fork()\n"
            "if a == 0:\n    raise ValueError('child-' + 'boom')\n"
            "b = os.fork()\n"
            "if b == 0:\n    raise SystemExit(7)\n"
            "print('child', os.waitstatus_to_exitcode(os.waitpid(a, 0)[1]),"
            " os.waitstatus_to_exitcode(os.waitpid(b, 0)[1]))")
    server.reply(_cell(code))
    r = fault_run(server, [MSG], yes=True)
    r.assert_ok(journaled=[("cell_end", "child 1 7")], check_shown=False)
    assert "child 1 7" in r.stdout, r.excerpt()
    assert "child-boom" in r.shown and "forked by the cell" in r.shown
    # the child's error is shown, never journaled as the parent's
    assert "child-boom" not in json.dumps(r.records)


def test_forked_child_never_reads_the_prompt(server):
    """pty: ``input()`` in a process the cell forked is refused at once; only llmrepl reads
    the terminal. Before: the child returned into the REPL and ran a second prompt on the
    same terminal, so the parent's wait never ended (the prompt never came back)."""
    code = ("import os\npid = os.fork()\nif pid == 0:\n"
            "    try:\n        input('child asks: ')\n"
            "    except Exception as e:\n        print('child-input', type(e).__name__, flush=True)\n"
            "else:\n    print('waited', os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))")
    server.reply(_cell(code))
    repl = spawn_repl(server)
    repl.ask(MSG)
    repl.expect(ASK)
    repl.send("y")
    repl.expect("child-input InputNotAllowed")
    repl.expect("waited 0")
    repl.expect(PROMPT)
    r = repl.finish()
    r.assert_ok(journaled=[("cell_end", "waited 0")])
    assert "child asks" not in r.shown.split("child-input")[-1]


def test_multiprocessing_and_subprocess_still_work(server):
    """multiprocessing (fork start method) runs its target in the child and leaves through its
    own path; subprocess execs. A guard that ended every fork child (an at-fork hook calling
    ``os._exit``) fails this: the Process would exit 0 before its target ran, with no output."""
    code = ("import multiprocessing as mp, os, subprocess\n"
            "ctx = mp.get_context('fork')\n"
            "def work(q):\n    q.put('mp-' + 'target ran')\n    print('mp-child-' + 'print')\n"
            "q = ctx.Queue()\np = ctx.Process(target=work, args=(q,))\np.start()\n"
            "print(q.get(timeout=20))\np.join(20)\nprint('mp-exit', p.exitcode)\n"
            "with ctx.Pool(2) as pool:\n    print('pool', pool.map(abs, [-1, -2, -3]))\n"
            "print(subprocess.run(['echo', 'sub-' + 'process'], capture_output=True, text=True).stdout.strip())\n"
            "print('preexec', subprocess.run(['true'], preexec_fn=lambda: None).returncode)")
    server.reply(_cell(code))
    r = fault_run(server, [MSG], yes=True, timeout=60)
    r.assert_ok(journaled=[("cell_end", "mp-target ran"), ("cell_end", "pool [1, 2, 3]")], check_shown=False)
    for text in ("mp-target ran", "mp-child-print", "mp-exit 0", "pool [1, 2, 3]", "sub-process", "preexec 0"):
        assert text in r.stdout, f"{text!r} missing\n" + r.excerpt()
    assert len(r.events("session_end")) == 1


# -- class 7: llmrepl's own I/O survives any cell -----------------------------------------


def test_dup2_over_fd_1_keeps_output(server):
    """``os.dup2(devnull, 1)`` in a cell. Before: every later line llmrepl wrote went to
    /dev/null, silently (the alive check was never seen)."""
    server.reply(_cell("import os\nos.dup2(os.open(os.devnull, os.O_WRONLY), 1)\nprint('still-' + 'shown')"))
    r = fault_run(server, [MSG, "/py print('after-' + 'dup2'); os.system('echo shell-' + 'after')"], yes=True)
    # check_shown=False: what a program started by a cell writes to fd 1 is never captured
    r.assert_ok(journaled=[("cell_end", "still-shown"), ("cell_end", "after-dup2")], check_shown=False)
    assert "still-shown" in r.stdout and "after-dup2" in r.stdout
    assert "shell-after" in r.stdout  # fd 1 itself is back, for the programs cells start
    assert "fd 1 (stdout) was redirected; restored" in _repairs(r)


def test_close_sys_dunder_stdout_keeps_output(server):
    """``sys.__stdout__.close()``. Before: llmrepl's display wrote through that very object,
    so all later output was silently lost."""
    server.reply(_cell("import sys\nsys.__stdout__.close()"))
    r = fault_run(server, [MSG, "/py import sys; print('after-' + 'close', sys.__stdout__.closed)"], yes=True)
    r.assert_ok()
    assert "after-close False" in r.stdout
    assert "sys.__stdout__ was closed; reopened" in _repairs(r)


def test_close_fds_1_and_2_in_a_pty(server):
    """pty: a cell closes fds 1 and 2. The bytes the terminal receives after it: the repair
    notice, the next prompt and later output. Before: nothing more was ever drawn."""
    server.reply(_cell("import os\nos.close(1)\nos.close(2)"))
    repl = spawn_repl(server)
    repl.ask(MSG)
    repl.expect(ASK)
    repl.send("y")
    repl.expect("fd 1 (stdout) was closed; restored")
    repl.expect(PROMPT)
    repl.ask("/py import os; os.system('echo shell-' + 'writes-fd-1')")
    repl.expect("shell-writes-fd-1")
    r = repl.finish()
    r.assert_ok()


def test_dup2_over_fd_0_and_1_in_a_pty(server):
    """pty: a cell points fds 0 and 1 at /dev/null. The prompt reads keys and draws from
    llmrepl's own copies. Before: the prompt read end-of-file from fd 0 and llmrepl exited."""
    server.reply(_cell("import os\nnull = os.open(os.devnull, os.O_RDWR)\nos.dup2(null, 0)\nos.dup2(null, 1)"))
    repl = spawn_repl(server)
    repl.ask(MSG)
    repl.expect(ASK)
    repl.send("y")
    repl.expect("fd 0 (stdin) was redirected; restored")
    repl.expect(PROMPT)
    r = repl.finish()
    r.assert_ok()


def test_alarm_left_armed_is_disarmed(server):
    """``signal.alarm(1)`` left armed by a cell. Before: SIGALRM ended llmrepl a second later
    ("Alarm clock", exit 142)."""
    server.reply(_cell("import signal\nsignal.alarm(1)"))
    r = fault_run(server, [MSG, "/py import time; time.sleep(1.5); print('slept-' + 'through')"], yes=True)
    r.assert_ok()
    assert "slept-through" in r.stdout
    assert "alarm" in _repairs(r) and "disarmed" in _repairs(r)
    assert r.said("restored after the cell")


def test_alarm_with_handler_in_a_pty(server):
    """pty, the interactive example: a cell sets its own SIGALRM handler and a repeating
    ITIMER_REAL. Both are undone after the cell (the handler would otherwise raise inside
    llmrepl at the prompt); the person is told. Before: the timer fired at the prompt."""
    code = ("import signal\n"
            "def boom(*a):\n    raise RuntimeError('alarm at the ' + 'prompt')\n"
            "signal.signal(signal.SIGALRM, boom)\nsignal.setitimer(signal.ITIMER_REAL, 0.5, 0.5)")
    server.reply(_cell(code))
    repl = spawn_repl(server)
    repl.ask(MSG)
    repl.expect(ASK)
    repl.send("y")
    repl.expect("disarmed")
    repl.expect(PROMPT)
    repl.ask("/py import time; time.sleep(1.2); print('quiet-' + 'prompt')")
    repl.expect("quiet-prompt")
    r = repl.finish()
    r.assert_ok()
    assert "alarm at the prompt" not in r.shown
    assert "SIGALRM handler was changed; restored" in _repairs(r)


def test_profiling_timer_left_armed(server):
    """``setitimer(ITIMER_PROF)`` left armed: its signal's default action ends the process.
    Before: the next cell that used CPU killed llmrepl ("Profiling timer expired")."""
    server.reply(_cell("import signal\nsignal.setitimer(signal.ITIMER_PROF, 0.05)"))
    busy = ("/py import time; t = time.process_time(); "
            "[0 for _ in iter(lambda: time.process_time() - t < 0.3, False)]; print('busy-' + 'done')")
    r = fault_run(server, [MSG, busy], yes=True)
    r.assert_ok()
    assert "busy-done" in r.stdout
    assert "ITIMER_PROF" in _repairs(r)


def test_sigpipe_default_restored(server):
    """A cell sets SIGPIPE to its default action. Before: the next write to a closed pipe
    (here a cell's; equally llmrepl's own stdout under ``| head``) killed llmrepl."""
    server.reply(_cell("import signal\nsignal.signal(signal.SIGPIPE, signal.SIG_DFL)"))
    pipe = "/py import os; r, w = os.pipe(); os.close(r); os.write(w, b'x')"
    r = fault_run(server, [MSG, pipe], yes=True)
    r.assert_ok()
    assert "BrokenPipeError" in r.stdout  # an error in the cell, not the end of llmrepl
    assert "SIGPIPE handler was changed; restored" in _repairs(r)


def _padding(n: int = 160) -> list[str]:
    """Enough batch lines (~20 KB) that the input is not all in one 8 KB read buffer."""
    return [f"/py pad_{i} = {i}  # {'padding ' * 14}" for i in range(n)]


def test_batch_input_survives_a_cell_that_reads_stdin(server):
    """Batch: a cell runs ``cat`` (which reads fd 0) and ``os.read(0, ...)``. They get
    end-of-file; llmrepl's remaining lines still run. Before: they ate the rest of the input
    (the alive check never ran)."""
    code = ("import os, subprocess\nsubprocess.run(['cat'], stdout=subprocess.DEVNULL)\n"
            "print('read', len(os.read(0, 65536)))")
    server.reply(_cell(code))
    r = fault_run(server, [MSG, *_padding(), "/py print('last-' + 'line', pad_159)"], yes=True)
    r.assert_ok(journaled=[("cell_end", "read 0")])
    assert "read 0" in r.stdout and "last-line 159" in r.stdout


def test_batch_input_survives_a_cell_that_closes_stdin(server):
    """Batch: a cell closes fd 0 and ``sys.__stdin__``. Before: llmrepl's next read of its
    input failed with a traceback (OSError: Bad file descriptor)."""
    server.reply(_cell("import os, sys\nsys.__stdin__.close()\nos.close(0)"))
    r = fault_run(server, [MSG, *_padding(), "/py print('last-' + 'line', pad_159)"], yes=True)
    r.assert_ok()
    assert "last-line 159" in r.stdout
    assert "fd 0 (stdin) was closed; restored" in _repairs(r)


def test_non_utf8_batch_input_under_a_strict_locale(server):
    """Batch input holding bytes that are not UTF-8, under ``LC_ALL=C`` and a strict
    PYTHONIOENCODING: read as U+FFFD. Before: a UnicodeDecodeError traceback ended llmrepl."""
    # "\udcff" goes down the pipe as b"\xed\xb3\xbf", which is not UTF-8 (an encoded surrogate);
    # a message, since the harness matches a /py line's code byte for byte
    server.reply("Got it.")
    lines = ["please echo bad-\udcff-byte", "/py print('next-' + 'line')"]
    r = fault_run(server, lines, env={"LC_ALL": "C", "PYTHONIOENCODING": "utf-8:strict"})
    r.assert_ok(journaled=[("user", "bad-\ufffd\ufffd\ufffd-byte")])
    assert any("bad-\ufffd\ufffd\ufffd-byte" in t for t in r.request_texts()), r.excerpt()
    assert "Got it." in r.stdout and "next-line" in r.stdout


def test_non_utf8_typed_at_the_prompt(server):
    """pty: bytes that are not UTF-8 typed at the prompt are read as U+FFFD. Before: they
    reached the cell as lone surrogates (a SyntaxError "surrogates not allowed")."""
    repl = spawn_repl(server)
    os.write(repl.child.child_fd, b"/py print('typed-' + '\xff-ok')\r")
    repl.typed.append("/py print('typed-' + '\ufffd-ok')")
    repl.expect("typed-\ufffd-ok")
    repl.expect(PROMPT)
    r = repl.finish()
    r.assert_ok(journaled=[("cell_end", "typed-\ufffd-ok")])
    assert "surrogates" not in r.shown


def test_state_folder_deleted_mid_session(server):
    """A cell deletes the whole state folder. The journal notices at its next record, makes
    the folders (0700) and the file (0600) again, rewrites every record and says so once.
    Before: the rest of the session was written to a deleted file (nothing on disk)."""
    server.reply(_cell("import os, shutil\nshutil.rmtree(os.environ['LLMREPL_HOME'])\nprint('deleted-' + 'it')"))
    r = fault_run(server, [MSG, "/py print('after-' + 'delete')"], yes=True)
    r.assert_ok(journaled=[("session_start", "batch"), ("user", MSG), ("cell_end", "deleted-it"),
                           ("cell_end", "after-delete")])
    assert r.said("was deleted while llmrepl ran; made it again and rewrote the journal")
    assert sum("was deleted while llmrepl ran" in line for line in r.shown.splitlines()) == 1
    sessions = r.home / "sessions"
    assert stat.S_IMODE(r.home.stat().st_mode) == 0o700 and stat.S_IMODE(sessions.stat().st_mode) == 0o700
    (journal,) = r.journal_files()
    assert stat.S_IMODE(journal.stat().st_mode) == 0o600
    assert len(r.events("session_start")) == 1 and len(r.events("session_end")) == 1


def test_non_daemon_thread_delays_exit_by_at_most_two_seconds(server):
    """A cell leaves a non-daemon thread sleeping for a minute. llmrepl waits at most 2 s at
    exit, then names it and leaves with its own status. Before: it waited the whole minute
    (the harness killed it at 20 s)."""
    server.reply(_cell("import threading, time\n"
                       "threading.Thread(target=time.sleep, args=(60,), name='sleepy-' + 'worker').start()"))
    start = time.monotonic()
    r = fault_run(server, [MSG], yes=True, timeout=20)
    r.assert_ok()
    assert time.monotonic() - start < 12, r.excerpt()
    assert r.returncode == 0
    assert r.said("exiting without waiting for threads a cell left running: sleepy-worker")


def test_thread_that_finishes_soon_is_waited_for(server):
    """A non-daemon thread that ends within the 2 s is waited for, and what it prints is shown
    and journaled (late output), as Python's own exit would. A guard that exited at once
    (``os._exit`` without the join) fails this."""
    server.reply(_cell("import threading, time\n"
                       "def later():\n    time.sleep(0.5)\n    print('thread-' + 'finished')\n"
                       "threading.Thread(target=later).start()"))
    r = fault_run(server, [MSG], yes=True, alive=False)
    r.assert_ok(survived=False, journaled=[("late_output", "thread-finished")])
    assert "thread-finished" in r.stdout and r.returncode == 0
    assert not r.said("exiting without waiting")


def test_closerange_in_a_pty(server):
    """pty: a cell closes every fd above 2 (``os.closerange(3, 4096)``, as daemonizing code
    does): llmrepl's own copies of the terminal and the journal's fd. llmrepl makes its copies
    again from fds 0/1/2 and reopens the journal (the file is intact). Before: the journal
    took no more records ("cannot write the session journal")."""
    server.reply(_cell("import os\nos.closerange(3, 4096)"))
    repl = spawn_repl(server)
    repl.ask(MSG)
    repl.expect(ASK)
    repl.send("y")
    repl.expect("llmrepl's own copy of stdout was closed; restored")
    repl.expect(PROMPT)
    repl.ask("/py print('after-' + 'closerange')")
    repl.expect("after-closerange")
    r = repl.finish()
    r.assert_ok(journaled=[("cell_end", "after-closerange"), ("cell_end", "own copy of stdin was closed")])
    assert not r.said("cannot write the session journal")


def test_non_utf8_typed_at_the_plain_prompt(server):
    """pty with ``TERM=dumb`` (the line-based front end): bytes that are not UTF-8 in a line
    are read as U+FFFD. Before: they reached the cell as lone surrogates (a SyntaxError)."""
    repl = spawn_repl(server, term="dumb")
    os.write(repl.child.child_fd, b"/py print('plain-' + '\xff-ok')\r")
    repl.typed.append("/py print('plain-' + '\ufffd-ok')")
    repl.expect("plain-\ufffd-ok")
    r = repl.finish()
    r.assert_ok(journaled=[("cell_end", "plain-\ufffd-ok")])
    assert "surrogates" not in r.shown


# -- issue 12, item 8: what a cell writes to fds 1 and 2 is its output ----------------------


def test_a_childs_escape_sequences_never_reach_the_terminal(server):
    """pty: a program the cell starts prints a window-title change and a clear-screen. The
    terminal gets the text, not the sequences; the model and the journal get the output.
    Before: the child wrote to the terminal itself (raw), and nobody else saw a byte of it."""
    code = r"""import os
os.system("printf '\\033]0;pwned\\007 \\033[2J'; echo child-""said")"""
    server.reply(_cell(code))
    server.reply("Seen.")
    repl = spawn_repl(server)
    repl.ask(MSG)
    repl.expect(ASK)
    repl.send("y")
    repl.expect("child-said")
    repl.expect(PROMPT)
    r = repl.finish()
    r.assert_ok(journaled=[("cell_end", "child-said")])
    assert "\x1b]0;pwned" not in r.stdout and "\x1b[2J" not in r.stdout, r.excerpt()
    assert any("child-said" in text for text in r.request_texts()), r.excerpt()


def test_child_output_is_in_order_with_print_on_both_streams(server):
    """Batch: print, a child's line, print, on stdout and on stderr: one record, in order, sent
    to the model. Before: the child's lines were missing from the record and the request."""
    code = ("import os, sys\nprint('a-' + '1')\nos.system('echo b-\"\"2')\nprint('c-' + '3')\n"
            "print('d-' + '4', file=sys.stderr)\nos.system('echo e-\"\"5 >&2')\nprint('f-' + '6', file=sys.stderr)")
    server.reply(_cell(code))
    r = fault_run(server, [MSG], yes=True)
    r.assert_ok(journaled=[("cell_end", "b-2"), ("cell_end", "e-5")])
    (end,) = [e for e in _ends(r) if "b-2" in str(e.get("output"))]
    assert "a-1\nb-2\nc-3\nd-4\ne-5\nf-6\n" in end["output"], end
    assert any("a-1\\nb-2\\nc-3" in text for text in r.request_texts())  # JSON: escaped newlines
    assert r.stdout.index("a-1") < r.stdout.index("b-2") < r.stdout.index("c-3")


def test_a_child_writing_after_its_cell_is_late_output(server):
    """pty: a background child prints after its cell ended. It is shown above the prompt and
    journaled as late output, never in the next cell's record. Before: it went to the
    terminal raw and was journaled nowhere."""
    server.reply(_cell("import os\nos.system('(sleep 0.5; echo late-\"\"child) &')\nprint('cell-' + 'done')"))
    repl = spawn_repl(server)
    repl.ask(MSG)
    repl.expect(ASK)
    repl.send("y")
    repl.expect("cell-done")
    repl.expect("late-child")
    repl.ask("/py print('next-' + 'cell')")
    repl.expect("next-cell")
    repl.expect(PROMPT)
    r = repl.finish()
    r.assert_ok(journaled=[("late_output", "late-child")])
    for end in r.events("cell_end"):
        assert "late-child" not in str(end.get("output")), end


def test_a_cell_that_closes_fd_1_then_runs_a_program(server):
    """Batch: a cell closes fd 1, then runs a program (which finds fd 1 closed and says so on
    fd 2, captured). The repair puts the capture back on fd 1: the next cell's programs are
    captured again. Before: the program's complaint and later output went nowhere."""
    server.reply(_cell("import os\nos.close(1)\nos.system('echo to-\"\"closed')\nprint('py-' + 'still')"))
    r = fault_run(server, [MSG, "/py import os; os.system('echo after-\"\"close')"], yes=True)
    r.assert_ok(journaled=[("cell_end", "py-still"), ("cell_end", "after-close")], check_shown=False)
    assert "after-close" in r.stdout
    assert "fd 1 (stdout) was closed; restored" in _repairs(r)


def test_an_interactive_program_cannot_hang_llmrepl(server):
    """pty: ``os.system('vim')`` is not supported (fd 1 is a pipe, as in Jupyter), but it reads
    the keys llmrepl leaves it and ends on ``:q!``; its screen drawing is sanitized text and
    the prompt comes back. Before: vim drew on the terminal itself (escape sequences raw)."""
    server.reply(_cell("import os\nprint('vim-' + 'exit', os.system('vim -u NONE -N -n'))"))
    repl = spawn_repl(server)
    repl.ask(MSG)
    repl.expect(ASK)
    repl.send("y")
    repl.expect("Output is not to a terminal")
    repl.send("\x1b:q!\r")
    repl.expect("vim-exit 0", timeout=30)
    repl.expect(PROMPT)
    r = repl.finish()
    r.assert_ok(journaled=[("cell_end", "vim-exit 0")], check_shown=False)
    assert "\x1b[?1049h" not in r.stdout.split("Output is not to a terminal")[-1]  # vim's own screen switch


def test_a_child_printing_the_key_is_redacted_like_print(server):
    """Batch: a program the cell starts prints the API key (``echo $OPENAI_API_KEY``). Its
    output goes through the same redactor as ``print``: the screen, the journal and the next
    request show ``[REDACTED]``. Before: the child wrote the key to the terminal raw."""
    server.reply(_cell("import os\nos.system('echo key-is $OPENAI_API_KEY; echo err-key $OPENAI_API_KEY >&2')"))
    server.reply("Done.")
    r = fault_run(server, [MSG], yes=True)
    r.assert_ok(journaled=[("cell_end", "key-is [REDACTED]"), ("cell_end", "err-key [REDACTED]")])
    assert "key-is [REDACTED]" in r.stdout
    assert any("key-is [REDACTED]" in text for text in r.request_texts())
