"""What /undo's rewind costs (issue 14): per cell, and per /undo.

/undo rewinds from a snapshot (repl.snapshots on), from a copy kept at the start of the
exchange when the namespace is small plain data, or else by replaying, into a fresh namespace,
what the cells before the undone exchange completed (``llmrepl/engine/rewind.py``). The
per-cell cost of the replay is the small record of each cell kept in ``Session.cell_log``;
the copy is paid once per exchange. Measured in one process:

* per-cell overhead: R rounds of K cells of ``x = 1``, each way interleaved as in
  ``bench_executor.py``: ``Executor.run`` plus the record (``rewind.record_of``, appended to
  a list) against ``Executor.run`` alone and the bare floor ``exec`` + ``redirect_stdout``.
  Targets: the median ratio ≤ 3× bare, the executor's own target, with a small namespace;
  and the record itself (timed in a tight loop, best of 5) ≤ 5% of ``Executor.run`` of a
  trivial cell. The same with a 1 M-row pandas DataFrame in the namespace, for information
  (the record does not look at the namespace).
* one /undo by replay: a session of /py cells (the real ``Session``, a scripted model that
  is never called, no journal file), then ``Session.undo()`` of the last one, timed; a small
  namespace holding one value that is not plain data, and the cells that build a 1 M-row
  DataFrame (the replay rebuilds it).
* the plain-data copy: its cost at the start of an exchange (small namespace; with the
  DataFrame it gives up at once), and one /undo from it;
* for comparison, with ``repl.snapshots`` on: what a snapshot after each cell costs with
  the DataFrame in the namespace, and one /undo from the snapshot (informational).

    python benchmarks/bench_undo.py [--quick]
"""

from __future__ import annotations

import gc
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
from bench_executor import SRC, run_bare  # noqa: E402  the same bare reference
from bench_executor import run_executor as run_plain  # noqa: E402

from llmrepl.engine.protocols import NullDisplay  # noqa: E402
from llmrepl.engine.rewind import copy_of, record_of  # noqa: E402
from llmrepl.engine.session import Session  # noqa: E402
from llmrepl.execution.executor import Executor  # noqa: E402
from llmrepl.model.client import ScriptedModel  # noqa: E402

TARGET_RATIO = 3.0
RECORD_SHARE = 0.05  # the record may add at most this share to a trivial cell's Executor.run
FRAME_ROWS = 1_000_000
SMALL_CELLS = ["import math", "data = [i * i for i in range(1000)]", "total = sum(data)",
               "mean = total / len(data)", "label = f'mean {mean:.1f}'"]
# the same with one value that is not plain data: no copy is kept, so /undo replays
REPLAY_CELLS = ["import math\nfrom fractions import Fraction\nhalf = Fraction(1, 2)", *SMALL_CELLS[1:]]
FRAME_CELLS = ["import numpy as np\nimport pandas as pd",
               f"df = pd.DataFrame({{'a': np.arange({FRAME_ROWS}), 'b': np.linspace(0.0, 1.0, {FRAME_ROWS})}})",
               "df['c'] = df['a'] * 2", "total = int(df['c'].sum())", "label = f'total {total}'"]



def run_recorded(ex: Executor, log: list, k: int) -> float:
    run = ex.run
    t0 = time.perf_counter()
    for _ in range(k):
        log.append(record_of(run(SRC), SRC))
    elapsed = time.perf_counter() - t0
    log.clear()
    return elapsed


def per_cell(ex: Executor, rounds: int, k: int) -> tuple[list[float], list[float], list[float]]:
    """Per-cell times (recorded, Executor.run alone, bare), the order rotating every round,
    after one warm-up round."""
    rec: list[float] = []
    plain: list[float] = []
    bare: list[float] = []
    log: list = []
    ns: dict = {}
    for rnd in range(rounds + 1):
        order = [lambda: run_recorded(ex, log, k), lambda: run_plain(ex, k), lambda: run_bare(ns, k)]
        shift = rnd % 3
        results = {}
        for i in (list(range(3))[shift:] + list(range(3))[:shift]):
            results[i] = order[i]()
        if rnd:
            rec.append(results[0] / k)
            plain.append(results[1] / k)
            bare.append(results[2] / k)
    return rec, plain, bare


def session_with(cells: list[str], snapshots: Path | None = None) -> tuple[Session, list[float]]:
    """A session that ran ``cells`` with /py (one exchange each); the seconds each took."""
    session = Session(ScriptedModel([]), Executor(sink=C.Discard()), display=NullDisplay())
    if snapshots is not None:
        from llmrepl.store.snapshots import SnapshotStore

        session.enable_snapshots(SnapshotStore(snapshots))
    times = []
    for code in cells:
        t0 = time.perf_counter()
        result = session.run_direct(code)
        times.append(time.perf_counter() - t0)
        assert result.ok, result.error
    return session, times


def time_undo(session: Session, last: str, repeats: int) -> tuple[list[float], str]:
    """Seconds of ``repeats`` /undo of the last exchange (re-run in between); the last summary."""
    times = []
    summary = ""
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        result = session.undo()
        times.append(time.perf_counter() - t0)
        summary = result.summary
        assert result.rewound, summary
        session.run_direct(last)
    return times, summary


def main() -> int:
    quick = C.quick_flag()
    C.header("/undo: the per-cell cost of what makes the rewind possible, and one /undo", quick)
    rounds, k = (3, 200) if quick else (21, 1000)
    repeats = 2 if quick else 5
    rows = []

    # -- the record alone, in a tight loop (best of 5): what the rewind adds to a cell ----
    sample = Executor(sink=C.Discard()).run(SRC)
    n = 2000 if quick else 20000
    best = float("inf")
    for _ in range(5):
        log: list = []
        t0 = time.perf_counter()
        for _ in range(n):
            log.append(record_of(sample, SRC))
        best = min(best, (time.perf_counter() - t0) / n)
    print(f"   the record alone (rewind.record_of + list.append): {best * 1e6:.2f} µs per cell (best of 5 × {n:,})")

    # -- per-cell overhead: small namespace, then with a 1 M-row DataFrame in it ----------
    for label, setup in (("small namespace", None), (f"{FRAME_ROWS // 1_000_000} M-row DataFrame in the namespace",
                                                      FRAME_CELLS[:2])):
        ex = Executor(sink=C.Discard())
        for code in setup or []:
            assert ex.run(code).ok
        assert ex.run(SRC).ok
        gc.collect()
        rec, plain, bare = per_cell(ex, rounds, k)
        ratios = [a / b for a, b in zip(rec, bare, strict=True)]
        added = [a - b for a, b in zip(rec, plain, strict=True)]
        rr = C.med(ratios)[0]
        print(f"   {label}: Executor.run + record {C.fmt_mmm(rec, 1e6, 'µs', 2)} · Executor.run alone "
              f"{C.fmt_mmm(plain, 1e6, 'µs', 2)} · bare {C.fmt_mmm(bare, 1e6, 'µs', 2)} · ratio {rr:.2f}×")
        small = setup is None
        alone = C.med([a / b for a, b in zip(plain, bare, strict=True)])[0]
        share = best / C.med(plain)[0]
        if small:
            rows.append(C.row(
                "undo record per cell (what the replay needs)",
                median=f"{best * 1e6:.2f} µs/cell", ref=f"Executor.run {C.med(plain)[0] * 1e6:.1f} µs",
                target=f"≤ {RECORD_SHARE:.0%} of Executor.run", ok=share <= RECORD_SHARE,
                note=f"{share:.1%} of a trivial cell; tight loop, best of 5; independent of the namespace",
            ))
        rows.append(C.row(
            f"Executor.run + undo record, {label} ({rounds * k:,} cells)",
            median=f"{C.med(rec)[0] * 1e6:.1f} µs/cell",
            minmax=f"{min(rec) * 1e6:.1f}–{max(rec) * 1e6:.1f} µs",
            ref=f"bare exec+redirect_stdout {C.med(bare)[0] * 1e6:.1f} µs",
            target=f"≤ {TARGET_RATIO:g}× bare (same run)" if small else "info",
            ok=(rr <= TARGET_RATIO) if small else None,
            note=(f"{rr:.2f}× bare (Executor.run alone {alone:.2f}× in the same rounds; median "
                  f"difference {C.med(added)[0] * 1e6:.2f} µs)"),
        ))

    # -- the plain-data copy kept at the start of each exchange ----------------------------
    for label, setup in (("small namespace", SMALL_CELLS), ("1 M-row DataFrame in the namespace", FRAME_CELLS)):
        ex = Executor(sink=C.Discard())
        for code in setup:
            assert ex.run(code).ok
        taken = copy_of(ex.namespace)
        n = 200 if quick else 2000
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(n):
                copy_of(ex.namespace)
            best = min(best, (time.perf_counter() - t0) / n)
        what = "a copy is kept" if taken is not None else "no copy (not plain data): /undo replays"
        print(f"   copy at the start of an exchange, {label}: {best * 1e6:.1f} µs ({what})")
        rows.append(C.row(
            f"plain-data copy at the start of an exchange, {label}",
            median=f"{best * 1e6:.1f} µs/exchange", target="info", ok=None,
            note=f"{what}; once per message or /py, not per cell (best of 5 × {n:,})",
        ))
    session, ran = session_with(SMALL_CELLS)
    session.run_direct(SRC)
    times, summary = time_undo(session, SRC, repeats)
    print(f"   /undo from the copy, small namespace: {C.fmt_mmm(times)} — {summary}")
    rows.append(C.row(
        "one /undo from the plain-data copy, small namespace",
        median=C.fmt_ms(C.med(times)[0]), minmax=f"{C.fmt_ms(min(times))}–{C.fmt_ms(max(times))}",
        target="info", ok=None, note="nothing re-runs",
    ))

    # -- one /undo by replay ------------------------------------------------------------
    for label, cells in (("small namespace", REPLAY_CELLS), (f"{FRAME_ROWS // 1_000_000} M-row DataFrame", FRAME_CELLS)):
        session, ran = session_with(cells)
        times, summary = time_undo(session, cells[-1], repeats)
        print(f"   /undo by replay, {label}: {C.fmt_mmm(times)} (the {len(cells)} cells took "
              f"{sum(ran) * 1000:.1f} ms when they first ran) — {summary}")
        rows.append(C.row(
            f"one /undo by replay ({len(cells) - 1} cells re-run), {label}",
            median=C.fmt_ms(C.med(times)[0]), minmax=f"{C.fmt_ms(min(times))}–{C.fmt_ms(max(times))}",
            ref=f"those cells' first run {C.fmt_ms(sum(ran[:-1]))}", target="info", ok=None,
            note="the replay re-runs what the earlier cells completed, into a fresh namespace",
        ))

    # -- for comparison: snapshots (repl.snapshots on) ------------------------------------
    with tempfile.TemporaryDirectory() as tmp:
        session, ran = session_with(FRAME_CELLS, Path(tmp) / "snaps")
        extra = [session.run_direct(SRC) for _ in range(repeats)]
        assert all(r.ok for r in extra)
        per = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            session._snapshot(session._snapshot_key())
            per.append(time.perf_counter() - t0)
        times, summary = time_undo(session, SRC, repeats)
        print(f"   snapshots on, 1 M-row DataFrame: a snapshot after a cell {C.fmt_mmm(per)}; "
              f"/undo from it {C.fmt_mmm(times)} — {summary}")
        rows.append(C.row(
            "snapshot after each cell (repl.snapshots on), 1 M-row DataFrame",
            median=C.fmt_ms(C.med(per)[0]), minmax=f"{C.fmt_ms(min(per))}–{C.fmt_ms(max(per))}",
            target="info", ok=None, note="why snapshots are not the default: this is paid on every cell",
        ))
        rows.append(C.row(
            "one /undo from a snapshot, 1 M-row DataFrame",
            median=C.fmt_ms(C.med(times)[0]), minmax=f"{C.fmt_ms(min(times))}–{C.fmt_ms(max(times))}",
            target="info", ok=None,
        ))
    return C.finish(rows, quick)


if __name__ == "__main__":
    sys.exit(main())
