"""A Jupyter Server's address and REST API, for ``kernel_remote``.

``parse_url`` reads what a user pastes (the URL a server prints, a JupyterHub server, a
kernel's ``/api/kernels/<id>``) into the base URL, the token and the kernel; ``ServerApi``
makes the few REST calls (start, look up, interrupt, restart, shut down a kernel) with the
standard library's ``urllib`` and turns every failure into one sentence that names the
HTTP status and says what to do. The token never appears in a message. Stdlib only.
"""

from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llmrepl.execution.kernel_seam import KernelUnavailable

__all__ = ["REST_TIMEOUT", "TOKEN_ENV", "RemoteRefused", "RemoteTarget", "ServerApi", "is_server_url",
           "kernel_id_of", "parse_url", "printable"]

REST_TIMEOUT = 30.0  # seconds for one REST call (a restart waits for the new kernel)
TOKEN_ENV = "JUPYTER_TOKEN"  # Jupyter's own variable for a server's token
_PAGES = ("lab", "tree", "notebooks")  # the URL a server prints ends in one of these


def is_server_url(spec: str) -> bool:
    """A ``--kernel`` SPEC that names a Jupyter Server (rather than a kernelspec or a file)."""
    return spec.lower().startswith(("http://", "https://"))


@dataclass(frozen=True)
class RemoteTarget:
    base: str  # http(s)://host:port/base/ (trailing slash, no query)
    token: str
    kernel_id: str  # "" = start one
    kernel_name: str  # "" = the server's default

    @property
    def display(self) -> str:
        """The server for messages: no token, no control characters."""
        return printable(self.base)


def parse_url(url: str, env: Mapping[str, str] | None = None) -> RemoteTarget:
    """The server's base URL, its token (``?token=`` or ``$JUPYTER_TOKEN``), and the kernel to
    attach to (``/api/kernels/<id>``) or to start (``?kernel_name=``, else the default)."""
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise KernelUnavailable(f"{printable(_without_query(url))} is not a Jupyter Server URL: "
                                "give http(s)://host:port/?token=...")
    query = urllib.parse.parse_qs(parts.query)
    source: Mapping[str, str] = os.environ if env is None else env
    token = (query.get("token") or [""])[0] or source.get(TOKEN_ENV, "")
    kernel_name = (query.get("kernel_name") or [""])[0]
    segments = parts.path.split("/")
    kernel_id = ""
    if "api" in segments:
        at = segments.index("api")
        rest = [s for s in segments[at + 1:] if s]
        if rest[:1] == ["kernels"] and len(rest) >= 2:
            kernel_id = rest[1]
        segments = segments[:at]
    else:  # a page's URL (/lab, /tree/x.ipynb): the server is what comes before the page
        for at, name in enumerate(segments):
            if name in _PAGES and (at == 0 or segments[at - 1] != "user"):
                segments = segments[:at]
                break
    path = "/".join(segments).rstrip("/") + "/"
    if not path.startswith("/"):
        path = "/" + path
    base = urllib.parse.urlunsplit((parts.scheme.lower(), parts.netloc.rpartition("@")[2], path, "", ""))
    if kernel_id and not all(c.isalnum() or c == "-" for c in kernel_id):
        raise KernelUnavailable(f"{printable(kernel_id)!r} is not a kernel id")
    return RemoteTarget(base, token, kernel_id, kernel_name)


class RemoteRefused(KernelUnavailable):
    """The server answered with an HTTP error ``status``; the message says what to do."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class ServerApi:
    """The server's REST API, with every failure turned into one sentence for the user."""

    def __init__(self, target: RemoteTarget) -> None:
        self.target = target

    def call(self, method: str, path: str, body: dict[str, Any] | None = None,
             timeout: float = REST_TIMEOUT) -> Any:
        url = self.target.base + path
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method)
        if self.target.token:
            request.add_header("Authorization", f"token {self.target.token}")
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                raw = response.read(16 * 1024 * 1024)
        except urllib.error.HTTPError as exc:
            exc.close()
            raise RemoteRefused(self.refusal(exc.code, path, method), exc.code) from None
        except urllib.error.URLError as exc:
            raise KernelUnavailable(self.unreachable(exc.reason)) from None
        except (OSError, ValueError) as exc:  # a timeout, a reset, a bad port number
            raise KernelUnavailable(self.unreachable(exc)) from None
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise KernelUnavailable(f"{self.target.display} answered {path} with something that is "
                                    "not JSON: is it a Jupyter Server?") from None

    def refusal(self, status: int, path: str, method: str = "GET") -> str:
        where = self.target.display
        if status in (401, 403):
            name = "Unauthorized" if status == 401 else "Forbidden"
            if not self.target.token:
                return (f"the Jupyter Server at {where} wants a token (HTTP {status} {name}): add "
                        f"?token=... to the URL (the server prints it at start; `jupyter server list` "
                        f"on that machine shows it), or set {TOKEN_ENV}")
            return (f"the Jupyter Server at {where} refused the token (HTTP {status} {name}): use the "
                    f"URL with ?token=... that the server printed at start (`jupyter server list` on "
                    f"that machine shows it), or set {TOKEN_ENV} to the right token")
        if status == 404 and path.startswith("api/kernels/"):
            kernel_id = path.split("/")[2]
            hint = ("; give the server's URL without /api/kernels/... to start one"
                    if kernel_id == self.target.kernel_id else "")
            return f"the Jupyter Server at {where} has no kernel {kernel_id} (HTTP 404): it was shut down{hint}"
        if status == 404:
            return (f"{where} has no Jupyter kernel API (HTTP 404 for /{path}): give the server's "
                    "base URL, as `jupyter server list` prints it")
        return f"the Jupyter Server at {where} answered HTTP {status} to {method} /{path}"

    def unreachable(self, reason: object) -> str:
        text = reason.strerror if isinstance(reason, OSError) and reason.strerror else str(reason)
        if isinstance(reason, (socket.timeout, TimeoutError)):
            text = "no answer in time"
        return (f"cannot reach the Jupyter Server at {self.target.display} ({printable(text)}): is it "
                "running, and is the host and port right?")


def kernel_id_of(model: Any, target: RemoteTarget) -> str:
    """The id in a kernel model the server sent (foreign: checked before it goes in a URL)."""
    kernel_id = model.get("id") if isinstance(model, dict) else None
    if not isinstance(kernel_id, str) or not kernel_id or not all(c.isalnum() or c == "-" for c in kernel_id):
        raise KernelUnavailable(f"{target.display} did not answer with a kernel: is it a Jupyter Server?")
    return kernel_id


def _without_query(url: str) -> str:
    return url.partition("?")[0].partition("#")[0]


def printable(text: str) -> str:
    """Foreign or typed text inside a message: control characters shown as ``?``."""
    return "".join(c if c.isprintable() else "?" for c in text)
