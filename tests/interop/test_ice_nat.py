"""ICE punches through a NAT on the WireGuard port, with no coordination server.

    inside (A) --lan-- router: masquerade --wan-- outside (B)

Each node knows only the other's host candidate: A's (its LAN address) is unreachable from
B, which has no route to the LAN. A's checks reach B through the NAT; B learns A's mapped
address from them (a peer-reflexive candidate), checks back through the mapping A's checks
opened, and both end on a direct path: B's endpoint for A is the router's mapped address,
which no one told it. Then WireGuard pings both ways over the path ICE chose.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from .netns import PYTHON, Lab, Namespace, NatTopology, Process, make_nat, wait_for

pytestmark = pytest.mark.root

DRIVER = Path(__file__).resolve().parent / "ice_node.py"
INNER = ("10.78.0.1", "10.78.0.2")
PORTS = (41641, 41642)


def start(
    lab: Lab, ns: Namespace, me: str, peer: str, port: int, host: str, inner: str, keepalive: float
) -> Process:
    args = [f"ice{me}", str(port), host, inner, str(lab.workdir), me, peer, str(keepalive)]
    return ns.spawn([PYTHON, str(DRIVER), *args], log=f"ice-{me}")


def status(lab: Lab, me: str) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads((lab.workdir / f"{me}.status.json").read_text())
    except (OSError, ValueError):
        return None
    return data


def punch(lab: Lab, nat: NatTopology, keepalive: float = 25.0) -> list[Process]:
    """Both nodes started and direct (see the module docstring)."""
    sides = (("a", "b", nat.inside, nat.lan.a4), ("b", "a", nat.outside, nat.wan.b4))
    procs = []
    for i, (me, peer, ns, host) in enumerate(sides):
        procs.append(start(lab, ns, me, peer, PORTS[i], host, INNER[i], keepalive))
    for i, (me, _, ns, _) in enumerate(sides):
        wait_for(
            lambda me=me: (lab.workdir / f"{me}.json").exists(),  # type: ignore[misc]
            timeout=15,
            what=f"node {me} to start ({lab.logs()})",
        )
        ns.ip("addr", "add", f"{INNER[i]}/24", "dev", f"ice{me}")
        ns.ip("link", "set", f"ice{me}", "up")

    def both_direct() -> bool:
        states = [status(lab, "a"), status(lab, "b")]
        return all(s is not None and s["kind"] == "direct" for s in states)

    wait_for(both_direct, timeout=10, what=f"a direct path both ways ({lab.logs()})")
    return procs


def test_ice_through_a_nat_ends_direct_and_pings_both_ways(lab: Lab) -> None:
    nat = make_nat(lab, udp_timeout=30)
    procs = punch(lab, nat)
    a, b = status(lab, "a"), status(lab, "b")
    assert a is not None and b is not None
    assert a["device_endpoint"] == [nat.wan.b4, PORTS[1]] and not a["roaming"]
    # B sends to the router's mapping of A's socket: learned from A's checks
    assert b["device_endpoint"][0] == nat.wan.a4 and not b["roaming"]
    assert nat.outside.ping(INNER[0], count=3, interval=0.2) == 3
    assert nat.inside.ping(INNER[1], count=3, interval=0.2) == 3
    for proc in procs:
        assert proc.alive


@pytest.mark.slow
def test_an_idle_path_stays_reachable_from_outside_through_a_5_second_mapping(lab: Lab) -> None:
    """The router forgets a UDP mapping 5 s after its last packet; checks every 2 s on the
    selected path keep it: after 8 s without any data, the outside node still reaches the
    inside one, whose NAT allows nothing unsolicited."""
    nat = make_nat(lab, udp_timeout=5)
    punch(lab, nat, keepalive=2.0)
    assert nat.inside.ping(INNER[1], count=1) == 1  # a WireGuard session
    time.sleep(8)
    assert nat.outside.ping(INNER[0], count=3, interval=0.2) == 3
    b = status(lab, "b")
    assert b is not None and b["kind"] == "direct"
