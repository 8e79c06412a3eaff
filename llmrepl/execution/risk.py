"""What the review gate reads in a cell before it runs: an advisory scan and hidden characters.

``scan(code)`` walks the AST once, resolving import aliases, and returns labels such as
"delete files" or "run processes". It is a hint for the person confirming the cell, not a
sandbox: code can always hide what it does (``getattr(os, "sy" + "stem")``).

``hidden_characters(code)`` is not advisory: it finds the characters that make code look
different on a terminal from what Python runs ("Trojan Source", CVE-2021-42574: bidi
overrides, zero-width and other invisible characters, a lone carriage return, form feeds
and other controls). The engine refuses a cell that holds any, in every mode.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from llmrepl.execution.magic_ipython import embedded_statements
from llmrepl.execution.magics import HELPER, exportable, has_magic

__all__ = ["Risk", "scan", "HIGH", "Hidden", "hidden_characters", "describe_hidden"]

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
for _name in ("eval", "exec", "compile", "builtins.eval", "builtins.exec", "__import__", "importlib.import_module",
              "runpy.run_path", "runpy.run_module"):
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
    r"\b(?:os|subprocess|runpy|shutil|socket|signal|pty|eval|exec|compile|__import__|importlib|open|unlink|rmdir|"
    r"rmtree|write_text|write_bytes|to_csv|to_parquet|to_excel|to_json|to_pickle|savefig|environ|getenv|"
    r"keyring|getpass|urllib|requests|httpx|aiohttp|http|ftplib|smtplib|paramiko|webbrowser|pip|asyncio|"
    r"system|remove|kill)\b|\.ssh|id_rsa|id_ed25519|\.aws|\.netrc|\.pgpass|\.env|credentials|\.docker|"
    r"\.kube|api_key|API_KEY|install|__llmrepl_magic__"
)


def scan(code: str) -> list[Risk]:
    """Labels for what ``code`` may do, in a stable order; [] when it does not parse. Magics
    are read as the Python they stand for (``!rm -rf data`` as a subprocess call), and the
    statements a magic runs from a string (``%timeit STMT``) are scanned as code too."""
    if not has_magic(code):
        return _scan(code)
    found: dict[str, Risk] = {}
    for part in (exportable(code), *embedded_statements(code)):
        for risk in _scan(part):
            found.setdefault(risk.label, risk)
    order = list(HIGH)
    return sorted(found.values(), key=lambda r: order.index(r.label))


def _scan(code: str) -> list[Risk]:
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
        elif t is ast.Name and node.id == HELPER:  # type: ignore[attr-defined]
            note("run processes", node)  # the magics' helper, called directly: it runs shell commands
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
        if HELPER in text:  # globals()["__llmrepl_magic__"]
            note("run processes", const)
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


# -- hidden characters ---------------------------------------------------------------------

# Controls other than tab and newline (a "\r" only when no "\n" follows: "\r\n" is a line end
# to the terminal and to Python alike); Unicode's format characters (category Cf: bidi
# controls, zero-width space / joiners, word joiner, invisible operators, BOM, soft hyphen,
# tags, ...); the line and paragraph separators; surrogates (shown as "?", not as code); and
# letters that draw as nothing (Hangul fillers, Khmer invisible vowels), which are valid in
# identifiers. Written out, not computed from unicodedata, so importing this stays free.
_HIDDEN = re.compile(
    "\r(?!\n)|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u00ad\u034f\u0600-\u0605\u061c\u06dd\u070f"
    "\u0890\u0891\u08e2\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u2028-\u202e\u2060-\u2064"
    "\u2066-\u206f\u3164\ufeff\uffa0\ufff9-\ufffb\ud800-\udfff\U000110bd\U000110cd"
    "\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f"
    # variation selectors: valid inside names, so `allowed` and `allowed\ufe00` are two variables
    "\ufe00-\ufe0f\U000e0100-\U000e01ef]"
)
_ZWJ = "\u200d"
_NAMES = {"\r": "CARRIAGE RETURN", "\x0b": "LINE TABULATION", "\x0c": "FORM FEED", "\x1b": "ESCAPE",
          "\x08": "BACKSPACE", "\x00": "NULL BYTE", "\x7f": "DELETE"}


@dataclass(frozen=True)
class Hidden:
    char: str
    line: int  # 1-based line of ``code`` it is on

    @property
    def name(self) -> str:
        """``U+202E RIGHT-TO-LEFT OVERRIDE``."""
        import unicodedata  # only when a cell is refused

        code = ord(self.char)
        name = _NAMES.get(self.char) or unicodedata.name(self.char, "")
        if not name:
            name = "CONTROL CHARACTER" if code < 0xA0 else "SURROGATE" if 0xD800 <= code <= 0xDFFF else "CHARACTER"
        return f"U+{code:04X} {name}"


def hidden_characters(code: str) -> list[Hidden]:
    """Every character of ``code`` that shows on a terminal unlike what Python reads, in order.

    A zero-width joiner between two emoji is not one: it draws them as one picture, in a
    string, and is common in data."""
    found: list[Hidden] = []
    line, last = 1, 0
    for m in _HIDDEN.finditer(code):
        i, ch = m.start(), m.group()
        if ch == _ZWJ and _emoji(code, i - 1) and _emoji(code, i + 1):
            continue
        if ch in "\ufe0e\ufe0f" and _emoji(code, i - 1):  # text or emoji style of an emoji
            continue
        line += code.count("\n", last, i)
        last = i
        found.append(Hidden(ch, line))
    return found


def _emoji(code: str, i: int) -> bool:
    if i < 0 or i >= len(code):
        return False
    c = ord(code[i])
    if c == 0xFE0F and i > 0:  # a variation selector: look at the emoji it selects
        c = ord(code[i - 1])
    return 0x1F000 <= c <= 0x1FAFF or 0x2600 <= c <= 0x27BF


def describe_hidden(found: list[Hidden], limit: int = 4) -> str:
    """``U+202E RIGHT-TO-LEFT OVERRIDE on line 3, U+200B ZERO WIDTH SPACE on line 5``."""
    seen: dict[tuple[str, int], Hidden] = {}
    for h in found:
        seen.setdefault((h.char, h.line), h)
    parts = [f"{h.name} on line {h.line}" for h in list(seen.values())[:limit]]
    more = len(seen) - limit
    return ", ".join(parts) + (f" and {more} more" if more > 0 else "")
