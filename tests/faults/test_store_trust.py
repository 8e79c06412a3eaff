"""What llmrepl keeps and writes can be trusted (issue 11, classes 3, 5, 6 and 8's files).

- Exports are data, never code: a folder's name, a model id, a value's repr or an
  exception's name goes into an exported ``.py`` only as a string literal or a comment that
  cannot end early; a notebook embeds only the session's own figures; a server's model ids
  are checked when probed.
- One process owns a session: a second ``--resume`` of a live session refuses, a new
  session never writes into a live one, and a forked child never writes the journal.
- A bad journal never blocks the others: any line of any shape is skipped with a warning
  naming the file and the line, and a gigabyte line costs a scan, not a gigabyte.
- Folders are 0700 and files 0600 whatever the umask; no write follows a planted symbolic
  link; an export never replaces a file unasked.

Each case names what it failed with before its fix.
"""

from __future__ import annotations

import ast
import base64
import json
import os
import queue
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from launch import LLMREPL, child_env

from llmrepl.model.probe import probe_server
from llmrepl.store.journal import Journal, read_journal

from .harness import ALIVE_OUT, PROMPT, FaultResult, fault_run, spawn_repl

PNG = b"\x89PNG\r\n\x1a\n"


# -- helpers --------------------------------------------------------------------------------


def _line(rec: dict[str, Any]) -> bytes:
    """A record as llmrepl's journal writes it."""
    return (json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8", "surrogatepass")


def _good(text: str, t: float = 1_767_000_000.0, cell: int = 1, code: str = "y = 1") -> list[bytes]:
    """One whole exchange with a cell, as records."""
    return [_line(r) for r in (
        {"t": t, "event": "session_start", "id": "x", "version": "0", "model": "gpt-test", "base_url": None,
         "cwd": "/tmp", "pid": 1, "mode": "batch", "resumed": False},
        {"t": t, "event": "user", "text": text},
        {"t": t, "event": "message", "message": {"role": "user", "content": text}, "exchange_start": True},
        {"t": t, "event": "message", "message": {"role": "assistant", "content": f"```python\n{code}\n```"},
         "exchange_start": False},
        {"t": t, "event": "cell_start", "cell": cell, "code": code},
        {"t": t, "event": "cell_end", "cell": cell, "output": "", "stdout": "", "stderr": "", "value": None,
         "error": None, "error_type": None, "duration": 0.01, "interrupted": False, "timed_out": False,
         "figures": [], "output_chars": 0},
    )]


def _write_journal(home: Path, sid: str, lines: list[bytes]) -> Path:
    folder = home / "sessions"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / f"{sid}.jsonl"
    path.write_bytes(b"".join(lines))
    return path


def _cli(*args: str, **options: Any) -> FaultResult:
    """llmrepl with these arguments and nothing on stdin (``--export`` and the like)."""
    return fault_run(None, [], args=list(args), alive=False, **options)


def _run_script(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-I", str(path)], capture_output=True, text=True,
                          cwd=path.parent, timeout=60, env={"PATH": os.environ.get("PATH", "")})


def _fine(r: FaultResult, keys: bool = True) -> None:
    """Survived, clear and (``keys``) no key in any file, without the harness parsing every
    journal: the hostile ones (a gigabyte line, a FIFO, JSON nested past the recursion
    limit) are this file's faults, and the harness reads files whole."""
    problems = r.clarity_problems() + (r.key_problems() if keys else [])
    if r.timed_out or r.returncode != 0 or ALIVE_OUT not in r.stdout.splitlines():
        problems.append(f"did not survive: exit {r.returncode}, timed out {r.timed_out}")
    assert not problems, "\n".join(problems) + "\n" + r.excerpt()


def _warned(r: FaultResult, path: Path, *lines: int) -> bool:
    """A warning names the journal file and each of these line numbers."""
    for line in r.shown.splitlines():
        if "unreadable journal line" in line and str(path) in line and all(f"line {n} " in line for n in lines):
            return True
    return False


class _Live:
    """An llmrepl in batch mode whose stdin stays open: a session that is live while a test
    starts another process on the same state folder."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([LLMREPL, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=child_env(), text=True, start_new_session=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def wait_for(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            seen.append(line)
            if text in line:
                return
        raise AssertionError(f"never saw {text!r}; got {seen!r}")

    def finish(self) -> tuple[int, str]:
        assert self.proc.stdin is not None and self.proc.stderr is not None
        self.proc.stdin.close()
        code = self.proc.wait(30)
        err = self.proc.stderr.read()
        self.reader.join(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        return code, err


# -- 3. exports are data, never code --------------------------------------------------------


def test_export_py_keeps_folder_and_model_names_as_data(server, tmp_path, monkeypatch):
    """The example: ``/export a.py`` copied the working folder's name and the model name into
    a comment; a newline in either became an executable line of the exported script. Before:
    the script printed PWNED-MODEL and PWNED-CWD."""
    weird = tmp_path / "proj\nprint('PWNED-' + 'CWD') #"
    weird.mkdir()
    monkeypatch.chdir(weird)
    r = fault_run(server, ["/py total = 40 + 2", "/py print('total', total)"])
    r.assert_ok()
    [journal] = r.journal_files()
    with open(journal, "ab") as f:  # a model id as a server (or anything that wrote the journal) gave it
        f.write(_line({"t": time.time(), "event": "model", "name": "gpt-x\nprint('PWNED-' + 'MODEL') #"}))
    out = tmp_path / "a.py"
    e = _cli("--export", str(out))
    assert e.returncode == 0, e.excerpt()
    e.assert_clear()
    script = out.read_text()
    tree = ast.parse(script)
    done = _run_script(out)
    assert done.returncode == 0, done.stderr
    assert "PWNED" not in done.stdout, script[:600]
    assert done.stdout == "total 42\n" + ALIVE_OUT + "\n"
    doc = ast.get_docstring(tree) or ""  # the outside text is there, as the docstring's data
    assert str(weird) in doc and "gpt-x\nprint('PWNED-' + 'MODEL') #" in doc, script[:600]


def test_export_py_cell_results_stay_comments(tmp_path, clean_env):
    """An exception's name, a value's repr and a cell that never ran reach the .py only as
    comments that cannot end early: escapes, NUL, U+2028 are written as escapes. Before: the
    error type's newline made ``print('PWNED-ERR')`` run, and a NUL in a left-out cell made
    the whole script fail to compile."""
    lines = _good("start")[:4] + [_line(r) for r in (
        {"t": 1.0, "event": "cell_start", "cell": 1, "code": "raise Exception('x')"},
        {"t": 1.0, "event": "cell_end", "cell": 1, "output": "", "stdout": "", "stderr": "",
         "value": None, "error": "Boom: x\n", "error_type": "Boom\nprint('PWNED-' + 'ERR') #",
         "duration": 0.1, "interrupted": False, "timed_out": False, "figures": [], "output_chars": 0},
        {"t": 1.0, "event": "cell_start", "cell": 2, "code": "v = 2\nv"},
        {"t": 1.0, "event": "cell_end", "cell": 2, "output": "", "stdout": "", "stderr": "",
         "value": "v\x1b]0;pwned\x07 \u202eevil\u2028print('PWNED-' + 'VAL')", "error": None, "error_type": None,
         "duration": 0.1, "interrupted": False, "timed_out": False, "figures": [], "output_chars": 0},
        {"t": 1.0, "event": "cell_start", "cell": 3, "code": "while True:\x00\n    pass\x1b[2J\rprint('PWNED-' + 'LEFT')"},
    )]
    _write_journal(clean_env, "20260101-000000-3", lines)
    out = tmp_path / "c.py"
    e = _cli("--export", str(out), "20260101-000000-3")
    assert e.returncode == 0, e.excerpt()
    data = out.read_bytes()
    for raw in (b"\x00", b"\x1b", b"\x07", "\u2028".encode(), "\u202e".encode(), b"\r"):
        assert raw not in data, f"{raw!r} reached the exported script"
    done = _run_script(out)
    assert done.returncode == 0, done.stderr
    assert "PWNED" not in done.stdout, data.decode()
    assert "# -> v\\x1b]0;pwned\\x07 \\u202eevil …\n" in data.decode()  # the first line, escaped


def test_notebook_embeds_only_the_sessions_own_figures(tmp_path, clean_env):
    """A journal names a figure outside the session's folder (a key, say), a link to one, or
    a FIFO: the notebook embeds none of them. Before: any readable file named in ``figures``
    was embedded in the .ipynb as base64 (and a FIFO or /dev/zero hung the export)."""
    secret = tmp_path / "secret.png"
    secret.write_bytes(PNG + b"TOP-SECRET-BYTES")
    sid = "20260101-000000-4"
    own = clean_env / "sessions" / sid
    own.mkdir(parents=True)
    (own / "figure-001.png").write_bytes(PNG + b"a real figure")
    (own / "figure-002.png").symlink_to(secret)
    os.mkfifo(own / "figure-003.png")  # not a file: an open() for reading would wait forever
    figures = [str(own / f"figure-00{n}.png") for n in (1, 2, 3)] + [str(secret)]
    lines = _good("plot")[:5] + [_line(
        {"t": 1.0, "event": "cell_end", "cell": 1, "output": "", "stdout": "", "stderr": "", "value": None,
         "error": None, "error_type": None, "duration": 0.1, "interrupted": False, "timed_out": False,
         "figures": figures, "output_chars": 0})]
    _write_journal(clean_env, sid, lines)
    out = tmp_path / "n.ipynb"
    e = _cli("--export", str(out), sid, timeout=30)
    assert e.returncode == 0 and not e.timed_out, e.excerpt()
    nb = json.loads(out.read_text())
    pngs = [base64.b64decode(o["data"]["image/png"]) for c in nb["cells"] if c["cell_type"] == "code"
            for o in c["outputs"] if "image/png" in o.get("data", {})]
    assert pngs == [PNG + b"a real figure"]
    assert base64.b64encode(PNG + b"TOP-SECRET-BYTES").decode() not in out.read_text()


def test_probe_keeps_only_plain_model_ids(tmp_path):
    """Model ids a server lists are checked when probed: a line break, an escape, a leading
    dash or 500 characters are refused and counted. Before: every string id was kept, and
    the first became the model's name in the journal, on screen and in exports."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    ids = ["evil\nprint(1) #", "\x1b]0;pwned\x07", "-rf", "a" * 500, "tab\there", 42,
           "qwen2.5-coder:7b", "meta-llama/Llama-3.1-8B-Instruct", "/models/7B/model.gguf"]
    body = json.dumps({"object": "list", "data": [{"id": i, "context_length": 8192} for i in ids]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True).start()
    try:
        found = probe_server("Ollama", srv.server_address[1], timeout=5)
    finally:
        srv.shutdown()
        srv.server_close()
    assert found is not None
    assert found.models == ["qwen2.5-coder:7b", "meta-llama/Llama-3.1-8B-Instruct", "/models/7B/model.gguf"]
    assert found.rejected == 6


# -- 5. one process owns a session ----------------------------------------------------------


def test_a_second_resume_of_a_live_session_refuses(server, clean_env):
    """The example: two ``--resume`` of one session interleaved their records (two different
    cell 2s). The second now refuses with one line and writes nothing. Before: it went on,
    and both processes journaled a cell 2 into the same file."""
    first = fault_run(server, ["/py x = 1"])
    first.assert_ok()
    [journal] = first.journal_files()
    sid = journal.stem
    live = _Live("--resume", sid, "--base-url", server.base_url)
    try:
        live.send("/py print('live-' + 'ready')")
        live.wait_for("live-ready")
        starts = journal.read_bytes().count(b'"event":"session_start"')
        second = fault_run(server, ["/py print('second-' + 'cell')"], args=["--resume", sid], alive=False)
        assert second.returncode == 2, second.excerpt()
        second.assert_clear()
        said = [ln for ln in second.stderr.splitlines() if ln.strip()]
        assert len(said) == 1 and "open in another llmrepl process" in said[0] and sid in said[0], said
        after = journal.read_bytes()  # the live session may still be journaling its cell: no byte compare
        assert after.count(b'"event":"session_start"') == starts, "the refused resume started a session"
        live.send("/py print('live-' + 'done')")
        live.wait_for("live-done")
    finally:
        code, err = live.finish()
    assert code == 0, err
    records, bad = read_journal(journal)
    assert bad == 0
    cells = [r["cell"] for r in records if r["event"] == "cell_start"]
    assert cells == sorted(set(cells)) == [1, 2, 3, 4], cells  # x = 1, alive-check, then the live ones
    assert "second-cell" not in journal.read_text()


def test_a_new_session_never_writes_into_a_live_one(server, clean_env, tmp_path):
    """A session whose cell is still running is live, not crashed: a new llmrepl neither
    warns about it nor appends ``crash_reported`` to its journal. Before: it did both,
    writing into a journal another process was writing."""
    go = tmp_path / "go"
    live = _Live("--base-url", server.base_url)
    try:
        live.send(f"/py import os, time; print('in-' + 'cell', flush=True); "
                  f"[time.sleep(0.05) for _ in iter(lambda: os.path.exists({str(go)!r}), True)]")
        live.wait_for("in-cell")
        [journal] = sorted((clean_env / "sessions").glob("*.jsonl"))
        other = fault_run(server, ["/py print('other')"])
        assert not other.said("ended while cell"), other.excerpt()
        assert b"crash_reported" not in journal.read_bytes()
    finally:
        go.touch()
        code, err = live.finish()
    assert code == 0, err
    other.assert_ok()


def test_a_forked_child_never_writes_the_journal(tmp_path):
    """``os.fork()`` in a cell copies the Journal object and its open file: the child's
    records would interleave with the parent's. Before: the child's record was written."""
    path = tmp_path / "s.jsonl"
    journal = Journal(path, fsync=False)
    journal.append("user", text="parent")
    pid = os.fork()
    if pid == 0:  # the child: whatever happens, leave without pytest's cleanup
        try:
            journal.append("user", text="child")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    journal.append("user", text="parent again")
    journal.close()
    assert [r["text"] for r in read_journal(path)[0]] == ["parent", "parent again"]


# -- 6. a bad journal never blocks the others -----------------------------------------------


def test_t_1e400_does_not_block_the_other_sessions(server, clean_env, tmp_path):
    """The example: one journal line with ``"t": 1e400`` made ``--resume``, ``--export`` and
    ``/sessions`` fail for every session (OverflowError in datetime.fromtimestamp)."""
    good = fault_run(server, ["/py x = 42"])
    good.assert_ok()
    good_id = good.journal_files()[0].stem
    start = _good("bad one", cell=1)
    start[0] = start[0].replace(b'{"t":1767000000.0,', b'{"t":1e400,')  # the session_start itself
    assert start[0].startswith(b'{"t":1e400,"event":"session_start"')
    bad = _write_journal(clean_env, "20990101-000000-1", start)
    listed = fault_run(server, ["/sessions"])
    listed.assert_ok(check_shown=False)  # the list is llmrepl's own answer
    assert good_id in listed.stdout and "20990101-000000-1" in listed.stdout, listed.excerpt()
    assert _warned(listed, bad, 1), listed.excerpt()
    resumed = fault_run(server, ["/py print('x is', x)"], args=["--resume", good_id], yes=True)
    resumed.assert_ok()
    assert "x is 42" in resumed.stdout
    for sid, name in ((good_id, "good.py"), ("20990101-000000-1", "bad.py")):
        e = _cli("--export", str(tmp_path / name), sid)
        assert e.returncode == 0, e.excerpt()
        e.assert_clear()
    assert _warned(e, bad, 1), e.excerpt()
    again = fault_run(server, ["/py print('y is', y)"], args=["--resume", "20990101-000000-1"], yes=True)
    again.assert_ok()
    assert "y is 1" in again.stdout and _warned(again, bad, 1), again.excerpt()


BAD_SHAPES: list[bytes] = [
    b'{"t":1.0,"event":"cell_end","cell":"2","output":"x"}\n',               # a number as a string
    b'{"t":1.0,"event":"cell_start","cell":-1,"code":"x"}\n',                # out of range
    b'{"t":1.0,"event":"cell_start","cell":1e30,"code":"x"}\n',              # not a whole number
    b'{"t":1.0,"event":"cell_end","cell":1,"duration":"slow","output":""}\n',
    b'{"t":1.0,"event":"cell_end","cell":1,"value":{"a":1},"output":""}\n',  # value not text
    b'{"t":1.0,"event":"cell_end","cell":1,"figures":"f.png","output":""}\n',
    b'{"t":1.0,"event":"message","message":{"content":"no role"}}\n',
    b'{"t":1.0,"event":"message","message":{"role":"user","content":"x","tool_calls":{"a":1}}}\n',
    b'{"t":1.0,"event":"message","message":"just text"}\n',
    b'{"t":NaN,"event":"user","text":"nan"}\n',
    b'{"t":-Infinity,"event":"user","text":"inf"}\n',
    b'{"t":' + b"9" * 5000 + b',"event":"user","text":"huge"}\n',            # int over the digit limit
    b'{"t":true,"event":"user","text":"bool time"}\n',
    b'{"t":1.0,"event":["user"]}\n',
    b"[" * 100_000 + b"]" * 100_000 + b"\n",                                  # deeper than recursion allows
    b'{"t":1.0,"event":"user","text":"\xff\xfe not utf-8"}\n',
    b"null\n",
    b'"a string"\n',
    b'{"t":1.0,"event":"undo","removed":"all"}\n',
    b'{"t":1.0,"event":"decision","cell":null,"action":"run"}\n',
    *(b'{"t":1.0,"event":"cell_end","cell":1,"output":"",' + shape + b'}\n' for shape in (
        b'"displays":{"data":{}}',                                  # a display list that is not a list
        b'"displays":["<table>"]',                                  # an item that is not an object
        b'"displays":[{"data":"<b>x</b>"}]',                         # data that is not an object
        b'"displays":[{"data":{"image/png":[137,80]}}]',             # bytes as a list of numbers
        b'"displays":[{"data":{"text/plain":"x"},"at":-5}]',         # a place before the output
        b'"displays":[{"data":{"text/plain":"x"},"metadata":{"width":"wide"}}]',
        b'"displays":[{"data":{"text/plain":"x"},"metadata":{"filename":["/etc/passwd"]}}]',
        b'"value_data":{"data":{"text/plain":7}}',                   # a value bundle with a number
    )),
]


def test_lines_of_any_shape_are_skipped_with_a_warning(server, clean_env, tmp_path):
    """Wrong types, out-of-range numbers, NaN, 5000-digit ints, deep nesting, bytes that are
    not UTF-8: each line is skipped with a warning naming the file and the line; listing,
    resuming and exporting that session and the others all work. Before: RecursionError from
    the nested line broke /sessions and --resume for every session, and a value that is not
    text broke --export."""
    good = fault_run(server, ["/py x = 42"])
    good.assert_ok()
    good_id = good.journal_files()[0].stem
    head = _good("shapes", cell=1)
    path = _write_journal(clean_env, "20990101-000000-2", [*head, *BAD_SHAPES])
    first_bad = len(head) + 1
    listed = fault_run(server, ["/sessions"])
    _fine(listed)
    assert good_id in listed.stdout and "20990101-000000-2" in listed.stdout
    assert _warned(listed, path, first_bad, first_bad + 1, first_bad + 2), listed.excerpt()
    resumed = fault_run(server, ["/py print('y is', y)"], args=["--resume", "20990101-000000-2"], yes=True)
    _fine(resumed)
    assert "y is 1" in resumed.stdout and _warned(resumed, path, first_bad), resumed.excerpt()
    for suffix in (".py", ".ipynb", ".md"):
        e = _cli("--export", str(tmp_path / f"out{suffix}"), "20990101-000000-2")
        assert e.returncode == 0, e.excerpt()
        e.assert_clear()
    other = fault_run(server, ["/py print('x is', x)"], args=["--resume", good_id], yes=True)
    _fine(other)
    assert "x is 42" in other.stdout


def test_a_gigabyte_line_costs_neither_memory_nor_time(server, clean_env, tmp_path):
    """A 1 GiB line (a sparse file: written instantly, read as zeros) in one journal:
    /sessions, --resume and --export read past it in chunks and skip it with a warning.
    Before: each read the whole line into memory (RSS > 1 GiB) and then parsed it."""
    good = fault_run(server, ["/py x = 42"])
    good.assert_ok()
    sid = "20990101-000000-5"
    path = _write_journal(clean_env, sid, _good("big", cell=1))
    with open(path, "r+b") as f:  # not "ab": an append ignores the seek that leaves the hole
        f.seek(0, os.SEEK_END)
        f.write(b'{"t":1.0,"event":"message","message":{"role":"user","content":"')
        f.seek(1 << 30, os.SEEK_CUR)
        f.write(b'"},"exchange_start":false}\n')
        f.write(b"".join(_good("after the big line", cell=2)[1:]))
    big_line = 7
    limit_kb = 400 * 1024
    listed = fault_run(server, ["/sessions"], measure_rss=True, timeout=60)
    _fine(listed, keys=False)
    assert listed.rss_kb is not None and listed.rss_kb < limit_kb, f"{listed.rss_kb} KiB"
    assert sid in listed.stdout and _warned(listed, path, big_line), listed.excerpt()
    resumed = fault_run(server, ["/py print('y is', y)"], args=["--resume", sid], yes=True,
                        measure_rss=True, timeout=60)
    _fine(resumed, keys=False)
    assert resumed.rss_kb is not None and resumed.rss_kb < limit_kb, f"{resumed.rss_kb} KiB"
    assert "y is 1" in resumed.stdout and _warned(resumed, path, big_line), resumed.excerpt()
    e = _cli("--export", str(tmp_path / "big.md"), sid, measure_rss=True, timeout=60)
    assert e.returncode == 0 and e.rss_kb is not None and e.rss_kb < limit_kb, e.excerpt()
    assert "after the big line" in (tmp_path / "big.md").read_text()
    for r in (listed, resumed, e):
        assert r.elapsed < 30, f"{r.elapsed:.1f} s"


def test_a_fifo_named_like_a_journal_never_blocks(server, clean_env):
    """A FIFO planted as the newest ``sessions/<id>.jsonl``: starting, /sessions and
    --resume go on without it. Before: the start-up crash check opened it and blocked
    forever."""
    folder = clean_env / "sessions"
    folder.mkdir(parents=True)
    os.mkfifo(folder / "20990101-000000-6.jsonl")
    r = fault_run(server, ["/py x = 1", "/sessions"], timeout=30)
    _fine(r)
    assert "20990101-000000-6" not in r.stdout
    resumed = fault_run(server, ["/py print('x is', x)"], args=["--resume"], yes=True, timeout=30)
    _fine(resumed)
    assert "x is 1" in resumed.stdout, resumed.excerpt()


# -- 8. private folders, no symbolic links, no silent overwrite -----------------------------


def _modes(top: Path) -> dict[str, int]:
    return {str(p.relative_to(top)): stat.S_IMODE(p.lstat().st_mode) for p in [top, *top.rglob("*")]}


@pytest.mark.parametrize("umask", [0o000, 0o277])
def test_folders_are_0700_and_files_0600_whatever_the_umask(server, tmp_path, umask):
    """Every folder llmrepl creates (the state folder's missing parents too) is 0700 and every
    file 0600, under a permissive umask (0) and a restrictive one (0277). Before: parents
    made by mkdir(parents=True) were 0777 under umask 0, and under 0277 the state folder
    came out 0500, so no journal could be written in it."""
    top = tmp_path / "made"
    home = top / "by" / "llmrepl"
    r = fault_run(server, ["/py x = 1"], env={"LLMREPL_HOME": str(home)}, home=home,
                  preexec_fn=lambda: os.umask(umask))
    r.assert_ok()
    modes = _modes(top)
    folders = {p: m for p, m in modes.items() if (top / p).is_dir()}
    files = {p: m for p, m in modes.items() if not (top / p).is_dir()}
    assert files and all(m == 0o600 for m in files.values()), files
    assert all(m == 0o700 for m in folders.values()), folders


def test_a_planted_symlink_is_not_written_through(server, clean_env, tmp_path):
    """``sessions`` replaced by a link to another folder: llmrepl writes nothing there (no
    journal, no session folder), says once that the journal cannot be written, and the
    session goes on. Before: the journal and crash.log were written through the link."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    clean_env.mkdir(parents=True)
    (clean_env / "sessions").symlink_to(elsewhere)
    r = fault_run(server, ["/py print('still ' + 'here')"])
    assert "still here" in r.stdout and ALIVE_OUT in r.stdout and not r.clarity_problems(), r.excerpt()
    assert list(elsewhere.iterdir()) == []
    said = [ln for ln in r.shown.splitlines() if ln.startswith("llmrepl:") and "journal" in ln]
    assert len(said) == 1 and "symbolic link" in said[0], said


def test_export_onto_an_existing_file_refuses_unless_forced(server, clean_env, tmp_path):
    """``/export``, ``/save`` and ``--export`` onto an existing file (or a symlink) refuse in
    batch mode and write nothing; ``--force`` replaces it (a link is replaced, not written
    through). Before: each silently replaced the file."""
    target = tmp_path / "a.py"
    target.write_text("# mine\n")
    notes = tmp_path / "notes.md"
    notes.write_text("my notes\n")
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    link = tmp_path / "link.py"
    link.symlink_to(victim)
    r = fault_run(server, ["/py x = 1", f"/export {target}", f"/save {notes}", f"/export {link}"])
    r.assert_ok(check_shown=False)  # what a command answers is llmrepl's own
    assert target.read_text() == "# mine\n" and notes.read_text() == "my notes\n"
    assert link.is_symlink() and victim.read_text() == "keep me\n"
    refusals = [ln for ln in r.shown.splitlines() if "exists; nothing was written" in ln and "--force" in ln]
    assert len(refusals) == 3, r.excerpt()
    e = _cli("--export", str(target))
    assert e.returncode == 2 and "--force" in e.stderr and target.read_text() == "# mine\n", e.excerpt()
    e.assert_clear()
    forced = _cli("--export", str(link), "--force")
    assert forced.returncode == 0, forced.excerpt()
    assert not link.is_symlink() and "x = 1" in link.read_text() and victim.read_text() == "keep me\n"
    r2 = fault_run(server, [f"/export {target} --force"])
    r2.assert_ok(check_shown=False)  # "wrote ..." is llmrepl's own answer
    assert target.read_text() != "# mine\n"


@pytest.mark.parametrize("term", ["xterm", "dumb"])
def test_interactive_export_onto_an_existing_file_asks_and_enter_keeps_it(server, tmp_path, term):
    """Class 8: at a terminal, ``/export`` onto an existing file asks; Enter (or n) keeps the file,
    only y replaces it. The TERM=dumb front end asks with a line and writes no escape codes.
    Before: the file was silently replaced."""
    target = tmp_path / "mine.py"
    target.write_text("# mine\n")
    repl = spawn_repl(server, term=term)
    repl.ask("/py x = 41")
    repl.expect(PROMPT)
    repl.ask(f"/export {target}")
    repl.expect("exists: replace it?")
    repl.send("\r")
    repl.expect(PROMPT)
    assert target.read_text() == "# mine\n"
    repl.ask(f"/export {target}")
    repl.expect("exists: replace it?")
    repl.send("y\r" if term == "dumb" else "y")
    repl.expect(PROMPT)
    r = repl.finish()
    r.assert_ok(check_shown=False)  # what a command answers is llmrepl's own
    assert "x = 41" in target.read_text()
    if term == "dumb":
        assert "\x1b" not in r.stdout, "escape codes written to a dumb terminal"


# -- display bundles in a journal (issue 12) ------------------------------------------------


DISPLAY_SHAPES = BAD_SHAPES[-8:]


def test_a_display_of_the_wrong_shape_costs_only_its_line(tmp_path):
    """A cell_end whose ``displays`` or ``value_data`` has the wrong shape is skipped with its
    reason, like any bad record; the rest of the session loads and exports. Before issue 12's
    checks: a display that is not an object would have broken the notebook export."""
    from llmrepl.store.export import export_ipynb, transcript_markdown
    from llmrepl.store.transcript import load_session

    head = _good("shapes", cell=1)
    path = _write_journal(tmp_path, "20990101-000000-7", [*head, *DISPLAY_SHAPES])
    stored = load_session(path)
    assert [s.line for s in stored.skipped] == list(range(len(head) + 1, len(head) + 1 + len(DISPLAY_SHAPES)))
    assert all("cell_end.displays" in s.reason or "cell_end.value_data" in s.reason for s in stored.skipped), \
        stored.skipped
    assert [c.cell for c in stored.cells] == [1] and stored.cells[0].completed
    assert '"cell_type": "code"' in export_ipynb(stored) and "### Cell 1" in transcript_markdown(stored)


def test_a_notebook_keeps_only_text_types_and_the_sessions_own_figures(tmp_path):
    """A journal's display may name any MIME type and any file: the notebook keeps text/plain,
    text/html and text/markdown (no script, no image the journal carries as base64) and embeds
    a figure only from the session's own folder, not through a link. Before: no such check."""
    import nbformat

    from llmrepl.store.export import export_ipynb
    from llmrepl.store.transcript import load_session

    sid = "20990101-000000-8"
    own = tmp_path / "sessions" / sid
    own.mkdir(parents=True)
    (own / "figure-001.png").write_bytes(PNG + b"own figure")
    secret = tmp_path / "id_ed25519.png"
    secret.write_bytes(PNG + b"TOP-SECRET-BYTES")
    (own / "figure-002.png").symlink_to(secret)
    planted = base64.b64encode(PNG + b"PLANTED").decode()
    displays = [
        {"data": {"text/plain": "t", "application/javascript": "alert(1)", "image/png": planted}, "at": 0, "text": "t"},
        {"data": {"text/plain": "own"}, "metadata": {"filename": str(own / "figure-001.png")}, "at": 0, "text": "own"},
        {"data": {"text/plain": "out"}, "metadata": {"filename": str(secret)}, "at": 0, "text": "out"},
        {"data": {"text/plain": "link"}, "metadata": {"filename": str(own / "figure-002.png")}, "at": 0,
         "text": "link"},
    ]
    end = {"t": 1.0, "event": "cell_end", "cell": 1, "output": "", "stdout": "", "stderr": "", "value": "1",
           "error": None, "error_type": None, "duration": 0.1, "interrupted": False, "timed_out": False,
           "figures": [], "output_chars": 0, "displays": displays,
           "value_data": {"data": {"text/plain": "1", "text/javascript": "alert(2)"}, "at": 0, "text": "1"}}
    path = _write_journal(tmp_path, sid, [*_good("plot")[:5], _line(end)])
    text = export_ipynb(load_session(path))
    nb = nbformat.reads(text, as_version=4)
    nbformat.validate(nb)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert [base64.b64decode(o["data"]["image/png"]) for o in outputs if "image/png" in o.get("data", {})] \
        == [PNG + b"own figure"]
    mimes = {m for o in outputs for m in o.get("data", {})}
    assert mimes == {"text/plain", "image/png"}, mimes
    assert "alert(" not in text and planted not in text and "TOP-SECRET" not in text
    assert base64.b64encode(PNG + b"TOP-SECRET-BYTES").decode() not in text
