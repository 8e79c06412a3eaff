"""``/save`` and ``/export``: a stored session as Markdown, a runnable ``.py``, or a notebook.

All three render :class:`llmrepl.store.transcript.StoredSession`, the journal replayed: the
conversation as it stands (undone exchanges and everything before the last ``/reset`` are
left out) and the cells behind the namespace. Files are written atomically and 0600, since
they hold conversation text; ``/export`` and ``--export`` replace an existing file only when
forced or answered yes.
Exports are data, never code: in a ``.py`` the only code is the code of cells that ran, and
any other text goes in through :mod:`llmrepl.store.quoting`; in a notebook it is JSON
written by nbformat, and code cells hold only the cells' code.
"""

from __future__ import annotations

import ast
import io
import os
import re
import tokenize
from pathlib import Path
from typing import Any

from llmrepl.errors import LLMReplError
from llmrepl.extract import code_from_tool_call
from llmrepl.store.fileio import atomic_write_text
from llmrepl.store.quoting import as_comment, as_docstring
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


# -- .py --------------------------------------------------------------------------------


def _commented(code: str) -> list[str]:
    """Code that is not run, as comments: one per line (``splitlines`` breaks at every line
    break an editor shows, a superset of Python's), each made safe by ``as_comment``."""
    return [("# " + as_comment(line)).rstrip() for line in code.splitlines()]


def _indent_outside_strings(code: str, prefix: str = "    ") -> str | None:
    """Indent every line except those inside multi-line strings (their text must not change)."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(code).readline))
    except (tokenize.TokenError, SyntaxError):
        return None
    inside: set[int] = set()
    for tok in tokens:
        if tok.start[0] < tok.end[0] and tok.type not in (tokenize.NL, tokenize.NEWLINE):
            inside.update(range(tok.start[0] + 1, tok.end[0] + 1))
    lines = code.split("\n")  # Python's lines, as tokenize numbers them (not str.splitlines')
    return "\n".join(
        line if (i in inside or not line.strip()) else prefix + line
        for i, line in enumerate(lines, 1)
    ).rstrip("\n")


def _split_future(code: str) -> tuple[str, list[str]]:
    """``from __future__`` imports must open a file: take them out of a cell."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return code, []
    names: list[str] = []
    drop: set[int] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            names += [a.name for a in node.names]
            drop.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
        elif not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)):
            break
    if not names:
        return code, []
    kept = [line for i, line in enumerate(code.splitlines(), 1) if i not in drop]
    return "\n".join(kept), names


def _py_cell(cell: CellRecord, futures: list[str]) -> list[str]:
    tags = []
    if cell.edited:
        tags.append("edited by you")
    if cell.source == "py":
        tags.append("/py")
    if cell.undone:
        tags.append("its exchange was undone, its variables kept")
    head = f"# cell {cell.cell}" + (f" ({', '.join(tags)})" if tags else "")
    failed = as_comment(cell.error_type or "an error")
    if not cell.completed:
        return [head + ": did not finish (the session ended while it ran); left out:", *_commented(cell.code)]
    if cell.error_type == "SyntaxError":
        return [head + ": failed with SyntaxError and never ran; left out:", *_commented(cell.code)]
    if cell.interrupted or cell.timed_out:
        why = "was stopped by the time limit" if cell.timed_out else "was interrupted (Ctrl-C)"
        return [head + f": {why} when it ran; left out, since it may not finish:", *_commented(cell.code)]
    # Python reads \r\n and \r as \n everywhere, string literals included: so does the export
    code, names = _split_future(cell.code.replace("\r\n", "\n").replace("\r", "\n"))
    futures += [n for n in names if n not in futures]
    out = [head]
    if cell.error:
        # It failed part-way in the REPL, which carried on with what it had done: do the same.
        body = _indent_outside_strings(code)
        if body is None or not body.strip():
            return [head + f": failed with {failed}; left out:", *_commented(cell.code)]
        caught = "SystemExit" if cell.error_type == "SystemExit" else "(Exception, SystemExit)"
        handler = "    pass" if cell.error_type == "SystemExit" else "    __import__('traceback').print_exc()"
        out += [f"# it failed with {failed} when it ran; the session carried on, and so does this file",
                "try:", body, f"except {caught}:", handler]
    else:
        out.append(code.rstrip("\n"))
    if cell.value is not None:
        first = cell.value.strip().splitlines()[0] if cell.value.strip() else ""
        more = " …" if len(cell.value.strip().splitlines()) > 1 or len(first) > 120 else ""
        out.append(f"# -> {as_comment(first[:120])}{more}")
    return out


def export_py(stored: StoredSession) -> str:
    """The executed cells, in order, as one script that runs with ``python FILE``.

    Declined cells are left out; edited ones are as they ran; trailing expressions are kept
    as they were (not printed; the value the REPL showed follows as a ``# ->`` comment).
    Cells that never ran to the end (SyntaxError, interrupted, crashed) are commented out;
    a cell that failed part-way is kept inside ``try``, so the script carries on as the
    session did.
    """
    info = stored.info
    header = [f"# Cells run in llmrepl session {as_comment(info.id)}",
              "# Declined cells are left out; edited cells are as you ran them."]
    details = []
    if stored.model:
        details.append(f"model: {stored.model}")
    if info.started:
        details.append(f"started: {info.started.strftime('%Y-%m-%d %H:%M')}")
    if stored.cwd:
        details.append(f"ran in: {stored.cwd}")
    if details:  # text from outside (the server's model id, the folder's name): data, never code
        header.append(as_docstring("\n".join(["The session this came from:", *details])))
    futures: list[str] = []
    body: list[str] = []
    for cell in stored.cells:
        body += ["", "", *_py_cell(cell, futures)]
    lines = header
    if futures:
        lines += ["", f"from __future__ import {', '.join(futures)}"]
    if any(_uses_display(c.code) for c in stored.cells if c.completed):
        lines += ["", *_DISPLAY_PRELUDE]
    return "\n".join(lines + body) + "\n"


# display() is in llmrepl's namespace, as in IPython's; a script run by python needs its own
_DISPLAY_PRELUDE = [
    "try:",
    "    from IPython.display import display",
    "except ImportError:  # outside IPython: show each object's text, as llmrepl's model saw it",
    "    def display(*objs, **kwargs):",
    "        for obj in objs:",
    "            print(obj)",
]


def _uses_display(code: str) -> bool:
    if "display" not in code:
        return False
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return any(isinstance(n, ast.Name) and n.id == "display" for n in ast.walk(tree))


# -- .ipynb (store/notebook.py) ---------------------------------------------------------


def export_ipynb(stored: StoredSession) -> str:
    """A valid nbformat 4 notebook of the session: see :mod:`llmrepl.store.notebook`."""
    from llmrepl.store.notebook import export_ipynb as notebook

    return notebook(stored)


# -- writing ----------------------------------------------------------------------------


def write_export(stored: StoredSession, path: Path, *, replace: bool = True) -> str:
    """Write by suffix (``.md``, ``.py``, ``.ipynb``), atomically and 0600; say what was
    written. A symbolic link at ``path`` is replaced, never written through. With
    ``replace=False`` (what ``/export`` and ``--export`` pass unless forced or answered yes)
    an existing ``path`` raises :class:`ExportExists` and nothing is written."""
    path = Path(os.path.expanduser(str(path)))
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise LLMReplError(f"unknown export format {suffix!r}: use .py, .ipynb or .md"
                           if suffix else f"{str(path)!r} has no suffix: use .py, .ipynb or .md")
    if path.is_dir():
        raise LLMReplError(f"{path} is a folder: give a file name ending in {suffix or '.py, .ipynb or .md'}")
    if not replace and os.path.lexists(path):
        raise ExportExists(path)
    ran = [c for c in stored.cells if c.completed]
    if suffix == ".md":
        text = transcript_markdown(stored, base=path.parent)
        what = f"the transcript ({_count(len(stored.messages), 'message')}, {_count(len(ran), 'cell')})"
    elif suffix == ".py":
        text = export_py(stored)
        what = _count(len(ran), "cell")
    else:
        text = export_ipynb(stored)
        what = _count(len(ran), "cell")
    _write_private(path, text, replace)
    return f"wrote {what} to {path}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _write_private(path: Path, text: str, replace: bool) -> None:
    try:
        atomic_write_text(path, text, replace=replace)
    except FileExistsError:
        raise ExportExists(path) from None  # it appeared while the export was being made
    except OSError as e:
        raise LLMReplError(f"cannot write {path}: {e.strerror or e}") from e
