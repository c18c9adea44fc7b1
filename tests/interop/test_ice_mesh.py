"""Two real mesh nodes (`wgpy up`, daemons and TUNs), one behind a NAT, end on a direct path
that ICE punched, and the public node reaches the one behind the NAT first.

    inside: node "behind" --lan-- router (masquerade, drops nothing it has a mapping for)
        --wan-- outside: node "public" and the coordination server (tests/mesh/fakes.py's,
        answering STUN, fanning the candidates out in the map)

The issue's first symptom: the server knew only the inside node's private address, and a
public node that pinged it first lost every packet. Now both report candidates, each runs
ICE checks on its WireGuard port, and the path each selected is the WireGuard endpoint.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mesh.fakes import FakeServer

from .mesh_up import down, kill_daemons, path_to, up
from .netns import Lab, make_nat, wait_for

pytestmark = pytest.mark.root

PORTS = {"behind": 41641, "public": 41642}


def test_a_public_node_reaches_a_node_behind_a_nat_first_over_a_direct_path(
    lab: Lab, tmp_path: Path
) -> None:
    nat = make_nat(lab, udp_timeout=30)
    server = FakeServer(nat.wan.b4, netns=nat.outside.name).start(stun=True)
    states = {name: tmp_path / name for name in PORTS}
    try:
        server.set_nat({"stun": [f"{nat.wan.b4}:{server.stun_port}"], "turn": [], "refresh": 60})
        auth = server.add_auth_key()
        up(nat.inside, server, auth, states["behind"], "behind", port=PORTS["behind"])
        up(nat.outside, server, auth, states["public"], "public", port=PORTS["public"])

        def direct() -> bool:
            paths = [path_to(states["public"], "behind"), path_to(states["behind"], "public")]
            return all(p is not None and p["kind"] == "direct" for p in paths)

        wait_for(direct, timeout=15, what=f"direct paths (logs in {tmp_path})")
        public_view = path_to(states["public"], "behind")
        assert public_view is not None
        # the public node sends to the router's mapping of the inside node's WireGuard port.
        # Its port is often not the one the server-reflexive candidate says: this router
        # (tests/interop/netns.py's) lets the public node's first checks to that port create
        # a conntrack entry on itself, so masquerade maps the inside flow to another port;
        # the checks from inside teach the public node that address (peer-reflexive)
        assert public_view["endpoint"].startswith(f"{nat.wan.a4}:")
        behind = next(n for n in server.nodes.values() if n.hostname == "behind")
        public = next(n for n in server.nodes.values() if n.hostname == "public")
        assert nat.outside.ping(behind.ipv4, count=3, interval=0.2) == 3  # the public one first
        assert nat.inside.ping(public.ipv4, count=3, interval=0.2) == 3
        down(nat.inside, states["behind"])
        down(nat.outside, states["public"])
    finally:
        kill_daemons(states.values())
        server.stop()
