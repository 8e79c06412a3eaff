"""What an installed llmrepl says about itself: ``--version`` for bug reports, ``py.typed``.

CI runs this file against the installed wheel too (``.ci/run``), where it checks what the
wheel ships rather than what the checkout holds.
"""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
import sys
from pathlib import Path

from launch import child_env, run

import llmrepl
from llmrepl.cli import installed_version


def expected_version_lines() -> list[str]:
    return [
        f"llmrepl {llmrepl.__version__}",
        f"Python {platform.python_version()} ({platform.python_implementation()})",
        f"openai {importlib.metadata.version('openai')}",
        f"prompt_toolkit {importlib.metadata.version('prompt_toolkit')}",
    ]


def test_version_names_llmrepl_python_openai_and_prompt_toolkit():
    p = run(["--version"])
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == expected_version_lines()
    assert p.stderr == ""


def test_version_among_other_flags_says_the_same():
    p = run(["--no-stream", "--version"])
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == expected_version_lines()


def test_help_says_what_version_shows():
    assert "prompt_toolkit" in run(["--help"]).stdout


def test_version_imports_neither_the_libraries_nor_importlib_metadata():
    """--version stays instant (benchmarks/bench_help.py): it reads the versions from the
    dist-info folders' names, importing neither openai (~0.3 s), prompt_toolkit, nor
    importlib.metadata (~45 ms)."""
    code = ("import sys\nfrom llmrepl.cli import main\nmain(['--version'])\n"
            "print(' '.join(sorted(sys.modules)))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=child_env(),
                       timeout=60)
    assert p.returncode == 0, p.stderr
    modules = set(p.stdout.splitlines()[-1].split())
    for heavy in ("openai", "prompt_toolkit", "importlib.metadata", "argparse"):
        assert heavy not in modules, heavy


def test_installed_version_agrees_with_importlib_metadata():
    for name in ("openai", "prompt_toolkit", "pygments", "Pygments", "pytest-timeout", "pytest_timeout"):
        assert installed_version(name) == importlib.metadata.version(name), name
    assert installed_version("no-such-distribution-llmrepl") == "not installed"


def test_the_package_ships_py_typed():
    """PEP 561: users' type checkers read llmrepl's hints only when py.typed is installed."""
    assert (Path(llmrepl.__file__).parent / "py.typed").is_file()
