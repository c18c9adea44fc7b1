"""ICE and the path manager on real sockets: two whole Interfaces on loopback (UdpBind), each
with a StunMux on its WireGuard port, hand each other their candidates directly (no server).
The checks run on the WireGuard socket while WireGuard runs there, the selected address
becomes the peer's endpoint and stays it, checks made with another pair's key find no path,
and hostile STUN is counted, never raised."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
from aioice import stun
from aioice.candidate import Candidate, candidate_priority
from support import PipeTun, ipv4_packet

from wgpy.device.interface import Interface
from wgpy.device.udp import UdpBind
from wgpy.endpoint import Endpoint
from wgpy.nat.ice import (
    ROUND_TIMEOUT,
    Pair,
    PairKeys,
    RemoteIce,
    binding_request,
    derive_pair_keys,
    new_ufrag,
)
from wgpy.nat.paths import KEEPALIVE_INTERVAL, PathManager, PathState
from wgpy.nat.stunmux import StunMux
from wgpy.protocol.crypto import dh, generate_private_key, public_key

LIMIT = 20.0  # seconds any one scenario may take


@dataclass
class Side:
    iface: Interface
    tun: PipeTun
    mux: StunMux
    paths: PathManager
    ufrag: str
    public: bytes
    inner: str

    @property
    def port(self) -> int:
        return self.iface.listen_port

    host: str = "127.0.0.1"

    def candidates(self) -> list[Candidate]:
        return [host_candidate(self.host, self.port)]

    def remote(self, extra: list[Candidate] | None = None) -> RemoteIce:
        """What the map would say about this side."""
        return RemoteIce(self.ufrag, tuple(self.candidates() + (extra or [])))

    def close(self) -> None:
        self.paths.close()
        self.mux.close()
        self.iface.close()


def host_candidate(host: str, port: int, kind: str = "host") -> Candidate:
    return Candidate(
        foundation=kind,
        component=1,
        transport="udp",
        priority=candidate_priority(1, kind),
        host=host,
        port=port,
        type=kind,
    )


def unsigned(username: str | None) -> bytes:
    """A Binding request without MESSAGE-INTEGRITY (with this USERNAME, if any)."""
    message = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
    if username is not None:
        message.attributes["USERNAME"] = username
    return bytes(message)


def make_side(name: str, inner: str, keepalive: float = KEEPALIVE_INTERVAL) -> Side:
    key = generate_private_key(os.urandom)
    tun = PipeTun(name)
    bind = UdpBind(0)
    iface = Interface(name, private_key=key, tun=tun, bind=bind)  # type: ignore[arg-type]
    mux = StunMux(bind, iface.loop)
    ufrag = new_ufrag(os.urandom)
    side_candidates: list[Callable[[], list[Candidate]]] = []
    paths = PathManager(
        iface,
        mux,
        public_key=public_key(key),
        ufrag=ufrag,
        local_candidates=lambda: side_candidates[0](),
        keepalive_interval=keepalive,
    )
    mux.on_request = paths.handle_request
    side = Side(iface, tun, mux, paths, ufrag, public_key(key), inner)
    side_candidates.append(side.candidates)
    return side


@asynccontextmanager
async def two_sides(keepalive: float = KEEPALIVE_INTERVAL) -> AsyncIterator[tuple[Side, Side]]:
    a, b = make_side("icea", "10.9.0.1", keepalive), make_side("iceb", "10.9.0.2", keepalive)
    try:
        # WireGuard peers as the mesh node adds them: the map's endpoint (none here)
        a.iface.device.add_peer(b.public, allowed_ips=[f"{b.inner}/32"])
        b.iface.device.add_peer(a.public, allowed_ips=[f"{a.inner}/32"])
        yield a, b
    finally:
        a.close()
        b.close()


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> float:
    """Wait until ``condition``; the seconds it took."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not condition():
        assert loop.time() - start < timeout, "timed out"
        await asyncio.sleep(0.005)
    return loop.time() - start


async def ping(src: Side, dst: Side, payload: bytes) -> None:
    packet = ipv4_packet(src.inner, dst.inner, payload)
    src.tun.push([packet])
    await until(lambda: packet in dst.tun.written)


def direct(side: Side, peer: Side) -> bool:
    return side.paths.path(peer.public).kind == "direct"


def count_consent_checks(side: Side, peer: Side) -> list[float]:
    """When ``side`` checks its path to ``peer`` from now on (the real check runs)."""
    session = side.paths.session(peer.public)
    assert session is not None
    consent = session.consent
    checks: list[float] = []

    async def counted(pair: Pair) -> float | None:
        checks.append(asyncio.get_running_loop().time())
        return await consent(pair)

    session.consent = counted  # type: ignore[method-assign]
    return checks


def run(scenario: Callable[[], object]) -> None:
    async def limited() -> None:
        await asyncio.wait_for(scenario(), LIMIT)  # type: ignore[arg-type]

    asyncio.run(limited())


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_checks_on_the_wireguard_socket_select_the_peer_s_address(host: str) -> None:
    async def scenario() -> None:
        async with two_sides() as (a, b):
            a.host = b.host = host
            # a candidate where nothing answers is checked too, and loses
            dead = host_candidate(host, 9, "srflx")
            a.paths.set_remote(b.public, b.remote(extra=[dead]))
            b.paths.set_remote(a.public, a.remote())
            took = await until(lambda: direct(a, b) and direct(b, a))
            assert took < 1.0
            peer_b = a.iface.device.peers[b.public]
            assert peer_b.endpoint[:2] == (host, b.port) and not peer_b.roaming  # + a source
            state = a.paths.path(b.public)
            assert state.endpoint is not None and state.endpoint == Endpoint(host, b.port)
            assert state.rtt is not None and state.rtt < 0.5
            assert state.to_json()["kind"] == "direct"
            # WireGuard runs on the same socket: a handshake, then data both ways
            await ping(a, b, b"ping")
            await ping(b, a, b"pong")
            assert a.paths.owns(b.public) and not a.paths.drops and not b.paths.drops
            # WireGuard's packets came back over the new path: confirmed (within 0.25 s)
            await until(lambda: a.paths.confirmed(b.public) and b.paths.confirmed(a.public))
            assert a.paths.unconfirmed == b.paths.unconfirmed == 0

    run(scenario)


def test_a_packet_sent_before_the_path_is_found_arrives_as_soon_as_it_is() -> None:
    """The first packet starts a handshake at the map's endpoint (an address behind the
    peer's NAT: it goes nowhere); once ICE finds the path the handshake goes again at once,
    not when WireGuard's 5 s REKEY_TIMEOUT allows (make bench-nat saw ~5 s to a first
    packet in every cell before)."""

    async def scenario() -> None:
        async with two_sides() as (a, b):
            device = a.iface.device
            device.set_endpoint(device.peers[b.public], ("127.0.0.1", 9))  # nothing there
            packet = ipv4_packet(a.inner, b.inner, b"early")
            a.tun.push([packet])
            await until(lambda: device.peers[b.public].tx_bytes > 0)  # the lost initiation
            a.paths.set_remote(b.public, b.remote())
            b.paths.set_remote(a.public, a.remote())
            await until(lambda: direct(a, b))
            took = await until(lambda: packet in b.tun.written, timeout=4.0)
            assert took < 1.0

    run(scenario)


def test_a_late_packet_from_elsewhere_does_not_move_the_selected_endpoint() -> None:
    async def scenario() -> None:
        async with two_sides() as (a, b):
            a.paths.set_remote(b.public, b.remote())
            b.paths.set_remote(a.public, a.remote())
            await until(lambda: direct(a, b) and direct(b, a))
            await ping(a, b, b"first")
            checks = count_consent_checks(b, a)
            # an authenticated packet from a that reaches b from another port (as a late
            # packet over a relay would): delivered, but b keeps sending to a's path
            packet = ipv4_packet(a.inner, b.inner, b"late")
            a.iface.device.send_packets([packet], a.iface.now())
            datagrams = a.iface.device.datagrams_to_send()
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as elsewhere:
                elsewhere.bind(("127.0.0.1", 0))
                for data, _ in datagrams:
                    elsewhere.sendto(data, ("127.0.0.1", b.port))
                await until(lambda: packet in b.tun.written)
            assert b.iface.device.peers[a.public].endpoint[:2] == ("127.0.0.1", a.port)
            # the manager heard of it (PeerSentFromElsewhere) and checked the path at once,
            # not at the next consent time; it still answers, so it stays
            await until(lambda: len(checks) == 1, timeout=1.0)
            await asyncio.sleep(0.1)
            assert direct(b, a)
            await ping(b, a, b"still direct")

    run(scenario)


def test_a_path_that_stops_answering_is_dropped_within_5_seconds() -> None:
    async def scenario() -> None:
        async with two_sides() as (a, b):
            a.paths.set_remote(b.public, b.remote())
            b.paths.set_remote(a.public, a.remote())
            await until(lambda: direct(a, b) and direct(b, a))
            await ping(a, b, b"traffic")  # a's traffic moves: consent checks every ~2 s
            b.close()
            took = await until(lambda: a.paths.path(b.public).kind == "none", timeout=6.0)
            assert took < 5.0
            assert a.iface.device.peers[b.public].roaming  # WireGuard roams again

    run(scenario)


def test_new_local_candidates_drop_a_path_the_new_round_does_not_find() -> None:
    """The node moved (its candidates changed) while idle: its old path is not kept until
    the next keepalive (20-25 s away) but dropped when the new round ends without it."""

    async def scenario() -> None:
        async with two_sides() as (a, b):
            a.paths.set_remote(b.public, b.remote())
            b.paths.set_remote(a.public, a.remote())
            await until(lambda: direct(a, b) and direct(b, a))
            b.close()
            a.paths.local_candidates_changed()
            took = await until(lambda: a.paths.path(b.public).kind == "none", timeout=8.0)
            assert took < ROUND_TIMEOUT + 1.0
            assert a.iface.device.peers[b.public].roaming  # WireGuard roams again

    run(scenario)


def test_new_local_candidates_start_a_new_round_and_keep_the_path_it_finds_again() -> None:
    """A node that moved and nominates starts a new round (a controlled peer whose old path
    to it died cannot select one by itself); the path stays meanwhile, and after."""

    async def scenario() -> None:
        async with two_sides() as (a, b):
            a.paths.set_remote(b.public, b.remote())
            b.paths.set_remote(a.public, a.remote())
            await until(lambda: direct(a, b) and direct(b, a))
            if not a.paths.session(b.public).controlling:  # type: ignore[union-attr]
                a, b = b, a  # the side that nominates moves
            old = a.paths.session(b.public)
            a.paths.local_candidates_changed()
            new = a.paths.session(b.public)
            assert new is not None and new is not old and new.running
            assert direct(a, b)  # kept while the round runs
            await until(lambda: not new.running)
            assert new.selected is not None and direct(a, b) and direct(b, a)
            await ping(a, b, b"after")

    run(scenario)


def forged_keys(sender: Side, receiver: Side) -> PairKeys:
    """Keys for checks in ``sender``'s name to ``receiver`` (the right ufrags) by a node that
    is neither: all it has is a DH of its own with ``receiver``."""
    stranger = generate_private_key(os.urandom)
    return derive_pair_keys(
        dh(stranger, receiver.public),
        local_public=sender.public,
        remote_public=receiver.public,
        local_ufrag=sender.ufrag,
        remote_ufrag=receiver.ufrag,
    )


def test_checks_made_with_another_pair_s_key_find_no_path() -> None:
    async def scenario() -> None:
        async with two_sides() as (a, b):
            # the controlling side (the larger key) makes its checks with a key that is not
            # the pair's: they fail integrity there, so it never nominates
            boss, other = (a, b) if a.public > b.public else (b, a)
            boss.paths.set_remote(other.public, other.remote())
            session = boss.paths.session(other.public)
            assert session is not None
            wrong = forged_keys(boss, other)
            session.keys = lambda: wrong  # before its first round starts
            other.paths.set_remote(boss.public, boss.remote())
            await until(lambda: other.paths.drops["bad_integrity"] > 0, timeout=3.0)
            await asyncio.sleep(1.0)
            assert boss.paths.path(other.public).kind == "none"
            assert other.paths.path(boss.public).kind == "none"
            assert boss.iface.device.peers[other.public].roaming

    run(scenario)


def test_hostile_stun_on_the_wireguard_port_is_counted_and_never_raises() -> None:
    async def scenario() -> None:
        async with two_sides() as (a, b):
            a.paths.set_remote(b.public, b.remote())
            b.paths.set_remote(a.public, a.remote())
            target = ("127.0.0.1", a.port)
            forged = forged_keys(b, a)

            def check(local_ufrag: str, remote_ufrag: str, key: bytes = forged.outbound) -> bytes:
                keys = PairKeys(key, key, local_ufrag, remote_ufrag)
                return bytes(
                    binding_request(keys=keys, controlling=True, tie_breaker=1, priority=1)
                )

            garbage = [
                check(b.ufrag, "nobody"),  # for another ufrag
                check(b.ufrag, a.ufrag),  # in b's name, not with the pair's key
                check("strange", a.ufrag),  # unknown peer
                unsigned(f"{a.ufrag}:{b.ufrag}"),
                unsigned(None),
                bytes(stun.Message(stun.Method.ALLOCATE, stun.Class.REQUEST)),
                b"\x00\x01\x00\x04\x21\x12\xa4\x42" + bytes(12) + b"\xff\xff\x00\x00",
                os.urandom(64),
            ]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as attacker:
                for _ in range(50):
                    for data in garbage:
                        attacker.sendto(data, target)
                attacker.setblocking(False)
                await asyncio.sleep(0.2)
                try:
                    answered = attacker.recv(2048)
                except BlockingIOError:
                    answered = b""
            assert answered == b""  # nothing unauthenticated is ever answered
            drops = a.paths.drops
            assert drops["unknown_ufrag"] == 50 and drops["bad_integrity"] == 50
            assert drops["unknown_peer"] == 50 and drops["unsigned"] == 50
            assert drops["not_binding"] == 50 and drops["no_username"] == 100  # +the odd one
            assert sum(a.mux.drops.values()) >= 50  # what is not STUN at all
            await until(lambda: direct(a, b) and direct(b, a))
            await ping(a, b, b"unharmed")

    run(scenario)


def test_a_role_conflict_is_resolved_and_a_path_still_found() -> None:
    async def scenario() -> None:
        async with two_sides() as (a, b):
            a.paths.set_remote(b.public, b.remote())
            b.paths.set_remote(a.public, a.remote())
            sessions = [a.paths.session(b.public), b.paths.session(a.public)]
            for session in sessions:  # both think they control (the checks start later)
                assert session is not None
                session.controlling = True
            await until(lambda: direct(a, b) and direct(b, a))
            assert [s.controlling for s in sessions if s is not None].count(True) == 1
            assert sum(s.role_switches for s in sessions if s is not None) >= 1
            await ping(b, a, b"agreed")

    run(scenario)


def test_an_idle_path_is_kept_alive_by_its_checks() -> None:
    """Checks on the selected path are the keepalives that hold NAT mappings open: never
    more than the keepalive interval apart (here 0.3 s, for a test) while the path is idle."""

    async def scenario() -> None:
        async with two_sides(keepalive=0.3) as (a, b):
            a.paths.set_remote(b.public, b.remote())
            b.paths.set_remote(a.public, a.remote())
            await until(lambda: direct(a, b) and direct(b, a))
            checks = count_consent_checks(a, b)
            await asyncio.sleep(1.5)
            gaps = [later - earlier for earlier, later in itertools.pairwise(checks)]
            assert len(checks) >= 4 and max(gaps) <= 0.3 + 0.05
            assert direct(a, b) and direct(b, a)

    run(scenario)


def test_a_shorter_keepalive_interval_applies_at_once_to_idle_paths() -> None:
    """The node measured a short NAT mapping lifetime after the paths were up: a keepalive
    drawn for 20-25 s from now comes within the new interval instead (the mapping would be
    gone by then), and every one after it too."""

    async def scenario() -> None:
        async with two_sides() as (a, b):
            a.paths.set_remote(b.public, b.remote())
            b.paths.set_remote(a.public, a.remote())
            await until(lambda: direct(a, b) and direct(b, a))
            await asyncio.sleep(0.3)
            checks = count_consent_checks(a, b)
            await asyncio.sleep(2.5)
            assert checks == []  # idle: nothing due for 20-25 s
            changed_at = asyncio.get_running_loop().time()
            a.paths.set_keepalive_interval(0.3)
            await asyncio.sleep(1.5)
            assert checks and checks[0] - changed_at <= 0.3 + 0.05
            gaps = [later - earlier for earlier, later in itertools.pairwise(checks)]
            assert len(checks) >= 4 and max(gaps) <= 0.3 + 0.05
            assert direct(a, b) and direct(b, a)

    run(scenario)


def test_a_path_the_peer_s_new_candidates_do_not_find_again_is_dropped() -> None:
    async def scenario() -> None:
        async with two_sides() as (a, b):
            a.paths.set_remote(b.public, b.remote())
            b.paths.set_remote(a.public, a.remote())
            await until(lambda: direct(a, b) and direct(b, a))
            # the map now says b is somewhere nothing answers (and has a new ufrag, which b
            # does not know of): the new round finds nothing, and the old path is not kept
            dead = RemoteIce("Stale" + b.ufrag, (host_candidate("127.0.0.1", 9),))
            a.paths.set_remote(b.public, dead)
            took = await until(lambda: a.paths.path(b.public).kind == "none", timeout=7.0)
            assert took < 6.0
            assert a.iface.device.peers[b.public].roaming

    run(scenario)


def test_status_hears_of_each_measured_round_trip_and_of_a_round_that_found_nothing() -> None:
    """`wgpy status` shows the path's latency as the last check measured it (to the
    microsecond: uvloop's clock counts whole milliseconds) and says when checks found no
    path: the manager tells the node of both."""

    async def scenario() -> None:
        async with two_sides(keepalive=0.3) as (a, b):
            heard: list[PathState] = []
            a.paths.on_change = lambda key, state: heard.append(state)
            a.paths.set_remote(b.public, b.remote())
            b.paths.set_remote(a.public, a.remote())
            await until(lambda: direct(a, b) and direct(b, a))
            selected = len(heard)
            await asyncio.sleep(1.0)  # idle: checks every 0.3 s
            measured = [s.rtt for s in heard[selected:] if s.kind == "direct"]
            assert len(measured) >= 2
            assert all(rtt is not None and 0 < rtt < 0.1 for rtt in measured), measured
            assert a.paths.path(b.public).rtt == measured[-1]

    run(scenario)


def test_a_peer_cannot_check_in_another_peer_s_name() -> None:
    """M, a real peer of a (in a's device and map), knows b's ufrag (its map shows it) and
    its own keys with a; it floods a with checks in b's name from its own address, made with
    the best key it has (its pair's with a), and at last claims b's ufrag for itself: a
    answers none of them, learns no candidate at M's address, counts them, and finds b where
    b is; b's own checks still reach b's session."""

    async def scenario() -> None:
        async with two_sides() as (a, b):
            m_private = generate_private_key(os.urandom)
            m_public, m_ufrag = public_key(m_private), new_ufrag(os.urandom)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as m_socket:
                m_socket.bind(("127.0.0.1", 0))
                m_socket.setblocking(False)
                m_address = m_socket.getsockname()
                a.iface.device.add_peer(m_public, allowed_ips=["10.9.0.3/32"])
                m_remote = RemoteIce(m_ufrag, (host_candidate(*m_address),))
                a.paths.set_remote(m_public, m_remote)
                a.paths.set_remote(b.public, b.remote())
                b.paths.set_remote(a.public, a.remote())

                def m_keys(claimed_ufrag: str) -> PairKeys:
                    return derive_pair_keys(
                        dh(m_private, a.public),
                        local_public=m_public,
                        remote_public=a.public,
                        local_ufrag=claimed_ufrag,
                        remote_ufrag=a.ufrag,
                    )

                forged = bytes(
                    binding_request(
                        keys=m_keys(b.ufrag),  # USERNAME a:b, M's key with a
                        controlling=True,
                        tie_breaker=1,
                        priority=2**31 - 1,  # better than anything b offers
                        nominate=True,
                    )
                )
                target = ("127.0.0.1", a.port)
                for _ in range(20):
                    m_socket.sendto(forged, target)
                await until(lambda: a.paths.drops["bad_integrity"] >= 20)
                await until(lambda: direct(a, b) and direct(b, a))
                await asyncio.sleep(0.2)

                def answers() -> list[stun.Message]:
                    """What reached M other than a's own checks of M's pair (requests)."""
                    found = []
                    with contextlib.suppress(BlockingIOError):
                        while True:
                            answer = stun.parse_message(m_socket.recvfrom(2048)[0])
                            if answer.message_class != stun.Class.REQUEST:
                                found.append(answer)
                    return found

                assert answers() == []
                session = a.paths.session(b.public)
                assert session is not None
                assert all(p.address != m_address for p in session.pairs)  # no prflx at M
                # M claims b's ufrag in its own map entry: checks "a:b" are routed to both
                # peers and each is authenticated with its own pair's key: M's checks made
                # with M's key are M's (answered as such), never b's
                a.paths.set_remote(m_public, RemoteIce(b.ufrag, m_remote.candidates))
                before = a.paths.drops["bad_integrity"]
                for _ in range(5):
                    m_socket.sendto(forged, target)
                await asyncio.sleep(0.3)
                assert a.paths.drops["bad_integrity"] == before
                assert len(answers()) >= 5  # answered for M's own pair
                m_session = a.paths.session(m_public)
                assert m_session is not None and m_session.pairs
                assert all(p.address != m_address for p in session.pairs)
                assert a.paths.path(b.public).endpoint == Endpoint("127.0.0.1", b.port)
                assert a.iface.device.peers[b.public].endpoint[:2] == ("127.0.0.1", b.port)
                # b's own checks still get through (a new round of b's, with the same ufrag)
                b_session = b.paths.session(a.public)
                assert b_session is not None
                assert await b_session.consent(b_session.selected) is not None  # type: ignore[arg-type]
                await ping(a, b, b"still b")
                await ping(b, a, b"still a")

    run(scenario)


def test_a_direct_path_no_wireguard_packet_comes_back_over_is_dropped() -> None:
    """Defense in depth: a path whose checks are answered but over which the peer's WireGuard
    packets never come back (here b sends its WireGuard packets for a into a black hole) is
    dropped once a has sent over it for the confirm timeout (0.5 s here): back to checks."""

    async def scenario() -> None:
        async with two_sides() as (a, b):
            a.paths.confirm_timeout = 0.5
            heard: list[PathState] = []
            a.paths.on_change = lambda key, state: heard.append(state)
            a.paths.set_remote(b.public, b.remote())
            b.paths.set_remote(a.public, a.remote())
            await until(lambda: direct(a, b) and direct(b, a))
            await ping(a, b, b"first")
            await until(lambda: a.paths.confirmed(b.public))
            # b's WireGuard now goes nowhere (its ICE still answers on the path); a's path
            # is found again as a new one
            peer_a = b.iface.device.peers[a.public]
            b.iface.device.set_endpoint(peer_a, ("127.0.0.1", 9))
            a_path = a.paths._peers[b.public]
            a_path.lost("the test drops it")
            await until(lambda: direct(a, b) and not a.paths.confirmed(b.public))
            loop = asyncio.get_running_loop()
            sent = loop.time()
            while a.paths.unconfirmed == 0:
                assert loop.time() - sent < 3.0, "the unconfirmed path was kept"
                packet = ipv4_packet(a.inner, b.inner, b"into the void?")
                a.tun.push([packet])
                await asyncio.sleep(0.05)
            assert loop.time() - sent >= 0.5
            assert any(s.kind == "none" for s in heard)

    run(scenario)
