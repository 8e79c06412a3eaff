"""What goes into each request, and how many tokens it takes.

``Context.build(history, namespace)`` lays a request out so that servers can serve most of
it from their prompt cache (a request that begins byte for byte like an earlier one): the
system prompt holds only the rules, which never change within a session; the history
follows, from a cut point that moves rarely (when the history outgrows the budget it is cut
in one step down to ``LOW_WATER`` of it, whole units at a time, by ``budget.fit_messages``);
what changes (the namespace digest, a new working directory, sys.path additions, "N earlier
messages were left out") goes last, as a state note at the end of the last message. A note
stays with the message it was sent after, and the next one says only what changed, so each
request extends the previous one. It also turns the newest exchange's figure references into
image parts when ``repl.send_images`` is on (``images.ImageParts``) and merges adjacent user
messages. The work per request does not grow with the length of the session: the fitter
walks back from the newest message and per-message counts are cached.
Every request leaves through the session's ``Redactor`` (``_redacted``), the one gate on the
way to the model: the digest, the history (text parts included) and tool-call arguments alike.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

from llmrepl.context.budget import (
    NOTE_PREFIX,
    FitResult,
    dropped_note,
    fit_messages,
    is_llmrepl_note,
)
from llmrepl.context.digest import NamespaceDigest
from llmrepl.context.images import ImageParts
from llmrepl.context.prompts import system_rules, without_tool_calls
from llmrepl.context.tokens import ApproxCounter, TokenCounter
from llmrepl.errors import ModelError
from llmrepl.model.pricing import estimate_cost
from llmrepl.redact import Redactor

__all__ = ["Context", "STATE_PREFIX", "LOW_WATER", "without_state", "without_tools"]

# The current-state message after the history. A user message, not a system one: chat
# templates of local servers (llama.cpp, vLLM, Ollama) reject or misplace a system message
# that is not first, and a note the model reads last is the one it treats as current.
STATE_PREFIX = f"{NOTE_PREFIX}Session state now (written by llmrepl, it replaces any earlier one):"
# When the history no longer fits, it is cut down to this share of the budget in one step.
LOW_WATER = 0.5


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
        self._rules: tuple[int, str] | None = None
        self._cut = 0                              # history[_cut:] is sent (see build)
        self._cut_msg: dict[str, Any] | None = None  # history[_cut] then, to notice a /reset
        # id(message) -> (message, state note sent after it, the message with the note, what
        # the model knew before it): notes stay where they were sent, so later requests
        # repeat them byte for byte
        self._frozen: dict[int, tuple[dict[str, Any], str, dict[str, Any], dict[str, str] | None]] = {}
        self._known: dict[str, str] | None = None   # the digest lines those notes told the model

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
        return self._state(self._digest(namespace), namespace, dropped, None)[0]

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

    @staticmethod
    def _state(digest: str, namespace: Mapping[str, Any], dropped: int,
               known: dict[str, str] | None) -> tuple[str, dict[str, str]]:
        """(state text, what the model knows after reading it). With ``known`` (what the state
        notes still in the history told it) only the changes are written: the earlier notes
        stay in the history unchanged, so the cached prefix keeps growing."""
        header, *lines = digest.split("\n")
        now = {_line_key(line): line for line in lines if not line.startswith("- ... and ")}
        if known is None:
            left_out = f" {dropped_note(dropped)[len(NOTE_PREFIX):]}" if dropped else ""
            return f"{STATE_PREFIX}{left_out}\nThe namespace now holds:\n{digest}", now
        new = [line for key, line in now.items() if known.get(key) != line]
        # a key still in the digest is not gone ("- modules" is the line of all modules, not a name)
        gone = [k[2:] for k in known
                if k.startswith("- ") and k not in now and k[2:].isidentifier() and k[2:] not in namespace]
        told = {k: v for k, v in known.items() if k[2:] not in gone}
        told.update(now)
        if not new and not gone:
            return f"{STATE_PREFIX} the namespace is as the last state note above says.", told
        text = f"{STATE_PREFIX} the namespace changed since the last state note above ({header.rstrip(':')}):"
        if new:
            text += "\n" + "\n".join(new)
        if gone:
            text += "\n- no longer defined: " + ", ".join(gone)
        return text, told

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
        if self._cut and (self._cut >= len(history) or history[self._cut] is not self._cut_msg):
            self._cut, self._cut_msg = 0, None   # /reset, or a resumed history: start again
        cut = self._cut
        again = self._frozen.pop(id(history[-1]), None) if history else None
        if again is not None and again[0] is history[-1]:  # the same request once more (a retry):
            self._known = again[3]                          # its note is written afresh
        hist = [self._frozen_copy(m) for m in history[cut:]]
        kept_ids = {id(m) for m in history[cut:]}
        known = self._known if all(i in kept_ids for i in self._frozen) and self._frozen else None
        digest = self._digest(namespace)
        state, told = self._state(digest, namespace, cut, known)
        probe = {"role": "system", "content": f"{rules}\n\n{state}"}  # counts rules + state
        fit = fit_messages([probe, *hist], budget=self.budget, counter=self.counter,
                           is_note=_is_step_result, note=False)
        if fit.dropped and fit.fits:
            low = fit_messages([probe, *hist], budget=int(self.budget * LOW_WATER),
                               counter=self.counter, is_note=_is_step_result, note=False)
            body = low.messages[1:]
            if (low.fits and 0 < len(body) <= len(hist)
                    and all(a is b for a, b in zip(body, hist[len(hist) - len(body):], strict=True))):
                cut, fit = len(history) - len(body), low
                fit.budget, fit.dropped = self.budget, 0
        dropped = cut + fit.dropped
        fit.dropped = dropped
        if dropped != self._cut or known is None:  # cut now: the state is written whole
            state, told = self._state(digest, namespace, dropped, None)
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
            self._commit(history, cut, state, told)
        fit.messages = [{"role": "system", "content": rules}, *fit.messages[1:]]
        messages = self.images.attach(fit, self.budget, self.counter)
        return [_redacted(m, self.redactor) for m in _with_state(_merge_user_runs(messages), state)]

    def _commit(self, history: list[dict[str, Any]], cut: int, state: str, told: dict[str, str]) -> None:
        """Remember the cut and the state note as part of the newest message from now on."""
        self._cut = cut
        self._cut_msg = history[cut] if cut < len(history) else None
        kept = {id(m) for m in history[cut:]}
        self._frozen = {k: v for k, v in self._frozen.items() if k in kept}
        last = history[-1] if history else None
        if last is None or last.get("role") not in ("user", "tool"):
            self._frozen, self._known = {}, None   # nowhere to keep it: write it whole next time
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


def without_tools(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A built request for a server that takes no tools: tool calls and results as text."""
    plain = without_tool_calls(messages)
    return plain if plain is messages else _merge_user_runs(plain)


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


def _line_key(line: str) -> str:
    """What a digest line is about: "- name" for a name's line, else the line itself."""
    return line.split(":", 1)[0] if line.startswith("- ") and ":" in line else line


def without_state(text: str) -> str:
    """A sent message's text without the current-state part ``build`` appended."""
    return text.split("\n\n" + STATE_PREFIX, 1)[0] if text != STATE_PREFIX else text


def _with_state(messages: list[dict[str, Any]], state: str) -> list[dict[str, Any]]:
    """The state appended to the last message when that is the newest user message or a
    tool result (the message count and roles stay as they were), else as its own user
    message. The next request sends that message without it, so the cached prefix runs
    up to the state."""
    last = messages[-1] if messages else None
    if last is None or last.get("role") not in ("user", "tool"):
        return [*messages, {"role": "user", "content": state}]
    content = last.get("content")
    if isinstance(content, list):
        merged: Any = [*content, {"type": "text", "text": "\n\n" + state}]
    else:
        merged = f"{content or ''}\n\n{state}"
    return [*messages[:-1], {**last, "content": merged}]


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
