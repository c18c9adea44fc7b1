"""A mesh peer cannot steer another peer's traffic with ICE checks in its name (issue 11,
section 8), on real sockets and TUNs in namespaces, with no coordination server.

    ns a: node A (ice_node.py, peers B and M) --veth-- ns b: node B (ice_node.py, peer A)
                                                         and M (ice_attacker.py, 2nd address)

M is a real peer of A (its key and candidate are in A's map) and sees B's ufrag and
candidates, as its own map would show them. While A and B run their checks, M floods A with
checks in B's name from its own address (USE-CANDIDATE, the controlling role's largest
tie-breaker, the largest priority) made with the best key it has, and answers A's checks to
its address in B's name. With one published ICE password per node (before per-pair keys)
those checks authenticated: A took M's address as B's path. Now each pair's key is derived by
the two nodes alone: A drops every forged check (counted as ``bad_integrity``), answers none,
and its path to B stays B's address; pings flow both ways.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from .netns import PYTHON, Lab, wait_for

pytestmark = pytest.mark.root

HERE = Path(__file__).resolve().parent
NODE = HERE / "ice_node.py"
ATTACKER = HERE / "ice_attacker.py"
INNER = {"a": "10.77.0.1", "b": "10.77.0.2", "m": "10.77.0.3"}
PORTS = {"a": 41651, "b": 41652}
ATTACK_SECONDS = 4.0  # from when A's and B's files appear


def read(lab: Lab, name: str) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads((lab.workdir / name).read_text())
    except (OSError, ValueError):
        return None
    return data


def test_a_peer_cannot_steer_another_peer_s_path_with_forged_checks(lab: Lab) -> None:
    ns_a, ns_b = lab.namespace("iaa"), lab.namespace("iab")
    link = lab.veth(ns_a, ns_b)
    m_host = link.b4.rsplit(".", 1)[0] + ".3"  # M's own address, beside B's
    ns_b.ip("addr", "add", f"{m_host}/24", "dev", link.b_dev)
    work = str(lab.workdir)
    attacker = ns_b.spawn(
        [PYTHON, str(ATTACKER), m_host, work, "m", "a", "b", str(ATTACK_SECONDS), INNER["m"]],
        log="ice-m",
    )
    wait_for(lambda: (lab.workdir / "m.json").exists(), timeout=15, what="M to start")
    nodes = {}
    for me, ns, host, peers in (("a", ns_a, link.a4, "b,m"), ("b", ns_b, link.b4, "a")):
        args = [f"ice{me}", str(PORTS[me]), host, INNER[me], work, me, peers, "2"]
        nodes[me] = ns.spawn([PYTHON, str(NODE), *args], log=f"ice-{me}")
    for me, ns in (("a", ns_a), ("b", ns_b)):
        wait_for(
            lambda me=me: (lab.workdir / f"{me}.json").exists(),  # type: ignore[misc]
            timeout=15,
            what=f"node {me} to start ({lab.logs()})",
        )
        ns.ip("addr", "add", f"{INNER[me]}/24", "dev", f"ice{me}")
        ns.ip("link", "set", f"ice{me}", "up")

    def a_status() -> dict[str, Any]:
        return read(lab, "a.status.json") or {}

    # the attack runs while A and B check, and goes on after they found each other
    wait_for(
        lambda: (
            a_status().get("kind") == "direct"
            and (read(lab, "b.status.json") or {}).get("kind") == "direct"
        ),
        timeout=10,
        what=f"a direct path both ways ({lab.logs()})",
    )
    # while the attack goes on: pings both ways, and A's path to B watched every 50 ms
    # (before per-pair keys, A took M's address as B's again and again until the attack
    # stopped, then found B again)
    assert ns_a.ping(INNER["b"], count=3, interval=0.2) == 3
    assert ns_b.ping(INNER["a"], count=3, interval=0.2) == 3
    seen: set[tuple[str, int]] = set()

    def attack_over() -> bool:
        endpoint = a_status().get("device_endpoint")
        if endpoint is not None:
            seen.add((endpoint[0], endpoint[1]))
        return read(lab, "m.status.json") is not None

    wait_for(attack_over, timeout=15, interval=0.05, what="the attack to end")
    assert seen == {(link.b4, PORTS["b"])}, (
        f"A's path to B went to {seen - {(link.b4, PORTS['b'])}}"
    )
    m = read(lab, "m.status.json")
    assert m is not None and m["sent"] > 100, m
    a = a_status()
    # A's path to B is B's address, never M's, after the whole attack
    assert a["kind"] == "direct" and a["device_endpoint"] == [link.b4, PORTS["b"]], a
    assert a["endpoint"] == f"{link.b4}:{PORTS['b']}", a
    assert m["answered"] == 0  # A answered none of the forged checks
    assert a["drops"].get("bad_integrity", 0) >= m["sent"] // 2, (a["drops"], m)
    assert ns_a.ping(INNER["b"], count=3, interval=0.2) == 3
    assert ns_b.ping(INNER["a"], count=3, interval=0.2) == 3
    for proc in (*nodes.values(), attacker):
        assert proc.alive or proc.returncode == 0
