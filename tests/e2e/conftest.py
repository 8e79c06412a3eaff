"""The real ``llmrepl`` in a pseudo-terminal, for every end-to-end test that drives one."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import launch
import pexpect
import pytest
from launch import PROMPT


@pytest.fixture
def pty_llmrepl(server: Any) -> Iterator[Any]:
    """``start(*args, logfile=None, wait=True, **options)``: the real command in a fresh pty,
    pointed at the fake server, with ``args`` after ``--base-url`` and ``options`` for
    ``launch.spawn`` (``cwd``, ``timeout``, ``env``); ``logfile`` reads what it writes (a
    StringIO, a pyte screen); ``wait`` waits for the prompt. Every child ends with the test."""
    children: list[pexpect.spawn] = []

    def start(*args: str, logfile: Any = None, wait: bool = True, **options: Any) -> pexpect.spawn:
        child = launch.spawn(["--base-url", server.base_url, *args], **options)
        if logfile is not None:
            child.logfile_read = logfile
        children.append(child)
        if wait:
            child.expect_exact(PROMPT)
        return child

    yield start
    for child in children:
        child.terminate(force=True)
