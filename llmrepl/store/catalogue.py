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
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from llmrepl.errors import LLMReplError
from llmrepl.store.fileio import try_lock
from llmrepl.store.records import (
    MAX_RECORD_BYTES,
    TOO_LONG,
    BadRecord,
    Skipped,
    bounded_lines,
    check_record,
    describe_skipped,
    is_session_id,
    open_journal_for_reading,
    parse_record,
)

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
    bad_lines: int = 0                  # torn, garbled or impossible lines skipped
    skipped: list[Skipped] = field(default_factory=list)  # which lines, and why
    pid: int | None = None              # the process of the last session_start

    def skipped_warning(self) -> str | None:
        """One line naming the file and the lines skipped, or None."""
        return describe_skipped(self.path, self.skipped) if self.skipped else None


def sessions_dir(state: Path) -> Path:
    """Where journals live: ``<state>/sessions``."""
    return Path(state) / "sessions"


# -- listing ----------------------------------------------------------------------------

# Records are written as {"t":...,"event":"...",...}: a line longer than _LIGHT_BYTES (a
# cell_end, with the output three times over, or a long message) is recognised by its start,
# never parsed nor held whole; one longer than records.MAX_RECORD_BYTES is skipped, as
# records.read_records skips it.
_LIGHT_BYTES = 256 << 10
_PREFIX = re.compile(rb'^\{"t":([0-9][0-9.eE+-]{0,30}),"event":"([a-z_]{1,40})"(?:,"cell":([0-9]{1,10})[,}])?')
_TEXT = re.compile(rb'"text":"((?:[^"\\]|\\.){0,400})')


def _from_prefix(head: bytes) -> dict[str, Any]:
    """What the start of a long line says: its time, its event, its cell; a user's message
    as far as it goes. Checked like any record; raises BadRecord."""
    m = _PREFIX.match(head)
    if m is None:
        raise BadRecord("a long line that does not start like a record")
    try:  # the pattern lets "1..2" through: a bad number is a bad record, like any other
        rec: dict[str, Any] = {"t": float(m.group(1)), "event": m.group(2).decode("ascii")}
        if m.group(3) is not None:
            rec["cell"] = int(m.group(3))
    except ValueError as e:
        raise BadRecord(f"a long line that does not start like a record ({e})") from None
    if rec["event"] == "user":
        text = _TEXT.search(head)
        try:
            rec["text"] = json.loads(b'"' + text.group(1) + b'"') if text else ""
        except ValueError:
            rec["text"] = ""
    return check_record(rec)


def _light_records(path: Path) -> Iterator[dict[str, Any] | Skipped]:
    """The records a summary needs, and a :class:`Skipped` for each line that is not one (the
    same lines :func:`llmrepl.store.records.read_records` skips, long ones aside)."""
    with open_journal_for_reading(path) as f:
        for number, raw, size, ended in bounded_lines(f, cap=_LIGHT_BYTES):
            if len(raw) == size and not raw.strip():
                continue
            try:
                if len(raw) == size:
                    yield parse_record(raw)
                elif size > MAX_RECORD_BYTES:
                    yield Skipped(number, TOO_LONG)
                elif not ended:
                    raise BadRecord("torn: no end of line")
                else:
                    yield _from_prefix(raw)
            except BadRecord as e:
                yield Skipped(number, str(e))


def summarize(path: Path, records: Iterable[dict[str, Any] | Skipped]) -> SessionInfo:
    """What ``/sessions`` shows of one journal, from its checked records (a :class:`Skipped`
    for each line that was not one)."""
    sid = path.stem
    started: float | None = None
    first_t: float | None = None
    first = ""
    first_py = ""
    cells = 0
    ended = False
    open_cell: int | None = None
    messages = 0
    skipped: list[Skipped] = []
    replaying: set[int] = set()
    pid: int | None = None
    for rec in records:
        if isinstance(rec, Skipped):
            skipped.append(rec)
            continue
        event = rec.get("event")
        t = rec.get("t")
        if first_t is None and isinstance(t, (int, float)):
            first_t = float(t)
        if rec.get("replay") or (event == "cell_end" and rec.get("cell") in replaying):
            # cells re-run by --resume were counted when they first ran (a long replayed
            # cell_end is read by its start only: its cell_start said it was a replay)
            if event == "cell_start":
                replaying.add(_int(rec.get("cell")))
            elif event == "cell_end":
                replaying.discard(_int(rec.get("cell")))
            continue
        if event in ("session_start", "resume"):
            open_cell = None  # a later run of this session: an earlier crash is dealt with
        if event == "session_start":
            if started is None and isinstance(t, (int, float)):
                started = float(t)
            pid = rec["pid"] if isinstance(rec.get("pid"), int) else None
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
        started=_local_time(when),
        first_message=first or first_py,
        cells=cells,
        ended=ended,
        crashed_in_cell=open_cell,
        messages=messages,
        bad_lines=len(skipped),
        skipped=skipped,
        pid=pid,
    )


def _local_time(when: float | None) -> datetime | None:
    try:
        return datetime.fromtimestamp(when).astimezone() if when is not None else None
    except (OverflowError, OSError, ValueError):  # checked to lie in range; a platform may differ
        return None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def list_sessions(state: Path) -> list[SessionInfo]:
    """Every stored session, newest first. Files that cannot be read, hold no record, are not
    regular files (a symlink, a FIFO) or whose names are not plain ids are skipped."""
    infos: list[tuple[float, SessionInfo]] = []
    for path in _journal_paths(state):
        try:
            recs = list(_light_records(path))
            mtime = path.stat().st_mtime
        except OSError:
            continue
        if not any(not isinstance(r, Skipped) for r in recs):
            continue
        info = summarize(path, recs)
        infos.append((info.started.timestamp() if info.started else mtime, info))
    infos.sort(key=lambda pair: (pair[0], pair[1].id), reverse=True)
    return [info for _, info in infos]


def _journal_paths(state: Path) -> list[Path]:
    """``sessions/<id>.jsonl`` files whose id is plain (see ``records.is_session_id``)."""
    folder = sessions_dir(state)
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return [folder / n for n in names if n.endswith(".jsonl") and is_session_id(n[: -len(".jsonl")])]


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
        raise LLMReplError(f"no stored session matches {ascii(ref)}; /sessions lists them")
    if len(matches) > 1:
        shown = ", ".join(m.id for m in matches[:5]) + (", ..." if len(matches) > 5 else "")
        raise LLMReplError(f"{ascii(ref)} matches {len(matches)} sessions: {shown}; give more of the id")
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
    lines += [f"warning: {w}" for i in shown if (w := i.skipped_warning())]
    lines.append("resume one with: llmrepl --resume ID (a unique prefix of the id is enough)")
    return "\n".join(lines)


# -- crashes ----------------------------------------------------------------------------


def previous_crash(state: Path, current: str) -> tuple[str, int] | None:
    """(id, cell) when the newest other session ended while a cell was running (os._exit, a
    segfault, kill -9), and it has not been reported yet. Reads only that journal's tail, so
    it is cheap enough for startup; reporting it appends ``crash_reported`` to that journal."""
    paths = sorted(p for p in _journal_paths(state) if p.stem != current)
    if not paths:
        return None
    path = paths[-1]
    try:
        with open_journal_for_reading(path) as f:
            f.seek(0, os.SEEK_END)
            start = max(0, f.tell() - 262_144)
            f.seek(start)
            tail = f.read().split(b"\n")
    except OSError:
        return None
    if start:
        tail = tail[1:]  # the first piece is the end of a line that began earlier
    open_cell: int | None = None
    for raw in tail:
        try:
            rec = parse_record(raw + b"\n")
        except BadRecord:
            continue
        event = rec.get("event")
        if event in ("session_end", "crash_reported", "resume", "session_start"):
            open_cell = None
        elif event == "cell_start" and not rec.get("replay"):
            open_cell = rec.get("cell")
        elif event == "cell_end" and rec.get("cell") == open_cell:
            open_cell = None
    if open_cell is None:
        return None
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
                     | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        if not try_lock(fd):
            return None  # another llmrepl has that session open right now: it did not crash
        os.write(fd, b'\n{"event":"crash_reported"}\n')
    except OSError:
        pass
    finally:
        os.close(fd)
    return path.stem, open_cell
