"""The seam between the kernel executor and the ways to reach a kernel (local, file, URL).

``KernelExecutor`` (``kernel.py``) talks to a kernel through a :class:`KernelClient` (the
subset of jupyter_client's ``BlockingKernelClient`` it uses) and controls it through a
:class:`KernelHandle`. ``kernel_local.py`` makes the pair for a kernelspec name or a connection
file; ``kernel_remote.connect_remote(url)`` makes it for a Jupyter Server URL. Messages are
Jupyter protocol messages as jupyter_client returns them: dicts with ``header``,
``parent_header``, ``msg_type``, ``content``. No jupyter import here: this module is cheap.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["KernelClient", "KernelHandle", "KernelDied", "KernelUnavailable"]


class KernelClient(Protocol):
    """What the executor sends and receives (``BlockingKernelClient``'s names and meaning).

    ``get_*_msg`` raise ``queue.Empty`` when ``timeout`` (seconds) passes with no message.
    Optional: ``complete(code, cursor_pos) -> msg_id`` sends a ``complete_request`` (both
    clients have it); Tab asks the kernel through it (``kernel_complete``), and a client
    without it leaves Tab to what llmrepl completes itself."""

    def execute(self, code: str, silent: bool = False, store_history: bool = True,
                user_expressions: dict[str, Any] | None = None,
                allow_stdin: bool | None = None) -> str: ...
    def get_iopub_msg(self, timeout: float | None = None) -> dict[str, Any]: ...
    def get_shell_msg(self, timeout: float | None = None) -> dict[str, Any]: ...
    def get_stdin_msg(self, timeout: float | None = None) -> dict[str, Any]: ...
    def input(self, string: str) -> None: ...
    def stop_channels(self) -> None: ...


class KernelHandle(Protocol):
    """Controls the kernel process (or the server's kernel)."""

    description: str  # for the user: "python3 (local)", "kernel-123.json", "http://host:8888"

    def interrupt(self) -> None: ...
    def restart(self) -> None:
        """A fresh kernel process with an empty namespace; the client stays usable."""
    def shutdown(self) -> None: ...
    def is_alive(self) -> bool: ...


class KernelDied(Exception):
    """The kernel process ended (or stopped answering) while llmrepl waited for it."""


class KernelUnavailable(Exception):
    """The kernel could not be started or reached; the message says why, for the user."""
