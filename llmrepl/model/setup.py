"""Where requests go: the configured server, or a local one found on its usual port.

``ModelSetup`` decides in the background, so the first prompt never waits for it: with
``--base-url`` it asks that server for its models and window (``probe.describe_server``);
with nothing configured it looks for Ollama, LM Studio, llama.cpp or vLLM on localhost
(``probe.find_local_server``); either way its outcome is one notice, given to whoever
listens (``listen``), now or when it is known. Other background news (a kernel that is
ready) goes the same way (``post``).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from llmrepl.model.client import OpenAIModel

__all__ = ["NO_MODEL_HELP", "ModelSetup"]

NO_MODEL_HELP = """\
no model is configured, so messages cannot be answered yet. Set one up in any of these ways:
  - OpenAI: export OPENAI_API_KEY=sk-...   (or name another variable with model.api_key_env in {config})
  - any OpenAI-compatible server: llmrepl --base-url http://HOST:PORT/v1   (or model.base_url in the config)
  - a local server, found by itself on its usual port: Ollama (`ollama serve`, 11434), LM Studio (1234),
    llama.cpp (`llama-server`, 8080) or vLLM (8000)
/py CODE and the other commands work meanwhile."""


class ModelSetup:
    """Decides where requests go; probes for a local server in the background when needed."""

    def __init__(self, model: OpenAIModel, *, api_key: str | None, base_url: str | None, explicit_model: bool,
                 config_path: str, on_server: Callable[[str, int | None], None] | None = None,
                 find_local: bool = True, probe_ports: str = "11434,1234,8080,8000") -> None:
        self.model = model
        self.api_key = api_key
        self.on_server = on_server  # (model name, context length the server reports) when one is found
        self.explicit_model = explicit_model
        self.config_path = config_path
        self.find_local = find_local  # model.find_local: look for a local server at all
        self.probe_ports = probe_ports  # model.probe_ports: where
        self.done = threading.Event()
        self.message: tuple[str, str] | None = None
        self._lock = threading.Lock()
        self._listener: Callable[[str, str], None] | None = None
        self._posted: list[tuple[str, str]] = []  # other background news (the kernel's start), for listen
        self.configured = bool(api_key or base_url)
        if base_url:  # ask the configured server for its models and window (probe.describe_server)
            threading.Thread(target=self._ask, args=(base_url,), name="llmrepl-ask", daemon=True).start()
        elif self.configured:
            self.done.set()
        else:
            threading.Thread(target=self._probe, name="llmrepl-probe", daemon=True).start()

    def _ask(self, base_url: str) -> None:
        """With --base-url and no -m, the model the server lists; and the window it runs with."""
        msg: tuple[str, str] | None = None
        try:
            from llmrepl.model.probe import describe_server

            server = describe_server(base_url, api_key=self.api_key, timeout=3.0)
            if server is not None:
                # a local server (named by its answers) or one serving a single model; a cloud
                # gateway listing hundreds is not guessed from: the default name stays
                local = server.name in ("llama.cpp", "vLLM", "Ollama", "LM Studio") or len(server.models) == 1
                if not self.explicit_model and local and server.models and self.model.model not in server.models:
                    self.model.model = server.models[0]
                    msg = (f"no model named (-m); using {self.model.model}, listed by {server.name}", "info")
                if self.on_server is not None:
                    self.on_server(self.model.model, server.context_length)
        except Exception:  # asking must never take the REPL down
            pass
        with self._lock:
            self.message = msg
            listener = self._listener
            self.done.set()
        if listener is not None and msg is not None:
            listener(*msg)

    def _probe(self) -> None:
        try:
            from llmrepl.model.probe import candidates, find_local_server

            server = find_local_server(candidates(self.probe_ports)) if self.find_local else None
        except Exception:  # a probe must never take the REPL down
            server = None
        if server is not None:
            self.model.base_url = server.base_url
            if not self.explicit_model and server.models:
                self.model.model = server.models[0]
            self.configured = True
            if self.on_server is not None:
                self.on_server(self.model.model, server.context_length)
            msg = (f"no API key set; using {server.name} at {server.base_url} with model {self.model.model}", "info")
            if server.rejected:  # never shown raw: an id can hold escapes or line breaks
                msg = (msg[0] + f"; ignored {server.rejected} model id(s) it listed that are not plain names "
                       "(letters, digits, . _ : / @ + = ~ -; up to 200): use -m NAME to pick one", "warning")
        else:
            text = NO_MODEL_HELP.format(config=self.config_path)
            if self.explicit_model:  # -m NAME alone names a model, not where to send it
                text = (f"model {self.model.model!r} is named, but there is no API key and no base URL to send "
                        "messages to, so they cannot be answered yet." + text[text.index(" Set one up"):])
            msg = (text, "warning")
        with self._lock:
            self.message = msg
            listener = self._listener
            self.done.set()
        if listener is not None:
            listener(*msg)

    def listen(self, listener: Callable[[str, str], None]) -> None:
        """Call ``listener(text, level)`` with the probe's outcome, now if it is known."""
        with self._lock:
            self._listener = listener
            msg = self.message
            posted, self._posted = self._posted, []
        if msg is not None:
            listener(*msg)
        for item in posted:
            listener(*item)

    def post(self, text: str, level: str = "info") -> None:
        """News from another background job (a kernel that is ready): to the listener, now
        or when one listens."""
        with self._lock:
            listener = self._listener
            if listener is None:
                self._posted.append((text, level))
        if listener is not None:
            listener(text, level)

    def wait(self, timeout: float = 3.0) -> None:
        self.done.wait(timeout)
