"""One message's trip through the model: ask, show, review, run, feed back, until it settles.

``TurnLoop`` is the half of :class:`~llmrepl.engine.session.Session` that talks to the model:
it sends the history, shows the answer through the ``Display``, asks the ``Reviewer`` before
a proposed cell runs, runs it, and feeds the result back until the model answers without
code, the person declines, or ``max_steps`` model calls were made. ``Session`` mixes it in
and owns everything it works on; the conversation, the cells, /undo and the snapshots are in
``session.py``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llmrepl.context.budget import NOTE_PREFIX as _NOTE
from llmrepl.context.builder import Context
from llmrepl.context.prompts import RUN_PYTHON_TOOL
from llmrepl.engine.protocols import Decision, Display, Reviewer
from llmrepl.errors import ModelError
from llmrepl.execution.executor import ExecResult, Executor
from llmrepl.execution.risk import Hidden, describe_hidden, hidden_characters, scan
from llmrepl.extract import code_from_tool_call, extract_code
from llmrepl.model.client import Completion, ModelClient, ToolCall
from llmrepl.model.error_map import stated_context_limit
from llmrepl.redact import Redactor
from llmrepl.store.journal import Journal

__all__ = ["TurnResult", "TurnLoop", "fit_answer_to_window"]


@dataclass
class TurnResult:
    """What one message led to."""

    steps: int = 0                              # model calls made
    cells: list[ExecResult] = field(default_factory=list)
    stop: str = "done"  # done | declined | max_steps | interrupted | cut_off | error
    error: ModelError | None = None


class TurnLoop:
    """The model-step loop of a ``Session`` (mixed into it); ``Session.step`` runs ``_step``."""

    # What the loop uses of the Session it is part of, all set up in session.py: declared here
    # so that this half reads, and type-checks, on its own.
    model: ModelClient
    executor: Executor
    display: Display
    journal: Journal
    context: Context
    redactor: Redactor
    messages: list[dict[str, Any]]
    usage: dict[str, int]
    max_steps: int
    use_tools: bool
    auto_run: bool
    auto_run_risky: bool
    _stop_after_step: bool  # set by run_cell when a Ctrl-C lands after its cell finished
    request_messages: Callable[[], list[dict[str, Any]]]
    run_cell: Callable[[str], ExecResult]
    undo: Callable[[], object]
    _add: Callable[[dict[str, Any]], None]
    _start_exchange: Callable[[], None]
    _feedback: Callable[..., str]  # (result, edited, echo_code=True)

    def _step(self, text: str, reviewer: Reviewer) -> TurnResult:
        """One message, to the end of its loop (``Session.step`` catches what escapes)."""
        turn = TurnResult()
        self._start_exchange()
        first = len(self.messages)
        self.journal.append("user", text=text)
        self._add({"role": "user", "content": text})
        for n in range(1, self.max_steps + 1):
            try:
                completion = self._call_model()
            except ModelError as e:
                e.args = (self.redactor.redact(str(e)),)
                e.partial = self.redactor.redact(e.partial)
                turn.steps, turn.stop, turn.error = n, "error", e
                self.journal.append("model_error", kind=e.kind, message=str(e), partial=e.partial)
                if n == 1 and len(self.messages) == first + 1:
                    # nothing happened: forget the message so resending it does not duplicate it
                    self.undo()
                elif e.partial:
                    self._add({"role": "assistant", "content": e.partial + "\n[cut off: " + e.kind + "]"})
                return turn
            turn.steps = n
            if completion.interrupted:
                self._add({"role": "assistant", "content": (completion.text or "") + "\n[cut off: interrupted by the user]"})
                self.display.notice("answer stopped (Ctrl-C); what arrived is kept", "warning")
                turn.stop = "interrupted"
                return turn
            if completion.tool_calls:
                stop = self._handle_tool_calls(completion, reviewer, turn)
            else:
                stop = self._handle_text(completion, reviewer, turn)
            if stop:
                turn.stop = stop
                return turn
            if self._stop_after_step:
                turn.stop = "interrupted"
                return turn
        turn.stop = "max_steps"
        self.display.notice(
            f"stopped after {self.max_steps} model calls for this message (--max-steps / repl.max_steps); "
            "send a message to carry on",
            "warning",
        )
        return turn

    def _call_model(self) -> Completion:
        started = time.monotonic()
        shrunk = False  # one retry with less history per model call
        pending: list[str] = []

        def on_text(delta: str) -> None:
            # write-ahead: each completed line is journaled before the display shows it, so a
            # kill -9 mid-answer loses nothing already on screen (the display prints whole lines)
            pending.append(delta)
            if "\n" in delta:
                text = "".join(pending)
                cut = text.rfind("\n") + 1
                self.journal.append("assistant_partial", text=text[:cut])
                pending[:] = [text[cut:]] if cut < len(text) else []
            self.display.answer_text(delta)

        for attempt in range(1, 5):  # retried once each: without images, without tools, with less history
            tools = [RUN_PYTHON_TOOL] if self.use_tools else None
            messages = self.request_messages()
            self.display.answer_start()
            _busy(self.display, f"waiting for {self.model.model}")  # until the first token
            try:
                completion = self.model.complete(messages, tools=tools, on_text=on_text)
                break
            except ModelError as e:
                if e.kind == "bad_request" and self.context.images.sent and attempt == 1 and not e.partial:
                    # the server takes no images (or not these): describe figures from now on
                    self.context.images.reject()
                    self.display.notice("the server rejected a request with images; figures go to the "
                                        f"model as descriptions from now on ({e})", "warning")
                    continue
                if e.kind == "no_tools" and tools and not e.partial:
                    # llama.cpp without --jinja: no request with tools can ever work there
                    self.use_tools = False
                    self.display.notice(f"{e} Tools are off for this session: code comes back as "
                                        "fenced blocks instead", "warning")
                    continue
                if e.kind != "context_length" or attempt == 4 or e.partial or shrunk:
                    self.display.answer_end(Completion(text=e.partial))  # show what arrived, then the error
                    raise
                shrunk = True
                # the window we assumed was too big: use the limit the server states (OpenAI, vLLM,
                # LiteLLM, llama.cpp, Ollama, LM Studio: see model/error_map.py), else fit into less
                stated = stated_context_limit(str(e))
                if stated and stated < self.context.context_window:
                    self.context.context_window = stated
                    fit_answer_to_window(self.context, self.model)
                    said = f"its context window is {stated:,} tokens"
                else:
                    self.context.shrink *= 0.7
                    said = "the request exceeds the model's context window"
                self.display.notice(
                    f"the server says {said}; "
                    f"retrying with less history (budget now {self.context.budget:,} tokens)",
                    "warning",
                )
        self.display.answer_end(completion)
        self.usage["requests"] += 1
        if completion.usage:
            self.usage["prompt_tokens"] += completion.usage.prompt_tokens
            self.context.observe_usage(completion.usage.prompt_tokens, completion.usage.cached_tokens)
            self.usage["completion_tokens"] += completion.usage.completion_tokens
            self.usage["cached_tokens"] = self.usage.get("cached_tokens", 0) + completion.usage.cached_tokens
            self.usage["cache_write_tokens"] = (self.usage.get("cache_write_tokens", 0)
                                                + completion.usage.cache_write_tokens)
        self.journal.append(
            "assistant",
            text=completion.text,
            tool_calls=[{"id": c.id, "name": c.name, "arguments": c.arguments} for c in completion.tool_calls],
            finish_reason=completion.finish_reason,
            interrupted=completion.interrupted,
            usage=completion.usage.__dict__ if completion.usage else None,
            model=completion.model or self.model.model,
            seconds=round(time.monotonic() - started, 3),
        )
        return completion

    def _handle_text(self, completion: Completion, reviewer: Reviewer, turn: TurnResult) -> str | None:
        """An answer with (maybe) fenced code. Returns why the loop stops, or None to go on."""
        extraction = extract_code(completion.text)
        content = completion.text
        cut_off = completion.finish_reason not in ("stop", "tool_calls")
        if cut_off:
            content += f"\n[cut off: finish_reason={completion.finish_reason}]"
        self._add({"role": "assistant", "content": content})
        if extraction.other_languages and not extraction.code:
            langs = ", ".join(sorted(set(extraction.other_languages)))
            self.display.notice(f"the answer has {langs} code; llmrepl runs Python only, so nothing was run")
        if extraction.incomplete:
            self.display.notice(self._cut_reason(completion, in_code=True), "warning")
            return "cut_off"
        if cut_off and not extraction.code:
            self.display.notice(self._cut_reason(completion, in_code=False), "warning")
            return "cut_off"
        if not extraction.code:
            if not completion.text.strip():
                self.display.notice(
                    f"the model returned no text (finish_reason={completion.finish_reason}); send the message again",
                    "warning",
                )
            return "done"
        if cut_off:
            self.display.notice(self._cut_reason(completion, in_code=False) + "; its code was not run", "warning")
            return "cut_off"
        blocks = sum(1 for b in extraction.blocks if b.is_python and b.terminated and b.code.strip())
        if blocks > 1:  # the answer shows them apart, with prose between: show the one cell they make
            self.display.tool_code(extraction.code, label=f"llmrepl: the cell to run ({blocks} code blocks, in order)")
        decision = self._review(extraction.code, reviewer, answer=completion.text)
        if decision.action != "run":
            self._declined(decision)
            return "declined"
        result = self.run_cell(decision.code)
        turn.cells.append(result)
        self._add({"role": "user", "content": _NOTE + self._feedback(result, decision.edited),
                   **self.context.images.refs(result)})  # figures as images, with repl.send_images
        return "interrupted" if result.interrupted else None

    def _declined(self, decision: Decision) -> None:
        why = decision.reason or "the user declined"
        self._add({"role": "user", "content": f"{_NOTE}The cell was not run ({why})."})
        if decision.reason and decision.reason != "interrupted":
            self.display.notice(decision.reason)

    def _handle_tool_calls(self, completion: Completion, reviewer: Reviewer, turn: TurnResult) -> str | None:
        """Answer every tool call with a tool message (the API rejects a history without them)."""
        self._add(
            {
                "role": "assistant",
                "content": completion.text or None,
                "tool_calls": [_tool_call_dict(c) for c in completion.tool_calls],
            }
        )
        if extract_code(completion.text).code:
            self.display.notice("the answer also had fenced code; only its run_python call is run")
        stop: str | None = None
        for call in completion.tool_calls:
            if stop:
                self._tool_reply(call, f"Not run: {stop}.")
                continue
            try:
                code = code_from_tool_call(call.name, call.arguments)
            except ValueError as e:
                self.display.notice(str(e), "warning")
                self._tool_reply(call, f"Error: {e}")
                continue
            self.display.tool_code(code)
            decision = self._review(code, reviewer)
            if decision.action != "run":
                reason = decision.reason or "the user declined"
                self._tool_reply(call, f"Not run: {reason}.")
                if decision.reason and decision.reason != "interrupted":
                    self.display.notice(decision.reason)
                stop = "declined"
                continue
            result = self.run_cell(decision.code)
            turn.cells.append(result)
            self._tool_reply(call, self._feedback(result, decision.edited, echo_code=False),
                             self.context.images.refs(result))
            if result.interrupted:
                stop = "interrupted"
        if completion.finish_reason not in ("stop", "tool_calls") and not stop:
            self.display.notice(self._cut_reason(completion, in_code=False), "warning")
            return "cut_off"
        return stop

    def _cut_reason(self, completion: Completion, *, in_code: bool) -> str:
        """Why the answer stopped early, telling a full context window from the output limit."""
        u = completion.usage
        limit = getattr(self.model, "max_output_tokens", None)
        if completion.finish_reason == "length" and u is not None and u.completion_tokens > 0:
            used = u.prompt_tokens + u.completion_tokens
            window = self.context.context_window
            # llama.cpp, Ollama and LM Studio end with "length" when the window fills up: the
            # answer then stops short of model.max_output_tokens, at (about) the whole window
            if used >= window - 8 or (isinstance(limit, int) and u.completion_tokens < limit - 8):
                why = (f"the model's context window is full ({u.prompt_tokens:,} tokens of history and "
                       f"{u.completion_tokens:,} of answer, window {window:,}); /reset or send a shorter "
                       "message, or start the server with a larger context")
                where = "in the middle of a code block, so the code was not run" if in_code else ""
                return f"the answer was cut off ({why}){', ' + where if where else ''}"
        return _cut_reason(completion, in_code=in_code)

    def _tool_reply(self, call: ToolCall, content: str, extra: dict[str, Any] | None = None) -> None:
        self._add({"role": "tool", "tool_call_id": call.id, "content": content, **(extra or {})})



    def _review(self, code: str, reviewer: Reviewer, answer: str = "") -> Decision:
        """The gate: refuse hidden characters, label risks, then auto-run or ask.

        ``answer`` is the model's text the cell was taken from (fenced code): extract_code
        read its line ends, so a lone ``\\r`` there is looked for in it."""
        cell = self.executor.cell_count + 1
        hidden = hidden_characters(code)
        if "\r" in answer:
            hidden += [h for h in hidden_characters(answer) if h.char == "\r"]
        if hidden:
            # in every mode, --yes and auto-run included: what the person saw (or would read
            # in the journal) is not what would run, so nobody approved this code
            decision = Decision("decline", code, reason=_refusal(hidden))
            self.journal.append("decision", cell=cell, action="decline", edited=False, code=code,
                                reason=decision.reason, risks=[], hidden=[h.name for h in hidden[:20]])
            return decision
        risks = scan(code)
        if risks:
            labels = ", ".join(r.label for r in risks)
            self.display.notice(f"this cell may {labels} (advisory scan; read it before it runs)", "warning")
        high = any(r.high for r in risks)
        if self.auto_run and not (high and not self.auto_run_risky):
            decision = Decision("run", code)
        else:
            try:
                decision = reviewer.review(code, cell=cell, high_risk=high)
            except (KeyboardInterrupt, EOFError):
                decision = Decision("decline", code, reason="interrupted")
        if decision.action == "always":
            self.auto_run = True  # later high-risk cells still ask (unless repl.auto_run_risky)
            decision = Decision("run", decision.code or code, decision.edited)
        if not decision.code:
            decision.code = code
        self.journal.append(
            "decision", cell=cell, action=decision.action, edited=decision.edited,
            code=decision.code, reason=decision.reason, risks=[r.label for r in risks],
        )
        return decision


def fit_answer_to_window(context: Context, model: object) -> None:
    """A window under four answers long (a local server's 2,048 or 4,096 tokens) would leave
    little or no room for the conversation: keep a quarter of it for the answer, and ask the
    server for no longer an answer (vLLM rejects max_tokens that cannot fit)."""
    cap = max(context.context_window // 4, 64)
    if context.reserve > cap:
        context.reserve = cap
        limit = getattr(model, "max_output_tokens", None)
        if isinstance(limit, int) and limit > cap:
            model.max_output_tokens = cap  # type: ignore[attr-defined]


def _busy(display: Display, label: str | None, delay: float = 0.0) -> None:
    """``display.busy`` (a Display written before the spinner existed has none: no-op)."""
    busy = getattr(display, "busy", None)
    if busy is not None:
        busy(label, delay=delay)


def _refusal(hidden: list[Hidden]) -> str:
    return ("refused: the code holds characters that show on a terminal unlike what Python reads "
            f"({describe_hidden(hidden)}); write such characters as escapes "
            "(\\u202e, \\r) inside strings, or leave them out")


def _tool_call_dict(call: ToolCall) -> dict[str, Any]:
    args = call.arguments
    try:
        json.loads(args, strict=False)
    except (ValueError, RecursionError):
        args = json.dumps({"broken_arguments": args})  # servers reject invalid JSON in history
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": args}}


def _cut_reason(completion: Completion, *, in_code: bool) -> str:
    why = {
        "length": "the model hit its output limit (model.max_output_tokens)",
        "content_filter": "the server's content filter stopped it",
        None: "the stream ended before the answer finished",
    }.get(completion.finish_reason, f"finish_reason={completion.finish_reason}")
    where = "in the middle of a code block, so the code was not run" if in_code else ""
    return f"the answer was cut off ({why}){', ' + where if where else ''}"
