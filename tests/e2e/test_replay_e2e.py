"""Issue 14's session, end to end: the installed ``llmrepl`` in a real pty, cells written by the
scripted fake server, a real Ctrl-C in the middle of a long loop; then ``llmrepl --resume -y``
must rebuild the namespace with no failure, write no figure again, and number the next cell
after the last. Every wait is on output or on a process exit, never a fixed sleep."""

from __future__ import annotations

import io
import json
from pathlib import Path

import launch
import pexpect
from launch import PROMPT, run

CELLS = {
    1: "sales = {'north': 412, 'west': 380, 'south': 201}",
    2: "total = sum(sales.values())",
    3: "print('total is', total)",
    4: "share = sales['east'] / total",                                   # KeyError
    5: "share = sales.get('east', 0) / total\nci = (round(share, 3), 0.95)",  # the model's fix
    6: "gap = sales['north'] - sales['west']",
    7: "regions = sorted(sales)",
    # the marker is printed inside the loop: the Ctrl-C lands in the loop statement, wherever
    8: "import numpy as np\nfor step in range(10**12):\n    if step == 1000:\n        print('LOOP' + 'ING', flush=True)\n"
       "after = 1",
    9: "arr = np.array([ci[1], gap])\nprint('arr is', arr)",
    10: "import matplotlib.pyplot as plt\nplt.plot(arr)\nplt.title('gap')\nplt.show()",
}


def block(n: int) -> str:
    return f"Cell {n}.\n```python\n{CELLS[n]}\n```"


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_resume_replays_what_ran_after_a_real_ctrl_c(server, clean_env):
    server.default_reply = "ok."
    for n in (1, 2, 3):
        server.reply(block(n))
    server.reply("Loaded.")
    child = launch.spawn(["--base-url", server.base_url, "-y"], env=launch.child_env(tty=True))
    child.logfile_read = io.StringIO()
    try:
        child.expect_exact(PROMPT)
        child.send("load the sales\r")
        child.expect_exact("Loaded.")
        child.expect_exact(PROMPT)
        server.reply(block(4))
        server.reply(block(5))
        server.reply("Fixed: east has no sales.")
        child.send("the share of east\r")
        child.expect_exact("KeyError")
        child.expect_exact("Fixed: east has no sales.")
        child.expect_exact(PROMPT)
        server.reply(block(6))
        server.reply(block(7))
        server.reply("Done.")
        child.send("the gap\r")
        child.expect_exact("Done.")
        child.expect_exact(PROMPT)
        server.reply(block(8))
        child.send("a long numpy loop\r")
        child.expect_exact("LOOPING")
        child.sendintr()  # a real Ctrl-C, through the terminal, while the loop runs
        child.expect_exact("interrupted")
        child.expect_exact(PROMPT)
        server.reply(block(9))
        server.reply("There.")
        child.send("use np\r")
        child.expect_exact("arr is [ 0.95 32.  ]")
        child.expect_exact(PROMPT)
        server.reply(block(10))
        server.reply("Plotted.")
        child.send("plot it\r")
        child.expect_exact("Plotted.")
        child.expect_exact(PROMPT)
        child.sendeof()
        child.expect(pexpect.EOF)
        child.wait()
        assert child.exitstatus == 0
    finally:
        child.terminate(force=True)

    journal = next((clean_env / "sessions").glob("*.jsonl"))
    folder = journal.with_suffix("")
    assert sorted(p.name for p in folder.glob("figure-*.png")) == ["figure-001.png"]
    ends = {r["cell"]: r for r in records(journal) if r["event"] == "cell_end"}
    assert sorted(ends) == list(range(1, 11))
    assert ends[4]["error_type"] == "KeyError" and ends[4]["done"] == 0
    assert ends[8]["interrupted"] and ends[8]["done"] == 1, ends[8]["error"]

    server.reply("Yes, all there.")
    p = run(["--base-url", server.base_url, "--resume", "-y"], timeout=120,
            input="/py print(np.__name__, ci, gap, regions, 'step' in globals(), 'after' in globals())\n"
                  "does everything exist?\n")
    assert p.returncode == 0, p.stderr
    out = p.stdout + p.stderr
    assert "cells 1-3, 5-7, 9-10 will be re-run" in out
    assert "cell 4 will not be re-run: failed at its first statement (KeyError)" in out
    assert "cell 8 will be re-run only up to where it stopped: interrupted (Ctrl-C) after 1 of 3 statements" in out
    assert "re-ran 9 cells (1 of them up to where they stopped); 1 not re-run; the namespace is rebuilt" in out
    assert "failed now" not in out
    assert "numpy (0.0, 0.95) 32 ['north', 'south', 'west'] False False" in p.stdout
    # no figure file written again, and the next cell is numbered after the last one
    assert sorted(q.name for q in folder.glob("figure-*.png")) == ["figure-001.png"]
    new = [r for r in records(journal) if r["event"] == "cell_start" and not r.get("replay")]
    assert [r["cell"] for r in new][-1] == 11
    replayed = [r for r in records(journal) if r["event"] == "cell_start" and r.get("replay")]
    assert [r["cell"] for r in replayed] == [1, 2, 3, 5, 6, 7, 8, 9, 10]
    assert next(r["code"] for r in replayed if r["cell"] == 8) == "import numpy as np\n"
    # the model is told what was restored, and what was not
    note = "\n".join(str(m.get("content")) for m in server.requests[-1]["messages"] if m["role"] == "user")
    assert "re-running 9 earlier cells: what they made exists again." in note
    assert "Cell 8 was re-run only up to where it stopped the first time (interrupted (Ctrl-C) after 1 of 3" in note
    assert "does not exist now: cell 4 (failed at its first statement (KeyError))" in note

    # the same session exported: the .py runs in a fresh interpreter and prints what the cells
    # that can be reproduced printed (cell 8's loop, stopped by Ctrl-C, is cut to its import);
    # the .ipynb runs top to bottom under nbclient with no error
    from test_export_runs import Kernel, run_script

    sid = journal.stem
    out_dir = clean_env / "exports"
    out_dir.mkdir()
    for name in ("issue14.py", "issue14.ipynb"):
        p = run(["--export", str(out_dir / name), sid], timeout=60)
        assert p.returncode == 0, p.stderr
        assert "cell 4 left out" in p.stdout and "cell 8 in part" in p.stdout, p.stdout
    script = run_script(out_dir / "issue14.py")
    assert script.returncode == 0, script.stderr
    # (cell 11, typed after the resume, checks what was rebuilt: the script rebuilds it too)
    assert script.stdout == ("total is 993\narr is [ 0.95 32.  ]\n"
                             "numpy (0.0, 0.95) 32 ['north', 'south', 'west'] False False\n")
    kernel = Kernel(clean_env / "kernel")
    try:
        nb = kernel.execute((out_dir / "issue14.ipynb").read_text(encoding="utf-8"))
    finally:
        kernel.close()
    printed = "".join(o.text for c in nb.cells if c.cell_type == "code" for o in c.outputs
                      if o.output_type == "stream" and o.name == "stdout")
    assert "total is 993" in printed and "arr is [ 0.95 32.  ]" in printed
