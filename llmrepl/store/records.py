"""Reading a journal back without trusting it: bounded lines, and every record checked.

A journal is llmrepl's own file, but whatever wrote into it (a crash, a full disk, a cell, a
person with an editor) may have left anything: a line of a gigabyte, ``"t": 1e400``, a cell
number that is a string, a message without a role. One bad line must cost only itself:
:func:`bounded_lines` never holds more than ``cap`` bytes of one line (a longer one is
skipped by reading past it in chunks), and :func:`parse_record` accepts a line only when it
is a JSON object whose known fields have the types and ranges llmrepl writes. Everything
else becomes a :class:`Skipped` naming the line, so callers can say which line and why.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "MAX_RECORD_BYTES",
    "TOO_LONG",
    "BadRecord",
    "Skipped",
    "bounded_lines",
    "open_journal_for_reading",
    "parse_record",
    "check_record",
    "read_records",
    "describe_skipped",
    "is_session_id",
    "JOURNAL_MIME_TYPES",
    "display_record",
]

MAX_RECORD_BYTES = 32 << 20   # a cell_end holds up to 1M characters of each stream: well below this
_SKIP_CHUNK = 1 << 20         # how much of an over-long line is read at a time to get past it
_MAX_TIME = 32_503_680_000.0  # year 3000: any later "t" is not a time llmrepl wrote
_MAX_INT = 2**31 - 1          # cell numbers, counts, process ids
_MAX_SIZE = 2**62             # byte and character counts
_MAX_SECONDS = 1e9            # durations
TOO_LONG = f"longer than {MAX_RECORD_BYTES >> 20} MiB"
_SESSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_SURROGATE = re.compile("[\ud800-\udfff]")


def is_session_id(text: str) -> bool:
    """A journal's name (without ``.jsonl``) llmrepl will list, resume and print: letters,
    digits, ``.``, ``_`` and ``-`` only, so an id can never carry a newline or an escape."""
    return _SESSION_ID.fullmatch(text) is not None


class BadRecord(ValueError):
    """A line that is not a record llmrepl could have written; the message says why."""


@dataclass(frozen=True)
class Skipped:
    """One journal line that was not used."""

    line: int
    reason: str


def describe_skipped(path: Path | str, skipped: list[Skipped], limit: int = 3) -> str:
    """``skipped line 7 of FILE (why); ...`` for a warning: the first few, then a count."""
    shown = "; ".join(f"line {s.line} ({s.reason})" for s in skipped[:limit])
    more = f"; and {len(skipped) - limit} more" if len(skipped) > limit else ""
    return f"skipped {len(skipped)} unreadable journal line(s) of {path}: {shown}{more}"


# -- lines ------------------------------------------------------------------------------


def open_journal_for_reading(path: Path) -> io.BufferedReader:
    """Open a journal to read: a regular file only (a FIFO or device planted under a journal's
    name would block or never end), never through a symbolic link. Raises OSError."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        return io.BufferedReader(io.FileIO(fd, "rb"))
    except BaseException:
        os.close(fd)
        raise


def bounded_lines(f: io.BufferedReader, cap: int = MAX_RECORD_BYTES,
                  keep: int = 4096) -> Iterator[tuple[int, bytes, int, bool]]:
    """``(line number, bytes, size, ended)`` for each line of ``f``: ``size`` is the whole
    line's length and ``ended`` whether it ends with a newline. A line longer than ``cap``
    is never read into memory: only its first ``keep`` bytes come back (``len(bytes) <
    size``), and the rest is read past in 1 MiB chunks, so a gigabyte line costs a scan,
    not a gigabyte."""
    number = 0
    chunk = bytearray(_SKIP_CHUNK)
    while True:
        raw = f.readline(cap + 1)
        if not raw:
            return
        number += 1
        if len(raw) <= cap or raw.endswith(b"\n"):
            yield number, raw, len(raw), raw.endswith(b"\n")
            continue
        head, size, ended = raw[:keep], len(raw), False
        del raw
        while not ended:  # past the rest of the line
            start = f.tell()
            n = f.readinto(chunk)
            if not n:
                break
            i = chunk.find(b"\n", 0, n)
            ended = i >= 0
            if ended:
                f.seek(start + i + 1)
            size += i + 1 if ended else n
        yield number, head, size, ended


# -- records ----------------------------------------------------------------------------


def _bad_constant(name: str) -> Any:
    raise BadRecord(f"{name} is not a number llmrepl writes")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadRecord(f"the number {text[:20]} is out of range")
    return value


_DECODER = json.JSONDecoder(parse_constant=_bad_constant, parse_float=_finite_float)


def parse_record(raw: bytes) -> dict[str, Any]:
    """One whole line into a checked record; raises :class:`BadRecord` saying why not."""
    if not raw.endswith(b"\n"):
        raise BadRecord("torn: no end of line")
    try:
        text = raw.decode("utf-8", "surrogateescape")
        rec = _DECODER.decode(text)
    except BadRecord:
        raise
    except RecursionError:
        raise BadRecord("nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, and ints of more than 4300 digits
        raise BadRecord(f"not JSON: {str(e)[:60]}") from None
    return check_record(rec)


# A field's check: returns the value to keep (strings lose lone surrogates) or raises.
Check = Callable[[Any], Any]


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise BadRecord(f"expected text, got {type(value).__name__}")
    # a lone surrogate (from a \ud800 escape, or a byte that was not UTF-8) cannot be sent,
    # printed or encoded: replace it, keep the rest
    return _SURROGATE.sub("\ufffd", value) if _SURROGATE.search(value) else value


def _optional(check: Check) -> Check:
    return lambda value: None if value is None else check(value)


def _int_in(top: int) -> Check:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadRecord(f"expected a whole number, got {type(value).__name__}")
        if not 0 <= value <= top:
            raise BadRecord("a number out of range")
        return value
    return check


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadRecord(f"expected a number, got {type(value).__name__}")
    if not (math.isfinite(value) and 0 <= value <= _MAX_SECONDS):
        raise BadRecord("a duration out of range")
    return float(value)


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise BadRecord(f"expected true or false, got {type(value).__name__}")
    return value


def _texts(value: Any) -> list[str]:
    if not isinstance(value, list):
        raise BadRecord(f"expected a list, got {type(value).__name__}")
    return [_text(v) for v in value]


def _plain(value: Any) -> Any:
    """A list or object llmrepl keeps but never reads back (usage, repairs): any JSON will do."""
    if not isinstance(value, (list, dict)):
        raise BadRecord(f"expected a list or an object, got {type(value).__name__}")
    return value


def _tool_call(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or not isinstance(value.get("function"), dict):
        raise BadRecord("a tool call without its function")
    fn = value["function"]
    return {"id": _text(value.get("id", "")), "type": _text(value.get("type", "function")),
            "function": {"name": _text(fn.get("name", "")), "arguments": _text(fn.get("arguments", ""))}}


def _message(value: Any) -> dict[str, Any]:
    """A conversation message, rebuilt from the keys llmrepl writes: it goes back to the model."""
    if not isinstance(value, dict):
        raise BadRecord("the message is not an object")
    role = value.get("role")
    if role not in ("user", "assistant", "tool"):
        raise BadRecord("a message with an unknown role")
    msg: dict[str, Any] = {"role": role}
    content = value.get("content")
    if isinstance(content, list):
        msg["content"] = [{"type": _text(p.get("type", "text")), "text": _text(p.get("text", ""))}
                          for p in content if isinstance(p, dict)]
    else:
        msg["content"] = _optional(_text)(content)
    if "tool_calls" in value:
        calls = value["tool_calls"]
        if not isinstance(calls, list):
            raise BadRecord("tool_calls is not a list")
        msg["tool_calls"] = [_tool_call(c) for c in calls]
    if role == "tool":
        msg["tool_call_id"] = _text(value.get("tool_call_id", ""))
    return msg


def _assistant_calls(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list) or not all(isinstance(c, dict) for c in value):
        raise BadRecord("tool_calls is not a list of objects")
    return [{k: _text(c.get(k, "")) for k in ("id", "name", "arguments")} for c in value]


# -- display bundles (Jupyter's display_data / execute_result) in a cell_end ------------------

# The MIME types a journal keeps: text only. An image stays on disk (metadata "filename"); a
# journal line that claims any other type (a script, an image as base64) loses that entry.
JOURNAL_MIME_TYPES = ("text/plain", "text/html", "text/markdown")
_META_TEXT = ("filename",)
_META_INT = ("width", "height")
_DISPLAYS_TOTAL = 4_000_000  # characters of display text one cell_end may hold (32 MiB lines)
_DISPLAY_FLOOR = 2_000       # what each text keeps once that is spent


def _cut(text: str, limit: int) -> str:
    """Head and tail of ``text`` within ``limit`` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    tail = limit // 5
    head = limit - tail
    return f"{text[:head]}\n[... {len(text) - head - tail:,} characters omitted ...]\n{text[len(text) - tail:]}"


def display_record(item: Any, cap: int, spent: list[int] | None = None) -> dict[str, Any]:
    """What a journal keeps of one display item (``outputs.DisplayData`` or alike): its text
    MIME types, ``metadata`` filename/width/height, ``at`` and ``text``; never image bytes.
    Each text is cut to ``cap`` characters (the bound the cell's output has), and all of a
    cell's display text to a few million (``spent`` carries the count across items)."""
    spent = spent if spent is not None else [0]

    def kept(text: str) -> str:
        room = min(cap, max(_DISPLAYS_TOTAL - spent[0], _DISPLAY_FLOOR))
        text = _cut(text, room)
        spent[0] += len(text)
        return text

    data = getattr(item, "data", None) or {}
    meta = getattr(item, "metadata", None) or {}
    out_data = {m: kept(data[m]) for m in JOURNAL_MIME_TYPES if isinstance(data.get(m), str)}
    out_meta: dict[str, Any] = {k: str(meta[k]) for k in _META_TEXT if isinstance(meta.get(k), (str, os.PathLike))}
    out_meta.update({k: int(meta[k]) for k in _META_INT if isinstance(meta.get(k), int) and not isinstance(meta.get(k), bool)})
    at = getattr(item, "at", 0)
    return {"data": out_data, "metadata": out_meta,
            "at": at if isinstance(at, int) and at >= 0 else 0,
            "text": kept(str(getattr(item, "text", "") or ""))}


def _display(value: Any) -> dict[str, Any]:
    """A display item as a journal holds it (see :func:`display_record`), checked."""
    if not isinstance(value, dict):
        raise BadRecord(f"a display that is not an object ({type(value).__name__})")
    data = value.get("data", {})
    if not isinstance(data, dict):
        raise BadRecord("a display whose data is not an object")
    kept: dict[str, str] = {}
    for mime, text in data.items():
        if not isinstance(text, str):
            raise BadRecord(f"a display whose {str(mime)[:40]!r} is not text")
        if mime in JOURNAL_MIME_TYPES:
            kept[mime] = _text(text)
    meta = value.get("metadata", {})
    if not isinstance(meta, dict):
        raise BadRecord("a display whose metadata is not an object")
    out_meta: dict[str, Any] = {k: _text(meta[k]) for k in _META_TEXT if k in meta}
    out_meta.update({k: _int_in(_MAX_INT)(meta[k]) for k in _META_INT if k in meta})
    return {"data": kept, "metadata": out_meta, "at": _int_in(_MAX_SIZE)(value.get("at", 0)),
            "text": _text(value.get("text", ""))}


def _displays(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise BadRecord(f"expected a list, got {type(value).__name__}")
    return [_display(v) for v in value]


_S, _S_ = _text, _optional(_text)
_N, _SIZE = _int_in(_MAX_INT), _int_in(_MAX_SIZE)
_B, _B_ = _flag, _optional(_flag)

# event -> {field: check}; fields marked required must be present. Fields not listed (from a
# newer llmrepl, or events this version does not know) are kept unchecked: nothing reads them.
_FIELDS: dict[str, dict[str, Check]] = {
    "session_start": {"id": _S, "version": _S, "model": _S_, "base_url": _S_, "cwd": _S_, "pid": _N,
                      "mode": _S, "resumed": _B},
    "resume": {"messages": _N, "cells": _N},
    "user": {"text": _S},
    "message": {"message": _message, "exchange_start": _B},
    "assistant_partial": {"text": _S},
    "assistant": {"text": _S_, "tool_calls": _assistant_calls, "finish_reason": _S_, "interrupted": _B,
                  "usage": _optional(_plain), "model": _S_, "seconds": _seconds},
    "model_error": {"kind": _S, "message": _S, "partial": _S_},
    "decision": {"cell": _N, "action": _S, "edited": _B, "code": _S, "reason": _S_, "risks": _texts},
    "cell_start": {"cell": _N, "code": _S, "replay": _B},
    "cell_end": {"cell": _N, "output": _S, "stdout": _S, "stderr": _S, "value": _S_, "error": _S_,
                 "error_type": _S_, "duration": _seconds, "interrupted": _B, "timed_out": _B,
                 "figures": _texts, "output_chars": _SIZE, "repairs": _plain, "replay": _B,
                 "displays": _displays, "value_data": _optional(_display), "done": _optional(_N)},
    "snapshot": {"key": _S, "saved": _N, "skipped": _texts, "bytes": _SIZE},
    "late_output": {"stream": _S, "text": _S, "after_cell": _N},
    "command": {"line": _S},
    "py": {"code": _S},
    "undo": {"removed": _N, "rewound": _B_, "note": _S_},
    "model": {"name": _S, "base_url": _S_, "source": _S_},
    "auto": {"on": _B},
    "internal_error": {"error": _S},
    "session_end": {"status": _S_},
}
_REQUIRED: dict[str, tuple[str, ...]] = {
    "message": ("message",), "decision": ("cell",), "cell_start": ("cell",), "cell_end": ("cell",),
    "model": ("name",),
}


def check_record(rec: Any) -> dict[str, Any]:
    """``rec`` if it is a record llmrepl could have written (strings cleaned of lone
    surrogates, messages rebuilt from the keys llmrepl writes); raises :class:`BadRecord`."""
    if not isinstance(rec, dict):
        raise BadRecord("not a JSON object")
    event = rec.get("event")
    if not isinstance(event, str) or not event:
        raise BadRecord("no event name")
    if "t" in rec:
        t = rec["t"]
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 <= t <= _MAX_TIME:
            raise BadRecord("'t' is not a time")
    for name in _REQUIRED.get(event, ()):
        if rec.get(name) is None:
            raise BadRecord(f"a {event} record without {name!r}")
    fields = _FIELDS.get(event)
    if fields:
        for name, check in fields.items():
            if name in rec:
                try:
                    rec[name] = check(rec[name])
                except BadRecord as e:
                    raise BadRecord(f"{event}.{name}: {e}") from None
    return rec


def read_records(path: Path | str) -> tuple[list[dict[str, Any]], list[Skipped]]:
    """Every good record of a journal, and each line skipped with its reason. Blank lines are
    neither. Raises OSError when the file cannot be opened."""
    good: list[dict[str, Any]] = []
    skipped: list[Skipped] = []
    with open_journal_for_reading(Path(path)) as f:
        for number, raw, size, _ in bounded_lines(f):
            if len(raw) < size:
                skipped.append(Skipped(number, TOO_LONG))
                continue
            if not raw.strip():
                continue
            try:
                good.append(parse_record(raw))
            except BadRecord as e:
                skipped.append(Skipped(number, str(e)))
    return good, skipped
