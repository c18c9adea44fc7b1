"""Callers change a core peer through the device (``set_inbound_filter``, ``set_allowed_ips``,
``add_allowed_ip``, ...), never by writing its filter or the device's allowed-IPs table: the
device keeps its table, timers and events consistent only for changes it sees."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import wgpy

PACKAGE = Path(wgpy.__file__).parent
CALLERS = sorted(p for p in PACKAGE.rglob("*.py") if "protocol" not in p.parts)
TABLE_WRITES = frozenset({"insert", "remove", "remove_value"})


def writes(source: str, where: str) -> list[str]:
    """Each direct write to a peer's inbound filter or to ``allowed_ips`` in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source, filename=where)):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        for target in targets:
            if isinstance(target, ast.Attribute) and target.attr == "inbound_filter":
                found.append(f"{where}:{node.lineno}: {ast.unparse(target)} = ...")
        if (  # a call, or a bound method kept for later
            isinstance(node, ast.Attribute)
            and node.attr in TABLE_WRITES
            and isinstance(node.value, ast.Attribute)
            and node.value.attr == "allowed_ips"
        ):
            found.append(f"{where}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_the_callers_are_where_we_look() -> None:
    names = {p.relative_to(PACKAGE).as_posix() for p in CALLERS}
    assert "api.py" in names and any(n.startswith("mesh/client/") for n in names)


@pytest.mark.parametrize("path", CALLERS, ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_no_caller_writes_core_state(path: Path) -> None:
    assert writes(path.read_text(encoding="utf-8"), path.name) == []


@pytest.mark.parametrize(
    "source",
    [
        "peer.inbound_filter = None\n",
        "wg_peer.inbound_filter = ReplyOnlyFilter()\n",
        "device.allowed_ips.insert('10.0.0.0/8', peer)\n",
        "self.device.allowed_ips.remove_value(self.peer)\n",
        "d.allowed_ips.remove(n, p)\n",
        "insert = self.device.allowed_ips.insert\n",
    ],
)
def test_the_scanner_finds_writes(source: str) -> None:
    assert len(writes(source, "x.py")) == 1


@pytest.mark.parametrize(
    "source",
    [
        "device.set_inbound_filter(peer, None)\n",
        "if peer.inbound_filter is None:\n    pass\n",
        "device.allowed_ips.prefixes(peer)\n",
        "peer.allowed_ips.append(network)\n",  # a configuration's list, not the table
        "allowed_ips.insert(0, x)\n",
    ],
)
def test_the_scanner_allows_reads_and_other_lists(source: str) -> None:
    assert writes(source, "x.py") == []
