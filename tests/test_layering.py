"""The engine/front-end line and the lazy-import promises, checked in fresh interpreters."""

from __future__ import annotations

import subprocess
import sys

import llmrepl

ENGINE = [
    "session", "commands", "executor", "capture", "extract", "journal", "model", "model_errors", "prompts",
    "config", "errors", "context", "budget", "tokens", "digest", "review", "risk", "redact", "pricing",
    "sessions", "resume", "export", "snapshot", "probe", "fileio",
]


def modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print(' '.join(sys.modules))"],
        capture_output=True, text=True, check=True,
    ).stdout
    return set(out.split())


def test_engine_never_imports_prompt_toolkit_or_pygments():
    mods = modules_after("\n".join(f"import llmrepl.{m}" for m in ENGINE))
    assert "prompt_toolkit" not in mods and "pygments" not in mods


def test_ui_path_does_not_import_openai_or_tiktoken():
    mods = modules_after("import llmrepl.cli, llmrepl.ui, llmrepl.display, llmrepl.session")
    for heavy in ("openai", "tiktoken", "numpy", "pandas", "matplotlib"):
        assert heavy not in mods, heavy


def test_help_does_not_import_prompt_toolkit():
    code = "import sys\nfrom llmrepl.cli import main\ntry:\n    main(['--version'])\nexcept SystemExit:\n    pass"
    mods = modules_after(code)
    assert "prompt_toolkit" not in mods


def test_public_api_is_exported():
    for name in llmrepl.__all__:
        assert getattr(llmrepl, name) is not None, name


def test_the_early_prompt_is_the_real_prompt():
    from llmrepl import cli, ui

    assert cli._EARLY_PROMPT == ui.PROMPT
