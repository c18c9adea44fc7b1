"""Two real interfaces reach each other only through a TURN relay (real coturn on loopback).

Each interface has its real UDP bind on loopback and a TUN stand-in (tests/support.py's
PipeTun: the packets are the test's, the sockets and the relay are real). Each allocates on
the relay (wgpy.nat.relay), and ICE is given only the relayed candidates (the direct ones
withheld), so the path manager selects the relay: WireGuard's handshake and data go as TURN
ChannelData over UDP, TCP or TLS, and arrive with a RelayKey.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
from support import PipeTun, ipv4_packet

from wgpy.device.interface import Interface
from wgpy.device.udp import UdpBind
from wgpy.endpoint import RelayKey
from wgpy.nat.ice import new_ufrag, parse_remote
from wgpy.nat.paths import PathManager
from wgpy.nat.relay import SO_MARK, RelayLink, RelayManager
from wgpy.nat.servers import TurnServer, parse_turn_url
from wgpy.nat.stunmux import StunMux
from wgpy.protocol.crypto import generate_private_key, public_key

from .coturn import Coturn, free_port, start_coturn
from .netns import Lab

pytestmark = pytest.mark.root


async def until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


class Node:
    """An interface, its relay and its paths."""

    def __init__(self, name: str, inner: str, relay: Coturn, kind: str, ttl: int = 3600) -> None:
        self.key = generate_private_key(os.urandom)
        self.public = public_key(self.key)
        self.inner = inner
        self.tun = PipeTun(name)
        self.iface = Interface(name, private_key=self.key, tun=self.tun, bind=UdpBind(0))  # type: ignore[arg-type]
        username, password = relay.credentials(name, ttl=ttl)
        urls = [u for u in map(parse_turn_url, relay.urls()) if u.kind == kind]
        server = TurnServer(
            urls=tuple(urls), username=username, password=password, expires=time.time() + ttl
        )
        self.relays = RelayManager(self.iface.receive, ssl_context=relay.ssl_context())
        self.relays.update([server])
        self.mux = StunMux(self.iface.bind, asyncio.get_running_loop())
        self.ufrag = new_ufrag(os.urandom)
        self.paths = PathManager(
            self.iface,  # type: ignore[arg-type]
            self.mux,
            public_key=self.public,
            ufrag=self.ufrag,
            local_candidates=self.relays.candidates,  # the relayed one only
        )
        self.mux.on_request = self.paths.handle_request

    def meet(self, other: Node) -> None:
        """The map's part: the other's key, inner address and (relayed) candidates."""
        if other.public not in self.iface.device.peers:
            self.iface.device.add_peer(other.public, allowed_ips=[f"{other.inner}/32"])
        remote, errors = parse_remote(
            other.ufrag,
            [c.to_sdp() for c in other.relays.candidates()],
        )
        assert not errors and remote.candidates
        self.paths.set_remote(other.public, remote)

    async def close(self) -> None:
        self.paths.close()
        await self.relays.close()
        self.mux.close()
        self.iface.close()


async def relayed_ping(relay: Coturn, kind: str) -> dict[str, Any]:
    a = Node("rla", "10.9.0.1", relay, kind)
    b = Node("rlb", "10.9.0.2", relay, kind)
    try:
        await until(lambda: a.relays.link is not None and b.relays.link is not None, 5, "TURN")
        assert a.relays.link is not None and b.relays.link is not None
        assert a.relays.link.url.kind == kind
        started = asyncio.get_running_loop().time()
        a.meet(b)
        b.meet(a)
        await until(
            lambda: (
                a.paths.path(b.public).kind == "relay" and b.paths.path(a.public).kind == "relay"
            ),
            5,
            "both sides to select the relay",
        )
        ping = ipv4_packet("10.9.0.1", "10.9.0.2", b"ping over the relay")
        a.tun.push([ping])
        await until(lambda: ping in b.tun.written, 5, "the ping through the relay")
        pong = ipv4_packet("10.9.0.2", "10.9.0.1", b"pong over the relay")
        b.tun.push([pong])
        await until(lambda: pong in a.tun.written, 5, "the pong through the relay")
        elapsed = asyncio.get_running_loop().time() - started
        # WireGuard's endpoints are the relayed paths; both links carried the traffic
        for me, other in ((a, b), (b, a)):
            endpoint = me.iface.device.peers[other.public].endpoint
            assert type(endpoint) is RelayKey and endpoint[2] is me.relays.link
            state = me.paths.path(other.public)
            assert state.relay == "127.0.0.1" and state.endpoint is not None
            assert me.relays.link is not None
            assert me.relays.link.sent > 0 and me.relays.link.received_count > 0
        assert a.iface.device.peers[b.public].rx_bytes > 0
        return {"seconds": elapsed}
    finally:
        await a.close()
        await b.close()


@pytest.mark.parametrize("kind", ["udp", "tcp", "tls"])
def test_two_interfaces_ping_only_through_the_relay(coturn: Coturn, kind: str) -> None:
    result = asyncio.run(asyncio.wait_for(relayed_ping(coturn, kind), 30))
    assert result["seconds"] < 5


def _server(relay: Coturn, kind: str, name: str, ttl: int = 3600) -> TurnServer:
    username, password = relay.credentials(name, ttl=ttl)
    urls = tuple(u for u in map(parse_turn_url, relay.urls()) if u.kind == kind)
    return TurnServer(urls=urls, username=username, password=password, expires=time.time() + ttl)


def test_a_dead_relay_is_skipped_and_a_relay_that_dies_fails_over(lab: Lab) -> None:
    """Three relays: one that never answers, two coturns. The manager allocates on a live
    one; when that relay dies it is on the other within seconds."""
    first, second = start_coturn(lab), start_coturn(lab)
    dead = TurnServer(
        urls=(parse_turn_url(f"turn:127.0.0.1:{free_port()}?transport=udp"),),
        username="0:x",
        password="x",
        expires=time.time() + 3600,
    )

    async def scenario() -> None:
        changes = 0

        def changed() -> None:
            nonlocal changes
            changes += 1

        manager = RelayManager(lambda datagrams: None, on_change=changed, health_interval=0.5)
        try:
            manager.update([dead, _server(first, "udp", "f1"), _server(second, "udp", "f2")])
            await until(lambda: manager.link is not None, 5, "an allocation")
            link = manager.link
            assert link is not None and link.url.port in (first.port, second.port)
            assert {a.url.port: a.error is None for a in manager.attempts} == {
                dead.urls[0].port: False,
                first.port: True,
                second.port: True,
            }
            assert len(manager.candidates()) == 1 and changes == 1
            used, other = (first, second) if link.url.port == first.port else (second, first)
            used.stop()
            started = asyncio.get_running_loop().time()
            await until(
                lambda: manager.link is not None and manager.link is not link, 8, "the failover"
            )
            assert manager.link is not None and manager.link.url.port == other.port
            assert asyncio.get_running_loop().time() - started < 5
            assert changes == 3 and link.closed  # allocated, lost, allocated again
            survivor = manager.link
            await asyncio.sleep(3)  # six health checks: a live relay is kept
            assert manager.link is survivor and not survivor.closed and changes == 3
        finally:
            await manager.close()

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_fresh_credentials_replace_an_allocation_before_the_old_ones_expire(
    coturn: Coturn,
) -> None:
    async def scenario() -> None:
        manager = RelayManager(lambda datagrams: None, health_interval=0.5)
        try:
            soon = _server(coturn, "udp", "n", ttl=120)  # within REAUTH_MARGIN
            manager.update([soon])
            await until(lambda: manager.link is not None, 5, "an allocation")
            old = manager.link
            assert old is not None
            await asyncio.sleep(1.2)  # health checks: nothing newer, so it is kept
            assert manager.link is old
            fresh = _server(coturn, "udp", "n", ttl=86400)
            manager.update([fresh])
            # while the new one is made, the old relayed address is still the candidate
            assert manager.link is None
            assert [(c.host, c.port) for c in manager.candidates()] == [old.relayed]
            await until(lambda: manager.link not in (None, old), 5, "a new allocation")
            assert manager.link is not None and manager.link.server.username == fresh.username
            assert manager.link.relayed != old.relayed
            assert not old.closed  # kept for OVERLAP seconds: paths on it move over first
        finally:
            await manager.close()
        assert old.closed

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_relayed_paths_move_to_a_new_allocation_before_the_old_one_goes(coturn: Coturn) -> None:
    """Fresh credentials replace a's allocation: its candidates change (the map tells b),
    both run a round and move to the new relayed address while the old one still works."""

    async def scenario() -> None:
        a = Node("rma", "10.9.0.1", coturn, "udp", ttl=120)  # expiring: fresh ones replace it
        b = Node("rmb", "10.9.0.2", coturn, "udp")
        try:
            await until(lambda: a.relays.link is not None and b.relays.link is not None, 5, "TURN")
            a.meet(b)
            b.meet(a)
            await until(
                lambda: a.paths.path(b.public).kind == b.paths.path(a.public).kind == "relay",
                5,
                "the relayed paths",
            )
            old = a.relays.link
            assert old is not None
            a.relays.update([_server(coturn, "udp", "rma-fresh", ttl=86400)])
            await until(lambda: a.relays.link not in (None, old), 5, "the new allocation")
            a.paths.local_candidates_changed()
            b.meet(a)  # a's new candidates, as the map brings them
            new = a.relays.link
            assert new is not None

            def moved() -> bool:
                endpoint_a = a.iface.device.peers[b.public].endpoint
                endpoint_b = b.iface.device.peers[a.public].endpoint
                return (
                    endpoint_a is not None
                    and endpoint_a[2] is new
                    and endpoint_b is not None
                    and (endpoint_b[0], endpoint_b[1]) == new.relayed
                )

            await until(moved, 8, "both paths on the new allocation")
            assert not old.closed  # moved over while the old one still relayed
            for n in range(3):
                ping = ipv4_packet("10.9.0.1", "10.9.0.2", b"after the move %d" % n)
                a.tun.push([ping])
                await until(lambda p=ping: p in b.tun.written, 5, "a ping on the new path")
        finally:
            await a.close()
            await b.close()

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_the_relay_sockets_carry_the_bind_fwmark_from_the_start_and_when_it_changes(
    coturn: Coturn,
) -> None:
    """The mark is on each relay socket before it connects (its first packet, a TCP SYN,
    must bypass a tunnel's policy routing already), and changes with the bind's."""

    def mark(link: RelayLink | None) -> int:
        assert link is not None and link.transport is not None
        sock = link.transport.get_extra_info("socket")
        value: int = sock.getsockopt(socket.SOL_SOCKET, SO_MARK)
        return value

    async def scenario() -> None:
        for kind in ("udp", "tcp", "tls"):
            manager = RelayManager(
                lambda datagrams: None, ssl_context=coturn.ssl_context(), fwmark=0x5157
            )
            try:
                manager.update([_server(coturn, kind, kind)])
                await until(lambda m=manager: m.link is not None, 5, f"an allocation over {kind}")
                assert manager.link is not None and manager.link.url.kind == kind
                assert mark(manager.link) == 0x5157
                manager.set_fwmark(0x51)
                assert mark(manager.link) == 0x51 and manager.fwmark == 0x51
                assert await manager.link.check() is not None  # still answers
            finally:
                await manager.close()

    asyncio.run(asyncio.wait_for(scenario(), 30))
