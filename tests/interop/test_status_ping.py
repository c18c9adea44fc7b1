"""What the user sees of NAT traversal on two real mesh nodes, one behind a NAT (the setup of
tests/interop/test_ice_mesh.py): `wgpy ping` from the public node names the direct path its
pong came through and stops there, `wgpy status` on both names the path with its latency, and
`wgpy ping`'s errors are one sentence each."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from mesh.fakes import FakeServer

from .mesh_up import WGPY, down, kill_daemons, path_to, up
from .netns import Lab, make_nat, wait_for
from .test_ice_mesh import PORTS

pytestmark = pytest.mark.root


def test_ping_and_status_name_the_direct_path_through_the_nat(lab: Lab, tmp_path: Path) -> None:
    nat = make_nat(lab, udp_timeout=30)
    server = FakeServer(nat.wan.b4, netns=nat.outside.name).start(stun=True)
    states = {name: tmp_path / name for name in PORTS}
    try:
        server.set_nat({"stun": [f"{nat.wan.b4}:{server.stun_port}"], "turn": [], "refresh": 60})
        auth = server.add_auth_key()
        up(nat.inside, server, auth, states["behind"], "behind", port=PORTS["behind"])
        up(nat.outside, server, auth, states["public"], "public", port=PORTS["public"])
        behind = next(n for n in server.nodes.values() if n.hostname == "behind")

        # the public node pings the one behind the NAT at once, by name: pongs until one
        # comes over the direct path ICE punched, which ends the run
        ping = nat.outside.run(
            [*WGPY, "ping", "behind", "-c", "20", "-i", "0.5", "--state-dir",
             str(states["public"])],
            check=False,
            timeout=30,
        )  # fmt: skip
        assert ping.returncode == 0, (ping.stdout, ping.stderr)
        last = ping.stdout.splitlines()[-1]
        via = rf"pong from behind \({re.escape(behind.ipv4)}\) via direct "
        match = re.fullmatch(via + rf"({re.escape(nat.wan.a4)}:\d+) in [0-9.]+ ms", last)
        assert match, ping.stdout
        # the path it names is the one the node's path manager selected
        public_view = path_to(states["public"], "behind")
        assert public_view is not None and public_view["kind"] == "direct"
        assert public_view["endpoint"] == match.group(1)

        # by mesh address and by public key start, from the node behind the NAT
        public = next(n for n in server.nodes.values() if n.hostname == "public")
        wait_for(
            lambda: (path_to(states["behind"], "public") or {}).get("kind") == "direct",
            timeout=10,
            what="the inside node's direct path",
        )
        for name in (public.ipv4, public.public_key[:6]):
            ping = nat.inside.run(
                [*WGPY, "ping", name, "-c", "3", "--state-dir", str(states["behind"])],
                check=False,
            )
            assert ping.returncode == 0, (ping.stdout, ping.stderr)
            assert re.fullmatch(
                rf"pong from public \({re.escape(public.ipv4)}\) via direct "
                rf"{re.escape(nat.wan.b4)}:{PORTS['public']} in [0-9.]+ ms\n",
                ping.stdout,
            ), ping.stdout

        # --no-until-direct: every ping, each pong on the direct path
        ping = nat.outside.run(
            [*WGPY, "ping", "behind", "-c", "3", "-i", "0.1", "--no-until-direct",
             "--state-dir", str(states["public"])],
            check=False,
        )  # fmt: skip
        assert ping.returncode == 0, (ping.stdout, ping.stderr)
        lines = ping.stdout.splitlines()
        assert len(lines) == 3 and all(re.fullmatch(via + r"\S+ in [0-9.]+ ms", x) for x in lines)

        # `wgpy status` on the public node: the direct path, its latency, the handshake
        table = nat.outside.run([*WGPY, "status", "--state-dir", str(states["public"])]).stdout
        assert re.search(
            rf"{re.escape(behind.ipv4)}\s+behind\s+\S+\s+online; direct {match.group(1)}, "
            r"[0-9.]+ ms; handshake \d+ s ago; rx ",
            table,
        ), table
        report = json.loads(
            nat.outside.run(
                [*WGPY, "status", "--json", "--state-dir", str(states["public"])]
            ).stdout
        )
        (row,) = report["peers"]
        assert row["path"]["kind"] == "direct" and row["path"]["rtt_ms"] > 0
        assert row["problem"] is None and row["rx_bytes"] > 0

        # errors: no such peer; a node that is not up
        ping = nat.outside.run(
            [*WGPY, "ping", "nobody", "--state-dir", str(states["public"])], check=False
        )
        assert ping.returncode == 1
        assert ping.stderr == (
            "wgpy ping: this node has no peer called nobody (a hostname, mesh address or public "
            "key start): see `wgpy status`\n"
        )
        down(nat.inside, states["behind"])
        ping = nat.inside.run(
            [*WGPY, "ping", "public", "--state-dir", str(states["behind"])], check=False
        )
        assert ping.returncode == 1 and "is not running: start it with `wgpy up`" in ping.stderr
        # the public node pings the stopped one: no pong, and says so
        ping = nat.outside.run(
            [*WGPY, "ping", "behind", "-c", "2", "--timeout", "0.5", "-i", "0", "--state-dir",
             str(states["public"])],
            check=False,
        )  # fmt: skip
        assert ping.returncode == 1, ping.stdout
        assert ping.stdout.startswith(f"timeout waiting for pong from behind ({behind.ipv4})")
        assert ping.stderr == f"wgpy ping: no pong from behind ({behind.ipv4}) in 2 pings\n"
    finally:
        kill_daemons(states.values())
        server.stop()


ECHO = """
import select, sys
from wgpy.cli.icmp import EchoSocket
sock = EchoSocket(sys.argv[1])
sock.send(7, 1, b"wgpy")
for _ in range(20):
    if not select.select([sock], [], [], 1.0)[0]:
        break
    reply = sock.receive()
    if reply is not None:
        print("raw" if sock.raw else "datagram", reply[1], reply[2].decode())
        break
"""


def test_wgpy_ping_s_socket_is_a_datagram_one_where_the_host_lets_this_group_ping(
    lab: Lab,
) -> None:
    """Where net.ipv4.ping_group_range lets the user's group ping, `wgpy ping` needs no raw
    socket (no root); elsewhere it takes a raw one (root). Both ping, over IPv4 and IPv6."""
    ns = lab.namespace("echo")
    ns.run(["ip", "link", "set", "lo", "up"])
    for address in ("127.0.0.1", "::1"):
        assert ns.run([sys.executable, "-c", ECHO, address]).stdout == "raw 1 wgpy\n"
    ns.sysctl("net.ipv4.ping_group_range", "0 0")  # covers ICMPv6 datagram sockets too
    for address in ("127.0.0.1", "::1"):
        assert ns.run([sys.executable, "-c", ECHO, address]).stdout == "datagram 1 wgpy\n"
