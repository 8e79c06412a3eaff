"""A stored session read back: its journal replayed into the conversation it left.

:func:`load_session` replays a journal (see :mod:`llmrepl.store.journal`): ``message``
records rebuild the conversation, ``undo`` drops the last messages, ``reset`` clears it, and
the cells that ran since the last reset are collected (a cell whose exchange was undone with
a namespace rewind is left out; one undone without a rewind stays, since its variables were
kept). The same pass builds a ``timeline`` of what still stands, which ``/save`` and
``/export`` render and ``--resume`` continues from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmrepl.context.budget import (
    NOTE_PREFIX,  # llmrepl's own messages to the model (cell results, notes)
)
from llmrepl.errors import LLMReplError
from llmrepl.execution.statements import statement_at, top_level
from llmrepl.store.catalogue import SessionInfo, summarize
from llmrepl.store.records import Skipped, read_records

__all__ = ["CellRecord", "StoredDisplay", "Entry", "StoredSession", "load_session"]


# What a cell's result message starts with (prompts.format_result), after the note prefix.
_CELL_RESULT = ("llmrepl ran cell ", "The user ran code directly")  # "... with /py." (older journals)
_NOT_RUN = ("The cell was not run", "Not run:")


@dataclass
class StoredDisplay:
    """A display item as the journal kept it (``outputs.DisplayData`` without image bytes):
    text MIME types in ``data``; an image is ``metadata["filename"]``, the PNG on disk."""

    data: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    at: int = 0
    text: str = ""

    @property
    def filename(self) -> str | None:
        name = self.metadata.get("filename")
        return name if isinstance(name, str) and name else None

    @classmethod
    def from_record(cls, rec: Any) -> StoredDisplay | None:
        if not isinstance(rec, dict):
            return None
        data, meta = rec.get("data"), rec.get("metadata")
        data = data if isinstance(data, dict) else {}
        meta = meta if isinstance(meta, dict) else {}
        at = rec.get("at")
        return cls({str(k): v for k, v in data.items() if isinstance(v, str)}, dict(meta),
                   at if isinstance(at, int) and at >= 0 else 0, str(rec.get("text") or ""))


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
    output_chars: int = 0               # characters the cell wrote (``output`` may be a cut)
    displays: list[StoredDisplay] = field(default_factory=list)  # in order, each with ``at``
    value_data: StoredDisplay | None = None  # the value's bundle (journals before issue 12: None)
    done: int | None = None             # top-level statements that completed (None: unknown)


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
    skipped: list[Skipped] = field(default_factory=list)  # the lines not used, and why
    exchange_cells: list[int] = field(default_factory=list)  # per exchange: index in ``cells`` of its first


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
        chars = rec.get("output_chars")
        cell.output_chars = chars if isinstance(chars, int) and chars >= 0 else len(cell.output)
        cell.displays = [d for d in map(StoredDisplay.from_record, rec.get("displays") or []) if d is not None]
        cell.value_data = StoredDisplay.from_record(rec.get("value_data"))
        done = rec.get("done")
        cell.done = done if isinstance(done, int) and not isinstance(done, bool) else _done_from(cell)

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


def _done_from(cell: CellRecord) -> int | None:
    """How far a cell got, for journals written before ``done``: all of it when it ran
    without an error, none on a SyntaxError, else the statement its traceback names
    (``File "<cell-N>", line L, in <module>``); None when that cannot be told."""
    if cell.error is None:
        return None if cell.interrupted or cell.timed_out else len(top_level(cell.code)) or None
    if cell.error_type == "SyntaxError":
        return 0
    lines = re.findall(rf'File "<cell-{cell.cell}>", line (\d+), in <module>', cell.error)
    return statement_at(cell.code, int(lines[-1])) if lines else None


def _content_text(content: Any) -> str:
    """Text of a message whose content is a list of parts (or None)."""
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def load_session(path: Path) -> StoredSession:
    """Replay a journal: every line checked, a bad one skipped (``skipped`` says which and
    why). Raises ``LLMReplError`` when the file cannot be read."""
    path = Path(path)
    try:
        records, skipped = read_records(path)
    except OSError as e:
        raise LLMReplError(f"cannot read the session journal {path}: {e.strerror or e}") from e
    replay = _Replay()
    for rec in records:
        replay.feed(rec)
    replay.flush_partial()
    info = summarize(path, [*records, *skipped])
    figures = [f for cell in replay.cells for f in cell.figures]
    return StoredSession(
        info=info,
        records=records,
        bad_lines=len(skipped),
        messages=replay.messages,
        exchanges=replay.exchanges,
        cells=replay.cells,
        figures=figures,
        model=replay.model,
        cwd=replay.cwd,
        timeline=replay.timeline,
        undone=replay.undone,
        resets=replay.resets,
        skipped=skipped,
        # a group is an exchange once its first message arrived (one the process died in before that is not)
        exchange_cells=[g.cells_before for g in replay.groups if g.msg_start is not None],
    )
