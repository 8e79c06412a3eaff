"""Exports that run top to bottom (issue 14): the ``.py`` in a fresh interpreter prints what
the session printed; the ``.ipynb`` executes under nbclient with a real ipykernel.

The session is the real engine (scripted model, real executor and journal): a cell that
fails part-way and the cell that fixes it, a cell interrupted by a real SIGINT after its
import completed and a later cell that uses that import, prints, a dict value and a figure.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest

from llmrepl.engine.protocols import NullDisplay, ScriptedReviewer
from llmrepl.engine.session import Session
from llmrepl.execution.executor import Executor
from llmrepl.model.client import ScriptedModel
from llmrepl.store.catalogue import sessions_dir
from llmrepl.store.export import export_ipynb, export_py, write_export
from llmrepl.store.journal import Journal
from llmrepl.store.replay import plan_replay
from llmrepl.store.transcript import StoredSession, load_session

LOAD = "import json\ncounts = {'north': 3, 'south': 1}\nprint('regions', len(counts))"
FAILS = ("total = sum(counts.values())\nprint('total', total)\n"
         "share = counts['west'] / total\nprint('share', share)")
FIX = "share = counts.get('west', 0) / total\nprint(f'share {share:.2f}')"
WAITS = "import math\nprint('waiting')\nwhile True:\n    __import__('time').sleep(0.02)"
USES = "print('root', math.sqrt(counts['north'] * 3))\ncounts"
PLOT = ("import matplotlib.pyplot as plt\nplt.bar(list(counts), list(counts.values()))\n"
        "plt.show()\nprint('plotted', json.dumps(counts))")

SESSION_OUTPUT = "regions 2\ntotal 4\nshare 0.00\nwaiting\nroot 3.0\nplotted {\"north\": 3, \"south\": 1}\n"


def _interrupt_the_loop(stop: threading.Event) -> None:
    """Ctrl-C, as the terminal sends it, once the main thread is in the waiting cell's loop
    (its import and print done): the cell is interrupted at its ``while`` statement."""
    main = threading.main_thread().ident
    while not stop.is_set():
        frame = sys._current_frames().get(main)
        while frame is not None and not frame.f_code.co_filename.startswith("<cell-"):
            frame = frame.f_back
        if frame is not None and frame.f_code.co_name == "<module>" and frame.f_lineno >= 3:
            os.kill(os.getpid(), signal.SIGINT)
            return
        stop.wait(0.005)


def build_session(state: Path, sid: str = "20260103-090000-1") -> Path:
    path = sessions_dir(state) / f"{sid}.jsonl"
    journal = Journal(path)
    journal.append("session_start", id=sid, version="0.1.0", model="gpt-test", base_url=None,
                   cwd=str(state), pid=os.getpid(), mode="interactive")
    model = ScriptedModel([
        f"```python\n{LOAD}\n```", "Loaded.",
        f"```python\n{FAILS}\n```", f"No west; count it as 0:\n\n```python\n{FIX}\n```", "Done.",
        f"```python\n{WAITS}\n```",
        f"```python\n{USES}\n```", "There.",
        f"```python\n{PLOT}\n```", "Plotted.",
    ], model="gpt-test")
    session = Session(model, Executor(figure_dir=sessions_dir(state) / sid), display=NullDisplay(),
                      journal=journal)
    session.step("load the counts", ScriptedReviewer(["run"]))
    session.step("the west's share", ScriptedReviewer(["run", "run"]))
    stop = threading.Event()
    ctrl_c = threading.Thread(target=_interrupt_the_loop, args=(stop,), daemon=True)
    ctrl_c.start()
    try:
        session.step("wait for the data", ScriptedReviewer(["run"]))
    finally:
        stop.set()
        ctrl_c.join()
    session.step("a root", ScriptedReviewer(["run"]))
    session.step("plot them", ScriptedReviewer(["run"]))
    journal.append("session_end")
    journal.close()
    assert model.pending == 0
    return path


@pytest.fixture(scope="module")
def stored_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_session(tmp_path_factory.mktemp("runs") / "state")


@pytest.fixture
def stored(stored_path: Path) -> StoredSession:
    return load_session(stored_path)


def _reason(stored: StoredSession, cell: int) -> str:
    """Why the replay plan cuts ``cell`` short, in the plan's words (``store.replay``)."""
    return next(p.reason for p in plan_replay(stored.cells).cells if p.cell == cell)


def test_the_session_is_what_the_exports_must_reproduce(stored):
    """The cells as the journal has them: the failed and the interrupted one got part-way."""
    cells = {c.cell: c for c in stored.cells}
    assert [c.cell for c in stored.cells] == [1, 2, 3, 4, 5, 6]
    assert cells[2].error_type == "KeyError" and cells[2].done == 2
    assert cells[4].interrupted and cells[4].done == 2
    assert cells[5].value == "{'north': 3, 'south': 1}" and cells[6].figures
    assert "".join(c.stdout for c in stored.cells) == SESSION_OUTPUT


# -- .py ---------------------------------------------------------------------------------


def run_script(path: Path) -> subprocess.CompletedProcess[str]:
    """``python PATH`` in a fresh interpreter, in an empty folder, with no display and no
    matplotlib backend chosen: what a colleague given the file would do."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "MPL", "LLMREPL")) and k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    cwd = path.parent / "run"
    cwd.mkdir()
    return subprocess.run([sys.executable, str(path)], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=120, stdin=subprocess.DEVNULL)


def test_py_runs_in_a_fresh_interpreter_and_prints_what_the_session_printed(stored, tmp_path):
    target = tmp_path / "analysis.py"
    message = write_export(stored, target)
    assert message == f"wrote 6 cells (cells 2, 4 in part) to {target}"
    done = run_script(target)
    assert done.returncode == 0, done.stderr
    assert done.stdout == SESSION_OUTPUT
    assert done.stderr == ""  # no traceback, no warning from plt.show()
    assert not list((tmp_path / "run").iterdir())  # no figure window, no file of its own


def test_py_holds_what_completed_and_the_rest_as_comments(stored):
    py = export_py(stored)
    compile(py, "analysis.py", "exec")
    # the failed cell: its first two statements, the failing one only as a comment
    why = _reason(stored, 2)
    assert "KeyError" in why
    assert (f"# cell 2: {why}; what completed runs here\n"
            "total = sum(counts.values())\nprint('total', total)\n"
            "# left out: the rest of cell 2, from where it stopped\n"
            "# share = counts['west'] / total\n# print('share', share)\n") in py
    # the interrupted cell: the import and the print, not the loop
    assert "import math\nprint('waiting')\n# left out: the rest of cell 4, from where it stopped\n# while True:\n" in py
    assert "\nwhile True:" not in py
    # the dict value, as the REPL showed it, stays a comment (a script prints what was printed)
    assert "counts\n# -> {'north': 3, 'south': 1}\n" in py
    # figures drawn off-screen, set before any cell
    assert py.index('_os.environ["MPLBACKEND"] = "Agg"') < py.index("# cell 1")


def test_py_keep_failed_keeps_the_failed_cell_whole_and_carries_on(stored, tmp_path):
    target = tmp_path / "kept.py"
    assert write_export(stored, target, keep_failed=True) == f"wrote 6 cells (cell 4 in part) to {target}"
    py = target.read_text()
    assert "try:\n    total = sum(counts.values())\n" in py and "    share = counts['west'] / total\n" in py
    done = run_script(target)
    assert done.returncode == 0, done.stderr
    assert done.stdout == SESSION_OUTPUT
    assert "KeyError: 'west'" in done.stderr


def test_py_names_a_later_cell_that_reads_what_a_left_out_part_set(tmp_path):
    from test_sessions import exchange, write_journal

    path = write_journal(tmp_path / "s.jsonl", [
        *exchange("a", 1, "import math\nfrom os import sep", ""),
        *exchange("b", 2, "print(math.pi > 3)", "True\n"),
    ])
    # as if cell 1 had stopped at its second statement: `sep` was never set
    stored = load_session(path)
    stored.cells[0].error, stored.cells[0].error_type, stored.cells[0].done = "ImportError\n", "ImportError", 1
    stored.cells[1].code = "print(math.pi > 3, sep)"
    py = export_py(stored)
    assert "# note: cell 2 reads sep, which only the left-out part of cell 1 set: it may stop here" in py
    message = write_export(stored, tmp_path / "s.py")
    assert message.splitlines()[1] == ("note: cell 2 reads sep, which only the left-out part of cell 1 set: "
                                       "it may stop there with a NameError")


def test_a_cell_with_hidden_characters_is_never_exported_as_code(tmp_path):
    """What a terminal showed of it is not what Python reads: like ``--resume``, the exports
    leave it out (even with ``--keep-failed``), as escaped comments or as Markdown."""
    from test_sessions import exchange, write_journal

    hidden = "ok = True  # \u202e\nprint('hidden', ok)"
    path = write_journal(tmp_path / "s.jsonl", [*exchange("a", 1, hidden, "hidden True\n"),
                                                *exchange("b", 2, "print('shown')", "shown\n")])
    stored = load_session(path)
    for keep in (False, True):
        py = export_py(stored, keep_failed=keep)
        assert "\u202e" not in py and "# ok = True  # \\u202e" in py and "\nprint('hidden', ok)" not in py
        code = [c.source for c in nbformat.reads(export_ipynb(stored, keep_failed=keep), as_version=4).cells
                if c.cell_type == "code"]
        assert code == ["print('shown')"]


def test_keep_failed_from_the_command_line_and_the_repl(stored_path, tmp_path):
    """``llmrepl --export PATH ID --keep-failed`` and ``/export PATH --keep-failed --force``."""
    import shutil

    from launch import run

    from llmrepl.engine.commands import dispatch

    state = stored_path.parents[1]
    out = tmp_path / "kept.py"
    p = run(["--export", str(out), stored_path.stem, "--keep-failed"], LLMREPL_HOME=str(state))
    assert p.returncode == 0, p.stderr
    assert p.stdout == f"wrote 6 cells (cell 4 in part) to {out}\n"
    assert "try:\n    total = sum(counts.values())\n" in out.read_text()
    p = run(["--keep-failed"], LLMREPL_HOME=str(state))
    assert p.returncode == 2 and "--keep-failed goes with --export" in p.stderr
    # in the REPL, the flags in either order
    journal_copy = sessions_dir(tmp_path / "state") / stored_path.name
    journal_copy.parent.mkdir(parents=True)
    shutil.copyfile(stored_path, journal_copy)
    journal = Journal(journal_copy)
    try:
        session = Session(ScriptedModel([]), Executor(), display=NullDisplay(), journal=journal)
        nb = tmp_path / "nb.ipynb"
        assert dispatch(f"/export {nb} --keep-failed", session).text == f"wrote 6 cells (cell 4 in part) to {nb}"
        tags = [c.metadata.get("tags") for c in nbformat.read(str(nb), as_version=4).cells if c.cell_type == "code"]
        assert tags == [None, ["raises-exception"], None, None, None, None]
        assert dispatch(f"/export --force {nb}", session).text == f"wrote 6 cells (cells 2, 4 in part) to {nb}"
        assert dispatch(f"/export {nb} --force --keep-failed", session).text.startswith("wrote 6 cells")
        assert dispatch("/export --keep-failed", session).level == "error"
    finally:
        journal.close()


MAGICS = "print('before')\n!echo from-shell\n%time sq = 7 * 6\nprint('sq', sq)"


def _untimed(text: str) -> str:
    """Output without the lines ``%time`` writes (they differ from run to run)."""
    return "".join(line for line in text.splitlines(True) if not line.startswith(("CPU time", "Wall time")))


@pytest.fixture(scope="module")
def magic_session(tmp_path_factory: pytest.TempPathFactory) -> StoredSession:
    """A cell with IPython magics (``!cmd``, ``%time``), run by the real executor."""
    state = tmp_path_factory.mktemp("magics") / "state"
    path = sessions_dir(state) / "20260103-100000-1.jsonl"
    journal = Journal(path)
    journal.append("session_start", id=path.stem, model="gpt-test", cwd=str(state), pid=os.getpid(),
                   mode="interactive")
    model = ScriptedModel([f"```python\n{MAGICS}\n```", "Done."], model="gpt-test")
    Session(model, Executor(), display=NullDisplay(), journal=journal).step("go", ScriptedReviewer(["run"]))
    journal.close()
    stored = load_session(path)
    assert _untimed(stored.cells[0].stdout) == "before\nfrom-shell\nsq 42\n"
    return stored


def test_py_turns_magics_into_python_that_prints_in_order(magic_session, tmp_path):
    target = tmp_path / "magics.py"
    write_export(magic_session, target)
    assert "!echo" not in target.read_text() and "%time" not in target.read_text()
    done = run_script(target)
    assert done.returncode == 0, done.stderr
    assert _untimed(done.stdout) == "before\nfrom-shell\nsq 42\n"  # the shell's line between the prints


# -- .ipynb under nbclient -----------------------------------------------------------------


class Kernel:
    """One ipykernel for this module, from this venv's Python (a kernelspec written for the
    test, so no user's or system's ``python3`` kernel is picked up); each notebook starts
    from an empty namespace (``%reset -f``)."""

    def __init__(self, folder: Path) -> None:
        from jupyter_client.kernelspec import KernelSpecManager
        from jupyter_client.manager import KernelManager

        spec = folder / "kernels" / "llmrepl-test"
        spec.mkdir(parents=True)
        (spec / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "llmrepl test", "language": "python"}))
        self.cwd = folder / "cwd"
        self.cwd.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "MPL"))}
        self.km = KernelManager(kernel_name="llmrepl-test",
                                kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(spec.parent)]))
        self.km.start_kernel(cwd=str(self.cwd), env=env)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=120)

    def execute(self, text: str) -> Any:
        """Run every cell of the notebook ``text``, top to bottom; raises
        ``nbclient.exceptions.CellExecutionError`` at a cell that fails untagged."""
        from nbclient import NotebookClient

        self.kc.execute_interactive("%reset -f", timeout=60)
        nb = nbformat.reads(text, as_version=4)
        client = NotebookClient(nb, km=self.km, timeout=120, kernel_name="llmrepl-test")
        client.kc = self.kc
        client.execute()
        return nb

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=False)
        self.km.cleanup_resources()


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kernel]:
    k = Kernel(tmp_path_factory.mktemp("kernel"))
    try:
        yield k
    finally:
        k.close()


def _printed(nb: Any) -> str:
    return "".join(o.text for c in nb.cells if c.cell_type == "code" for o in c.outputs
                   if o.output_type == "stream" and o.name == "stdout")


def test_ipynb_executes_top_to_bottom_without_error(stored, kernel):
    text = export_ipynb(stored)
    nb = kernel.execute(text)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.metadata["llmrepl"]["cell"] for c in code] == [1, 2, 3, 4, 5, 6]
    assert not any(o.output_type == "error" for c in code for o in c.outputs)
    assert _printed(nb) == SESSION_OUTPUT
    # the dict value and the figure, as the kernel shows them
    assert code[4].outputs[-1].data["text/plain"] == "{'north': 3, 'south': 1}"
    assert any("image/png" in o.get("data", {}) for o in code[5].outputs)
    # the cells that stopped hold what completed; the rest is Markdown after them
    assert code[1].source == "total = sum(counts.values())\nprint('total', total)"
    assert code[3].source == "import math\nprint('waiting')"
    markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert f"_Cell 2: {_reason(stored, 2)}; the cell below holds what completed._" in markdown
    assert "_Left out: the rest of cell 2, from where it stopped:_\n\n```python\nshare = counts['west'] / total" in markdown
    assert "KeyError: 'west'" in markdown
    # the conversation is there
    assert "**You:** the west's share" in markdown and "**Model:** No west; count it as 0:" in markdown


def test_ipynb_keep_failed_tags_the_failed_cell_and_still_runs(stored, kernel):
    nb = kernel.execute(export_ipynb(stored, keep_failed=True))
    code = [c for c in nb.cells if c.cell_type == "code"]
    failed = code[1]
    assert failed.source == FAILS and failed.metadata["tags"] == ["raises-exception"]
    assert [o.ename for o in failed.outputs if o.output_type == "error"] == ["KeyError"]
    assert code[3].source == "import math\nprint('waiting')"  # interrupted: still what completed
    assert _printed(nb) == SESSION_OUTPUT


def test_ipynb_keeps_magics_for_ipykernel(magic_session, kernel):
    nb = kernel.execute(export_ipynb(magic_session))
    [code] = [c for c in nb.cells if c.cell_type == "code"]
    assert code.source == MAGICS
    assert _untimed(_printed(nb)).replace("\r\n", "\n") == "before\nfrom-shell\nsq 42\n"
