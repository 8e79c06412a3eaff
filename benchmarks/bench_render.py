"""Streaming render: a 2,000-line answer in 20,000 chunks, through TerminalDisplay into a real pty.

The answer is the first 2,000 lines of this CPython's ``Lib/argparse.py`` inside a
```` ```python ```` fence, cut at 19,999 random points (``random.Random(0)``) into 20,000
chunks (~3.7 characters each, about one token). Each round writes the whole stream twice
into a fresh pseudo-terminal whose other end is drained by a separate process into a file:

* raw: ``out.write(chunk); out.flush()`` per chunk (the floor);
* rendered: ``TerminalDisplay(out, color=True).answer_text(chunk)`` per chunk (then
  ``answer_end``), each call timed.

The order alternates each round; round 0 is a warm-up (it also pays the one-off pygments
import and lexer set-up, reported separately). Targets: mean time per chunk <= 1 ms both in
the first 1,000 and in the last 1,000 chunks (flat: no cost growing with the answer), total
<= 8x raw in the same round, and nothing re-rendered: the pty output with escape codes
removed is exactly the answer text, once.

    python benchmarks/bench_render.py [--quick]
"""

from __future__ import annotations

import argparse as _argparse_mod
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from llmrepl.terminal.display import TerminalDisplay  # noqa: E402

TARGET_CHUNK_S = 0.001
TARGET_RATIO = 8.0
DRAIN = r"""
import os, sys
fd, path = int(sys.argv[1]), sys.argv[2]
with open(path, "wb") as f:
    while True:
        try:
            b = os.read(fd, 65536)
        except OSError:  # EIO: the writer closed the slave
            break
        if not b:
            break
        f.write(b)
"""


def answer(lines: int) -> str:
    with open(_argparse_mod.__file__, encoding="utf-8") as f:
        src = "".join(f.read().splitlines(keepends=True)[:lines])
    return "```python\n" + src + "```\n"


def chunks(text: str, n: int, seed: int = 0) -> list[str]:
    rnd = random.Random(seed)
    cuts = sorted(rnd.sample(range(1, len(text)), n - 1))
    bounds = [0, *cuts, len(text)]
    return [text[bounds[i]:bounds[i + 1]] for i in range(n)]


class Pty:
    """A pty whose master end is drained into ``path`` by a child process."""

    def __init__(self, path: str) -> None:
        master, slave = os.openpty()
        self.path = path
        self.proc = subprocess.Popen([sys.executable, "-c", DRAIN, str(master), path], pass_fds=(master,))
        os.close(master)
        self.out = open(slave, "w", encoding="utf-8", closefd=True)

    def close(self) -> bytes:
        self.out.close()
        self.proc.wait(timeout=30)
        return Path(self.path).read_bytes()


def run_raw(ch: list[str], path: str) -> tuple[float, bytes]:
    p = Pty(path)
    out = p.out
    t0 = time.perf_counter()
    for c in ch:
        out.write(c)
        out.flush()
    t = time.perf_counter() - t0
    return t, p.close()


def run_rendered(ch: list[str], path: str) -> tuple[float, list[float], bytes]:
    p = Pty(path)
    d = TerminalDisplay(p.out, color=True)
    per = []
    pc = time.perf_counter
    feed = d.answer_text
    t0 = pc()
    d.answer_start()
    for c in ch:
        t = pc()
        feed(c)
        per.append(pc() - t)
    d.answer_end(None)  # type: ignore[arg-type]  # the completion is not used for rendering
    total = pc() - t0
    return total, per, p.close()


def main() -> int:
    quick = C.quick_flag()
    C.header("streaming render into a pty", quick)
    lines, n, rounds = (200, 2000, 1) if quick else (2000, 20000, 5)
    window = min(1000, n // 4)
    text = answer(lines)
    ch = chunks(text, n)
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"llmrepl-bench-render-{os.getpid()}"
    tmp.mkdir(exist_ok=True)
    print(f"   answer: {lines:,} lines of argparse.py in a ```python fence, {len(text):,} characters, "
          f"{n:,} chunks (mean {len(text) / n:.1f} chars)")
    raw_t: list[float] = []
    ren_t: list[float] = []
    first_w: list[float] = []
    last_w: list[float] = []
    max_chunk: list[float] = []
    p99: list[float] = []
    clean = True
    raw_bytes = ren_bytes = 0
    cold = None
    for rnd in range(rounds + 1):
        order = ("rendered", "raw") if rnd % 2 == 0 else ("raw", "rendered")
        for kind in order:
            if kind == "raw":
                t, data = run_raw(ch, str(tmp / "raw.out"))
                if rnd:
                    raw_t.append(t)
                raw_bytes = len(data)
            else:
                t, per, data = run_rendered(ch, str(tmp / "rendered.out"))
                ren_bytes = len(data)
                shown = C.strip_ansi(data.decode("utf-8").replace("\r\n", "\n"))
                if shown != text:
                    clean = False
                    i = next((k for k, (a, b) in enumerate(zip(shown, text, strict=False)) if a != b), min(len(shown), len(text)))
                    print(f"   !! rendered output differs from the answer at char {i}: "
                          f"{shown[i - 40:i + 40]!r} vs {text[i - 40:i + 40]!r}; lengths {len(shown)} vs {len(text)}")
                if rnd == 0:
                    cold = (t, max(per), per.index(max(per)))
                    continue
                ren_t.append(t)
                first_w.append(statistics.fmean(per[:window]))
                last_w.append(statistics.fmean(per[-window:]))
                max_chunk.append(max(per))
                p99.append(sorted(per)[int(len(per) * 0.99)])
        if rnd:
            print(f"   round {rnd}: raw {raw_t[-1] * 1000:.1f} ms · rendered {ren_t[-1] * 1000:.1f} ms "
                  f"({ren_t[-1] / raw_t[-1]:.1f}×) · mean/chunk first {window} {first_w[-1] * 1e6:.1f} µs, "
                  f"last {window} {last_w[-1] * 1e6:.1f} µs · max chunk {max_chunk[-1] * 1e3:.2f} ms")
    ratios = [a / b for a, b in zip(ren_t, raw_t, strict=True)]
    assert cold is not None
    print(f"   cold first round (pygments import + lexer set-up, once per process): total {cold[0] * 1000:.0f} ms, "
          f"slowest chunk #{cold[2]} {cold[1] * 1000:.1f} ms")
    print(f"   bytes into the pty: raw {raw_bytes:,} · rendered {ren_bytes:,} ({ren_bytes / max(raw_bytes, 1):.2f}×); "
          f"escape codes stripped, the rendered output {'is exactly the answer, once' if clean else 'DIFFERS from the answer'}")

    rows = [
        C.row(f"render per chunk, first / last {window:,} chunks (mean)",
              median=f"{C.med(first_w)[0] * 1e6:.0f} / {C.med(last_w)[0] * 1e6:.0f} µs",
              minmax=f"last {C.med(last_w)[1] * 1e6:.0f}–{C.med(last_w)[2] * 1e6:.0f} µs",
              ref=f"p99 {C.med(p99)[0] * 1e6:.0f} µs, max {C.med(max_chunk)[0] * 1e3:.2f} ms",
              target="≤ 1 ms per chunk, flat",
              ok=max(C.med(first_w)[0], C.med(last_w)[0]) <= TARGET_CHUNK_S,
              note=f"cold first answer's slowest chunk {cold[1] * 1000:.0f} ms (one-off pygments set-up)"),
        C.row(f"render total, {lines:,} lines in {n:,} chunks into a pty",
              median=f"{C.med(ren_t)[0] * 1000:.0f} ms",
              minmax=f"{min(ren_t) * 1000:.0f}–{max(ren_t) * 1000:.0f} ms",
              ref=f"raw write {C.med(raw_t)[0] * 1000:.0f} ms",
              target="≤ 8× raw, nothing re-rendered",
              ok=C.med(ratios)[0] <= TARGET_RATIO and clean,
              note=f"{C.med(ratios)[0]:.1f}× raw ({min(ratios):.1f}–{max(ratios):.1f}, per round); "
                   f"output = answer once: {'yes' if clean else 'NO'}; {ren_bytes / max(raw_bytes, 1):.2f}× raw bytes"),
    ]
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()
    return C.finish(rows, quick)


if __name__ == "__main__":
    sys.exit(main())
