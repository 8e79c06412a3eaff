"""What llmrepl knows about the user's namespace, and how it reads values there safely.

Shared by the executor (which fills the namespace and shows values) and by the digest,
/vars and snapshots (which read it): which names are the user's, the injected
``exit``/``quit``, type facts read through the C descriptors of ``type`` (a metaclass cannot
intercept them), and ``repr()`` under a time limit, because a ``__repr__`` is user code and
may hang.
"""

from __future__ import annotations

import _signal
import signal
import threading
import time
import types
from collections.abc import Callable, Mapping
from types import FrameType
from typing import Any

__all__ = [
    "Quitter",
    "bounded_call",
    "bounded_repr",
    "is_user_name",
    "module_dict",
    "repr_can_be_bounded",
    "type_bases",
    "type_dict",
    "type_module",
    "type_mro",
    "type_name",
    "type_qualname",
]

# Type facts read through the C descriptors: a metaclass cannot intercept these.
type_name: Callable[[type], str] = type.__dict__["__name__"].__get__
type_qualname: Callable[[type], str] = type.__dict__["__qualname__"].__get__
type_mro: Callable[[type], tuple[type, ...]] = type.__dict__["__mro__"].__get__
type_dict: Callable[[type], Mapping[str, Any]] = type.__dict__["__dict__"].__get__
type_bases: Callable[[type], tuple[type, ...]] = type.__dict__["__bases__"].__get__
module_dict: Callable[[Any], dict[str, Any]] = vars(types.ModuleType)["__dict__"].__get__
_type_module_raw: Callable[[type], Any] = type.__dict__["__module__"].__get__

# Bound at import: bounded_repr runs before the executor puts back builtins a cell broke.
# The C functions, too: the ``signal`` module's wrappers cost ~5 µs a call converting enums.
_repr, _type = repr, type
_setsignal, _setitimer = _signal.signal, _signal.setitimer
_SIGALRM, _ITIMER_REAL, _SIG_DFL = int(signal.SIGALRM), int(signal.ITIMER_REAL), signal.SIG_DFL
_monotonic = time.monotonic
_get_ident = threading.get_ident
_MAIN_IDENT = threading.main_thread().ident
_REFIRE = 0.5  # at most this long between alarms once the limit has passed
_OUTPUTS = "llmrepl.execution.outputs"  # where the namespace's display() is defined


def type_module(t: type) -> str:
    """The name of the module that defined ``t``; "" when that is not a plain string."""
    try:
        module = _type_module_raw(t)
    except Exception:
        return ""
    return module if _type(module) is str else ""


class Quitter:
    """``exit``/``quit`` in the namespace: end the cell, not llmrepl."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Use {self.name}() to end this cell; use /exit or Ctrl-D to leave llmrepl"

    def __call__(self, code: object = None) -> None:
        raise SystemExit(code)


def is_user_name(name: object, value: object) -> bool:
    """Whether ``name`` is a variable the user's code made: not a dunder, not ``_``/``_N``/
    ``_out`` history, not the injected exit/quit/display, not a non-string key (``globals()[1] = 2``).
    The one rule for /vars, the digest and snapshots; reads the value's type through C
    descriptors, so user code cannot intercept the check."""
    if type(name) is not str:
        return False
    if name.startswith("__") and name.endswith("__"):
        return False
    if name in ("_", "_out") or (name[:1] == "_" and name[1:].isdigit()):
        return False
    # Ours (Quitter, defined here; Display, in outputs) or site's, which a cell may have copied from builtins.
    if name in ("exit", "quit"):
        return type_module(type(value)) not in (__name__, "_sitebuiltins")
    return not (name == "display" and type_module(type(value)) == _OUTPUTS)


class _ReprTimeout(BaseException):
    """Raised by the SIGALRM handler inside a repr that ran too long (``except Exception`` misses it)."""


def repr_can_be_bounded() -> bool:
    """Whether :func:`bounded_repr` may be called here: signals reach only the main thread."""
    return _get_ident() == _MAIN_IDENT


def bounded_repr(value: object, seconds: float) -> str | None:
    """``repr(value)``, or None when it ran longer than ``seconds``: a ``__repr__`` that hangs
    must not hang llmrepl. What the repr raises otherwise propagates. See :func:`bounded_call`."""
    done, text = bounded_call(_repr, value, seconds=seconds)
    return text if done else None


def bounded_call(func: Callable[..., Any], *args: Any, seconds: float) -> tuple[bool, Any]:
    """``(True, func(*args))``, or ``(False, None)`` when it ran longer than ``seconds``: a repr
    or a rich repr is user code and may hang. What ``func`` raises otherwise propagates.

    A SIGALRM timer stops it, and fires again every ``min(seconds, 0.5)`` s after, so code
    that swallows one interruption is stopped by the next; once the timer has fired the call
    counts as too slow even if it then returns. Main thread only (see
    :func:`repr_can_be_bounded`). A handler and a running timer that were there before (a
    cell's limit, pytest-timeout) are put back, the timer less the time spent here.
    """
    fired = armed = False

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        nonlocal fired
        if armed:  # not once the call has returned: the exception would escape from here
            fired = True
            raise _ReprTimeout

    start = _monotonic()
    old_handler = _setsignal(_SIGALRM, on_alarm)
    old_delay, old_interval = _setitimer(_ITIMER_REAL, seconds, min(seconds, _REFIRE))
    result: Any = None
    try:
        armed = True
        try:
            result = func(*args)
        finally:
            armed = False
    except _ReprTimeout:
        pass
    finally:
        _setitimer(_ITIMER_REAL, 0)
        _setsignal(_SIGALRM, _SIG_DFL if old_handler is None else old_handler)
        if old_delay > 0:  # someone else's timer keeps running
            _setitimer(_ITIMER_REAL, max(old_delay - (_monotonic() - start), 1e-6), old_interval)
    return (False, None) if fired else (True, result)
