"""A local kernel inside bubblewrap (``--sandbox``): no network, and nothing writable but the
working folder.

The sandbox is the kernel's launch command: ``bwrap [options] python -m ipykernel_launcher -f
{connection_file}``, the kernelspec's argv with a prefix, so jupyter_client starts, restarts
and ends the kernel as it does any other. What the prefix sets up:

- new namespaces for everything (``--unshare-all``): the network one has only its own
  loopback, so no host, the internet or a service on this machine's 127.0.0.1 is reachable;
  process ids, IPC and the host name are private too; all capabilities dropped, no new
  privileges (bwrap always sets ``no_new_privs``);
- the whole file system read-only; ``/tmp``, ``/run`` (other programs' sockets) and the home
  folder hidden under empty in-memory folders; Python's own folders visible again, read-only;
  the working folder writable;
- the kernel and llmrepl speak through Unix sockets (jupyter_client's ``ipc`` transport) in a
  private folder made for this kernel: TCP cannot cross the network namespace;
- a new terminal session (``--new-session``: no typing into llmrepl's terminal through
  ``TIOCSTI``), so an interrupt is an ``interrupt_request`` message, which ipykernel turns
  into SIGINT inside the sandbox; the kernel ends when llmrepl does (``--die-with-parent``);
- environment variables whose names look like secrets (API keys, tokens, passwords) are not
  passed in.

Imported only with ``--sandbox``; ``jupyter_client`` comes through ``kernel_local``.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any

from llmrepl.execution.kernel_local import LocalHandle, _jupyter, no_such_kernel
from llmrepl.execution.kernel_seam import KernelUnavailable

__all__ = ["NO_BWRAP", "SECRET_NAME", "find_bwrap", "probe", "check_sandbox_spec", "check_workdir", "bwrap_prefix",
           "sandbox_env", "sandboxed", "start_sandboxed"]

READY_TIMEOUT = 60.0
# Names of variables a sandboxed kernel does not get: keys, tokens, passwords, cloud credentials
SECRET_NAME = re.compile(
    r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL|AUTH|COOKIE|SESSION|^OPENAI_|^ANTHROPIC_|^AWS_|^AZURE_"
    r"|^GOOGLE_|^GCLOUD_|^GH_|^GITHUB_|^HF_|^HUGGING|^LLMREPL_|^SSH_|^GPG_|^JPY_PARENT_PID$",
    re.IGNORECASE)
NO_BWRAP = ("--sandbox needs bubblewrap (bwrap), which is not installed: install the `bubblewrap` "
            "package (apt, dnf and pacman have it; Linux only), or drop --sandbox")
_HIDDEN = ("/tmp", "/run", "/var/run", "/var/tmp", "/dev/shm")  # other programs' files and sockets


def find_bwrap() -> str | None:
    """The bwrap program on PATH, or None."""
    return shutil.which("bwrap")


def probe(bwrap: str) -> str:
    """Why bubblewrap cannot make this sandbox here ("" when it can): its own words, one line."""
    try:
        done = subprocess.run([bwrap, "--unshare-all", "--die-with-parent", "--cap-drop", "ALL",
                               "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "true"],
                              stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{type(exc).__name__}: {exc}"
    if done.returncode == 0:
        return ""
    text = done.stderr.decode("utf-8", "replace").strip().splitlines()
    words = text[-1] if text else f"exit status {done.returncode}"
    return "".join(c if c.isprintable() else "?" for c in words)[:300]


def check_sandbox_spec(spec: str) -> None:
    """``--sandbox`` wraps a kernel llmrepl starts: not a server's, not one already running."""
    spec = spec.strip()
    if spec.lower().startswith(("http://", "https://")):
        raise KernelUnavailable("--sandbox starts a local kernel inside bubblewrap; a kernel on a "
                                "Jupyter Server runs where the server runs: drop --sandbox, or the URL")
    if spec.endswith(".json") or os.sep in spec:
        raise KernelUnavailable("--sandbox starts a local kernel inside bubblewrap; it cannot wrap a "
                                "kernel that is already running (a connection file): give a kernelspec "
                                "name, or drop --sandbox")


def check_workdir(workdir: Path, home: str | None) -> None:
    """The working folder becomes writable inside: never ``/``, the home folder or a folder
    that holds it (``~/.bashrc``, ``~/.ssh`` would be writable too)."""
    work = os.path.realpath(str(workdir))
    where = os.path.realpath(home) if home else ""
    if work == "/" or (where and _inside(where, work)):
        raise KernelUnavailable(f"--sandbox makes the working folder writable, and {work} is "
                                f"{'/' if work == '/' else 'your home folder or holds it'}: start "
                                "llmrepl in a project folder (cd ~/project), or drop --sandbox")


def bwrap_prefix(bwrap: str, workdir: Path, rundir: Path, *, home: str | None = None,
                 visible: Iterable[str] = ()) -> list[str]:
    """The bwrap options before the kernel's own argv.

    ``workdir`` is writable, ``rundir`` (the connection file and the ipc sockets) too;
    ``visible`` are Python's folders (its prefix, ``sys.path``): shown again, read-only, where
    a hidden folder covers them, and kept read-only inside the working folder (a virtualenv
    there: a cell must not rewrite the packages llmrepl itself runs from)."""
    args = [bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
            "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
            # jupyter_client sets it to llmrepl's pid, which names no process in the sandbox's
            # own pid namespace: ipykernel would exit at once. 1 means "no parent to watch"
            # without the banner ipykernel prints when it has none (--die-with-parent watches).
            "--setenv", "JPY_PARENT_PID", "1"]
    work = os.path.realpath(str(workdir))
    hidden = [h for h in _HIDDEN if os.path.isdir(h) and not os.path.islink(h)]
    if home and os.path.isdir(home) and os.path.realpath(home) not in ("/", work):
        hidden.append(os.path.realpath(home))
    for folder in hidden:
        args += ["--tmpfs", folder]
    args += ["--bind", work, work, "--bind", str(rundir), str(rundir)]
    shown: list[str] = []
    for folder in sorted({os.path.realpath(v) for v in visible if v and os.path.isdir(v)}):
        covered = any(_inside(folder, h) and folder != h for h in hidden)
        in_work = _inside(folder, work) and folder != work
        if (covered or in_work) and not any(_inside(folder, s) for s in shown):
            shown.append(folder)
            args += ["--ro-bind", folder, folder]
    return args + ["--chdir", work]


def sandbox_env(env: Mapping[str, str], hide: Iterable[str] = ()) -> dict[str, str]:
    """The environment the sandboxed kernel starts with: ``env`` less what looks secret and the
    names in ``hide`` (the model's key variable, whatever it is called)."""
    hidden = {h for h in hide if h}
    return {k: v for k, v in env.items() if k not in hidden and not SECRET_NAME.search(k)}


def sandboxed(spec: str = "python3", *, workdir: Path | None = None,
              hide: Iterable[str] = ()) -> Callable[[], tuple[Any, Any]]:
    """What ``--sandbox`` connects with: ``KernelExecutor(sandboxed(config.exec.kernel, hide=
    (config.model.api_key_env,)))`` in place of ``connector(spec)``."""
    names = tuple(hide)
    return lambda: start_sandboxed(spec.strip() or "python3", workdir=workdir, hide=names)


def start_sandboxed(name: str = "python3", *, workdir: Path | None = None,
                    env: Mapping[str, str] | None = None, hide: Iterable[str] = ()) -> tuple[Any, Any]:
    """Start kernelspec ``name`` inside bubblewrap; ``(client, handle)`` as ``start_local``.
    Raises KernelUnavailable when bubblewrap is missing or cannot run here."""
    check_sandbox_spec(name)
    work = Path(workdir or Path.cwd())
    base = os.environ if env is None else env
    check_workdir(work, base.get("HOME"))
    bwrap = find_bwrap()
    if bwrap is None:
        raise KernelUnavailable(NO_BWRAP)
    jc = _jupyter()
    from jupyter_client.kernelspec import NoSuchKernel

    problem = probe(bwrap)
    if problem:
        raise KernelUnavailable(f"--sandbox: bubblewrap cannot make a sandbox here ({problem}); "
                                "it needs unprivileged user namespaces (sysctl "
                                "kernel.unprivileged_userns_clone=1; on Ubuntu 24.04+ an AppArmor "
                                "profile for bwrap), or drop --sandbox")
    rundir = Path(tempfile.mkdtemp(prefix="llmrepl-sandbox-"))  # 0700
    connection = rundir / "kernel.json"
    manager = jc.KernelManager(kernel_name=name, transport="ipc", connection_file=str(connection),
                               ip=str(rundir / "kernel-ipc"))
    try:
        spec = manager.kernel_spec
    except NoSuchKernel:
        shutil.rmtree(rundir, ignore_errors=True)
        raise no_such_kernel(name) from None
    argv = list(spec.argv)
    if argv and argv[0] in ("python", "python3", f"python{sys.version_info[0]}.{sys.version_info[1]}"):
        argv[0] = sys.executable  # what jupyter_client does when argv[0] is the command
    visible = [sys.prefix, sys.base_prefix, sys.exec_prefix, *sys.path,
               str(Path(os.path.realpath(argv[0])).parent.parent) if argv else ""]
    spec.argv = bwrap_prefix(bwrap, work, rundir, home=base.get("HOME"), visible=visible) + argv
    spec.interrupt_mode = "message"  # a signal to bwrap would not reach the new session's kernel
    kernel_env = sandbox_env(base, hide)
    log = rundir / "kernel.log"  # the kernel's own stdout and stderr, off llmrepl's terminal
    keeper = Keeper()
    out = open(log, "ab")  # open while the kernel lives: a restart launches with it again

    def start() -> None:
        manager.start_kernel(env=kernel_env, stdout=out, stderr=out)

    try:
        keeper.call(start)
    except (OSError, RuntimeError, ValueError) as exc:
        keeper.close()
        out.close()
        shutil.rmtree(rundir, ignore_errors=True)
        raise KernelUnavailable(f"the sandboxed kernel {name!r} could not start: {exc}") from None
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=READY_TIMEOUT)
    except RuntimeError:
        client.stop_channels()
        status = _exit_status(manager)
        manager.shutdown_kernel(now=True)
        said = _last_line(log)
        keeper.close()
        out.close()
        shutil.rmtree(rundir, ignore_errors=True)
        raise KernelUnavailable(f"the sandboxed kernel {name!r} did not start{status}"
                                + (f": {said}" if said else "")) from None
    handle = SandboxHandle(manager, name, rundir, work, keeper, out)
    return client, handle


def _exit_status(manager: Any) -> str:
    process = getattr(getattr(manager, "provisioner", None), "process", None)
    code = process.poll() if process is not None else None
    return f" (bwrap exit status {code})" if code is not None else ""


def _last_line(path: Path) -> str:
    """The last non-blank line the kernel wrote (why it stopped), printable, bounded."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, 2) - 4096))
            lines = [x for x in f.read().decode("utf-8", "replace").splitlines() if x.strip()]
    except OSError:
        return ""
    return "".join(c if c.isprintable() else "?" for c in lines[-1])[:300] if lines else ""


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


class Keeper:
    """The one thread that starts (and restarts) the sandboxed kernel, alive as long as it is.

    ``--die-with-parent`` ends the sandbox when the *thread* that started bwrap ends (Linux's
    parent-death signal follows the thread), and llmrepl starts its kernel in a passing
    thread: without a keeper, the kernel would be killed as soon as it was ready."""

    def __init__(self) -> None:
        self._jobs: queue.Queue[tuple[Callable[[], Any], list[tuple[bool, Any]], threading.Event] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._serve, name="llmrepl-sandbox", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                _close_event_loop()
                return
            work, box, done = job
            try:
                box.append((True, work()))
            except BaseException as exc:  # handed to the caller, raised there
                box.append((False, exc))
            done.set()

    def call(self, work: Callable[[], Any]) -> Any:
        box: list[tuple[bool, Any]] = []
        done = threading.Event()
        self._jobs.put((work, box, done))
        done.wait()
        ok, value = box[0]
        if not ok:
            raise value
        return value

    def close(self) -> None:
        self._jobs.put(None)


def _close_event_loop() -> None:
    """The asyncio loop jupyter_client made for this thread to run its coroutines on (kept
    by jupyter_core per thread, never closed by it)."""
    from jupyter_core import utils

    var = getattr(utils, "_loop", None)
    loop = var.get() if var is not None else None
    if loop is not None and not loop.is_running() and not loop.is_closed():
        loop.close()


class SandboxHandle(LocalHandle):
    """``LocalHandle`` whose restarts go through the keeper thread; at shutdown the kernel's
    private folder goes too."""

    def __init__(self, manager: Any, name: str, rundir: Path, workdir: Path, keeper: Keeper,
                 log: IO[bytes]) -> None:
        super().__init__(manager, name)
        self.description = f"{name} (sandboxed: no network, writes only in {workdir})"
        self.rundir = rundir
        self.keeper = keeper
        self.log = log

    def restart(self) -> None:
        self.keeper.call(super().restart)

    def shutdown(self) -> None:
        super().shutdown()
        self.keeper.close()
        self.log.close()
        shutil.rmtree(self.rundir, ignore_errors=True)
