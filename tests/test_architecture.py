"""The layers of novamig and the one direction of imports (docs/architecture.md).

A module may import a module of another novamig package only when that package ranks lower in
`RANKS`; and no two modules may import each other, directly or around a loop. Both rules are
checked on the source text (ast), so a back-edge fails here before it can grow into a cycle that
only shows at import time.

For layering every import counts: top-level, inside a function, and under ``TYPE_CHECKING`` (a
type-only back-edge is still an upper layer's concept leaking into a lower one). For cycles only
the imports that run count (``TYPE_CHECKING`` blocks excluded), since a type-only loop never
executes.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parent.parent / "novamig"

# Higher imports lower, never the reverse. Packages of equal rank must not import each other.
RANKS: dict[str, int] = {
    "": 0,  # novamig/__init__.py: the version
    "stats": 0,
    "exitcodes": 0,
    "process_state": 0,
    "scenario": 1,
    "results": 2,
    "guest": 3,
    "workload": 3,
    "hypervisor": 4,
    "cloud": 5,
    "measure": 6,
    "embedded": 7,
    "report": 8,
    "runner": 9,
    "pytest_plugin": 10,
    "tempest_plugin": 10,
    "cli": 11,
    "__main__": 12,
}


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int
    type_only: bool


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE_ROOT.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST, type_only: bool) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child, type_only
        elif isinstance(child, ast.If) and _is_type_checking(child):
            for stmt in child.body:
                yield from _walk(ast.Module(body=[stmt], type_ignores=[]), True)
            for stmt in child.orelse:
                yield from _walk(ast.Module(body=[stmt], type_ignores=[]), type_only)
        else:
            yield from _walk(child, type_only)


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    """novamig modules that `name` imports; `from pkg import sub` counts as importing pkg.sub."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[Import] = []
    for node, type_only in _walk(ast.parse(path.read_text(), str(path)), False):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            targets = [source] + [f"{source}.{alias.name}" for alias in node.names]
        for target in targets:
            # `import novamig.a.b` runs novamig.a's __init__ too, but that is novamig.a's own edge.
            if target in modules and target != name:
                found.append(Import(name, target, node.lineno, type_only))
    return found


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


@pytest.fixture(scope="module")
def graph() -> list[Import]:
    modules = all_modules()
    return [imp for name, path in modules.items() for imp in imports_of(name, path, modules)]


def test_every_package_has_a_rank() -> None:
    unranked = sorted({package_of(m) for m in all_modules()} - RANKS.keys())
    assert not unranked, (
        f"packages with no place in the layers (add them to RANKS and docs/architecture.md): {unranked}"
    )


def test_imports_point_down_the_layers(graph: list[Import]) -> None:
    back_edges = [
        f"{imp.importer}:{imp.line} imports {imp.imported}"
        + (" (under TYPE_CHECKING)" if imp.type_only else "")
        + f" — {package_of(imp.importer)!r} (rank {RANKS.get(package_of(imp.importer))}) may not import"
        f" {package_of(imp.imported)!r} (rank {RANKS.get(package_of(imp.imported))})"
        for imp in graph
        if package_of(imp.importer) != package_of(imp.imported)
        and RANKS.get(package_of(imp.importer), -1) <= RANKS.get(package_of(imp.imported), -1)
    ]
    assert not back_edges, "imports against the layers:\n" + "\n".join(back_edges)


def strongly_connected(nodes: list[str], edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (no recursion limit on a deep package)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    for root in nodes:
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            advanced = False
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = counter
                    counter += 1
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(edges.get(succ, ())))))
                    advanced = True
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return components


def test_no_import_cycles(graph: list[Import]) -> None:
    edges: dict[str, set[str]] = {}
    for imp in graph:
        if not imp.type_only:
            edges.setdefault(imp.importer, set()).add(imp.imported)
    cycles = strongly_connected(sorted(all_modules()), edges)
    assert not cycles, "modules that import each other (around a loop):\n" + "\n".join(
        " ↔ ".join(c) for c in cycles
    )


def test_the_checker_sees_a_back_edge_and_a_cycle(tmp_path: Path) -> None:
    """The two checks above can fail: a planted back-edge and a planted loop are found."""
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert strongly_connected(["a", "b", "c", "d"], edges) == [["a", "b", "c"]]
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "import novamig.runner\n"
        "if TYPE_CHECKING:\n    from novamig.cli import main\n"
        "def f():\n    from novamig import results\n"
    )
    modules = {"novamig.runner": source, "novamig.cli": source, "novamig.results": source}
    found = {(i.imported, i.type_only) for i in imports_of("novamig.measure.m", source, modules)}
    assert found == {("novamig.runner", False), ("novamig.cli", True), ("novamig.results", False)}
