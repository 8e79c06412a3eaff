"""Sessions that lose nothing (issue 4), end to end with the installed ``llmrepl`` command.

The real process is killed with SIGKILL in a pseudo-terminal between and during turns, then
``llmrepl --resume`` (in a new pty, or in batch with ``-y``) must bring back the conversation
(checked in the next request the fake server receives) and the namespace (checked with
``/py``). Also: a torn journal line, resume by id prefix and an unknown id, an unusable
state folder, ``/undo`` with and without snapshots, ``/save``, ``/export`` (.py re-run in a
fresh interpreter, .ipynb validated with nbformat), ``--export`` and ``/sessions``.

Every wait is on output (pexpect) or on a process exit, never a fixed sleep.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import launch
import pexpect
import pytest
from launch import PROMPT, run

from llmrepl.context.builder import without_state

ASK = "Run this code? [Y/n/e/a]"
RERUN = "to rebuild the namespace? [Y/n]"
NOTE = "[llmrepl]"
JOURNAL_FAILED = "cannot write the session journal"


# -- helpers ------------------------------------------------------------------------------


@pytest.fixture
def spawn(pty_llmrepl):
    """Start the real command in a pty (conftest's ``pty_llmrepl``), everything the terminal
    showed kept; ``prompt=False`` returns before the first ``llm>``."""

    def start(*args: str, prompt: bool = True, **extra_env: str) -> pexpect.spawn:
        return pty_llmrepl(*args, logfile=io.StringIO(), wait=prompt, env=launch.child_env(tty=True, **extra_env))

    return start


def ask(child: pexpect.spawn, text: str) -> None:
    child.send(text + "\r")


def kill9(child: pexpect.spawn) -> None:
    """SIGKILL the llmrepl process itself: no handler, no flush, no atexit runs."""
    os.kill(child.pid, signal.SIGKILL)
    child.expect(pexpect.EOF)
    child.wait()
    assert child.signalstatus == signal.SIGKILL


def shown(child: pexpect.spawn) -> str:
    return child.logfile_read.getvalue()


def batch(server, *args: str, input: str = "", **extra_env: str) -> subprocess.CompletedProcess[str]:
    """The command with stdin not a terminal: one message or /command per line."""
    return run(["--base-url", server.base_url, *args], input=input, **extra_env)


def journals(home: Path) -> list[Path]:
    return sorted((home / "sessions").glob("*.jsonl"))


def only_journal(home: Path) -> Path:
    found = journals(home)
    assert len(found) == 1, found
    return found[0]


def records(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def request_text(body: dict[str, Any], role: str | None = None) -> str:
    """All message contents of one request (of one role), joined."""
    return "\n".join(
        str(m.get("content") or "") for m in body["messages"] if role is None or m["role"] == role
    )


def notes(body: dict[str, Any]) -> str:
    """llmrepl's own notes to the model in a request (user messages are merged, so search them)."""
    return "\n".join(
        part for m in body["messages"] if m["role"] in ("user", "tool")
        for part in str(m.get("content") or "").split("\n\n") if part.startswith(NOTE)
    )


def first_session(server, *, extra: str = "", config: str | None = None) -> subprocess.CompletedProcess[str]:
    """A finished batch session: one exchange whose cell sets ``x`` and ``names``."""
    server.reply("Setting x.\n```python\nx = 41 + 1\nnames = ['a', 'b']\nprint('x is', x)\n```")
    server.reply("x is now 42.")
    args = ["-y"] + (["--config", config] if config else [])
    p = batch(server, *args, input="make x\n" + extra)
    assert p.returncode == 0, p.stderr
    assert "x is 42" in p.stdout
    return p


def snapshot_config(tmp_path: Path) -> str:
    cfg = tmp_path / "snap.toml"
    cfg.write_text("[repl]\nsnapshots = true\n")
    return str(cfg)


# -- kill -9 and --resume -----------------------------------------------------------------


def test_kill9_between_turns_then_resume_in_a_pty_restores_messages_and_variables(spawn, server, clean_env):
    server.reply("Setting x.\n```python\nx = 41 + 1\nnames = ['a', 'b']\nprint('x is', x)\n```")
    server.reply("x is now 42.")
    child = spawn()
    ask(child, "make x")
    child.expect_exact(ASK)
    child.send("y")
    child.expect_exact("x is 42")
    child.expect_exact("x is now 42.")
    child.expect_exact(PROMPT)
    kill9(child)

    journal = only_journal(clean_env)
    assert stat.S_IMODE(journal.stat().st_mode) == 0o600
    events = [r["event"] for r in records(journal)]
    assert "cell_end" in events and events.count("message") == 4  # all that was shown is on disk

    server.reply("Carrying on.")
    again = spawn("--resume", prompt=False)
    again.expect_exact(RERUN)
    again.send("y")
    again.expect_exact("x is 42")  # the cell ran again
    again.expect_exact(PROMPT)
    ask(again, "/py print(x, names)")
    again.expect_exact("42 ['a', 'b']")
    again.expect_exact(PROMPT)
    ask(again, "what now?")
    again.expect_exact("Carrying on.")
    again.expect_exact(PROMPT)

    body = server.requests[-1]
    users = request_text(body, "user")
    assistants = request_text(body, "assistant")
    assert "make x" in users and "x is 42" in users           # the message and the cell result
    assert "x is now 42." in assistants and "x = 41 + 1" in assistants
    told = notes(body)
    assert "resumed" in told and "NOT" not in told and ("rebuilt" in told or "restored" in told), told
    assert without_state(users).rstrip().endswith("what now?")


def test_kill9_during_a_running_cell_reports_it_and_does_not_rerun_it(spawn, server, clean_env):
    server.reply("```python\na = [1, 2, 3]\nprint('a set')\n```")
    server.reply("a is set.")
    server.reply("```python\nb = 'never finished'\nimport time\nprint('MARK-' + 'SLEEPING', flush=True)\ntime.sleep(60)\n```")
    child = spawn()
    ask(child, "set a")
    child.expect_exact(ASK)
    child.send("y")
    child.expect_exact("a is set.")
    child.expect_exact(PROMPT)
    ask(child, "now sleep")
    child.expect_exact(ASK)
    child.send("y")
    child.expect_exact("MARK-SLEEPING")
    kill9(child)

    server.reply("Understood.")
    p = batch(server, "--resume", "-y", input="/py print('a =', a, '| b exists:', 'b' in globals())\nwhat happened?\n")
    assert p.returncode == 0, p.stderr
    out = p.stdout + p.stderr
    assert "Traceback" not in out
    assert "MARK-SLEEPING" not in out                      # the killed cell was not re-run
    assert "cell 2" in out and "not be re-run" in out      # ... and the person is told
    assert "a = [1, 2, 3] | b exists: False" in p.stdout   # cell 1 was
    replays = [r for r in records(only_journal(clean_env)) if r.get("replay") and r["event"] == "cell_start"]
    assert [r["cell"] for r in replays] == [1]

    body = server.requests[-1]
    users = request_text(body, "user")
    assert "set a" in users and "now sleep" in users and "a set" in users
    assert "time.sleep(60)" in request_text(body, "assistant")
    told = notes(body)
    assert "resumed" in told and ("rebuilt" in told or "restored" in told), told


def test_kill9_during_a_tool_call_cell_leaves_a_valid_history_that_tells_the_model(spawn, server, clean_env):
    code = "kept = 'yes'\nimport time\nprint('MARK-' + 'TOOL', flush=True)\ntime.sleep(60)"
    server.reply(tool_calls=[("run_python", json.dumps({"code": code}))])
    child = spawn()
    ask(child, "run the slow thing")
    child.expect_exact(ASK)
    child.send("y")
    child.expect_exact("MARK-TOOL")
    kill9(child)

    server.reply("Noted.")
    p = batch(server, "--resume", "-y", input="did it finish?\n")
    assert p.returncode == 0, p.stderr
    assert "MARK-TOOL" not in p.stdout + p.stderr
    messages = server.requests[-1]["messages"]
    # an assistant tool call must be answered by a tool message, or real APIs reject the request (400)
    for i, m in enumerate(messages):
        for call in m.get("tool_calls") or []:
            answers = [t for t in messages[i + 1:] if t["role"] == "tool" and t.get("tool_call_id") == call["id"]]
            assert answers, f"tool call {call['id']} has no tool message in the resumed request: {messages}"
    # and the model learns that the cell did not finish, so it will not use `kept`
    after = "\n".join(str(m.get("content") or "") for m in messages[1:] if m["role"] in ("tool", "user"))
    assert "cell 1" in after and ("did not finish" in after or "not finish" in after or "killed" in after
                                  or "ended while" in after), after


def test_kill9_while_an_answer_streams_keeps_what_was_shown(spawn, server, clean_env):
    text = "".join(f"line{i} is streaming\n" for i in range(200))
    server.reply(text, chunk_size=5, delay=0.05)
    child = spawn()
    ask(child, "talk a lot")
    child.expect_exact("line5 is streaming")
    kill9(child)

    journal = only_journal(clean_env)
    # everything shown before the kill is in the journal (issue 4 §1) — the part of the answer too
    assert "line5 is streaming" in journal.read_text(encoding="utf-8")

    server.reply("Go on then.")
    p = batch(server, "--resume", "-y", input="go on\n")
    assert p.returncode == 0, p.stderr
    body = server.requests[-1]
    assert "talk a lot" in request_text(body, "user")
    assert "line5 is streaming" in request_text(body, "assistant")  # the conversation as it was seen


def test_resume_from_a_snapshot_after_kill9_needs_no_rerun(spawn, server, clean_env, tmp_path):
    cfg = snapshot_config(tmp_path)
    server.reply("```python\ncounter = 0\nfor _ in range(3):\n    counter += 1\n    print('RUN-' + 'ONCE', counter)\n```")
    server.reply("Counted.")
    child = spawn("--config", cfg)
    ask(child, "count")
    child.expect_exact(ASK)
    child.send("y")
    child.expect_exact("Counted.")
    child.expect_exact(PROMPT)
    kill9(child)

    server.reply("ok")
    # no -y: a snapshot needs no confirmation, and nothing is re-run
    p = batch(server, "--config", cfg, "--resume", input="/py print('counter is', counter)\nand?\n")
    assert p.returncode == 0, p.stderr
    assert "RUN-ONCE" not in p.stdout and "counter is 3" in p.stdout
    told = notes(server.requests[-1])
    assert "snapshot" in told and "NOT" not in told, told


def test_resume_declined_tells_the_model_the_namespace_was_not_restored(spawn, server, clean_env):
    first_session(server)
    server.reply("I will recreate x.")
    child = spawn("--resume", prompt=False)
    child.expect_exact(RERUN)
    child.send("n")
    child.expect_exact("not restored")
    child.expect_exact(PROMPT)
    ask(child, "/py print('x exists:', 'x' in globals())")
    child.expect_exact("x exists: False")
    child.expect_exact(PROMPT)
    ask(child, "use x")
    child.expect_exact("I will recreate x.")
    child.expect_exact(PROMPT)
    body = server.requests[-1]
    assert "make x" in request_text(body, "user") and "x is now 42." in request_text(body, "assistant")
    told = notes(body)
    assert "NOT restored" in told, told


def test_torn_journal_line_is_skipped_with_a_warning(server, clean_env):
    first_session(server)
    journal = only_journal(clean_env)
    with open(journal, "ab") as f:  # a write cut in half by a crash
        f.write(b'{"t":1.0,"event":"message","message":{"role":"user","content":"half a li')
    server.reply("Still here.")
    p = batch(server, "--resume", "-y", input="/py print('x =', x)\nanything else?\n")
    assert p.returncode == 0, p.stderr
    out = p.stdout + p.stderr
    assert "Traceback" not in out
    assert "unreadable journal line" in out
    assert "x = 42" in p.stdout
    body = server.requests[-1]
    assert "make x" in request_text(body) and "half a li" not in request_text(body)
    # the records written after the resume are whole lines again: only the torn one is bad
    lines = journal.read_bytes().splitlines()
    bad = [ln for ln in lines if ln.strip() and not _is_json(ln)]
    assert len(bad) == 1 and bad[0].endswith(b"half a li")
    assert any(b'"resume"' in ln for ln in lines)


def _is_json(line: bytes) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


def test_resume_by_id_prefix_and_an_unknown_id(server, clean_env):
    server.reply("```python\ntag = 'FIRST'\n```")
    server.reply("first done")
    assert batch(server, "-y", input="first session\n").returncode == 0
    server.reply("```python\ntag = 'SECOND'\n```")
    server.reply("second done")
    assert batch(server, "-y", input="second session\n").returncode == 0
    by_text = {p: p.read_text(encoding="utf-8") for p in journals(clean_env)}
    older_path = next(path for path, text in by_text.items() if "first session" in text)
    # two runs in the same second can get ids that differ only in the pid's last digit: give
    # the older one a distinct id (ids are the journal's file name) so a short prefix is unique
    older = "19990101-000000-" + older_path.stem.rsplit("-", 1)[1]
    older_path.rename(older_path.with_name(older + ".jsonl"))
    prefix = "1999"

    server.reply("back in the first")
    p = batch(server, "--resume", prefix, "-y", input="/py print('tag is', tag)\nhello again\n")
    assert p.returncode == 0, p.stderr
    assert "tag is FIRST" in p.stdout
    users = request_text(server.requests[-1], "user")
    assert "first session" in users and "second session" not in users

    before = len(server.requests)
    p = batch(server, "--resume", "no-such-session", input="hi\n")
    assert p.returncode == 2
    assert "no stored session matches 'no-such-session'" in p.stderr and "Traceback" not in p.stderr
    assert len(server.requests) == before  # nothing was sent


def test_unusable_state_folder_keeps_the_repl_working_in_memory_and_says_so_once(spawn, server, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    home = str(blocker / "state")  # root ignores permissions; a path under a file fails for everyone
    server.reply("```python\nq = 5\nprint('q is', q)\n```")
    server.reply("q is five.")
    server.reply("Still working.")
    child = spawn(LLMREPL_HOME=home)
    ask(child, "make q")
    child.expect_exact(ASK)
    child.send("y")
    child.expect_exact("q is 5")
    child.expect_exact("q is five.")
    child.expect_exact(PROMPT)
    ask(child, "/py print('double', q * 2)")
    child.expect_exact("double 10")
    child.expect_exact(PROMPT)
    ask(child, "more")
    child.expect_exact("Still working.")
    child.expect_exact(PROMPT)
    child.sendeof()
    child.expect(pexpect.EOF)
    out = shown(child)
    assert out.count(JOURNAL_FAILED) == 1, out
    assert "in memory" in out
    assert "Traceback" not in out
    assert "make q" in request_text(server.requests[-1], "user")  # the conversation went on in memory


def test_unusable_state_folder_in_batch_mode_is_reported_once(server, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    server.reply("```python\nq = 5\nprint('q is', q)\n```")
    server.reply("q is five.")
    p = batch(server, "-y", input="make q\n/py print('double', q * 2)\n", LLMREPL_HOME=str(blocker / "state"))
    assert p.returncode == 0
    assert "q is 5" in p.stdout and "double 10" in p.stdout
    assert (p.stdout + p.stderr).count(JOURNAL_FAILED) == 1, (p.stdout, p.stderr)


# -- /undo --------------------------------------------------------------------------------


def _two_exchanges(server) -> None:
    server.reply("```python\nv = 1\nprint('v set to', v)\n```")
    server.reply("v is 1.")
    server.reply("```python\nv = 2\nw = 'only in the second'\nprint('v set to', v)\n```")
    server.reply("v is 2.")
    server.reply("After the undo.")


def test_undo_without_snapshots_rewinds_and_says_how(server):
    _two_exchanges(server)
    p = batch(server, "-y", input="set v to 1\nset v to 2\n/undo\n/py print('v', v, 'w' in globals())\nnext\n")
    assert p.returncode == 0, p.stderr
    assert "forgot the last exchange" in p.stdout + p.stderr
    # plain data: the copy kept when the exchange began (a replay otherwise: tests/test_undo.py)
    assert "rewound: restored the copy of the namespace kept before cell 2 (nothing re-ran)" in p.stdout + p.stderr
    assert "v 1 False" in p.stdout
    assert p.stdout.count("v set to 1") == 1
    users = request_text(server.requests[-1], "user")
    assert "set v to 1" in users and "set v to 2" not in users


def test_undo_with_snapshots_rewinds_the_variables(server, tmp_path):
    _two_exchanges(server)
    p = batch(server, "-y", "--config", snapshot_config(tmp_path),
              input="set v to 1\nset v to 2\n/undo\n/py print('v', v, 'w' in globals())\nnext\n")
    assert p.returncode == 0, p.stderr
    assert "forgot the last exchange" in p.stdout + p.stderr
    assert "variables were kept" not in p.stdout + p.stderr
    assert "v 1 False" in p.stdout
    users = request_text(server.requests[-1], "user")
    assert "set v to 1" in users and "set v to 2" not in users


# -- /save, /export, --export, /sessions ----------------------------------------------------

PLOT_SESSION = [
    ("```python\nimport math\ndata = [round(math.sqrt(i), 3) for i in range(5)]\nprint('data:', data)\n```",
     "The data is ready."),
    ("```python\nimport matplotlib.pyplot as plt\nplt.plot(data)\nplt.title('roots')\nplt.show()\n"
     "print('plotted', len(data), 'points')\n```", "Here is the plot."),
]


def _plot_session(server, tail: str) -> subprocess.CompletedProcess[str]:
    for code, answer in PLOT_SESSION:
        server.reply(code)
        server.reply(answer)
    p = batch(server, "-y", input="make some data\nplot it\n" + tail)
    assert p.returncode == 0, p.stderr
    # the figure is named on screen (no inline images into a pipe): number, size, saved path
    assert re.search(r"\[figure 1 (·|-) \d+(×|x)\d+ (·|-) \S+figure-001\.png\]", p.stdout), p.stdout
    return p


def test_save_writes_markdown_with_messages_code_outputs_and_figures(server, tmp_path):
    target = tmp_path / "out" / "transcript.md"
    target.parent.mkdir()
    p = _plot_session(server, f"/save {target}\n")
    assert "wrote" in p.stdout and target.exists()
    md = target.read_text()
    for expected in ("make some data", "plot it", "The data is ready.", "Here is the plot.",
                     "data = [round(math.sqrt(i), 3)", "data: [0.0, 1.0, 1.414, 1.732, 2.0]",
                     "plotted 5 points"):
        assert expected in md, expected
    assert "](" in md and ".png" in md  # a figure link
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_export_py_runs_in_a_fresh_interpreter_with_the_same_output(spawn, server, clean_env, tmp_path):
    server.reply("```python\nnums = [3, 1, 2]\nprint('sorted:', sorted(nums))\n```")
    server.reply("Sorted.")
    server.reply("```python\nprint('DECLINED-CELL-RAN')\nnums.clear()\n```")
    child = spawn()
    ask(child, "sort them")
    child.expect_exact(ASK)
    child.send("y")
    child.expect_exact("Sorted.")
    child.expect_exact(PROMPT)
    ask(child, "now clear them")
    child.expect_exact(ASK)
    child.send("n")
    child.expect_exact(PROMPT)
    ask(child, "/py print('sum:', sum(nums)); total = sum(nums)")
    child.expect_exact("sum: 6")
    child.expect_exact(PROMPT)
    ask(child, "/py print('total twice:', total * 2)")
    child.expect_exact("total twice: 12")
    child.expect_exact(PROMPT)
    target = tmp_path / "x.py"
    ask(child, f"/export {target}")
    child.expect_exact("wrote")
    child.expect_exact(PROMPT)
    child.sendeof()
    child.expect(pexpect.EOF)

    script = target.read_text()
    assert "DECLINED-CELL-RAN" not in script
    seen = "".join(r.get("stdout") or "" for r in records(only_journal(clean_env)) if r["event"] == "cell_end")
    assert seen == "sorted: [1, 2, 3]\nsum: 6\ntotal twice: 12\n"
    fresh = subprocess.run([sys.executable, "-I", str(target)], capture_output=True, text=True,
                           cwd=tmp_path, timeout=30, env={"PATH": os.environ.get("PATH", "")})
    assert fresh.returncode == 0, fresh.stderr
    assert fresh.stdout == seen


def test_export_ipynb_is_valid_and_embeds_the_figure(server, tmp_path):
    import nbformat

    target = tmp_path / "nb.ipynb"
    p = _plot_session(server, f"/export {target}\n")
    assert "wrote" in p.stdout
    nb = nbformat.read(str(target), as_version=4)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "make some data" in markdown and "plot it" in markdown
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert len(code) == 2 and "plt.show()" in code[1].source
    streams = "".join(o.get("text", "") for c in code for o in c.outputs if o.output_type == "stream")
    assert "data: [0.0, 1.0, 1.414, 1.732, 2.0]" in streams and "plotted 5 points" in streams
    pngs = [o.data["image/png"] for o in code[1].outputs if o.output_type == "display_data" and "image/png" in o.data]
    assert len(pngs) == 1
    assert base64.b64decode(pngs[0]).startswith(b"\x89PNG\r\n\x1a\n")


def test_export_from_the_command_line_without_opening_the_repl(server, clean_env, tmp_path):
    first_session(server)
    sid = only_journal(clean_env).stem
    requests = len(server.requests)
    out = tmp_path / "out.py"
    p = run(["--export", str(out)])  # no --base-url, no model: nothing is needed but the journal
    assert p.returncode == 0, p.stderr
    assert "wrote 1 cell" in p.stdout and "llm>" not in p.stdout
    assert len(server.requests) == requests and len(journals(clean_env)) == 1  # no new session
    fresh = subprocess.run([sys.executable, "-I", str(out)], capture_output=True, text=True, cwd=tmp_path, timeout=30)
    assert fresh.returncode == 0 and fresh.stdout == "x is 42\n", fresh.stderr

    md = tmp_path / "by-id.md"
    p = run(["--export", str(md), sid[:-1]])
    assert p.returncode == 0, p.stderr
    assert "make x" in md.read_text() and "x is now 42." in md.read_text()
    p = run(["--export", str(tmp_path / "nope.py"), "no-such-id"])
    assert p.returncode == 2 and "no stored session matches" in p.stderr


def test_sessions_lists_the_stored_session(server, clean_env):
    first_session(server)
    sid = only_journal(clean_env).stem
    p = batch(server, input="/sessions\n")
    assert p.returncode == 0, p.stderr
    line = next((ln for ln in p.stdout.splitlines() if ln.startswith(sid)), None)
    assert line is not None, p.stdout
    fields = line.split()
    assert "make x" in line and fields[3] == "1", line  # id, date, time, cells, first message
    assert "--resume" in p.stdout
