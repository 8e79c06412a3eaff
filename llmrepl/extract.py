"""Find the Python in a model's answer: fenced blocks (CommonMark rules) and tool calls.

Python is what stands in ``python``/``py``/... fences, or in untagged fences that parse as
Python; several such blocks form one cell, in order. Other languages are reported, never
run. A fence the answer never closed (the answer was cut) is kept out of the cell.
"""

from __future__ import annotations

import ast
import functools
import json
import re
from dataclasses import dataclass, field

__all__ = [
    "Block",
    "Extraction",
    "extract_code",
    "code_from_tool_call",
    "PYTHON_TAGS",
    "UNTAGGED_PARSE_LIMIT",
]

PYTHON_TAGS = frozenset({"python", "py", "python3", "py3", "ipython", "ipython3", "pycon"})
UNTAGGED_PARSE_LIMIT = 256_000  # characters; larger untagged blocks are not parsed
# Fences that hold output or prose rather than a program in another language.
_TEXT_TAGS = frozenset({"text", "txt", "plaintext", "plain", "output", "out", "log", "result"})

# A fence line: up to 3 spaces, 3+ backticks or tildes, then the info string (or nothing).
_FENCE_LINE = re.compile(r"^( {0,3})(`{3,}|~{3,})([^\n]*)$", re.M)
_LANG = re.compile(r"[A-Za-z0-9_+#-]*")
_PROMPT = re.compile(r"(>>>|\.\.\.)( |$)|In \[\d*\]: ?| +\.\.\.: ?")


@dataclass
class Block:
    """One fenced block."""

    lang: str  # first word of the info string, lowercased; "" when untagged
    code: str  # contents, "\n" line endings, trailing newline stripped
    terminated: bool  # closing fence found
    is_python: bool  # will run: lang in python tags, or untagged and it parses


@dataclass
class Extraction:
    """Every block of an answer and the cell they make."""

    blocks: list[Block] = field(default_factory=list)
    code: str | None = None  # terminated python blocks joined by "\n\n"; None if none
    incomplete: bool = False  # an unterminated block (the answer was cut); not in ``code``
    other_languages: list[str] = field(default_factory=list)  # e.g. ["bash"], shown, never run


@functools.lru_cache(maxsize=256)
def _language(info: str) -> str:
    """``python title="x.py"`` -> python, ``{.python .numberLines}`` -> python."""
    words = info.strip().lstrip("{").split(None, 1)
    if not words:
        return ""
    match = _LANG.match(words[0].lstrip("{."))
    return match.group().lower() if match else ""


def _parses(code: str) -> bool:
    """True for untagged code worth running: it parses and is not a bare literal (output).

    Blocks over ``UNTAGGED_PARSE_LIMIT`` characters are not guessed at (parsing megabytes
    takes seconds); the model tags real code.
    """
    if not code.strip() or len(code) > UNTAGGED_PARSE_LIMIT:
        return False
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, UnicodeError, MemoryError, RecursionError):
        return False
    # "42" or "[1, 2, 3]" in an untagged fence is shown output, not a program
    return not all(
        isinstance(node, ast.Expr) and _is_literal(node.value) for node in tree.body
    )


def _is_literal(node: ast.expr) -> bool:
    try:
        ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return True


def _strip_prompts(code: str) -> str:
    """Turn a console transcript (``>>> x`` / ``In [1]: x``) into code; output lines go."""
    head = code.lstrip()
    if not head.startswith((">>>", "In [")):
        return code
    lines = code.split("\n")
    first = next((line for line in lines if line.strip()), "")
    if not re.match(r">>>( |$)|In \[\d*\]: ?", first):
        return code
    kept = []
    for line in lines:
        match = _PROMPT.match(line)
        if match:
            kept.append(line[match.end():])
        elif not line.strip():
            kept.append("")
    return "\n".join(kept).strip("\n")


def extract_code(text: str) -> Extraction:
    """Split ``text`` into fenced blocks and build the runnable cell from the Python ones."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    result = Extraction()
    # Only fence-like lines are visited in Python; everything between is sliced out whole.
    opening: re.Match[str] | None = None
    for match in _FENCE_LINE.finditer(text):
        fence, rest = match[2], match[3]
        if opening is None:
            if fence[0] == "`" and "`" in rest:
                continue  # ```word``` on one line is inline code, not a fence
            opening = match
        elif (
            fence[0] == opening[2][0]
            and len(fence) >= len(opening[2])
            and not rest.strip(" \t")
        ):
            body = text[opening.end() + 1:match.start()]
            result.blocks.append(_block(opening, body[:-1] if body else body, True))
            opening = None
    if opening is not None:
        body = text[opening.end() + 1:]
        result.blocks.append(_block(opening, body[:-1] if body.endswith("\n") else body, False))

    cells = [b.code for b in result.blocks if b.is_python and b.terminated and b.code.strip()]
    result.code = "\n\n".join(cells) if cells else None
    result.incomplete = opening is not None
    for block in result.blocks:
        lang = block.lang
        if not block.is_python and lang and lang not in _TEXT_TAGS:
            if lang not in result.other_languages:
                result.other_languages.append(lang)
    return result


def _dedent(body: str, indent: int) -> str:
    """Content lines lose as many leading spaces (up to) as the opening fence had."""
    lines = body.split("\n")
    return "\n".join(line[min(indent, len(line) - len(line.lstrip(" "))):] for line in lines)


def _block(opening: re.Match[str], code: str, terminated: bool) -> Block:
    if opening[1]:
        code = _dedent(code, len(opening[1]))
    lang = _language(opening[3])
    if lang in PYTHON_TAGS:
        return Block(lang, _strip_prompts(code), terminated, True)
    if lang == "":
        stripped = _strip_prompts(code)
        if _parses(stripped):
            return Block(lang, stripped, terminated, True)
    return Block(lang, code, terminated, False)


def _describe(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
             int: "a number", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def code_from_tool_call(name: str, arguments: str) -> str:
    """The ``code`` argument of a ``run_python`` call; ValueError saying what was wrong."""
    if (name or "").strip() != "run_python":
        raise ValueError(f"the model called an unknown tool {name!r}; only run_python exists")
    raw = arguments or ""
    if not raw.strip():
        raise ValueError('run_python arguments are empty (expected {"code": "..."})')
    try:
        args = json.loads(raw, strict=False)
        if isinstance(args, str) and args.lstrip().startswith("{"):
            args = json.loads(args, strict=False)  # some servers encode the object twice
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"run_python arguments are not valid JSON ({exc})") from None
    if not isinstance(args, dict):
        raise ValueError(
            "run_python arguments must be a JSON object with a string 'code' field, "
            f"got {_describe(args)}"
        )
    code = args.get("code")
    if not isinstance(code, str):
        detail = f"got keys {sorted(args)}" if "code" not in args else f"'code' is {_describe(code)}"
        raise ValueError(f"run_python arguments lack a string 'code' field ({detail})")
    if not code.strip():
        raise ValueError("run_python was called with empty code")
    return code.replace("\r\n", "\n")
