"""``--resume``: continue a stored session — the conversation exactly, then the namespace.

The namespace comes back from the newest snapshot (``repl.snapshots``) or by re-running the
session's cells after one confirmation. Every cell that would run is shown first (as the
gate shows a cell: highlighted, sanitized, never cut without saying so) and the question
gets the whole listing, so a front end can page through it. What re-runs is the replay plan
(``store.replay``): each cell's statements that completed, never the one that failed or
those after a Ctrl-C; a cell holding characters that show unlike what Python reads is not
re-run, as the gate refuses one. The plan, in words, comes before the question, with the
later cells that use a name only a skipped part made. Either way the model is told what
was restored and what was not, so it never refers to variables that are not there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from llmrepl.context.budget import NOTE_PREFIX
from llmrepl.engine.protocols import Display
from llmrepl.engine.session import Session
from llmrepl.execution.result import ExecResult
from llmrepl.store.replay import PlannedCell, ReplayPlan, highest_cell, plan_replay
from llmrepl.store.transcript import StoredSession

__all__ = ["resume", "replayable_cells"]


def replayable_cells(stored: StoredSession) -> list[tuple[int, str]]:
    """What a replay runs, in order: each cell that ran to the end, and what completed of one
    that failed, was interrupted or hit the time limit (``store.replay.plan_replay``)."""
    return plan_replay(stored.cells).to_run()


def resume(session: Session, stored: StoredSession, display: Display, *,
           confirm: Callable[[str, str], bool]) -> None:
    """Rebuild ``session`` from ``stored``; ``confirm(question, listing)`` asks before re-running
    cells, once they have been shown; ``listing`` is all of their code, for a pager."""
    info = stored.info
    session.restore_conversation(stored.messages, stored.exchanges,  # cells: so /undo can replay them
                                 cells=stored.cells, exchange_cells=stored.exchange_cells)
    where = f"cell {info.crashed_in_cell}" if info.crashed_in_cell is not None else "this call"
    session.close_open_tool_calls(
        f"Not finished: the llmrepl process ended while {where} was running; its effects are lost.")
    session.journal.append("resume", messages=len(stored.messages), cells=len(stored.cells))
    started = info.started.strftime("%Y-%m-%d %H:%M") if info.started else "unknown time"
    display.notice(f"resumed session {info.id} from {started}: {len(stored.messages)} messages, "
                   f"{len(stored.cells)} cells")
    _show_tail(stored.messages, display)
    warning = info.skipped_warning()  # which lines of which file, and why (torn, garbled, impossible)
    if warning:
        display.notice(warning, "warning")
    if info.crashed_in_cell is not None:
        display.notice(
            f"the previous run ended while cell {info.crashed_in_cell} was running (os._exit, a crash, or a kill): "
            "the conversation is back, that cell's effects are not, and it will not be re-run",
            "warning",
        )
        crash_log = info.path.with_suffix("") / "crash.log"
        if crash_log.is_file() and crash_log.stat().st_size:
            display.notice(f"the stacks at the moment it died are in {crash_log}", "warning")
        session.note(f"The previous llmrepl process ended while cell {info.crashed_in_cell} was running "
                     "(it was killed or crashed): that cell did not finish, its effects are lost, and it was not re-run.")
    # numbers never repeat: the next new cell comes after every cell the journal names
    session.executor.cell_count = max(session.executor.cell_count, highest_cell(stored.records))

    if _from_snapshot(session, display, newest=max((c.cell for c in stored.cells if c.completed), default=0)):
        return
    plan = plan_replay(stored.cells)
    cells = plan.to_run()
    planned = {p.cell: p for p in plan.cells}
    for n, code in cells:  # what will run, before the question (--yes: shown, then run)
        part = "" if planned[n].action == "run" else " (only the statements that completed)"
        display.tool_code(code, label=f"llmrepl: cell {n}, to re-run{part}")
    for line in plan.describe():  # the plan in words, just above the question
        display.notice(line, "info" if line.endswith("will be re-run") else "warning")
    if not cells:
        if stored.cells:
            session.note("This session was resumed in a new llmrepl process; none of its cells could be re-run, "
                         f"so the namespace is empty{_not_rerun(plan.skipped)}. Recreate what you need.")
        return
    listing = "\n".join(f"# --- cell {n} ---\n{code.rstrip(chr(10))}" for n, code in cells)
    if not confirm(f"Re-run the {len(cells)} cell(s) above to rebuild the namespace? [Y/n] ", listing):
        display.notice("namespace not restored: variables from the earlier session do not exist now", "warning")
        session.note("This session was resumed in a new llmrepl process and the namespace was NOT restored: "
                     "variables, imports and functions from earlier cells do not exist now. Recreate what you need.")
        session.cell_log = []  # not in the namespace: an /undo must not re-run what the user declined
        return
    results = session.replay(cells)
    if results and len(results) < len(cells):  # Ctrl-C ended the replay: the cells after it did not run
        session.cell_log = [c for c in session.cell_log if c.cell <= results[-1].cell]
    _report(session, display, plan, len(cells), results)


def _not_rerun(skipped: list[PlannedCell]) -> str:
    """`` (not re-run: cell 4, failed at its first statement (KeyError); ...)``."""
    parts = [f"cell {p.cell}, {p.reason}" for p in skipped[:12]]
    more = f"; and {len(skipped) - 12} more" if len(skipped) > 12 else ""
    return f" (not re-run: {'; '.join(parts)}{more})" if parts else ""


def _report(session: Session, display: Display, plan: ReplayPlan, planned: int, results: list[ExecResult]) -> None:
    """After the replay: what happened, on the screen and in a note to the model."""
    ran = {r.cell for r in results}
    partly = [p for p in plan.partial if p.cell in ran]
    failed = [r for r in results if r.error]
    stopped = results[-1].cell if len(results) < planned and results else None  # Ctrl-C ended the replay
    head = f"re-ran {len(results)} cells" + (f" ({len(partly)} of them up to where they stopped)" if partly else "")
    if plan.skipped:
        head += f"; {len(plan.skipped)} not re-run"
    note = f"This session was resumed in a new llmrepl process. The namespace was rebuilt by re-running {len(results)} earlier cells"
    detail = ", ".join(f"cell {r.cell} ({r.error_type})" for r in failed[:6])
    if stopped is not None:
        display.notice(f"{head}; you interrupted the replay at cell {stopped}: the {planned - len(results)} "
                       "cells after it were not re-run", "warning")
        note += (f", but the replay was interrupted at cell {stopped}: the cells after it were not re-run and "
                 "what they made does not exist now.")
    elif failed:
        display.notice(f"{head}; {len(failed)} failed now: {detail}", "warning")
        note += f", but {len(failed)} failed this time: {detail}. Variables those cells would have made may be missing."
    else:
        display.notice(f"{head}; the namespace is rebuilt")
        note += ": what they made exists again."
    for p in partly:
        note += f" Cell {p.cell} was re-run only up to where it stopped the first time ({p.reason})."
    if plan.skipped:
        note += " Not re-run, so what they made does not exist now: " + "; ".join(
            f"cell {p.cell} ({p.reason})" for p in plan.skipped[:12]) + ("; ..." if len(plan.skipped) > 12 else "") + "."
    if plan.missing:
        names = sorted({(name, src) for _, name, src in plan.missing})
        note += (" These names were made only by code that was not re-run, so they do not exist now though a "
                 "later cell used them: " + ", ".join(f"{name} (cell {src})" for name, src in names[:12]) + ".")
    session.note(note)


def _from_snapshot(session: Session, display: Display, *, newest: int = 0) -> bool:
    """Restore the newest snapshot, unless a cell after it ran (snapshots had been turned off
    by a write error): then False, and the cells are replayed instead."""
    store = session.snapshots
    if store is None:
        return False
    keys = [k for k in store.keys() if k.startswith("cell-")]
    if not keys:
        return False
    key = max(keys, key=lambda k: int(k[5:]))
    if int(key[5:]) < newest:
        display.notice(f"the newest snapshot is from after cell {int(key[5:])}, but cell {newest} ran later: "
                       "re-running cells instead", "warning")
        return False
    report = store.restore(key, session.executor.namespace)
    if report.error is not None:
        display.notice(f"could not restore the snapshot: {report.error}; re-running cells instead", "warning")
        return False
    report.label = f"after cell {int(key[5:])}"
    display.notice(report.summary(), "info" if report.complete else "warning")
    missing = sorted(set(report.kept_unrestorable) | set(report.failed))
    session.note(
        "This session was resumed in a new llmrepl process and the namespace was restored from a snapshot"
        + (f", except: {', '.join(missing)} (could not be saved; they do not exist now)." if missing else ".")
    )
    return True


def _show_tail(messages: list[dict[str, Any]], display: Display, count: int = 4) -> None:
    shown = [m for m in messages if m.get("role") in ("user", "assistant") and m.get("content")][-count:]
    for m in shown:
        text = " ".join(str(m["content"]).split())
        who = "you" if m["role"] == "user" else "model"
        if text.startswith(NOTE_PREFIX):
            continue
        display.notice(f"  {who}: {text[:110]}{'…' if len(text) > 110 else ''}")
