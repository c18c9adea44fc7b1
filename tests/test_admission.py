"""Handshake admission: MAC1 always; under load a MAC2 (or a cookie reply) and a per-source
rate limit; the load rule itself."""

from __future__ import annotations

import pytest
from support import make_rng

from wgpy.protocol.admission import Admission, endpoint_bytes
from wgpy.protocol.constants import (
    MESSAGE_INITIATION_SIZE,
    RATELIMIT_BURST,
    UNDER_LOAD_AFTER_TIME,
)
from wgpy.protocol.cookie import CookieGenerator
from wgpy.protocol.errors import DropReason, RemoteProtocolError
from wgpy.protocol.messages import MessageCookieReply

OURS = bytes(range(32))  # our public key (any 32 bytes will do for MACs)
SOURCE = ("192.0.2.7", 40000)


def initiation(generator: CookieGenerator, sender: int, now: float) -> bytes:
    """An initiation-sized message with MAC1 (and MAC2 when the generator has a cookie)."""
    buf = bytearray(MESSAGE_INITIATION_SIZE)
    buf[0] = 1
    buf[4:8] = sender.to_bytes(4, "little")
    generator.add_macs(buf, now)
    return bytes(buf)


def loaded(now: float) -> Admission:
    admission = Admission(make_rng(5))
    admission.set_public_key(OURS)
    admission.arrived(1, now, queue_size=1)
    assert admission.is_under_load(now)
    return admission


def reason(call: object) -> DropReason:
    with pytest.raises(RemoteProtocolError) as e:
        call()  # type: ignore[operator]
    return e.value.reason


def test_nothing_is_admitted_without_a_key_of_our_own() -> None:
    admission = Admission(make_rng(1))
    message = initiation(CookieGenerator(OURS), 1, 0.0)
    assert reason(lambda: admission.admit(message, SOURCE, 0.0)) is DropReason.UNKNOWN_PEER
    admission.set_public_key(OURS)
    assert admission.admit(message, SOURCE, 0.0) is None
    admission.set_public_key(None)
    assert reason(lambda: admission.admit(message, SOURCE, 0.0)) is DropReason.UNKNOWN_PEER


def test_mac1_must_be_made_with_our_public_key() -> None:
    admission = Admission(make_rng(1))
    admission.set_public_key(OURS)
    wrong = initiation(CookieGenerator(bytes(32)), 1, 0.0)
    assert reason(lambda: admission.admit(wrong, SOURCE, 0.0)) is DropReason.INVALID_MAC1
    flipped = bytearray(initiation(CookieGenerator(OURS), 1, 0.0))
    flipped[10] ^= 1
    message = bytes(flipped)
    assert reason(lambda: admission.admit(message, SOURCE, 0.0)) is DropReason.INVALID_MAC1


def test_load_comes_with_many_messages_in_an_eighth_of_a_second_and_lasts_a_second() -> None:
    admission = Admission(make_rng(1))
    assert not admission.ever_under_load
    for i in range(10):  # 10 messages, but spread over 10 windows
        admission.arrived(1, i * 0.2, queue_size=2)
    assert not admission.ever_under_load
    admission.arrived(1, 5.0, queue_size=2)
    admission.arrived(1, 5.1, queue_size=2)
    assert admission.ever_under_load
    assert admission.is_under_load(5.1 + UNDER_LOAD_AFTER_TIME - 0.01)
    assert not admission.is_under_load(5.1 + UNDER_LOAD_AFTER_TIME)


def test_under_load_a_message_without_mac2_gets_a_cookie_reply_then_gets_in() -> None:
    admission = loaded(1.0)
    generator = CookieGenerator(OURS)
    reply = admission.admit(initiation(generator, 0x1234, 1.0), SOURCE, 1.0)
    assert reply is not None
    parsed = MessageCookieReply.parse(reply)
    assert parsed.receiver == 0x1234  # addressed to the sender's index
    generator.consume_reply(parsed, 1.0)
    assert admission.admit(initiation(generator, 0x1234, 1.0), SOURCE, 1.0) is None
    # the cookie is for that source address and port only
    other = ("192.0.2.8", 40000)
    assert admission.admit(initiation(generator, 0x1234, 1.0), other, 1.0) is not None


def test_under_load_each_source_is_rate_limited() -> None:
    admission = loaded(1.0)
    generator = CookieGenerator(OURS)
    reply = admission.admit(initiation(generator, 1, 1.0), SOURCE, 1.0)
    assert reply is not None
    generator.consume_reply(MessageCookieReply.parse(reply), 1.0)
    for _ in range(RATELIMIT_BURST):
        assert admission.admit(initiation(generator, 1, 1.0), SOURCE, 1.0) is None
    message = initiation(generator, 1, 1.0)
    assert reason(lambda: admission.admit(message, SOURCE, 1.0)) is DropReason.RATE_LIMITED


def test_endpoint_bytes_packs_address_and_port() -> None:
    assert endpoint_bytes(("192.0.2.1", 51820)) == bytes([192, 0, 2, 1, 0xCA, 0x6C])
    packed = endpoint_bytes(("2001:db8::1", 1, "a local source"))
    assert len(packed) == 18 and packed[-2:] == b"\x00\x01"
    assert endpoint_bytes("elsewhere") == b"'elsewhere'"  # not a socket address: its repr
