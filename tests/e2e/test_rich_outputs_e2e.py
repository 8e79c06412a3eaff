"""Jupyter-grade outputs end to end (issue 12): the installed ``llmrepl`` against the fake
server. The model displays a DataFrame and draws a plot; the next requests carry the table's
text and the figure's description (never the PNG), and ``--export x.ipynb`` writes Jupyter's
outputs: the table as ``text/html`` + ``text/plain``, the figure as ``image/png``."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import nbformat
from launch import run

TABLE = ("```python\nimport pandas as pd\n"
         "df = pd.DataFrame({'region': ['north', 'south', 'east'], 'revenue': [120, 80, 95]})\n"
         "print('rows', len(df))\ndisplay(df.head())\n```")
PLOT = "```python\ndf.plot.bar(x='region', y='revenue', title='revenue by region')\n```"


def _result_text(message: dict) -> str:
    content = message.get("content")
    return content if isinstance(content, str) else json.dumps(content)


def test_a_table_and_a_plot_reach_the_model_as_text_and_the_notebook_as_jupyter_outputs(server, clean_env, tmp_path):
    for reply in (TABLE, PLOT, "Done: north leads."):
        server.reply(reply)
    done = run(["--base-url", server.base_url, "-y", "-c", "show revenue by region"], timeout=120)
    assert done.returncode == 0, done.stderr + done.stdout
    assert len(server.requests) == 3, done.stdout
    table_fb = _result_text(server.requests[1]["messages"][-1])
    shown = table_fb[table_fb.index("Output ("):]
    assert shown.index("rows 3") < shown.index("0  north      120")  # in order, at the model's width
    assert "<table" not in table_fb
    plot_fb = _result_text(server.requests[2]["messages"][-1])
    shown = plot_fb[plot_fb.index("Output ("):]
    assert "[image saved as figure-001.png: " in shown and "revenue by region" in shown
    assert "iVBORw0KGgo" not in json.dumps(server.requests) and "image_url" not in json.dumps(server.requests)

    out = tmp_path / "x.ipynb"
    exported = run(["--export", str(out)], timeout=120)
    assert exported.returncode == 0, exported.stderr
    nb = nbformat.read(out, as_version=4)
    nbformat.validate(nb)
    table_cell, plot_cell = [c for c in nb.cells if c.cell_type == "code"]
    kinds = [(o.output_type, o.get("name")) for o in table_cell.outputs]
    assert kinds == [("stream", "stdout"), ("display_data", None)], kinds
    table = table_cell.outputs[1].data
    assert "<table" in table["text/html"] and "north" in table["text/html"] and "0  north" in table["text/plain"]
    images = [o for o in plot_cell.outputs if "image/png" in o.get("data", {})]
    assert len(images) == 1
    png = base64.b64decode(images[0].data["image/png"])
    saved = sorted(Path(clean_env / "sessions").glob("*/figure-001.png"))
    assert len(saved) == 1 and png == saved[0].read_bytes() and png.startswith(b"\x89PNG")
    journal = next(Path(clean_env / "sessions").glob("*.jsonl")).read_text()
    assert "iVBORw0KGgo" not in journal  # the journal names the figure's file, never holds it
