"""When the Jupyter kernel dies (``--kernel``): say so, offer a restart, replay the session.

A cell that segfaults, calls ``os._exit``, runs out of memory, or a kill from outside ends
only the kernel: llmrepl, the conversation and the journal go on. ``after_kernel_death``
(called by ``Session.run_cell``) tells the person what happened and offers a fresh kernel
into which the session's cells are replayed (``store.replay.plan_replay``: what each cell
completed; the cell that killed the kernel is never re-run). ``/restart`` does the same on
request. With the in-process executor none of this applies.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from llmrepl.engine.turn import _busy

if TYPE_CHECKING:
    from llmrepl.engine.session import Session
    from llmrepl.execution.executor import ExecResult

__all__ = ["after_kernel_death", "restart_and_replay"]


def restart_and_replay(session: Session, *, upto: int | None = None) -> str:
    """A fresh kernel, then the session's cells (before ``upto``) replayed quietly; returns
    what was done, in words. Raises ``KernelUnavailable`` when the kernel cannot restart."""
    from llmrepl.engine.rewind import as_records
    from llmrepl.store.replay import plan_replay

    ex: Any = session.executor
    _busy(session.display, "restarting the kernel", 0.0)
    try:
        ex.restart()
    finally:
        _busy(session.display, None)
    plan = plan_replay(as_records(list(session.cell_log)), upto=upto)
    to_run = plan.to_run()
    if not to_run:
        return "the kernel was restarted; no earlier cell to re-run, the namespace is empty"
    count = ex.cell_count
    sink, ex.sink = ex.sink, None  # their output was shown when they first ran
    start = time.perf_counter()
    _busy(session.display, f"re-running {len(to_run)} cell(s) in the new kernel", 0.5)
    try:
        results = session.replay(to_run)
    finally:
        ex.sink = sink
        ex.cell_count = max(count, ex.cell_count)  # numbers never repeat
        _busy(session.display, None)
    seconds = time.perf_counter() - start
    cells = ", ".join(str(n) for n, _ in to_run)
    text = f"the kernel was restarted and cell{'s' if len(to_run) > 1 else ''} {cells} re-run ({seconds:.1f} s)"
    skipped = [p for p in plan.cells if p.action == "skip"]
    if skipped:
        text += "; not re-run: " + ", ".join(f"cell {p.cell} ({p.reason})" for p in skipped[:6])
    failed = [r for r in results if r.error]
    if failed:
        text += ("; failed now: " + ", ".join(f"cell {r.cell} ({r.error_type})" for r in failed[:6])
                 + "; what they would have made may be missing")
    return text


def after_kernel_death(session: Session, result: ExecResult) -> None:
    """The kernel died in (or before) ``result``'s cell: say so and offer a restart that
    replays the earlier cells. The answer goes on the cell's record, for the model."""
    ex: Any = session.executor
    n = len([c for c in session.cell_log if c.cell < result.cell])
    session.display.notice(f"the kernel is down ({ex.death}); llmrepl, the conversation and the journal "
                           "are intact", "error")
    question = (f"Restart the kernel and re-run the {n} earlier cell(s) of this session? [y/N] " if n
                else "Restart the kernel? [y/N] ")
    if session.ask is not None:
        yes = session.ask(question)
    else:
        yes = session.auto_run  # batch: --yes consented to running the session's cells
    if not yes:
        session.display.notice("the kernel stays down: /restart starts a fresh one and re-runs this "
                               "session's cells", "warning")
        result.error = (result.error or "") + ("[llmrepl: the kernel was not restarted; no cell can run until "
                                               "the user types /restart]\n")
        return
    try:
        text = restart_and_replay(session, upto=result.cell)
    except Exception as exc:  # KernelUnavailable, or a library error: said, never a traceback
        session.display.notice(f"the kernel could not restart: {exc}", "error")
        result.error = (result.error or "") + f"[llmrepl: the kernel could not restart: {exc}]\n"
        return
    session.display.notice(text)
    result.error = (result.error or "") + f"[llmrepl: {text}; cell {result.cell} was not re-run]\n"
