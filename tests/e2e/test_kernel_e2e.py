"""``llmrepl --kernel``, end to end: the installed command with a real ipykernel.

Batch runs (stdin a pipe) and pty sessions against the fake OpenAI server: cells run in the
kernel's process, the kernel's death is survived and replayed, --resume and exports work
through a kernel and match in-process ones, and in a terminal the prompt comes before the
kernel is ready, Ctrl-C interrupts the kernel and input() is asked. Waits are on output.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
from pathlib import Path
from typing import Any

import pexpect
import pytest
from launch import PROMPT, run

pytest.importorskip("ipykernel")
pytest.importorskip("jupyter_client")

ASK = "Run this code? [Y/n/e/a]"


def batch(server, *args: str, input: str = "", **extra_env: str):
    return run(["--base-url", server.base_url, *args], input=input, timeout=180, **extra_env)


def records(home: Path) -> list[dict[str, Any]]:
    (journal,) = sorted((home / "sessions").glob("*.jsonl"))
    return [json.loads(line) for line in journal.read_text().splitlines() if line.strip()]


@pytest.fixture
def spawn(pty_llmrepl):
    return lambda *args: pty_llmrepl(*args, logfile=io.StringIO(), wait=False, timeout=90)


def test_cells_run_in_the_kernel_process_and_vars_reads_the_kernel(server, clean_env):
    server.reply(f"```python\nimport os\nx = 41 + 1\nprint('in llmrepl:', os.getpid() == {os.getpid()}, "
                 "'| parent is llmrepl:', os.getppid() != 1)\nx\n```")
    server.reply("Done.")
    p = batch(server, "-y", "--kernel", input="make x\n/vars\n")
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    assert "kernel python3 (local) ready in " in out  # start time shown
    assert "in llmrepl: False" in p.stdout
    assert "x" in p.stdout and "int" in p.stdout and "42" in p.stdout
    told = json.dumps(server.requests[-1])
    assert "- x: 42" in told  # the digest the model reads was made in the kernel


def test_os_exit_in_a_cell_ends_only_the_kernel_and_yes_replays_the_session(server, clean_env):
    server.reply("```python\ntotal = 40 + 2\nprint('total made')\n```")
    server.reply("Made.")
    server.reply("```python\nimport os\nos._exit(7)\n```")
    server.reply("It died.")
    p = batch(server, "-y", "--kernel",
              input="make total\ncrash\n/py print('total is still', total)\n")
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    assert "the kernel died while cell 2 ran (exit status 7)" in out
    assert "the kernel was restarted and cell 1 re-run" in out
    assert "total is still 42" in p.stdout
    assert p.stdout.count("\ntotal made\n") == 1  # the replayed cell's output is not shown again
    events = [r["event"] for r in records(clean_env)]
    assert events.count("message") >= 6 and "cell_end" in events  # the journal goes on
    told = json.dumps(server.requests[-1])
    assert "the kernel died while cell 2 ran" in told


def test_resume_through_a_kernel_replays_into_it(server, clean_env):
    server.reply("```python\nnames = ['a', 'b']\nprint('made names')\n```")
    server.reply("Made.")
    assert batch(server, "-y", input="make names\n").returncode == 0  # in-process first
    server.reply("Again.")
    p = batch(server, "--resume", "-y", "--kernel",
              input="/py import os; print(names, os.getpid() != os.getppid())\ncarry on\n")
    assert p.returncode == 0, p.stderr
    assert "['a', 'b'] True" in p.stdout


def test_exports_through_a_kernel_are_the_same_as_in_process(server, tmp_path):
    script = ["```python\nnums = [3, 1, 2]\nprint('sorted:', sorted(nums))\nlen(nums)\n```", "Sorted.",
              "```python\nnums[10]\n```", "Oops."]
    exports = {}
    for mode in ("in-process", "kernel"):
        home = tmp_path / mode
        for reply in script:
            server.reply(reply)
        target = tmp_path / f"{mode}.py"
        args = ["-y"] + (["--kernel"] if mode == "kernel" else [])
        p = batch(server, *args, input=f"sort\nindex\n/export {target}\n", LLMREPL_HOME=str(home))
        assert p.returncode == 0, p.stderr
        # the first line names the session, and the header its start time (the two runs may
        # fall in different minutes): the rest must be the same
        head, rest = target.read_text().split("\n", 1)
        exports[mode] = [head, re.sub(r"started: \d{4}-\d\d-\d\d \d\d:\d\d", "started: <time>", rest)]
    assert "len(nums)\n# -> 3" in exports["kernel"][1]
    assert "cell 2: left out: failed at its first statement (IndexError)" in exports["kernel"][1]  # done=0
    assert exports["kernel"][1] == exports["in-process"][1]


def test_in_a_terminal_the_prompt_comes_first_then_ctrl_c_and_input_reach_the_kernel(spawn, server):
    child = spawn("--kernel")
    child.expect_exact(PROMPT)  # drawn before the kernel is ready
    child.expect_exact("ready in ")
    child.send("/py import time; before = 'survived'\r")
    child.expect_exact(PROMPT)
    child.send("/py print('LOOP-' + 'STARTED', flush=True); time.sleep(600)\r")
    child.expect_exact("LOOP-STARTED")
    child.sendintr()
    child.expect_exact("cell 2 interrupted")
    child.expect_exact(PROMPT)
    child.send("/py print('STILL-' + before)\r")
    child.expect_exact("STILL-survived")
    child.expect_exact(PROMPT)
    child.send("/py answer = input('Your name? '); print('HELLO-' + answer)\r")
    child.expect_exact("Your name? ")
    child.send("Ada\r")
    child.expect_exact("HELLO-Ada")
    child.expect_exact(PROMPT)
    child.sendeof()
    child.expect(pexpect.EOF)
    child.wait()
    assert child.exitstatus == 0


def test_a_kernel_killed_from_outside_is_reported_and_restart_offered(spawn, server):
    child = spawn("--kernel")
    child.expect_exact("ready in ")
    child.send("/py import os; keep = 'kept'; print('KERNEL-PID', os.getpid())\r")
    child.expect(r"KERNEL-PID (\d+)")
    pid = int(child.match.group(1))
    child.expect_exact(PROMPT)  # the cell has finished: the kernel is idle when it is killed
    os.kill(pid, signal.SIGKILL)
    child.send("/py print('after kill')\r")
    child.expect_exact("SIGKILL")
    child.expect_exact("re-run the 1 earlier cell(s) of this session? [y/N]")
    child.send("y")
    child.expect_exact("re-run")
    child.expect_exact(PROMPT)
    child.send("/py print('VALUE-' + keep)\r")
    child.expect_exact("VALUE-kept")
    child.expect_exact(PROMPT)
    child.sendeof()
    child.expect(pexpect.EOF)
