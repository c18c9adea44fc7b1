"""Two in-memory devices: handshakes, data, keypair rotation and the drop counters."""

from __future__ import annotations

from support import Wire, connect, ipv4_packet, ipv6_packet, make_node, pair

from wgpy.protocol.constants import (
    MESSAGE_TRANSPORT_OVERHEAD,
    REJECT_AFTER_TIME,
    REKEY_AFTER_TIME,
    REKEY_ON_RECEIVE_AFTER,
)
from wgpy.protocol.crypto import ZERO_KEY, public_key
from wgpy.protocol.device import padded_length
from wgpy.protocol.errors import DropReason, LocalProtocolError


def kinds(wire: Wire, start: int = 0) -> list[int]:
    return [data[0] for _, _, data in wire.log[start:]]


def test_handshake_then_data_both_ways_v4_and_v6() -> None:
    wire, a, b, _ = pair()
    wire.send(a, [ipv4_packet(a.inner, b.inner, b"ping")], 0.0)
    wire.run(0.0)
    # initiation, response, then the staged packet under the new session
    assert kinds(wire) == [1, 2, 4]
    assert b.received == [ipv4_packet(a.inner, b.inner, b"ping")]
    v6 = ipv6_packet(b.inner6, a.inner6, b"pong" * 100)
    wire.send(b, [v6], 0.1)
    wire.run(0.1)
    assert a.received == [v6]
    assert not a.device.drops and not b.device.drops
    peer_b = a.device.peers[b.public]
    assert peer_b.tx_bytes > 0 and peer_b.rx_bytes > 0
    assert peer_b.last_handshake_ns != 0


def test_responder_confirms_with_first_data_packet() -> None:
    wire, a, b, _ = pair()
    wire.send(a, [], 0.0)  # nothing to send: no handshake
    assert wire.run(0.0) == 0
    wire.send(a, [ipv4_packet(a.inner, b.inner)], 0.0)
    initiation = a.device.datagrams_to_send()[0][0]
    b.device.receive_datagrams([(initiation, a.address)], 0.0)
    response = b.device.datagrams_to_send()[0][0]
    peer_a = b.device.peers[a.public]
    # the responder's keypair stays "next" until the initiator's first packet arrives
    assert peer_a.current is None and peer_a.next is not None
    a.device.receive_datagrams([(response, b.address)], 0.0)
    first = a.device.datagrams_to_send()
    assert [d[0] for d, _ in first] == [4]
    b.device.receive_datagrams([(first[0][0], a.address)], 0.0)
    assert peer_a.next is None and peer_a.current is not None
    assert b.device.packets_to_deliver() == [ipv4_packet(a.inner, b.inner)]


def test_preshared_key_must_match() -> None:
    psk = bytes(range(32))
    wire, a, b, _ = pair(psk=psk)
    wire.send(a, [ipv4_packet(a.inner, b.inner, b"x")], 0.0)
    wire.run(0.0)
    assert len(b.received) == 1
    wire, a, b, _ = pair(psk=psk)
    b.device.peers[a.public].preshared_key = bytes(32)
    wire.send(a, [ipv4_packet(a.inner, b.inner, b"x")], 0.0)
    wire.run(0.0)
    assert b.received == []
    assert a.device.drops[DropReason.DECRYPTION_FAILED] == 1  # the response


def test_packets_wait_for_the_session_bounded() -> None:
    wire, a, b, _ = pair()
    wire.drop_to.add(b.address)
    packets = [ipv4_packet(a.inner, b.inner, bytes([i % 256])) for i in range(200)]
    wire.send(a, packets, 0.0)
    wire.run(0.0)
    assert a.device.drops[DropReason.STAGED_OVERFLOW] == 200 - 128
    wire.drop_to.clear()
    now = a.device.get_timer()
    assert now is not None
    a.device.handle_timer(now)
    wire.run(now)
    # the newest 128 arrive, in order
    assert b.received == packets[-128:]


def test_replayed_transport_is_dropped() -> None:
    wire, a, b, _ = pair()
    wire.send(a, [ipv4_packet(a.inner, b.inner, b"once")], 0.0)
    wire.run(0.0)
    transport = [(d, s) for s, _, d in wire.log if d[0] == 4]
    b.device.receive_datagrams([(transport[0][0], a.address)], 0.1)
    assert b.device.drops[DropReason.REPLAYED] == 1
    assert b.device.packets_to_deliver() == []


def test_inner_source_must_belong_to_the_sending_peer() -> None:
    wire, a, b, _ = pair()
    c = make_node(3, wire.nodes[a.address].device._wall_clock)  # type: ignore[arg-type]
    connect(b, c)
    wire.send(a, [ipv4_packet(c.inner, b.inner, b"spoof")], 0.0)
    wire.run(0.0)
    assert b.received == []
    assert b.device.drops[DropReason.DISALLOWED_SOURCE] == 1


def test_roaming_follows_authenticated_source() -> None:
    wire, a, b, _ = pair()
    wire.send(a, [ipv4_packet(a.inner, b.inner)], 0.0)
    wire.run(0.0)
    del wire.nodes[a.address]
    a.address = ("198.51.100.7", 40000)
    wire.add(a)
    wire.send(a, [ipv4_packet(a.inner, b.inner, b"moved")], 1.0)
    wire.run(1.0)
    assert b.device.peers[a.public].endpoint == ("198.51.100.7", 40000)
    wire.send(b, [ipv4_packet(b.inner, a.inner, b"reply")], 1.1)
    wire.run(1.1)
    assert a.received[-1].endswith(b"reply")


def test_unroutable_and_invalid_outbound() -> None:
    wire, a, _, _ = pair()
    wire.send(a, [ipv4_packet(a.inner, "10.9.9.9"), b"", b"\x45\x00", b"\x70" * 40], 0.0)
    assert a.device.drops[DropReason.NO_ROUTE] == 1
    assert a.device.drops[DropReason.INVALID_OUTBOUND] == 3
    assert a.device.datagrams_to_send() == []


def test_padding_to_sixteen_capped_at_mtu() -> None:
    assert padded_length(0, 1420) == 0
    assert padded_length(1, 1420) == 16
    assert padded_length(16, 1420) == 16
    assert padded_length(1419, 1420) == 1420
    assert padded_length(1420, 1420) == 1420
    wire, a, b, _ = pair()
    wire.send(a, [ipv4_packet(a.inner, b.inner, b"x" * 5)], 0.0)
    wire.run(0.0)
    data = next(d for _, _, d in wire.log if d[0] == 4)
    assert len(data) == MESSAGE_TRANSPORT_OVERHEAD + 32  # 25 bytes padded to 32
    assert b.received[0] == ipv4_packet(a.inner, b.inner, b"x" * 5)  # unpadded by length


def test_low_order_peer_key_sends_no_handshake() -> None:
    wire, a, _, _wall = pair()
    low_order = bytes(32)  # the all-zero point
    a.device.add_peer(low_order, endpoint=("192.0.2.99", 1), allowed_ips=["10.0.0.99/32"])
    wire.send(a, [ipv4_packet(a.inner, "10.0.0.99")], 0.0)
    assert a.device.datagrams_to_send() == []


def test_private_key_equal_to_a_peer_removes_that_peer() -> None:
    _, a, b, _ = pair()
    assert b.public in a.device.peers
    a.device.set_private_key(b.private)
    assert b.public not in a.device.peers
    assert a.device.allowed_ips.lookup_ip(b.inner) is None
    assert a.device.public_key == public_key(b.private)


def test_own_key_cannot_be_a_peer() -> None:
    _, a, _, _ = pair()
    try:
        a.device.add_peer(a.public)
    except LocalProtocolError as e:
        assert "own" in str(e)
    else:
        raise AssertionError("adding our own key as a peer must fail")


def test_removed_peer_forgets_sessions() -> None:
    wire, a, b, _ = pair()
    wire.send(a, [ipv4_packet(a.inner, b.inner)], 0.0)
    wire.run(0.0)
    b.device.remove_peer(a.public)
    wire.send(a, [ipv4_packet(a.inner, b.inner, b"gone")], 0.1)
    wire.run(0.1)
    assert b.device.drops[DropReason.UNKNOWN_INDEX] == 1
    assert b.device.get_timer() is None


def test_unknown_initiator_is_dropped() -> None:
    wire, a, b, _ = pair()
    b.device.remove_peer(a.public)
    wire.send(a, [ipv4_packet(a.inner, b.inner)], 0.0)
    wire.run(0.0)
    assert b.device.drops[DropReason.UNKNOWN_PEER] == 1


def test_stale_timestamp_and_initiation_flood() -> None:
    wire, a, b, wall = pair()
    wire.send(a, [ipv4_packet(a.inner, b.inner)], 0.0)
    wire.run(0.0)
    initiation = next(d for _, _, d in wire.log if d[0] == 1)
    b.device.receive_datagrams([(initiation, a.address)], 1.0)
    assert b.device.drops[DropReason.STALE_TIMESTAMP] == 1
    # a new initiation with a newer timestamp but within 20 ms of the last one consumed
    wall.ns += 10**9
    a.device._initiate(a.device.peers[b.public], 100.0, retry=False)
    fresh = a.device.datagrams_to_send()[0][0]
    b.device.receive_datagrams([(fresh, a.address)], 0.01)
    assert b.device.drops[DropReason.INITIATION_FLOOD] == 1
    b.device.receive_datagrams([(fresh, a.address)], 0.5)
    assert b.device.datagrams_to_send()[0][0][0] == 2  # answered


def test_rekey_after_time_on_send_and_previous_keypair_still_accepted() -> None:
    wire, a, b, _ = pair()
    wire.send(a, [ipv4_packet(a.inner, b.inner)], 0.0)
    wire.run(0.0)
    old = a.device.peers[b.public].current
    start = len(wire.log)
    wire.send(a, [ipv4_packet(a.inner, b.inner, b"late")], REKEY_AFTER_TIME)
    wire.run(REKEY_AFTER_TIME)
    # the packet went under the old keypair, then the rekey: initiation, response, keepalive
    assert kinds(wire, start) == [4, 1, 2, 4]
    peer_b = a.device.peers[b.public]
    assert peer_b.current is not old and peer_b.previous is old
    assert b.received[-1].endswith(b"late")


def test_rekey_on_receive_near_reject_after_time() -> None:
    wire, a, b, _ = pair()
    wire.send(a, [ipv4_packet(a.inner, b.inner)], 0.0)
    wire.run(0.0)
    t = REKEY_ON_RECEIVE_AFTER + 0.5
    start = len(wire.log)
    wire.send(b, [ipv4_packet(b.inner, a.inner, b"data")], t)
    wire.run(t)
    # a (the initiator of the current keypair) hears data on an old key and rekeys
    assert 1 in kinds(wire, start)


def test_no_keypair_used_past_reject_after_time() -> None:
    wire, a, b, _ = pair()
    wire.send(a, [ipv4_packet(a.inner, b.inner)], 0.0)
    wire.run(0.0)
    b_to_a = a.device.peers[b.public]
    kp = b_to_a.current
    assert kp is not None
    wire.drop_to.add(b.address)
    start = len(wire.log)
    wire.send(a, [ipv4_packet(a.inner, b.inner, b"stale")], REJECT_AFTER_TIME)
    wire.run(REJECT_AFTER_TIME)
    assert kinds(wire, start) == [1]  # staged, and a handshake instead of using kp
    assert len(b_to_a.staged) == 1
    # a transport packet made with the expired keypair is refused on receive, too
    b.device.receive_datagrams([(wire.log[2][2], a.address)], REJECT_AFTER_TIME)
    assert b.device.drops[DropReason.EXPIRED_KEYPAIR] == 1


def test_hours_of_traffic_roll_keys_without_a_gap() -> None:
    wire, a, b, _ = pair()
    first = ipv4_packet(a.inner, b.inner, b"first")
    wire.send(a, [first], 0.0)
    wire.run(0.0)
    sent_ab, sent_ba = [first], []
    for step in range(1, 4 * 3600 // 7):  # four simulated hours, a packet each way every 7 s
        now = step * 7.0
        wire.advance(now)
        p = ipv4_packet(a.inner, b.inner, step.to_bytes(4, "big"))
        q = ipv4_packet(b.inner, a.inner, step.to_bytes(4, "big"))
        wire.send(a, [p], now)
        wire.send(b, [q], now)
        sent_ab.append(p)
        sent_ba.append(q)
        wire.run(now)
    handshakes = sum(1 for _, _, d in wire.log if d[0] == 1)
    assert b.received == sent_ab
    assert a.received == sent_ba
    # a rekey at the first packet sent after REKEY_AFTER_TIME: about one every 126 s
    assert 4 * 3600 / (REKEY_AFTER_TIME + 7) - 2 <= handshakes <= 4 * 3600 / REKEY_AFTER_TIME + 4
    assert not a.device.drops and not b.device.drops


def test_zero_length_keepalive_is_not_delivered() -> None:
    wire, a, b, _ = pair()
    wire.send(a, [ipv4_packet(a.inner, b.inner)], 0.0)
    wire.run(0.0)
    assert len(b.received) == 1  # only the data, not the keepalive that confirmed the session
    assert bytes(32) == ZERO_KEY


def test_rekey_after_messages_and_reject_after_messages() -> None:
    from wgpy.protocol.constants import REJECT_AFTER_MESSAGES, REKEY_AFTER_MESSAGES

    wire, a, b, _ = pair()
    wire.send(b, [ipv4_packet(b.inner, a.inner)], 0.0)  # b initiates: a is the responder
    wire.run(0.0)
    peer_b = a.device.peers[b.public]
    kp = peer_b.current
    assert kp is not None and not kp.is_initiator
    # past REKEY_AFTER_MESSAGES even the responder starts a handshake after sending
    kp.send_counter = REKEY_AFTER_MESSAGES
    start = len(wire.log)
    wire.send(a, [ipv4_packet(a.inner, b.inner, b"many")], 6.0)
    wire.run(6.0)
    assert kinds(wire, start)[:2] == [4, 1]
    # at REJECT_AFTER_MESSAGES a keypair is never used again: the packet waits for a new one
    kp2 = peer_b.current
    assert kp2 is not None and kp2 is not kp
    kp2.send_counter = REJECT_AFTER_MESSAGES - 1
    start = len(wire.log)
    wire.send(a, [ipv4_packet(a.inner, b.inner, b"last")], 20.0)
    wire.run(20.0)
    assert kinds(wire, start) == [1, 2, 4]
    assert b.received[-1].endswith(b"last")
    assert peer_b.current is not kp2
