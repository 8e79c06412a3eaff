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
from llmrepl.extract import PYTHON_TAGS, extract_code
from llmrepl.store.export import _fence, _header_lines
from llmrepl.store.fileio import read_inside
from llmrepl.store.records import JOURNAL_MIME_TYPES
from llmrepl.store.transcript import CellRecord, Entry, StoredDisplay, StoredSession

__all__ = ["export_ipynb"]

_MAX_FIGURE = 32 << 20  # a figure embedded in a notebook: PNGs llmrepl saved are far smaller
_PNG = b"\x89PNG\r\n\x1a\n"

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


def export_ipynb(stored: StoredSession) -> str:
    """A valid nbformat 4 notebook: your messages and the model's prose as Markdown, each
    cell that ran as a code cell with its output, values, errors and figures (PNG)."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata["llmrepl"] = {"session": stored.info.id, "model": stored.model}
    cells: list[Any] = [new_markdown_cell("\n".join(_header_lines(stored)))]
    folder = stored.info.path.with_suffix("")  # where this session's figures were saved
    for entry in stored.timeline:
        cells += _notebook_cells(entry, folder, new_code_cell, new_markdown_cell)
    nb.cells = cells
    nbformat.validate(nb)
    return str(nbformat.writes(nb))


def _notebook_cells(entry: Entry, folder: Path, new_code_cell: Any, new_markdown_cell: Any) -> list[Any]:
    if entry.kind == "user":
        return [new_markdown_cell(f"**You:** {entry.text}")]
    if entry.kind == "assistant":
        prose = _prose(entry.text)
        return [new_markdown_cell(f"**Model:** {prose}")] if prose else []
    if entry.kind == "declined":
        why = entry.reason or "the user declined"
        return [new_markdown_cell(f"_Not run ({why}):_\n\n{_fence(entry.text, 'python')}")]
    if entry.kind == "note":
        first = entry.text.strip().splitlines()[0] if entry.text.strip() else ""
        return [new_markdown_cell(f"_llmrepl: {first}_")]
    cell = entry.cell
    if entry.kind != "cell" or cell is None:
        return []
    out = []
    notes = []
    if cell.source == "py":
        notes.append("you ran it with /py")
    if cell.edited:
        notes.append("edited by you")
    if entry.kept:
        notes.append("its exchange was undone later; its variables were kept")
    if not cell.completed:
        notes.append("it did not finish: the session ended while it ran")
    if notes:
        out.append(new_markdown_cell(f"_Cell {cell.cell}: {'; '.join(notes)}._"))
    meta = {"llmrepl": {"cell": cell.cell, "edited": cell.edited, "source": cell.source}}
    out.append(new_code_cell(
        cell.code,
        execution_count=cell.cell if cell.completed else None,
        outputs=_outputs(cell, folder) if cell.completed else [],
        metadata=meta,
    ))
    return out
