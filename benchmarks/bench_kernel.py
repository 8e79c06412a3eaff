"""Kernel executor overhead for a trivial cell (``x = 1``), against a bare jupyter_client
round trip on the same kernel.

One local ipykernel (the python3 kernelspec), one BlockingKernelClient. The bare round trip
is what any Jupyter front end does for a cell: ``execute(src)``, read iopub until the
kernel is idle again, read the ``execute_reply``. ``KernelExecutor.run`` does that plus
everything llmrepl does for a cell: the capture, the Ctrl-C handler, the namespace summary
computed inside the kernel (a user expression on the same request), the ``ExecResult`` and
``done``. R rounds of K cells each way, the order alternating every round, one warm-up round
first; the ratio is taken round by round. Target: the median ratio <= 1.3x (a ratio, so it
holds on a slower or busier machine; the ms figures are printed for information). Also
shown: the kernel's start time (until it answers) and the per-cell time with 100 user
variables in the namespace (the summary grows with it).

    python benchmarks/bench_kernel.py [--quick]
"""

from __future__ import annotations

import queue
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

TARGET_RATIO = 1.3
SRC = "x = 1"



def bare_cell(kc: Any) -> None:
    msg_id = kc.execute(SRC)
    while True:
        msg = kc.get_iopub_msg(timeout=30)
        if (msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "status"
                and msg["content"]["execution_state"] == "idle"):
            break
    while kc.get_shell_msg(timeout=30)["parent_header"].get("msg_id") != msg_id:
        pass


def drain(kc: Any) -> None:
    """Messages left from the other side's requests (a silent request's status) go first."""
    for get in (kc.get_iopub_msg, kc.get_shell_msg):
        while True:
            try:
                get(timeout=0.01)
            except queue.Empty:
                break


def hook(kc: Any, on: bool) -> None:
    """llmrepl's post_run_cell hook (the namespace summary) on or off: the bare round trips
    run without it, so the reference is a kernel without llmrepl in it."""
    action = "register" if on else "unregister"
    msg_id = kc.execute(f"get_ipython().events.{action}('post_run_cell', "
                        "__import__('sys').modules['_llmrepl_kernel'].after_cell)", silent=True, store_history=False)
    while True:
        reply = kc.get_shell_msg(timeout=30)
        if reply["parent_header"].get("msg_id") == msg_id:
            assert reply["content"]["status"] == "ok", reply["content"]
            return


def timed(fn: Any, k: int) -> float:
    t0 = time.perf_counter()
    for _ in range(k):
        fn()
    return (time.perf_counter() - t0) / k


def in_kernel_summary(ex: Any) -> float:
    """Seconds the kernel spends on the namespace summary after a cell (the post_run_cell
    hook), best of 3."""
    r = ex.run("__import__('timeit').repeat(__import__('sys').modules['_llmrepl_kernel'].summary, "
               "number=100, repeat=3)")
    return min(float(t) for t in r.value_repr.strip("[]").split(",")) / 100


def main() -> int:
    quick = C.quick_flag()
    C.header("kernel executor overhead, trivial cell", quick)
    try:
        from jupyter_client import KernelManager  # noqa: F401
    except ImportError:
        print("   jupyter_client is not installed (pip install 'llmrepl[kernel]')")
        return 2
    from llmrepl.execution.kernel import KernelExecutor
    from llmrepl.execution.kernel_local import start_local

    rounds, k = (2, 20) if quick else (40, 50)
    t0 = time.perf_counter()
    kc, handle = start_local("python3")
    start = time.perf_counter() - t0
    ex = KernelExecutor(lambda: (kc, handle), sink=C.Discard())
    try:
        assert ex.wait_ready(60), ex.start_error
        r0 = ex.run(SRC)
        assert r0.ok and repr(ex.namespace["x"]) == "1", r0
        ours: list[float] = []
        bare: list[float] = []
        def measure_bare() -> float:
            hook(kc, False)
            drain(kc)
            try:
                return timed(lambda: bare_cell(kc), k)
            finally:
                hook(kc, True)
                drain(kc)

        for rnd in range(rounds + 1):
            drain(kc)
            if rnd % 2:
                o = timed(lambda: ex.run(SRC), k)
                drain(kc)
                b = measure_bare()
            else:
                b = measure_bare()
                o = timed(lambda: ex.run(SRC), k)
            if rnd:
                ours.append(o)
                bare.append(b)
        ratios = [a / b for a, b in zip(ours, bare, strict=True)]
        hook_one = in_kernel_summary(ex)
        ex.run("\n".join(f"v{i} = list(range({i}))" for i in range(100)))
        drain(kc)
        many = [timed(lambda: ex.run(SRC), k) for _ in range(3 if not quick else 1)]
        hook_many = in_kernel_summary(ex)
    finally:
        ex.shutdown()
    print(f"   kernel start (until it answers): {C.fmt_ms(start)}")
    print(f"   {rounds} rounds × {k} cells each ({rounds * k:,} per method), interleaved")
    print(f"   KernelExecutor.run        {C.fmt_mmm(ours, 1e3, 'ms', 2)}")
    print(f"   bare jupyter_client trip  {C.fmt_mmm(bare, 1e3, 'ms', 2)}")
    print(f"   ratio (per round)         {C.med(ratios)[0]:.2f}× ({min(ratios):.2f}–{max(ratios):.2f})")
    print(f"   with 100 user variables   {C.fmt_mmm(many, 1e3, 'ms', 2)}")
    print(f"   the summary in the kernel: {hook_one * 1e6:.0f} µs (1 variable), "
          f"{hook_many * 1e6:.0f} µs (100 variables), with IPython's _iN of "
          f"{ex.cell_count:,} cells in the namespace to skip")
    rr = C.med(ratios)[0]
    rows = [C.row(
        f"kernel executor, `x = 1` ({rounds * k:,} cells)",
        median=f"{C.med(ours)[0] * 1e3:.2f} ms/cell",
        minmax=f"{min(ours) * 1e3:.2f}–{max(ours) * 1e3:.2f} ms",
        ref=f"bare jupyter_client round trip {C.med(bare)[0] * 1e3:.2f} ms",
        target=f"≤ {TARGET_RATIO:g}× bare (same kernel, same run)",
        ok=rr <= TARGET_RATIO,
        note=f"{rr:.2f}× bare ({min(ratios):.2f}–{max(ratios):.2f}, per round); namespace summary included",
    ), C.row(
        "kernel start (python3, until it answers)",
        median=C.fmt_ms(start),
        target="info",
        ok=None,
        note=f"per cell with 100 user variables: {C.med(many)[0] * 1e3:.2f} ms",
    ), C.row(
        "namespace summary inside the kernel, per cell",
        median=f"{hook_one * 1e6:.0f} µs",
        ref=f"{hook_many * 1e6:.0f} µs with 100 variables",
        target="info",
        ok=None,
        note="the post_run_cell hook (off for the bare round trips, so they carry none of it)",
    )]
    return C.finish(rows, quick)


if __name__ == "__main__":
    sys.exit(main())
