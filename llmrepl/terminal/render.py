"""Turn model text, code and results into terminal text. Pure: returns strings, never writes.

Streaming is rendered once per completed line (linear cost, nothing re-rendered): lines
inside Python fences are highlighted with pygments' ``PythonLexer``, prose is lightly
styled with its Markdown lexer, and everything is plain when colour is off. The text is
cleaned by :func:`~llmrepl.terminal.sanitize.sanitize` before it is highlighted, so the
only escape codes in what comes out are the ones added here.
"""

from __future__ import annotations

import re
from typing import Any

from llmrepl.terminal.sanitize import sanitize

__all__ = ["StreamRenderer", "highlight_code", "style", "color_default", "warm_up"]

_FENCE = re.compile(r"^[ \t]{0,3}(`{3,}|~{3,})[ \t]*\{?\.?([\w+-]*)")
_PY_TAGS = {"", "python", "py", "python3", "py3", "ipython", "pycon"}

_STYLES = {
    "dim": "\x1b[2m",
    "bold": "\x1b[1m",
    "red": "\x1b[31m",
    "yellow": "\x1b[33m",
    "green": "\x1b[32m",
    "cyan": "\x1b[36m",
}
_RESET = "\x1b[0m"


def color_default(stream: Any, env: dict[str, str]) -> bool:
    """Colour only on a terminal, and never with NO_COLOR or TERM=dumb."""
    if "NO_COLOR" in env or env.get("TERM") == "dumb":
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def style(text: str, name: str, color: bool) -> str:
    return f"{_STYLES[name]}{text}{_RESET}" if color and text else text


_formatter: Any = None
_lexers: dict[str, Any] = {}


def _highlight(text: str, lexer_name: str) -> str:
    global _formatter
    from pygments import highlight
    from pygments.formatters import TerminalFormatter

    if _formatter is None:
        _formatter = TerminalFormatter()
    lexer = _lexers.get(lexer_name)
    if lexer is None:
        if lexer_name == "python":
            from pygments.lexers.python import PythonLexer

            lexer = PythonLexer(stripnl=False, ensurenl=False)
        else:
            from pygments.lexers.markup import MarkdownLexer

            lexer = MarkdownLexer(stripnl=False, ensurenl=False)
        _lexers[lexer_name] = lexer
    out: str = highlight(text, lexer, _formatter)
    return out


def highlight_code(code: str, color: bool) -> str:
    """A whole block of Python (foreign text: sanitized), highlighted when colour is on; ends
    with a newline."""
    code = sanitize(code)
    if not code.endswith("\n"):
        code += "\n"
    return _highlight(code, "python") if color else code


class StreamRenderer:
    """Feed streamed deltas; get back completed lines, rendered. One instance per answer."""

    def __init__(self, color: bool) -> None:
        self.color = color
        self._partial: list[str] = []  # the line not finished yet, in pieces (joined once)
        self._fence: str | None = None   # the open fence's marker, e.g. "```"
        self._python = False

    def feed(self, delta: str) -> str:
        """Render the lines ``delta`` completes; keep the rest for later."""
        cut = delta.rfind("\n")
        if cut < 0:
            if delta:
                self._partial.append(delta)  # no copy of a long unfinished line per delta
            return ""
        text = "".join(self._partial) + delta[: cut + 1]
        self._partial = [delta[cut + 1 :]] if cut + 1 < len(delta) else []
        return self._lines(text)

    def finish(self) -> str:
        """Render whatever is left (an answer rarely ends with a newline)."""
        rest, self._partial = "".join(self._partial), []
        out = self._lines(rest + "\n") if rest else ""
        self._fence, self._python = None, False
        return out

    def _lines(self, text: str) -> str:
        # cleaned as a whole before it is split: a "\r\n" is one line end, and a lone "\r"
        # is a line break here, as it is to Python and to extract_code
        text = sanitize(text)
        return "".join(self._line(line + "\n") for line in text[:-1].split("\n"))

    def _line(self, line: str) -> str:
        m = _FENCE.match(line)
        if m:
            marker = m.group(1)
            if self._fence is None:
                self._fence, self._python = marker, m.group(2).lower() in _PY_TAGS
                return style(line.rstrip("\n"), "dim", self.color) + "\n"
            if marker[0] == self._fence[0] and len(marker) >= len(self._fence) and not line.strip().strip(marker[0]):
                self._fence, self._python = None, False
                return style(line.rstrip("\n"), "dim", self.color) + "\n"
        if not self.color:
            return line
        if self._fence is not None:
            return _highlight(line, "python") if self._python else line
        if not line.strip():
            return line
        return _highlight(line, "markdown")


def warm_up() -> None:
    """Import pygments and compile its lexers ahead of the first answer (background thread)."""
    _highlight("x = 1\n", "python")
    _highlight("Some *text*\n", "markdown")

