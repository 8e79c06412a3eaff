"""Configuration: frozen dataclasses loaded once from TOML, the environment and flags.

Precedence is command-line flag > environment > config file > built-in default. Every
mistake raises a one-line :class:`~llmrepl.errors.ConfigError` naming the file (variable,
flag), the key and what was expected; every value is bounded, whatever its source (both ends
of each number; length and characters of each string). The API key is read from the
environment variable the config names; a key kept in the file is allowed but never shown.
"""

from __future__ import annotations

import dataclasses
import os
import re
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib

from llmrepl.config_bounds import RANGES, check_value, coerce
from llmrepl.config_bounds import kind as _kind
from llmrepl.config_bounds import shown as _shown
from llmrepl.errors import ConfigError

__all__ = [
    "ModelConfig",
    "ReplConfig",
    "ExecConfig",
    "Config",
    "default_config_path",
    "state_dir",
    "load_config",
    "resolve_api_key",
    "config_warnings",
    "flag_value",
]


@dataclass(frozen=True)
class ModelConfig:
    """Which model to call and how."""

    name: str = "gpt-5.4-mini"
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    api_key: str | None = field(default=None, repr=False)  # discouraged; never printed
    temperature: float | None = None
    context_window: int | None = None
    max_output_tokens: int = 4096
    encoding: str | None = None
    timeout: float = 60.0  # seconds per network read; connect is 5 s
    input_price: float | None = None   # USD per million prompt tokens, for /tokens' cost estimate
    output_price: float | None = None  # USD per million completion tokens
    find_local: bool = True  # with no key and no base URL, look for a server on 127.0.0.1's usual ports
    probe_ports: str = "11434,1234,8080,8000"  # those ports, in order (Ollama, LM Studio, llama.cpp, vLLM)
    cache_breakpoints: str = "auto"  # mark the stable prefix's end for the prompt cache: auto | on | off


@dataclass(frozen=True)
class ReplConfig:
    """The interactive loop."""

    auto_run: bool = False
    auto_run_risky: bool = False
    max_steps: int = 6
    stream: bool = True
    vi_mode: bool = False
    snapshots: bool = False
    digest_tokens: int = 1000
    inline_images: str = "auto"  # figures drawn in the terminal: "auto" (if it can), "on", "off"
    send_images: bool = False  # figures go to the model as image parts, not only described


@dataclass(frozen=True)
class ExecConfig:
    """Running cells."""

    timeout: float = 0  # seconds per cell, 0 = none
    max_output_chars: int = 8000  # what one cell may feed back to the model
    # run cells in a Jupyter kernel: "" = in-process (default); a kernelspec name ("python3"),
    # a connection file (kernel-*.json), or a Jupyter Server URL with ?token=...
    kernel: str = ""
    # start the local kernel inside bubblewrap: no network, writes only in the working folder
    # (flag --sandbox; implies kernel = "python3" when kernel is empty)
    sandbox: bool = False


@dataclass(frozen=True)
class Config:
    """The whole configuration; ``path`` is the file that was read, if any."""

    model: ModelConfig = field(default_factory=ModelConfig)
    repl: ReplConfig = field(default_factory=ReplConfig)
    exec: ExecConfig = field(default_factory=ExecConfig)
    path: str | None = None


_SECTIONS: dict[str, type] = {"model": ModelConfig, "repl": ReplConfig, "exec": ExecConfig}

_MAX_FILE_BYTES = 1 << 20  # a config file is a few lines; a bigger one is a mistake (or an attack)
_ENV_KEYS = {"OPENAI_BASE_URL": "model.base_url", "LLMREPL_MODEL": "model.name",
             "LLMREPL_FIND_LOCAL": "model.find_local",
             "LLMREPL_PROBE_PORTS": "model.probe_ports", "LLMREPL_INLINE_IMAGES": "repl.inline_images"}
_RANGES = RANGES  # the bounds live in config_bounds; these names stay for the tests


_BASE_TYPES: dict[str, type] = {"str": str, "int": int, "float": float, "bool": bool}


def _field_types() -> dict[str, tuple[type, bool]]:
    """Map "section.key" to (base type, optional) from the dataclass annotations.

    The annotations are strings (``from __future__ import annotations``) of the forms
    ``T`` and ``T | None``; reading them directly avoids ``typing.get_type_hints``, which
    costs several milliseconds at every start.
    """
    out: dict[str, tuple[type, bool]] = {}
    for section, cls in _SECTIONS.items():
        for f in dataclasses.fields(cls):
            parts = [p.strip() for p in str(f.type).split("|")]
            optional = "None" in parts
            (base,) = [p for p in parts if p != "None"]
            out[f"{section}.{f.name}"] = (_BASE_TYPES[base], optional)
    return out


_TYPES = _field_types()


def _check(where: str, key: str, value: object) -> object:
    """Validate one value for ``key``; return it (ints widened to float where needed)."""
    return check_value(where, key, value, _TYPES[key][0])


def _suggest(key: str, choices: list[str]) -> str:
    import difflib  # only when there is a mistake to explain

    close = difflib.get_close_matches(key, choices, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _suggest_key(key: str) -> str:
    """A near name in the same section, else the same name in another section."""
    section, name = key.split(".", 1)
    same = [k.split(".", 1)[1] for k in _TYPES if k.startswith(section + ".")]
    import difflib

    close = difflib.get_close_matches(name, same, n=1, cutoff=0.6)
    if close:
        return f" (did you mean '{section}.{close[0]}'?)"
    elsewhere = [k for k in _TYPES if k.split(".", 1)[1] == name]
    return f" (did you mean '{elsewhere[0]}'?)" if elsewhere else ""


def _flatten_file(where: str, data: dict[str, Any]) -> dict[str, object]:
    """Check the file's structure: known sections holding known keys."""
    values: dict[str, object] = {}
    for section, table in data.items():
        if section not in _SECTIONS:
            bare = [k for k in _TYPES if k.split(".", 1)[1] == section]
            hint = f" (did you mean '{bare[0]}' in the [{bare[0].split('.')[0]}] section?)" \
                if bare else _suggest(section, list(_SECTIONS))
            raise ConfigError(f"{where}: unknown key {_shown(section)}{hint}")  # quoted, escaped, cut
        if not isinstance(table, dict):
            raise ConfigError(
                f"{where}: {section} must be a table (a [{section}] section), "
                f"got {_shown(table)} ({_kind(table)})"
            )
        for name, value in table.items():
            key = f"{section}.{name}"
            if key not in _TYPES:
                raise ConfigError(f"{where}: unknown key {_shown(key)}{_suggest_key(key)}")
            values[key] = _check(where, key, value)
    return values


def _syntax_message(error: tomllib.TOMLDecodeError) -> str:
    text = " ".join(str(error).split())
    m = re.fullmatch(r"(.*) \(at line (\d+), column (\d+)\)", text)
    if m:
        return f"TOML syntax error at line {m[2]}, column {m[3]}: {m[1]}"
    m = re.fullmatch(r"(.*) \(at end of document\)", text)
    if m:
        return f"TOML syntax error at the end of the file: {m[1]}"
    return f"TOML syntax error: {text}"


def _read_file(path: Path) -> dict[str, Any]:
    where = str(path)
    try:
        info = path.stat()
        mode = info.st_mode
        if stat.S_ISDIR(mode):
            raise ConfigError(f"{where}: is a directory, not a config file")
        if not stat.S_ISREG(mode):
            raise ConfigError(f"{where}: is not a regular file")
        if info.st_size > _MAX_FILE_BYTES:
            raise ConfigError(f"{where}: is {info.st_size:,} bytes; a config file is a few lines "
                              f"(at most {_MAX_FILE_BYTES:,} bytes are read)")
        raw = path.read_bytes()
    except PermissionError:
        raise ConfigError(f"{where}: cannot read the config file (permission denied)") from None
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        raise ConfigError(f"{where}: cannot read the config file ({reason})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"{where}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at line {line}, "
            f"offset {exc.start}); save the file as UTF-8"
        ) from None
    if sys.version_info >= (3, 11):
        import tomllib  # only when there is a file to read: ~2 ms off every other start
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: {_syntax_message(exc)}") from None
    except RecursionError:  # the parser recurses once per level of [[[...]]] or {a={b=...}}
        raise ConfigError(f"{where}: arrays or tables are nested too deeply to read "
                          "(no llmrepl setting takes a nested value)") from None
    except ValueError as exc:  # not a TOMLDecodeError: e.g. an integer of more than 4,300 digits
        reason = " ".join(str(exc).split(":")[0].split())
        raise ConfigError(f"{where}: cannot read a value in the file ({reason})") from None


def _check_together(where: str, values: Mapping[str, object]) -> None:
    """Bounds that join two keys: the answer's tokens are kept free in the context window."""
    window = values.get("model.context_window")
    answer = values.get("model.max_output_tokens", ModelConfig.max_output_tokens)
    if isinstance(window, int) and isinstance(answer, int) and answer >= window:
        default = "" if "model.max_output_tokens" in values else ", the default"
        raise ConfigError(
            f"{where}: model.max_output_tokens ({answer:,}{default}) must be less than "
            f"model.context_window ({window:,}): that many tokens are kept free for the answer"
        )


def flag_value(key: str, text: str) -> object:
    """A flag's value for ``key``, checked as the file's are; the ConfigError says only what is
    wrong ("must be between 1 and 100, got 0 (integer)"), as argparse names the flag."""
    try:
        return _check("command line", key, _coerce_flag(key, text))
    except ConfigError as e:
        raise ConfigError(str(e).removeprefix(f"command line: {key} ")) from None


def _coerce_flag(key: str, value: object) -> object:
    """Values from flags and the environment arrive as strings: turn them into the key's type."""
    return coerce(key, _TYPES[key][0], value)


def _path_from(env: Mapping[str, str], name: str) -> Path | None:
    value = env.get(name, "")
    # os.path's expanduser never raises on ~nosuchuser; absolute, so a cell's %cd or os.chdir
    # does not move the state folder (the journal's figures, snapshots, history) with it
    return Path(os.path.abspath(os.path.expanduser(value))) if value else None


def _home(env: Mapping[str, str]) -> Path:
    return Path(env["HOME"]) if env.get("HOME") else Path.home()


def _xdg(env: Mapping[str, str], name: str, fallback: str) -> Path:
    value = env.get(name, "")
    if value and os.path.isabs(value):  # the XDG spec says relative values are ignored
        return Path(value)
    return _home(env) / fallback


def default_config_path(env: Mapping[str, str] | None = None) -> Path:
    """$LLMREPL_CONFIG, else $XDG_CONFIG_HOME/llmrepl/config.toml, else ~/.config/llmrepl/..."""
    env = os.environ if env is None else env
    explicit = _path_from(env, "LLMREPL_CONFIG")
    if explicit is not None:
        return explicit
    return _xdg(env, "XDG_CONFIG_HOME", ".config") / "llmrepl" / "config.toml"


def state_dir(env: Mapping[str, str] | None = None) -> Path:
    """$LLMREPL_HOME, else $XDG_DATA_HOME/llmrepl, else ~/.local/share/llmrepl (not created)."""
    env = os.environ if env is None else env
    explicit = _path_from(env, "LLMREPL_HOME")
    if explicit is not None:
        return explicit
    return _xdg(env, "XDG_DATA_HOME", ".local/share") / "llmrepl"


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build the configuration: ``overrides`` > environment > file > defaults.

    ``overrides`` holds command-line values under dotted keys (``"repl.max_steps"``); None
    means the flag was not given. A missing default file is fine; a file named explicitly
    (argument or ``$LLMREPL_CONFIG``) must exist.
    """
    env = os.environ if env is None else env
    explicit = path is not None or bool(env.get("LLMREPL_CONFIG"))
    file = Path(os.path.expanduser(path)) if path is not None else default_config_path(env)

    values: dict[str, object] = {}
    read: str | None = None
    try:
        present = file.exists() or file.is_symlink()
    except OSError:  # e.g. a folder on the way is unreadable: let _read_file say so
        present = True
    if present or explicit:
        if not present:
            source = "" if path is not None else " (from LLMREPL_CONFIG)"
            raise ConfigError(f"{file}: config file not found{source}")
        values.update(_flatten_file(str(file), _read_file(file)))
        read = str(file)

    for var, key in _ENV_KEYS.items():
        if env.get(var, "").strip():
            values[key] = _check(f"environment variable {var}", key, _coerce_flag(key, env[var].strip()))

    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key not in _TYPES:
            hint = _suggest_key(key) if key.partition(".")[0] in _SECTIONS and "." in key else ""
            raise ConfigError(f"command line: unknown setting {_shown(key)}{hint}")
        values[key] = _check("command line", key, _coerce_flag(key, value))
    _check_together(read or "config", values)

    sections: dict[str, Any] = {}
    for section, cls in _SECTIONS.items():
        given = {k.split(".", 1)[1]: v for k, v in values.items() if k.startswith(section + ".")}
        sections[section] = cls(**given)
    return Config(**sections, path=read)


def resolve_api_key(config: Config, env: Mapping[str, str] | None = None) -> str | None:
    """The key from ``$<model.api_key_env>``, else ``model.api_key``; blank counts as none."""
    env = os.environ if env is None else env
    for candidate in (env.get(config.model.api_key_env), config.model.api_key):
        if candidate and candidate.strip():
            return candidate.strip()
    return None


def config_warnings(config: Config) -> list[str]:
    """Problems worth a warning but not an error, e.g. a key in a file others can read."""
    warnings: list[str] = []
    if config.path is None or config.model.api_key is None or os.name == "nt":
        return warnings
    try:
        st = os.stat(config.path)
    except OSError:
        return warnings
    if st.st_mode & 0o044:
        warnings.append(
            f"warning: {config.path} holds model.api_key and is readable by others; "
            f"run: chmod 600 {config.path}"
        )
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        warnings.append(
            f"warning: {config.path} holds model.api_key and belongs to another user; "
            "keep the key in your own file or in the environment"
        )
    return warnings
