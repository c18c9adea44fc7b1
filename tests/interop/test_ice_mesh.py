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

import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from mesh.fakes import FakeServer

from wgpy.mesh.client.state import StateDir

from .netns import Lab, Namespace, make_nat, unique_ifname, wait_for

pytestmark = pytest.mark.root

PORTS = {"behind": 41641, "public": 41642}


def up(ns: Namespace, server: FakeServer, auth: str, state: Path, name: str) -> None:
    result = ns.run(
        [
            sys.executable, "-m", "wgpy", "up", "--login-server", server.url,
            "--auth-key", auth, "--state-dir", str(state), "--interface", unique_ifname("wi"),
            "--hostname", name, "--listen-port", str(PORTS[name]),
        ],
        check=False,
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def path_to(state: Path, hostname: str) -> dict[str, Any] | None:
    """The path a node saved for the peer ``hostname`` (None before it has one)."""
    try:
        peers = StateDir(state).read_peers()
    except Exception:  # written while we read: look again
        return None
    for peer in peers:
        if peer.get("hostname") == hostname and isinstance(peer.get("path"), dict):
            path: dict[str, Any] = peer["path"]
            return path
    return None


def test_a_public_node_reaches_a_node_behind_a_nat_first_over_a_direct_path(
    lab: Lab, tmp_path: Path
) -> None:
    nat = make_nat(lab, udp_timeout=30)
    server = FakeServer(nat.wan.b4, netns=nat.outside.name).start(stun=True)
    states = {name: tmp_path / name for name in PORTS}
    try:
        server.set_nat({"stun": [f"{nat.wan.b4}:{server.stun_port}"], "turn": [], "refresh": 60})
        auth = server.add_auth_key()
        up(nat.inside, server, auth, states["behind"], "behind")
        up(nat.outside, server, auth, states["public"], "public")

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
        for name, ns in (("behind", nat.inside), ("public", nat.outside)):
            down = ns.run(
                [sys.executable, "-m", "wgpy", "down", "--state-dir", str(states[name])],
                check=False,
                timeout=30,
            )
            assert down.returncode == 0, down.stderr
    finally:
        for state in states.values():
            pid = StateDir(state).daemon_pid()
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
        server.stop()
