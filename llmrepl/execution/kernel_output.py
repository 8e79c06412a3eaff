"""One cell's messages from a kernel, collected into its ``ExecResult``.

``KernelExecutor`` runs the exchange on the channels (interrupts, the time limit, stdin, a
kernel that dies); ``CellOutput`` takes each iopub message that belongs to the cell: stream
text into the same bounded ``Capture`` and live sink the in-process executor uses (so
redaction and sanitizing hold), ``display_data`` as display items (images saved through the
``FigureLog``), ``execute_result`` as the value, ``error`` as the traceback; ``close`` puts
what they said on the record.
"""

from __future__ import annotations

from typing import Any

from llmrepl.execution.capture import Capture, FigureLog, OutputSink
from llmrepl.execution.kernel_messages import bundle, record_error, show_display
from llmrepl.execution.outputs import DisplayData
from llmrepl.execution.result import ExecResult

__all__ = ["CellOutput"]


class CellOutput:
    """What one cell's iopub messages say, gathered for ``result``.

    ``max_chars``: the capture bound (of the output, and of each bundle); ``figures``: where
    images are saved (None: not written, as during a replay); ``time_limit``: the cell's, so
    an interrupt it caused reads as a timeout."""

    def __init__(self, result: ExecResult, sink: OutputSink | None, *, max_chars: int,
                 figures: FigureLog | None, time_limit: float) -> None:
        self.result = result
        self.cap = Capture(max_chars, sink)
        self.items: list[DisplayData] = []
        self.max_chars = max_chars
        self.figures = figures
        self.time_limit = time_limit

    def take(self, msg: dict[str, Any]) -> bool:
        """One iopub message of the cell's own request; True when it says the kernel is idle."""
        result = self.result
        kind = msg.get("msg_type") or msg.get("header", {}).get("msg_type")
        content = msg.get("content") or {}
        if kind == "stream":
            self.cap.write("stderr" if content.get("name") == "stderr" else "stdout", str(content.get("text", "")))
        elif kind in ("display_data", "update_display_data"):
            show_display(bundle(content, self.max_chars), self.cap, self.items, self.figures)
        elif kind == "execute_result":
            data = bundle(content, self.max_chars)
            result.value_data, result.value_repr = data, data.text
        elif kind == "error":
            record_error(content, result, self.max_chars, self.time_limit)
        elif kind == "status" and content.get("execution_state") == "idle":
            return True
        return False

    def close(self) -> None:
        """The output, its repairs and the display items, onto the record."""
        result, cap, items = self.result, self.cap, self.items
        if cap.written:
            result.stdout, result.stderr, result.output = cap.values()
            result.output_chars = cap.chars
        if cap.sink_error:
            result.repairs.append(cap.sink_error)
        if items:
            result.displays = items
            result.figures = [i.metadata["filename"] for i in items if "filename" in i.metadata]
