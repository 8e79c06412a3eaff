"""Styling helpers: colour on/off, SGR styles, pygments highlighting of code, text widths.

Pure: returns strings, never writes. Code is highlighted with pygments' lexers through a lean
SGR writer of our own (an escape only where the colour changes); everything is plain when
colour is off. Text is cleaned by :func:`~llmrepl.terminal.sanitize.sanitize` before it is
highlighted, so the only escape codes in what comes out are the ones added here. Streamed
answers (Markdown) are rendered by :mod:`llmrepl.terminal.markdown`.
"""

from __future__ import annotations

from typing import Any

from llmrepl.terminal.sanitize import sanitize

__all__ = ["highlight_code", "highlight_line", "style", "color_default", "text_width", "warm_up"]


_STYLES = {
    "dim": "\x1b[2m",
    "bold": "\x1b[1m",
    "red": "\x1b[31m",
    "yellow": "\x1b[33m",
    "green": "\x1b[32m",
    "cyan": "\x1b[36m",
    "italic": "\x1b[3m",
    "underline": "\x1b[4m",
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


def text_width(text: str) -> int:
    """Terminal columns ``text`` takes (East Asian wide and full-width characters count two,
    combining marks and zero-width characters none)."""
    if text.isascii():
        return len(text)
    import unicodedata

    n = 0
    for ch in text:
        if unicodedata.combining(ch) or ch in "\u200b\u200c\u200d\ufe0f":
            continue
        n += 2 if unicodedata.east_asian_width(ch) in "WF" else 1
    return n


def style(text: str, name: str, color: bool) -> str:
    return f"{_STYLES[name]}{text}{_RESET}" if color and text else text


_lexers: dict[str, Any] = {}
_sgr: dict[Any, str] = {}  # pygments token type -> SGR parameters ("34", "1;36", "" for none)


def _lexer(name: str) -> Any:
    """A cached pygments lexer for a fence's language (None: unknown, shown plain)."""
    if name in _lexers:
        return _lexers[name]
    lexer: Any = None
    if name == "python":
        from pygments.lexers.python import PythonLexer

        lexer = PythonLexer(stripnl=False, ensurenl=False)
    else:
        from pygments.lexers import get_lexer_by_name
        from pygments.util import ClassNotFound

        try:
            lexer = get_lexer_by_name(name, stripnl=False, ensurenl=False)
        except (ClassNotFound, ValueError):
            lexer = None
    _lexers[name] = lexer
    return lexer


def _sgr_of(ttype: Any) -> str:
    params = _sgr.get(ttype)
    if params is None:
        from pygments.formatters.terminal import TERMINAL_COLORS

        t = ttype
        while t not in TERMINAL_COLORS and t.parent is not None:
            t = t.parent
        spec = TERMINAL_COLORS.get(t, ("", ""))[0]
        parts = []
        if spec.startswith("*"):
            parts.append("1")
        if spec.startswith("_"):
            parts.append("4")
        name = spec.strip("*_")
        colours = {"black": 30, "red": 31, "green": 32, "yellow": 33, "blue": 34, "magenta": 35,
                   "cyan": 36, "gray": 37, "brightblack": 90, "brightred": 91, "brightgreen": 92,
                   "brightyellow": 93, "brightblue": 94, "brightmagenta": 95, "brightcyan": 96}
        if name in colours:
            parts.append(str(colours[name]))
        params = _sgr[ttype] = ";".join(parts)
    return params


def _highlight(text: str, lexer_name: str) -> str:
    """``text`` (already sanitized) with SGR colour per token; an escape only where the style
    changes, none on whitespace (about 1.5x the bytes of the text for Python, where pygments'
    own TerminalFormatter writes 2.1x). In Python, a ``!command`` line the shell runs is drawn
    as shell (``magics.shell_lines``: not a ``!`` inside a string), and the Python between
    such lines is lexed in one piece, so a string across lines is drawn as the string it is."""
    if lexer_name == "python" and "!" in text:
        from llmrepl.execution.magics import shell_lines

        shell = shell_lines(text)
        if shell:
            parts: list[str] = []
            python: list[str] = []
            for number, line in enumerate(text.splitlines(True), 1):
                if number not in shell:
                    python.append(line)
                    continue
                if python:
                    parts.append(_highlight("".join(python), "python-only"))
                    python = []
                s = line.lstrip(" \t")
                parts.append(line[: len(line) - len(s)] + f"\x1b[0;1;35m!{_RESET}" + _highlight(s[1:], "bash"))
            if python:
                parts.append(_highlight("".join(python), "python-only"))
            return "".join(parts)
    lexer = _lexer("python" if lexer_name == "python-only" else lexer_name)
    if lexer is None:
        return text
    out: list[str] = []
    cur = ""
    for ttype, value in lexer.get_tokens(text):
        if not value:
            continue
        if value.isspace():
            if "\n" in value and cur:  # never carry colour across a line end
                out.append(_RESET)
                cur = ""
            out.append(value)
            continue
        params = _sgr_of(ttype)
        if params != cur:
            out.append(f"\x1b[0;{params}m" if params else _RESET)
            cur = params
        out.append(value)
    if cur:
        out.append(_RESET)
    return "".join(out)


def highlight_line(line: str, language: str) -> str:
    """One line of a fence (sanitized already) in ``language``, highlighted; "" stays ""."""
    return _highlight(line, language) if line else line


def highlight_code(code: str, color: bool) -> str:
    """A whole block of Python (foreign text: sanitized), highlighted when colour is on; ends
    with a newline."""
    code = sanitize(code)
    if not code.endswith("\n"):
        code += "\n"
    return _highlight(code, "python") if color else code


def warm_up() -> None:
    """Import pygments and compile its lexers ahead of the first answer (background thread)."""
    _highlight("x = 1  # warm\n", "python")
    from llmrepl.terminal.markdown import MarkdownStream

    MarkdownStream(True, 80).feed("Some **text**, `code`, [a](b)\n- item\n")

