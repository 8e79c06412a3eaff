"""Completion from the live namespace (execution/complete.py) and at the prompt
(terminal/completion.py): names, attributes, keyword arguments, dict keys, DataFrame
columns, paths, slash commands; no property or ``__getitem__`` run; a hanging ``__dir__``
costs at most the cap; hostile keys and file names never reach the terminal as controls."""

from __future__ import annotations

import ast
import subprocess
import sys
import threading

import pandas as pd
import pytest
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document

from llmrepl.execution import complete as complete_mod
from llmrepl.execution.complete import NamespaceCompleter
from llmrepl.terminal.completion import PromptCompleter

TAB = CompleteEvent(completion_requested=True)
TYPING = CompleteEvent(text_inserted=True)


def texts(completer: NamespaceCompleter, code: str, *, explicit: bool = True, after: str = "") -> list[str]:
    return [s.text for s in completer.complete(code, explicit=explicit, after=after)]


def applied(completer: NamespaceCompleter, code: str, pick: str, *, explicit: bool = True) -> str:
    """The input after choosing the suggestion ``pick`` for ``code``."""
    (s,) = [s for s in completer.complete(code, explicit=explicit) if s.text == pick]
    return code[: len(code) + s.start] + s.text


@pytest.fixture
def ns() -> dict:
    class Sales:
        region = "north"

        def total(self, *, currency: str = "EUR") -> int:
            return 1

    return {
        "monthly": pd.DataFrame({"sales": [1, 2], "region": ["n", "s"], "units sold": [3, 4]}),
        "prices": {"apple": 1.5, "avocado": 2.0, "it's": 0, 7: "seven"},
        "sales": Sales(),
        "import_log": [],
    }


@pytest.fixture
def comp(ns: dict) -> NamespaceCompleter:
    return NamespaceCompleter(lambda: ns, cap=30.0)  # generous: the machine is loaded


def test_names_of_the_namespace_as_you_type_and_builtins_on_tab(comp):
    assert texts(comp, "mon", explicit=False) == ["monthly"]
    assert applied(comp, "x = mon", "monthly", explicit=False) == "x = monthly"
    assert "print" in texts(comp, "pri")  # Tab: builtins and keywords too
    assert texts(comp, "prin", explicit=False) == []  # typing prose: no builtins pop up


def test_attributes_of_live_objects(comp):
    assert applied(comp, "monthly.des", "describe", explicit=False) == "monthly.describe"
    assert "total" in texts(comp, "sales.t")
    assert "region" in texts(comp, "sales.", explicit=False)
    assert not [t for t in texts(comp, "sales.") if t.startswith("_")]  # private names on "_" only
    assert "__class__" in texts(comp, "sales.__cl")


def test_keyword_arguments(comp):
    assert "currency=" in texts(comp, "sales.total(cur", explicit=False)
    assert "reverse=" in texts(comp, "sorted(import_log, rev", explicit=False)


def test_dict_keys_inside_the_brackets(comp):
    assert applied(comp, 'prices["av', 'avocado"]', explicit=False) == 'prices["avocado"]'
    assert texts(comp, "prices['it", explicit=False) == ["it\\'s']"]  # escaped for its quote
    assert texts(comp, "prices[", explicit=False) == ['"apple"]', '"avocado"]', '"it\'s"]', "7]"]
    assert texts(comp, 'prices["ap', after='"]', explicit=False) == ["apple"]  # closed already


def test_dataframe_columns_inside_df_bracket(comp):
    assert texts(comp, 'monthly["', explicit=False) == ['sales"]', 'region"]', 'units sold"]']
    assert applied(comp, "monthly['re", "region']", explicit=False) == "monthly['region']"


def test_keys_of_other_objects_are_not_read():
    touched = []

    class Looks(dict):
        def keys(self):  # a dict subclass's own keys() is user code: never called
            touched.append("keys")
            return ["x"]

    class Frame:
        @property
        def columns(self):
            touched.append("columns")
            return ["x"]

        def __getitem__(self, key):
            touched.append("getitem")

    comp = NamespaceCompleter(lambda: {"d": Looks(real=1), "f": Frame()}, cap=30.0)
    assert texts(comp, 'd["', explicit=False) == ['real"]']
    assert texts(comp, 'f["', explicit=False) == []
    assert touched == []


def test_file_paths_inside_strings(comp, tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "sales_2024.csv").write_text("a\n")
    (tmp_path / "data" / "sales_2025.csv").write_text("a\n")
    (tmp_path / ".secret").write_text("")
    monkeypatch.chdir(tmp_path)
    assert texts(comp, 'pd.read_csv("da', explicit=False) == ["data/"]
    assert texts(comp, 'pd.read_csv("data/sales_', explicit=False) == ["sales_2024.csv", "sales_2025.csv"]
    assert applied(comp, "open('data/sales_2025", "sales_2025.csv") == "open('data/sales_2025.csv"
    assert ".secret" not in texts(comp, "open('")
    assert texts(comp, "open('.se") == [".secret"]


def test_slash_commands_and_py_at_the_prompt(ns):
    pc = PromptCompleter(lambda: ns)
    got = [c.text for c in pc.get_completions(Document("/he"), TYPING)]
    assert got == ["/help"]
    got = [c.text for c in pc.get_completions(Document("/py monthly.des"), TAB)]
    assert got == ["describe"]
    assert list(pc.get_completions(Document("/model gpt"), TAB)) == []


def test_nothing_in_comments_and_no_menu_for_prose(comp):
    assert texts(comp, "x = 1  # monthly.") == []
    assert texts(comp, "plot the sales by month", explicit=False) == []
    assert texts(comp, "what is in e.g. the data", explicit=False) == []


def test_properties_and_getitem_never_run():
    ran = []

    class Hostile:
        @property
        def boom(self):
            ran.append("property")
            return "x"

        def __getitem__(self, key):
            ran.append("getitem")
            return "x"

    comp = NamespaceCompleter(lambda: {"h": Hostile()}, cap=30.0)
    assert "boom" in texts(comp, "h.")
    texts(comp, "h.boom.")
    texts(comp, "h[0].")
    texts(comp, 'h["')
    assert ran == []


def test_a_hanging_object_costs_at_most_the_cap():
    entered, release = threading.Event(), threading.Event()

    class Hang:
        def __dir__(self):  # user code jedi does call: may block forever
            entered.set()
            release.wait(120)
            return []

    ns = {"h": Hang(), "hello": 1}
    comp = NamespaceCompleter(lambda: ns, cap=0.2)
    try:
        assert texts(comp, "h.") == []  # returned while __dir__ is (or will be) blocked
        assert entered.wait(60)  # the hostile call really happened, and is still blocked
        assert not release.is_set()
        assert texts(comp, "hel", explicit=False) == ["hello"]  # the prompt goes on meanwhile
    finally:
        release.set()


def test_stuck_workers_are_bounded(monkeypatch):
    release = threading.Event()
    entered = threading.Semaphore(0)

    class Hang:
        def __dir__(self):
            entered.release()
            release.wait(120)
            return []

    monkeypatch.setattr(complete_mod, "STUCK_AFTER", 0.0)
    ns = {"h": Hang(), "hello": 1}
    comp = NamespaceCompleter(lambda: ns, cap=0.2)

    # threads other tests left (a stuck worker finishing late) are not this completer's
    before = set(threading.enumerate())

    def workers() -> int:
        return sum(t.name == "llmrepl-complete" and t.is_alive() and t not in before
                   for t in threading.enumerate())

    try:
        for _ in range(complete_mod.MAX_STUCK):
            assert texts(comp, "h.") == []
            assert entered.acquire(timeout=60)
        for _ in range(5):  # answered without starting another worker
            assert texts(comp, "h.") == []
            assert texts(comp, "hel", explicit=False) == ["hello"]
        assert workers() == complete_mod.MAX_STUCK
    finally:
        release.set()


def test_hostile_column_names_and_file_names_cannot_drive_the_terminal(tmp_path, monkeypatch):
    evil = "\x1b]52;c;cm0gLXJmIH4=\x07\x1b[2J\u202eevil"
    frame = pd.DataFrame({evil: [1], "ok": [2]})
    (tmp_path / (evil + ".csv")).write_text("")
    monkeypatch.chdir(tmp_path)
    comp = NamespaceCompleter(lambda: {"df": frame}, cap=30.0)
    column = texts(comp, 'df["', explicit=False)[0]
    assert column == '\\x1b]52;c;cm0gLXJmIH4=\\x07\\x1b[2J\\u202eevil"]'  # Python escapes
    assert ast.literal_eval('"' + column[:-1]) == evil  # the very key, as Python reads it
    pc = PromptCompleter(lambda: {"df": frame})
    for line in ('df["', "open('"):
        shown = list(pc.get_completions(Document(line), TAB))
        assert shown
        for c in shown:
            for text in (c.text, c.display_text, c.display_meta_text):
                assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text


def test_the_prompt_path_does_not_import_jedi():
    code = ("import sys, llmrepl.terminal.interactive, llmrepl.terminal.completion\n"
            "print('jedi' in sys.modules, 'parso' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_modules_chains_and_expressions(comp, ns):
    import numpy as np

    ns["np"] = np
    assert texts(comp, "np.linalg.no", explicit=False) == ["norm"]
    assert "upper" in texts(comp, '"text".up')  # jedi: the attribute of an expression
    assert "append" in texts(comp, "rows = []\nrows.app")  # jedi: names made in the same input


def test_a_kernel_namespace_is_never_read_from_the_completion_thread():
    from llmrepl.execution.executor import Executor
    from llmrepl.terminal.completion import live_namespace

    read = []

    class KernelLike:
        @property
        def namespace(self):  # a kernel's would ask the kernel, from the wrong thread
            read.append(1)
            return {}

    assert live_namespace(KernelLike()) is None and read == []
    executor = Executor()
    assert live_namespace(executor) is executor.namespace
