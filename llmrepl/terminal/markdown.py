"""Streamed Markdown for the terminal: the model's prose as it arrives, wrapped at words.

:class:`MarkdownStream` takes an answer in deltas and returns the text to write, at once:
within the line, not only at each newline. Inline marks (``**strong**``, ``*em*``,
```code```, ``~~strike~~``, ``[text](url)``) are decided as soon as the character after
them is known, so what is written is final and never taken back; the one thing rewritten
is a word that turns out not to fit (its shown part is erased, it goes to the next row) and
a code line (shown plain while it streams, then redrawn highlighted with ``\\r``): the bytes
stay near 2x the answer's. Blocks: headings, bullet and numbered lists (indented, hanging),
quotes, rules, tables (as written), code fences (highlighted with pygments). Links are shown
as their text and URL, never as an OSC 8 hyperlink. Every delta goes through ``sanitize``
first, so the only escape codes written are ours; with colour off there are none at all
(a word is then written once it is whole, so nothing needs erasing).
"""

from __future__ import annotations

import re

from llmrepl.terminal.inline import BOLD, CODE, DIM, EM, HEAD, STRIKE, UNDER, InlineMarks
from llmrepl.terminal.render import highlight_line, style, text_width
from llmrepl.terminal.sanitize import sanitize

__all__ = ["MarkdownStream", "render_markdown"]

_PARAMS = ((BOLD | HEAD, "1"), (EM, "3"), (UNDER, "4"), (STRIKE, "9"), (DIM, "2"), (CODE, "36"))
_RESET = "\x1b[0m"
_PY_TAGS = {"", "python", "py", "python3", "py3", "ipython", "pycon"}
_TOKENS = re.compile(r"\s+|\S+")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})[ \t]*\{?\.?([\w+-]*)")
_MAYBE_FENCE = re.compile(r"^ {0,3}(`{1,2}|~{1,2})$")
_MAYBE_RULE = re.compile(r"^ {0,3}([-*_])(?: *\1)* *$")
_RULE = re.compile(r"^ {0,3}([-*_])(?: *\1){2,} *$")
_MAYBE_MARK = re.compile(r"^\s*(?:[-*+]|\d{1,9}[.)]?|#{1,6}|>)?$")
_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+|$)")
_BULLET = re.compile(r"^(\s*)([-*+])[ \t]+")
_NUMBER = re.compile(r"^(\s*)(\d{1,9})([.)])[ \t]+")
_QUOTE = re.compile(r"^ {0,3}> ?")
_TABLE = re.compile(r"^\s*\|")
_BULLETS = ("•", "◦", "▪")


_INTRODUCER = re.compile(r"[\x1b\x90\x98\x9b\x9d\x9e\x9f]")
_WHOLE = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c\n]*(?:\x07|\x1b\\|\x9c)"
    r"|\x1b(?:[ -/]+[0-~]|[0-OQ-WYZ\\`-~])"  # two-byte forms (not the start of CSI or a string)
)
_EAGER = 256  # an undecided line start longer than this is tried again only as it doubles
_HOLD = 8192  # an escape sequence longer than this, cut by a delta's end, is not waited for


def _open_sequence(text: str) -> tuple[str, str]:
    """``text`` split before an escape sequence (7-bit or 8-bit) that a delta's end cut, so it
    is sanitized whole, with the next delta, and no piece of it is shown as text."""
    start = max(len(text) - _HOLD, 0)
    p = -1
    for m in _INTRODUCER.finditer(text, start):
        p = m.start()
    if p < 0:
        return text, ""
    if text.startswith("\x1b\\", p) and p:  # the ST ending a string: look at what it ends
        return text, ""
    if "\n" in text[p:] or _WHOLE.match(text, p):
        return text, ""
    return text[:p], text[p:]


def _sgr(flags: int) -> str:
    return ";".join(p for bit, p in _PARAMS if flags & bit)


class MarkdownStream:
    """Feed an answer's deltas; get back what to write now. One instance per answer.

    ``width``: wrap prose at word boundaries to this many columns (None: never wrap, as for
    a pipe). ``color``: SGR styles and the cursor moves of partial-line rendering (off: plain
    text, append-only). ``ascii``: bullets and rules in ASCII (not a UTF-8 terminal)."""

    def __init__(self, color: bool, width: int | None = None, *, ascii: bool = False) -> None:
        self.color = color
        self.width = width if width and width >= 12 else None
        self.ascii = ascii
        self.live = True  # show a code line while it streams (False: a whole text at once)
        self._start: list[str] = []  # the start of a line whose block is not decided yet
        self._start_len = 0  # its length, and the length at which to try deciding it again:
        self._next_try = 0  # doubling past _EAGER, so a long undecided line costs O(n log n)
        self._block: str | None = None  # None (undecided) | "text" | "code" | "raw"
        self._fence: str | None = None
        self._lang = ""
        self._tail = ""  # a "\r" or an escape sequence cut by the delta's end: joined to the next
        self._inline = InlineMarks(keep_ticks=not color)
        self._out: list[str] = []
        self._cur = 0  # the SGR style the terminal is in
        # prose row state
        self._col = self._row_start = 0
        self._anchor = 0  # the column where the last whole word ended (the next may follow it)
        self._cont = ""  # what a continuation row starts with (a list item's hanging indent)
        self._base = 0
        self._word: list[tuple[str, int]] = []
        self._word_w = 0
        self._written = 0  # characters of the word already written (partial display)
        self._space = False  # a space is due before the next word
        self._space_shown = False
        # code line state
        self._code: list[str] = []
        self._code_w = 0
        self._code_shown = 0  # characters of the code line written plain so far
        self._code_full = False

    # -- public ------------------------------------------------------------------------

    def feed(self, delta: str) -> str:
        text = self._tail + delta
        self._tail = ""
        if text.endswith("\r"):
            text, self._tail = text[:-1], "\r"
        else:
            text, self._tail = _open_sequence(text)
        text = sanitize(text)
        pos = 0
        while True:
            nl = text.find("\n", pos)
            if nl < 0:
                if pos < len(text):
                    self._piece(text[pos:])
                break
            if nl > pos:
                self._piece(text[pos:nl])
            self._end_line()
            pos = nl + 1
        return self._take()

    def finish(self) -> str:
        """Whatever is left (an answer rarely ends with a newline), ended with one."""
        if self._tail:
            text, self._tail = sanitize(self._tail), ""
            for i, part in enumerate(text.split("\n")):
                if i:
                    self._end_line()
                if part:
                    self._piece(part)
        if self._start or self._block is not None:
            self._end_line()
        self._fence = None
        return self._take()

    # -- plumbing ----------------------------------------------------------------------

    def _take(self) -> str:
        if self._cur:
            self._set(0)
        out = "".join(self._out)
        self._out = []
        return out

    def _set(self, flags: int) -> None:
        if flags != self._cur and self.color:
            params = _sgr(flags)
            self._out.append(f"\x1b[0;{params}m" if params else _RESET)
        self._cur = flags

    def _put(self, text: str, flags: int = 0) -> None:
        if self.color and flags != self._cur:
            self._set(flags)
        self._out.append(text)

    # -- lines and blocks --------------------------------------------------------------

    def _piece(self, text: str) -> None:
        if self._block is None:
            self._start.append(text)
            self._start_len += len(text)
            if self._start_len < self._next_try:  # a long undecided line (1 MB of spaces or
                return  # "*"): not joined and matched again at every delta
            line = "".join(self._start)
            if not self._decide(line, final=False):
                self._start = [line]
                if self._start_len > _EAGER:
                    self._next_try = self._start_len * 2
                return
            self._start, self._start_len, self._next_try = [], 0, 0
            return
        self._continue(text)

    def _continue(self, text: str) -> None:
        if self._block == "text":
            self._words(self._inline.feed(text))
        elif self._block == "code":
            self._code_piece(text)
        elif text:  # raw: a table row, written as it comes
            self._out.append(text)

    def _end_line(self) -> None:
        if self._block is None:
            line = "".join(self._start)
            self._start, self._start_len, self._next_try = [], 0, 0
            self._decide(line, final=True)
            if self._block is None:  # a whole-line block (fence, rule, blank) is done
                return
        if self._block == "text":
            self._words(self._inline.feed("", final=True))
            self._place()
            self._inline = InlineMarks(keep_ticks=not self.color)
        elif self._block == "code":
            self._code_end()
        self._set(0)
        self._out.append("\n")
        self._block = None

    def _decide(self, line: str, final: bool) -> bool:
        """Choose the block ``line`` (its start, or all of it when ``final``) begins; False
        while its first characters could still mean more than one thing."""
        if self._fence is not None:
            stripped, mark = line.strip(), self._fence[0]
            could_close = len(line) - len(line.lstrip(" ")) <= 3 and not stripped.strip(mark)
            if could_close and not final:
                return False
            if could_close and len(stripped) >= len(self._fence):
                self._out.append(style(line, "dim", self.color) + "\n")
                self._fence = None
                return True
            self._block, self._code, self._code_w, self._code_shown, self._code_full = "code", [], 0, 0, False
            self._continue(line)
            return True
        if not final and (_MAYBE_MARK.match(line) or _MAYBE_RULE.match(line) or _MAYBE_FENCE.match(line)):
            return False
        fence = _FENCE.match(line)
        if fence:
            if not final:
                return False
            self._fence = fence.group(1)
            tag = fence.group(2).lower()
            self._lang = "python" if tag in _PY_TAGS else tag
            self._out.append(style(line, "dim", self.color) + "\n")
            return True
        if final and not line.strip():
            self._out.append("\n")
            return True
        if final and _RULE.match(line):
            rule = ("-" if self.ascii else "─") * min(self.width or 40, 40)
            self._out.append(style(rule, "dim", self.color) + "\n")
            return True
        if _TABLE.match(line):
            self._block = "raw"
            self._out.append(line)
            return True
        prefix, cont, base, rest = "", "", 0, line
        if m := _HEADING.match(line):
            base, rest = HEAD | (UNDER if len(m.group(1)) == 1 else 0), line[m.end():]
        elif m := _BULLET.match(line):
            level = len(m.group(1).expandtabs(4)) // 2
            mark = "-" if self.ascii else _BULLETS[min(level, 2)]
            prefix = "  " * (level + 1) + mark + " "
            cont, rest = " " * len(prefix), line[m.end():]
        elif m := _NUMBER.match(line):
            level = len(m.group(1).expandtabs(4)) // 2
            prefix = "  " * (level + 1) + m.group(2) + m.group(3) + " "
            cont, rest = " " * len(prefix), line[m.end():]
        elif m := _QUOTE.match(line):
            prefix = cont = "| " if self.ascii else "│ "
            base, rest = DIM, line[m.end():]
        else:
            lead = len(line) - len(line.lstrip())
            prefix = cont = line[:lead]
            rest = line[lead:]
        self._block, self._base, self._cont = "text", base, cont
        self._word, self._word_w, self._written = [], 0, 0
        self._space = self._space_shown = False
        if prefix:
            self._put(prefix, DIM if prefix.strip() in ("│", "|") else 0)
        self._col = self._row_start = self._anchor = text_width(prefix)
        if rest:
            self._continue(rest)
        return True

    # -- prose: words onto rows --------------------------------------------------------

    def _words(self, pieces: list[tuple[str, int]]) -> None:
        for text, flags in pieces:
            flags |= self._base
            for m in _TOKENS.finditer(text):
                token = m.group()
                if token[0].isspace():
                    self._place()
                    if self._anchor > self._row_start:
                        self._space = True
                    continue
                self._word.append((token, flags))
                self._word_w += text_width(token)
            self._partial()

    def _partial(self) -> None:
        """Show the word being streamed, if it can be taken back (colour on) or never has to
        be (no wrapping)."""
        if not self._word or (self.width is not None and not self.color):
            return
        space = 1 if self._space else 0
        if self.width is not None and self._anchor + space + self._word_w >= self.width:
            return  # it may not fit here: it waits until it is whole (never into the last column)
        if self._space and not self._space_shown:
            self._put(" ", self._space_style())
            self._col += 1
            self._space_shown = True
        self._write_word(self._written)

    def _write_word(self, skip: int, *, wrap: bool = False) -> None:
        """Write the word's characters from ``skip`` on (hard-wrapping them when ``wrap``)."""
        seen = 0
        for text, flags in self._word:
            if seen + len(text) <= skip:
                seen += len(text)
                continue
            part = text[max(skip - seen, 0):]
            seen += len(text)
            if wrap and self.width is not None and self._col + text_width(part) > self.width:
                for ch in part:
                    w = text_width(ch)
                    if self._col + w > self.width and self._col > self._row_start:
                        self._newline()
                    self._put(ch, flags)
                    self._col += w
            else:
                self._put(part, flags)
                self._col += text_width(part)
        self._written = seen

    def _space_style(self) -> int:
        """A space between words: in the words' style when both share it (an underlined link
        text), else without the marks a space would show (no escape needed for bold)."""
        nxt = self._word[0][1] if self._word else 0
        return self._cur if nxt == self._cur else self._cur & ~(UNDER | STRIKE)

    def _newline(self) -> None:
        self._set(0)
        self._out.append("\n" + self._cont)
        self._col = self._row_start = self._anchor = text_width(self._cont)

    def _place(self) -> None:
        """The word is whole: leave it where it is, or move it to the next row."""
        if not self._word:
            return
        space = 1 if self._space else 0
        if (self.width is not None and self._anchor + space + self._word_w > self.width
                and self._anchor > self._row_start):
            back = self._col - self._anchor
            if back:  # take back what was shown of it (colour on only), then a new row
                self._set(0)
                self._out.append(f"\x1b[{back}D\x1b[K")
            self._newline()
            self._written = 0
        elif self._space and not self._space_shown:
            self._put(" ", self._space_style())
            self._col += 1
        self._write_word(self._written, wrap=True)
        self._anchor = self._col
        self._word, self._word_w, self._written = [], 0, 0
        self._space = self._space_shown = False

    # -- code lines --------------------------------------------------------------------

    def _code_piece(self, text: str) -> None:
        self._code.append(text)
        if not self.color:
            self._out.append(text)  # plain: written as it comes, never rewritten
            self._code_shown += len(text)
            return
        if self._code_full or not self.live:
            return
        w = text_width(text.expandtabs(8)) if "\t" in text else text_width(text)
        if self.width is not None and self._code_w + w >= self.width:
            self._code_full = True  # never let the plain preview wrap: "\r" must reach its start
            return
        self._out.append(text)
        self._code_w += w
        self._code_shown += len(text)

    def _code_end(self) -> None:
        line = "".join(self._code)
        self._code = []
        if not self.color:
            return
        lit = highlight_line(line, self._lang) if self._lang else line
        if lit == line:
            self._out.append(line[self._code_shown:])
        elif self._code_shown:
            self._out.append("\r" + lit)
        else:
            self._out.append(lit)


def render_markdown(text: str, color: bool, width: int | None = None, *, ascii: bool = False) -> str:
    """A whole Markdown text (a ``text/markdown`` output), rendered as an answer is."""
    md = MarkdownStream(color, width, ascii=ascii)
    md.live = False
    return md.feed(text) + md.finish()
