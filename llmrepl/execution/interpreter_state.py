"""The interpreter-wide state a cell may break, saved as the cell starts and put back after it.

Builtins, the std streams and hooks in ``sys``, the recursion limit and ``getpass.getpass``:
a cell runs in llmrepl's own interpreter, so whatever it rebinds there would otherwise stay
broken for llmrepl and for every later cell. Each fix is noted as a line of the cell's
``repairs``. Signal handlers are the executor's, as they go with its timers.
See the project's research notes, ../shared/research/reliability.md §2.
"""

from __future__ import annotations

import builtins
import getpass
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["InterpreterState"]

# Bound at import: restoring runs before builtins are known to be intact, and must not
# depend on anything a cell can rebind.
_BaseException, _len = BaseException, len
_BUILTINS = builtins.__dict__
_sys, _getpass_mod = sys, getpass
_getrecursionlimit, _setrecursionlimit = sys.getrecursionlimit, sys.setrecursionlimit
_MISSING = object()
_SYS_NAMES = ("stdout", "stderr", "stdin", "excepthook", "displayhook")


def _restore_builtins(snapshot: dict[str, Any], repairs: list[str]) -> None:
    """Put back builtins a cell rebound or deleted (names it added stay). Uses no builtins."""
    bd = _BUILTINS
    for name, value in snapshot.items():
        current = bd.get(name, _MISSING)
        if current is not value:
            bd[name] = value
            how = "deleted" if current is _MISSING else "changed"
            repairs.append(f"builtins.{name} was {how}; restored")


class InterpreterState:
    """Made as a cell starts: saves the state, then installs the cell's ``streams`` (stdout,
    stderr, stdin) and its ``input()`` and ``getpass()``. ``restore()`` undoes both."""

    __slots__ = ("_streams", "_input", "_builtins", "_getpass", "_getpass_hook", "_sys", "_recursion_limit")

    def __init__(
        self,
        streams: tuple[Any, Any, Any],
        input_hook: Callable[..., str],
        getpass_hook: Callable[..., str],
    ) -> None:
        bd, sys_ = _BUILTINS, _sys
        self._streams = streams
        self._input = bd.get("input", _MISSING)
        bd["input"] = input_hook
        # Copied for every cell: whatever rebinds a builtin between cells (a thread or signal
        # handler a cell left, the program embedding the engine) is not this cell's to undo.
        self._builtins = bd.copy()
        self._getpass = _getpass_mod.getpass
        self._getpass_hook = _getpass_mod.getpass = getpass_hook
        self._sys = (sys_.stdout, sys_.stderr, sys_.stdin, sys_.excepthook, sys_.displayhook)
        self._recursion_limit = _getrecursionlimit()
        sys_.stdout, sys_.stderr, sys_.stdin = streams

    def restore(self, repairs: list[str]) -> None:
        """Put everything back as it was before the cell, noting each thing the cell had changed."""
        # FIRST: everything below relies on builtins. dict == compares by identity first,
        # so this is a fast C loop when nothing changed.
        bd, snapshot = _BUILTINS, self._builtins
        try:
            builtins_intact = _len(bd) == _len(snapshot) and snapshot == bd
        except _BaseException:  # a replacement object's __eq__ raised: check one by one
            builtins_intact = False
        if not builtins_intact:
            _restore_builtins(snapshot, repairs)
        if self._input is _MISSING:
            bd.pop("input", None)
        else:
            bd["input"] = self._input
        self._restore_sys(repairs)
        old_limit, current_limit = self._recursion_limit, _getrecursionlimit()
        if current_limit != old_limit:
            repairs.append(f"recursion limit was {current_limit}; reset to {old_limit}")
            _setrecursionlimit(old_limit)
        if _getpass_mod.getpass is not self._getpass_hook:
            repairs.append("getpass.getpass was replaced; restored")
        _getpass_mod.getpass = self._getpass

    def _restore_sys(self, repairs: list[str]) -> None:
        sys_, saved, (out, err, in_) = _sys, self._sys, self._streams
        # The usual case, nothing replaced, without the per-name loop below.
        try:
            untouched = (
                sys_.stdout is out and sys_.stderr is err and sys_.stdin is in_
                and sys_.excepthook is saved[3] and sys_.displayhook is saved[4]
            )
        except _BaseException:  # a name was deleted
            untouched = False
        if untouched:
            sys_.stdout, sys_.stderr, sys_.stdin = saved[0], saved[1], saved[2]
            return
        ours = (out, err, in_, saved[3], saved[4])
        for name, mine, old in zip(_SYS_NAMES, ours, saved, strict=True):
            if getattr(sys_, name, None) is not mine:
                repairs.append(f"sys.{name} was replaced; restored")
            setattr(sys_, name, old)
