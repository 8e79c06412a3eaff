"""The namespace of a kernel, described inside the kernel: the values never travel.

``HELPER`` is Python that ``KernelExecutor`` runs silently in the kernel once (after every
start or restart). It defines a module ``_llmrepl_kernel`` (in ``sys.modules``, not in the
user's namespace) whose ``summary()`` returns, as a JSON string, one entry per user variable:
its name, its type, a one-line description (type, size or shape, a short value for plain
types only) and a fingerprint that changes when the value does; or ``"=N"`` when nothing
changed since summary number N. An IPython ``post_run_cell`` hook puts it in every cell's
``execute_reply`` as a payload (no extra round trip, failed cells too; measured cheaper than a
``user_expressions`` request, which IPython formats through every display formatter); a kernel
without the hook is asked with a silent request when the namespace is read. ``KernelNamespace.from_json``
turns the answer into a mapping of :class:`KernelValue` / :class:`KernelModule` stand-ins that
the context's digest, /vars and the describer read like values, through ``description``.
"""

from __future__ import annotations

import json
import types
from typing import Any

__all__ = ["EXPRESSION", "FRESH", "HELPER", "KernelModule", "KernelNamespace", "KernelValue", "type_label"]

MAX_NAMES = 400  # a namespace with more names: the newest-defined are described, the rest counted
MAX_DESCRIPTION = 400  # characters of one value's description kept
MAX_SUMMARY_CHARS = 2_000_000  # a longer answer is not read

# Runs inside the kernel: standard library only, every value read defensively (no user
# __getattr__, a repr only for plain built-in types, capped in length).
HELPER = r'''
def _llmrepl_install():
    import json, re, sys, types
    mod = types.ModuleType("_llmrepl_kernel")
    PLAIN = (int, float, complex, bool, type(None))
    CONTAINERS = (list, tuple, dict, set, frozenset)
    FUNCS = (types.FunctionType, types.BuiltinFunctionType, types.MethodType)

    def tname(t):
        name = type.__dict__["__name__"].__get__(t)
        module = type.__dict__["__module__"].__get__(t)
        return name if module in ("builtins", "__main__") else module.split(".")[0] + "." + name

    def short(text, limit=60):
        text = " ".join(text.split())
        return text if len(text) <= limit else text[:limit - 1] + "\u2026"

    def plain(v):
        t = type(v)
        if t in PLAIN:
            return short(repr(v)) if t is not int or v.bit_length() < 200 else None
        if t is str:
            return repr(v) if len(v) <= 60 else "str, %d chars: %r\u2026" % (len(v), v[:40])
        return None

    def shape_of(v, t):
        for klass in t.__mro__:
            attr = klass.__dict__.get("shape")
            if attr is not None:
                try:
                    shape = attr.__get__(v, t) if hasattr(attr, "__get__") else attr
                    return tuple(int(n) for n in shape)
                except Exception:
                    return None
        return None

    def describe(v):
        t = type(v)
        p = plain(v)
        if p is not None:
            return p, len(v) if t is str else None
        label = tname(t)
        if t in (bytes, bytearray):
            return "%s, %d bytes" % (label, len(v)), len(v)
        if issubclass(t, FUNCS):
            try:
                import inspect
                return "function %s%s" % (getattr(v, "__name__", "?"), inspect.signature(v)), None
            except Exception:
                return "function %s" % getattr(v, "__name__", "?"), None
        if issubclass(t, type):
            return "class %s" % tname(v), None
        for base in CONTAINERS:
            if issubclass(t, base):
                n = base.__len__(v)
                text = "%s, %d item%s" % (label, n, "" if n == 1 else "s")
                if n <= 8 and t is base and all(type(x) in PLAIN or (type(x) is str and len(x) < 30) for x in (v.values() if base is dict else v)):
                    text += ": " + short(repr(v), 60)
                return text, n
        module = type.__dict__["__module__"].__get__(t)
        if module.split(".")[0] in ("numpy", "pandas", "torch", "polars"):
            shape = shape_of(v, t)
            if shape is not None:
                text = "%s, shape %s" % (label, "(" + ", ".join(str(n) for n in shape) + ")")
                try:
                    if module.split(".")[0] == "pandas" and len(shape) == 2:
                        cols = [str(c) for c in list(v.columns)[:12]]
                        text = "%s, %d rows \u00d7 %d columns: %s" % (label, shape[0], shape[1], short(", ".join(cols), 80))
                    elif hasattr(v, "dtype"):
                        text += ", dtype " + str(v.dtype)
                except Exception:
                    pass
                return text, shape
        return label, None

    FIXED = (int, float, complex, bool, type(None), str, bytes, frozenset, types.ModuleType,
             types.FunctionType, types.BuiltinFunctionType, type)
    state = {"cache": {}, "last": None, "seq": 0, "skip": set(), "order": {}, "n": 0}
    HISTORY = re.compile(r"__\w*__|_+|_i+\d*|_\d+|_[iod]h").fullmatch

    def entry(name, value, cache, fresh):
        t = type(value)
        kept = cache.get(name)
        if kept is not None and kept[0] is value and t in FIXED:
            fresh[name] = kept  # the same immutable object: the same description
            return kept[1]
        try:
            if issubclass(t, types.ModuleType):
                real = value.__dict__.get("__name__")
                item = [name, "m", "module", real if type(real) is str else "?", [id(value)]]
            else:
                text, size = describe(value)
                item = [name, "v", tname(t), text, [id(value), id(t), size]]
        except Exception as exc:
            item = [name, "v", tname(t), "%s <could not describe: %s>" % (tname(t), type(exc).__name__), None]
        fresh[name] = (value, item)  # holds the value until the next summary: its id stays its own
        return item

    def summary(limit=__LIMIT__, fresh=False):
        if fresh:
            state["last"] = None
        try:
            shell = get_ipython()
            ns, hidden = shell.user_ns, shell.user_ns_hidden
        except Exception:
            ns, hidden = sys.modules["__main__"].__dict__, {}
        # IPython keeps _iN (and _N) for every cell: thousands of names in a long session.
        # Those seen once are left out by one set difference, at C speed.
        skip, order = state["skip"], state["order"]
        found = []
        for name in ns.keys() - skip:
            if type(name) is not str or HISTORY(name):
                skip.add(name)
                continue
            if name in ("_out", "In", "Out", "get_ipython") or (name in hidden and hidden[name] is ns[name]):
                continue
            if name not in order:
                order[name] = state["n"] = state["n"] + 1
            found.append(name)
        found.sort(key=order.__getitem__)
        if len(order) > 4 * len(found) + 1000:  # names long deleted: forget their places
            kept = {name: order[name] for name in found}
            order.clear()
            order.update(kept)
        skipped = max(len(found) - limit, 0)
        cache, seen = state["cache"], {}
        out = [entry(name, ns[name], cache, seen) for name in found[skipped:]]
        state["cache"] = seen
        answer = {"names": out, "more": skipped}
        if answer == state["last"]:
            return "=%d" % state["seq"]  # nothing changed since that summary
        state["last"] = answer
        state["seq"] += 1
        return json.dumps(dict(answer, seq=state["seq"]))

    def after_cell(result=None):
        """Every cell's execute_reply carries the summary as a payload (no extra request)."""
        try:
            shell = get_ipython()
            shell.payload_manager.write_payload({"source": "llmrepl_namespace", "data": summary()})
        except Exception:
            pass

    old = sys.modules.get("_llmrepl_kernel")
    try:
        shell = get_ipython()
        if old is not None and getattr(old, "after_cell", None) is not None:
            shell.events.unregister("post_run_cell", old.after_cell)
        shell.events.register("post_run_cell", after_cell)
        mod.after_cell = after_cell
    except Exception:
        pass  # not IPython: the client asks with a silent request instead

    mod.summary = summary
    sys.modules["_llmrepl_kernel"] = mod

_llmrepl_install()
del _llmrepl_install
'''.replace("__LIMIT__", str(MAX_NAMES))

# The user expression every cell's execute request carries: the summary, as a str repr; "="
# when nothing changed since the last one (FRESH: the whole summary, whatever came before).
EXPRESSION = "__import__('sys').modules['_llmrepl_kernel'].summary()"
FRESH = "__import__('sys').modules['_llmrepl_kernel'].summary(fresh=True)"


class KernelValue:
    """A user variable that lives in the kernel: its type's name and its one-line description."""

    __slots__ = ("type_name", "description", "mark")

    def __init__(self, type_name: str, description: str, mark: Any) -> None:
        self.type_name = type_name
        self.description = description
        self.mark = mark

    def __repr__(self) -> str:
        return self.description


class KernelModule(types.ModuleType):
    """A module imported in the kernel (the digest lists modules on one line)."""

    mark: Any = None


def type_label(value: object) -> str:
    """The type name /vars shows: a kernel value's own, else the local value's type."""
    if type(value) is KernelValue:
        return value.type_name
    if type(value) is KernelModule:
        return "module"
    name: str = type.__dict__["__name__"].__get__(type(value))
    return name


class KernelNamespace(dict[str, Any]):
    """The kernel's user variables as stand-ins, newest defined last (as a dict's order is).

    Stand-ins are kept between summaries while a value's fingerprint is unchanged, so the
    digest, which tracks values by identity, sees only what really changed."""

    more: int = 0  # names not described (past MAX_NAMES)
    seq: int = -1  # which summary of the kernel's this is

    @classmethod
    def from_json(cls, text: str, previous: KernelNamespace | None = None) -> KernelNamespace:
        """Parse ``summary()``'s answer; raises ValueError when it is not one. What a kernel
        sends is bounded here too (a kernel is not trusted to keep its own limits)."""
        if len(text) > MAX_SUMMARY_CHARS:
            raise ValueError("namespace summary too long")
        data = json.loads(text)
        if not isinstance(data, dict) or not isinstance(data.get("names"), list):
            raise ValueError("not a namespace summary")
        ns = cls()
        old: dict[str, Any] = previous or {}
        for entry in data["names"][:MAX_NAMES]:
            if not (isinstance(entry, list) and len(entry) == 5 and isinstance(entry[0], str)):
                continue
            name, kind, tname, text_, mark = entry
            name, tname, text_ = name[:200], str(tname)[:200], str(text_)[:MAX_DESCRIPTION]
            mark = json.dumps(mark)
            kept = old.get(name)
            if kept is not None and getattr(kept, "mark", None) == mark:
                ns[name] = kept
            elif kind == "m":
                module = KernelModule(str(text_))
                module.mark = mark
                ns[name] = module
            else:
                ns[name] = KernelValue(str(tname), str(text_), mark)
        more, seq = data.get("more"), data.get("seq")
        ns.more = more if isinstance(more, int) else 0
        ns.seq = seq if isinstance(seq, int) else -1
        return ns
