"""Fake Jupyter kernel clients and handles for tests: what a real kernel is not easily made
to do (never answer, answer late, die mid-request), with no kernel behind them. They
follow ``llmrepl.execution.kernel_seam``'s KernelClient and KernelHandle protocols."""

from __future__ import annotations

import queue
import threading
from typing import Any

from llmrepl.execution.kernel import KernelExecutor

__all__ = ["kernel_msg", "FakeClient", "FakeHandle", "fake_kernel"]


def kernel_msg(parent: str, msg_type: str, content: dict[str, Any]) -> dict[str, Any]:
    return {"parent_header": {"msg_id": parent}, "msg_type": msg_type, "header": {"msg_type": msg_type},
            "content": content}


class FakeClient:
    """Answers cells and silent requests at once; ``complete_reply`` as told: ``replies``
    (a list of contents, one per request) or never (``None``)."""

    def __init__(self, replies: list[dict[str, Any]] | None = None) -> None:
        self.shell: queue.Queue[dict[str, Any]] = queue.Queue()
        self.iopub: queue.Queue[dict[str, Any]] = queue.Queue()
        self.replies = replies
        self.asked: list[tuple[str, str, int]] = []  # (msg_id, code, cursor_pos)
        self.calls = 0
        self.lock = threading.Lock()

    def _id(self) -> str:
        with self.lock:
            self.calls += 1
            return f"m{self.calls}"

    def execute(self, code: str, silent: bool = False, store_history: bool = True,
                user_expressions: dict | None = None, allow_stdin: bool | None = None) -> str:
        msg_id = self._id()
        if not silent:
            self.iopub.put(kernel_msg(msg_id, "execute_result", {"data": {"text/plain": "42"}, "metadata": {}}))
            self.iopub.put(kernel_msg(msg_id, "status", {"execution_state": "idle"}))
        self.shell.put(kernel_msg(msg_id, "execute_reply", {"status": "ok", "user_expressions": {}}))
        return msg_id

    def complete(self, code: str, cursor_pos: int | None = None) -> str:
        msg_id = self._id()
        self.asked.append((msg_id, code, len(code) if cursor_pos is None else cursor_pos))
        if self.replies:
            self.shell.put(kernel_msg(msg_id, "complete_reply", self.replies.pop(0)))
        return msg_id

    def answer_late(self, content: dict[str, Any]) -> None:
        """The kernel answers the last completion now, after it was given up on."""
        self.shell.put(kernel_msg(self.asked[-1][0], "complete_reply", content))

    def get_shell_msg(self, timeout: float | None = None) -> dict[str, Any]:
        return self.shell.get(timeout=timeout)

    def get_iopub_msg(self, timeout: float | None = None) -> dict[str, Any]:
        return self.iopub.get(timeout=timeout)

    def get_stdin_msg(self, timeout: float | None = None) -> dict[str, Any]:
        raise queue.Empty

    def input(self, string: str) -> None:
        pass

    def stop_channels(self) -> None:
        pass


class FakeHandle:
    description = "fake"

    def interrupt(self) -> None:
        pass

    def restart(self) -> None:
        pass

    def shutdown(self) -> None:
        pass

    def is_alive(self) -> bool:
        return True


def fake_kernel(client: FakeClient) -> KernelExecutor:
    ex = KernelExecutor(lambda: (client, FakeHandle()))
    assert ex.wait_ready(10), ex.start_error
    return ex
