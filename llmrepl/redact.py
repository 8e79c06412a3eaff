"""Scrub secrets from text before it is shown, journaled or sent to the model.

The configured API key is replaced wherever it appears, and so is anything shaped like an
OpenAI key (``sk-...``) or a bearer token. This protects transcripts and the model's
context; it cannot stop code you approved from reading the key from memory.
"""

from __future__ import annotations

import re

__all__ = ["Redactor"]

_PATTERNS = (
    re.compile(r"\bsk-[A-Za-z0-9_\-]{16,}"),
    re.compile(r"(?i)(?<=bearer )[A-Za-z0-9._\-]{16,}"),
)
_MARK = "[REDACTED]"


class Redactor:
    """``redact(text)`` replaces the given secrets and key-shaped strings."""

    def __init__(self, *secrets: str | None) -> None:
        self.secrets = tuple(s for s in secrets if s and len(s) >= 8)

    def redact(self, text: str) -> str:
        if not text:
            return text
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, _MARK)
        if "sk-" in text or "earer" in text:
            for pattern in _PATTERNS:
                text = pattern.sub(_MARK, text)
        return text

    def __call__(self, text: str) -> str:
        return self.redact(text)
