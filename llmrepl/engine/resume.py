"""``--resume``: continue a stored session — the conversation exactly, then the namespace.

The namespace comes back from the newest snapshot (``repl.snapshots``) or by re-running the
session's cells after one confirmation. Every cell that would run is shown first (as the
gate shows a cell: highlighted, sanitized, never cut without saying so) and the question
gets the whole listing, so a front end can page through it; a cell holding characters that
show unlike what Python reads is not re-run, as the gate refuses one. Either way the model
is told what was restored, so it never refers to variables that are not there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from llmrepl.context.budget import NOTE_PREFIX
from llmrepl.engine.protocols import Display
from llmrepl.engine.session import Session
from llmrepl.execution.risk import describe_hidden, hidden_characters
from llmrepl.store.transcript import StoredSession

__all__ = ["resume", "replayable_cells"]


def replayable_cells(stored: StoredSession) -> list[tuple[int, str]]:
    """Cells to re-run, in order: those that finished, without a SyntaxError, timeout or Ctrl-C
    (a cell that was still running when the process died is never re-run)."""
    return [
        (c.cell, c.code)
        for c in stored.cells
        if c.completed and not c.interrupted and not c.timed_out and c.error_type != "SyntaxError"
    ]


def resume(session: Session, stored: StoredSession, display: Display, *,
           confirm: Callable[[str, str], bool]) -> None:
    """Rebuild ``session`` from ``stored``; ``confirm(question, listing)`` asks before re-running
    cells, once they have been shown; ``listing`` is all of their code, for a pager."""
    info = stored.info
    session.restore_conversation(stored.messages, stored.exchanges)
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
    session.executor.cell_count = max((c.cell for c in stored.cells), default=0)

    if _from_snapshot(session, display):
        return
    cells = _without_hidden(replayable_cells(stored), session, display)
    if not cells:
        if stored.cells:
            session.note("This session was resumed in a new llmrepl process; none of its cells could be re-run, "
                         "so the namespace is empty. Recreate what you need.")
        return
    for n, code in cells:  # what will run, before the question (--yes: shown, then run)
        display.tool_code(code, label=f"llmrepl: cell {n}, to re-run")
    listing = "\n".join(f"# --- cell {n} ---\n{code.rstrip(chr(10))}" for n, code in cells)
    if not confirm(f"Re-run the {len(cells)} cell(s) above to rebuild the namespace? [Y/n] ", listing):
        display.notice("namespace not restored: variables from the earlier session do not exist now", "warning")
        session.note("This session was resumed in a new llmrepl process and the namespace was NOT restored: "
                     "variables, imports and functions from earlier cells do not exist now. Recreate what you need.")
        return
    results = session.replay(cells)
    failed = [r for r in results if r.error]
    if failed:
        detail = ", ".join(f"cell {r.cell} ({r.error_type})" for r in failed[:6])
        display.notice(f"re-ran {len(results)} cells; {len(failed)} failed now: {detail}", "warning")
        session.note(f"This session was resumed in a new llmrepl process. The namespace was rebuilt by re-running "
                     f"{len(results)} earlier cells, but {len(failed)} failed this time: {detail}. "
                     "Variables those cells would have made may be missing.")
    else:
        display.notice(f"re-ran {len(results)} cells; the namespace is rebuilt")
        session.note(f"This session was resumed in a new llmrepl process. The namespace was rebuilt by re-running "
                     f"all {len(results)} earlier cells: the variables exist again.")


def _without_hidden(cells: list[tuple[int, str]], session: Session, display: Display) -> list[tuple[int, str]]:
    """Leave out cells whose code shows unlike what Python reads (``\\r``, bidi overrides, ...):
    the gate refuses such code, so re-running it unseen is refused too, with the reason."""
    kept: list[tuple[int, str]] = []
    for n, code in cells:
        found = hidden_characters(code)
        if not found:
            kept.append((n, code))
            continue
        reason = f"it holds characters that show unlike what Python reads ({describe_hidden(found)})"
        display.notice(f"cell {n} will not be re-run: {reason}", "warning")
        session.note(f"Cell {n} of the resumed session was not re-run: {reason}. What it made does not exist now.")
    return kept


def _from_snapshot(session: Session, display: Display) -> bool:
    store = session.snapshots
    if store is None:
        return False
    keys = [k for k in store.keys() if k.startswith("cell-")]
    if not keys:
        return False
    key = max(keys, key=lambda k: int(k[5:]))
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
