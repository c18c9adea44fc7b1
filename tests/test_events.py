"""The device's events (aioquic's next_event): handshakes completed and endpoints that moved,
one event per change and none per packet, in a bounded queue."""

from __future__ import annotations

import pytest
from support import Node, Wire, ipv4_packet, pair

from wgpy.protocol.device import Device
from wgpy.protocol.errors import LocalProtocolError
from wgpy.protocol.events import (
    EventQueue,
    HandshakeCompleted,
    PeerEndpointChanged,
    PeerSentFromElsewhere,
)
from wgpy.protocol.peer import without_source


def drain(device: Device) -> list[object]:
    events = []
    while (event := device.next_event()) is not None:
        events.append(event)
    return events


def established() -> tuple[Wire, Node, Node]:
    wire, a, b, _ = pair()
    wire.send(a, [ipv4_packet(a.inner, b.inner, b"hi")], 0.0)
    wire.run(0.0)
    return wire, a, b


def roam(sender: Node, receiver: Node, source: object, now: float, count: int = 1) -> None:
    """``count`` packets from ``sender`` reach ``receiver`` from ``source``."""
    sender.device.send_packets([ipv4_packet(sender.inner, receiver.inner)] * count, now)
    datagrams = sender.device.datagrams_to_send()
    receiver.device.receive_datagrams([(d, source) for d, _ in datagrams], now)
    assert len(receiver.device.packets_to_deliver()) == count


def test_both_sides_report_the_completed_handshake_once() -> None:
    _, a, b = established()
    assert drain(a.device) == [HandshakeCompleted(b.public)]  # the response arrived
    assert drain(b.device) == [HandshakeCompleted(a.public)]  # the first packet under it
    assert a.device.next_event() is None


def test_a_rekey_is_a_new_completed_handshake() -> None:
    wire, a, b = established()
    drain(a.device), drain(b.device)
    wire.send(a, [ipv4_packet(a.inner, b.inner)], 121.0)  # past REKEY_AFTER_TIME
    wire.run(121.0)
    assert drain(a.device) == [HandshakeCompleted(b.public)]


def test_no_event_per_packet() -> None:
    wire, a, b = established()
    drain(a.device), drain(b.device)
    for i in range(10):
        wire.send(a, [ipv4_packet(a.inner, b.inner)] * 10, 1.0 + i)
        wire.send(b, [ipv4_packet(b.inner, a.inner)] * 10, 1.0 + i)
        wire.run(1.0 + i)
    assert len(b.received) == 101 and len(a.received) == 100
    assert drain(a.device) == [] and drain(b.device) == []


def test_roaming_is_one_event_however_many_packets() -> None:
    _, a, b = established()
    drain(b.device)
    moved = ("198.51.100.7", 40000)
    roam(a, b, moved, 1.0, count=5)
    roam(a, b, moved, 2.0, count=5)
    assert drain(b.device) == [PeerEndpointChanged(a.public, moved)]
    assert b.device.peers[a.public].endpoint == moved
    roam(a, b, a.address, 3.0)  # and back
    assert drain(b.device) == [PeerEndpointChanged(a.public, a.address)]


def test_a_new_local_source_alone_is_not_a_move() -> None:
    _, a, b = established()
    drain(b.device)
    roam(a, b, (*a.address, "source 1"), 1.0)  # type: ignore[misc]
    roam(a, b, (*a.address, "source 2"), 2.0)  # type: ignore[misc]
    b.device.forget_sources()
    roam(a, b, (*a.address, "source 2"), 3.0)  # type: ignore[misc]
    assert drain(b.device) == []
    moved = ("198.51.100.7", 40000, "source 2")
    roam(a, b, moved, 4.0)
    assert drain(b.device) == [PeerEndpointChanged(a.public, moved[:2])]  # no source in it


def test_an_endpoint_learned_from_a_handshake_is_an_event() -> None:
    wire, a, b, _ = pair()
    peer = b.device.peers[a.public]
    b.device.set_endpoint(peer, None)  # b waits to hear from a
    wire.send(a, [ipv4_packet(a.inner, b.inner)], 0.0)
    wire.run(0.0)
    assert drain(b.device) == [
        PeerEndpointChanged(a.public, a.address),  # the initiation
        HandshakeCompleted(a.public),  # the first packet under the new session
    ]


def test_an_endpoint_the_caller_sets_is_no_event_but_moving_away_from_it_is() -> None:
    _, a, b = established()
    drain(b.device)
    peer = b.device.peers[a.public]
    configured = ("203.0.113.5", 51820)
    b.device.set_endpoint(peer, configured)
    assert drain(b.device) == []
    roam(a, b, a.address, 1.0)
    assert drain(b.device) == [PeerEndpointChanged(a.public, a.address)]


def test_the_queue_is_bounded_and_counts_what_it_drops() -> None:
    queue = EventQueue(maxlen=3)
    for n in range(5):
        queue.append(HandshakeCompleted(bytes([n]) * 32))
    assert len(queue) == 3 and queue.dropped == 2
    assert [queue.pop() for _ in range(4)] == [
        HandshakeCompleted(bytes([2]) * 32),  # the oldest went first
        HandshakeCompleted(bytes([3]) * 32),
        HandshakeCompleted(bytes([4]) * 32),
        None,
    ]
    with pytest.raises(ValueError, match="at least one"):
        EventQueue(maxlen=0)


def test_a_device_nobody_drains_keeps_a_bounded_queue() -> None:
    wire, a, b = established()
    for n in range(1, 1100):
        now = 121.0 * n  # each send rekeys
        wire.send(a, [ipv4_packet(a.inner, b.inner)], now)
        wire.run(now)
    assert a.device.events_dropped > 0
    assert len(drain(a.device)) == 1024


# ---------------------------------------------------------------- roaming off (a path manager)


def pinned(b: Node, a: Node, endpoint: object) -> None:
    """``b`` sends to ``a`` at ``endpoint``, which a path manager owns (roaming off)."""
    peer = b.device.peers[a.public]
    b.device.set_endpoint(peer, endpoint)
    b.device.set_roaming(peer, False)


def test_with_roaming_off_a_packet_from_elsewhere_does_not_move_the_endpoint() -> None:
    _, a, b = established()
    drain(b.device)
    direct = ("203.0.113.5", 51820)
    pinned(b, a, direct)
    relay = ("198.51.100.7", 40000)
    roam(a, b, relay, 1.0, count=5)  # delivered, but the endpoint stays
    roam(a, b, relay, 2.0)
    assert b.device.peers[a.public].endpoint == direct
    assert drain(b.device) == [PeerSentFromElsewhere(a.public, relay)]  # once per address
    roam(a, b, (*relay, "source 1"), 3.0)  # type: ignore[misc]
    assert drain(b.device) == []  # a new local source alone is no new address
    b.device.send_packets([ipv4_packet(b.inner, a.inner)], 4.0)
    assert [e for _, e in b.device.datagrams_to_send()] == [direct]


def test_with_roaming_off_packets_from_the_endpoint_lend_it_their_local_source() -> None:
    _, a, b = established()
    drain(b.device)
    direct = ("203.0.113.5", 51820)
    pinned(b, a, direct)
    roam(a, b, (*direct, "source 1"), 1.0)  # type: ignore[misc]
    peer = b.device.peers[a.public]
    assert peer.endpoint == (*direct, "source 1")
    assert drain(b.device) == []
    # back and forth between the relay and the endpoint: one event per arrival elsewhere
    relay = ("198.51.100.7", 40000)
    roam(a, b, relay, 2.0)
    roam(a, b, direct, 3.0)
    roam(a, b, relay, 4.0)
    assert drain(b.device) == [PeerSentFromElsewhere(a.public, relay)] * 2
    assert without_source(peer.endpoint) == direct


def test_with_roaming_off_a_handshake_from_elsewhere_is_answered_there_but_moves_nothing() -> None:
    _, a, b, _ = pair()
    direct = ("203.0.113.5", 51820)
    pinned(b, a, direct)
    relay = ("198.51.100.7", 40000)
    a.device.send_packets([ipv4_packet(a.inner, b.inner)], 0.0)
    initiation = a.device.datagrams_to_send()
    b.device.receive_datagrams([(d, relay) for d, _ in initiation], 0.0)
    response = b.device.datagrams_to_send()
    assert [e for _, e in response] == [relay]  # the answer goes where the question came from
    assert b.device.peers[a.public].endpoint == direct
    assert drain(b.device) == [PeerSentFromElsewhere(a.public, relay)]


def test_with_roaming_off_a_peer_without_endpoint_takes_the_first_one() -> None:
    wire, a, b, _ = pair()
    peer = b.device.peers[a.public]
    b.device.set_endpoint(peer, None)
    b.device.set_roaming(peer, False)
    wire.send(a, [ipv4_packet(a.inner, b.inner)], 0.0)
    wire.run(0.0)
    assert peer.endpoint == a.address
    assert PeerEndpointChanged(a.public, a.address) in drain(b.device)


def test_roaming_back_on_follows_the_next_packet_as_an_event() -> None:
    _, a, b = established()
    drain(b.device)
    direct = ("203.0.113.5", 51820)
    pinned(b, a, direct)
    relay = ("198.51.100.7", 40000)
    roam(a, b, relay, 1.0)
    drain(b.device)
    peer = b.device.peers[a.public]
    b.device.set_roaming(peer, True)
    roam(a, b, relay, 2.0)
    assert peer.endpoint == relay
    assert drain(b.device) == [PeerEndpointChanged(a.public, relay)]


def test_set_roaming_on_a_removed_peer_says_what_to_do() -> None:
    _, a, b = established()
    peer = b.device.peers[a.public]
    b.device.remove_peer(a.public)
    with pytest.raises(LocalProtocolError, match="add it again"):
        b.device.set_roaming(peer, False)
