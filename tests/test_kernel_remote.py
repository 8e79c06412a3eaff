"""Cells in a kernel behind a real Jupyter Server, reached by its URL (``--kernel URL``).

One ``jupyter server`` per module, on 127.0.0.1 with a token, started as a subprocess and
waited for by polling its runtime file. The kernel executor runs cells there through
``kernel_remote``; the wire format is checked against jupyter_server's own code.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("jupyter_server", reason="the remote kernel tests need jupyter_server (the kernel extra's test tools)")
pytest.importorskip("websocket", reason="--kernel URL needs websocket-client (the kernel extra)")

from llmrepl.execution import kernel_remote, kernel_wire  # noqa: E402
from llmrepl.execution.kernel import KernelExecutor, connector  # noqa: E402
from llmrepl.execution.kernel_remote import connect_remote, parse_url  # noqa: E402
from llmrepl.execution.kernel_seam import KernelUnavailable  # noqa: E402

START_WAIT = 90.0  # seconds a loaded machine may take to start the server


class Server:
    def __init__(self, url: str, token: str, process: subprocess.Popen[bytes], log: Path) -> None:
        self.url = url  # http://127.0.0.1:PORT/
        self.token = token
        self.process = process
        self.log = log

    def with_token(self, path: str = "", token: str | None = None) -> str:
        return f"{self.url}{path}?token={self.token if token is None else token}"

    def api(self, method: str, path: str) -> object:
        request = urllib.request.Request(self.url + path, method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
        return json.loads(raw) if raw else None


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("jupyter")
    token = secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER_", "JPY_"))}
    env.update(JUPYTER_RUNTIME_DIR=str(root / "runtime"), JUPYTER_CONFIG_DIR=str(root / "config"),
               JUPYTER_DATA_DIR=str(root / "data"), NO_PROXY="127.0.0.1,localhost")
    argv = [sys.executable, "-m", "jupyter_server", "--no-browser", "--port=0", "--ip=127.0.0.1",
            f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        argv.append("--allow-root")
    log = root / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env, cwd=root)
    try:
        deadline = time.monotonic() + START_WAIT
        info = None
        while info is None:
            assert process.poll() is None, f"jupyter server exited: {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"jupyter server did not start: {log.read_text()[-2000:]}"
            for found in (root / "runtime").glob("jpserver-*.json"):
                try:
                    info = json.loads(found.read_text())
                except ValueError:
                    pass  # being written
            if info is None:
                time.sleep(0.05)
        started = Server(f"http://127.0.0.1:{info['port']}/", token, process, log)
        while True:  # the file can come before the server listens: ask until it answers
            try:
                started.api("GET", "api/status")
                break
            except OSError:
                assert process.poll() is None, f"jupyter server exited: {log.read_text()[-2000:]}"
                assert time.monotonic() < deadline, f"jupyter server does not answer: {log.read_text()[-2000:]}"
                time.sleep(0.05)
        yield started
    finally:
        process.send_signal(signal.SIGTERM)  # a clean stop: it shuts its kernels down
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def executor(server: Server) -> Iterator[KernelExecutor]:
    """A kernel executor on a kernel the server started for it (one per module: they take ~1 s)."""
    answers: list[str] = []
    ex = KernelExecutor(connector(server.with_token("lab")), input_func=lambda prompt: answers.pop(0))
    ex.answers = answers  # type: ignore[attr-defined]
    assert ex.wait_ready(START_WAIT), ex.start_error
    yield ex
    ex.shutdown()


def kernels(server: Server) -> set[str]:
    listed = server.api("GET", "api/kernels")
    assert isinstance(listed, list)
    return {k["id"] for k in listed}


# -- what a user notices: cells run on the server ------------------------------------------------


def test_output_value_and_error_come_back(executor: KernelExecutor) -> None:
    result = executor.run(f"import os\nprint('hello from', os.getpid() != {os.getpid()})\n6 * 7")
    assert result.error is None, result.error
    assert result.stdout == "hello from True\n"
    assert result.value_repr == "42"
    failed = executor.run("{}['missing']")
    assert failed.error_type == "KeyError"
    assert "'missing'" in (failed.error or "") and "\x1b[" not in (failed.error or "")
    assert executor.run("os.getpid() > 0").value_repr == "True"  # the namespace persists


def test_display_data_arrives_as_a_bundle(executor: KernelExecutor) -> None:
    result = executor.run("from IPython.display import display, HTML\ndisplay(HTML('<b>bold</b>'))")
    assert result.error is None, result.error
    assert [d.data.get("text/html") for d in result.displays] == ["<b>bold</b>"]


def test_input_is_answered_through_the_stdin_channel(executor: KernelExecutor) -> None:
    executor.answers.append("Ada")  # type: ignore[attr-defined]
    result = executor.run("name = input('your name? ')\nname.upper()")
    assert result.error is None, result.error
    assert result.value_repr == "'ADA'"


def test_a_time_limit_interrupts_the_remote_kernel(executor: KernelExecutor) -> None:
    result = executor.run("import time\nfor i in range(600):\n    time.sleep(0.1)", timeout=1.5)
    assert result.timed_out
    assert result.error_type == "CellTimeout"
    assert executor.run("'still here'").value_repr == "'still here'"  # the namespace is intact
    assert executor.run("i < 599").value_repr == "True"


def test_a_kernel_that_dies_is_reported_and_restarted(server: Server) -> None:
    ex = KernelExecutor(connector(server.with_token()))
    try:
        assert ex.wait_ready(START_WAIT), ex.start_error
        assert ex.run("x = 1").error is None
        died = ex.run("import os\nos._exit(3)")
        assert died.error_type == "KernelDied"
        assert "Jupyter Server saw it end" in (died.error or "")
        ex.restart()
        assert ex.run("'x' in globals()").value_repr == "False"  # a fresh kernel
    finally:
        ex.shutdown()


def test_llmrepl_runs_cells_on_the_server_and_keeps_the_token_out(server: Server, clean_env: Path) -> None:
    from launch import run

    done = run(["--kernel", server.with_token("lab"), "--yes"], timeout=120,
               input=f"/py import os\n/py print('on the server:', os.getpid() != {os.getpid()})\n/py 6 * 7\n")
    assert done.returncode == 0, done.stderr
    assert "on the server: True" in done.stdout and "Out[3]: 42" in done.stdout
    assert server.token not in done.stdout + done.stderr
    for stored in clean_env.rglob("*"):  # the journal, the history: the token is redacted
        if stored.is_file():
            assert server.token not in stored.read_text(errors="replace"), stored


def test_llmrepl_with_a_wrong_token_says_so_in_one_line(server: Server) -> None:
    from launch import run

    done = run(["--kernel", server.with_token(token="wrong-token"), "--yes"], input="/py 6 * 7\n", timeout=120)
    assert "refused the token (HTTP 403 Forbidden)" in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr and "Out[1]" not in done.stdout


def test_a_kernel_shut_down_from_outside_is_replaced(server: Server) -> None:
    ex = KernelExecutor(connector(server.with_token()))
    try:
        assert ex.wait_ready(START_WAIT), ex.start_error
        assert ex.run("x = 1").error is None
        first = ex.client.kernel_id  # type: ignore[union-attr]
        server.api("DELETE", f"api/kernels/{first}")  # someone else ends it, between cells
        gone = ex.run("x")
        assert gone.error_type == "KernelDied" and "no longer on the Jupyter Server" in (gone.error or "")
        ex.restart()  # llmrepl had started it: a new one takes its place
        assert ex.client.kernel_id != first  # type: ignore[union-attr]
        assert ex.run("'x' in globals()").value_repr == "False"
        assert ex.client.kernel_id in kernels(server)  # type: ignore[union-attr]
    finally:
        ex.shutdown()


# -- the URL, the token, the server --------------------------------------------------------------


def test_a_wrong_token_is_named_with_what_to_do(server: Server) -> None:
    with pytest.raises(KernelUnavailable) as caught:
        connect_remote(server.with_token(token="not-the-token"))
    message = str(caught.value)
    assert "HTTP 403 Forbidden" in message and "refused the token" in message
    assert "jupyter server list" in message
    assert "not-the-token" not in message


def test_a_wrong_token_through_the_executor_is_one_sentence(server: Server) -> None:
    ex = KernelExecutor(connector(server.with_token(token="wrong")))
    try:
        assert not ex.wait_ready(START_WAIT)
        assert ex.start_error is not None and "HTTP 403" in ex.start_error
        assert "Traceback" not in ex.start_error
        result = ex.run("1 + 1")
        assert result.error_type == "KernelUnavailable" and "HTTP 403" in (result.error or "")
    finally:
        ex.shutdown()


def test_no_token_says_the_server_wants_one(server: Server) -> None:
    with pytest.raises(KernelUnavailable, match=r"wants a token \(HTTP 403 Forbidden\)"):
        connect_remote(server.url, env={})


def test_the_token_can_come_from_jupyter_token(server: Server) -> None:
    client, handle = connect_remote(server.url, env={"JUPYTER_TOKEN": server.token})
    try:
        assert server.token not in handle.description
        assert client.kernel_id in kernels(server)
    finally:
        handle.shutdown()
    assert client.kernel_id not in kernels(server)  # a kernel llmrepl started ends with it


def test_an_unreachable_server_is_named(unused_port: int) -> None:
    with pytest.raises(KernelUnavailable, match=r"cannot reach the Jupyter Server at http://127\.0\.0\.1:\d+/ \(Connection refused\)"):
        connect_remote(f"http://127.0.0.1:{unused_port}/?token=abc")


def test_attach_to_a_running_kernel_and_leave_it_running(server: Server) -> None:
    started = server.api("POST", "api/kernels")
    assert isinstance(started, dict)
    kid = started["id"]
    try:
        client, handle = connect_remote(server.with_token(f"api/kernels/{kid}"))
        assert client.kernel_id == kid and not handle.owned
        handle.shutdown()
        assert kid in kernels(server)  # not ours to end
        with pytest.raises(KernelUnavailable, match="has no kernel 0000"):
            connect_remote(server.with_token("api/kernels/0000-1111-2222-3333-4444"))
    finally:
        server.api("DELETE", f"api/kernels/{kid}")


def test_another_clients_output_on_a_shared_kernel_is_not_ours(server: Server) -> None:
    """A notebook and llmrepl on one kernel: each sees only the output of its own requests."""
    ours, handle = connect_remote(server.with_token())
    theirs, their_handle = connect_remote(server.with_token(f"api/kernels/{ours.kernel_id}"))
    try:
        mid = theirs.execute("print('the notebook user printed this')")
        while theirs.get_shell_msg(timeout=30)["parent_header"].get("msg_id") != mid:
            pass
        mine = ours.execute("print('mine')")
        seen = []
        while True:
            msg = ours.get_iopub_msg(timeout=30)
            if msg["msg_type"] == "stream":
                seen.append(msg["content"]["text"])
            if msg["parent_header"].get("msg_id") == mine and msg["content"].get("execution_state") == "idle":
                break
        assert seen == ["mine\n"]
    finally:
        their_handle.shutdown()
        handle.shutdown()


def test_the_legacy_json_protocol_works_too(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that speaks only the older format (no subprotocol chosen): JSON text frames."""
    monkeypatch.setattr(kernel_remote, "OFFERED", ())
    ex = KernelExecutor(connector(server.with_token()))
    try:
        assert ex.wait_ready(START_WAIT), ex.start_error
        assert ex.client is not None and ex.client.protocol is None  # type: ignore[attr-defined]
        result = ex.run("print('legacy'); 1 + 2")
        assert (result.stdout, result.value_repr) == ("legacy\n", "3")
    finally:
        ex.shutdown()


# -- pieces -----------------------------------------------------------------------------------


@pytest.fixture
def unused_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(("url", "base", "kernel_id"), [
    ("http://127.0.0.1:8888/?token=abc", "http://127.0.0.1:8888/", ""),
    ("http://127.0.0.1:8888/lab?token=abc", "http://127.0.0.1:8888/", ""),
    ("http://host:8888/lab/tree/data.ipynb?token=abc", "http://host:8888/", ""),
    ("https://hub.example.org/user/ada/lab?token=abc", "https://hub.example.org/user/ada/", ""),
    ("https://hub.example.org/user/lab/tree?token=abc", "https://hub.example.org/user/lab/", ""),
    ("http://h:1/base/api/kernels/ab-cd-ef?token=abc", "http://h:1/base/", "ab-cd-ef"),
    ("HTTP://me:pw@h:1?token=abc", "http://h:1/", ""),
])
def test_urls_a_server_prints_are_understood(url: str, base: str, kernel_id: str) -> None:
    target = parse_url(url, env={})
    assert (target.base, target.kernel_id, target.token) == (base, kernel_id, "abc")


@pytest.mark.parametrize("url", ["ftp://h/", "http:///nohost", "http://h/api/kernels/bad$id?token=x"])
def test_bad_urls_are_refused_in_a_sentence(url: str) -> None:
    with pytest.raises(KernelUnavailable):
        parse_url(url, env={})


def test_frames_match_jupyter_servers_own_code() -> None:
    from jupyter_server.services.kernels.connection import base

    msg = kernel_wire.new_message("execute_request", {"code": "1"}, "sess")
    channel, parts = base.deserialize_msg_from_ws_v1(kernel_wire.encode(msg, "shell", kernel_wire.V1_PROTOCOL))
    assert channel == "shell" and json.loads(parts[3]) == {"code": "1"}
    assert json.loads(parts[0])["msg_type"] == "execute_request"

    reply = {"header": {"msg_id": "r", "msg_type": "stream"}, "parent_header": {"msg_id": "p"},
             "metadata": {}, "content": {"name": "stdout", "text": "hi"}}
    packed = [json.dumps(reply[k]).encode() for k in ("header", "parent_header", "metadata", "content")]
    decoded = kernel_wire.decode(base.serialize_msg_to_ws_v1(packed + [b"buf"], "iopub"), kernel_wire.V1_PROTOCOL)
    assert decoded is not None
    assert decoded[0] == "iopub" and decoded[1]["content"]["text"] == "hi" and decoded[1]["buffers"] == [b"buf"]

    legacy = base.serialize_binary_message({**reply, "channel": "iopub", "buffers": [b"x"]})
    found = kernel_wire.decode(legacy, None)
    assert found is not None and found[1]["parent_header"] == {"msg_id": "p"} and found[1]["buffers"] == [b"x"]


@pytest.mark.parametrize("frame", [
    b"", b"\x00" * 8, b"\xff" * 64, (7).to_bytes(8, "little") + b"\x00" * 40, "not json", "[]",
    json.dumps({"channel": "nowhere", "header": {"msg_type": "x"}, "content": {}}),
    json.dumps({"channel": "iopub", "header": {"msg_type": 5}, "content": {}}),
    json.dumps({"channel": "iopub", "header": {"msg_type": "stream"}, "content": "text"}),
    (1).to_bytes(4, "big") + (8).to_bytes(4, "big") + b"\xff\xfe",
])
def test_malformed_frames_are_dropped(frame: bytes | str) -> None:
    assert kernel_wire.decode(frame, kernel_wire.V1_PROTOCOL if isinstance(frame, bytes) else None) is None
    assert kernel_wire.decode(frame, None) is None
