"""Memory: peak RSS of a cell printing 1 GB, and the idle REPL's RSS after its first answer.

1. In a fresh subprocess: the real ``Executor`` with a sink that discards; one small cell
   first (the idle state), then the peak-RSS counter is reset (``/proc/self/clear_refs``)
   and a cell prints 1 GiB (``for _ in range(2**20): print('x' * 1023)``). Reported: VmHWM
   after the cell minus VmRSS before it. Target <= 60 MB above idle. (If the kernel does
   not allow the reset, the peak is taken against the process's earlier peak instead.)
2. The real ``llmrepl`` in a pty against ``tests/fakeserver.py``: one message, wait for the
   answer and the next prompt, let the background warm-up finish, read VmRSS from
   /proc/<pid>/status. Target <= 80 MB. Same-run references: ``python3 -q`` and (when
   installed) IPython, idle at their first prompt.

    python benchmarks/bench_memory.py [--quick]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

MB = 1_000_000
TARGET_CELL = 60 * MB
TARGET_IDLE = 80 * MB

CELL_CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[2])
import _common as C
from llmrepl.execution.executor import Executor

lines = int(sys.argv[1])
ex = Executor(sink=C.Discard())
r = ex.run("y = sum(range(1000))\nprint(y)")
assert r.ok, r.error
idle = C.proc_status()
reset = True
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
except OSError:
    reset = False
before = C.proc_status()
t0 = time.perf_counter()
r = ex.run(f"for _ in range({lines}):\n    print('x' * 1023)")
took = time.perf_counter() - t0
after = C.proc_status()
assert r.ok, r.error
print(json.dumps(dict(idle_rss=idle["VmRSS"], rss_before=before["VmRSS"], hwm_before=before["VmHWM"],
                      hwm_after=after["VmHWM"], rss_after=after["VmRSS"], reset=reset, seconds=took,
                      chars=r.output_chars, kept=len(r.stdout))))
"""


def cell_peak(lines: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CELL_CHILD, str(lines), str(Path(__file__).resolve().parent)],
                         capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"cell child failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def idle_after_answer(quick: bool) -> tuple[list[tuple[int, int]], dict[str, int]]:
    from fakeserver import FakeOpenAI  # type: ignore[import-not-found]  # tests/, on sys.path via _common

    home = tempfile.mkdtemp(prefix="llmrepl-bench-home-")
    env = C.pty_env(home)
    reply = "Here is the answer you asked for: pong-7f3a. Nothing to run."
    refs: dict[str, int] = {}
    with FakeOpenAI() as srv:
        srv.default_reply = reply
        samples: list[tuple[int, int]] = []
        for _ in range(1 if quick else 3):
            child, _ = C.spawn_until([C.LLMREPL, "--base-url", srv.base_url], rb"llm>", env)
            child.send(b"say pong please\r")
            child.expect(rb"pong-7f3a")
            child.expect(rb"llm>")
            # Let the background warm-up (openai import, client) and any lazy loads settle.
            deadline = time.monotonic() + 8
            prev = -1
            while time.monotonic() < deadline:
                time.sleep(0.5)
                rss = C.proc_status(child.pid)["VmRSS"]
                if abs(rss - prev) < 256 * 1024:
                    break
                prev = rss
            st = C.proc_status(child.pid)
            samples.append((st["VmRSS"], st["VmHWM"]))
            C.end_child(child)
            time.sleep(0.3)
        served = len(srv.requests)
        # Diagnosis: the same session through the probe (= llmrepl + a hook) to list what it holds.
        dump = Path(tempfile.mkdtemp(prefix="llmrepl-bench-mods-")) / "modules.json"
        child, _ = C.spawn_until([sys.executable, str(Path(__file__).resolve().parent / "_imports_probe.py"),
                                  "--base-url", srv.base_url], rb"llm>", C.pty_env(home, BENCH_DUMP=str(dump)))
        child.send(b"say pong please\r")
        child.expect(rb"pong-7f3a")
        child.expect(rb"llm>")
        time.sleep(2.0)
        Path(str(dump) + ".go").touch()
        deadline = time.monotonic() + 10
        while not dump.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        C.end_child(child)
        if dump.exists():
            mods = json.loads(dump.read_text())
            tops: dict[str, int] = {}
            for m in mods:
                tops[m.split(".")[0]] = tops.get(m.split(".")[0], 0) + 1
            big = sorted(((v, k) for k, v in tops.items() if k not in sys.stdlib_module_names), reverse=True)
            print(f"   the idle REPL holds {len(mods)} modules; largest non-stdlib packages by module count: "
                  + ", ".join(f"{k} {v}" for v, k in big[:10]))
    for name, argv, pat in (
        ("python3 -q", [sys.executable, "-q"], rb">>> "),
        *([("IPython", [C.IPYTHON, "--no-banner", "--TerminalInteractiveShell.confirm_exit=False",
                        "--HistoryManager.enabled=False"], rb"In \[" + C.ESC.encode() + rb"1")]
          if C.have_ipython() else []),
    ):
        child, _ = C.spawn_until(argv, pat, env)
        time.sleep(1.0)
        refs[name] = C.proc_status(child.pid)["VmRSS"]
        C.end_child(child)
    if served < 1:
        raise SystemExit("the fake server saw no request")
    return samples, refs


def main() -> int:
    quick = C.quick_flag()
    C.header("memory", quick)
    lines = 2**14 if quick else 2**20
    runs = 1 if quick else 3
    res = [cell_peak(lines) for _ in range(runs)]
    above = [r["hwm_after"] - r["rss_before"] if r["reset"] else max(0, r["hwm_after"] - r["hwm_before"]) for r in res]
    gb = lines * 1024 / 2**30
    for r, a in zip(res, above, strict=True):
        print(f"   cell printing {gb:.3g} GiB: {r['seconds']:.1f} s, idle RSS {r['idle_rss'] / MB:.1f} MB, "
              f"peak {r['hwm_after'] / MB:.1f} MB → {a / MB:.1f} MB above idle; kept {r['kept']:,} of {r['chars']:,} chars"
              + ("" if r["reset"] else " (peak counter not resettable: compared with the earlier peak)"))
    samples, refs = idle_after_answer(quick)
    for rss, hwm in samples:
        print(f"   llmrepl idle after its first answer: VmRSS {rss / MB:.1f} MB (peak so far {hwm / MB:.1f} MB)")
    rsss = [a for a, _ in samples]
    rss, lo, hi = C.med(rsss)
    hwm = C.med([b for _, b in samples])[0]
    for k, v in refs.items():
        print(f"   {k} idle at its first prompt: VmRSS {v / MB:.1f} MB")
    rows = [
        C.row(f"peak RSS of a cell printing {gb:.3g} GiB (above idle, {runs} run{'s' if runs > 1 else ''})",
              median=f"{C.med(above)[0] / MB:.1f} MB",
              minmax=f"{min(above) / MB:.1f}–{max(above) / MB:.1f} MB",
              ref=f"idle executor process {C.med([r['idle_rss'] for r in res])[0] / MB:.0f} MB",
              target="≤ 60 MB above idle", ok=C.med(above)[0] <= TARGET_CELL,
              note=f"{C.med([r['seconds'] for r in res])[0]:.1f} s for the cell"),
        C.row(f"idle REPL RSS after the first answer ({len(rsss)} session{'s' if len(rsss) > 1 else ''})",
              median=f"{rss / MB:.1f} MB", minmax=f"{lo / MB:.1f}–{hi / MB:.1f} MB",
              ref=" · ".join(f"{k} {v / MB:.0f} MB" for k, v in refs.items()),
              target="≤ 80 MB", ok=rss <= TARGET_IDLE, note=f"peak so far {hwm / MB:.0f} MB"),
    ]
    return C.finish(rows, quick)


if __name__ == "__main__":
    sys.exit(main())
