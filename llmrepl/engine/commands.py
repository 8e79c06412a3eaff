"""Slash commands: one function each, registered with ``@command``; ``/help`` is generated.

A command gets the session and the text after its name and returns what to show (or
``None``); it never prints. ``dispatch`` turns an unknown name into a suggestion.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llmrepl.context.budget import NOTE_PREFIX
from llmrepl.context.digest import describe
from llmrepl.engine.session import Session
from llmrepl.execution.kernel_values import type_label
from llmrepl.redact import safe_url

__all__ = ["Command", "CommandResult", "command", "dispatch", "commands", "is_command"]


@dataclass
class CommandResult:
    text: str | None = None
    exit: bool = False
    level: str = "info"  # "info" | "warning" | "error"


Handler = Callable[[Session, str], "CommandResult | str | None"]


@dataclass
class Command:
    name: str
    help: str
    usage: str
    func: Handler


_REGISTRY: dict[str, Command] = {}


def command(name: str, help: str, usage: str = "") -> Callable[[Handler], Handler]:
    """Register ``func`` as ``/name``."""

    def register(func: Handler) -> Handler:
        _REGISTRY[name] = Command(name, help, usage or f"/{name}", func)
        return func

    return register


def commands() -> list[Command]:
    """Every registered command, in registration order."""
    return list(_REGISTRY.values())


def is_command(line: str) -> bool:
    """A line is a command when it starts with ``/`` followed by a letter."""
    return len(line) > 1 and line[0] == "/" and line[1].isalpha()


def dispatch(line: str, session: Session) -> CommandResult:
    """Run the command in ``line`` (which starts with ``/``)."""
    name, _, arg = line[1:].partition(" ")
    name = name.strip().lower()
    cmd = _REGISTRY.get(name)
    if cmd is None:
        import difflib  # only to suggest a correction

        close = difflib.get_close_matches(name, list(_REGISTRY), n=1, cutoff=0.5)
        hint = f" — did you mean /{close[0]}?" if close else "; /help lists the commands"
        return CommandResult(f"unknown command /{name}{hint}", level="error")
    session.journal.append("command", line=line if name != "py" else f"/py ({len(arg)} chars)")
    out = cmd.func(session, arg.strip())
    result = out if isinstance(out, CommandResult) else CommandResult(out)
    if result.text:  # the one gate from a command to the screen: /vars, /history, /model, ...
        result.text = session.redactor.redact(result.text)
    return result


@command("help", "list the commands")
def _help(session: Session, arg: str) -> str:
    width = max(len(c.usage) for c in commands())
    lines = [f"  {c.usage.ljust(width)}  {c.help}" for c in commands()]
    keys = (
        "Keys: Enter sends · Alt-Enter or Esc Enter adds a line · Ctrl-R searches history · "
        "Ctrl-C stops the answer or the running code · Ctrl-D exits"
    )
    prompt = ("Python and English share the prompt: it reads ` py>` while Enter would run what you "
              "typed as Python, `llm>` while Enter asks the model (/py and /ask force either way)")
    return "\n".join(["Commands:", *lines, keys, prompt])


@command("exit", "leave llmrepl (Ctrl-D too)")
def _exit(session: Session, arg: str) -> CommandResult:
    return CommandResult(exit=True)


@command("py", "run CODE directly in the namespace, no model; its output joins the conversation", "/py CODE")
def _py(session: Session, arg: str) -> CommandResult | None:
    if not arg:
        return CommandResult("usage: /py CODE   (for example: /py df.head())", level="error")
    session.run_direct(arg)
    return None


@command("ask", "send TEXT to the model even when it looks like Python", "/ask TEXT")
def _ask(session: Session, arg: str) -> CommandResult:
    # the front ends send "/ask TEXT" to the model themselves (engine/classify.py): a command
    # has no reviewer to run the model's code with, so only a bare /ask gets here
    return CommandResult("usage: /ask TEXT   (for example: /ask df — asks the model about df "
                         "instead of showing it)", level="error")


@command("vars", "your variables: name, type, short value or shape")
def _vars(session: Session, arg: str) -> str:
    names = session.executor.user_variables()
    if not names:
        return "no variables yet"
    width = min(max(len(n) for n in names), 24)
    types = {n: type_label(v) for n, v in names.items()}  # no user __getattr__; a kernel's value: its type
    twidth = min(max(len(t) for t in types.values()), 16)
    red = session.redactor.redact
    return "\n".join(f"  {n.ljust(width)}  {types[n].ljust(twidth)}  {describe(v, redact=red)}" for n, v in names.items())


@command("restart", "with --kernel: a fresh kernel, and this session's cells re-run in it")
def _restart(session: Session, arg: str) -> CommandResult:
    if session.executor.in_process:
        return CommandResult("/restart is for --kernel: here cells run inside llmrepl (/reset empties the namespace)",
                             level="error")
    from llmrepl.engine.kernel_restart import restart_and_replay

    try:
        text = restart_and_replay(session)
    except Exception as exc:  # KernelUnavailable, or a library error: said, never a traceback
        return CommandResult(f"the kernel could not restart: {exc}", level="error")
    session.note(f"The user restarted the Jupyter kernel: {text}.")
    return CommandResult(text)


@command("history", "the conversation so far, compact")
def _history(session: Session, arg: str) -> str:
    if not session.messages:
        return "the conversation is empty"
    return "\n".join(_summarise(m) for m in session.messages)


def _summarise(message: dict[str, Any], width: int = 100) -> str:
    role = message["role"]
    text = message.get("content") or ""
    if message.get("tool_calls"):
        names = ", ".join(c["function"]["name"] for c in message["tool_calls"])
        text = (text + " " if text else "") + f"→ calls {names}"
    first = " ".join(str(text).split())
    if len(first) > width:
        first = first[: width - 1] + "…"
    label = {"user": "you", "assistant": "model", "tool": "tool"}.get(role, role)
    if role == "user" and first.startswith(NOTE_PREFIX):
        label = "llmrepl"
        first = first[len(NOTE_PREFIX) :]
    return f"  {label:>7}: {first}"


@command("undo", "forget the last exchange and rewind the variables its code made")
def _undo(session: Session, arg: str) -> CommandResult:
    result = session.undo()
    if not result.removed:
        return CommandResult("nothing to undo")
    text = f"forgot the last exchange ({_plural(result.removed, 'message')})"
    if result.cells == 0:
        return CommandResult(text + "; no code had run in it")
    ran = f"{_plural(result.cells, 'cell')} had run in it"
    return CommandResult(f"{text}; {ran}; rewound: {result.summary}",
                         level="info" if result.rewound else "warning")


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


@command("reset", "new conversation and a fresh namespace")
def _reset(session: Session, arg: str) -> str:
    session.reset()
    return "new conversation; the namespace is empty"


@command("model", "show or switch the model", "/model [NAME]")
def _model(session: Session, arg: str) -> str:
    if not arg:
        where = getattr(session.model, "base_url", None)
        return f"model: {session.model.model}" + (f" at {safe_url(where)}" if where else "")
    old = session.model.model
    session.switch_model(arg)
    return f"model: {arg} (was {old}); context window {session.context.context_window:,} tokens"


@command("auto", "run code without asking: on or off (toggles without an argument)", "/auto [on|off]")
def _auto(session: Session, arg: str) -> CommandResult:
    word = arg.lower()
    if word not in ("", "on", "off"):
        return CommandResult("usage: /auto [on|off]", level="error")
    session.auto_run = (not session.auto_run) if not word else word == "on"
    state = "on: code runs without asking" if session.auto_run else "off: you confirm each cell"
    session.journal.append("auto", on=session.auto_run)
    return CommandResult(f"auto-run {state}")


@command("tokens", "tokens in the next request by part, the budget, and tokens used this session")
def _tokens(session: Session, arg: str) -> str:
    return session.token_report()


@command("sessions", "stored sessions: id, start, cells, first message")
def _sessions(session: Session, arg: str) -> CommandResult:
    from llmrepl.store.catalogue import list_sessions, render_session_list

    if session.state_dir is None:
        return CommandResult("no state folder: sessions are not stored", level="warning")
    infos = list_sessions(session.state_dir)
    if not infos:
        return CommandResult("no stored sessions yet")
    return CommandResult(render_session_list(infos))


@command("save", "write the transcript as Markdown (default: llmrepl-ID.md here)", "/save [PATH] [--force]")
def _save(session: Session, arg: str) -> CommandResult:
    arg, force = _force(arg)
    path = arg or f"llmrepl-{session.session_id or 'session'}.md"
    if not path.lower().endswith(".md"):
        path += ".md"
    return _write(session, path, force)


@command("export", "write the cells as a .py or .ipynb that runs top to bottom (by the suffix); "
         "--keep-failed keeps failed cells whole; --force replaces a file",
         "/export PATH [--keep-failed] [--force]")
def _export(session: Session, arg: str) -> CommandResult:
    arg, keep = _flag(arg, "--keep-failed")
    arg, force = _force(arg)
    if not keep:  # either order
        arg, keep = _flag(arg, "--keep-failed")
    if not arg:
        return CommandResult("usage: /export PATH [--keep-failed] [--force]   (PATH ending in .py or .ipynb)",
                             level="error")
    return _write(session, arg, force, keep_failed=keep)


def _force(arg: str) -> tuple[str, bool]:
    """``PATH --force`` (or ``--force PATH``): the path, and whether to replace an existing file."""
    return _flag(arg, "--force")


def _flag(arg: str, flag: str) -> tuple[str, bool]:
    """``PATH FLAG`` (or ``FLAG PATH``): the rest, and whether ``flag`` was there."""
    for rest in (arg.removesuffix(" " + flag), arg.removeprefix(flag + " ")):
        if rest != arg:
            return rest.strip(), True
    return ("", True) if arg == flag else (arg, False)


def _write(session: Session, target: str, force: bool, *, keep_failed: bool = False) -> CommandResult:
    from pathlib import Path

    from llmrepl.errors import LLMReplError
    from llmrepl.store.export import ExportExists, write_export
    from llmrepl.store.transcript import load_session

    path = session.journal.path
    if path is None or not session.journal.healthy:
        return CommandResult("the session journal could not be written, so there is nothing to export", level="error")
    try:
        stored = load_session(path)
        try:
            done = write_export(stored, Path(target), replace=force, keep_failed=keep_failed)  # it expands ~
        except ExportExists as e:
            # an existing file is replaced only when asked: the front end's yes/no question when
            # it has one (interactive), else refused (batch), unless --force was given
            if session.ask is None or not session.ask(f"{e.path} exists: replace it? [y/n] "):
                return CommandResult(str(e), level="error")
            done = write_export(stored, Path(target), replace=True, keep_failed=keep_failed)
    except LLMReplError as e:
        return CommandResult(str(e), level="error")
    except OSError as e:
        return CommandResult(f"cannot write {target}: {e.strerror or e}", level="error")
    warning = stored.info.skipped_warning()
    return CommandResult(f"{done}\n{warning}", level="warning") if warning else CommandResult(done)
