"""Stored sessions: list and find journals, and replay one into the conversation it left.

A journal (``sessions/<id>.jsonl``, see :mod:`llmrepl.store.journal`) is the only record of a
session. :func:`load_session` replays it: ``message`` records rebuild the conversation,
``undo`` drops the last messages, ``reset`` clears it, and the cells that ran since the last
reset are collected (a cell whose exchange was undone with a namespace rewind is left out;
one undone without a rewind stays, since its variables were kept). The same pass builds a
``timeline`` of what still stands, which ``/save`` and ``/export`` render.
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

from llmrepl.context.budget import (
    NOTE_PREFIX,  # llmrepl's own messages to the model (cell results, notes)
)
from llmrepl.errors import LLMReplError
from llmrepl.store.journal import read_journal

__all__ = [
    "previous_crash",
    "SessionInfo",
    "CellRecord",
    "Entry",
    "StoredSession",
    "sessions_dir",
    "list_sessions",
    "find_session",
    "load_session",
    "render_session_list",
    "NOTE_PREFIX",
]


# What a cell's result message starts with (prompts.format_result), after the note prefix.
_CELL_RESULT = ("llmrepl ran cell ", "The user ran code directly with /py.")
_NOT_RUN = ("The cell was not run", "Not run:")


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


@dataclass
class CellRecord:
    """One cell that ran (or started and never finished)."""

    cell: int
    code: str
    output: str = ""
    value: str | None = None
    error: str | None = None
    error_type: str | None = None
    figures: list[str] = field(default_factory=list)
    edited: bool = False
    source: str = "model"               # "model" or "py"
    completed: bool = False             # cell_end seen
    stdout: str = ""
    stderr: str = ""
    duration: float = 0.0
    interrupted: bool = False
    timed_out: bool = False
    undone: bool = False                # its exchange was undone, its variables kept


@dataclass
class Entry:
    """One step of the conversation as it stands, in order, for transcripts and notebooks.

    ``kind``: ``user`` (text), ``assistant`` (text, tool_calls as in the chat message),
    ``cell`` (cell; ``kept`` when its exchange was undone but its variables were kept),
    ``declined`` (text = the proposed code, reason), ``note`` (text: llmrepl's own remark).
    """

    kind: str
    text: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    cell: CellRecord | None = None
    reason: str = ""
    kept: bool = False
    index: int | None = None            # position in ``messages`` for message entries


@dataclass
class StoredSession:
    """A journal replayed: the conversation as it stood at the end, and the cells behind it."""

    info: SessionInfo
    records: list[dict[str, Any]]
    bad_lines: int
    messages: list[dict[str, Any]]
    exchanges: list[int]
    cells: list[CellRecord]
    figures: list[str]
    model: str | None
    cwd: str | None
    timeline: list[Entry] = field(default_factory=list)
    undone: int = 0                     # exchanges undone (their messages are gone)
    resets: int = 0                     # /reset seen (everything before the last is gone)


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


def _summarize(path: Path, records: Iterable[dict[str, Any] | None]) -> SessionInfo:
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
        info = _summarize(path, recs)
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


# -- replay -----------------------------------------------------------------------------


@dataclass
class _Group:
    """One exchange while replaying: where its messages, cells and timeline entries begin."""

    msg_start: int | None
    cells_before: int
    timeline_start: int


class _Replay:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.exchanges: list[int] = []
        self.cells: list[CellRecord] = []
        self.timeline: list[Entry] = []
        self.groups: list[_Group] = []
        self.open_cells: dict[int, CellRecord] = {}
        self.decisions: dict[int, dict[str, Any]] = {}
        self.pending_py = False
        self.model: str | None = None
        self.cwd: str | None = None
        self.undone = 0
        self.resets = 0
        self.partial: list[str] = []   # streamed text journaled before its answer completed

    def feed(self, rec: dict[str, Any]) -> None:
        if rec.get("replay"):
            return  # a cell re-run by --resume to rebuild the namespace: already counted once
        event = rec.get("event")
        if event == "assistant_partial":
            if isinstance(rec.get("text"), str):
                self.partial.append(rec["text"])
            return
        if event in ("assistant", "model_error"):
            self.partial.clear()  # the answer ended normally (or as an error the session recorded)
        elif event in ("user", "py", "session_start", "resume", "undo", "reset"):
            self.flush_partial()
        handler = getattr(self, "_on_" + str(event), None)
        if handler is not None:
            try:
                handler(rec)
            except (TypeError, ValueError, KeyError, AttributeError):
                pass  # a well-formed line with a malformed record: skip it like a torn one

    def flush_partial(self) -> None:
        """An answer that was streaming when the process died: keep what was shown, marked."""
        if not self.partial:
            return
        text = "".join(self.partial) + "\n[cut off: the llmrepl process ended while this answer was streaming]"
        self.partial.clear()
        self._on_message({"message": {"role": "assistant", "content": text}, "exchange_start": False})

    def _open_group(self, msg_start: int | None) -> None:
        self.groups.append(_Group(msg_start, len(self.cells), len(self.timeline)))

    def _on_session_start(self, rec: dict[str, Any]) -> None:
        self.model = rec.get("model") or self.model
        self.cwd = rec.get("cwd") or self.cwd

    def _on_model(self, rec: dict[str, Any]) -> None:
        if rec.get("name"):
            self.model = str(rec["name"])
            self.timeline.append(Entry("note", text=f"switched the model to {self.model}"))

    def _on_user(self, rec: dict[str, Any]) -> None:
        self._open_group(None)

    def _on_py(self, rec: dict[str, Any]) -> None:
        self._open_group(None)
        self.pending_py = True

    def _on_message(self, rec: dict[str, Any]) -> None:
        msg = rec["message"]
        if not isinstance(msg, dict) or "role" not in msg:
            return
        index = len(self.messages)
        if rec.get("exchange_start"):
            if self.groups and self.groups[-1].msg_start is None:
                self.groups[-1].msg_start = index
            else:
                self._open_group(index)
            self.exchanges.append(index)
        self.messages.append(msg)
        entry = self._entry_for(msg)
        if entry is not None:
            entry.index = index
            self.timeline.append(entry)

    def _entry_for(self, msg: dict[str, Any]) -> Entry | None:
        role = msg.get("role")
        content = msg.get("content")
        text = content if isinstance(content, str) else _content_text(content)
        if role == "assistant":
            return Entry("assistant", text=text, tool_calls=list(msg.get("tool_calls") or []))
        if role == "tool":
            body = text.removeprefix(NOTE_PREFIX)
            if body.startswith(_CELL_RESULT) or (body.startswith(_NOT_RUN) and self._after_decline()):
                return None
            return Entry("note", text=body)
        if role == "user":
            if not text.startswith(NOTE_PREFIX):
                return Entry("user", text=text)
            body = text[len(NOTE_PREFIX):]
            if body.startswith(_CELL_RESULT) or (body.startswith(_NOT_RUN) and self._after_decline()):
                return None  # duplicates the cell (or the decline) already in the timeline
            return Entry("note", text=body)
        return None  # system or unknown roles: kept in messages, not shown

    def _after_decline(self) -> bool:
        return bool(self.timeline) and self.timeline[-1].kind == "declined"

    def _on_decision(self, rec: dict[str, Any]) -> None:
        cell = int(rec["cell"])
        if rec.get("action") == "run":
            self.decisions[cell] = rec
        else:
            self.decisions.pop(cell, None)
            self.timeline.append(Entry("declined", text=str(rec.get("code") or ""),
                                       reason=str(rec.get("reason") or "")))

    def _on_cell_start(self, rec: dict[str, Any]) -> None:
        n = int(rec["cell"])
        decision = self.decisions.pop(n, None)
        cell = CellRecord(
            cell=n,
            code=str(rec.get("code") or ""),
            edited=bool(decision and decision.get("edited")),
            source="py" if self.pending_py else "model",
        )
        self.pending_py = False
        self.open_cells[n] = cell
        self.cells.append(cell)
        self.timeline.append(Entry("cell", cell=cell))

    def _on_cell_end(self, rec: dict[str, Any]) -> None:
        n = int(rec["cell"])
        cell = self.open_cells.pop(n, None)
        if cell is None:  # its cell_start line was lost: keep what the end says
            cell = CellRecord(cell=n, code="")
            self.cells.append(cell)
            self.timeline.append(Entry("cell", cell=cell))
        cell.completed = True
        cell.output = str(rec.get("output") or "")
        cell.stdout = str(rec.get("stdout") or "")
        cell.stderr = str(rec.get("stderr") or "")
        cell.value = rec.get("value")
        cell.error = rec.get("error")
        cell.error_type = rec.get("error_type")
        cell.figures = [str(p) for p in rec.get("figures") or []]
        cell.duration = float(rec.get("duration") or 0.0)
        cell.interrupted = bool(rec.get("interrupted"))
        cell.timed_out = bool(rec.get("timed_out"))

    def _on_model_error(self, rec: dict[str, Any]) -> None:
        self.timeline.append(Entry("note", text=f"model error: {rec.get('message') or rec.get('kind')}"))

    def _on_undo(self, rec: dict[str, Any]) -> None:
        removed = max(0, int(rec.get("removed") or 0))
        # /undo always cuts at the start of the last exchange: use that when known, so a count
        # that differs from the live session's (messages it never journaled) cannot skew it
        keep = self.exchanges[-1] if self.exchanges else max(0, len(self.messages) - removed)
        del self.messages[keep:]
        self.exchanges = [e for e in self.exchanges if e < keep]
        self.undone += 1
        popped: _Group | None = None
        while self.groups and (self.groups[-1].msg_start is None or self.groups[-1].msg_start >= keep):
            popped = self.groups.pop()
        start = popped.timeline_start if popped is not None else len(self.timeline)
        tail = self.timeline[start:]
        del self.timeline[start:]
        if rec.get("rewound") and popped is not None:
            # the namespace went back to how it was when the exchange began
            del self.cells[popped.cells_before:]
        else:
            for entry in tail:  # its variables were kept: the cells still count
                if entry.kind == "cell" and entry.cell is not None:
                    entry.kept = entry.cell.undone = True
                    self.timeline.append(entry)
        # anything else beyond the conversation's new end goes too
        self.timeline = [e for e in self.timeline if e.index is None or e.index < keep]

    def _on_reset(self, rec: dict[str, Any]) -> None:
        self.messages.clear()
        self.exchanges.clear()
        self.cells.clear()
        self.timeline.clear()
        self.groups.clear()
        self.open_cells.clear()
        self.decisions.clear()
        self.resets += 1


def _content_text(content: Any) -> str:
    """Text of a message whose content is a list of parts (or None)."""
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def load_session(path: Path) -> StoredSession:
    """Replay a journal. Raises ``LLMReplError`` when the file cannot be read."""
    path = Path(path)
    try:
        records, bad = read_journal(path)
    except OSError as e:
        raise LLMReplError(f"cannot read the session journal {path}: {e.strerror or e}") from e
    replay = _Replay()
    for rec in records:
        replay.feed(rec)
    replay.flush_partial()
    info = _summarize(path, records)
    info.bad_lines = bad
    figures = [f for cell in replay.cells for f in cell.figures]
    return StoredSession(
        info=info,
        records=records,
        bad_lines=bad,
        messages=replay.messages,
        exchanges=replay.exchanges,
        cells=replay.cells,
        figures=figures,
        model=replay.model,
        cwd=replay.cwd,
        timeline=replay.timeline,
        undone=replay.undone,
        resets=replay.resets,
    )


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

