"""The package's import layers, checked statically so that a wrong import fails here, not in review.

hicl_app is layered: core at the bottom, then engine and catalog (which never see each other), hub,
worker, services, builtin, bench, and the faces (cli, tui) on top. A lower layer importing a higher
one is how a catalog query ends up loading torch; and a face must not reach torch & co. through
module-level imports either, or every `hicl` command pays seconds to start (a command imports them
when it runs). The checker reads the files with `ast` and imports nothing, so it sees lazy imports too.
"""

from __future__ import annotations

import ast
from collections import deque
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[2] / "hicl_app"

_BELOW_FACES = {"core", "engine", "catalog", "hub", "worker", "services", "builtin", "bench"}
#: layer -> the layers it may import besides itself (the bare `hicl_app` package is always allowed)
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "engine": {"core"},
    "catalog": {"core"},
    "hub": {"core", "catalog"},
    "worker": {"core", "catalog", "engine", "hub"},
    "services": {"core", "catalog", "engine", "worker", "hub"},
    "builtin": {"core", "catalog", "engine", "worker", "services"},
    "bench": _BELOW_FACES | {"tui"},
    "tui": _BELOW_FACES,
    "cli": _BELOW_FACES | {"tui"},
    "": _BELOW_FACES | {"tui", "cli"},  # hicl_app/__init__.py and hicl_app/__main__.py
}
#: data packages mapped in from the top-level migrations/ and themes/ folders
IGNORED = ("hicl_app._migrations", "hicl_app._themes")
#: what a face must not import at module level, even indirectly (the cli runs the TUI lazily)
HEAVY = {"torch", "transformers", "peft", "safetensors", "accelerate"}
HEAVY_FOR = {"cli": HEAVY | {"textual"}, "tui": HEAVY}

Edge = tuple[str, int, bool]  # imported module, line, at module level (not in a function or TYPE_CHECKING)


def _modules(package_dir: Path) -> dict[str, Path]:
    """Dotted name -> file for every .py file under package_dir."""
    found = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = [package_dir.name, *path.relative_to(package_dir).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
    return name == "TYPE_CHECKING"


def _imports(name: str, path: Path, known: set[str]) -> list[Edge]:
    """The file's imports: relative ones made absolute, `from a import b` as a.b where b is a module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    edges: list[Edge] = []

    def visit(node: ast.AST, top: bool) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            top = False
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, False)
            for child in node.orelse:
                visit(child, top)
            return
        if isinstance(node, ast.Import):
            edges.extend((alias.name, node.lineno, top) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: package.count(".") + 2 - node.level]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                edges.append((sub if sub in known else base, node.lineno, top))
        for child in ast.iter_child_nodes(node):
            visit(child, top)

    visit(ast.parse(path.read_text(encoding="utf-8"), str(path)), True)
    return list(dict.fromkeys(edges))  # `from .x import a, b` once


def _layer(module: str) -> str | None:
    """'core', 'engine', ... for a module; '' for the top-level __init__/__main__; None for any other."""
    parts = module.split(".")[1:]
    if not parts or parts == ["__main__"]:
        return ""
    return parts[0] if parts[0] in ALLOWED else None


def violations(package_dir: Path) -> list[str]:
    """Every broken import rule under package_dir, as 'module -> imported module (file:line)'."""
    root = package_dir.name
    modules = _modules(package_dir)
    known = set(modules) | {m.rsplit(".", k)[0] for m in modules for k in range(1, m.count(".") + 1)}
    graph = {name: _imports(name, path, known) for name, path in modules.items()}

    def where(module: str, line: int) -> str:
        return f"{modules[module].relative_to(package_dir.parent)}:{line}"

    found = []
    for module, edges in graph.items():
        layer = _layer(module)
        if layer is None:
            found.append(f"{module} -> (not in any layer) ({where(module, 1)})")
            continue
        for target, line, _ in edges:
            if target.split(".")[0] != root or target == root or target.startswith(IGNORED):
                continue
            if target not in known:
                found.append(f"{module} -> {target} (no such module) ({where(module, line)})")
            elif _layer(target) not in ALLOWED[layer] | {layer}:
                found.append(f"{module} -> {target} ({where(module, line)})")

    # faces: follow module-level imports through hicl_app (with the packages each one runs)
    for module in graph:
        heavy = HEAVY_FOR.get(_layer(module) or "", set())
        parent, queue, reported = {module: module}, deque([module]), set()
        while heavy and queue:
            current = queue.popleft()
            for target, line, top in graph[current]:
                if not top:
                    continue
                if target.split(".")[0] in heavy - reported:
                    reported.add(target.split(".")[0])
                    chain, step = [], current
                    while step != module:
                        chain.insert(0, step)
                        step = parent[step]
                    via = f", via {' -> '.join(chain)}" if chain else ""
                    found.append(f"{module} -> {target} ({where(current, line)}{via})")
                for k in range(target.count("."), -1, -1):  # importing a.b.c runs a, a.b and a.b.c
                    step = target.rsplit(".", k)[0]
                    if step in graph and step not in parent:
                        parent[step] = current
                        queue.append(step)
    return found


def test_real_tree_follows_the_layers() -> None:
    found = violations(PACKAGE_DIR)
    if found:  # pytest.fail: the whole list, not an assertion diff cut after eight lines
        pytest.fail(f"{len(found)} import(s) break the layers:\n" + "\n".join(found), pytrace=False)


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    """A minimal fake hicl_app under tmp_path with the given files added (or replaced)."""
    package = tmp_path / "hicl_app"
    for folder in ("", "core", "engine", "catalog", "cli"):
        (package / folder).mkdir(parents=True, exist_ok=True)
        (package / folder / "__init__.py").write_text("")
    (package / "core" / "errors.py").write_text("class Oops(Exception):\n    pass\n")
    for name, text in files.items():
        (package / name).write_text(text)
    return package


def test_engine_importing_the_catalog_is_caught(tmp_path: Path) -> None:
    package = _tree(tmp_path, {"catalog/db.py": "from ..core.errors import Oops\n",
                               "engine/train.py": "from ..core import errors\n\n\ndef f():\n"
                                                  "    from ..catalog import db\n"})
    assert violations(package) == ["hicl_app.engine.train -> hicl_app.catalog.db (hicl_app/engine/train.py:5)"]


def test_catalog_importing_the_engine_is_caught(tmp_path: Path) -> None:
    package = _tree(tmp_path, {"engine/train.py": "import hicl_app.core.errors\n",
                               "catalog/db.py": "from hicl_app.engine.train import step\n"})
    assert violations(package) == ["hicl_app.catalog.db -> hicl_app.engine.train (hicl_app/catalog/db.py:1)"]


def test_cli_reaching_torch_at_module_level_is_caught(tmp_path: Path) -> None:
    package = _tree(tmp_path, {"engine/models.py": "import torch\n",
                               "cli/main.py": "from ..engine import models\n"})
    assert violations(package) == [
        "hicl_app.cli.main -> torch (hicl_app/engine/models.py:1, via hicl_app.engine.models)"]

    _tree(tmp_path, {"cli/main.py": "def run():\n    from ..engine import models\n"})
    assert violations(package) == []

    _tree(tmp_path, {"cli/main.py": "from typing import TYPE_CHECKING\n\n"
                                    "if TYPE_CHECKING:\n    from ..engine import models\n"})
    assert violations(package) == []
