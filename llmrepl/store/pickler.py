"""How one namespace value becomes a snapshot blob, and comes back bound to a namespace.

Values are pickled with cloudpickle, taught two things: a function defined in the namespace
is pickled by value but without its globals, and comes back bound to the namespace being
restored into (:func:`loading_into`), so it keeps seeing live variables; an open file is
refused rather than read into a copy. :class:`BlobWriter` hashes and counts the bytes as
they are written and stops at the size limit. cloudpickle is imported on first use.

Pickles name ``_make_function``, ``_set_function_state`` and ``_target_namespace`` by this
module's path: renaming or moving them makes functions in existing snapshots fail to load.
"""

from __future__ import annotations

import builtins
import contextlib
import contextvars
import hashlib
import io
import sys
import types
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["BlobWriter", "DiskError", "TooLarge", "dump", "estimate_size", "is_immutable", "loading_into"]

_OPEN_FILE_TYPES = (io.FileIO, io.BufferedReader, io.BufferedWriter, io.BufferedRandom,
                    io.BufferedRWPair, io.TextIOWrapper)
_IMMUTABLE_ATOMS = (int, float, complex, str, bytes, bool, type(None), range)

# The namespace a restore is loading into; cell functions are rebuilt with it as globals.
_target: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "llmrepl_snapshot_target", default=None)


class TooLarge(Exception):
    """The pickle grew past the writer's size limit."""


class DiskError(Exception):
    """Writing the blob failed (disk full, permissions); the message is the OS's."""


class BlobWriter:
    """The pickler's file: hashes and counts as it writes; stops at the size limit."""

    def __init__(self, f: io.BufferedWriter, limit: int) -> None:
        self._f, self._limit = f, limit
        self.size = 0
        self.hash = hashlib.sha256()

    def write(self, data: Any) -> int:
        self.size += memoryview(data).nbytes
        if self.size > self._limit:
            raise TooLarge
        self.hash.update(data)
        try:
            return self._f.write(data)
        except OSError as e:
            raise DiskError(e.strerror or str(e)) from e


def dump(value: Any, namespace: Mapping[str, Any], file: BlobWriter) -> None:
    """Pickle ``value`` into ``file``; functions whose globals are ``namespace`` go without them."""
    _pickler_class()(file, namespace).dump(value)


@contextlib.contextmanager
def loading_into(namespace: dict[str, Any]) -> Iterator[None]:
    """While active, unpickled cell functions get ``namespace`` as their globals."""
    token = _target.set(namespace)
    try:
        yield
    finally:
        _target.reset(token)


# -- cell functions ---------------------------------------------------------------------


class _NamespaceRef:
    """Stands for "the namespace being restored into" inside a pickle."""

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return _target_namespace, ()


_NS_REF = _NamespaceRef()


def _target_namespace() -> dict[str, Any]:
    ns = _target.get()
    if ns is None:  # loaded outside restore(): give the functions a namespace of their own
        ns = {"__name__": "__main__", "__builtins__": builtins}
    return ns


def _make_function(code: types.CodeType, globals_: dict[str, Any], name: str,
                   ncells: int) -> types.FunctionType:
    closure = tuple(types.CellType() for _ in range(ncells)) if ncells else None
    return types.FunctionType(code, globals_, name, None, closure)


def _set_function_state(func: types.FunctionType, state: dict[str, Any]) -> None:
    # Closure values arrive in the state, not the constructor, so recursive closures pickle.
    for cell, source in zip(func.__closure__ or (), state.pop("__closure__", ()), strict=False):
        try:
            cell.cell_contents = source.cell_contents
        except ValueError:  # an empty cell stays empty
            pass
    for attr, value in state.items():
        setattr(func, attr, value)


def _reduce_cell_function(func: types.FunctionType) -> tuple[Any, ...]:
    """A function defined in the namespace: by value, but its globals are the namespace itself."""
    state: dict[str, Any] = {
        "__closure__": func.__closure__ or (),
        "__defaults__": func.__defaults__,
        "__kwdefaults__": func.__kwdefaults__,
        "__qualname__": func.__qualname__,
        "__module__": func.__module__,
        "__doc__": func.__doc__,
        "__annotations__": func.__annotations__,
        "__dict__": func.__dict__,
    }
    if hasattr(func, "__type_params__"):  # Python 3.12+
        state["__type_params__"] = func.__type_params__
    ncells = len(func.__closure__ or ())
    return (_make_function, (func.__code__, _NS_REF, func.__name__, ncells), state, None, None,
            _set_function_state)


_PICKLER: type | None = None


def _pickler_class() -> Any:
    """cloudpickle's Pickler, taught about the namespace; built on first use (lazy import)."""
    global _PICKLER
    if _PICKLER is None:
        import cloudpickle

        class NamespacePickler(cloudpickle.Pickler):
            def __init__(self, file: Any, namespace: Mapping[str, Any]) -> None:
                super().__init__(file, protocol=5)
                self._namespace = namespace

            def reducer_override(self, obj: Any) -> Any:
                if isinstance(obj, types.FunctionType) and obj.__globals__ is self._namespace:
                    return _reduce_cell_function(obj)
                if isinstance(obj, _OPEN_FILE_TYPES):
                    # cloudpickle would read a file open for reading into a StringIO: not a rewind.
                    raise TypeError(f"cannot pickle '{type(obj).__name__}' object (an open file)")
                return super().reducer_override(obj)

        _PICKLER = NamespacePickler
    return _PICKLER


# -- sizing and reuse -------------------------------------------------------------------


def estimate_size(value: Any) -> int:
    """A cheap lower bound of the pickled size, to order values and skip hopeless ones unpickled."""
    try:
        np = sys.modules.get("numpy")
        if np is not None and isinstance(value, np.ndarray):
            return int(value.nbytes)
        pd = sys.modules.get("pandas")
        if pd is not None:
            if isinstance(value, pd.DataFrame):
                return int(value.memory_usage(index=True, deep=False).sum())
            if isinstance(value, (pd.Series, pd.Index)):
                return int(value.memory_usage(index=True, deep=False)
                           if isinstance(value, pd.Series) else value.memory_usage(deep=False))
        return int(sys.getsizeof(value))
    except Exception:
        return 0


def is_immutable(value: Any, depth: int = 0) -> bool:
    """Deeply immutable, so holding it and finding the same object later proves it unchanged."""
    if type(value) in _IMMUTABLE_ATOMS:
        return True
    if type(value) in (tuple, frozenset) and depth < 10 and len(value) <= 1000:
        return all(is_immutable(v, depth + 1) for v in value)
    return False
