"""The bounds of every configuration value and the checks that hold a value to them.

A table per kind of bound (number ranges, string lengths, the choices of an enum key) and
:func:`check_value`, which raises a one-line :class:`~llmrepl.errors.ConfigError` naming the
source, the key and what was expected. :mod:`llmrepl.config` owns the keys and their types;
this module only says what a good value is, so a new key is one line in a table here.
"""

from __future__ import annotations

import math
import re

from llmrepl.errors import ConfigError
from llmrepl.redact import safe_url

__all__ = [
    "RANGES",
    "CHOICES",
    "check_value",
    "coerce",
    "kind",
    "shown",
]

# (lowest, highest) of every number, from any source: exec.timeout = 1e300 overflowed the cell
# timer; sizes are what the largest models have, with room to spare.
_DAY = 86_400.0
RANGES: dict[str, tuple[float, float]] = {
    "model.temperature": (0, 2),
    "model.context_window": (256, 10_000_000),  # the request budget never goes below 256 tokens
    "model.max_output_tokens": (1, 1_000_000),
    "model.timeout": (0.001, _DAY),
    "model.input_price": (0, 10_000),
    "model.output_price": (0, 10_000),
    "repl.max_steps": (1, 100),
    "repl.digest_tokens": (0, 100_000),
    "exec.timeout": (0.001, _DAY),  # or 0 = none (1e-9 made the timer fire every µs: a hang)
    "exec.max_output_chars": (1, 10_000_000),
}
_ZERO_IS_NONE = {"exec.timeout"}
_UNITS = {"model.timeout": " seconds (one day)", "exec.timeout": " seconds (one day)"}
# The string keys that take one of a few words.
CHOICES: dict[str, tuple[str, ...]] = {
    "repl.inline_images": ("auto", "on", "off"),
    "model.cache_breakpoints": ("auto", "on", "off"),
}
# Longest value of each string key (a model name can be a path, a key a long token), and what
# none may hold: C0, DEL and C1 controls, zero-width and bidi marks, which would otherwise reach
# the terminal, a request line or a header. The pattern is compiled on first use.
_MAX_CHARS = {"model.name": 1000, "model.base_url": 2048, "model.api_key_env": 256,
              "model.api_key": 16_384, "model.encoding": 100, "model.probe_ports": 200,
              "exec.kernel": 4096}
_CONTROL = r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]"
_NON_EMPTY = {"model.name", "model.api_key_env", "model.encoding", "model.api_key"}
_SECRET = {"model.api_key"}
_TYPE_WORDS = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def kind(value: object) -> str:
    """The TOML name of a value's type, for messages."""
    if isinstance(value, bool):
        return "boolean"
    for cls, word in ((str, "string"), (int, "integer"), (float, "float"), (list, "array"),
                      (dict, "table")):
        if isinstance(value, cls):
            return word
    return "date/time" if hasattr(value, "isoformat") else type(value).__name__


def shown(value: object) -> str:
    """A value for a message: at most 60 characters on one line, control characters escaped."""
    if isinstance(value, (list, dict)):
        import reprlib  # only to explain a mistake; its repr stops at a few levels of nesting

        text = reprlib.repr(value)
    else:
        try:
            text = repr(value)
        except ValueError:  # an integer of thousands of digits
            text = "a number too long to show"
    return text if len(text) <= 60 else text[:57] + "..."


def _num(bound: float) -> str:
    return f"{int(bound):,}" if bound == int(bound) else f"{bound:g}"


def _is_a(value: object, base: type) -> bool:
    """Type test where bools are not numbers and ints are floats."""
    if base is bool or isinstance(value, bool):
        return base is bool and isinstance(value, bool)
    if base is float:
        return isinstance(value, (int, float))
    return isinstance(value, base)


def check_value(where: str, key: str, value: object, base: type) -> object:
    """Validate one value for ``key`` of type ``base``; return it (ints widened to float)."""
    what = kind(value)
    seen = safe_url(value) if key == "model.base_url" and isinstance(value, str) else value  # no user:password@
    got = ("an " if what[:1] in "aeiou" else "a ") + what if key in _SECRET else f"{shown(seen)} ({what})"
    if not _is_a(value, base):
        raise ConfigError(f"{where}: {key} must be {_TYPE_WORDS[base]}, got {got}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: {key} must be a finite number, got {got}")
    if isinstance(value, str):
        if key in _NON_EMPTY and not value.strip():
            raise ConfigError(f"{where}: {key} must not be empty")
        _check_text(where, key, value, got)
        if key in CHOICES and value not in CHOICES[key]:
            words = ", ".join(f'"{c}"' for c in CHOICES[key][:-1]) + f' or "{CHOICES[key][-1]}"'
            raise ConfigError(f"{where}: {key} must be {words}, got {got}")
        if key == "model.probe_ports" and not _ports_ok(value):
            raise ConfigError(f"{where}: {key} must be up to 16 TCP ports separated by commas, got {got}"
                              ' (for example "11434,1234,8080,8000"; "" probes none)')
        if key == "model.base_url" and not re.match(r"https?://[^/\s]", value):
            raise ConfigError(
                f"{where}: {key} must be an http:// or https:// URL, got {got}"
                " (for example \"http://localhost:11434/v1\")"
            )
    if key in RANGES and isinstance(value, (int, float)):
        _check_range(where, key, value, got)
    return float(value) if base is float else value  # type: ignore[arg-type]  # in range: no overflow


def _ports_ok(value: str) -> bool:
    """``model.probe_ports``: "" or up to 16 TCP ports (1-65535) separated by commas."""
    parts = [p.strip() for p in value.split(",")] if value.strip() else []
    return len(parts) <= 16 and all(re.fullmatch(r"[1-9]\d{0,4}", p) and int(p) <= 65535 for p in parts)


def _check_range(where: str, key: str, value: float, got: str) -> None:
    """Every number has both ends bounded (ints compared exactly: 10**400 cannot overflow here)."""
    low, high = RANGES[key]
    if low <= value <= high or (value == 0 and key in _ZERO_IS_NONE):
        return
    span = f"between {_num(low)} and {_num(high)}{_UNITS.get(key, '')}"
    if key in _ZERO_IS_NONE:
        span = "0 (no limit) or " + span
    raise ConfigError(f"{where}: {key} must be {span}, got {got}")


def _check_text(where: str, key: str, value: str, got: str) -> None:
    """A string setting is one short line: no control or invisible formatting characters."""
    limit = _MAX_CHARS.get(key)
    if limit is not None and len(value) > limit:
        raise ConfigError(f"{where}: {key} must be at most {limit:,} characters, got {len(value):,}")
    if re.search(_CONTROL, value):
        detail = "" if key in _SECRET else f", got {got}"
        raise ConfigError(f"{where}: {key} must not contain control or invisible formatting "
                          f"characters (line breaks, tabs, bidi marks){detail}")


def coerce(key: str, base: type, value: object) -> object:
    """Values from flags and the environment arrive as strings: turn them into the key's type."""
    if not isinstance(value, str):
        return value
    if base is str:
        return value.strip().lower() if key in CHOICES else value
    text = value.strip().lower()
    if base is bool and text in ("true", "yes", "on", "1", "false", "no", "off", "0"):
        return text in ("true", "yes", "on", "1")
    try:
        return int(text) if base is int else float(text) if base is float else value
    except ValueError:
        return value
