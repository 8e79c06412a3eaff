"""matplotlib figures as display items, as Jupyter's inline backend makes them: rendered to
PNG, saved in the figure folder, described for the model (size, titles, axis labels, what was
drawn), and closed.

Called only once matplotlib is imported (the callers check ``sys.modules``); matplotlib is
imported here inside the functions, so importing this module costs nothing.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterable
from typing import Any

from llmrepl.execution.namespace import type_module
from llmrepl.execution.outputs import DisplayData, png_size

__all__ = ["close", "describe", "figures_of", "open_figures", "render"]

MAX_AXES_SEQUENCE = 1_000  # a list or array of Axes longer than this is not looked through
MAX_DESCRIBED_AXES = 12
MAX_LABEL = 80
MAX_TICKS = 12
_modules = sys.modules


def _root(fig: Any) -> Any:
    """The top-level Figure of a Figure, SubFigure or Axes' figure."""
    from matplotlib.figure import Figure

    for _ in range(10):
        if isinstance(fig, Figure):
            return fig
        fig = getattr(fig, "figure", None)
    return None


def figures_of(value: object) -> list[Any] | None:
    """The figures ``value`` shows: a Figure, an Axes, or a list/array of Axes (as
    ``df.plot(subplots=True)`` returns); None for anything else (or an object that fails the look)."""
    try:
        return _figures_of(value)
    except Exception:
        return None


def _figures_of(value: object) -> list[Any] | None:
    module = type_module(type(value))
    if module.startswith("matplotlib."):
        from matplotlib.axes import Axes
        from matplotlib.figure import FigureBase

        if isinstance(value, (FigureBase, Axes)):
            root = _root(value if isinstance(value, FigureBase) else value.figure)
            return None if root is None else [root]
        return None
    if module == "numpy" and "numpy" in _modules and type(value) is _modules["numpy"].ndarray:
        if value.dtype != object or not 0 < value.size <= MAX_AXES_SEQUENCE:  # type: ignore[attr-defined]
            return None
        items: Iterable[Any] = value.ravel()  # type: ignore[attr-defined]
    elif type(value) in (list, tuple) and 0 < len(value) <= MAX_AXES_SEQUENCE:  # type: ignore[arg-type]
        items = value  # type: ignore[assignment]
    else:
        return None
    from matplotlib.axes import Axes

    figs: list[Any] = []
    for item in items:
        if not isinstance(item, Axes):
            return None
        root = _root(item.figure)
        if root is not None and all(root is not f for f in figs):
            figs.append(root)
    return figs or None


def open_figures() -> list[Any]:
    """The figures pyplot holds open, in number order."""
    helpers = _modules.get("matplotlib._pylab_helpers")
    if helpers is None:
        return []
    return [manager.canvas.figure for manager in helpers.Gcf.get_all_fig_managers()]


def close(figs: Iterable[Any]) -> None:
    """Close these figures in pyplot (those it holds; others are left as they are)."""
    helpers = _modules.get("matplotlib._pylab_helpers")
    if helpers is None:
        return
    for fig in figs:
        manager = getattr(getattr(fig, "canvas", None), "manager", None)
        if manager is not None and helpers.Gcf.has_fignum(manager.num):
            helpers.Gcf.destroy(manager.num)


def render(fig: Any, limit: int) -> DisplayData:
    """Draw ``fig`` to PNG and describe it (the caller saves the PNG: ``Outputs.emit``). A
    figure that cannot be drawn becomes a text item saying why."""
    try:
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        png = buf.getvalue()
    except Exception as exc:
        plain = f"[figure not drawn: {type(exc).__name__}: {str(exc)[:300]}]"
        return DisplayData({"text/plain": plain}, text=plain)
    width, height = png_size(png) or (0, 0)
    try:
        plain = repr(fig)[:limit]
    except Exception:
        plain = "<Figure>"
    metadata: dict[str, Any] = {"width": width, "height": height}
    return DisplayData({"text/plain": plain, "image/png": png}, metadata, text=describe(fig, width, height))


def _quote(text: object) -> str:
    s = " ".join(str(text).split())
    return "'" + (s if len(s) <= MAX_LABEL else s[: MAX_LABEL - 1] + "…") + "'"


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n:,} {one if n == 1 else (many or one + 's')}"


def _drawn(ax: Any) -> list[str]:
    """What an Axes holds: lines, bars, points, images, ... counted."""
    from matplotlib.collections import LineCollection, PathCollection, PolyCollection, QuadMesh
    from matplotlib.container import BarContainer
    from matplotlib.patches import Wedge

    found: list[str] = []
    lines = [line for line in ax.lines if line.get_visible()]
    if lines:
        found.append(_count(len(lines), "line"))
    bars = sum(len(c.patches) for c in ax.containers if isinstance(c, BarContainer))
    if bars:
        found.append(_count(bars, "bar"))
    wedges = sum(1 for p in ax.patches if isinstance(p, Wedge))
    if wedges:
        found.append(_count(wedges, "pie wedge"))
    points = meshes = areas = segments = 0
    for coll in ax.collections:
        if isinstance(coll, PathCollection):
            points += len(coll.get_offsets())  # type: ignore[arg-type]
        elif isinstance(coll, QuadMesh):
            meshes += 1
        elif isinstance(coll, PolyCollection):
            areas += 1
        elif isinstance(coll, LineCollection):
            segments += len(coll.get_segments())
    if points:
        found.append(_count(points, "scatter point"))
    if meshes:
        found.append(_count(meshes, "color mesh", "color meshes"))
    if areas:
        found.append(_count(areas, "filled area"))
    if segments:
        found.append(_count(segments, "line segment"))
    if ax.images:
        found.append(_count(len(ax.images), "image"))
    if not found:
        found.append("nothing drawn")
    return found


def _is_number(label: str) -> bool:
    if "\\mathdefault" in label or label.startswith("$"):  # log-scale ticks: "$\\mathdefault{10^{3}}$"
        return True
    try:
        float(label.replace("\u2212", "-").replace(",", "").rstrip("%"))
    except ValueError:
        return False
    return True


def _ticks(labels: Iterable[Any]) -> list[str]:
    """Tick labels worth telling (categories, dates); none when they are plain numbers."""
    texts = [t for t in (label.get_text() for label in labels) if t]
    return [] if all(_is_number(t) for t in texts) else texts


def _describe_axes(ax: Any) -> str:
    parts: list[str] = []
    titles = [ax.get_title(loc) for loc in ("center", "left", "right")]
    titles = [t for t in titles if t]
    if titles:
        parts.append("title " + ", ".join(_quote(t) for t in titles))
    axes = []
    if ax.get_xlabel():
        axes.append(f"x axis {_quote(ax.get_xlabel())}")
    if ax.get_ylabel():
        axes.append(f"y axis {_quote(ax.get_ylabel())}")
    if axes:
        parts.append(", ".join(axes))
    parts.append(", ".join(_drawn(ax)))
    for axis, labels in (("x", ax.get_xticklabels()), ("y", ax.get_yticklabels())):
        ticks = _ticks(labels)
        if ticks:
            shown = ", ".join(_quote(t) for t in ticks[:MAX_TICKS])
            more = f" and {len(ticks) - MAX_TICKS} more" if len(ticks) > MAX_TICKS else ""
            parts.append(f"{axis} tick labels {shown}{more}")
    legend = ax.get_legend()
    if legend is not None:
        names = [t.get_text() for t in legend.get_texts()]
        if names:
            more = f" and {len(names) - MAX_TICKS} more" if len(names) > MAX_TICKS else ""
            parts.append("legend " + ", ".join(_quote(n) for n in names[:MAX_TICKS]) + more)
    return "; ".join(parts)


def describe(fig: Any, width: int, height: int) -> str:
    """``figure 640×480 px: title 'by region'; x axis 'region', y axis 'revenue'; 4 bars``."""
    head = f"figure {width}×{height} px"
    try:
        suptitle = getattr(fig, "_suptitle", None)
        if suptitle is not None and suptitle.get_text():
            head += f", title {_quote(suptitle.get_text())}"
        axes = [ax for ax in fig.get_axes() if ax.get_visible()]
        plots = [ax for ax in axes if not hasattr(ax, "_colorbar")]
        bars = len(axes) - len(plots)
        extra = f" and {_count(bars, 'colorbar')}" if bars else ""
        if not plots:
            return f"{head}: no axes{extra}"
        if len(plots) == 1:
            return f"{head}{extra}: {_describe_axes(plots[0])}"
        shown = [f"({i}) {_describe_axes(ax)}" for i, ax in enumerate(plots[:MAX_DESCRIBED_AXES], 1)]
        more = f"; and {len(plots) - MAX_DESCRIBED_AXES} more axes" if len(plots) > MAX_DESCRIBED_AXES else ""
        return f"{head}, {len(plots)} axes{extra}: " + "; ".join(shown) + more
    except Exception as exc:  # a figure the cell left in an odd state: its size is still known
        return f"{head} (not described: {type(exc).__name__})"
