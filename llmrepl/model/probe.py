"""Find a local OpenAI-compatible server (Ollama, LM Studio, llama.cpp, vLLM) at startup.

Used when neither an API key nor a base URL is configured. Stdlib only (``http.client``,
which never consults ``HTTP_PROXY``), all ports probed at once in daemon threads, and the
whole probe bounded by ``timeout``: a port that accepts and never answers cannot stall
startup. It never raises; any failure means "not found". What a server says is not trusted:
a model id becomes the model's name in the journal, on screen and in exports, so only a
plain one is kept (:func:`is_plain_model_id`); the others are counted in ``rejected``.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["LocalServer", "KNOWN_SERVERS", "find_local_server", "probe_server", "server_context_length",
           "is_plain_model_id"]

KNOWN_SERVERS: list[tuple[str, int]] = [
    ("Ollama", 11434),
    ("LM Studio", 1234),
    ("llama.cpp", 8080),
    ("vLLM", 8000),
]
_MAX_BODY = 4 * 1024 * 1024  # a models list is small; do not read an unbounded answer
# Keys under which servers report a model's context length in /v1/models.
_CONTEXT_KEYS = ("max_model_len", "context_length", "max_context_length", "context_window")
_MAX_CONTEXT = 100_000_000  # tokens: larger is not a window, it is a broken (or hostile) answer
# "gpt-4.1", "llama3.1:8b", "meta-llama/Llama-3.1-8B-Instruct", "hf.co/x/y-GGUF:Q4_K_M",
# "/models/7B/model.gguf": ASCII letters, digits and . _ : / @ + = ~ -, not starting with -
_PLAIN_ID = re.compile(r"[A-Za-z0-9._:/@+=~][A-Za-z0-9._:/@+=~-]{0,199}")


def is_plain_model_id(text: object) -> bool:
    """A model id safe to use as a name anywhere: up to 200 characters of letters, digits and
    ``. _ : / @ + = ~ -``; no space, no control character, no quote, no escape."""
    return isinstance(text, str) and _PLAIN_ID.fullmatch(text) is not None


@dataclass
class LocalServer:
    """A server that answered ``GET /v1/models``."""

    name: str  # "Ollama", "LM Studio", "llama.cpp", "vLLM"
    base_url: str  # "http://127.0.0.1:11434/v1"
    models: list[str] = field(default_factory=list)
    context_length: int | None = None  # as reported for models[0] (vLLM: "max_model_len")
    rejected: int = 0  # ids the server listed that were not plain names (see is_plain_model_id)


def _context_length(entry: dict[str, object]) -> int | None:
    for key in _CONTEXT_KEYS:
        value = entry.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= _MAX_CONTEXT:
            return value
    return None


def _parse(name: str, base_url: str, body: bytes) -> LocalServer | None:
    payload = json.loads(body.decode("utf-8", errors="replace"))
    if not isinstance(payload, dict):
        return None
    data = payload.get("data")
    if data is None and payload.get("object") == "list":
        data = []  # Ollama with no models pulled sends "data": null
    if not isinstance(data, list):
        return None
    listed = [e for e in data if isinstance(e, dict) and "id" in e]
    entries = [e for e in listed if is_plain_model_id(e["id"])]
    models = [str(e["id"]) for e in entries]
    context = _context_length(entries[0]) if entries else None
    return LocalServer(name, base_url, models, context, rejected=len(listed) - len(entries))


def _host_in_url(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def probe_server(name: str, port: int, *, host: str = "127.0.0.1",
                 timeout: float = 0.5) -> LocalServer | None:
    """One ``GET /v1/models``; the server, or None for any failure."""
    import http.client  # ~30 ms (the email package); only needed when probing

    base_url = f"http://{_host_in_url(host)}:{port}/v1"
    conn: http.client.HTTPConnection | None = None
    try:
        conn = http.client.HTTPConnection(host.strip("[]"), port, timeout=timeout)
        conn.request("GET", "/v1/models", headers={"Accept": "application/json"})
        response = conn.getresponse()
        if response.status != 200:
            return None
        body = response.read(_MAX_BODY + 1)
        if len(body) > _MAX_BODY:
            return None
        return _parse(name, base_url, body)
    except Exception:  # any error means "no usable server here"
        return None
    finally:
        if conn is not None:
            conn.close()


def find_local_server(
    candidates: Sequence[tuple[str, int]] = KNOWN_SERVERS,
    *,
    host: str = "127.0.0.1",
    timeout: float = 0.5,
) -> LocalServer | None:
    """The first candidate, in list order, that answers ``GET /v1/models`` with a models list.

    All candidates are probed concurrently; the call returns within about ``timeout``
    seconds whatever the servers do. Never raises.
    """
    try:
        deadline = time.monotonic() + timeout + 0.1
        results: list[LocalServer | None] = [None] * len(candidates)
        done = [threading.Event() for _ in candidates]

        def work(index: int, name: str, port: int) -> None:
            try:
                results[index] = probe_server(name, port, host=host, timeout=timeout)
            except BaseException:  # a probe thread must never print a traceback
                pass
            finally:
                done[index].set()

        for index, (name, port) in enumerate(candidates):
            threading.Thread(
                target=work, args=(index, name, port), name=f"llmrepl-probe-{port}", daemon=True
            ).start()
        # Threads that outlive the deadline are daemons: they end with their socket timeout.
        for index in range(len(candidates)):
            done[index].wait(max(0.0, deadline - time.monotonic()))
            if results[index] is not None:
                return results[index]
        return None
    except Exception:
        return None


def server_context_length(base_url: str, *, api_key: str | None = None, timeout: float = 3.0) -> int | None:
    """The context length a configured server advertises on ``GET {base_url}/models`` (vLLM's
    ``max_model_len`` and friends), or None. Runs in the background; never raises."""
    import urllib.request

    try:
        request = urllib.request.Request(base_url.rstrip("/") + "/models", headers={"Accept": "application/json"})
        if api_key:
            request.add_header("Authorization", f"Bearer {api_key}")
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (configured URL)
            body = response.read(_MAX_BODY + 1)
        if len(body) > _MAX_BODY:
            return None
        server = _parse("server", base_url, body)
        return server.context_length if server is not None else None
    except Exception:
        return None

