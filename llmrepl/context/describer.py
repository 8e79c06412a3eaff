"""One value -> one line: type, size, and a short value where that is safe to read.

The digest's per-value half (``digest`` decides which names, in what order, within a
budget). It reads types and sizes without running user code: no ``__len__``,
``__getattr__`` or properties of unknown classes (type facts come through the C
descriptors, via ``execution.namespace``). The only user code it may call is ``repr``,
capped in length and in time. pandas and numpy are never imported: their objects are
described only when the module is already in ``sys.modules``. Where a value is cut short
(a repr, a long string, a column name), the session's redactor runs first, so the cut never
leaves a piece of the API key behind.
"""

from __future__ import annotations

import collections
import itertools
import re
import sys
import time
import types
from collections.abc import Callable
from typing import Any

from llmrepl.execution.kernel_values import KernelValue
from llmrepl.execution.namespace import (
    bounded_repr,
    module_dict,
    repr_can_be_bounded,
    type_bases,
    type_dict,
    type_module,
    type_mro,
    type_name,
    type_qualname,
)

__all__ = ["CONTAINERS", "Describer", "library_kind"]

_MAX_COLUMNS = 12  # DataFrame columns listed before "+k more"
_MAX_KEYS = 5  # dict keys listed
_SAMPLE = 5  # items looked at to tell a container's element type
_MISSING_CELLS = 5_000_000  # above this, missing values are not counted
_TINY_ARRAY = 8  # arrays with at most this many elements show their values
_LONG_INT_BITS = 256
_SIGNATURE_CHARS = 160
_PREVIEW_CHARS = 40  # shown of a long string
_REDACT_REACH = 200  # redacted of a long string before its preview is cut from it
_REPR_TOTAL_SECONDS = 0.5  # all guarded reprs of one render together; then types only
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
CONTAINERS: tuple[Any, ...] = (list, tuple, dict, set, frozenset, collections.deque)
_FUNCTIONS = (types.FunctionType, types.BuiltinFunctionType, types.MethodType)


def _lookup(t: type, name: str) -> Any:
    """``name`` as found on the class, read from the MRO's dicts (no descriptor runs)."""
    for klass in type_mro(t):
        d = type_dict(klass)
        if name in d:
            return d[name]
    return None


def _type_label(t: type) -> str:
    """``DataFrame`` -> ``pandas.DataFrame``: the shortest loaded module path that exports it."""
    name, module = type_qualname(t), type_module(t)
    if module in ("builtins", "__main__", ""):
        return name
    parts, short = module.split("."), type_name(t)
    for i in range(1, len(parts)):
        prefix = ".".join(parts[:i])
        mod = sys.modules.get(prefix)
        if issubclass(type(mod), types.ModuleType) and module_dict(mod).get(short) is t:
            return f"{prefix}.{short}"
    return f"{module}.{name}"


def _library_class(module_name: str, class_name: str) -> type | None:
    """A class of an already-imported library, or None (never imports, never runs a module __getattr__)."""
    mod = sys.modules.get(module_name)
    if not issubclass(type(mod), types.ModuleType):
        return None
    cls = module_dict(mod).get(class_name)
    return cls if isinstance(cls, type) else None


def library_kind(t: type) -> str | None:
    """'frame' / 'series' / 'index' / 'array' / 'npscalar' for pandas and numpy types, else None.

    Subclasses count when a library defines them (geopandas, numpy.ma); a class the user
    made in a cell (module ``__main__``) does not: its overrides are user code.
    """
    if type_module(t) == "__main__":
        return None
    for module, cls_name, kind in (
        ("pandas", "DataFrame", "frame"),
        ("pandas", "Series", "series"),
        ("pandas", "Index", "index"),
        ("numpy", "ndarray", "array"),
        ("numpy", "generic", "npscalar"),
    ):
        cls = _library_class(module, cls_name)
        if cls is not None and issubclass(t, cls):
            return kind
    return None


def _plain(value: Any, limit: int) -> str | None:
    """repr of a builtin value whose repr runs no user code and fits ``limit``; else None."""
    t = type(value)
    if value is None or t is bool or t is float or t is complex or t is range:
        text = repr(value)
    elif t is int:
        if int.bit_length(value) > _LONG_INT_BITS:
            return None
        text = repr(value)
    elif t is str or t is bytes:
        if len(value) > limit:
            return None
        text = repr(value)
    elif t is tuple and len(value) <= _SAMPLE:
        parts = [p for p in (_plain(x, limit) for x in value) if p is not None]
        if len(parts) != len(value):
            return None
        text = f"({parts[0]},)" if len(parts) == 1 else f"({', '.join(parts)})"
    else:
        return None
    return text if len(text) <= limit else None


def _same(text: str) -> str:
    return text


def _label(value: Any, limit: int = 40, redact: Callable[[str], str] = _same) -> str:
    """A column / key / name label: strings as they are (redacted, then cut), other plain
    values by repr, else the type."""
    if type(value) is str:
        value = redact(str.__getitem__(value, slice(0, limit + _REDACT_REACH)))
        return value if len(value) <= limit else value[: limit - 1] + "…"
    text = _plain(value, limit)
    return text if text is not None else f"<{_type_label(type(value))}>"


def _quoted(value: Any, limit: int = 30) -> str:
    """repr of a plain value, else ``<type>``: for keys, defaults and names."""
    text = _plain(value, limit)
    return text if text is not None else f"<{_type_label(type(value))}>"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(limit - 1, 1)] + "…"


def _count(n: int, word: str) -> str:
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s"


class _Shown:
    """Stands in for a default or annotation in a signature, so str(signature) runs no user repr."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


class Describer:
    """One value -> one line. Holds the caps, and the repr time spent so far in one render."""

    def __init__(self, max_repr_chars: int, time_limit: float, redact: Callable[[str], str] | None = None) -> None:
        self.max_chars = max(max_repr_chars, 8)
        self.time_limit = time_limit
        self.repr_seconds = 0.0
        self.redact = redact or _same  # applied before any cut (the digest redacts whole lines too)

    # -- the guarded repr ---------------------------------------------------------------

    def guarded_repr(self, value: Any) -> str | None:
        """repr(value) under a length and a time cap; None when it cannot be bounded (off the
        main thread) or this render's repr time is spent."""
        if self.time_limit <= 0 or self.repr_seconds >= _REPR_TOTAL_SECONDS or not repr_can_be_bounded():
            return None
        start = time.monotonic()
        try:
            text = bounded_repr(value, self.time_limit)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # SystemExit too: a repr must not end anything
            text = f"<repr failed: {type_name(type(exc))}>"
        finally:
            self.repr_seconds += time.monotonic() - start
        if text is None:
            return "<repr too slow>"
        # str.__getitem__ returns an exact str even for a str subclass: no user methods from here on.
        text = self.redact(str.__getitem__(text, slice(0, self.max_chars * 4)))  # before the line
        return _cut(" ".join(_ADDRESS.sub("", text).split()), self.max_chars)  # breaks go, before the cut

    # -- one value ----------------------------------------------------------------------

    def describe(self, value: Any) -> str:
        t = type(value)
        try:
            return self._describe(value, t)
        except Exception as exc:
            return f"{_type_label(t)} <could not describe: {type_name(type(exc))}>"

    def _describe(self, value: Any, t: type) -> str:
        if t is KernelValue:  # a value in a Jupyter kernel, described there (--kernel)
            return self.redact(value.description)
        plain = _plain(value, self.max_chars)
        if plain is not None:
            return plain
        if t is str:
            head = self.redact(value[: _PREVIEW_CHARS + _REDACT_REACH])[:_PREVIEW_CHARS]
            return f"str, {len(value):,} chars: {head!r}…"
        if t is int:
            return f"int, about {int(int.bit_length(value) * 0.30103) + 1:,} digits"
        if t is bytes or t is bytearray:
            return f"{t.__name__}, {_count(len(value), 'byte')}"
        if issubclass(t, types.ModuleType):
            return f"module {self.module_name(value)}"
        kind = library_kind(t)
        if kind is not None:
            return getattr(self, f"_{kind}")(value, t)
        if issubclass(t, _FUNCTIONS):
            return self._function(value, t)
        if issubclass(t, type):
            bases = [_type_label(b) for b in type_bases(value) if b is not object]
            return f"class {_type_label(value)}" + (f"({', '.join(bases)})" if bases else "")
        if issubclass(t, tuple) and type(_lookup(t, "_fields")) is tuple:
            return self._namedtuple(value, t)
        for base in CONTAINERS:
            if issubclass(t, base):
                return self._container(value, t, base)
        return self._other(value, t)

    @staticmethod
    def module_name(module: types.ModuleType) -> str:
        name = module_dict(module).get("__name__")
        return name if type(name) is str else "?"

    def _other(self, value: Any, t: type) -> str:
        label = _type_label(t)
        if _lookup(t, "__repr__") is object.__repr__:  # would only say "<Foo object>"
            return label
        text = self.guarded_repr(value)
        return label if text is None else f"{label} · {text}"

    def _container(self, value: Any, t: type, base: Any) -> str:
        n = base.__len__(value)
        name = _type_label(t)
        if n == 0:
            return f"{name}, empty"
        if base is dict:
            items = list(itertools.islice(dict.items(value), _MAX_KEYS + 1))
            if len(items) <= _MAX_KEYS:
                pairs = [(_plain(k, 30), _plain(v, 30)) for k, v in items]
                if all(k is not None and v is not None for k, v in pairs):
                    text = "{" + ", ".join(f"{k}: {v}" for k, v in pairs) + "}"
                    if len(text) <= self.max_chars:
                        return text if t is dict else f"{name} = {text}"
            keys = ", ".join(_quoted(k) for k, _ in items[:_MAX_KEYS])
            more = f", … +{n - _MAX_KEYS:,} more" if n > _MAX_KEYS else ""
            line = f"{name}, {_count(n, 'key')}: {keys}{more}"
            vtype = self._common_type([v for _, v in items])
            return line + (f" · values: {vtype}" if vtype else "")
        if base is list or base is tuple:
            sample = base.__getitem__(value, slice(0, _SAMPLE + 1))
        else:
            sample = list(itertools.islice(base.__iter__(value), _SAMPLE + 1))
        if n <= _SAMPLE:
            shown = [p for p in (_plain(x, 30) for x in sample) if p is not None]
            if len(shown) == len(sample):
                text = ", ".join(shown)
                text = {list: f"[{text}]", tuple: f"({text}{',' if n == 1 else ''})"}.get(base, f"{{{text}}}")
                if base is frozenset:
                    text = f"frozenset({text})"
                if len(text) <= self.max_chars and base is not collections.deque:
                    return text if t is base else f"{name} = {text}"
        line = f"{name}, {_count(n, 'item')}"
        maxlen = collections.deque.maxlen.__get__(value) if base is collections.deque else None
        if type(maxlen) is int:
            line += f" (maxlen {maxlen:,})"
        etype = self._common_type(list(sample[:_SAMPLE]))
        if etype:
            line += f" of {etype}"
            if type(sample[0]) is dict:
                inner = list(itertools.islice(dict.__iter__(sample[0]), _MAX_KEYS))
                more = ", …" if len(sample[0]) > _MAX_KEYS else ""
                line += f" (keys: {', '.join(_quoted(k) for k in inner)}{more})"
        return line

    @staticmethod
    def _common_type(sample: list[Any]) -> str | None:
        if not sample:
            return None
        first = type(sample[0])
        return _type_label(first) if all(type(x) is first for x in sample) else None

    def _namedtuple(self, value: Any, t: type) -> str:
        fields = _lookup(t, "_fields")
        items = tuple.__getitem__(value, slice(0, _SAMPLE + 1))
        parts = [f"{_label(f, 20)}={_quoted(v)}" for f, v in zip(fields, items, strict=False)]
        more = ", …" if tuple.__len__(value) > _SAMPLE else ""
        return _cut(f"{_type_label(t)}({', '.join(parts)}{more})", self.max_chars * 2)

    # -- functions ----------------------------------------------------------------------

    def _function(self, func: Any, t: type) -> str:
        if t is types.MethodType:
            owner = _type_label(type(func.__self__))
            inner = func.__func__
            if type(inner) is not types.FunctionType:
                return f"method of {owner}"
            return f"method {owner}.{inner.__name__}{self._signature(func)}"
        name = func.__name__ if type(func.__name__) is str else "?"
        if t is types.BuiltinFunctionType:
            return f"builtin {name}{self._signature(func)}"
        target = func
        for _ in range(10):  # functools.wraps: show the wrapped signature, functions only
            wrapped = func.__dict__.get("__wrapped__")
            if type(wrapped) is not types.FunctionType:
                break
            target = func = wrapped
        kind = "async function" if target.__code__.co_flags & 0x80 else "function"
        if name == "<lambda>":
            return f"lambda {self._signature(target)}"
        return f"{kind} {name}{self._signature(target)}"

    def _signature(self, func: Any) -> str:
        import inspect  # stdlib; only needed once the namespace holds a function

        try:
            sig = inspect.signature(func, follow_wrapped=False)
            params = [
                p.replace(
                    default=p.default if p.default is p.empty else _Shown(_quoted(p.default)),
                    annotation=p.annotation if p.annotation is p.empty else _Shown(self._annotation(p.annotation)),
                )
                for p in sig.parameters.values()
            ]
            ret = sig.return_annotation
            sig = sig.replace(
                parameters=params,
                return_annotation=ret if ret is sig.empty else _Shown(self._annotation(ret)),
            )
            return _cut(str(sig), _SIGNATURE_CHARS)
        except Exception:
            return "(...)"

    def _annotation(self, ann: Any) -> str:
        if type(ann) is str:
            return _cut(ann, 40)
        if issubclass(type(ann), type):
            return _type_label(ann)
        text = self.guarded_repr(ann)
        return _cut(text.replace("typing.", ""), 40) if text else f"<{_type_label(type(ann))}>"

    # -- numpy and pandas (trusted library code; only when already imported) -------------

    @staticmethod
    def _shape(shape: tuple[int, ...]) -> str:
        return "×".join(f"{d:,}" for d in shape) if shape else "0-d"

    def _array(self, value: Any, t: type) -> str:
        line = f"{_type_label(t)} {self._shape(tuple(value.shape))} {value.dtype}"
        if value.size <= _TINY_ARRAY and value.dtype.kind in "biufcmMUS":
            text = _cut(self.redact(repr(value.tolist())), self.max_chars)
            line += f" = {text}"
        return line

    def _npscalar(self, value: Any, t: type) -> str:
        if value.dtype.kind in "biufc":
            text = _plain(value.item(), self.max_chars)
            if text is not None:
                return f"{_type_label(t)} = {text}"
        return f"{_type_label(t)} = {_cut(self.redact(str(value)), self.max_chars)}"

    def _frame(self, value: Any, t: type) -> str:
        rows, ncols = (int(d) for d in value.shape)
        line = f"{_type_label(t)} {rows:,}×{ncols:,}"
        if ncols == 0:
            return line + " (no columns)"
        shown = min(ncols, _MAX_COLUMNS)
        head = value.iloc[:, :shown]
        labels = [_label(c, redact=self.redact) for c in value.columns[:shown].tolist()]
        dtypes = [str(d) for d in head.dtypes.tolist()]
        counted = rows * shown <= _MISSING_CELLS
        missing = [int(m) for m in head.isna().sum().tolist()] if counted else [0] * shown
        cols = [f"{c} ({d}, {m:,} missing)" if m else f"{c} ({d})" for c, d, m in zip(labels, dtypes, missing, strict=True)]
        line += " · columns: " + ", ".join(cols) + (f", ... +{ncols - shown:,} more" if ncols > shown else "")
        pd_range = _library_class("pandas", "RangeIndex")
        index = value.index
        if pd_range is None or type(index) is not pd_range:
            line += f" · index: {self._index_label(index)}"
        if not counted:
            line += f" · missing values not counted ({rows * shown:,} cells)"
        return line

    def _index_label(self, index: Any) -> str:
        names = [n for n in index.names if n is not None]
        if len(index.names) > 1:
            return f"{type_name(type(index))} ({', '.join(_label(n, 30, self.redact) for n in index.names)})"
        label = _label(names[0], 30, self.redact) if names else type_name(type(index))
        return f"{label} ({index.dtype})"

    def _series(self, value: Any, t: type) -> str:
        n = len(value)
        line = f"{_type_label(t)} {n:,} · {value.dtype}"
        if value.name is not None:
            line += f" · name {_quoted(value.name)}"
        if n <= _MISSING_CELLS:
            missing = int(value.isna().sum())
            line += f" · {missing:,} missing" if missing else ""
        else:
            line += " · missing values not counted"
        return line

    def _index(self, value: Any, t: type) -> str:
        line = f"{_type_label(t)} {len(value):,} · {value.dtype}"
        names = [_quoted(n) for n in value.names if n is not None]
        return line + (f" · name {', '.join(names)}" if names else "")

