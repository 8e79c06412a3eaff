"""``/save`` and ``/export``: a stored session as Markdown, a runnable ``.py``, or a notebook.

All three render :class:`llmrepl.store.transcript.StoredSession`, the journal replayed: the
conversation as it stands (undone exchanges and everything before the last ``/reset`` are
left out) and the cells behind the namespace. Files are written atomically and 0600, since
they hold conversation text; ``/export`` and ``--export`` replace an existing file only when
forced or answered yes.
The ``.py`` (:mod:`llmrepl.store.script`) and the notebook (:mod:`llmrepl.store.notebook`)
run top to bottom: each cell as its replay plan has it (``store.replay``), what completed.
Exports are data, never code: in a ``.py`` the only code is the code of cells that ran, and
any other text goes in through :mod:`llmrepl.store.quoting`; in a notebook it is JSON
written by nbformat, and code cells hold only the cells' code.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from llmrepl.errors import LLMReplError
from llmrepl.extract import code_from_tool_call
from llmrepl.store.fileio import atomic_write_text
from llmrepl.store.quoting import as_comment
from llmrepl.store.replay import ReplayPlan, plan_replay
from llmrepl.store.script import export_py, keepable, missing_notes
from llmrepl.store.transcript import CellRecord, StoredSession

__all__ = ["transcript_markdown", "export_py", "export_ipynb", "write_export", "ExportExists", "FORMATS"]

FORMATS = (".py", ".ipynb", ".md")


class ExportExists(LLMReplError):
    """The export's target exists and replacing it was not asked for: nothing was written."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"{path} exists; nothing was written (add --force to replace it)")
        self.path = path


# -- Markdown ---------------------------------------------------------------------------


def _fence(text: str, lang: str = "") -> str:
    """A fenced block that survives backticks inside ``text``."""
    longest = max((len(m) for m in re.findall(r"`{3,}", text)), default=0)
    ticks = "`" * max(3, longest + 1)
    body = text if text.endswith("\n") else text + "\n"
    return f"{ticks}{lang}\n{body}{ticks}"


def _figure_target(path: str, base: Path | None) -> str:
    """Relative to the transcript's folder when the figure lies inside it; else absolute."""
    target = path
    if base is not None:
        try:
            rel = os.path.relpath(os.path.abspath(path), os.path.abspath(base))
        except ValueError:  # another drive (Windows)
            rel = ""
        if rel and not rel.startswith(os.pardir):
            target = rel
    target = target.replace(os.sep, "/")
    # percent-encoded: a journal's file name can neither end the link nor start HTML or a new
    # line in the transcript (``x>\n<script>``); a plain path reads as it is
    from urllib.parse import quote

    return quote(target, safe="/:@._-~+,=")


def _header_lines(stored: StoredSession) -> list[str]:
    info = stored.info
    lines = [f"# llmrepl session {as_comment(info.id)}", ""]
    if stored.model:
        lines.append(f"- model: {as_comment(stored.model)}")
    if info.started:
        lines.append(f"- started: {info.started.strftime('%Y-%m-%d %H:%M')}")
    if stored.cwd:
        lines.append(f"- folder: {as_comment(stored.cwd)}")
    ran = sum(1 for c in stored.cells if c.completed)
    lines.append(f"- cells run: {ran}")
    gone = []
    if stored.undone:
        gone.append(f"{stored.undone} undone exchange{'s' if stored.undone != 1 else ''}")
    if stored.resets:
        gone.append("everything before the last /reset")
    if gone:
        lines += ["", f"_Not shown: {' and '.join(gone)}; the full record is {info.path}._"]
    if stored.bad_lines:
        lines += ["", f"_{stored.bad_lines} unreadable journal line(s) were skipped._"]
    return lines


def _cell_title(cell: CellRecord, kept: bool) -> str:
    parts = [f"### Cell {cell.cell}"]
    if cell.edited:
        parts.append("edited by you")
    if not cell.completed:
        parts.append("did not finish (the session ended while it ran)")
    elif cell.timed_out:
        parts.append("stopped by the time limit")
    elif cell.interrupted:
        parts.append("interrupted (Ctrl-C)")
    elif cell.error_type:
        parts.append(f"failed with {cell.error_type}")
    if cell.completed and cell.duration >= 0.1:
        parts.append(f"{cell.duration:.1f} s")
    if kept:
        parts.append("its exchange was undone, its variables kept")
    return " · ".join(parts)


def _cell_markdown(cell: CellRecord, kept: bool, base: Path | None) -> list[str]:
    out = [_cell_title(cell, kept), "", _fence(cell.code, "python")]
    if cell.output:
        out += ["", "Output:", "", _fence(cell.output, "text")]
    figures = list(cell.figures)
    for item in cell.displays:
        if item.filename:
            if item.filename not in figures:
                figures.append(item.filename)
            continue  # linked below with the figures
        text = item.data.get("text/plain") or item.text
        if text:
            out += ["", "Displayed:", "", _fence(text, "text")]
    if cell.value is not None:
        out += ["", "Value:", "", _fence(cell.value, "text")]
    if cell.error:
        out += ["", f"Error ({cell.error_type or 'error'}):", "", _fence(cell.error, "text")]
    for path in figures:
        alt = re.sub(r"[\[\]\\<>`\s]+", " ", os.path.basename(path)).strip() or "figure"
        out += ["", f"![{alt}]({_figure_target(path, base)})"]
    return out


def _tool_call_markdown(call: dict[str, Any]) -> list[str]:
    fn = call.get("function") or {}
    name, args = str(fn.get("name", "")), str(fn.get("arguments", ""))
    try:
        return ["", f"`{name}` call:", "", _fence(code_from_tool_call(name, args), "python")]
    except ValueError:
        return ["", f"`{name}` call with arguments:", "", _fence(args, "json")]


def transcript_markdown(stored: StoredSession, *, base: Path | None = None) -> str:
    """The conversation as it stands, readable: messages, answers, cells with their output,
    figures (linked relative to ``base``, the transcript's folder, when they lie inside it)."""
    out = _header_lines(stored)
    for entry in stored.timeline:
        out.append("")
        if entry.kind == "user":
            out += ["## You", "", entry.text]
        elif entry.kind == "assistant":
            out += ["## Model"]
            if entry.text:
                out += ["", entry.text]
            for call in entry.tool_calls:
                out += _tool_call_markdown(call)
        elif entry.kind == "cell" and entry.cell is not None:
            if entry.cell.source == "py":
                out += ["## You ran /py", ""]
            out += _cell_markdown(entry.cell, entry.kept, base)
        elif entry.kind == "declined":
            out.append(f"_Cell not run ({entry.reason or 'the user declined'})._")
        elif entry.kind == "note":
            first = entry.text.strip().splitlines()[0] if entry.text.strip() else ""
            out.append(f"_llmrepl: {first}_")
    return "\n".join(out).rstrip() + "\n"


# -- .ipynb (store/notebook.py) ---------------------------------------------------------


def export_ipynb(stored: StoredSession, *, keep_failed: bool = False) -> str:
    """A valid nbformat 4 notebook of the session that runs top to bottom: see
    :mod:`llmrepl.store.notebook`."""
    from llmrepl.store.notebook import export_ipynb as notebook

    return notebook(stored, keep_failed=keep_failed)


# -- writing ----------------------------------------------------------------------------


def write_export(stored: StoredSession, path: Path, *, replace: bool = True, keep_failed: bool = False) -> str:
    """Write by suffix (``.md``, ``.py``, ``.ipynb``), atomically and 0600; say what was
    written, which cells only in part and which were left out, and which later cells read a
    name only a left-out part set. A symbolic link at ``path`` is replaced, never written
    through. With ``replace=False`` (what ``/export`` and ``--export`` pass unless forced or
    answered yes) an existing ``path`` raises :class:`ExportExists` and nothing is written.
    ``keep_failed`` (``--keep-failed``): failed cells whole, in ``try`` in a ``.py``, tagged
    ``raises-exception`` in a notebook; a transcript shows every cell anyway."""
    path = Path(os.path.expanduser(str(path)))
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise LLMReplError(f"unknown export format {suffix!r}: use .py, .ipynb or .md"
                           if suffix else f"{str(path)!r} has no suffix: use .py, .ipynb or .md")
    if path.is_dir():
        raise LLMReplError(f"{path} is a folder: give a file name ending in {suffix or '.py, .ipynb or .md'}")
    if not replace and os.path.lexists(path):
        raise ExportExists(path)
    if suffix == ".md":
        ran = [c for c in stored.cells if c.completed]
        text = transcript_markdown(stored, base=path.parent)
        what = f"the transcript ({_count(len(stored.messages), 'message')}, {_count(len(ran), 'cell')})"
        _write_private(path, text, replace)
        return f"wrote {what} to {path}"
    text = export_py(stored, keep_failed=keep_failed) if suffix == ".py" else export_ipynb(stored, keep_failed=keep_failed)
    _write_private(path, text, replace)
    plan = plan_replay(stored.cells)
    kept = {id(p) for p in plan.cells if keep_failed and keepable(p, syntax_error=suffix == ".ipynb")}
    return _written(plan, kept, path)


def _written(plan: ReplayPlan, kept: set[int], path: Path) -> str:
    """``wrote 6 cells (cell 3 in part; cell 7 left out) to a.py``, then a line for each
    later cell that reads a name only a left-out part set."""
    whole = {id(p) for p in plan.cells if p.action == "run"} | kept
    part = [p.cell for p in plan.cells if id(p) not in whole and p.action == "partial" and p.code.strip()]
    out = [p.cell for p in plan.cells if id(p) not in whole and p.cell not in part]
    notes = [f"{_numbers(part)} in part"] if part else []
    if out:
        notes.append(f"{_numbers(out)} left out")
    which = f" ({'; '.join(notes)})" if notes else ""
    line = f"wrote {_count(len(plan.cells) - len(out), 'cell')}{which} to {path}"
    return "\n".join([line, *(f"note: {n}" for n in missing_notes(plan, None, "there"))])


def _numbers(cells: list[int]) -> str:
    return f"cell{'s' if len(cells) > 1 else ''} {', '.join(map(str, cells))}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _write_private(path: Path, text: str, replace: bool) -> None:
    try:
        atomic_write_text(path, text, replace=replace)
    except FileExistsError:
        raise ExportExists(path) from None  # it appeared while the export was being made
    except OSError as e:
        raise LLMReplError(f"cannot write {path}: {e.strerror or e}") from e
