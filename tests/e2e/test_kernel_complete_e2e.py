"""Tab with ``llmrepl --kernel`` in a real pty: the kernel's namespace completes at the
``llm>`` prompt, read off the screen a terminal emulator (pyte) draws. Waits are on output."""

from __future__ import annotations

import re

import pexpect
import pytest

from e2e.test_completion_pty import CTRL_U, TAB, Screen, run_py, wait_for

pytest.importorskip("ipykernel")
pytest.importorskip("jupyter_client")


def test_tab_completes_a_name_defined_in_the_kernel(pty_llmrepl):
    screen = Screen()
    child = pty_llmrepl("--kernel", logfile=screen, timeout=90)
    wait_for(child, screen, lambda: any("ready in " in line for line in screen.lines()), "the kernel ready")
    run_py(child, screen, "import os; sales_total = os.getpid()")  # a name only the kernel has

    def input_line() -> str:
        """The last prompt line (`` py> `` once the line would run as Python)."""
        prompts = [line for line in screen.lines() if re.match(r"\s*(llm|py)>( |$)", line)]
        return prompts[-1] if prompts else ""

    def shown() -> bool:
        return re.fullmatch(r"\s*(llm|py)> sales_total", input_line()) is not None

    child.send("sales_t")
    wait_for(child, screen, lambda: re.fullmatch(r"\s*(llm|py)> sales_t", input_line()) is not None,
             "what was typed")
    for _ in range(3):  # a cold kernel on a loaded machine may take longer than one Tab waits
        child.send(TAB)
        try:
            wait_for(child, screen, shown, "sales_total completed on the input line", timeout=20)
            break
        except AssertionError:
            continue
    assert shown(), "\n".join(screen.lines())
    child.send(CTRL_U)  # an empty line: Ctrl-D ends llmrepl, which ends its kernel
    child.sendeof()
    child.expect(pexpect.EOF)
    child.wait()
    assert child.exitstatus == 0
