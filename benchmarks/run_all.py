"""Run every benchmark and print one table: what, median, min–max, same-run reference, target, result.

    python benchmarks/run_all.py            # the real thing (~3–4 minutes); exit 3 if a target is missed
    python benchmarks/run_all.py --quick    # tiny runs that only prove the scripts work (CI);
                                            # a missed target is printed, only a crash fails

Each ``bench_*.py`` runs in its own process (``--quick`` passed through) with ``BENCH_JSON``
naming a file for its rows; a script that writes none (e.g. one that does not know the
protocol) gets a row built from its exit status and last output line. Exit status: 0 all
met (or ``--quick`` and nothing crashed), 3 a target missed, 1 a script crashed.
Use ``--only NAME[,NAME]`` (e.g. ``--only startup,render``) to run a subset.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ["startup", "help", "imports", "executor", "render", "context", "cache", "memory"]
EXIT_MISSED = 3


def scripts(only: set[str] | None) -> list[Path]:
    found = {p.stem.removeprefix("bench_"): p for p in HERE.glob("bench_*.py")}
    names = [n for n in ORDER if n in found] + sorted(n for n in found if n not in ORDER)
    return [found[n] for n in names if only is None or n in only]


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    only = None
    if "--only" in argv:
        only = set(argv[argv.index("--only") + 1].split(","))
    rows: list[dict] = []
    crashed: list[str] = []
    started = time.perf_counter()
    print(f"llmrepl benchmarks{' (--quick: proving the scripts work; figures are not meaningful)' if quick else ''}")
    print(f"python {sys.version.split()[0]} · {os.cpu_count()} CPUs · load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} · {time.strftime('%Y-%m-%d %H:%M')}\n")
    for script in scripts(only):
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
            out_json = f.name
        env = dict(os.environ, BENCH_JSON=out_json)
        cmd = [sys.executable, str(script), *(["--quick"] if quick else [])]
        t0 = time.perf_counter()
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600 if quick else 1800)
            rc, stdout, stderr = p.returncode, p.stdout, p.stderr
        except subprocess.TimeoutExpired as e:
            rc, stdout, stderr = -1, (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or ""), "timed out"
        took = time.perf_counter() - t0
        print(f"--- {script.name} ({took:.1f} s, exit {rc})")
        for line in stdout.rstrip().splitlines():
            print("  " + line)
        if stderr.strip():
            for line in stderr.rstrip().splitlines()[-25:]:
                print("  ! " + line)
        got: list[dict] = []
        try:
            text = Path(out_json).read_text()
            got = json.loads(text) if text.strip() else []
        except (OSError, ValueError):
            got = []
        finally:
            try:
                os.unlink(out_json)
            except OSError:
                pass
        broke = rc not in (0, EXIT_MISSED)
        if broke:
            crashed.append(script.name)
        if not got:
            last = next((ln.strip() for ln in reversed(stdout.splitlines()) if ln.strip()), "(no output)")
            got = [{"what": script.name, "median": last[:70], "minmax": "", "ref": "", "target": "(see script)",
                    "ok": None if broke else rc == 0, "note": ""}]
        for r in got:
            if broke:
                r["ok"], r["note"] = "crash", f"exit {rc}"
            rows.append(r)
        print()
    print_table(rows)
    missed = [r for r in rows if r["ok"] is False]
    print(f"\n{len(rows)} rows · {sum(r['ok'] is True for r in rows)} met · {len(missed)} missed · "
          f"{len(crashed)} script(s) crashed · {time.perf_counter() - started:.0f} s")
    if crashed:
        print("crashed: " + ", ".join(crashed))
        return 1
    if missed:
        if quick:
            print("--quick: missed targets are reported, not failed (tiny runs prove the scripts work)")
            return 0
        return EXIT_MISSED
    return 0


def print_table(rows: list[dict]) -> None:
    verdict = {True: "met", False: "**MISSED**", None: "info", "crash": "**CRASHED**"}
    head = ["what", "median", "min–max", "same-run reference", "target", "result"]
    lines = [head, ["---"] * len(head)]
    for r in rows:
        res = verdict.get(r["ok"], str(r["ok"]))
        if r.get("note"):
            res += f" ({r['note']})"
        lines.append([r["what"], r["median"], r["minmax"] or "–", r["ref"] or "–", r["target"] or "–", res])
    for ln in lines:
        print("| " + " | ".join(str(c).replace("|", "\\|") for c in ln) + " |")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
