"""MAC1, MAC2 and cookie replies (CookieChecker, CookieGenerator), and the rate limiter."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import make_rng

from wgpy.protocol.constants import (
    COOKIE_REFRESH_TIME,
    MESSAGE_INITIATION_SIZE,
    MESSAGE_RESPONSE_SIZE,
    RATELIMIT_BURST,
    RATELIMIT_PACKETS_PER_SECOND,
)
from wgpy.protocol.cookie import CookieChecker, CookieGenerator
from wgpy.protocol.crypto import generate_private_key, public_key
from wgpy.protocol.errors import DropReason, RemoteProtocolError
from wgpy.protocol.messages import (
    MessageCookieReply,
    MessageInitiation,
    MessageResponse,
)
from wgpy.protocol.ratelimiter import RateLimiter, source_key

SOURCE = ipaddress.ip_address("198.51.100.7").packed + (51820).to_bytes(2, "big")
OTHER_SOURCE = ipaddress.ip_address("198.51.100.8").packed + (51820).to_bytes(2, "big")
OTHER_PORT = ipaddress.ip_address("198.51.100.7").packed + (51821).to_bytes(2, "big")


def keypair(seed: int) -> tuple[bytes, bytes]:
    private = generate_private_key(make_rng(seed))
    return private, public_key(private)


_, B_PUBLIC = keypair(2)
_, C_PUBLIC = keypair(3)


def initiation(seed: int = 0) -> bytearray:
    rng = make_rng(1000 + seed)
    msg = MessageInitiation(int.from_bytes(rng(4), "little"), rng(32), rng(48), rng(28))
    return bytearray(msg.pack())


def response(seed: int = 0) -> bytearray:
    rng = make_rng(2000 + seed)
    msg = MessageResponse(
        int.from_bytes(rng(4), "little"), int.from_bytes(rng(4), "little"), rng(32), rng(16)
    )
    return bytearray(msg.pack())


MakeMessage = Callable[..., bytearray]
MESSAGES = pytest.mark.parametrize("make", [initiation, response], ids=["initiation", "response"])


def with_cookie(
    now: float = 0.0, *, source: bytes = SOURCE
) -> tuple[CookieChecker, CookieGenerator, bytes]:
    """A checker at B and a generator towards B that holds a cookie for ``source``."""
    checker, gen = CookieChecker(B_PUBLIC), CookieGenerator(B_PUBLIC)
    rng = make_rng(7)
    msg = initiation()
    gen.add_macs(msg, now)
    assert checker.check_mac1(bytes(msg))
    assert not checker.check_mac2(bytes(msg), source, now, rng)
    reply = checker.create_reply(bytes(msg), 1234, source, now, rng)
    gen.consume_reply(reply, now)
    return checker, gen, bytes(msg)


# ----------------------------------------------------------------- MAC1


@MESSAGES
def test_mac1_verifies_only_at_the_intended_responder(make: MakeMessage) -> None:
    msg = make()
    CookieGenerator(B_PUBLIC).add_macs(msg, 0.0)
    assert msg[-32:-16] != bytes(16)
    assert CookieChecker(B_PUBLIC).check_mac1(bytes(msg))
    assert not CookieChecker(C_PUBLIC).check_mac1(bytes(msg))
    # the fields before the MACs are left alone
    original = make()
    assert msg[:-32] == original[:-32]


def test_macs_of_a_packed_message_parse_back() -> None:
    msg = initiation()
    CookieGenerator(B_PUBLIC).add_macs(msg, 0.0)
    parsed = MessageInitiation.parse(bytes(msg))
    assert parsed.mac1 == bytes(msg[-32:-16])
    assert parsed.mac2 == bytes(16)
    assert len(msg) == MESSAGE_INITIATION_SIZE


def test_zero_mac1_does_not_verify() -> None:
    assert not CookieChecker(B_PUBLIC).check_mac1(bytes(initiation()))
    assert not CookieChecker(B_PUBLIC).check_mac1(bytes(response()))


@MESSAGES
def test_every_single_bit_flip_before_mac2_breaks_mac1(make: MakeMessage) -> None:
    msg = make()
    CookieGenerator(B_PUBLIC).add_macs(msg, 0.0)
    checker = CookieChecker(B_PUBLIC)
    assert checker.check_mac1(bytes(msg))
    # MAC1 covers everything before it, and is itself the second-to-last 16 bytes
    for bit in range((len(msg) - 16) * 8):
        flipped = bytearray(msg)
        flipped[bit // 8] ^= 1 << (bit % 8)
        assert not checker.check_mac1(bytes(flipped)), f"bit {bit} flipped, MAC1 still valid"


@MESSAGES
def test_mac2_bits_are_not_covered_by_mac1_but_by_mac2(make: MakeMessage) -> None:
    checker, gen, _ = with_cookie()
    rng = make_rng(8)
    msg = make()
    gen.add_macs(msg, 1.0)
    assert checker.check_mac2(bytes(msg), SOURCE, 1.0, rng)
    for bit in range((len(msg) - 16) * 8, len(msg) * 8):
        flipped = bytearray(msg)
        flipped[bit // 8] ^= 1 << (bit % 8)
        assert checker.check_mac1(bytes(flipped))  # by design: MAC1 stops before MAC2
        assert not checker.check_mac2(bytes(flipped), SOURCE, 1.0, rng), f"bit {bit}"


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=MESSAGE_RESPONSE_SIZE, max_size=MESSAGE_INITIATION_SIZE))
def test_mac1_of_arbitrary_bytes_only_verifies_when_written(data: bytes) -> None:
    checker = CookieChecker(B_PUBLIC)
    msg = bytearray(data)
    assert not checker.check_mac1(data)  # a forgery with probability 2**-128
    CookieGenerator(B_PUBLIC).add_macs(msg, 0.0)
    assert checker.check_mac1(bytes(msg))
    assert not CookieChecker(C_PUBLIC).check_mac1(bytes(msg))


# ----------------------------------------------------------------- MAC2 and cookie replies


@MESSAGES
def test_mac2_is_zero_without_a_cookie(make: MakeMessage) -> None:
    gen = CookieGenerator(B_PUBLIC)
    assert not gen.has_sent_mac1
    for now in (0.0, 1.0, 1000.0):
        msg = make()
        msg[-16:] = b"\xff" * 16  # overwritten, not left as it was
        gen.add_macs(msg, now)
        assert msg[-16:] == bytes(16)
    assert gen.has_sent_mac1
    assert not CookieChecker(B_PUBLIC).check_mac2(bytes(msg), SOURCE, 0.0, make_rng(1))


def test_cookie_reply_round_trip_gives_mac2_for_the_same_source_only() -> None:
    checker, gen, _ = with_cookie(now=10.0)
    rng = make_rng(9)
    for make in (initiation, response):
        msg = make(1)
        gen.add_macs(msg, 11.0)
        assert msg[-16:] != bytes(16)
        assert checker.check_mac1(bytes(msg))
        assert checker.check_mac2(bytes(msg), SOURCE, 11.0, rng)
        assert not checker.check_mac2(bytes(msg), OTHER_SOURCE, 11.0, rng)
        assert not checker.check_mac2(bytes(msg), OTHER_PORT, 11.0, rng)
    # another responder's checker (another secret) does not accept it either
    stranger = CookieChecker(B_PUBLIC)
    assert not stranger.check_mac2(bytes(msg), SOURCE, 11.0, make_rng(10))


def test_cookie_reply_is_a_well_formed_message() -> None:
    checker = CookieChecker(B_PUBLIC)
    msg = initiation()
    CookieGenerator(B_PUBLIC).add_macs(msg, 0.0)
    reply = checker.create_reply(bytes(msg), 0xDEADBEEF, SOURCE, 0.0, make_rng(3))
    packed = reply.pack()
    assert len(packed) == 64
    assert MessageCookieReply.parse(packed) == reply
    assert reply.receiver == 0xDEADBEEF
    assert len(reply.nonce) == 24 and len(reply.encrypted_cookie) == 32


def test_mac2_covers_mac1() -> None:
    checker, gen, _ = with_cookie()
    msg = initiation(2)
    gen.add_macs(msg, 1.0)
    rng = make_rng(11)
    forged = bytearray(msg)
    forged[-17] ^= 1  # last byte of MAC1
    assert not checker.check_mac2(bytes(forged), SOURCE, 1.0, rng)


def test_cookie_expires_after_cookie_refresh_time() -> None:
    checker, gen, _ = with_cookie(now=100.0)
    rng = make_rng(12)
    msg = initiation(3)
    gen.add_macs(msg, 100.0 + COOKIE_REFRESH_TIME - 1)
    assert msg[-16:] != bytes(16)
    msg = initiation(3)
    gen.add_macs(msg, 100.0 + COOKIE_REFRESH_TIME + 0.5)
    assert msg[-16:] == bytes(16)
    msg = initiation(3)
    gen.add_macs(msg, 100.0 + COOKIE_REFRESH_TIME + 1000)
    assert msg[-16:] == bytes(16)
    assert not checker.check_mac2(bytes(msg), SOURCE, 100.0 + COOKIE_REFRESH_TIME + 1, rng)


def test_checker_secret_rotates_after_two_minutes() -> None:
    checker, gen = CookieChecker(B_PUBLIC), CookieGenerator(B_PUBLIC)
    rng = make_rng(13)
    msg = initiation()
    gen.add_macs(msg, 0.0)
    # the checker picks its secret at t=0; the reply at t=100 is still under that secret
    assert not checker.check_mac2(bytes(msg), SOURCE, 0.0, rng)
    gen.add_macs(msg, 100.0)
    gen.consume_reply(checker.create_reply(bytes(msg), 1, SOURCE, 100.0, rng), 100.0)
    msg = initiation(1)
    gen.add_macs(msg, 110.0)
    assert checker.check_mac2(bytes(msg), SOURCE, 110.0, rng)
    assert checker.check_mac2(bytes(msg), SOURCE, COOKIE_REFRESH_TIME - 1, rng)
    # the generator's cookie is only 21 s old, but the checker's secret is 121 s old
    msg = initiation(2)
    gen.add_macs(msg, 121.0)
    assert msg[-16:] != bytes(16)
    assert not checker.check_mac2(bytes(msg), SOURCE, 121.0, rng)
    # a fresh reply under the new secret works again
    gen.consume_reply(checker.create_reply(bytes(msg), 1, SOURCE, 121.0, rng), 121.0)
    msg = initiation(3)
    gen.add_macs(msg, 122.0)
    assert checker.check_mac2(bytes(msg), SOURCE, 122.0, rng)


def test_reply_for_another_mac1_fails_to_decrypt() -> None:
    checker, gen = CookieChecker(B_PUBLIC), CookieGenerator(B_PUBLIC)
    rng = make_rng(14)
    first, second = initiation(1), initiation(2)
    gen.add_macs(first, 0.0)
    gen.add_macs(second, 0.0)  # the generator now expects a reply to the second
    stale = checker.create_reply(bytes(first), 1, SOURCE, 0.0, rng)
    with pytest.raises(RemoteProtocolError) as info:
        gen.consume_reply(stale, 0.0)
    assert info.value.reason is DropReason.DECRYPTION_FAILED
    msg = initiation(3)
    gen.add_macs(msg, 0.0)
    assert msg[-16:] == bytes(16), "a failed reply must not install a cookie"


def test_reply_from_another_responder_or_tampered_fails_to_decrypt() -> None:
    gen = CookieGenerator(B_PUBLIC)
    rng = make_rng(15)
    msg = initiation()
    gen.add_macs(msg, 0.0)
    impostor = CookieChecker(C_PUBLIC).create_reply(bytes(msg), 1, SOURCE, 0.0, rng)
    with pytest.raises(RemoteProtocolError) as info:
        gen.consume_reply(impostor, 0.0)
    assert info.value.reason is DropReason.DECRYPTION_FAILED
    good = CookieChecker(B_PUBLIC).create_reply(bytes(msg), 1, SOURCE, 0.0, rng)
    for field in ("nonce", "encrypted_cookie"):
        value = bytearray(getattr(good, field))
        value[0] ^= 1
        tampered = MessageCookieReply(
            good.receiver,
            bytes(value) if field == "nonce" else good.nonce,
            bytes(value) if field == "encrypted_cookie" else good.encrypted_cookie,
        )
        with pytest.raises(RemoteProtocolError) as info:
            gen.consume_reply(tampered, 0.0)
        assert info.value.reason is DropReason.DECRYPTION_FAILED
    gen.consume_reply(good, 0.0)  # the untampered one still works


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=24, max_size=24), st.binary(min_size=32, max_size=32))
def test_random_cookie_replies_never_decrypt(nonce: bytes, encrypted: bytes) -> None:
    gen = CookieGenerator(B_PUBLIC)
    msg = initiation()
    gen.add_macs(msg, 0.0)
    with pytest.raises(RemoteProtocolError) as info:
        gen.consume_reply(MessageCookieReply(1, nonce, encrypted), 0.0)
    assert info.value.reason is DropReason.DECRYPTION_FAILED


# ----------------------------------------------------------------- the rate limiter

COST = 1.0 / RATELIMIT_PACKETS_PER_SECOND
A4 = ipaddress.ip_address("192.0.2.1").packed
B4 = ipaddress.ip_address("192.0.2.2").packed


def drain(rl: RateLimiter, key: bytes, now: float) -> int:
    """How many are allowed in a row at ``now`` (bounded)."""
    n = 0
    while n < 100 and rl.allow(key, now):
        n += 1
    return n


def test_constants() -> None:
    assert RATELIMIT_PACKETS_PER_SECOND == 20
    assert RATELIMIT_BURST == 5


def test_a_burst_of_five_then_refused() -> None:
    rl = RateLimiter()
    assert [rl.allow(A4, 0.0) for _ in range(7)] == [True] * 5 + [False] * 2
    assert not rl.allow(A4, 0.0)


def test_refills_at_twenty_a_second() -> None:
    rl = RateLimiter()
    assert drain(rl, A4, 0.0) == RATELIMIT_BURST
    assert not rl.allow(A4, COST * 0.9)
    assert rl.allow(A4, COST * 1.1)
    assert not rl.allow(A4, COST * 1.1)
    # hammering every millisecond for two seconds: one packet per 50 ms gets through
    start = 1.0
    assert drain(rl, A4, start) == RATELIMIT_BURST
    allowed = sum(rl.allow(A4, start + 0.0005 + i * 0.001) for i in range(2000))
    assert allowed == 2 * RATELIMIT_PACKETS_PER_SECOND - 1  # tokens at 50 ms, ..., 1950 ms


def test_refill_is_capped_at_the_burst() -> None:
    rl = RateLimiter()
    assert drain(rl, A4, 0.0) == RATELIMIT_BURST
    assert drain(rl, A4, 0.5) == RATELIMIT_BURST  # 10 tokens' worth of time, 5 kept
    assert drain(rl, A4, 0.9) == RATELIMIT_BURST  # idle but not swept
    assert drain(rl, A4, 100.0) == RATELIMIT_BURST


def test_sources_are_independent() -> None:
    rl = RateLimiter()
    assert drain(rl, A4, 0.0) == RATELIMIT_BURST
    assert drain(rl, B4, 0.0) == RATELIMIT_BURST
    assert not rl.allow(A4, 0.0)
    assert len(rl) == 2


def test_ipv6_sources_share_a_bucket_per_64() -> None:
    one = ipaddress.ip_address("2001:db8:1:2::1").packed
    same64 = ipaddress.ip_address("2001:db8:1:2:ffff:ffff:ffff:ffff").packed
    other64 = ipaddress.ip_address("2001:db8:1:3::1").packed
    assert source_key(one) == source_key(same64) == one[:8]
    assert source_key(one) != source_key(other64)
    assert source_key(A4) == A4 and source_key(A4) != source_key(B4)
    rl = RateLimiter()
    for _ in range(3):
        assert rl.allow(source_key(one), 0.0)
    for _ in range(2):
        assert rl.allow(source_key(same64), 0.0)
    assert not rl.allow(source_key(one), 0.0)
    assert not rl.allow(source_key(same64), 0.0)
    assert drain(rl, source_key(other64), 0.0) == RATELIMIT_BURST
    assert len(rl) == 2


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=16, max_size=16), st.binary(min_size=8, max_size=8))
def test_source_key_of_any_ipv6_address_is_its_64(address: bytes, host: bytes) -> None:
    assert source_key(address) == address[:8]
    assert source_key(address[:8] + host) == source_key(address)


def test_idle_sources_are_swept_after_a_second() -> None:
    rl = RateLimiter()
    assert rl.allow(A4, 0.0)
    assert rl.allow(B4, 0.0)
    c = ipaddress.ip_address("192.0.2.3").packed
    assert rl.allow(c, 0.5)
    assert len(rl) == 3  # no sweep within a second of the last
    d = ipaddress.ip_address("192.0.2.4").packed
    assert rl.allow(d, 1.2)  # sweeps A and B (idle 1.2 s), keeps C (idle 0.7 s)
    assert len(rl) == 2
    assert rl.allow(d, 2.5)  # sweeps C
    assert len(rl) == 1


def test_the_table_stays_bounded_by_recent_sources() -> None:
    rl = RateLimiter()
    for second in range(10):
        for i in range(100):
            rl.allow(i.to_bytes(2, "big") + second.to_bytes(2, "big"), second * 2.0)
        assert len(rl) <= 100
