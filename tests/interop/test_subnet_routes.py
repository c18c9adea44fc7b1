"""Subnet routers end to end in network namespaces: a real `wgpy server`, real `wgpy up`
nodes, and a LAN with a plain host (no wgpy) behind two routers.

    hub (server) --- router a, router b, node c         (underlay 10.99.0.0/24)
    lan: br1 192.168.77.10/24 --- a 192.168.77.1, b 192.168.77.2

Node c cannot reach the LAN host before an admin approves a's route, can after, cannot
while the policy does not give it that prefix; b advertises the same prefix (the standby);
a's daemon is killed (SIGKILL) and c's pings come back through b within 5 s (the seconds it
took are printed: the failover figure of the issue's note); a's next `wgpy up` puts back the
forwarding and NAT its killed daemon left. Both routers masquerade (the default), so the LAN
host needs no route back into the mesh.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Iterator, Sequence

import pytest

from .mesh_lab import NODE_ENV, WGPY, Mesh, MeshNode
from .netns import Lab, Namespace, run, wait_for

pytestmark = [pytest.mark.root, pytest.mark.slow]

LAN = "192.168.77.0/24"
LAN_HOST = "192.168.77.10"
LAN6 = "fd00:77::/64"
LAN6_HOST = "fd00:77::10"
FAILOVER_LIMIT = 5.0  # seconds, the issue's


class RouteMesh(Mesh):
    """The mesh lab, with extra `wgpy up` options per node."""

    def up_with(self, node: MeshNode, auth_key: str, *options: str) -> None:
        args = [WGPY, "up", "--login-server", self.url(), "--state-dir", str(node.state_dir)]
        args += ["--interface", node.ifname, "--hostname", node.name, "--auth-key", auth_key]
        env_args = ["env", *(f"{k}={v}" for k, v in NODE_ENV.items())]
        result = node.ns.run([*env_args, *args, *options], check=False, timeout=90)
        assert result.returncode == 0, f"wgpy up on {node.name}: {result.stderr}\n{node.log()}"
        node.joined = True
        m = re.search(r" is up as ([\d.]+), ([0-9a-f:]+)", result.stdout)
        assert m, result.stdout
        node.ipv4, node.ipv6 = m.group(1), m.group(2)
        me = self.server_nodes()[node.name]
        node.public_key, node.id = me["public_key"], me["id"]

    def set_policy(self, policy: object) -> None:
        self.hub.run(
            [WGPY, "admin", "--server", self.url(), "--api-key", self.api_key,
             "policy", "set", "-"],
            input=json.dumps(policy),
        )  # fmt: skip


@pytest.fixture
def mesh(lab: Lab, request: pytest.FixtureRequest) -> Iterator[RouteMesh]:
    mesh = RouteMesh(lab)
    yield mesh
    rep = getattr(request.node, "rep_call", None)
    if rep is None or rep.failed:
        print(f"\n===== node logs\n{mesh.logs()}")


def lan_behind(lab: Lab, routers: Sequence[tuple[MeshNode, str]]) -> Namespace:
    """The LAN: a namespace with a bridge (the plain host's address on it) and a veth from
    each router, whose end gets the router's LAN address."""
    lan = lab.namespace("lan")
    lan.add_bridge("br1")
    lan.ip("addr", "add", f"{LAN_HOST}/24", "dev", "br1")
    lan.ip("addr", "add", f"{LAN6_HOST}/64", "dev", "br1", "nodad")
    lan.ip("link", "set", "br1", "up")
    for i, (router, address) in enumerate(routers):
        here, there = f"l{i}", f"lan{i}"
        run(["ip", "link", "add", here, "netns", lan.name, "type", "veth",
             "peer", "name", there, "netns", router.ns.name])  # fmt: skip
        lan.ip("link", "set", here, "master", "br1", "up")
        router.ns.ip("addr", "add", f"{address}/24", "dev", there)
        router.ns.ip("addr", "add", f"fd00:77::{i + 1}/64", "dev", there, "nodad")
        router.ns.ip("link", "set", there, "up")
    return lan


INTERNET_HOST = "198.51.100.9"  # an address a can reach but does not advertise


def reaches(node: MeshNode, address: str, wait: float = 1) -> bool:
    result = node.ns.run(
        ["ping", "-n", "-q", "-c", "1", "-W", f"{wait:g}", address], check=False, timeout=10
    )
    return result.returncode == 0


def test_a_subnet_router_its_approval_the_policy_and_failover(mesh: RouteMesh, lab: Lab) -> None:
    key = mesh.auth_key("alice", "--reusable")
    a, b, c = (mesh.add_node(name) for name in ("a", "b", "c"))
    lan = lan_behind(lab, [(a, "192.168.77.1"), (b, "192.168.77.2")])
    assert lan.ping("192.168.77.1") == 1 and lan.ping("192.168.77.2") == 1
    mesh.up_with(a, key, "--advertise-routes", f"{LAN},{LAN6}")
    mesh.up_with(c, key)
    mesh.wait_ping(c, a)
    # advertised, not approved: nothing through a; a says what awaits approval
    assert not reaches(c, LAN_HOST)
    status = json.loads(
        a.ns.run([WGPY, "status", "--json", "--state-dir", str(a.state_dir)]).stdout
    )
    assert status["self"]["routes_awaiting_approval"] == [LAN, LAN6]
    assert a.ns.run(["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip() == "1"
    assert a.ns.run(["sysctl", "-n", "net.ipv6.conf.all.forwarding"]).stdout.strip() == "1"

    mesh.admin("routes", "approve", str(a.id), LAN, LAN6)
    wait_for(lambda: reaches(c, LAN_HOST), timeout=15, what="c to reach the LAN host through a")
    wait_for(lambda: reaches(c, LAN6_HOST), timeout=10, what="c to reach it over IPv6 too")
    peers = json.loads(c.ns.run([WGPY, "status", "--json", "--state-dir", str(c.state_dir)]).stdout)
    assert {p["hostname"]: p["routes"] for p in peers["peers"]}["a"] == [LAN, LAN6]

    # a policy that lets alice's nodes reach each other but not the LAN: the route goes
    mesh.set_policy({"acls": [{"action": "accept", "src": ["user:alice"], "dst": ["user:alice"]}]})
    wait_for(lambda: not reaches(c, LAN_HOST), timeout=10, what="the policy to take the LAN")
    assert c.ping(a) == 1  # a itself is still reachable
    # c routes the LAN through a on its own (its device, its host): a forwards nothing from
    # c that the policy does not grant it (a's forward filter), and a is no exit node either
    lan.ip("addr", "add", f"{INTERNET_HOST}/32", "dev", "br1")  # a reaches it, not advertised
    a.ns.ip("route", "add", f"{INTERNET_HOST}/32", "via", LAN_HOST)
    assert a.ns.ping(INTERNET_HOST) == 1
    own = f"{a.ipv4}/32,{a.ipv6}/128"
    forced = f"{own},{LAN},{INTERNET_HOST}/32"
    c.ns.run(["wg", "set", c.ifname, "peer", a.public_key, "allowed-ips", forced])
    c.ns.ip("route", "replace", LAN, "dev", c.ifname)
    c.ns.ip("route", "replace", INTERNET_HOST + "/32", "dev", c.ifname)
    assert not reaches(c, LAN_HOST, wait=2)
    assert not reaches(c, INTERNET_HOST, wait=2)
    dropped = a.ns.run(["nft", "list", "table", "inet", "wgpy-filter"]).stdout
    assert "counter packets 0 " not in dropped, dropped  # a dropped them, and counted
    c.ns.ip("route", "del", LAN, "dev", c.ifname)
    c.ns.ip("route", "del", INTERNET_HOST + "/32", "dev", c.ifname)
    c.ns.run(["wg", "set", c.ifname, "peer", a.public_key, "allowed-ips", own])
    mesh.set_policy(
        {"acls": [{"action": "accept", "src": ["user:alice"], "dst": ["user:alice", LAN]}]}
    )
    wait_for(lambda: reaches(c, LAN_HOST), timeout=10, what="the policy to give the LAN back")

    # a second router for the LAN: the standby
    mesh.up_with(b, key, "--advertise-routes", LAN)
    mesh.admin("routes", "approve", str(b.id), LAN)
    routes = {(r["name"], r["primary"]) for r in mesh.admin("routes", "list")}
    assert routes == {("a", True), ("b", False)}
    mesh.wait_ping(c, b)
    assert reaches(c, LAN_HOST)

    # a dies (SIGKILL: no goodbye to the server): c's pings come back through b
    pid = a.daemon_pid()
    assert pid is not None
    killed = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    back = wait_for(
        lambda: reaches(c, LAN_HOST, wait=0.2) and time.monotonic(),
        timeout=30,
        interval=0.05,
        what="c to reach the LAN host through b",
    )
    failover = back - killed
    print(f"\nfailover from a to b: {failover:.2f} s (SIGKILL of a to c's first reply)")
    assert failover <= FAILOVER_LIMIT
    routes = {(r["name"], r["primary"]) for r in mesh.admin("routes", "list")}
    assert routes == {("a", False), ("b", True)}
    # a, killed, left forwarding on and its NAT table; its next up (without routes now)
    # puts both back
    assert "wgpy-nat" in a.ns.run(["nft", "list", "tables"]).stdout
    result = a.ns.run(
        [WGPY, "up", "--login-server", mesh.url(), "--state-dir", str(a.state_dir),
         "--interface", a.ifname, "--advertise-routes="],
        check=False,
        timeout=90,
    )  # fmt: skip
    assert result.returncode == 0, f"{result.stderr}\n{a.log()}"
    assert a.ns.run(["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip() == "0"
    assert a.ns.run(["sysctl", "-n", "net.ipv6.conf.all.forwarding"]).stdout.strip() == "0"
    assert "wgpy-nat" not in a.ns.run(["nft", "list", "tables"]).stdout
    for node in (a, b, c):
        mesh.down(node)
    # b put its forwarding switch back at down (the namespace had it off)
    assert b.ns.run(["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip() == "0"
    tables = b.ns.run(["nft", "list", "tables"]).stdout
    assert "wgpy-nat" not in tables


def test_without_snat_the_lan_sees_the_node_and_routes_back(mesh: RouteMesh, lab: Lab) -> None:
    """--snat-subnet-routes=false: the LAN host sees c's own mesh address and needs a route
    back; --accept-routes=false on a node keeps it off the LAN; --advertise-routes= withdraws
    the routes and a plain `wgpy up` keeps the saved options."""
    key = mesh.auth_key("alice", "--reusable")
    a, c, d = (mesh.add_node(name) for name in ("a", "c", "d"))
    lan = lan_behind(lab, [(a, "192.168.77.1")])
    mesh.up_with(a, key, "--advertise-routes", LAN, "--snat-subnet-routes=false")
    mesh.up_with(c, key)
    mesh.up_with(d, key, "--accept-routes=false")
    mesh.admin("routes", "approve", str(a.id), LAN)
    assert "wgpy-nat" not in a.ns.run(["nft", "list", "tables"]).stdout
    mesh.wait_ping(c, a)
    # a forwards, but the LAN host has no way back to the mesh yet
    time.sleep(1)
    assert not reaches(c, LAN_HOST)
    lan.ip("route", "add", "100.64.0.0/10", "via", "192.168.77.1")
    wait_for(lambda: reaches(c, LAN_HOST), timeout=15, what="c to reach the LAN host unmasked")
    # the LAN host sees c's own address: it answers c's ping back to 100.64.x.y
    assert lan.ping(c.ipv4) == 1
    # d refuses routes: a is its peer, the LAN is not through it
    mesh.wait_ping(d, a)
    assert "192.168.77.0/24" not in d.routes()
    assert not reaches(d, LAN_HOST)
    # withdrawn at the next up; the other saved options stay (no NAT table appears)
    mesh.down(a)
    mesh.up_with(a, key, "--advertise-routes=")
    listed = mesh.admin("routes", "list")
    assert [(r["prefix"], r["advertised"], r["approved"]) for r in listed] == [(LAN, False, True)]
    wait_for(lambda: not reaches(c, LAN_HOST, wait=0.3), timeout=10, what="the route to go")
    assert a.ns.run(["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip() == "0"
    mesh.down(a)
    # a plain up with the saved list (empty now) and saved SNAT choice: nothing comes back
    result = a.ns.run(
        [WGPY, "up", "--login-server", mesh.url(), "--state-dir", str(a.state_dir),
         "--interface", a.ifname],
        check=False,
        timeout=90,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert mesh.admin("routes", "list")[0]["advertised"] is False
    for node in (a, c, d):
        mesh.down(node)


def test_a_router_whose_link_dies_hands_over_within_5_s(mesh: RouteMesh, lab: Lab) -> None:
    """A router that vanishes without closing its connection (its underlay link goes down):
    the server's probes of a router's stream find it dead within seconds (not when TCP stops
    retransmitting, minutes later) and the standby takes over."""
    key = mesh.auth_key("alice", "--reusable")
    a, b, c = (mesh.add_node(name) for name in ("a", "b", "c"))
    lan_behind(lab, [(a, "192.168.77.1"), (b, "192.168.77.2")])
    for router in (a, b):
        mesh.up_with(router, key, "--advertise-routes", LAN)
        mesh.admin("routes", "approve", str(router.id), LAN)
    mesh.up_with(c, key)
    wait_for(lambda: reaches(c, LAN_HOST), timeout=15, what="c to reach the LAN host")
    assert {(r["name"], r["primary"]) for r in mesh.admin("routes", "list")} == {
        ("a", True),
        ("b", False),
    }
    cut = time.monotonic()
    a.ns.ip("link", "set", "eth0", "down")  # a's underlay: no FIN, no RST, just silence
    back = wait_for(
        lambda: reaches(c, LAN_HOST, wait=0.3) and time.monotonic(),
        timeout=60,
        interval=0.05,
        what="c to reach the LAN host through b",
    )
    failover = back - cut
    print(f"\nfailover from a to b after a's link went down: {failover:.2f} s")
    assert failover <= FAILOVER_LIMIT
    for node in (b, c):
        mesh.down(node)
