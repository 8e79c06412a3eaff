"""Executor: what a cell run records, and what it leaves intact for the next one."""

from __future__ import annotations

import builtins
import getpass
import io
import os
import re
import resource
import signal
import subprocess
import sys
import time

import pytest

from llmrepl.errors import InputNotAllowed
from llmrepl.execution.executor import CellTimeout, ExecResult, Executor


class RecordingSink:
    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def write(self, stream: str, text: str) -> None:
        self.items.append((stream, text))


@pytest.fixture
def ex(tmp_path):
    return Executor(figure_dir=tmp_path / "figs")


# -- 1. AST: trailing expression, `_`, linecache ------------------------------------------


def test_trailing_expression_value_and_underscore(ex):
    r = ex.run("x = 20\nx + 22")
    assert r.ok and r.value_repr == "42" and ex.namespace["_"] == 42
    assert ex.run("None").value_repr is None
    assert ex.run("print('hi')").value_repr is None  # print() returns None: no repr, like the REPL
    assert ex.namespace["_"] == 42
    assert ex.run("'a'").value_repr == "'a'"


def test_statement_cell_has_no_value(ex):
    assert ex.run("y = [1, 2]").value_repr is None
    assert ex.namespace["y"] == [1, 2]


def test_traceback_shows_cell_name_and_source_line(ex):
    ex.run("pass")
    r = ex.run("def f():\n    return 1 / 0\nf()")
    assert 'File "<cell-2>", line 2, in f' in r.error
    assert "return 1 / 0" in r.error
    assert r.error.rstrip().endswith("ZeroDivisionError: division by zero")


def test_executor_future_flags_do_not_leak_into_cells(ex):
    # executor.py has `from __future__ import annotations`; cells must not inherit it.
    r = ex.run("def f(x: int): pass\nf.__annotations__['x']")
    assert r.value_repr == "<class 'int'>"


def test_non_main_attributes(ex):
    assert ex.run("__name__").value_repr == "'__main__'"
    assert "__builtins__" in ex.namespace


# -- 2. SyntaxError ---------------------------------------------------------------------


def test_syntax_error_runs_nothing(ex):
    r = ex.run("print('ran')\nprint(1")
    assert r.error_type == "SyntaxError"
    assert r.stdout == "" and "ran" not in r.output
    assert "<cell-1>" in r.error and "^" in r.error and "never closed" in r.error
    assert ex.cell_count == 1
    assert ex.run("1").cell == 2  # a SyntaxError cell still used a number


def test_nul_byte_is_a_syntax_error(ex):
    r = ex.run("x = 1\0")
    assert r.error_type == "SyntaxError" and "null" in r.error
    assert "x" not in ex.namespace


# -- 3. Tracebacks ----------------------------------------------------------------------


def test_traceback_drops_executor_frames_keeps_library_frames(ex):
    r = ex.run("import json\njson.loads('{')")
    assert "executor.py" not in r.error and "capture.py" not in r.error
    assert "json" in r.error and "decoder.py" in r.error
    assert r.error.startswith("Traceback (most recent call last):\n  File \"<cell-1>\"")
    assert r.error_type == "JSONDecodeError"


def test_traceback_survives_sabotaged_builtins(ex):
    r = ex.run("import builtins\nbuiltins.len = None\nbuiltins.print = None\nraise ValueError('boom')")
    assert r.error_type == "ValueError" and "ValueError: boom" in r.error
    assert "builtins.len was changed; restored" in r.repairs
    assert builtins.len([1, 2]) == 2
    assert ex.run("print(len('abc'))").stdout == "3\n"


def test_deleted_builtin_restored(ex):
    r = ex.run("import builtins\ndel builtins.sorted")
    assert "builtins.sorted was deleted; restored" in r.repairs
    assert ex.run("sorted([2, 1])").value_repr == "[1, 2]"


def test_exception_whose_str_raises(ex):
    r = ex.run("class E(Exception):\n    def __str__(self):\n        raise RuntimeError\nraise E()")
    assert r.error_type == "E" and "E: <exception str() failed>" in r.error


def test_chained_exception_keeps_both(ex):
    r = ex.run("try:\n    1/0\nexcept ZeroDivisionError as e:\n    raise KeyError('k') from e")
    assert "ZeroDivisionError" in r.error and "direct cause" in r.error and "KeyError: 'k'" in r.error


# -- 4. Capture ---------------------------------------------------------------------------


def test_stdout_stderr_and_interleaved_output(ex):
    r = ex.run("import sys\nprint('a')\nprint('b', file=sys.stderr)\nprint('c')")
    assert r.stdout == "a\nc\n" and r.stderr == "b\n" and r.output == "a\nb\nc\n"
    assert r.output_chars == 6


def test_sink_gets_output_live(tmp_path):
    sink = RecordingSink()
    ex = Executor({"seen": sink.items}, sink=sink, figure_dir=tmp_path)
    r = ex.run("import sys\nprint('hello')\nsys.stderr.write('warn')\nn = len(seen)")
    assert ex.namespace["n"] == 3  # echoed before the cell ended
    assert sink.items == [("stdout", "hello"), ("stdout", "\n"), ("stderr", "warn")]
    assert r.output == "hello\nwarn"


def test_failing_sink_does_not_break_print(tmp_path):
    class Broken:
        def write(self, stream: str, text: str) -> None:
            raise BrokenPipeError

    ex = Executor(sink=Broken(), figure_dir=tmp_path)
    r = ex.run("print('still'); 1")
    assert r.ok and r.stdout == "still\n"
    assert any("live output stopped" in x for x in r.repairs)


def test_run_without_sink_writes_nothing_to_terminal(ex, capfd):
    r = ex.run("print('quiet')")
    assert r.stdout == "quiet\n"
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_output_is_capped_head_and_tail(tmp_path):
    ex = Executor(figure_dir=tmp_path, max_capture_chars=1000)
    r = ex.run("for i in range(10000): print(f'{i:05d}')")
    assert r.output_chars == 60000
    assert r.stdout.startswith("00000\n00001\n")
    assert r.stdout.endswith("09998\n09999\n")
    assert "[... 59,000 characters omitted ...]" in r.stdout
    assert len(r.stdout) < 1100 and r.output == r.stdout


def test_one_gigabyte_keeps_memory_flat(ex):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    r = ex.run("import sys\ns = 'x' * 1_000_000\nfor _i in range(1000): sys.stdout.write(s)\ndel s")
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert r.output_chars == 10**9
    assert f"[... {10**9 - 200_000:,} characters omitted ...]" in r.stdout
    assert grown_kib < 20_000  # the 1 MB string itself, plus a bounded capture


def test_stream_interface(ex):
    code = (
        "import sys, io\n"
        "o = sys.stdout\n"
        "o.buffer.write('é'.encode()[:1]); o.buffer.write('é'.encode()[1:] + b'\\xff!\\n')\n"
        "try:\n    o.fileno()\nexcept io.UnsupportedOperation:\n    print('nofd')\n"
        "try:\n    o.write(b'x')\nexcept TypeError as e:\n    print('TypeError', e)\n"
        "o.close(); o.flush()\n"
        "print(o.isatty(), o.writable(), o.encoding, o.closed)"
    )
    r = ex.run(code)
    assert r.ok, r.error
    assert r.stdout.splitlines() == [
        "é\ufffd!",
        "nofd",
        "TypeError write() argument must be str, not bytes",
        "False True utf-8 False",
    ]


# -- 5. SystemExit, KeyboardInterrupt, other exceptions ----------------------------------


@pytest.mark.parametrize(
    "code, exit_code",
    [("import sys; sys.exit(3)", 3), ("exit()", None), ("quit(5)", 5), ("raise SystemExit('bye')", "bye")],
)
def test_system_exit_is_recorded(ex, code, exit_code):
    r = ex.run(code)
    assert r.error_type == "SystemExit" and r.exit_code == exit_code
    assert "the cell ended; llmrepl keeps running — use /exit or Ctrl-D to leave" in r.error
    assert ex.run("1 + 1").value_repr == "2"


def test_system_exit_message_format(ex):
    r = ex.run("import sys; sys.exit(3)")
    assert r.error.startswith("SystemExit: 3 (the cell ended;")


def test_site_exit_does_not_close_real_stdin(ex, monkeypatch):
    real = io.StringIO("hello\n")
    monkeypatch.setattr(sys, "stdin", real)
    r = ex.run("import builtins; builtins.exit(2)")  # site's Quitter closes sys.stdin
    assert r.exit_code == 2
    assert sys.stdin is real and not real.closed and real.readline() == "hello\n"


def test_keyboard_interrupt_raised_in_cell_is_recorded(ex):
    r = ex.run("print('partial')\nraise KeyboardInterrupt")
    assert r.interrupted and r.error_type == "KeyboardInterrupt" and r.stdout == "partial\n"


def test_namespace_survives_errors(ex):
    ex.run("a = 1")
    ex.run("b = 2\n1/0\nc = 3")
    assert ex.user_variables() == {"a": 1, "b": 2}


# -- 6. Restoring global state ------------------------------------------------------------


def test_replaced_and_closed_streams_are_restored(ex):
    out, err, inp = sys.stdout, sys.stderr, sys.stdin
    hook, dhook = sys.excepthook, sys.displayhook
    code = (
        "import sys, os\n"
        "sys.stdout.close(); sys.stdout = devnull = open(os.devnull, 'w')\n"
        "sys.stderr.close(); sys.stderr = None\n"
        "sys.stdin = None; sys.excepthook = None; sys.displayhook = None\n"
        "sys.setrecursionlimit(60)"
    )
    r = ex.run(code)
    assert (sys.stdout, sys.stderr, sys.stdin) == (out, err, inp)
    assert (sys.excepthook, sys.displayhook) == (hook, dhook)
    assert sys.getrecursionlimit() != 60
    for what in ("sys.stdout", "sys.stderr", "sys.stdin", "sys.excepthook", "sys.displayhook"):
        assert f"{what} was replaced; restored" in r.repairs
    assert any(x.startswith("recursion limit was 60") for x in r.repairs)
    assert ex.run("print('back')").stdout == "back\n"
    ex.namespace["devnull"].close()  # the cell's own file: llmrepl restores sys.stdout, never closes it


def test_sigint_handler_restored(ex):
    from llmrepl.execution.executor import _on_sigint

    signal.signal(signal.SIGINT, signal.default_int_handler)
    r = ex.run("import signal; signal.signal(signal.SIGINT, signal.SIG_IGN)")
    assert "SIGINT handler was changed; restored" in r.repairs
    # In place of the default handler, llmrepl's stays between cells and acts as the default
    assert signal.getsignal(signal.SIGINT) is _on_sigint
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
    assert ex.run("x = 1").repairs == [] and signal.getsignal(signal.SIGINT) is _on_sigint


def test_sigint_handler_of_the_embedding_program_is_put_back(ex):
    seen = []

    def mine(signum, frame):
        seen.append(signum)

    old = signal.signal(signal.SIGINT, mine)
    try:
        assert ex.run("x = 1").ok and signal.getsignal(signal.SIGINT) is mine
        r = ex.run("import signal; signal.signal(signal.SIGINT, signal.SIG_IGN)")
        assert r.repairs == ["SIGINT handler was changed; restored"]
        assert signal.getsignal(signal.SIGINT) is mine
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.1)
        assert seen == [signal.SIGINT]
    finally:
        signal.signal(signal.SIGINT, old)


def test_deleted_or_replaced_dunder_builtins(ex):
    ex.run("del __builtins__")
    assert ex.run("len('ab')").value_repr == "2"
    ex.run("__builtins__ = {}")
    assert ex.run("len('abc')").value_repr == "3"
    r = ex.run("__builtins__.print = None")
    assert "builtins.print was changed; restored" in r.repairs
    assert ex.run("print('ok')").stdout == "ok\n"


def test_clean_cell_reports_no_repairs(ex):
    assert ex.run("x = 1").repairs == []


# -- 7. input() ---------------------------------------------------------------------------


def test_input_routed_to_input_func(tmp_path):
    asked = []

    def answer(prompt: str) -> str:
        asked.append(prompt)
        return "Ada"

    ex = Executor(input_func=answer, figure_dir=tmp_path)
    r = ex.run("name = input('Your name? ')\nprint('hi', name)")
    assert asked == ["Your name? "]
    assert r.stdout == "Your name? Ada\nhi Ada\n"
    assert builtins.input is not ex._input_bound  # the real input() is back


def test_input_func_eof_becomes_eoferror(tmp_path):
    def eof(prompt: str) -> str:
        raise EOFError

    ex = Executor(input_func=eof, figure_dir=tmp_path)
    r = ex.run("try:\n    input('? ')\nexcept EOFError:\n    print('eof')")
    assert r.ok and r.stdout.endswith("eof\n")


def test_stdin_readline_routed(tmp_path):
    ex = Executor(input_func=lambda p: "42", figure_dir=tmp_path)
    assert ex.run("import sys; sys.stdin.readline()").value_repr == "'42\\n'"


@pytest.mark.parametrize(
    "code", ["input('name? ')", "import sys; sys.stdin.read()", "import sys; sys.stdin.readline()",
             "import getpass; getpass.getpass()"]
)
def test_input_not_allowed_without_input_func(ex, code):
    t = time.monotonic()
    r = ex.run(code)
    assert time.monotonic() - t < 2
    assert r.error_type == "InputNotAllowed"
    assert "InputNotAllowed: input() is not available here: llmrepl runs this cell without a terminal" in r.error
    assert "Put the value in the code instead." in r.error


def test_input_prompt_captured_before_refusal(ex):
    assert ex.run("input('Your name? ')").stdout == "Your name? "


def test_getpass_restored_after_cell(ex):
    original = getpass.getpass
    ex.run("import getpass; getpass.getpass = None")
    assert getpass.getpass is original


def test_input_not_allowed_is_the_shared_error_type(ex):
    ex.run("from llmrepl.errors import InputNotAllowed as E\ntry:\n    input()\nexcept E as e:\n    caught = e")
    assert isinstance(ex.namespace["caught"], InputNotAllowed)


# -- 8. Timeout ---------------------------------------------------------------------------


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    "code",
    [
        "while True: pass",
        "import time; time.sleep(100)",
        "import time\nwhile True:\n    try:\n        time.sleep(0.05)\n    except Exception:\n        pass",
    ],
)
def test_timeout_stops_cell_and_keeps_namespace(ex, code):
    ex.run("kept = 'yes'")
    t = time.monotonic()
    r = ex.run(code, timeout=0.3)
    assert time.monotonic() - t < 3
    assert r.timed_out and r.error_type == "CellTimeout" and not r.interrupted
    assert "CellTimeout: the cell ran longer than 0.3 s and was stopped (the namespace is intact" in r.error
    assert ex.namespace["kept"] == "yes"
    assert ex.run("kept * 2").value_repr == "'yesyes'"


@pytest.mark.timeout(20)
def test_timeout_from_attribute_and_cleanup(ex):
    marker = []
    previous = signal.signal(signal.SIGALRM, lambda *a: marker.append(1))
    try:
        ex.timeout = 0.2
        r = ex.run("while True: pass")
        assert r.timed_out and "longer than 0.2 s" in r.error
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
        assert signal.getsignal(signal.SIGALRM) is not None and marker == []
        ex.timeout = 0
        assert ex.run("import time; time.sleep(0.3); 'done'").value_repr == "'done'"
    finally:
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.timeout(20)
def test_timeout_not_swallowed_by_bare_except(ex):
    code = "import time\nfor _ in range(3):\n    try:\n        time.sleep(100)\n    except BaseException:\n        pass\nwhile True: pass"
    r = ex.run(code, timeout=0.2)
    assert r.timed_out and r.error_type == "CellTimeout"


def test_cell_timeout_is_a_base_exception():
    assert issubclass(CellTimeout, BaseException) and not issubclass(CellTimeout, Exception)


# -- 9. Ctrl-C ----------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_sigint_from_another_process_interrupts_cell(ex):
    before = signal.getsignal(signal.SIGINT)
    killer = subprocess.Popen(["sh", "-c", f"sleep 0.3; kill -INT {os.getpid()}"])
    try:
        r = ex.run("print('before')\nimport time\ntime.sleep(10)")
    finally:
        killer.wait()
    assert r.interrupted and r.error_type == "KeyboardInterrupt"
    assert r.duration < 5
    assert r.stdout == "before\n" and "time.sleep(10)" in r.error
    from llmrepl.execution.executor import _on_sigint

    assert signal.getsignal(signal.SIGINT) in (before, _on_sigint)
    assert ex.run("1").ok


# -- 10. matplotlib ----------------------------------------------------------------------


class DisplaySink(RecordingSink):
    """Records text and display items live, in the order they arrive."""

    def display(self, item) -> None:
        self.items.append(("display", item))


@pytest.mark.timeout(60)
def test_plt_show_draws_each_open_figure_as_an_image_item(tmp_path):
    fig_dir = tmp_path / "figs"
    sink = DisplaySink()
    ex = Executor(figure_dir=fig_dir, sink=sink)
    assert "matplotlib" in sys.modules or os.environ.get("MPLBACKEND") == "module://llmrepl.execution.mpl_backend"
    r = ex.run("import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()\nprint('between')\n"
               "plt.plot([2, 1])\nplt.title('second')\nplt.show(block=True)")
    assert r.ok, r.error
    assert [os.path.basename(p) for p in r.figures] == ["figure-001.png", "figure-002.png"]
    assert r.output == "between\n"  # no "[figure saved: ...]" line any more
    assert [d.metadata["filename"] for d in r.displays] == r.figures
    assert [d.at for d in r.displays] == [0, len("between\n")]
    for path, item in zip(r.figures, r.displays):
        with open(path, "rb") as f:
            assert f.read() == item.data["image/png"]
        assert item.data["image/png"].startswith(b"\x89PNG") and len(item.data["image/png"]) > 1000
        assert (item.metadata["width"], item.metadata["height"]) == (640, 480)
        assert os.stat(path).st_mode & 0o777 == 0o600
    assert r.displays[0].text == "figure 640×480 px: 1 line"
    assert r.displays[1].text == "figure 640×480 px: title 'second'; 1 line"
    # live, in order with the text
    assert [kind for kind, _ in sink.items] == ["display", "stdout", "stdout", "display"]
    assert sink.items[0][1] is r.displays[0] and sink.items[3][1] is r.displays[1]
    assert (fig_dir.stat().st_mode & 0o777) == 0o700
    r2 = ex.run("plt.plot([3]); plt.show()")
    assert [os.path.basename(p) for p in r2.figures] == ["figure-003.png"]
    assert ex.run("plt.get_fignums()").value_repr == "[]"
    r3 = ex.run("x = 1")
    assert r3.figures == [] and r3.displays == []


# -- 11. History names ------------------------------------------------------------------


def test_numbered_results_survive_deletion(ex):
    ex.run("10")
    ex.run("x = 5")
    ex.run("x * 3")
    ex.run("del _")
    assert ex.namespace["_1"] == 10 and ex.namespace["_3"] == 15 and "_2" not in ex.namespace
    assert ex.run("_1 + _3").value_repr == "25"


def test_user_variables_and_reset(ex):
    ex.run("a = 1\n_b = 2\n3")
    assert ex.user_variables() == {"a": 1, "_b": 2}
    ex.run("exit = 'mine'")
    assert ex.user_variables()["exit"] == "mine"
    ex.reset()
    assert ex.user_variables() == {}
    assert ex.namespace["__name__"] == "__main__"
    assert ex.run("a").error_type == "NameError"
    assert ex.cell_count == 3  # numbering continues across reset()


def test_exit_repr_in_namespace_explains(ex):
    assert "/exit" in ex.run("exit").value_repr


def test_passed_namespace_is_used():
    ns = {"preset": 7}
    ex = Executor(ns)
    ex.run("preset += 1")
    assert ns["preset"] == 8 and ex.namespace is ns


# -- 12. Hot path ------------------------------------------------------------------------


def test_result_record_defaults():
    r = ExecResult(cell=1, source="")
    assert r.ok and r.figures == [] and r.repairs == []


# -- 13. Cells whose ending is easy to misread ---------------------------------------------

# (cell, the value shown, the error type, stdout): a value is shown, and bound to ``_``,
# only when the last statement is an expression whose value is not None.
TRICKY_CELLS = [
    ("x = 1", None, None, ""),
    ("x = 1\n42", "42", None, ""),
    ("x = 1\n'doc'", "'doc'", None, ""),
    ("x = 1; 2", "2", None, ""),
    ("x = 1\n-1", "-1", None, ""),
    ("x = 1\n(1, 2)", "(1, 2)", None, ""),
    ("x = 1\nNone", None, None, ""),
    ("x = 1\n...", "Ellipsis", None, ""),
    ("x = 1\nx", "1", None, ""),
    ("x = 1\n(y := 5)", "5", None, ""),
    ("x = 1  # note\n\n# only a comment\n", None, None, ""),
    ("x = 1\n\n\n", None, None, ""),
    ("x = 1  # note", None, None, ""),
    ("print('''\nx = 1''')", None, None, "\nx = 1\n"),
    ("s = '''\nx = 1'''", None, None, ""),
    ("f = dict(\nx = 1)", None, None, ""),
    ("dict(\nx = 1)", "{'x': 1}", None, ""),
    ("x = (\n1)", None, None, ""),
    ("x = \\\n1", None, None, ""),
    ("a, b = 1, 2", None, None, ""),
    ("x = 1\nx += 1", None, None, ""),
    ("x = [0]\nx[0] = 3", None, None, ""),
    ("import os", None, None, ""),
    ("import os.path", None, None, ""),
    ("from os import path", None, None, ""),
    ("x = 1\nimport os", None, None, ""),
    ("x = f(\n    1)\ny = x", None, "NameError", ""),
    ("def f():\n    y = 1", None, None, ""),
    ("if True:\n    y = 1", None, None, ""),
    ("if True: y = 1", None, None, ""),
    ("for i in range(2): y = i", None, None, ""),
    ("for i in range(2): i", None, None, ""),
    ("lambda y=1: y", "<function <lambda>>", None, ""),
    ("x = 1\nnot x", "False", None, ""),
    ("x = 1\nx == 1", "True", None, ""),
    ("x = 1\nx <= 1", "True", None, ""),
    ("x = 1\r\n2", "2", None, ""),
    ("x = 1\r\ny = 2", None, None, ""),
    ("ñ = 3", None, None, ""),
    ("x: int = 1", None, None, ""),
    ("42", "42", None, ""),
    ("'doc'", "'doc'", None, ""),
    ("None", None, None, ""),
    ("...", "Ellipsis", None, ""),
    ("(y := 5)", "5", None, ""),
    ("[i * 2 for i in range(3)]", "[0, 2, 4]", None, ""),
    ("print('hi')", None, None, "hi\n"),
    ("1 / 0", None, "ZeroDivisionError", ""),
    ("raise SystemExit(3)", None, "SystemExit", ""),
    ("  x = 1", None, "IndentationError", ""),
    ("x = (1", None, "SyntaxError", ""),
    ("", None, None, ""),
    ("# only a comment", None, None, ""),
    ("with_ = 1", None, None, ""),
    ("format(3)", "'3'", None, ""),
    ("from __future__ import annotations", None, None, ""),
    ("'a;b'", "'a;b'", None, ""),
    ("lambda: 1", "<function <lambda>>", None, ""),
    ("x = 1\xa0", None, "SyntaxError", ""),
    ("5\x0b", None, "SyntaxError", ""),
    ("x = 1\x0c", None, None, ""),
    ("*[1], 2", "(1, 2)", None, ""),
    ("return 1", None, "SyntaxError", ""),
    ("del nothing_here", None, "NameError", ""),
    ("(yield)", None, "SyntaxError", ""),
    ("exec(compile('5', '<s>', 'single'))", None, None, "5\n"),  # the real displayhook, inside the cell
    ("__import__('sys').displayhook(3)", None, None, "3\n"),
    ("x = 3\t \n\n", None, None, ""),
    ("setattr(__import__('sys'), 'displayhook', None)", None, None, ""),
    ("f'{1 + 1}'", "'2'", None, ""),
]


@pytest.mark.parametrize(("src", "value", "error_type", "stdout"), TRICKY_CELLS)
def test_tricky_cell_endings(src, value, error_type, stdout):
    ex = Executor()
    had_underscore = "_" in vars(builtins)  # the default sys.displayhook sets builtins._
    try:
        r = ex.run(src)
    finally:
        if not had_underscore:
            vars(builtins).pop("_", None)
    shown = None if r.value_repr is None else re.sub(" at 0x[0-9a-f]+", "", r.value_repr)
    assert (shown, r.error_type, r.stdout) == (value, error_type, stdout), src
    assert ("_" in ex.namespace) == (value is not None) == (f"_{r.cell}" in ex.namespace), src


def test_one_liners_never_touch_displayhook(ex):
    hook = sys.displayhook
    r = ex.run("[1, 2][-1]")
    assert r.value_repr == "2" and ex.namespace["_1"] == 2 and sys.displayhook is hook
    r = ex.run("setattr(__import__('sys'), 'displayhook', None) or 5")
    assert r.ok and r.value_repr == "5" and sys.displayhook is hook
    assert r.repairs == ["sys.displayhook was replaced; restored"]
    r = ex.run("__import__('sys').displayhook")  # a value, not a call: nothing else shown
    assert r.value_repr == repr(hook) and r.stdout == ""


def test_builtin_rebound_between_cells_is_not_the_next_cells_doing(ex):
    try:
        ex.run("import builtins\nbuiltins.LLMREPL_T = 1")
        ex.run("x = 1")
        r = ex.run(
            "import builtins, threading\ngo = threading.Event()\n"
            "t = threading.Thread(target=lambda: go.wait() and setattr(builtins, 'LLMREPL_T', 2))\nt.start()"
        )
        assert r.ok
        ex.namespace["go"].set()  # the thread rebinds it between cells, then ends
        ex.namespace["t"].join(5)
        r = ex.run("x = 2")
        assert r.repairs == [] and builtins.LLMREPL_T == 2
        builtins.LLMREPL_T = 4  # the program embedding the engine, between cells
        r = ex.run("x = 3")
        assert r.repairs == [] and builtins.LLMREPL_T == 4
        r = ex.run("import builtins\nbuiltins.LLMREPL_T = 3")  # a cell's own rebinding is undone
        assert r.repairs == ["builtins.LLMREPL_T was changed; restored"] and builtins.LLMREPL_T == 4
    finally:
        vars(builtins).pop("LLMREPL_T", None)


@pytest.mark.parametrize("src", ['x = "\\d" (', 'if 1: "\\d"', 'return "\\d"', '"\\d"', 'x = "\\d"',
                                 'x = 1\ny = "\\d" (', 'x = 1\ny = "\\d"', 'x = 1\n"\\d"'])
def test_parser_warnings_shown_once(ex, src):
    import warnings

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        ex.run(src)
    escapes = [w for w in seen if "escape" in str(w.message)]
    assert len(escapes) == 1, (src, [str(w.message) for w in seen])


@pytest.mark.parametrize(
    ("src", "value"),
    [("x = 1\n42", "42"), ("x = 1; 2", "2"), ("x = 1\n(y := 5)", "5"), ("x = 1\n'doc'", "'doc'"),
     ("x = 1\nx", "1"), ("x = 1", None), ("import os", None), ("x = 1\n\n# c\n", None)],
)
def test_trailing_value_after_assignment(ex, src, value):
    r = ex.run(src)
    assert r.ok and r.value_repr == value and ex.namespace["x" if "x" in src else "os"] is not None


def test_assignment_cell_traceback_and_syntax_error(ex):
    r = ex.run("x = 1 / 0")
    assert 'File "<cell-1>", line 1, in <module>' in r.error and "x = 1 / 0" in r.error
    r = ex.run("x = (1")
    assert r.error_type == "SyntaxError" and "<cell-2>" in r.error and "never closed" in r.error
    r = ex.run("x = 1\ny = = 2")
    assert r.error_type == "SyntaxError" and "x" not in ex.namespace


def test_silent_cell_records_empty_streams(ex):
    r = ex.run("x = 1")
    assert (r.stdout, r.stderr, r.output, r.output_chars) == ("", "", "", 0)
    r = ex.run("import sys\nsys.stderr.write('e')")
    assert (r.stdout, r.stderr, r.output, r.output_chars) == ("", "e", "e", 1)


def test_capture_buffers_made_on_demand():
    from llmrepl.execution.capture import Capture

    cap = Capture(100, None)
    assert cap.values() == ("", "", "") and cap.chars == 0
    cap.write("stdout", "hi")
    assert cap.values() == ("hi", "", "hi") and cap.chars == 2
    assert cap.stderr.getvalue() == "" and cap.output.total == 2


def test_each_sys_name_alone_is_restored(ex):
    hook, dhook, limit = sys.excepthook, sys.displayhook, sys.getrecursionlimit()
    r = ex.run("import sys\nsys.displayhook = None")
    assert sys.displayhook is dhook and r.repairs == ["sys.displayhook was replaced; restored"]
    r = ex.run("import sys\nsys.excepthook = None")
    assert sys.excepthook is hook and r.repairs == ["sys.excepthook was replaced; restored"]
    r = ex.run("import sys\nsys.setrecursionlimit(321)")
    assert sys.getrecursionlimit() == limit and r.repairs == [f"recursion limit was 321; reset to {limit}"]
    out = sys.stdout
    r = ex.run("import sys\ndel sys.stdout")
    assert sys.stdout is out and r.repairs == ["sys.stdout was replaced; restored"]


def test_builtin_deleted_and_readded_under_another_name(ex):
    # Same number of builtins and the same values in order: still a deletion to repair.
    names = list(vars(builtins))
    last = names[-1]
    r = ex.run(f"import builtins\nv = builtins.__dict__.pop({last!r})\nbuiltins.__dict__['zz_other'] = v")
    try:
        assert f"builtins.{last} was deleted; restored" in r.repairs
        assert last in vars(builtins)
    finally:
        vars(builtins).pop("zz_other", None)


def test_compiler_syntax_warning_shown_once(ex):
    import warnings

    for src in ("f = lambda y=1: y is 1", "x = 2 is 2", "print(3 is 3)"):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            r = ex.run(src)
        assert r.ok and [w.category for w in seen] == [SyntaxWarning], src


def test_value_whose_repr_hangs_is_shown_as_a_placeholder_without_a_timeout():
    ex = Executor()
    r = ex.run("import time\nclass Stuck:\n    def __repr__(self):\n        time.sleep(60)\n        return 'never'\nStuck()")
    assert r.ok and "took longer than" in r.value_repr
    assert type(ex.namespace["_"]).__name__ == "Stuck"  # the value is kept
    assert ex.run("1 + 1").value_repr == "2"


def test_a_failing_repr_is_the_cells_error_without_llmrepl_frames(ex):
    r = ex.run("class A:\n    def __repr__(self):\n        return 1/0\nA()")
    assert r.error_type == "ZeroDivisionError" and 'File "<cell-1>", line 3, in __repr__' in r.error
    assert "llmrepl" not in r.error and type(ex.namespace["_"]).__name__ == "A"
    r = ex.run("class B:\n    def __repr__(self):\n        raise SystemExit(4)\nB()")
    assert r.error_type == "SystemExit" and r.exit_code == 4


def test_value_repr_puts_back_a_running_timer_and_its_handler(ex):
    fired = []

    def mine(signum, frame):
        fired.append(signum)

    old = signal.signal(signal.SIGALRM, mine)
    old_timer = signal.setitimer(signal.ITIMER_REAL, 100)
    try:
        assert ex.run("[1, 2]").value_repr == "[1, 2]"
        assert signal.getsignal(signal.SIGALRM) is mine and fired == []
        assert 50 < signal.getitimer(signal.ITIMER_REAL)[0] <= 100
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        if old_timer[0] > 0:  # pytest-timeout's own alarm
            signal.setitimer(signal.ITIMER_REAL, *old_timer)


def test_bounded_repr_stops_a_repr_that_swallows_the_first_timeout():
    from llmrepl.execution.namespace import bounded_repr

    class Stubborn:
        def __repr__(self):
            try:
                time.sleep(10)
            except BaseException:
                time.sleep(10)
            return "never"

    before = signal.getsignal(signal.SIGALRM)
    start = time.monotonic()
    assert bounded_repr(Stubborn(), 0.05) is None
    assert time.monotonic() - start < 5
    assert bounded_repr([1], 0.05) == "[1]"
    assert signal.getsignal(signal.SIGALRM) is before


# -- issue 11: what a cell leaves behind in the process: timers, signals, fds, forks ------


@pytest.fixture
def no_outer_timer():
    """pytest-timeout's own alarm paused meanwhile: a timer running before a cell is not the
    cell's, and is left alone (see test_timer_running_before_the_cell_is_left_alone)."""
    saved = signal.setitimer(signal.ITIMER_REAL, 0)
    yield
    if saved[0] > 0:
        signal.setitimer(signal.ITIMER_REAL, *saved)


def test_alarm_left_armed_is_disarmed_and_reported(ex, no_outer_timer):
    r = ex.run("import signal\nsignal.alarm(5)")
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert any("alarm" in x and "disarmed" in x for x in r.repairs), r.repairs


def test_other_timers_left_armed_are_disarmed(ex):
    r = ex.run("import signal\nsignal.setitimer(signal.ITIMER_VIRTUAL, 50)\nsignal.setitimer(signal.ITIMER_PROF, 50)")
    assert signal.getitimer(signal.ITIMER_VIRTUAL)[0] == 0 and signal.getitimer(signal.ITIMER_PROF)[0] == 0
    assert sum("disarmed" in x for x in r.repairs) == 2, r.repairs


def test_timer_running_before_the_cell_is_left_alone(ex, no_outer_timer):
    signal.setitimer(signal.ITIMER_REAL, 100)
    try:
        r = ex.run("x = 1")
        assert r.repairs == [] and signal.getitimer(signal.ITIMER_REAL)[0] > 50
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def test_handlers_of_signals_that_end_the_process_are_put_back(ex):
    before = {s: signal.getsignal(s) for s in (signal.SIGALRM, signal.SIGPIPE)}
    r = ex.run("import signal\nsignal.signal(signal.SIGPIPE, signal.SIG_DFL)\n"
               "signal.signal(signal.SIGALRM, lambda *a: None)")
    assert {s: signal.getsignal(s) for s in before} == before
    for name in ("SIGPIPE", "SIGALRM"):
        assert f"{name} handler was changed; restored" in r.repairs


def test_a_profiler_timer_with_its_handler_is_left_alone(ex):
    """ITIMER_PROF with a SIGPROF handler is a sampling profiler's: harmless, and kept."""
    old = signal.getsignal(signal.SIGPROF)
    try:
        r = ex.run("import signal\nticks = []\nsignal.signal(signal.SIGPROF, lambda *a: ticks.append(1))\n"
                   "signal.setitimer(signal.ITIMER_PROF, 50, 50)")
        assert r.repairs == [] and signal.getitimer(signal.ITIMER_PROF)[0] > 0
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, old)


def test_cell_timeout_still_works_after_a_cell_changed_sigalrm(ex, no_outer_timer):
    ex.run("import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nsignal.alarm(30)")
    r = ex.run("while True:\n    pass", timeout=0.3)
    assert r.timed_out and r.error_type == "CellTimeout"
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def _run_script(script: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """A fresh interpreter for what must not happen in pytest's own process (fork, fds 0/1/2)."""
    return subprocess.run([sys.executable, "-c", script], input=stdin, capture_output=True, text=True,
                          timeout=60)


def test_forked_child_ends_with_its_cell_with_its_status():
    script = (
        "import os\nfrom llmrepl.execution.executor import Executor\n"
        "class Sink:\n    def write(self, stream, text):\n        os.write(1, f'{stream}: {text}'.encode())\n"
        "ex = Executor(sink=Sink(), input_func=lambda prompt: 'typed')\n"
        "code = '''import os\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    try:\n        input('child? ')\n"
        "    except Exception as e:\n        print('child-input', type(e).__name__, flush=True)\n"
        "    raise KeyError('child-error')\n"
        "status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])'''\n"
        "r = ex.run(code)\n"
        "print('returned', r.error_type, ex.namespace.get('status'), flush=True)\n"
    )
    p = _run_script(script)
    assert p.stdout.count("returned") == 1, p.stdout + p.stderr  # the child never got back here
    assert "returned None 1" in p.stdout
    # refused in the child (only llmrepl itself reads the terminal); print writes in pieces
    assert "child-input" in p.stdout and "stdout: InputNotAllowed" in p.stdout
    assert "forked by the cell] Traceback" in p.stdout and "KeyError: 'child-error'" in p.stdout


def test_forked_child_system_exit_code_is_its_status():
    script = (
        "import os\nfrom llmrepl.execution.executor import Executor\nex = Executor()\n"
        "r = ex.run('import os, sys\\npid = os.fork()\\nif pid == 0:\\n    sys.exit(9)\\n"
        "status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])')\n"
        "print('returned', ex.namespace['status'])\n"
    )
    p = _run_script(script)
    assert p.stdout.splitlines() == ["returned 9"], p.stdout + p.stderr


def test_terminal_fds_and_std_objects_are_put_back():
    script = (
        "import os, sys\nfrom llmrepl.execution.executor import Executor\n"
        "from llmrepl.execution.guards import TerminalStreams\n"
        "t = TerminalStreams(batch_input=True)\nex = Executor(terminal=t)\n"
        "r = ex.run('import os, sys\\nos.set_blocking(1, False)\\nos.dup2(os.open(os.devnull, os.O_WRONLY), 1)\\nos.close(2)\\n"
        "sys.__stdout__.close()\\nsys.__stderr__ = None\\nread = os.read(0, 100)')\n"
        "t.stdout.write(repr(r.repairs) + '\\n')\n"
        "t.stdout.write(f'read {ex.namespace[\"read\"]!r} {os.get_blocking(1)} {sys.__stdout__.closed}\\n')\n"
        "r = ex.run(f'import os\\nos.close({t.stdout.fileno()})\\nos.close({t.stderr.fileno()})')\n"
        "t.stdout.write(repr(r.repairs) + '\\n')\n"
        "t.stdout.write('lines ' + ' '.join(line.strip() for line in t.lines()) + '\\n')\n"
        "os.write(1, b'fd1 is back\\n')\n"
    )
    p = _run_script(script, stdin="first\nsecond\n")
    out = p.stdout
    for repair in ("fd 1 (stdout) was redirected; restored", "fd 2 (stderr) was closed; restored",
                   "sys.__stdout__ was closed; reopened", "sys.__stderr__ was replaced; restored",
                   "stdout was left non-blocking; made blocking again",
                   "llmrepl's own copy of stdout was closed; restored"):
        assert repair in out, out + p.stderr
    assert "read b'' True False" in out  # batch: a cell reads /dev/null, never llmrepl's input
    assert "lines first second" in out and "fd1 is back" in out


def test_terminal_reopened_when_a_cell_closes_every_fd(tmp_path):
    """A cell closes fds 0-2 and llmrepl's copies (all refer to one terminal): llmrepl opens
    its terminal again by name and puts fds 0/1/2 back."""
    report = tmp_path / "report.txt"
    script = (
        "import os, pty\nmaster, slave = pty.openpty()\nos.dup2(master, 4000)\n"
        "for fd in (0, 1, 2):\n    os.dup2(slave, fd)\nos.close(master)\nos.close(slave)\n"
        "from llmrepl.execution.executor import Executor\nfrom llmrepl.execution.guards import TerminalStreams\n"
        "t = TerminalStreams()\nex = Executor(terminal=t)\n"
        "r = ex.run('import os\\nos.closerange(0, 3999)')\n"
        f"with open({str(report)!r}, 'w') as f:\n"
        "    f.write(repr(r.repairs) + '\\n')\n"
        "    f.write(f'{os.isatty(0)} {os.isatty(1)} {os.isatty(t.stdout.fileno())}\\n')\n"
    )
    p = _run_script(script)
    text = report.read_text()
    assert "llmrepl's own copy of stdin was closed; reopened the terminal" in text, text + p.stderr
    assert "llmrepl's own copy of stdout was closed; restored" in text  # from the one reopened
    assert "fd 1 (stdout) was closed; restored" in text
    assert text.splitlines()[-1] == "True True True"


def test_figure_folders_made_private_after_the_state_folder_was_deleted(tmp_path):
    """A cell deleted the state folder, then plots: every folder made again is 0700."""
    from llmrepl.execution.capture import FigureLog

    folder = tmp_path / "state" / "sessions" / "s1"
    FigureLog(folder).next_path()
    for path in (tmp_path / "state", folder.parent, folder):
        assert path.stat().st_mode & 0o777 == 0o700, path


def test_a_tracebacks_carets_sit_under_the_failing_code_on_a_cells_last_line():
    """Python 3.11+ underlines the failing expression; the cell's last line (no newline of its
    own) must not shift the marks one column right."""
    import sys

    result = Executor().run('y = {}\ny["k"]')
    lines = result.error.splitlines()
    at = lines.index('    y["k"]')
    if sys.version_info >= (3, 11):
        assert lines[at + 1] == "    ~^^^^^", lines
