"""A kernel behind a Jupyter Server (or JupyterHub, or Kernel Gateway), reached by its URL.

``connect_remote("https://host:8888/?token=...")`` starts a kernel there through the REST API
(``POST /api/kernels``), or attaches to ``.../api/kernels/<id>``, and talks to it over the
kernel WebSocket (``/api/kernels/<id>/channels``; ``kernel_wire`` has the two frame formats).
It returns ``(client, handle)`` for ``KernelExecutor`` (``kernel_seam``): the client has
``BlockingKernelClient``'s names, the handle interrupts and restarts through the REST API.

Libraries: ``websocket-client`` (a maintained, synchronous WebSocket client, already a
dependency of jupyter_server) for the channels, the standard library's ``urllib`` for the few
REST calls (``kernel_server``: the URL, the token, the errors). No event loop, no zmq: a reader thread sorts frames into one queue per channel.
Imported only with ``--kernel URL``. The token is never shown: ``description`` and every
message name the server without it.
"""

from __future__ import annotations

import queue
import socket
import threading
import time
import urllib.parse
import uuid
from collections.abc import Mapping
from typing import Any

from llmrepl.execution import kernel_wire as wire
from llmrepl.execution.kernel_seam import KernelDied, KernelUnavailable
from llmrepl.execution.kernel_server import (
    REST_TIMEOUT,
    RemoteRefused,
    RemoteTarget,
    ServerApi,
    is_server_url,
    kernel_id_of,
    parse_url,
    printable,
)

__all__ = ["connect_remote", "is_server_url", "RemoteTarget", "parse_url", "RemoteClient",
           "RemoteHandle", "RemoteRefused"]  # the server's address and REST: kernel_server

READY_TIMEOUT = 60.0  # seconds a new kernel may take to answer its first request
OFFERED = (wire.V1_PROTOCOL,)  # WebSocket subprotocols offered; a server choosing none means legacy JSON
SERVER_RESTARTED = "the Jupyter Server saw it end and started a fresh kernel"
CHECK_EVERY = 2.0  # seconds between asking the server whether a silent kernel still exists


class RemoteClient:
    """``BlockingKernelClient``'s subset over a Jupyter Server's kernel WebSocket."""

    def __init__(self, target: RemoteTarget, kernel_id: str) -> None:
        self.target = target
        self.kernel_id = kernel_id
        self.session = uuid.uuid4().hex
        self.protocol: str | None = None
        self.lost = ""  # why the kernel the session talked to is gone ("" while it lives)
        self.restarting = False  # our own restart: its status messages are expected
        self._queues: dict[str, queue.Queue[dict[str, Any]]] = {name: queue.Queue() for name in wire.CHANNELS}
        self._ws: Any = None
        self._reader: threading.Thread | None = None
        self._last_input_request: dict[str, Any] = {}
        self._send_lock = threading.Lock()

    # -- the connection ------------------------------------------------------------------

    def start_channels(self) -> None:
        import websocket

        parts = urllib.parse.urlsplit(self.target.base)
        scheme = "wss" if parts.scheme == "https" else "ws"
        query = urllib.parse.urlencode({"session_id": self.session})
        url = urllib.parse.urlunsplit(
            (scheme, parts.netloc, f"{parts.path}api/kernels/{self.kernel_id}/channels", query, ""))
        header = [f"Authorization: token {self.target.token}"] if self.target.token else []
        try:
            ws = websocket.create_connection(url, timeout=REST_TIMEOUT, header=header,
                                             subprotocols=list(OFFERED), enable_multithread=True)
        except websocket.WebSocketBadStatusException as exc:
            raise RemoteRefused(ServerApi(self.target).refusal(exc.status_code, f"api/kernels/{self.kernel_id}/channels"),
                                exc.status_code) from None
        except (websocket.WebSocketException, OSError) as exc:
            raise KernelUnavailable(ServerApi(self.target).unreachable(exc)) from None
        ws.settimeout(None)
        self.protocol = ws.getsubprotocol()
        self._ws = ws
        self._reader = threading.Thread(target=self._read, args=(ws,), name="llmrepl-kernel-ws", daemon=True)
        self._reader.start()

    def channels_running(self) -> bool:
        return self._reader is not None and self._reader.is_alive()

    def stop_channels(self) -> None:
        ws, self._ws = self._ws, None
        if ws is None:
            return
        try:
            ws.send_close()
        except Exception:  # already closed by the server
            pass
        ws.abort()  # wakes the reader, which is blocked in recv
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(timeout=5)
        ws.shutdown()

    def _read(self, ws: Any) -> None:
        import websocket

        quickack = getattr(socket, "TCP_QUICKACK", None)
        while True:
            try:
                if quickack is not None and ws.sock is not None:
                    # Jupyter Server's WebSocket leaves Nagle on: each small frame after the
                    # first waits for our ACK, which Linux delays by up to 40 ms. Acking at
                    # once takes a trivial cell from ~50 ms to ~7 ms here.
                    ws.sock.setsockopt(socket.IPPROTO_TCP, quickack, 1)
                opcode, data = ws.recv_data()
            except (websocket.WebSocketException, OSError, ValueError, AttributeError):
                return
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                return
            if opcode == websocket.ABNF.OPCODE_TEXT:
                try:
                    data = data.decode("utf-8")
                except UnicodeDecodeError:
                    continue
            found = wire.decode(data, self.protocol)
            if found is None:
                continue  # a malformed frame: nothing in it can be trusted, or used
            channel, msg = found
            session = msg["parent_header"].get("session")
            if channel == "iopub" and session and session != self.session:
                continue  # another client's request (a notebook on the same kernel): not ours to show
            if channel == "iopub" and msg["msg_type"] == "status" and not self.restarting:
                state = msg["content"].get("execution_state")
                if state == "restarting":
                    self.lost = SERVER_RESTARTED
                elif state == "dead":
                    self.lost = "the Jupyter Server saw it end and could not start a fresh kernel"
            self._queues[channel].put(msg)

    def _send(self, channel: str, msg: dict[str, Any]) -> None:
        ws = self._ws
        if ws is None:
            raise KernelDied(f"the connection to the kernel on {self.target.display} is closed")
        frame = wire.encode(msg, channel, self.protocol)
        import websocket

        try:
            with self._send_lock:
                opcode = websocket.ABNF.OPCODE_BINARY if isinstance(frame, bytes) else websocket.ABNF.OPCODE_TEXT
                ws.send(frame, opcode=opcode)
        except (websocket.WebSocketException, OSError) as exc:
            raise KernelDied(f"the connection to the kernel on {self.target.display} broke "
                             f"({printable(str(exc)) or type(exc).__name__})") from None

    # -- BlockingKernelClient's names ---------------------------------------------------------

    def execute(self, code: str, silent: bool = False, store_history: bool = True,
                user_expressions: dict[str, Any] | None = None,
                allow_stdin: bool | None = None, stop_on_error: bool = True) -> str:
        content = {"code": code, "silent": silent, "store_history": store_history,
                   "user_expressions": user_expressions or {},
                   "allow_stdin": True if allow_stdin is None else allow_stdin,
                   "stop_on_error": stop_on_error}
        return self.send_request("execute_request", content)

    def kernel_info(self) -> str:
        return self.send_request("kernel_info_request", {})

    def complete(self, code: str, cursor_pos: int | None = None) -> str:
        return self.send_request("complete_request",
                                 {"code": code, "cursor_pos": len(code) if cursor_pos is None else cursor_pos})

    def send_request(self, msg_type: str, content: dict[str, Any], channel: str = "shell") -> str:
        msg = wire.new_message(msg_type, content, self.session)
        self._send(channel, msg)
        return str(msg["msg_id"])

    def input(self, string: str) -> None:
        msg = wire.new_message("input_reply", {"value": string}, self.session,
                               parent=self._last_input_request)
        self._send("stdin", msg)

    def get_shell_msg(self, timeout: float | None = None) -> dict[str, Any]:
        return self._queues["shell"].get(timeout=timeout)

    def get_iopub_msg(self, timeout: float | None = None) -> dict[str, Any]:
        return self._queues["iopub"].get(timeout=timeout)

    def get_stdin_msg(self, timeout: float | None = None) -> dict[str, Any]:
        msg = self._queues["stdin"].get(timeout=timeout)
        if msg["msg_type"] == "input_request":
            self._last_input_request = msg["header"]
        return msg

    def get_control_msg(self, timeout: float | None = None) -> dict[str, Any]:
        return self._queues["control"].get(timeout=timeout)

    def drain(self) -> None:
        """Forget every message received so far (after a restart: the old kernel's)."""
        for q in self._queues.values():
            while True:
                try:
                    q.get_nowait()
                except queue.Empty:
                    break

    def wait_for_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Until the kernel answers a kernel_info_request; KernelUnavailable after ``timeout``."""
        deadline = time.monotonic() + timeout
        msg_id = self.kernel_info()
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self.channels_running():
                raise KernelUnavailable(f"the kernel on {self.target.display} did not answer within "
                                        f"{timeout:g} s")
            try:
                reply = self.get_shell_msg(timeout=min(left, 1.0))
            except queue.Empty:
                continue
            if reply["parent_header"].get("msg_id") == msg_id:
                return


class RemoteHandle:
    """Interrupt, restart and end the server's kernel through its REST API."""

    def __init__(self, client: RemoteClient, rest: ServerApi, owned: bool, kernel_name: str = "") -> None:
        self.client = client
        self.rest = rest
        self.owned = owned  # started by llmrepl: shut down at exit; attached ones are left running
        self.kernel_name = kernel_name
        self._checked = time.monotonic()  # when the server last said the kernel exists
        self.description = ""
        self._describe()

    def _describe(self) -> None:
        self.description = f"{self.client.target.display} (remote, kernel {self.client.kernel_id[:8]})"

    def interrupt(self) -> None:
        self.rest.call("POST", f"api/kernels/{self.client.kernel_id}/interrupt", {})

    def restart(self) -> None:
        """The same kernel restarted by the server; if the server no longer has it (shut down
        from outside) and llmrepl had started it, a new one in its place."""
        self.client.restarting = True
        try:
            if self.client.lost != SERVER_RESTARTED:  # else the server's fresh kernel will do
                self.rest.call("POST", f"api/kernels/{self.client.kernel_id}/restart", {})
        except RemoteRefused:  # 404 or 500, depending on the server, for a kernel it no longer has
            if not self.owned or self._exists():
                raise
            self._replace()
        finally:
            self.client.restarting = False
        self.client.drain()
        if not self.client.channels_running():
            self.client.stop_channels()
            self.client.start_channels()
        self.client.wait_for_ready()
        self.client.lost = ""

    def _exists(self) -> bool:
        try:
            self.rest.call("GET", f"api/kernels/{self.client.kernel_id}", timeout=10)
        except RemoteRefused as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def _replace(self) -> None:
        model = self.rest.call("POST", "api/kernels", {"name": self.kernel_name} if self.kernel_name else {})
        self.client.stop_channels()
        self.client.kernel_id = kernel_id_of(model, self.client.target)
        self._describe()

    def shutdown(self) -> None:
        self.client.stop_channels()
        if self.owned:
            try:
                self.rest.call("DELETE", f"api/kernels/{self.client.kernel_id}", timeout=10)
            except KernelUnavailable:
                pass  # the server is gone, and its kernels with it

    def is_alive(self) -> bool:
        """False once the kernel is gone: the server restarted it after it died (its status
        says so at once), or it is no longer on the server (asked at most every
        ``CHECK_EVERY`` seconds: the server keeps the WebSocket open when a kernel is shut
        down from outside). A dropped WebSocket to a living kernel is opened again."""
        if self.client.lost:
            return False
        running = self.client.channels_running()
        now = time.monotonic()
        if running and now - self._checked < CHECK_EVERY:
            return True
        self._checked = now
        try:
            model = self.rest.call("GET", f"api/kernels/{self.client.kernel_id}", timeout=10)
        except RemoteRefused:
            self.client.lost = "it is no longer on the Jupyter Server (shut down from outside?)"
            return False
        except KernelUnavailable:
            self.client.lost = "the Jupyter Server does not answer"
            return False
        if not isinstance(model, dict) or model.get("execution_state") == "dead":
            self.client.lost = "the Jupyter Server reports it dead"
            return False
        if running:
            return True
        try:
            self.client.stop_channels()
            self.client.start_channels()
        except KernelUnavailable:
            return False
        return True

    def exit_status(self) -> str:
        return self.client.lost


def connect_remote(url: str, env: Mapping[str, str] | None = None) -> tuple[RemoteClient, RemoteHandle]:
    """Start (or attach to) a kernel on the Jupyter Server at ``url`` and wait until it answers.
    Raises KernelUnavailable with a sentence for the user."""
    try:
        import websocket  # noqa: F401
    except ImportError:
        raise KernelUnavailable("--kernel URL needs websocket-client: pip install 'llmrepl[kernel]'") from None
    target = parse_url(url, env)
    rest = ServerApi(target)
    if target.kernel_id:
        model = rest.call("GET", f"api/kernels/{target.kernel_id}")
        owned = False
    else:
        model = rest.call("POST", "api/kernels", {"name": target.kernel_name} if target.kernel_name else {})
        owned = True
    client = RemoteClient(target, kernel_id_of(model, target))
    name = model.get("name") if isinstance(model, dict) else None
    handle = RemoteHandle(client, rest, owned, name if isinstance(name, str) else target.kernel_name)
    try:
        client.start_channels()
        client.wait_for_ready()
    except BaseException:
        handle.shutdown()
        raise
    return client, handle
