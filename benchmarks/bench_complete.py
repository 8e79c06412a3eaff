"""Completion latency at the prompt, once warm: names, an attribute, a keyword argument, a
DataFrame column and a path.

One process, the prompt's own path: ``terminal.completion.PromptCompleter.get_completions``
as prompt_toolkit calls it on Tab (the worker thread and its deadline, jedi's
``Interpreter`` on the live namespace, keys, paths, ``sanitize``). The namespace holds what a
data session holds: pandas as ``pd``, numpy as ``np``, a 10,000-row DataFrame ``sales`` of 20
columns, a dict, a list and a few numbers; the working folder has ``data/`` with 200 files.
The first call of each case (jedi imported, pandas' source parsed) is reported apart, as
"cold"; three more warm it up; then the cases take turns, ``REPS`` calls each. Target: the
95th percentile of each case <= 50 ms.

    python benchmarks/bench_complete.py [--quick]
"""

from __future__ import annotations

import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

TARGET_P95 = 0.050
CASES = [  # (what, the input line before the cursor, a suggestion it must offer)
    ("a name", "total = monthly_to", "monthly_total"),
    ("an attribute", "sales.des", "describe"),
    ("a keyword argument", "sales.groupby(by='region', dro", "dropna="),
    ("a DataFrame column", 'sales["reg', 'region"]'),
    ("a path", 'pd.read_csv("data/sales_01', "sales_010.csv"),
]


def namespace() -> dict[str, Any]:
    import numpy as np
    import pandas as pd

    rows = 10_000
    columns: dict[str, Any] = {"region": ["north", "south", "east", "west"] * (rows // 4)}
    for k in range(19):
        columns[f"metric_{k:02d}"] = np.arange(rows, dtype=float) * k
    return {"pd": pd, "np": np, "sales": pd.DataFrame(columns), "monthly_total": 1234.5,
            "prices": {"apple": 1.5, "avocado": 2.0}, "names": ["a", "b"], "n": 3}


def main() -> int:
    quick = C.quick_flag()
    C.header("completion at the prompt, warm (Tab)", quick)
    from prompt_toolkit.completion import CompleteEvent
    from prompt_toolkit.document import Document

    from llmrepl.terminal.completion import PromptCompleter

    reps = 10 if quick else 200
    ns = namespace()
    completer = PromptCompleter(lambda: ns)
    tab = CompleteEvent(completion_requested=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        os.makedirs(os.path.join(tmp, "data"))
        for k in range(200):
            Path(tmp, "data", f"sales_{k:03d}.csv").write_text("region,value\n")
        os.chdir(tmp)

        def once(line: str, want: str) -> float:
            t0 = time.perf_counter()
            got = [c.text for c in completer.get_completions(Document(line), tab)]
            dt = time.perf_counter() - t0
            if want not in got:
                sys.exit(f"{line!r} did not offer {want!r}: {got[:10]}")
            return dt

        cold = {what: once(line, want) for what, line, want in CASES}
        for _ in range(3):
            for _what, line, want in CASES:
                once(line, want)
        gc.collect()
        times: dict[str, list[float]] = {what: [] for what, _, _ in CASES}
        for rep in range(reps):
            order = CASES if rep % 2 == 0 else CASES[::-1]
            for what, line, want in order:
                times[what].append(once(line, want))
        os.chdir(C.ROOT)
    for what, line, _want in CASES:
        t = sorted(times[what])
        p95 = t[min(len(t) - 1, round(0.95 * (len(t) - 1)))]
        print(f"   {what:<20} {line!r:<38} median {statistics.median(t) * 1e3:6.1f} ms, "
              f"p95 {p95 * 1e3:6.1f} ms, max {t[-1] * 1e3:6.1f} ms; cold {cold[what] * 1e3:6.1f} ms")
        rows.append(C.row(f"completion, {what} (warm, p95)", median=f"{p95 * 1e3:.1f} ms",
                          minmax=f"median {statistics.median(t) * 1e3:.1f} ms",
                          target=f"<= {TARGET_P95 * 1e3:.0f} ms", ok=p95 <= TARGET_P95,
                          note=f"first call {cold[what] * 1e3:.0f} ms"))
    return C.finish(rows, quick)


if __name__ == "__main__":
    sys.exit(main())
