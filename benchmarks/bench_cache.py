"""How much of each request a server can take from its prompt cache (issue 13).

A 60-request session through the real openai SDK against tests/fakeserver.py at the default
8,192-token window: 30 turns, each a question, a run_python tool call whose cell defines a
new variable and prints ~1 KB (so the namespace digest changes every turn), and a short
answer. The session outgrows the window, so history is trimmed along the way. The fake
server reports ``cached_tokens`` as OpenAI does (the longest prefix shared with an earlier
request, 128-token blocks past the first 1,024; a token = 4 characters of the prompt as a
chat template lays it out), so the figures are the server's view, whatever the client reads.

Targets: >= 90 % of all prompt tokens served from cache; tokens re-processed (prompt minus
cached) flat: request 60 against request 10 within 1.5x, each taken as the median of the ten
requests ending there (a single request may be the one where history is cut and all of it
is re-processed; the single figures are printed too).

    python benchmarks/bench_cache.py [--quick] [--tree PATH]

``--tree PATH`` imports llmrepl from another checkout (e.g. a worktree of an older commit)
to measure "before"; the fake server always comes from this checkout.

A real ``llama-server`` too (by hand, never in CI): with ``LLAMA_SERVER`` naming the binary,
the same kind of session (60 requests: each turn a ``/py`` cell that defines a variable and
prints ~1 KB, then a question) runs against it with a tiny random-weight model
(benchmarks/llama_tiny.py; ``LLAMA_MODEL`` names a GGUF to use instead, else it is written
from ``LLAMA_VOCAB``, default ``models/ggml-vocab-qwen2.gguf`` beside the binary's source
tree). The server's log line "prompt eval time = ... / N tokens" is the count of tokens it
re-processed for each request; its usage reports ``cached_tokens``. Building it:
llama.cpp is vendored in the ``llama-cpp-python`` sdist on PyPI; ``cmake -B build &&
cmake --build build --target llama-server`` (about 10 minutes on 2 cores).
"""

from __future__ import annotations

import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
_argv = sys.argv[1:]
if "--tree" in _argv:  # before anything imports llmrepl
    _i = _argv.index("--tree")
    sys.path.insert(0, _argv[_i + 1])
    del _argv[_i : _i + 2]

import _common as C  # noqa: E402
from fakeserver import FakeOpenAI  # noqa: E402

TARGET_SHARE = 0.90
TARGET_RATIO = 1.5
WINDOW = 8192
RESERVE = 1024


def run_session(turns: int, window: int = WINDOW) -> tuple[list[int], list[int], str]:
    """(prompt tokens, cached tokens) per request, and where llmrepl was imported from."""
    import llmrepl
    from llmrepl.context.builder import Context
    from llmrepl.engine.protocols import AutoApprove, NullDisplay
    from llmrepl.engine.session import Session
    from llmrepl.execution.executor import Executor
    from llmrepl.model.client import OpenAIModel

    with FakeOpenAI() as srv:
        srv.measure_usage = True
        model = OpenAIModel("fake-model", base_url=srv.base_url, api_key="k", max_retries=0)
        session = Session(model, Executor(), display=NullDisplay(),
                          context=Context(context_window=window, reserve=RESERVE))
        for i in range(turns):
            code = (f"table_{i} = {{'row': {i}, 'values': list(range({i % 7 + 3}))}}\n"
                    f"for k in range(12):\n    print('turn {i} line', k, 'x' * 60)")
            srv.reply(f"Defining table_{i}.", tool_calls=[("run_python", json.dumps({"code": code}))])
            srv.reply(f"table_{i} holds row {i}; the printout shows twelve lines. " + "Noted. " * 20)
            session.step(f"Question {i}: please build table_{i} and print a few lines about it. "
                         + "Some context for the question. " * 8, AutoApprove())
        prompts = [(len(p) + 3) // 4 for p in srv.prompts]
        return prompts, list(srv.cached), str(Path(llmrepl.__file__).resolve().parent)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tiny_model(binary: Path, folder: Path) -> Path:
    given = os.environ.get("LLAMA_MODEL")
    if given:
        return Path(given)
    vocab = Path(os.environ.get("LLAMA_VOCAB") or binary.resolve().parents[2] / "models" / "ggml-vocab-qwen2.gguf")
    import llama_tiny

    out = folder / "tiny.gguf"
    llama_tiny.write_model(vocab, out)
    return out


def run_llama_server(binary: Path, turns: int, window: int = WINDOW) -> tuple[list[int], list[int], list[int]]:
    """(prompt tokens, cached tokens) per request as the server's usage reports them, and the
    tokens its log says it evaluated for each prompt."""
    import urllib.request

    from llmrepl.context.builder import Context
    from llmrepl.engine.protocols import AutoApprove, NullDisplay
    from llmrepl.engine.session import Session
    from llmrepl.execution.executor import Executor
    from llmrepl.model.client import OpenAIModel

    with tempfile.TemporaryDirectory() as tmp:
        model_path = _tiny_model(binary, Path(tmp))
        port = _free_port()
        log_path = Path(tmp) / "server.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([str(binary), "-m", str(model_path), "--host", "127.0.0.1", "--port", str(port),
                                     "-c", str(window), "-np", "1", "--jinja", "-t", "2"],
                                    stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 120
            while True:  # /health answers 200 once the model is loaded
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    sys.exit("llama-server did not start:\n" + log_path.read_text(errors="replace")[-2000:])
                time.sleep(0.2)
            model = OpenAIModel("tiny", base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0,
                                max_output_tokens=8, temperature=0.0)
            session = Session(model, Executor(), display=NullDisplay(),
                              context=Context(context_window=window, reserve=RESERVE))
            prompts: list[int] = []
            cached: list[int] = []
            for i in range(turns):
                session.run_direct(f"table_{i} = {{'row': {i}, 'values': list(range({i % 7 + 3}))}}\n"
                                   f"for k in range(12):\n    print('turn {i} line', k, 'x' * 60)")
                before = (session.usage["prompt_tokens"], session.usage["cached_tokens"])
                session.step(f"Question {i}: what does table_{i} hold? " + "Some context for the question. " * 8,
                             AutoApprove())
                prompts.append(session.usage["prompt_tokens"] - before[0])
                cached.append(session.usage["cached_tokens"] - before[1])
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        evaluated = [int(m) for m in re.findall(r"prompt eval time =.*?/\s*(\d+) tokens", log_path.read_text(errors="replace"))]
    return prompts, cached, evaluated


def llama_rows(binary: Path, quick: bool) -> list[dict[str, Any]]:
    turns = 6 if quick else 60
    prompts, cached, evaluated = run_llama_server(binary, turns)
    share = sum(cached) / max(sum(prompts), 1)
    n = len(evaluated)
    m10, m60 = statistics.median(evaluated[: min(10, n)]), statistics.median(evaluated[-10:])
    ratio = m60 / max(m10, 1)
    print(f"   llama-server {binary}: {len(prompts)} requests; prompt tokens {sum(prompts):,}, "
          f"cached {sum(cached):,} ({share:.1%})")
    print("   evaluated per request (its log): " + " ".join(str(x) for x in evaluated))
    # its ceiling: the same session in a window it never outgrows (each request here is one
    # turn, a /py result and a question, all of it new: ~440 tokens a request)
    open_prompts, open_cached, _ = run_llama_server(binary, turns, window=4 * WINDOW)
    ceiling = sum(open_cached) / max(sum(open_prompts), 1)
    print(f"   llama-server never cut (-c {4 * WINDOW:,}): {sum(open_cached):,} of {sum(open_prompts):,} "
          f"cached ({ceiling:.1%})")
    return [
        C.row("llama-server: prompt tokens served from its cache", median=f"{share:.1%}",
              target=f">= {TARGET_SHARE:.0%}", ok=share >= TARGET_SHARE,
              note=f"{sum(cached):,} of {sum(prompts):,}; tiny random model, -c {WINDOW}"),
        C.row("llama-server: tokens evaluated per request, last 10 / first 10 (medians)", median=f"{ratio:.2f}x",
              target=f"<= {TARGET_RATIO}x", ok=ratio <= TARGET_RATIO,
              note=f"{m60:,.0f} vs {m10:,.0f} (its log's prompt eval counts)"),
        C.row(f"llama-server ceiling: the same session never cut (-c {4 * WINDOW:,})", median=f"{ceiling:.1%}",
              ok=None, note="what only the new part of each request leaves uncached"),
    ]


def main() -> int:
    quick = C.quick_flag(_argv)
    C.header("prompt caching: a 60-request session at an 8,192 window (fake server, OpenAI's rule)", quick)
    turns = 30
    prompts, cached, where = run_session(turns)
    n = len(prompts)
    share = sum(cached) / max(sum(prompts), 1)
    fresh = [p - c for p, c in zip(prompts, cached, strict=True)]
    r10, r60 = fresh[min(9, n - 1)], fresh[min(59, n - 1)]
    # one request may be the one where history is cut (all of it re-processed), so "request
    # 10" and "request 60" are the medians of the ten requests ending there
    m10, m60 = statistics.median(fresh[:10]), statistics.median(fresh[-10:])
    ratio = m60 / max(m10, 1)
    print(f"   llmrepl from {where}")
    print(f"   {n} requests; prompt tokens {sum(prompts):,}, cached {sum(cached):,} ({share:.1%})")
    print("   re-processed per request: " + " ".join(str(x) for x in fresh))
    print(f"   request 10: {prompts[min(9, n - 1)]:,} prompt, {r10:,} re-processed; "
          f"request {n}: {prompts[-1]:,} prompt, {r60:,} re-processed; "
          f"medians of requests 1-10 / {n - 9}-{n}: {m10:,.0f} / {m60:,.0f} = {ratio:.2f}")
    # the ceiling: the same session with a window it never outgrows (no cut at all), so the
    # share is bounded only by each request's necessarily new part
    open_prompts, open_cached, _ = run_session(turns, window=100_000)
    ceiling = sum(open_cached) / max(sum(open_prompts), 1)
    print(f"   the same session never cut (100,000 window): {sum(open_cached):,} of {sum(open_prompts):,} "
          f"cached ({ceiling:.1%})")
    rows: list[dict[str, Any]] = [
        C.row("prompt tokens served from cache (60 requests, 8,192 window)", median=f"{share:.1%}",
              target=f">= {TARGET_SHARE:.0%}", ok=share >= TARGET_SHARE,
              note=f"{sum(cached):,} of {sum(prompts):,}"),
        C.row("tokens re-processed per request, requests 51-60 / 1-10 (medians)", median=f"{ratio:.2f}x",
              target=f"<= {TARGET_RATIO}x", ok=ratio <= TARGET_RATIO,
              note=f"{m60:,.0f} vs {m10:,.0f}; single requests 60 / 10: {r60:,} / {r10:,}"),
        C.row("ceiling: the same session never cut (100,000 window)", median=f"{ceiling:.1%}",
              ok=None, note="what only the new part of each request leaves uncached"),
    ]
    binary = os.environ.get("LLAMA_SERVER")
    if binary:
        rows += llama_rows(Path(binary), quick)
    return C.finish(rows, quick)


if __name__ == "__main__":
    sys.exit(main())
