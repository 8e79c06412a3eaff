"""The gate between outside text and generated code: how it goes into an exported ``.py``.

Everything llmrepl did not write itself (a model or server id, the working folder's name, a
value's repr, an exception's name, code that never ran) reaches an exported script only
through these two functions, as data: inside a string literal, or in a ``#`` comment that
cannot end early. Python ends a comment only at ``\\n`` or ``\\r`` (and refuses ``\\0``), but
an editor or a terminal may also break or reorder a line at ``\\x0b``, ``\\x0c``, ``\\x1c``,
``\\x85``, U+2028, U+2029 or a bidi control, and ``cat`` runs escape sequences: so every
character that is not printable is written as its Python escape (tabs excepted), and what
you read is what runs.
"""

from __future__ import annotations

import ast

__all__ = ["as_comment", "as_docstring"]


def _escaped(text: str, keep: str) -> str:
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c in keep else repr(c)[1:-1] for c in text)


def as_comment(text: str) -> str:
    """``text`` made safe to follow a ``#``: one line, printable, tabs kept."""
    return _escaped(text, "\t")


def as_docstring(text: str) -> str:
    """A triple-quoted string literal whose value is ``text`` (plus a final newline): quotes
    and backslashes escaped, line breaks kept as ``\\n``, anything else that is not printable
    escaped. Checked by parsing it back; ``repr`` is the fallback."""
    body = _escaped(text.replace("\\", "\\\\").replace('"', '\\"'), "\n")
    literal = f'"""{body}\n"""'
    try:
        if ast.literal_eval(literal) == text + "\n":
            return literal
    except (SyntaxError, ValueError):
        pass
    return repr(text + "\n")
