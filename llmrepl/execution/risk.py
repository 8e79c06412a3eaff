"""A fast, advisory scan of what a cell may do, shown before it runs.

``scan(code)`` walks the AST once, resolving import aliases, and returns labels such as
"delete files" or "run processes". It is a hint for the person confirming the cell, not a
sandbox: code can always hide what it does (``getattr(os, "sy" + "stem")``).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

__all__ = ["Risk", "scan", "HIGH"]

# label -> high risk? High-risk labels make auto-run ask anyway (repl.auto_run_risky = false).
HIGH = {
    "delete files": True,
    "run processes": True,
    "read secrets": True,
    "install packages": True,
    "run dynamic code (eval/exec)": True,
    "end or signal processes": True,
    "write files": False,
    "open network connections": False,
}

_CALLS: dict[str, str] = {}
for _name in ("os.remove", "os.unlink", "os.rmdir", "os.removedirs", "shutil.rmtree", "shutil.move",
              "os.rename", "os.replace", "os.truncate"):
    _CALLS[_name] = "delete files"
for _name in ("subprocess.run", "subprocess.Popen", "subprocess.call", "subprocess.check_call",
              "subprocess.check_output", "subprocess.getoutput", "subprocess.getstatusoutput", "os.system",
              "os.popen", "os.execv", "os.execve", "os.execvp", "os.execl", "os.execlp", "os.spawnv",
              "os.spawnl", "os.posix_spawn", "os.posix_spawnp", "pty.spawn", "asyncio.create_subprocess_exec",
              "asyncio.create_subprocess_shell", "os.fork"):
    _CALLS[_name] = "run processes"
for _name in ("os._exit", "os.abort", "os.kill", "os.killpg", "signal.pthread_kill", "signal.raise_signal"):
    _CALLS[_name] = "end or signal processes"
for _name in ("eval", "exec", "compile", "builtins.eval", "builtins.exec", "__import__", "importlib.import_module"):
    _CALLS[_name] = "run dynamic code (eval/exec)"
for _name in ("os.getenv", "os.environ.get", "os.environ.copy", "os.environ.items", "keyring.get_password",
              "getpass.getpass"):
    _CALLS[_name] = "read secrets"
for _name in ("shutil.copy", "shutil.copyfile", "shutil.copytree", "os.makedirs", "os.mkdir"):
    _CALLS[_name] = "write files"
for _name in ("socket.socket", "socket.create_connection", "urllib.request.urlopen", "urllib.request.urlretrieve",
              "requests.get", "requests.post", "requests.put", "requests.delete", "requests.request",
              "httpx.get", "httpx.post", "httpx.Client", "http.client.HTTPConnection",
              "http.client.HTTPSConnection", "ftplib.FTP", "smtplib.SMTP", "webbrowser.open"):
    _CALLS[_name] = "open network connections"

_METHODS = {  # method names on objects we cannot resolve (a pathlib.Path, a DataFrame, ...)
    "unlink": "delete files", "rmdir": "delete files", "rmtree": "delete files",
    "write_text": "write files", "write_bytes": "write files", "to_csv": "write files",
    "to_parquet": "write files", "to_excel": "write files", "to_json": "write files", "savefig": "write files",
    "to_pickle": "write files",
}
_NETWORK_MODULES = ("socket", "urllib.request", "requests", "httpx", "aiohttp", "http.client", "ftplib",
                    "smtplib", "paramiko")
_SECRET_HINTS = (".ssh", "id_rsa", "id_ed25519", ".aws/credentials", ".netrc", ".pgpass", ".env",
                 "credentials.json", ".docker/config.json", ".kube/config", "api_key", "OPENAI_API_KEY")
_PIP_HINTS = ("pip install", "pip3 install", "conda install", "uv pip install", "apt-get install", "npm install")


@dataclass(frozen=True)
class Risk:
    label: str
    high: bool
    where: int  # first line it was seen on


_TRIGGERS = re.compile(
    r"\b(?:os|subprocess|shutil|socket|signal|pty|eval|exec|compile|__import__|importlib|open|unlink|rmdir|"
    r"rmtree|write_text|write_bytes|to_csv|to_parquet|to_excel|to_json|to_pickle|savefig|environ|getenv|"
    r"keyring|getpass|urllib|requests|httpx|aiohttp|http|ftplib|smtplib|paramiko|webbrowser|pip|asyncio|"
    r"system|remove|kill)\b|\.ssh|id_rsa|id_ed25519|\.aws|\.netrc|\.pgpass|\.env|credentials|\.docker|"
    r"\.kube|api_key|API_KEY|install"
)


def scan(code: str) -> list[Risk]:
    """Labels for what ``code`` may do, in a stable order; [] when it does not parse."""
    if not _TRIGGERS.search(code):
        return []  # nothing that could match: no need to parse
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return []
    found: dict[str, int] = {}
    aliases: dict[str, str] = {}

    def note(label: str, node: ast.AST) -> None:
        found.setdefault(label, getattr(node, "lineno", 0))

    imports: list[ast.Import | ast.ImportFrom] = []
    calls: list[ast.Call] = []
    attrs: list[ast.Attribute | ast.Subscript] = []
    strings: list[ast.Constant] = []
    # one walk, sorting nodes by exact type (cheaper than isinstance chains on every node)
    for node in ast.walk(tree):
        t = type(node)
        if t is ast.Call:
            calls.append(node)  # type: ignore[arg-type]
        elif t is ast.Attribute or t is ast.Subscript:
            attrs.append(node)  # type: ignore[arg-type]
        elif t is ast.Constant:
            if type(node.value) is str:  # type: ignore[attr-defined]
                strings.append(node)  # type: ignore[arg-type]
        elif t is ast.Import or t is ast.ImportFrom:
            imports.append(node)  # type: ignore[arg-type]
    for imp in imports:
        if isinstance(imp, ast.Import):
            for a in imp.names:
                aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
                _check_import(a.name, imp, note)
        elif imp.module:
            for a in imp.names:
                aliases[a.asname or a.name] = f"{imp.module}.{a.name}"
                _check_import(imp.module, imp, note)
    for call in calls:
        name = _dotted(call.func, aliases)
        if name in _CALLS:
            note(_CALLS[name], call)
        elif name in ("open", "io.open", "builtins.open"):
            if _opens_for_writing(call):
                note("write files", call)
        elif type(call.func) is ast.Attribute and call.func.attr in _METHODS:
            note(_METHODS[call.func.attr], call)
    if "os" in aliases.values() or any(v.startswith("os.") for v in aliases.values()):
        for node in attrs:
            target = node if type(node) is ast.Attribute else node.value
            if type(target) is ast.Attribute and target.attr == "environ" and _dotted(target, aliases) == "os.environ":
                note("read secrets", node)
            elif type(target) is ast.Name and aliases.get(target.id) == "os.environ":
                note("read secrets", node)
    for const in strings:
        text = str(const.value)
        if any(h in text for h in _SECRET_HINTS):
            note("read secrets", const)
        if any(h in text for h in _PIP_HINTS):
            note("install packages", const)
    order = list(HIGH)
    return [Risk(label, HIGH[label], line) for label, line in sorted(found.items(), key=lambda kv: order.index(kv[0]))]


def _check_import(module: str, node: ast.AST, note: object) -> None:
    assert callable(note)
    if module == "pip" or module.startswith("pip."):
        note("install packages", node)
    if any(module == m or module.startswith(m + ".") for m in _NETWORK_MODULES):
        note("open network connections", node)


def _dotted(node: ast.AST, aliases: dict[str, str]) -> str:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return ""
    head = aliases.get(node.id, node.id)
    return ".".join([head, *reversed(parts)])


def _opens_for_writing(call: ast.Call) -> bool:
    mode: ast.AST | None = call.args[1] if len(call.args) > 1 else None
    for kw in call.keywords:
        if kw.arg == "mode":
            mode = kw.value
    if mode is None:
        return False
    if isinstance(mode, ast.Constant) and isinstance(mode.value, str):
        return any(c in mode.value for c in "wax+")
    return True  # a computed mode: assume it may write
