"""Find a local OpenAI-compatible server (Ollama, LM Studio, llama.cpp, vLLM) at startup.

Used when neither an API key nor a base URL is configured. Stdlib only (``http.client``,
which never consults ``HTTP_PROXY``), all ports probed at once in daemon threads, and the
whole probe bounded by twice ``timeout`` (the models list, then the window): a port that
accepts and never answers cannot stall startup. A server is named by its answers, not its port. It never raises; any failure means "not found". What a server says is not trusted:
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
           "describe_server", "is_plain_model_id", "identify", "candidates"]

KNOWN_SERVERS: list[tuple[str, int]] = [
    ("Ollama", 11434),
    ("LM Studio", 1234),
    ("llama.cpp", 8080),
    ("vLLM", 8000),
]


def candidates(ports: str) -> list[tuple[str, int]]:
    """``model.probe_ports`` ("11434,1234,8080,8000") as probe candidates, in order. The name is
    only the port's usual tenant, kept for a server that does not say what it is."""
    usual = {port: name for name, port in KNOWN_SERVERS}
    out: list[tuple[str, int]] = []
    for part in ports.split(","):
        if part.strip().isdigit() and 0 < (port := int(part)) < 65536:
            out.append((usual.get(port, f"port {port}"), port))
    return out


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


def _int(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= _MAX_CONTEXT:
        return value
    return None


def _context_length(entry: dict[str, object]) -> int | None:
    # llama.cpp (tools/server/server.cpp, handle_models): data[].meta.n_ctx is the window in
    # force (n_ctx_train is what the model was trained for: only a fallback)
    meta = entry.get("meta")
    if isinstance(meta, dict):
        for key in ("n_ctx", "n_ctx_train"):
            if (value := _int(meta.get(key))) is not None:
                return value
    # LM Studio's /api/v0/models: the window it loaded the model with, else the model's maximum
    for key in ("loaded_context_length", *_CONTEXT_KEYS):
        if (value := _int(entry.get(key))) is not None:
            return value
    return None


def identify(entries: list[dict[str, object]]) -> str | None:
    """Which server listed these models, from what it says (``owned_by``, its own keys), or None.

    llama.cpp: ``"owned_by": "llamacpp"`` and ``meta``; vLLM: ``"owned_by": "vllm"`` and
    ``max_model_len`` (vllm/entrypoints/openai/protocol.py, ModelCard); Ollama: ``"owned_by":
    "library"`` or the user's namespace with ``created`` (ollama openai/openai.go, ListCompletion);
    LM Studio: ``"owned_by": "organization_owner"``."""
    for e in entries:
        owner = str(e.get("owned_by") or "").lower()
        if owner == "llamacpp" or isinstance(e.get("meta"), dict):
            return "llama.cpp"
        if owner == "vllm" or "max_model_len" in e:
            return "vLLM"
        if owner == "organization_owner":
            return "LM Studio"
        if owner in ("library", "ollama"):
            return "Ollama"
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
    return LocalServer(identify(entries) or name, base_url, models, context, rejected=len(listed) - len(entries))


def _get_json(conn_args: tuple[str, int], path: str, *, timeout: float, body: dict[str, object] | None = None,
              headers: dict[str, str] | None = None) -> object:
    """One GET (or POST with ``body``) on the server's root; the JSON answer, or None."""
    import http.client

    conn = http.client.HTTPConnection(conn_args[0], conn_args[1], timeout=timeout)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request("POST" if data is not None else "GET", path, body=data,
                     headers={"Accept": "application/json", "Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        raw = response.read(_MAX_BODY + 1)
        if response.status != 200 or len(raw) > _MAX_BODY:
            return None
        return json.loads(raw.decode("utf-8", errors="replace"))
    except Exception:
        return None
    finally:
        conn.close()


def _ollama_window(show: object) -> int | None:
    """The window Ollama runs a model with, from ``POST /api/show`` (ollama api/types.go,
    ShowResponse): ``num_ctx`` in ``parameters`` when the Modelfile sets it, else Ollama's default
    of 4096 tokens (envconfig OLLAMA_CONTEXT_LENGTH), never above ``model_info``'s
    ``<arch>.context_length``. Its OpenAI layer cuts a longer prompt silently, so this matters."""
    if not isinstance(show, dict):
        return None
    trained = None
    info = show.get("model_info")
    if isinstance(info, dict):
        trained = next((_int(v) for k, v in info.items() if str(k).endswith(".context_length") and _int(v)), None)
    params = show.get("parameters")
    m = re.search(r"(?m)^\s*num_ctx\s+(\d+)", params) if isinstance(params, str) else None
    window = int(m.group(1)) if m else 4096
    return min(window, trained) if trained else window


def _refine(server: LocalServer, root: tuple[str, int], *, timeout: float,
            headers: dict[str, str] | None = None) -> LocalServer:
    """Ask the server, by its own API, for the window it really runs with."""
    try:
        if server.name == "llama.cpp" or server.context_length is None:
            props = _get_json(root, "/props", timeout=timeout, headers=headers)  # llama.cpp only
            if isinstance(props, dict):
                settings = props.get("default_generation_settings")
                n_ctx = _int(settings.get("n_ctx")) if isinstance(settings, dict) else None
                if n_ctx is not None:
                    server.name, server.context_length = "llama.cpp", n_ctx
                    return server
        if server.name in ("Ollama", "server") and server.models:
            show = _get_json(root, "/api/show", timeout=timeout, body={"model": server.models[0]}, headers=headers)
            if (window := _ollama_window(show)) is not None:
                # a loaded model: the window in force, from GET /api/ps (models[].context_length)
                ps = _get_json(root, "/api/ps", timeout=timeout, headers=headers)
                running = ps.get("models") if isinstance(ps, dict) else None
                for entry in running if isinstance(running, list) else []:
                    if isinstance(entry, dict) and server.models[0] in (entry.get("name"), entry.get("model")):
                        window = _int(entry.get("context_length")) or window
                server.name, server.context_length = "Ollama", window
                return server
        if server.name == "LM Studio" or server.context_length is None:
            listing = _get_json(root, "/api/v0/models", timeout=timeout, headers=headers)
            data = listing.get("data") if isinstance(listing, dict) else None
            if isinstance(data, list) and server.models:
                entry = next((e for e in data if isinstance(e, dict) and e.get("id") == server.models[0]), None)
                if entry is not None and (window := _context_length(entry)) is not None:
                    server.name, server.context_length = "LM Studio", window
    except Exception:
        pass
    return server


def _host_in_url(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def probe_server(name: str, port: int, *, host: str = "127.0.0.1",
                 timeout: float = 0.5) -> LocalServer | None:
    """``GET /v1/models``, then the server's own API for its window; None for any failure.
    ``name`` is only a fallback: the server is named by what it answers (:func:`identify`)."""
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
        server = _parse("server", base_url, body)
    except Exception:  # any error means "no usable server here"
        return None
    finally:
        if conn is not None:
            conn.close()
    if server is None:
        return None
    server = _refine(server, (host.strip("[]"), port), timeout=timeout / 3)
    if server.name == "server":  # not by its port: anything may listen on 8000 (issue 13)
        server.name = "an OpenAI-compatible server"
    return server


def find_local_server(
    candidates: Sequence[tuple[str, int]] = KNOWN_SERVERS,
    *,
    host: str = "127.0.0.1",
    timeout: float = 0.5,
) -> LocalServer | None:
    """The first candidate, in list order, that answers ``GET /v1/models`` with a models list.

    All candidates are probed concurrently; the call returns within about twice ``timeout``
    seconds whatever the servers do. Never raises.
    """
    try:
        deadline = time.monotonic() + 2 * timeout + 0.1  # the models list, then the window (_refine)
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


def describe_server(base_url: str, *, api_key: str | None = None, timeout: float = 3.0) -> LocalServer | None:
    """A configured server: its models (``GET {base_url}/models``), its name and the window it
    runs with (see :func:`_refine`), or None. Runs in the background; never raises."""
    import urllib.request
    from urllib.parse import urlsplit

    try:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        request = urllib.request.Request(base_url.rstrip("/") + "/models",
                                         headers={"Accept": "application/json", **headers})
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (configured URL)
            body = response.read(_MAX_BODY + 1)
        if len(body) > _MAX_BODY:
            return None
        server = _parse("server", base_url, body)
        if server is None:
            return None
        parts = urlsplit(base_url)
        # a local server's own API: plain http, reached directly (_refine goes through no proxy,
        # so a server behind one is left alone rather than waited for)
        proxied = "http" in urllib.request.getproxies() and not urllib.request.proxy_bypass(parts.hostname or "")
        if parts.scheme == "http" and parts.hostname and not proxied:
            server = _refine(server, (parts.hostname, parts.port or 80), timeout=timeout / 3, headers=headers)
        return server
    except Exception:
        return None


def server_context_length(base_url: str, *, api_key: str | None = None, timeout: float = 3.0) -> int | None:
    """The context length a configured server runs with (see :func:`describe_server`), or None."""
    server = describe_server(base_url, api_key=api_key, timeout=timeout)
    return server.context_length if server is not None else None
