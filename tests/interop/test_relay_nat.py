"""The relay in the NAT lab: where no direct path works, traffic goes through coturn.

    node a --lan-- router A --+                      +-- relay (coturn: UDP/TCP 3478, TLS 443)
                              +-- internet bridge ---+
    node b --lan-- router B --+

Each node runs tests/interop/relay_node.py (a real interface and TUN, ICE on its WireGuard
port, a relay allocation; no coordination server: the nodes' descriptions go through files).
Behind two hard NATs (a new port per destination) no direct pair works: both end relayed and
ping both ways. A node whose network drops all outbound UDP allocates over TCP or TLS. Two
nodes on a direct path fall back to the relay within 5 s when the direct path is cut, and
go back to direct once it works again.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from .nat_lab import Kind, NatLab, Node
from .netns import PYTHON, Lab, Process, wait_for

pytestmark = pytest.mark.root

DRIVER = Path(__file__).resolve().parent / "relay_node.py"
INNER = ("10.79.0.1", "10.79.0.2")
PORTS = (41651, 41652)


def start(lab: Lab, node: Node, me: str, peer: str, i: int, config: dict[str, Any]) -> Process:
    path = lab.workdir / f"{me}.config.json"
    path.write_text(json.dumps(config))
    args = [f"rly{me}", str(PORTS[i]), INNER[i], str(lab.workdir), me, peer, str(path)]
    return node.ns.spawn([PYTHON, str(DRIVER), *args], log=f"relay-{me}")


def status(lab: Lab, me: str) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads((lab.workdir / f"{me}.status.json").read_text())
    except (OSError, ValueError):
        return None
    return data


def pair(
    lab: Lab,
    kinds: tuple[Kind, Kind],
    *,
    urls: tuple[str | None, str | None] = (None, None),
    retry: float = 30.0,
) -> tuple[NatLab, list[Node], list[Process]]:
    """Two nodes behind routers of ``kinds``, each with the relay (``urls``: the kind of TURN
    URL given, None: all three), started and with a path both ways."""
    nat = NatLab(lab, ipv6=False)
    relay = nat.coturn()
    nodes = [nat.node("a", nat.router(kinds[0])), nat.node("b", nat.router(kinds[1]))]
    procs = []
    for i, (me, peer) in enumerate((("a", "b"), ("b", "a"))):
        username, password = relay.credentials(me)
        chosen = [u for u in relay.urls() if urls[i] is None or _kind(u) == urls[i]]
        config = {
            "turn": {
                "urls": chosen,
                "username": username,
                "password": password,
                "expires": int(time.time()) + 3600,
            },
            "ca_file": str(relay.ca_file),
            "host": nodes[i].ipv4,
            # STUN through a network that drops UDP only waits for its timeouts
            "stun": relay.stun()[:1] if kinds[i] != "udp_blocked" else [],
            "retry": retry,
        }
        procs.append(start(lab, nodes[i], me, peer, i, config))
    for i, me in enumerate("ab"):
        wait_for(
            lambda me=me: (lab.workdir / f"{me}.json").exists(),  # type: ignore[misc]
            timeout=20,
            what=f"node {me} to allocate and start ({lab.logs()})",
        )
        nodes[i].ns.ip("addr", "add", f"{INNER[i]}/24", "dev", f"rly{me}")
        nodes[i].ns.ip("link", "set", f"rly{me}", "up")
    wait_for(
        lambda: all((s := status(lab, me)) is not None and s["kind"] != "none" for me in "ab"),
        timeout=10,
        what=f"a path both ways ({lab.logs()})",
    )
    return nat, nodes, procs


def _kind(url: str) -> str:
    return "tls" if url.startswith("turns:") else url.rsplit("=", 1)[-1]


def test_two_nodes_behind_hard_nats_end_relayed_and_ping_both_ways(lab: Lab) -> None:
    _, nodes, procs = pair(lab, ("hard", "hard"))
    assert nodes[0].ns.ping(INNER[1], count=3, interval=0.2) == 3
    assert nodes[1].ns.ping(INNER[0], count=3, interval=0.2) == 3
    for me in "ab":
        s = status(lab, me)
        assert s is not None and s["kind"] == "relay", s
        assert s["relay_sent"] > 0 or s["relay_received"] > 0
    for proc in procs:
        assert proc.alive


@pytest.mark.parametrize("given", [None, "tls"])
def test_a_node_whose_network_blocks_udp_is_relayed_over_tcp_or_tls(
    lab: Lab, given: str | None
) -> None:
    """All three URLs: UDP gets no answer, TCP is chosen; TLS only: TLS (port 443)."""
    _, nodes, _ = pair(lab, ("udp_blocked", "easy"), urls=(given, None))
    assert nodes[0].ns.ping(INNER[1], count=3, interval=0.2) == 3
    assert nodes[1].ns.ping(INNER[0], count=3, interval=0.2) == 3
    a = status(lab, "a")
    assert a is not None and a["kind"] == "relay" and a["through_relay"], a
    assert a["relay_transport"] == (given or "tcp")


def test_a_direct_path_cut_falls_back_to_the_relay_within_5_seconds(lab: Lab) -> None:
    nat, nodes, _ = pair(lab, ("easy", "easy"), retry=3.0)
    wait_for(
        lambda: all((s := status(lab, me)) is not None and s["kind"] == "direct" for me in "ab"),
        timeout=10,
        what=f"a direct path both ways ({lab.logs()})",
    )
    assert nodes[0].ns.ping(INNER[1], count=2, interval=0.2) == 2
    # cut: the internet drops UDP between the two routers (the relay still reaches both)
    a_wan, b_wan = nodes[0].router.wan4, nodes[1].router.wan4
    rule = (
        "table bridge cut {\n chain forward {\n  type filter hook forward priority 0;\n"
        f"  ip saddr {a_wan} ip daddr {b_wan} drop\n  ip saddr {b_wan} ip daddr {a_wan} drop\n"
        " }\n}\n"
    )
    pinger = nodes[0].ns.spawn(["ping", "-n", "-i", "0.2", "-W", "1", INNER[1]], log="ping")
    time.sleep(0.5)
    nat.internet.run(["nft", "-f", "-"], input=rule)
    cut = time.monotonic()
    wait_for(
        lambda: all((s := status(lab, me)) is not None and s["kind"] == "relay" for me in "ab"),
        timeout=8,
        what=f"both sides on the relay ({lab.logs()})",
    )
    fell_back = time.monotonic() - cut
    assert fell_back < 5, fell_back
    assert nodes[0].ns.ping(INNER[1], count=3, interval=0.2) == 3
    assert nodes[1].ns.ping(INNER[0], count=3, interval=0.2) == 3
    pinger.stop()
    # the direct path works again: a retry round (every 3 s here, 30 s by default) finds it,
    # and the move from the relay to it loses nothing (pings all through it)
    nat.internet.run(["nft", "delete table bridge cut"])
    assert nodes[0].ns.ping(INNER[1], count=30, interval=0.2) == 30
    wait_for(
        lambda: all((s := status(lab, me)) is not None and s["kind"] == "direct" for me in "ab"),
        timeout=5,
        what=f"both sides direct again ({lab.logs()})",
    )
