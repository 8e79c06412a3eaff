"""pandas DataFrames and Series as text: the model's copy at a fixed width, the screen's at its own.

The model's copy never depends on the person's terminal: every column up to a bound, head
and tail rows, ``[N rows × M columns]``, wrapped (as pandas wraps) at ``MODEL_WIDTH``. The
screen's copy fits ``width`` columns without breaking a row across lines: when the table is
wider, middle columns give way to pandas' ``...``. Used only when pandas is already imported
(the caller checks ``sys.modules``); this module never imports it.
"""

from __future__ import annotations

import sys
from typing import Any

from llmrepl.execution.namespace import bounded_call, type_mro
from llmrepl.execution.outputs import MODEL_WIDTH

__all__ = ["model_text", "screen_text", "table_kind", "texts"]

MODEL_MAX_ROWS, MODEL_MIN_ROWS = 60, 20  # more than 60 rows: the first and last 10
SCREEN_MAX_ROWS, SCREEN_MIN_ROWS = 60, 10  # pandas' defaults
MAX_COLS = 60  # columns the model sees; a wider frame shows the first and last 30
MAX_COLWIDTH = 50
TABLE_LIMIT = 3.0  # seconds formatting may take before the repr is used instead
_modules = sys.modules


def table_kind(value: object) -> str | None:
    """``"frame"``, ``"series"`` or None; reads the type's MRO, never imports pandas."""
    pd = _modules.get("pandas")
    if pd is None:
        return None
    mro = type_mro(type(value))
    frame, series = getattr(pd, "DataFrame", None), getattr(pd, "Series", None)
    if frame is not None and frame in mro:
        return "frame"
    if series is not None and series in mro:
        return "series"
    return None


def _tidy(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.splitlines())


def _frame(df: Any, *, max_rows: int, min_rows: int, max_cols: int, line_width: int | None) -> str:
    text = df.to_string(max_rows=max_rows, min_rows=min_rows, max_cols=max_cols,
                        line_width=line_width, max_colwidth=MAX_COLWIDTH, show_dimensions=False)
    rows, cols = df.shape
    return f"{_tidy(text)}\n\n[{rows:,} rows × {cols:,} columns]"


def _series(s: Any, max_rows: int, min_rows: int) -> str:
    # "Length: N" only when rows are left out, as pandas' own repr does
    return _tidy(s.to_string(max_rows=max_rows, min_rows=min_rows, length=len(s) > max_rows, dtype=True,
                             name=True))


def model_text(value: Any) -> str:
    """The model's copy: the same whatever the terminal's width."""
    if table_kind(value) == "series":
        return _series(value, MODEL_MAX_ROWS, MODEL_MIN_ROWS)
    return _frame(value, max_rows=MODEL_MAX_ROWS, min_rows=MODEL_MIN_ROWS, max_cols=MAX_COLS,
                  line_width=MODEL_WIDTH)


def _widest(text: str) -> int:
    return max((len(line) for line in text.splitlines()), default=0)


def _fit(text: str, width: int) -> str:
    """Lines longer than ``width`` end in "…" (the last resort: no row is ever wrapped)."""
    return "\n".join(line if len(line) <= width else line[: width - 1] + "…" for line in text.splitlines())


def screen_text(value: Any, width: int) -> str:
    """The screen's copy, no line longer than ``width``: the most columns that fit, middle
    ones dropped as pandas drops them (``...``)."""
    width = max(int(width), 20)
    if table_kind(value) == "series":
        return _fit(_series(value, SCREEN_MAX_ROWS, SCREEN_MIN_ROWS), width)
    ncols = value.shape[1]

    def render(k: int) -> str:
        return _frame(value, max_rows=SCREEN_MAX_ROWS, min_rows=SCREEN_MIN_ROWS, max_cols=k, line_width=None)

    best = render(min(ncols, MAX_COLS))
    if _widest(best) > width and ncols > 2:
        lo, hi = 2, min(ncols, MAX_COLS) - 1  # the most columns that fit lies in [lo, hi]
        best = render(lo)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            text = render(mid)
            if _widest(text) <= width:
                lo, best = mid, text
            else:
                hi = mid - 1
    return _fit(best, width)


def texts(value: Any, width: int | None, bounded: bool, notes: list[str]) -> tuple[str | None, str | None]:
    """``(model text, screen text)`` of a DataFrame or Series; ``(None, None)`` (with a note)
    when pandas raised or took longer than TABLE_LIMIT s, so the repr is used instead."""

    def both() -> tuple[str, str | None]:
        return model_text(value), None if width is None else screen_text(value, width)

    try:
        if not bounded:
            return both()
        done, pair = bounded_call(both, seconds=TABLE_LIMIT)
    except Exception as exc:
        notes.append(f"the table could not be formatted ({type(exc).__name__}: {str(exc)[:200]})")
        return None, None
    if not done:
        notes.append(f"formatting the table took longer than {TABLE_LIMIT:g} s")
        return None, None
    return pair
