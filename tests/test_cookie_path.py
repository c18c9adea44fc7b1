"""The cookie path end to end: a responder under load answers with a cookie reply, the
initiator retries with MAC2 and the handshake then succeeds."""

from __future__ import annotations

from support import ipv4_packet, pair

from wgpy.protocol.constants import REKEY_TIMEOUT, REKEY_TIMEOUT_JITTER_MAX
from wgpy.protocol.errors import DropReason


def test_under_load_cookie_reply_then_retry_with_mac2_succeeds() -> None:
    wire, a, b, _ = pair()
    b.device.under_load_queue_size = 1  # any handshake message puts b under load
    wire.send(a, [ipv4_packet(a.inner, b.inner, b"hello")], 0.0)
    wire.run(0.0)
    # initiation (MAC2 all zero), then a cookie reply instead of a response
    assert [(d[0], len(d)) for _, _, d in wire.log] == [(1, 148), (3, 64)]
    assert wire.log[0][2][-16:] == bytes(16)
    assert b.device.cookie_replies_sent == 1
    assert b.received == []
    # the retransmitted initiation carries MAC2 made from the cookie, and is answered
    t = a.device.get_timer()
    assert t is not None and REKEY_TIMEOUT <= t < REKEY_TIMEOUT + REKEY_TIMEOUT_JITTER_MAX
    wire.advance(t)
    types = [d[0] for _, _, d in wire.log[2:]]
    assert types[:3] == [1, 2, 4]
    assert wire.log[2][2][-16:] != bytes(16)
    assert b.received == [ipv4_packet(a.inner, b.inner, b"hello")]
    assert not a.device.drops and not b.device.drops


def test_under_load_mac2_from_another_source_gets_a_new_cookie() -> None:
    wire, a, b, _ = pair()
    b.device.under_load_queue_size = 1
    wire.send(a, [ipv4_packet(a.inner, b.inner)], 0.0)
    wire.run(0.0)
    t = a.device.get_timer()
    assert t is not None
    a.device.handle_timer(t)
    retry = a.device.datagrams_to_send()[0][0]
    # the same message from another address: its cookie does not match that address
    b.device.receive_datagrams([(retry, ("203.0.113.9", 1234))], t)
    assert [d[0] for d, _ in b.device.datagrams_to_send()] == [3]
    b.device.receive_datagrams([(retry, a.address)], t)
    assert [d[0] for d, _ in b.device.datagrams_to_send()] == [2]


def test_under_load_sources_are_rate_limited() -> None:
    wire, a, b, _ = pair()
    b.device.under_load_queue_size = 1
    wire.send(a, [ipv4_packet(a.inner, b.inner)], 0.0)
    wire.run(0.0)
    t = a.device.get_timer()
    assert t is not None
    a.device.handle_timer(t)
    retry = a.device.datagrams_to_send()[0][0]
    # valid MAC1 and MAC2, replayed fast from one source: after a burst of 5, rate limited
    b.device.receive_datagrams([(retry, a.address)] * 12, t)
    assert b.device.drops[DropReason.RATE_LIMITED] == 12 - 5


def test_cookie_reply_for_unknown_index_or_forged_is_dropped() -> None:
    wire, a, b, _ = pair()
    b.device.under_load_queue_size = 1
    wire.drop_to.add(a.address)  # hold the cookie reply back
    wire.send(a, [ipv4_packet(a.inner, b.inner)], 0.0)
    wire.run(0.0)
    reply = bytearray(wire.log[1][2])
    forged = bytes(reply[:-1]) + bytes([reply[-1] ^ 1])
    a.device.receive_datagrams([(forged, b.address)], 0.1)
    assert a.device.drops[DropReason.DECRYPTION_FAILED] == 1
    wrong_index = bytes(reply[:4]) + b"\xff\xff\xff\xff" + bytes(reply[8:])
    a.device.receive_datagrams([(wrong_index, b.address)], 0.1)
    assert a.device.drops[DropReason.UNKNOWN_INDEX] == 1
    # the real reply is taken once; a replay of it is refused (as the kernel does)
    a.device.receive_datagrams([(bytes(reply), b.address)] * 2, 0.1)
    assert a.device.drops[DropReason.UNEXPECTED_COOKIE] == 1


def test_under_load_when_many_handshakes_arrive_within_an_eighth_of_a_second() -> None:
    from wgpy.protocol.constants import UNDER_LOAD_QUEUE_SIZE

    wire, a, b, _ = pair()
    wire.send(a, [ipv4_packet(a.inner, b.inner)], 0.0)
    initiation = a.device.datagrams_to_send()[0][0]
    # one at a time, spread over more than 1/8 s: never under load
    for i in range(UNDER_LOAD_QUEUE_SIZE):
        b.device.receive_datagrams([(initiation, ("203.0.113.1", 1))], 1.0 + i * 0.01)
    assert not b.device.is_under_load(1.0 + UNDER_LOAD_QUEUE_SIZE * 0.01)
    # one at a time, all within 1/8 s: under load, for one second
    for _ in range(UNDER_LOAD_QUEUE_SIZE):
        b.device.receive_datagrams([(initiation, ("203.0.113.1", 1))], 10.0)
    assert b.device.is_under_load(10.0) and b.device.is_under_load(10.99)
    assert not b.device.is_under_load(11.01)
