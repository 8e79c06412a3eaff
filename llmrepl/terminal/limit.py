"""How much of one cell's output, one answer or one piece of code reaches the terminal.

``OutputLimit`` shows a head, then only counts, keeping a tail to show at the end, so a cell
printing 1 GB (or a 5 MB answer) costs the terminal ~250 KB; ``not_shown`` is the line that
says how much was left out.
"""

from __future__ import annotations

from collections import deque

__all__ = ["OutputLimit", "not_shown"]


class OutputLimit:
    """Shows the first ``head`` characters, then only counts, keeping the last ``tail`` to show
    at the end: a cell printing 1 GB (or a 5 MB answer) costs the terminal ~250 KB, not 1 GB."""

    def __init__(self, head: int, tail: int) -> None:
        self.head, self.tail = head, tail
        self.shown = self.hidden = 0
        self._buf: deque[str] = deque()
        self._buflen = 0

    def take(self, text: str) -> str:
        room = self.head - self.shown
        if len(text) <= room:
            self.shown += len(text)
            return text
        now = text[: max(room, 0)]
        self.shown += len(now)
        rest = text[len(now):]
        self.hidden += len(rest)
        if len(rest) >= self.tail:  # never copy the middle of a huge string
            self._buf.clear()
            self._buf.append(rest[len(rest) - self.tail :])
            self._buflen = self.tail
        else:
            self._buf.append(rest)
            self._buflen += len(rest)
            while self._buflen - len(self._buf[0]) >= self.tail:
                self._buflen -= len(self._buf.popleft())
        return now

    def flush(self) -> tuple[int, str]:
        """How many characters were not shown and the kept tail (0 and "" when nothing was
        held back); then start over."""
        if not self.hidden:
            self.shown = 0
            return 0, ""
        tail = "".join(self._buf)[-self.tail :]
        tail = tail[tail.find("\n") + 1 :] if "\n" in tail[:-1] else tail  # start the tail at a line
        skipped = self.hidden - len(tail)
        self.shown = self.hidden = self._buflen = 0
        self._buf.clear()
        return skipped, tail


def not_shown(skipped: int, what: str) -> str:
    return f"\nllmrepl: [... {skipped:,} characters of {what} not shown ...]\n"
