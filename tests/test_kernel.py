"""Cells in a real Jupyter kernel (ipykernel through jupyter_client): ``KernelExecutor``.

One kernel serves the module (it starts in about a second); the isolation faults restart it.
Every wait is on the kernel's own messages, never a fixed sleep; no timing assertions.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

pytest.importorskip("ipykernel")
pytest.importorskip("jupyter_client")

from kernel_fakes import FakeClient, FakeHandle  # noqa: E402

from llmrepl.engine.commands import dispatch  # noqa: E402
from llmrepl.engine.protocols import NullDisplay, ScriptedReviewer  # noqa: E402
from llmrepl.engine.session import Session  # noqa: E402
from llmrepl.execution.kernel import KernelExecutor, connector  # noqa: E402
from llmrepl.execution.kernel_seam import KernelUnavailable  # noqa: E402
from llmrepl.model.client import ScriptedModel  # noqa: E402


class Sink:
    """What a front end sees live: text, and display items."""

    def __init__(self) -> None:
        self.text: list[tuple[str, str]] = []
        self.items: list[object] = []
        self.seen = threading.Event()
        self.wanted = ""

    def write(self, stream: str, text: str) -> None:
        self.text.append((stream, text))
        if self.wanted and self.wanted in text:
            self.seen.set()

    def display(self, item: object) -> None:
        self.items.append(item)


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory):
    ex = KernelExecutor(connector("python3"), figure_dir=tmp_path_factory.mktemp("figures"))
    ex.start()
    assert ex.wait_ready(120), ex.start_error
    yield ex
    ex.shutdown()


@pytest.fixture
def ex(kernel: KernelExecutor):
    """The module's kernel, alive, with a fresh sink and no input function."""
    if kernel.needs_restart:
        kernel.restart()
    kernel.sink = Sink()
    kernel.input_func = None
    kernel.save_figures = True
    yield kernel


def test_output_is_live_the_value_comes_back_and_the_cell_runs_in_another_process(ex):
    r = ex.run(f"import os\nx = 41 + 1\nprint('pid', os.getpid() != {os.getpid()})\nx")
    assert r.ok and r.output == "pid True\n" and r.stdout == "pid True\n"
    assert r.value_repr == "42" and r.value_data is not None
    assert ex.sink.text == [("stdout", "pid True\n")]  # live, through the same sink as in-process
    assert r.done == 4
    r = ex.run("import sys\nprint('to stderr', file=sys.stderr)")
    assert r.stderr == "to stderr\n" and r.output == "to stderr\n"


def test_the_namespace_is_described_inside_the_kernel_and_never_travels(ex):
    ex.run("import numpy as np\nimport json\nbig = np.zeros((300, 4))\nword = 'hello'\n"
           "rows = [1, 2, 3]\ndef area(w, h=2):\n    return w * h\n")
    ns = ex.namespace
    assert repr(ns["big"]) == "numpy.ndarray, shape (300, 4), dtype float64"
    assert repr(ns["word"]) == "'hello'"
    assert repr(ns["rows"]).startswith("list, 3 items")
    assert repr(ns["area"]) == "function area(w, h=2)"
    assert ns["json"].__name__ == "json"  # a module stand-in: the digest lists it with the modules
    assert not any(name in ns for name in ("In", "Out", "get_ipython", "_i1", "_"))
    assert type(ns["big"]).__module__ == "llmrepl.execution.kernel_values"  # a description, no array


def test_an_unchanged_value_keeps_its_stand_in_so_the_digest_sees_only_changes(ex):
    ex.run("kept = [1, 2]\nchanged = 1")
    before = ex.namespace
    ex.run("changed = 2")
    after = ex.namespace
    assert after["kept"] is before["kept"]
    assert after["changed"] is not before["changed"] and repr(after["changed"]) == "2"


def test_an_error_gives_the_traceback_without_colours_and_how_far_the_cell_got(ex):
    r = ex.run("a = 1\nb = [1,\n     2]\nc = {}['missing']\nd = 4")
    assert r.error_type == "KeyError" and "\x1b" not in r.error
    assert "----> 4 c = {}['missing']" in r.error and r.error.rstrip().endswith("KeyError: 'missing'")
    assert r.done == 2  # a and b completed; the failing statement is the third
    assert "b" in ex.namespace and "d" not in ex.namespace  # the summary is asked for after a failure too
    r = ex.run("x = (")
    assert r.error_type == "SyntaxError" and r.done == 0


def test_display_data_arrives_as_mime_bundles_and_images_become_figures(ex, tmp_path):
    r = ex.run("from IPython.display import HTML, display\ndisplay(HTML('<b>bold</b>'))\nprint('after')")
    assert [d.data.get("text/html") for d in r.displays] == ["<b>bold</b>"]
    assert r.displays[0].at == 0 and r.output == "after\n"
    assert ex.sink.items == r.displays  # shown live, as in-process display items are
    r = ex.run("import matplotlib\nmatplotlib.use('module://matplotlib_inline.backend_inline')\n"
               "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.show()")
    assert r.ok and len(r.figures) == 1
    png = Path(r.figures[0])
    assert png.name.startswith("figure-") and png.read_bytes().startswith(b"\x89PNG")
    assert r.displays[0].text.startswith("image ")  # the model reads a description
    ex.save_figures = False  # a replay: figures are not written again
    r = ex.run("plt.plot([1, 2])\nplt.show()")
    assert r.ok and r.figures == [] and len(r.displays) == 1


def test_input_is_asked_through_the_same_input_function(ex):
    asked: list[str] = []

    def answer(prompt: str) -> str:
        asked.append(prompt)
        return "Ada"

    ex.input_func = answer
    r = ex.run("name = input('who? ')\nprint('hi', name)")
    assert asked == ["who? "] and r.ok
    assert r.output == "who? Ada\nhi Ada\n"

    def eof(prompt: str) -> str:
        raise EOFError

    ex.input_func = eof
    r = ex.run("input('more? ')")
    assert r.error_type == "EOFError"


def test_input_without_an_input_function_is_refused_clearly(ex):
    r = ex.run("input('who? ')")
    assert r.error_type == "StdinNotImplementedError"
    assert "raw_input was called, but this frontend does not support input requests" in r.error


def test_ctrl_c_interrupts_the_kernel_and_the_namespace_survives(ex):
    ex.run("survivor = 'still here'")
    ex.sink.wanted = "started"

    def press_ctrl_c() -> None:
        if ex.sink.seen.wait(60):
            os.kill(os.getpid(), signal.SIGINT)  # what the terminal sends llmrepl on Ctrl-C

    presser = threading.Thread(target=press_ctrl_c)
    presser.start()
    previous = signal.getsignal(signal.SIGINT)
    r = ex.run("import time\nprint('started', flush=True)\nwhile True:\n    time.sleep(0.01)")
    presser.join()
    assert signal.getsignal(signal.SIGINT) is previous  # put back after the cell
    assert r.interrupted and r.error_type == "KeyboardInterrupt" and r.done == 2
    assert not ex.needs_restart
    assert ex.run("survivor").value_repr == "'still here'"


def test_a_time_limit_interrupts_the_kernel(ex):
    r = ex.run("import time\nfor _ in range(10**6):\n    time.sleep(0.01)", timeout=0.5)
    assert r.timed_out and r.error_type == "CellTimeout" and not r.interrupted
    assert "ran longer than 0.5 s" in r.error
    assert ex.run("1 + 1").value_repr == "2"


def test_os_exit_ends_only_the_kernel_and_a_restart_gives_a_fresh_one(ex):
    ex.run("before = 1")
    r = ex.run("import os\nos._exit(3)")
    assert r.error_type == "KernelDied" and "exit status 3" in r.error and ex.needs_restart
    assert r.done is None
    r = ex.run("1")  # nothing runs until a restart
    assert r.error_type == "KernelDied" and "needs a restart" in r.error
    ex.restart()
    assert not ex.needs_restart and "before" not in ex.namespace
    assert ex.run("2 + 2").value_repr == "4"


def test_a_segfault_through_ctypes_ends_only_the_kernel(ex):
    r = ex.run("import ctypes\nctypes.string_at(0)")
    assert r.error_type == "KernelDied" and "SIGSEGV" in r.error


def test_a_kernel_killed_from_outside_between_cells_is_reported(ex):
    pid = int(ex.run("import os\nos.getpid()").value_repr)
    os.kill(pid, signal.SIGKILL)
    r = ex.run("1")
    assert r.error_type == "KernelDied" and "SIGKILL" in r.error and ex.needs_restart


def test_reset_empties_the_kernel_namespace(ex):
    ex.run("gone_after_reset = 1")
    ex.reset()
    assert "gone_after_reset" not in ex.namespace
    assert ex.run("'gone_after_reset' in globals()").value_repr == "False"


# -- through a Session: /vars, the digest, and the restart offer that replays ------------------


def make_session(ex: KernelExecutor, *replies: str, ask: bool | None) -> tuple[Session, ScriptedModel, NullDisplay]:
    model = ScriptedModel(list(replies))
    display = NullDisplay()
    session = Session(model, ex, display=display)  # type: ignore[arg-type]
    if ask is not None:
        session.ask = lambda question: ask
    return session, model, display


def test_vars_and_the_models_digest_come_from_the_kernel(ex):
    ex.reset()
    session, model, _ = make_session(ex, "```python\nimport math\nscores = [3, 1, 2]\nlabel = 'run-7'\n```",
                                     "Done.", ask=None)
    session.step("make data", ScriptedReviewer(["run"]))
    listing = dispatch("/vars", session).text or ""
    assert "scores" in listing and "list" in listing and "3 items" in listing
    assert "label" in listing and "'run-7'" in listing
    sent = str(model.calls[1]["messages"])
    assert "- scores: list, 3 items" in sent and "math" in sent


def test_a_dying_kernel_is_restarted_on_yes_and_the_earlier_cells_replayed(ex):
    ex.reset()
    session, model, display = make_session(
        ex, "```python\ntotal = 40 + 2\n```", "Made it.", "```python\nimport os\nos._exit(9)\n```", "Oops.",
        ask=True)
    made = session.step("make total", ScriptedReviewer(["run"])).cells[0].cell
    died = session.step("crash it", ScriptedReviewer(["run"])).cells[0]
    assert died.error_type == "KernelDied"
    assert any("the kernel is down" in n for n in display.notices)
    assert any(f"restarted and cell {made} re-run" in n for n in display.notices), display.notices
    assert not ex.needs_restart and ex.run("total").value_repr == "42"
    told = str(model.calls[-1]["messages"][-1])  # the model reads what happened to the cell
    assert f"the kernel died while cell {died.cell} ran" in told and "re-run" in told
    assert ex.cell_count > died.cell  # numbers never repeat after a replay


def test_a_declined_restart_leaves_the_kernel_down_until_slash_restart(ex):
    ex.reset()
    session, model, display = make_session(
        ex, "```python\nkept = 'yes'\n```", "ok", "```python\nimport os\nos._exit(1)\n```", "Oops.", ask=False)
    session.step("make it", ScriptedReviewer(["run"]))
    session.step("crash it", ScriptedReviewer(["run"]))
    assert ex.needs_restart and any("/restart" in n for n in display.notices)
    result = dispatch("/restart", session)
    assert result.level == "info" and "re-run" in (result.text or "")
    assert ex.run("kept").value_repr == "'yes'"


def test_restart_in_process_is_refused_with_a_reason():
    from llmrepl.execution.executor import Executor

    session = Session(ScriptedModel([]), Executor(), display=NullDisplay())
    result = dispatch("/restart", session)
    assert result.level == "error" and "--kernel" in (result.text or "")


# -- starting --------------------------------------------------------------------------------


def test_an_unknown_kernelspec_is_a_clear_message_not_a_traceback():
    ex = KernelExecutor(connector("no-such-kernel-xyz"))
    news: list[tuple[str, str]] = []
    ex.listen(lambda text, level: news.append((text, level)))
    assert not ex.wait_ready(60)
    assert "no kernel named 'no-such-kernel-xyz'" in (ex.start_error or "")
    assert news and news[0][1] == "error" and "python3" in news[0][0]
    r = ex.run("1")
    assert r.error_type == "KernelUnavailable" and "no kernel named" in r.error
    with pytest.raises(KernelUnavailable):
        ex.restart()


def test_start_time_is_reported_when_ready(kernel):
    news: list[tuple[str, str]] = []
    kernel.listen(lambda text, level: news.append((text, level)))
    assert kernel.start_seconds is not None
    assert any(text.startswith("kernel python3 (local) ready in ") for text, _ in news)


def test_a_connection_file_attaches_to_a_running_kernel(tmp_path):
    from jupyter_client import KernelManager

    km = KernelManager(kernel_name="python3")
    km.start_kernel(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        own = km.client()  # the kernel is up and answering before llmrepl attaches (a loaded CI
        own.start_channels()  # machine can take longer than the attach's wait to start one)
        own.wait_for_ready(timeout=120)
        own.stop_channels()
        ex = KernelExecutor(connector(km.connection_file))
        assert ex.wait_ready(60), ex.start_error
        assert ex.run("shared = 5\nshared * 2").value_repr == "10"
        assert "attached" in ex.description
        r = ex.run("import time\nwhile True:\n    time.sleep(0.01)", timeout=0.5)  # an interrupt_request
        assert r.timed_out and r.error_type == "CellTimeout"
        assert ex.run("shared").value_repr == "5"
        ex.shutdown()  # leaves the kernel running: it is not ours
        assert km.is_alive()
        with pytest.raises(KernelUnavailable):
            ex.restart()
    finally:
        km.shutdown_kernel(now=True)


def test_undo_rewinds_the_kernel_namespace_by_replaying(ex):
    ex.reset()
    session, model, _ = make_session(ex, "```python\nlevel = 1\n```", "Set.", "```python\nlevel = 2\nextra = 'x'\n```",
                                     "Changed.", ask=None)
    session.step("set it", ScriptedReviewer(["run"]))
    session.step("change it", ScriptedReviewer(["run"]))
    assert repr(ex.namespace["level"]) == "2"
    result = session.undo()
    assert result.cells == 1 and result.rewound, result.summary
    assert ex.run("level, 'extra' in globals()").value_repr == "(1, False)"  # in the kernel itself


def test_without_kernel_no_jupyter_module_is_imported():
    code = ("import sys, llmrepl.app, llmrepl.engine.commands, llmrepl.engine.session, llmrepl.context.describer\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jupyter_client', 'zmq', 'ipykernel', "
            "'tornado', 'jupyter_core')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


class _StuckClient(FakeClient):
    """A kernel that answers the helper's install and never finishes the cell (stuck in C code)."""

    def __init__(self) -> None:
        super().__init__()
        self.cell_started = False

    def execute(self, code: str, silent: bool = False, store_history: bool = True,
                user_expressions: dict | None = None, allow_stdin: bool | None = None) -> str:
        if silent:  # the helper's install: answered
            return super().execute(code, silent, store_history, user_expressions, allow_stdin)
        self.cell_started = True
        return self._id()

    def get_iopub_msg(self, timeout: float | None = None) -> dict:
        if self.cell_started:  # the cell started: the person presses Ctrl-C
            self.cell_started = False
            os.kill(os.getpid(), signal.SIGINT)
        raise queue.Empty


class _StuckHandle(FakeHandle):
    description = "stuck (fake)"

    def __init__(self) -> None:
        self.interrupts = 0

    def interrupt(self) -> None:  # the kernel ignores it; the person presses Ctrl-C again
        self.interrupts += 1
        os.kill(os.getpid(), signal.SIGINT)


def test_a_kernel_that_ignores_interrupts_is_given_up_on_at_the_second_ctrl_c():
    handle = _StuckHandle()
    ex = KernelExecutor(lambda: (_StuckClient(), handle))
    assert ex.wait_ready(10)
    previous = signal.getsignal(signal.SIGINT)
    r = ex.run("import time\nwhile True: pass")
    assert signal.getsignal(signal.SIGINT) is previous
    assert r.error_type == "KernelDied" and "did not stop when interrupted" in r.error
    assert ex.needs_restart and handle.interrupts == 1 and r.interrupted


def test_the_modules_line_is_not_reported_gone_on_the_next_message(ex):
    ex.reset()
    session, model, _ = make_session(ex, "```python\nimport os\nn = 1\n```", "ok", "hi", ask=None)
    session.step("import", ScriptedReviewer(["run"]))
    session.step("and now?", ScriptedReviewer([]))
    last = str(model.calls[-1]["messages"][-1]["content"])
    assert "no longer defined" not in last and "Session state" not in last  # nothing changed: no note


@pytest.mark.parametrize("spec,said", [
    ("nosuchkernel", "no kernel named 'nosuchkernel' (installed: "),
    ("k" * 5000, "exec.kernel must be at most 4,096 characters"),
])
def test_a_kernel_that_cannot_be_is_a_configuration_error(spec: str, said: str,
                                                         capfd: pytest.CaptureFixture[str]) -> None:
    """Found before the prompt, in one line, with the exit status of configuration errors:
    not a session whose every cell fails, nor a traceback (a name too long for a path)."""
    from llmrepl import cli

    assert cli.main(["--kernel", spec, "-c", "/py 1"]) == 2
    err = capfd.readouterr().err
    assert said in err and "Traceback" not in err
