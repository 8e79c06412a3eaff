"""Tests for llmrepl.config: precedence, one-line errors, the example file, secrets."""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from pathlib import Path

import pytest

from llmrepl.config import (
    Config,
    ExecConfig,
    ModelConfig,
    ReplConfig,
    config_warnings,
    default_config_path,
    load_config,
    resolve_api_key,
    state_dir,
)
from llmrepl.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.toml"
SECTIONS = {"model": ModelConfig, "repl": ReplConfig, "exec": ExecConfig}


def write(tmp_path: Path, text: str | bytes, name: str = "config.toml") -> Path:
    p = tmp_path / name
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text, encoding="utf-8")
    return p


def config_error(path: Path, **kw: object) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, env={}, **kw)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message
    assert "Traceback" not in message
    assert info.value.__context__ is None or info.value.__suppress_context__  # no chained traceback
    assert info.value.exit_code == 2
    return message


# ---------------------------------------------------------------- defaults and paths


def test_defaults_without_file(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path / "nothing")}
    cfg = load_config(env=env)
    assert cfg == Config()
    assert cfg.path is None
    assert cfg.model.name == "gpt-5.4-mini"
    assert cfg.repl.max_steps == 6 and cfg.exec.timeout == 0


def test_default_config_path(tmp_path: Path) -> None:
    assert default_config_path({"LLMREPL_CONFIG": "/x/c.toml"}) == Path("/x/c.toml")
    assert default_config_path({"XDG_CONFIG_HOME": "/xdg"}) == Path("/xdg/llmrepl/config.toml")
    assert default_config_path({"HOME": "/h"}) == Path("/h/.config/llmrepl/config.toml")
    # a relative XDG value is ignored, as the XDG spec says
    assert default_config_path({"HOME": "/h", "XDG_CONFIG_HOME": "rel"}) == Path(
        "/h/.config/llmrepl/config.toml"
    )


def test_state_dir(tmp_path: Path) -> None:
    assert state_dir({"LLMREPL_HOME": "/s"}) == Path("/s")
    assert state_dir({"XDG_DATA_HOME": "/d", "LLMREPL_HOME": ""}) == Path("/d/llmrepl")
    assert state_dir({"HOME": "/h"}) == Path("/h/.local/share/llmrepl")
    assert not (tmp_path / "s").exists()
    state_dir({"LLMREPL_HOME": str(tmp_path / "s")})
    assert not (tmp_path / "s").exists()  # not created here


def test_default_file_is_read(tmp_path: Path) -> None:
    (tmp_path / "llmrepl").mkdir()
    p = write(tmp_path / "llmrepl", '[model]\nname = "from-xdg"\n')
    cfg = load_config(env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert cfg.model.name == "from-xdg"
    assert cfg.path == str(p)


def test_llmrepl_config_env(tmp_path: Path) -> None:
    p = write(tmp_path, "[repl]\nmax_steps = 3\n")
    cfg = load_config(env={"LLMREPL_CONFIG": str(p)})
    assert cfg.repl.max_steps == 3 and cfg.path == str(p)


def test_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    message = config_error(missing)
    assert str(missing) in message and "not found" in message
    with pytest.raises(ConfigError, match="LLMREPL_CONFIG"):
        load_config(env={"LLMREPL_CONFIG": str(missing)})


# ---------------------------------------------------------------- precedence


def test_precedence_flag_env_file_default(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        '[model]\nname = "file-model"\nbase_url = "http://file/v1"\nmax_output_tokens = 100\n'
        "[repl]\nmax_steps = 2\n",
    )
    env = {"LLMREPL_MODEL": "env-model", "OPENAI_BASE_URL": "http://env/v1"}
    # file > default
    cfg = load_config(p, env={})
    assert (cfg.model.name, cfg.model.base_url, cfg.repl.max_steps) == (
        "file-model", "http://file/v1", 2)
    assert cfg.model.timeout == 60.0  # untouched default
    # env > file
    cfg = load_config(p, env=env)
    assert (cfg.model.name, cfg.model.base_url) == ("env-model", "http://env/v1")
    assert cfg.model.max_output_tokens == 100
    # flag > env; None means "flag not given"
    flags = {"model.name": "flag-model", "model.base_url": None, "repl.max_steps": 9,
             "repl.stream": False, "repl.auto_run": True, "exec.timeout": 2.5}
    cfg = load_config(p, env=env, overrides=flags)
    assert cfg.model.name == "flag-model"
    assert cfg.model.base_url == "http://env/v1"
    assert cfg.repl.max_steps == 9 and cfg.repl.stream is False and cfg.repl.auto_run is True
    assert cfg.exec.timeout == 2.5


def test_env_without_file(tmp_path: Path) -> None:
    cfg = load_config(env={"XDG_CONFIG_HOME": str(tmp_path), "LLMREPL_MODEL": "llama3",
                           "OPENAI_BASE_URL": "  "})
    assert cfg.model.name == "llama3" and cfg.model.base_url is None


def test_bad_env_and_flag_values_name_their_source(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path), "OPENAI_BASE_URL": "localhost:11434"}
    with pytest.raises(ConfigError, match=r"^environment variable OPENAI_BASE_URL: model.base_url"):
        load_config(env=env)
    with pytest.raises(ConfigError, match=r"^command line: repl.max_steps must be between 1 and 100"):
        load_config(env={"XDG_CONFIG_HOME": str(tmp_path)}, overrides={"repl.max_steps": 0})
    with pytest.raises(ConfigError, match=r"unknown setting 'repl.max_step' \(did you mean"):
        load_config(env={"XDG_CONFIG_HOME": str(tmp_path)}, overrides={"repl.max_step": 3})
    with pytest.raises(ConfigError, match=r"^command line: unknown setting 'model'$"):
        load_config(env={"XDG_CONFIG_HOME": str(tmp_path)}, overrides={"model": "x"})


def test_string_flags_are_coerced(tmp_path: Path) -> None:
    cfg = load_config(env={"XDG_CONFIG_HOME": str(tmp_path)},
                      overrides={"repl.max_steps": "4", "repl.stream": "off", "exec.timeout": "1.5"})
    assert (cfg.repl.max_steps, cfg.repl.stream, cfg.exec.timeout) == (4, False, 1.5)


# ---------------------------------------------------------------- errors in the file


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[model]\nbase_url = https://x\n',
         "TOML syntax error at line 2, column 12: Invalid value"),
        ('[model]\nname = "unterminated\n', "TOML syntax error at line 2, column"),
        ('[model]\nname = "a"\nname = "b"\n', "Cannot overwrite a value"),
        ("[model]\nname = [1,\n", "TOML syntax error at the end of the file"),
    ],
)
def test_syntax_errors(tmp_path: Path, text: str, expected: str) -> None:
    p = write(tmp_path, text)
    message = config_error(p)
    assert message.startswith(f"{p}: ")
    assert expected in message
    assert "(at line" not in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[model]\nnmae = "x"\n', "unknown key 'model.nmae' (did you mean 'model.name'?)"),
        ("[modle]\nname = 'x'\n", "unknown key 'modle' (did you mean 'model'?)"),
        ("[repl]\nmax_step = 3\n", "unknown key 'repl.max_step' (did you mean 'repl.max_steps'?)"),
        ("[nothing_like_it]\n", "unknown key 'nothing_like_it'"),
        ('name = "x"\n', "unknown key 'name' (did you mean 'model.name' in the [model] section?)"),
        ("[model.extra]\nx = 1\n", "unknown key 'model.extra'"),
        ("[model]\nmax_steps = 3\n", "unknown key 'model.max_steps' (did you mean 'repl.max_steps'?)"),
    ],
)
def test_unknown_keys(tmp_path: Path, text: str, expected: str) -> None:
    p = write(tmp_path, text)
    message = config_error(p)
    assert message == f"{p}: {expected}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[model]\nmax_output_tokens = "lots"\n',
         "model.max_output_tokens must be an integer, got 'lots' (string)"),
        ("[model]\nmax_output_tokens = 1.5\n",
         "model.max_output_tokens must be an integer, got 1.5 (float)"),
        ("[repl]\nmax_steps = true\n", "repl.max_steps must be an integer, got True (boolean)"),
        ('[repl]\nstream = "yes"\n', "repl.stream must be true or false, got 'yes' (string)"),
        ("[repl]\nstream = 1\n", "repl.stream must be true or false, got 1 (integer)"),
        ("[model]\nname = 5\n", "model.name must be a string, got 5 (integer)"),
        ('[model]\nname = ""\n', "model.name must not be empty"),
        ("[model]\ntimeout = [1]\n", "model.timeout must be a number, got [1] (array)"),
        ("[model]\ntimeout = 0\n", "model.timeout must be between 0.001 and 86,400 seconds (one day), got 0 (integer)"),
        ("[model]\ntimeout = nan\n", "model.timeout must be a finite number"),
        ("[model]\ntemperature = 3\n", "model.temperature must be between 0 and 2, got 3"),
        ("[model]\ncontext_window = 0\n", "model.context_window must be between 256 and 10,000,000, got 0"),
        ('[model]\nbase_url = "localhost:11434"\n',
         "model.base_url must be an http:// or https:// URL, got 'localhost:11434'"),
        ("[repl]\nmax_steps = 0\n", "repl.max_steps must be between 1 and 100, got 0 (integer)"),
        ("[repl]\nmax_steps = -2\n", "repl.max_steps must be between 1 and 100, got -2 (integer)"),
        ("[repl]\ndigest_tokens = -1\n", "repl.digest_tokens must be between 0 and 100,000"),
        ("[exec]\ntimeout = -1\n", "exec.timeout must be 0 (no limit) or between 0.001 and 86,400 seconds"),
        ("[exec]\nmax_output_chars = 0\n", "exec.max_output_chars must be between 1 and 10,000,000"),
        ("[exec]\ntimeout = 1979-05-27\n", "exec.timeout must be a number, got"),
        ("model = 3\n", "model must be a table (a [model] section), got 3 (integer)"),
    ],
)
def test_wrong_types_and_ranges(tmp_path: Path, text: str, expected: str) -> None:
    p = write(tmp_path, text)
    message = config_error(p)
    assert message.startswith(f"{p}: ")
    assert expected in message


def test_api_key_of_wrong_type_is_not_echoed(tmp_path: Path) -> None:
    p = write(tmp_path, "[model]\napi_key = 123456789\n")
    message = config_error(p)
    assert "model.api_key must be a string, got an integer" in message
    assert "123456789" not in message


def test_numbers_accept_ints_and_keep_floats(tmp_path: Path) -> None:
    p = write(tmp_path, "[model]\ntimeout = 5\ntemperature = 0\n[exec]\ntimeout = 0.5\n")
    cfg = load_config(p, env={})
    assert cfg.model.timeout == 5.0 and isinstance(cfg.model.timeout, float)
    assert cfg.model.temperature == 0.0
    assert cfg.exec.timeout == 0.5


def test_bom_is_tolerated(tmp_path: Path) -> None:
    p = write(tmp_path, b'\xef\xbb\xbf[model]\nname = "bom"\n')
    assert load_config(p, env={}).model.name == "bom"


def test_crlf_file(tmp_path: Path) -> None:
    p = write(tmp_path, b'[model]\r\nname = "crlf"\r\n')
    assert load_config(p, env={}).model.name == "crlf"


def test_not_utf8(tmp_path: Path) -> None:
    p = write(tmp_path, b'[model]\nname = "caf\xe9"\n')
    message = config_error(p)
    assert message.startswith(f"{p}: not valid UTF-8")
    assert "line 2" in message


def test_directory(tmp_path: Path) -> None:
    d = tmp_path / "config.toml"
    d.mkdir()
    assert config_error(d) == f"{d}: is a directory, not a config file"


def test_read_errors_become_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = write(tmp_path, "[model]\n")

    def denied(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)
    assert config_error(p) == f"{p}: cannot read the config file (permission denied)"

    def io_error(self: Path) -> bytes:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(Path, "read_bytes", io_error)
    assert config_error(p) == f"{p}: cannot read the config file (Input/output error)"


def test_fifo_is_not_read(tmp_path: Path) -> None:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    p = tmp_path / "config.toml"
    os.mkfifo(p)
    assert config_error(p) == f"{p}: is not a regular file"


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    p = write(tmp_path, "")
    assert load_config(p, env={}) == Config(path=str(p))


# ---------------------------------------------------------------- the example file


def _example_keys() -> dict[str, dict[str, tuple[bool, str]]]:
    """section -> key -> (commented, value text) as written in config.example.toml."""
    found: dict[str, dict[str, tuple[bool, str]]] = {}
    section = ""
    for line in EXAMPLE.read_text(encoding="utf-8").splitlines():
        if m := re.fullmatch(r"\[(\w+)\]", line):
            section = m[1]
            found[section] = {}
        elif m := re.fullmatch(r"(#\s?)?(\w+) = (.+)", line):
            assert section, f"key outside a section: {line!r}"
            assert m[2] not in found[section], f"{section}.{m[2]} appears twice"
            found[section][m[2]] = (m[1] is not None, m[3])
    return found


def test_example_documents_every_key_with_its_default() -> None:
    keys = _example_keys()
    assert set(keys) == set(SECTIONS)
    for section, cls in SECTIONS.items():
        fields = {f.name: f.default for f in dataclasses.fields(cls)}
        assert set(keys[section]) == set(fields), section
        for name, default in fields.items():
            commented, value = keys[section][name]
            assert commented == (default is None), f"{section}.{name}"
            if not commented:
                parsed = tomllib.loads(f"v = {value}")["v"]
                assert parsed == default and type(parsed) in (type(default), float), name


def test_example_has_a_comment_for_every_key() -> None:
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if re.fullmatch(r"(# ?)?\w+ = .+", line):
            above = lines[i - 1]
            assert above.startswith("# ") and not re.fullmatch(r"# ?\w+ = .+", above), line


def test_example_loads_to_the_defaults() -> None:
    cfg = load_config(EXAMPLE, env={})
    assert dataclasses.replace(cfg, path=None) == Config()


def test_example_with_everything_uncommented_is_valid(tmp_path: Path) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    text = re.sub(r"(?m)^# ?(\w+ = .+)$", r"\1", text)
    p = write(tmp_path, text)
    cfg = load_config(p, env={})
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            assert getattr(getattr(cfg, section), f.name) is not None, f.name


# ---------------------------------------------------------------- secrets


def test_repr_never_shows_the_key(tmp_path: Path) -> None:
    p = write(tmp_path, '[model]\napi_key = "sk-secret-123456789"\n')
    cfg = load_config(p, env={})
    assert cfg.model.api_key == "sk-secret-123456789"
    for text in (repr(cfg), str(cfg), repr(cfg.model), f"{cfg}"):
        assert "sk-secret" not in text
    assert "api_key_env='OPENAI_API_KEY'" in repr(cfg)


def test_resolve_api_key() -> None:
    with_key = Config(model=ModelConfig(api_key="from-file"))
    assert resolve_api_key(with_key, {"OPENAI_API_KEY": "from-env"}) == "from-env"
    assert resolve_api_key(with_key, {}) == "from-file"
    assert resolve_api_key(with_key, {"OPENAI_API_KEY": ""}) == "from-file"
    assert resolve_api_key(Config(), {"OPENAI_API_KEY": "  "}) is None
    assert resolve_api_key(Config(), {"OPENAI_API_KEY": "k\n"}) == "k"
    assert resolve_api_key(Config(), {}) is None
    assert resolve_api_key(Config(model=ModelConfig(api_key="")), {}) is None
    custom = Config(model=ModelConfig(api_key_env="GROQ_API_KEY"))
    assert resolve_api_key(custom, {"OPENAI_API_KEY": "no", "GROQ_API_KEY": "yes"}) == "yes"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_warning_for_readable_file_with_key(tmp_path: Path) -> None:
    p = write(tmp_path, '[model]\napi_key = "sk-secret-123456789"\n')
    p.chmod(0o644)
    cfg = load_config(p, env={})
    warnings = config_warnings(cfg)
    assert warnings == [
        f"warning: {p} holds model.api_key and is readable by others; run: chmod 600 {p}"
    ]
    assert "sk-secret" not in " ".join(warnings)
    p.chmod(0o600)
    assert config_warnings(cfg) == []


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_no_warning_without_key(tmp_path: Path) -> None:
    p = write(tmp_path, '[model]\nname = "x"\n')
    p.chmod(0o644)
    assert config_warnings(load_config(p, env={})) == []
    assert config_warnings(Config()) == []


def test_config_is_frozen() -> None:
    cfg = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.model = ModelConfig()  # type: ignore[misc]


# ---------------------------------------------------------------- bounds (issue 11)


def test_every_number_has_both_ends_bounded() -> None:
    """A new numeric key cannot slip in unbounded: 1e300 overflowed the cell timer once."""
    from llmrepl.config import _RANGES, _TYPES

    numeric = {k for k, (base, _) in _TYPES.items() if base in (int, float)}
    assert numeric == set(_RANGES)
    for key, (low, high) in _RANGES.items():
        section, name = key.split(".")
        assert low <= high < 1e12, key
        default = getattr(SECTIONS[section](), name)
        assert default is None or low <= default <= high or default == 0, key


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[exec]\ntimeout = 1e300\n",
         "exec.timeout must be 0 (no limit) or between 0.001 and 86,400 seconds (one day), got 1e+300 (float)"),
        ("[exec]\ntimeout = 1e-9\n", "exec.timeout must be 0 (no limit) or between 0.001"),
        ("[exec]\ntimeout = inf\n", "exec.timeout must be a finite number, got inf (float)"),
        ("[model]\ntimeout = 86401\n", "model.timeout must be between 0.001 and 86,400 seconds"),
        ("[model]\ntimeout = 1" + "0" * 400 + "\n", "model.timeout must be between 0.001 and 86,400"),
        ("[model]\ncontext_window = 10000001\n", "model.context_window must be between 256 and 10,000,000"),
        ("[model]\nmax_output_tokens = 1000001\n", "model.max_output_tokens must be between 1 and 1,000,000"),
        ("[model]\ninput_price = 1e9\n", "model.input_price must be between 0 and 10,000"),
        ("[repl]\nmax_steps = 101\n", "repl.max_steps must be between 1 and 100, got 101 (integer)"),
        ("[repl]\ndigest_tokens = 100001\n", "repl.digest_tokens must be between 0 and 100,000"),
        ("[exec]\nmax_output_chars = 10000001\n", "exec.max_output_chars must be between 1 and 10,000,000"),
        ("[model]\ncontext_window = 2048\n",
         "model.max_output_tokens (4,096, the default) must be less than model.context_window (2,048)"),
        ("[model]\nname = \"a\\nb\"\n", "model.name must not contain control or invisible formatting characters"),
        ("[model]\nname = \"gpt\\u202e\"\n", "got 'gpt\\u202e' (string)"),
        ("[model]\nencoding = \"" + "x" * 101 + "\"\n", "model.encoding must be at most 100 characters, got 101"),
        ("[model]\nbase_url = \"http://h/\\u001b[2J\"\n", "model.base_url must not contain control"),
        ('[model]\n"x\u202e" = 1\n', "unknown key 'model.x\\u202e'"),
        ("x = " + "[" * 3000 + "]" * 3000 + "\n", "arrays or tables are nested too deeply to read"),
        ("[repl]\nmax_steps = " + "9" * 5000 + "\n", "cannot read a value in the file (Exceeds the limit"),
        ("[model]\nname = " + "[" * 50 + "]" * 50 + "\n", "model.name must be a string, got [[[[[[[...]]]]]]] (array)"),
    ],
)
def test_bounds(tmp_path: Path, text: str, expected: str) -> None:
    p = write(tmp_path, text)
    message = config_error(p)
    assert message.startswith(f"{p}: ") and expected in message
    assert len(message) < 300 and "\x1b" not in message and "\u202e" not in message


def test_bounds_hold_at_their_ends(tmp_path: Path) -> None:
    p = write(tmp_path, "[model]\ntimeout = 86400\ncontext_window = 10000000\nmax_output_tokens = 1000000\n"
                        "[repl]\nmax_steps = 100\ndigest_tokens = 0\n[exec]\ntimeout = 0.001\n")
    cfg = load_config(p, env={})
    assert (cfg.model.timeout, cfg.repl.max_steps, cfg.exec.timeout) == (86400.0, 100, 0.001)
    assert load_config(write(tmp_path, "[exec]\ntimeout = 0\n"), env={}).exec.timeout == 0


def test_api_key_with_a_line_break_is_not_echoed(tmp_path: Path) -> None:
    p = write(tmp_path, '[model]\napi_key = "sk-secret-123456789\\n"\n')
    message = config_error(p)
    assert "model.api_key must not contain control" in message and "sk-secret" not in message


def test_a_file_of_megabytes_is_not_read(tmp_path: Path) -> None:
    p = write(tmp_path, "# padding\n" * 200_000)
    assert config_error(p) == (f"{p}: is 2,000,000 bytes; a config file is a few lines "
                               "(at most 1,048,576 bytes are read)")


def test_environment_values_are_bounded(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path), "LLMREPL_MODEL": "gpt\x1b]0;x\x07"}
    with pytest.raises(ConfigError, match=r"^environment variable LLMREPL_MODEL: model.name must not contain"):
        load_config(env=env)
    env["LLMREPL_MODEL"] = "m" * 1001
    with pytest.raises(ConfigError, match=r"^environment variable LLMREPL_MODEL: model.name must be at most 1,000"):
        load_config(env=env)


def test_find_local_from_the_environment(tmp_path: Path) -> None:
    base = {"XDG_CONFIG_HOME": str(tmp_path)}
    assert load_config(env=base).model.find_local is True
    for text, value in (("false", False), ("0", False), ("off", False), ("yes", True), (" TRUE ", True)):
        assert load_config(env={**base, "LLMREPL_FIND_LOCAL": text}).model.find_local is value
    with pytest.raises(ConfigError, match=r"^environment variable LLMREPL_FIND_LOCAL: model.find_local must be "
                                          r"true or false, got 'maybe' \(string\)$"):
        load_config(env={**base, "LLMREPL_FIND_LOCAL": "maybe"})


def test_flag_values_are_checked_by_the_config() -> None:
    from llmrepl.config import flag_value

    assert flag_value("repl.max_steps", "7") == 7 and flag_value("exec.timeout", "2.5") == 2.5
    for key, text, expected in [
        ("repl.max_steps", "0", "must be between 1 and 100, got 0 (integer)"),
        ("repl.max_steps", "1000", "must be between 1 and 100, got 1000 (integer)"),
        ("repl.max_steps", "zero", "must be an integer, got 'zero' (string)"),
        ("exec.timeout", "1e300", "must be 0 (no limit) or between 0.001 and 86,400 seconds (one day), got 1e+300 (float)"),
        ("exec.timeout", "nan", "must be a finite number, got nan (float)"),
        ("exec.timeout", "-1", "must be 0 (no limit) or between 0.001 and 86,400 seconds (one day), got -1.0 (float)"),
    ]:
        with pytest.raises(ConfigError) as info:
            flag_value(key, text)
        assert str(info.value) == expected


# ---------------------------------------------------------------- images (issue 12)


def test_inline_images_and_send_images(tmp_path: Path) -> None:
    base = {"XDG_CONFIG_HOME": str(tmp_path)}
    cfg = load_config(env=base)
    assert (cfg.repl.inline_images, cfg.repl.send_images) == ("auto", False)
    p = write(tmp_path, '[repl]\ninline_images = "off"\nsend_images = true\n')
    cfg = load_config(p, env={})
    assert (cfg.repl.inline_images, cfg.repl.send_images) == ("off", True)
    assert load_config(env={**base, "LLMREPL_INLINE_IMAGES": " ON "}).repl.inline_images == "on"
    assert load_config(p, env={"LLMREPL_INLINE_IMAGES": "auto"}).repl.inline_images == "auto"  # env > file


@pytest.mark.parametrize(("text", "expected"), [
    ('[repl]\ninline_images = "sometimes"\n',
     'repl.inline_images must be "auto", "on" or "off", got \'sometimes\' (string)'),
    ("[repl]\ninline_images = true\n", "repl.inline_images must be a string, got True (boolean)"),
    ('[repl]\ninline_images = "on\\u001b[2J"\n', "repl.inline_images must not contain control"),
    ('[repl]\nsend_images = "yes"\n', "repl.send_images must be true or false, got 'yes' (string)"),
    ('[repl]\ninline_image = "on"\n', "unknown key 'repl.inline_image' (did you mean 'repl.inline_images'?)"),
])
def test_image_keys_are_checked(tmp_path: Path, text: str, expected: str) -> None:
    p = write(tmp_path, text)
    message = config_error(p)
    assert message.startswith(f"{p}: {expected}") and "\x1b" not in message


def test_inline_images_from_the_environment_is_checked(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path), "LLMREPL_INLINE_IMAGES": "kitty"}
    with pytest.raises(ConfigError, match=r'^environment variable LLMREPL_INLINE_IMAGES: repl.inline_images '
                                          r'must be "auto", "on" or "off", got \'kitty\' \(string\)$'):
        load_config(env=env)
