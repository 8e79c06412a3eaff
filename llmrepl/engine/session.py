"""The engine facade: one conversation, one namespace, and the cells that run in it.

``Session.step(text, reviewer)`` sends a message and runs the model's feed-back loop (that
loop is ``TurnLoop``, in ``turn.py``) until it settles; a Ctrl-C or a bug in llmrepl costs
that message, never the session. This module keeps what the session holds: the conversation
(every message journaled), the cells (run, scrubbed, journaled, fed back), /undo and /reset,
and the namespace snapshots that let /undo rewind. The engine never prints: everything the
person sees goes through the ``Display`` it is given.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmrepl.context.budget import NOTE_PREFIX as _NOTE
from llmrepl.context.builder import Context, without_tools
from llmrepl.context.prompts import format_result
from llmrepl.engine.cell_end import cell_end_fields, scrub
from llmrepl.engine.interrupts import InterruptHold
from llmrepl.engine.protocols import Display, NullDisplay, Reviewer
from llmrepl.engine.rewind import Copy, Ran, keep_copy, record_of
from llmrepl.engine.turn import TurnLoop, TurnResult, _busy
from llmrepl.errors import LLMReplError
from llmrepl.execution.executor import ExecResult, Executor
from llmrepl.model.client import ModelClient
from llmrepl.redact import Redactor
from llmrepl.store.journal import Journal

if TYPE_CHECKING:
    from llmrepl.store.snapshots import SnapshotStore
    from llmrepl.store.transcript import CellRecord

__all__ = ["Session", "TurnResult", "UndoResult"]


@dataclass
class UndoResult:
    """What /undo did."""

    removed: int                 # messages forgotten
    cells: int = 0               # cells that had run in the undone exchange
    rewound: bool | None = None  # namespace rewound as planned (False: partly; None: no cell ran)
    summary: str = ""
    how: str = ""                # "snapshot" or "replay" (rewind.py); "" when no cell ran


class Session(TurnLoop):
    """One conversation with the model and one persistent namespace."""

    def __init__(
        self,
        model: ModelClient,
        executor: Executor,
        *,
        display: Display | None = None,
        journal: Journal | None = None,
        max_steps: int = 6,
        max_output_chars: int = 8000,
        auto_run: bool = False,
        auto_run_risky: bool = False,
        use_tools: bool = True,
        redactor: Redactor | None = None,
        context: Context | None = None,
    ) -> None:
        self.model = model
        self.executor = executor
        self.display: Display = display or NullDisplay()
        self.journal = journal or Journal(None)
        self.max_steps = max_steps
        self.max_output_chars = max_output_chars
        self.auto_run = auto_run
        self.auto_run_risky = auto_run_risky  # auto-run also runs cells the risk scan marks high
        self.use_tools = use_tools
        self.messages: list[dict[str, Any]] = []   # the conversation, OpenAI message format
        self.exchanges: list[int] = []             # index in `messages` where each exchange starts
        self.usage = {"prompt_tokens": 0, "completion_tokens": 0, "cached_tokens": 0, "requests": 0}
        self.redactor = redactor or Redactor()
        self.state_dir: Path | None = None           # where stored sessions live (for /sessions)
        self.session_id: str | None = None
        self.exchange_cells: list[list[int | None]] = []  # [first, end) cell numbers of each exchange
        self.snapshots: SnapshotStore | None = None
        self.cell_log: list[CellRecord | Ran] = []  # cells since the last /reset (a resumed run's too), for /undo
        self.ns_copies: dict[int, Copy] = {}  # plain-data namespace copies by cell count, for /undo
        self._unsaved_names: set[str] = set()
        self.context = context or Context(max_output_chars=max_output_chars)
        self.context.redactor = self.redactor  # one redactor guards every request the session sends
        self.on_model_change: Callable[[str], None] | None = None
        # the front end's yes/no question (/export onto an existing file); None: never ask (batch)
        self.ask: Callable[[str], bool] | None = None
        self._stop_after_step = False
        self._interrupts = InterruptHold()  # Ctrl-C held around a cell (run_cell) and a replay
        self.input_price: float | None = None
        self.output_price: float | None = None

    # -- the conversation -----------------------------------------------------------------

    def request_messages(self) -> list[dict[str, Any]]:
        """The next request: system prompt with the namespace digest, then the history fitted
        into the context window (raises ModelError kind "too_long" when it cannot fit); tool
        calls as text once tools are off (a server that takes none)."""
        messages = self.context.build(self.messages, self.executor.namespace, model=self.model.model)
        return messages if self.use_tools else without_tools(messages)

    def switch_model(self, name: str) -> None:
        """/model NAME: later requests go to ``name`` (the front end may re-size the budget)."""
        self.model.model = name
        if self.on_model_change is not None:
            self.on_model_change(name)
        self.journal.append("model", name=name)

    def token_report(self) -> str:
        """What /tokens shows."""
        return self.context.report(self.messages, self.executor.namespace, model=self.model.model,
                                   usage=self.usage, input_price=self.input_price, output_price=self.output_price)

    def _add(self, message: dict[str, Any]) -> None:
        """Every message that joins the conversation is journaled, so resume rebuilds it exactly."""
        content = message.get("content")
        if isinstance(content, str) and not _encodable(content):
            # a lone surrogate (from a cell's output or a broken answer) would make every later
            # request fail to encode: keep the message, replace what cannot be sent
            message = {**message, "content": content.encode("utf-8", "replace").decode("utf-8")}
        start = bool(self.exchanges) and self.exchanges[-1] == len(self.messages)
        self.messages.append(message)
        self.journal.append("message", message=message, exchange_start=start)

    def _start_exchange(self) -> None:
        self.exchanges.append(len(self.messages))
        if self.exchange_cells and self.exchange_cells[-1][1] is None:
            self.exchange_cells[-1][1] = self.executor.cell_count  # the previous exchange's cells end here
        self.exchange_cells.append([self.executor.cell_count, None])
        keep_copy(self)  # /undo of this exchange then re-runs nothing, when the namespace is plain data

    def close_open_tool_calls(self, reason: str) -> int:
        """Answer every tool call of the last assistant message that has no tool message yet
        (the API rejects such a history). Returns how many were answered."""
        for i in range(len(self.messages) - 1, -1, -1):
            message = self.messages[i]
            if message.get("role") == "assistant":
                calls = message.get("tool_calls") or []
                later = self.messages[i + 1:]
                if not calls or any(m.get("role") not in ("tool",) for m in later):
                    return 0  # no calls, or the history moved on past them
                answered = {m.get("tool_call_id") for m in later}
                missing = [c for c in calls if c.get("id") not in answered]
                for call in missing:
                    self._add({"role": "tool", "tool_call_id": call.get("id"), "content": f"{_NOTE}{reason}"})
                return len(missing)
        return 0

    # -- one message (its model loop is TurnLoop._step, in turn.py) -----------------------

    def step(self, text: str, reviewer: Reviewer) -> TurnResult:
        """Send one message and run the feed-back loop until it settles.

        A Ctrl-C that escapes the model call or a cell (it landed in llmrepl's own work in
        between) ends the turn cleanly: every tool call still gets its answer, so the next
        request is valid."""
        self._stop_after_step = False
        self._interrupts.release()  # a Ctrl-C now stops this message (the model call, a review)
        text = self._redact_message(text)
        try:
            return self._step(text, reviewer)
        except KeyboardInterrupt:
            self.close_open_tool_calls("Not run to the end: the user pressed Ctrl-C.")
            self.display.notice("interrupted; the conversation and the namespace are kept", "warning")
            return TurnResult(stop="interrupted")
        except AssertionError:
            raise  # test fakes signal misuse this way; never hide it
        except Exception as e:
            # a bug in llmrepl costs this message, never the session or the namespace
            what = self.redactor.redact(f"{type(e).__name__}: {e}")
            self.journal.append("internal_error", error=what)
            self.close_open_tool_calls("Not run to the end: llmrepl hit an internal error.")
            self.display.notice(f"llmrepl hit an internal error ({what}); the conversation "
                                "and the namespace are kept", "error")
            return TurnResult(stop="error")

    def _redact_message(self, text: str) -> str:
        """What the person typed, as it may be sent and journaled: secrets replaced, and said so."""
        clean = self.redactor.redact(text)
        if clean != text:
            what = ("the API key" if self.redactor.holds_secret(text) else
                    "something shaped like a key, a bearer token or a password in a URL")
            self.display.notice(f"your message contained {what}; it was replaced with [REDACTED] "
                                "before it was sent or saved", "warning")
        return clean

    # -- undo, reset, and the snapshots that let /undo rewind -----------------------------

    def undo(self) -> UndoResult:
        """Forget the last exchange and rewind the namespace to before it (``rewind.py``: from
        the snapshot when there is one, else by replaying what the earlier cells completed)."""
        if not self.exchanges:
            return UndoResult(0)
        start = self.exchanges.pop()
        first = (self.exchange_cells.pop()[0] if self.exchange_cells else 0) or 0
        removed = len(self.messages) - start
        del self.messages[start:]
        result = UndoResult(removed)
        undone = [c for c in self.cell_log if c.cell > first]
        if undone:  # cells ran in the undone exchange
            from llmrepl.engine.rewind import rewind

            result.cells = len(undone)
            done = rewind(self, first, undone)
            self.cell_log = [c for c in self.cell_log if c.cell <= first]
            result.rewound, result.how, result.summary = done.ok, done.how, done.summary
            if self.snapshots is not None:
                self._snapshot(self._snapshot_key())  # the newest snapshot is the rewound namespace
        self.journal.append("undo", removed=removed, rewound=bool(undone) or None, note=result.summary)
        return result

    def reset(self) -> None:
        """A new conversation and a fresh namespace."""
        self.messages.clear()
        self.exchanges.clear()
        self.exchange_cells.clear()
        self.cell_log.clear()
        self.ns_copies.clear()
        self.executor.reset()
        if self.snapshots is not None:
            self._snapshot(self._snapshot_key())  # the empty namespace, under the current number
        self.journal.append("reset")

    def enable_snapshots(self, store: SnapshotStore) -> None:
        """Save the picklable namespace after every cell, so /undo can rewind it (values that
        hold the API key stay out: the store gets the session's redactor)."""
        store.redactor = self.redactor
        self.snapshots = store
        self._snapshot(self._snapshot_key())

    def _snapshot_key(self, cell: int | None = None) -> str:
        """The snapshot that mirrors the namespace as it is after ``cell`` (default: now).
        Kept true after /reset and after an /undo rewind too, so a later /undo or --resume
        never brings back what was reset or undone."""
        n = self.executor.cell_count if cell is None else cell
        return f"cell-{n:04d}" if n else "start"

    def _snapshot(self, key: str) -> None:
        if self.snapshots is None:
            return
        try:
            info = self.snapshots.save(key, self.executor.namespace)
        except LLMReplError as e:
            self.display.notice(f"snapshots turned off: {e}", "warning")
            self.snapshots = None
            return
        new_skips = sorted(set(info.skipped) - self._unsaved_names)
        if new_skips:
            self._unsaved_names.update(new_skips)
            self.display.notice(
                "not in the snapshot (an /undo cannot rewind them): "
                + ", ".join(f"{n} ({info.skipped[n]})" for n in new_skips[:5]),
                "warning",
            )
        self.journal.append("snapshot", key=key, saved=len(info.saved), skipped=sorted(info.skipped), bytes=info.bytes)

    # -- running code ---------------------------------------------------------------------

    def run_cell(self, code: str) -> ExecResult:
        """Run one cell, journaling it before it starts (a hard crash keeps the record).

        Ctrl-C is held around the cell (the executor lets it interrupt the cell's own code
        only), so one that lands in llmrepl's work after the cell, such as the second of two
        quick presses, cannot cut the record short. After an interrupted cell the hold lasts
        until the person's next message, /py or cell (``step``, ``run_direct``): more Ctrl-C
        until then is the same interruption, whether it lands in the rest of the turn, in the
        front end on its way back to the prompt, or in the plain front end's prompt (where the
        terminal still discards the typed line). At prompt_toolkit's prompt Ctrl-C is a key."""
        self._interrupts.release()  # one left by an earlier interrupted cell: its count is stale
        self._interrupts.hold()
        cell = self.executor.cell_count + 1
        self.journal.append("cell_start", cell=cell, code=code)
        _busy(self.display, f"running cell {cell}", 0.5)  # shown while it runs silently
        try:
            result = self.executor.run(code)
        finally:
            _busy(self.display, None)
        self.cell_log.append(record_of(result, code))
        late = False
        try:
            self._after_cell(result)
        except KeyboardInterrupt:  # raised by llmrepl's own code: a held Ctrl-C is only counted
            late = True
        if not result.interrupted:
            late = self._interrupts.release() or late
        if late and not result.interrupted:
            # Ctrl-C after the cell finished: keep its result (the caller still feeds it back)
            # and stop the loop after this step
            self._stop_after_step = True
            self.display.notice("Ctrl-C after the cell finished: its result is kept; stopping here", "warning")
        if getattr(self.executor, "needs_restart", False):  # --kernel: the kernel died, llmrepl did not
            from llmrepl.engine.kernel_restart import after_kernel_death

            after_kernel_death(self, result)
        return result

    def _after_cell(self, result: ExecResult) -> None:
        self._flush_live_output()
        scrub(result, self.redactor.redact)
        # the whole captured output stays reachable, as IPython's Out: _out[N] (and _ / _N hold values)
        outputs = self.executor.namespace.get("_out")
        if not isinstance(outputs, dict):
            outputs = self.executor.namespace["_out"] = {}
        outputs[result.cell] = result.output
        cap = int(getattr(self.executor, "max_capture_chars", 1_000_000))
        self.journal.append("cell_end", **cell_end_fields(result, cap))
        self.display.cell_result(result)
        self.context.observe(self.executor.namespace)
        if self.snapshots is not None:
            self._snapshot(self._snapshot_key(result.cell))

    def run_direct(self, code: str) -> ExecResult:
        """``/py CODE``: run without the model; the result joins the conversation."""
        self._start_exchange()
        self.journal.append("py", code=code)
        result = self.run_cell(code)
        text = self._feedback(result, False)
        self._add({"role": "user", "content": f"{_NOTE}The user ran code directly (typed at the prompt or with /py).\n{text}",
                   **self.context.images.refs(result)})
        return result

    def _feedback(self, result: ExecResult, edited: bool, echo_code: bool = True) -> str:
        """What the model is told about a cell: capped in characters and in tokens (a quarter of
        the budget at most), secrets scrubbed, code included unless ``echo_code`` is false (a
        tool call's own arguments hold it)."""
        max_chars = self.max_output_chars
        text = format_result(result, max_chars=max_chars, edited=edited, echo_code=echo_code)
        for _ in range(4):  # the parts have floors, so shrink until it fits or cannot shrink more
            shrink = self.context.feedback_cap(text)
            if shrink >= 1.0 or max_chars <= 200:
                break
            max_chars = max(int(max_chars * shrink), 200)
            text = format_result(result, max_chars=max_chars, edited=edited, echo_code=echo_code)
        return self.redactor.redact(text)

    def _flush_live_output(self) -> None:
        """The cell ended: live output its sink held back (what might have been the start of
        the key, had the next write completed it) is shown now."""
        flush = getattr(self.executor.sink, "flush", None)
        if callable(flush):
            flush()

    # -- resuming a stored session --------------------------------------------------------

    def restore_conversation(self, messages: list[dict[str, Any]], exchanges: list[int], *,
                             cells: list[CellRecord] | None = None, exchange_cells: list[int] | None = None) -> None:
        """Continue a stored conversation: the next request carries these messages. ``cells``
        (the stored cells) and ``exchange_cells`` (where in them each exchange's cells begin)
        let /undo rewind an exchange of the earlier run, and replay the earlier run's cells."""
        self.messages = [dict(m) for m in messages]
        self.exchanges = list(exchanges)
        self.cell_log = []
        self.cell_log.extend(cells or [])
        starts = list(exchange_cells or [])
        if len(starts) != len(exchanges):  # unknown: no earlier exchange has cells of its own
            starts = [len(self.cell_log)] * len(exchanges)
        # each exchange: [the last cell number before it, None]; /undo rewinds to after that cell
        self.exchange_cells = [[self.cell_log[i - 1].cell if 0 < i <= len(self.cell_log) else 0, None]
                               for i in starts]

    def replay(self, cells: list[tuple[int, str]]) -> list[ExecResult]:
        """Re-run stored cells (or the part of each that completed: ``store.replay``) under their
        original numbers to rebuild the namespace. No figure file is written again, numbering
        then continues after the highest number it had, and a Ctrl-C stops the replay there."""
        results = []
        ex = self.executor
        count, saving = ex.cell_count, ex.save_figures
        ex.save_figures = False
        self._interrupts.release()
        self._interrupts.hold()  # a Ctrl-C between cells is counted, and ends the replay there
        try:
            for number, code in cells:
                ex.cell_count = number - 1
                self.journal.append("cell_start", cell=number, code=code, replay=True)
                result = ex.run(code)
                self._flush_live_output()
                scrub(result, self.redactor.redact)
                self.journal.append("cell_end", cell=result.cell, output=result.output, value=result.value_repr,
                                    error=result.error, error_type=result.error_type, done=result.done,
                                    interrupted=result.interrupted, replay=True)
                results.append(result)
                if result.interrupted or self._interrupts.count:
                    break
        finally:
            self._interrupts.release()
            ex.save_figures = saving
            ex.cell_count = max(count, ex.cell_count)  # numbers never repeat
        self.context.observe(self.executor.namespace)
        if self.snapshots is not None and cells:
            self._snapshot(self._snapshot_key())
        return results

    def note(self, text: str) -> None:
        """Tell the model something in the next request (e.g. how a resume went)."""
        self._add({"role": "user", "content": _NOTE + text})


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
