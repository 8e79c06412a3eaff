"""Run the real ``llmrepl`` interactive start-up with two benchmark hooks (used by bench_imports/bench_startup).

* ``BENCH_IMPORTS_OUT=path``: when the first prompt is about to be drawn (prompt_toolkit's
  ``pre_run``, i.e. before the background warm-up thread starts), write the sorted list of
  ``sys.modules`` to ``path`` as JSON.
* ``BENCH_WARM_OUT=path``: from that moment, watch for the warm-up to finish (openai imported
  and the client built) and write the seconds it took to ``path`` (``null`` if not within 20 s).
* ``BENCH_DUMP=path``: a thread waits for ``path + ".go"`` to appear, then writes the sorted
  ``sys.modules`` to ``path`` (what an idle REPL holds, for bench_memory's diagnosis).
* ``BENCH_NO_WARMUP=1``: do not start the background warm-up (openai import + client), so
  ``-X importtime`` output before the prompt shows the main thread's imports only.

Everything else is ``llmrepl.cli.main()`` unchanged: ``python _imports_probe.py ARGS`` = ``llmrepl ARGS``.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

from llmrepl import cli
from llmrepl.terminal import interactive as ui

_orig = ui.TerminalUI._first_prompt_drawn


def _first_prompt_drawn(self: ui.TerminalUI) -> None:
    out = os.environ.get("BENCH_IMPORTS_OUT")
    if out:
        with open(out, "w") as f:
            json.dump(sorted(sys.modules), f)
    warm_out = os.environ.get("BENCH_WARM_OUT")
    if warm_out:
        model = self.session.model
        t0 = time.perf_counter()

        def watch() -> None:
            took = None
            while time.perf_counter() - t0 < 20:
                if "openai" in sys.modules and getattr(model, "_client", None) is not None:
                    took = time.perf_counter() - t0
                    break
                time.sleep(0.005)
            with open(warm_out, "w") as f:
                json.dump(took, f)

        threading.Thread(target=watch, daemon=True).start()
    if os.environ.get("BENCH_NO_WARMUP") == "1":
        return
    _orig(self)


def _dump_when_asked(path: str) -> None:
    while not os.path.exists(path + ".go"):
        time.sleep(0.05)
    with open(path + ".tmp", "w") as f:
        json.dump(sorted(sys.modules), f)
    os.replace(path + ".tmp", path)


if os.environ.get("BENCH_DUMP"):
    threading.Thread(target=_dump_when_asked, args=(os.environ["BENCH_DUMP"],), daemon=True).start()

ui.TerminalUI._first_prompt_drawn = _first_prompt_drawn  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(cli.main())
