"""The spinner: never a blank screen while llmrepl waits (for the model, a retry, a silent cell).

``⠋ waiting for gpt-4o · 2.1 s`` on a line of its own, redrawn about ten times a second by
a daemon thread, erased (``\\r`` + erase-line) before anything else is written. It writes
only through the function it is given (the display's own terminal stream), under the
display's lock, and only when the display says the cursor is at the start of a line, so it
never interleaves with output. The display creates it only when colour is on (a terminal):
no spinner into pipes, files or ``TERM=dumb``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from llmrepl.terminal.render import text_width

__all__ = ["Spinner", "elapsed"]

FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
ASCII_FRAMES = "|/-\\"

Label = str | Callable[[float], str]


def elapsed(seconds: float) -> str:
    """0.57 s, 12.3 s, 2 min 05 s."""
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes} min {secs:02d} s"


def _cut_to(text: str, columns: int) -> str:
    """The start of ``text`` that fits in ``columns`` terminal columns (wide characters count two)."""
    while text and text_width(text) > columns:
        text = text[: max(len(text) - max((text_width(text) - columns) // 2, 1), 0)]
    return text


class Spinner:
    """One spinner per display. ``start`` shows it (after ``delay``), ``hide`` erases it for a
    write (a persistent one comes back after ``delay`` of quiet; another stops), ``stop`` ends it.

    ``emit`` writes llmrepl's own bytes to the terminal without touching the display's state;
    ``ready`` says whether the cursor is at the start of a free line; ``columns`` the width."""

    def __init__(self, emit: Callable[[str], None], lock: threading.RLock, *, ready: Callable[[], bool],
                 columns: Callable[[], int | None], ascii: bool = False, color: bool = True,
                 interval: float = 0.1) -> None:
        self._emit = emit
        self._lock = lock
        self._ready = ready
        self._columns = columns
        self.frames = ASCII_FRAMES if ascii else FRAMES
        self.dot = "-" if ascii else "·"
        self.color = color
        self.interval = interval
        self.label: Label | None = None
        self.started = 0.0  # when this wait began: the elapsed time shown
        self.persistent = False
        self.delay = 0.0
        self._show_at = 0.0
        self._drawn = False
        self._frame = 0
        self._stop: threading.Event | None = None
        self.paused = 0  # > 0 while something else owns the line (a cell's input() prompt)

    @property
    def active(self) -> bool:
        return self._stop is not None

    @property
    def drawn(self) -> bool:
        return self._drawn

    def start(self, label: Label, *, delay: float = 0.0, persistent: bool = False, keep_time: bool = False) -> None:
        """Show ``label`` from ``delay`` seconds on; ``keep_time``: the same wait goes on (a
        retry after waiting for the model), so the elapsed time keeps counting."""
        with self._lock:
            now = time.monotonic()
            if not (keep_time and self.active):
                self.started = now
            self.label, self.delay, self.persistent = label, delay, persistent
            self._show_at = now + delay
            if self._stop is None:
                stop = self._stop = threading.Event()
                threading.Thread(target=self._run, args=(stop,), name="llmrepl-spinner", daemon=True).start()
            if delay <= 0:
                self._draw(now)

    def stop(self) -> None:
        with self._lock:
            if self._stop is not None:
                self._stop.set()
                self._stop = None
            self._erase()

    def hide(self) -> None:
        """Something else is about to be written: erase the spinner first."""
        with self._lock:
            if self._stop is None:
                return
            if not self.persistent:
                self.stop()
                return
            self._erase()
            self._show_at = time.monotonic() + self.delay

    def pause(self) -> None:
        with self._lock:
            self.paused += 1
            self._erase()

    def resume(self) -> None:
        with self._lock:
            self.paused = max(self.paused - 1, 0)
            self._show_at = time.monotonic() + self.delay

    def _erase(self) -> None:
        if self._drawn:
            self._drawn = False
            self._emit("\r\x1b[K")

    def _run(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval):
            with self._lock:
                if stop.is_set():
                    return
                now = time.monotonic()
                if now >= self._show_at:
                    self._draw(now)

    def text(self, now: float) -> str:
        label = self.label(now) if callable(self.label) else self.label
        label = " ".join(str(label).split())  # one row: a newline (a server's model id) would leave rows behind
        return f"{self.frames[self._frame % len(self.frames)]} {label} {self.dot} {elapsed(now - self.started)}"

    def _draw(self, now: float) -> None:
        if self.label is None or self.paused or not (self._drawn or self._ready()):
            return
        self._frame += 1
        text = self.text(now)
        cols = self._columns()
        if cols and len(text) >= cols // 2 and text_width(text) >= cols:  # one row, always: "\r"
            text = _cut_to(text, max(cols - 1, 1))  # must reach its start to erase it
        self._drawn = True
        self._emit("\r\x1b[K" + (f"\x1b[2m{text}\x1b[0m" if self.color else text))
