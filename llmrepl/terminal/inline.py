"""Inline Markdown as a stream: emphasis, strong, strike, code spans and links.

:class:`InlineMarks` turns the text of one line, fed in pieces, into ``(text, style)``
pieces with the marks taken out; :mod:`llmrepl.terminal.markdown` lays them out in rows.
"""

from __future__ import annotations

import re

__all__ = ["InlineMarks", "BOLD", "EM", "CODE", "STRIKE", "UNDER", "DIM", "HEAD"]

BOLD, EM, CODE, STRIKE, UNDER, DIM, HEAD = 1, 2, 4, 8, 16, 32, 64
_SPECIAL = re.compile(r"[*_`~\[\\]")
_MAX_RUN = 32  # a run of one delimiter longer than this is literal text (never held whole)


class InlineMarks:
    """Inline Markdown as a stream of ``(text, style)`` pieces.

    A delimiter is decided as soon as the character after it is known: an opener is taken
    when it can open (optimistic: if it is never closed, the rest of the line keeps its
    style), so nothing written is ever taken back. A ``*`` or ``_`` between two letters or
    digits is literal (``snake_case``, ``2*3*4``). What cannot be decided yet is held."""

    def __init__(self, keep_ticks: bool) -> None:
        self.keep_ticks = keep_ticks  # colour off: a code span keeps its backticks (readable)
        self.style = 0
        self.code_run = 0  # length of the backtick run that opened the code span we are in
        self.held = ""
        self.run = ""  # the delimiter of a too-long run a delta's end cut: its rest is literal too
        self.prev = " "  # the last character given out (or a space at the start)
        self.out: list[tuple[str, int]] = []

    def _emit(self, text: str, extra: int = 0) -> None:
        if text:
            self.out.append((text, self.style | extra))
            self.prev = text[-1]

    def feed(self, text: str, final: bool = False) -> list[tuple[str, int]]:
        s = self.held + text
        self.held = ""
        self.out = []
        i, n = 0, len(s)
        if self.run:  # the rest of a literal run: held and scanned again it would cost O(n^2)
            while i < n and s[i] == self.run:
                i += 1
            self._emit(s[:i])
            if i < n:
                self.run = ""
        while i < n:
            if self.code_run:
                j = s.find("`", i)
                if j < 0:
                    self._emit(s[i:])
                    break
                self._emit(s[i:j])
                k = j
                while k < n and s[k] == "`":
                    k += 1
                if k == n and not final:
                    if k - j > _MAX_RUN:  # too long to close the span: literal, whatever follows
                        self._emit(s[j:k])
                        self.run = "`"
                    else:
                        self.held = s[j:]
                    break
                if k - j == self.code_run:
                    if self.keep_ticks:
                        self._emit(s[j:k])
                    self.style &= ~CODE
                    self.code_run = 0
                else:
                    self._emit(s[j:k])
                i = k
                continue
            m = _SPECIAL.search(s, i)
            if m is None:
                self._emit(s[i:])
                break
            j = m.start()
            self._emit(s[i:j])
            c = s[j]
            if c == "\\":
                if j + 1 == n:
                    if not final:
                        self.held = s[j:]
                        break
                    self._emit("\\")
                    i = n
                elif not s[j + 1].isalnum() and not s[j + 1].isspace():
                    self._emit(s[j + 1])
                    i = j + 2
                else:
                    self._emit("\\")
                    i = j + 1
                continue
            if c == "[":
                i = self._link(s, j, final)
                if i < 0:
                    break
                continue
            k = j
            while k < n and s[k] == c:
                k += 1
            if k == n and not final:
                if k - j > _MAX_RUN:  # no mark is that long: literal, whatever follows
                    self._emit(s[j:k])
                    self.run = c
                else:
                    self.held = s[j:]
                break
            run = s[j:k]
            i = k
            if c == "`" and len(run) > _MAX_RUN:
                self._emit(run)
                continue
            if c == "`":
                self.code_run = len(run)
                self.style |= CODE
                if self.keep_ticks:
                    self._emit(run)
                continue
            before, after = self.prev, s[k] if k < n else " "
            flags = {"*": {1: EM, 2: BOLD, 3: BOLD | EM}, "_": {1: EM, 2: BOLD, 3: BOLD | EM},
                     "~": {2: STRIKE}}[c].get(len(run), 0)
            if not flags or (before.isalnum() and after.isalnum()):
                self._emit(run)
            elif self.style & flags == flags and not before.isspace():
                self.style &= ~flags
            elif not self.style & flags and not after.isspace():
                self.style |= flags
            else:
                self._emit(run)
        return self.out

    def _link(self, s: str, j: int, final: bool) -> int:
        """``[text](url)`` at ``s[j]``: shown as text (underlined) and the URL; -1: held."""
        n = len(s)
        close = s.find("]", j + 1)
        if close < 0 or close + 1 == n:
            if not final and n - j < 300:
                self.held = s[j:]
                return -1
            self._emit("[")
            return j + 1
        if s[close + 1] != "(":
            self._emit("[")
            return j + 1
        end = s.find(")", close + 2)
        url = s[close + 2 : end if end >= 0 else n]
        if end < 0 and not final and n - j < 600 and not any(ch.isspace() for ch in url):
            self.held = s[j:]
            return -1
        label = re.sub(r"[*`]|__", "", s[j + 1 : close]).strip()
        if end < 0 or not url or any(ch.isspace() for ch in url) or not label:
            self._emit("[")
            return j + 1
        if self.prev == "!":  # an image: ![alt](url) -> "alt (url)"
            last, st = self.out[-1]
            self.out[-1] = (last[:-1], st)
        self._emit(label, UNDER)
        if url != label:
            self._emit(f" ({url})", DIM)
        return end + 1
