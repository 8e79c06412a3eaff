"""A matplotlib backend that never blocks and draws figures inline, as Jupyter's does.

Selected with ``MPLBACKEND=module://llmrepl.execution.mpl_backend`` (the executor sets it before
matplotlib is imported). ``plt.show()`` renders every open figure to PNG, saves it in the running
executor's figure folder, sends it as a display item (``publisher.Publisher.draw``) and closes it;
figures still open at a cell's end are drawn the same way by the executor. Only matplotlib
imports this module. See the project's research notes, ../shared/research/reliability.md §2.10 and A.6.
"""

from __future__ import annotations

import sys
from typing import Any

from matplotlib._pylab_helpers import Gcf
from matplotlib.backend_bases import FigureManagerBase, _Backend
from matplotlib.backends.backend_agg import FigureCanvasAgg

from llmrepl.execution.capture import FigureLog
from llmrepl.execution.publisher import active_publisher

__all__ = ["BACKEND", "FigureCanvas", "FigureManager", "show"]

BACKEND = "module://llmrepl.execution.mpl_backend"
_fallback_log: FigureLog | None = None  # no executor has run: figures go to a temporary folder


@_Backend.export
class _BackendLLMRepl(_Backend):
    FigureCanvas = FigureCanvasAgg
    FigureManager = FigureManagerBase

    @staticmethod
    def show(*args: Any, **kwargs: Any) -> None:
        """Draw every open figure as a display item and close them all; return at once
        (``block`` is ignored)."""
        figures = [manager.canvas.figure for manager in Gcf.get_all_fig_managers()]
        outputs = active_publisher()
        if outputs is not None:
            outputs.draw(figures)
            return
        global _fallback_log
        try:
            log = _fallback_log = _fallback_log or FigureLog()
            for figure in figures:
                sys.stdout.write(f"[figure saved: {log.save(figure)}]\n")
        finally:
            Gcf.destroy_all()


FigureCanvas = FigureCanvasAgg
FigureManager = FigureManagerBase
show = _BackendLLMRepl.show
