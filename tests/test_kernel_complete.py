"""Tab at the ``llm>`` prompt with ``--kernel``: the kernel's namespace answers
(``complete_request``), through the prompt's own completer (``terminal/completion.py``).

A real ipykernel for what a person sees (names, attributes); a fake client, with no kernel
behind it, for the kernel that does not answer, the late reply, the busy channel and the
hostile matches. Waits are on replies, never fixed sleeps.
"""

from __future__ import annotations

from typing import Any

import pytest
from kernel_fakes import FakeClient, fake_kernel, kernel_msg
from prompt_toolkit.completion import CompleteEvent, Completion
from prompt_toolkit.document import Document

from llmrepl.execution import kernel_complete
from llmrepl.execution.kernel import KernelExecutor
from llmrepl.terminal.completion import PromptCompleter, completer, kernel_of, live_namespace

TAB = CompleteEvent(completion_requested=True)
TYPING = CompleteEvent(text_inserted=True)


def prompt_completer(ex: object) -> PromptCompleter:
    """The prompt's completer as ``completer()`` builds it, called here without its thread."""
    return PromptCompleter(lambda: live_namespace(ex), lambda: kernel_of(ex))


def tab(ex: object, text: str, event: CompleteEvent = TAB) -> list[Completion]:
    return list(prompt_completer(ex).get_completions(Document(text), event))


def applied(text: str, c: Completion) -> str:
    """The input line after taking suggestion ``c``."""
    return text[: len(text) + c.start_position] + c.text


# -- a real kernel ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("ipykernel")
    pytest.importorskip("jupyter_client")
    from llmrepl.execution.kernel import connector

    ex = KernelExecutor(connector("python3"), figure_dir=tmp_path_factory.mktemp("figures"))
    ex.start()
    assert ex.wait_ready(120), ex.start_error
    yield ex
    ex.shutdown()


@pytest.fixture
def patient(monkeypatch: pytest.MonkeyPatch) -> None:
    """A loaded machine may take seconds for a cold completion in the kernel: correctness
    here, not speed."""
    monkeypatch.setattr(kernel_complete, "COMPLETE_WAIT", 60.0)


@pytest.fixture
def sales(kernel: KernelExecutor, patient: None) -> KernelExecutor:
    """The module's kernel with ``sales_total = 1`` (each test defines it: xdist may run
    this module's tests in different workers, each with its own kernel)."""
    r = kernel.run("sales_total = 1")
    assert r.error is None, r.error
    return kernel


def test_tab_offers_the_names_and_attributes_the_kernel_holds(sales):
    kernel = sales
    found = tab(kernel, "sales_t")
    assert [applied("sales_t", c) for c in found] == ["sales_total"]
    assert "sales_total" in [c.display_text for c in found]

    text = "import os; os.pa"
    lines = [applied(text, c) for c in tab(kernel, text)]
    assert "import os; os.path" in lines
    assert "import os; os.pardir" in lines  # the kernel's own os module, attribute by attribute


def test_the_kernel_still_runs_cells_between_completions(sales):
    kernel = sales
    assert tab(kernel, "sales_t")
    r = kernel.run("sales_total + 41")
    assert r.error is None and r.value_repr == "42"
    text = "sales_total.bit_le"
    assert [applied(text, c) for c in tab(kernel, text)] == ["sales_total.bit_length"]


def test_as_you_type_the_kernel_is_not_asked(sales, monkeypatch):
    kernel = sales
    asked: list[str] = []
    real = kernel_complete.complete

    def spy(ex: Any, code: str, **kw: Any) -> Any:
        asked.append(code)
        return real(ex, code, **kw)

    monkeypatch.setattr(kernel_complete, "complete", spy)
    assert tab(kernel, "sales_t", TYPING) == []
    assert asked == []
    assert tab(kernel, "sales_t")
    assert asked == ["sales_t"]


def test_the_threaded_completer_of_the_prompt_answers_from_the_kernel(sales):
    kernel = sales
    import asyncio

    async def collect() -> list[Completion]:
        c = completer(lambda: kernel)
        return [x async for x in c.get_completions_async(Document("sales_t"), TAB)]

    assert [c.text for c in asyncio.run(collect())] == ["sales_total"]


try:  # a kernel behind a real Jupyter Server: test_kernel_remote's fixtures, where they can run
    from test_kernel_remote import executor, server  # noqa: F401
except (ImportError, pytest.skip.Exception):
    executor = server = None


@pytest.mark.skipif(executor is None, reason="needs jupyter_server and websocket-client (the kernel extra)")
def test_a_remote_kernel_answers_tab_too(request, patient):
    remote = request.getfixturevalue("executor")
    assert remote.run("remote_total = 2").error is None
    assert [c.text for c in tab(remote, "remote_t")] == ["remote_total"]
    assert remote.run("remote_total * 21").value_repr == "42"


# -- a fake client: what a real kernel is not easily made to do (kernel_fakes.py) -------------


def ok(*matches: str, start: int = 0, typed: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"status": "ok", "matches": list(matches), "cursor_start": start, "cursor_end": 7,
            "metadata": {"_jupyter_types_experimental": typed} if typed is not None else {}}


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> float:
    monkeypatch.setattr(kernel_complete, "COMPLETE_WAIT", 0.3)
    return 0.3


def test_a_kernel_that_does_not_answer_gives_no_suggestions_and_no_error(quick):
    client = FakeClient(replies=None)
    ex = fake_kernel(client)
    assert tab(ex, "sales_t") == []  # it gave up after its wait: no suggestions, no error
    assert [code for _, code, _ in client.asked] == ["sales_t"]


def test_a_late_complete_reply_is_never_taken_for_a_cells_reply(quick):
    client = FakeClient(replies=None)
    ex = fake_kernel(client)
    assert tab(ex, "sales_t") == []
    client.answer_late(ok("sales_total"))  # it comes before the next cell's own reply
    r = ex.run("6 * 7")
    assert r.error is None and r.value_repr == "42"
    assert client.shell.empty()


def test_a_late_reply_on_the_shell_channel_is_not_taken_for_the_completions(quick):
    client = FakeClient(replies=[ok("sales_total")])
    ex = fake_kernel(client)
    client.shell.put(kernel_msg("m-given-up", "execute_reply", {"status": "ok"}))  # a cell abandoned
    client.shell.put(kernel_msg("m-old-tab", "complete_reply", ok("stale_name")))  # an earlier Tab
    assert [c.text for c in tab(ex, "sales_t")] == ["sales_total"]


def test_while_the_shell_channel_is_taken_tab_gives_nothing_and_sends_nothing(quick):
    client = FakeClient(replies=[ok("sales_total")])
    ex = fake_kernel(client)
    with ex.shell_lock:  # a cell or a silent request holds it for its whole exchange
        assert tab(ex, "sales_t") == []
    assert client.asked == []
    assert [c.text for c in tab(ex, "sales_t")] == ["sales_total"]


def test_hostile_matches_are_shown_and_inserted_sanitized_and_bounded(quick):
    matches = ["sales\x1b]52;c;ZXZpbA==\x07_total", "\x1b[2J\x1b[Hboom", "two\nlines", "x" * 5000,
               "\u202eevil"] + [f"n{i}" for i in range(1000)]
    client = FakeClient(replies=[ok(*matches)])
    ex = fake_kernel(client)
    found = tab(ex, "sales_t")
    texts = [c.text for c in found]
    shown = [c.display_text for c in found]
    assert texts[:3] == ["sales_total", "boom", "<U+202E>evil"]
    assert shown[:3] == texts[:3]
    assert len(found) == kernel_complete.MAX_MATCHES
    for c in found:
        assert "\x1b" not in c.text + c.display_text + c.display_meta_text and "\n" not in c.text


def test_the_kernels_types_and_positions_are_used_and_bad_ones_dropped(quick):
    typed = [{"start": 0, "end": 7, "text": "sales_total", "type": "instance"},
             {"start": 3, "end": 7, "text": "es_t", "type": "\x1b[31mred"},
             {"start": -5, "end": 7, "text": "before_the_line", "type": "x"},
             {"start": 99, "end": 7, "text": "after_the_cursor", "type": "x"},
             {"start": "0", "end": 7, "text": 12, "type": "x"},
             "not a dict"]
    client = FakeClient(replies=[ok("sales_total", typed=typed)])
    ex = fake_kernel(client)
    found = tab(ex, "sales_t")
    assert [(applied("sales_t", c), c.display_meta_text) for c in found] == [
        ("sales_total", "instance"), ("sales_t", "red")]


@pytest.mark.parametrize("content", [
    {"status": "error", "ename": "X"}, {"status": "ok", "matches": "sales_total"}, "junk", None,
    {"status": "ok", "matches": [None, 3, ["x"]], "cursor_start": "no"}])
def test_a_malformed_reply_gives_no_suggestions(quick, content):
    client = FakeClient(replies=[content])  # type: ignore[list-item]
    ex = fake_kernel(client)
    assert tab(ex, "sales_t") == []
    assert [code for _, code, _ in client.asked] == ["sales_t"]  # asked, and the answer refused


def test_before_the_kernel_is_connected_tab_completes_what_llmrepl_can(tmp_path, quick):
    (tmp_path / "sales.csv").write_text("a\n")
    ex = KernelExecutor(lambda: (_ for _ in ()).throw(OSError("no kernel here")))
    assert not ex.wait_ready(10)
    assert kernel_of(ex) is None
    text = f"open('{tmp_path}/sa"
    assert [applied(text, c) for c in tab(ex, text)] == [f"open('{tmp_path}/sales.csv"]


class BrokenClient(FakeClient):
    """The connection to the kernel is gone: sending fails (a remote WebSocket closed)."""

    def complete(self, code: str, cursor_pos: int | None = None) -> str:
        from llmrepl.execution.kernel_seam import KernelDied

        self.asked.append(("", code, len(code)))
        raise KernelDied("the connection to the kernel broke")


def test_a_kernel_gone_gives_an_empty_menu_not_an_error(quick):
    client = BrokenClient()
    ex = fake_kernel(client)
    assert tab(ex, "sales_t") == []
    assert [code for _, code, _ in client.asked] == ["sales_t"]
    ex.needs_restart = True  # known dead: Tab no longer asks it, and llmrepl completes paths
    assert kernel_of(ex) is None
    assert tab(ex, "sales_t") == [] and len(client.asked) == 1
