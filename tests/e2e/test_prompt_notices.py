"""Nothing surprising at the prompt (issue 14), with the installed ``llmrepl`` in a pty:
a message put back after a failed request says so and the first key typed replaces it;
leaving says how to come back; a run with nothing to resume leaves no session behind.

Every wait is on output (pexpect) or on a process exit, never a fixed sleep.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pexpect
import pytest
from launch import PROMPT, run

from llmrepl.context.builder import without_state

BACK = "your message is back in the input line: Enter resends it; typing replaces it; an arrow key edits it"


@pytest.fixture
def spawn(pty_llmrepl):
    return lambda *args: pty_llmrepl(*args, logfile=io.StringIO())


def last_user_text(request: dict) -> str:
    users = [m for m in request["messages"] if m["role"] == "user"]
    return without_state(users[-1]["content"])


def stored(home: Path) -> list[Path]:
    """Everything in the state folder's sessions folder."""
    folder = home / "sessions"
    return sorted(folder.iterdir()) if folder.exists() else []


def test_a_message_put_back_says_so_and_the_first_key_replaces_it(spawn, server):
    server.fail(400, "the server refused it")
    server.fail(400, "the server refused it again")
    server.reply("Answered.")
    child = spawn()
    child.send("first question\r")
    child.expect_exact("the server refused it")
    child.expect_exact(BACK)
    child.expect_exact(PROMPT)
    child.send("\r")  # Enter resends it as it was
    child.expect_exact("the server refused it again")
    child.expect_exact(BACK)
    child.expect_exact(PROMPT)
    child.send("second question\r")  # typing replaces it: one message, not the two run together
    child.expect_exact("Answered.")
    child.expect_exact(PROMPT)
    assert [last_user_text(r) for r in server.requests] == ["first question", "first question", "second question"]


def test_an_arrow_key_keeps_the_message_put_back_for_editing(spawn, server):
    server.fail(400, "the server refused it")
    server.reply("Answered.")
    child = spawn()
    child.send("how big is it\r")
    child.expect_exact(BACK)
    child.expect_exact(PROMPT)
    child.send("\x1b[D\x1b[C?\r")  # Left, Right, then "?" at the end
    child.expect_exact("Answered.")
    assert last_user_text(server.requests[-1]) == "how big is it?"


def test_leaving_says_how_to_resume_when_there_is_something_to_resume(spawn, server, clean_env):
    child = spawn()
    child.send("/py kept = 41 + 1\r")
    child.expect_exact(PROMPT)
    child.send("\x04")  # Ctrl-D
    child.expect(r"llmrepl --resume (\d{8}-\d{6}-\d+)")
    sid = child.match.group(1)
    child.expect(pexpect.EOF)
    journal = clean_env / "sessions" / f"{sid}.jsonl"
    assert journal.is_file()
    assert any(json.loads(line).get("code") == "kept = 41 + 1" for line in journal.read_text().splitlines())


def test_leaving_with_nothing_to_resume_leaves_no_session_and_no_hint(spawn, server, clean_env):
    child = spawn()
    child.send("/help\r")
    child.expect_exact("/undo")
    child.expect_exact(PROMPT)
    child.send("\x04")
    child.expect(pexpect.EOF)
    assert "--resume" not in child.logfile_read.getvalue()
    assert stored(clean_env) == []


def test_one_shot_help_leaves_no_session_folder(clean_env):
    p = run(["-c", "/help"])
    assert p.returncode == 0, p.stderr
    assert "/undo" in p.stdout
    assert clean_env.is_dir() and stored(clean_env) == []
    p = run(["-c", "/py print(6 * 7)"])  # a cell ran: that session is kept
    assert p.returncode == 0 and "42" in p.stdout, p.stderr
    assert len([f for f in stored(clean_env) if f.suffix == ".jsonl"]) == 1
