"""Errors written for the person at the terminal.

Every error llmrepl raises derives from :class:`LLMReplError`; its message is shown as-is,
on one line, and says what to do. ``cli.py`` maps them to exit codes.
"""

from __future__ import annotations

__all__ = [
    "LLMReplError",
    "ConfigError",
    "ModelError",
    "InputNotAllowed",
]


class LLMReplError(Exception):
    """Base class: the message is meant for the user and states the fix."""

    exit_code = 1


class ConfigError(LLMReplError):
    """Bad configuration or usage: names the file, the key and what was expected."""

    exit_code = 2


class ModelError(LLMReplError):
    """The model could not be reached or answered with an error (after the SDK's retries).

    ``kind`` is a short machine-readable tag (``auth``, ``not_found``, ``connection``,
    ``timeout``, ``rate_limit``, ``server``, ``bad_request``, ``context_length``,
    ``bad_response``, ``no_model``, ``too_long``: not sent, it could not fit the window);
    ``retryable`` says whether resending may work.
    ``partial`` holds whatever text arrived before the failure (kept, never run).
    """

    exit_code = 1

    def __init__(
        self,
        message: str,
        *,
        kind: str = "error",
        retryable: bool = False,
        status: int | None = None,
        partial: str = "",
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.retryable = retryable
        self.status = status
        self.partial = partial


class InputNotAllowed(RuntimeError):
    """Raised inside a cell when it calls ``input()`` where nobody can answer (batch, one-shot)."""
