"""The relay's pure parts (wgpy.nat.relay's choice of relay, its candidate) and the relayed
path's key in the core and the UDP bind (wgpy.endpoint.RelayKey), without a relay."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest
from support import PipeTun, ipv4_packet

from wgpy.device.interface import Interface
from wgpy.device.udp import UdpBind
from wgpy.endpoint import Endpoint, RelayKey
from wgpy.nat import relay as relay_module
from wgpy.nat.ice import parse_candidate
from wgpy.nat.relay import (
    SO_MARK,
    Attempt,
    RelayLink,
    RelayManager,
    choose,
    marked_socket,
    relay_candidate,
    score,
)
from wgpy.nat.servers import TurnServer, parse_turn_url
from wgpy.protocol.crypto import generate_private_key, public_key
from wgpy.protocol.peer import without_source

UDP = parse_turn_url("turn:198.51.100.1:3478?transport=udp")
TCP = parse_turn_url("turn:198.51.100.1:3478?transport=tcp")
TLS = parse_turn_url("turns:198.51.100.1:443?transport=tcp")
FAR_UDP = parse_turn_url("turn:198.51.100.2:3478?transport=udp")


class Link:
    """A relay link as the bind and the pairs see it: a name, and the sends it was given."""

    name = "relay.example"

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []
        self.relayed = ("198.51.100.1", 50000)
        self.mapped: tuple[str, int] | None = ("203.0.113.7", 41641)

    def send(self, data: bytes, address: tuple[str, int]) -> None:
        self.sent.append((data, address))


def test_the_nearest_relay_wins_then_its_best_transport() -> None:
    attempts = [
        Attempt(FAR_UDP, rtt=0.080, relay=1),
        Attempt(TLS, rtt=0.009, relay=0),
        Attempt(TCP, rtt=0.012, relay=0),
        Attempt(UDP, rtt=0.020, relay=0),
    ]
    best = choose(attempts)
    assert best is not None and best.url is UDP  # relay 0 is nearer; UDP is its best
    # UDP blocked: TCP on the same relay, not the far relay's UDP
    best = choose([a for a in attempts if a.url is not UDP])
    assert best is not None and best.url is TCP
    # only TLS gets out (web traffic only)
    best = choose([Attempt(UDP, error="no answer in time"), Attempt(TLS, rtt=0.03)])
    assert best is not None and best.url is TLS
    assert choose([Attempt(UDP, error="no answer in time")]) is None
    assert choose([]) is None


def test_a_stream_counts_a_little_more_than_it_measures() -> None:
    assert score(0.010, UDP) < score(0.010, TCP) < score(0.010, TLS)
    # a near relay over TCP beats a far one over UDP
    near = Attempt(TCP, rtt=0.010, relay=0)
    far = Attempt(FAR_UDP, rtt=0.050, relay=1)
    assert choose([far, near]) is near


def test_the_relayed_candidate_is_reported_and_read_back_as_the_peers_see_it() -> None:
    link = Link()
    candidate = relay_candidate(link)  # type: ignore[arg-type]
    assert candidate.link is link and candidate.type == "relay"
    assert (candidate.host, candidate.port) == link.relayed
    parsed = parse_candidate(candidate.to_sdp())  # what the server checks and peers read
    assert (parsed.type, parsed.host, parsed.port) == ("relay", "198.51.100.1", 50000)
    assert parsed.related_address == "203.0.113.7"
    assert parsed.priority < 2**24  # type preference 0: below every host and srflx one


def test_a_relay_key_keeps_its_link_where_the_core_drops_sources() -> None:
    link = Link()
    key = RelayKey("203.0.113.9", 41641, link)  # type: ignore[arg-type]
    assert without_source(key) is key
    assert without_source(("203.0.113.9", 41641, (0, 8, b""))) == ("203.0.113.9", 41641)
    assert key == ("203.0.113.9", 41641, link) and hash(key) == hash(("203.0.113.9", 41641, link))
    assert key != ("203.0.113.9", 41641)
    assert Endpoint.from_key(key) == Endpoint("203.0.113.9", 41641)
    assert "relay.example" in repr(key)


def test_the_bind_hands_relayed_datagrams_to_their_link_and_sends_the_rest() -> None:
    link = Link()
    bind = UdpBind(0)
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(2)
    try:
        direct = ("127.0.0.1", receiver.getsockname()[1])
        relayed = RelayKey("203.0.113.9", 41641, link)  # type: ignore[arg-type]
        lost = bind.send_batch(
            [(b"\x04\0\0\0one", relayed), (b"\x04\0\0\0two", direct), (b"\x04\0\0\0three", relayed)]
        )
        assert list(lost) == []
        assert link.sent == [
            (b"\x04\0\0\0one", ("203.0.113.9", 41641)),
            (b"\x04\0\0\0three", ("203.0.113.9", 41641)),
        ]
        assert receiver.recv(100) == b"\x04\0\0\0two"  # the direct one went out of the socket
        assert bind.send_errors == 0
    finally:
        receiver.close()
        bind.close()


def test_datagrams_from_a_relay_reach_the_device_and_the_demux() -> None:
    """Two interfaces whose only path is a RelayKey: each link hands what it is sent to the
    other interface's receive(), as a relay would. The handshake and the data go through,
    and what is not WireGuard's goes to the demux with the relayed key."""

    async def scenario() -> None:
        key_a, key_b = generate_private_key(os.urandom), generate_private_key(os.urandom)
        tun_a, tun_b = PipeTun("rka"), PipeTun("rkb")
        a = Interface("rka", private_key=key_a, tun=tun_a, bind=UdpBind(0))  # type: ignore[arg-type]
        b = Interface("rkb", private_key=key_b, tun=tun_b, bind=UdpBind(0))  # type: ignore[arg-type]

        class Wire:
            name = "wire"

            def __init__(self, to: Interface, back: tuple[str, int]) -> None:
                self.to, self.back = to, back
                self.sent = 0

            def send(self, data: bytes, address: tuple[str, int]) -> None:
                self.sent += 1
                self.to.receive([(data, RelayKey(*self.back, other[self]))])

        a_to_b, b_to_a = Wire(b, ("198.51.100.1", 50001)), Wire(a, ("198.51.100.1", 50002))
        other = {a_to_b: b_to_a, b_to_a: a_to_b}
        seen: list[tuple[bytes, object]] = []
        b.bind.demux = lambda data, key: seen.append((data, key))
        try:
            a.device.add_peer(
                public_key(key_b),
                endpoint=RelayKey("198.51.100.1", 50002, a_to_b),  # type: ignore[arg-type]
                allowed_ips=["10.0.0.2/32"],
            )
            b.device.add_peer(public_key(key_a), allowed_ips=["10.0.0.1/32"])
            ping = ipv4_packet("10.0.0.1", "10.0.0.2", b"ping")
            tun_a.push([ping])
            for _ in range(200):
                if tun_b.written:
                    break
                await asyncio.sleep(0.01)
            assert tun_b.written == [ping]
            # b learned a's relayed path from the handshake: its answers take the relay too
            endpoint = b.device.peers[public_key(key_a)].endpoint
            assert type(endpoint) is RelayKey and endpoint[2] is b_to_a
            pong = ipv4_packet("10.0.0.2", "10.0.0.1", b"pong")
            tun_b.push([pong])
            for _ in range(200):
                if tun_a.written:
                    break
                await asyncio.sleep(0.01)
            assert tun_a.written == [pong] and b_to_a.sent >= 2
            stun = bytes.fromhex("0001 0000 2112a442") + bytes(12)
            b.receive([(stun, RelayKey("198.51.100.1", 50001, b_to_a))])  # type: ignore[arg-type]
            assert seen == [(stun, ("198.51.100.1", 50001, b_to_a))]
        finally:
            a.close()
            b.close()

    asyncio.run(scenario())


def test_the_relay_status_names_the_one_in_use_and_those_that_do_not_answer() -> None:
    async def go() -> None:
        manager = RelayManager(lambda batch: None)
        far = TurnServer(urls=(FAR_UDP,), username="u", password="p", expires=2e9)
        near = TurnServer(urls=(UDP, TCP), username="u", password="p", expires=2e9)
        manager.servers = (near, far)
        changes: list[dict[str, object]] = []
        manager.on_status = lambda: changes.append(manager.status())
        assert manager.status() == {
            "in_use": None, "transport": None, "relayed": None,
            "relays": [{"name": "198.51.100.1", "reachable": None, "error": None, "urls": []},
                       {"name": "198.51.100.2", "reachable": None, "error": None,
                        "urls": []}],
        }  # fmt: skip
        manager._set_reachable({"198.51.100.1": None, "198.51.100.2": "no answer in time"})
        manager._set_reachable({"198.51.100.1": None})  # no change: not told again
        assert len(changes) == 1
        assert [r["reachable"] for r in changes[0]["relays"]] == [True, False]  # type: ignore[index]
        link = RelayLink(near, TCP, lambda batch: None, manager._lost, manager.log)
        link.relayed = ("198.51.100.1", 50000)
        manager.link = link
        status = manager.status()
        assert (status["in_use"], status["transport"], status["relayed"]) == (
            "198.51.100.1", "tcp", "198.51.100.1:50000",
        )  # fmt: skip
        # the relay in use stops answering: unreachable, said, and left out of the next choice
        link.lost("it stopped answering")
        assert manager.link is None and manager._avoid == {"198.51.100.1"}
        assert changes[-1]["in_use"] is None
        assert changes[-1]["relays"][0] == {  # type: ignore[index]
            "name": "198.51.100.1", "reachable": False, "error": "it stopped answering",
            "urls": [],
        }  # fmt: skip
        await manager.close()

    asyncio.run(go())


def test_a_relay_nothing_listens_for_over_udp_fails_at_once() -> None:
    """The ICMP port unreachable that comes back (loopback: at once) fails the allocation,
    rather than ALLOCATE_TIMEOUT later; the status says which URL and why."""

    async def go() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as free:
            free.bind(("127.0.0.1", 0))
            port = free.getsockname()[1]  # closed again: nothing listens there
        dead = TurnServer(
            urls=(parse_turn_url(f"turn:127.0.0.1:{port}?transport=udp"),),
            username="u", password="p", expires=2e9,
        )  # fmt: skip
        manager = RelayManager(lambda batch: None)
        manager.servers = (dead,)
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await manager._choose() is None
        took = loop.time() - started
        assert took < 0.5, took  # (ALLOCATE_TIMEOUT is 4 s)
        [attempt] = manager.attempts
        assert attempt.error is not None and "refused" in attempt.error.lower(), attempt
        [relay] = manager.status()["relays"]
        assert relay["reachable"] is False
        assert relay["urls"] == [
            {"url": dead.urls[0].text, "transport": "udp", "error": attempt.error}
        ]
        await manager.close()

    asyncio.run(go())


def test_a_health_check_of_a_relay_that_died_over_udp_fails_at_once() -> None:
    """The allocation's relay stops (nothing listens on its port): its Refresh is refused at
    once, rather than HEALTH_TIMEOUT later, and the relay in use is replaced sooner."""

    async def go() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as free:
            free.bind(("127.0.0.1", 0))
            server = free.getsockname()
        loop = asyncio.get_running_loop()
        dead = TurnServer(urls=(parse_turn_url(f"turn:127.0.0.1:{server[1]}"),),
                          username="u", password="p", expires=2e9)  # fmt: skip
        link = RelayLink(dead, dead.urls[0], lambda batch: None, lambda link, why: None, None)
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: relay_module._UdpTurnProtocol(
                server, username="u", password="p", lifetime=600, channel_refresh_time=500
            ),
            remote_addr=server,
        )
        link.transport, link.protocol = transport, protocol
        started = loop.time()
        assert await link.check() is None
        took = loop.time() - started
        assert took < 0.5, took  # (HEALTH_TIMEOUT is 1.5 s)
        assert isinstance(protocol.error, ConnectionRefusedError)
        transport.close()

    asyncio.run(go())


@pytest.mark.skipif(os.geteuid() != 0, reason="SO_MARK needs CAP_NET_ADMIN")
def test_the_relay_sockets_carry_the_firewall_mark() -> None:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        sock = marked_socket(socket.AF_INET, kind, 0x5157)
        try:
            assert sock.getsockopt(socket.SOL_SOCKET, SO_MARK) == 0x5157
            assert not sock.getblocking()
        finally:
            sock.close()
        unmarked = marked_socket(socket.AF_INET, kind, 0)
        assert unmarked.getsockopt(socket.SOL_SOCKET, SO_MARK) == 0
        unmarked.close()
