"""An exit node for real: a real `wgpy server` (SQLite) in the hub namespace, an exit node
(`wgpy up --advertise-exit-node`) whose default routes lead to an "internet" namespace that
nothing else can reach, and a laptop that sends all its traffic through it (`wgpy up
--exit-node exit`):

    hub: br0 10.99.0.1 (server :8080), no forwarding
      +-- exit    10.99.0.11 -- v1exit 10.1.0.1 / fd00:1::1 -- inet 10.1.0.2 / fd00:1::2
      +-- laptop  10.99.0.12 (its own default route: the hub, which forwards nothing)

The far end (a TCP echo in "inet" that answers with the address it sees) sees the exit
node's address; a name only the internet's resolver knows resolves at the laptop's resolver
(DNS follows the exit node); the coordination server stays on the laptop's own routes; the LAN goes
through the exit node unless --exit-node-allow-lan-access (with a strict reverse-path check
on the laptop: its replies get their mark back from their connection); a revoked exit node
stops being used at once, and is used again once approved; and `ip rule`, every routing
table and the nftables tables are as before once the node is down, or up again with
--exit-node=.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .mesh_lab import HUB4, WGPY, Mesh, MeshNode
from .netns import SOCKET_DIR, Lab, Namespace, wait_for

pytestmark = [pytest.mark.root, pytest.mark.slow]

ECHO_PORT = 7007
ECHO = """
import socket
server = socket.create_server(("::", 7007), family=socket.AF_INET6, dualstack_ipv6=True)
while True:
    conn, peer = server.accept()
    host = peer[0].removeprefix("::ffff:")
    conn.sendall(host.encode() + b"\\n")
    conn.close()
"""
# a name only the "internet" resolver knows: the laptop resolves it through the exit node's
# resolver while it uses the exit node (DNS follows the traffic)
ZONE = "www.internet.example. 60 IN A 198.51.100.80\n"
LOOKUP = """
import sys
from dnslib import DNSRecord
reply = DNSRecord.parse(DNSRecord.question(sys.argv[1]).send("100.100.100.100", 53, timeout=5))
print(" ".join(str(r.rdata) for r in reply.rr) or "none")
"""
ASK = """
import socket, sys
with socket.create_connection((sys.argv[1], 7007), timeout=2) as s:
    print(s.recv(100).decode().strip())
"""


@pytest.fixture
def mesh(lab: Lab, request: pytest.FixtureRequest) -> Iterator[Mesh]:
    mesh = Mesh(lab)
    yield mesh
    rep = getattr(request.node, "rep_call", None)
    if rep is None or rep.failed:
        print(f"\n===== node logs\n{mesh.logs()}")


SRC_VALID_MARK = "net.ipv4.conf.all.src_valid_mark"


def seen_by_the_far_end(ns: Namespace, address: str) -> str | None:
    """The address the echo in "inet" saw us come from (None: no answer)."""
    result = ns.run([sys.executable, "-c", ASK, address], check=False, timeout=15)
    return result.stdout.strip() if result.returncode == 0 else None


def routing(ns: Namespace, without: str = "") -> str:
    """`ip rule show` and `ip route show table all`, both families (lines of the interface
    ``without`` left out), and the nftables tables."""
    text = ns.run(["nft", "list", "tables"]).stdout
    for family in ("-4", "-6"):
        for what in (["rule", "show"], ["route", "show", "table", "all"]):
            out = ns.ip(family, *what).stdout
            text += "".join(
                f"{line}\n" for line in out.splitlines() if not without or without not in line
            )
    return text


def settled(ns: Namespace) -> bool:
    """The namespace's link-local IPv6 address is there and usable (its local route, part of
    what is compared, appears only then)."""
    text = ns.ip("-6", "addr", "show").stdout
    return "scope link" in text and "tentative" not in text


def status_text(node: MeshNode) -> str:
    return node.ns.run([WGPY, "status", "--state-dir", str(node.state_dir)]).stdout


def exit_node_ipv4(node: MeshNode) -> str:
    """The node's overlay IPv4 address (not the resolver's 100.100.100.100 beside it)."""
    out = node.ns.ip("-4", "-o", "addr", "show", "dev", node.ifname).stdout
    found = [line.split()[3].split("/")[0] for line in out.splitlines()]
    return next(a for a in found if a != "100.100.100.100")


def route_get(node: MeshNode, address: str) -> str:
    return node.ns.ip("route", "get", address).stdout


def src_valid_mark(ns: Namespace) -> str:
    return ns.run(["sysctl", "-n", SRC_VALID_MARK]).stdout.strip()


def kill_daemon(node: MeshNode) -> None:
    """SIGKILL to the node's daemon: nothing of its own clean-up runs."""
    pid = node.daemon_pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: pid not in node.ns.pids(), timeout=10, what="the killed daemon to go")
    (SOCKET_DIR / f"{node.ifname}.sock").unlink(missing_ok=True)


def test_all_traffic_leaves_through_the_exit_node_and_everything_is_restored(
    mesh: Mesh, lab: Lab
) -> None:
    key = mesh.auth_key("alice", "--reusable")
    exit_node = mesh.add_node("exit")
    internet = lab.namespace("inet")
    link = lab.veth(exit_node.ns, internet)
    exit_node.ns.ip("route", "add", "default", "via", link.b4)
    exit_node.ns.ip("-6", "route", "add", "default", "via", link.b6)
    echo = internet.spawn([sys.executable, "-c", ECHO], log="echo")
    zone = lab.workdir / "internet.zone"
    zone.write_text(ZONE)
    resolver = internet.spawn(
        [sys.executable, "-m", "dnslib.zoneresolver", "--zone", str(zone),
         "--address", link.b4, "--port", "53"],
        log="internet-dns",
    )  # fmt: skip
    # the exit node's own resolv.conf (`ip netns exec` mounts it): the internet's resolver
    etc = Path("/etc/netns") / exit_node.ns.name
    etc.mkdir(parents=True)
    lab.callback(shutil.rmtree, etc, True)
    (etc / "resolv.conf").write_text(f"nameserver {link.b4}\n")
    wait_for(lambda: internet.tcp_listening(ECHO_PORT) or not echo.alive, timeout=10, what="echo")
    laptop = mesh.add_node("laptop")
    laptop.ns.ip("route", "add", "default", "via", HUB4)
    # a strict reverse-path check, as some distributions have: replies must get their mark
    # back (wg-quick's connection-mark rules) or the tunnel's routes would reject them
    laptop.ns.sysctl("net.ipv4.conf.all.rp_filter", 1)
    laptop.ns.sysctl(SRC_VALID_MARK, 0)  # the node turns it on while it uses the exit node
    wait_for(lambda: settled(laptop.ns), timeout=10, what="the laptop's IPv6 link-local address")
    before = routing(laptop.ns)
    forward_before = exit_node.ns.run(["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip()
    assert seen_by_the_far_end(laptop.ns, link.b4) is None  # only the exit node gets there

    mesh.up(exit_node, auth_key=key, extra=["--advertise-exit-node"])
    # not yet approved: refused in one sentence, and nothing left behind
    refused = mesh.up(laptop, auth_key=key, extra=["--exit-node", "exit"], check=False)
    assert refused.returncode != 0
    assert "is not an exit node for this node" in refused.stderr, refused.stderr
    assert routing(laptop.ns) == before
    routes = mesh.admin("routes", "list")
    assert {r["prefix"] for r in routes if not r["approved"]} == {"0.0.0.0/0", "::/0"}
    mesh.admin("routes", "approve", str(exit_node.id), "0.0.0.0/0", "::/0")

    mesh.up(laptop, auth_key=key, extra=["--exit-node", "exit"])
    assert f"wg-quick-{laptop.ifname}" in laptop.ns.run(["nft", "list", "tables"]).stdout
    wait_for(
        lambda: "exit node: all traffic goes through it" in status_text(laptop),
        timeout=5,
        what="wgpy status to name the exit node",
    )
    # the far end sees the exit node's address, for IPv4 and IPv6
    assert seen_by_the_far_end(laptop.ns, link.b4) == link.a4
    assert seen_by_the_far_end(laptop.ns, link.b6) == link.a6
    # DNS follows: a name only the internet's resolver knows, asked of the laptop's resolver,
    # is answered through the exit node's
    wait_for(lambda: "Starting Zone Resolver" in resolver.output(), timeout=20, what="dns")
    looked_up = laptop.ns.run([sys.executable, "-c", LOOKUP, "www.internet.example"])
    assert looked_up.stdout.strip() == "198.51.100.80", looked_up.stdout + looked_up.stderr
    assert f"other names by the exit node's resolver at {exit_node_ipv4(exit_node)}" in (
        status_text(laptop)
    )
    assert laptop.ns.ping(link.b4, count=2, wait=2) == 2
    # the coordination server stays on the host's own routes; the internet and (without
    # LAN access) the LAN go through the tunnel
    assert f"dev {laptop.ifname}" not in route_get(laptop, HUB4)
    assert f"dev {laptop.ifname} table 51820" in route_get(laptop, link.b4)
    assert f"dev {laptop.ifname} table 51820" in route_get(laptop, exit_node.underlay)
    assert "table 51820" not in route_get(laptop, exit_node.ipv4)  # the mesh's own route
    # WireGuard's own packets (marked) keep the host's routes, to the LAN too
    marked = laptop.ns.ip("route", "get", exit_node.underlay, "mark", "51820").stdout
    assert f"dev {laptop.ifname}" not in marked
    assert mesh.server_nodes()["laptop"]["online"]
    mesh.wait_ping(laptop, exit_node)

    # revoked: the running node stops using it (the host's routing as before); approved
    # again: it uses it again
    mesh.admin("routes", "revoke", str(exit_node.id))
    wait_for(
        lambda: routing(laptop.ns, without=laptop.ifname) == before,
        timeout=10,
        what="the laptop to stop using the revoked exit node",
    )
    assert seen_by_the_far_end(laptop.ns, link.b4) is None
    mesh.wait_ping(laptop, exit_node)
    mesh.admin("routes", "approve", str(exit_node.id), "0.0.0.0/0", "::/0")
    wait_for(
        lambda: seen_by_the_far_end(laptop.ns, link.b4) == link.a4,
        timeout=15,
        what="the laptop to use the exit node again",
    )
    mesh.down(laptop)
    assert routing(laptop.ns) == before
    assert seen_by_the_far_end(laptop.ns, link.b4) is None

    # the exit node is kept for the next up; with LAN access the LAN stays direct
    mesh.up(laptop, extra=["--exit-node-allow-lan-access"])
    assert f"dev {laptop.ifname}" not in route_get(laptop, exit_node.underlay)
    assert seen_by_the_far_end(laptop.ns, link.b4) == link.a4
    mesh.down(laptop)
    assert routing(laptop.ns) == before

    # a node killed while it used the exit node leaves its rules and src_valid_mark on; the
    # next start deletes the rules and puts src_valid_mark back (then on again, and off at
    # down)
    assert src_valid_mark(laptop.ns) == "0"
    mesh.up(laptop)
    kill_daemon(laptop)
    assert "lookup 51820" in laptop.ns.ip("rule", "show").stdout
    assert src_valid_mark(laptop.ns) == "1"
    mesh.up(laptop)
    rules = laptop.ns.ip("rule", "show").stdout.splitlines()
    assert (
        len(rules) == len(set(rules)) and "5330:\tnot from all fwmark 0xca6c lookup 51820" in rules
    )
    assert seen_by_the_far_end(laptop.ns, link.b4) == link.a4
    mesh.down(laptop)
    assert routing(laptop.ns) == before
    assert src_valid_mark(laptop.ns) == "0"
    # killed again: `wgpy down` puts src_valid_mark back (the rules wait for the next start)
    mesh.up(laptop)
    kill_daemon(laptop)
    assert src_valid_mark(laptop.ns) == "1"
    mesh.down(laptop)
    assert src_valid_mark(laptop.ns) == "0"
    mesh.up(laptop)
    mesh.down(laptop)
    assert routing(laptop.ns) == before

    # --exit-node= : none, and nothing of it on the host
    mesh.up(laptop, extra=["--exit-node="])
    assert routing(laptop.ns, without=laptop.ifname) == before
    assert seen_by_the_far_end(laptop.ns, link.b4) is None
    mesh.down(laptop)
    assert routing(laptop.ns) == before

    # the exit node turns forwarding off again at down (it turned it on)
    mesh.down(exit_node)
    forward_after = exit_node.ns.run(["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip()
    assert forward_after == forward_before
    nat = exit_node.ns.run(["nft", "list", "tables"]).stdout
    assert "wgpy-nat" not in nat
