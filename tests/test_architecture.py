"""The shape of the house, read from the source (AST): imports run one way with no cycle between
files (function-level imports included: they hide cycles, they do not remove them), and no module or
class grows into a god object."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "tui"
MAX_LINES = 520  # "about 500": a module past this holds more than one responsibility
MAX_METHODS = 40


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in PKG.rglob("*.py")}


def _resolve(name: str) -> str | None:
    """The longest prefix of ``name`` that is one of our modules."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str) -> Iterator[tuple[str, int]]:
    """(tui module imported, line) for every import statement in ``module``, wherever it is."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            targets = [f"{stem}.{a.name}" for a in node.names] + [stem]
        else:
            continue
        found = {_resolve(t) for t in targets if t.startswith("tui")}
        for target in sorted(found - {None, module}):
            yield target, node.lineno


GRAPH = {m: {t for t, _ in imports_of(m)} for m in MODULES}


def test_no_import_cycle_between_files() -> None:
    """Tarjan's strongly connected components: any with more than one file is a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                scc.append(w)
                if w == v:
                    break
            if len(scc) > 1:
                cycles.append(sorted(scc))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert not cycles, "import cycles: " + "; ".join(" ↔ ".join(c) for c in cycles)


def _imports_from(prefix: str, forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for module in MODULES:
        if module == prefix or module.startswith(prefix + "."):
            for target, line in imports_of(module):
                if any(target == f or target.startswith(f + ".") for f in forbidden):
                    bad.append(f"{MODULES[module].relative_to(ROOT)}:{line} imports {target}")
    return bad


@pytest.mark.parametrize("layer, forbidden", [
    ("tui.engine", ("tui.record", "tui.server", "tui.app", "tui.learn", "tui.cli", "tui.run", "tui.config",
                    "tui.remote")),
    # a server is a source of steps: below the run model and the recording, beside the engine
    ("tui.remote", ("tui.app", "tui.server", "tui.learn", "tui.cli", "tui.run", "tui.record")),
    ("tui.sampling", tuple(sorted({m.split(".")[1] for m in MODULES if m.count(".") >= 1} - {"sampling"}))),
    ("tui.record", ("tui.app", "tui.server", "tui.learn", "tui.cli")),
    ("tui.server", ("tui.app", "tui.learn", "tui.cli")),
    ("tui.run", ("tui.app", "tui.server", "tui.learn", "tui.cli")),
    ("tui.learn", ("tui.app", "tui.cli")),
    # retrieval: above the engine (embeddings) and the recording's file fingerprint, below every front end
    ("tui.rag", ("tui.app", "tui.server", "tui.learn", "tui.cli", "tui.run", "tui.remote")),
    # the browser front end starts sessions as processes: it never imports what they run
    ("tui.web", tuple(f"tui.{m}" for m in sorted({m.split(".")[1] for m in MODULES if m.count(".") >= 1}
                                                 - {"web", "safe_text"}))),
    ("tui.app", ("tui.cli",)),
])
def test_imports_run_one_way(layer: str, forbidden: tuple[str, ...]) -> None:
    forbidden = tuple(f if f.startswith("tui.") else f"tui.{f}" for f in forbidden)
    assert _imports_from(layer, forbidden) == []


def test_no_module_above_about_500_lines() -> None:
    big = {str(p.relative_to(ROOT)): n for p in PKG.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert big == {}


def test_no_class_above_40_methods() -> None:
    big = {}
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                n = sum(isinstance(b, (ast.FunctionDef, ast.AsyncFunctionDef)) for b in node.body)
                if n > MAX_METHODS:
                    big[f"{module}.{node.name}"] = n
    assert big == {}


def test_the_graph_sees_function_level_imports() -> None:
    """The cycle test reads imports inside functions too (the controller's import of the recorder
    was one, hidden that way)."""
    hidden = [(m, t) for m in MODULES for t, _ in imports_of(m)]
    assert hidden and all(t in MODULES for _, t in hidden)


def test_every_package_ships_in_the_wheel() -> None:
    """pyproject.toml lists the packages explicitly: a new one missing there would be absent from an install."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {_module_name(p) for p in PKG.rglob("__init__.py")}
    assert found <= listed, f"missing from pyproject.toml: {sorted(found - listed)}"
