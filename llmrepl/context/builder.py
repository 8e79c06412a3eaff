"""What goes into each request, and how many tokens it takes.

``Context.build(history, namespace)`` lays a request out so that servers can serve most of
it from their prompt cache (a request that begins byte for byte like an earlier one): the
system prompt holds only the rules, which never change within a session; the history
follows, from a cut point that moves rarely (when the history outgrows the budget it is cut
in one step down to ``LOW_WATER`` of it, whole units at a time, by ``budget.fit_messages``;
the first exchange stays when it is small, ``HEAD_SHARE``); what changes (the namespace
digest, a new working directory, sys.path additions, "N earlier messages were left out")
goes last, as a state note at the end of the last message (``notes.py``). A note stays
with the message it was sent after, and the next one says only what changed (or is left
out when nothing did), so each request extends the previous one. Counts are matched to the
server's own once it reported some (``observe_usage``). It also turns the newest exchange's
figure references into image parts when ``repl.send_images`` is on (``images.ImageParts``)
and merges adjacent user messages. The work per request does not grow with the length of
the session: the fitter walks back from the newest message and per-message counts are cached.
Every request leaves through the session's ``Redactor`` (``notes.redacted``), the one gate on
the way to the model: the digest, the history (text parts included) and tool-call arguments alike.
"""
from __future__ import annotations

import os
import sys
from collections import deque
from collections.abc import Mapping
from typing import Any

from llmrepl.context.budget import FitResult, fit_messages, is_llmrepl_note
from llmrepl.context.digest import NamespaceDigest
from llmrepl.context.images import ImageParts
from llmrepl.context.notes import (
    STATE_PREFIX,
    WHOLE_PREFIX,
    is_step_result,
    merge_user_runs,
    redacted,
    state_note,
    with_state,
    without_state,
    without_tools,
)
from llmrepl.context.prompts import system_rules
from llmrepl.context.tokens import ApproxCounter, ScaledCounter, TokenCounter
from llmrepl.errors import ModelError
from llmrepl.model.pricing import estimate_cost
from llmrepl.redact import Redactor

__all__ = ["Context", "STATE_PREFIX", "LOW_WATER", "without_state", "without_tools"]

# When the history no longer fits, it is cut down to this share of the budget in one step.
LOW_WATER = 0.4
# The first exchange stays across cuts when it takes at most this share of the budget.
HEAD_SHARE = 0.2
# usage.prompt_tokens / our estimate outside this range is not a count of the same thing.
RATIO_RANGE = (0.5, 2.0)


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
        # counts are matched to the server's own once it reported some (observe_usage); a
        # new model (a new counter too, perhaps) starts again at 1 (build)
        self.scale = 1.0
        self._ratios: deque[float] = deque(maxlen=4)
        self.redactor = redactor or Redactor()    # the Session puts its own here
        self.context_window = context_window
        self.reserve = reserve                    # kept free for the answer (max_output_tokens)
        self.digest_tokens = digest_tokens
        self.max_output_chars = max_output_chars
        self.shrink = 1.0                         # < 1 after the server said the window is smaller
        self.digest = NamespaceDigest(count_tokens=self._count)
        self.last: FitResult | None = None
        self.last_digest_tokens = 0
        self.last_state_tokens = 0   # the state note in the request built last (0: none)
        self._cwd = _cwd()
        self._sys_path = list(sys.path)
        # repl.send_images: figures go to the model as image parts (images.py), until a server
        # rejects a request that carried them (images.rejected: later requests go without)
        self.images = ImageParts(enabled=send_images)
        self._rules: tuple[int, str] | None = None
        self._cut = 0                              # history[_cut:] is sent (see build)
        self._cut_msg: dict[str, Any] | None = None  # history[_cut] then, to notice a /reset
        # id(message) -> (message, state note sent after it, the message with the note, what
        # the model knew before it): notes stay where they were sent, so later requests
        # repeat them byte for byte
        self._frozen: dict[int, tuple[dict[str, Any], str, dict[str, Any], dict[str, str] | None]] = {}
        self._known: dict[str, str] | None = None   # the digest lines those notes told the model
        self._sent = 0.0      # the last request sent, as estimated before scaling (observe_usage)
        self._model = ""      # the model the last request was built for: another one is counted afresh
        self._head_sent = 0   # messages of the first exchange sent before the cut (0: none, or no cut)

    def _unscaled(self) -> None:
        self.scale = 1.0
        self._ratios.clear()

    def counter_view(self) -> TokenCounter:
        """The counter, its counts matched to the server's once it reported some."""
        return self.counter if self.scale == 1.0 else ScaledCounter(self.counter, self.scale)

    def observe_usage(self, prompt_tokens: int, cached_tokens: int = 0) -> None:
        """The server's own count of the last request's prompt (``usage.prompt_tokens``, and
        ``cached_tokens``, the part of it served from the server's cache).

        Servers count with their model's tokenizer (a llama.cpp model's is not OpenAI's),
        so from then on counts are scaled by the ratio seen (the largest of the last four:
        an underestimate would overflow the window). Counts far off (a server that reports
        something else, a scripted test count) are ignored, and the scale never goes below
        0.85: a lower count lets more history in, an overflow costs a retry. A count lower
        than the estimate is believed only from a server that reports its cache use: some
        (older Ollama) leave the cached prefix out of ``prompt_tokens`` and say nothing of it."""
        sent = self._sent
        if sent < 256 or prompt_tokens <= 0:  # (absurd counts were read as 0: model/answer.py)
            return
        ratio = prompt_tokens / sent
        if not RATIO_RANGE[0] <= ratio <= RATIO_RANGE[1] or (ratio < 1 and cached_tokens <= 0):
            return
        self._ratios.append(ratio)
        self.scale = round(min(max(max(self._ratios), 0.85), RATIO_RANGE[1]), 3)

    def _head(self, history: list[dict[str, Any]], counter: TokenCounter) -> tuple[int, int]:
        """(messages, tokens) of the first exchange (up to the second message the person
        typed or ran), or (0, 0) when it takes more than ``HEAD_SHARE`` of the budget or has
        not ended yet. It is kept when older history is cut."""
        typed = False
        tokens, limit = 0, self.budget * HEAD_SHARE
        for i, message in enumerate(history):
            starts = message.get("role") == "user" and not is_step_result(message)
            if starts and typed:
                return i, int(tokens)
            typed = typed or (starts and not is_llmrepl_note(message))
            tokens += counter.count_message(self._frozen_copy(message))
            if tokens > limit:
                break
        return 0, 0

    def _count(self, text: str) -> int:
        return self.counter_view().count(text)

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

    def system_prompt(self, namespace: Mapping[str, Any] | None = None) -> str:
        """The rules: the same bytes for the whole session, so every request's prefix can be
        served from the server's cache. What changes goes in ``state_text`` instead."""
        if self._rules is None or self._rules[0] != self.max_output_chars:
            self._rules = (self.max_output_chars,
                           system_rules(max_output_chars=self.max_output_chars, cwd=self._cwd))
        return self._rules[1]

    def state_text(self, namespace: Mapping[str, Any], dropped: int = 0) -> str:
        """The whole current state: how many messages were left out, a new working directory,
        sys.path additions and the namespace digest."""
        return state_note(self._digest(namespace), namespace, dropped, None)[0]

    def _digest(self, namespace: Mapping[str, Any]) -> str:
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
        return digest

    def _frozen_copy(self, message: dict[str, Any]) -> dict[str, Any]:
        entry = self._frozen.get(id(message))
        return entry[2] if entry is not None and entry[0] is message else message

    def build(self, history: list[dict[str, Any]], namespace: Mapping[str, Any], *, model: str = "",
              commit: bool = True) -> list[dict[str, Any]]:
        """The messages of the next request; ModelError(kind="too_long") when even the newest
        message and the latest result cannot fit (the request would only fail).

        Layout, for prompt caching: the fixed rules (system), the history from the cut point
        on, then the current state at the end of the last message (the newest user message,
        cell result or tool result). That state stays with that message in later requests,
        which add only what changed since, so a request extends the previous one byte for
        byte. When the history outgrows the budget it is cut in one step down to
        ``LOW_WATER`` of the budget (and the next state is written whole), so the prefix
        then stays the same for many requests instead of moving every turn.
        ``commit=False`` (/tokens) leaves no trace for later requests."""
        rules = self.system_prompt()
        if model and model != self._model:
            if self._model:
                self._unscaled()   # /model: another model's tokenizer; its server's counts are learnt afresh
            self._model = model
        if self._cut and (self._cut >= len(history) or history[self._cut] is not self._cut_msg):
            self._cut, self._cut_msg = 0, None   # /reset, or a resumed history: start again
        cut = self._cut
        again = self._frozen.pop(id(history[-1]), None) if history else None
        if again is not None and again[0] is history[-1]:  # the same request once more (a retry):
            # its note is written afresh: whole again when it was whole (after a cut, it says
            # what was left out, and the notes it replaced may have been cut away)
            self._known = None if again[1].startswith("\n\n" + WHOLE_PREFIX) else again[3]
        counter = self.counter_view()
        h, head_tokens = self._head(history, counter)
        gap = 0 < h < cut                                  # the first exchange, then a gap
        kept_ids = {id(m) for m in history[cut:]} | ({id(m) for m in history[:h]} if gap else set())
        known = self._known if all(i in kept_ids for i in self._frozen) and self._frozen else None
        digest = self._digest(namespace)
        state, told = state_note(digest, namespace, cut - h if gap else cut, known, after_first=gap)
        whole = known is None
        while True:
            probe = {"role": "system", "content": f"{rules}\n\n{state}"}  # counts rules + state
            fit, new_cut, sent_head, sent_tokens = self._fit(history, cut, h, head_tokens, probe, counter)
            extra = fit.dropped                              # beyond the cut (a huge newest step)
            dropped = new_cut - sent_head + extra
            rewrite = new_cut != self._cut or sent_head != self._head_sent or bool(extra) or whole
            if rewrite:  # cut now, or the first exchange kept or left out: the state is written whole
                state, told = state_note(digest, namespace, dropped, None, after_first=bool(sent_head))
            if whole or not rewrite:
                break
            whole = True  # the whole note is longer than the changes that were fitted: fit with it
        cut = new_cut
        fit.dropped = dropped
        head = [self._frozen_copy(m) for m in history[:sent_head]]
        fit.tokens += sent_tokens
        fit.parts["history"] += sent_tokens
        self.last_state_tokens = counter.count("\n\n" + state) if state else 0
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
        if commit:
            self._head_sent = sent_head
            self._commit(history, cut, sent_head, state, told)
        fit.messages = [{"role": "system", "content": rules}, *head, *fit.messages[1:]]
        messages = self.images.attach(fit, self.budget, counter)
        if commit:
            self._sent = fit.tokens / self.scale
        return [redacted(m, self.redactor) for m in with_state(merge_user_runs(messages), state)]

    def _fit(self, history: list[dict[str, Any]], cut: int, h: int, head_tokens: int, probe: dict[str, Any],
             counter: TokenCounter) -> tuple[FitResult, int, int, int]:
        """Fit ``probe`` (the rules and the state) and the history from ``cut`` on, after the
        first exchange (``h`` messages, ``head_tokens``) when it is kept apart. Returns (fit, cut,
        first-exchange messages and tokens sent apart: 0, 0 when none)."""
        gap = 0 < h < cut                                  # the first exchange, then a gap
        hist = [self._frozen_copy(m) for m in history[cut:]]
        fit = fit_messages([probe, *hist], budget=self.budget - (head_tokens if gap else 0), counter=counter,
                           is_note=is_step_result, note=False)
        if gap and not fit.fits:  # the newest message needs the first exchange's room: it goes too
            h, head_tokens = 0, 0
            fit = fit_messages([probe, *hist], budget=self.budget, counter=counter,
                               is_note=is_step_result, note=False)
        if fit.dropped and fit.fits:
            # cut once, down to the low-water mark; the first exchange stays when it is small
            # (usually the task, and the longer prefix that servers still have cached). When the
            # rules, the state and the newest step alone take more, down to them: still one cut
            # (not a unit per request), and the newest step is never left out for the mark's sake
            floor = fit.tokens - fit.parts["history"] + 32
            low = fit_messages([probe, *hist], budget=max(int(self.budget * LOW_WATER) - head_tokens, floor),
                               counter=counter, is_note=is_step_result, note=False)
            body = low.messages[1:]
            if (low.fits and 0 < len(body) <= len(hist)
                    and all(a is b for a, b in zip(body, hist[len(hist) - len(body):], strict=True))):
                cut, fit = len(history) - len(body), low
                fit.budget, fit.dropped = self.budget, 0
                if fit.tokens + head_tokens > self.budget:  # no room for the first exchange as well
                    h, head_tokens = 0, 0
        return (fit, cut, h, head_tokens) if 0 < h < cut else (fit, cut, 0, 0)

    def _commit(self, history: list[dict[str, Any]], cut: int, head: int, state: str, told: dict[str, str]) -> None:
        """Remember the cut and the state note as part of the newest message from now on
        (``head``: the first exchange's messages sent before the cut)."""
        self._cut = cut
        self._cut_msg = history[cut] if cut < len(history) else None
        kept = {id(m) for m in history[cut:]} | {id(m) for m in history[:head]}
        self._frozen = {k: v for k, v in self._frozen.items() if k in kept}
        last = history[-1] if history else None
        if last is None or last.get("role") not in ("user", "tool"):
            self._frozen, self._known = {}, None   # nowhere to keep it: write it whole next time
            return
        if not state:  # nothing changed: no note, and what the model knows stays as it was
            return
        suffix = "\n\n" + state
        content = last.get("content")
        if isinstance(content, list):
            copy = {**last, "content": [*content, {"type": "text", "text": suffix}]}
        else:
            copy = {**last, "content": f"{content or ''}{suffix}"}
        self._frozen[id(last)] = (last, suffix, copy, self._known)
        self._known = told

    def report(self, history: list[dict[str, Any]], namespace: Mapping[str, Any], *, model: str,
               usage: Mapping[str, int], input_price: float | None = None, output_price: float | None = None) -> str:
        """The /tokens text: the next request by part, the budget, and this session's usage."""
        self.load_tokenizer(wait=2.0)
        try:
            self.build(history, namespace, model=model, commit=False)
        except ModelError:
            pass
        fit = self.last
        assert fit is not None
        digest = self.last_state_tokens  # the whole digest, the changes since the last note, or none
        counted = "counted with " + self.counter.name if self.counter.exact else "estimated (tokenizer not loaded)"
        if self.scale != 1.0:
            counted += f", scaled ×{self.scale:.2f} to the server's own counts"
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
            cached = min(usage.get("cached_tokens", 0), prompt)
            written = min(usage.get("cache_write_tokens", 0), prompt - cached)
            cost = estimate_cost(model, prompt, completion, input_price=input_price, output_price=output_price,
                                 cached_tokens=cached, cache_write_tokens=written)
            money = f" ≈ ${cost:,.4f}" if cost is not None else " (no price known for this model: set model.input_price)"
            lines.append(f"this session: {prompt:,} prompt + {completion:,} completion tokens in "
                         f"{requests} request(s), as reported by the API{money}")
            if prompt:
                lines.append(f"  {cached:,} prompt tokens ({cached / prompt:.0%}) served from the server's cache"
                             f"{' at the cached rate' if cost is not None and cached else ''}")
            if written:
                lines.append(f"  {written:,} prompt tokens written to the server's cache"
                             f"{' (priced at its write rate)' if cost is not None else ''}")
        return "\n".join(lines)

    def feedback_cap(self, text: str) -> float:
        """How much to shrink a cell's feedback so it takes at most a quarter of the budget
        in tokens (1.0 when it already fits)."""
        limit = max(self.budget // 4, 256)
        n = self._count(text)
        return 1.0 if n <= limit else limit / n * 0.9


def _cwd() -> str:
    try:
        return os.getcwd()
    except OSError:
        return "(removed)"
