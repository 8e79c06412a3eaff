"""The namespace digest: what each kind of value looks like, safety with hostile objects, order, budget."""

from __future__ import annotations

import collections
import functools
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import numpy as np
import pandas as pd
import pytest

from llmrepl.context.digest import NamespaceDigest, describe, fingerprint
from llmrepl.execution.executor import Executor

MORE = re.compile(r"^- \.\.\. and ([\d,]+) more names \(/vars lists them all\)$")


def lines_of(text: str) -> list[str]:
    return text.splitlines()


def line_for(text: str, name: str) -> str:
    found = [line for line in text.splitlines() if line.startswith(f"- {name}: ")]
    assert len(found) == 1, text
    return found[0]


# -- pandas and numpy -----------------------------------------------------------------------


def sales() -> pd.DataFrame:
    df = pd.DataFrame(
        {
            "region": ["n", "s", "e", "w"] * 300,
            "amount": np.arange(1200, dtype="float64"),
            "qty": np.arange(1200, dtype="int64"),
        }
    )
    df.loc[[1, 5, 9], "amount"] = np.nan
    return df


def test_dataframe_shape_dtypes_and_missing_counts():
    text = describe(sales())
    assert text.startswith("pandas.DataFrame 1,200×3 · columns: ")
    assert "amount (float64, 3 missing)" in text
    assert "qty (int64)" in text and "qty (int64," not in text  # no missing: not mentioned
    assert "region (" in text
    assert "index:" not in text  # the default RangeIndex is not worth tokens


def test_dataframe_many_columns_truncated():
    df = pd.DataFrame(np.zeros((3, 40)), columns=[f"c{i}" for i in range(40)])
    text = describe(df)
    assert "c0 (float64)" in text and "c11 (float64)" in text
    assert "c12" not in text
    assert text.endswith("... +28 more")


def test_dataframe_named_index_and_empty_frame():
    df = sales().set_index("region")
    assert "index: region (" in describe(df)
    assert describe(pd.DataFrame()) == "pandas.DataFrame 0×0 (no columns)"


def test_huge_dataframe_skips_missing_counts_and_says_so(monkeypatch):
    df = pd.DataFrame({"a": np.zeros(6_000_000, dtype="int8")})

    def boom(self: Any) -> Any:
        raise AssertionError("isna() on a huge frame")

    monkeypatch.setattr(pd.DataFrame, "isna", boom)
    text = describe(df)
    assert "6,000,000×1" in text and "a (int8)" in text
    assert "missing values not counted (6,000,000 cells)" in text


def test_observe_on_a_10m_row_frame_reads_only_its_shape(monkeypatch):
    df = pd.DataFrame({"a": np.zeros(10_000_000, dtype="int8"), "b": np.ones(10_000_000, dtype="int8")})
    for name in ("isna", "__iter__", "__hash__", "to_numpy", "memory_usage"):
        monkeypatch.setattr(pd.DataFrame, name, lambda *a, **k: (_ for _ in ()).throw(AssertionError(name)))
    assert fingerprint(df) == (id(pd.DataFrame), (10_000_000, 2))
    digest = NamespaceDigest()
    start = time.monotonic()
    digest.observe({"df": df})
    assert time.monotonic() - start < 5  # returned, not hung; no hashing of 20 MB of data


def test_series_and_index():
    s = sales()["amount"]
    assert describe(s) == "pandas.Series 1,200 · float64 · name 'amount' · 3 missing"
    idx = pd.date_range("2024-01-01", periods=5, name="day")
    text = describe(idx)
    assert text.startswith("pandas.DatetimeIndex 5 · datetime64") and text.endswith("name 'day'")


def test_arrays_and_numpy_scalars():
    assert describe(np.zeros((1000, 3))) == "numpy.ndarray 1,000×3 float64"
    assert describe(np.arange(3)) == "numpy.ndarray 3 int64 = [0, 1, 2]"
    assert describe(np.float64(2.5)) == "numpy.float64 = 2.5"
    assert describe(np.int32(7)) == "numpy.int32 = 7"
    assert describe(np.array(5)) == "numpy.ndarray 0-d int64 = 5"


def test_object_array_never_shows_element_reprs():
    class Loud:
        def __repr__(self) -> str:
            raise AssertionError("element repr called")

    arr = np.empty(2, dtype=object)
    arr[0], arr[1] = Loud(), Loud()
    assert describe(arr) == "numpy.ndarray 2 object"


def test_class_pretending_to_be_numpy_is_not_trusted():
    touched = []

    class Fake:
        __module__ = "numpy"

        @property
        def shape(self) -> Any:
            touched.append("shape")
            raise RuntimeError

        @property
        def dtype(self) -> Any:
            touched.append("dtype")
            raise RuntimeError

    assert describe(Fake()) == "numpy.test_class_pretending_to_be_numpy_is_not_trusted.<locals>.Fake"
    assert touched == []


# -- builtin values and containers ----------------------------------------------------------


def test_scalars_and_strings():
    assert describe(42) == "42"
    assert describe(2.5) == "2.5"
    assert describe(None) == "None"
    assert describe(True) == "True"
    assert describe("hello") == "'hello'"
    long = "x" * 12_345
    text = describe(long)
    assert text.startswith("str, 12,345 chars: 'xxxx") and len(text) < 100
    assert describe(b"\x00" * 5000) == "bytes, 5,000 bytes"
    assert describe(10**5000) == "int, about 5,001 digits"


def test_big_list_is_described_without_iterating_it():
    big = list(range(1_000_000))
    assert describe(big) == "list, 1,000,000 items of int"

    class Guarded(list):
        def __iter__(self) -> Any:
            raise AssertionError("iterated")

        def __len__(self) -> int:
            raise AssertionError("len called")

        def __getitem__(self, i: Any) -> Any:
            raise AssertionError("indexed")

    text = describe(Guarded(range(1_000_000)))
    assert text.endswith("Guarded, 1,000,000 items of int")


def test_containers():
    assert describe([1, 2, 3]) == "[1, 2, 3]"
    assert describe((1,)) == "(1,)"
    assert describe([1, "a", 2.0, None, 5, 6]) == "list, 6 items"
    assert describe([]) == "list, empty"
    assert describe({}) == "dict, empty" and describe(set()) == "set, empty"
    assert describe({1, 2}) == "{1, 2}"
    assert describe(frozenset({1})) == "frozenset({1})"
    assert describe(collections.deque(range(100), maxlen=200)) == "collections.deque, 100 items (maxlen 200) of int"
    assert describe([{"id": 1, "name": "a"}] * 50) == "list, 50 items of dict (keys: 'id', 'name')"
    Point = collections.namedtuple("Point", "x y")
    assert describe(Point(1, 2)) == f"{__name__}.Point(x=1, y=2)"
    assert describe({"a": 1, "b": "two"}) == "{'a': 1, 'b': 'two'}"


def test_nested_dict_keys_capped():
    nested = {f"key{i}": {"inner": list(range(1000))} for i in range(1000)}
    text = describe(nested)
    assert text == "dict, 1,000 keys: 'key0', 'key1', 'key2', 'key3', 'key4', … +995 more · values: dict"
    odd = {"k" * 500: 1, ("a", 1): 2, frozenset(): 3}
    text = describe(odd)
    assert "kkkk" not in text  # a 500-char key is not repeated
    assert "('a', 1)" in text and "<frozenset>" in text and "<str>" in text


def test_dict_subclass_read_through_dict_itself():
    class Sneaky(dict):
        def keys(self) -> Any:
            raise AssertionError("keys")

        def __iter__(self) -> Any:
            raise AssertionError("iter")

        def __len__(self) -> int:
            raise AssertionError("len")

        def items(self) -> Any:
            raise AssertionError("items")

    text = describe(Sneaky({f"k{i}": i for i in range(10)}))
    assert text.endswith("Sneaky, 10 keys: 'k0', 'k1', 'k2', 'k3', 'k4', … +5 more · values: int")
    counter = collections.Counter("hello world")
    assert describe(counter).startswith("collections.Counter, 8 keys: 'h', 'e', 'l'")


# -- functions, classes, modules -------------------------------------------------------------


def clean(df: pd.DataFrame, cols: list[str] | None = None, *, how: str = "any") -> pd.DataFrame:
    return df


async def fetch(url, timeout=3.0):
    return url


def test_functions_with_signatures():
    assert describe(clean) == (
        "function clean(df: pd.DataFrame, cols: list[str] | None = None, *, how: str = 'any') -> pd.DataFrame"
    )
    assert describe(fetch) == "async function fetch(url, timeout=3.0)"
    assert describe(lambda a, b=2: a) == "lambda (a, b=2)"
    assert describe(len) == "builtin len(obj, /)"
    assert describe(math.sqrt) == "builtin sqrt(x, /)"

    @functools.wraps(clean)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return clean(*args, **kwargs)

    assert describe(wrapper).startswith("function clean(df: pd.DataFrame")


def test_methods_and_classes():
    class Model(collections.OrderedDict):
        def fit(self, x, y=None):
            return self

    assert describe(Model().fit) == "method test_methods_and_classes.<locals>.Model.fit(x, y=None)".replace(
        "test_methods_and_classes.<locals>.Model", f"{__name__}.test_methods_and_classes.<locals>.Model"
    )
    assert describe(Model) == (
        f"class {__name__}.test_methods_and_classes.<locals>.Model(collections.OrderedDict)"
    )
    assert describe(ValueError) == "class ValueError(Exception)"


def test_signature_defaults_never_run_user_repr():
    class Slow:
        def __repr__(self) -> str:
            raise AssertionError("default repr called")

    def f(x=Slow(), y: Any = 1):  # noqa: B008
        return x

    assert describe(f).startswith("function f(x=<") and "Slow>" in describe(f)


def test_modules_grouped_on_one_line():
    ns = {"np": np, "pd": pd, "os": os, "path": os.path, "x": 1}
    text = NamespaceDigest().render(ns, budget_tokens=500)
    mod_lines = [line for line in text.splitlines() if "modules:" in line]
    assert len(mod_lines) == 1
    line = mod_lines[0]
    assert line.startswith("- modules: ")
    for part in ("np (numpy)", "pd (pandas)", "os", f"path ({os.path.__name__})"):
        assert part in line
    assert "- x: 1" in text
    assert text.splitlines()[0] == "5 names, newest or changed first:"


# -- hostile objects -------------------------------------------------------------------------


class SlowRepr:
    def __repr__(self) -> str:
        time.sleep(10)
        return "done"


class StubbornRepr:
    """Swallows the first interruption and sleeps again."""

    def __repr__(self) -> str:
        try:
            time.sleep(10)
        except BaseException:
            time.sleep(10)
        return "done"


class BadRepr:
    def __repr__(self) -> str:
        raise ValueError("no")


def test_slow_repr_is_cut_off():
    start = time.monotonic()
    text = describe(SlowRepr())
    assert time.monotonic() - start < 5  # returned instead of hanging for 10 s
    assert text == f"{__name__}.SlowRepr · <repr too slow>"


def test_repr_that_swallows_the_interrupt_is_still_cut_off():
    start = time.monotonic()
    text = describe(StubbornRepr())
    assert time.monotonic() - start < 5
    assert text.endswith("<repr too slow>")


def test_raising_repr_and_long_repr():
    assert describe(BadRepr()) == f"{__name__}.BadRepr · <repr failed: ValueError>"

    class Long:
        def __repr__(self) -> str:
            return "Long(" + "z" * 10_000 + "\n)"

    text = describe(Long(), max_repr_chars=50)
    assert len(text.split(" · ", 1)[1]) == 50 and text.endswith("…") and "\n" not in text


def test_render_with_many_slow_reprs_stays_bounded():
    ns = {f"s{i}": SlowRepr() for i in range(40)}
    start = time.monotonic()
    text = NamespaceDigest().render(ns, budget_tokens=10_000)
    assert time.monotonic() - start < 10  # a total repr-time cap, not 40 × 0.05 s or 40 × 10 s
    assert len(text.splitlines()) == 41


def test_previous_alarm_handler_and_timer_are_restored():
    fired = []

    def mine(signum: int, frame: Any) -> None:
        fired.append(signum)

    old = signal.signal(signal.SIGALRM, mine)
    old_timer = signal.setitimer(signal.ITIMER_REAL, 100)
    try:
        describe(SlowRepr())
        describe(BadRepr())
        assert signal.getsignal(signal.SIGALRM) is mine
        remaining, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 50 < remaining <= 100
        assert fired == []
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        if old_timer[0] > 0:  # pytest-timeout's own alarm
            signal.setitimer(signal.ITIMER_REAL, *old_timer)


def test_no_repr_off_the_main_thread():
    called = []

    class Watched:
        def __repr__(self) -> str:
            called.append(1)
            return "Watched()"

    out: list[str] = []
    worker = threading.Thread(target=lambda: out.append(describe(Watched())))
    worker.start()
    worker.join(30)
    assert out == [f"{__name__}.test_no_repr_off_the_main_thread.<locals>.Watched"]
    assert called == []
    assert describe(Watched()).endswith(" · Watched()")  # on the main thread it is shown


def test_properties_getattr_and_len_of_user_classes_are_never_touched():
    touched: list[str] = []

    class Meta(type):
        def __getattribute__(cls, name: str) -> Any:
            touched.append(f"meta.{name}")
            return super().__getattribute__(name)

    class Trap(metaclass=Meta):
        @property
        def shape(self) -> Any:
            touched.append("shape")
            raise RuntimeError("shape")

        @property
        def __class__(self) -> Any:  # type: ignore[override]
            touched.append("__class__")
            raise RuntimeError("__class__")

        def __getattr__(self, name: str) -> Any:
            touched.append(f"getattr {name}")
            raise RuntimeError(name)

        def __getattribute__(self, name: str) -> Any:
            touched.append(f"getattribute {name}")
            raise RuntimeError(name)

        def __len__(self) -> int:
            touched.append("len")
            raise RuntimeError("len")

        def __iter__(self) -> Any:
            touched.append("iter")
            raise RuntimeError("iter")

    trap = Trap()
    ns = {"trap": trap, "Trap": Trap}
    digest = NamespaceDigest()
    digest.observe(ns)
    text = digest.render(ns, budget_tokens=500)
    assert fingerprint(trap) == (id(Trap),)
    assert touched == [], touched
    assert "- trap: " in text and "Trap" in line_for(text, "trap")
    assert line_for(text, "Trap").startswith("- Trap: class ")


# -- order, budget, filtering ----------------------------------------------------------------


def test_newest_and_changed_names_first_after_observe():
    ns: dict[str, Any] = {"a": 1, "b": [1], "c": "x", "d": 2.0}
    digest = NamespaceDigest()
    digest.observe(ns)
    names = [line.split(":")[0][2:] for line in lines_of(digest.render(ns, budget_tokens=500))[1:]]
    assert names == ["d", "c", "b", "a"]  # first observe: newest definition first

    ns["b"].append(2)  # changed in place: its length changed
    ns["e"] = 5  # new
    digest.observe(ns)
    names = [line.split(":")[0][2:] for line in lines_of(digest.render(ns, budget_tokens=500))[1:]]
    assert names == ["e", "b", "d", "c", "a"]

    ns["a"] = 10  # rebound
    digest.observe(ns)
    names = [line.split(":")[0][2:] for line in lines_of(digest.render(ns, budget_tokens=500))[1:]]
    assert names[0] == "a" and names[1:3] == ["e", "b"]

    ns["z"] = 0  # not observed yet: counts as newest
    names = [line.split(":")[0][2:] for line in lines_of(digest.render(ns, budget_tokens=500))[1:]]
    assert names[0] == "z"


def test_dataframe_with_a_new_column_counts_as_changed():
    df = sales()
    ns: dict[str, Any] = {"df": df, "later": 1}
    digest = NamespaceDigest()
    digest.observe(ns)
    df["extra"] = 1
    digest.observe(ns)
    assert lines_of(digest.render(ns, budget_tokens=500))[1].startswith("- df: pandas.DataFrame 1,200×4")


@pytest.mark.parametrize("counter", [None, lambda s: len(s.split()), lambda s: len(s)])
def test_budget_is_respected_with_a_more_names_line(counter):
    ns = {f"name{i}": list(range(i)) for i in range(200)}
    digest = NamespaceDigest(count_tokens=counter)
    count = counter or (lambda s: len(s) // 4 + 1)
    for budget in (1, 20, 60, 150, 400, 1000):
        text = digest.render(ns, budget_tokens=budget)
        lines = lines_of(text)
        assert lines[0] == "200 names, newest or changed first:"
        if len(lines) == 1:
            continue  # only the header fits: the header alone is allowed to exceed a tiny budget
        assert count(text) <= budget
        m = MORE.match(lines[-1])
        assert m, text
        shown = len(lines) - 2
        assert shown + int(m.group(1).replace(",", "")) == 200
    text = digest.render(ns, budget_tokens=400)
    assert len(lines_of(text)) >= 3 and lines_of(text)[1] == "- name199: list, 199 items of int"


def test_tiny_budget_still_gives_the_header():
    ns = {f"n{i}": i for i in range(10)}
    text = NamespaceDigest().render(ns, budget_tokens=1)
    assert text == "10 names, newest or changed first:"


def test_everything_fits_no_more_line():
    text = NamespaceDigest().render({"a": 1}, budget_tokens=100)
    assert text == "1 name, newest or changed first:\n- a: 1"


def test_empty_namespace_and_extra_lines():
    digest = NamespaceDigest()
    assert digest.render({}, budget_tokens=100) == "(nothing yet)"
    ex = Executor()
    assert digest.render(ex.namespace, budget_tokens=100) == "(nothing yet)"
    text = digest.render({"a": 1}, budget_tokens=100, extra=["working directory is now /tmp/x"])
    assert lines_of(text) == ["1 name, newest or changed first:", "- working directory is now /tmp/x", "- a: 1"]


def test_executor_history_and_injected_names_are_left_out():
    ex = Executor()
    ex.run("x = 1\n_private = 2")
    ex.run("x + 1")
    ex.namespace["_out"] = {2: "text"}
    digest = NamespaceDigest()
    digest.observe(ex.namespace)
    text = digest.render(ex.namespace, budget_tokens=500)
    names = sorted(line.split(":")[0][2:] for line in lines_of(text)[1:])
    assert names == sorted(ex.user_variables()) == ["_private", "x"]


def test_a_failing_description_does_not_break_the_render(monkeypatch):
    def boom(self: Any) -> Any:
        raise RuntimeError("broken pandas")

    df = sales()
    monkeypatch.setattr(pd.DataFrame, "shape", property(boom))
    text = NamespaceDigest().render({"df": df, "a": 1}, budget_tokens=500)
    assert "- df: pandas.DataFrame <could not describe: RuntimeError>" in text
    assert "- a: 1" in text


# -- no heavy imports ------------------------------------------------------------------------


def test_digest_never_imports_pandas_or_numpy():
    code = """
import json, os, sys, collections
import llmrepl.context.digest as d
def f(a, b=1): return a
ns = {"os": os, "x": 1, "xs": list(range(10)), "m": {"a": 1}, "f": f, "q": collections.deque(),
      "C": type("C", (), {}), "s": "t" * 500}
dg = d.NamespaceDigest()
dg.observe(ns)
text = dg.render(ns, budget_tokens=1000)
d.describe(ns)
print(json.dumps({"text": text, "mods": [m for m in ("pandas", "numpy", "matplotlib") if m in sys.modules]}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    result = json.loads(out.stdout)
    assert result["mods"] == []
    assert "- f: function f(a, b=1)" in result["text"]
    assert "- modules: os" in result["text"]


def test_pandas_objects_described_when_the_user_imported_pandas():
    code = """
import json, sys
import llmrepl.context.digest as d
import pandas as pd
ns = {"pd": pd, "df": pd.DataFrame({"a": [1.0, None]})}
print(json.dumps(d.NamespaceDigest().render(ns, budget_tokens=1000)))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    text = json.loads(out.stdout)
    assert "- df: pandas.DataFrame 2×1 · columns: a (float64, 1 missing)" in text
    assert "- modules: pd (pandas)" in text


# -- secrets: redacted before a value is cut, and in every line ----------------------------

SECRET = "my-very-own-secret-key-0123456789"


def test_describe_redacts_before_it_cuts_so_no_piece_of_the_key_is_left():
    from llmrepl.redact import Redactor

    red = Redactor(SECRET).redact
    blurb = "x" * 30 + SECRET + "y" * 100  # the 40-character preview would end in 10 characters of it
    assert describe(blurb, redact=red) == "str, 163 chars: 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx[REDACTED]'…"
    assert SECRET[:10] not in describe(blurb, redact=red)
    assert describe(SECRET, redact=red) == "'[REDACTED]'"
    df = pd.DataFrame({SECRET + "-and-more-words-in-a-long-column-name": [1]})
    assert describe(df, redact=red) == "pandas.DataFrame 1×1 · columns: [REDACTED]-and-more-words-in-a-long-col… (int64)"


def test_digest_render_redacts_names_keys_and_values():
    from llmrepl.redact import Redactor

    ns = {SECRET: 1, "d": {SECRET[:24]: 1}, "token": SECRET}
    text = NamespaceDigest().render(ns, budget_tokens=1000, redact=Redactor(SECRET).redact)
    assert SECRET not in text and SECRET[:12] not in text
    assert "- [REDACTED]: 1" in text and "- token: '[REDACTED]'" in text and "- d: {'[REDACTED]': 1}" in text  # a piece of it
