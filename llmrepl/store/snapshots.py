"""Snapshots of the user's namespace, so ``/undo`` and resume can rewind variables.

Each value is pickled on its own (:mod:`llmrepl.store.pickler`; one bad value spoils nothing
else) into a content-addressed blob (``blobs/<sha256>.pkl``); a snapshot is a small JSON
manifest naming its blobs, written last, so a snapshot exists only once complete. Unchanged
values cost no new file. Modules are recorded by name and re-imported. What could not be
saved is listed, and a restore reports it rather than claim a rewind that did not happen.
Files are 0600 in 0700 folders, written atomically (temp file, fsync, rename). One store per
folder; not thread-safe.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import pickle
import re
import sys
import time
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmrepl.errors import LLMReplError
from llmrepl.execution.namespace import is_user_name
from llmrepl.redact import Redactor, SecretInData
from llmrepl.store.fileio import fsync_dir, private_dirs, private_temp
from llmrepl.store.pickler import (
    BlobWriter,
    DiskError,
    TooLarge,
    dump,
    estimate_size,
    is_immutable,
    loading_into,
)

__all__ = ["RestoreReport", "SnapshotError", "SnapshotInfo", "SnapshotStore"]

FORMAT = 1
_KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}\Z")
_MANIFEST_RE = re.compile(r"(\d{8})-(.+)\.json\Z")
_CHUNK = 1 << 20
_MB = 2**20
_STALE_TEMP_SECONDS = 3600
_SECRET = "holds the API key, kept off disk"


class SnapshotError(LLMReplError):
    """The snapshot folder could not be written (disk full, permissions)."""


class _Unreadable(Exception):
    """A load problem whose message is already written for the person."""


@dataclass
class SnapshotInfo:
    """What one ``save()`` stored and what it had to leave out."""

    key: str
    saved: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)   # name -> reason
    modules: dict[str, str] = field(default_factory=dict)   # name -> module name
    bytes: int = 0           # size of the snapshot's values (reused blobs included)
    seconds: float = 0.0
    written: int = 0         # bytes newly written to disk (unchanged values are not rewritten)


@dataclass
class RestoreReport:
    """What ``restore()`` did to the namespace; ``summary()`` is the line shown to the person."""

    key: str = ""
    restored: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    kept_unrestorable: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)   # name -> load error; current value kept
    reasons: dict[str, str] = field(default_factory=dict)  # kept_unrestorable name -> why not saved
    error: str | None = None   # the whole snapshot was unusable; the namespace was not touched
    label: str = ""            # how summary() names the point rewound to, e.g. "before cell 7"

    @property
    def complete(self) -> bool:
        """True only if every name is now exactly as it was in the snapshot."""
        return self.error is None and not self.failed and not self.kept_unrestorable

    def summary(self) -> str:
        where = self.label or f"snapshot {self.key}"
        if self.error is not None:
            return f"namespace NOT rewound to {where}: {self.error}; variables were kept as they are"
        text = (f"namespace rewound to {where}: {_count(len(self.restored), 'name')} restored, "
                f"{len(self.removed)} removed")
        if self.kept_unrestorable:
            text += "; could not rewind: " + ", ".join(
                f"{n} ({_short(self.reasons.get(n, 'not saved'))})" for n in self.kept_unrestorable)
        if self.failed:
            text += "; failed to load: " + ", ".join(
                f"{n} ({_clip(e, 80)})" for n, e in self.failed.items())
        return text


class SnapshotStore:
    """Saves and restores the picklable part of a namespace under string keys."""

    def __init__(self, folder: Path, *, max_bytes: int = 256 * _MB, keep: int = 50,
                 redactor: Redactor | None = None) -> None:
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self.folder = Path(folder)
        self.redactor = redactor or Redactor()  # what holds a secret stays off disk (Session sets it)
        self.max_bytes = max_bytes
        self.keep = keep
        self._blobs = self.folder / "blobs"
        self._manifests = self.folder / "manifests"
        self._reuse: dict[str, tuple[Any, str, int]] = {}  # name -> (immutable value, digest, size)
        self._refs: dict[str, set[str]] = {}  # manifest file name -> digests (a read cache)
        try:
            for d in (self.folder, self._blobs, self._manifests):
                private_dirs(d, top=self.folder.parent.parent)  # 0700 whatever the umask; no symlinks
        except OSError as e:
            raise SnapshotError(f"cannot use the snapshot folder {self.folder}: {e.strerror or e}; "
                                "check its permissions or turn snapshots off") from e

    # -- public API ---------------------------------------------------------------------

    def keys(self) -> list[str]:
        """Snapshot keys, oldest first."""
        return [key for _, key, _ in self._list()]

    def latest(self) -> str | None:
        keys = self.keys()
        return keys[-1] if keys else None

    def save(self, key: str, namespace: Mapping[str, Any]) -> SnapshotInfo:
        """Snapshot the user's names in ``namespace`` (pass the live dict cells run in).

        Raises :class:`SnapshotError` only when the folder cannot be written.
        """
        start = time.perf_counter()
        if not _KEY_RE.match(key):
            raise ValueError(f"bad snapshot key {key!r}: use letters, digits, '.', '_' or '-'")
        info = SnapshotInfo(key=key)
        entries: dict[str, dict[str, Any]] = {}
        first_by_id: dict[int, str] = {}
        candidates: list[tuple[int, str, Any]] = []
        for name, value in list(namespace.items()):
            if not is_user_name(name, value):
                continue
            if self.redactor.holds_secret(name):  # ``globals()[key] = ...``: not even the name
                info.skipped[self.redactor.redact(name)] = _SECRET
                continue
            if value is namespace:  # ``g = globals()``
                entries[name] = {"kind": "namespace"}
            elif isinstance(value, types.ModuleType):
                modname = getattr(value, "__name__", None)
                if isinstance(modname, str) and sys.modules.get(modname) is value:
                    entries[name] = {"kind": "module", "module": modname}
                    info.modules[name] = modname
                else:
                    info.skipped[name] = f"not importable by name: module {modname!r} is not in sys.modules"
            elif id(value) in first_by_id:  # two names for one object stay one object
                entries[name] = {"kind": "alias", "of": first_by_id[id(value)]}
            else:
                first_by_id[id(value)] = name
                candidates.append((estimate_size(value), name, value))
        # Smallest first, so the size limit leaves out the big values, not whatever came last.
        candidates.sort(key=lambda c: c[0])
        used = 0
        reuse: dict[str, tuple[Any, str, int]] = {}
        try:
            for estimate, name, value in candidates:
                left = self.max_bytes - used
                if estimate > self.max_bytes:
                    info.skipped[name] = f"too large: {_mb(estimate)} > {_mb(self.max_bytes)} limit"
                    continue
                if estimate > left:
                    info.skipped[name] = f"snapshot size limit: {_mb(estimate)} > {_mb(left)} left"
                    continue
                cached = self._reuse.get(name)
                if cached is not None and cached[0] is value and (self._blobs / f"{cached[1]}.pkl").exists():
                    digest, size = cached[1], cached[2]
                else:
                    try:
                        digest, size, new = self._write_blob(value, namespace, left)
                    except DiskError:
                        raise
                    except SecretInData:
                        info.skipped[name] = _SECRET
                        continue
                    except TooLarge:
                        info.skipped[name] = (f"too large: over the {_mb(self.max_bytes)} limit"
                                              if left == self.max_bytes else
                                              f"snapshot size limit: over the {_mb(left)} left")
                        continue
                    except Exception as e:  # pickling ran user code (__reduce__): anything goes
                        why = self.redactor.redact(str(e))
                        info.skipped[name] = f"not picklable: {type(e).__name__}: {_clip(why, 200)}"
                        continue
                    info.written += size if new else 0
                used += size
                entries[name] = {"kind": "pickle", "blob": digest, "bytes": size}
                if is_immutable(value):
                    reuse[name] = (value, digest, size)
        except DiskError as e:
            raise SnapshotError(f"cannot write snapshot {key} to {self.folder}: {e}") from e.__cause__
        ordered: list[dict[str, Any]] = []
        for name in namespace:
            entry = entries.get(name)
            if entry is None:
                continue
            if entry["kind"] == "alias" and entry["of"] in info.skipped:
                info.skipped[name] = info.skipped[entry["of"]] + f" (same object as {entry['of']})"
                continue
            ordered.append({"name": name, **entry})
            info.saved.append(name)
        info.bytes = used
        info.seconds = time.perf_counter() - start
        manifest = {"format": FORMAT, "key": key, "created": time.time(), "entries": ordered,
                    "skipped": info.skipped, "bytes": used}
        if info.written:
            fsync_dir(self._blobs)
        self._write_manifest(key, manifest)
        self._reuse = reuse
        self._prune()
        info.seconds = time.perf_counter() - start
        return info

    def restore(self, key: str, namespace: dict[str, Any]) -> RestoreReport:
        """Make the user's names in ``namespace`` those of snapshot ``key``, as far as possible.

        Never raises for a missing or damaged snapshot: the report says what happened. Every
        value is loaded before the namespace is touched.
        """
        report = RestoreReport(key=key)
        try:
            manifest = self._read_manifest(key)
        except Exception as e:
            report.error = str(e) if isinstance(e, _Unreadable) else f"snapshot {key} is unreadable: {e}"
            return report
        entries: list[dict[str, Any]] = manifest["entries"]
        skipped = {str(k): str(v) for k, v in manifest["skipped"].items()}
        values: dict[str, Any] = {}
        with loading_into(namespace):
            for entry in entries:
                name, kind = entry["name"], entry["kind"]
                try:
                    if kind == "pickle":
                        values[name] = self._load_blob(entry["blob"], entry["bytes"])
                    elif kind == "module":
                        values[name] = importlib.import_module(entry["module"])
                    elif kind == "namespace":
                        values[name] = namespace
                    elif kind == "alias":
                        if entry["of"] not in values:
                            raise _Unreadable(f"same object as {entry['of']}, which did not load")
                        values[name] = values[entry["of"]]
                    else:
                        raise _Unreadable(f"unknown entry kind {kind!r}")
                except _Unreadable as e:
                    report.failed[name] = str(e)
                except Exception as e:
                    report.failed[name] = f"could not load: {type(e).__name__}: {_clip(str(e), 200)}"
        known = {e["name"] for e in entries} | set(skipped)
        for name, value in list(namespace.items()):
            if name not in known and is_user_name(name, value) and self.redactor.redact(name) not in known:
                del namespace[name]
                report.removed.append(name)
        for name, value in values.items():
            namespace[name] = value
            report.restored.append(name)
        report.kept_unrestorable = list(skipped)
        report.reasons = dict(skipped)
        return report

    # -- files --------------------------------------------------------------------------

    def _list(self) -> list[tuple[int, str, str]]:
        """(seq, key, file name) of every manifest, oldest first."""
        out = []
        for fname in os.listdir(self._manifests):
            m = _MANIFEST_RE.match(fname)
            if m:
                out.append((int(m.group(1)), m.group(2), fname))
        out.sort()
        return out

    def _write_blob(self, value: Any, namespace: Mapping[str, Any], limit: int) -> tuple[str, int, bool]:
        """Pickle ``value`` into the blob store: (digest, size, newly written)."""
        try:
            fd, tmp = private_temp(self._blobs)
        except OSError as e:
            raise DiskError(e.strerror or str(e)) from e
        try:
            with os.fdopen(fd, "wb") as f:
                writer = BlobWriter(self.redactor.guard(f), limit)
                dump(value, namespace, writer)
                digest = writer.hash.hexdigest()
                path = self._blobs / f"{digest}.pkl"
                if _size_of(path) == writer.size:  # the same bytes are already stored
                    os.unlink(tmp)
                    return digest, writer.size, False
                try:
                    f.flush()
                    os.fsync(f.fileno())
                except OSError as e:
                    raise DiskError(e.strerror or str(e)) from e
            try:
                os.replace(tmp, path)  # the folder is fsynced once per save, before the manifest
            except OSError as e:
                raise DiskError(e.strerror or str(e)) from e
            return digest, writer.size, True
        except BaseException:
            _unlink_quiet(tmp)
            raise

    def _load_blob(self, digest: str, size: int) -> Any:
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise _Unreadable("snapshot manifest is corrupted (bad file name)")
        try:
            f = open(self._blobs / f"{digest}.pkl", "rb")
        except FileNotFoundError:
            raise _Unreadable("snapshot file is missing") from None
        with f:
            h, total, buf = hashlib.sha256(), 0, bytearray(_CHUNK)
            view = memoryview(buf)
            while n := f.readinto(buf):
                h.update(view[:n])
                total += n
            if total != size or h.hexdigest() != digest:
                raise _Unreadable("snapshot file is corrupted (checksum mismatch)")
            f.seek(0)
            return pickle.load(f)

    def _write_manifest(self, key: str, manifest: dict[str, Any]) -> None:
        existing = self._list()
        seq = existing[-1][0] + 1 if existing else 1
        fname = f"{seq:08d}-{key}.json"
        data = json.dumps(manifest).encode("ascii")  # escaped: lone surrogates cannot break it
        try:
            fd, tmp = private_temp(self._manifests)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self._manifests / fname)
            except BaseException:
                _unlink_quiet(tmp)
                raise
            fsync_dir(self._manifests)
        except OSError as e:
            raise SnapshotError(f"cannot write snapshot {key} to {self.folder}: {e.strerror or e}") from e
        for _, old_key, old in existing:
            if old_key == key:  # saved again under the same key: the new one replaces it
                _unlink_quiet(self._manifests / old)

    def _read_manifest(self, key: str) -> dict[str, Any]:
        found = [fname for _, k, fname in self._list() if k == key]
        if not found:
            raise _Unreadable(f"no snapshot named {key!r} (it may have been pruned)")
        try:
            manifest = json.loads((self._manifests / found[-1]).read_bytes())
            ok = (isinstance(manifest, dict) and manifest.get("format") == FORMAT
                  and isinstance(manifest.get("skipped"), dict)
                  and isinstance(manifest.get("entries"), list)
                  and all(isinstance(e, dict) and isinstance(e.get("name"), str) and "kind" in e
                          for e in manifest["entries"]))
        except (OSError, ValueError) as e:
            raise _Unreadable(f"snapshot {key} is unreadable ({type(e).__name__}: {_clip(str(e), 120)})") from e
        if not ok:
            raise _Unreadable(f"snapshot {key} is unreadable (unexpected format)")
        return manifest

    def _prune(self) -> None:
        """Keep the newest ``keep`` snapshots; delete blobs nothing refers to any more."""
        listed = self._list()
        for _, _, fname in listed[: max(0, len(listed) - self.keep)]:
            _unlink_quiet(self._manifests / fname)
            self._refs.pop(fname, None)
        referenced: set[str] = set()
        for _, _, fname in listed[-self.keep:]:
            refs = self._refs.get(fname)
            if refs is None:
                try:
                    data = json.loads((self._manifests / fname).read_bytes())
                    refs = {e["blob"] for e in data["entries"] if e.get("kind") == "pickle"}
                except Exception:  # an unreadable snapshot cannot be restored; its blobs may go
                    refs = set()
                self._refs[fname] = refs
            referenced |= refs
        now = time.time()
        for fname in os.listdir(self._blobs):
            path = self._blobs / fname
            if fname.endswith(".pkl") and fname[:-4] not in referenced:
                _unlink_quiet(path)
            elif fname.endswith(".tmp"):  # left by a crash mid-save
                try:
                    if now - path.stat().st_mtime > _STALE_TEMP_SECONDS:
                        path.unlink()
                except OSError:
                    pass


# -- helpers ----------------------------------------------------------------------------


def _size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1


def _unlink_quiet(path: str | Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _mb(n: int) -> str:
    return f"{n / _MB:.0f} MB" if n >= 10 * _MB else f"{n / _MB:.1f} MB"


def _clip(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _short(reason: str) -> str:
    return reason.split(":", 1)[0]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
