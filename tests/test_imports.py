"""The import graph of wgpy/ has no cycles between modules (in the packages listed below).

The graph is read from the source with ``ast``: module-level imports, ``from . import x``
included (an edge to the module ``x`` when it is one, else to the package), those under
``if TYPE_CHECKING:`` left out (they never run). Imports inside functions run later, when
the function is called, so they are kept apart: :data:`CHECK_DEFERRED` says whether they
count too (a deferred import must not be the way around the rule). The implicit import of a
parent package when a submodule is imported is not an edge.

:data:`CHECKED` names the packages checked for cycles (``"wgpy"``: everything); :data:`MAY_IMPORT`
is the layering: which package may import which.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "wgpy"

CHECKED = ("wgpy",)
"""Packages (or modules) whose modules may be in no import cycle."""
CHECK_DEFERRED = True
"""Whether imports inside functions count as edges for the packages in CHECKED."""


@dataclass
class Graph:
    modules: set[str] = field(default_factory=set)
    edges: dict[str, set[str]] = field(default_factory=dict)  # module-level imports
    deferred: dict[str, set[str]] = field(default_factory=dict)  # imports inside functions


def module_name(root: Path, path: Path) -> str:
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(body: list[ast.stmt], deferred: bool = False) -> Iterator[tuple[ast.stmt, bool]]:
    """Every import statement in ``body`` with whether it runs only when a function is
    called; bodies under ``if TYPE_CHECKING:`` are skipped (their ``else`` is not)."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, deferred
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield from _imports(node.body, True)
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _imports(node.orelse, deferred)
        else:
            for name in ("body", "orelse", "finalbody"):
                yield from _imports(getattr(node, name, []), deferred)
            for handler in getattr(node, "handlers", []):
                yield from _imports(handler.body, deferred)
            for case in getattr(node, "cases", []):
                yield from _imports(case.body, deferred)


def _targets(node: ast.stmt, module: str, is_package: bool, modules: set[str]) -> set[str]:
    """The modules of the graph that an import statement names."""
    found: set[str] = set()

    def known(name: str) -> str | None:
        while name and name not in modules:  # `import a.b.c` of a non-module: its package
            name = name.rpartition(".")[0]
        return name or None

    if isinstance(node, ast.Import):
        for alias in node.names:
            if (target := known(alias.name)) is not None:
                found.add(target)
        return found
    assert isinstance(node, ast.ImportFrom)
    if node.level:
        package = module if is_package else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{node.module}" if node.module else package
    else:
        base = node.module or ""
    for alias in node.names:
        if f"{base}.{alias.name}" in modules:  # from package import submodule
            found.add(f"{base}.{alias.name}")
        elif (target := known(base)) is not None:
            found.add(target)
    return found


def build_graph(root: Path) -> Graph:
    """The import graph of the package at ``root`` (its own modules only)."""
    files = {module_name(root, p): p for p in sorted(root.rglob("*.py"))}
    graph = Graph(modules=set(files))
    for module, path in files.items():
        tree = ast.parse(path.read_text(), str(path))
        is_package = path.name == "__init__.py"
        edges = graph.edges.setdefault(module, set())
        deferred = graph.deferred.setdefault(module, set())
        for node, in_function in _imports(tree.body):
            targets = _targets(node, module, is_package, graph.modules) - {module}
            (deferred if in_function else edges).update(targets)
    return graph


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(start: str) -> None:  # iterative: no recursion limit on a deep graph
        work = [(start, iter(sorted(edges.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))

    for module in sorted(edges):
        if module not in index:
            visit(module)
    return sorted(found)


def _in(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def _merged(graph: Graph) -> dict[str, set[str]]:
    return {m: graph.edges.get(m, set()) | graph.deferred.get(m, set()) for m in graph.modules}


# ------------------------------------------------------------------------------ wgpy


def test_no_import_cycle_in_the_checked_packages() -> None:
    graph = build_graph(ROOT)
    for package in CHECKED:
        assert any(_in(m, (package,)) for m in graph.modules), f"{package} is not in wgpy/"
    bad = [c for c in cycles(graph.edges) if any(_in(m, CHECKED) for m in c)]
    assert bad == [], f"import cycles: {bad}"


@pytest.mark.skipif(not CHECK_DEFERRED, reason="imports inside functions are not checked")
def test_no_deferred_import_closes_a_cycle_in_the_checked_packages() -> None:
    graph = build_graph(ROOT)
    bad = [c for c in cycles(_merged(graph)) if any(_in(m, CHECKED) for m in c)]
    assert bad == [], f"import cycles through imports inside functions: {bad}"


# Which packages each package of wgpy may import (imports inside functions included): the
# layering docs/architecture.md draws. Lower layers never reach up: the sans-IO core and the
# leaf modules import nothing of wgpy's shell, only the command line imports the command line.
MAY_IMPORT: dict[str, set[str]] = {
    "wgpy.endpoint": set(),
    "wgpy.candidates": set(),
    "wgpy.keys": set(),
    "wgpy.machinecert": set(),  # sans-IO machine certificates: admin CLI, node and server
    "wgpy.log": set(),
    "wgpy.metrics": set(),  # the /metrics listener: node and server
    "wgpy.dns": {"wgpy.log"},  # names and the resolver: node and server
    "wgpy.protocol": set(),
    "wgpy.config": {"wgpy.endpoint", "wgpy.keys"},
    "wgpy.host": {"wgpy.config"},
    "wgpy.device": {"wgpy.endpoint", "wgpy.log", "wgpy.protocol"},
    "wgpy.uapi": {"wgpy.endpoint", "wgpy.keys", "wgpy.log", "wgpy.protocol"},
    "wgpy.mesh.server": {
        *("wgpy.candidates", "wgpy.endpoint", "wgpy.keys", "wgpy.log", "wgpy.machinecert"),
        *("wgpy.dns", "wgpy.metrics"),
    },
    "wgpy.nat": {"wgpy.candidates", "wgpy.device", "wgpy.endpoint", "wgpy.log", "wgpy.protocol"},
    "wgpy.mesh.client": {
        *("wgpy.candidates", "wgpy.device", "wgpy.endpoint", "wgpy.host", "wgpy.keys"),
        *("wgpy.log", "wgpy.nat", "wgpy.protocol", "wgpy.uapi", "wgpy.machinecert"),
        *("wgpy.dns", "wgpy.metrics"),
    },
    "wgpy.api": {"wgpy.config", "wgpy.device", "wgpy.endpoint", "wgpy.keys", "wgpy.protocol"}
    | {"wgpy.uapi"},
    "wgpy.cli": {"*"},
    "wgpy.__main__": {"wgpy.cli"},
    "wgpy": {"wgpy.api", "wgpy.keys", "wgpy.protocol"},
}


def _layer(module: str) -> str:
    """The entry of MAY_IMPORT a module belongs to (the longest that names it)."""
    owners = [p for p in MAY_IMPORT if _in(module, (p,)) and p != "wgpy"]
    return max(owners, key=len) if owners else "wgpy"


def test_every_package_imports_only_the_layers_below_it() -> None:
    graph = build_graph(ROOT)
    bad = []
    for module, targets in sorted(_merged(graph).items()):
        layer = _layer(module)
        allowed = MAY_IMPORT[layer]
        for target in sorted(targets):
            other = _layer(target)
            if other != layer and "*" not in allowed and other not in allowed:
                bad.append(f"{module} -> {target}")
    assert bad == [], f"imports against the layering: {bad}"


def test_only_the_command_line_imports_the_command_line() -> None:
    graph = build_graph(ROOT)
    outside = sorted(
        f"{m} -> {t}"
        for m, targets in _merged(graph).items()
        if _layer(m) not in ("wgpy.cli", "wgpy.__main__")
        for t in targets
        if _layer(t) == "wgpy.cli"
    )
    assert outside == []


# ------------------------------------------------------------------------------ the checker


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pkg"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_the_checker_finds_a_cycle_through_relative_and_package_imports(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "from . import b\n",
            "b.py": "from .sub.c import thing\n",
            "sub/__init__.py": "",
            "sub/c.py": "import pkg.a\nthing = 1\n",
            "d.py": "from .a import x\nimport os\n",
        },
    )
    graph = build_graph(root)
    assert graph.edges["pkg.a"] == {"pkg.b"}
    assert graph.edges["pkg.d"] == {"pkg.a"}
    assert cycles(graph.edges) == [["pkg.a", "pkg.b", "pkg.sub.c"]]


def test_the_checker_leaves_out_type_checking_and_keeps_functions_apart(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import b\n",
            "b.py": "def f():\n    from . import a\n\nfrom .. import pkg\n",
            "c.py": "try:\n    from . import d\nexcept ImportError:\n    pass\n",
            "d.py": "class D:\n    from .c import x\n",
        },
    )
    graph = build_graph(root)
    assert graph.edges["pkg.a"] == set()
    assert graph.edges["pkg.b"] == set()  # `from .. import pkg` is beyond the root: no edge
    assert graph.deferred["pkg.b"] == {"pkg.a"}
    assert cycles(graph.edges) == [["pkg.c", "pkg.d"]]  # try bodies and class bodies run
    assert cycles(_merged(graph)) == [["pkg.c", "pkg.d"]]


def test_the_checker_reads_a_deferred_cycle(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {"__init__.py": "", "a.py": "from . import b\n", "b.py": "def f():\n    from . import a\n"},
    )
    graph = build_graph(root)
    assert cycles(graph.edges) == []
    assert cycles(_merged(graph)) == [["pkg.a", "pkg.b"]]
