"""Shared helpers for the benchmark scripts (stdlib + pexpect only; not part of the package).

Protocol between the scripts and ``run_all.py``
-----------------------------------------------
* Every script is runnable alone, prints its figures, and accepts ``--quick`` (a tiny run
  that only proves the script works).
* Exit status: 0 = every target met (or ``--quick``: ran without crashing, whatever the
  figures), 3 = a target was missed (full runs only), anything else = the script broke.
* When the environment variable ``BENCH_JSON`` names a file, the script also writes its
  table rows there as a JSON list of objects with the keys of :func:`row`. Scripts that do
  not know the variable (or crash) simply leave no rows; ``run_all.py`` then shows a row
  built from the exit status and the last output line.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# tests/launch.py starts llmrepl the one way the tests do too (stdlib + pexpect, nothing else
# from the test suite); the scripts reach it through this module.
sys.path.insert(0, str(ROOT / "tests"))
from launch import LLMREPL, child_env, closed_port, spawn  # noqa: E402

__all__ = [
    "ROOT", "LLMREPL", "IPYTHON", "EXIT_MISSED", "ESC", "strip_ansi", "quick_flag", "med", "fmt_ms",
    "fmt_mmm", "row", "finish", "closed_port", "pty_env", "proc_status", "have_ipython", "header",
    "spawn_until", "end_child",
]

IPYTHON = str(Path(sys.executable).with_name("ipython"))
EXIT_MISSED = 3

# Any escape sequence a terminal application may put between the characters of its prompt.
ESC = r"(?:\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_])*"
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")


class Discard:
    """A cell's output sink that keeps nothing: the benchmarks time the work, not a terminal."""

    def write(self, stream: str, text: str) -> None:
        pass


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def quick_flag(argv: list[str] | None = None) -> bool:
    argv = sys.argv[1:] if argv is None else argv
    unknown = [a for a in argv if a != "--quick"]
    if unknown:
        sys.exit(f"usage: {Path(sys.argv[0]).name} [--quick]   (unknown: {' '.join(unknown)})")
    return "--quick" in argv


def med(values: list[float]) -> tuple[float, float, float]:
    """(median, min, max)."""
    return statistics.median(values), min(values), max(values)


def fmt_ms(s: float) -> str:
    return f"{s * 1000:.1f} ms" if s < 1 else f"{s:.2f} s"


def fmt_mmm(values: list[float], scale: float = 1000.0, unit: str = "ms", digits: int = 1) -> str:
    m, lo, hi = med(values)
    return f"{m * scale:.{digits}f} {unit} ({lo * scale:.{digits}f}–{hi * scale:.{digits}f})"


def row(what: str, *, median: str, minmax: str = "", ref: str = "", target: str = "",
        ok: bool | None = None, note: str = "") -> dict[str, Any]:
    """One line of run_all's table. ``ok`` None = informational (no target)."""
    return {"what": what, "median": median, "minmax": minmax, "ref": ref, "target": target,
            "ok": ok, "note": note}


def finish(rows: list[dict[str, Any]], quick: bool) -> int:
    """Print the verdicts, write rows for run_all, return the exit status."""
    path = os.environ.get("BENCH_JSON")
    if path:
        Path(path).write_text(json.dumps(rows, indent=1))
    missed = [r for r in rows if r["ok"] is False]
    print()
    for r in rows:
        verdict = {True: "PASS", False: "MISSED", None: "info"}[r["ok"]]
        print(f"  [{verdict}] {r['what']}: {r['median']}"
              + (f" ({r['minmax']})" if r["minmax"] else "")
              + (f"; reference {r['ref']}" if r["ref"] else "")
              + (f"; target {r['target']}" if r["target"] else "")
              + (f" — {r['note']}" if r["note"] else ""))
    if missed:
        if quick:
            print(f"--quick: {len(missed)} target(s) missed in this tiny run; not failing (only a crash fails)")
            return 0
        print(f"{len(missed)} target(s) missed")
        return EXIT_MISSED
    return 0


def pty_env(home: str, **extra: str) -> dict[str, str]:
    """The measured environment: a 120x40 terminal, private HOME and state, no network
    (see ``launch.child_env``); ``extra`` on top."""
    return child_env(home=home, tty=True, **extra)


def proc_status(pid: int | str = "self") -> dict[str, int]:
    """VmRSS / VmHWM / ... of a process, in bytes."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Vm"):
                key, _, value = line.partition(":")
                parts = value.split()
                if len(parts) == 2 and parts[1] == "kB":
                    out[key] = int(parts[0]) * 1024
    return out


def have_ipython() -> bool:
    return os.path.exists(IPYTHON)


def header(title: str, quick: bool) -> None:
    print(f"== {title}{'  (--quick: a tiny run that only proves the script works)' if quick else ''}")
    try:
        load = os.getloadavg()
        print(f"   python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f}")
    except OSError:
        pass


def spawn_until(argv: list[str], pattern: bytes, env: dict[str, str], *, timeout: float = 30,
                cwd: str | None = None) -> tuple[Any, float]:
    """Start ``argv`` in a fresh pty (120x40) and wait until ``pattern`` (a regex) is on the
    output. Returns (child, seconds from just before the fork to the match)."""
    import time

    import pexpect  # noqa: F401  # loaded before the clock starts, not inside launch.spawn

    t0 = time.perf_counter()
    child = spawn(command=argv, env=env, encoding=None, timeout=timeout, cwd=cwd)
    child.expect(pattern)
    return child, time.perf_counter() - t0


def end_child(child: Any, keys: bytes = b"\x04", timeout: float = 5) -> None:
    """Leave politely (Ctrl-D by default), then make sure the child is gone."""
    import pexpect

    try:
        child.send(keys)
        child.expect(pexpect.EOF, timeout=timeout)
    except (pexpect.TIMEOUT, pexpect.EOF, OSError):
        pass
    try:
        child.close(force=True)
    except Exception:
        child.terminate(force=True)
