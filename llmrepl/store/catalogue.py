"""The catalogue of stored sessions: list the journals, find one by id, spot a crash.

A journal (``sessions/<id>.jsonl``, see :mod:`llmrepl.store.journal`) is the only record of a
session. Listing reads each one lightly (a ``cell_end`` line, the big one, is recognised by
its start and never parsed) into a :class:`SessionInfo`, the one line ``/sessions`` shows and
``--resume`` chooses from. Reading a journal back into its conversation is
:mod:`llmrepl.store.transcript`'s job.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from llmrepl.errors import LLMReplError

__all__ = [
    "SessionInfo",
    "sessions_dir",
    "summarize",
    "list_sessions",
    "find_session",
    "render_session_list",
    "previous_crash",
]


@dataclass
class SessionInfo:
    """One stored session, as ``/sessions`` lists it."""

    id: str
    path: Path
    started: datetime | None            # local time, timezone-aware
    first_message: str                  # the person's first message, on one line
    cells: int                          # cells that ran (a cell_end was written)
    ended: bool                         # a session_end record exists
    crashed_in_cell: int | None         # last cell_start without its cell_end
    messages: int = 0                   # messages in the conversation as it stood at the end
    bad_lines: int = 0                  # torn or garbled lines skipped


def sessions_dir(state: Path) -> Path:
    """Where journals live: ``<state>/sessions``."""
    return Path(state) / "sessions"


# -- listing ----------------------------------------------------------------------------

# Records are written as {"t":...,"event":"...",...}: a cell_end line (the big one, with the
# output three times over) is recognised by its start and never parsed.
_CELL_END = re.compile(rb'^\{"t":[-+0-9.eE]+,"event":"cell_end","cell":(\d+),')


def _light_records(path: Path) -> Iterator[dict[str, Any] | None]:
    """The records a summary needs; ``None`` for each unreadable line."""
    with open(path, "rb") as f:
        for raw in f:
            if not raw.strip():
                continue
            if not raw.endswith(b"\n"):
                yield None  # torn by a crash
                continue
            m = _CELL_END.match(raw)
            if m and raw.rstrip().endswith(b"}"):
                yield {"event": "cell_end", "cell": int(m.group(1))}
                continue
            try:
                rec = json.loads(raw.decode("utf-8", "surrogatepass"))
            except ValueError:
                yield None
                continue
            yield rec if isinstance(rec, dict) else None


def summarize(path: Path, records: Iterable[dict[str, Any] | None]) -> SessionInfo:
    """What ``/sessions`` shows of one journal, from its records (``None`` for a bad line)."""
    sid = path.stem
    started: float | None = None
    first_t: float | None = None
    first = ""
    first_py = ""
    cells = 0
    ended = False
    open_cell: int | None = None
    messages = 0
    bad = 0
    for rec in records:
        if rec is None:
            bad += 1
            continue
        event = rec.get("event")
        t = rec.get("t")
        if first_t is None and isinstance(t, (int, float)):
            first_t = float(t)
        if rec.get("replay"):
            continue  # cells re-run by --resume were counted when they first ran
        if event in ("session_start", "resume"):
            open_cell = None  # a later run of this session: an earlier crash is dealt with
        if event == "session_start":
            if started is None and isinstance(t, (int, float)):
                started = float(t)
        elif event == "user":
            if not first:
                first = _one_line(str(rec.get("text") or ""))
        elif event == "py":
            if not first_py:
                first_py = "/py " + _one_line(str(rec.get("code") or ""))
        elif event == "message":
            messages += 1
        elif event == "undo":
            messages = max(0, messages - _int(rec.get("removed")))
        elif event == "reset":
            messages = 0
        elif event == "cell_start":
            open_cell = _int(rec.get("cell"))
        elif event == "cell_end":
            cells += 1
            if open_cell == _int(rec.get("cell")):
                open_cell = None
        elif event == "session_end":
            ended = True
    when = started if started is not None else first_t
    return SessionInfo(
        id=sid,
        path=path,
        started=datetime.fromtimestamp(when).astimezone() if when is not None else None,
        first_message=first or first_py,
        cells=cells,
        ended=ended,
        crashed_in_cell=open_cell,
        messages=messages,
        bad_lines=bad,
    )


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def list_sessions(state: Path) -> list[SessionInfo]:
    """Every stored session, newest first. Files that cannot be read, or hold no record, are skipped."""
    folder = sessions_dir(state)
    try:
        paths = [p for p in folder.iterdir() if p.suffix == ".jsonl" and p.is_file()]
    except OSError:
        return []
    infos: list[tuple[float, SessionInfo]] = []
    for path in paths:
        try:
            recs = list(_light_records(path))
            mtime = path.stat().st_mtime
        except OSError:
            continue
        if not any(r is not None for r in recs):
            continue
        info = summarize(path, recs)
        infos.append((info.started.timestamp() if info.started else mtime, info))
    infos.sort(key=lambda pair: (pair[0], pair[1].id), reverse=True)
    return [info for _, info in infos]


def find_session(state: Path, ref: str = "") -> SessionInfo:
    """``""``: the newest session with a conversation or cells; else an exact id or a unique prefix."""
    infos = list_sessions(state)
    ref = ref.strip()
    if ref.endswith(".jsonl"):
        ref = ref[: -len(".jsonl")]
    if not ref:
        for info in infos:
            if info.messages or info.cells or info.crashed_in_cell is not None:
                return info  # something to bring back (a session that died in its first cell too)
        raise LLMReplError(f"no stored session with messages to resume in {sessions_dir(state)}")
    for info in infos:
        if info.id == ref:
            return info
    matches = [info for info in infos if info.id.startswith(ref)]
    if not matches:
        raise LLMReplError(f"no stored session matches {ref!r}; /sessions lists them")
    if len(matches) > 1:
        shown = ", ".join(m.id for m in matches[:5]) + (", ..." if len(matches) > 5 else "")
        raise LLMReplError(f"{ref!r} matches {len(matches)} sessions: {shown}; give more of the id")
    return matches[0]


def render_session_list(infos: list[SessionInfo], limit: int = 20) -> str:
    """``/sessions``: one line each, newest first: id, start (local), cells, first message."""
    if not infos:
        return "no stored sessions yet"
    shown = infos[:limit] if limit > 0 else infos
    width = max(len("id"), *(len(i.id) for i in shown))
    lines = [f"{'id':<{width}}  {'started':<16}  {'cells':>5}  first message"]
    for info in shown:
        start = info.started.strftime("%Y-%m-%d %H:%M") if info.started else "?"
        first = info.first_message or "(no messages)"
        if len(first) > 60:
            first = first[:59].rstrip() + "…"
        mark = f"  [crashed in cell {info.crashed_in_cell}]" if info.crashed_in_cell is not None else ""
        lines.append(f"{info.id:<{width}}  {start:<16}  {info.cells:>5}  {first}{mark}")
    if len(infos) > len(shown):
        lines.append(f"({len(infos) - len(shown)} older sessions not shown)")
    lines.append("resume one with: llmrepl --resume ID (a unique prefix of the id is enough)")
    return "\n".join(lines)


# -- crashes ----------------------------------------------------------------------------


def previous_crash(state: Path, current: str) -> tuple[str, int] | None:
    """(id, cell) when the newest other session ended while a cell was running (os._exit, a
    segfault, kill -9), and it has not been reported yet. Reads only that journal's tail, so
    it is cheap enough for startup; reporting it appends ``crash_reported`` to that journal."""
    try:
        names = sorted(n for n in os.listdir(sessions_dir(state)) if n.endswith(".jsonl") and n[:-6] != current)
    except OSError:
        return None
    if not names:
        return None
    path = sessions_dir(state) / names[-1]
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 262_144))
            tail = f.read().splitlines()
    except OSError:
        return None
    open_cell: int | None = None
    for raw in tail:
        try:
            rec = json.loads(raw)
        except ValueError:
            continue
        if not isinstance(rec, dict):
            continue
        event = rec.get("event")
        if event in ("session_end", "crash_reported", "resume", "session_start"):
            open_cell = None
        elif event == "cell_start" and not rec.get("replay"):
            open_cell = rec.get("cell") if isinstance(rec.get("cell"), int) else None
        elif event == "cell_end" and rec.get("cell") == open_cell:
            open_cell = None
    if open_cell is None:
        return None
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0))
        try:
            os.write(fd, b'\n{"event":"crash_reported"}\n')
        finally:
            os.close(fd)
    except OSError:
        pass
    return names[-1][:-6], open_cell
