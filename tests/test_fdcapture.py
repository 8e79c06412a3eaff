"""What a cell writes to file descriptors 1 and 2 is its output (execution/fdcapture.py).

``Executor.capture_fds()`` is the switch the app turns on: programs a cell starts, C code and
``os.write`` then reach the cell's record in order with ``print``, live through the sink, and
nothing a cell wrote arrives after its record closes. Each test fails without the capture
(the text goes to the raw fd and never into the record).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import pytest

from llmrepl.execution.executor import Executor
from llmrepl.execution.guards import TerminalStreams


class Sink:
    """Records what the executor shows live, in order, and when late output arrives."""

    def __init__(self) -> None:
        self.got: list[tuple[str, str]] = []
        self.arrived = threading.Event()

    def write(self, stream: str, text: str) -> None:
        self.got.append((stream, text))
        self.arrived.set()

    def text(self, stream: str | None = None) -> str:
        return "".join(t for s, t in self.got if stream is None or s == stream)


def _ident(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


@pytest.fixture
def sink() -> Sink:
    return Sink()


@pytest.fixture
def ex(sink: Sink) -> Iterator[Executor]:
    """An executor with the capture on. pytest puts its own capture back on fds 1/2 between a
    test's setup and its call, so the switch is turned on by the test's first run()."""
    executor = Executor(sink=sink)
    run = executor.run

    def first_run(source: str, **kw: object) -> object:
        executor.capture_fds()
        executor.run = run  # type: ignore[method-assign]
        return run(source, **kw)  # type: ignore[arg-type]

    executor.run = first_run  # type: ignore[assignment,method-assign]
    try:
        yield executor
    finally:
        executor.capture_fds(False)


def test_a_child_process_output_is_in_order_with_print(ex: Executor, sink: Sink) -> None:
    r = ex.run("import os\nprint('a')\nos.system('echo b')\nprint('c')")
    assert r.ok, r.error
    assert r.output == r.stdout == "a\nb\nc\n"
    assert sink.text() == "a\nb\nc\n"  # shown live, in the same order


def test_stderr_of_a_child_is_the_cells_stderr_in_order(ex: Executor) -> None:
    r = ex.run("import os, sys\nprint('a', file=sys.stderr)\nos.system('echo b >&2')\n"
               "print('c', file=sys.stderr)\nprint('out')")
    assert r.ok, r.error
    assert r.stderr == "a\nb\nc\n"
    assert r.output == "a\nb\nc\nout\n"


def test_subprocess_run_and_os_write_are_captured(ex: Executor) -> None:
    r = ex.run("import os, subprocess\nsubprocess.run(['echo', 'from-' + 'subprocess'])\n"
               "os.write(1, b'raw-' + b'write\\n')\nos.write(2, b'raw-' + b'err\\n')")
    assert r.ok, r.error
    assert r.stdout == "from-subprocess\nraw-write\n"
    assert r.stderr == "raw-err\n"


def test_c_stdio_output_is_flushed_into_the_cell(ex: Executor) -> None:
    """C's printf is block-buffered on a pipe: without a flush at the cell's end it would come
    out at exit, in some later cell's record or nowhere."""
    r = ex.run("import ctypes\nctypes.CDLL(None).printf(b'from-' + b'printf\\n')\nprint('after')")
    assert r.ok, r.error
    assert "from-printf\n" in r.stdout
    r2 = ex.run("print('next')")
    assert r2.stdout == "next\n"


def test_escape_sequences_from_a_child_are_captured_not_written_to_the_fd(ex: Executor) -> None:
    """The raw bytes reach the record (the terminal's sanitizer cleans what is shown)."""
    r = ex.run("import os\nos.system(\"printf '\\\\033]0;pwned\\\\007 x'\")")
    assert r.ok, r.error
    assert r.stdout == "\x1b]0;pwned\x07 x"


def test_a_background_child_writing_later_is_late_output_not_the_next_cells(ex: Executor, sink: Sink) -> None:
    r = ex.run("import os\nos.system('(sleep 0.3; echo late-' + 'child) &')\nprint('first')")
    assert r.stdout == "first\n"
    deadline = time.monotonic() + 10
    while "late-child" not in sink.text() and time.monotonic() < deadline:
        sink.arrived.wait(0.1)
        sink.arrived.clear()
    assert "late-child" in sink.text()  # shown through the sink (the app journals it as late output)
    r2 = ex.run("print('second')")
    assert r2.stdout == "second\n" and "late-child" not in r2.output


def test_nothing_written_before_the_end_arrives_after_it(ex: Executor) -> None:
    """3 MB from a child: every byte is in the record when run() returns, none in the next."""
    r = ex.run("import os\nos.system(\"head -c 3000000 /dev/zero | tr '\\\\0' x\")")
    assert r.ok, r.error
    assert r.output_chars == 3_000_000
    assert ex.run("pass").output == ""


def test_an_unfinished_character_at_the_end_stays_in_its_cell(ex: Executor) -> None:
    r = ex.run("import os\nos.write(1, 'é'.encode()[:1])")
    assert r.stdout == "\ufffd"
    assert ex.run("import os\nos.write(1, b'ok')").stdout == "ok"


def test_the_switch_off_puts_back_the_real_fds(sink: Sink) -> None:
    before = (_ident(1), _ident(2))
    executor = Executor(sink=sink)
    executor.capture_fds()
    assert _ident(1) != before[0]
    executor.capture_fds(False)
    assert (_ident(1), _ident(2)) == before
    assert not [t for t in threading.enumerate() if t.name == "llmrepl-fd-capture" and t.is_alive()]
    r = executor.run("import os\nos.system('echo not-' + 'captured')")
    assert r.ok and "not-captured" not in r.output  # off: the executor alone, as before


def test_a_fork_child_writes_into_the_parents_capture(ex: Executor) -> None:
    """A forked child shares the pipes; its own print never waits on the parent's reader."""
    code = ("import os\npid = os.fork()\nif pid == 0:\n"
            "    os.write(1, b'child-' + b'fd\\n')\n    print('child-' + 'print', flush=True)\n    os._exit(0)\n"
            "os.waitpid(pid, 0)\nprint('parent')")
    r = ex.run(code)
    assert r.ok, r.error
    assert r.stdout.endswith("parent\n")
    assert "child-fd\n" in r.stdout  # through the pipe, read by the parent, before 'parent'
    assert r.stdout.index("child-fd") < r.stdout.index("parent")


def test_with_llmrepl_terminal_a_closed_or_redirected_fd_1_gets_the_pipe_back(sink: Sink) -> None:
    terminal = TerminalStreams()
    executor = Executor(sink=sink, terminal=terminal)
    executor.capture_fds()
    try:
        r = executor.run("import os\nos.close(1)\nos.system('echo into-' + 'closed-fd')")
        assert "fd 1 (stdout) was closed; restored" in r.repairs
        r = executor.run("import os\nos.system('echo after-' + 'close')")
        assert r.stdout == "after-close\n", r
        r = executor.run("import os\nos.dup2(os.open(os.devnull, os.O_WRONLY), 2)\nos.system('echo lost >&2')")
        assert "fd 2 (stderr) was redirected; restored" in r.repairs
        r = executor.run("import os\nos.system('echo back >&2')")
        assert r.stderr == "back\n" and not r.repairs
    finally:
        executor.capture_fds(False)
        for stream in (terminal.stdin, terminal.stdout, terminal.stderr):
            if stream is not None:
                stream.close()


def test_with_llmrepl_terminal_closed_pipes_are_made_again(sink: Sink) -> None:
    """A cell closes the capture's own pipe ends (as closerange would): the repair makes new
    ones, says so, and later output is captured again."""
    terminal = TerminalStreams()
    executor = Executor(sink=sink, terminal=terminal)
    executor.capture_fds()
    fds = executor._fds
    assert fds is not None
    try:
        ends = [end for pipe in fds._pipes for end in (pipe.r, pipe.w)]
        r = executor.run(f"import os\nfor fd in {ends}:\n    os.close(fd)")
        assert any("capture of fd 1 (stdout) was closed; made again" in x for x in r.repairs), r.repairs
        r = executor.run("import os\nos.system('echo made-' + 'again; echo err-' + 'again >&2')")
        assert r.stdout == "made-again\n" and r.stderr == "err-again\n", r
    finally:
        executor.capture_fds(False)
        for stream in (terminal.stdin, terminal.stdout, terminal.stderr):
            if stream is not None:
                stream.close()


def test_many_prints_beside_a_program_keep_their_order(ex: Executor) -> None:
    """Each print first takes what the pipes hold, so 20,000 prints around programs writing
    to fd 1 come out in the order they happened (its cost is measured in benchmarks/)."""
    r = ex.run("import os\nfor i in range(20000):\n    print(i)\n    if i % 5000 == 0:\n"
               "        os.system(f'echo child-{i}')")
    assert r.ok, r.error
    lines = r.stdout.splitlines()
    assert len(lines) == 20004
    assert lines[:3] == ["0", "child-0", "1"] and lines[lines.index("5000") + 1] == "child-5000"


def test_a_forked_child_prints_while_the_reader_thread_is_drawing() -> None:
    """The fd reader thread (and the spinner) hold the display's lock while they draw; a
    child forked at that moment inherited it held, and its first print waited forever."""
    import io

    from llmrepl.app import _Sink
    from llmrepl.redact import Redactor
    from llmrepl.terminal.display import TerminalDisplay

    class SlowScreen(io.StringIO):
        def write(self, s: str) -> int:
            time.sleep(0.0005)  # a terminal that takes its time: the lock is held meanwhile
            return super().write(s)

    display = TerminalDisplay(SlowScreen(), color=False)
    executor = Executor(sink=_Sink(display, Redactor([])))
    executor.run("pass")
    executor.capture_fds()
    try:
        r = executor.run(
            "import os, subprocess, time\n"
            "p = subprocess.Popen(['sh', '-c', 'while :; do echo noise; done'])\n"
            "hung = 0\n"
            "for i in range(20):\n"
            "    pid = os.fork()\n"
            "    if pid == 0:\n"
            "        print('child')\n"
            "        os._exit(0)\n"
            "    for _ in range(300):\n"
            "        if os.waitpid(pid, os.WNOHANG)[0]:\n"
            "            break\n"
            "        time.sleep(0.01)\n"
            "    else:\n"
            "        hung += 1\n"
            "        os.kill(pid, 9)\n"
            "        os.waitpid(pid, 0)\n"
            "p.kill(); p.wait()\n"
            "hung")
    finally:
        executor.capture_fds(False)
    assert r.ok, r.error
    assert r.value_repr == "0", f"{r.value_repr} of 20 forked children hung on their first print"
