"""What a finished cell leaves behind: its result scrubbed of secrets, and its ``cell_end``.

``scrub`` runs before anything of a cell reaches the journal, the model or the screen (its
output, value, traceback and every display item's text). ``cell_end_fields`` is the journal
line of a cell ``Session.run_cell`` ran: display items as text MIME types only, each cut to
the bound the output has, an image as its file name, never its bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from llmrepl.execution.result import ExecResult
from llmrepl.store.records import display_record

__all__ = ["cell_end_fields", "scrub"]


def scrub(result: ExecResult, redact: Callable[[str], str]) -> None:
    """Secrets never reach the journal, the model or the screen (cell output included)."""
    r = redact
    result.output, result.stdout, result.stderr = r(result.output), r(result.stdout), r(result.stderr)
    if result.value_repr is not None:
        result.value_repr = r(result.value_repr)
    if result.error is not None:
        result.error = r(result.error)
    for item in [*getattr(result, "displays", ()), getattr(result, "value_data", None)]:
        if item is not None:  # display bundles (execution/outputs.py): every text field
            item.text = r(item.text)
            item.data = {k: r(v) if isinstance(v, str) else v for k, v in item.data.items()}
            if getattr(item, "screen", None) is not None:
                item.screen = r(item.screen)


def cell_end_fields(result: ExecResult, cap: int) -> dict[str, Any]:
    """The ``cell_end`` journal line of a cell that ran (``cap``: the executor's capture bound)."""
    return {
        "cell": result.cell,
        "output": result.output,
        "stdout": result.stdout,
        "stderr": result.stderr,
        "value": result.value_repr,
        "error": result.error,
        "error_type": result.error_type,
        "duration": round(result.duration, 4),
        "interrupted": result.interrupted,
        "timed_out": result.timed_out,
        "figures": result.figures,
        "output_chars": result.output_chars,
        "repairs": result.repairs,
        "done": result.done,
        **_display_fields(result, cap),
    }


def _display_fields(result: ExecResult, cap: int) -> dict[str, Any]:
    """``displays`` and ``value_data`` of a cell_end: text MIME types only, each cut to
    the bound the output has; an image is its file name, never its bytes."""
    displays = getattr(result, "displays", None) or []
    value = getattr(result, "value_data", None)
    if not displays and value is None:
        return {}
    spent = [0]
    fields: dict[str, Any] = {"displays": [display_record(d, cap, spent) for d in displays]}
    if value is not None:
        fields["value_data"] = display_record(value, cap, spent)
    return fields
