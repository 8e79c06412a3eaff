"""One prompt, two languages: which way Enter sends an input (engine/classify.py), the
labelled corpus, and the prompt's indicator and highlighting (terminal/routing.py), headless."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from prompt_toolkit.document import Document
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from llmrepl.context.builder import without_state
from llmrepl.engine.classify import defined_names, looks_like_python, route
from llmrepl.engine.session import Session
from llmrepl.execution.executor import Executor
from llmrepl.model.client import ScriptedModel
from llmrepl.terminal.display import TerminalDisplay
from llmrepl.terminal.interactive import TerminalUI
from llmrepl.terminal.routing import MODEL_PROMPT, PYTHON_PROMPT, InputRouter, RoutedLexer

CORPUS = Path(__file__).parent / "data" / "routing_corpus.tsv"
# The namespace the corpus is judged in: a data-exploration session some cells in (`_` and
# `_out` exist once a cell has shown a value). Fixed before the corpus was classified.
NAMESPACE = dict.fromkeys(
    "df df2 sales monthly users orders np pd plt os re json x a b s arr model clf results counts "
    "text path fig ax scores words X_train y_train _ _out".split(), 0)


def _unescape(text: str) -> str:
    r"""The corpus keeps one input per line: ``\n`` is a newline, ``\t`` a tab, ``\\`` a backslash."""
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t", "\\": "\\"}.get(m[1], m[0]), text)


def _corpus() -> list[tuple[str, str]]:
    rows = []
    lines = CORPUS.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "label\tinput"
    for number, line in enumerate(lines[1:], 2):
        label, sep, text = line.partition("\t")
        assert sep and label in ("python", "model"), f"{CORPUS.name}:{number}: {line!r}"
        rows.append((label, _unescape(text)))
    return rows


def _where(text: str, namespace: dict[str, object]) -> str:
    decided = route(text, namespace)
    return "python" if decided.kind == "python" or decided.text.startswith("/py ") else "model"


def test_the_corpus_is_classified_with_at_least_99_percent_accuracy() -> None:
    rows = _corpus()
    assert len(rows) >= 500
    assert len({text for _, text in rows}) == len(rows), "an input is listed twice"
    labels = {label for label, _ in rows}
    assert labels == {"python", "model"} and min(sum(lab == k for lab, _ in rows) for k in labels) >= 200
    misses = [(label, text) for label, text in rows if _where(text, NAMESPACE) != label]
    accuracy = 1 - len(misses) / len(rows)
    report = f"routing corpus: {len(rows) - len(misses)}/{len(rows)} right, accuracy {accuracy:.2%}; misses:\n" + "".join(
        f"  labelled {label}, routed {'model' if label == 'python' else 'python'}: {text!r}\n" for label, text in misses)
    print(report)  # shown with -rP (and -s)
    warnings.warn(report, UserWarning, stacklevel=1)  # and in the warnings summary of every run
    assert accuracy >= 0.99, report


@pytest.mark.parametrize("text", [
    "df", "df.describe", "df.describe()", "df['a'].mean()", "a, b", "x = 3", "import os",
    "help(x)", "print('hi')", "len(df)", "2 ** 10", "x > 3", "not x", "[c for c in df]",
    "def f(y):\n    return y", "for i in range(3):\n    print(i)", "with open('f') as f:\n    pass",
    "class A:\n    pass", "    x = 1\n    x", "%timeit df.sum()", "%%time\nx = 1", "!ls", "df?", "df.merge??",
    "?df", "files = !ls", '"a,b".split(",")', "t = 1\nt", "del x", "x: int", "raise ValueError(x)",
])
def test_code_runs_as_python(text: str) -> None:
    assert route(text, NAMESPACE).kind == "python"
    assert looks_like_python(text, NAMESPACE)


@pytest.mark.parametrize("text", [
    "help", "list files in data/", "x y", "not working", "print the mean", "打印'Hello, World!'",
    "计算每列的平均值", "undefined_name", "undefined.attr", "undefined()", "help (me)", "sales (2023)",
    "continue", "pass", "return", "raise", "42", "None", '"a quoted question"', "# Heading", "Note: slow",
    "why?", "% of rows", "! not a command", "cats and dogs", "a, b, c and d", "", "   ", "data.csv",
    "¿Cuál es la media?", "Покажи первые строки", "df shape", "what does df.describe() do?",
])
def test_everything_else_asks_the_model(text: str) -> None:
    decided = route(text, NAMESPACE)
    assert decided.kind == "model" and decided.text == text


def test_forcing_either_way_and_leaving() -> None:
    assert route("/py x", NAMESPACE).kind == "command"  # /py runs as a command, as before
    asked = route("/ask df.describe()", NAMESPACE)
    assert (asked.kind, asked.text) == ("model", "df.describe()")
    multi = route("/ask\nwhy is x\nso big", NAMESPACE)
    assert (multi.kind, multi.text) == ("model", "why is x\nso big")
    assert route("/ask", NAMESPACE).kind == "command"  # the command says how to use it
    assert route("/vars", NAMESPACE).text == "/vars"
    for word in ("exit", "quit()", " exit() "):
        assert route(word, NAMESPACE).text == "/exit"


def test_defined_means_the_live_namespace_not_llmrepls_own_names() -> None:
    executor = Executor(sink=None)
    names = defined_names(executor.namespace)
    assert route("display", names).kind == "model"  # injected by llmrepl, not the person's
    assert "__builtins__" not in names and 1 not in names  # type: ignore[operator]
    executor.run("frame = 3")
    assert route("frame", defined_names(executor.namespace)).kind == "python"
    assert route("frame.real", defined_names(executor.namespace)).kind == "python"
    assert route("frames", defined_names(executor.namespace)).kind == "model"
    executor.run("del frame")
    assert route("frame", defined_names(executor.namespace)).kind == "model"


def test_hostile_input_and_namespaces_never_raise() -> None:
    class Hostile(dict):  # type: ignore[type-arg]
        def __getitem__(self, key: object) -> object:
            raise RuntimeError("no")

    for text in ("(" * 5000 + ")" * 5000, "[" * 200_000, "x\x00y", "\ud800", "-" * 300 + "x",
                 "a" + ".b" * 20_000, "x = " + "1 + " * 50_000 + "1"):
        assert route(text, NAMESPACE).kind in ("python", "model")
    assert route("df", defined_names(Hostile(df=1))).kind == "model"
    assert route("x" * 1_000_001, {"x" * 1_000_001: 1}).kind == "model"  # past the cap: sent as typed


# -- the terminal: indicator, highlighting, Enter ------------------------------------------


@pytest.fixture
def ui(tmp_path: Path):
    out = io.StringIO()
    display = TerminalDisplay(out, color=False)
    model = ScriptedModel(["the model's answer", "second answer"])
    session = Session(model, Executor(sink=None), display=display)
    session.executor.sink = type("S", (), {"write": lambda self, s, t: display.cell_output(s, t)})()
    return session, model, out, display


def _run(session: Session, display: TerminalDisplay, keys: str, tmp_path: Path) -> TerminalUI:
    with create_pipe_input() as inp:
        inp.send_text(keys)
        ui = TerminalUI(session, display, history_path=tmp_path / "history", input=inp, output=DummyOutput())
        ui.run()
    return ui


def test_python_runs_directly_and_english_asks_the_model(ui, tmp_path: Path) -> None:
    session, model, out, display = ui
    _run(session, display, "total = 6 * 7\rtotal\rwhat is total?\r\x04", tmp_path)
    text = out.getvalue()
    assert "Out[2]: 42" in text and "the model's answer" in text
    assert len(model.calls) == 1  # only the question went to the model
    sent = model.calls[0]["messages"]
    assert without_state(sent[-1]["content"]).endswith("what is total?")
    # the model is told the person ran code, as with /py
    assert any("total = 6 * 7" in m["content"] and "ran code directly" in m["content"] for m in sent)


def test_ask_forces_the_model_and_py_forces_python(ui, tmp_path: Path) -> None:
    session, model, out, display = ui
    _run(session, display, "/py word = 'hi'\r/ask word\rword\r/ask\r\x04", tmp_path)
    assert len(model.calls) == 1 and without_state(model.calls[0]["messages"][-1]["content"]).endswith("\nword")
    assert "Out[2]: 'hi'" in out.getvalue() and "usage: /ask TEXT" in out.getvalue()


def test_the_plain_front_end_routes_the_same_way(ui) -> None:
    from llmrepl.terminal.plain import run_plain

    session, model, out, display = ui
    assert run_plain(session, display, stdin=io.StringIO("t = 5\nt\nwhat is t\n/ask t\n")) == 0
    assert "Out[2]: 5" in out.getvalue() and len(model.calls) == 2
    assert [without_state(c["messages"][-1]["content"]).rsplit("\n", 1)[-1] for c in model.calls] == ["what is t", "t"]


def test_batch_lines_stay_messages_and_ask_strips_its_prefix(server) -> None:
    from launch import run

    server.reply("one")
    server.reply("two")
    done = run(["--base-url", server.base_url], input="x = 1\n/ask why\n")
    assert done.returncode == 0, done.stderr
    assert [without_state(r["messages"][-1]["content"]) for r in server.requests] == ["x = 1", "why"]


def test_exit_leaves_as_in_ipython(ui, tmp_path: Path) -> None:
    session, model, out, display = ui
    _run(session, display, "exit\r/py never = 1\r", tmp_path)
    assert "never" not in session.executor.namespace and not model.calls


def test_the_prompt_says_where_enter_sends() -> None:
    namespace = {"df": 1}
    router = InputRouter(lambda: namespace)
    assert router.prompt("") == router.prompt("what is df") == MODEL_PROMPT == "llm> "
    assert router.prompt("df") == router.prompt("df.head()") == PYTHON_PROMPT
    assert router.prompt("/py 1") == router.prompt("/vars") == MODEL_PROMPT  # a command says what it does
    assert router.highlights("/py 1") and not router.highlights("/vars")
    assert router.prompt("df2") == MODEL_PROMPT
    namespace["df2"] = 2  # a cell defined it (same dict, one more name)
    assert router.prompt("df2") == PYTHON_PROMPT
    assert len(PYTHON_PROMPT) == len(MODEL_PROMPT)


def test_a_big_paste_is_judged_once_while_typing_and_whole_on_enter() -> None:
    router = InputRouter(lambda: {"df": 1})
    paste = "df.head()\n" * 1000  # 10,000 characters
    assert router.runs_python(paste)
    assert router.runs_python(paste + "now explain all that")  # the indicator is not re-parsed per key
    assert router.route(paste + "now explain all that").kind == "model"  # Enter decides on all of it
    router.forget()
    assert not router.runs_python(paste + "now explain all that")


def test_python_is_highlighted_and_prose_is_not() -> None:
    lexer = RoutedLexer(InputRouter(lambda: {"df": 1}).runs_python)
    code = lexer.lex_document(Document("import os; df.head(3)"))(0)
    styles = {style for style, _ in code}
    assert any("pygments.keyword" in s for s in styles) and any("pygments.literal.number" in s for s in styles)
    assert "".join(t for _, t in code) == "import os; df.head(3)"
    prose = lexer.lex_document(Document("import the data\nplease"))
    assert prose(0) == [("", "import the data")] and prose(1) == [("", "please")] and prose(2) == []


def test_pygments_loads_only_when_python_is_typed() -> None:
    code = (
        "import sys\nfrom prompt_toolkit.document import Document\n"
        "from llmrepl.terminal import interactive\nfrom llmrepl.terminal.routing import InputRouter, RoutedLexer\n"
        "lexer = RoutedLexer(InputRouter(lambda: {}).runs_python)\n"
        "lexer.lex_document(Document('what is this'))\n"
        "before = 'pygments.lexers.python' in sys.modules\n"
        "lexer.lex_document(Document('print(1)'))\n"
        "print(before, 'pygments.lexers.python' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["False", "True"], done.stderr


def test_enter_in_an_unfinished_block_continues_it_as_ipython_does(ui, tmp_path: Path) -> None:
    """``for i in range(3):`` + Enter starts an indented line instead of asking the model about
    a fragment; Enter on a line of only spaces runs the block. An English line ending in ':'
    is still a message."""
    session, model, out, display = ui
    _run(session, display, "for i in range(3):\rprint('row', i)\r\rnote this:\r\x04", tmp_path)
    text = out.getvalue()
    assert "row 0" in text and "row 2" in text
    assert len(model.calls) == 1  # only the English line
    assert without_state(model.calls[0]["messages"][-1]["content"]).endswith("note this:")


@pytest.mark.parametrize("text,indent", [
    ("for i in range(3):", "    "),
    ("def f(x):\n    if x:", "        "),
    ("total = sum([1,", ""),
    ("x = 1 + \\", ""),
    ("for i in range(3):\n    print(i)\n    ", None),   # a line of only spaces ends the block
    ("x = 1", None),
    ("what should I do:", None),
    ("tell me about pandas (the library", None),
    ("/py for i in x:", None),
])
def test_which_input_continues_on_enter(text: str, indent: str | None) -> None:
    from llmrepl.terminal.routing import continues_python

    assert continues_python(text) == indent
