"""Rich outputs: display(), the rich-repr protocol, pandas tables, matplotlib figures inline."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import textwrap

import pytest

from llmrepl.execution import outputs
from llmrepl.execution.executor import Executor
from llmrepl.execution.namespace import is_user_name
from llmrepl.execution.outputs import DisplayData, build, png_size

SALES = """
import numpy as np
import pandas as pd
rng = np.random.default_rng(0)
df = pd.DataFrame({
    "region": rng.choice(["east", "west", "north", "south"], 1000),
    "channel": rng.choice(["online", "retail"], 1000),
    "month": rng.choice(["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug"], 1000),
    "revenue": rng.random(1000) * 1000,
})
"""
MONTHS = ["apr", "aug", "feb", "jan", "jul", "jun", "mar", "may"]


class Sink:
    def __init__(self) -> None:
        self.items: list[tuple[str, object]] = []

    def write(self, stream: str, text: str) -> None:
        self.items.append((stream, text))

    def display(self, item: DisplayData) -> None:
        self.items.append(("display", item))


@pytest.fixture
def ex(tmp_path):
    return Executor(figure_dir=tmp_path / "figs")


def png(width: int = 3, height: int = 2) -> bytes:
    """A real PNG of that size, made with matplotlib's writer (no PIL needed)."""
    import io

    import numpy as np
    from matplotlib import image

    buf = io.BytesIO()
    image.imsave(buf, np.zeros((height, width, 3)), format="png")
    return buf.getvalue()


# -- display() in the namespace -------------------------------------------------------------


def test_display_is_in_every_namespace_and_is_not_a_user_variable(ex):
    r = ex.run("display('a', [1, 2])\nprint('after')\ndisplay(3)")
    assert r.ok, r.error
    assert [d.data for d in r.displays] == [{"text/plain": "'a'"}, {"text/plain": "[1, 2]"}, {"text/plain": "3"}]
    assert [d.text for d in r.displays] == ["'a'", "[1, 2]", "3"]
    assert [d.at for d in r.displays] == [0, 0, len("after\n")]
    assert "display" not in ex.user_variables()
    assert is_user_name("display", 5)  # a user's own variable called display is theirs
    ex.reset()
    assert ex.run("display(1)").displays[0].text == "1"


def test_display_items_reach_the_sink_live_in_order(tmp_path):
    sink = Sink()
    ex = Executor({"seen": sink.items}, sink=sink, figure_dir=tmp_path)
    r = ex.run("print('x')\ndisplay(42)\nn = len(seen)")
    assert ex.namespace["n"] == 3  # shown before the cell ended
    assert [kind for kind, _ in sink.items] == ["stdout", "stdout", "display"]
    assert sink.items[2][1] is r.displays[0]


def test_a_sink_whose_display_fails_costs_only_the_live_view(tmp_path):
    class Broken(Sink):
        def display(self, item: DisplayData) -> None:
            raise BrokenPipeError

    ex = Executor(sink=Broken(), figure_dir=tmp_path)
    r = ex.run("display(1); print('still'); 2")
    assert r.ok and r.stdout == "still\n" and r.value_repr == "2" and r.displays[0].text == "1"
    assert any("live output stopped" in x for x in r.repairs)


def test_display_with_an_id_returns_a_handle_that_shows_updates(ex):
    r = ex.run("h = display('v1', display_id=True)\nh.update('v2')\nh.display('v3')\nh2 = display(1)\nh2")
    assert r.ok, r.error
    assert [d.text for d in r.displays] == ["'v1'", "'v2'", "'v3'", "1"] and r.value_repr is None


def test_display_raw_bundles_and_metadata(ex):
    r = ex.run("display({'text/markdown': '# Hi', 'text/plain': 'Hi'}, raw=True, metadata={'k': 1})\n"
               "display({'text/html': '<b>x</b>'}, raw=True)")
    first, second = r.displays
    assert first.data == {"text/plain": "Hi", "text/markdown": "# Hi"} and first.metadata == {"k": 1}
    assert second.data["text/html"] == "<b>x</b>" and second.data["text/plain"] == "<display data: text/html>"


# -- the rich-repr protocol -------------------------------------------------------------------


def test_each_rich_repr_method_is_honoured(ex, tmp_path):
    image = png(3, 2)
    ex.namespace["IMAGE"] = image
    r = ex.run(textwrap.dedent("""
        import base64
        class H:
            def _repr_html_(self): return '<p>one &amp; two</p>'
        class M:
            def _repr_markdown_(self): return '**bold**'
        class P:
            def _repr_png_(self): return IMAGE
        class P64:
            def _repr_png_(self): return base64.b64encode(IMAGE).decode()
        class B:
            def _repr_mimebundle_(self, include=None, exclude=None):
                return {'text/plain': 'B plain', 'text/html': '<i>B</i>', 'application/x-unknown': 1}, {'m': 2}
        display(H(), M(), P(), P64(), B())
        """))
    assert r.ok, r.error
    h, m, p, p64, b = r.displays
    assert h.data["text/html"] == "<p>one &amp; two</p>" and h.text == "one & two"  # the model reads the HTML as text
    assert m.data["text/markdown"] == "**bold**" and m.text == "**bold**"
    for item in (p, p64):
        assert item.data["image/png"] == image
        assert (item.metadata["width"], item.metadata["height"]) == (3, 2)
        with open(item.metadata["filename"], "rb") as f:  # saved in the figure folder
            assert f.read() == image
        assert item.text.startswith("image 3×2 px (PNG")
    assert r.figures == [p.metadata["filename"], p64.metadata["filename"]]
    assert b.data == {"text/plain": "B plain", "text/html": "<i>B</i>"} and b.metadata == {"m": 2}
    assert b.text == "B plain"


def test_a_failing_or_wrong_rich_repr_falls_back_to_text(ex):
    r = ex.run(textwrap.dedent("""
        class Bad:
            def _repr_html_(self): raise ValueError('no html today')
            def __repr__(self): return 'Bad()'
        class Wrong:
            def _repr_html_(self): return 42
            def _repr_png_(self): return b'not a png'
            def __repr__(self): return 'Wrong()'
        class Later:
            def _repr_html_(self): raise NotImplementedError
            def __repr__(self): return 'Later()'
        display(Bad(), Wrong(), Later())
        Bad()
        """))
    assert r.ok, r.error
    bad, wrong, later = r.displays
    assert bad.data == {"text/plain": "Bad()"}
    assert bad.text == "Bad()\n[llmrepl: _repr_html_ raised ValueError: no html today; not used]"
    assert bad.metadata["notes"] == ["_repr_html_ raised ValueError: no html today; not used"]
    assert wrong.data == {"text/plain": "Wrong()"}
    assert "_repr_html_ returned int, not str" in wrong.text and "not a PNG" in wrong.text
    assert later.data == {"text/plain": "Later()"} and later.text == "Later()"  # the protocol's "no"
    assert r.value_data.data == {"text/plain": "Bad()"} and r.value_repr.startswith("Bad()\n[llmrepl: _repr_html_ raised")


def test_a_hanging_rich_repr_costs_only_that_item(ex, monkeypatch):
    monkeypatch.setattr(outputs, "REPR_LIMIT", 0.2)
    r = ex.run("import time\nclass Slow:\n    def _repr_html_(self):\n        time.sleep(30)\n"
               "    def __repr__(self): return 'Slow()'\ndisplay(Slow())\nSlow()")
    assert r.ok and r.duration < 10
    assert r.displays[0].data == {"text/plain": "Slow()"} and "took longer than" in r.displays[0].text
    assert r.value_data.data == {"text/plain": "Slow()"}


def test_a_huge_html_repr_is_dropped_and_said_so(ex):
    r = ex.run("class Big:\n    def _repr_html_(self): return '<p>' + 'x' * 3_000_000\n"
               "    def __repr__(self): return 'Big()'\nBig()")
    assert r.value_data.data == {"text/plain": "Big()"}
    assert "text/html dropped: 3,000,003 characters (more than 2,000,000)" in r.value_repr


def test_a_raising_repr_in_display_costs_only_that_item(ex):
    r = ex.run("class A:\n    def __repr__(self): raise KeyError('k')\ndisplay(A(), 2)\n'done'")
    assert r.ok and r.value_repr == "'done'"
    assert r.displays[0].text == "<A object: repr raised KeyError: 'k'>" and r.displays[1].text == "2"


def test_an_object_answering_every_attribute_is_not_asked_for_rich_reprs():
    class Anything:
        def __getattr__(self, name):
            return lambda *a, **k: "<b>surprise</b>"

        def __repr__(self):
            return "Anything()"

    assert build(Anything()).data == {"text/plain": "Anything()"}


def test_png_size_reads_the_header():
    assert png_size(png(7, 5)) == (7, 5)
    assert png_size(b"GIF89a" + b"\0" * 30) is None
    assert base64.b64decode(base64.b64encode(png())) == png()


# -- pandas -------------------------------------------------------------------------------------


def test_display_of_a_dataframe_gives_html_and_plain_text(ex):
    r = ex.run(SALES + "display(df.head())")
    assert r.ok, r.error
    (item,) = r.displays
    assert list(item.data) == ["text/plain", "text/html"]
    assert "<table" in item.data["text/html"] and "revenue" in item.data["text/html"]
    assert item.data["text/plain"].endswith("[5 rows × 4 columns]") and "revenue" in item.text


def test_model_text_of_a_pivot_table_shows_every_column_whatever_the_screen_width(ex):
    texts = {}
    for width in (60, 200):
        ex.display_width = width
        r = ex.run(SALES + "df.pivot_table(index='channel', columns='month', values='revenue', aggfunc='sum')")
        assert r.ok, r.error
        texts[width] = r.value_data
    assert texts[60].text == texts[200].text == texts[60].data["text/plain"] == texts[60].text
    text = texts[60].text
    for month in MONTHS:
        assert month in text
    assert "..." not in text and "[2 rows × 8 columns]" in text
    assert all(len(line) <= 100 for line in text.splitlines())  # pandas' wrapping, at the model's fixed width
    # the screen at 60 columns: no line longer than that, middle columns dropped, never wrapped
    screen = texts[60].screen
    assert screen is not None and all(len(line) <= 60 for line in screen.splitlines())
    assert "..." in screen and "[2 rows × 8 columns]" in screen
    assert sum(1 for line in screen.splitlines() if line.startswith("online")) == 1
    assert texts[200].screen is not None and all(m in texts[200].screen for m in MONTHS)  # fits: every column


def test_a_long_frame_shows_head_tail_and_its_size_to_the_model(ex):
    r = ex.run(SALES + "df")
    lines = r.value_repr.splitlines()
    assert lines[-1] == "[1,000 rows × 4 columns]"
    assert lines[1].startswith("0 ") and any(line.startswith("999 ") for line in lines)
    assert sum(1 for line in lines if line[:1].isdigit()) == 20  # the first and last 10
    assert r.value_data.screen is None  # no width given: the model's copy only


def test_a_series_value_is_a_table_too(ex):
    ex.display_width = 60
    r = ex.run(SALES + "df.revenue")
    assert r.value_repr.endswith("Name: revenue, Length: 1000, dtype: float64")
    assert all(len(line) <= 60 for line in (r.value_data.screen or r.value_repr).splitlines())


def test_pandas_and_matplotlib_are_not_imported_by_outputs():
    code = (
        "import sys\nfrom llmrepl.execution.executor import Executor\nex = Executor()\n"
        "ex.display_width = 80\nr = ex.run('display(1, {1: 2})\\nclass X: pass\\nX()')\n"
        "print(r.ok, 'pandas' in sys.modules, 'matplotlib' in sys.modules, 'numpy' in sys.modules)"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.stdout.split() == ["True", "False", "False", "False"], p.stderr


# -- matplotlib figures inline --------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_a_plot_without_show_is_drawn_at_the_cells_end_and_never_leaks(ex):
    r = ex.run(SALES + "import matplotlib.pyplot as plt\n"
               "df.groupby('region').revenue.sum().plot.bar(title='by region', ylabel='revenue');")
    assert r.ok, r.error
    (item,) = r.displays
    assert item.data["image/png"].startswith(b"\x89PNG") and item.metadata["filename"] == r.figures[0]
    assert item.text.startswith("figure 640×480 px: title 'by region'; x axis 'region', y axis 'revenue'; 4 bars")
    assert "'east', 'north', 'south', 'west'" in item.text
    assert ex.run("plt.get_fignums()").value_repr == "[]"
    r2 = ex.run("plt.hist([1, 2, 2, 3], bins=3)\nplt.title('revenue histogram')\nplt.show()")
    (item2,) = r2.displays
    assert item2.text == "figure 640×480 px: title 'revenue histogram'; 3 bars"
    assert "by region" not in item2.text and r2.figures == [item2.metadata["filename"]] != r.figures


@pytest.mark.timeout(60)
def test_a_figure_or_axes_value_is_shown_once(ex):
    r = ex.run("import matplotlib.pyplot as plt\nfig, ax = plt.subplots()\nax.plot([1, 2], label='a')\n"
               "ax.set_title('t')\nax")
    assert r.ok and len(r.displays) == 1 and len(r.figures) == 1
    assert r.value_data.data["text/plain"].startswith("<Axes: title={'center': 't'}")
    assert r.value_repr == r.value_data.text and r.value_repr.endswith(
        f"[shown as a figure ({os.path.basename(r.figures[0])})]")
    r = ex.run("from matplotlib.figure import Figure\nf = Figure()\nf.add_subplot().scatter([1, 2, 3], [1, 2, 3])\nf")
    assert len(r.displays) == 1 and r.displays[0].text == "figure 640×480 px: 3 scatter points"
    assert r.value_repr.startswith("<Figure size 640x480 with 1 Axes>\n[shown as a figure")
    r = ex.run("plt.figure(); plt.plot([1]); plt.gcf()")
    assert len(r.displays) == 1
    r = ex.run("ax = plt.gca(); ax.plot([1, 2]); plt.show(); ax")  # shown by plt.show(): not again
    assert len(r.displays) == 1 and r.value_repr.endswith(f"[shown as a figure ({os.path.basename(r.figures[0])})]")
    r = ex.run(SALES + "df[['revenue']].head().plot(subplots=True, title='sub')")
    assert len(r.displays) == 1 and r.value_repr.startswith("array([<Axes:") and "shown as a figure" in r.value_repr
    assert ex.run("plt.get_fignums()").value_repr == "[]"


@pytest.mark.timeout(60)
def test_display_of_a_figure_draws_it_once(ex):
    r = ex.run("import matplotlib.pyplot as plt\nfig = plt.figure()\nplt.plot([1, 2, 3])\ndisplay(fig)\nprint('x')")
    assert r.ok and len(r.displays) == 1 and r.displays[0].text == "figure 640×480 px: 1 line"
    assert r.displays[0].at == 0


@pytest.mark.timeout(60)
def test_a_figure_that_cannot_be_drawn_is_said_so_and_closed(ex):
    r = ex.run("import matplotlib.pyplot as plt\nplt.figure()\nplt.title('$\\\\frac{$')\n1")
    assert r.ok and r.value_repr == "1"
    assert r.figures == [] and r.displays[0].text.startswith("[figure not drawn: ")
    assert ex.run("plt.get_fignums()").value_repr == "[]"


@pytest.mark.timeout(60)
def test_several_axes_are_each_described(ex):
    r = ex.run("import matplotlib.pyplot as plt\nfig, (a, b) = plt.subplots(1, 2)\nfig.suptitle('both')\n"
               "a.plot([1, 2]); a.plot([2, 1]); b.imshow([[1, 2], [3, 4]]); b.set_xlabel('col')")
    assert r.displays[0].text == ("figure 640×480 px, title 'both', 2 axes: (1) 2 lines; "
                                  "(2) x axis 'col'; 1 image")


# -- the front end's sink ---------------------------------------------------------------------------


def test_the_apps_sink_redacts_display_items_and_shows_them_after_held_text():
    from llmrepl.app import _Sink
    from llmrepl.redact import Redactor

    key = "sk-test-0123456789abcdefghij"

    class Screen:
        def __init__(self) -> None:
            self.shown: list[object] = []

        def cell_output(self, stream: str, text: str) -> None:
            self.shown.append(text)

        def cell_display(self, item: DisplayData) -> None:
            self.shown.append(item)

    screen = Screen()
    sink = _Sink(screen, Redactor(key))  # type: ignore[arg-type]
    sink.write("stdout", "key: sk-")  # may be the start of the key: held back
    item = DisplayData({"text/plain": f"'{key}'", "text/html": f"<b>{key}</b>"}, {"notes": [f"raised {key}"]},
                       text=f"'{key}'", screen=key)
    sink.display(item)
    assert screen.shown[0] == "key: sk-"  # the held text first, then the item
    shown = screen.shown[1]
    assert isinstance(shown, DisplayData) and key not in repr(shown)
    assert shown.data["text/html"].startswith("<b>") and shown.text != item.text


@pytest.mark.timeout(60)
def test_a_figure_folder_that_cannot_be_written_costs_only_the_file(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    ex = Executor(figure_dir=blocker / "figs")
    r = ex.run("import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()\n'went on'")
    assert r.ok and r.value_repr == "'went on'" and r.figures == []
    (item,) = r.displays
    assert item.data["image/png"].startswith(b"\x89PNG") and "filename" not in item.metadata
    assert "the image could not be saved (NotADirectoryError" in item.text


def test_display_from_a_thread_between_cells_goes_to_the_sink_only(tmp_path):
    sink = Sink()
    ex = Executor(sink=sink, figure_dir=tmp_path)
    assert ex.run("import threading\nt = threading.Thread(target=lambda: display('late'))").ok
    ex.namespace["t"].start()
    ex.namespace["t"].join(10)
    assert [(k, getattr(v, "text", v)) for k, v in sink.items] == [("display", "'late'")]
    assert ex.run("1").displays == []


def test_in_a_timed_cell_the_cells_limit_stops_a_hanging_rich_repr(ex):
    assert ex.run("display(1)", timeout=5).displays[0].text == "1"
    r = ex.run("import time\nclass Slow:\n    def _repr_html_(self):\n        time.sleep(30)\ndisplay(Slow())",
               timeout=0.5)
    assert r.timed_out and r.duration < 10 and r.displays == []
    assert ex.run("display(2)").displays[0].text == "2"


@pytest.mark.timeout(60)
def test_numeric_ticks_are_left_out_and_categories_told(ex):
    r = ex.run("import matplotlib.pyplot as plt\nplt.semilogy([1, 10, 100, -1])\nplt.xlabel('n')")
    assert r.displays[0].text == "figure 640×480 px: x axis 'n'; 1 line"
    r = ex.run("plt.barh(['b', 'a'], [1, -2])")
    assert r.displays[0].text == "figure 640×480 px: 2 bars; y tick labels 'b', 'a'"


def test_a_cell_keeps_its_first_thousand_display_items_and_says_how_many_more_were_shown():
    shown = []

    class Sink:
        def write(self, stream, text):
            pass

        def display(self, item):
            shown.append(item)

    ex = Executor(sink=Sink())
    r = ex.run("for i in range(1500):\n    display(i)")
    assert r.ok, r.error
    assert len(shown) == 1500  # every one was shown live
    assert len(r.displays) == 1001
    assert [d.text for d in r.displays[:3]] == ["0", "1", "2"]
    assert "500 more display items were shown but not kept" in r.displays[-1].text
    assert ex.run("display('next')").displays[0].text == "'next'"  # the count starts over
