"""The ``.py`` export: a stored session as one script that runs with ``python FILE``.

Each cell contributes what its replay plan says (:func:`llmrepl.store.replay.plan_replay`):
all of a cell that ran to the end; of one that failed, was interrupted or hit the time
limit, the statements that completed, the rest as comments; of one with a SyntaxError,
hidden characters, or that the process died in, only comments. ``--keep-failed`` keeps a
failed cell whole inside ``try``. The only code is cells' code (IPython magics written as
the Python that does the same, by ``execution.magics.exportable``) and this module's own
fixed preludes; any other text goes in through :mod:`llmrepl.store.quoting`.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize

from llmrepl.execution.magics import exportable, shell_commands
from llmrepl.execution.risk import hidden_characters
from llmrepl.store.quoting import as_comment, as_docstring
from llmrepl.store.replay import PlannedCell, ReplayPlan, plan_replay
from llmrepl.store.transcript import CellRecord, StoredSession

__all__ = ["export_py", "keepable", "cut_off", "missing_notes"]


def _commented(code: str) -> list[str]:
    """Code that is not run, as comments: one per line (``splitlines`` breaks at every line
    break an editor shows, a superset of Python's), each made safe by ``as_comment``."""
    return [("# " + as_comment(line)).rstrip() for line in code.splitlines()]


def _indent_outside_strings(code: str, prefix: str = "    ") -> str | None:
    """Indent every line except those inside multi-line strings (their text must not change)."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(code).readline))
    except (tokenize.TokenError, SyntaxError):
        return None
    inside: set[int] = set()
    for tok in tokens:
        if tok.start[0] < tok.end[0] and tok.type not in (tokenize.NL, tokenize.NEWLINE):
            inside.update(range(tok.start[0] + 1, tok.end[0] + 1))
    lines = code.split("\n")  # Python's lines, as tokenize numbers them (not str.splitlines')
    return "\n".join(
        line if (i in inside or not line.strip()) else prefix + line
        for i, line in enumerate(lines, 1)
    ).rstrip("\n")


def _split_future(code: str) -> tuple[str, list[str]]:
    """``from __future__`` imports must open a file: take them out of a cell."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return code, []
    names: list[str] = []
    drop: set[int] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            names += [a.name for a in node.names]
            drop.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
        elif not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)):
            break
    if not names:
        return code, []
    kept = [line for i, line in enumerate(code.splitlines(), 1) if i not in drop]
    return "\n".join(kept), names


def _script_code(code: str) -> str:
    """A cell's code as plain Python for a script: IPython magics (``%time``, ``!cmd``) become
    the standard-library Python that does the same (``execution.magics.exportable``, which
    writes foreign text only as string literals); \r\n and \r read as \n, as Python reads
    them everywhere."""
    return exportable(code.replace("\r\n", "\n").replace("\r", "\n"))


def keepable(p: PlannedCell, *, syntax_error: bool = False) -> bool:
    """A cell that raised an ordinary exception (not Ctrl-C or the time limit: those may
    never end), in this session, and shows what Python reads: ``--keep-failed`` keeps it
    whole. A SyntaxError only where it can be kept (a notebook cell, not a script)."""
    rec = p.record
    return (p.action != "run" and rec.completed and not rec.undone and rec.error is not None
            and (syntax_error or rec.error_type != "SyntaxError") and not rec.interrupted
            and not rec.timed_out and not hidden_characters(rec.code))


def cut_off(p: PlannedCell) -> str:
    """What of a partly planned cell does not run: from the statement where it stopped on
    (all of the cell when the completed part is not a plain prefix of it)."""
    code = p.record.code
    return code[len(p.code):].lstrip("\n") if code.startswith(p.code) else code


def _py_cell(p: PlannedCell, futures: list[str], keep_failed: bool) -> list[str]:
    cell = p.record
    tags = []
    if cell.edited:
        tags.append("edited by you")
    if cell.source == "py":
        tags.append("/py")
    head = f"# cell {cell.cell}" + (f" ({', '.join(tags)})" if tags else "")
    if keep_failed and keepable(p):
        return _py_kept(head, cell, futures)
    if p.action == "skip" or not p.code.strip():
        return [f"{head}: left out: {as_comment(p.reason or 'nothing of it completed')}",
                *_commented(cell.code)]
    code, names = _split_future(_script_code(p.code))
    futures += [n for n in names if n not in futures]
    if p.action == "partial":
        rest = cut_off(p)
        return [f"{head}: {as_comment(p.reason)}; what completed runs here",
                code.rstrip("\n"),
                f"# left out: the rest of cell {cell.cell}, from where it stopped",
                *_commented(rest)]
    out = [head, code.rstrip("\n")]
    if cell.value is not None:
        first = cell.value.strip().splitlines()[0] if cell.value.strip() else ""
        more = " …" if len(cell.value.strip().splitlines()) > 1 or len(first) > 120 else ""
        out.append(f"# -> {as_comment(first[:120])}{more}")
    return out


def _py_kept(head: str, cell: CellRecord, futures: list[str]) -> list[str]:
    """``--keep-failed``: the whole cell inside ``try``; its traceback goes to stderr and the
    script carries on, as the session did."""
    failed = as_comment(cell.error_type or "an error")
    code, names = _split_future(_script_code(cell.code))
    futures += [n for n in names if n not in futures]
    body = _indent_outside_strings(code)
    if body is None or not body.strip():
        return [head + f": failed with {failed}; left out:", *_commented(cell.code)]
    caught = "SystemExit" if cell.error_type == "SystemExit" else "(Exception, SystemExit)"
    handler = "    pass" if cell.error_type == "SystemExit" else "    __import__('traceback').print_exc()"
    return [head + f": it failed with {failed} when it ran; kept whole (--keep-failed), and the script carries on",
            "try:", body, f"except {caught}:", handler]


def export_py(stored: StoredSession, *, keep_failed: bool = False) -> str:
    """The cells that ran, in order, as one script that runs with ``python FILE`` in a fresh
    interpreter and prints what the session printed.

    What each cell contributes is its replay plan (:func:`llmrepl.store.replay.plan_replay`):
    a cell that ran to the end in full; one that failed, was interrupted or hit the time
    limit only up to the statement where it stopped (the rest follows as comments); one
    with a SyntaxError, hidden characters, or that the process died in, as comments only.
    ``keep_failed`` keeps a failed cell whole inside ``try`` instead (its traceback goes to
    stderr and the script carries on). Declined cells are left out; edited ones are as they
    ran; trailing expressions are kept as they were (not printed; the value the REPL showed
    follows as a ``# ->`` comment). IPython magics become plain Python when
    ``execution.magics`` can say how; figures are drawn off-screen (Agg).
    """
    info = stored.info
    header = [f"# Cells run in llmrepl session {as_comment(info.id)}",
              "# Declined cells are left out; edited cells are as you ran them; a cell that failed",
              "# or was stopped runs only up to the statement where it stopped."]
    details = []
    if stored.model:
        details.append(f"model: {stored.model}")
    if info.started:
        details.append(f"started: {info.started.strftime('%Y-%m-%d %H:%M')}")
    if stored.cwd:
        details.append(f"ran in: {stored.cwd}")
    if details:  # text from outside (the server's model id, the folder's name): data, never code
        header.append(as_docstring("\n".join(["The session this came from:", *details])))
    plan = plan_replay(stored.cells)
    futures: list[str] = []
    body: list[str] = []
    for p in plan.cells:
        body += ["", ""]
        body += [f"# note: {as_comment(line)}" for line in missing_notes(plan, p.cell)]
        body += _py_cell(p, futures, keep_failed)
    running = [_script_code(_kept_code(p, keep_failed)) for p in plan.cells]
    lines = header
    if futures:
        lines += ["", f"from __future__ import {', '.join(futures)}"]
    if any(_uses_display(code) for code in running):
        lines += ["", *_DISPLAY_PRELUDE]
    if any(_MPL.search(code) for code in running) or any(p.record.figures for p in plan.cells):
        lines += ["", *_MPL_PRELUDE]
    if any(shell_commands(_kept_code(p, keep_failed)) for p in plan.cells):
        lines += ["", *_SHELL_PRELUDE]
    return "\n".join(lines + body) + "\n"


def _kept_code(p: PlannedCell, keep_failed: bool) -> str:
    """The code of ``p`` that the export runs."""
    return p.record.code if keep_failed and keepable(p) else p.code


def missing_notes(plan: ReplayPlan, cell: int | None, where: str = "here") -> list[str]:
    """A line for each name that a later cell (``cell``, or any) reads and only a left-out
    part of an earlier cell set (``ReplayPlan.missing``)."""
    return [f"cell {later} reads {name}, which only the left-out part of cell {source} set: "
            f"it may stop {where} with a NameError"
            for later, name, source in plan.missing if cell is None or later == cell]


# print()'s text is held in a buffer when stdout is a pipe or a file, a shell command's is not
_SHELL_PRELUDE = [
    "# Shell commands (!cmd, %pip) write straight to stdout: print() writes each line at once, so they stay in order.",
    "__import__('sys').stdout.reconfigure(line_buffering=True)",
]

# A cell draws with matplotlib (directly, or through pandas' or seaborn's plotting)
_MPL = re.compile(r"\b(?:matplotlib|pylab|seaborn|plotnine|plt)\b|\.plot\b|\.hist\(")

# llmrepl draws figures off-screen and never waits on plt.show(): so does the script
_MPL_PRELUDE = [
    "# Figures are drawn off-screen, as in the session: no window, and plt.show() does not wait.",
    "import os as _os",
    "import warnings as _warnings",
    '_os.environ["MPLBACKEND"] = "Agg"',
    '_warnings.filterwarnings("ignore", message="FigureCanvasAgg is non-interactive")',
    "del _os, _warnings",
]


# display() is in llmrepl's namespace, as in IPython's; a script run by python needs its own
_DISPLAY_PRELUDE = [
    "try:",
    "    from IPython.display import display",
    "except ImportError:  # outside IPython: show each object's text, as llmrepl's model saw it",
    "    def display(*objs, **kwargs):",
    "        for obj in objs:",
    "            print(obj)",
]


def _uses_display(code: str) -> bool:
    if "display" not in code:
        return False
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return any(isinstance(n, ast.Name) and n.id == "display" for n in ast.walk(tree))
