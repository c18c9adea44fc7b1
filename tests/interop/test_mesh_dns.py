"""Names on real mesh nodes: `wgpy server` and three nodes joined with `wgpy up` (nodes a and b of
user alice, c of bob), each in a network namespace with a resolv.conf of its own
(/etc/netns/NS/resolv.conf, which `ip netns exec` mounts over /etc/resolv.conf: the node takes
the "direct" mode and edits that file). Through the host's own resolver path (glibc's
getaddrinfo inside the namespace): every node resolves the others' full names (HOST.USER.BASE),
HOST.USER and short names (the base domain searched); a name outside the mesh is forwarded to
the upstream resolver the namespace had (dnslib's zone resolver, in the hub namespace), and one
under the server's split DNS domain (`wgpy server --dns-domain corp.example=ADDRESS`) to that
domain's resolver; `ping c`, `wgpy ping c.bob` and `wgpy status` use the names; a query from the
underlay gets no answer, though the address answers pings; after `wgpy down` each resolv.conf is
back byte for byte, also after a daemon was killed (SIGKILL): put back by `wgpy down`, or by the
next `wgpy up`; a fourth node with `--accept-dns=false` leaves its resolv.conf alone.

The resolver's answer time, seen from a client in the node's namespace asking
100.100.100.100 one query at a time, is printed (p50/p99; `pytest -s` shows it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import statistics
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .mesh_lab import HUB4, WGPY, Mesh, MeshNode
from .netns import Lab, wait_for

pytestmark = [pytest.mark.root, pytest.mark.slow]

BASE = "mesh.internal"
UPSTREAM_ZONE = "www.example.test. 60 IN A 192.0.2.80\n"
CORP = "10.99.0.2"  # the split domain's resolver (another address of the hub)
CORP_ZONE = "db.corp.example. 60 IN A 10.1.0.7\n"
# what each namespace's resolv.conf holds before `wgpy up`: the upstream, a search domain and
# options, so that "byte for byte" covers every kind of line
RESOLV_CONF = (
    f"# the lab's resolver\nnameserver {HUB4}\nsearch lab.example\noptions timeout:1 attempts:2\n"
)

GETADDRINFO = """\
import socket, sys
try:
    found = {a[4][0] for a in socket.getaddrinfo(sys.argv[1], None, proto=socket.IPPROTO_UDP)}
except socket.gaierror as e:
    print("error", e.errno)
else:
    print(" ".join(sorted(found)))
"""

# one query at a time to the node's resolver; the seconds each answer took, as JSON
TIMING = """\
import json, socket, sys, time
from dnslib import DNSRecord
name, count, server = sys.argv[1], int(sys.argv[2]), sys.argv[3]
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.settimeout(2)
times = []
for i in range(count):
    query = DNSRecord.question(name).pack()
    start = time.perf_counter()
    sock.sendto(query, (server, 53))
    reply = DNSRecord.parse(sock.recv(4096))
    times.append(time.perf_counter() - start)
    assert reply.rr, reply
print(json.dumps(times))
"""

# a query that expects no answer: prints "silent" or what came back
SILENT = """\
import socket, sys
from dnslib import DNSRecord
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.settimeout(1.5)
sock.sendto(DNSRecord.question(sys.argv[1]).pack(), (sys.argv[2], 53))
try:
    print(DNSRecord.parse(sock.recv(4096)).header)
except TimeoutError:
    print("silent")
"""


@pytest.fixture
def mesh(lab: Lab, request: pytest.FixtureRequest) -> Iterator[Mesh]:
    mesh = Mesh(lab, server_args=("--dns-domain", f"corp.example={CORP}"))
    request.node.mesh = mesh
    yield mesh


def own_resolv_conf(lab: Lab, node: MeshNode) -> Path:
    """/etc/netns/NS/resolv.conf for the node's namespace, removed when the lab closes."""
    directory = Path("/etc/netns") / node.ns.name
    directory.mkdir(parents=True)
    lab.callback(shutil.rmtree, directory, True)
    path = directory / "resolv.conf"
    path.write_text(RESOLV_CONF)
    return path


def resolve(node: MeshNode, name: str) -> str:
    result = node.ns.run([sys.executable, "-c", GETADDRINFO, name], timeout=30)
    return result.stdout.strip()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def test_names_resolve_on_every_node_and_the_host_resolver_is_put_back(
    lab: Lab, mesh: Mesh, tmp_path: Path
) -> None:
    zone = tmp_path / "upstream.zone"
    zone.write_text(UPSTREAM_ZONE)
    upstream = mesh.hub.spawn(
        [sys.executable, "-m", "dnslib.zoneresolver", "--zone", str(zone),
         "--address", HUB4, "--port", "53", "--tcp"],
        log="upstream",
    )  # fmt: skip
    mesh.hub.ip("addr", "add", f"{CORP}/24", "dev", "br0")
    corp_zone = tmp_path / "corp.zone"
    corp_zone.write_text(CORP_ZONE)
    corp = mesh.hub.spawn(
        [sys.executable, "-m", "dnslib.zoneresolver", "--zone", str(corp_zone),
         "--address", CORP, "--port", "53"],
        log="corp",
    )  # fmt: skip
    for process in (upstream, corp):
        wait_for(
            lambda process=process: "Starting Zone Resolver" in process.output(),  # type: ignore[misc]
            timeout=20,
            what="the upstream resolvers",
        )

    alice, bob = mesh.auth_key("alice", "--reusable"), mesh.auth_key("bob")
    policy = tmp_path / "policy.json"  # everyone reaches everyone (two users)
    policy.write_text(json.dumps({"acls": [{"action": "accept", "src": ["*"], "dst": ["*"]}]}))
    mesh.admin("policy", "set", str(policy))
    nodes: dict[str, MeshNode] = {}
    confs: dict[str, Path] = {}
    for name, key in (("a", alice), ("b", alice), ("c", bob)):
        node = nodes[name] = mesh.add_node(name)
        confs[name] = own_resolv_conf(lab, node)
        mesh.up(node, auth_key=key)
    for node in nodes.values():
        mesh.wait_peers(node, {n for n in nodes.values() if n is not node}, timeout=20)

    # the node's resolver took the namespace's resolv.conf (direct mode)
    written = confs["a"].read_text()
    assert written.startswith("# resolv.conf(5) written by wgpy for "), written
    assert written.splitlines()[1:] == [
        "nameserver 100.100.100.100",
        "nameserver fd7a:115c:a1e0::53",
        f"search {BASE} lab.example",
        "options timeout:1 attempts:2",
    ]

    users = {"a": "alice", "b": "alice", "c": "bob"}
    for me, node in nodes.items():
        for other, target in nodes.items():
            if other == me:
                continue
            expected = " ".join(sorted([target.ipv4, target.ipv6]))
            full = f"{other}.{users[other]}.{BASE}"
            for name in (full, f"{other}.{users[other]}", other):
                assert resolve(node, name) == expected, f"{me} resolving {name}"
        # a name outside the mesh: forwarded to the namespace's upstream; one under the split
        # domain (wgpy server --dns-domain) to that domain's resolver
        assert resolve(node, "www.example.test") == "192.0.2.80"
        assert resolve(node, "db.corp.example") == "10.1.0.7"
        assert resolve(node, f"nobody.{BASE}").startswith("error")

    # names where users type them: the system's ping, `wgpy ping` and `wgpy status` on a
    a, c = nodes["a"], nodes["c"]
    assert a.ns.run(["ping", "-c", "1", "-W", "3", "c"], check=False).returncode == 0
    pong = a.ns.run([WGPY, "ping", "c.bob", "--state-dir", str(a.state_dir)]).stdout
    assert pong.startswith(f"pong from c ({c.ipv4}) via direct "), pong
    table = a.ns.run([WGPY, "status", "--state-dir", str(a.state_dir)]).stdout
    assert re.search(rf"{re.escape(c.ipv4)}\s+c\s+bob\s+c\.bob\.{re.escape(BASE)}\s", table)
    assert (
        f"# DNS: names under {BASE} answered at 100.100.100.100 (also corp.example, "
        "forwarded); /etc/resolv.conf sends every name here\n"
    ) in table

    # the upstream was asked by the nodes (their underlay addresses), never for a mesh name
    # (glibc's search list makes nobody.mesh.internal.lab.example, which is not one)
    log = upstream.output()
    assert "www.example.test" in log and f".{BASE}.'" not in log
    assert "'db.corp.example.'" not in log and "'db.corp.example.'" in corp.output()

    # the underlay gets no answer: the hub routes to node a's resolver through its underlay
    # address; the address answers pings, the resolver stays silent
    mesh.hub.ip("route", "add", "100.100.100.100/32", "via", a.underlay)
    mesh.hub.ip("route", "add", f"{a.ipv4}/32", "via", a.underlay)
    for target in ("100.100.100.100", a.ipv4):
        assert mesh.hub.ping(target) == 1
        silent = mesh.hub.run([sys.executable, "-c", SILENT, f"b.alice.{BASE}", target])
        assert silent.stdout.strip() == "silent", silent.stdout
    # and from inside, by the node's own overlay address, it answers
    inside = a.ns.run([sys.executable, "-c", TIMING, f"b.alice.{BASE}", "1", a.ipv4])
    assert len(json.loads(inside.stdout)) == 1

    # the answer time, from a client in node a's namespace (within the rate limit's burst)
    mesh_times = json.loads(
        a.ns.run([sys.executable, "-c", TIMING, f"b.alice.{BASE}", "150", "100.100.100.100"],
                 timeout=60).stdout
    )  # fmt: skip
    forwarded = json.loads(
        a.ns.run([sys.executable, "-c", TIMING, "www.example.test", "40", "100.100.100.100"],
                 timeout=60).stdout
    )  # fmt: skip
    for what, times in (("mesh name", mesh_times), ("forwarded", forwarded)):
        print(
            f"\nresolver answer time, {what}: p50 {statistics.median(times) * 1e3:.2f} ms, "
            f"p99 {percentile(times, 0.99) * 1e3:.2f} ms ({len(times)} queries)"
        )

    # --accept-dns=false: the host's resolver is left alone; the node's still answers
    d = mesh.add_node("d")
    d_conf = own_resolv_conf(lab, d)
    d.ns.run(
        [WGPY, "up", "--login-server", mesh.url(), "--state-dir", str(d.state_dir),
         "--interface", d.ifname, "--hostname", "d", "--auth-key", alice, "--accept-dns=false"],
        timeout=90,
    )  # fmt: skip
    assert d_conf.read_text() == RESOLV_CONF
    answer = d.ns.run([sys.executable, "-c", TIMING, f"a.alice.{BASE}", "1", "100.100.100.100"])
    assert len(json.loads(answer.stdout)) == 1
    mesh.down(d)
    assert d_conf.read_text() == RESOLV_CONF

    # a daemon killed outright leaves the file as it wrote it: `wgpy down` puts it back (a),
    # and so does the next `wgpy up`, which then writes it again (b)
    for name in ("a", "b"):
        node = nodes[name]
        pid = node.daemon_pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        wait_for(
            lambda pid=pid, node=node: pid not in node.ns.pids(),  # type: ignore[misc]
            timeout=10,
            what=f"{name}'s daemon to die",
        )
        assert confs[name].read_text() != RESOLV_CONF
    mesh.down(nodes["a"])
    assert confs["a"].read_text() == RESOLV_CONF
    mesh.up(nodes["b"])
    assert confs["b"].read_text() == written.replace(a.ifname, nodes["b"].ifname)

    for name, node in nodes.items():
        if name != "a":
            mesh.down(node)
        assert confs[name].read_text() == RESOLV_CONF
        assert not (node.state_dir / "resolv.conf.pre-wgpy").exists()
