"""Hostile datagrams never raise, never authenticate, are all counted, and break nothing.

Every test works on a session established the same way (the devices' randomness is seeded, so
each build is byte-for-byte the same): two handshakes, data both ways and keepalives, with one
real transport message from a to b held back so that b has not seen it yet. Then b is fed
random bytes, mutations of every real datagram, and replays, and afterwards the session must
still carry data both ways.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import Node, WallClock, Wire, ipv4_packet, pair

from wgpy.protocol.constants import (
    MESSAGE_COOKIE_REPLY_SIZE,
    MESSAGE_COOKIE_REPLY_TYPE,
    MESSAGE_INITIATION_SIZE,
    MESSAGE_INITIATION_TYPE,
    MESSAGE_RESPONSE_SIZE,
    MESSAGE_RESPONSE_TYPE,
    MESSAGE_TRANSPORT_TYPE,
    REKEY_TIMEOUT,
    REKEY_TIMEOUT_JITTER_MAX,
)
from wgpy.protocol.cookie import CookieChecker, mac1_key
from wgpy.protocol.crypto import mac
from wgpy.protocol.errors import DropReason

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
WALL0 = WallClock().ns
STRANGER: Hashable = ("203.0.113.9", 4444)
STRANGER6: Hashable = ("2001:db8::9", 51820, 0, 0)


@dataclass
class Session:
    wire: Wire
    a: Node
    b: Node
    wall: WallClock
    now: float
    log: list[tuple[Hashable, Hashable, bytes]]
    unseen: bytes  # a real transport message from a to b that b has not received
    unseen_packet: bytes  # the inner packet it carries
    unseen_delivered: bool = False
    sent: int = 0  # packets a and b sent each other after the fuzzing

    def at(self, t: float) -> float:
        self.now = t
        self.wall.ns = WALL0 + int(t * 1_000_000_000)
        return t

    def exchange(self, src: Node, dst: Node, payload: bytes, t: float) -> None:
        src.device.send_packets([ipv4_packet(src.inner, dst.inner, payload)], self.at(t))
        self.wire.run(t)

    def still_works(self) -> None:
        """A new packet gets through each way, and nothing is dropped on the way."""
        for src, dst in ((self.a, self.b), (self.b, self.a)):
            self.sent += 1
            packet = ipv4_packet(src.inner, dst.inner, b"still works %d" % self.sent)
            drops = dict(dst.device.drops)
            dst.received.clear()
            src.device.send_packets([packet], self.now)
            self.wire.run(self.now)
            assert dst.received == [packet], f"{src.inner} -> {dst.inner} broke"
            assert dict(dst.device.drops) == drops


def establish() -> Session:
    wire, a, b, wall = pair()
    s = Session(wire, a, b, wall, 0.0, wire.log, b"", b"")
    # first session: a initiates; data both ways; a sends a keepalive when its timer fires
    s.exchange(a, b, b"ping", 0.0)
    s.exchange(b, a, b"pong", 1.0)
    wire.fire_timers(s.at(12.0))
    wire.run(s.now)
    # second session, past REJECT_AFTER_TIME: b initiates, so a sends b a response
    s.exchange(b, a, b"again", 200.0)
    s.exchange(a, b, b"reply", 201.0)
    s.exchange(b, a, b"more", 202.0)
    wire.fire_timers(s.at(212.0))
    wire.run(s.now)
    # a real transport message that never reaches b
    s.unseen_packet = ipv4_packet(a.inner, b.inner, b"held back")
    wire.drop_to.add(b.address)
    start = len(wire.log)
    a.device.send_packets([s.unseen_packet], s.at(213.0))
    wire.run(s.now)
    wire.drop_to.clear()
    assert [d[0] for _, _, d in wire.log[start:]] == [MESSAGE_TRANSPORT_TYPE]
    s.unseen = wire.log[start][2]
    assert not a.device.drops and not b.device.drops
    assert [p[20:] for p in b.received] == [b"ping", b"reply"]
    b.received.clear()
    a.received.clear()
    return s


@functools.cache
def real() -> tuple[tuple[bytes, ...], bytes, bytes, tuple[int, ...]]:
    """(every real datagram, the held-back one, b's public key, every index on the wire)."""
    s = establish()
    datagrams = tuple(d for _, _, d in s.log)
    kinds = [d[0] for d in datagrams]
    # what the brief asks to cover: initiations, responses, transport and keepalives,
    # both to b and from b
    assert kinds.count(MESSAGE_INITIATION_TYPE) == 2
    assert kinds.count(MESSAGE_RESPONSE_TYPE) == 2
    assert any(len(d) == 32 for d in datagrams), "no keepalive captured"
    assert any(dst == s.b.address and d[0] == MESSAGE_RESPONSE_TYPE for _, dst, d in s.log)
    assert any(dst == s.b.address and d[0] == MESSAGE_INITIATION_TYPE for _, dst, d in s.log)
    indices = set()
    for d in datagrams:
        indices.add(int.from_bytes(d[4:8], "little"))
        if d[0] == MESSAGE_RESPONSE_TYPE:
            indices.add(int.from_bytes(d[8:12], "little"))
    assert s.b.public is not None
    return datagrams, s.unseen, s.b.public, tuple(sorted(indices))


def fresh(*, load_detection: bool = False) -> Session:
    """An established session. One-datagram feeding would add up to "under load" (many
    handshake messages in an eighth of a second) and turn drops into cookie replies, so load
    detection is off unless a test is about it."""
    s = establish()
    assert tuple(d for _, _, d in s.log) == real()[0], "the session build is not deterministic"
    if not load_detection:
        s.b.device.under_load_queue_size = 1 << 62
    return s


def authenticated_state(s: Session) -> tuple[Any, ...]:
    """Everything at b that only an authenticated message from a may change."""
    peer = s.b.device.peers[s.a.public]
    hs = peer.handshake
    return (
        peer.endpoint,
        peer.rx_bytes,
        peer.tx_bytes,
        peer.last_handshake_ns,
        id(peer.previous),
        id(peer.current),
        id(peer.next),
        hs.state,
        hs.local_index,
        hs.remote_index,
        hs.last_timestamp,
        hs.last_initiation_consumed,
    )


def feed(s: Session, data: bytes, source: Hashable) -> None:
    """Give b one datagram and check that it was dropped (or is the one b has not seen)."""
    device = s.b.device
    drops_before = sum(device.drops.values())
    cookies_before = device.cookie_replies_sent
    state_before = authenticated_state(s)
    device.receive_datagrams([(data, source)], s.now)  # any exception fails the test
    delivered = device.packets_to_deliver()
    out = device.datagrams_to_send()
    drops_after = sum(device.drops.values())
    if data == s.unseen and not s.unseen_delivered:
        s.unseen_delivered = True
        assert delivered == [s.unseen_packet]
        assert drops_after == drops_before
        assert s.b.device.peers[s.a.public].endpoint == source
        return
    assert delivered == [], f"a hostile datagram was delivered: {data.hex()}"
    assert drops_after == drops_before + 1, f"not counted as one drop: {data.hex()}"
    assert device.cookie_replies_sent == cookies_before
    assert out == [], f"b answered a hostile datagram: {out}"
    assert authenticated_state(s) == state_before, f"b's session changed: {data.hex()}"


sources = st.sampled_from([("192.0.2.1", 51820), STRANGER, STRANGER6])

# ----------------------------------------------------------------- (a) random bytes

u32 = st.integers(0, 2**32 - 1)


def _with_word(word: bytes, body: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    return body.map(lambda rest: word + rest)


def _type_word(t: int) -> bytes:
    return bytes([t, 0, 0, 0])


def random_datagrams(indices: tuple[int, ...]) -> st.SearchStrategy[bytes]:
    """Random bytes of any length up to 2000; also random bodies behind each valid type word
    at the sizes that get past the size checks, and transport messages addressed to real
    receiver indices, so that the deeper checks (MAC1, index, decryption) are reached."""
    real_index = st.sampled_from(indices).map(lambda i: i.to_bytes(4, "little"))
    return st.one_of(
        st.binary(max_size=2000),
        st.integers(0, 2000).flatmap(lambda n: st.binary(min_size=n, max_size=n)),
        _with_word(_type_word(1), st.binary(min_size=144, max_size=144)),
        _with_word(_type_word(2), st.binary(min_size=88, max_size=88)),
        _with_word(_type_word(3), st.binary(min_size=60, max_size=60)),
        _with_word(_type_word(4), st.binary(min_size=12, max_size=1600)),
        st.builds(
            lambda index, rest: _type_word(4) + index + rest,
            real_index,
            st.binary(min_size=8 + 16, max_size=200),
        ),
        st.builds(
            lambda index, rest: _type_word(3) + index + rest,
            real_index,
            st.binary(min_size=56, max_size=56),
        ),
        st.builds(
            lambda rest, index, tail: _type_word(2) + rest + index + tail,
            st.binary(min_size=4, max_size=4),
            real_index,
            st.binary(min_size=80, max_size=80),
        ),
    )


@FUZZ
@given(data=st.data())
def test_random_bytes_are_dropped(data: st.DataObject) -> None:
    _, _, _, indices = real()
    s = fresh()
    for _ in range(data.draw(st.integers(1, 5))):
        feed(s, data.draw(random_datagrams(indices)), data.draw(sources))
    s.still_works()


def test_every_length_up_to_2000_is_dropped() -> None:
    """Random bytes of each length, bare and behind each type word (and a real index)."""
    _, _, _, indices = real()
    s = fresh()
    rng = random.Random(2000)
    prefixes = [b""] + [_type_word(t) for t in range(1, 5)]
    prefixes += [_type_word(t) + i.to_bytes(4, "little") for t in (3, 4) for i in indices]
    for n in range(2001):
        for prefix in prefixes:
            feed(s, (prefix + rng.randbytes(n))[:n], STRANGER)
    s.still_works()


def test_short_datagrams_are_counted_by_reason() -> None:
    s = fresh()
    drops = s.b.device.drops
    for data in (b"", b"\x04", b"\x04\x00\x00"):
        feed(s, data, STRANGER)
    assert drops[DropReason.TOO_SHORT] == 3
    feed(s, b"\x04\x00\x00\x00" + bytes(27), STRANGER)
    assert drops[DropReason.TOO_SHORT] == 4
    feed(s, b"\x05\x00\x00\x00" + bytes(100), STRANGER)
    feed(s, b"\x04\x00\x01\x00" + bytes(100), STRANGER)
    assert drops[DropReason.UNKNOWN_TYPE] == 2
    feed(s, b"\x01\x00\x00\x00" + bytes(100), STRANGER)
    assert drops[DropReason.BAD_SIZE] == 1
    feed(s, b"\x01\x00\x00\x00" + bytes(144), STRANGER)
    assert drops[DropReason.INVALID_MAC1] == 1
    feed(s, b"\x04\x00\x00\x00" + bytes(100), STRANGER)
    assert drops[DropReason.UNKNOWN_INDEX] == 1
    s.still_works()


# ----------------------------------------------------------------- (b) mutations


def fix_mac1(data: bytearray, responder_public: bytes) -> None:
    """What anyone who knows b's public key can do: make MAC1 valid again."""
    data[-32:-16] = mac(mac1_key(responder_public), bytes(data[:-32]))


@st.composite
def mutations(draw: st.DrawFn, source: bytes | None = None) -> bytes:
    datagrams, _, b_public, indices = real()
    data = bytearray(source if source is not None else draw(st.sampled_from(datagrams)))
    index = st.one_of(u32, st.sampled_from(indices)).map(lambda i: i.to_bytes(4, "little"))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(
            st.sampled_from(
                ["flip", "truncate", "extend", "type", "reserved", "index", "counter", "splice"]
            )
        )
        n = len(data)
        if op == "flip" and n:
            position = draw(st.integers(0, n - 1))
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[draw(st.integers(0, n)) :]
        elif op == "extend":
            data += draw(st.binary(min_size=1, max_size=64))
        elif op == "type" and n:
            data[0] = draw(st.integers(0, 255))
        elif op == "reserved" and n >= 4:
            position = draw(st.integers(1, 3))
            data[position] = draw(st.integers(1, 255))
        elif op == "index" and n >= 12:
            # sender/receiver at 4..8; the response's receiver at 8..12
            offset = draw(st.sampled_from([4, 8]))
            data[offset : offset + 4] = draw(index)
        elif op == "counter" and n >= 16:
            counter = draw(st.one_of(st.integers(0, 16), st.integers(0, 2**64 - 1)))
            data[8:16] = counter.to_bytes(8, "little")
        elif op == "splice" and n:
            start = draw(st.integers(0, n - 1))
            chunk = draw(st.binary(min_size=1, max_size=n - start))
            data[start : start + len(chunk)] = chunk
    if len(data) in (MESSAGE_INITIATION_SIZE, MESSAGE_RESPONSE_SIZE) and draw(st.booleans()):
        fix_mac1(data, b_public)
    return bytes(data)


@FUZZ
@given(data=st.data())
def test_mutated_real_datagrams_are_dropped(data: st.DataObject) -> None:
    s = fresh()
    for _ in range(data.draw(st.integers(1, 5))):
        feed(s, data.draw(mutations()), data.draw(sources))
    s.still_works()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutations_of_each_real_datagram(data: st.DataObject) -> None:
    """The same, but every captured datagram gets mutated in every example."""
    datagrams, _, _, _ = real()
    s = fresh()
    for original in datagrams:
        feed(s, data.draw(mutations(original)), data.draw(sources))
    s.still_works()


def test_every_single_bit_flip_of_every_real_datagram_is_dropped() -> None:
    datagrams, _, _, _ = real()
    s = fresh()
    for original in datagrams:
        for bit in range(len(original) * 8):
            flipped = bytearray(original)
            flipped[bit // 8] ^= 1 << (bit % 8)
            feed(s, bytes(flipped), ("192.0.2.1", 51820))
    s.still_works()


# ----------------------------------------------------------------- (c) replays


def test_every_real_datagram_replayed_is_dropped() -> None:
    datagrams, unseen, _, _ = real()
    s = fresh()
    for source in (("192.0.2.1", 51820), STRANGER, STRANGER6):
        for d in datagrams:
            feed(s, d, source)
    assert s.unseen_delivered  # the one b had not seen got through, once
    drops = s.b.device.drops
    assert drops[DropReason.STALE_TIMESTAMP] >= 3  # a's initiation, from each source
    assert drops[DropReason.REPLAYED] > 0
    assert drops[DropReason.EXPIRED_KEYPAIR] > 0  # the first session's messages
    assert drops[DropReason.UNKNOWN_INDEX] > 0
    assert datagrams.count(unseen) == 1
    s.still_works()


@FUZZ
@given(
    order=st.lists(st.integers(0, 10_000), min_size=1, max_size=40),
    source=sources,
)
def test_replays_in_any_order_are_dropped(order: list[int], source: Hashable) -> None:
    datagrams, _, _, _ = real()
    s = fresh()
    for i in order:
        feed(s, datagrams[i % len(datagrams)], source)
    s.still_works()


# ----------------------------------------------------------------- floods


def _random_flood(rng: random.Random, count: int, indices: tuple[int, ...]) -> list[bytes]:
    out = []
    for _ in range(count):
        kind = rng.random()
        if kind < 0.5:
            out.append(rng.randbytes(rng.randint(0, 2000)))
        elif kind < 0.8:
            t = rng.randint(1, 4)
            size = {1: 148, 2: 92, 3: 64, 4: rng.randint(4, 1500)}[t]
            out.append(_type_word(t) + rng.randbytes(size - 4))
        else:
            index = rng.choice(indices).to_bytes(4, "little")
            out.append(_type_word(4) + index + rng.randbytes(rng.randint(8, 1500)))
    return out


def _mutated_initiations(
    rng: random.Random, count: int, originals: list[bytes], b_public: bytes
) -> list[bytes]:
    out = []
    for i in range(count):
        data = bytearray(rng.choice(originals))
        way = i % 4
        if way == 0:  # a bit flip anywhere
            bit = rng.randrange(len(data) * 8)
            data[bit // 8] ^= 1 << (bit % 8)
        elif way == 1:  # a forged MAC2: MAC1 still valid
            data[-16:] = rng.randbytes(16)
        elif way == 2:  # a random body with a valid MAC1, as anyone can make
            data[4:-32] = rng.randbytes(len(data) - 36)
            fix_mac1(data, b_public)
        else:  # a new sender index, with MAC1 fixed up
            data[4:8] = rng.randbytes(4)
            fix_mac1(data, b_public)
        out.append(bytes(data))
    return out


def test_flood_of_random_and_mutated_datagrams() -> None:
    datagrams, _, b_public, indices = real()
    s = fresh(load_detection=True)
    device = s.b.device
    rng = random.Random(20240601)
    pool: list[Hashable] = [(f"198.51.100.{i}", 1000 + i) for i in range(50)]
    pool += [("192.0.2.1", 51820), STRANGER6]
    checker = CookieChecker(b_public)

    random_flood = _random_flood(rng, 10_000, indices)
    initiations = [d for d in datagrams if d[0] == MESSAGE_INITIATION_TYPE]
    mutated = _mutated_initiations(rng, 1_000, initiations, b_public)
    assert len(random_flood) == 10_000 and len(mutated) == 1_000

    drops_before = sum(device.drops.values())
    cookies_before = device.cookie_replies_sent
    state_before = authenticated_state(s)
    replies: list[tuple[bytes, Hashable]] = []
    expected_replies = 0
    # the random datagrams in batches of 500 ...
    for start in range(0, len(random_flood), 500):
        batch = [(d, rng.choice(pool)) for d in random_flood[start : start + 500]]
        device.receive_datagrams(batch, s.now)
        assert device.packets_to_deliver() == []
        replies += device.datagrams_to_send()
    # ... then the initiations in batches of 250: enough handshakes at once to be under load,
    # where every initiation with a valid MAC1 and no valid MAC2 gets a cookie reply
    for start in range(0, len(mutated), 250):
        batch = [(d, rng.choice(pool)) for d in mutated[start : start + 250]]
        device.receive_datagrams(batch, s.now)
        assert device.is_under_load(s.now)
        expected_replies += sum(checker.check_mac1(d) for d, _ in batch)
        assert device.packets_to_deliver() == []
        replies += device.datagrams_to_send()

    sent = len(random_flood) + len(mutated)
    cookie_replies = device.cookie_replies_sent - cookies_before
    drops = sum(device.drops.values()) - drops_before
    assert cookie_replies == expected_replies > 0
    assert drops + cookie_replies == sent
    assert len(replies) == cookie_replies
    for reply, destination in replies:
        assert len(reply) == MESSAGE_COOKIE_REPLY_SIZE
        assert reply[:4] == _type_word(MESSAGE_COOKIE_REPLY_TYPE)
        assert destination in pool
    assert authenticated_state(s) == state_before
    s.still_works()


def test_a_real_handshake_completes_under_load_with_a_cookie() -> None:
    """Under load b answers a's initiation with a cookie reply; a's retry carries MAC2."""
    datagrams, _, b_public, _ = real()
    s = fresh(load_detection=True)
    a, b = s.a, s.b
    rng = random.Random(7)
    initiations = [d for d in datagrams if d[0] == MESSAGE_INITIATION_TYPE]
    junk_source: Hashable = ("198.51.100.200", 9)

    def flood(t: float) -> None:
        junk = _mutated_initiations(rng, 200, initiations, b_public)
        b.device.receive_datagrams([(d, junk_source) for d in junk], t)
        assert b.device.is_under_load(t)
        b.device.datagrams_to_send()  # the cookie replies to the junk go nowhere

    # both sessions have expired: a's next packet needs a new handshake
    t = s.at(500.0)
    flood(t)
    cookies = b.device.cookie_replies_sent
    packet = ipv4_packet(a.inner, b.inner, b"under load")
    start = len(s.log)
    a.device.send_packets([packet], t)
    s.wire.run(t)
    kinds = [d[0] for _, _, d in s.log[start:]]
    assert kinds == [MESSAGE_INITIATION_TYPE, MESSAGE_COOKIE_REPLY_TYPE]
    assert b.device.cookie_replies_sent == cookies + 1
    assert b.received == []
    # a retries after REKEY_TIMEOUT (plus jitter); b is still under load
    t = s.at(500.0 + REKEY_TIMEOUT + REKEY_TIMEOUT_JITTER_MAX + 0.01)
    flood(t)
    cookies = b.device.cookie_replies_sent
    start = len(s.log)
    s.wire.fire_timers(t)
    s.wire.run(t)
    kinds = [d[0] for _, _, d in s.log[start:]]
    assert kinds[:2] == [MESSAGE_INITIATION_TYPE, MESSAGE_RESPONSE_TYPE]
    retry = s.log[start][2]
    assert retry[-16:] != bytes(16), "the retry carries no MAC2"
    assert b.device.cookie_replies_sent == cookies
    assert b.received == [packet]
    s.still_works()
