"""llmrepl: a terminal REPL where you talk to an LLM that writes Python, and you decide what runs.

The engine is importable without the terminal front end::

    from llmrepl import Session, Executor, ScriptedModel, AutoApprove

Names are imported on first use (PEP 562), so ``llmrepl --help`` stays instant.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Config": "config",
    "load_config": "config",
    "LLMReplError": "errors",
    "ConfigError": "errors",
    "ModelError": "errors",
    "Executor": "execution.executor",
    "ExecResult": "execution.executor",
    "extract_code": "extract",
    "Journal": "store.journal",
    "Completion": "model.client",
    "ModelClient": "model.client",
    "OpenAIModel": "model.client",
    "ScriptedModel": "model.client",
    "Session": "engine.session",
    "TurnResult": "engine.session",
    "Decision": "engine.protocols",
    "Reviewer": "engine.protocols",
    "AutoApprove": "engine.protocols",
    "NoRun": "engine.protocols",
    "Display": "engine.protocols",
    "dispatch": "engine.commands",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'llmrepl' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
