"""The NAT lab behaves as each router kind should, and its coturn relays with REST credentials.

STUN Binding requests from a node to two relay addresses tell the mapping apart: an easy NAT
gives the same public port for both destinations, a hard NAT a new one each, a firewall none
(the node's own address). Datagrams from anywhere but where the node sent (another host, or
the right host from another port) must not get in; a mapping silent for longer than the
router's conntrack UDP timeout is gone. A node behind a network that drops outbound UDP gets
no STUN answer over UDP but reaches the relay over TCP and TLS. TURN allocations through coturn
(aioice's client, credentials computed as coturn's REST scheme says) relay a datagram to a
public host and back; wrong or expired credentials are refused, a private peer is forbidden.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from .coturn import Coturn, rest_credentials
from .nat_lab import NatLab, Node, Router, probe_events
from .netns import Lab, Process, wait_for

pytestmark = pytest.mark.root

REFLECTOR_PORT = 7000
ECHO_PORT = 7100


@pytest.fixture
def nat(lab: Lab, request: pytest.FixtureRequest) -> Iterator[NatLab]:
    nat = NatLab(lab)
    yield nat
    rep = getattr(request.node, "rep_call", None)
    if rep is None or rep.failed:
        print(f"\n===== NAT lab\n{nat.describe()}")


@pytest.fixture
def relay(nat: NatLab) -> Coturn:
    return nat.coturn()


def stun(nat: NatLab, node: Node, port: int, *targets: str, tcp: bool = False) -> Any:
    """STUN Binding requests from the node's `port` to each target in turn (nat_probe.py)."""
    bind = f"[{node.ipv6}]:{port}" if targets[0].startswith("[") else f"{node.ipv4}:{port}"
    args = ["stun", "--bind", bind, "--timeout", "0.6"]
    for target in targets:
        args += ["--to", target]
    return nat.probe(node.ns, *args, *(["--tcp"] if tcp else []))


def reflector(nat: NatLab, seconds: float, port: int = REFLECTOR_PORT) -> Process:
    """nat_probe.py reflect on the server host: answers each "delay=D" at once and D s later."""
    bind = f"{nat.server.ipv4}:{port}"
    process = nat.spawn_probe(nat.server.ns, "reflect", "--bind", bind, "--for", f"{seconds:g}",
                              log="reflect")  # fmt: skip
    wait_for(lambda: probe_events(process), timeout=10, what="the reflector to start")
    return process


def session(nat: NatLab, node: Node, port: int, *, delay: float, listen: float) -> Process:
    """nat_probe.py session on the node: "delay=D" from `port` to the reflector, then listens."""
    to = f"{nat.server.ipv4}:{REFLECTOR_PORT}"
    return nat.spawn_probe(node.ns, "session", "--bind", f"{node.ipv4}:{port}", "--to", to,
                           "--hello", f"delay={delay:g}", "--listen", f"{listen:g}",
                           log="session")  # fmt: skip


def received(process: Process) -> list[str]:
    """The first word of each datagram a finished session received ("now", "late", ...)."""
    wait_for(
        lambda: any(e["event"] == "done" for e in probe_events(process)),
        timeout=15,
        what="the node's session to end",
    )
    return [e["data"].split()[0] for e in probe_events(process) if e["event"] == "received"]


def inbound(nat: NatLab, node: Node, port: int) -> tuple[str, list[str], int]:
    """The node sends from UDP port `port` to the server host's reflector, which answers at
    once ("now", with the address it saw) and again 2 s later ("late"). In between, another
    host, and the server host from another port, send to that address, unsolicited. Returns
    the address the reflector saw, what got in, and how many packets the router dropped."""
    stranger = nat.host("stranger")
    reflector(nat, 10)
    drops = node.router.drops()
    process = session(nat, node, port, delay=2.0, listen=3.0)

    def answered() -> str:
        for e in probe_events(process):
            if e.get("data", "").startswith("now"):
                return str(e["data"].split()[1])
        return ""

    public = wait_for(answered, timeout=10, what=f"the reflector's answer to reach {node}")
    nat.probe(stranger.ns, "send", "--to", public, "--data", "from a stranger")
    other_port = f"{nat.server.ipv4}:{REFLECTOR_PORT + 1}"
    nat.probe(
        nat.server.ns, "send", "--bind", other_port, "--to", public, "--data", "from another port"
    )
    events = probe_events(process)
    assert not any(e["event"] == "done" or "late" in e.get("data", "") for e in events), (
        "the unsolicited datagrams went out after the node stopped listening; the test is void"
    )
    return public, received(process), node.router.drops() - drops


def relay_targets(nat: NatLab, family: int = 4) -> tuple[str, str]:
    if family == 6:
        return f"[{nat.relay.ipv6}]:3478", f"[{nat.relay.extra6[0]}]:3478"
    return f"{nat.relay.ipv4}:3478", f"{nat.relay.extra4[0]}:3478"


def test_easy_nat_keeps_one_port_for_every_destination(nat: NatLab, relay: Coturn) -> None:
    router = nat.router("easy")
    node = nat.node("a", router)
    out = stun(nat, node, 40001, *relay_targets(nat))
    assert out["mapped"] == [[router.wan4, 40001], [router.wan4, 40001]]  # port kept, too
    # IPv6 is routed, not translated: the node's own address.
    out = stun(nat, node, 40001, *relay_targets(nat, 6))
    assert out["mapped"] == [[node.ipv6, 40001], [node.ipv6, 40001]]
    public, got, dropped = inbound(nat, node, 40002)
    assert (public, got) == (f"{router.wan4}:40002", ["now", "late"])
    assert dropped >= 2, "the router did not drop the unsolicited datagrams"


def test_hard_nat_maps_each_destination_to_a_new_port(nat: NatLab, relay: Coturn) -> None:
    router = nat.router("hard")
    node = nat.node("a", router)
    first, second = stun(nat, node, 40001, *relay_targets(nat))["mapped"]
    assert first[0] == second[0] == router.wan4
    assert first[1] != second[1], "fully-random masquerade gave one port for two destinations"
    public, got, dropped = inbound(nat, node, 40002)
    assert public.startswith(f"{router.wan4}:") and got == ["now", "late"] and dropped >= 2


def test_firewall_translates_nothing_and_drops_unsolicited_inbound(
    nat: NatLab, relay: Coturn
) -> None:
    router = nat.router("firewall")
    node = nat.node("a", router)
    assert node.ipv4.startswith("198.18.")  # a public LAN
    out = stun(nat, node, 40001, *relay_targets(nat))
    assert out["mapped"] == [[node.ipv4, 40001], [node.ipv4, 40001]]
    public, got, dropped = inbound(nat, node, 40002)
    assert (public, got) == (f"{node.ipv4}:40002", ["now", "late"])
    assert dropped >= 2, "the router did not drop the unsolicited datagrams"


def test_udp_blocked_network_reaches_the_relay_over_tcp_only(nat: NatLab, relay: Coturn) -> None:
    router = nat.router("udp_blocked")
    node = nat.node("a", router)
    assert stun(nat, node, 40001, *relay_targets(nat))["mapped"] == [None, None]
    assert stun(nat, node, 40001, relay_targets(nat, 6)[0])["mapped"] == [None]
    out = stun(nat, node, 40002, relay_targets(nat)[0], tcp=True)
    assert out["mapped"] == [[router.wan4, 40002]]


def test_mapping_is_forgotten_after_the_conntrack_udp_timeout(nat: NatLab) -> None:
    timeout = 2
    router = nat.router("easy", udp_timeout=timeout)
    node = nat.node("a", router)
    reflector(nat, 15)
    # Two flows side by side: one answered again before the timeout, one after it.
    early = session(nat, node, 40001, delay=timeout - 1.0, listen=5)
    late = session(nat, node, 40002, delay=timeout + 1.5, listen=5)
    assert received(early) == ["now", "late"]
    assert received(late) == ["now"], "the mapping outlived the conntrack UDP timeout"


def test_node_moves_between_routers_and_a_hard_nat_turns_easy(nat: NatLab, relay: Coturn) -> None:
    hard, easy = nat.router("hard"), nat.router("easy")
    node = nat.node("a", hard)
    first, second = stun(nat, node, 40001, *relay_targets(nat))["mapped"]
    assert first[1] != second[1]

    hard.set_kind("easy", flush_conntrack=True)
    out = stun(nat, node, 40001, *relay_targets(nat))
    assert out["mapped"] == [[hard.wan4, 40001], [hard.wan4, 40001]]
    with pytest.raises(ValueError, match="firewall"):
        hard.set_kind("firewall")

    neighbour = nat.node("b", easy)
    old = node.ipv4
    nat.move(node, easy)
    assert node.router is easy and node.ipv4 != old and node.ipv4.startswith("192.168.2.")
    out = stun(nat, node, 40001, *relay_targets(nat))
    assert out["mapped"] == [[easy.wan4, 40001], [easy.wan4, 40001]]
    # Nodes on one LAN reach each other directly (the router filters only what it routes).
    assert neighbour.ns.ping(node.ipv4) == 1 and neighbour.ns.ping(node.ipv6) == 1


@pytest.mark.parametrize(
    ("transport", "kind"), [("udp", "easy"), ("tcp", "udp_blocked"), ("tls", "udp_blocked")]
)
def test_turn_allocation_relays_to_a_public_peer(
    nat: NatLab, relay: Coturn, transport: str, kind: str
) -> None:
    router: Router = nat.router(kind)
    node = nat.node("a", router)
    peer = f"{nat.server.ipv4}:{ECHO_PORT}"
    reflector(nat, 20, ECHO_PORT)  # echoes what is not "delay=D"
    username, password = relay.credentials("node-a", ttl=600)
    server = relay.stun()[0] if transport != "tls" else f"{relay.addresses[0]}:{relay.tls_port}"
    out = nat.probe(
        node.ns, "turn", "--server", server, "--transport", transport,
        "--username", username, "--password", password, "--peer", peer,
        "--cafile", str(relay.ca_file), "--denied-peer", f"{node.ipv4}:4000",
    )  # fmt: skip
    assert "error" not in out, f"{out}\n{relay.log()}"
    assert out["relayed"][0] == relay.addresses[0]
    assert out["echo"] == "hello through the relay"
    assert out["echo_from"] == [nat.server.ipv4, ECHO_PORT]
    assert out["denied"] == 403, "coturn relayed towards a private address"
    assert out["after_denied"] == "still relaying", "the refusal closed the allocation"


def test_turn_refuses_wrong_and_expired_credentials(nat: NatLab, relay: Coturn) -> None:
    node = nat.node("a", nat.router("easy"))
    peer = f"{nat.server.ipv4}:{ECHO_PORT}"
    username, _ = relay.credentials("node-a")
    _, wrong = rest_credentials(relay.secret + "x", "node-a")
    expired = rest_credentials(relay.secret, "node-a", ttl=-60, now=time.time())
    for user, password in ((username, wrong), expired):
        out = nat.probe(
            node.ns, "turn", "--server", relay.stun()[0], "--username", user,
            "--password", password, "--peer", peer, "--timeout", "2",
        )  # fmt: skip
        assert out.get("code") == 401, out
