"""The layers, read from the folders: who may import whom, and the lazy-import promises.

The rules (docs/architecture.md, shared/DESIGN.md):

- ``engine``, ``context``, ``execution``, ``model`` and ``store`` never import ``terminal``;
- ``execution`` and ``model`` import only the base and themselves;
- the base (``config``, ``errors``, ``extract``, ``redact``) imports no sub-package.

They are checked twice: statically, from every import statement in the package (lazy imports
inside functions included), and dynamically, by importing each layer in a fresh interpreter.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import llmrepl

PACKAGE = Path(llmrepl.__file__).parent
LAYERS = ("terminal", "engine", "context", "execution", "model", "store")
BASE = ("config", "config_bounds", "errors", "extract", "redact")
TOP = ("cli", "app", "__init__", "__main__")

# layer -> the layers it must never import
FORBIDDEN: dict[str, set[str]] = {
    "engine": {"terminal"},
    "context": {"terminal", "engine"},
    "store": {"terminal", "engine"},
    "execution": {"terminal", "engine", "context", "model", "store"},
    "model": {"terminal", "engine", "context", "execution", "store"},
    "base": set(LAYERS),
}


def room(module: str) -> str:
    """``llmrepl.engine.session`` -> ``engine``; ``llmrepl.config`` -> ``base``."""
    parts = module.split(".")
    if parts[0] != "llmrepl" or len(parts) < 2:
        return "top"
    if parts[1] in LAYERS:
        return parts[1]
    return "base" if parts[1] in BASE else "top"


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every llmrepl module ``path`` imports, at the top or inside a function."""
    found: set[str] = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)  # `from llmrepl import terminal`
    return {m for m in found if m == "llmrepl" or m.startswith("llmrepl.")}


def all_modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_module_lives_in_a_known_room():
    rooms = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert rooms == set(LAYERS)
    top_level = {p.stem for p in PACKAGE.glob("*.py")}
    assert top_level == set(BASE) | set(TOP)


@pytest.mark.parametrize("layer", [*LAYERS, "base"])
def test_no_layer_imports_what_it_must_not(layer):
    bad = []
    for path in all_modules():
        me = module_name(path)
        if room(me) != layer:
            continue
        for target in imports_of(path):
            if room(target) in FORBIDDEN.get(layer, set()):
                bad.append(f"{me} imports {target}")
    assert not bad, "\n".join(bad)


def test_every_sub_package_says_what_lives_there_and_what_it_may_import():
    for layer in LAYERS:
        doc = ast.get_docstring(ast.parse((PACKAGE / layer / "__init__.py").read_text()))
        assert doc and "import" in doc, layer


def test_no_two_module_names_differ_by_one_letter():
    names = sorted({p.stem for p in all_modules()} | set(LAYERS))

    def one_apart(a: str, b: str) -> bool:
        if abs(len(a) - len(b)) > 1 or a == b:
            return False
        if len(a) == len(b):
            return sum(x != y for x, y in zip(a, b)) == 1
        short, long = sorted((a, b), key=len)
        return any(long[:i] + long[i + 1:] == short for i in range(len(long)))

    close = [(a, b) for i, a in enumerate(names) for b in names[i + 1:] if one_apart(a, b)]
    assert not close


def modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print(' '.join(sys.modules))"],
        capture_output=True, text=True, check=True,
    ).stdout
    return set(out.splitlines()[-1].split())  # the last line: what the code printed comes before


def non_terminal_modules() -> list[str]:
    return [module_name(p) for p in all_modules()
            if room(module_name(p)) not in ("terminal", "top") and p.name != "__init__.py"]


def test_nothing_below_the_terminal_loads_it_or_prompt_toolkit_or_pygments():
    mods = modules_after("\n".join(f"import {m}" for m in non_terminal_modules()))
    assert "prompt_toolkit" not in mods and "pygments" not in mods
    assert not [m for m in mods if m.startswith("llmrepl.terminal")]


def test_execution_and_model_load_only_the_base():
    for layer in ("execution", "model"):
        mods = modules_after("\n".join(f"import {m}" for m in non_terminal_modules() if room(m) == layer))
        others = {room(m) for m in mods if m.startswith("llmrepl.")} - {layer, "base", "top"}
        assert not others, (layer, others)


def test_the_base_loads_no_sub_package():
    mods = modules_after("\n".join(f"import llmrepl.{m}" for m in BASE))
    assert not [m for m in mods if room(m) in LAYERS]


def test_ui_path_does_not_import_openai_or_tiktoken():
    mods = modules_after("import llmrepl.cli, llmrepl.terminal.interactive, llmrepl.terminal.display, "
                         "llmrepl.engine.session")
    for heavy in ("openai", "tiktoken", "numpy", "pandas", "matplotlib"):
        assert heavy not in mods, heavy


def test_help_does_not_import_prompt_toolkit():
    code = "import sys\nfrom llmrepl.cli import main\ntry:\n    main(['--version'])\nexcept SystemExit:\n    pass"
    mods = modules_after(code)
    assert "prompt_toolkit" not in mods


def test_public_api_is_exported():
    for name in llmrepl.__all__:
        assert getattr(llmrepl, name) is not None, name


def test_the_early_prompt_is_the_real_prompt():
    from llmrepl.terminal import interactive, startup

    assert startup.EARLY_PROMPT == interactive.PROMPT
