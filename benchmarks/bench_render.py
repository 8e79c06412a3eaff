"""Streaming render: a 2,000-line answer in 20,000 chunks, through TerminalDisplay into a real pty.

The answer is the first 2,000 lines of this CPython's ``Lib/argparse.py`` inside a
```` ```python ```` fence, cut at 19,999 random points (``random.Random(0)``) into 20,000
chunks (~3.7 characters each, about one token). Each round writes the whole stream twice
into a fresh pseudo-terminal whose other end is drained by a separate process into a file:

* raw: ``out.write(chunk); out.flush()`` per chunk (the floor);
* rendered: ``TerminalDisplay(out, color=True, width=120).answer_text(chunk)`` per chunk
  (then ``answer_end``), each call timed. Text is shown within the line as it streams: a
  code line plain while it arrives, then redrawn highlighted with ``\r``.

A second answer, Markdown prose (headings, lists, emphasis, code spans, links; wrapped at
120 columns), is streamed the same way. The order alternates each round; round 0 is a
warm-up (it also pays the one-off pygments import and lexer set-up, reported separately).
Targets: mean time per chunk <= 1 ms both in the first 1,000 and in the last 1,000 chunks
(flat: no cost growing with the answer), every chunk < 1 ms at the 99th percentile, total
<= 8x raw in the same round, bytes into the pty < 3x the raw stream's, and the screen
right: the code answer's lines, drawn as a terminal draws them (``\r``, erase, cursor
moves), are exactly the answer text.

    python benchmarks/bench_render.py [--quick]
"""

from __future__ import annotations

import argparse as _argparse_mod
import os
import random
import re
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
TARGET_BYTES = 3.0
WIDTH = 120
_SEQ = re.compile(r"\x1b\[([0-9;]*)([A-Za-z])|\r|\n|[^\x1b\r\n]+")
PROSE = """## Revenue by region

The **north** region sold the most: `df.groupby("region").sum()` shows *about twice* the
south's revenue, and the [pandas docs](https://pandas.pydata.org/docs/) explain why the
index is the region. A few things stand out in the numbers that follow, line after line.

- north leads with **41%** of units, ahead of every other region in the table
- south trails, with `NaN` in two months (no data was recorded there)
  - march and april are the missing months
1. drop the missing rows with `dropna()`
2. plot the result with `df.plot.bar(title="by region")`

> Note: the figures are in thousands of dollars, as the source table states.

"""
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


def drawn(data: str) -> str:
    """The lines a terminal shows for ``data`` (no wrapping: the display never lets a line it
    will rewrite wrap): ``\r`` returns to the line's start, ``ESC[nD`` moves back, ``ESC[K``
    erases to the end; colour is ignored."""
    lines: list[str] = []
    line: list[str] = []
    col = 0
    for m in _SEQ.finditer(data):
        tok = m.group()
        if tok == "\n":
            lines.append("".join(line))
            line, col = [], 0
        elif tok == "\r":
            col = 0
        elif m.group(2):
            if m.group(2) == "D":
                col = max(col - int(m.group(1) or 1), 0)
            elif m.group(2) == "K":
                del line[col:]
        else:
            for ch in tok:
                if col < len(line):
                    line[col] = ch
                else:
                    line.append(ch)
                col += 1
    return "\n".join(lines) + ("\n" + "".join(line) if line else "\n" if lines else "")


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
    d = TerminalDisplay(p.out, color=True, width=WIDTH)
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


def measure(name: str, text: str, ch: list[str], rounds: int, tmp: Path, expect: str) -> dict[str, object]:
    """Stream ``ch`` raw and rendered, alternating, ``rounds`` (+ a warm-up); ``expect``: the
    lines the screen must show at the end."""
    window = min(1000, len(ch) // 4)
    raw_t: list[float] = []
    ren_t: list[float] = []
    first_w: list[float] = []
    last_w: list[float] = []
    max_chunk: list[float] = []
    p99: list[float] = []
    clean = True
    raw_bytes = ren_bytes = 0
    cold = (0.0, 0.0, 0)
    for rnd in range(rounds + 1):
        order = ("rendered", "raw") if rnd % 2 == 0 else ("raw", "rendered")
        for kind in order:
            if kind == "raw":
                t, data = run_raw(ch, str(tmp / "raw.out"))
                if rnd:
                    raw_t.append(t)
                raw_bytes = len(data)
                continue
            t, per, data = run_rendered(ch, str(tmp / "rendered.out"))
            ren_bytes = len(data)
            shown = drawn(data.decode("utf-8").replace("\r\n", "\n"))
            if shown != expect:
                clean = False
                i = next((k for k, (x, y) in enumerate(zip(shown, expect, strict=False)) if x != y),
                         min(len(shown), len(expect)))
                print(f"   !! {name}: the screen differs at char {i}: {shown[i - 40:i + 40]!r} vs "
                      f"{expect[i - 40:i + 40]!r}; lengths {len(shown)} vs {len(expect)}")
            if rnd == 0:
                cold = (t, max(per), per.index(max(per)))
                continue
            ren_t.append(t)
            first_w.append(statistics.fmean(per[:window]))
            last_w.append(statistics.fmean(per[-window:]))
            max_chunk.append(max(per))
            p99.append(sorted(per)[int(len(per) * 0.99)])
        if rnd:
            print(f"   {name} round {rnd}: raw {raw_t[-1] * 1000:.1f} ms · rendered {ren_t[-1] * 1000:.1f} ms "
                  f"({ren_t[-1] / raw_t[-1]:.1f}×) · mean/chunk first {window} {first_w[-1] * 1e6:.1f} µs, "
                  f"last {window} {last_w[-1] * 1e6:.1f} µs · max chunk {max_chunk[-1] * 1e3:.2f} ms")
    print(f"   {name}: bytes into the pty: raw {raw_bytes:,} · rendered {ren_bytes:,} "
          f"({ren_bytes / max(raw_bytes, 1):.2f}×); the screen {'shows exactly the answer' if clean else 'DIFFERS'}")
    return {"window": window, "raw_t": raw_t, "ren_t": ren_t, "first_w": first_w, "last_w": last_w,
            "max_chunk": max_chunk, "p99": p99, "clean": clean, "bytes": ren_bytes / max(raw_bytes, 1),
            "cold": cold, "n": len(ch)}


def rows_for(name: str, m: dict[str, object], what: str) -> list[dict[str, object]]:
    first_w, last_w, p99 = m["first_w"], m["last_w"], m["p99"]
    ren_t, raw_t, max_chunk, cold = m["ren_t"], m["raw_t"], m["max_chunk"], m["cold"]
    assert isinstance(first_w, list) and isinstance(last_w, list) and isinstance(p99, list)
    assert isinstance(ren_t, list) and isinstance(raw_t, list) and isinstance(max_chunk, list)
    assert isinstance(cold, tuple)
    ratios = [a / b for a, b in zip(ren_t, raw_t, strict=True)]
    window, n, byte_ratio, clean = m["window"], m["n"], float(m["bytes"]), bool(m["clean"])  # type: ignore[arg-type]
    return [
        C.row(f"{name}: render per chunk, first / last {window:,} chunks (mean)",
              median=f"{C.med(first_w)[0] * 1e6:.0f} / {C.med(last_w)[0] * 1e6:.0f} µs",
              minmax=f"last {C.med(last_w)[1] * 1e6:.0f}–{C.med(last_w)[2] * 1e6:.0f} µs",
              ref=f"p99 {C.med(p99)[0] * 1e6:.0f} µs, max {C.med(max_chunk)[0] * 1e3:.2f} ms",
              target="≤ 1 ms per chunk, flat; p99 < 1 ms",
              ok=max(C.med(first_w)[0], C.med(last_w)[0], C.med(p99)[0]) <= TARGET_CHUNK_S,
              note=f"cold first answer's slowest chunk {cold[1] * 1000:.0f} ms (one-off pygments set-up)"),
        C.row(f"{name}: render total, {what} in {n:,} chunks into a pty",
              median=f"{C.med(ren_t)[0] * 1000:.0f} ms",
              minmax=f"{min(ren_t) * 1000:.0f}–{max(ren_t) * 1000:.0f} ms",
              ref=f"raw write {C.med(raw_t)[0] * 1000:.0f} ms",
              target="≤ 8× raw time, < 3× raw bytes, screen = answer",
              ok=C.med(ratios)[0] <= TARGET_RATIO and byte_ratio < TARGET_BYTES and clean,
              note=f"{C.med(ratios)[0]:.1f}× raw ({min(ratios):.1f}–{max(ratios):.1f}, per round); "
                   f"{byte_ratio:.2f}× raw bytes; screen = answer: {'yes' if clean else 'NO'}"),
    ]


def main() -> int:
    from llmrepl.terminal.markdown import render_markdown

    quick = C.quick_flag()
    C.header("streaming render into a pty", quick)
    lines, n, rounds, copies = (200, 2000, 1, 20) if quick else (2000, 20000, 5, 100)
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"llmrepl-bench-render-{os.getpid()}"
    tmp.mkdir(exist_ok=True)
    code = answer(lines)
    print(f"   code answer: {lines:,} lines of argparse.py in a ```python fence, {len(code):,} characters, "
          f"{n:,} chunks (mean {len(code) / n:.1f} chars)")
    m_code = measure("code", code, chunks(code, n), rounds, tmp, code)
    prose = PROSE * copies
    pn = int(len(prose) / 3.7)
    print(f"   prose answer: Markdown, {copies} copies of a {PROSE.count(chr(10))}-line text, {len(prose):,} "
          f"characters, {pn:,} chunks, wrapped at {WIDTH} columns")
    expect = drawn(render_markdown(prose, True, WIDTH).replace("\r\n", "\n"))
    m_prose = measure("prose", prose, chunks(prose, pn), rounds, tmp, expect)
    cold = m_code["cold"]
    assert isinstance(cold, tuple)
    print(f"   cold first round (pygments import + lexer set-up, once per process): total {cold[0] * 1000:.0f} ms, "
          f"slowest chunk #{cold[2]} {cold[1] * 1000:.1f} ms")
    rows = rows_for("code", m_code, f"{lines:,} lines") + rows_for("prose", m_prose, f"{len(prose):,} characters")
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()
    return C.finish(rows, quick)


if __name__ == "__main__":
    sys.exit(main())
