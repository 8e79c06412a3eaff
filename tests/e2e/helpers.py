"""Run the installed ``llmrepl`` command against the fake server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

LLMREPL = str(Path(sys.executable).with_name("llmrepl"))


def env(**extra: str) -> dict[str, str]:
    e = dict(os.environ)
    e.update(extra)
    return e


def run(args: list[str], *, input: str | None = None, timeout: float = 60, **extra_env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LLMREPL, *args], input=input if input is not None else "", capture_output=True, text=True,
        timeout=timeout, env=env(**extra_env),
    )
