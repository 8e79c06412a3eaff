"""Magics in the real REPL, in a pseudo-terminal (issue 15 item 5): typed by the person with
``/py`` (no model round trip), and written by the model, where ``!command`` is shown as a
shell command with its risk label and an unknown magic is fed back as a clear error."""

from __future__ import annotations

from pathlib import Path

import pexpect
import pytest
from launch import PROMPT


@pytest.fixture
def repl(pty_llmrepl, tmp_path: Path):  # type: ignore[no-untyped-def]
    """The real command in a pty, in ``tmp_path``, pointed at the fake server."""
    return lambda *args: pty_llmrepl(*args, cwd=str(tmp_path))


def typed(child: pexpect.spawn, line: str, *expected: str) -> None:
    child.send(line + "\r")
    for text in expected:
        child.expect_exact(text)
    child.expect_exact(PROMPT)


def test_the_persons_magics_at_the_prompt(repl, server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "sub").mkdir()
    (tmp_path / "prep.py").write_text("prepared = len(values) * 10\n")
    child = repl()
    typed(child, "/py values = list(range(5))")
    typed(child, "/py %timeit -n 3 -r 2 sum(values)", "per loop (mean ± std. dev. of 2 runs, 3 loops each)")
    typed(child, "/py %time total = sum(values)", "Wall time:")
    typed(child, "/py %who", "total  values")
    typed(child, "/py %whos", "Variable", "values")
    typed(child, "/py %pwd", repr(str(tmp_path)))
    typed(child, "/py %cd sub", str(tmp_path / "sub"))
    typed(child, "/py !echo shell-$((6 * 7)) in $(basename $PWD)", "shell-42 in sub")
    typed(child, "/py %cd -")
    typed(child, "/py %run prep.py")
    typed(child, "/py prepared", "50")
    typed(child, "/py len?", "Signature: len(obj, /)", "Return the number of items in a container.")
    typed(child, "/py %load_ext autoreload", "%load_ext is not a magic llmrepl has")
    assert server.requests == []  # none of it went to the model


def test_the_models_shell_command_goes_through_the_gate(repl, server) -> None:  # type: ignore[no-untyped-def]
    server.reply("Listing.\n```python\n!echo from-the-models-shell\n```")
    server.reply("The shell said hello.")
    child = repl()
    child.send("say hello from the shell\r")
    child.expect_exact("this cell may run processes")  # the same label os.system(...) gets
    child.expect_exact("this cell runs shell command:")
    child.expect_exact("$ echo from-the-models-shell")
    child.expect_exact("Run this code? [y/n/e] (high risk: only y runs it)")
    child.send("y")
    child.expect_exact("from-the-models-shell")
    child.expect_exact("The shell said hello.")
    child.expect_exact(PROMPT)
    assert "from-the-models-shell" in server.requests[1]["messages"][-1]["content"]


def test_an_unknown_magic_in_a_model_cell_is_fed_back(repl, server) -> None:  # type: ignore[no-untyped-def]
    server.reply("```python\n%load_ext autoreload\nvalue = 1\n```")
    server.reply("I will use plain Python.")
    child = repl()
    child.send("reload things\r")
    child.expect_exact("Run this code? [Y/n/e/a]")
    child.send("y")
    child.expect_exact("%load_ext is not a magic llmrepl has")
    child.expect_exact("I will use plain Python.")
    child.expect_exact(PROMPT)
    fed = server.requests[1]["messages"][-1]["content"]
    assert "MagicError" in fed and "%load_ext is not a magic llmrepl has" in fed
    assert "SyntaxError" not in fed
