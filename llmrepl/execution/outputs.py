"""Rich outputs as Jupyter's MIME bundles: ``DisplayData``, ``display()``, the rich-repr protocol.

A cell yields stream text, display items and a value. Each display item, and the value, is a
:class:`DisplayData`: a MIME bundle (``text/plain`` always; ``text/html``, ``text/markdown``,
``image/png`` when the object offers them), the text the model reads (formatted at a fixed
width, never the terminal's) and, for tables, the text formatted for the screen. Objects are
asked through IPython's protocol (``_repr_mimebundle_``, ``_repr_html_``, ``_repr_markdown_``,
``_repr_png_``); every call is guarded, so one that raises, returns the wrong type, runs too long
or returns too much costs only its own MIME type, never the cell. pandas and matplotlib are
never imported here: ``tables`` and ``figures`` serve values whose type comes from them.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from llmrepl.execution.capture import CappedBuffer, safe_str
from llmrepl.execution.namespace import (
    bounded_call,
    type_dict,
    type_mro,
    type_name,
)

__all__ = [
    "MODEL_WIDTH",
    "Display",
    "DisplayData",
    "DisplayHandle",
    "PLAIN_TYPES",
    "build",
    "from_bundle",
    "plain_text",
    "png_size",
    "user_metadata",
]

MODEL_WIDTH = 100  # columns of the model's copy of a table, whatever the terminal's width
REPR_LIMIT = 3.0  # seconds a repr may take; and all of one object's rich reprs together
MAX_TEXT_MIME = 2_000_000  # characters of text/html, text/markdown, ... kept; a longer one is dropped
MAX_PNG = 20 * 1024 * 1024  # bytes of image/png kept; a larger one is dropped
MAX_MODEL_HTML = 20_000  # characters of an HTML-only output given to the model as text
_TEXT_TYPES = ("text/html", "text/markdown", "text/latex", "image/svg+xml")
_METHODS = (("_repr_html_", "text/html"), ("_repr_markdown_", "text/markdown"), ("_repr_png_", "image/png"))
_RICH_NAMES = ("_repr_mimebundle_", *(name for name, _ in _METHODS))
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Values with no rich repr and no table: only their repr is asked for.
PLAIN_TYPES = frozenset({int, float, complex, bool, str, bytes, bytearray, list, tuple, dict, set,
                          frozenset, range, type, type(None), type(Ellipsis)})
_DEFAULT_REPR = re.compile(r"<[\w.]+ object(?: at 0x[0-9a-fA-F]+)?>")
_BLOCK_END = r"(?i)<br\s*/?>|</(?:p|div|tr|li|h\d|table|thead|tbody|pre)\s*>"  # compiled on first use
_RAW_TAG = r"<(script|style)\b"  # their content is not text; compiled on first use
_modules = sys.modules
_repr, _type = repr, type


@dataclass(slots=True)
class DisplayData:
    """One rich output: a display() call, a rendered figure, or (as ExecResult.value_data) a
    cell's value. Jupyter's display_data / execute_result."""

    data: dict[str, Any]  # MIME bundle: "text/plain" always; text types str; "image/png" raw bytes
    metadata: dict[str, Any] = field(default_factory=dict)  # "filename", "width", "height"; "notes"
    at: int = 0  # characters of the cell's interleaved output written before it
    text: str = ""  # what the model reads: text/plain at a fixed width, or an image's description
    screen: str | None = None  # text/plain formatted for the screen's width (tables), when it differs


def png_size(png: bytes) -> tuple[int, int] | None:
    """Width and height of a PNG, read from its header; None when it is not a PNG."""
    if len(png) < 24 or not png.startswith(_PNG_MAGIC) or png[12:16] != b"IHDR":
        return None
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


_OWN_META = ("filename", "notes")  # llmrepl's own keys: where it saved the image, what went wrong
_MAX_SIDE = 1_000_000  # pixels: a width or height beyond this is not an image's


def user_metadata(given: Mapping[Any, Any]) -> dict[str, Any]:
    """Metadata a cell gave (``display(metadata=...)``, ``_repr_mimebundle_``), kept only where
    it cannot pass for llmrepl's own: no ``filename`` (the image is always saved, and only a
    file llmrepl saved is named on screen, to the model and in the journal) or ``notes``;
    ``width``/``height`` only as sane pixel counts (a 5,000-digit int cannot even be printed)."""
    out: dict[str, Any] = {}
    for k, v in given.items():
        key = str(k)
        if key in _OWN_META:
            continue
        if key in ("width", "height") and not (_type(v) is int and 0 < v <= _MAX_SIDE):
            continue
        out[key] = v
    return out


def _is_default_repr(text: str) -> bool:
    return len(text) < 300 and _DEFAULT_REPR.fullmatch(text) is not None


def _strip_tags(markup: str) -> str:
    """Tags, comments and script/style elements replaced by a space, in one pass: each search
    that finds no end ends the scan, so 80 KB of ``<!--`` or ``<script`` costs one pass, not
    one per ``<`` (the regular expression this replaces took 12 s on such HTML)."""
    raw = re.compile(_RAW_TAG, re.I)
    low = markup.lower()
    out: list[str] = []
    i, n = 0, len(markup)
    while (j := markup.find("<", i)) >= 0:
        out.append(markup[i:j])
        if markup.startswith("<!--", j):
            close = markup.find("-->", j + 4)
            end = n if close < 0 else close + 3  # an unclosed comment hides the rest
        elif m := raw.match(low, j):
            close = low.find("</" + m[1], m.end())
            gt = markup.find(">", close) if close >= 0 else -1
            end = n if gt < 0 else gt + 1
        else:
            gt = markup.find(">", j + 1)
            if gt < 0:  # "a < b": not a tag, and no tag follows
                out.append(markup[j:])
                return "".join(out)
            end = gt + 1
        out.append(" ")
        i = end
    out.append(markup[i:])
    return "".join(out)


def _html_text(markup: str) -> str:
    """HTML as plain text, roughly: tags out, entities decoded, blank runs collapsed."""
    import html

    text = html.unescape(_strip_tags(re.sub(_BLOCK_END, "\n", markup[: MAX_MODEL_HTML * 4])))
    lines = (" ".join(line.split()) for line in text.splitlines())
    text = "\n".join(line for line in lines if line)
    return text if len(text) <= MAX_MODEL_HTML else text[:MAX_MODEL_HTML] + " [...]"


def _capped(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    buf = CappedBuffer(limit)
    buf.add(text)
    return buf.getvalue()


def plain_text(obj: object, limit: int, bounded: bool, late: str = "") -> str:
    """``repr(obj)`` capped to ``limit``; under REPR_LIMIT s when ``bounded`` (``late`` ends the
    placeholder shown when it took longer). What the repr raises propagates."""
    if bounded:
        done, text = bounded_call(_repr, obj, seconds=REPR_LIMIT)
        if not done:
            return f"<repr of {type_name(_type(obj))} took longer than {REPR_LIMIT:g} s{late}>"
    else:
        text = _repr(obj)
    return _capped(text, limit)


class _Asker:
    """Asks one object for its rich reprs, each call guarded, all of them within REPR_LIMIT s."""

    def __init__(self, obj: object, bounded: bool, notes: list[str]) -> None:
        self.obj, self.bounded, self.notes = obj, bounded, notes
        self.deadline = time.monotonic() + REPR_LIMIT
        self.late = False

    def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """``obj.name(*args, **kwargs)``, or None (with a note) when it raised or ran too long."""
        if self.late:
            return None
        try:
            method = getattr(self.obj, name)
            if not self.bounded:
                return method(*args, **kwargs)
            left = self.deadline - time.monotonic()
            done, value = bounded_call(lambda: method(*args, **kwargs), seconds=max(left, 0.01))
        except NotImplementedError:  # the protocol's way to say "not this one" (IPython ignores it)
            return None
        except Exception as exc:
            self.notes.append(f"{name} raised {type_name(_type(exc))}: {safe_str(exc)[:200]}; not used")
            return None
        if not done:
            self.late = True
            self.notes.append(f"{name} took longer than {REPR_LIMIT:g} s; rich output skipped")
            return None
        return value


def _accept(data: dict[str, Any], mime: str, value: object, notes: list[str], source: str) -> None:
    """Put one MIME value in ``data`` if it has the right type and size; else note why not."""
    if value is None:
        return
    if mime == "image/png":
        png = value
        if isinstance(value, str):
            import base64
            import binascii

            try:
                png = base64.b64decode(value.encode("ascii"), validate=True)
            except (ValueError, binascii.Error):
                notes.append(f"{source} returned a str that is not base64; image not used")
                return
        if not isinstance(png, (bytes, bytearray)):
            notes.append(f"{source} returned {type_name(_type(value))}, not bytes; image not used")
            return
        if len(png) > MAX_PNG:
            notes.append(f"image/png dropped: {len(png):,} bytes (more than {MAX_PNG:,})")
        elif png_size(bytes(png)) is None:
            notes.append(f"{source} returned bytes that are not a PNG; image not used")
        else:
            data[mime] = bytes(png)
        return
    if not isinstance(value, str):
        notes.append(f"{source} returned {type_name(_type(value))}, not str; {mime} not used")
    elif len(value) > MAX_TEXT_MIME:
        notes.append(f"{mime} dropped: {len(value):,} characters (more than {MAX_TEXT_MIME:,})")
    else:
        data[mime] = value


def _rich_methods(t: type) -> list[str]:
    """The rich-repr methods ``t`` defines, read from the class dictionaries (an instance's
    ``__getattr__`` that answers every name does not count, as a Mock's would)."""
    found: list[str] = []
    for klass in type_mro(t):
        names = type_dict(klass)
        for name in _RICH_NAMES:
            if name in names and name not in found and names[name] is not None:
                found.append(name)
    return found


def _ask_rich(obj: object, methods: list[str], bounded: bool, include: Any, exclude: Any,
              data: dict[str, Any], metadata: dict[str, Any], notes: list[str]) -> None:
    asker = _Asker(obj, bounded, notes)
    if "_repr_mimebundle_" in methods:
        got = asker.call("_repr_mimebundle_", include=include, exclude=exclude)
        meta: object = None
        if isinstance(got, tuple) and len(got) == 2:
            got, meta = got
        if isinstance(got, Mapping):
            _take_bundle(got, data, notes, "_repr_mimebundle_")
            if isinstance(meta, Mapping):
                metadata.update(user_metadata(meta))
        elif got is not None:
            notes.append(f"_repr_mimebundle_ returned {type_name(_type(got))}, not a dict; not used")
    for name, mime in _METHODS:
        if name in methods and mime not in data:
            _accept(data, mime, asker.call(name), notes, name)


def _take_bundle(bundle: Mapping[Any, Any], data: dict[str, Any], notes: list[str], source: str) -> None:
    """The MIME types llmrepl keeps from a bundle (text/plain, text types, PNG); others are ignored."""
    for mime, value in bundle.items():
        if mime == "text/plain":
            if isinstance(value, str):
                data[mime] = value
        elif mime in _TEXT_TYPES or mime == "image/png":
            _accept(data, mime, value, notes, source)


def _filter(data: dict[str, Any], include: Any, exclude: Any) -> None:
    for mime in list(data):
        if mime != "text/plain" and ((include and mime not in include) or (exclude and mime in exclude)):
            del data[mime]


def _model_text(data: dict[str, Any], limit: int) -> str:
    """What the model reads for a bundle: its text/plain, unless that is a bare default repr
    and the object said more as Markdown or HTML."""
    plain: str = data["text/plain"]
    if _is_default_repr(plain):
        if "text/markdown" in data:
            return _capped(data["text/markdown"], limit)
        if "text/html" in data:
            return _html_text(data["text/html"]) or plain
    png = data.get("image/png")
    if png is not None:
        size = png_size(png) or (0, 0)
        return f"image {size[0]}×{size[1]} px (PNG, {len(png) / 1024:,.0f} KB): {plain}"
    return plain


def _finish(data: dict[str, Any], metadata: dict[str, Any], notes: list[str], limit: int,
            screen: str | None = None, text: str | None = None) -> DisplayData:
    png = data.get("image/png")
    if png is not None:
        size = png_size(png)
        if size is not None:
            metadata.setdefault("width", size[0])
            metadata.setdefault("height", size[1])
    if text is None:
        text = _model_text(data, limit)
    if notes:
        metadata["notes"] = list(notes)
        text += "".join(f"\n[llmrepl: {note}]" for note in notes)
    return DisplayData(data, metadata, text=text, screen=screen)


def build(obj: object, *, width: int | None = None, limit: int = 200_000, bounded: bool = True,
          include: Any = None, exclude: Any = None, late: str = "") -> DisplayData:
    """The bundle for any object: its rich reprs, pandas' tables, and text/plain from its repr
    (capped to ``limit``, under REPR_LIMIT s when ``bounded``). ``width``: the screen's columns,
    for a table's ``screen`` text. A failing plain ``repr`` propagates (it is the cell's error,
    as in Python's REPL); everything else only costs its own MIME type."""
    t = _type(obj)
    if t in PLAIN_TYPES:
        plain = plain_text(obj, limit, bounded, late)
        return DisplayData({"text/plain": plain}, text=plain)
    data: dict[str, Any] = {}
    metadata: dict[str, Any] = {}
    notes: list[str] = []
    methods = _rich_methods(t)
    if methods:
        _ask_rich(obj, methods, bounded, include, exclude, data, metadata, notes)
    table = screen = None
    if "pandas" in _modules:
        from llmrepl.execution import tables

        if tables.table_kind(obj) is not None:
            table, screen = tables.texts(obj, width, bounded, notes)
    given = data.pop("text/plain", None)
    if table is not None:
        plain = _capped(table, limit)
    elif isinstance(given, str):
        plain = _capped(given, limit)
    else:
        plain = plain_text(obj, limit, bounded, late)
    data = {"text/plain": plain, **data}
    if include or exclude:
        _filter(data, include, exclude)
    if screen is not None:
        screen = None if screen == plain else _capped(screen, limit)
    return _finish(data, metadata, notes, limit, screen, plain if table is not None else None)


def from_bundle(bundle: object, metadata: object = None, *, limit: int = 200_000) -> DisplayData:
    """``display(bundle, raw=True)``: a MIME bundle given as a dict; text/plain made if missing."""
    data: dict[str, Any] = {}
    meta: dict[str, Any] = {}
    notes: list[str] = []
    if isinstance(bundle, Mapping):
        _take_bundle(bundle, data, notes, "display(raw=True)")
    else:
        notes.append(f"display(raw=True) needs a dict of MIME type to data, not {type_name(_type(bundle))}")
    if isinstance(metadata, Mapping):
        meta.update(user_metadata(metadata))
    plain = data.get("text/plain")
    if not isinstance(plain, str):
        kinds = ", ".join(sorted(data)) or "nothing"
        plain = f"<display data: {kinds}>"
    return _finish({"text/plain": _capped(plain, limit), **data}, meta, notes, limit)


class Display:
    """``display(*objs, raw=False, metadata=None)``: show objects as rich output, as in IPython
    (``include``/``exclude`` are honoured; ``transient`` and ``clear`` are ignored; with a
    ``display_id`` it returns a handle whose ``update`` shows the new object below, since a
    terminal cannot replace what it has shown)."""

    __slots__ = ("_publisher",)

    def __init__(self, publisher: Any) -> None:
        self._publisher = publisher  # a publisher.Publisher: show(objs, raw, metadata, include, exclude)

    def __call__(self, *objs: object, raw: bool = False, metadata: object = None, include: Any = None,
                 exclude: Any = None, display_id: object = None, **ignored: Any) -> DisplayHandle | None:
        self._publisher.show(objs, raw, metadata, include, exclude)
        return DisplayHandle(self) if display_id else None

    def __repr__(self) -> str:
        return "<function display(*objs, raw=False, metadata=None): show objects as rich output>"


class DisplayHandle:
    """What ``display(obj, display_id=True)`` returns: ``update(obj)`` and ``display(obj)`` show it."""

    __slots__ = ("_display",)

    def __init__(self, display: Display) -> None:
        self._display = display

    def display(self, obj: object, **kwargs: Any) -> None:
        self._display(obj, **{k: v for k, v in kwargs.items() if k != "display_id"})

    update = display
