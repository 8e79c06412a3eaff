"""What goes into each request, and how many tokens it takes.

``Context.build(history, namespace)`` writes the system prompt (the rules plus a budgeted
namespace digest), fits the history into the model's window with ``budget.fit_messages``,
turns the newest exchange's figure references into image parts when ``repl.send_images`` is
on (``images.ImageParts``), and merges adjacent user messages. The work per request does not grow with the length of
the session: the fitter walks back from the newest message and per-message counts are cached.
Every request leaves through the session's ``Redactor`` (``_redacted``), the one gate on the
way to the model: the digest, the history (text parts included) and tool-call arguments alike.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

from llmrepl.context.budget import NOTE_PREFIX, FitResult, fit_messages, is_llmrepl_note
from llmrepl.context.digest import NamespaceDigest
from llmrepl.context.images import ImageParts
from llmrepl.context.prompts import system_rules
from llmrepl.context.tokens import ApproxCounter, TokenCounter
from llmrepl.errors import ModelError
from llmrepl.model.pricing import estimate_cost
from llmrepl.redact import Redactor

__all__ = ["Context"]


class Context:
    """Budget, digest and fitting for one session's requests."""

    def __init__(
        self,
        *,
        counter: TokenCounter | None = None,
        context_window: int = 8192,
        reserve: int = 1024,
        digest_tokens: int = 1000,
        max_output_chars: int = 8000,
        redactor: Redactor | None = None,
        send_images: bool = False,
    ) -> None:
        self.counter: TokenCounter = counter or ApproxCounter()
        self.redactor = redactor or Redactor()    # the Session puts its own here
        self.context_window = context_window
        self.reserve = reserve                    # kept free for the answer (max_output_tokens)
        self.digest_tokens = digest_tokens
        self.max_output_chars = max_output_chars
        self.shrink = 1.0                         # < 1 after the server said the window is smaller
        self.digest = NamespaceDigest(count_tokens=self._count)
        self.last: FitResult | None = None
        self.last_digest_tokens = 0
        self._cwd = _cwd()
        self._sys_path = list(sys.path)
        # repl.send_images: figures go to the model as image parts (images.py), until a server
        # rejects a request that carried them (images.rejected: later requests go without)
        self.images = ImageParts(enabled=send_images)

    def _count(self, text: str) -> int:
        return self.counter.count(text)

    @property
    def budget(self) -> int:
        """Tokens the request may use: the window minus the answer's reserve (shrunk after a
        context-length error from the server)."""
        return max(int((self.context_window - self.reserve) * self.shrink), 256)

    def load_tokenizer(self, wait: float = 0.0) -> None:
        """Start loading the exact tokenizer in the background (it costs ~40 MB, so only when
        counts matter); optionally wait up to ``wait`` seconds for it."""
        start = getattr(self.counter, "start", None)
        if start is not None:
            start()
            if wait > 0:
                self.counter.wait(wait)  # type: ignore[attr-defined]

    def observe(self, namespace: Mapping[str, Any]) -> None:
        """After each cell: note which names are new or changed (they lead the digest)."""
        self.digest.observe(namespace)

    def system_prompt(self, namespace: Mapping[str, Any]) -> str:
        extra = []
        cwd = _cwd()
        if cwd != self._cwd:
            extra.append(f"working directory changed to {cwd} (relative paths resolve there)")
        added = [p for p in sys.path if p not in self._sys_path]
        if added:
            extra.append("sys.path gained: " + ", ".join(added[:5]))
        digest = self.digest.render(namespace, budget_tokens=self.digest_tokens, extra=extra,
                                    redact=self.redactor.redact)
        self.last_digest_tokens = self._count(digest)
        rules = system_rules(max_output_chars=self.max_output_chars)
        return f"{rules}\n\nThe namespace now holds:\n{digest}"

    def build(self, history: list[dict[str, Any]], namespace: Mapping[str, Any], *, model: str = "") -> list[dict[str, Any]]:
        """The messages of the next request; ModelError(kind="too_long") when even the newest
        message and the latest result cannot fit (the request would only fail)."""
        system = {"role": "system", "content": self.system_prompt(namespace)}
        fit = fit_messages([system, *history], budget=self.budget, counter=self.counter, is_note=_is_step_result)
        self.last = fit
        if not self.counter.exact and fit.tokens > self.budget // 2:
            self.load_tokenizer()  # estimates are close, but near the limit exact counts matter
        if not fit.fits:
            raise ModelError(
                f"not sent: this request needs about {fit.tokens:,} tokens even with older messages left out, "
                f"but {model or 'the model'} has {self.context_window:,} ({self.reserve:,} kept for the answer). "
                "Shorten the message, /reset, or set model.context_window if the model allows more.",
                kind="too_long",
            )
        messages = self.images.attach(fit, self.budget, self.counter)
        return [_redacted(m, self.redactor) for m in _merge_user_runs(messages)]

    def report(self, history: list[dict[str, Any]], namespace: Mapping[str, Any], *, model: str,
               usage: Mapping[str, int], input_price: float | None = None, output_price: float | None = None) -> str:
        """The /tokens text: the next request by part, the budget, and this session's usage."""
        self.load_tokenizer(wait=2.0)
        try:
            self.build(history, namespace, model=model)
        except ModelError:
            pass
        fit = self.last
        assert fit is not None
        digest = self.last_digest_tokens
        counted = "counted with " + self.counter.name if self.counter.exact else "estimated (tokenizer not loaded)"
        rows = [
            ("system prompt", fit.parts.get("system", 0) - digest),
            ("namespace digest", digest),
            ("history", fit.parts.get("history", 0) + fit.parts.get("note", 0)),
            ("newest message", fit.parts.get("newest", 0)),
        ]
        if fit.parts.get("images"):
            rows.append((f"images ({self.images.sent})", fit.parts["images"]))
        lines = [f"next request to {model}, {counted}:"]
        lines += [f"  {name:<17} {n:>9,}" for name, n in rows]
        kept = len(fit.messages) - 1
        lines.append(f"  {'total':<17} {fit.tokens:>9,} of {self.budget:,} "
                     f"(context {self.context_window:,} − {self.reserve:,} kept for the answer)")
        if fit.dropped:
            lines.append(f"  {fit.dropped} older message(s) left out to fit; {kept} sent")
        requests = usage.get("requests", 0)
        prompt, completion = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
        if not requests:
            lines.append("this session: no requests yet")
        elif not prompt and not completion:
            lines.append(f"this session: {requests} request(s); the server did not report token usage")
        else:
            cost = estimate_cost(model, prompt, completion, input_price=input_price, output_price=output_price)
            money = f" ≈ ${cost:,.4f}" if cost is not None else " (no price known for this model: set model.input_price)"
            lines.append(f"this session: {prompt:,} prompt + {completion:,} completion tokens in "
                         f"{requests} request(s), as reported by the API{money}")
        return "\n".join(lines)

    def feedback_cap(self, text: str) -> float:
        """How much to shrink a cell's feedback so it takes at most a quarter of the budget
        in tokens (1.0 when it already fits)."""
        limit = max(self.budget // 4, 256)
        n = self._count(text)
        return 1.0 if n <= limit else limit / n * 0.9


STANDALONE_NOTES = (
    f"{NOTE_PREFIX}The user ran code directly",      # session.run_direct (/py)
    f"{NOTE_PREFIX}This session was resumed",        # resume.py
    f"{NOTE_PREFIX}The previous llmrepl process",    # resume.py: a cell died with the process
)


def _is_step_result(message: dict[str, Any]) -> bool:
    """A note that belongs to the model step before it (a cell result, a declined cell).

    /py results and resume notes stand on their own: for fitting they are units like a
    message the person typed, so a run of them is not dropped (or kept) all at once."""
    content = message.get("content")
    return (
        is_llmrepl_note(message)
        and isinstance(content, str)
        and not content.startswith(STANDALONE_NOTES)
    )


def _merge_user_runs(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Adjacent user messages become one: some chat templates insist on alternation."""
    merged: list[dict[str, Any]] = []
    for msg in messages:
        prev = merged[-1] if merged else None
        if prev is not None and msg["role"] == "user" and prev["role"] == "user":
            a, b = prev["content"], msg["content"]
            if isinstance(a, list) or isinstance(b, list):  # image parts: merge the part lists
                merged[-1] = {"role": "user", "content": [*_parts(a), *_parts(b, "\n\n")]}
            else:
                merged[-1] = {"role": "user", "content": f"{a}\n\n{b}"}
        else:
            merged.append(msg)
    return merged


def _parts(content: Any, sep: str = "") -> list[dict[str, Any]]:
    if isinstance(content, list):
        if sep and content and content[0].get("type") == "text":
            return [{**content[0], "text": sep + str(content[0].get("text", ""))}, *content[1:]]
        return list(content)
    return [{"type": "text", "text": sep + str(content or "")}]


def _redacted(message: dict[str, Any], redactor: Redactor) -> dict[str, Any]:
    """``message`` as it may leave the machine: its text and tool-call arguments redacted."""
    content, calls = message.get("content"), message.get("tool_calls")
    if isinstance(content, str):
        clean = redactor.redact(content)
        if clean != content:
            message = {**message, "content": clean}
    elif isinstance(content, list):  # text parts redacted; image parts are PNGs llmrepl drew
        message = {**message, "content": [
            {**p, "text": redactor.redact(p["text"])} if isinstance(p.get("text"), str) else p
            for p in content
        ]}
    if calls:
        fixed = []
        for call in calls:
            function = call.get("function") or {}
            args = function.get("arguments")
            scrubbed = redactor.redact(args) if isinstance(args, str) else args
            if scrubbed != args:
                call = {**call, "function": {**function, "arguments": scrubbed}}
            fixed.append(call)
        message = {**message, "tool_calls": fixed}
    return message


def _cwd() -> str:
    try:
        return os.getcwd()
    except OSError:
        return "(removed)"
