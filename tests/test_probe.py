"""Tests for llmrepl.model.probe against real local HTTP servers on free ports."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from llmrepl.model.probe import KNOWN_SERVERS, LocalServer, find_local_server, probe_server


def _handler(status: int, body: bytes) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            # only the models listing exists, so every passing test proves the path
            self.send_response(status if self.path == "/v1/models" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def serve() -> Iterator:
    """serve(status, payload) -> port of a running server answering every GET so."""
    servers: list[ThreadingHTTPServer] = []

    def start(status: int = 200, payload: object = None, raw: bytes | None = None) -> int:
        body = raw if raw is not None else json.dumps(payload).encode()
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(status, body))
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return server.server_address[1]

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel backlog does) and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    yield sock.getsockname()[1]
    sock.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


MODELS = {"object": "list", "data": [{"id": "llama3.2", "object": "model"}, {"id": "qwen3"}]}


def test_finds_a_server_with_models(serve) -> None:
    port = serve(200, MODELS)
    found = find_local_server([("Ollama", port)])
    # named by what it answers, not by the port it was found on: this one says nothing more
    assert found == LocalServer("an OpenAI-compatible server", f"http://127.0.0.1:{port}/v1", ["llama3.2", "qwen3"])


def test_server_with_zero_models_counts(serve) -> None:
    port = serve(200, {"object": "list", "data": []})
    assert find_local_server([("LM Studio", port)]) == LocalServer(
        "an OpenAI-compatible server", f"http://127.0.0.1:{port}/v1", [])


def test_ollama_null_data_counts_as_no_models(serve) -> None:
    port = serve(200, {"object": "list", "data": None})
    found = find_local_server([("Ollama", port)])
    assert found is not None and found.models == []


@pytest.mark.parametrize(
    ("status", "payload", "raw"),
    [
        (404, {"error": "not found"}, None),
        (500, MODELS, None),
        (200, None, b"<html>not json</html>"),
        (200, {"models": ["x"]}, None),  # no "data" list
        (200, {"data": "x"}, None),
        (200, ["x"], None),
        (200, None, b"\xff\xfe garbage"),
    ],
)
def test_wrong_answers_are_not_servers(serve, status: int, payload: object, raw: bytes | None) -> None:
    port = serve(status, payload, raw)
    assert find_local_server([("vLLM", port)]) is None


def test_nothing_listening() -> None:
    assert find_local_server([("a", free_port()), ("b", free_port())]) is None


def test_no_candidates() -> None:
    assert find_local_server([]) is None


def test_silent_port_does_not_stall(silent_port: int) -> None:
    start = time.monotonic()
    assert find_local_server([("llama.cpp", silent_port)], timeout=0.5) is None
    assert time.monotonic() - start < 5  # the silent port would hold a plain read forever


def test_list_order_wins_over_speed(serve, silent_port: int) -> None:
    first, second = serve(200, {"data": [{"id": "first"}]}), serve(200, {"data": [{"id": "second"}]})
    found = find_local_server([("A", first), ("B", second)])
    assert found is not None and found.base_url.endswith(f":{first}/v1") and found.models == ["first"]
    # a silent first candidate is waited for (until the deadline), then the next one is used
    start = time.monotonic()
    found = find_local_server([("silent", silent_port), ("B", second)], timeout=0.5)
    assert time.monotonic() - start < 5
    assert found is not None and found.base_url.endswith(f":{second}/v1")


def test_failing_candidates_are_skipped(serve) -> None:
    bad, good = serve(404, {}), serve(200, MODELS)
    found = find_local_server([("bad", bad), ("gone", free_port()), ("good", good)])
    assert found is not None and found.base_url.endswith(f":{good}/v1")


def test_probes_run_concurrently(serve) -> None:
    silent = [socket.socket() for _ in range(8)]
    try:
        for sock in silent:
            sock.bind(("127.0.0.1", 0))
            sock.listen(1)
        candidates = [(f"s{i}", s.getsockname()[1]) for i, s in enumerate(silent)]
        start = time.monotonic()
        assert find_local_server(candidates, timeout=1.0) is None
        assert time.monotonic() - start < 5  # one after another would take 8 s
    finally:
        for sock in silent:
            sock.close()


def test_context_length_from_vllm(serve) -> None:
    payload = {"object": "list", "data": [
        {"id": "Qwen/Qwen3-8B", "object": "model", "owned_by": "vllm", "max_model_len": 32768},
        {"id": "other", "max_model_len": 4096},
    ]}
    found = find_local_server([("vLLM", serve(200, payload))])
    assert found is not None and found.context_length == 32768


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"id": "m", "context_length": 8192}, 8192),
        ({"id": "m", "max_context_length": 4096}, 4096),
        ({"id": "m"}, None),
        ({"id": "m", "max_model_len": "big"}, None),
        ({"id": "m", "max_model_len": True}, None),
        ({"id": "m", "max_model_len": -1}, None),
    ],
)
def test_context_length_variants(serve, entry: dict, expected: int | None) -> None:
    found = find_local_server([("x", serve(200, {"data": [entry]}))])
    assert found is not None and found.context_length == expected


def test_entries_without_an_id_are_ignored(serve) -> None:
    found = find_local_server([("x", serve(200, {"data": [{"name": "no id"}, {"id": "ok"}, 3]}))])
    assert found is not None and found.models == ["ok"]


def test_proxy_variables_are_ignored(serve, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(var, f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("NO_PROXY", "")
    port = serve(200, MODELS)
    found = find_local_server([("Ollama", port)])
    assert found is not None and found.models == ["llama3.2", "qwen3"]


def test_probe_server_alone(serve) -> None:
    port = serve(200, MODELS)
    assert probe_server("x", port) == LocalServer("an OpenAI-compatible server", f"http://127.0.0.1:{port}/v1",
                                                  ["llama3.2", "qwen3"])


def test_ipv6_host_in_base_url(serve) -> None:
    found = probe_server("x", free_port(), host="::1", timeout=0.2)
    assert found is None  # nothing there, and no exception


def test_never_raises_on_bad_input() -> None:
    assert find_local_server([("bad", -1), ("worse", 70000)], host="no such host.invalid") is None


def test_known_servers() -> None:
    assert KNOWN_SERVERS == [("Ollama", 11434), ("LM Studio", 1234), ("llama.cpp", 8080),
                             ("vLLM", 8000)]


@pytest.mark.parametrize("name, plain", [
    ("gpt-4.1-mini", True), ("llama3.1:8b", True), ("hf.co/org/x-GGUF:Q4_K_M", True),
    ("/models/7B/model.gguf", True), ("a" * 200, True), ("a" * 201, False), ("", False),
    ("-rf", False), ("two words", False), ("line\nbreak", False), ("esc\x1b[2J", False),
    ("quote'", False), ("bidi\u202e", False), ("ünï", False), (42, False), (None, False),
])
def test_plain_model_ids(name: object, plain: bool) -> None:
    from llmrepl.model.probe import is_plain_model_id

    assert is_plain_model_id(name) is plain


def test_hostile_ids_are_dropped_and_counted(serve) -> None:
    port = serve(200, {"data": [{"id": "bad\nid"}, {"id": "good"}, {"id": "x" * 999}]})
    server = probe_server("vLLM", port, timeout=2)
    assert server is not None and server.models == ["good"] and server.rejected == 2


def test_absurd_context_length_is_ignored(serve) -> None:
    port = serve(200, {"data": [{"id": "m", "max_model_len": 10**30}]})
    server = probe_server("vLLM", port, timeout=2)
    assert server is not None and server.context_length is None


# -- each server by its own answers (shapes from each server's source or docs) ----------------

def _routes_handler(routes: dict[str, object], seen: list[str]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            sent = self.rfile.read(length) if length else b""
            seen.append(f"{self.command} {self.path} {sent.decode()}".strip())
            payload = routes.get(f"{self.command} {self.path}")
            body = json.dumps(payload if payload is not None else {"error": "not found"}).encode()
            self.send_response(200 if payload is not None else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def serve_routes() -> Iterator:
    servers: list[ThreadingHTTPServer] = []

    def start(routes: dict[str, object], seen: list[str] | None = None) -> int:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _routes_handler(routes, seen if seen is not None else []))
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return server.server_address[1]

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


# llama.cpp tools/server: /v1/models lists "owned_by": "llamacpp" with "meta"; /props holds the
# window in force in default_generation_settings.n_ctx
LLAMA_CPP = {
    "GET /v1/models": {"object": "list", "data": [{
        "id": "qwen2.5-0.5b-instruct-q4_k_m.gguf", "object": "model", "created": 1733000000,
        "owned_by": "llamacpp", "meta": {"vocab_type": 2, "n_vocab": 151936, "n_ctx_train": 32768,
                                         "n_embd": 896, "n_params": 494032768, "size": 491400032}}]},
    "GET /props": {"default_generation_settings": {"n_ctx": 4096, "params": {}}, "total_slots": 1,
                   "model_path": "/models/qwen2.5-0.5b-instruct-q4_k_m.gguf"},
}
# vLLM entrypoints/openai/protocol.py ModelCard
VLLM = {"GET /v1/models": {"object": "list", "data": [{
    "id": "Qwen/Qwen3-8B", "object": "model", "created": 1733000000, "owned_by": "vllm",
    "root": "Qwen/Qwen3-8B", "parent": None, "max_model_len": 16384, "permission": []}]}}
# Ollama openai/openai.go (ListCompletion) and api/types.go (ShowResponse)
OLLAMA = {
    "GET /v1/models": {"object": "list", "data": [
        {"id": "llama3.2:latest", "object": "model", "created": 1733000000, "owned_by": "library"}]},
    "POST /api/show": {"license": "...", "modelfile": "...", "template": "...",
                       "parameters": "num_ctx                        8192\nstop                           \"<|eot_id|>\"",
                       "details": {"family": "llama"},
                       "model_info": {"general.architecture": "llama", "llama.context_length": 131072}},
}
# LM Studio REST API docs (/api/v0/models): max_context_length, and loaded_context_length when loaded
LM_STUDIO = {
    "GET /v1/models": {"data": [{"id": "qwen2.5-7b-instruct", "object": "model",
                                 "owned_by": "organization_owner"}], "object": "list"},
    "GET /api/v0/models": {"object": "list", "data": [{
        "id": "qwen2.5-7b-instruct", "object": "model", "type": "llm", "publisher": "lmstudio-community",
        "arch": "qwen2", "compatibility_type": "gguf", "quantization": "Q4_K_M", "state": "loaded",
        "max_context_length": 32768, "loaded_context_length": 6144}]},
}


@pytest.mark.parametrize("routes,port_of,name,model,window", [
    (LLAMA_CPP, "vLLM", "llama.cpp", "qwen2.5-0.5b-instruct-q4_k_m.gguf", 4096),
    (VLLM, "llama.cpp", "vLLM", "Qwen/Qwen3-8B", 16384),
    (OLLAMA, "LM Studio", "Ollama", "llama3.2:latest", 8192),
    (LM_STUDIO, "Ollama", "LM Studio", "qwen2.5-7b-instruct", 6144),
], ids=["llama.cpp", "vLLM", "Ollama", "LM Studio"])
def test_server_is_named_by_its_answers_and_its_window_read(
        serve_routes, routes: dict, port_of: str, name: str, model: str, window: int) -> None:
    # each one found on another server's usual port: the port does not name it
    found = find_local_server([(port_of, serve_routes(routes))], timeout=1.0)
    assert found is not None
    assert (found.name, found.models[0], found.context_length) == (name, model, window)


def test_ollama_window_defaults_when_the_modelfile_sets_none(serve_routes) -> None:
    routes = {**OLLAMA, "POST /api/show": {"parameters": "stop \"<|eot_id|>\"",
                                           "model_info": {"llama.context_length": 131072}}}
    seen: list[str] = []
    found = find_local_server([("x", serve_routes(routes, seen))], timeout=1.0)
    assert found is not None and found.context_length == 4096  # Ollama's default num_ctx
    assert 'POST /api/show {"model": "llama3.2:latest"}' in seen


def test_ollama_window_of_a_loaded_model_is_the_one_in_force(serve_routes) -> None:
    # ollama api/types.go ProcessModelResponse: GET /api/ps lists loaded models with context_length
    routes = {**OLLAMA, "GET /api/ps": {"models": [
        {"name": "llama3.2:latest", "model": "llama3.2:latest", "size": 3338801804,
         "expires_at": "2026-12-03T14:30:00Z", "size_vram": 3338801804, "context_length": 16384}]}}
    found = find_local_server([("x", serve_routes(routes))], timeout=1.0)
    assert found is not None and (found.name, found.context_length) == ("Ollama", 16384)


def test_llama_cpp_meta_n_ctx_is_used_without_props(serve_routes) -> None:
    listing = json.loads(json.dumps(LLAMA_CPP["GET /v1/models"]))
    listing["data"][0]["meta"]["n_ctx"] = 2048
    found = find_local_server([("x", serve_routes({"GET /v1/models": listing}))], timeout=1.0)
    assert found is not None and (found.name, found.context_length) == ("llama.cpp", 2048)


def test_describe_server_reads_a_configured_base_url(serve_routes) -> None:
    from llmrepl.model.probe import describe_server, server_context_length

    port = serve_routes(LLAMA_CPP)
    server = describe_server(f"http://127.0.0.1:{port}/v1", timeout=2)
    assert server is not None and server.name == "llama.cpp" and server.context_length == 4096
    assert server_context_length(f"http://127.0.0.1:{port}/v1", timeout=2) == 4096
