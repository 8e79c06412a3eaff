"""Completion at the ``llm>`` prompt: slash commands, and Python from the live namespace.

``PromptCompleter`` is prompt_toolkit's side of
:class:`~llmrepl.execution.complete.NamespaceCompleter`: it finds the code in the input
line (all of it, or what follows ``/py``), asks for suggestions on Tab (everything) or as
you type (only where the text is plainly code), and shows them through ``sanitize``.
With ``--kernel`` the values live in the kernel, so Tab asks the kernel
(:mod:`~llmrepl.execution.kernel_complete`, a ``complete_request``) once it is connected;
as you type, and while it is not, llmrepl completes what it can without the values.
``completer(executor)`` wraps it in a ``ThreadedCompleter``, so jedi or a kernel never
blocks a key: prompt_toolkit runs one completion at a time and asks again with the newest text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prompt_toolkit import PromptSession
from prompt_toolkit.application.current import get_app
from prompt_toolkit.completion import CompleteEvent, Completer, Completion, ThreadedCompleter
from prompt_toolkit.document import Document
from prompt_toolkit.layout.dimension import Dimension

from llmrepl.engine.commands import commands
from llmrepl.execution.complete import NamespaceCompleter, Suggestion
from llmrepl.terminal.sanitize import sanitize

__all__ = ["PromptCompleter", "MenuPromptSession", "completer", "code_of", "kernel_of", "live_namespace"]

MENU_ROWS = 8  # rows made under the input line while a completion menu is open

# commands whose argument is Python code
_CODE_COMMANDS = ("/py ",)


def code_of(text: str) -> str | None:
    """The Python in an input line before the cursor: the line itself, or what follows
    ``/py``; None for other commands."""
    if not text.startswith("/"):
        return text
    for prefix in _CODE_COMMANDS:
        if text.startswith(prefix):
            return text[len(prefix):]
    return None


class PromptCompleter(Completer):
    """Slash commands, then names, attributes, keyword arguments, keys, columns and paths:
    from ``namespace()``, or on Tab from the kernel ``kernel()`` returns (when not None)."""

    def __init__(self, namespace: Callable[[], dict[str, Any] | None],
                 kernel: Callable[[], Any] | None = None) -> None:
        self.engine = NamespaceCompleter(namespace)
        self.kernel = kernel  # the connected KernelExecutor that answers Tab, or None

    def _suggestions(self, code: str, after: str, explicit: bool) -> list[Suggestion]:
        kernel = self.kernel() if explicit and self.kernel is not None else None
        if kernel is None:
            return self.engine.complete(code, after=after, explicit=explicit)
        from llmrepl.execution.kernel_complete import complete

        return complete(kernel, code) or []  # None: busy, slow or gone; nothing, no error

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterable[Completion]:
        text = document.text_before_cursor
        if text.startswith("/") and " " not in text and "\n" not in text:
            for cmd in commands():
                name = "/" + cmd.name
                if name.startswith(text):
                    yield Completion(name, start_position=-len(text), display_meta=cmd.help)
            return
        code = code_of(text)
        if code is None:
            return
        after = document.text_after_cursor
        for s in self._suggestions(code, after, complete_event.completion_requested):
            # llmrepl's own texts are printable already (identifiers, or keys and file names
            # as escapes), a kernel's are not to be trusted: all go through the one gate, and
            # what is put in the line is what the menu showed
            text = sanitize(s.text)
            if text:
                yield Completion(text, start_position=s.start, display=sanitize(s.display),
                                 display_meta=sanitize(s.meta))


def completer(executor: Callable[[], object]) -> Completer:
    """The prompt's completer: :class:`PromptCompleter` on ``executor()``'s live namespace,
    run off the key-reading thread."""
    return ThreadedCompleter(PromptCompleter(lambda: live_namespace(executor()),
                                             lambda: kernel_of(executor())))


def live_namespace(executor: object) -> dict[str, Any] | None:
    """The namespace of the in-process executor. None for a kernel's: its values live in
    another process (what it holds here are stand-ins, and reading them may ask the kernel
    for a summary): Tab asks the kernel itself instead (``kernel_of``)."""
    from llmrepl.execution.executor import Executor

    return executor.namespace if isinstance(executor, Executor) else None


def kernel_of(executor: object) -> Any:
    """The kernel executor whose kernel answers Tab: connected (not starting, failed or
    dead); None otherwise, and for the in-process executor."""
    if getattr(executor, "in_process", True):
        return None
    from llmrepl.execution.kernel import KernelExecutor
    from llmrepl.execution.kernel_complete import connected

    return executor if isinstance(executor, KernelExecutor) and connected(executor) else None


class MenuPromptSession(PromptSession[str]):
    """A ``PromptSession`` that makes room for the completion menu only while one is open.

    prompt_toolkit reserves ``reserve_space_for_menu`` rows under the input whenever
    completion may come (always, with ``complete_while_typing``), which leaves blank rows
    under every prompt; with none reserved, a menu at the bottom of the screen (or without
    cursor-position reports) has no room and is never seen."""

    def _get_default_buffer_control_height(self) -> Dimension:
        state = self.default_buffer.complete_state
        if state is not None and state.completions and not get_app().is_done:
            return Dimension(min=MENU_ROWS)
        return Dimension()
