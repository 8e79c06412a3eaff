"""Reaching a kernel on this machine: a kernelspec name (llmrepl starts the kernel) or a
connection file (``kernel-*.json``: a kernel already running, e.g. one a notebook started).

Both return ``(client, handle)`` for ``KernelExecutor`` (see ``kernel_seam``). jupyter_client
is imported here, and this module only with ``--kernel``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmrepl.execution.kernel_seam import KernelUnavailable

__all__ = ["connect_file", "connector", "is_connection_file", "start_local"]

READY_TIMEOUT = 60.0  # seconds a new kernel may take to answer its first request


def is_connection_file(spec: str) -> bool:
    """A SPEC naming a connection file (rather than a kernelspec name)."""
    try:
        return spec.endswith(".json") or os.sep in spec or Path(spec).expanduser().is_file()
    except (OSError, ValueError):  # a name too long for a path, a NUL: not a file
        return False


def check_kernel_name(spec: str) -> None:
    """Before anything starts: a kernelspec name that names no installed kernel raises
    KernelUnavailable (a URL or a connection file is checked when it is used)."""
    if spec.startswith(("http://", "https://")) or is_connection_file(spec):
        return
    if spec not in _jupyter().kernelspec.find_kernel_specs():
        raise no_such_kernel(spec, "exec.kernel: ")


def no_such_kernel(name: str, where: str = "") -> KernelUnavailable:
    """The error for a kernelspec name that is not installed, naming those that are."""
    known = ", ".join(sorted(_jupyter().kernelspec.find_kernel_specs())) or "none"
    return KernelUnavailable(f"{where}no kernel named {name!r} (installed: {known}); "
                             "`jupyter kernelspec list` shows them")


def _jupyter() -> Any:
    try:
        import jupyter_client
    except ImportError as exc:
        raise KernelUnavailable(
            f"--kernel needs jupyter_client and ipykernel ({exc.name or exc} is missing): "
            "pip install 'llmrepl[kernel]'") from None
    return jupyter_client


class LocalHandle:
    """A kernel llmrepl started: interrupt, restart and shutdown through its KernelManager."""

    def __init__(self, manager: Any, name: str, folder: str | None = None) -> None:
        self.manager = manager
        self.folder = folder  # the sockets' private folder, removed at shutdown
        self.description = f"{name} (local)"

    def interrupt(self) -> None:
        self.manager.interrupt_kernel()

    def restart(self) -> None:
        self.manager.restart_kernel(now=True)

    def shutdown(self) -> None:
        try:
            self.manager.shutdown_kernel(now=True)
        except Exception:  # already gone
            pass
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)

    def is_alive(self) -> bool:
        return bool(self.manager.is_alive())

    def exit_status(self) -> str:
        """How the process ended ("killed by SIGSEGV", "exit status 3"), or ""."""
        provisioner = getattr(self.manager, "provisioner", None)
        process = getattr(provisioner, "process", None)
        code = process.poll() if process is not None else None
        if code is None:
            return ""
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exit status {code}"


class FileHandle:
    """A kernel someone else started: llmrepl may interrupt it (a signal to its pid when the
    file is on this machine's kernel, or an interrupt_request when its interrupt_mode is
    "message"), but never restarts or ends it."""

    def __init__(self, client: Any, info: dict[str, Any], path: str) -> None:
        self.client = client
        self.info = info
        self.description = f"{Path(path).name} (attached)"

    def interrupt(self) -> None:
        if self.info.get("interrupt_mode") == "message":
            msg = self.client.session.msg("interrupt_request", content={})
            self.client.control_channel.send(msg)
            return
        pid = self.info.get("pid")  # ipykernel does not write it; then a message is all we have
        if isinstance(pid, int) and pid > 0:
            os.kill(pid, signal.SIGINT)
            return
        msg = self.client.session.msg("interrupt_request", content={})
        self.client.control_channel.send(msg)

    def restart(self) -> None:
        raise KernelUnavailable("this kernel was started elsewhere (a connection file): llmrepl cannot "
                                "restart it; restart it where it was started, then attach again")

    def shutdown(self) -> None:
        pass  # not ours to end

    def is_alive(self) -> bool:
        hb = getattr(self.client, "hb_channel", None)
        return bool(hb is None or hb.is_beating())

    def exit_status(self) -> str:
        return ""


def start_local(name: str = "python3", *, extra_env: dict[str, str] | None = None,
                argv: list[str] | None = None) -> tuple[Any, Any]:
    """Start kernelspec ``name``; ``argv`` replaces the spec's launch command (a sandbox wraps
    it). Waits until the kernel answers. Raises KernelUnavailable with the reason."""
    jc = _jupyter()
    from jupyter_client.kernelspec import NoSuchKernel

    # ipc: Unix sockets in a private (0700) folder, not TCP ports any local user could reach
    # and read the output from
    folder = tempfile.mkdtemp(prefix="llmrepl-kernel-")
    manager = jc.KernelManager(kernel_name=name, transport="ipc", ip=os.path.join(folder, "kernel"))
    try:
        if argv is not None:
            spec = manager.kernel_spec
            spec.argv = list(argv)
        # the kernel's own fds: never the terminal (its output arrives as messages)
        kwargs: dict[str, Any] = {"stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL,
                                  "stderr": subprocess.DEVNULL}
        if extra_env:
            kwargs["env"] = {**os.environ, **extra_env}
        manager.start_kernel(**kwargs)
    except NoSuchKernel:
        shutil.rmtree(folder, ignore_errors=True)
        raise no_such_kernel(name) from None
    except (OSError, RuntimeError, ValueError) as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise KernelUnavailable(f"the kernel {name!r} could not start: {exc}") from None
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=READY_TIMEOUT)
    except RuntimeError as exc:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
        shutil.rmtree(folder, ignore_errors=True)
        raise KernelUnavailable(f"the kernel {name!r} did not start: {exc}") from None
    return client, LocalHandle(manager, name, folder)


ATTACH_TIMEOUT = 30.0  # a running kernel answers at once; a busy machine or one just started may not


def connect_file(path: str) -> tuple[Any, Any]:
    """Attach to the running kernel a connection file describes."""
    jc = _jupyter()
    where = Path(path).expanduser()
    if not where.is_file():
        from jupyter_core.paths import jupyter_runtime_dir

        candidate = Path(jupyter_runtime_dir()) / path
        if not candidate.is_file():
            raise KernelUnavailable(f"no connection file {path}")
        where = candidate
    client = jc.BlockingKernelClient()
    try:
        client.load_connection_file(str(where))
        import json

        info = json.loads(where.read_text())
    except (OSError, ValueError, KeyError) as exc:
        raise KernelUnavailable(f"{path} is not a kernel connection file ({exc})") from None
    client.start_channels()
    try:
        client.wait_for_ready(timeout=ATTACH_TIMEOUT)
    except RuntimeError:
        client.stop_channels()
        raise KernelUnavailable(f"the kernel of {path} does not answer (is it still running?)") from None
    return client, FileHandle(client, info if isinstance(info, dict) else {}, str(where))


def connector(spec: str) -> Callable[[], tuple[Any, Any]]:
    """What ``--kernel SPEC`` connects to: a Jupyter Server URL, a connection file, or a
    kernelspec name (``python3`` for an empty SPEC)."""
    spec = spec.strip() or "python3"
    if spec.startswith(("http://", "https://")):
        def remote() -> tuple[Any, Any]:
            from llmrepl.execution.kernel_remote import connect_remote

            client, handle = connect_remote(spec)
            return client, handle
        return remote

    if is_connection_file(spec):
        return lambda: connect_file(spec)
    return lambda: start_local(spec)
