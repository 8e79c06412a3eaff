"""How the engine asks and shows: the ``Reviewer`` and ``Display`` protocols and simple ones.

The terminal implements both (``gate.TerminalReviewer``, ``display.TerminalDisplay``);
these are the headless ones: run everything, run nothing, answer from a script, show nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from llmrepl.execution.executor import ExecResult
    from llmrepl.model.client import Completion

__all__ = ["Decision", "Reviewer", "AutoApprove", "NoRun", "ScriptedReviewer", "Display", "NullDisplay"]


@dataclass
class Decision:
    """What the person chose for a proposed cell."""

    action: str  # "run" | "decline" | "always" (run, and run later cells without asking)
    code: str = ""
    edited: bool = False
    reason: str = ""  # why it was declined, when not by a person ("--yes not given", "interrupted")


class Reviewer(Protocol):
    """Asks the person before a cell runs.

    ``high_risk``: the risk scan gave the cell a high-risk label. A front end that asks must
    then take only an explicit yes (``y``): never a bare Enter, never "always"."""

    def review(self, code: str, *, cell: int, high_risk: bool = False) -> Decision: ...


class AutoApprove:
    """Runs every cell (``--yes``: consent given in advance, high-risk cells included)."""

    def review(self, code: str, *, cell: int, high_risk: bool = False) -> Decision:
        return Decision("run", code)


class NoRun:
    """Batch and one-shot without ``--yes``: show the code, never run it."""

    def review(self, code: str, *, cell: int, high_risk: bool = False) -> Decision:
        return Decision("decline", code, reason="not run: pass --yes to run generated code")


class ScriptedReviewer:
    """Test fake: answers from a list ("run", "decline", "always", or ("edit", code))."""

    def __init__(self, answers: list[Any]) -> None:
        self.answers = list(answers)
        self.seen: list[str] = []
        self.high_risk: list[bool] = []  # what each review was told

    def review(self, code: str, *, cell: int, high_risk: bool = False) -> Decision:
        self.seen.append(code)
        self.high_risk.append(high_risk)
        answer = self.answers.pop(0)
        if isinstance(answer, tuple):
            return Decision("run", answer[1], edited=answer[1] != code)
        return Decision(answer, code)


class Display(Protocol):
    """Everything the engine shows, as events; the terminal UI is one implementation."""

    def answer_start(self) -> None: ...
    def answer_text(self, delta: str) -> None: ...
    def answer_end(self, completion: Completion) -> None: ...
    def tool_code(self, code: str, label: str = "run_python") -> None: ...
    def cell_output(self, stream: str, text: str) -> None: ...
    def cell_result(self, result: ExecResult) -> None: ...
    def notice(self, text: str, level: str = "info") -> None: ...
    def busy(self, label: str | None, *, delay: float = 0.0) -> None:
        """llmrepl is waiting (for the model: "waiting for gpt-4o"; a cell: "running cell 4",
        shown after ``delay`` seconds of silence); None: the wait is over."""


class NullDisplay:
    """Shows nothing; records notices (for tests and headless use)."""

    def __init__(self) -> None:
        self.notices: list[str] = []
        self.text: list[str] = []

    def answer_start(self) -> None:
        pass

    def answer_text(self, delta: str) -> None:
        self.text.append(delta)

    def answer_end(self, completion: Completion) -> None:
        pass

    def tool_code(self, code: str, label: str = "run_python") -> None:
        pass

    def cell_output(self, stream: str, text: str) -> None:
        pass

    def cell_result(self, result: ExecResult) -> None:
        pass

    def notice(self, text: str, level: str = "info") -> None:
        self.notices.append(text)

    def busy(self, label: str | None, *, delay: float = 0.0) -> None:
        pass
