"""An attacker's pass over magics, routing and exports: each test names what the attacker
tries and asserts the safe behaviour (what a person at the terminal, or running an export,
would notice). Everything runs in-process on the real engine, executor, display and exports
(a scripted model), except the one notebook that nbclient runs in a real ipykernel.

Marker files named ``PWNED*`` in the test's own folder prove whether a command ran.
"""

from __future__ import annotations

import ast
import gc
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from llmrepl.engine.classify import route
from llmrepl.engine.protocols import ScriptedReviewer
from llmrepl.engine.session import Session
from llmrepl.execution.executor import Executor
from llmrepl.execution.magic_ipython import for_ipython
from llmrepl.execution.magics import describe_shell
from llmrepl.execution.risk import scan
from llmrepl.model.client import ScriptedModel
from llmrepl.store.export import export_ipynb, export_py
from llmrepl.store.transcript import load_session
from llmrepl.terminal.display import TerminalDisplay
from llmrepl.terminal.routing import MODEL_PROMPT, InputRouter

# a terminal control that is not a colour (SGR): OSC/CSI/ESC forms, BEL, C1 controls
_CONTROL = re.compile(r"\x1b(?!\[[0-9;]*m)|[\x07\x80-\x9f]")


def _controls(text: str) -> list[str]:
    return _CONTROL.findall(text)


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test runs in its own folder (``%cd`` moves the process: monkeypatch moves it back)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def ex(here: Path) -> Executor:
    return Executor(figure_dir=here / "figs")


def _fenced(code: str) -> str:
    return f"```python\n{code}\n```"


def _session(answers: list[str], *, auto_run: bool = False) -> tuple[Session, io.StringIO]:
    """The real engine and the terminal display (colour on, so only SGR may survive), the
    cell's output streamed to the display as in the UI."""
    out = io.StringIO()
    display = TerminalDisplay(out, color=True, width=100)
    session = Session(ScriptedModel(answers), Executor(sink=None), display=display, auto_run=auto_run)
    session.executor.sink = type("S", (), {"write": lambda self, s, t: display.cell_output(s, t)})()
    return session, out


def _py(code: str) -> tuple[str, Session]:
    """``/py CODE`` (what the prompt does with Python) on the terminal display; what it showed."""
    session, out = _session([])
    assert session.display.command("/py " + code, session) is False  # type: ignore[attr-defined]
    return out.getvalue(), session


# -- a model cell whose magic runs something the review does not show ----------------------


def test_timeit_cannot_hide_a_process_from_auto_run(here: Path) -> None:
    """``%timeit STMT`` runs STMT from a string: the risk scan used to read only the string,
    so auto-run ran ``os.system`` without asking. Now the statement is scanned as code."""
    session, _ = _session([_fenced("import os\n%timeit -n 1 -r 1 os.system('touch PWNED')"), "done"],
                          auto_run=True)
    reviewer = ScriptedReviewer(["decline"])
    session.step("time it", reviewer)
    assert reviewer.high_risk == [True], "auto-run ran the cell without asking"
    assert not (here / "PWNED").exists()


def test_calling_the_magic_helper_directly_cannot_skip_the_question(here: Path) -> None:
    """``__llmrepl_magic__.shell(...)`` is the helper a ``!`` line becomes: written by hand it
    is a shell command all the same, and must be asked about under auto-run."""
    session, _ = _session([_fenced("%pwd\n__llmrepl_magic__.shell('touch PWNED')"), "done"], auto_run=True)
    reviewer = ScriptedReviewer(["decline"])
    session.step("where am I", reviewer)
    assert reviewer.high_risk == [True]
    assert not (here / "PWNED").exists()


def test_fetching_the_magic_helper_by_name_is_labelled() -> None:
    labels = [r.label for r in scan("globals()['__llmrepl_magic__'].shell('touch PWNED')")]
    assert "run processes" in labels


def test_timeit_inside_a_cell_magic_body_is_labelled() -> None:
    risks = scan("%%time\n%timeit -n 1 -r 1 __import__('os').system('touch PWNED')")
    assert any(r.high for r in risks), risks


def test_a_bang_line_inside_a_triple_quoted_string_does_not_run(ex: Executor, here: Path) -> None:
    r = ex.run("s = '''\n!touch PWNED\n'''\ns")
    assert r.ok and "!touch PWNED" in (r.value_repr or "")
    assert not (here / "PWNED").exists() and describe_shell("s = '''\n!touch PWNED\n'''") == ""


def test_a_bang_line_after_a_backslash_continued_string_does_not_run(ex: Executor, here: Path) -> None:
    r = ex.run("s = 'abc\\\n!touch PWNED'\ns")
    assert r.ok and not (here / "PWNED").exists()


def test_a_bang_line_inside_brackets_does_not_run(ex: Executor, here: Path) -> None:
    r = ex.run("x = [\n!touch PWNED\n]")
    assert not r.ok and r.error_type == "SyntaxError"
    assert not (here / "PWNED").exists()


def test_a_bang_line_in_a_comment_or_fstring_does_not_run(ex: Executor, here: Path) -> None:
    r = ex.run("# !touch PWNED1\nv = 1\ns = f'''{v}\n!touch PWNED2\n'''\ns")
    assert r.ok, r.error
    assert not list(here.glob("PWNED*"))


def test_a_cell_magic_below_the_first_line_runs_nothing(ex: Executor, here: Path) -> None:
    r = ex.run("x = 1\n%%time\n!touch PWNED")
    assert not r.ok and "must be the cell's first line" in (r.error or "")
    assert "x" not in ex.namespace and not (here / "PWNED").exists()


def test_a_nested_cell_magic_shows_the_shell_command_it_runs(ex: Executor, here: Path) -> None:
    code = "%%time\n%%timeit -n 1 -r 1\n!touch PWNED"
    assert "$ touch PWNED" in describe_shell(code)  # shown ...
    assert ex.run(code).ok and (here / "PWNED").exists()  # ... and it is what runs


def test_a_tab_indented_bang_line_is_shown_as_a_command() -> None:
    assert "$ touch PWNED" in describe_shell("if True:\n\t!touch PWNED")
    assert "run processes" in [r.label for r in scan("if True:\n\t!touch PWNED")]


@pytest.mark.parametrize("sep", ["\u2028", "\u2029", "\x85", "\x0c", "\x0b", "\x1c", "\r"])
def test_a_line_separator_cannot_smuggle_a_bang_line(here: Path, sep: str) -> None:
    """``splitlines`` breaks at these, Python's tokenizer only at \\n and \\r: the cell is
    refused whatever the mode, and nothing runs."""
    code = f"x = 1{sep}!touch PWNED"
    session, out = _session([_fenced(code), "done"], auto_run=True)
    reviewer = ScriptedReviewer([])
    session.step("go", reviewer)
    assert reviewer.seen == [] and not (here / "PWNED").exists()
    assert "refused" in out.getvalue()


def test_time_of_a_bang_line_does_not_run_the_shell(ex: Executor, here: Path) -> None:
    r = ex.run("%time !touch PWNED")
    assert not r.ok and r.error_type == "SyntaxError"
    assert not (here / "PWNED").exists() and describe_shell("%time !touch PWNED") == ""


def test_pip_arguments_never_reach_a_shell(ex: Executor, here: Path) -> None:
    r = ex.run("%pip --version;touch PWNED $(touch PWNED2)")
    assert not list(here.glob("PWNED*")), r.stdout + r.stderr


def test_cd_arguments_are_not_run_by_a_shell(ex: Executor, here: Path) -> None:
    r = ex.run("%cd $(touch PWNED)")
    assert not r.ok and "no such folder" in (r.error or "")
    assert not (here / "PWNED").exists()


# -- escapes from shell output, help, reprs and paths never reach the terminal ---------------


def test_shell_output_escapes_never_reach_the_terminal(here: Path) -> None:
    shown, _ = _py("!printf 'a\\033]52;c;cHduZWQ=\\007b\\033[2J\\033]0;title\\007c\\n'")
    assert "abc" in shown and _controls(shown) == []


def test_captured_shell_output_escapes_never_reach_the_terminal(here: Path) -> None:
    session, out = _session([])
    session.display.command("/py lines = !printf 'x\\033]0;t\\007y\\n'", session)  # type: ignore[attr-defined]
    session.display.command("/py print(lines[0])", session)  # type: ignore[attr-defined]
    assert "xy" in out.getvalue() and _controls(out.getvalue()) == []


def test_help_prints_no_escape_from_a_docstring_or_repr(here: Path) -> None:
    session, out = _session([])
    session.display.command(  # type: ignore[attr-defined]
        "/py class T:\n    '''doc\\x1b]52;c;cHduZWQ=\\x07 \\x9b2J text'''\n"
        "    def __repr__(self): return 'r\\x1b[2Jr'\nt = T()", session)
    session.display.command("/py t?", session)  # type: ignore[attr-defined]
    shown = out.getvalue()
    assert "Docstring:" in shown and " text" in shown and _controls(shown) == []


def test_help_on_an_object_whose_repr_never_ends_comes_back(ex: Executor) -> None:
    ex.run("class Slow:\n    def __repr__(self):\n        while True: pass\nslow = Slow()")
    r = ex.run("slow?")
    assert r.ok, r.error
    assert "Type:" in r.stdout and "Docstring:" in r.stdout


def test_help_on_a_broken_property_is_a_cell_error_not_a_crash(ex: Executor) -> None:
    ex.run("class P:\n    @property\n    def boom(self): raise RuntimeError('no')\np = P()")
    r = ex.run("p.boom?")
    assert not r.ok and r.error_type == "RuntimeError"
    assert ex.run("1 + 1").value_repr == "2"  # the executor carries on


def test_whos_shows_no_escape_from_a_hostile_repr(here: Path) -> None:
    session, out = _session([])
    session.display.command(  # type: ignore[attr-defined]
        "/py class H:\n    def __repr__(self): return 'h\\x1b]0;pwned\\x07\\x1b[2J\\u202eh'\nh = H()", session)
    session.display.command("/py %whos", session)  # type: ignore[attr-defined]
    shown = out.getvalue()
    assert "Variable" in shown and _controls(shown) == []


def test_cd_into_a_folder_named_with_escapes_shows_no_escape(here: Path) -> None:
    weird = "d\x1b]0;pwned\x07\x1b[2Je"
    (here / weird).mkdir()
    session, out = _session([])
    session.display.command(f"/py import os; os.chdir({weird!r})", session)  # type: ignore[attr-defined]
    session.display.command("/py %cd .", session)  # type: ignore[attr-defined]
    session.display.command("/py %pwd", session)  # type: ignore[attr-defined]
    shown = out.getvalue()
    assert str(here) in shown and _controls(shown) == []


def test_a_cd_or_run_error_shows_no_escape_from_the_path(here: Path) -> None:
    shown, _ = _py("%cd /nowhere\x1b]0;pwned\x07\x1b[2J")
    shown2, _ = _py("%run 'x\x1b]0;pwned\x07.py'")
    assert "no such folder" in shown and "no such file" in shown2
    assert _controls(shown + shown2) == []


def test_timeit_that_never_ends_stops_at_the_time_limit(ex: Executor) -> None:
    r = ex.run("%timeit -n 1 -r 1 while True: pass", timeout=0.5)
    assert r.timed_out and not r.ok
    assert ex.run("1 + 1").value_repr == "2"


def test_keyboard_interrupt_inside_timeit_leaves_the_repl_whole(ex: Executor) -> None:
    r = ex.run("%timeit -n 1 -r 1 raise KeyboardInterrupt")
    assert r.interrupted and not r.ok
    assert gc.isenabled(), "timeit's gc.disable() outlived the cell"
    assert ex.run("2 + 2").value_repr == "4"


# -- routing: English never runs as code; pasted hidden characters never run -------------------


@pytest.mark.parametrize("text", ["global warming", "nonlocal heroes"])
def test_global_warming_is_a_question(text: str) -> None:
    assert route(text, set()).kind == "model"


def test_assert_dominance_is_a_question() -> None:
    assert route("assert dominance", set()).kind == "model"
    assert route("assert len(df) > 0", {"df"}).kind == "python"  # code still runs


@pytest.mark.parametrize("text", ["await approval", "yield results"])
def test_await_approval_is_a_question(text: str) -> None:
    assert route(text, set()).kind == "model"


def test_builtin_words_alone_are_questions() -> None:
    for word in ("help", "print", "list", "exit now", "I", "a"):
        assert route(word, set()).kind in ("model", "command") and route(word, set()).text != "/exit"


@pytest.mark.parametrize("text", ['level = "user\u202e \u2066# admin only\u2069 \u2066"', "!ls\u200b",
                                  'print("a\u2028b")', "price\u3164 = 1", "x = 1\ry = 2"])
def test_a_paste_with_hidden_characters_does_not_run_directly(text: str) -> None:
    """The gate refuses a model cell that reads unlike what runs; the prompt's own path must
    not run such a paste either (``/py`` still runs what you type, as documented)."""
    assert route(text, {"price", "x"}).kind == "model"
    assert InputRouter(lambda: {"price": 1, "x": 1}).prompt(text) == MODEL_PROMPT


def test_exit_leaves_with_the_journal_saved(tmp_path: Path) -> None:
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput

    from llmrepl.store.journal import Journal, read_journal
    from llmrepl.terminal.interactive import TerminalUI

    path = tmp_path / "j.jsonl"
    display = TerminalDisplay(io.StringIO(), color=False)
    session = Session(ScriptedModel([]), Executor(sink=None), display=display, journal=Journal(path))
    with create_pipe_input() as inp:
        inp.send_text("kept = 6 * 7\rexit\r")
        TerminalUI(session, display, history_path=tmp_path / "history", input=inp, output=DummyOutput()).run()
    session.journal.close()
    events = [r["event"] for r in read_journal(path)[0]]
    assert "cell_end" in events and events[-1] == "session_end"


# -- exports never run injected code -------------------------------------------------------


def _rec(**fields: Any) -> bytes:
    return (json.dumps({"t": 1_767_000_000.0, **fields}, ensure_ascii=False) + "\n").encode()


def _journal(home: Path, cells: list[tuple[str, dict[str, Any]]], extra: list[bytes] = ()) -> Path:  # type: ignore[assignment]
    """A journal of cells that ran (an attacker may have written any of it)."""
    lines = [_rec(event="session_start", id="x", version="0", model="gpt-test", base_url=None, cwd=str(home),
                  pid=1, mode="batch", resumed=False),
             _rec(event="user", text="go"),
             _rec(event="message", message={"role": "user", "content": "go"}, exchange_start=True), *extra]
    for n, (code, end) in enumerate(cells, 1):
        lines += [_rec(event="message", message={"role": "assistant", "content": _fenced(code)}, exchange_start=False),
                  _rec(event="cell_start", cell=n, code=code),
                  _rec(event="cell_end", cell=n, **{"output": "", "stdout": "", "stderr": "", "value": None,
                                                    "error": None, "error_type": None, "duration": 0.01,
                                                    "interrupted": False, "timed_out": False, "figures": [],
                                                    "output_chars": 0, **end})]
    folder = home / "sessions"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "20260101-000000-1.jsonl"
    path.write_bytes(b"".join(lines))
    return path


def _run_script(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-I", str(path)], capture_output=True, text=True, cwd=path.parent,
                          timeout=60, env={"PATH": os.environ.get("PATH", "")})


BREAKOUTS = [  # each would print PWNED-n if its text escaped its string or comment
    "!echo \"x'); print('PWN' + 'ED-1') #\"",
    "%timeit -n 1 -r 1 \"'''); print('PWN' + 'ED-3') #\"",
    "x = !echo a\"'\\\"; print('PWN' + 'ED-4') #",
    "%matplotlib inline\\nprint('PWN' + 'ED-5')",
    "%pip --version'); print('PWN' + 'ED-6') #",
    "%who str'); print('PWN' + 'ED-7') #",
    "%cd .'); print('PWN' + 'ED-2') #",  # these two fail (no such folder or file): the script stops
    "%run nothing.py'); print('PWN' + 'ED-8') #",
]


def _injected_calls(script: str) -> list[str]:
    """The calls in the script's code (not its strings or comments) that print a marker."""
    return [ast.unparse(n) for n in ast.walk(ast.parse(script))
            if isinstance(n, ast.Call) and "'PWN'" in ast.unparse(n) and not isinstance(n.func, ast.Attribute)]


def test_export_py_magic_lines_cannot_break_out_of_their_strings(tmp_path: Path) -> None:
    cells = [(code, {}) for code in BREAKOUTS]
    script = export_py(load_session(_journal(tmp_path, cells)))
    assert _injected_calls(script) == [], script
    out = tmp_path / "run" / "s.py"
    out.parent.mkdir()
    out.write_text(script)
    done = _run_script(out)
    assert "PWNED" not in done.stdout + done.stderr, script
    assert "x'); print('PWN' + 'ED-1') #" in done.stdout  # the shell's echo: the text was data


def test_export_py_partial_reason_and_error_type_stay_comments(tmp_path: Path) -> None:
    code = "print('ok')\nraise ValueError('x')\nprint('after')"
    end = {"error": "V\n", "error_type": "V\nprint('PWN' + 'ED-R') #\u2028print('PWN' + 'ED-S')", "stdout": "ok\n",
           "done": 1, "statements": 3}
    script = export_py(load_session(_journal(tmp_path, [(code, end)])), keep_failed=True)
    out = tmp_path / "s.py"
    out.write_text(script)
    done = _run_script(out)
    assert "PWNED" not in done.stdout and _injected_calls(script) == [], script
    assert "\u2028" not in script


def test_export_ipynb_shell_braces_are_not_evaluated_by_ipython(tmp_path: Path) -> None:
    """IPython expands ``{expr}`` and ``$name`` in ``!`` lines and most magics' arguments, and
    hands ``%pip``'s to a shell; llmrepl does neither. A notebook that kept the lines as they
    were ran ``expr`` (and ``touch``) on Run All: the session never did. Nor did it run
    ``%%bash`` or ``%sx`` (not llmrepl's magics), which a journal can claim a cell was."""
    cells = [("!echo {__import__('pathlib').Path('PWNED1').touch()}", {}),
             ("x = !echo {__import__('pathlib').Path('PWNED2').touch()}", {}),
             ("%who {__import__('pathlib').Path('PWNED3').touch()}", {}),
             ("%pip --version; touch PWNED4", {}),
             ("!true \\\nPWNED5 = 1; touch = PWNED5", {}),  # IPython joins the lines: touch = PWNED5
             ("%%time\n!echo {__import__('pathlib').Path('PWNED6').touch()}", {}),
             # magics llmrepl does not have (a journal can claim they ran): IPython would run them
             ("%%bash\ntouch PWNED7", {}), ("%sx touch PWNED8", {}), ("%system touch PWNED9", {}),
             ("%%script sh\ntouch PWNED10", {}), ("%%writefile PWNED11\nx = 1", {}),
             ("%%timeit -n 1 -r 1 open('PWNED12', 'w')\npass", {}),  # IPython's setup statement
             ("!echo plain", {})]
    nb = json.loads(export_ipynb(load_session(_journal(tmp_path, cells))))
    sources = ["".join(c["source"]) if isinstance(c["source"], list) else c["source"]
               for c in nb["cells"] if c["cell_type"] == "code"]
    assert "!echo plain" in sources  # a line IPython reads as llmrepl did stays a magic
    assert for_ipython("%pip install pandas") == "%pip install pandas"

    import nbformat
    from nbclient import NotebookClient

    folder = tmp_path / "nb"
    folder.mkdir()
    book = nbformat.reads(json.dumps(nb), as_version=4)
    NotebookClient(book, timeout=120, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(folder)}}).execute()
    assert not list(folder.glob("PWNED*")), sources


def test_export_ipynb_markdown_cannot_add_a_code_cell(tmp_path: Path) -> None:
    evil = ('see"}],"cell_type":"code","source":["print(\'PWNED\')"]},{"x":"\n\n```python\nprint("PWNED")\n```\n'
            '<script>alert(1)</script>')
    extra = [_rec(event="message", message={"role": "assistant", "content": evil}, exchange_start=False),
             _rec(event="user", text=evil)]
    nb = json.loads(export_ipynb(load_session(_journal(tmp_path, [("y = 1", {})], extra))))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert len(code) == 1 and "".join(code[0]["source"]) == "y = 1"


# -- more: shell children, auto-run, the helper, hostile names, the key --------------------


def test_a_shell_command_has_no_terminal_to_write_escapes_to(ex: Executor) -> None:
    """A ``!`` child that opened /dev/tty could write escape sequences past ``sanitize`` (or
    read the person's keys, as a password prompt does): it runs in a session of its own, with
    no controlling terminal."""
    r = ex.run("ids = !awk '{print $6}' /proc/$$/stat; echo $$\nids")
    assert r.ok, r.error
    session_id, shell_pid = ex.namespace["ids"]
    assert session_id == shell_pid, "the shell shares llmrepl's session (and its terminal)"


def test_a_background_shell_command_ends_with_the_cell(ex: Executor) -> None:
    """``!server &`` keeps the pipe open, so the cell waits; when the time limit ends it, the
    background job ends too, not only the shell that started it."""
    r = ex.run("!sleep 60 & echo started $!", timeout=1)
    assert r.timed_out
    pid = int(r.stdout.split("started", 1)[1].split()[0])
    import time

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(")")[-1].split()[0] == "Z":
                    break  # ended, not yet reaped by init
        except FileNotFoundError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the background sleep outlived its cell")


def test_a_shell_command_reading_stdin_does_not_wait_for_the_keyboard(ex: Executor) -> None:
    r = ex.run("!cat; echo after-cat", timeout=30)
    assert r.ok and not r.timed_out and "after-cat" in r.stdout


@pytest.mark.parametrize("code", ["!touch PWNED", "x = !touch PWNED", "!!touch PWNED", "%run PWNED.py",
                                  "%pip install PWNED", "if True:\n    !touch PWNED"])
def test_auto_run_still_asks_before_a_shell_line(here: Path, code: str) -> None:
    session, _ = _session([_fenced(code), "done"], auto_run=True)
    reviewer = ScriptedReviewer(["decline"])
    session.step("go", reviewer)
    assert reviewer.high_risk == [True] and not (here / "PWNED").exists()


def test_a_planted_helper_is_not_what_a_bang_line_calls(ex: Executor, here: Path) -> None:
    """A cell that rebinds ``__llmrepl_magic__`` (it is labelled: it runs processes) cannot make
    a later ``!`` line call its own object."""
    assert "run processes" in [r.label for r in scan("__llmrepl_magic__ = object()")]
    ex.run("class Evil:\n    def shell(self, *a, **k):\n        open('PWNED', 'w').close()\n"
           "__llmrepl_magic__ = Evil()")
    assert ex.run("!true").ok
    assert not (here / "PWNED").exists()


def test_who_shows_no_escape_from_a_hostile_variable_name(here: Path) -> None:
    session, out = _session([])
    session.display.command(  # type: ignore[attr-defined]
        "/py globals()['n\\x1b]0;pwned\\x07\\x1b[2J'] = 1; ok = 2; t = type('T\\x1b]0;x\\x07', (), {})()", session)
    for line in ("/py %who", "/py %whos", "/vars"):
        session.display.command(line, session)  # type: ignore[attr-defined]
    shown = out.getvalue()
    assert "ok" in shown and _controls(shown) == []


def test_shell_output_never_shows_the_api_key(server: Any) -> None:
    """The key is in llmrepl's environment, so a ``!`` child inherits it: what the child
    prints is scrubbed on the screen, in the journal and for the model alike."""
    from .harness import KEY, fault_run

    r = fault_run(server, ["/py !echo key=$OPENAI_API_KEY", "/py lines = !env",
                           "/py [l for l in lines if 'API_KEY' in l]", "/py k = lines[0]; import os",
                           "/py k = os.environ['OPENAI_API_KEY']", "/py k?", "/py %whos", "what did that print?"])
    r.assert_ok(check_shown=False)
    sent = json.dumps(server.requests)
    assert KEY not in sent and "[REDACTED]" in r.stdout


def test_braces_ipython_evaluates_in_a_bang_line_are_labelled() -> None:
    """IPython (``--kernel``) evaluates ``{expr}`` in ``!`` lines and in %cd/%run/%who/%pip's
    arguments: the scan reads those expressions as the code they are there."""
    assert "delete files" in [r.label for r in scan("!echo {__import__('shutil').rmtree('data')}")]
    assert "delete files" in [r.label for r in scan("%cd {os.remove('f') or '.'}")]
    assert "run processes" in [r.label for r in scan("%who {os.system('x')}")]


def test_a_kernel_cell_cannot_hide_code_in_shell_braces_from_auto_run(here: Path) -> None:
    """With ``--kernel`` IPython runs the cell, and expands ``{expr}``: auto-run used to run
    this ``%who`` (the scan saw only a string; %who is harmless) and IPython ran the ``touch``."""
    pytest.importorskip("ipykernel")
    from llmrepl.execution.kernel import KernelExecutor, connector

    kernel = KernelExecutor(connector("python3"), figure_dir=here / "figs")
    kernel.start()
    try:
        assert kernel.wait_ready(120), kernel.start_error
        marker = here / "PWNED"
        cell = f"%who {{__import__('pathlib').Path({str(marker)!r}).touch()}}"
        session = Session(ScriptedModel([_fenced(cell), "done"]), kernel, auto_run=True)  # type: ignore[arg-type]
        reviewer = ScriptedReviewer(["decline"])
        session.step("echo", reviewer)
        assert reviewer.high_risk == [True] and not marker.exists()
    finally:
        kernel.shutdown()


def test_code_after_a_shell_line_is_not_drawn_as_a_string() -> None:
    """The review drew each line beside a ``!`` line alone, so a line that closes a string and
    then runs code was drawn in string colour from its first quote (and a ``!`` line inside a
    string was drawn as a command). Now the Python between shell lines is drawn in one piece."""
    from llmrepl.terminal.render import highlight_code

    python = 'x = """abc\n"""; import os; os.system("rm -rf data") #\n'
    drawn = highlight_code("!true\n" + python + "!true\n", color=True)
    assert highlight_code(python, color=True) in drawn
    keyword = highlight_code("import os\n", color=True).split("import")[0]  # the keyword's colour
    assert keyword + "import" in drawn
    in_string = highlight_code('s = """\n!not shell\n"""\n', color=True)
    assert "\x1b[0;1;35m!" not in in_string  # drawn as the string it is


@pytest.mark.parametrize("name", ["pipe.py", "/dev/zero", "."])
def test_run_of_a_fifo_or_device_is_refused_at_once(ex: Executor, here: Path, name: str) -> None:
    """``%run`` read whatever the path named: a FIFO with no writer (or /dev/stdin, the
    person's keyboard) waited for ever, /dev/zero filled the memory."""
    os.mkfifo(here / "pipe.py")
    r = ex.run(f"%run {name}", timeout=20)
    assert not r.timed_out and not r.ok
    assert "not a file" in (r.error or ""), r.error


def test_a_cell_that_changes_folder_does_not_move_the_state_folder(here: Path) -> None:
    """``LLMREPL_HOME=state`` (relative) was read against whatever folder the process was in
    when each file was written: after ``%cd``, figures and snapshots went to another
    ``state`` and the notebook export could not find (or found someone else's) files."""
    from llmrepl.config import state_dir

    before = state_dir({"LLMREPL_HOME": "state"})
    os.chdir("/")
    assert before == here / "state"


def test_a_run_file_that_exits_does_not_end_the_repl(ex: Executor, here: Path) -> None:
    (here / "quits.py").write_text("import sys\nprint('bye')\nsys.exit(3)\n")
    r = ex.run("%run quits.py")
    assert not r.ok and r.error_type == "SystemExit" and "bye" in r.stdout
    assert ex.run("1 + 1").value_repr == "2"


def test_a_notebook_holds_no_raw_terminal_control_from_cell_output(tmp_path: Path) -> None:
    """``cat nb.ipynb``: JSON escapes ESC itself, but a C1 CSI (U+009B), a bidi override and
    a line separator from a cell's output were written raw. They are escaped now, and the
    notebook still reads back the same text."""
    text = "a\x9b2Jb\u202ec\u2028d\x1b]0;t\x07e\n"
    raw = export_ipynb(load_session(_journal(tmp_path, [("print('x')", {"stdout": text, "output": text})])))
    assert not re.search("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]", raw)
    outputs = [o for c in json.loads(raw)["cells"] if c["cell_type"] == "code" for o in c["outputs"]]
    assert "".join("".join(o.get("text", "")) for o in outputs) == text


def test_a_statement_on_the_timeit_line_is_not_silently_skipped(ex: Executor, here: Path) -> None:
    """``%%timeit -n 1 -r 1 SETUP`` then a body: llmrepl ran the body and ignored SETUP (the
    review showed it; IPython runs it). Now the cell is refused before anything runs."""
    r = ex.run("%%timeit -n 1 -r 1 open('PWNED', 'w')\nran = 1")
    assert not r.ok and "takes no statement on its own line" in (r.error or "")
    assert "ran" not in ex.namespace and not (here / "PWNED").exists()
    assert "takes no statement" in (ex.run("%%time print('x')\npass").error or "")


def test_enter_never_runs_a_long_paste_the_prompt_showed_as_a_message() -> None:
    """A long paste is judged once (parsing it at every key is slow): a question above pasted
    code said ``llm>``, and after the question was cut the prompt still said ``llm>`` while
    Enter ran the code. Now a new start is judged again, and Enter sends what the prompt
    still shows as ``llm>`` (an edit at the end) to the model instead of running it."""
    from llmrepl.terminal.routing import LIVE_LIMIT, PYTHON_PROMPT

    code = "".join(f"value_{i} = {i} * 2\n" for i in range(LIVE_LIMIT // 10))
    assert route(code, set()).kind == "python"
    router = InputRouter(lambda: {})
    assert router.prompt("why does this fail\n" + code) == MODEL_PROMPT
    assert router.prompt(code) == PYTHON_PROMPT and router.enter(code).kind == "python"  # the question cut
    router = InputRouter(lambda: {})
    assert router.prompt(code + "explain this please") == MODEL_PROMPT
    assert router.prompt(code) == MODEL_PROMPT  # the end edited: not parsed again at this key ...
    assert router.enter(code).kind == "model"  # ... so Enter does what the prompt says


@pytest.mark.parametrize("magic", ["%whos", "bad?", "%who"])
def test_a_repr_that_raises_systemexit_does_not_end_the_repl(ex: Executor, magic: str) -> None:
    ex.run("class Bad:\n    def __repr__(self):\n        raise SystemExit('bye')\nbad = Bad()")
    ex.run(magic)
    assert ex.run("6 * 7").value_repr == "42"
