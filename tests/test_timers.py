"""Each timer rule of the whitepaper (section 6), checked at its deadline.

Deadlines are read back from the device (``get_timer``) instead of slept for.
"""

from __future__ import annotations

import itertools

from support import Wire, ipv4_packet, pair

from wgpy.protocol.constants import (
    KEEPALIVE_TIMEOUT,
    MAX_TIMER_HANDSHAKES,
    REJECT_AFTER_TIME,
    REKEY_TIMEOUT,
    REKEY_TIMEOUT_JITTER_MAX,
)
from wgpy.protocol.errors import DropReason
from wgpy.protocol.timers import PeerTimers, Timer


def sent(wire: Wire, start: int) -> list[tuple[int, int]]:
    """(message type, size) of what went over the wire since ``start``."""
    return [(d[0], len(d)) for _, _, d in wire.log[start:]]


def establish() -> tuple[Wire, object, object]:
    wire, a, b, _ = pair()
    wire.send(a, [ipv4_packet(a.inner, b.inner)], 0.0)
    wire.run(0.0)
    wire.advance(30.0)  # let the timers armed by the first exchange play out
    return wire, a, b


def test_initiation_retransmitted_with_jitter_then_given_up() -> None:
    wire, a, b, _ = pair()
    wire.drop_to.add(b.address)  # b is down
    wire.send(a, [ipv4_packet(a.inner, b.inner, b"lost")], 0.0)
    wire.run(0.0)
    times = [0.0]
    for _ in range(40):
        t = a.device.get_timer()
        assert t is not None
        a.device.handle_timer(t)
        before = len(wire.log)
        wire.run(t)
        if sent(wire, before) == [(1, 148)]:
            times.append(t)
        if a.device.drops[DropReason.HANDSHAKE_GAVE_UP]:
            break
    # the first initiation and MAX_TIMER_HANDSHAKES + 1 retries (as wireguard-go and the kernel)
    assert len(times) == MAX_TIMER_HANDSHAKES + 2
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(REKEY_TIMEOUT <= g < REKEY_TIMEOUT + REKEY_TIMEOUT_JITTER_MAX for g in gaps)
    assert len(set(gaps)) > 1  # jittered
    assert a.device.drops[DropReason.HANDSHAKE_GAVE_UP] == 1  # the staged packet
    # after giving up, nothing more is sent until new traffic arrives
    t = a.device.get_timer()
    assert t is not None  # only zero_key_material remains
    before = len(wire.log)
    a.device.handle_timer(t)
    wire.run(t)
    assert sent(wire, before) == []
    assert a.device.get_timer() is None


def test_handshake_now_skips_the_rekey_timeout_once_a_path_is_found() -> None:
    """A path manager that finds the peer a path right after an initiation went nowhere
    (the map's endpoint behind a NAT) sends a new one at once, not 5 s later; the packet
    that waited arrives. With a session that can carry data it sends nothing."""
    wire, a, b, _ = pair()
    wire.drop_to.add(b.address)  # the first initiation goes where b cannot hear it
    packet = ipv4_packet(a.inner, b.inner, b"first")
    wire.send(a, [packet], 0.0)
    wire.run(0.0)
    assert sent(wire, 0) == [(1, 148)]
    wire.drop_to.clear()  # the path is found 0.2 s later
    peer = a.device.peers[b.public]
    a.device.send_packets([ipv4_packet(a.inner, b.inner, b"second")], 0.1)
    assert a.device.datagrams_to_send() == []  # the rate limit holds it back
    a.device.handshake_now(peer, 0.2)
    before = len(wire.log)
    wire.run(0.2)
    assert [kind for kind, _ in sent(wire, before)][:2] == [1, 2]
    assert packet in b.received
    # a session now carries data: handshake_now sends nothing more
    before = len(wire.log)
    a.device.handshake_now(peer, 0.3)
    wire.run(0.3)
    assert sent(wire, before) == []


def test_keepalive_after_receiving_data_and_sending_nothing() -> None:
    wire, a, b = establish()
    t0 = 40.0
    wire.send(a, [ipv4_packet(a.inner, b.inner, b"data")], t0)
    wire.run(t0)
    # b received data and sent nothing: a keepalive goes out KEEPALIVE_TIMEOUT later
    deadline = b.device.get_timer()
    assert deadline == t0 + KEEPALIVE_TIMEOUT
    before = len(wire.log)
    b.device.handle_timer(deadline)
    wire.run(deadline)
    assert sent(wire, before) == [(4, 32)]


def test_keepalive_cancelled_when_we_send_anything() -> None:
    wire, a, b = establish()
    wire.send(a, [ipv4_packet(a.inner, b.inner, b"data")], 41.0)
    wire.run(41.0)
    wire.send(b, [ipv4_packet(b.inner, a.inner, b"reply")], 42.0)
    wire.run(42.0)
    peer = b.device.peers[a.public]
    assert peer.timers.send_keepalive == float("inf")


def test_new_handshake_when_sent_data_gets_no_answer() -> None:
    wire, a, b = establish()
    wire.drop_to.add(b.address)
    t0 = 40.0
    wire.send(a, [ipv4_packet(a.inner, b.inner, b"unanswered")], t0)
    wire.run(t0)
    deadline = a.device.get_timer()
    assert deadline is not None
    low = t0 + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT
    assert low <= deadline < low + REKEY_TIMEOUT_JITTER_MAX
    before = len(wire.log)
    a.device.handle_timer(deadline)
    wire.run(deadline)
    assert sent(wire, before) == [(1, 148)]


def test_new_handshake_cancelled_by_any_received_packet() -> None:
    wire, a, b = establish()
    start = len(wire.log)
    wire.send(a, [ipv4_packet(a.inner, b.inner, b"data")], 42.0)
    wire.run(42.0)
    # b answers with its keepalive at +10 s, which cancels a's new-handshake timer at +15 s
    wire.advance(42.0 + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + 1)
    assert sent(wire, start) == [(4, 64), (4, 32)]


def test_zero_key_material_after_three_reject_after_times() -> None:
    wire, a, b = establish()
    peer = a.device.peers[b.public]
    assert peer.current is not None
    assert peer.timers.zero_key_material == 3 * REJECT_AFTER_TIME
    wire.advance(3 * REJECT_AFTER_TIME)
    assert peer.current is None and peer.previous is None and peer.next is None
    indices = a.device._sessions.indices.table
    assert indices == {} or all(v is not peer for v in indices.values())


def test_persistent_keepalive_every_interval_when_idle() -> None:
    wire, a, b = establish()
    peer = a.device.peers[b.public]
    start = len(wire.log)
    a.device.set_persistent_keepalive(peer, 25, 31.0)
    wire.run(31.0)
    assert sent(wire, start) == [(4, 32)]  # one at once, as wireguard-go does
    times = []
    for _ in range(4):
        t = a.device.get_timer()
        assert t is not None
        before = len(wire.log)
        a.device.handle_timer(t)
        wire.run(t)
        if (4, 32) in sent(wire, before) and wire.log[before][0] == a.address:
            times.append(t)
        b.device.handle_timer(t)  # b's own timers (its keepalive answer) if due
        wire.run(t)
    gaps = [y - x for x, y in itertools.pairwise(times)]
    assert gaps and all(g == 25 for g in gaps)


def test_persistent_keepalive_opens_a_session_by_itself() -> None:
    wire, a, b, _ = pair()
    peer = a.device.peers[b.public]
    a.device.set_persistent_keepalive(peer, 25, 0.0)
    wire.run(0.0)
    assert [d[0] for _, _, d in wire.log] == [1, 2, 4]


def test_persistent_keepalive_can_start_an_interval_from_now() -> None:
    """What a mesh node asks for a peer without ICE: nothing at once (the peer may not know
    this node yet), the first keepalive one interval later, opening a session by itself."""
    wire, a, b, _ = pair()
    peer = a.device.peers[b.public]
    a.device.set_persistent_keepalive(peer, 25, 0.0, send_now=False)
    wire.run(0.0)
    assert wire.log == []
    assert a.device.get_timer() == 25.0
    a.device.handle_timer(25.0)
    wire.run(25.0)
    assert [d[0] for _, _, d in wire.log] == [1, 2, 4]
    a.device.set_persistent_keepalive(peer, 0, 26.0, send_now=False)
    assert peer.timers.persistent_keepalive == float("inf")


def test_timer_hooks_arm_and_cancel() -> None:
    t = PeerTimers()
    assert t.next_deadline() == float("inf")
    t.on_data_received(1.0)
    t.on_data_received(2.0)  # already pending: remember to send another
    assert t.send_keepalive == 1.0 + KEEPALIVE_TIMEOUT and t.need_another_keepalive
    assert t.pop_due(11.0) == [Timer.SEND_KEEPALIVE]
    t.on_keepalive_sent_by_timer(11.0)
    assert t.send_keepalive == 11.0 + KEEPALIVE_TIMEOUT
    t.on_any_authenticated_packet_sent()
    assert t.send_keepalive == float("inf")
    t.persistent_keepalive_interval = 0
    t.on_any_authenticated_packet_traversal(3.0)
    assert t.persistent_keepalive == float("inf")
    t.on_session_derived(0.0)
    t.stop_all()
    assert t.next_deadline() == float("inf")


def test_pooled_rng_serves_small_draws_from_one_call_in_order() -> None:
    from wgpy.protocol.timers import pooled

    calls: list[int] = []
    stream = bytes(range(256)) * 8

    def rng(n: int) -> bytes:
        start = sum(calls)
        calls.append(n)
        return stream[start : start + n]

    draw = pooled(rng, size=16)
    out = b"".join(draw(2) for _ in range(8))  # 16 bytes: one call to rng
    assert out == stream[:16] and calls == [16]
    assert draw(2) == stream[16:18] and calls == [16, 16]  # the pool was refilled
    assert draw(40) == stream[32:72] and calls == [16, 16, 40]  # larger than the pool


def test_keepalives_sent_are_counted_per_peer_and_data_is_not() -> None:
    wire, a, b = establish()
    peer_a, peer_b = b.device.peers[a.public], a.device.peers[b.public]
    counted_a, counted_b = peer_a.keepalives_sent, peer_b.keepalives_sent
    wire.send(a, [ipv4_packet(a.inner, b.inner, b"data")], 40.0)
    wire.run(40.0)
    assert peer_b.keepalives_sent == counted_b  # data is not a keepalive
    deadline = b.device.get_timer()
    assert deadline == 40.0 + KEEPALIVE_TIMEOUT
    b.device.handle_timer(deadline)
    wire.run(deadline)
    assert peer_a.keepalives_sent == counted_a + 1  # the passive keepalive
    a.device.set_persistent_keepalive(peer_b, 25, 60.0)
    wire.run(60.0)
    assert peer_b.keepalives_sent == counted_b + 1  # the persistent one, sent at once
