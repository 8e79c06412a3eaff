"""The ``llmrepl`` command: arguments in, configuration loaded, an exit code out.

``--help`` and ``--version`` are answered before anything heavy is imported; everything
else (building the session, the modes) is :mod:`llmrepl.app`'s, imported once the config
has loaded. Errors become one line on stderr and exit status 2; Ctrl-C, 130.
"""

from __future__ import annotations

import os
import sys

from llmrepl import __version__

# typing, pathlib and threading stay off the --help / --version path (a few ms each), and
# argparse (with re, gettext, enum: ~10 ms here) off the --version path
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Mapping
    from pathlib import Path

    from llmrepl.config import Config

__all__ = ["main", "build_parser", "version_text", "installed_version"]


def _formatter(prog: str) -> argparse.HelpFormatter:
    import argparse

    # argparse would import shutil (and with it bz2/lzma) just to learn the terminal width
    try:
        width = os.get_terminal_size().columns - 2
    except OSError:
        width = 78
    return argparse.HelpFormatter(prog, width=max(width, 40))


def build_parser() -> argparse.ArgumentParser:
    import argparse

    p = argparse.ArgumentParser(
        prog="llmrepl",
        formatter_class=_formatter,
        description="Talk to an LLM that writes Python; you confirm, edit or decline each cell; "
        "it runs here, in one namespace that persists.",
        epilog="Standard input that is not a terminal is read as one message or /command per line.",
    )
    p.add_argument("-c", dest="command", metavar="MESSAGE", help="send one message, then exit (one-shot)")
    p.add_argument("-y", "--yes", action="store_true", help="run generated code without asking")
    p.add_argument("-m", "--model", metavar="NAME", help="model name")
    p.add_argument("--base-url", metavar="URL", help="any OpenAI-compatible endpoint")
    p.add_argument("--config", metavar="PATH", help="config file (default: $XDG_CONFIG_HOME/llmrepl/config.toml)")
    p.add_argument("--resume", nargs="?", const="", metavar="ID", help="continue the last session, or session ID")
    p.add_argument("--export", nargs="+", metavar=("PATH", "ID"),
                   help="write a stored session (the last, or ID) as .py, .ipynb or .md, without opening the REPL")
    p.add_argument("--force", action="store_true", help="with --export: replace PATH if it exists")
    p.add_argument("--keep-failed", action="store_true",
                   help="with --export: keep failed cells whole (a notebook tags them raises-exception)")
    p.add_argument("--max-steps", type=_positive_int, metavar="N", help="model calls allowed per message (default 6)")
    p.add_argument("--timeout", type=_non_negative_float, metavar="S", help="time limit for one code cell, 0 = none")
    p.add_argument("--no-stream", action="store_true", help="wait for whole answers instead of streaming")
    p.add_argument("--kernel", nargs="?", const="python3", metavar="SPEC",
                   help="run cells in a Jupyter kernel: a kernelspec name (default python3), a "
                   "connection file (kernel-*.json) or a Jupyter Server URL with ?token=")
    p.add_argument("--sandbox", action="store_true",
                   help="start the kernel inside bubblewrap: no network, writes only in this folder "
                   "(implies --kernel python3)")
    p.add_argument("--version", action="store_true",
                   help="show llmrepl's version and Python's, openai's and prompt_toolkit's, then exit")
    return p


def version_text() -> str:
    """What ``--version`` prints, for bug reports: llmrepl's version, then the Python and the
    two libraries whose behaviour users meet most (the model client and the terminal)."""
    impl = sys.implementation.name.replace("cpython", "CPython").replace("pypy", "PyPy")
    lines = [f"llmrepl {__version__}", f"Python {sys.version.split()[0]} ({impl})"]
    lines += [f"{name} {installed_version(name)}" for name in ("openai", "prompt_toolkit")]
    return "\n".join(lines) + "\n"


def installed_version(name: str) -> str:
    """The version of the distribution ``name`` that this interpreter would import, without
    importing it (openai takes ~0.3 s) or importlib.metadata (~45 ms: email, zipfile, csv).

    Wheels and pip install a ``NAME-VERSION.dist-info`` folder beside the package, so its name
    says the version: the first one on ``sys.path``, the order imports follow. Anything else
    (a zipped or egg install) falls back to importlib.metadata."""
    wanted = _normalized(name)
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for folder in names:
            stem, _, suffix = folder.rpartition(".")
            dist, _, version = stem.partition("-")
            if suffix in ("dist-info", "egg-info") and version and _normalized(dist) == wanted:
                return version.partition("-")[0]  # an egg-info's name may go on: -py3.11
    import importlib.metadata

    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _normalized(name: str) -> str:
    return name.lower().replace("-", "_").replace(".", "_")


def _positive_int(text: str) -> int:
    """--max-steps: parsed and bounded by config.py, the one place bounds live (1 to 100)."""
    return int(_flag_value("repl.max_steps", text))  # type: ignore[call-overload]


def _non_negative_float(text: str) -> float:
    """--timeout: parsed and bounded by config.py (0, or 0.001 s to one day; no nan or inf)."""
    return float(_flag_value("exec.timeout", text))  # type: ignore[arg-type]


def _flag_value(key: str, text: str) -> object:
    import argparse

    from llmrepl.config import flag_value
    from llmrepl.errors import ConfigError

    try:
        return flag_value(key, text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def main(argv: list[str] | None = None) -> int:
    if (sys.argv[1:] if argv is None else argv) == ["--version"]:
        sys.stdout.write(version_text())  # before building the parser: the common case, instant
        return 0
    args = build_parser().parse_args(argv)
    if args.version:
        sys.stdout.write(version_text())
        return 0
    env: Mapping[str, str] = os.environ
    from llmrepl.config import config_warnings, load_config, state_dir
    from llmrepl.errors import ConfigError
    from llmrepl.terminal.startup import report

    if args.export is not None:
        return _export(args.export, state_dir(env), args.force, args.keep_failed)
    if args.keep_failed:
        report("--keep-failed goes with --export (in the REPL: /export PATH --keep-failed)")
        return 2
    if args.force:
        report("--force goes with --export (in the REPL: /export PATH --force)")
        return 2
    overrides = {
        "model.name": args.model,
        "model.base_url": args.base_url,
        "repl.max_steps": args.max_steps,
        "repl.stream": False if args.no_stream else None,
        "exec.timeout": args.timeout,
        "exec.kernel": args.kernel,
        "exec.sandbox": True if args.sandbox else None,
    }
    try:
        config = load_config(args.config, env=env, overrides=overrides)
    except ConfigError as e:
        report(str(e))
        return 2
    if config.exec.sandbox:
        problem, config = _sandboxed(config)
        if problem:
            report(problem)
            return 2
    if config.exec.kernel:
        problem = _kernel_problem(config.exec.kernel)
        if problem:
            report(problem)
            return 2
    for warning in config_warnings(config):
        report(warning)
    interactive = args.command is None and sys.stdin.isatty()
    try:
        return _run(args, config, env, interactive, state_dir(env))
    except KeyboardInterrupt:
        return 130


def _kernel_problem(spec: str) -> str:
    """Why ``--kernel SPEC`` cannot work, found before the prompt (a kernelspec that is not
    installed, jupyter_client missing); "" when it may."""
    from llmrepl.execution.kernel_local import check_kernel_name
    from llmrepl.execution.kernel_seam import KernelUnavailable

    try:
        check_kernel_name(spec)
    except KernelUnavailable as e:
        return str(e)
    return ""


def _sandboxed(config: Config) -> tuple[str, Config]:
    """``--sandbox`` (``exec.sandbox``): a local kernel (``python3`` unless one is named) and
    bubblewrap on PATH, or one line saying why not."""
    import dataclasses
    from pathlib import Path

    from llmrepl.execution.kernel_seam import KernelUnavailable
    from llmrepl.execution.sandbox import NO_BWRAP, check_sandbox_spec, check_workdir, find_bwrap

    try:
        check_sandbox_spec(config.exec.kernel)
        check_workdir(Path.cwd(), os.environ.get("HOME"))
    except KernelUnavailable as e:
        return str(e), config
    if find_bwrap() is None:
        return NO_BWRAP, config
    if not config.exec.kernel:
        config = dataclasses.replace(config, exec=dataclasses.replace(config.exec, kernel="python3"))
    return "", config


def _export(spec: list[str], state: Path, force: bool, keep_failed: bool = False) -> int:
    """``--export PATH [ID] [--force] [--keep-failed]``: what was written on stdout and 0, or
    one line on stderr and 2 (an existing PATH without --force too: nothing is replaced unasked)."""
    from llmrepl.app import export_session
    from llmrepl.errors import LLMReplError
    from llmrepl.terminal.startup import report

    if len(spec) > 2:
        report("--export takes PATH and optionally a session ID")
        return 2
    try:
        message, warning = export_session(state, spec[0], spec[1] if len(spec) > 1 else "", replace=force,
                                          keep_failed=keep_failed)
    except LLMReplError as e:
        report(str(e))
        return 2
    except OSError as e:
        report(f"cannot write {spec[0]}: {e.strerror or e}")
        return 2
    if warning:
        report(f"warning: {warning}")
    from llmrepl.terminal.sanitize import sanitize

    sys.stdout.write(sanitize(message) + "\n")  # it quotes a path and a stored session
    return 0


def _run(args: argparse.Namespace, config: Config, env: Mapping[str, str], interactive: bool,
         state: Path) -> int:
    """The session to resume, if any (an unknown one is exit status 2), then the REPL."""
    from llmrepl.app import load_stored, run
    from llmrepl.errors import LLMReplError
    from llmrepl.terminal.startup import report

    stored = None
    if args.resume is not None:
        try:
            stored = load_stored(state, args.resume)
        except LLMReplError as e:
            report(str(e))
            return 2
    return run(config, state, env, interactive=interactive, command=args.command, yes=args.yes,
               model_flag=bool(args.model), stored=stored)
