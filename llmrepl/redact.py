"""Scrub secrets from text before it is shown, journaled, saved or sent to the model.

The one redactor (DESIGN.md habit 11): every path by which text reaches the model, the
journal, a snapshot or the screen calls ``Redactor.redact``. It replaces with ``[REDACTED]``:

- each configured secret (the API key, the credentials in the base URL), also when it is
  broken across lines (a line break and indentation between two characters), and any piece
  of one at least 12 characters long (a value cut for the digest, a key printed in halves);
- anything shaped like an OpenAI key (``sk-...``) or a bearer token;
- the ``user:password`` part of any URL (``https://user:pw@host`` -> ``https://[REDACTED]@host``).

It matches text, not meaning: a key reversed, spaced out or encoded (base64, hex) is not
recognized, and it cannot stop approved code from reading the key from memory. For bytes
bound for disk (a snapshot's pickles), ``guard`` refuses any write that holds a secret.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

__all__ = ["MARK", "Redactor", "SecretInData", "safe_url", "url_secrets"]

_W = TypeVar("_W")

MARK = "[REDACTED]"
_MIN_SECRET = 8    # shorter "secrets" would replace ordinary words
_FRAGMENT = 12     # a piece of a secret this long is as good as a leak
_BREAK_RUN = 32    # at most this many line-break / indentation characters inside a secret
_HOLD = 4          # live output ending in this much of a secret's start waits for the next write
_BREAK = frozenset("\r\n \t")

_PATTERNS = (
    re.compile(r"\bsk-[A-Za-z0-9_\-]{16,}"),
    re.compile(r"(?i)(?<=bearer )[A-Za-z0-9._\-]{16,}"),
)
# scheme://user:password@ (greedy to the last "@" before the path: passwords hold "@" too)
# (compiled on first use, by re's own cache: most text holds no URL, and this is on the start path)
_URL_CREDENTIALS = r"(?i)\b([a-z][a-z0-9+.\-]{0,30}://)[^\s/?#@:]{0,256}:[^\s/?#]{0,512}@"


class SecretInData(Exception):
    """Raised by a ``Redactor.guard`` writer instead of writing a secret to disk."""


def safe_url(url: str) -> str:
    """``url`` fit to show or journal: any userinfo (``user:password@``) replaced by ``[REDACTED]@``."""
    scheme, sep, rest = url.partition("//")
    if not sep:
        return url
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    netloc = rest[:end]
    if "@" not in netloc:
        return url
    return f"{scheme}//{MARK}@{netloc.rpartition('@')[2]}{rest[end:]}"


def url_secrets(url: str | None) -> tuple[str, ...]:
    """The secrets in a URL's userinfo, as written and percent-decoded (for ``Redactor``)."""
    if not url:
        return ()
    from urllib.parse import unquote, urlsplit  # only once a base URL is configured

    try:
        parts = urlsplit(url)
    except ValueError:
        return ()
    userinfo = parts.netloc.rpartition("@")[0]
    if not userinfo:
        return ()
    password = userinfo.partition(":")[2]
    return tuple(dict.fromkeys(s for s in (userinfo, unquote(userinfo), password, unquote(password)) if s))


class Redactor:
    """``redact(text)`` replaces the given secrets, pieces of them and key-shaped strings."""

    def __init__(self, *secrets: str | None) -> None:
        self.secrets = tuple(dict.fromkeys(s for s in secrets if s and len(s) >= _MIN_SECRET))
        # Any piece of a secret at least `need` long contains one of these aligned probes
        # whole, so finding the probes (fast substring search) finds every such piece.
        self._probes: list[tuple[str, int, list[tuple[int, str]]]] = []
        for secret in self.secrets:
            need = min(_FRAGMENT, len(secret))
            size = max(need // 2, 1)
            probes = [(at, secret[at:at + size]) for at in range(0, len(secret) - size + 1, size)]
            self._probes.append((secret, need, probes))

    @classmethod
    def for_model(cls, api_key: str | None, base_url: str | None) -> Redactor:
        """The redactor of a session: the API key and the base URL's credentials."""
        return cls(api_key, *url_secrets(base_url))

    def redact(self, text: str) -> str:
        if not text:
            return text
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MARK)
        spans = self._spans(text)
        if spans:
            text = _replace(text, spans)
        if "sk-" in text or "earer" in text:
            for pattern in _PATTERNS:
                text = pattern.sub(MARK, text)
        if "://" in text and "@" in text:
            text = re.sub(_URL_CREDENTIALS, rf"\1{MARK}@", text)
        return text

    def __call__(self, text: str) -> str:
        return self.redact(text)

    def holds_secret(self, text: str) -> bool:
        """Whether ``text`` holds a configured secret, or a piece of one (not just key-shaped text)."""
        return bool(text) and (any(s in text for s in self.secrets) or bool(self._spans(text)))

    def open_tail(self, text: str) -> int:
        """Where the end of ``text`` may be the start of a secret that a later write completes
        (``_HOLD`` characters of it or more, line breaks allowed); ``len(text)`` when none is.
        Live output holds that tail back, so a key printed in pieces is still redacted."""
        best = len(text)
        for secret in self.secrets:
            at = text.find(secret[0], max(0, len(text) - len(secret) - _BREAK_RUN))
            while 0 <= at < best:
                if _runs_out(text, at, secret):
                    best = at
                    break
                at = text.find(secret[0], at + 1)
        return best

    def guard(self, file: _W) -> _W:
        """``file`` for a binary writer that only calls ``write``: a stand-in that raises
        ``SecretInData`` rather than write bytes holding a secret (as UTF-8, or as UTF-16 or
        UTF-32, the way numpy keeps strings). ``file`` itself when there are no secrets."""
        if not self.secrets:
            return file
        needles = {s.encode(codec) for s in self.secrets for codec in ("utf-8", "utf-16-le", "utf-32-le")}
        return _Guarded(file, needles)  # type: ignore[return-value]  # it has the write() callers use

    def _spans(self, text: str) -> list[tuple[int, int]]:
        """Where pieces of the secrets (``need`` characters or more, line breaks allowed) are."""
        spans: list[tuple[int, int]] = []
        for secret, need, probes in self._probes:
            for offset, probe in probes:
                at = text.find(probe)
                while at >= 0:
                    span = _extend(text, at, secret, offset, len(probe), need)
                    at = text.find(probe, span[1] if span else at + 1)
                    if span:
                        spans.append(span)
        return spans


class _Guarded:
    """Writes through to ``file``, unless the bytes (with the end of the last write, for a
    secret split between two writes) hold a secret."""

    def __init__(self, file: Any, needles: set[bytes]) -> None:
        self._file = file
        self._find = re.compile(b"|".join(re.escape(n) for n in sorted(needles)))
        self._keep = max(len(n) for n in needles) - 1
        self._tail = b""

    def write(self, data: Any) -> int:
        try:
            view = memoryview(data).cast("B")  # searched in place: a pickled array is not copied
        except TypeError:  # not C-contiguous
            view = memoryview(bytes(data))
        head = self._tail + bytes(view[: self._keep])
        if self._find.search(head) or self._find.search(view):
            raise SecretInData
        self._tail = (self._tail + bytes(view[-self._keep:]))[-self._keep:]
        return int(self._file.write(data))


def _runs_out(text: str, at: int, secret: str) -> bool:
    """Whether ``text[at:]`` is the start of ``secret`` (``_HOLD`` characters or more, line
    breaks allowed) that ends before the secret does."""
    i, j = 0, at
    while j < len(text):
        if i == len(secret):
            return False  # the whole secret is there: redact() replaces it
        if text[j] == secret[i]:
            i, j = i + 1, j + 1
            continue
        k = j
        while k < len(text) and text[k] in _BREAK and k - j < _BREAK_RUN:
            k += 1
        if k >= len(text) and k > j:
            break  # ends in a line break: the next write may carry on with the secret
        if k == j or "\n" not in text[j:k] or text[k] != secret[i]:
            return False
        j = k
    return _HOLD <= i < len(secret)


def _extend(text: str, at: int, secret: str, offset: int, size: int, need: int) -> tuple[int, int] | None:
    """Grow the match of ``secret[offset:offset+size]`` at ``text[at:]`` both ways, across line
    breaks; the span in ``text`` when at least ``need`` characters of the secret match."""
    i, j = offset + size, at + size
    while i < len(secret) and j < len(text):
        if text[j] == secret[i]:
            i, j = i + 1, j + 1
            continue
        k = j
        while k < len(text) and text[k] in _BREAK and k - j < _BREAK_RUN:
            k += 1
        if k == j or "\n" not in text[j:k] or k >= len(text) or text[k] != secret[i]:
            break
        j = k
    right, end = i, j
    i, j = offset - 1, at - 1
    while i >= 0 and j >= 0:
        if text[j] == secret[i]:
            i, j = i - 1, j - 1
            continue
        k = j
        while k >= 0 and text[k] in _BREAK and j - k < _BREAK_RUN:
            k -= 1
        if k == j or "\n" not in text[k + 1:j + 1] or k < 0 or text[k] != secret[i]:
            break
        j = k
    return (j + 1, end) if right - (i + 1) >= need else None


def _replace(text: str, spans: list[tuple[int, int]]) -> str:
    """``text`` with each (merged) span replaced by the mark."""
    out: list[str] = []
    last = 0
    for start, end in sorted(spans):
        if out and start <= last:  # overlaps or touches the previous span: extend it
            if end > last:
                last = end
            continue
        out.append(text[last:start])
        out.append(MARK)
        last = end
    out.append(text[last:])
    return "".join(out)
