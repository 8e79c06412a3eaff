"""A matplotlib backend that never blocks: ``plt.show()`` saves each open figure as a PNG.

Selected with ``MPLBACKEND=module://llmrepl.execution.mpl_backend`` (the executor sets it before
matplotlib is imported). Figures go to the running executor's figure folder, and a line
``[figure saved: PATH]`` is written to ``sys.stdout`` so the cell's output shows it.
Only matplotlib imports this module. See the project's research notes, ../shared/research/reliability.md §2.10 and A.6.
"""

from __future__ import annotations

import sys
from typing import Any

from matplotlib._pylab_helpers import Gcf
from matplotlib.backend_bases import FigureManagerBase, _Backend
from matplotlib.backends.backend_agg import FigureCanvasAgg

from llmrepl.execution.capture import active_figure_log

__all__ = ["BACKEND", "FigureCanvas", "FigureManager", "show"]

BACKEND = "module://llmrepl.execution.mpl_backend"


@_Backend.export
class _BackendLLMRepl(_Backend):
    FigureCanvas = FigureCanvasAgg
    FigureManager = FigureManagerBase

    @staticmethod
    def show(*args: Any, **kwargs: Any) -> None:
        """Save every open figure, close them all, return at once (``block`` is ignored)."""
        log = active_figure_log()
        try:
            for manager in Gcf.get_all_fig_managers():
                path = log.save(manager.canvas.figure)
                sys.stdout.write(f"[figure saved: {path}]\n")
        finally:
            Gcf.destroy_all()


FigureCanvas = FigureCanvasAgg
FigureManager = FigureManagerBase
show = _BackendLLMRepl.show
