"""Completion at the ``llm>`` prompt of the installed command, in a real pty: Tab and
as-you-type suggestions from the live namespace, read off the screen a terminal emulator
(pyte) draws. Nothing here reaches the model."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import launch
import pexpect
import pyte
import pytest

ROWS, COLS = launch.DIMENSIONS
TAB, CTRL_U = "\t", "\x15"


class Screen:
    """What the terminal shows: every byte the child writes, fed to pyte."""

    def __init__(self) -> None:
        self.screen = pyte.Screen(COLS, ROWS)
        self.stream = pyte.Stream(self.screen)

    def write(self, data: str) -> None:
        self.stream.feed(data)

    def flush(self) -> None:
        pass

    def lines(self) -> list[str]:
        return [line.rstrip() for line in self.screen.display]

    def after(self, marker: str) -> list[str]:
        """The lines from the last one holding ``marker`` down (the input line and its menu)."""
        lines = self.lines()
        found = [i for i, line in enumerate(lines) if marker in line]
        return lines[found[-1]:] if found else []


def wait_for(child: pexpect.spawn, screen: Screen, ready: Callable[[], bool], what: str,
             timeout: float = 60) -> None:
    """Read the child's output until ``ready()`` holds for the screen (never a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise AssertionError(f"never shown: {what}\n" + "\n".join(screen.lines()))
        try:
            child.read_nonblocking(65536, timeout=0.2)
        except pexpect.TIMEOUT:
            pass


@pytest.fixture
def repl(pty_llmrepl):
    def start() -> tuple[pexpect.spawn, Screen]:
        screen = Screen()
        return pty_llmrepl(logfile=screen), screen

    return start


def run_py(child: pexpect.spawn, screen: Screen, code: str) -> None:
    """``/py code`` and wait until it has printed ``done 42`` (written as 6 * 7: the echo of
    the line itself never matches)."""
    child.send(f"/py {code}; print('done', 6 * 7)\r")
    wait_for(child, screen, lambda: prompt_after(screen, "done 42"), "the cell's output, then the prompt")


def prompt_after(screen: Screen, output: str) -> bool:
    """A line starting with ``output``, and an empty prompt below it."""
    lines = screen.lines()
    found = [i for i, line in enumerate(lines) if line.startswith(output)]
    return bool(found) and any(re.fullmatch(r"\s*(llm|py)>", line) for line in lines[found[-1]:])


def complete_help(child: pexpect.spawn, screen: Screen) -> None:
    """Type ``/hel``: the menu offers ``/help`` as you type; Tab takes it."""
    child.send("/hel")
    wait_for(child, screen, lambda: any("/help" in line for line in screen.after("> /hel")[1:]), "/help in the menu")
    child.send(TAB)
    wait_for(child, screen, lambda: screen.after("> /hel")[0].endswith("> /help"), "/help completed")


def test_tab_completes_an_attribute_of_a_dataframe_defined_at_the_prompt(repl, server):
    child, screen = repl()
    run_py(child, screen, "import pandas as pd; sales = pd.DataFrame({'revenue': [1, 2], 'region': ['n', 's']})")
    child.send("sales.des")
    done = lambda: any(line.endswith("> sales.describe") for line in screen.lines())  # noqa: E731
    for _ in range(5):  # a cold jedi on a loaded machine may miss the cap once: Tab again, as a person would
        child.send(TAB)
        try:
            wait_for(child, screen, done, "sales.describe in the input line", timeout=10)
            break
        except AssertionError:
            continue
    wait_for(child, screen, done, "sales.describe in the input line")
    assert server.requests == []


def test_df_bracket_shows_the_columns(repl, server):
    child, screen = repl()
    run_py(child, screen, "import pandas as pd; sales = pd.DataFrame({'revenue': [1, 2], 'region': ['n', 's']})")
    child.send('sales["')

    def menu() -> bool:
        below = screen.after('> sales["')
        return any("revenue" in line for line in below[1:]) and any("region" in line for line in below[1:])

    wait_for(child, screen, menu, "the columns in the completion menu (as you type)")
    child.send(TAB)  # Tab chooses the first: the input line reads sales["revenue"]
    wait_for(child, screen, lambda: screen.after('> sales["')[0].endswith('> sales["revenue"]'),
             'sales["revenue"] in the input line')
    assert server.requests == []


def test_names_as_you_type_and_slash_commands(repl, server):
    child, screen = repl()
    run_py(child, screen, "monthly_revenue = {'north': 1}")
    child.send("x = monthly_r")  # no Tab: the menu appears as you type
    wait_for(child, screen, lambda: any("monthly_revenue" in line for line in screen.after("> x = monthly_r")[1:]),
             "monthly_revenue in the menu")
    child.send(CTRL_U)
    complete_help(child, screen)
    assert server.requests == []


def test_an_object_that_hangs_completion_leaves_the_prompt_responsive(repl, server):
    child, screen = repl()
    # jedi calls __dir__ to list attributes: this one never returns
    run_py(child, screen, "import time; Hang = type('Hang', (), {'__dir__': lambda self: time.sleep(3600) or []}); "
                          "h = Hang()")
    child.send("h.")
    child.send(TAB)
    child.send(CTRL_U + "/py print('still', 6 * 7)\r")
    wait_for(child, screen, lambda: prompt_after(screen, "still 42"), "the next command's output, then the prompt")
    complete_help(child, screen)  # and completion itself still works
