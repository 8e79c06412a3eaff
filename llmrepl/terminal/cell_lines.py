"""The short lines that frame a cell's result on the terminal: ``Out[N]:``, the status line
(``✓ cell 9 · 0.57 s``) and a figure's line (``[figure 3 · 640×480 · path]``).

Pure text: ``TerminalDisplay`` writes them. Anything foreign in them (an error type, a file
name) is sanitized here.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from llmrepl.terminal.render import style
from llmrepl.terminal.sanitize import sanitize
from llmrepl.terminal.spinner import elapsed

if TYPE_CHECKING:
    from llmrepl.execution.executor import ExecResult

__all__ = ["figure_line", "out_label", "status_line"]


def out_label(cell: int, text: str, color: bool) -> str:
    """``Out[3]: `` as IPython writes it (on a line of its own before a multi-line value)."""
    label = style(f"Out[{cell}]:", "red", color)
    return label + ("\n" if "\n" in text or not text else " ")


def status_line(result: ExecResult, *, ascii: bool, color: bool) -> str:
    """``✓ cell 9 · 0.57 s``, ``✗ KeyError · 0.01 s``, ``✗ cell 4 interrupted · 3.2 s``."""
    ok, bad, dot = ("ok", "error:", "-") if ascii else ("✓", "✗", "·")
    took = elapsed(result.duration)
    if result.timed_out:
        text, tint = f"{bad} cell {result.cell} timed out {dot} {took}", "yellow"
    elif result.interrupted:
        text, tint = f"{bad} cell {result.cell} interrupted {dot} {took}", "yellow"
    elif result.error:
        kind = sanitize(result.error_type or "error")
        text, tint = f"{bad} {kind} {dot} {took}", "red"
    else:
        text, tint = f"{ok} cell {result.cell} {dot} {took}", "green"
    if not color:
        return text
    mark, _, rest = text.partition(" ")
    return style(mark, tint, True) + " " + style(rest, "dim", True)


def figure_line(meta: dict[str, Any], ascii: bool = False) -> str:
    """``[figure 3 · 640×480 · /path/figure-003.png]`` (sanitized: the path is foreign)."""
    dot, times = (" - ", "x") if ascii else (" · ", "×")
    path = str(meta.get("filename") or "")
    m = re.search(r"figure-0*(\d+)\.png$", path)
    parts = [f"figure {m.group(1)}" if m else "image"]
    w, h = meta.get("width"), meta.get("height")
    if type(w) is int and type(h) is int and 0 < w <= 10**6 and 0 < h <= 10**6:  # no 5,000-digit int
        parts.append(f"{w}{times}{h}")
    if path:  # one line, whatever the name holds (a newline would start a line of its own)
        parts.append(path.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r"))
    return sanitize("[" + dot.join(parts) + "]")
