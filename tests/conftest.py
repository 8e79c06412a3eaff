"""Shared fixtures: a clean environment per test, a private state folder, the fake server."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fakeserver import FakeOpenAI  # noqa: E402
from launch import LOCAL_HOSTS, PROXIES  # noqa: E402

# A job started in the background by a non-interactive shell ("cmd &", some CI launchers)
# inherits SIGINT and SIGQUIT ignored, and so would every llmrepl the tests start: the
# Ctrl-C / Ctrl-\ tests need the ordinary dispositions, whoever launched pytest.
signal.signal(signal.SIGINT, signal.default_int_handler)
if hasattr(signal, "SIGQUIT"):
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)


_TERMINAL_IDS = ("TERM_PROGRAM", "TERM_PROGRAM_VERSION", "LC_TERMINAL", "KITTY_WINDOW_ID",
                 "GHOSTTY_RESOURCES_DIR", "KONSOLE_VERSION", "WT_SESSION", "MLTERM", "XTERM_VERSION",
                 "TMUX", "STY")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No real keys, no user config, state in a temp folder, no colour, no CPR waits, no probe.

    Every llmrepl a test starts inherits this (``launch.child_env``)."""
    for name in list(os.environ):
        if name.startswith(("OPENAI_", "LLMREPL_")) or name in ("NO_COLOR", "XDG_CONFIG_HOME", "XDG_DATA_HOME"):
            monkeypatch.delenv(name, raising=False)
    # The terminal the tests run in (kitty, iTerm2, VS Code, tmux...) must not decide whether
    # a child draws images (terminal/images.py): a test that wants one names it.
    for name in _TERMINAL_IDS:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "state"
    monkeypatch.setenv("LLMREPL_HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("PROMPT_TOOLKIT_NO_CPR", "1")
    # No search for a local model server: a real Ollama or LM Studio on this machine must not
    # answer the tests' "no model configured" runs (model.find_local; the default is true).
    monkeypatch.setenv("LLMREPL_FIND_LOCAL", "false")
    for proxy in PROXIES:
        monkeypatch.delenv(proxy, raising=False)
    monkeypatch.setenv("NO_PROXY", LOCAL_HOSTS)
    return home


@pytest.fixture(autouse=True)
def default_sigint():
    """Each test ends with Python's own Ctrl-C handler: a session may leave its Ctrl-C hold in
    place after an interrupted cell (until the next message), and the next test must not
    inherit it."""
    yield
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def server():
    """An OpenAI-compatible server on 127.0.0.1 that replies as scripted and records requests."""
    srv = FakeOpenAI()
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
