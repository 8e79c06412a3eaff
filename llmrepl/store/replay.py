"""The replay plan: what of a stored session's cells would run again, and why not the rest.

A cell's effect on the namespace is the top-level statements that completed. A replay runs
exactly those: a cell that ran to the end in full; one that failed, was interrupted or hit
the time limit up to (never including) the statement where that happened; one with a
SyntaxError, one the process died in, one holding hidden characters, or one whose exchange
was undone, not at all. The plan also names the later cells that read a name only a skipped
or cut part bound (static analysis: ``statements.bound_and_used``). ``--resume`` shows and
runs it, ``/undo`` replays up to the undone exchange, and the exports write its code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llmrepl.execution.risk import describe_hidden, hidden_characters
from llmrepl.execution.statements import bound_and_used, completed_part, top_level
from llmrepl.store.transcript import CellRecord

__all__ = ["PlannedCell", "ReplayPlan", "highest_cell", "plan_replay"]

RUN, PARTIAL, SKIP = "run", "partial", "skip"


@dataclass
class PlannedCell:
    """One stored cell in the plan: ``code`` is what would run ("" when skipped)."""

    cell: int
    code: str
    action: str          # "run" | "partial" | "skip"
    reason: str          # "" for run; why partly or not at all, in words for the user
    record: CellRecord
    done: int = 0        # statements that would run
    total: int = 0       # top-level statements of the cell


@dataclass
class ReplayPlan:
    """The cells in order, each planned, and the names later cells would miss."""

    cells: list[PlannedCell] = field(default_factory=list)
    missing: list[tuple[int, str, int]] = field(default_factory=list)  # (later cell, name, skipped cell)

    def to_run(self) -> list[tuple[int, str]]:
        """(cell, code) of every cell that runs in full or in part, in order."""
        return [(p.cell, p.code) for p in self.cells if p.action != SKIP and p.code.strip()]

    @property
    def partial(self) -> list[PlannedCell]:
        return [p for p in self.cells if p.action == PARTIAL]

    @property
    def skipped(self) -> list[PlannedCell]:
        return [p for p in self.cells if p.action == SKIP]

    def describe(self) -> list[str]:
        """Plain lines for the user: which cells re-run, which partly and why, which are
        skipped and why, then which later cells read a name only a skipped part bound."""
        lines: list[str] = []
        full = [p.cell for p in self.cells if p.action == RUN]
        if full:
            lines.append(f"{_cells(full)} will be re-run")
        for p in self.cells:
            if p.action == PARTIAL:
                lines.append(f"cell {p.cell} will be re-run only up to where it stopped: {p.reason}")
            elif p.action == SKIP:
                lines.append(f"cell {p.cell} will not be re-run: {p.reason}")
        for later, name, source in self.missing:
            what = next((p for p in self.cells if p.cell == source), None)
            part = "the skipped part of" if what is not None and what.action == PARTIAL else "the skipped"
            lines.append(f"cell {later} uses `{name}`, which only {part} cell {source} bound")
        return lines


def _cells(numbers: list[int]) -> str:
    """``cells 1-3, 5, 7-9`` (or ``cell 4``)."""
    runs: list[list[int]] = []
    for n in numbers:
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    text = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)
    return f"cell{'s' if len(numbers) > 1 else ''} {text}"


def _failure(rec: CellRecord) -> tuple[str, str]:
    """What stopped a cell: ("failed", "KeyError"), ("interrupted", "Ctrl-C"), ..."""
    if rec.timed_out:
        return "stopped by the time limit", ""
    if rec.interrupted:
        return "interrupted", "Ctrl-C"
    if rec.error_type == "SystemExit":
        return "ended by exit()", ""
    return "failed", rec.error_type or "an error"


def _plan_cell(rec: CellRecord) -> PlannedCell:
    code = rec.code
    if rec.undone:
        return PlannedCell(rec.cell, "", SKIP, "its exchange was undone (/undo)", rec)
    if not rec.completed:
        return PlannedCell(rec.cell, "", SKIP, "the process died while it ran", rec)
    if not code.strip():
        return PlannedCell(rec.cell, "", SKIP, "its code is not in the journal", rec)
    found = hidden_characters(code)
    if found:
        return PlannedCell(rec.cell, "", SKIP, f"hidden characters ({describe_hidden(found)})", rec)
    if rec.error_type == "SyntaxError":
        return PlannedCell(rec.cell, "", SKIP, "SyntaxError", rec)
    total = len(top_level(code))
    if rec.error is None and not rec.interrupted and not rec.timed_out:
        return PlannedCell(rec.cell, code, RUN, "", rec, total, total)
    verb, why = _failure(rec)
    what = f"{verb} ({why})" if why else verb
    why = f" ({why})" if why else ""
    done = rec.done
    if done is None:
        return PlannedCell(rec.cell, "", SKIP, f"{what} at a statement that is not known", rec, 0, total)
    if done == 0:
        return PlannedCell(rec.cell, "", SKIP, f"{verb} at its first statement{why}", rec, 0, total)
    if done >= total:  # every statement had completed (what failed came after them)
        return PlannedCell(rec.cell, code, RUN, "", rec, total, total)
    return PlannedCell(rec.cell, completed_part(code, done), PARTIAL,
                       f"{what} after {done} of {total} statements", rec, done, total)


def plan_replay(cells: list[CellRecord], *, upto: int | None = None) -> ReplayPlan:
    """Plan the replay of ``cells`` (``StoredSession.cells``), those numbered below ``upto``
    only when it is given."""
    plan = ReplayPlan([_plan_cell(c) for c in cells if upto is None or c.cell < upto])
    available: set[str] = set()   # bound by code that will run
    lost: dict[str, int] = {}     # bound only by code that will not run -> that cell
    for p in plan.cells:
        if p.action != SKIP:
            bound, used = bound_and_used(p.code)
            plan.missing.extend((p.cell, name, lost[name]) for name in sorted(used) if name in lost)
            available |= bound
            for name in bound:
                lost.pop(name, None)
        if p.action != RUN:  # names only the part that will not run binds
            for name in bound_and_used(p.record.code)[0] - available:
                lost.setdefault(name, p.cell)
    return plan


def highest_cell(records: list[dict[str, Any]]) -> int:
    """The highest cell number any record of a journal names (replays, undone exchanges and
    cells before a /reset included): a resumed session numbers its next cell after it."""
    numbers = [rec.get("cell") for rec in records if rec.get("event") in ("cell_start", "cell_end", "decision")]
    return max((n for n in numbers if isinstance(n, int) and not isinstance(n, bool)), default=0)
