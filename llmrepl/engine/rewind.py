"""How ``/undo`` puts the namespace back to where it was before the undone exchange.

Three ways, cheapest first:

1. With ``repl.snapshots`` on, the snapshot saved after the last cell before the exchange
   is restored (values come back from disk; nothing re-runs).
2. A copy kept in memory at the start of the exchange (``keep_copy``), taken only when the
   namespace is small plain data — numbers, strings, and lists, tuples, sets and dicts of
   them, 5,000 elements at most, with modules, functions and classes kept by reference.
   Nothing re-runs, so nothing a cell did outside the namespace happens twice.
3. Otherwise — or when the snapshot is gone (pruned, or the exchange ran before a
   ``--resume``) — the namespace is rebuilt by re-running, into a fresh namespace, what the
   earlier cells completed (:func:`llmrepl.store.replay.plan_replay`: a failed cell up to
   the statement that failed, an interrupted one up to where Ctrl-C stopped it, a
   SyntaxError or a cell the process died in not at all). Those cells were shown and
   approved when they first ran; their output is not shown again, and figures are not
   written again.

Why no general copy of the namespace after every cell: it would cost time and memory in
proportion to the namespace on every cell (a 1 M-row DataFrame is tens of MB a copy), and
much of what a namespace holds cannot be copied faithfully (open files, threads, sockets,
generators, objects of C libraries). The per-cell cost of the replay is the small record of
what ran (``Session.cell_log``, under a microsecond); the plain-data copy is taken once per
exchange and gives up as soon as it meets anything else. Both are measured in
``benchmarks/bench_undo.py``.
"""

from __future__ import annotations

import time
import types
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from llmrepl.engine.turn import _busy
from llmrepl.execution.namespace import is_user_name

if TYPE_CHECKING:
    from llmrepl.engine.session import Session
    from llmrepl.execution.executor import ExecResult
    from llmrepl.store.replay import ReplayPlan
    from llmrepl.store.transcript import CellRecord

__all__ = ["Copy", "Ran", "Rewind", "as_records", "cell_ranges", "copy_of", "keep_copy", "record_of", "restore_copy", "rewind"]


@dataclass
class Rewind:
    """What the rewind did: ``how`` is "snapshot", "copy", "replay" or "" (nothing to rewind)."""

    how: str = ""
    ok: bool = True          # the namespace is as planned (a replayed cell that failed now: False)
    summary: str = ""


def rewind(session: Session, first: int, undone: list[CellRecord | Ran]) -> Rewind:
    """Put ``session``'s namespace back to how it was after cell ``first`` (before the
    ``undone`` cells ran): from the snapshot when there is one, else by replaying."""
    before = as_records([c for c in session.cell_log if c.cell <= first])
    fallback = ""
    if session.snapshots is not None:
        report = session.snapshots.restore(session._snapshot_key(first), session.executor.namespace)
        if report.error is None:
            report.label = f"before cell {undone[0].cell}"
            text = f"restored the snapshot taken before cell {undone[0].cell}"
            detail = report.summary().split(": ", 1)[-1] if not report.complete else ""
            return Rewind("snapshot", report.complete, text + (f" ({detail})" if detail else ""))
        fallback = f"the snapshot could not be used ({report.error}), so "
    kept = session.ns_copies.get(first)
    if kept is not None and kept.namespace is session.executor.namespace:
        restore_copy(kept, session.executor.namespace)
        session.context.observe(session.executor.namespace)
        return Rewind("copy", True, f"restored the copy of the namespace kept before cell {undone[0].cell} "
                                    "(nothing re-ran)")
    result = _replay(session, before, undone[0].cell)
    if fallback:
        result.summary = fallback + result.summary
    return result


def _replay(session: Session, before: list[CellRecord], upto: int) -> Rewind:
    """A fresh namespace, then what the cells before ``upto`` completed, re-run quietly."""
    from llmrepl.store.replay import plan_replay

    plan = plan_replay(before, upto=upto)
    to_run = plan.to_run()
    ex = session.executor
    old = ex.namespace
    count = ex.cell_count
    outputs = old.get("_out")
    ex.reset()
    session.ns_copies.clear()  # they refer to the old namespace (its functions' globals)
    if isinstance(outputs, dict):  # _out[N] of the cells that still stand stays reachable
        ex.namespace["_out"] = {k: v for k, v in outputs.items() if isinstance(k, int) and k <= upto - 1}
    sink, ex.sink = ex.sink, None  # their output was shown when they first ran
    start = time.perf_counter()
    results: list[ExecResult] = []
    if to_run:
        _busy(session.display, f"rewinding: re-running {_count(len(to_run), 'cell')}", 0.5)
    cut = False
    try:
        results = session.replay(to_run) if to_run else []
    except KeyboardInterrupt:  # landed between cells: the undo itself still completes
        cut = True
    finally:
        ex.sink = sink
        ex.cell_count = max(count, ex.cell_count)  # numbers never repeat
        _busy(session.display, None)
    session.context.observe(ex.namespace)
    seconds = time.perf_counter() - start
    summary = _replay_summary(plan, results, seconds)
    if cut:
        summary += "; stopped by Ctrl-C: only part of what the earlier cells made is back"
    return Rewind("replay", not cut and not any(r.error for r in results), summary)


def _replay_summary(plan: ReplayPlan, results: list[ExecResult], seconds: float) -> str:
    ran = [p.cell for p in plan.cells if p.action in ("run", "partial")]
    if not plan.cells:
        return "the namespace is empty again (no cell ran before this exchange)"
    if not ran:
        text = "the namespace was rebuilt empty: none of the earlier cells can be re-run"
    else:
        took = f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"
        text = f"replayed {_cells(ran)} into a fresh namespace ({took})"
    parts = [text]
    partial = [p for p in plan.cells if p.action == "partial"]
    if partial:
        parts.append("partly: " + ", ".join(f"cell {p.cell} ({_reason(p.reason)})" for p in partial))
    skipped = [p for p in plan.cells if p.action == "skip"]
    if skipped:
        parts.append("not re-run: " + ", ".join(f"cell {p.cell} ({_reason(p.reason)})" for p in skipped[:6])
                     + (f" and {len(skipped) - 6} more" if len(skipped) > 6 else ""))
    stopped = next((r for r in results if r.interrupted), None)
    if stopped is not None:  # session.replay stops at a Ctrl-C
        parts.append(f"stopped by Ctrl-C in cell {stopped.cell}: the cells after it were not re-run")
    failed = [r for r in results if r.error and not r.interrupted]
    if failed:
        parts.append("failed now: " + ", ".join(f"cell {r.cell} ({r.error_type or 'error'})" for r in failed[:6])
                     + (f" and {len(failed) - 6} more" if len(failed) > 6 else "")
                     + "; what they would have made may be missing")
    if plan.missing:
        names = sorted({(name, cell) for _, name, cell in plan.missing})
        parts.append("may be missing: " + ", ".join(f"{name} (only cell {cell} made it)" for name, cell in names[:6]))
    return "; ".join(parts)


def _reason(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= 80 else text[:79] + "…"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def cell_ranges(numbers: list[int]) -> str:
    """[1, 2, 3, 5] -> "1-3, 5"."""
    spans: list[list[int]] = []
    for n in sorted(set(numbers)):
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def _cells(numbers: list[int]) -> str:
    return ("cell " if len(numbers) == 1 else "cells ") + cell_ranges(numbers)


class Ran(NamedTuple):
    """What ``Session.cell_log`` keeps of a cell this process ran: enough for ``plan_replay``,
    and cheap to make (a tuple; the strings are the result's own, not copies)."""

    cell: int
    code: str
    error: str | None
    error_type: str | None
    interrupted: bool
    timed_out: bool
    done: int | None


def record_of(result: ExecResult, code: str) -> Ran:
    """The ``cell_log`` entry of a cell that just ran (paid on every cell: keep it a tuple)."""
    return Ran(result.cell, code, result.error, result.error_type, result.interrupted, result.timed_out,
               result.done)


def as_records(log: list[CellRecord | Ran]) -> list[CellRecord]:
    """``cell_log`` as ``plan_replay`` takes it (cells of an earlier run are CellRecords already)."""
    from llmrepl.store.transcript import CellRecord

    return [CellRecord(cell=c.cell, code=c.code, error=c.error, error_type=c.error_type, completed=True,
                       interrupted=c.interrupted, timed_out=c.timed_out, done=c.done) if isinstance(c, Ran) else c
            for c in log]


# -- the plain-data copy kept at the start of each exchange ------------------------------

_MAX_ITEMS = 5_000    # elements a copy may hold in all: beyond that, replay
_MAX_DEPTH = 20
_KEEP = 20            # copies kept: the newest exchanges'
_ATOMS = frozenset({int, float, complex, str, bytes, bool, type(None), range})
_CONTAINERS = frozenset({list, tuple, set, frozenset, dict})
_BY_REFERENCE = (types.ModuleType, types.FunctionType, types.BuiltinFunctionType, type)


class Copy(NamedTuple):
    """The user's names as they were: ``data`` deep-copied, ``refs`` by reference; valid
    only for the namespace it was taken from (its functions' globals)."""

    namespace: dict[str, Any]
    data: dict[str, Any]
    refs: dict[str, Any]


def keep_copy(session: Session) -> None:
    """At the start of an exchange: keep a copy of the namespace if it is small plain data
    (and no snapshot store does the job), keyed by the cell count it mirrors."""
    if session.snapshots is not None or not session.executor.in_process:
        return  # a kernel's namespace is stand-ins for values in another process: replay rewinds it
    first = session.executor.cell_count
    copies = session.ns_copies
    ns = session.executor.namespace
    for key in [k for k, c in copies.items() if c.namespace is not ns or k > first]:
        del copies[key]  # another namespace (/reset), or cells since undone
    if first in copies:
        return  # no cell ran since: still true
    made = copy_of(ns)
    if made is not None:
        copies[first] = made
        while len(copies) > _KEEP:
            del copies[min(copies)]


def copy_of(ns: dict[str, Any]) -> Copy | None:
    """A ``Copy`` of ``ns``'s user names, or None when any value is not plain data, or too big."""
    data: dict[str, Any] = {}
    refs: dict[str, Any] = {}
    budget = [_MAX_ITEMS]
    memo: dict[int, Any] = {}
    try:
        for name, value in ns.items():
            if not is_user_name(name, value):
                continue
            if isinstance(value, _BY_REFERENCE):
                refs[name] = value
            else:
                data[name] = _clone(value, budget, 0, memo)
    except _NotPlain:
        return None
    return Copy(ns, data, refs)


def restore_copy(kept: Copy, ns: dict[str, Any]) -> None:
    """Make ``ns``'s user names those of ``kept`` (a fresh copy of it: it stays usable)."""
    memo: dict[int, Any] = {}  # one memo for all names: two names for one list stay one list
    budget = [_MAX_ITEMS]
    fresh = {name: _clone(value, budget, 0, memo) for name, value in kept.data.items()}
    for name in [n for n, v in ns.items() if is_user_name(n, v)]:
        del ns[name]
    ns.update(fresh)
    ns.update(kept.refs)


class _NotPlain(Exception):
    pass


def _clone(value: Any, budget: list[int], depth: int, memo: dict[int, Any]) -> Any:
    """A deep copy of plain data (atoms are immutable: shared), or ``_NotPlain``; two names
    for one list stay one list (``memo``)."""
    kind = type(value)
    budget[0] -= 1
    if kind in _ATOMS:
        return value
    if kind not in _CONTAINERS or budget[0] < 0 or depth > _MAX_DEPTH:
        raise _NotPlain
    done = memo.get(id(value))
    if done is not None:
        return done
    atoms = _ATOMS
    if kind is dict:
        if all(type(k) in atoms and type(v) in atoms for k, v in value.items()):
            budget[0] -= 2 * len(value)
            out: Any = dict(value)
        else:
            out = {_clone(k, budget, depth + 1, memo): _clone(v, budget, depth + 1, memo) for k, v in value.items()}
    elif all(type(v) in atoms for v in value):
        budget[0] -= len(value)
        out = kind(value) if kind is not tuple else value  # a tuple of atoms is immutable
    else:
        items = [_clone(v, budget, depth + 1, memo) for v in value]
        out = items if kind is list else kind(items)
    if budget[0] < 0:
        raise _NotPlain
    memo[id(value)] = out
    return out
