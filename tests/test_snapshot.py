"""Snapshots: what round-trips, what is skipped and reported, limits, pruning, privacy, damage."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llmrepl.execution.executor import Executor
from llmrepl.store import snapshots as snapshot_mod
from llmrepl.store.snapshots import SnapshotError, SnapshotStore

CELL = """
import math
import numpy as np
import pandas as pd
x = 1
nums = [1, 2, {"a": (3, 4)}]
cfg = {"name": "run", "tags": {"a", "b"}}
def scaled(n):
    return n * x + math.floor(math.pi)
square = lambda v: v * v
class Point:
    def __init__(self, v):
        self.v = v
    def twice(self):
        return helper(self.v)
def helper(v):
    return 2 * v
pt = Point(21)
def fact(n):
    return 1 if n < 2 else n * fact(n - 1)
def make_counter():
    count = 0
    def step():
        nonlocal count
        count += 1
        return count
    return step
counter = make_counter()
arr = np.arange(12.0).reshape(3, 4)
df = pd.DataFrame({"a": range(5), "b": list("vwxyz")})
"""


@pytest.fixture
def ex() -> Executor:
    e = Executor()
    r = e.run(CELL)
    assert r.ok, r.error
    return e


@pytest.fixture
def store(tmp_path: Path) -> SnapshotStore:
    return SnapshotStore(tmp_path / "snaps")


def value(ex: Executor, expr: str):
    r = ex.run(f"_out = {expr}")
    assert r.ok, r.error
    return ex.namespace["_out"]


def test_values_functions_and_classes_round_trip(ex, store):
    info = store.save("cell-0001", ex.namespace)
    assert not info.skipped
    assert info.modules == {"math": "math", "np": "numpy", "pd": "pandas"}
    assert set(info.saved) >= {"x", "nums", "cfg", "scaled", "square", "Point", "pt", "fact", "counter", "arr", "df"}
    assert info.bytes > 0 and info.seconds >= 0
    ex.run("x = 99; nums.append(5); cfg['name'] = 'changed'; pt.v = 0; del scaled; counter()")
    report = store.restore("cell-0001", ex.namespace)
    assert report.complete and not report.failed and report.error is None
    assert value(ex, "x") == 1
    assert value(ex, "nums") == [1, 2, {"a": (3, 4)}]
    assert value(ex, "cfg") == {"name": "run", "tags": {"a", "b"}}
    assert value(ex, "(scaled(2), square(7), pt.twice(), fact(6), counter(), counter())") == (5, 49, 42, 720, 1, 2)
    assert value(ex, "isinstance(pt, Point) and type(pt) is Point") is True
    np.testing.assert_array_equal(value(ex, "arr"), np.arange(12.0).reshape(3, 4))
    pd.testing.assert_frame_equal(value(ex, "df"), pd.DataFrame({"a": range(5), "b": list("vwxyz")}))


def test_restored_functions_see_the_live_namespace(ex, store):
    """Cell functions read globals late, as before: they are rebound to the namespace, not a copy."""
    store.save("s", ex.namespace)
    store.restore("s", ex.namespace)
    ex.run("x = 10")
    assert value(ex, "scaled(2)") == 23
    assert value(ex, "scaled.__globals__ is globals()") is True


def test_function_using_an_unpicklable_global_is_still_saved(store):
    ex = Executor()
    ex.run("import threading\nconn = threading.Lock()\ndef busy():\n    return conn.locked()")
    info = store.save("s", ex.namespace)
    assert "busy" in info.saved and "conn" in info.skipped
    ex.run("del busy")
    store.restore("s", ex.namespace)
    assert value(ex, "busy()") is False


def test_unpicklable_values_are_skipped_reported_and_left_as_they_are(tmp_path, store):
    ex = Executor()
    path = tmp_path / "data.txt"
    path.write_text("line1\nline2\n")
    ex.namespace["path"] = str(path)
    ex.run("import threading\nlock = threading.Lock()\nfh = open(path)\nfh.readline()\n"
           "gen = (i for i in range(3))\nkeep = 1")
    info = store.save("cell-0002", ex.namespace)
    assert info.skipped["lock"].startswith("not picklable: TypeError") and "_thread.lock" in info.skipped["lock"]
    assert info.skipped["fh"].startswith("not picklable:") and "open file" in info.skipped["fh"]
    assert info.skipped["gen"].startswith("not picklable:") and "generator" in info.skipped["gen"]
    assert value(ex, "fh.tell()") == 6  # saving did not read the file
    ex.run("lock2 = lock\nlock = 'replaced'\nkeep = 2")
    report = store.restore("cell-0002", ex.namespace)
    assert set(report.kept_unrestorable) == {"lock", "fh", "gen"}
    assert report.reasons["lock"].startswith("not picklable") and not report.complete
    assert ex.namespace["lock"] == "replaced"  # not rewound, and said so
    assert "lock2" in report.removed and ex.namespace["keep"] == 1
    summary = report.summary()
    assert "could not rewind:" in summary and "lock (not picklable)" in summary
    assert summary.startswith("namespace rewound to snapshot cell-0002:")
    report.label = "before cell 3"
    assert report.summary().startswith("namespace rewound to before cell 3: ")
    ex.namespace["fh"].close()


def test_modules_are_re_imported_not_pickled(ex, store):
    store.save("s", ex.namespace)
    fresh: dict = {}
    report = store.restore("s", fresh)
    import math
    assert fresh["math"] is math and fresh["np"] is np
    assert "math" in report.restored


def test_names_added_later_are_removed_and_internal_names_untouched(ex, store):
    store.save("s", ex.namespace)
    ex.run("late = 1\nimport json\nglobals()[7] = 'odd'\nbad = 'surrogate \\ud800'\n42")
    assert "_" in ex.namespace
    report = store.restore("s", ex.namespace)
    assert set(report.removed) == {"late", "json", "bad"} and ex.namespace[7] == "odd"
    assert "late" not in ex.namespace and "json" not in ex.namespace
    for name in ("__builtins__", "__name__", "_", f"_{ex.cell_count}", "exit", "quit"):
        assert name in ex.namespace, name
    assert report.summary().endswith("restored, 3 removed")
    ex.namespace["s"] = _Refuses()  # a skip reason with a lone surrogate still makes a readable manifest
    assert "\ud800" in store.save("t", ex.namespace).skipped["s"]
    report = store.restore("t", {})
    assert report.error is None and report.kept_unrestorable == ["s"]


class _Refuses:
    def __reduce__(self):
        raise TypeError("no \ud800 way")


def test_aliases_stay_one_object(store):
    ex = Executor()
    ex.run("a = [1]\nb = a\ng = globals()")
    store.save("s", ex.namespace)
    store.restore("s", ex.namespace)
    assert value(ex, "(a is b, g is globals())") == (True, True)


def test_size_limit_keeps_small_values_and_lists_the_rest(tmp_path):
    store = SnapshotStore(tmp_path / "s", max_bytes=3 * 2**20)
    ns = {"small": 1, "big1": np.zeros(2**20 // 8 * 2), "big2": np.ones(2**20 // 8 * 2),
          "huge": np.zeros(2**20), "text": "x" * 100}
    info = store.save("s", ns)
    assert {"small", "text"} <= set(info.saved)
    assert info.skipped["huge"].startswith("too large:") and "limit" in info.skipped["huge"]
    one_big = {"big1", "big2"} & set(info.skipped)
    assert len(one_big) == 1 and info.skipped[one_big.pop()].startswith("snapshot size limit")
    assert info.bytes <= 3 * 2**20
    report = store.restore("s", ns)
    assert set(report.kept_unrestorable) == set(info.skipped)


def test_size_limit_stops_a_value_without_a_cheap_size_estimate(tmp_path):
    store = SnapshotStore(tmp_path / "s", max_bytes=2**20)
    many = [str(i) * 50 for i in range(40_000)]
    info = store.save("s", {"many": many})
    assert info.skipped["many"].startswith("too large: over the 1.0 MB limit")
    info = store.save("s", {"many": many, "ok": 1})
    assert info.skipped["many"].startswith("snapshot size limit: over the") and info.saved == ["ok"]
    assert not [f for f in os.listdir(tmp_path / "s" / "blobs") if f.endswith(".tmp")]


def test_keep_prunes_oldest_snapshots_and_their_files(tmp_path):
    store = SnapshotStore(tmp_path / "s", keep=3)
    for i in range(1, 6):
        store.save(f"cell-{i:04d}", {"v": np.full(1000, i)})
    assert store.keys() == ["cell-0003", "cell-0004", "cell-0005"]
    assert store.latest() == "cell-0005"
    assert len(os.listdir(tmp_path / "s" / "blobs")) == 3
    report = store.restore("cell-0001", {"v": 0})
    assert report.error and "no snapshot named 'cell-0001'" in report.error


def test_files_are_private(ex, tmp_path):
    folder = tmp_path / "private"
    store = SnapshotStore(folder)
    store.save("s", ex.namespace)
    for root, dirs, files in os.walk(folder):
        assert (os.stat(root).st_mode & 0o777) == 0o700, root
        for f in files:
            assert (os.stat(os.path.join(root, f)).st_mode & 0o777) == 0o600, f
    assert not [f for f in os.listdir(folder / "blobs") if f.endswith(".tmp")]


def test_corrupted_value_file_is_reported_and_the_rest_restored(store, tmp_path):
    ns = {"a": list(range(100)), "b": "bee"}
    store.save("s", ns)
    manifest = json.loads(next((tmp_path / "snaps" / "manifests").iterdir()).read_text())
    blob = next(e["blob"] for e in manifest["entries"] if e["name"] == "a")
    path = tmp_path / "snaps" / "blobs" / f"{blob}.pkl"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    ns.update(a="now", b="changed", c=3)
    report = store.restore("s", ns)
    assert "corrupted" in report.failed["a"] and ns["a"] == "now"
    assert ns["b"] == "bee" and "c" not in ns
    assert not report.complete and "failed to load: a (" in report.summary()
    path.unlink()
    assert "missing" in store.restore("s", ns).failed["a"]


def test_corrupted_manifest_leaves_namespace_untouched(store, tmp_path):
    ns = {"a": 1}
    store.save("s", ns)
    next((tmp_path / "snaps" / "manifests").iterdir()).write_text('{"format": 1, "entr')
    ns["a"], ns["later"] = 2, 3
    report = store.restore("s", ns)
    assert report.error and "unreadable" in report.error
    assert ns == {"a": 2, "later": 3} and not report.restored and not report.removed
    assert report.summary().startswith("namespace NOT rewound")


def test_value_that_fails_to_unpickle_is_reported(store):
    ns = {"obj": _Fragile(), "n": 1}
    store.save("s", ns)
    _Fragile.broken = True
    try:
        report = store.restore("s", ns)
    finally:
        _Fragile.broken = False
    assert report.failed["obj"].startswith("could not load: RuntimeError")
    assert report.restored == ["n"]


class _Fragile:
    broken = False

    def __init__(self):
        self.payload = 1

    def __setstate__(self, state):
        if _Fragile.broken:
            raise RuntimeError("cannot rebuild")
        self.__dict__.update(state)


def test_fifty_megabyte_array_is_saved_and_measured(store):
    big = np.random.default_rng(0).random(50 * 2**20 // 8)
    info = store.save("s", {"big": big})
    assert info.saved == ["big"] and info.bytes >= big.nbytes and info.written == info.bytes
    ns: dict = {}
    store.restore("s", ns)
    np.testing.assert_array_equal(ns["big"], big)


def test_unchanged_values_are_not_written_again(ex, store, tmp_path):
    first = store.save("cell-0001", ex.namespace)
    second = store.save("cell-0002", ex.namespace)
    assert first.written > 0 and second.written == 0 and second.bytes == first.bytes
    ex.run("x = 2")
    third = store.save("cell-0003", ex.namespace)
    assert 0 < third.written < first.written
    store.restore("cell-0002", ex.namespace)
    assert ex.namespace["x"] == 1


def test_saving_a_key_again_replaces_it(store):
    store.save("a", {"v": 1})
    store.save("b", {"v": 2})
    store.save("a", {"v": 3})
    assert store.keys() == ["b", "a"]
    ns: dict = {}
    store.restore("a", ns)
    assert ns == {"v": 3}


def test_bad_keys_are_refused(store):
    for key in ("../x", "", ".hidden", "a/b"):
        with pytest.raises(ValueError):
            store.save(key, {})


def test_disk_failure_raises_snapshot_error(store, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(snapshot_mod.os, "fsync", full)
    with pytest.raises(SnapshotError, match="No space left"):
        store.save("s", {"v": [1, 2, 3]})
    monkeypatch.undo()
    assert store.keys() == []


def test_snapshot_restores_in_a_fresh_process(ex, store, tmp_path):
    store.save("cell-0001", ex.namespace)
    code = textwrap.dedent(f"""
        from llmrepl.execution.executor import Executor
        from llmrepl.store.snapshots import SnapshotStore
        ex = Executor()
        report = SnapshotStore({str(tmp_path / "snaps")!r}).restore("cell-0001", ex.namespace)
        assert report.complete, report.summary()
        r = ex.run("(scaled(2), square(3), pt.twice(), type(pt) is Point, fact(5), counter(), "
                   "int(arr.sum()), df.b.tolist())")
        assert r.ok, r.error
        print(r.value_repr)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(5, 9, 42, True, 120, 1, 66, ['v', 'w', 'x', 'y', 'z'])"


def test_import_does_not_load_cloudpickle_or_pandas():
    code = "import sys, llmrepl.store.snapshots; print(' '.join(sys.modules))"
    mods = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    for heavy in ("cloudpickle", "pandas", "numpy"):
        assert heavy not in mods, heavy
