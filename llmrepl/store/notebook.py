"""The ``.ipynb`` export: a stored session as a Jupyter notebook with Jupyter's outputs.

Your messages and the model's prose are Markdown cells; each cell that ran is a code cell
holding only its code, with its outputs as Jupyter has them: ``stream`` (stdout, stderr),
``display_data`` in the order it was shown among the streams (by ``at``; a DataFrame as
``text/html`` + ``text/plain``, a figure as ``image/png`` read back from the saved file),
the value as ``execute_result`` with its execution count, and ``error``. Only the text MIME
types a journal keeps reach the notebook, and only PNGs inside the session's own folder
(docs/security.md, "Exports are data, never code"). Written by nbformat and validated.
"""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path
from typing import Any

from llmrepl.context.prompts import interleave
from llmrepl.execution.magic_ipython import for_ipython
from llmrepl.extract import PYTHON_TAGS, extract_code
from llmrepl.store.export import _fence, _header_lines
from llmrepl.store.fileio import read_inside
from llmrepl.store.records import JOURNAL_MIME_TYPES
from llmrepl.store.replay import PlannedCell, plan_replay
from llmrepl.store.script import cut_off, keepable
from llmrepl.store.transcript import CellRecord, Entry, StoredDisplay, StoredSession

__all__ = ["export_ipynb"]

_MAX_FIGURE = 32 << 20  # a figure embedded in a notebook: PNGs llmrepl saved are far smaller
_PNG = b"\x89PNG\r\n\x1a\n"

_C1_BIDI = re.compile("[\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})([^\n]*)$")


def _prose(text: str) -> str:
    """An answer without the Python blocks that become code cells (other fences stay)."""
    out: list[str] = []
    block: list[str] | None = None
    opener = ""
    for line in text.splitlines():
        if block is None:
            m = _FENCE.match(line)
            if m and not (m.group(1)[0] == "`" and "`" in m.group(2)):
                block, opener = [line], m.group(1)
            else:
                out.append(line)
            continue
        block.append(line)
        stripped = line.strip()
        if stripped.startswith(opener) and set(stripped) == {opener[0]}:
            info = _FENCE.match(block[0])
            lang = info.group(2).strip().split()[0].lower() if info and info.group(2).strip() else ""
            is_python = lang in PYTHON_TAGS or (not lang and extract_code("\n".join(block)).code is not None)
            if not is_python:
                out += block
            block = None
    if block is not None:
        out += block
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip()


def _figure_png(path: str, folder: Path) -> bytes | None:
    """A figure for a notebook only when it is what llmrepl saved: a PNG inside the session's
    own folder (a journal could name any file: a key, /dev/zero). Else None."""
    data = read_inside(Path(path), folder, _MAX_FIGURE)
    return data if data is not None and data.startswith(_PNG) else None


def _common(a: str, i: int, b: str, j: int) -> int:
    """Length of the common run of ``a[i:]`` and ``b[j:]`` (doubling, then halving: no
    character-by-character loop over a megabyte of output)."""
    n, step = 0, 1
    limit = min(len(a) - i, len(b) - j)
    while step <= limit - n and a.startswith(b[j + n : j + n + step], i + n):
        n += step
        step *= 2
    while step > 1:
        step //= 2
        if n + step <= limit and a.startswith(b[j + n : j + n + step], i + n):
            n += step
    return n


def _streams(text: str, stdout: str, stderr: str, pos: list[int]) -> list[tuple[str, str]]:
    """``text`` (a piece of the interleaved output) as ``(stream name, text)`` runs, matched
    against what is left of each stream (``pos``: how far each has been used). Where neither
    matches (a cut, a redaction), the rest is stdout's."""
    if not stderr:
        return [("stdout", text)] if text else []
    if not stdout:
        return [("stderr", text)] if text else []
    runs: list[tuple[str, str]] = []
    i = 0
    while i < len(text):
        out = _common(text, i, stdout, pos[0])
        err = _common(text, i, stderr, pos[1])
        if not out and not err:
            runs.append(("stdout", text[i:]))
            break
        name, n = ("stdout", out) if out >= err else ("stderr", err)
        pos[0 if name == "stdout" else 1] += n
        if runs and runs[-1][0] == name:
            runs[-1] = (name, runs[-1][1] + text[i : i + n])
        else:
            runs.append((name, text[i : i + n]))
        i += n
    return runs


def _bundle(item: StoredDisplay, folder: Path) -> dict[str, Any] | None:
    """A display item's MIME bundle for a notebook: its text types, and its image read back
    from the session's own folder (None when there is nothing to show)."""
    data: dict[str, Any] = {m: t for m, t in item.data.items() if m in JOURNAL_MIME_TYPES}
    if item.filename:
        png = _figure_png(item.filename, folder)
        if png is not None:
            data["image/png"] = base64.b64encode(png).decode("ascii")
        data.setdefault("text/plain", item.text or f"<figure {os.path.basename(item.filename)}>")
    if not data.get("text/plain"):
        data["text/plain"] = item.text
    return data if any(data.values()) else None


def _image_metadata(item: StoredDisplay, data: dict[str, Any]) -> dict[str, Any]:
    if "image/png" not in data:
        return {}
    size = {k: item.metadata[k] for k in ("width", "height") if isinstance(item.metadata.get(k), int)}
    return {"image/png": size} if size else {}


def _outputs(cell: CellRecord, folder: Path) -> list[Any]:
    from nbformat.v4 import new_output

    outputs: list[Any] = []
    shown: set[str] = set()
    if cell.displays:
        # Jupyter's order: stream text and display_data as they were written
        pos = [0, 0]
        for kind, piece in interleave(cell.output, cell.output_chars, cell.displays):
            if kind == "text":
                for name, text in _streams(piece, cell.stdout, cell.stderr, pos):
                    outputs.append(new_output("stream", name=name, text=text))
                continue
            data = _bundle(piece, folder)
            if piece.filename:
                shown.add(piece.filename)
            if data is not None:
                outputs.append(new_output("display_data", data=data, metadata=_image_metadata(piece, data)))
    else:  # a journal from before display bundles: the streams, then the figures
        stdout = cell.stdout or ("" if cell.stderr else cell.output)
        if stdout:
            outputs.append(new_output("stream", name="stdout", text=stdout))
        if cell.stderr:
            outputs.append(new_output("stream", name="stderr", text=cell.stderr))
    value_data = _bundle(cell.value_data, folder) if cell.value_data is not None else None
    if cell.value_data is not None and cell.value_data.filename:
        shown.add(cell.value_data.filename)
    for path in cell.figures:
        if path in shown:
            continue
        png = _figure_png(path, folder)
        if png is None:
            continue  # gone since, or not a figure of this session; its path is in the printed output
        outputs.append(new_output(
            "display_data",
            data={"image/png": base64.b64encode(png).decode("ascii"), "text/plain": f"<figure {path}>"},
        ))
    if value_data is not None:
        assert cell.value_data is not None
        outputs.append(new_output("execute_result", data=value_data, execution_count=cell.cell,
                                  metadata=_image_metadata(cell.value_data, value_data)))
    elif cell.value is not None:
        outputs.append(new_output("execute_result", data={"text/plain": cell.value},
                                  execution_count=cell.cell))
    if cell.error:
        lines = cell.error.rstrip("\n").splitlines() or [cell.error]
        last = lines[-1]
        ename = cell.error_type or "Error"
        evalue = last.split(":", 1)[1].strip() if last.startswith(ename + ":") else last
        outputs.append(new_output("error", ename=ename, evalue=evalue, traceback=lines))
    return outputs


def export_ipynb(stored: StoredSession, *, keep_failed: bool = False) -> str:
    """A valid nbformat 4 notebook that runs top to bottom: your messages and the model's
    prose as Markdown, each cell as its replay plan has it (``store.replay``) with its
    output, values and figures (PNG). A cell that failed or was stopped holds the statements
    that completed (the rest is shown as Markdown below it); one that never got that far is
    Markdown only; ``keep_failed`` keeps a failed cell whole, tagged ``raises-exception``."""
    import nbformat
    from nbformat.v4 import new_notebook

    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata["llmrepl"] = {"session": stored.info.id, "model": stored.model}
    cells: list[Any] = [_markdown("\n".join(_header_lines(stored)))]
    folder = stored.info.path.with_suffix("")  # where this session's figures were saved
    plan = plan_replay(stored.cells)
    planned = {id(p.record): p for p in plan.cells}
    for entry in stored.timeline:
        if entry.kind == "cell" and entry.cell is not None:
            p = planned.get(id(entry.cell)) or plan_replay([entry.cell]).cells[0]
            cells += [_markdown(f"_Note: this cell reads `{name}`, which only the left-out part of cell "
                                f"{source} set: it may stop here with a NameError._")
                      for later, name, source in plan.missing if later == p.cell]
            cells += _code_cells(p, folder, keep_failed)
        else:
            cells += _notebook_cells(entry)
    nb.cells = cells
    nbformat.validate(nb)
    # JSON escapes C0 controls itself; C1 controls (a terminal may obey U+009B as CSI), bidi
    # controls and line separators are escaped too, so `cat nb.ipynb` shows them as text.
    # They can only stand inside JSON strings, where \uXXXX means the same character.
    return _C1_BIDI.sub(lambda m: f"\\u{ord(m.group()):04x}", str(nbformat.writes(nb)))


def _markdown(text: str) -> Any:
    from nbformat.v4 import new_markdown_cell

    return new_markdown_cell(text)


def _notebook_cells(entry: Entry) -> list[Any]:
    """The conversation around the cells: your messages, the model's prose, declines, notes."""
    if entry.kind == "user":
        return [_markdown(f"**You:** {entry.text}")]
    if entry.kind == "assistant":
        prose = _prose(entry.text)
        return [_markdown(f"**Model:** {prose}")] if prose else []
    if entry.kind == "declined":
        why = entry.reason or "the user declined"
        return [_markdown(f"_Not run ({why}):_\n\n{_fence(entry.text, 'python')}")]
    if entry.kind == "note":
        first = entry.text.strip().splitlines()[0] if entry.text.strip() else ""
        return [_markdown(f"_llmrepl: {first}_")]
    return []


def _code_cells(p: PlannedCell, folder: Path, keep_failed: bool) -> list[Any]:
    """A cell as the plan has it: a code cell with the code that runs, and Markdown for
    what does not (``--keep-failed``: a failed cell whole, tagged ``raises-exception``)."""
    from nbformat.v4 import new_code_cell

    cell = p.record
    notes = []
    if cell.source == "py":
        notes.append("you ran it with /py")
    if cell.edited:
        notes.append("edited by you")
    meta: dict[str, Any] = {"llmrepl": {"cell": cell.cell, "edited": cell.edited, "source": cell.source}}
    error = [_fence(cell.error, "text")] if cell.error else []
    if keep_failed and keepable(p, syntax_error=True):
        notes.append(f"it failed with {cell.error_type or 'an error'} when it ran; kept whole "
                     "(--keep-failed) and tagged raises-exception, so the notebook runs on")
        meta["tags"] = ["raises-exception"]
        return [_markdown(f"_Cell {cell.cell}: {'; '.join(notes)}._"),
                new_code_cell(for_ipython(cell.code), execution_count=cell.cell, outputs=_outputs(cell, folder),
                              metadata=meta)]
    if p.action == "skip" or not p.code.strip():
        return [_markdown("\n\n".join([f"_Cell {cell.cell} left out: {p.reason or 'nothing of it completed'}"
                                        f"{''.join('; ' + n for n in notes)}._",
                                        _fence(cell.code, "python"), *error]))]
    out = []
    if p.action == "partial":
        notes.append(f"{p.reason}; the cell below holds what completed")
    if notes:
        out.append(_markdown(f"_Cell {cell.cell}: {'; '.join(notes)}._"))
    outputs = [o for o in _outputs(cell, folder) if o.output_type != "error"]
    # IPython reads some magic lines unlike llmrepl ({expr} in `!` lines): those as plain Python
    out.append(new_code_cell(for_ipython(p.code.rstrip("\n") if p.action == "partial" else cell.code),
                             execution_count=cell.cell, outputs=outputs, metadata=meta))
    if p.action == "partial":
        out.append(_markdown("\n\n".join([f"_Left out: the rest of cell {cell.cell}, from where it stopped:_",
                                           _fence(cut_off(p), "python"), *error])))
    return out
