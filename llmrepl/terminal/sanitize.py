"""The one gate between foreign text and the terminal: ``sanitize``.

Everything llmrepl did not write itself (model text, cell output, reprs, tracebacks, server
messages, file names, journal contents) is written to the terminal only after passing
through :func:`sanitize`, so no byte from outside can drive the terminal: set the clipboard
(OSC 52), the window title (OSC 0/2), move the cursor, clear the screen, switch character
sets, or do any of that through 8-bit C1 controls (U+0080-U+009F, which a UTF-8 terminal
decodes and obeys like their ESC forms). Pure and cheap: text with nothing to clean is
returned as it is after one regular-expression search.
"""

from __future__ import annotations

import re

__all__ = ["sanitize"]

# An escape sequence, 7-bit or 8-bit, or a single control character. Control strings (OSC,
# DCS, SOS, PM, APC) end at BEL or ST; one that is never ended is removed to the end of its
# line, so an unterminated "\x1b]52;c;..." hides no more than the rest of that line. The
# SGR group is the only sequence cell output may keep (colour).
_CONTROL = re.compile(
    r"(?P<sgr>\x1b\[[0-9;:]*m)"
    r"|(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"                       # CSI (cursor, erase, modes, ...)
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c\n]*(?:\x07|\x1b\\|\x9c)?"  # strings
    r"|\x1b[ -/]*[0-~]?"                                        # two-byte ESC forms, a lone ESC
    r"|(?P<cr>\r\n?)"
    r"|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]"                   # other C0, DEL and C1
    # the bidi embeddings, overrides and isolates of "Trojan Source" (CVE-2021-42574)
    r"|(?P<bidi>[\u202a-\u202e\u2066-\u2069])"
)


def sanitize(text: str, *, output: bool = False, color: bool = False) -> str:
    """``text`` made safe to write to the terminal.

    Always removed: every escape sequence, C0 controls other than newline and tab, DEL and
    all C1 controls. By default (model text, reprs, tracebacks, listings, notices) a ``\\r``
    becomes a line break, as Python's tokenizer reads it, and the bidi controls that reorder
    what is shown are written as visible markers (``<U+202E>``). For a cell's output
    (``output=True``) a ``\\r`` is kept, so a progress bar still redraws its own line; bidi
    marks are left alone (they are the data's); and with ``color`` its SGR colour
    sequences are kept too (the display resets the colour after the cell).
    """
    if not _CONTROL.search(text):
        return text

    def clean(m: re.Match[str]) -> str:
        if m.group("sgr") is not None:
            return m.group() if output and color else ""
        cr = m.group("cr")
        if cr is not None:
            return cr if output else "\n"
        bidi = m.group("bidi")
        if bidi is not None:
            return bidi if output else f"<U+{ord(bidi):04X}>"
        return ""

    return _CONTROL.sub(clean, text)
