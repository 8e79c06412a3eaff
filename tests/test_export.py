"""/save and /export: Markdown transcript, runnable .py, valid .ipynb, written 0600."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from test_sessions import FIX_EDITED, build_session, cell, exchange, msg, write_journal

from llmrepl.errors import LLMReplError
from llmrepl.store.export import export_ipynb, export_py, transcript_markdown, write_export
from llmrepl.store.replay import plan_replay
from llmrepl.store.transcript import load_session


@pytest.fixture(scope="module")
def stored_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_session(tmp_path_factory.mktemp("export") / "state")


@pytest.fixture
def stored(stored_path: Path):
    return load_session(stored_path)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def run_script(path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["MPLBACKEND"] = "Agg"
    return subprocess.run([sys.executable, str(path)], capture_output=True, text=True,
                          cwd=path.parent, env=env, timeout=120)


# -- Markdown transcript ----------------------------------------------------------------


def test_transcript_has_messages_answers_cells_and_outputs(stored):
    md = transcript_markdown(stored)
    assert md.startswith(f"# llmrepl session {stored.info.id}\n")
    assert "- model: gpt-test" in md
    assert f"- started: {stored.info.started.strftime('%Y-%m-%d %H:%M')}" in md
    for text in ("load the numbers", "sort and plot them", "divide the total", "something broken"):
        assert f"## You\n\n{text}" in md
    # the model's answers as they were, fences included
    assert "Let me load them.\n\n```python\ndata = [3, 1, 2]" in md
    assert "That failed; take the mean instead:" in md
    # each cell: code, output, value, error
    assert "### Cell 1\n\n```python\ndata = [3, 1, 2]\nprint('loaded', len(data))\n```" in md
    assert "Output:\n\n```text\nloaded 3\n```" in md
    assert "Value:\n\n```text\n6\n```" in md
    assert "### Cell 3 · failed with ZeroDivisionError" in md
    assert "ZeroDivisionError: division by zero" in md
    assert "### Cell 4 · edited by you" in md and FIX_EDITED in md
    assert "## You ran /py\n\n### Cell 5" in md
    assert "### Cell 7 · failed with SyntaxError" in md
    # the tool call's code is shown
    assert "`run_python` call:\n\n```python\nimport matplotlib.pyplot as plt" in md


def test_transcript_notes_declines_and_leaves_out_internal_feedback(stored):
    md = transcript_markdown(stored)
    assert "_Cell not run (the user declined)._" in md
    assert "[llmrepl]" not in md and "llmrepl ran cell" not in md and "Code that ran:" not in md
    # the undone exchange is gone, and its cell with it: /undo rewound its variables
    assert "take a wrong turn" not in md and "### Cell 6" not in md
    assert "_Not shown: 1 undone exchange;" in md


def test_transcript_links_figures_relative_to_its_folder(stored, stored_path):
    figure = Path(stored.figures[0])
    root = stored_path.parents[2]  # the folder that holds state/
    md = transcript_markdown(stored, base=root)
    rel = figure.relative_to(root).as_posix()
    assert f"![{figure.name}]({rel})" in md
    # a transcript saved elsewhere links the figure by its full path
    elsewhere = transcript_markdown(stored, base=root / "somewhere" / "else")
    assert f"![{figure.name}]({figure.as_posix()})" in elsewhere
    assert f"![{figure.name}]({figure.as_posix()})" in transcript_markdown(stored)


def test_transcript_fences_survive_backticks_in_output(tmp_path):
    code = "print('```')"
    path = write_journal(tmp_path / "s.jsonl", [
        ("session_start", {"id": "s", "model": "m"}),
        *exchange("show fences", 1, code, "```\n"),
    ])
    md = transcript_markdown(load_session(path))
    assert "Output:\n\n````text\n```\n````" in md


def test_transcript_of_a_crashed_session(tmp_path):
    path = write_journal(tmp_path / "s.jsonl", [
        *exchange("start", 1, "a = 1", ""),
        ("user", {"text": "spin"}), msg("user", "spin", True), msg("assistant", "```python\nwhile True: pass\n```"),
        ("cell_start", {"cell": 2, "code": "while True: pass"}),
    ])
    md = transcript_markdown(load_session(path))
    assert "### Cell 2 · did not finish (the session ended while it ran)" in md


# -- .py ---------------------------------------------------------------------------------


def test_py_has_the_executed_cells_in_order(stored):
    py = export_py(stored)
    assert py.startswith(f"# Cells run in llmrepl session {stored.info.id}\n")
    assert "del data" not in py                              # declined: left out
    assert "# cell 4 (edited by you)\n" + FIX_EDITED in py   # edited: as it ran
    assert 'print(f"mean {mean}")' not in py                  # not as proposed
    assert "# cell 5 (/py)\nprint('direct', total)" in py
    assert "# cell 7: left out: SyntaxError\n# print('unclosed'" in py
    # the failed cell: the statements that completed, the failing one only as a comment
    why = next(p.reason for p in plan_replay(stored.cells).cells if p.cell == 3)
    assert "ZeroDivisionError" in why
    assert f'# cell 3: {why}; what completed runs here\nnote = """line one\n  line two"""\n' in py
    assert 'print("total", total)\n# left out: the rest of cell 3, from where it stopped\n# total / 0\n' in py
    order = [py.index(f"# cell {n}") for n in (1, 2, 3, 4, 5, 7)]
    assert order == sorted(order)
    assert "sum(data)\n# -> 6" in py                          # the trailing expression kept as run
    compile(py, "export.py", "exec")


def test_exported_py_reruns_with_the_same_output(stored, tmp_path):
    target = tmp_path / "analysis.py"
    assert write_export(stored, target) == f"wrote 5 cells (cell 3 in part; cell 7 left out) to {target}"
    done = run_script(target)
    assert done.returncode == 0, done.stderr
    expected = "".join(
        "".join(line for line in c.stdout.splitlines(True) if not line.startswith("[figure saved:"))
        for c in stored.cells if c.error_type != "SyntaxError"
    )
    assert done.stdout == expected and done.stderr == ""
    # --keep-failed: the failed cell whole inside try; it reports, then the script goes on
    write_export(stored, target, keep_failed=True)
    kept = run_script(target)
    assert kept.returncode == 0 and kept.stdout == expected, kept.stderr
    assert "line one\n  line two\n" in kept.stdout  # a multi-line string inside try kept its text
    assert "ZeroDivisionError: division by zero" in kept.stderr


def test_py_leaves_out_cells_that_never_finished(tmp_path):
    path = write_journal(tmp_path / "s.jsonl", [
        *exchange("a", 1, "from __future__ import annotations\nx: undefined_name = 1\nprint('x', x)", "x 1\n"),
        ("user", {"text": "b"}), msg("user", "b", True), msg("assistant", "..."),
        # a journal from before "done": how far it got is read from its traceback
        *cell(2, "import time\nwhile True: time.sleep(1)", "", interrupted=True, error_type="KeyboardInterrupt",
              error='Traceback (most recent call last):\n  File "<cell-2>", line 2, in <module>\nKeyboardInterrupt\n'),
        *cell(3, "import sys\nprint('bye')\nsys.exit(3)", "bye\n", error="SystemExit: 3\n",
              error_type="SystemExit", done=2),
        *cell(4, "print('after', x, time.time() > 0, sys.platform == sys.platform)", "after 1 True True\n"),
        *cell(5, "print('never')\nwhile True: pass", "never\n", interrupted=True, error_type="KeyboardInterrupt",
              error="KeyboardInterrupt\n"),  # where it stopped is not known: none of it
        ("cell_start", {"cell": 6, "code": "while True: pass"}),
    ])
    py = export_py(load_session(path))
    why = {p.cell: p.reason for p in plan_replay(load_session(path).cells).cells}  # in the plan's words
    assert "Ctrl-C" in why[2] and "exit()" in why[3] and "Ctrl-C" in why[5]
    assert f"# cell 2: {why[2]}; what completed runs here\nimport time\n# left out: " in py
    assert f"# cell 3: {why[3]}; what completed runs here\nimport sys\nprint('bye')\n# left out: " in py
    assert f"# cell 5: left out: {why[5]}\n# print('never')" in py
    assert "# cell 6: left out: the process died while it ran\n# while True: pass" in py
    assert py.count("from __future__ import annotations") == 1
    assert py.index("from __future__") < py.index("# cell 1")
    target = tmp_path / "s.py"
    target.write_text(py)
    done = run_script(target)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "x 1\nbye\nafter 1 True True\n"


# -- .ipynb ------------------------------------------------------------------------------


def test_ipynb_is_valid_and_holds_outputs_and_figures(stored):
    nb = nbformat.reads(export_ipynb(stored), as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == [1, 2, 3, 4, 5]  # cell 6 undone; cell 7 a SyntaxError
    assert "del data" not in [c.source for c in code]
    assert code[3].source == FIX_EDITED and code[3].metadata["llmrepl"]["edited"] is True
    markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    for text in ("load the numbers", "sort and plot them", "divide the total", "something broken"):
        assert f"**You:** {text}" in markdown
    assert "Not run (the user declined)" in markdown and "del data" in markdown
    assert "[llmrepl]" not in markdown
    # stream, figure, value
    plot = code[1]
    kinds = [o.output_type for o in plot.outputs]
    assert kinds == ["stream", "display_data", "execute_result"]
    assert plot.outputs[0].name == "stdout" and "[1, 2, 3]" in plot.outputs[0].text
    png = base64.b64decode(plot.outputs[1].data["image/png"])
    assert png == Path(stored.figures[0]).read_bytes() and png.startswith(b"\x89PNG\r\n\x1a\n")
    assert plot.outputs[2].data["text/plain"] == "6" and plot.outputs[2].execution_count == 2
    # the failing cell: what completed and what it printed; its error is in the Markdown after it
    assert code[2].source.endswith('print("total", total)') and "total / 0" not in code[2].source
    assert [o.output_type for o in code[2].outputs] == ["stream"]
    assert "```python\ntotal / 0\n```\n\n```text\nTraceback" in markdown
    assert "_Cell 7 left out: SyntaxError._\n\n```python\nprint('unclosed'\n```" in markdown
    # --keep-failed: the failed cells whole, with their errors, tagged so that nbclient runs on
    kept = [c for c in nbformat.reads(export_ipynb(stored, keep_failed=True), as_version=4).cells
            if c.cell_type == "code"]
    assert [c.execution_count for c in kept] == [1, 2, 3, 4, 5, 7]
    err = kept[2].outputs[-1]
    assert kept[2].metadata["tags"] == ["raises-exception"] and "total / 0" in kept[2].source
    assert err.output_type == "error" and err.ename == "ZeroDivisionError"
    assert err.evalue == "division by zero" and err.traceback[-1] == "ZeroDivisionError: division by zero"
    assert kept[5].outputs[0].ename == "SyntaxError" and kept[5].metadata["tags"] == ["raises-exception"]
    assert "tags" not in kept[1].metadata


def test_ipynb_without_the_figure_file_is_still_valid(tmp_path):
    path = write_journal(tmp_path / "s.jsonl", [
        *exchange("plot", 1, "plt.show()", "[figure saved: /nowhere/figure-001.png]\n"),
    ])
    stored = load_session(path)
    stored.cells[0].figures = ["/nowhere/figure-001.png"]
    nb = nbformat.reads(export_ipynb(stored), as_version=4)
    nbformat.validate(nb)
    outputs = [o.output_type for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert outputs == ["stream"]


def test_ipynb_keeps_the_models_prose_without_its_code(stored):
    nb = nbformat.reads(export_ipynb(stored), as_version=4)
    prose = [c.source for c in nb.cells if c.cell_type == "markdown" and c.source.startswith("**Model:**")]
    assert "**Model:** Let me load them." in prose
    assert "**Model:** That failed; take the mean instead:" in prose
    assert not any("```python" in p for p in prose)


# -- writing -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["t.md", "c.py", "n.ipynb", "UPPER.IPYNB"])
def test_write_export_is_private_and_atomic(stored, tmp_path, name):
    target = tmp_path / name
    target.write_text("old")
    target.chmod(0o644)
    message = write_export(stored, target)
    assert message.startswith("wrote ") and message.endswith(f" to {target}")
    assert mode(target) == 0o600 and target.read_text() != "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no temp file left behind


def test_write_export_messages(stored, tmp_path):
    assert write_export(stored, tmp_path / "t.md") == (
        f"wrote the transcript ({len(stored.messages)} messages, 6 cells) to {tmp_path / 't.md'}")
    assert write_export(stored, tmp_path / "n.ipynb") == (
        f"wrote 5 cells (cell 3 in part; cell 7 left out) to {tmp_path / 'n.ipynb'}")
    assert write_export(stored, tmp_path / "n.ipynb", keep_failed=True) == f"wrote 6 cells to {tmp_path / 'n.ipynb'}"
    assert write_export(stored, tmp_path / "k.py", keep_failed=True) == (
        f"wrote 5 cells (cell 7 left out) to {tmp_path / 'k.py'}")  # a SyntaxError cannot run in a script


def test_write_export_refuses_unknown_formats(stored, tmp_path):
    with pytest.raises(LLMReplError, match=r"^unknown export format '\.txt': use \.py, \.ipynb or \.md$"):
        write_export(stored, tmp_path / "x.txt")
    with pytest.raises(LLMReplError, match="has no suffix"):
        write_export(stored, tmp_path / "noext")
    assert list(tmp_path.iterdir()) == []


def test_write_export_reports_an_unwritable_folder(stored, tmp_path):
    with pytest.raises(LLMReplError, match="cannot write .*missing"):
        write_export(stored, tmp_path / "missing" / "x.py")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        if os.geteuid() != 0:
            with pytest.raises(LLMReplError, match="cannot write"):
                write_export(stored, locked / "x.py")
    finally:
        locked.chmod(0o700)


# -- exports are data, never code (issue 11) ---------------------------------------------


def test_every_character_stays_inside_a_comment_or_a_docstring():
    """Each code point (surrogates aside) after ``#`` or inside the header docstring: the
    line still compiles to nothing but that string, and reads back exactly."""
    import ast

    from llmrepl.store.quoting import as_comment, as_docstring

    chars = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF)
    for start in range(0, len(chars), 4096):
        chunk = chars[start:start + 4096] + '"""\\\'\n\r'
        source = f"# {as_comment(chunk)}\n{as_docstring(chunk)}\nx = 1\n"
        tree = ast.parse(source)
        assert [type(n).__name__ for n in tree.body] == ["Expr", "Assign"]
        assert ast.get_docstring(tree, clean=False) == chunk + "\n"
        assert all(c.isprintable() or c in "\t\n" for c in source)


def test_write_export_without_replace_keeps_an_existing_file(stored, tmp_path):
    from llmrepl.store.export import ExportExists

    target = tmp_path / "a.py"
    target.write_text("mine")
    with pytest.raises(ExportExists, match="exists; nothing was written"):
        write_export(stored, target, replace=False)
    assert target.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["a.py"]
    dangling = tmp_path / "gone.py"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(ExportExists):
        write_export(stored, dangling, replace=False)
    assert write_export(stored, tmp_path / "new.py", replace=False).startswith("wrote ")


def test_a_header_from_outside_is_a_docstring_not_code(tmp_path):
    import ast

    path = write_journal(tmp_path / "s.jsonl", [
        ("session_start", {"model": "m\nimport os #", "cwd": "/x\u2028y\nprint(1)", "pid": 1}),
        *exchange("a", 1, "print('ran')", "ran\n"),
    ])
    py = export_py(load_session(path))
    tree = ast.parse(py)
    doc = ast.get_docstring(tree, clean=False) or ""
    assert "model: m\nimport os #" in doc and "ran in: /x\u2028y\nprint(1)" in doc
    assert [type(n).__name__ for n in tree.body] == ["Expr", "Expr"]  # the docstring, print('ran')


# -- Jupyter outputs: display bundles (issue 12) -----------------------------------------


def build_rich_session(state: Path, sid: str = "20260102-110000-1") -> Path:
    """The real engine with display bundles: a cell that prints, displays a DataFrame-like
    table, writes to stderr, then shows a figure, with a rich value; a cell that only plots."""
    from test_sessions import DisplayData, RichExecutor, figure_display, table_display

    from llmrepl.engine.protocols import NullDisplay, ScriptedReviewer
    from llmrepl.engine.session import Session
    from llmrepl.model.client import ScriptedModel
    from llmrepl.store.catalogue import sessions_dir
    from llmrepl.store.journal import Journal

    folder = sessions_dir(state) / sid
    path = sessions_dir(state) / f"{sid}.jsonl"
    journal = Journal(path)
    journal.append("session_start", id=sid, version="0.1.0", model="gpt-test", base_url=None,
                   cwd=str(state), pid=os.getpid(), mode="interactive")
    table_code = ("import sys\nprint('rows: 2')\ndisplay(df.head())\n"
                  "print('careful', file=sys.stderr)\nprint('done')\ndf.shape")
    model = ScriptedModel([f"```python\n{table_code}\n```", "A table.",
                           "```python\nplot(df)\n```", "A plot."], model="gpt-test")
    executor = RichExecutor(figure_dir=folder)
    import types

    df = types.SimpleNamespace(head=lambda: "T", shape=(2, 2))
    executor.namespace.update(df=df, display=lambda *a, **k: None, plot=lambda d: None)
    value = DisplayData({"text/plain": "(2, 2)", "text/html": "<i>(2, 2)</i>"}, {}, 0, "(2, 2)")
    executor.extras.append(([table_display(len("rows: 2\n"))], value))
    executor.extras.append(lambda r: ([figure_display(folder / "figure-001.png", 0)], None))
    session = Session(model, executor, display=NullDisplay(), journal=journal)
    session.step("show the table", ScriptedReviewer(["run"]))
    session.step("plot it", ScriptedReviewer(["run"]))
    assert model.pending == 0 and sorted(session.executor.namespace["_out"]) == [1, 2]
    journal.append("session_end")
    journal.close()
    return path


def _code_outputs(nb) -> list[list[dict]]:
    return [c.outputs for c in nb.cells if c.cell_type == "code"]


def test_ipynb_has_jupyter_outputs_table_as_html_and_figure_as_png(tmp_path):
    from test_sessions import TABLE_HTML, TABLE_TEXT, tiny_png

    stored = load_session(build_rich_session(tmp_path / "state"))
    nb = nbformat.reads(export_ipynb(stored), as_version=4)
    nbformat.validate(nb)
    table_cell, plot_cell = _code_outputs(nb)
    # streams and the display in the order they were written, then the value
    shape = [(o.output_type, o.get("name")) for o in table_cell]
    assert shape == [("stream", "stdout"), ("display_data", None), ("stream", "stderr"), ("stream", "stdout"),
                     ("execute_result", None)]
    assert table_cell[0].text == "rows: 2\n" and table_cell[2].text == "careful\n" and table_cell[3].text == "done\n"
    assert table_cell[1].data == {"text/plain": TABLE_TEXT, "text/html": TABLE_HTML}
    assert table_cell[4].data == {"text/plain": "(2, 2)", "text/html": "<i>(2, 2)</i>"}
    assert table_cell[4].execution_count == 1
    # the figure: image/png from the saved file, once (not again from the figures list)
    images = [o for o in plot_cell if "image/png" in o.get("data", {})]
    assert len(images) == 1 and base64.b64decode(images[0].data["image/png"]) == tiny_png()
    assert images[0].output_type == "display_data" and images[0].metadata == {"image/png": {"width": 4, "height": 3}}
    assert images[0].data["text/plain"] == "<Figure size 4x3 with 1 Axes>"


def test_markdown_and_py_exports_carry_displays_as_text(tmp_path):
    from test_sessions import TABLE_TEXT

    state = tmp_path / "state"
    stored = load_session(build_rich_session(state))
    md = transcript_markdown(stored)
    assert f"Displayed:\n\n```text\n{TABLE_TEXT}\n```" in md
    assert md.count("![figure-001.png](") == 1
    script = export_py(stored)
    # display() is llmrepl's (and IPython's): the script brings its own, defined before the cells
    assert script.index("from IPython.display import display") < script.index("# cell 1")
    out = tmp_path / "s.py"
    out.write_text(script.replace("plot(df)", "pass").replace("display(df.head())", "display('T', 'U')")
                   .replace("df.shape", "1"), encoding="utf-8")
    done = run_script(out)
    assert done.returncode == 0, done.stderr
