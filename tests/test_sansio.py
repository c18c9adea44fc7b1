"""The protocol core is sans-IO: no module in wgpy/protocol/ touches clocks, sockets, files,
threads, processes or the system's randomness. Time and randomness come in as arguments."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import wgpy.protocol

PROTOCOL_DIR = Path(wgpy.protocol.__file__).parent
MODULES = sorted(PROTOCOL_DIR.glob("*.py"))

FORBIDDEN = frozenset(
    {
        "asyncio",
        "socket",
        "time",
        "os",
        "random",
        "select",
        "selectors",
        "threading",
        "subprocess",
    }
)
FORBIDDEN_CALLS = frozenset({"open", "__import__"})


def _top(name: str) -> str:
    return name.split(".", 1)[0]


def violations(path: Path) -> list[str]:
    """Each forbidden import or call in ``path``, as "file:line: what"."""
    where = path.relative_to(PROTOCOL_DIR.parent.parent).as_posix()
    return violations_in_source(path.read_text(encoding="utf-8"), where)


def violations_in_source(source: str, where: str) -> list[str]:
    tree = ast.parse(source, filename=where)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _top(alias.name) in FORBIDDEN:
                    found.append(f"{where}:{node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module and _top(node.module) in FORBIDDEN:
                names = ", ".join(a.name for a in node.names)
                found.append(f"{where}:{node.lineno}: from {node.module} import {names}")
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in FORBIDDEN_CALLS:
                found.append(f"{where}:{node.lineno}: calls {func.id}()")
            elif isinstance(func, ast.Attribute) and func.attr == "open":
                found.append(f"{where}:{node.lineno}: calls {ast.unparse(func)}()")
            elif (
                isinstance(func, ast.Attribute)
                and func.attr == "import_module"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
                and _top(node.args[0].value) in FORBIDDEN
            ):
                found.append(f"{where}:{node.lineno}: imports {node.args[0].value} dynamically")
    return found


def test_the_protocol_package_is_where_we_look() -> None:
    names = {p.name for p in MODULES}
    assert {"__init__.py", "device.py", "messages.py", "cookie.py", "ratelimiter.py"} <= names


@pytest.mark.parametrize("path", MODULES, ids=[p.name for p in MODULES])
def test_module_is_sans_io(path: Path) -> None:
    found = violations(path)
    assert not found, "the sans-IO core must not do I/O:\n  " + "\n  ".join(found)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import time", "import time"),
        ("import os.path", "import os.path"),
        ("import json, socket as s", "import socket"),
        ("from asyncio import sleep", "from asyncio import sleep"),
        (
            "from concurrent import futures\nfrom threading import Lock",
            "from threading import Lock",
        ),
        ("def f():\n    import random\n", "import random"),
        ("with open('x') as f:\n    pass", "calls open()"),
        ("io.open('x')", "calls io.open()"),
        ("__import__('subprocess')", "calls __import__()"),
        ("importlib.import_module('selectors')", "imports selectors dynamically"),
    ],
)
def test_the_scanner_finds_violations(source: str, expected: str) -> None:
    found = violations_in_source(source, "wgpy/protocol/example.py")
    assert len(found) == 1, found
    assert found[0].startswith("wgpy/protocol/example.py:")
    assert found[0].endswith(expected), found


@pytest.mark.parametrize(
    "source",
    [
        "from . import time_helpers",
        "from .timers import Timer",
        "import hashlib",
        "import timeit_is_not_time",
        "from collections import Counter",
        "timeout = 3",
        "self.open = True",
    ],
)
def test_the_scanner_allows_the_rest(source: str) -> None:
    assert violations_in_source(source, "wgpy/protocol/example.py") == []
