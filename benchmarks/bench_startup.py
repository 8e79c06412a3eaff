"""exec -> first prompt drawn, in a real pty; median of 10, interleaved with python3 -q and IPython.

Each run forks the command in a fresh pseudo-terminal (pexpect, 120x40, TERM=xterm,
PROMPT_TOOLKIT_NO_CPR=1, a private HOME/LLMREPL_HOME, proxies pointed at a dead port) and
times from just before the fork to the moment the prompt's text is read from the pty.
llmrepl draws its prompt before prompt_toolkit has finished loading (keys typed meanwhile
wait in the terminal, byte for byte, and are read by prompt_toolkit): the script also
reports when a typed key is first echoed, i.e. when prompt_toolkit is live.
llmrepl gets ``--base-url`` on a closed local port, so it neither probes for a local
server nor touches the network. One warm-up round, then N counted rounds; the order of
the commands rotates every round. References in the same run: ``python3 -q`` (this venv's
interpreter), a bare prompt_toolkit ``PromptSession().prompt()`` (the floor for any
prompt_toolkit REPL), and IPython when installed. Target, a ratio in the same run: the paired median
is at most 1.3x the bare prompt_toolkit prompt (and below IPython's median when it is installed).

    python benchmarks/bench_startup.py [--quick]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

TARGET_RATIO = 1.3  # x the bare prompt_toolkit prompt, paired, same run


def commands(port: int) -> dict[str, tuple[list[str], bytes]]:
    cmds = {
        "llmrepl": ([C.LLMREPL, "--base-url", f"http://127.0.0.1:{port}/v1"], rb"llm>"),
        "python3 -q": ([sys.executable, "-q"], rb">>> "),
        # The floor for any prompt_toolkit REPL: import it and draw one prompt (perf.md: 107 ms idle).
        "prompt_toolkit floor": ([sys.executable, "-c",
                                  "from prompt_toolkit import PromptSession; PromptSession().prompt('llm> ')"], rb"llm>"),
    }
    if C.have_ipython():
        cmds["ipython"] = (
            [C.IPYTHON, "--no-banner", "--TerminalInteractiveShell.confirm_exit=False",
             "--HistoryManager.enabled=False"],
            # "In [1]: " is drawn as styled fragments: escape codes may sit between the parts.
            rb"In \[" + C.ESC.encode() + rb"1" + C.ESC.encode() + rb"\]:",
        )
    return cmds


def main() -> int:
    quick = C.quick_flag()
    C.header("exec -> first prompt drawn (real pty)", quick)
    rounds = 2 if quick else 10
    home = tempfile.mkdtemp(prefix="llmrepl-bench-home-")
    env = C.pty_env(home)
    port = C.closed_port()
    cmds = commands(port)
    names = list(cmds)
    print(f"   commands: {', '.join(names)}" + ("" if C.have_ipython() else
          "   (IPython is not installed in this venv: its reference is skipped; `pip install ipython` to add it)"))
    times: dict[str, list[float]] = {n: [] for n in names}
    # llmrepl draws its prompt before prompt_toolkit has loaded (keys typed meanwhile are kept):
    # also time when it is live, i.e. when a typed key is echoed back by prompt_toolkit
    live: list[float] = []
    for rnd in range(rounds + 1):  # round 0 is the warm-up
        order = names[rnd % len(names):] + names[: rnd % len(names)]
        for name in order:
            argv, pattern = cmds[name]
            child, t = C.spawn_until(argv, pattern, env)
            if name == "llmrepl":
                start = time.perf_counter() - t
                child.send("z")
                child.expect("z")
                if rnd:
                    live.append(time.perf_counter() - start)
            C.end_child(child)
            if rnd:
                times[name].append(t)
            time.sleep(0.25)
        if rnd:
            print(f"   round {rnd}: " + "  ".join(f"{n} {times[n][-1] * 1000:.0f} ms" for n in names))
    print()
    for n in names:
        print(f"   {n:22s} {C.fmt_mmm(times[n])}")
    lm = C.med(times["llmrepl"])[0]
    py = C.med(times["python3 -q"])[0]
    ratios = [a / b for a, b in zip(times["llmrepl"], times["python3 -q"], strict=True)]
    pt = C.med(times["prompt_toolkit floor"])[0]
    refs = [f"python3 -q {py * 1000:.0f} ms", f"bare prompt_toolkit {pt * 1000:.0f} ms"]
    ptr = [a / b for a, b in zip(times["llmrepl"], times["prompt_toolkit floor"], strict=True)]
    ok = C.med(ptr)[0] <= TARGET_RATIO
    note = f"{C.med(ratios)[0]:.1f}× python3 -q, {C.med(ptr)[0]:.2f}× bare prompt_toolkit (paired)"
    if "ipython" in times:
        ip = C.med(times["ipython"])[0]
        refs.append(f"IPython {ip * 1000:.0f} ms")
        ok = ok and lm < ip
        ipr = [a / b for a, b in zip(times["llmrepl"], times["ipython"], strict=True)]
        note += f"; {C.med(ipr)[0]:.2f}× IPython (paired)"
    else:
        note += "; IPython not installed: that reference is skipped"
    rows = [C.row(
        f"exec → first prompt drawn (pty, median of {rounds})",
        median=f"{lm * 1000:.0f} ms",
        minmax=f"{min(times['llmrepl']) * 1000:.0f}–{max(times['llmrepl']) * 1000:.0f} ms",
        ref=" · ".join(refs),
        target=f"≤ {TARGET_RATIO:g}× bare prompt_toolkit (and < IPython)",
        ok=ok,
        note=note,
    )]
    rows.append(C.row(
        f"exec → prompt live: a typed key echoed (pty, median of {rounds})",
        median=f"{C.med(live)[0] * 1000:.0f} ms",
        minmax=f"{min(live) * 1000:.0f}–{max(live) * 1000:.0f} ms",
        ref=f"bare prompt_toolkit prompt drawn {pt * 1000:.0f} ms",
        target="info: keys typed before this are kept",
        ok=None,
        note=f"{C.med(live)[0] / pt:.2f}× the bare prompt drawn; prompt_toolkit loaded and echoing; "
             "the prompt itself was drawn earlier",
    ))
    return C.finish(rows, quick)


if __name__ == "__main__":
    sys.exit(main())
