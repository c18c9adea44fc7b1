"""Two real mesh nodes (`wgpy up`, daemons and TUNs) behind hard NATs end relayed through
coturn and ping both ways: the node allocates on the relay the coordination server names,
reports the relayed candidate with the others, and ICE selects it where nothing direct works.

    node a --lan-- hard NAT --+-- internet --+-- coordination server (tests/mesh/fakes.py's)
    node b --lan-- hard NAT --+              +-- relay (coturn)
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

from .nat_lab import NatLab, Node
from .netns import Lab, unique_ifname, wait_for

pytestmark = pytest.mark.root


def up(node: Node, server: FakeServer, auth: str, state: Path, name: str) -> None:
    result = node.ns.run(
        [
            sys.executable, "-m", "wgpy", "up", "--login-server", server.url,
            "--auth-key", auth, "--state-dir", str(state), "--interface", unique_ifname("wr"),
            "--hostname", name, "--listen-port", "41641",
        ],
        check=False,
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def path_to(state: Path, hostname: str) -> dict[str, Any] | None:
    try:
        peers = StateDir(state).read_peers()
    except Exception:  # written while we read: look again
        return None
    for peer in peers:
        if peer.get("hostname") == hostname and isinstance(peer.get("path"), dict):
            path: dict[str, Any] = peer["path"]
            return path
    return None


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
        up(a, server, auth, states["a"], "a")
        up(b, server, auth, states["b"], "b")

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
        for name, node in (("a", a), ("b", b)):
            down = node.ns.run(
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
