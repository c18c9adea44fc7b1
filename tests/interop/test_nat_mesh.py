"""Real mesh nodes (`wgpy up`) behind the NAT lab's routers, a real `wgpy server` answering
STUN on the lab's server host: which path ICE ends on, and real pings both ways over it.

    internet: server host 203.0.113.2 (`wgpy server`, HTTP :8080, STUN :3478 and :3479)
      +-- router (easy | hard | firewall) -- node ...
      +-- a public host (no NAT, no firewall) -- node ...

The lab is IPv4 only: its LANs' IPv6 is routed (firewalled, not NATed), and ICE would
take it, so the NATs would not be on the way. One lab and one server serve the whole
module; each test builds routers and nodes of its own, asserts the path each side saved
for the other (peers.json's ``path``: what wgpy.nat.paths.PathState says) and pings both
ways, and takes its nodes down (their pre-auth key is ephemeral: the server forgets them,
so later tests' nodes do not see them).
Relayed pairs (TURN, with `wgpy server --turn` and coturn): test_nat_mesh_relay.py.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from wgpy.mesh.client.state import StateDir

from .nat_lab import NatLab, Node
from .netns import Lab, Namespace, Process, unique_ifname, wait_for

pytestmark = pytest.mark.root

WGPY = str(Path(sys.executable).parent / "wgpy")
HTTP_PORT = 8080
STUN_PORTS = (3478, 3479)  # two: a node sees whether its mapping varies by destination
NODE_PORT = 41641
TEST_TIMEOUT = 90  # seconds per test (the slow ones: SLOW_TIMEOUT)
SLOW_TIMEOUT = 240


@dataclass(eq=False)
class MeshNode:
    name: str
    ns: Namespace
    state: Path
    ifname: str
    ipv4: str = ""

    def path_to(self, other: MeshNode) -> dict[str, Any] | None:
        """The path this node saved for ``other`` (None before it has one)."""
        with contextlib.suppress(Exception):  # written while we read: look again
            for peer in StateDir(self.state).read_peers():
                if peer.get("hostname") == other.name and isinstance(peer.get("path"), dict):
                    path: dict[str, Any] = peer["path"]
                    return path
        return None

    def kind_to(self, other: MeshNode) -> str | None:
        path = self.path_to(other)
        return None if path is None else str(path.get("kind"))

    def ping(self, other: MeshNode, *, count: int = 3, wait: float = 1) -> int:
        return self.ns.ping(other.ipv4, count=count, wait=wait, interval=0.2)

    def log(self, lines: int = 60) -> str:
        try:
            text = (self.state / "wgpy.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


class World:
    """The module's lab: the internet, a `wgpy server` on its server host, nodes on demand."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.nat = NatLab(lab, ipv6=False)  # IPv4 only: behind the NATs, not around them
        host = self.nat.server
        self.url = f"http://{host.ipv4}:{HTTP_PORT}"
        state = lab.workdir / "server"
        created = host.ns.run([WGPY, "server", "--state-dir", str(state), "apikey", "create"])
        self.api_key = created.stdout.strip()
        stun = [a for port in STUN_PORTS for a in ("--stun-listen", f"{host.ipv4}:{port}")]
        self.server: Process = host.ns.spawn(
            [WGPY, "server", "--listen", f"{host.ipv4}:{HTTP_PORT}", "--state-dir", str(state),
             *stun, *self.server_args()],
            log="server",
        )  # fmt: skip
        wait_for(
            lambda: "listening on" in self.server.output() or not self.server.alive,
            timeout=30,
            what="the server to listen",
        )
        assert self.server.alive, self.server.output()[-3000:]
        self.admin("users", "create", "nat")
        self.nodes: list[MeshNode] = []
        self.names = iter(f"n{i}" for i in range(1000))

    def server_args(self) -> list[str]:
        """More `wgpy server` options (a subclass's: its relays)."""
        return []

    def admin(self, *args: str) -> Any:
        result = self.nat.server.ns.run(
            [WGPY, "admin", "--server", self.url, "--api-key", self.api_key, "--json", *args],
            timeout=30,
        )
        return json.loads(result.stdout) if result.stdout.strip() else None

    def auth_key(self) -> str:
        key = self.admin("preauthkeys", "create", "--user", "nat", "--reusable", "--ephemeral")
        return str(key["key"])

    def up(self, ns: Namespace, auth: str, *args: str, name: str | None = None) -> MeshNode:
        node = MeshNode(name or next(self.names), ns, self.lab.workdir / f"node-{ns.name}",
                        unique_ifname("wn"))  # fmt: skip
        self.nodes.append(node)
        result = ns.run(
            ["env", "LOG_LEVEL=info", WGPY, "up", "--login-server", self.url, "--auth-key", auth,
             "--state-dir", str(node.state), "--interface", node.ifname,
             "--hostname", node.name, "--listen-port", str(NODE_PORT), *args],
            check=False,
            timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, f"wgpy up on {node.name}: {result.stderr}\n{node.log()}"
        found = {n["hostname"]: n for n in self.admin("nodes", "list")}
        node.ipv4 = found[node.name]["ipv4"]
        return node

    def down(self, node: MeshNode) -> None:
        """`wgpy down` (the server forgets an ephemeral node), or kill it if that fails."""
        if node not in self.nodes:
            return
        self.nodes.remove(node)
        result = node.ns.run([WGPY, "down", "--state-dir", str(node.state)], check=False,
                             timeout=30)  # fmt: skip
        pid = StateDir(node.state).daemon_pid()
        if result.returncode != 0 and pid is not None and pid in node.ns.pids():
            os.kill(pid, signal.SIGKILL)

    def pair(
        self, a: Node | Namespace, b: Node | Namespace, *args: str
    ) -> tuple[MeshNode, MeshNode]:
        """Two nodes up (``args``: more `wgpy up` options for both)."""
        auth = self.auth_key()
        ns_a = a.ns if isinstance(a, Node) else a
        ns_b = b.ns if isinstance(b, Node) else b
        return self.up(ns_a, auth, *args), self.up(ns_b, auth, *args)

    def logs(self, *nodes: MeshNode) -> str:
        parts = [f"----- {n.name} ({n.ns.name}) paths: {self._paths(n)}\n{n.log()}" for n in nodes]
        return "\n".join(parts) + "\n" + self.nat.describe()

    def _paths(self, node: MeshNode) -> str:
        return ", ".join(f"{o.name}: {node.path_to(o)}" for o in self.nodes if o is not node)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    if os.geteuid() != 0:
        pytest.skip("interop tests need root (network namespaces)")
    with Lab(tmp_path_factory.mktemp("nat-mesh")) as lab:
        yield World(lab)


@pytest.fixture
def mesh(world: World, request: pytest.FixtureRequest) -> Iterator[World]:
    """The module's world for one test: a hard timeout, the test's nodes taken down after it,
    their logs printed when it failed."""
    seconds = SLOW_TIMEOUT if request.node.get_closest_marker("slow") else TEST_TIMEOUT

    def expired(signum: int, frame: object) -> None:
        raise TimeoutError(f"the test exceeded its hard timeout of {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield world
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        rep = getattr(request.node, "rep_call", None)
        if (rep is None or rep.failed) and world.nodes:
            print(f"\n===== nat mesh logs\n{world.logs(*world.nodes)}")
        for node in list(world.nodes):
            world.down(node)


def wait_kinds(mesh: World, a: MeshNode, b: MeshNode, kind: str, timeout: float) -> float:
    """Wait until each side's path to the other is ``kind``; the seconds it took."""
    start = time.monotonic()
    wait_for(
        lambda: a.kind_to(b) == kind and b.kind_to(a) == kind,
        timeout=timeout,
        interval=0.1,
        what=f"{kind} paths both ways ({a.name}: {a.path_to(b)}, {b.name}: {b.path_to(a)})",
    )
    return time.monotonic() - start


def pings_both_ways(a: MeshNode, b: MeshNode, count: int = 3) -> None:
    assert a.ping(b, count=count) == count, f"{a.name} -> {b.name}"
    assert b.ping(a, count=count) == count, f"{b.name} -> {a.name}"


def assert_direct(mesh: World, a: MeshNode, b: MeshNode, timeout: float = 15) -> None:
    wait_kinds(mesh, a, b, "direct", timeout)
    pings_both_ways(a, b)
    assert a.kind_to(b) == b.kind_to(a) == "direct"  # the pings did not move the path


def sends_to(a: MeshNode, b: MeshNode) -> str | None:
    """The address ``a`` sends ``b``'s packets to, if it has a path."""
    path = a.path_to(b)
    if path is None or not path.get("endpoint"):
        return None
    return str(path["endpoint"]).rsplit(":", 1)[0].strip("[]")


def endpoint_host(a: MeshNode, b: MeshNode) -> str:
    path = a.path_to(b)
    assert path is not None and path["endpoint"], path
    return str(path["endpoint"]).rsplit(":", 1)[0].strip("[]")


# ---------------------------------------------------------------------- direct pairs


def test_easy_and_easy_end_direct(mesh: World) -> None:
    r1, r2 = mesh.nat.router("easy"), mesh.nat.router("easy")
    a, b = mesh.pair(mesh.nat.node("ee-a", r1), mesh.nat.node("ee-b", r2))
    assert_direct(mesh, a, b)
    # each sends to the other's router: the mapping the NAT gave the peer's WireGuard port
    assert endpoint_host(a, b) == r2.wan4 and endpoint_host(b, a) == r1.wan4


def test_easy_and_firewall_end_direct(mesh: World) -> None:
    nat, fw = mesh.nat.router("easy"), mesh.nat.router("firewall")
    fw_node = mesh.nat.node("ef-f", fw)
    a, b = mesh.pair(mesh.nat.node("ef-e", nat), fw_node)
    assert_direct(mesh, a, b)
    assert endpoint_host(a, b) == fw_node.ipv4 and endpoint_host(b, a) == nat.wan4


def test_firewall_and_firewall_end_direct(mesh: World) -> None:
    r1, r2 = mesh.nat.router("firewall"), mesh.nat.router("firewall")
    n1, n2 = mesh.nat.node("ff-a", r1), mesh.nat.node("ff-b", r2)
    a, b = mesh.pair(n1, n2)
    assert_direct(mesh, a, b)
    assert {endpoint_host(a, b), endpoint_host(b, a)} == {n1.ipv4, n2.ipv4}


def test_hard_nat_and_an_open_host_end_direct(mesh: World) -> None:
    """A NAT that maps every destination to a new port still gets a direct path to a host
    that filters nothing: the checks from inside teach the open host the mapping
    (a peer-reflexive candidate)."""
    hard = mesh.nat.router("hard")
    a, b = mesh.pair(mesh.nat.node("ho-h", hard), mesh.nat.host("ho-o").ns)
    assert_direct(mesh, a, b)
    assert endpoint_host(b, a) == hard.wan4


def test_hard_nat_and_easy_nat_find_no_direct_path(mesh: World) -> None:
    """Measured: hard (fully-random) against easy ends without a direct path, 4 of 4 runs.
    The easy router's conntrack lets in only what comes from the address and port its node
    sent to, and the hard router gives the flow to the easy side a port nobody can learn
    in advance; the hard side's checks are dropped by the easy router and the easy side's
    by the hard one. Such a pair needs the relay (tested with it)."""
    hard, easy = mesh.nat.router("hard"), mesh.nat.router("easy")
    a, b = mesh.pair(mesh.nat.node("he-h", hard), mesh.nat.node("he-e", easy))
    deadline = time.monotonic() + 4  # easy pairs are direct within about 1 s
    while time.monotonic() < deadline:
        assert a.kind_to(b) != "direct" and b.kind_to(a) != "direct"
        time.sleep(0.2)
    assert easy.drops() > 0 or hard.drops() > 0  # the checks were tried, and dropped


@pytest.mark.slow
def test_a_hard_nat_that_becomes_easy_upgrades_to_direct(mesh: World) -> None:
    """No direct path while the NAT is hard; once it is easy the pair goes direct by itself:
    within a retry round (about 30 s, jittered) or the node's next look at its mapping."""
    nat, easy = mesh.nat.router("hard"), mesh.nat.router("easy")
    a, b = mesh.pair(mesh.nat.node("hu-h", nat), mesh.nat.node("hu-e", easy))
    time.sleep(3)
    assert a.kind_to(b) != "direct" and b.kind_to(a) != "direct"
    nat.set_kind("easy", flush_conntrack=True)
    took = wait_kinds(mesh, a, b, "direct", timeout=60)
    pings_both_ways(a, b)
    print(f"direct {took:.1f} s after the NAT became easy")


# ---------------------------------------------------------------------- paths over time


def pinger(node: MeshNode, other: MeshNode, seconds: float, interval: float = 0.1) -> Process:
    """Ping in the background (one line per reply, with its time: `ping -D -O`)."""
    count = int(seconds / interval)
    return node.ns.spawn(
        ["ping", "-n", "-D", "-O", "-W", "1", "-i", f"{interval:g}", "-c", str(count),
         other.ipv4],
        log=f"ping-{other.name}",
    )  # fmt: skip


def reply_gap(process: Process, after: float) -> float:
    """The longest gap between replies (`ping -D` timestamps) after ``after`` (wall clock),
    counting from ``after`` to the first reply."""
    times = [after]
    for line in process.output().splitlines():
        if line.startswith("[") and "bytes from" in line:
            stamp = float(line[1 : line.index("]")])
            if stamp >= after:
                times.append(stamp)
    return max(b - a for a, b in itertools.pairwise(times)) if len(times) > 1 else -1


def test_a_node_moving_behind_another_nat_is_back_within_5_seconds(mesh: World) -> None:
    first, second, peer_nat = (mesh.nat.router("easy") for _ in range(3))
    mover = mesh.nat.node("mv-m", first)
    a, b = mesh.pair(mover, mesh.nat.node("mv-p", peer_nat))
    assert_direct(mesh, a, b)
    ping = pinger(b, a, seconds=8)
    time.sleep(1)
    moved_at = time.time()
    mesh.nat.move(mover, second)
    wait_for(
        lambda: sends_to(b, a) == second.wan4 and a.kind_to(b) == "direct",
        timeout=10,
        interval=0.1,
        what=f"the peer to send to the mover's new NAT ({b.path_to(a)}, {a.path_to(b)})",
    )
    back = time.time() - moved_at
    wait_for(lambda: not ping.alive, timeout=25, what="the pings to end")
    gap = reply_gap(ping, moved_at)
    print(f"direct again {back:.1f} s after the move; longest gap between replies {gap:.1f} s")
    assert 0 < gap <= 5, ping.output()[-3000:]
    pings_both_ways(a, b)


def test_a_readdressed_node_is_back_within_5_seconds(mesh: World) -> None:
    """A new LAN address behind the same NAT: the old flows still hold the router's port,
    so the node's WireGuard socket gets a new public port; the peer follows."""
    router, peer_nat = mesh.nat.router("easy"), mesh.nat.router("easy")
    node = mesh.nat.node("ra-m", router)
    a, b = mesh.pair(node, mesh.nat.node("ra-p", peer_nat))
    assert_direct(mesh, a, b)
    before = (b.path_to(a) or {}).get("endpoint")
    ping = pinger(b, a, seconds=8)
    time.sleep(1)
    new4, _ = router.next_addresses()
    readdressed_at = time.time()
    node.ns.ip("addr", "del", f"{node.ipv4}/24", "dev", "eth0")  # takes the route with it
    node.ns.ip("addr", "add", f"{new4}/24", "dev", "eth0")
    node.ns.ip("route", "add", "default", "via", router.gateway4)
    node.ipv4 = new4
    wait_for(
        lambda: (
            (b.path_to(a) or {}).get("endpoint") not in (None, before)
            and b.kind_to(a) == a.kind_to(b) == "direct"
        ),
        timeout=10,
        interval=0.1,
        what=f"a new path to the readdressed node ({before} -> {b.path_to(a)}, {a.path_to(b)})",
    )
    back = time.time() - readdressed_at
    assert sends_to(b, a) == router.wan4
    wait_for(lambda: not ping.alive, timeout=20, what="the pings to end")
    gap = reply_gap(ping, readdressed_at)
    print(f"direct again {back:.1f} s after the new address; longest gap {gap:.1f} s")
    assert 0 < gap <= 5, ping.output()[-3000:]
    pings_both_ways(a, b)


@pytest.mark.slow
def test_an_idle_pair_behind_5_second_mappings_stays_reachable(mesh: World) -> None:
    """Both routers forget a UDP mapping 5 s after its last packet; nobody tells the nodes
    (no `--nat-keepalive`): each measures its mapping lifetime and keeps its path alive
    under it; after 60 s without traffic each side still reaches the other at once, the
    other first too. (With `--nat-keepalive 25`, measurement off, the first ping after the
    idle minute went unanswered.)"""
    r1, r2 = mesh.nat.router("easy", udp_timeout=5), mesh.nat.router("easy", udp_timeout=5)
    a, b = mesh.pair(mesh.nat.node("id-a", r1), mesh.nat.node("id-b", r2))
    assert_direct(mesh, a, b)
    for node in (a, b):
        nat = wait_measured(node)
        assert nat["keepalive"] < 5, nat
    time.sleep(60)
    assert a.kind_to(b) == b.kind_to(a) == "direct"
    assert a.ping(b, count=1, wait=1) == 1 and b.ping(a, count=1, wait=1) == 1
    time.sleep(30)
    assert b.ping(a, count=1, wait=1) == 1 and a.ping(b, count=1, wait=1) == 1


# ---------------------------------------------------------------------- mapping lifetimes


def status_nat(node: MeshNode) -> dict[str, Any] | None:
    """What `wgpy status --json` says of the node's NAT (``self.nat``)."""
    result = node.ns.run([WGPY, "status", "--json", "--state-dir", str(node.state)], timeout=30)
    nat = json.loads(result.stdout)["self"]["nat"]
    return nat if isinstance(nat, dict) else None


def wait_measured(node: MeshNode, timeout: float = 20) -> dict[str, Any]:
    """Wait until the node's mapping lifetime measurement ended; `wgpy status`'s ``nat``."""
    found: list[dict[str, Any]] = []

    def done() -> bool:
        nat = status_nat(node)
        if nat is None or nat.get("keepalive_source") == "measuring":
            return False
        found.append(nat)
        return True

    wait_for(done, timeout=timeout, interval=0.5, what=f"{node.name}'s measurement")
    return found[-1]


@pytest.mark.parametrize("kind", ["easy", "hard", "firewall"])
def test_a_node_measures_a_5_second_mapping_lifetime_and_keeps_alive_under_it(
    mesh: World, kind: str
) -> None:
    """A router that forgets a UDP mapping 5 s after its last packet: the node measures a
    lifetime under 6 s within seconds (probes at 2, 4, 6 s: the one at 6 s dies and ends
    it) and keeps alive under it; the same through a NAT that maps each destination anew
    (the answer comes from where the probe socket sent) and a firewall without NAT."""
    router = mesh.nat.router(kind, udp_timeout=5)  # type: ignore[arg-type]
    node = mesh.up(mesh.nat.node(f"lt-{kind[:4]}", router).ns, mesh.auth_key())
    started = time.monotonic()
    nat = wait_measured(node)
    print(f"{kind}, 5 s mappings: {nat}, known {time.monotonic() - started:.1f} s after up")
    assert nat["keepalive_source"] == "measured" and nat["error"] is None, nat
    assert 2 <= nat["mapping_lifetime"] < nat["mapping_lifetime_below"] <= 6, nat
    assert 1 <= nat["keepalive"] < nat["mapping_lifetime"], nat
    assert nat["measurement_seconds"] < 10, nat
    assert "keepalive" in node.log(200) and "NAT mapping lifetime measured" in node.log(200)


def test_without_udp_the_measurement_gives_up_quietly(mesh: World) -> None:
    router = mesh.nat.router("udp_blocked")
    node = mesh.up(mesh.nat.node("lt-nudp", router).ns, mesh.auth_key())
    nat = wait_measured(node)
    assert nat["keepalive_source"] == "default" and nat["keepalive"] == 25, nat
    assert nat["mapping_lifetime"] is None and "did not answer" in nat["error"], nat


@pytest.mark.slow
def test_a_router_s_default_30_second_mappings_keep_a_keepalive_near_the_default(
    mesh: World,
) -> None:
    """Linux's default (30 s for a flow that saw one answer): the 28 s probe survives, the
    35 s one dies; the keepalive is 0.8 x 28 s, under the mapping's life."""
    router = mesh.nat.router("easy")
    node = mesh.up(mesh.nat.node("lt-dflt", router).ns, mesh.auth_key())
    nat = wait_measured(node, timeout=60)
    print(f"easy, default mappings: {nat}")
    assert (nat["mapping_lifetime"], nat["mapping_lifetime_below"]) == (28, 35), nat
    assert nat["keepalive"] == 22.4, nat


# ---------------------------------------------------------------------- hostile input

FLOOD = r"""
import os, socket, struct, sys
from aioice import stun
host, port = sys.argv[1], int(sys.argv[2])
COOKIE = 0x2112A442
def junk_stun():
    body = os.urandom(os.urandom(1)[0] % 64)
    kind = int.from_bytes(os.urandom(2)) & 0x3FFF
    length = int.from_bytes(os.urandom(2)) if os.urandom(1)[0] & 1 else len(body)
    return struct.pack("!HHI", kind, length & 0xFFFF, COOKIE) + os.urandom(12) + body
def forged_check():
    m = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
    m.attributes["USERNAME"] = os.urandom(6).hex() + ":" + os.urandom(6).hex()
    m.attributes["PRIORITY"] = 1
    m.add_message_integrity(os.urandom(16))
    m.add_fingerprint()
    return bytes(m)
def stray_answer():
    m = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE)
    m.attributes["XOR-MAPPED-ADDRESS"] = ("192.0.2.1", 1)
    return bytes(m)
def channel_data():
    return bytes([0x40 + os.urandom(1)[0] % 0x3F]) + os.urandom(3 + os.urandom(1)[0] % 200)
kinds = [junk_stun, forged_check, stray_answer, channel_data]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sent = 0
for i in range(12000):
    try:
        s.sendto(kinds[i % 4](), (host, port))
        sent += 1
    except OSError:
        pass
print(sent)
"""


def test_a_flood_of_hostile_stun_on_the_wireguard_port_is_counted_and_harms_nothing(
    mesh: World,
) -> None:
    """A host on the internet floods an open node's WireGuard port with 12,000 STUN-shaped
    datagrams (malformed, forged checks with a stranger's key, answers to nothing, junk
    ChannelData) while its peer pings it: the pings are answered, the path stays direct, the
    node runs on, and `wgpy status --json` shows the drops by reason."""
    easy = mesh.nat.router("easy")
    open_host = mesh.nat.host("hs-o")
    a, b = mesh.pair(open_host.ns, mesh.nat.node("hs-e", easy))
    assert_direct(mesh, a, b)
    flooder = mesh.nat.host("hs-f")
    pinger = b.ns.spawn(["ping", "-n", "-i", "0.05", "-c", "100", "-W", "1", a.ipv4], log="ping")
    try:
        flood = flooder.ns.run([sys.executable, "-c", FLOOD, open_host.ipv4, str(NODE_PORT)],
                               timeout=60)  # fmt: skip
        assert int(flood.stdout) >= 11000
        wait_for(lambda: not pinger.alive, timeout=30, what="the pings to end")
    finally:
        pinger.stop()
    received = int(re.search(r"(\d+) received", pinger.output()).group(1))  # type: ignore[union-attr]
    assert received >= 95, pinger.output()
    assert a.kind_to(b) == b.kind_to(a) == "direct"
    pings_both_ways(a, b)

    def drops() -> dict[str, int]:
        status = a.ns.run([WGPY, "status", "--json", "--state-dir", str(a.state)]).stdout
        report = json.loads(status)
        assert report["self"]["running"]
        return dict((report["self"].get("nat") or {}).get("drops") or {})

    # saved every 5 s while they change; most of the 12,000 arrive (some may be lost on the way)
    wait_for(lambda: sum(drops().values()) >= 6000, timeout=15, what=f"the drops ({drops()})")
    assert len(drops()) >= 3, drops()  # counted by reason
    # the forged checks: refused by the path manager (not this node's ufrag), counted too
    assert sum(n for r, n in drops().items() if r.startswith("check-")) >= 1000, drops()
    print(f"flood: {drops()}; pings {received}/100")
