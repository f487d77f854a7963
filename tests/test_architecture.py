"""The layering of ``ocl/``: no package imports a package that imports it back (static imports,
function-level ones included)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "ocl"


def unit_of(module: str) -> str:
    """``ocl.data.movi`` -> ``data``; ``ocl.cli`` -> ``cli`` (a top-level module is its own unit)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "ocl"


def imported_modules(path: Path) -> list[str]:
    """Absolute names of the ``ocl`` modules ``path`` imports, at any depth of the file."""
    module = ".".join(path.relative_to(REPO).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            names.append(".".join([*base, node.module or ""]).strip("."))
    return [name.removesuffix(".__init__") for name in names if name == "ocl" or name.startswith("ocl.")]


def unit_graph() -> dict[str, set[str]]:
    """unit -> the other units it imports."""
    graph: dict[str, set[str]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        source = unit_of(".".join(path.relative_to(REPO).with_suffix("").parts))
        for name in imported_modules(path):
            if unit_of(name) not in (source, "ocl"):
                graph[source].add(unit_of(name))
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one unit (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_package_imports_one_that_imports_it_back():
    graph = unit_graph()
    assert graph["cli"] >= {"build", "eval"} and "data" in graph["methods"]  # the scan sees imports
    assert cycles(graph) == [], {unit: sorted(uses) for unit, uses in graph.items()}


def test_the_contracts_import_nothing_else_from_ocl():
    assert "contracts" not in unit_graph() or not unit_graph()["contracts"]


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
