"""Start the installed ``llmrepl`` command as a child: one way, for the tests and the benchmarks.

This module knows where the command is, the environment a child gets, how to start it in a
pseudo-terminal (pexpect) and how to run it in batch mode (stdin through a pipe). The
end-to-end tests, the fault harness and the benchmark scripts all start llmrepl through it;
what differs between them is spelled out as keyword arguments.

Stdlib + pexpect only, and nothing from the test suite: the benchmark scripts, run as plain
scripts from the checkout, put this folder on ``sys.path`` (``benchmarks/_common.py``) and
import it as well. ``subprocess`` and ``pexpect`` are imported where they are used, because a
benchmark imports this module into processes whose memory it measures (bench_memory's
executor child): importing it adds no module that ``_common`` did not already import.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Sequence

    import pexpect

__all__ = [
    "LLMREPL",
    "PROMPT",
    "DIMENSIONS",
    "PROXIES",
    "LOCAL_HOSTS",
    "PYCACHE",
    "child_env",
    "spawn",
    "run",
    "closed_port",
]

LLMREPL = str(Path(sys.executable).with_name("llmrepl"))  # the installed command, beside the venv's python
PROMPT = "llm>"
DIMENSIONS = (40, 120)  # rows, columns of the pseudo-terminal (and of the benchmarks' COLUMNS/LINES)
PROXIES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
LOCAL_HOSTS = "127.0.0.1,localhost"  # NO_PROXY: the fake server is always reached directly
# Byte-code as a real install has it: this machine sets PYTHONDONTWRITEBYTECODE=1, so an
# editable checkout would recompile every llmrepl module on every start. A private cache
# prefix keeps the .pyc files out of the repository (warm after the first run).
PYCACHE = os.path.join(tempfile.gettempdir(), "llmrepl-bench-pycache")

_DEAD_PROXY = "http://127.0.0.1:9"  # the discard port: a request through a proxy fails at once
# What a person's own setup may hold that would change what a sealed child does or costs.
_PERSONAL = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "LLMREPL_MODEL", "LLMREPL_CONFIG", "NO_COLOR",
             "PYTHONSTARTUP", "PYTHONPROFILEIMPORTTIME", "PYTHONDONTWRITEBYTECODE")


def child_env(*, tty: bool = False, home: str | Path | None = None, **extra: str) -> dict[str, str]:
    """The environment of a child llmrepl: this process's, then ``home``, ``tty``, ``extra``.

    The tests give no ``home``: conftest's ``clean_env`` fixture has already cleaned
    ``os.environ`` (no keys, no proxies, ``LLMREPL_HOME`` in the test's own folder) and the
    child inherits that. ``tty``: what a child in a pty needs, TERM=xterm and
    PROMPT_TOOLKIT_NO_CPR=1 (prompt_toolkit would otherwise wait for a cursor-position report
    nobody sends). ``home``: seal the child off from this machine, as the benchmarks measure
    it: HOME and every state, config and IPython folder under ``home``; the person's key,
    model, config, colour and Python start-up settings dropped; every proxy pointed at a dead
    port; a ``DIMENSIONS`` terminal even without a pty; byte-code cached under ``PYCACHE``.
    """
    env = dict(os.environ)
    if home is not None:
        for name in _PERSONAL:
            env.pop(name, None)
        env["PYTHONPYCACHEPREFIX"] = PYCACHE
        env.update(dict.fromkeys(PROXIES, _DEAD_PROXY))
        env["NO_PROXY"] = env["no_proxy"] = LOCAL_HOSTS
        base = Path(home)
        env.update(
            HOME=str(home),
            LLMREPL_HOME=str(base / "llmrepl"),
            XDG_CONFIG_HOME=str(base / ".config"),
            XDG_DATA_HOME=str(base / ".local" / "share"),
            IPYTHONDIR=str(base / ".ipython"),
            LINES=str(DIMENSIONS[0]),
            COLUMNS=str(DIMENSIONS[1]),
        )
    if tty:
        env.update(TERM="xterm", PROMPT_TOOLKIT_NO_CPR="1")
    env.update(extra)
    return env


def spawn(args: Sequence[str] = (), *, command: Sequence[str] = (LLMREPL,),
          env: dict[str, str] | None = None, encoding: str | None = "utf-8", timeout: float = 20,
          dimensions: tuple[int, int] = DIMENSIONS, **options: Any) -> pexpect.spawn:
    """Start ``command`` + ``args`` in a fresh pseudo-terminal of ``dimensions`` (rows, columns).

    ``env`` defaults to ``child_env(tty=True)``. ``encoding=None`` gives a bytes child (the
    benchmarks match bytes); ``options`` go to ``pexpect.spawn`` (``cwd``, ``codec_errors``).
    """
    import pexpect

    argv = [*command, *args]
    return pexpect.spawn(argv[0], argv[1:], env=child_env(tty=True) if env is None else env,
                         encoding=encoding, timeout=timeout, dimensions=dimensions, **options)


def run(args: Sequence[str] = (), *, input: str = "", timeout: float = 60,
        command: Sequence[str] = (LLMREPL,), **extra_env: str) -> subprocess.CompletedProcess[str]:
    """Batch mode: ``command`` + ``args`` with ``input`` on stdin (a pipe, never the terminal),
    stdout and stderr captured as text, in ``child_env(**extra_env)``."""
    import subprocess

    return subprocess.run([*command, *args], input=input, capture_output=True, text=True,
                          timeout=timeout, env=child_env(**extra_env))


def closed_port() -> int:
    """A local TCP port where nothing listens (connections are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
