"""A real mesh node (`wgpy up`, its daemon and TUN) behind a NAT learns where it is.

    inside: the node --lan-- router (nftables masquerade) --wan-- outside: the coordination
    server (tests/mesh/fakes.py's, answering STUN on a UDP port of its own)

The problem the issue starts from: such a server learns only the node's private address. Now
the node asks STUN from its WireGuard port and reports a server-reflexive candidate: the
router's public address with the port the NAT gave the WireGuard socket (masquerade keeps it
when it is free), beside its host candidate and its old endpoint report.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
from aioice import Candidate
from mesh.fakes import FakeServer

from wgpy.mesh.client.state import StateDir

from .netns import Lab, make_nat, unique_ifname, wait_for

pytestmark = pytest.mark.root

PORT = 41641


def test_a_node_behind_a_nat_reports_its_public_mapping(lab: Lab, tmp_path: Path) -> None:
    nat = make_nat(lab, udp_timeout=30)
    server = FakeServer(nat.wan.b4, netns=nat.outside.name).start(stun=True)
    state = tmp_path / "state"
    ifname = unique_ifname("wn")
    try:
        server.set_nat({"stun": [f"{nat.wan.b4}:{server.stun_port}"], "turn": [], "refresh": 60})
        auth = server.add_auth_key()
        up = nat.inside.run(
            [
                sys.executable, "-m", "wgpy", "up", "--login-server", server.url,
                "--auth-key", auth, "--state-dir", str(state), "--interface", ifname,
                "--hostname", "behind", "--listen-port", str(PORT),
            ],
            check=False,
            timeout=60,
        )  # fmt: skip
        assert up.returncode == 0, up.stderr
        (node,) = server.nodes.values()
        wait_for(
            lambda: any(" srflx " in c for c in node.candidates),
            timeout=10,
            what=f"a server-reflexive candidate (the node's log: {state / 'wgpy.log'})",
        )
        found = {(c.type, c.host, c.port) for c in map(Candidate.from_sdp, node.candidates)}
        assert found == {
            ("host", nat.lan.a4, PORT),
            ("host", nat.lan.a6, PORT),  # the LAN's IPv6 address (not NATed, no STUN over it)
            ("srflx", nat.wan.a4, PORT),
        }
        srflx = next(Candidate.from_sdp(c) for c in node.candidates if " srflx " in c)
        assert (srflx.related_address, srflx.related_port) == (nat.lan.a4, PORT)
        assert (nat.wan.a4, PORT) in server.stun_sources  # the WireGuard port, NATed
        assert node.endpoints == [f"{nat.lan.a4}:{PORT}", f"[{nat.lan.a6}]:{PORT}"]  # as before
        assert len(node.ice_ufrag) == 8 and node.ice_pwd == ""  # no password: per-pair keys
        down = nat.inside.run(
            [sys.executable, "-m", "wgpy", "down", "--state-dir", str(state)],
            check=False,
            timeout=30,
        )
        assert down.returncode == 0, down.stderr
    finally:
        pid = StateDir(state).daemon_pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
        server.stop()
