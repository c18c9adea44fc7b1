"""The import graph of wgpy's modules: no cycles, and the command line on top.

By default only the imports a module makes when it is loaded count (those at its top level);
one inside a function runs later, as ``wgpy.cli.main`` loads its command table. The command
line is held to more: no cycle even through such late imports. A package's ``__init__`` that
a submodule's import loads first is not an edge.
"""

from __future__ import annotations

import ast
from pathlib import Path

import wgpy

ROOT = Path(wgpy.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """The import statements that run when the module is loaded (also inside top-level
    ``if`` and ``try``), but not those under ``if TYPE_CHECKING``."""
    found: list[ast.Import | ast.ImportFrom] = []
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.If):
            if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                pending += node.body + node.orelse
        elif isinstance(node, ast.Try):
            pending += node.body + node.orelse + node.finalbody
            for handler in node.handlers:
                pending += handler.body
    return found


def import_graph(*, late: bool = False) -> dict[str, set[str]]:
    """Each wgpy module and the wgpy modules it imports when it is loaded (with ``late``,
    also those it imports in a function)."""
    paths = {module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()
        tree = ast.parse(path.read_text(), str(path))
        statements = (
            [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]
            if late
            else top_level_imports(tree)
        )
        for node in statements:
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = package
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                if node.level:
                    base = f"{base}.{node.module}" if node.module else base
                else:
                    base = node.module or ""
                # `from P import m` imports the module P.m when there is one
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in paths else base
                    for alias in node.names
                ]
            edges.update(t for t in targets if t in paths and t != name)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]], within: str = "") -> list[str] | None:
    """One cycle among the modules whose names start with ``within``, or None."""
    nodes = {n for n in graph if n.startswith(within)}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node] & nodes):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(nodes):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def test_find_cycle_finds_one_and_only_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"x.a": {"y.b"}, "y.b": {"x.a"}}, within="x.") is None


def test_the_graph_sees_relative_and_absolute_imports() -> None:
    graph = import_graph()
    assert "wgpy.cli.quick" in graph["wgpy.cli.up"]  # from . import mesh, quick
    assert "wgpy.mesh.client.daemon" in graph["wgpy.cli.mesh"]  # from wgpy.mesh.client import
    assert "wgpy.cli.environment" in graph["wgpy.cli.quick"]  # from .environment import ...
    assert "wgpy.cli.commands" not in graph["wgpy.cli"]  # imported in main and run
    assert "wgpy.cli.commands" in import_graph(late=True)["wgpy.cli"]


def test_the_command_line_has_no_import_cycle() -> None:
    """``commands -> up -> quick, mesh -> ...``: nothing leads back to the command table,
    not even through an import inside a function."""
    assert find_cycle(import_graph(late=True), within="wgpy.cli") is None


def test_the_host_package_has_no_import_cycle() -> None:
    assert find_cycle(import_graph(), within="wgpy.host") is None


def test_only_the_command_line_imports_the_command_line() -> None:
    graph = import_graph()
    outside = {
        name: sorted(t for t in targets if t.startswith("wgpy.cli"))
        for name, targets in graph.items()
        if not name.startswith("wgpy.cli") and name != "wgpy.__main__"
    }
    assert {name: targets for name, targets in outside.items() if targets} == {}


def test_the_host_package_imports_nothing_of_the_mesh_device_or_command_line() -> None:
    """wgpy.host is below the mesh client and wg-quick, beside the protocol: both use it."""
    graph = import_graph()
    for name, targets in graph.items():
        if name.startswith("wgpy.host"):
            above = [t for t in targets if t.startswith(("wgpy.cli", "wgpy.mesh", "wgpy.device"))]
            assert above == [], name
