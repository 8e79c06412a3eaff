"""Which way Enter sends the input, shown while typing: the prompt and the highlighting.

The prompt reads ``llm> `` while Enter would ask the model and `` py> `` while it would run
the input as Python (the rule: :mod:`llmrepl.engine.classify`); Python is highlighted with
pygments, prose is left plain. pygments' Python lexer loads at the first input that looks
like Python, never on the way to the first prompt.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from prompt_toolkit.document import Document
from prompt_toolkit.formatted_text import StyleAndTextTuples
from prompt_toolkit.lexers import Lexer

from llmrepl.engine.classify import Route, defined_names, route

__all__ = ["InputRouter", "RoutedLexer", "MODEL_PROMPT", "PYTHON_PROMPT"]

MODEL_PROMPT = "llm> "
PYTHON_PROMPT = " py> "  # as wide as llm>, so the text does not move when the prompt changes
# Past this many characters (a paste) the indicator is decided once, not at every key:
# parsing takes ~2-5 ms per 1,000 characters; again when its start changes (a question typed
# above a pasted block, or cut). Enter decides on the whole text, except that what the prompt
# showed as ``llm>`` never runs as Python (``enter``).
LIVE_LIMIT = 5_000
_START = 200  # how much of the start of a big input its indicator's decision is kept for


class InputRouter:
    """Routes input with the live namespace, fetched once per prompt (``forget`` after each
    input): a kernel's namespace is a summary that may need a round trip to refresh, which
    must not happen at every key, and /reset replaces the in-process one."""

    def __init__(self, namespace: Callable[[], Mapping[str, Any]]) -> None:
        self.namespace = namespace
        self._ns: Mapping[str, Any] | None = None
        self._last: tuple[str, int, int, Route] | None = None
        # the indicator's decision for a big input, and the start of the input it was made for
        self._long: tuple[str, bool] | None = None

    def route(self, text: str) -> Route:
        ns = self._ns
        if ns is None:
            ns = self._ns = self.namespace()
        last = self._last
        if last is not None and last[0] == text and last[1] == id(ns) and last[2] == len(ns):
            return last[3]  # the prompt and the lexer ask for the same text on every redraw
        decided = route(text, defined_names(ns))
        self._last = (text, id(ns), len(ns), decided)
        return decided

    def runs_python(self, text: str) -> bool:
        """Whether Enter runs ``text`` as Python by the rule (``/py CODE`` says so itself: the
        prompt stays ``llm>`` for every slash command)."""
        long = len(text) > LIVE_LIMIT
        if long and self._long is not None and text.startswith(self._long[0]):
            return self._long[1]  # typing at the end is not parsed again; a new start is
        decided = self.route(text)
        python = decided.kind == "python"
        if long:
            self._long = (text[:_START], python)
        return python

    def enter(self, text: str) -> Route:
        """Where Enter sends ``text``: its route on the whole text, except that a big input the
        prompt still showed as ``llm>`` (its indicator is not decided at every key) goes to the
        model: Enter never runs what the person was told would be a message."""
        shown = self._long
        decided = self.route(text)
        if (decided.kind == "python" and len(text) > LIVE_LIMIT and shown is not None and not shown[1]
                and text.startswith(shown[0])):
            return Route("model", text, "the prompt showed llm>")
        return decided

    def highlights(self, text: str) -> bool:
        """Python to colour: what runs as Python, and the code of ``/py CODE``."""
        return text.lstrip().startswith("/py ") or self.runs_python(text)

    def prompt(self, text: str) -> str:
        return PYTHON_PROMPT if self.runs_python(text) else MODEL_PROMPT

    def forget(self) -> None:
        """The namespace may have changed (a cell ran): decide afresh."""
        self._last = None
        self._long = None
        self._ns = None


class RoutedLexer(Lexer):
    """pygments' Python lexer for input that will run as Python; plain text otherwise."""

    def __init__(self, runs_python: Callable[[str], bool]) -> None:
        self.runs_python = runs_python
        self._python: Lexer | None = None

    def lex_document(self, document: Document) -> Callable[[int], StyleAndTextTuples]:
        if not self.runs_python(document.text):
            lines = document.lines

            def plain(i: int) -> StyleAndTextTuples:
                return [("", lines[i])] if 0 <= i < len(lines) else []

            return plain
        if self._python is None:
            from prompt_toolkit.lexers import PygmentsLexer
            from pygments.lexers.python import PythonLexer

            self._python = PygmentsLexer(PythonLexer)
        return self._python.lex_document(document)


def continues_python(text: str) -> str | None:
    """IPython's Enter in a block: when ``text`` is Python that is not finished yet (``for i in
    x:``, an open bracket, a trailing backslash), the indentation the next line starts with;
    None when Enter should send it. A last line of only spaces ends the block, as in IPython.
    English never continues: a question ending in ':' or '(' is not valid Python so far."""
    if not text.strip() or text.lstrip().startswith("/") or len(text) > LIVE_LIMIT:
        return None
    last = text.rsplit("\n", 1)[-1]
    if "\n" in text and not last.strip():
        return None
    import codeop
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SyntaxWarning for a string's odd escapes, say
            if codeop.compile_command(text, "<input>", "single") is not None:
                return None
    except (SyntaxError, ValueError, OverflowError, MemoryError, RecursionError):
        return None
    indent = last[: len(last) - len(last.lstrip())]
    return indent + "    " if last.rstrip().endswith(":") else indent
