"""Two real mesh nodes (`wgpy up`, daemons and TUNs) behind hard NATs end relayed through
coturn and ping both ways: the node allocates on the relay the coordination server names,
reports the relayed candidate with the others, and ICE selects it where nothing direct works.

    node a --lan-- hard NAT --+-- internet --+-- coordination server (tests/mesh/fakes.py's)
    node b --lan-- hard NAT --+              +-- relay (coturn)
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mesh.fakes import FakeServer

from .mesh_up import down, kill_daemons, path_to, up
from .nat_lab import NatLab
from .netns import Lab, wait_for

pytestmark = pytest.mark.root


def test_two_mesh_nodes_behind_hard_nats_are_relayed_and_ping_both_ways(
    lab: Lab, tmp_path: Path
) -> None:
    nat = NatLab(lab, ipv6=False)
    relay = nat.coturn()
    a = nat.node("a", nat.router("hard"))
    b = nat.node("b", nat.router("hard"))
    server = FakeServer(nat.server.ipv4, netns=nat.server.ns.name).start(stun=True)
    states = {"a": tmp_path / "a", "b": tmp_path / "b"}
    try:
        username, password = relay.credentials("mesh")
        server.set_nat(
            {
                "stun": [f"{nat.server.ipv4}:{server.stun_port}"],
                "turn": [
                    {
                        "urls": relay.urls()[:1],  # UDP: a hard NAT lets it out
                        "username": username,
                        "password": password,
                        "expires": int(username.split(":")[0]),
                    }
                ],
                "refresh": 60,
            }
        )
        auth = server.add_auth_key()
        up(a.ns, server, auth, states["a"], "a", port=41641)
        up(b.ns, server, auth, states["b"], "b", port=41641)

        def relayed() -> bool:
            paths = [path_to(states["a"], "b"), path_to(states["b"], "a")]
            return all(p is not None and p["kind"] == "relay" for p in paths)

        wait_for(relayed, timeout=20, what=f"relayed paths (logs in {tmp_path})")
        for state, other in ((states["a"], "b"), (states["b"], "a")):
            path = path_to(state, other)
            assert path is not None and path["relay"] is not None
        node_a = next(n for n in server.nodes.values() if n.hostname == "a")
        node_b = next(n for n in server.nodes.values() if n.hostname == "b")
        relays = [c for c in node_a.candidates if " typ relay" in c]
        assert relays and relay.addresses[0] in relays[0]  # reported with the others
        assert a.ns.ping(node_b.ipv4, count=3, interval=0.2) == 3
        assert b.ns.ping(node_a.ipv4, count=3, interval=0.2) == 3
        down(a.ns, states["a"])
        down(b.ns, states["b"])
    finally:
        kill_daemons(states.values())
        server.stop()
