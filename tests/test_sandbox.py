"""A kernel inside bubblewrap (``--sandbox``): no network, nothing writable but the working
folder, no secrets in its environment; interrupts and restarts still work.

The kernel tests run where bubblewrap can make a sandbox on this machine; elsewhere they are
skipped with bubblewrap's own reason. The command-line checks run everywhere.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmrepl import cli
from llmrepl.execution import sandbox
from llmrepl.execution.kernel_seam import KernelUnavailable

BWRAP = sandbox.find_bwrap()
PROBLEM = "bubblewrap (bwrap) is not installed" if BWRAP is None else sandbox.probe(BWRAP)
needs_bwrap = pytest.mark.skipif(bool(PROBLEM), reason=f"no sandbox on this machine: {PROBLEM}")
SECRET = "sk-sandbox-test-secret"


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sandbox")
    found = {name: root / name for name in ("work", "home", "outside")}
    for folder in found.values():
        folder.mkdir()
    (found["home"] / "id_rsa").write_text("a private key")
    return found


@pytest.fixture(scope="module")
def executor(places: dict[str, Path]) -> Iterator[object]:
    if PROBLEM:
        pytest.skip(f"no sandbox on this machine: {PROBLEM}")
    pytest.importorskip("ipykernel")
    from llmrepl.execution.kernel import KernelExecutor

    env = {"PATH": "/usr/bin:/bin", "HOME": str(places["home"]), "LANG": "C.UTF-8",
           "OPENAI_API_KEY": SECRET, "MY_MODEL_KEY_VAR": SECRET, "PLAIN_SETTING": "visible"}
    packages = places["work"] / "venv-site-packages"  # a virtualenv inside the working folder
    packages.mkdir()
    sys.path.append(str(packages))
    try:
        ex = KernelExecutor(lambda: sandbox.start_sandboxed("python3", workdir=places["work"], env=env,
                                                            hide=("MY_MODEL_KEY_VAR",)))
        assert ex.wait_ready(90), ex.start_error
    finally:
        sys.path.remove(str(packages))
    yield ex
    ex.shutdown()


@needs_bwrap
def test_a_cell_cannot_reach_a_server_on_this_machine(executor: object) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        result = executor.run(  # type: ignore[attr-defined]
            f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=10)")
        assert result.error_type == "ConnectionRefusedError", result.error
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing came through


@needs_bwrap
def test_a_cell_writes_only_in_the_working_folder(executor: object, places: dict[str, Path]) -> None:
    wrote = executor.run("from pathlib import Path\nPath('result.csv').write_text('a,b\\n1,2\\n')")  # type: ignore[attr-defined]
    assert wrote.error is None, wrote.error
    assert (places["work"] / "result.csv").read_text() == "a,b\n1,2\n"

    visible = Path(sys.prefix) / "llmrepl-sandbox-test.txt"  # Python's folder: seen, read-only
    try:
        refused = executor.run(f"open({str(visible)!r}, 'w')")  # type: ignore[attr-defined]
        assert refused.error_type == "OSError" and "Read-only file system" in (refused.error or "")
        assert not visible.exists()
    finally:
        visible.unlink(missing_ok=True)
    packages = places["work"] / "venv-site-packages" / "evil.pth"  # Python's own, inside it: read-only
    kept = executor.run(f"open({str(packages)!r}, 'w')")  # type: ignore[attr-defined]
    assert kept.error_type == "OSError" and "Read-only file system" in (kept.error or "")
    assert not packages.exists()
    elsewhere = places["outside"] / "note.txt"  # another folder of this machine: not even there
    hidden = executor.run(f"open({str(elsewhere)!r}, 'w')")  # type: ignore[attr-defined]
    assert hidden.error_type == "FileNotFoundError"
    assert not elsewhere.exists()


@needs_bwrap
def test_secrets_home_and_sockets_stay_outside(executor: object, places: dict[str, Path]) -> None:
    result = executor.run(  # type: ignore[attr-defined]
        "import os\n"
        "(os.environ.get('OPENAI_API_KEY'), os.environ.get('MY_MODEL_KEY_VAR'), "
        "os.environ.get('PLAIN_SETTING'), 'id_rsa' in os.listdir(os.path.expanduser('~')), "
        "os.listdir('/run'))")
    assert result.error is None, result.error
    assert result.value_repr == "(None, None, 'visible', False, [])"
    assert SECRET not in (result.value_repr or "")


@needs_bwrap
def test_interrupt_and_restart_work_in_the_sandbox(executor: object) -> None:
    assert executor.run("kept = 1").error is None  # type: ignore[attr-defined]
    stopped = executor.run("import time\nwhile True:\n    time.sleep(0.05)", timeout=1.5)  # type: ignore[attr-defined]
    assert stopped.timed_out and stopped.error_type == "CellTimeout"
    assert executor.run("kept").value_repr == "1"  # type: ignore[attr-defined]
    executor.restart()  # type: ignore[attr-defined]
    assert executor.run("'kept' in globals()").value_repr == "False"  # type: ignore[attr-defined]
    assert executor.run("import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=5)").error_type in (  # type: ignore[attr-defined]
        "OSError", "TimeoutError")  # still no network after the restart (unreachable, or no route)


@needs_bwrap
def test_llmrepl_sandbox_runs_cells_in_the_sandbox(tmp_path: Path) -> None:
    """The command itself: ``--sandbox`` must never run cells outside the sandbox."""
    import subprocess

    from launch import LLMREPL, child_env

    work = tmp_path / "work"
    work.mkdir()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        lines = ["/py import os, socket", "/py print('key:', os.environ.get('OPENAI_API_KEY'))",
                 f"/py socket.create_connection(('127.0.0.1', {port}), timeout=10)",
                 "/py open('made-inside.txt', 'w').write('x')"]
        done = subprocess.run([LLMREPL, "--sandbox", "--yes"], input="\n".join(lines) + "\n",
                              capture_output=True, text=True, timeout=120, cwd=work,
                              env=child_env(OPENAI_API_KEY=SECRET))
    assert "key: None" in done.stdout and SECRET not in done.stdout, done.stdout + done.stderr
    assert "ConnectionRefusedError" in done.stdout
    assert (work / "made-inside.txt").read_text() == "x"


# -- refused in one sentence ----------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["http://127.0.0.1:8888/?token=abc", "kernel-123.json"])
def test_sandbox_wraps_only_a_kernel_llmrepl_starts(spec: str, capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(KernelUnavailable, match="--sandbox"):
        sandbox.check_sandbox_spec(spec)
    assert cli.main(["--sandbox", "--kernel", spec, "-c", "hi"]) == 2
    err = capfd.readouterr().err
    assert "--sandbox" in err and "Traceback" not in err and "abc" not in err


def test_without_bubblewrap_the_error_says_what_to_install(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on it
    assert cli.main(["--sandbox", "-c", "hi"]) == 2
    err = capfd.readouterr().err
    assert "needs bubblewrap" in err and "`bubblewrap` package" in err
    with pytest.raises(KernelUnavailable, match="needs bubblewrap"):
        sandbox.start_sandboxed("python3")


def test_the_home_folder_or_root_is_never_the_writable_folder(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    (home / "project").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    for folder in (home, tmp_path, Path("/")):  # ~, a folder holding ~, the root
        monkeypatch.chdir(folder)
        assert cli.main(["--sandbox", "-c", "hi"]) == 2
        assert "makes the working folder writable" in capfd.readouterr().err
        with pytest.raises(KernelUnavailable, match="project folder"):
            sandbox.start_sandboxed("python3", workdir=folder, env={"HOME": str(home)})
    sandbox.check_workdir(home / "project", str(home))  # a project folder is fine


def test_the_environment_filter_keeps_ordinary_settings() -> None:
    env = {"PATH": "/bin", "OPENAI_API_KEY": "k", "AWS_SECRET_ACCESS_KEY": "k", "GITHUB_TOKEN": "k",
           "DB_PASSWORD": "k", "CUSTOM": "k", "LANG": "C", "OMP_NUM_THREADS": "4"}
    assert sandbox.sandbox_env(env, hide=("CUSTOM",)) == {"PATH": "/bin", "LANG": "C", "OMP_NUM_THREADS": "4"}
