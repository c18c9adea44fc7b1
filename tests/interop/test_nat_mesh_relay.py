"""Relayed mesh paths end to end: real `wgpy up` nodes behind the NAT lab's routers, the real
`wgpy server --turn URL --turn-secret FILE` handing them short-lived TURN credentials, and two
real relays (coturn) on the internet; the path each side saved (`wgpy status --json`) and real
pings both ways.

    internet: server host 203.0.113.2 (`wgpy server`: HTTP :8080, STUN :3478/:3479, --turn)
      +-- relay host  203.0.113.3 (coturn, UDP/TCP 3478)      relay "203.0.113.3"
      +-- relay2 host 203.0.113.5 (coturn, the same secret)    relay "203.0.113.5"
      +-- routers (easy | hard | udp_blocked) -- nodes

One lab, one server and the two relays serve the module (test_nat_mesh.py's World); a test
that kills a relay starts it again when it ends (`relays_up`).
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from .coturn import LAB_PEER_RANGES, Coturn, start_coturn
from .nat_lab import Host
from .netns import Lab, Process, wait_for
from .test_nat_mesh import (
    WGPY,
    MeshNode,
    World,
    assert_direct,
    mesh,  # noqa: F401 (the fixture, for the tests below)
    pinger,
    pings_both_ways,
    wait_kinds,
)

pytestmark = pytest.mark.root


class RelayWorld(World):
    """test_nat_mesh.py's world with two relays the server names (`--turn`, twice each)."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.relays: dict[str, Coturn] = {}
        self.relay_hosts: dict[str, Host] = {}
        super().__init__(lab)

    def server_args(self) -> list[str]:
        hosts = [self.nat.relay, self.nat.host("relay2")]
        secret = ""
        for host in hosts:
            relay = self._start(host, secret)
            secret = relay.secret
        path = self.relays[hosts[0].ipv4].write_secret(self.lab.workdir / "turn-secret")
        args = []
        for host in hosts:
            relay = self.relays[host.ipv4]
            for url in relay.urls()[:2]:  # UDP and TCP (TLS: test_relay_nat.py)
                args += ["--turn", url]
        return [*args, "--turn-secret", str(path)]

    def _start(self, host: Host, secret: str) -> Coturn:
        relay = start_coturn(
            self.lab,
            ns=host.ns,
            addresses=[host.ipv4],  # one address: the relay's name is its address
            allowed_peers=LAB_PEER_RANGES,
            secret=secret or None,
        )
        self.relays[host.ipv4], self.relay_hosts[host.ipv4] = relay, host
        return relay

    def kill_relay(self, name: str) -> None:
        self.relays[name].stop()

    def relays_up(self) -> None:
        """Start again the relays a test killed (same address, ports and secret)."""
        secret = next(iter(self.relays.values())).secret
        for name, relay in list(self.relays.items()):
            if not relay.alive:
                self._start(self.relay_hosts[name], secret)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    if os.geteuid() != 0:
        pytest.skip("interop tests need root (network namespaces)")
    with Lab(tmp_path_factory.mktemp("nat-mesh-relay")) as lab:
        yield RelayWorld(lab)


@pytest.fixture
def relayed(mesh: World) -> Iterator[RelayWorld]:  # noqa: F811
    assert isinstance(mesh, RelayWorld)
    try:
        yield mesh
    finally:
        mesh.relays_up()


def status(node: MeshNode) -> dict[str, Any]:
    """`wgpy status --json` on the node."""
    result = node.ns.run([WGPY, "status", "--json", "--state-dir", str(node.state)], timeout=30)
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def status_path(node: MeshNode, other: MeshNode) -> dict[str, Any] | None:
    """The path `wgpy status --json` shows for ``other``."""
    for peer in status(node)["peers"]:
        if peer["hostname"] == other.name:
            path: dict[str, Any] | None = peer["path"]
            return path
    return None


def relay_of(a: MeshNode, b: MeshNode) -> str:
    path = a.path_to(b)
    assert path is not None and path["kind"] == "relay" and path["relay"], path
    return str(path["relay"])


def count_replies(process: Process) -> tuple[int, int]:
    """(sent, received) of a finished `ping`."""
    match = re.search(r"(\d+) packets transmitted, (\d+) received", process.output())
    assert match, process.output()[-2000:]
    return int(match[1]), int(match[2])


def test_hard_and_hard_are_relayed_and_ping_both_ways(relayed: RelayWorld) -> None:
    started = time.monotonic()
    a, b = relayed.pair(
        relayed.nat.node("rh-a", relayed.nat.router("hard")),
        relayed.nat.node("rh-b", relayed.nat.router("hard")),
    )
    up = time.monotonic() - started
    took = wait_kinds(relayed, a, b, "relay", timeout=15)
    pings_both_ways(a, b)
    for me, other in ((a, b), (b, a)):
        path = status_path(me, other)
        assert path is not None and path["kind"] == "relay", path
        assert path["relay"] in relayed.relays, path
        relay = status(me)["self"]["relay"]
        assert relay["in_use"] in relayed.relays and relay["transport"] == "udp", relay
        assert status(me)["self"]["relay_problem"] is None
    print(f"relayed both ways {took:.2f} s after both were up ({up:.1f} s to bring them up)")


def test_easy_and_hard_find_no_direct_path_and_are_relayed(relayed: RelayWorld) -> None:
    """An easy NAT against a hard one: no direct pair works here (test_nat_mesh.py says why),
    so the pair ends on the relay and pings both ways; it is never direct meanwhile."""
    a, b = relayed.pair(
        relayed.nat.node("rx-e", relayed.nat.router("easy")),
        relayed.nat.node("rx-h", relayed.nat.router("hard")),
    )
    took = wait_kinds(relayed, a, b, "relay", timeout=15)
    pings_both_ways(a, b)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        assert a.kind_to(b) == b.kind_to(a) == "relay"
        time.sleep(0.2)
    print(f"relayed both ways {took:.2f} s after both were up")


def test_a_relayed_pair_goes_on_while_the_coordination_server_is_down(
    relayed: RelayWorld,
) -> None:
    """The data plane does not depend on the server: with `wgpy server` frozen (SIGSTOP: it
    answers neither HTTP nor STUN), a relayed pair's pings go on for 15 s through the relay,
    its health checks and the ICE consent checks; the pair is still relayed after."""
    a, b = relayed.pair(
        relayed.nat.node("rs-a", relayed.nat.router("hard")),
        relayed.nat.node("rs-b", relayed.nat.router("hard")),
    )
    wait_kinds(relayed, a, b, "relay", timeout=15)
    pings_both_ways(a, b)
    ping = pinger(a, b, seconds=15, interval=0.1)
    relayed.server.signal(signal.SIGSTOP)
    try:
        wait_for(lambda: not ping.alive, timeout=40, what="the pings to end")
        assert a.kind_to(b) == b.kind_to(a) == "relay"
    finally:
        relayed.server.signal(signal.SIGCONT)
    sent, received = count_replies(ping)
    assert received >= sent - 3, ping.output()[-3000:]
    pings_both_ways(a, b)


def test_a_network_without_udp_is_relayed_over_tcp(relayed: RelayWorld) -> None:
    a, b = relayed.pair(
        relayed.nat.node("ru-u", relayed.nat.router("udp_blocked")),
        relayed.nat.node("ru-e", relayed.nat.router("easy")),
    )
    took = wait_kinds(relayed, a, b, "relay", timeout=20)
    pings_both_ways(a, b)
    relay = status(a)["self"]["relay"]
    assert relay["in_use"] in relayed.relays and relay["transport"] == "tcp", relay
    path = status_path(a, b)
    assert path is not None and path["kind"] == "relay", path
    print(f"relayed over TCP {took:.2f} s after both were up")


def test_a_direct_path_cut_at_a_router_falls_back_to_the_relay(relayed: RelayWorld) -> None:
    r1, r2 = relayed.nat.router("easy"), relayed.nat.router("easy")
    a, b = relayed.pair(relayed.nat.node("rc-a", r1), relayed.nat.node("rc-b", r2))
    assert_direct(relayed, a, b)
    ping = pinger(a, b, seconds=8, interval=0.1)
    time.sleep(1)
    # a's router drops UDP to and from b's router from now on (the relays still pass)
    r1.ns.run(
        ["nft", "-f", "-"],
        input=(
            "table inet cut {\n chain forward {\n  type filter hook forward priority -10;\n"
            f"  ip daddr {r2.wan4} meta l4proto udp drop\n"
            f"  ip saddr {r2.wan4} meta l4proto udp drop\n }}\n}}\n"
        ),
    )
    cut = time.monotonic()
    wait_kinds(relayed, a, b, "relay", timeout=10)
    took = time.monotonic() - cut
    wait_for(lambda: not ping.alive, timeout=20, what="the pings to end")
    sent, received = count_replies(ping)
    lost = sent - received
    print(f"relayed {took:.2f} s after the cut; {lost} of {sent} pings lost (0.1 s apart)")
    assert took < 5, took
    assert lost <= 50, ping.output()[-3000:]  # at most 5 s of pings
    pings_both_ways(a, b)


def test_a_dead_relay_loses_nothing_on_a_direct_path_and_says_so(relayed: RelayWorld) -> None:
    a, b = relayed.pair(
        relayed.nat.node("rd-a", relayed.nat.router("easy")),
        relayed.nat.node("rd-b", relayed.nat.router("easy")),
    )
    assert_direct(relayed, a, b)
    ping = pinger(a, b, seconds=10, interval=0.1)
    for name in relayed.relays:
        relayed.kill_relay(name)
    killed = time.monotonic()

    def said() -> bool:
        problems = [status(n)["self"]["relay_problem"] for n in (a, b)]
        return all(p is not None and p.startswith("no relay answers") for p in problems)

    wait_for(said, timeout=20, interval=0.5, what="`wgpy status` to say the relays are gone")
    noticed = time.monotonic() - killed
    wait_for(lambda: not ping.alive, timeout=25, what="the pings to end")
    sent, received = count_replies(ping)
    assert sent == received, ping.output()[-3000:]
    assert a.kind_to(b) == b.kind_to(a) == "direct"
    report = status(a)["self"]
    assert report["relay"]["in_use"] is None, report["relay"]
    assert report["relay_problem"].startswith("no relay answers"), report["relay_problem"]
    assert all(r["reachable"] is False for r in report["relay"]["relays"]), report["relay"]
    text = a.ns.run([WGPY, "status", "--state-dir", str(a.state)], timeout=30).stdout
    assert "# no relay answers, so peers without a direct path" in text, text
    assert "# relay " in text and "Errno" not in text, text  # each relay, why in words
    print(f"`wgpy status` said the relays were gone {noticed:.1f} s after they died; "
          f"{received} of {sent} pings answered meanwhile")  # fmt: skip


def test_a_dead_relay_in_use_is_replaced_by_the_other(relayed: RelayWorld) -> None:
    a, b = relayed.pair(
        relayed.nat.node("rr-a", relayed.nat.router("hard")),
        relayed.nat.node("rr-b", relayed.nat.router("hard")),
    )
    wait_kinds(relayed, a, b, "relay", timeout=15)
    pings_both_ways(a, b)
    dead = relay_of(a, b)
    ping = pinger(a, b, seconds=8, interval=0.1)
    relayed.kill_relay(dead)
    killed = time.monotonic()

    def replaced() -> bool:
        paths = [a.path_to(b), b.path_to(a)]
        return all(
            p is not None and p["kind"] == "relay" and p["relay"] not in (None, dead) for p in paths
        )

    wait_for(
        replaced,
        timeout=20,
        interval=0.1,
        what=f"both sides relayed through the other relay ({a.path_to(b)}, {b.path_to(a)})",
    )
    took = time.monotonic() - killed
    pings_both_ways(a, b)
    wait_for(lambda: not ping.alive, timeout=30, what="the pings to end")
    sent, received = count_replies(ping)
    print(f"relayed through the other relay {took:.2f} s after the one in use died; "
          f"{sent - received} of {sent} pings lost (0.1 s apart)")  # fmt: skip
    for node in (a, b):
        relay = status(node)["self"]["relay"]
        assert relay["in_use"] not in (None, dead), relay
    assert took < 5, took


FWMARK = 0x5157
TABLE = 5157


def test_the_relay_carries_the_fwmark_past_policy_routing(relayed: RelayWorld) -> None:
    """wg-quick-style policy routing (as for an exit node): `ip rule add not fwmark M table T`,
    and in T, routes that would swallow unmarked traffic to the relays (blackholes here; a
    default route into the tunnel in real life). The node's network blocks UDP, so its
    packets go through its own relay over TCP: while the interface has no mark they are lost;
    `wg set IF fwmark M` marks the relay's sockets too (the open ones, and any new one), and
    the pings pass again."""
    a, b = relayed.pair(
        relayed.nat.node("rm-u", relayed.nat.router("udp_blocked")),
        relayed.nat.node("rm-e", relayed.nat.router("easy")),
    )
    wait_kinds(relayed, a, b, "relay", timeout=20)
    pings_both_ways(a, b)
    assert status(a)["self"]["relay"]["transport"] == "tcp"
    for relay in relayed.relays:
        a.ns.ip("route", "add", "blackhole", f"{relay}/32", "table", str(TABLE))
    a.ns.ip("rule", "add", "not", "fwmark", hex(FWMARK), "table", str(TABLE), "pref", "100")
    assert a.ping(b, count=3, wait=1) == 0  # unmarked: swallowed
    a.ns.run(["wg", "set", a.ifname, "fwmark", hex(FWMARK)], timeout=15)
    marked = time.monotonic()
    wait_for(lambda: a.ping(b, count=1, wait=1) == 1, timeout=15, what="pings through the relay")
    took = time.monotonic() - marked
    pings_both_ways(a, b, count=5)
    assert a.kind_to(b) == b.kind_to(a) == "relay"
    print(f"pings passed {took:.1f} s after the mark was set")
