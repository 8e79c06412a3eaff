"""Where a cell's display items go: IPython's display publisher for one executor.

``display()``, ``plt.show()`` and the end of a cell (Jupyter's inline backend: every figure
still open is drawn and closed) make :class:`~llmrepl.execution.outputs.DisplayData` items; the
:class:`Publisher` saves their images through the executor's FigureLog and hands each to the
running cell (``items``, each with ``at``) and live to the sink's ``display``. Between cells (a
thread's display) an item goes to the sink only.
"""

from __future__ import annotations

import _signal
import os
import signal
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from llmrepl.execution.capture import Capture, CaptureRouter, FigureLog, safe_str
from llmrepl.execution.namespace import repr_can_be_bounded, type_name
from llmrepl.execution.outputs import (
    PLAIN_TYPES,
    DisplayData,
    build,
    from_bundle,
    plain_text,
    user_metadata,
)

__all__ = ["Publisher", "active_publisher", "set_active_publisher"]

_modules = sys.modules
_type, _len = type, len
MAX_ITEMS = 1_000  # display items a cell keeps in its record (the journal, the model, exports)
_getsignal, _SIGALRM = _signal.getsignal, int(signal.SIGALRM)
_IN_UNDERSCORE = "; the value itself is in _"


class Publisher:
    """One executor's display side: builds items, saves their images through its FigureLog,
    draws matplotlib figures, and hands each item to the running cell (``items``) and to the
    sink's ``display`` live; between cells (a thread's display) to the sink only."""

    def __init__(self, figures: FigureLog, router: CaptureRouter, limit: int,
                 cell_alarm: object = None) -> None:
        self.figures = figures
        self.cell_alarm = cell_alarm  # the SIGALRM handler of a cell with a time limit
        self.router = router
        self.limit = limit
        self.width: int | None = None  # the screen's columns (Executor.display_width)
        self.items: list[DisplayData] | None = None  # the running cell's, made on the first
        self.not_kept = 0  # items past MAX_ITEMS this cell: shown live, not recorded
        self.value_figures: list[Any] | None = None  # the cell's value is (or holds) these figures
        self.drawn: list[tuple[Any, DisplayData]] = []  # figures drawn in this cell, and their items

    # -- building -------------------------------------------------------------------------

    def value(self, value: object, bounded: bool) -> DisplayData:
        """The bundle of a cell's value; a Figure or Axes value is drawn at the cell's end."""
        t = _type(value)
        if t in PLAIN_TYPES:
            plain = plain_text(value, self.limit, bounded, _IN_UNDERSCORE)
            return DisplayData({"text/plain": plain}, text=plain)
        if "matplotlib" in _modules:
            from llmrepl.execution.figures import figures_of

            figs = figures_of(value)
            if figs:
                self.value_figures = figs
                plain = plain_text(value, self.limit, bounded, "")
                return DisplayData({"text/plain": plain}, text=plain)
        return build(value, width=self.width, limit=self.limit, bounded=bounded,
                     late=_IN_UNDERSCORE)

    def show(self, objs: Iterable[object], raw: bool, metadata: object, include: Any, exclude: Any) -> None:
        """``display(*objs)``: one item per object, each sent at once."""
        # as for a value: off the main thread nothing can bound a repr; a timed cell's timer already does
        bounded = repr_can_be_bounded() and _getsignal(_SIGALRM) is not self.cell_alarm
        for obj in objs:
            if raw:
                self.emit(from_bundle(obj, metadata, limit=self.limit))
                continue
            if "matplotlib" in _modules:
                from llmrepl.execution.figures import figures_of

                figs = figures_of(obj)
                if figs:
                    self.draw(figs)
                    continue
            item = self._guarded_build(obj, bounded, include, exclude)
            if isinstance(metadata, Mapping):
                item.metadata.update(user_metadata(metadata))
            self.emit(item)

    def _guarded_build(self, obj: object, bounded: bool, include: Any, exclude: Any) -> DisplayData:
        try:
            return build(obj, width=self.width, limit=self.limit, bounded=bounded,
                         include=include, exclude=exclude)
        except Exception as exc:  # its repr raised: display() costs only this item
            name = type_name(_type(obj))
            plain = f"<{name} object: repr raised {type_name(_type(exc))}: {safe_str(exc)[:200]}>"
            return DisplayData({"text/plain": plain}, text=plain)

    # -- figures and images ---------------------------------------------------------------

    def draw(self, figs: list[Any], cap: Capture | None = None) -> list[DisplayData]:
        """Render, save, send and close these figures (each once); returns their items."""
        from llmrepl.execution.figures import close, render

        items: list[DisplayData] = []
        done: list[Any] = []
        try:
            for fig in figs:
                if any(fig is d for d in done):
                    continue  # listed twice
                done.append(fig)
                item = render(fig, self.limit)
                self.drawn.append((fig, item))
                items.append(item)
                self.emit(item, cap)
        finally:
            close(figs)
        return items

    def end_cell(self, result: Any, cap: Capture) -> None:
        """Jupyter's inline backend at a cell's end (``cap``: the cell's capture, closed now):
        every open figure, and the value's unless this cell has shown it already, is drawn and
        closed; a Figure or Axes value's text says where it is shown. Never raises: a Ctrl-C
        here closes the rest undrawn, and says so."""
        from llmrepl.execution.figures import close, open_figures

        value_figs, self.value_figures = self.value_figures or [], None
        shown = {id(fig): item for fig, item in self.drawn}  # the figures stay referenced: ids hold
        figs = [fig for fig in value_figs if id(fig) not in shown]
        try:
            figs.extend(fig for fig in open_figures() if all(fig is not f for f in figs))
            if figs:
                self.draw(figs, cap)
        except BaseException as exc:  # KeyboardInterrupt mid-render; matplotlib broken by the cell
            try:
                close(figs)
                close(open_figures())
            except BaseException:
                pass
            plain = f"[figures not drawn: {type_name(_type(exc))}]"
            self.emit(DisplayData({"text/plain": plain}, text=plain), cap)
        shown = {id(fig): item for fig, item in self.drawn}
        self.drawn = []
        value = result.value_data
        if value_figs and value is not None:
            names = [os.path.basename(shown[id(f)].metadata.get("filename", "")) for f in value_figs if id(f) in shown]
            names = [n for n in names if n]
            where = f"shown as a figure ({', '.join(names)})" if names else "a figure that could not be drawn"
            value.text += f"\n[{where}]"
            result.value_repr = value.text

    # -- delivery -------------------------------------------------------------------------

    def emit(self, item: DisplayData, cap: Capture | None = None) -> None:
        """Record ``item`` in the running cell (``at``: the output written so far) and show it
        live; ``cap``: the cell's capture when it has just ended (figures drawn at its end)."""
        png = item.data.get("image/png")
        if png is not None and "filename" not in item.metadata and self.figures.enabled:
            try:
                item.metadata["filename"] = self.figures.save_png(png)
            except OSError as exc:
                note = f"the image could not be saved ({type_name(_type(exc))}: {safe_str(exc)[:200]})"
                item.metadata.setdefault("notes", []).append(note)
                item.text += f"\n[llmrepl: {note}]"
        if cap is None:
            sync = self.router.sync  # output a child wrote to fd 1/2 before this item comes first
            if sync is not None:
                sync()
            cap = self.router.capture
        if cap is not None:
            item.at = cap.chars
            items = self.items
            if items is None:
                items = self.items = []
            if _len(items) < MAX_ITEMS:
                items.append(item)
            else:  # 100k display() calls must not make a 70 MB journal line
                self.not_kept += 1
            sink = cap.sink
        else:
            sink = self.router.sink
        show = getattr(sink, "display", None) if sink is not None else None
        if show is None:
            return
        try:
            show(item)
        except Exception as exc:  # a broken terminal must not break the user's display()
            if cap is not None:
                cap.sink = None
                cap.sink_error = f"live output stopped ({type_name(_type(exc))}); the rest was captured"


    def take_items(self) -> list[DisplayData] | None:
        """The running cell's items (None if it had none), then start empty; past MAX_ITEMS
        a last item says how many more were shown and not kept."""
        items, self.items = self.items, None
        if self.not_kept and items is not None:
            note = (f"[llmrepl: {self.not_kept:,} more display items were shown but not kept "
                    f"(a cell keeps its first {MAX_ITEMS:,})]")
            items.append(DisplayData({"text/plain": note}, at=items[-1].at, text=note))
        self.not_kept = 0
        return items


_active: Publisher | None = None


def set_active_publisher(publisher: Publisher) -> None:
    """The executor about to run a cell names where ``plt.show()`` sends its figures."""
    global _active
    _active = publisher


def active_publisher() -> Publisher | None:
    """The outputs of the executor that ran last (None if none ever ran)."""
    return _active
