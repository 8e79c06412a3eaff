"""Slash commands through the registry."""

from __future__ import annotations

from llmrepl.engine.commands import commands, dispatch
from llmrepl.engine.protocols import NullDisplay, ScriptedReviewer
from llmrepl.engine.session import Session
from llmrepl.execution.executor import Executor
from llmrepl.model.client import ScriptedModel


def make(*replies):
    return Session(ScriptedModel(list(replies)), Executor(), display=NullDisplay())


def test_help_lists_every_registered_command():
    text = dispatch("/help", make()).text
    for cmd in commands():
        assert f"/{cmd.name}" in text and cmd.help in text
    for name in ("help", "exit", "py", "vars", "history", "undo", "reset", "model", "auto"):
        assert f"/{name}" in text


def test_unknown_command_suggests_the_nearest():
    res = dispatch("/hepl", make())
    assert res.level == "error" and "/help" in res.text


def test_py_runs_in_the_namespace_and_vars_lists_it():
    s = make()
    assert dispatch("/py import math; r = [1, 2, 3]; t = 'hi'", s).text is None
    text = dispatch("/vars", s).text
    assert "  r     list    [1, 2, 3]" in text and "  t     str     'hi'" in text
    assert "math" in text  # modules are variables too


def test_py_without_code_shows_usage():
    assert "usage" in dispatch("/py", make()).text


def test_exit():
    assert dispatch("/exit", make()).exit


def test_history_undo_reset():
    s = make("hello there", "```python\nkept_var = 1\n```", "done")
    s.step("hi", ScriptedReviewer([]))
    hist = dispatch("/history", s).text
    assert "you: hi" in hist and "model: hello there" in hist
    s.step("make a var", ScriptedReviewer(["run"]))
    undo = dispatch("/undo", s)
    assert "forgot the last exchange (4 messages); 1 cell had run in it; rewound" in undo.text
    assert "kept_var" not in s.executor.namespace
    assert "no code had run" in dispatch("/undo", s).text
    assert dispatch("/history", s).text == "the conversation is empty"
    assert dispatch("/undo", s).text == "nothing to undo"
    dispatch("/py k = 1", s)
    dispatch("/reset", s)
    assert "k" not in s.executor.namespace and not s.messages


def test_model_shows_and_switches():
    s = make()
    assert "scripted" in dispatch("/model", s).text
    assert "gpt-x" in dispatch("/model gpt-x", s).text
    assert s.model.model == "gpt-x"


def test_auto_toggles_and_sets():
    s = make()
    dispatch("/auto", s)
    assert s.auto_run
    dispatch("/auto off", s)
    assert not s.auto_run
    dispatch("/auto on", s)
    assert s.auto_run
    assert dispatch("/auto maybe", s).level == "error"


def test_odd_namespace_keys_and_paths_never_raise_out_of_a_command(tmp_path):
    s = make()
    dispatch("/py globals()[1] = 2; ok = 3", s)
    assert "ok" in dispatch("/vars", s).text
    res = dispatch("/save ~no-such-user-llmrepl/x.md", s)
    assert res.level == "error" or "cannot" in (res.text or "")
