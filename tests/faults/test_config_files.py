"""Configuration and file-system faults (reliability.md §5 E and F).

A broken config must stop llmrepl with exit code 2 and one clear line naming the file (it
never silently runs on defaults); "usable afterwards" then means the same command works
once the file is fixed. File-system faults must never stop the session.
"""

from __future__ import annotations

import os
import resource

from .harness import PROMPT, fault_run, spawn_repl, write_config


def _rejected(r, cfg, *words: str) -> None:
    """Exit 2, one clear message naming the file, no traceback, no key."""
    problems = r.clarity_problems() + r.key_problems()
    assert not problems, problems
    assert r.returncode == 2, r.excerpt()
    assert str(cfg) in r.stderr, r.excerpt()
    low = r.stderr.lower()
    assert all(w.lower() in low for w in words), r.excerpt()
    assert len([ln for ln in r.stderr.splitlines() if ln.strip()]) <= 3, "the message is not short"


def _fixed_run_works(server, cfg) -> None:
    cfg.write_text("[model]\ntimeout = 30\n")
    again = fault_run(server, ["hello after the fix"], args=["--config", str(cfg)])
    again.assert_ok(journaled=[("user", "hello after the fix")])


def test_toml_syntax_error(server, tmp_path):
    """E1: bad TOML (``base_url = https://x``) — file, line and column named; exit 2; no defaults used."""
    cfg = write_config(tmp_path / "cfg" / "config.toml", "[model]\nbase_url = https://x\n")
    r = fault_run(server, ["hi"], args=["--config", str(cfg)])
    _rejected(r, cfg, "line 2")
    assert server.requests == []
    _fixed_run_works(server, cfg)


def test_unknown_key_suggests_the_nearest(server, tmp_path):
    """E7: an unknown key (typo ``timeuot``) — named, with "did you mean 'model.timeout'?"."""
    cfg = write_config(tmp_path / "cfg" / "config.toml", "[model]\ntimeuot = 5\n")
    r = fault_run(server, ["hi"], args=["--config", str(cfg)])
    _rejected(r, cfg, "timeuot", "did you mean", "model.timeout")
    _fixed_run_works(server, cfg)


def test_wrong_type(server, tmp_path):
    """E8: a value of the wrong type (``timeout = "fast"``) — key, expected type and the value named."""
    cfg = write_config(tmp_path / "cfg" / "config.toml", '[model]\ntimeout = "fast"\n')
    r = fault_run(server, ["hi"], args=["--config", str(cfg)])
    _rejected(r, cfg, "model.timeout", "number", "fast")
    _fixed_run_works(server, cfg)


def test_config_file_unreadable(server, tmp_path):
    """E9: the config path cannot be read as a file (a FIFO: a naive open() would block forever) — one clear line, fast.

    Runs as root here, where permission bits do not stop a read and the venv's python lives
    under /root (0700), so dropping to another uid is not possible; a FIFO is the unreadable file.
    """
    cfg = tmp_path / "cfg" / "config.toml"
    cfg.parent.mkdir(parents=True)
    os.mkfifo(cfg)
    r = fault_run(server, ["hi"], args=["--config", str(cfg)], timeout=20)
    assert not r.timed_out, "llmrepl blocked reading the config"
    _rejected(r, cfg)
    assert r.said("cannot read", "not a regular file", "unreadable"), r.excerpt()
    os.unlink(cfg)
    _fixed_run_works(server, cfg)


def test_state_folder_not_writable(server, tmp_path):
    """F1/F2/F11: the state folder cannot be created (its parent is a regular file) — works in memory, says so once."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a regular file where a folder should be")
    home = blocker / "state"
    server.reply("```python\nprint('memory-' + 'mode')\n```")
    r = fault_run(server, ["go", "and again"], yes=True, home=home, env={"LLMREPL_HOME": str(home)})
    # (a) without a journal to find the alive cell in; (c) there is no disk to journal to
    assert "alive-check" in r.stdout.splitlines(), r.excerpt()
    assert not r.clarity_problems() and not r.key_problems(), r.clarity_problems() + r.key_problems()
    assert "memory-mode" in r.stdout
    warnings = [ln for ln in r.shown.splitlines() if ln.startswith("llmrepl:")
                and any(w in ln.lower() for w in (str(home).lower(), "memory", "not saved", "cannot write"))]
    assert warnings, "nobody was told the session is not being saved\n" + r.excerpt()
    assert len(warnings) == 1, f"the warning should be said once, got {len(warnings)}: {warnings}"


def test_disk_full_while_journaling(server, tmp_path):
    """F3/F9: the journal hits RLIMIT_FSIZE (a full disk) mid-session — warned once; session continues; file parseable."""
    big = "A long answer paragraph that will not fit on the disk. " * 400  # ~22 KB
    server.reply(big + "\nEND-OF-BIG")
    server.reply("small answer after the disk filled")
    limit = 8192

    def small_disk() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    r = fault_run(server, ["first message", "second message"], preexec_fn=small_disk)
    assert "alive-check" in r.stdout.splitlines(), "the session did not continue\n" + r.excerpt()
    assert not r.clarity_problems() and not r.key_problems(), r.clarity_problems() + r.key_problems()
    assert "small answer after the disk filled" in r.stdout
    said = [ln for ln in r.shown.splitlines() if ln.startswith("llmrepl:") and "journal" in ln.lower()]
    assert len(said) == 1, f"expected one warning about the journal, got {said}\n{r.excerpt()}"
    records, problems = r.journal()
    files = r.journal_files()
    assert files and all(p.stat().st_size <= limit for p in files)
    assert len(problems) <= 1, f"more than one torn line: {problems}"
    assert records and records[0]["event"] == "session_start"
    assert any(e.get("text") == "first message" for e in r.events("user"))


def test_history_file_corrupted(server, tmp_path):
    """F6 (history): invalid UTF-8 in the history file — the REPL starts, new entries are appended intact."""
    home = tmp_path / "state"
    home.mkdir(parents=True, exist_ok=True)
    hist = home / "history"
    old = b"\n# 2026-01-01 10:00:00.000000\n+good old entry\n\n# 2026-01-01\n+bad \xff\xfe\x80 bytes \xc3(\n"
    hist.write_bytes(old)
    os.chmod(hist, 0o600)
    server.reply("answer to the new entry")
    repl = spawn_repl(server)
    repl.ask("a new history entry")
    repl.expect("answer to the new entry")
    repl.expect(PROMPT)
    r = repl.finish()
    r.assert_ok(journaled=[("user", "a new history entry")])
    data = hist.read_bytes()
    assert data.startswith(old), "the old history was rewritten or lost"
    assert b"+a new history entry\n" in data[len(old):]


def test_two_processes_on_the_same_state_folder(server):
    """F8: two interactive llmrepl at once, same state folder — separate intact journals; history appended whole."""
    a, b = spawn_repl(server), spawn_repl(server)
    sent = []
    for i in range(4):
        for name, repl in (("A", a), ("B", b)):
            text = f"message {name}{i} " + f"{name}{i}-" * 400 + "end"
            sent.append(text)
            repl.send("\x1b[200~" + text + "\x1b[201~\r")
        for repl in (a, b):
            repl.expect("Noted.")
            repl.expect(PROMPT)
    ra, rb = a.finish(), b.finish()
    ra.assert_ok()
    rb.assert_ok()
    files = ra.journal_files()
    assert len(files) == 2, f"expected two session files, got {[f.name for f in files]}"
    texts = [e["text"] for e in ra.events("user")]
    assert sorted(texts) == sorted(sent), "a journal line was lost or garbled"
    history = (ra.home / "history").read_bytes().decode("utf-8")
    for text in sent:
        assert f"\n+{text}\n" in history, f"history lost or garbled {text[:20]!r}"
