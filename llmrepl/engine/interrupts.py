"""Ctrl-C held while llmrepl records a cell: counted by a SIGINT handler, never raised.

``Session.run_cell`` holds it around a cell (the executor swaps its own handler in while the
cell's code runs, so the cell is still interrupted) and ``replay`` between stored cells; a
Ctrl-C that lands in llmrepl's own work meanwhile waits here instead of tearing the record,
the journal line or the conversation apart.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

__all__ = ["InterruptHold"]


class InterruptHold:
    """Ctrl-C counted, not raised, from ``hold`` until ``release`` (main thread only)."""

    def __init__(self) -> None:
        self._held: _HeldInterrupts | None = None

    @property
    def count(self) -> int:
        """How many Ctrl-C were held since ``hold`` (0 when nothing is held)."""
        return self._held.count if self._held is not None else 0

    def hold(self) -> None:
        """From now on a Ctrl-C is counted, not raised, until ``release``."""
        if self._held is not None or threading.current_thread() is not threading.main_thread():
            return  # held already; or not the main thread, where signal handlers live
        previous = signal.getsignal(signal.SIGINT)
        if callable(previous):  # SIG_IGN and SIG_DFL stay as they are
            held = _HeldInterrupts(previous)
            signal.signal(signal.SIGINT, held)  # a Ctrl-C pending from before raises here, cell unstarted
            self._held = held

    def release(self) -> bool:
        """Put the SIGINT handler back; True if a Ctrl-C was held meanwhile."""
        held = self._held
        self._held = None
        return held is not None and held.restore()


class _HeldInterrupts:
    """The SIGINT handler while llmrepl records a cell: a Ctrl-C is counted, not raised.

    The executor swaps its own handler in while the cell's code runs, so the cell is still
    interrupted; a Ctrl-C that lands outside the cell waits here instead of tearing the
    record, the journal line or the conversation apart. Python runs a handler between
    byte-codes, wherever the main thread is, so only a handler can hold a signal."""

    def __init__(self, previous: Any) -> None:
        self.previous = previous
        self.count = 0

    def __call__(self, signum: int, frame: object) -> None:
        self.count += 1

    def restore(self) -> bool:
        """Put the previous handler back (a pending Ctrl-C is counted before the switch);
        True if a Ctrl-C was held."""
        ours: object = self  # (an "is" test on self itself would make mypy narrow self)
        if signal.getsignal(signal.SIGINT) is ours:  # else not ours any more: leave it
            signal.signal(signal.SIGINT, self.previous)
        return self.count > 0
