"""The layering DESIGN.md promises: services import the shared core, never one another,
and no module of the project takes part in an import cycle (at any depth, function-level
imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORE = "aqpipe"
SERVICES = ("ingest", "aggregator", "alerts")
PACKAGES = (CORE, *SERVICES)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules imported anywhere in the file (module level, functions, TYPE_CHECKING)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name.split(".")[0] in PACKAGES:
                # the deepest project module this name refers to
                while name and name not in modules:
                    name = name.rpartition(".")[0]
                if name:
                    found.add(name)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, modules) - {name} for name, path in modules.items()}


def test_services_import_only_the_core_and_themselves() -> None:
    offences = []
    for module, deps in _graph().items():
        top = module.split(".")[0]
        if top == CORE and module != "aqpipe.cli":
            offences += [f"{module} -> {d}" for d in deps if d.split(".")[0] in SERVICES]
        elif top in SERVICES:
            offences += [f"{module} -> {d}" for d in deps if d.split(".")[0] not in (CORE, top)]
    assert offences == []


def test_no_import_cycles() -> None:
    graph = _graph()
    # A package's __init__ importing its own submodules is how packages re-export;
    # the submodules importing the package back is the cycle to find.
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert cycles == []
