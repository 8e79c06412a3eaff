"""What llmrepl says to the model: the system prompt, the run_python tool, and cell results.

Everything here is plain text built from data; nothing runs user code (the namespace
summary only looks at types and sizes it can read without calling user methods).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from llmrepl.context.budget import NOTE_PREFIX

if TYPE_CHECKING:
    from llmrepl.execution.executor import ExecResult

__all__ = [
    "RUN_PYTHON_TOOL",
    "system_rules",
    "format_result",
    "cap_text",
    "interleave",
    "display_text",
    "is_image",
]

RUN_PYTHON_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "run_python",
        "description": (
            "Run Python code in the user's persistent session (after the user confirms). "
            "Returns stdout/stderr, the value of the last expression, or the traceback."
        ),
        "parameters": {
            "type": "object",
            "properties": {"code": {"type": "string", "description": "The Python code to run."}},
            "required": ["code"],
        },
    },
}

_RULES = """\
You are llmrepl, a data-exploration assistant inside a terminal. You help by writing Python \
that runs in the user's own Python session.

Where your code runs:
- Python {python} on {os}; working directory {cwd}.
- Importable here: {libs}.
- One namespace persists across turns: variables, imports and functions you define stay \
available to later code. Reuse them instead of recomputing.
- The person sees each cell and confirms it before it runs (they may edit or decline it).
- After a cell runs you receive what it printed (stdout/stderr), the value of its last \
expression, or its traceback. Output you receive is capped at about {cap} characters \
(head and tail kept), so print summaries (shape, head(), describe()) rather than whole data.
- Do not call input(): nobody may be there to answer. Put values in the code.
- display(obj) shows an object as Jupyter does (a DataFrame as a table); you receive its text.
- Figures: every figure open at the end of a cell is shown to the person, saved as a PNG and \
closed (plt.show() or not); you receive a description of it (size, title, axis labels, what \
was drawn).
- These IPython magics work: %time, %timeit, %who, %whos, %pwd, %cd, %run, %pip, !cmd, obj?.
- Text starting with [llmrepl] is written by llmrepl, not by the person. A "Session state" \
note says what the namespace holds, or what changed since the note before it; the latest \
note is current, and no new note means nothing changed.

How to answer:
- Put code to run in one ```python fenced block (or call the run_python tool). Several \
blocks in one answer are joined and run as one cell. Blocks in other languages are shown \
but never run.
- Take one step at a time: run code, look at the result, then continue. When the task is \
done, answer in plain words without a code block.
- Keep prose short."""


@lru_cache(maxsize=1)
def _importable() -> str:
    names = [n for n in ("pandas", "numpy", "matplotlib") if importlib.util.find_spec(n) is not None]
    return ", ".join(names) if names else "the standard library only (no pandas, numpy or matplotlib)"


def system_rules(*, max_output_chars: int = 8000, cwd: str | None = None) -> str:
    """The rules and where code runs: nothing here changes within a session (``cwd`` is the
    session's starting directory; the builder reports later changes after the history)."""
    return _RULES.format(
        python=".".join(map(str, sys.version_info[:3])),
        os=_os_name(),
        cwd=cwd if cwd is not None else _cwd(),
        libs=_importable(),
        cap=f"{max_output_chars:,}",
    )


@lru_cache(maxsize=1)
def _os_name() -> str:
    import platform  # ~2 ms; needed with the first request, not at startup

    return f"{platform.system()} {platform.release()}".strip()


def _cwd() -> str:
    try:
        return os.getcwd()
    except OSError:
        return "(unknown: the working directory was removed)"


def cap_text(text: str, max_chars: int, *, total_chars: int | None = None, where: str = "") -> str:
    """Keep the head and the tail of ``text`` within ``max_chars``, saying what was left out.

    ``total_chars`` is how much was really written when ``text`` is itself already a cut
    (the capture keeps a bounded head and tail), so the note counts what the model misses;
    ``where`` names where the rest can be read (e.g. ``_out[3]``).
    """
    total = max(total_chars or 0, len(text))
    if max_chars <= 0 or (len(text) <= max_chars and total == len(text)):
        return text
    if len(text) <= max_chars:
        head, middle, tail = text, "", ""
    else:
        head_n = max_chars * 3 // 5
        tail_n = max_chars - head_n
        head, middle, tail = text[:head_n], text[head_n : len(text) - tail_n], text[len(text) - tail_n :]
        # cut at line boundaries when that loses little
        cut = head.rfind("\n")
        if cut > head_n // 2:
            middle = head[cut + 1 :] + middle
            head = head[: cut + 1]
        cut = tail.find("\n")
        if 0 <= cut < tail_n // 2:
            middle = middle + tail[: cut + 1]
            tail = tail[cut + 1 :]
    left_out = total - len(head) - len(tail)
    if total > len(text):
        note = f"[... {left_out:,} characters left out"
    else:
        note = f"[... {middle.count(chr(10)):,} lines, {left_out:,} characters left out"
    note += f"; {where} holds what was kept ...]" if where else " ...]"
    sep = "" if head.endswith("\n") else "\n"
    return f"{head}{sep}{note}\n{tail}"


_OMITTED = re.compile(r"\n?\[\.\.\. [\d,]+ characters omitted \.\.\.\]\n")


def _position(at: int, output: str, total: int) -> int:
    """Where a display written after ``at`` characters of the cell's output goes in
    ``output``, which may be the capture's cut (a head, a marker line, a tail)."""
    if total <= len(output):
        return max(0, min(at, len(output)))
    marker = _OMITTED.search(output)
    if marker is None:
        return max(0, min(at, len(output)))
    head, tail_start = marker.start(), marker.end()
    tail = len(output) - tail_start
    if at <= head:
        return at
    if at >= total - tail:
        return max(tail_start, len(output) - (total - at))
    return tail_start


def interleave(output: str, output_chars: int, items: Sequence[Any]) -> list[tuple[str, Any]]:
    """The cell's stream text split at each display item's ``at``: ``("text", str)`` and
    ``("item", item)`` pieces in the order they were written (items in ``at`` order, stable)."""
    pieces: list[tuple[str, Any]] = []
    done = 0
    for item in sorted(items, key=lambda d: int(getattr(d, "at", 0) or 0)):
        pos = max(done, _position(int(getattr(item, "at", 0) or 0), output, output_chars))
        if pos > done:
            pieces.append(("text", output[done:pos]))
        pieces.append(("item", item))
        done = pos
    if done < len(output):
        pieces.append(("text", output[done:]))
    return pieces


def is_image(item: Any) -> bool:
    """A display item that is a picture (a figure): its bytes, or the file they were saved in."""
    data = getattr(item, "data", None) or {}
    meta = getattr(item, "metadata", None) or {}
    return any(str(k).startswith("image/") for k in data) or bool(meta.get("filename"))


def display_text(item: Any) -> str:
    """What the model reads for a display item: its fixed-width text; for an image, its
    description, labelled with the file it was saved to (never the bytes)."""
    data = getattr(item, "data", None) or {}
    text = str(getattr(item, "text", "") or "")
    if not text and isinstance(data.get("text/plain"), str):
        text = data["text/plain"]
    if is_image(item):
        name = (getattr(item, "metadata", None) or {}).get("filename")
        where = f" saved as {os.path.basename(str(name))}" if name else ""
        return f"[image{where}: {text.strip() or 'no description'}]"
    return text


def _output_with_displays(result: ExecResult) -> tuple[str, int, list[Any]]:
    """The cell's stream text with each display's text where it was shown; the characters
    really written (for the cut's note); the display items."""
    displays = list(getattr(result, "displays", None) or [])
    if not displays:
        return result.output, result.output_chars, []
    out: list[str] = []
    extra = 0
    for kind, piece in interleave(result.output, result.output_chars, displays):
        if kind == "text":
            out.append(piece)
            continue
        text = display_text(piece).rstrip("\n")
        if out and not out[-1].endswith("\n"):
            text = "\n" + text
        out.append(text + "\n")
        extra += len(text) + 1
    return "".join(out), max(result.output_chars, len(result.output)) + extra, displays


def format_result(result: ExecResult, *, max_chars: int = 8000, edited: bool = False,
                  echo_code: bool = True) -> str:
    """The message that tells the model what its cell did, within about ``max_chars``.

    ``echo_code=False`` (a tool call run as the model wrote it: its arguments hold the code)
    leaves the code out, so the cached history does not carry it twice.

    The parts share the budget: the code (up to a quarter), the value (a fifth), the error
    (two fifths); the output gets the rest, so a huge output never crowds out the traceback.
    Display items (``display()``, figures) go into the output where they were shown, as
    their text (an image as its description).
    """
    code = result.source
    value = result.value_repr
    error = result.error
    output, output_chars, displays = _output_with_displays(result)
    code_cut = cap_text(code, max(max_chars // 4, 200)) if echo_code or edited else ""
    value_cut = cap_text(value, max(max_chars // 5, 200)) if value is not None else None
    error_cut = cap_text(error, max(max_chars * 2 // 5, 400)) if error else None
    used = len(code_cut) + len(value_cut or "") + len(error_cut or "")
    output_cut = (
        cap_text(output, max(max_chars - used, 200), total_chars=output_chars,
                 where="" if displays else f"_out[{result.cell}]")
        if output else ""
    )

    parts = [f"llmrepl ran cell {result.cell} ({_status(result)}, {result.duration:.2f} s)."]
    if edited:
        parts.append("The user edited your code before running it. This is the code that ran:")
    elif echo_code:
        parts.append("Code that ran:")
    else:
        parts.append("The code that ran is the code of your call, unchanged.")
    if code_cut:
        parts.append(_fence(code_cut))
    if output_cut:
        if displays:
            parts.append("Output (stdout and stderr, and what the cell displayed, in order):")
        else:
            parts.append("Output (stdout and stderr, in order):")
        parts.append(_fence(output_cut, lang=""))
    elif not error:
        parts.append("It printed nothing.")
    if value_cut is not None:
        parts.append("Value of the last expression:")
        parts.append(_fence(value_cut, lang=""))
    shown = {str((getattr(d, "metadata", None) or {}).get("filename")) for d in displays}
    value_data = getattr(result, "value_data", None)
    if value_data is not None:
        shown.add(str((getattr(value_data, "metadata", None) or {}).get("filename")))
    unshown = [f for f in result.figures if f not in shown]
    if unshown:
        parts.append(f"{len(unshown)} figure(s) saved: " + ", ".join(unshown))
    if error_cut:
        parts.append("Error:" if result.error_type != "SyntaxError" else "It did not run: SyntaxError.")
        parts.append(_fence(error_cut, lang=""))
    if result.repairs:
        parts.append("llmrepl restored after the cell: " + "; ".join(result.repairs[:8]))
    return "\n".join(parts)


def _status(result: ExecResult) -> str:
    if result.timed_out:
        return "stopped by the time limit"
    if result.interrupted:
        return "interrupted by the user with Ctrl-C"
    if result.error_type == "SystemExit":
        return "ended with SystemExit"
    if result.error:
        return f"failed with {result.error_type}"
    return "succeeded"


def _fence(text: str, lang: str = "python") -> str:
    fence = "```"
    while fence in text:
        fence += "`"
    return f"{fence}{lang}\n{text.rstrip(chr(10))}\n{fence}"



def without_tool_calls(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The request for a server that takes no tools (llama.cpp without --jinja), when the
    history already holds tool calls (from before tools went off, or another model): each
    call becomes the fenced code it carried, each result a user message saying what it
    answers, so no message has a role or field such a server's template cannot render."""
    if not any(m.get("tool_calls") or m.get("role") == "tool" for m in messages):
        return messages
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.get("role") == "tool":
            head = f"{NOTE_PREFIX}Result of your run_python call:\n"
            content = m.get("content")
            if isinstance(content, list):  # figures sent as images: keep the parts
                out.append({"role": "user", "content": [{"type": "text", "text": head}, *content]})
            else:
                out.append({"role": "user", "content": head + str(content or "")})
        elif m.get("tool_calls"):
            parts = [m["content"]] if isinstance(m.get("content"), str) and m["content"] else []
            for call in m["tool_calls"]:
                fn = call.get("function") or {}
                try:
                    code = json.loads(fn.get("arguments") or "{}").get("code")
                except (ValueError, AttributeError):
                    code = None
                parts.append(_fence(code) if isinstance(code, str) else
                             f"(a {fn.get('name', 'tool')} call: {fn.get('arguments', '')})")
            out.append({"role": "assistant", "content": "\n\n".join(parts)})
        else:
            out.append(m)
    return out
