"""The layout rules the tests can check: one module talks to llama.cpp, the modules import each
other without cycles, every package says in its first line what it holds."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "launcher"
RUNTIME = "launcher.models.runtime"


def _modules() -> dict[str, Path]:
    """Every module of the package by its dotted name (a package by its own name)."""
    out: dict[str, Path] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The launcher modules a module imports, at module level or inside functions.

    Imports under `if TYPE_CHECKING:` are left out: they never run, so they cannot make a cycle
    at import time (they only tell the type checker a name)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for child in node.body for n in ast.walk(child))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for a in node.names:
                # `from launcher.models.catalogue import gguf_meta` imports the module gguf_meta.
                found.add(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base)
    return {m for m in found if m in modules and m != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_only_the_runtime_imports_llama_cpp() -> None:
    offenders = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if any(n == "llama_cpp" or n.startswith("llama_cpp.") for n in names) and name != RUNTIME:
                offenders.append(name)
    assert offenders == [], f"only {RUNTIME} may import llama_cpp"


def test_the_runtime_exists_where_the_rule_names_it() -> None:
    assert RUNTIME in _modules()


def test_no_import_cycles() -> None:
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append([*path[path.index(dep) :], dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_every_package_has_a_one_line_summary() -> None:
    for init in sorted(PACKAGE.rglob("__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc and doc.splitlines()[0].strip(), f"{init.relative_to(PACKAGE.parent)} has no docstring"


# The packages from the bottom up: each imports only the ones before it (README's Layout section).
LAYERS = ["core", "models", "index", "ingest", "watch", "query", "app", "cli"]


def test_each_package_imports_only_the_layers_below_it() -> None:
    def layer(module: str) -> str:
        return module.split(".")[1] if module.count(".") else ""

    packages = {layer(m) for m in _modules()} - {""}
    assert packages <= {*LAYERS, "__main__"}, f"a package missing from LAYERS: {packages - set(LAYERS)}"
    upward = sorted(
        f"{a} -> {b}"
        for a, deps in _graph().items()
        for b in deps
        if layer(a) in LAYERS and layer(b) in LAYERS and LAYERS.index(layer(b)) > LAYERS.index(layer(a))
    )
    assert upward == [], "imports of a higher layer: " + ", ".join(upward)
