"""``llmrepl --help`` / ``--version``: process wall time, and what they import.

Each command is started N times (after one warm-up round), interleaved with the same
interpreter's ``python -c pass`` (the floor: interpreter start-up), stdout/stderr to
/dev/null, timed from just before the fork to reaping. Then each runs once under
``-X importtime`` to check that prompt_toolkit (and openai, pygments, tiktoken) are not
imported. Target: median <= 0.05 s, and prompt_toolkit not imported.

    python benchmarks/bench_help.py [--quick]
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

TARGET_S = 0.050
HEAVY = ("prompt_toolkit", "openai", "pygments", "tiktoken")


def wall(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    t = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{argv} exited {r.returncode}")
    return t


def imported(argv: list[str], env: dict[str, str]) -> list[str]:
    r = subprocess.run([sys.executable, "-X", "importtime", *argv], capture_output=True, text=True, env=env)
    return re.findall(r"import time:\s+\d+ \|\s+\d+ \| *(\S+)", r.stderr)


def main() -> int:
    quick = C.quick_flag()
    C.header("llmrepl --help / --version", quick)
    rounds = 2 if quick else 10
    env = C.pty_env(tempfile.mkdtemp(prefix="llmrepl-bench-home-"))
    cmds = {
        "--help": [C.LLMREPL, "--help"],
        "--version": [C.LLMREPL, "--version"],
        "python -c pass": [sys.executable, "-c", "pass"],
    }
    times: dict[str, list[float]] = {k: [] for k in cmds}
    names = list(cmds)
    for rnd in range(rounds + 1):
        for name in names[rnd % 3:] + names[: rnd % 3]:
            t = wall(cmds[name], env)
            if rnd:
                times[name].append(t)
    for k, v in times.items():
        print(f"   {k:16s} {C.fmt_mmm(v)}")
    floor = C.med(times["python -c pass"])[0]
    rows = []
    for flag in ("--help", "--version"):
        mods = imported([C.LLMREPL, flag], env)
        heavy = sorted({m.split(".")[0] for m in mods if m.split(".")[0] in HEAVY})
        print(f"   llmrepl {flag}: {len(mods)} modules imported; heavy ones: {', '.join(heavy) or 'none'}")
        m = C.med(times[flag])[0]
        added = [a - b for a, b in zip(times[flag], times["python -c pass"], strict=True)]
        rows.append(C.row(
            f"llmrepl {flag} (process wall, median of {rounds})",
            median=f"{m * 1000:.0f} ms",
            minmax=f"{min(times[flag]) * 1000:.0f}–{max(times[flag]) * 1000:.0f} ms",
            ref=f"python -c pass {floor * 1000:.0f} ms",
            target="≤ 50 ms, no prompt_toolkit",
            ok=m <= TARGET_S and "prompt_toolkit" not in heavy,
            note=f"+{C.med(added)[0] * 1000:.0f} ms over the interpreter (paired); {len(mods)} modules; "
                 f"heavy imports: {', '.join(heavy) or 'none'}",
        ))
    return C.finish(rows, quick)


if __name__ == "__main__":
    sys.exit(main())
