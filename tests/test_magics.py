"""Magics (issue 15 item 5): ``%time``, ``%timeit``, ``%who``/``%whos``, ``%pwd``, ``%cd``,
``%run``, ``%pip``, ``!command`` and ``obj?``, run through ``Executor.run`` as a person or the
model would write them; the risk scan and the export reading them as the Python they are."""

from __future__ import annotations

import ast
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmrepl.execution.executor import Executor
from llmrepl.execution.magics import (
    HELPER,
    describe_shell,
    exportable,
    has_magic,
    is_magic,
    transform,
)
from llmrepl.execution.risk import scan


@pytest.fixture
def ex(tmp_path: Path) -> Executor:
    return Executor(figure_dir=tmp_path / "figs")


# -- timing ---------------------------------------------------------------------------------


def test_time_runs_the_statement_in_the_namespace_and_prints_the_time(ex: Executor) -> None:
    r = ex.run("x = 20\n%time y = x + 22\ny")
    assert r.ok, r.error
    assert "Wall time:" in r.stdout and "CPU time:" in r.stdout
    assert r.value_repr == "42" and ex.namespace["y"] == 42


def test_time_of_an_expression_gives_its_value(ex: Executor) -> None:
    r = ex.run("%time sum(range(10))")
    assert r.ok and r.value_repr == "45" and "Wall time:" in r.stdout


def test_timeit_runs_the_statement_n_times_r_rounds(ex: Executor) -> None:
    ex.run("calls = []")
    r = ex.run("%timeit -n 5 -r 3 calls.append(1)")
    assert r.ok, r.error
    assert len(ex.namespace["calls"]) == 15
    assert "per loop (mean ± std. dev. of 3 runs, 5 loops each)" in r.stdout
    r = ex.run("%timeit -n2 -r1 calls.append(1)")  # the values written on, as IPython takes them
    assert r.ok, r.error
    assert len(ex.namespace["calls"]) == 17 and "of 1 run, 2 loops each)" in r.stdout


def test_timeit_without_n_picks_a_loop_count(ex: Executor) -> None:
    r = ex.run("%timeit -r 1 pass")
    assert r.ok and "of 1 run," in r.stdout and "loops each)" in r.stdout


def test_cell_magics_time_and_timeit(ex: Executor) -> None:
    r = ex.run("%%time\nz = 2\nz * 21")
    assert r.ok and r.value_repr == "42" and "Wall time:" in r.stdout
    ex.run("hits = []")
    r = ex.run("%%timeit -n 2 -r 2\nhits.append(1)\nhits.append(2)")
    assert r.ok and len(ex.namespace["hits"]) == 8 and "per loop" in r.stdout


def test_an_error_inside_time_points_at_the_cells_own_line(ex: Executor) -> None:
    r = ex.run("a = 1\n%time a / 0")
    assert r.error_type == "ZeroDivisionError"
    assert 'File "<cell-1>", line 2' in r.error and "%time a / 0" in r.error
    assert "magic_commands" not in r.error  # llmrepl's own frames are left out
    assert r.done == 1  # the statement on line 1 completed


# -- names ----------------------------------------------------------------------------------


def test_who_and_whos_list_the_users_names_only(ex: Executor) -> None:
    ex.run("alpha = 1\nbeta = 'two'\n_hidden_history = 3\n!true")
    r = ex.run("%who")
    assert r.stdout.split() == ["_hidden_history", "alpha", "beta"]
    assert HELPER not in r.stdout and "exit" not in r.stdout and "display" not in r.stdout
    r = ex.run("%who str")
    assert r.stdout.split() == ["beta"]
    r = ex.run("%whos")
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["Variable", "Type", "Data/Info"]
    assert any(line.split() == ["alpha", "int", "1"] for line in lines)
    assert any(line.split() == ["beta", "str", "'two'"] for line in lines)
    assert HELPER in ex.namespace and HELPER not in ex.user_variables()


def test_who_in_an_empty_namespace(ex: Executor) -> None:
    assert ex.run("%who").stdout.strip() == "Interactive namespace is empty."


# -- folders and files ----------------------------------------------------------------------


def test_pwd_and_cd(ex: Executor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    assert ex.run("%pwd").value_repr == repr(str(tmp_path))
    r = ex.run("%cd sub")
    assert r.ok and os.getcwd() == str(tmp_path / "sub") and r.stdout.strip() == str(tmp_path / "sub")
    r = ex.run("%cd -")
    assert r.ok and os.getcwd() == str(tmp_path)
    r = ex.run("%cd no-such-folder")
    assert r.error_type == "MagicError" and "no such folder: no-such-folder" in r.error
    assert os.getcwd() == str(tmp_path)


def test_run_executes_a_file_in_the_namespace(ex: Executor, tmp_path: Path) -> None:
    script = tmp_path / "prep.py"
    script.write_text("import sys\nloaded = base * 2\nargs = sys.argv[1:]\nwhere = __name__\n")
    ex.run("base = 21")
    r = ex.run(f"%run {script} one 'two words'")
    assert r.ok, r.error
    ns = ex.namespace
    assert ns["loaded"] == 42 and ns["args"] == ["one", "two words"] and ns["where"] == "__main__"
    assert "__file__" not in ns and sys.argv[1:] != ["one", "two words"]
    r = ex.run(f"%run {tmp_path / 'missing.py'}")
    assert r.error_type == "MagicError" and "no such file" in r.error


def test_run_shows_the_files_own_traceback(ex: Executor, tmp_path: Path) -> None:
    script = tmp_path / "bad.py"
    script.write_text("x = 1\nraise ValueError('from the file')\n")
    r = ex.run(f"%run {script}")
    assert r.error_type == "ValueError"
    assert f'File "{script}", line 2' in r.error and "raise ValueError('from the file')" in r.error


def test_pip_runs_this_pythons_pip_with_its_output_captured(ex: Executor) -> None:
    r = ex.run("%pip --version")
    assert r.ok, r.error
    assert r.stdout.startswith("pip ") and sys.prefix.split(os.sep)[-1] in r.stdout


# -- the shell ------------------------------------------------------------------------------


def test_shell_command_output_is_the_cells_output(ex: Executor) -> None:
    r = ex.run("!echo from-stdout; echo from-stderr >&2")
    assert r.ok
    assert r.stdout == "from-stdout\n" and r.stderr == "from-stderr\n"


def test_shell_capture_into_a_variable(ex: Executor) -> None:
    r = ex.run("files = !printf 'a.csv\\nb.csv\\n'\nlen(files)")
    assert r.ok and ex.namespace["files"] == ["a.csv", "b.csv"] and r.value_repr == "2"
    assert r.stdout == ""


def test_shell_exit_status_is_noted(ex: Executor) -> None:
    r = ex.run("!exit 3")
    assert r.ok and r.stderr == "[exit status 3]\n"


def test_magics_inside_blocks_but_not_inside_strings_or_comparisons(ex: Executor) -> None:
    code = ("n = 2\n"
            "if n != 3:\n"
            "    !echo in-block\n"
            "doc = '''\n"
            "!echo not-run\n"
            "%time nothing\n"
            "'''\n"
            "pct = '%d%%' % 5\n"
            "call = (n\n"
            "  % 2)\n"
            "for i in range(2):\n"
            "    %time i\n")
    r = ex.run(code)
    assert r.ok, r.error
    assert r.stdout.count("in-block") == 1 and "not-run" not in r.stdout
    assert r.stdout.count("Wall time:") == 2
    assert ex.namespace["doc"] == "\n!echo not-run\n%time nothing\n"
    assert ex.namespace["pct"] == "5%" and ex.namespace["call"] == 0


def test_a_timed_out_shell_command_ends_with_the_cell(ex: Executor) -> None:
    r = ex.run("!sleep 30", timeout=0.5)
    assert r.timed_out and r.duration < 20


# -- help -----------------------------------------------------------------------------------


def test_help_shows_signature_and_docstring(ex: Executor) -> None:
    ex.run("def area(width, height=2):\n    'The area of a rectangle.'\n    return width * height")
    r = ex.run("area?")
    assert r.ok and r.value_repr is None
    assert "Signature: area(width, height=2)" in r.stdout and "The area of a rectangle." in r.stdout
    assert "return width" not in r.stdout
    r = ex.run("area??")
    assert "return width * height" in r.stdout
    r = ex.run("os.path.join?")
    assert "Object `os.path.join` not found." in r.stdout
    r = ex.run("import os\n?os.path.join")
    assert "Signature: join(" in r.stdout


# -- what the model is told about a magic llmrepl does not have -----------------------------


@pytest.mark.parametrize("line", ["%load_ext autoreload", "%%bash\nls", "x = 1\n%%time\ny = 2"])
def test_an_unknown_magic_is_a_clear_error_and_nothing_runs(ex: Executor, line: str) -> None:
    r = ex.run("before = 1\n" + line if not line.startswith("%%") else line)
    assert r.error_type == "MagicError" and "SyntaxError" not in r.error and "^" not in r.error
    assert "magic" in r.error and "before" not in ex.namespace and "x" not in ex.namespace
    assert r.done == 0


def test_matplotlib_inline_is_accepted(ex: Executor) -> None:
    r = ex.run("%matplotlib inline\nok = True")
    assert r.ok and ex.namespace["ok"] is True and r.output == ""


def test_statement_count_and_line_numbers_are_the_cells_own(ex: Executor) -> None:
    r = ex.run("a = 1\n!true\nb = 2\nundefined_name")
    assert r.error_type == "NameError" and 'line 4' in r.error and r.done == 3
    assert ex.run("!true\n%pwd").done == 2


# -- the router's test ----------------------------------------------------------------------


@pytest.mark.parametrize("line, expected", [
    ("%timeit x", True), ("%%time", True), ("!ls -l", True), ("files = !ls", True), ("df.describe?", True),
    ("len??", True), ("?len", True), ("x != 3", False), ("!= 3", False), ("% of rows missing", False),
    ("what is this?", False), ("print('!')", False), ("x = 5 % 2", False), ("", False), ("a?b", False),
])
def test_is_magic(line: str, expected: bool) -> None:
    assert is_magic(line) is expected


def test_is_magic_with_a_namespace_keeps_questions_for_the_model() -> None:
    assert is_magic("df?", {"df": 1}) and is_magic("len?", {})
    assert not is_magic("why?", {"df": 1}) and not is_magic("df.head?", {})


def test_has_magic_and_transform_leave_plain_python_alone() -> None:
    for code in ("x = 1", "print('%d items' % 3)", "a != b", "s = 'why?'\n"):
        assert not has_magic(code)  # the executor's whole cost for such a cell
    for code in ("# what?\nx = 1", "s = \"\"\"\n!x\n\"\"\"", "y = (1,\n  %2)"):  # has_magic: maybe
        assert transform(code) is code


def test_transform_keeps_every_line_in_place() -> None:
    code = "a = 1\nif a:\n  !ls\nb = '%s' % a\nx = !pwd\nlen?\n"
    out = transform(code)
    assert out.count("\n") == code.count("\n")
    assert ast.parse(out)
    assert out.splitlines()[3] == "b = '%s' % a"


# -- risk labels, the review's shell lines, the export ---------------------------------------


def test_a_shell_command_gets_the_labels_of_the_same_subprocess_call() -> None:
    labels = [r.label for r in scan("!rm -rf data")]
    assert labels == [r.label for r in scan("import os\nos.system('rm -rf data')")]
    assert "run processes" in labels and scan("!rm -rf data")[0].high
    assert "install packages" in [r.label for r in scan("%pip install pandas")]
    assert "read secrets" in [r.label for r in scan("key = !cat ~/.ssh/id_rsa")]
    assert "run dynamic code (eval/exec)" in [r.label for r in scan("%run other.py")]
    assert scan("%cd data\n%pwd") == []
    assert scan("x = 1\nif x:\n    !echo hi")[0].where == 3


def test_describe_shell_lists_the_commands() -> None:
    assert describe_shell("x = 1") == ""
    text = describe_shell("!rm -rf data\nfor f in x:\n    !echo {f}\n%pip install pandas")
    assert text.splitlines() == ["this cell runs shell commands:", "  $ rm -rf data", "  $ echo {f}",
                                 "  $ pip install pandas"]


def test_exportable_is_standalone_python_that_does_the_same(tmp_path: Path) -> None:
    code = ("import os\n"
            "%cd sub\n"
            "here = %pwd\n"
            "!echo shell-ran > marker.txt\n"
            "lines = !cat marker.txt\n"
            "%time total = sum(range(5))\n"
            "%timeit -n 1 pass\n"
            "%load_ext autoreload\n"
            "print(here, lines, total)\n")
    out = exportable(code)
    assert "__llmrepl" not in out and out.count("\n") == code.count("\n")
    assert "# not run" in out
    (tmp_path / "sub").mkdir()
    script = tmp_path / "export.py"
    script.write_text(out)
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"{tmp_path / 'sub'} ['shell-ran'] 10" in done.stdout
    assert (tmp_path / "sub" / "marker.txt").exists()


def test_exportable_help_and_run_and_pip_compile() -> None:
    for code in ("len?", "len??", "%run a.py x", "%pip install 'pandas>=2'", "%%time\nx = 1\n!ls",
                 "%who\n%whos", "if True:\n    %matplotlib inline", "%%bash\nfor x in y:\n    echo $x",
                 "x = 1\n%%time\ny = 2", "if x:\n    %load_ext foo"):
        out = exportable(code)
        ast.parse(out)
        n = len(code.splitlines())
        assert len(out.splitlines()) in (n, n + 1)  # line for line; %%time adds its print


def test_an_exported_help_prints_the_doc_without_opening_a_pager(tmp_path: Path) -> None:
    """``len?`` in a .py export run in a terminal prints the doc; help() would stop the
    script in a pager (here one that leaves a marker)."""
    import pexpect

    script = tmp_path / "export.py"
    script.write_text(exportable("len?\nprint('after help')") + "\n")
    marker = tmp_path / "paged"
    child = pexpect.spawn(sys.executable, [str(script)], cwd=str(tmp_path), encoding="utf-8", timeout=30,
                          env={**os.environ, "PAGER": f"touch {marker}; cat", "MANPAGER": f"touch {marker}; cat"})
    child.expect(pexpect.EOF)
    child.close()
    assert "Return the number of items" in (child.before or "") and "after help" in (child.before or "")
    assert not marker.exists(), "the exported script opened a pager"


# -- the terminal shows `!cmd` as a shell command ------------------------------------------


def test_plain_review_lists_the_shell_commands() -> None:
    from llmrepl.terminal.display import TerminalDisplay
    from llmrepl.terminal.plain import PlainReviewer

    out = io.StringIO()
    display = TerminalDisplay(out)
    reviewer = PlainReviewer(lambda prompt: "y", display)
    decision = reviewer.review("!rm -rf \x1b[31mdata", cell=1, high_risk=True)
    assert decision.action == "run"
    text = out.getvalue()
    assert "this cell runs shell command:" in text and "  $ rm -rf data\n" in text and "\x1b" not in text


def test_highlighting_draws_a_shell_line_as_shell() -> None:
    from llmrepl.terminal.render import highlight_code

    lit = highlight_code("x = 1\n!ls 'a b'\nif x != 2: pass\n", color=True)
    shell = lit.splitlines()[1]
    assert shell.startswith("\x1b[0;1;35m!") and "'a b'" in shell
    assert highlight_code("x != 2\n", color=True) == highlight_code("x != 2\n", color=True).replace("35m!", "")
