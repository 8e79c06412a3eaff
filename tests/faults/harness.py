"""One harness for the fault catalogue (issue 5, ../shared/research/reliability.md §5).

Every fault test runs the *installed* ``llmrepl`` command (batch mode through a pipe, or an
interactive session in a pseudo-terminal) and then checks the four properties of the issue
with ONE call, ``result.assert_ok(...)``:

  (a) survived  — the REPL is still usable afterwards: a last ``/py print("alive-" + "check")``
                  prints ``alive-check`` (the line is appended by the harness; in a pty the
                  prompt comes back and the same ``/py`` works);
  (b) clear     — what the person saw holds no Python traceback from llmrepl itself (a user
                  cell's traceback is fine: llmrepl's own would show ``llmrepl/`` frames), no
                  prompt_toolkit "Unhandled exception" and no "Exception ignored";
  (c) journaled — every journal line is valid UTF-8 JSON; each message the server received
                  is a ``user`` record; each ``/py`` that ran has a ``cell_start``; in batch
                  mode every line shown on stdout (answer text, cell output, values, errors;
                  llmrepl's own ``llmrepl:`` notices aside) is in the journal; plus any
                  ``journaled=`` needles the test names;
  (d) no key    — the API key (``KEY``) appears in no stdout, stderr, journal, history or
                  other file under ``$LLMREPL_HOME``.

``assert_ok`` reports every violated property at once, so a failure says which of the four
broke (and a test's own fault-specific assertions come after it).
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pexpect
from launch import DIMENSIONS, LLMREPL, PROMPT, child_env, spawn

__all__ = [
    "KEY",
    "ALIVE_LINE",
    "ALIVE_OUT",
    "PROMPT",
    "CONFIRM",
    "FaultResult",
    "fault_run",
    "spawn_repl",
    "PtyRepl",
    "write_config",
    "strip_ansi",
    "written_mid_line",
]

KEY = "sk-fault-secret-0123456789abcdefXYZ"
ALIVE_LINE = '/py print("alive-" + "check")'
ALIVE_OUT = "alive-check"
CONFIRM = "Run this code? [Y/n/e/a]"

_HEAD_BYTES = 8 << 20  # what is kept of a huge stdout: the first 8 MiB ...
_TAIL_BYTES = 2 << 20  # ... and the last 2 MiB (the rest is only counted)

_ANSI = re.compile(
    r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[PX^_][^\x1b]*\x1b\\|[@-Z\\-_=>])"
    r"|[\x90\x98\x9d\x9e\x9f][^\x07\x1b\x9c]*(?:\x07|\x9c)?"  # the 8-bit (C1) string forms
)
_CTRL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_OWN_FRAME = re.compile(r'File "[^"\n]*[/\\]llmrepl[/\\][^"\n]*"')
_TRACEBACK = "Traceback (most recent call last)"


def strip_ansi(text: str) -> str:
    """Terminal text as a person reads it: escape sequences and control characters removed."""
    text = text.replace("\r\n", "\n")
    return _CTRL.sub("", _ANSI.sub("", text))


_OUT_N = re.compile(r"^Out\[\d+\]: ?")  # IPython's label before a cell's value: llmrepl's, not the cell's
_STATUS = re.compile(r"^(✓|✗|ok|error:) .*(·|-) \d+(\.\d+)? s$|^(✓|✗|ok|error:) .*(·|-) \d+ min \d+ s$")


def _norm(text: str) -> str:
    return strip_ansi(text).replace("\r", "")


def write_config(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------------------
# the outcome and the four checks
# ---------------------------------------------------------------------------------------


@dataclass
class FaultResult:
    """What one llmrepl run left behind, and the four checks of the issue."""

    stdout: str
    stderr: str
    returncode: int | None
    home: Path
    lines: list[str] = field(default_factory=list)   # what was typed / piped in
    server: Any = None
    timed_out: bool = False                          # the harness had to kill it
    stdout_bytes: int = 0                            # everything written to stdout, counted
    elapsed: float = 0.0
    rss_kb: int | None = None                        # peak RSS of llmrepl (measure_rss=True)
    pty: bool = False
    alive_seen: bool | None = None                   # pty: alive-check came back
    notes: list[str] = field(default_factory=list)   # harness observations (pty timeouts, ...)
    _journal: tuple[list[dict[str, Any]], list[str]] | None = None

    # -- what was left on disk -----------------------------------------------------------
    @property
    def shown(self) -> str:
        """Everything the person saw (stdout and stderr), escape sequences removed."""
        return _norm(self.stdout) + "\n" + _norm(self.stderr)

    def journal_files(self) -> list[Path]:
        return sorted((self.home / "sessions").glob("*.jsonl")) if (self.home / "sessions").is_dir() else []

    def journal(self) -> tuple[list[dict[str, Any]], list[str]]:
        """All records of every session file, and the problems found reading them."""
        if self._journal is None:
            records: list[dict[str, Any]] = []
            problems: list[str] = []
            for path in self.journal_files():
                raw = path.read_bytes()
                lines = raw.splitlines()
                torn = bool(raw) and not raw.endswith(b"\n")
                for n, line in enumerate(lines, 1):
                    if not line.strip():
                        continue
                    if torn and n == len(lines):
                        problems.append(f"{path.name}:{n}: last line is torn (no newline): {line[:80]!r}")
                        continue
                    try:
                        rec = json.loads(line.decode("utf-8"))
                    except UnicodeDecodeError as e:
                        problems.append(f"{path.name}:{n}: not valid UTF-8 ({e.reason} at byte {e.start})")
                        continue
                    except ValueError as e:
                        problems.append(f"{path.name}:{n}: not JSON ({e}): {line[:120]!r}")
                        continue
                    if not isinstance(rec, dict) or "event" not in rec:
                        problems.append(f"{path.name}:{n}: not a record with an 'event': {line[:120]!r}")
                        continue
                    records.append(rec)
            self._journal = (records, problems)
        return self._journal

    @property
    def records(self) -> list[dict[str, Any]]:
        return self.journal()[0]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("event") == name]

    def journal_text(self) -> str:
        """Every string value in the journal, one per line (for 'is it in there' checks)."""
        out: list[str] = []

        def walk(v: Any) -> None:
            if isinstance(v, str):
                out.append(v)
            elif isinstance(v, dict):
                for x in v.values():
                    walk(x)
            elif isinstance(v, list):
                for x in v:
                    walk(x)

        for rec in self.records:
            walk(rec)
        return "\n".join(out)

    def history_bytes(self) -> bytes:
        p = self.home / "history"
        return p.read_bytes() if p.is_file() else b""

    # -- (a) -----------------------------------------------------------------------------
    def survived_problems(self) -> list[str]:
        p: list[str] = []
        if self.timed_out:
            p.append(f"llmrepl hung: killed by the harness after {self.elapsed:.1f} s")
        if self.returncode is not None and self.returncode < 0:
            p.append(f"llmrepl died from signal {-self.returncode} ({_signame(-self.returncode)})")
        if self.pty:
            if not self.alive_seen:
                p.append("after the fault the prompt did not come back for a working /py "
                         f"({'; '.join(self.notes) or 'no alive-check'})")
        else:
            shown_lines = [line.strip() for line in _norm(self.stdout).splitlines()]
            if ALIVE_OUT not in shown_lines:
                p.append(f"the next /py after the fault did not run: no '{ALIVE_OUT}' line on stdout "
                         f"(exit code {self.returncode})")
        alive_cells = [r for r in self.events("cell_end") if ALIVE_OUT in str(r.get("output", ""))]
        if not alive_cells and not p:
            p.append("the alive-check cell ran but is not in the journal")
        return p

    # -- (b) -----------------------------------------------------------------------------
    def clarity_problems(self) -> list[str]:
        p: list[str] = []
        for name, text in (("stdout", self.stdout), ("stderr", self.stderr)):
            text = _norm(text)
            for block in _traceback_blocks(text):
                if _OWN_FRAME.search(block):
                    last = [ln for ln in block.splitlines() if ln.strip()][-1:]
                    p.append(f"{name} shows a traceback from llmrepl itself: ...{(last or [''])[0][:200]!r}")
                    break
            for marker in ("Unhandled exception in event loop", "Exception ignored in",
                           "Press ENTER to continue"):
                if marker in text:
                    p.append(f"{name} shows {marker!r}")
        return p

    # -- (c) -----------------------------------------------------------------------------
    def journal_problems(self, needles: Iterable[str | tuple[str, str]] = (),
                         check_shown: bool = True) -> list[str]:
        records, problems = self.journal()
        p = list(problems)
        if not self.journal_files():
            p.append(f"no journal file under {self.home / 'sessions'}")
            return p
        users = [str(r.get("text", "")) for r in self.events("user")]
        # every message the server actually received is a `user` record
        if self.server is not None:
            received = set()
            for req in self.server.requests:
                for m in req.get("messages", []):
                    if m.get("role") == "user" and isinstance(m.get("content"), str):
                        received.add(m["content"])
            for line in self.lines:
                text = line.strip()
                if not text or text.startswith("/"):
                    continue
                sent = any(text in c for c in received)
                if sent and not any(text == u or text in u for u in users):
                    p.append(f"message {text[:60]!r} reached the server but has no 'user' record")
        # every /py that ran has a cell_start with its code
        starts = [str(r.get("code", "")) for r in self.events("cell_start")]
        for line in self.lines:
            s = line.strip()
            if s.startswith("/py ") and s != ALIVE_LINE and s[4:].strip():
                code = s[4:].strip()
                if not any(code == c for c in starts):
                    p.append(f"/py line {code[:60]!r} has no cell_start record")
        corpus = self.journal_text()
        corpus_n = _norm(corpus)
        for needle in needles:
            event, text = needle if isinstance(needle, tuple) else (None, needle)
            if event is None:
                ok = text in corpus or _norm(text) in corpus_n
            else:
                blob = json.dumps(self.events(event), ensure_ascii=False)
                ok = any(_contains(r, text) for r in self.events(event)) or text in blob
            if not ok:
                where = f"a '{event}' record" if event else "the journal"
                p.append(f"{text[:80]!r} is missing from {where}")
        if check_shown and not self.pty:
            p.extend(self._shown_lines_missing(corpus_n))
        return p

    def _shown_lines_missing(self, corpus_n: str) -> list[str]:
        """Batch stdout: every line the person saw (llmrepl's own notices aside) is journaled.

        llmrepl's own marks are not the cell's: a cell's status line, the ``Out[N]:`` before a
        value; and an answer is shown rendered (Markdown marks taken out), so the corpus has
        each journaled answer rendered too, as the plain display renders it."""
        from llmrepl.terminal.markdown import render_markdown

        answers = [str(r.get("text", "")) for r in self.events("assistant")]
        corpus_n += "\n" + "\n".join(render_markdown(a, False) for a in answers if a)
        lines = set(corpus_n.splitlines())
        stripped = {ln.strip() for ln in lines}
        missing: list[str] = []
        for raw in _norm(self.stdout).splitlines():
            line = _OUT_N.sub("", raw.strip())
            if not line or line.startswith(("llmrepl:", "run_python:", "[harness:")) or _STATUS.match(line):
                continue
            pieces = [line] if len(line) <= 4000 else [line[:2000], line[-2000:]]
            for piece in pieces:
                if piece in stripped or piece in lines:
                    continue
                if piece in corpus_n:
                    continue
                missing.append(piece)
            if len(missing) > 3:
                break
        return [f"shown on stdout but not in the journal: {m[:100]!r}" for m in missing[:3]]

    # -- (d) -----------------------------------------------------------------------------
    def key_problems(self) -> list[str]:
        p: list[str] = []
        if KEY in self.stdout:
            p.append("the API key is on stdout")
        if KEY in self.stderr:
            p.append("the API key is on stderr")
        needle = KEY.encode()
        if self.home.exists():
            for path in self.home.rglob("*"):
                try:
                    if path.is_file() and not path.is_symlink() and needle in path.read_bytes():
                        p.append(f"the API key is in {path.relative_to(self.home)}")
                except OSError:
                    pass
        return p

    # -- all four ------------------------------------------------------------------------
    def assert_ok(self, *, journaled: Iterable[str | tuple[str, str]] = (), survived: bool = True,
                  check_shown: bool = True) -> None:
        """(a) survived, (b) clear, (c) journaled, (d) no key — all reported together."""
        problems: list[str] = []
        if survived:
            problems += [f"(a) {x}" for x in self.survived_problems()]
        problems += [f"(b) {x}" for x in self.clarity_problems()]
        problems += [f"(c) {x}" for x in self.journal_problems(journaled, check_shown)]
        problems += [f"(d) {x}" for x in self.key_problems()]
        if problems:
            raise AssertionError("fault not handled:\n  " + "\n  ".join(problems) + "\n" + self.excerpt())

    def assert_survived(self) -> None:
        _raise(self.survived_problems(), self)

    def assert_clear(self) -> None:
        _raise(self.clarity_problems(), self)

    def assert_journaled(self, *needles: str | tuple[str, str]) -> None:
        _raise(self.journal_problems(needles), self)

    def assert_no_key(self) -> None:
        _raise(self.key_problems(), self)

    def excerpt(self, n: int = 1500) -> str:
        out, err = _norm(self.stdout), _norm(self.stderr)
        cut = lambda s: s if len(s) <= n else s[: n // 2] + "\n[...]\n" + s[-n // 2:]  # noqa: E731
        return (f"--- exit {self.returncode}, {self.elapsed:.1f} s, stdout {self.stdout_bytes:,} bytes\n"
                f"--- stdout:\n{cut(out)}\n--- stderr:\n{cut(err)}")

    # -- helpers for the fault-specific assertions ----------------------------------------
    def said(self, *words: str) -> bool:
        """Some line the person saw mentions one of ``words`` (case-insensitive)."""
        low = self.shown.lower()
        return any(w.lower() in low for w in words)

    def request_texts(self) -> list[str]:
        """The content of every message of every request the server got, as one string each."""
        out = []
        for req in (self.server.requests if self.server is not None else []):
            out.append(json.dumps(req.get("messages", []), ensure_ascii=False))
        return out


def _contains(value: Any, text: str) -> bool:
    if isinstance(value, str):
        return text in value or _norm(text) in _norm(value)
    if isinstance(value, dict):
        return any(_contains(v, text) for v in value.values())
    if isinstance(value, list):
        return any(_contains(v, text) for v in value)
    return False


def _traceback_blocks(text: str) -> list[str]:
    blocks = []
    start = 0
    while (i := text.find(_TRACEBACK, start)) >= 0:
        j = text.find(_TRACEBACK, i + 1)
        blocks.append(text[i: j if j >= 0 else i + 20000])
        start = i + 1
    return blocks


def _signame(n: int) -> str:
    try:
        return signal.Signals(n).name
    except ValueError:
        return "?"


def _raise(problems: list[str], result: FaultResult) -> None:
    if problems:
        raise AssertionError("\n  ".join(problems) + "\n" + result.excerpt())


# ---------------------------------------------------------------------------------------
# batch mode: stdin through a pipe
# ---------------------------------------------------------------------------------------


class _Reader(threading.Thread):
    """Drain a pipe, keeping the head and the tail (a cell may print a gigabyte)."""

    def __init__(self, stream: Any) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def run(self) -> None:
        read = self.stream.read1 if hasattr(self.stream, "read1") else self.stream.read
        while True:
            try:
                chunk = read(1 << 20)
            except (OSError, ValueError):
                break
            if not chunk:
                break
            self.total += len(chunk)
            room = _HEAD_BYTES - len(self.head)
            if room > 0:
                self.head += chunk[:room]
                chunk = chunk[room:]
            if chunk:
                self.tail += chunk
                if len(self.tail) > 2 * _TAIL_BYTES:
                    del self.tail[: len(self.tail) - _TAIL_BYTES]

    def text(self) -> str:
        tail = bytes(self.tail[-_TAIL_BYTES:])
        dropped = self.total - len(self.head) - len(tail)
        mid = f"\n[harness: {dropped:,} bytes of stdout not kept]\n".encode() if dropped > 0 else b""
        return (bytes(self.head) + mid + tail).decode("utf-8", "replace")


def _key_env(key: str | None, env: dict[str, str] | None) -> dict[str, str]:
    """The variables a fault run adds to the child's environment: the key, then the test's own."""
    extra = {} if key is None else {"OPENAI_API_KEY": key}
    extra.update(env or {})
    return extra


def _prepare(server: Any, key: str | None) -> None:
    """The fake server insists on the key, and answers "Noted." once its queue is empty
    (so a result fed back to the model never meets "no reply queued")."""
    if server is None:
        return
    if server.require_key is None and key is not None:
        server.require_key = key
    if server.default_reply is None:
        server.default_reply = "Noted."


_RSS_WRAPPER = (
    "import os, resource, subprocess, sys\n"
    "p = subprocess.run(sys.argv[2:])\n"
    "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n"
    "sys.exit(p.returncode if p.returncode >= 0 else 128 - p.returncode)\n"
)


def fault_run(
    server: Any,
    lines: Sequence[str],
    *,
    args: Sequence[str] = (),
    yes: bool = False,
    base_url: str | None = None,
    alive: bool = True,
    timeout: float = 60,
    env: dict[str, str] | None = None,
    home: Path | None = None,
    measure_rss: bool = False,
    preexec_fn: Callable[[], None] | None = None,
    key: str | None = KEY,
    command: Sequence[str] | None = None,
) -> FaultResult:
    """Pipe ``lines`` (then the alive-check ``/py``) into ``llmrepl`` and collect everything.

    ``server`` is the fake server (or None); llmrepl is pointed at it with ``--base-url``
    unless ``base_url`` says otherwise, and the server insists on ``KEY``. ``yes`` adds
    ``-y`` so generated code runs. The run is killed after ``timeout`` seconds (reported
    as a hang by ``assert_ok``).
    """
    run_env = child_env(**_key_env(key, env))
    home = home or Path(run_env["LLMREPL_HOME"])
    _prepare(server, key)
    argv = list(command) if command is not None else [LLMREPL]
    url = base_url if base_url is not None else (server.base_url if server is not None else None)
    if url and command is None:
        argv += ["--base-url", url]
    if yes:
        argv.append("-y")
    argv += list(args)
    rss_file = None
    if measure_rss:
        rss_file = home.parent / f"rss-{os.getpid()}-{time.monotonic_ns()}.txt"
        argv = [sys.executable, "-c", _RSS_WRAPPER, str(rss_file), *argv]
    all_lines = list(lines) + ([ALIVE_LINE] if alive else [])
    data = "".join(line + "\n" for line in all_lines).encode("utf-8", "surrogatepass")
    start = time.monotonic()
    # Not launch.run: a cell may print a gigabyte (only the head and tail are kept), and a
    # hung run is killed with its whole process group.
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=run_env, preexec_fn=preexec_fn, start_new_session=True)
    out, err = _Reader(proc.stdout), _Reader(proc.stderr)
    out.start()
    err.start()

    def feed() -> None:
        try:
            assert proc.stdin is not None
            proc.stdin.write(data)
            proc.stdin.close()
        except OSError:
            pass

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    timed_out = False
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            proc.kill()
        proc.wait()
    _close_pipes(proc, feeder, out, err)
    rss = None
    if rss_file is not None and rss_file.exists():
        rss = int(rss_file.read_text() or 0)
        rss_file.unlink()
    return FaultResult(
        stdout=out.text(), stderr=err.text(), returncode=proc.returncode, home=home,
        lines=all_lines, server=server, timed_out=timed_out, stdout_bytes=out.total,
        elapsed=time.monotonic() - start, rss_kb=rss,
    )


def _close_pipes(proc: subprocess.Popen[bytes], feeder: threading.Thread, *readers: _Reader) -> None:
    """Wait for the readers to drain stdout and stderr, then close all three pipes (an unclosed
    pipe is a ResourceWarning, and the suite must leave none). A pipe a process started by a
    cell still holds open ends with that process (the group is killed); a pipe whose reader is
    still blocked is left alone, as closing it would hang."""
    for reader in readers:
        reader.join(10)
        if reader.is_alive():
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            reader.join(5)
    feeder.join(5)
    pipes = [(proc.stdout, readers[0]), (proc.stderr, readers[1]), (proc.stdin, feeder)]
    for pipe, user in pipes:
        if pipe is not None and not user.is_alive():
            try:
                pipe.close()
            except OSError:  # stdin with unsent bytes: the process is gone
                pass


# ---------------------------------------------------------------------------------------
# interactive mode: a real pseudo-terminal
# ---------------------------------------------------------------------------------------


class PtyRepl:
    """An interactive llmrepl in a pty. ``finish()`` does the alive check and returns a FaultResult."""

    def __init__(self, child: pexpect.spawn, log: io.StringIO, home: Path, server: Any) -> None:
        self.child = child
        self.log = log
        self.home = home
        self.server = server
        self.typed: list[str] = []
        self.notes: list[str] = []

    # typing
    def send(self, text: str) -> None:
        self.child.send(text)

    def ask(self, text: str) -> None:
        """Type a line and press Enter."""
        self.typed.append(text)
        self.child.send(text + "\r")

    def intr(self) -> None:
        self.child.sendintr()

    def expect(self, text: str, timeout: float = 20) -> None:
        self.child.expect_exact(text, timeout=timeout)

    def expect_re(self, pattern: str, timeout: float = 20) -> None:
        self.child.expect(pattern, timeout=timeout)

    def try_expect(self, text: str, timeout: float = 10) -> bool:
        try:
            self.child.expect_exact(text, timeout=timeout)
            return True
        except (pexpect.TIMEOUT, pexpect.EOF) as e:
            self.notes.append(f"waited for {text!r}: {type(e).__name__}")
            return False

    def since(self, marker: str) -> str:
        """What the terminal showed after the last ``marker`` (escape sequences removed)."""
        text = strip_ansi(self.log.getvalue())
        i = text.rfind(marker)
        return text[i:] if i >= 0 else text

    @property
    def transcript(self) -> str:
        return strip_ansi(self.log.getvalue())

    def finish(self, *, alive: bool = True, timeout: float = 15) -> FaultResult:
        """The alive check (a /py after the fault), then Ctrl-D; collect everything."""
        alive_seen: bool | None = None
        start = time.monotonic()
        if alive and self.child.isalive():
            # the prompt must be back before we type (a second prompt_toolkit app would eat keys)
            ok = self.try_expect(PROMPT, timeout) if not _ends_with_prompt(self.log.getvalue()) else True
            self.typed.append(ALIVE_LINE)
            self.child.send(ALIVE_LINE + "\r")
            alive_seen = ok and self.try_expect(ALIVE_OUT, timeout) and self.try_expect(PROMPT, timeout)
            if not alive_seen and not ok:
                alive_seen = self.try_expect(ALIVE_OUT, 2)
        elif alive:
            alive_seen = False
            self.notes.append("llmrepl had already exited")
        if self.child.isalive():
            self.child.sendeof()
            try:
                self.child.expect(pexpect.EOF, timeout=5)
            except pexpect.TIMEOUT:
                self.notes.append("Ctrl-D did not end llmrepl")
        else:
            try:
                self.child.expect(pexpect.EOF, timeout=1)
            except (pexpect.TIMEOUT, pexpect.EOF):
                pass
        self.child.close(force=True)
        code = self.child.exitstatus if self.child.exitstatus is not None else (
            -self.child.signalstatus if self.child.signalstatus else None)
        raw = self.log.getvalue()
        return FaultResult(
            stdout=raw, stderr="", returncode=code, home=self.home, lines=self.typed, server=self.server,
            timed_out=False, stdout_bytes=len(raw), elapsed=time.monotonic() - start, pty=True,
            alive_seen=alive_seen, notes=self.notes,
        )


_NOT_ERASE = re.compile(r"\x1b\[[0-9;?]*[A-IL-Za-z]|\x1b[()][0-9A-Za-z]|\x1b[=>78]")


def written_mid_line(raw: str, pattern: str) -> list[str]:
    """Occurrences of ``pattern`` (a regex) in raw terminal output that were written in the
    middle of a line — right after the prompt or typed text — instead of at the start of a
    line (after a newline, a carriage return, or an erase-line/erase-down sequence). Those are
    what corrupts the prompt line."""
    bad = []
    for m in re.finditer(pattern, raw):
        before = _NOT_ERASE.sub("", raw[max(0, m.start() - 200):m.start()])
        if before.endswith(("\n", "\r")) or re.search(r"\x1b\[[0-9;]*[JK]$", before) or not before:
            continue
        bad.append(strip_ansi(before[-30:]) + "|" + m.group(0))
    return bad


def _ends_with_prompt(raw: str) -> bool:
    return strip_ansi(raw).rstrip().endswith(PROMPT)


def spawn_repl(server: Any, *args: str, term: str = "xterm", env: dict[str, str] | None = None,
               base_url: str | None = None, key: str | None = KEY, dimensions: tuple[int, int] = DIMENSIONS,
               wait_prompt: bool = True) -> PtyRepl:
    """Start ``llmrepl`` interactively in a pty, pointed at the fake server, and wait for ``llm>``."""
    run_env = child_env(tty=True, **{"TERM": term, **_key_env(key, env)})
    _prepare(server, key)
    url = base_url if base_url is not None else (server.base_url if server is not None else None)
    argv = (["--base-url", url] if url else []) + list(args)
    log = io.StringIO()
    child = spawn(argv, env=run_env, codec_errors="replace", dimensions=dimensions)
    child.logfile_read = log
    repl = PtyRepl(child, log, Path(run_env["LLMREPL_HOME"]), server)
    if wait_prompt:
        child.expect_exact(PROMPT)
    return repl
