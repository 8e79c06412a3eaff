"""Configuration values are bounded, wherever they come from (issue 11, class 8).

Every numeric setting has both ends bounded and every string is one short line, in the
config file, in the environment and on the command line; a file that cannot be read as
settings (nested thousands deep, a number of thousands of digits, megabytes long) is one
clear line too. Each case: exit status 2, one line naming the source and the key, no
traceback, nothing sent; and, for a file, the same command works once the file is fixed.

Without the bounds each of these started llmrepl anyway (``exec.timeout = 1e300`` then made
every cell fail with OverflowError; ``1e-9`` made the cell timer fire every microsecond and
llmrepl hung) or crashed with a Python traceback (RecursionError, ValueError).

Also here: the local-server probe is isolated in the tests (``LLMREPL_FIND_LOCAL=false``,
set by conftest), proven with a server listening on one of the probed ports.
"""

from __future__ import annotations

import pytest
from fakeserver import FakeOpenAI
from launch import run

from llmrepl.model.probe import KNOWN_SERVERS

from .harness import fault_run, write_config


def _rejected(r, source: str, *words: str) -> None:
    """Exit 2; the last line names the source and says what is wrong; no traceback, no key."""
    problems = r.clarity_problems() + r.key_problems()
    assert not problems, problems
    assert "Traceback" not in r.stderr, r.excerpt()
    assert r.returncode == 2, r.excerpt()
    last = [ln for ln in r.stderr.splitlines() if ln.strip()][-1]
    assert source in last and all(w in last for w in words), r.excerpt()
    assert len(last) < 400, "the message is not one short line"
    assert r.server is None or r.server.requests == [], "llmrepl went on with a bad setting"


def _file_rejected(server, tmp_path, text: str, *words: str) -> None:
    cfg = write_config(tmp_path / "cfg" / "config.toml", text)
    r = fault_run(server, ["hi"], args=["--config", str(cfg)])
    _rejected(r, str(cfg), *words)
    assert len([ln for ln in r.stderr.splitlines() if ln.strip()]) == 1, r.excerpt()
    cfg.write_text("[exec]\ntimeout = 30\n")  # fixed: the same command works
    again = fault_run(server, ["hello after the fix"], args=["--config", str(cfg)])
    again.assert_ok(journaled=[("user", "hello after the fix")])


def test_exec_timeout_1e300(server, tmp_path):
    """The issue's example: ``exec.timeout = 1e300`` made every cell fail with OverflowError."""
    _file_rejected(server, tmp_path, "[exec]\ntimeout = 1e300\n", "exec.timeout", "86,400", "1e+300")


def test_tiny_exec_timeout(server, tmp_path):
    """``exec.timeout = 1e-9`` rounds up to a timer firing every microsecond: llmrepl hung."""
    _file_rejected(server, tmp_path, "[exec]\ntimeout = 1e-9\n", "exec.timeout", "0 (no limit)", "0.001")


@pytest.mark.parametrize("nested", ["x = " + "[" * 5000 + "]" * 5000,
                                    "[model]\nname = " + "{a = " * 3000 + "1" + "}" * 3000])
def test_deeply_nested_toml(server, tmp_path, nested):
    """A deeply nested TOML array or inline table gave a RecursionError traceback."""
    _file_rejected(server, tmp_path, nested + "\n", "nested too deeply")


def test_integer_of_thousands_of_digits(server, tmp_path):
    """``max_steps = 999...9`` (5,000 digits) gave a ValueError traceback from the TOML reader."""
    _file_rejected(server, tmp_path, "[repl]\nmax_steps = " + "9" * 5000 + "\n", "cannot read a value")


def test_huge_integer_for_a_float_key(server, tmp_path):
    """``model.timeout = 10**400``: converting it to seconds overflowed (OverflowError traceback)."""
    _file_rejected(server, tmp_path, "[model]\ntimeout = 1" + "0" * 400 + "\n", "model.timeout", "86,400")


def test_context_window_beyond_any_model(server, tmp_path):
    """``context_window = 10**30`` was accepted as the budget of every request."""
    _file_rejected(server, tmp_path, "[model]\ncontext_window = 1" + "0" * 30 + "\n",
                   "model.context_window", "10,000,000")


def test_answer_reserve_as_big_as_the_window(server, tmp_path):
    """``max_output_tokens`` >= ``context_window`` left no room for the request: every message
    was then "too long" for a budget floored at 256 tokens."""
    _file_rejected(server, tmp_path, "[model]\ncontext_window = 4096\nmax_output_tokens = 4096\n",
                   "model.max_output_tokens", "model.context_window")


def test_config_file_of_megabytes(server, tmp_path):
    """A 2 MB config file was read whole and parsed; a config file is a few lines."""
    _file_rejected(server, tmp_path, "# padding\n" * 200_000, "bytes")


def test_timeout_flag_1e300_and_nan(server):
    """``--timeout 1e300`` passed cli.py's own check (>= 0) and failed every cell; ``nan`` too."""
    for value in ("1e300", "nan", "inf"):
        r = fault_run(server, ["hi"], args=["--timeout", value])
        _rejected(r, "--timeout", value if value != "1e300" else "86,400")


def test_max_steps_flag_above_the_bound(server):
    """``--max-steps 1000000`` was accepted: a million model calls for one message."""
    r = fault_run(server, ["hi"], args=["--max-steps", "1000000"])
    _rejected(r, "--max-steps", "between 1 and 100")


def test_environment_model_name_with_escape_codes(server):
    """``LLMREPL_MODEL`` holding an escape sequence (or 100 KB) was sent and shown as it was."""
    r = fault_run(server, ["hi"], env={"LLMREPL_MODEL": "gpt\x1b]0;owned\x07-4o"})
    _rejected(r, "LLMREPL_MODEL", "model.name", "control")
    assert "\x1b]0;owned" not in r.stderr, "the escape sequence reached the terminal"
    r = fault_run(server, ["hi"], env={"LLMREPL_MODEL": "m" * 100_000})
    _rejected(r, "LLMREPL_MODEL", "model.name", "at most 1,000 characters")


# ------------------------------------------------------------------- the probe, isolated


def _listen_on_a_probed_port() -> FakeOpenAI | None:
    """A fake server on the first free port of those llmrepl probes, or None if all are taken."""
    for _, port in KNOWN_SERVERS:
        try:
            return FakeOpenAI(port=port).start()
        except OSError:
            continue
    return None


@pytest.fixture
def probed_server():
    srv = _listen_on_a_probed_port()
    if srv is None:
        pytest.skip("every port the probe looks at is taken here")
    try:
        yield srv
    finally:
        srv.stop()


def test_no_model_configured_holds_with_a_server_on_a_probed_port(probed_server):
    """The tests' "no model configured" runs stay that way with a server answering on a probed
    port (they used to fail on any machine running Ollama): conftest turns the probe off."""
    p = run(["-c", "hi"], timeout=60)
    assert p.returncode == 2, p.stderr
    assert "no model is configured" in p.stderr and "Traceback" not in p.stderr
    assert probed_server.log == [], "the probe reached the server the tests must not see"


def test_the_probe_finds_that_server_when_on(probed_server, monkeypatch):
    """The product default (model.find_local = true) does find it: the isolation above is what
    made the difference, not a broken probe."""
    monkeypatch.delenv("LLMREPL_FIND_LOCAL", raising=False)
    probed_server.reply("Hello from the probed server.")
    p = run(["-c", "hi"], timeout=60)
    assert "no API key set; using" in p.stderr, p.stderr
    if f"127.0.0.1:{probed_server.port}/" in p.stderr:  # else a server of this machine answered first
        assert "Hello from the probed server." in p.stdout, p.stderr


def test_find_local_is_checked_like_any_setting(server):
    """``LLMREPL_FIND_LOCAL=maybe`` — one line naming the variable, not a silent default."""
    r = fault_run(server, ["hi"], env={"LLMREPL_FIND_LOCAL": "maybe"})
    _rejected(r, "LLMREPL_FIND_LOCAL", "model.find_local", "true or false")

