"""Completion from the live namespace: names, attributes, keyword arguments, dict keys,
DataFrame columns and file paths, for any front end.

``NamespaceCompleter.complete(code)`` returns ``Suggestion``s for the end of ``code``. Names,
attributes (``dir`` and ``inspect.getattr_static``), keys (``dict.keys`` of a real dict,
pandas' own ``columns`` descriptor of a real DataFrame) and paths are found here, without
running a property or ``__getitem__``. jedi's ``Interpreter`` (what IPython and ptpython use)
does the rest: keyword arguments, imports, attributes of expressions, several lines. It is
imported on first use, with ``allow_unsafe_interpreter_executions`` off. An object's own
``__dir__``, ``__getattr__`` or ``__iter__`` still runs and may hang: all of it runs in a
worker thread and a caller waits at most ``cap`` seconds, then gets nothing (a worker stuck
in user code is left behind; at most ``MAX_STUCK`` at once). Every text returned is
printable: keys and file names come as Python string escapes.
"""

from __future__ import annotations

import keyword
import os
import re
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from llmrepl.execution.namespace import module_dict

__all__ = ["NamespaceCompleter", "Suggestion", "MAX_STUCK"]

CAP = 2.0  # seconds a caller waits for one completion (a cold jedi first parses a library: ~0.6 s)
STUCK_AFTER = 5.0  # a worker busy this long is stuck in user code: start another beside it
MAX_STUCK = 2  # stuck workers allowed at once; past that, only what needs no user code
_MAX_RESULTS = 500
_MAX_SCAN = 20_000  # keys, columns or directory entries looked at
_MAX_CODE = 20_000  # characters of code before the cursor given to jedi
_TAIL = 400  # characters the patterns below look at (they are anchored at the cursor)

_WORD = re.compile(r"[^\W\d]\w*\Z|\Z")
# a dotted chain ending at the cursor: "df.sales.me" -> ("df.sales.", "me")
_CHAIN = re.compile(r"((?:[^\W\d]\w*\.)+)(\w*)\Z")
_AFTER_CLOSE = re.compile(r"[)\]'\"]\.(\w*)\Z")  # f(x).me, d[k].me, "text".up
_SUBSCRIPT = re.compile(r"([^\W\d]\w*)\s*\[\s*\Z")
_IMPORT = re.compile(r"(?:^|\n)[ \t]*(?:import|from)[ \t]+[^\n]*\Z")
_CALL = re.compile(r"([^\W\d]\w*)(?:\s*\.\s*[^\W\d]\w*)*\s*\(\Z")
_STRING_PREFIX = re.compile(r"(?<![\w])([rRbBuUfF]{0,2})\Z")


@dataclass(frozen=True)
class Suggestion:
    """Replace the ``start`` characters before the cursor (``start`` <= 0) with ``text``."""

    text: str
    start: int
    display: str
    meta: str = ""


@dataclass(frozen=True)
class _String:
    """The string literal the cursor is in: its prefix (``r``, ``f``...), quote, and where
    its content starts in the code."""

    prefix: str
    quote: str
    content_start: int
    literal_start: int


def escape(text: str, quote: str) -> str:
    """``text`` as it is written between ``quote``s in a (not raw) Python string: every
    character that is not printable as an escape, so no control byte reaches the buffer."""
    out = []
    for ch in text:
        if ch == "\\" or ch == quote[:1]:
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif not ch.isprintable():
            n = ord(ch)
            out.append(f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}")
        else:
            out.append(ch)
    return "".join(out)


def scan(code: str) -> _String | bool:
    """The string literal still open at the end of ``code``; else True when the end is in a
    comment, False in plain code."""
    i, n = 0, len(code)
    while i < n:
        ch = code[i]
        if ch == "#":
            j = code.find("\n", i)
            if j < 0:
                return True
            i = j
            continue
        if ch in "'\"":
            m = _STRING_PREFIX.search(code, 0, i)
            prefix = m.group(1) if m else ""
            quote = ch * 3 if code.startswith(ch * 3, i) else ch
            j = i + len(quote)
            while j < n:
                c = code[j]
                if c == "\\":
                    j += 2
                    continue
                if code.startswith(quote, j) or (c == "\n" and len(quote) == 1):
                    break
                j += 1
            if j >= n:
                return _String(prefix, quote, i + len(quote), i - len(prefix))
            i = j + (len(quote) if code[j] != "\n" else 0)
            continue
        i += 1
    return False


class _Worker:
    """One completion at a time in a daemon thread; callers wait at most their timeout."""

    def __init__(self) -> None:
        self._current: tuple[threading.Thread, float] | None = None
        self._stuck: list[threading.Thread] = []
        self._lock = threading.Lock()

    def call(self, fn: Callable[[], list[Suggestion]], timeout: float) -> list[Suggestion] | None:
        """``fn()``'s result, or None when it (or an earlier call still running) took too long."""
        deadline = time.monotonic() + timeout
        with self._lock:
            if self._current is not None:
                thread, started = self._current
                thread.join(max(0.0, deadline - time.monotonic()))
                if thread.is_alive():
                    if time.monotonic() - started < STUCK_AFTER:
                        return None  # still busy with an earlier (slow, cold) completion
                    self._stuck.append(thread)
                self._current = None
            self._stuck = [t for t in self._stuck if t.is_alive()]
            if len(self._stuck) >= MAX_STUCK:
                return None
            box: list[list[Suggestion]] = []

            def work() -> None:
                try:
                    box.append(fn())
                except BaseException:  # hostile user code may raise anything; never our problem
                    box.append([])

            thread = threading.Thread(target=work, name="llmrepl-complete", daemon=True)
            self._current = (thread, time.monotonic())
            thread.start()
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                return None
            self._current = None
            return box[0] if box else []


_jedi: Any = None
_jedi_lock = threading.Lock()


def load_jedi() -> Any:
    """jedi, imported on first use and set never to run descriptors or ``__getitem__``;
    None when it is not installed."""
    global _jedi
    with _jedi_lock:
        if _jedi is None:
            try:
                import jedi
            except ImportError:
                _jedi = False
            else:
                jedi.settings.allow_unsafe_interpreter_executions = False
                _jedi = jedi
    return _jedi or None


class NamespaceCompleter:
    """Suggestions for the end of some code, from ``namespace()`` (the live dict, or None)."""

    def __init__(self, namespace: Callable[[], dict[str, Any] | None], *, cap: float = CAP) -> None:
        self.namespace = namespace
        self.cap = cap
        self._worker = _Worker()

    def complete(self, code: str, *, after: str = "", explicit: bool = True) -> list[Suggestion]:
        """Suggestions for the end of ``code`` (``after``: the text after the cursor).
        ``explicit``: Tab was pressed; otherwise (as you type) only where code is clear:
        attributes, keys, paths, imports, arguments of a call, and the namespace's own names."""
        code = code[-_MAX_CODE:]
        state = scan(code)
        if state is True:
            return []  # in a comment
        ns = self.namespace()
        result = self._worker.call(lambda: list(self._suggest(code, state, after, explicit, ns)), self.cap)
        if result is None:  # jedi or user code too slow: the names that need neither
            tail = code[-_TAIL:]
            plain = state is False and not _CHAIN.search(tail) and not _AFTER_CLOSE.search(tail)
            return self._names(_word(code), ns, explicit) if plain else []
        return result[:_MAX_RESULTS]

    def _suggest(self, code: str, state: _String | bool, after: str, explicit: bool,
                 ns: dict[str, Any] | None) -> Iterator[Suggestion]:
        if isinstance(state, _String):
            typed = code[state.content_start:]
            head = code[max(0, state.literal_start - _TAIL): state.literal_start]
            m = _SUBSCRIPT.search(head)
            if m is not None:
                yield from _keys(_lookup(ns, m.group(1)), typed, state, after)
            elif explicit or typed:
                yield from _paths(typed, state)
            return
        tail = code[-_TAIL:]
        m = _SUBSCRIPT.search(tail)
        if m is not None:
            keys = list(_keys(_lookup(ns, m.group(1)), "", None, after))
            if keys or not explicit:
                yield from keys
                return
        word = _word(code)
        chain = _CHAIN.search(tail)
        if chain is not None:  # root.attr.par: the object itself, when reached without running code
            obj = _resolve(ns, chain.group(1))
            if obj is not _MISSING:
                yield from _attributes(obj, word)
                return
        attribute = chain is not None or _AFTER_CLOSE.search(tail) is not None
        # jedi where the namespace's names cannot answer: the attribute of an expression, an
        # import, the arguments of a call (keyword names), several lines of code
        head = code[: len(code) - len(word)]
        deep = attribute or "\n" in code.strip() or _IMPORT.search(tail) is not None or _callee(head) is not None
        if deep and (explicit or self._clearly_code(code, word, ns)):
            found = list(self._jedi(code, word, ns))
            if found or attribute or not explicit:
                yield from found
                return
        if not attribute and (explicit or _starts_an_expression(head)):
            yield from self._names(word, ns, explicit)

    @staticmethod
    def _clearly_code(code: str, word: str, ns: dict[str, Any] | None) -> bool:
        """As you type, jedi is asked only where the text is plainly code."""
        tail = code[-_TAIL:]
        chain = _CHAIN.search(tail)
        if chain is not None:
            return _defined(ns, chain.group(1).split(".")[0])
        if _AFTER_CLOSE.search(tail) or _IMPORT.search(tail):
            return True
        # inside the parentheses of a call of a defined name: arguments and keyword names
        callee = _callee(code[: len(code) - len(word)])
        return bool(word) and callee is not None and _defined(ns, callee)

    def _jedi(self, code: str, word: str, ns: dict[str, Any] | None) -> Iterator[Suggestion]:
        jedi = load_jedi()
        if jedi is None:
            return
        namespace = dict(ns) if ns is not None else {}
        hide_private = not word.startswith("_")
        for c in jedi.Interpreter(code, [namespace]).complete():
            name = c.name  # "sep=" for a keyword argument
            if not name.removesuffix("=").isidentifier() or (hide_private and name.startswith("_")):
                continue
            text = c.name_with_symbols
            yield Suggestion(text, -len(word), text, c.type)

    @staticmethod
    def _names(word: str, ns: dict[str, Any] | None, explicit: bool) -> list[Suggestion]:
        """The namespace's own names (and, on Tab, builtins and keywords): no user code."""
        if ns is None or (not word and not explicit):
            return []
        found = [n for n in list(ns) if isinstance(n, str) and n.startswith(word) and not n.startswith("_")]
        if explicit:
            found += [n for n in (*keyword.kwlist, *_builtin_names()) if n.startswith(word) and n not in found]
        elif found == [word]:
            return []  # typed in full: no menu
        return [Suggestion(n, -len(word), n, "name") for n in found if n.isidentifier()]


def _word(code: str) -> str:
    """The identifier being typed at the end of ``code`` ("" after a dot or a space)."""
    m = _WORD.search(code[-_TAIL:])
    return m.group() if m is not None else ""


def _callee(head: str) -> str | None:
    """The root name of the call whose parentheses are still open at the end of ``head``
    (on its line), if any: ``sales.groupby(by=`` -> ``sales``."""
    depth = 0
    for i in range(len(head) - 1, max(-1, len(head) - 1 - _TAIL), -1):
        ch = head[i]
        if ch in ")]}":
            depth += 1
        elif ch in "([{":
            if depth == 0:
                call = _CALL.search(head[max(0, i + 1 - _TAIL): i + 1])
                return call.group(1) if ch == "(" and call is not None else None
            depth -= 1
        elif ch == "\n" and depth == 0:
            return None
    return None


_MISSING = object()


def _resolve(ns: dict[str, Any] | None, chain: str) -> Any:
    """The object ``a.b.`` names, found without running code: a name of the namespace (or a
    builtin), then attributes of modules only (read from their ``__dict__``); else _MISSING."""
    import builtins

    parts = [p.strip() for p in chain.split(".") if p.strip()]
    if not parts:
        return _MISSING
    scope = ns if ns is not None else {}
    obj = scope[parts[0]] if parts[0] in scope else vars(builtins).get(parts[0], _MISSING)
    for part in parts[1:]:
        if obj is _MISSING or not issubclass(type(obj), types.ModuleType):
            return _MISSING
        obj = module_dict(obj).get(part, _MISSING)
    return obj


def _attributes(obj: Any, word: str) -> Iterator[Suggestion]:
    """``dir(obj)`` (its ``__dir__`` may be user code: this runs in the worker, capped), the
    names that start with ``word``; private ones only once ``_`` is typed."""
    import inspect

    names = dir(obj)
    hide_private = not word.startswith("_")
    count = 0
    for name in names:
        if not isinstance(name, str) or not name.startswith(word) or not name.isidentifier():
            continue
        if hide_private and name.startswith("_"):
            continue
        static = inspect.getattr_static(obj, name, None)  # never runs a descriptor
        kind = type(static)
        meta = ("module" if issubclass(kind, types.ModuleType)
                else "class" if issubclass(kind, type)
                else "property" if issubclass(kind, property)
                else "function" if callable(static) or issubclass(kind, (staticmethod, classmethod))
                else "attribute")
        yield Suggestion(name, -len(word), name, meta)
        count += 1
        if count >= _MAX_RESULTS:
            return


def _starts_an_expression(head: str) -> bool:
    """Whether a name typed after ``head`` begins an expression: at the start of a line, or
    after an operator, a bracket, a comma or a keyword, not after a word of prose."""
    line = head[-_TAIL:].rpartition("\n")[2].rstrip()
    if not line:
        return True
    if line[-1] in "=([{,:+-*/%<>&|^~@;":
        return True
    last = line.split()[-1]
    return keyword.iskeyword(last) and last not in ("True", "False", "None")


def _builtin_names() -> list[str]:
    import builtins

    return [n for n in vars(builtins) if not n.startswith("_")]


def _defined(ns: dict[str, Any] | None, name: str) -> bool:
    import builtins

    return (ns is not None and name in ns) or name in vars(builtins)


def _lookup(ns: dict[str, Any] | None, name: str) -> Any:
    return ns.get(name) if ns is not None and name.isidentifier() else None


def _key_labels(obj: Any) -> list[Any]:
    """Keys of a real dict or columns of a real pandas DataFrame, read without user code."""
    cls = type(obj)
    if issubclass(cls, dict):
        return list(_first(dict.keys(obj)))
    pandas = sys.modules.get("pandas")
    frame = getattr(pandas, "DataFrame", None) if pandas is not None else None
    if isinstance(frame, type) and issubclass(cls, frame):
        import inspect

        columns = inspect.getattr_static(frame, "columns").__get__(obj, frame)  # pandas' own
        return list(_first(iter(columns)))
    return []


def _first(items: Any) -> Iterator[Any]:
    for i, item in enumerate(items):
        if i >= _MAX_SCAN:
            return
        yield item


def _keys(obj: Any, typed: str, string: _String | None, after: str) -> Iterator[Suggestion]:
    """String (and, outside quotes, integer) keys that start with what was typed."""
    if obj is None or (string is not None and (string.prefix or "\\" in typed)):
        return
    quote = string.quote if string is not None else '"'
    if string is not None:
        close = "" if after.startswith(quote) else quote + ("" if after.lstrip().startswith("]") else "]")
    else:
        close = "" if after.lstrip().startswith("]") else "]"
    for key in _key_labels(obj):
        if isinstance(key, str) and key.startswith(typed):
            body = escape(key, quote)
            if string is None:
                yield Suggestion(quote + body + quote + close, 0, quote + body + quote, "key")
            else:
                yield Suggestion(body + close, -len(typed), body, "key")
        elif string is None and type(key) is int:
            yield Suggestion(f"{key}{close}", 0, str(key), "key")


def _paths(typed: str, string: _String) -> Iterator[Suggestion]:
    """Files and folders whose path starts with ``typed`` (folders end with ``/``)."""
    if "b" in string.prefix.lower() or ("\\" in typed and "r" not in string.prefix.lower()):
        return
    raw = "r" in string.prefix.lower()
    folder, _, stem = typed.rpartition("/")
    where = os.path.expanduser(folder + "/" if folder else "") or "."
    if typed.startswith("/") and not folder:
        where = "/"
    try:
        with os.scandir(where) as entries:
            names = []
            for i, entry in enumerate(entries):
                if i >= _MAX_SCAN:
                    break
                if entry.name.startswith(stem) and (stem.startswith(".") or not entry.name.startswith(".")):
                    try:
                        is_dir = entry.is_dir()
                    except OSError:
                        is_dir = False
                    names.append((entry.name, is_dir))
    except OSError:
        return
    for name, is_dir in sorted(names):
        body = escape(name, string.quote)
        if raw and body != name:
            continue  # a raw string cannot hold it
        if "f" in string.prefix.lower():
            body = body.replace("{", "{{").replace("}", "}}")
        body += "/" if is_dir else ""
        yield Suggestion(body, -len(stem), body, "folder" if is_dir else "file")
