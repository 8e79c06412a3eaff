"""A compact, budgeted description of the user's namespace for the model's system prompt.

Which names, in what order (newest or changed first), within a token budget; each value's
line comes from ``describer``, which reads types and sizes without running user code (only
``repr``, capped in length and time). ``fingerprint`` tells whether a value changed between
cells without reading its data. pandas and numpy are never imported here.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from llmrepl.context.describer import CONTAINERS, Describer, library_kind
from llmrepl.execution.namespace import is_user_name

__all__ = ["NamespaceDigest", "describe", "fingerprint"]

_MORE = "- ... and {n} more names (/vars lists them all)"


def _approx_tokens(text: str) -> int:
    return len(text) // 4 + 1


def fingerprint(value: Any) -> tuple[Any, ...]:
    """Cheap identity of a value's shape: type and length or shape. O(1); reads no data."""
    t = type(value)
    key: tuple[Any, ...] = (id(t),)
    try:
        base: Any
        for base in CONTAINERS + (str, bytes, bytearray):
            if issubclass(t, base):
                return (*key, base.__len__(value))
        kind = library_kind(t)
        if kind in ("frame", "series", "index", "array"):
            return (*key, tuple(value.shape))
    except Exception:
        pass
    return key


def describe(value: Any, *, max_repr_chars: int = 80, redact: Callable[[str], str] | None = None) -> str:
    """One value on one line: type, size, and a short value where that is safe to read.

    ``redact`` (the session's redactor) is applied to the whole line, and to each value
    before it is cut short, so no piece of a secret survives the cut."""
    if redact is None:
        return Describer(max_repr_chars, 0.05).describe(value)
    return redact(Describer(max_repr_chars, 0.05, redact).describe(value))


class NamespaceDigest:
    """Describes the user's namespace for the model: newest/changed names first, within a token budget."""

    def __init__(
        self,
        *,
        count_tokens: Callable[[str], int] | None = None,
        max_repr_chars: int = 80,
        repr_time_limit: float = 0.05,
    ) -> None:
        self._count = count_tokens or _approx_tokens
        self.max_repr_chars = max_repr_chars
        self.repr_time_limit = repr_time_limit
        self._seen: dict[str, tuple[int, tuple[Any, ...]]] = {}
        self._changed_at: dict[str, int] = {}
        self._generation = 0

    def observe(self, namespace: Mapping[str, Any]) -> None:
        """Call after each cell: notes which names are new or changed (identity, type, len/shape)."""
        self._generation += 1
        seen: dict[str, tuple[int, tuple[Any, ...]]] = {}
        for name, value in namespace.items():
            if not is_user_name(name, value):
                continue
            mark = (id(value), fingerprint(value))
            seen[name] = mark
            if self._seen.get(name) != mark:
                self._changed_at[name] = self._generation
        for gone in self._changed_at.keys() - seen.keys():
            del self._changed_at[gone]
        self._seen = seen

    def order(self, namespace: Mapping[str, Any]) -> list[str]:
        """User names, most recently new/changed first; ties (same cell) newest definition first.

        Names not yet observed count as newest.
        """
        names = [n for n, v in namespace.items() if is_user_name(n, v)]
        unseen = self._generation + 1
        ranked = sorted(enumerate(names), key=lambda p: (self._changed_at.get(p[1], unseen), p[0]), reverse=True)
        return [n for _, n in ranked]

    def render(self, namespace: Mapping[str, Any], *, budget_tokens: int, extra: Sequence[str] = (),
               redact: Callable[[str], str] | None = None) -> str:
        """The digest text: a header, ``extra`` lines, modules on one line, then one line per name.

        ``redact`` is applied to every line (names, dict keys and column names included) before
        it is counted, and to values before they are cut short."""
        names = self.order(namespace)
        extras = [e if e.startswith("- ") else f"- {e}" for e in extra]
        if not names:
            header = "(nothing yet)"
        else:
            header = f"{len(names):,} name{'' if len(names) == 1 else 's'}, newest or changed first:"
        describer = Describer(self.max_repr_chars, self.repr_time_limit, redact)
        scrub: Callable[[str], str] = redact or (lambda text: text)
        modules = [n for n in names if issubclass(type(namespace[n]), types.ModuleType)]
        module_set = set(modules)
        others = [n for n in names if n not in module_set]

        def candidates() -> Any:  # (line, names it covers), made lazily: describing is the costly part
            for e in extras:
                yield e, 0
            if modules:
                parts = []
                for n in modules:
                    real = describer.module_name(namespace[n])
                    parts.append(n if real == n else f"{n} ({real})")
                yield "- modules: " + ", ".join(parts), len(modules)
            for n in others:
                yield f"- {n}: {describer.describe(namespace[n])}", 1

        lines, covered = [header], [0]
        used = self._count(header + "\n")
        for raw, n in candidates():
            line = scrub(raw)
            cost = self._count(line + "\n")
            if used + cost > budget_tokens:
                break
            lines.append(line)
            covered.append(n)
            used += cost
        return self._fit(lines, covered, len(names), budget_tokens)

    def _fit(self, lines: list[str], covered: list[int], total: int, budget: int) -> str:
        """Add the "N more names" note, dropping lines until the whole text fits the budget."""
        while True:
            left = total - sum(covered)
            text = "\n".join(lines + ([_MORE.format(n=f"{left:,}")] if left else []))
            if len(lines) == 1 or self._count(text) <= budget:
                if len(lines) == 1 and left and self._count(text) > budget:
                    return lines[0]  # always at least the header
                return text
            lines.pop()
            covered.pop()
