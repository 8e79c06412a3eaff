"""Which modules are imported before the first prompt (the real interactive start-up, in a pty).

1. ``_imports_probe.py`` (= ``llmrepl`` plus a hook) runs in a pty with ``--base-url`` on a
   closed local port; at prompt_toolkit's ``pre_run`` of the first prompt (the moment the
   background warm-up would start) it writes ``sys.modules``. None of openai, tiktoken,
   pandas, numpy, matplotlib, nbformat may be there. The same run then times how long after
   the prompt the background warm-up (openai imported, client built) is done.
2. The same start-up again under ``python -X importtime`` with the warm-up disabled; the
   import lines read from the pty before ``llm>`` appears are the main thread's pre-prompt
   imports: the script prints their count and the top-level packages by cumulative time
   (the evidence for where start-up time goes).

    python benchmarks/bench_imports.py [--quick]
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

BANNED = ("openai", "tiktoken", "pandas", "numpy", "matplotlib", "nbformat")
PROBE = str(Path(__file__).resolve().parent / "_imports_probe.py")
_LINE = re.compile(rb"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def snapshot(home: str, port: int) -> tuple[list[str], float | None]:
    tmp = Path(tempfile.mkdtemp(prefix="llmrepl-bench-imp-"))
    out, warm = tmp / "modules.json", tmp / "warm.json"
    env = C.pty_env(home, BENCH_IMPORTS_OUT=str(out), BENCH_WARM_OUT=str(warm))
    child, _ = C.spawn_until([sys.executable, PROBE, "--base-url", f"http://127.0.0.1:{port}/v1"], rb"llm>", env)
    deadline = time.monotonic() + 25
    while not warm.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.05)
    C.end_child(child)
    took = json.loads(warm.read_text()) if warm.exists() else None
    return json.loads(out.read_text()), took


def importtime(home: str, port: int) -> list[tuple[int, int, int, str]]:
    """(self µs, cumulative µs, depth, module) of every import line before the prompt."""
    env = C.pty_env(home, BENCH_NO_WARMUP="1")
    child, _ = C.spawn_until([sys.executable, "-X", "importtime", PROBE, "--base-url",
                              f"http://127.0.0.1:{port}/v1"], rb"llm>", env)
    before = child.before or b""
    C.end_child(child)
    lines = []
    for m in _LINE.finditer(before):
        lines.append((int(m.group(1)), int(m.group(2)), len(m.group(3)) // 2, m.group(4).decode()))
    return lines


def main() -> int:
    quick = C.quick_flag()
    C.header("modules imported before the first prompt", quick)
    home = tempfile.mkdtemp(prefix="llmrepl-bench-home-")
    port = C.closed_port()
    mods, warm = snapshot(home, port)
    tops = sorted({m.split(".")[0] for m in mods})
    found = sorted({m.split(".")[0] for m in mods if m.split(".")[0] in BANNED})
    third = [t for t in tops if t not in sys.stdlib_module_names and not t.startswith("_")]
    print(f"   at the first prompt: {len(mods)} modules; third-party/top-level non-stdlib: {', '.join(third)}")
    print(f"   banned ({', '.join(BANNED)}) present: {', '.join(found) or 'none'}")
    print("   background warm-up (openai imported + client built) done "
          + (f"{warm * 1000:.0f} ms after the prompt" if warm is not None else "NOT within 20 s"))

    lines = importtime(home, port)
    # Cumulative time of each top-level import statement (depth 0), grouped by package.
    by_pkg: dict[str, int] = defaultdict(int)
    for _self_us, cum, depth, name in lines:
        if depth == 0:
            by_pkg[name.split(".")[0]] += cum
    total = sum(by_pkg.values())
    print(f"\n   -X importtime, main thread, before the prompt (warm-up off): {len(lines)} modules, "
          f"{total / 1000:.0f} ms cumulative (importtime inflates absolute figures; read the shares)")
    for name, us in sorted(by_pkg.items(), key=lambda kv: -kv[1])[:12]:
        print(f"     {us / 1000:7.1f} ms  {100 * us / max(total, 1):4.0f} %  {name}")
    print("   import tree, cumulative ≥ 3 ms, depth ≤ 3 (children print before their parent):")
    for _self_us, cum, depth, name in lines:
        if cum >= 3000 and depth <= 3:
            print(f"     {cum / 1000:7.1f} ms  {'  ' * depth}{name}")
    pt = sum(cum for _s, cum, _d, name in lines if name == "prompt_toolkit")
    own = sum(cum for _s, cum, d, name in lines if d == 0 and name.startswith("llmrepl")) - pt
    print(f"   prompt_toolkit {pt / 1000:.0f} ms of {total / 1000:.0f} ms; llmrepl's own modules and the "
          f"rest they pull in {own / 1000:.0f} ms; interpreter/site {by_pkg.get('site', 0) / 1000:.0f} ms")

    rows = [
        C.row("modules imported before the first prompt", median=f"{len(mods)} modules",
              ref=f"banned present: {', '.join(found) or 'none'}",
              target="none of " + ", ".join(BANNED), ok=not found,
              note=f"-X importtime before the prompt: prompt_toolkit {pt / 1000:.0f} ms, llmrepl's own "
                   f"{own / 1000:.0f} ms, site {by_pkg.get('site', 0) / 1000:.0f} ms"),
        C.row("background warm-up after the first prompt (openai + client)",
              median=f"{warm * 1000:.0f} ms after the prompt" if warm is not None else "not done in 20 s",
              target="done in the background while the person types", ok=warm is not None),
    ]
    return C.finish(rows, quick)


if __name__ == "__main__":
    sys.exit(main())
