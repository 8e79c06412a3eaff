"""What one cell produced: ``ExecResult``, the record every executor returns (in-process or a
kernel's), and ``CellTimeout``, raised inside a cell that ran past its time limit."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmrepl.execution.outputs import DisplayData

__all__ = ["CellTimeout", "ExecResult"]


class CellTimeout(BaseException):
    """Raised inside a cell that ran past its time limit (a BaseException: ``except Exception`` misses it)."""


@dataclass(slots=True)
class ExecResult:
    """Everything one ``Executor.run()`` produced."""

    cell: int
    source: str
    stdout: str = ""
    stderr: str = ""
    output: str = ""
    value_repr: str | None = None
    error: str | None = None
    error_type: str | None = None
    duration: float = 0.0
    interrupted: bool = False
    timed_out: bool = False
    exit_code: object = None
    figures: list[str] = field(default_factory=list)
    output_chars: int = 0
    repairs: list[str] = field(default_factory=list)
    displays: list[DisplayData] = field(default_factory=list)  # display items, in order, each with ``at``
    value_data: DisplayData | None = None  # the value's bundle; value_repr is its text
    done: int | None = None  # top-level statements that completed (None: not known)

    @property
    def ok(self) -> bool:
        return self.error is None
