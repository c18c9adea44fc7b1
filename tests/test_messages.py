"""The four wire messages: exact sizes, pack/parse round trips, and what parse refuses."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wgpy.protocol.constants import (
    MESSAGE_COOKIE_REPLY_SIZE,
    MESSAGE_COOKIE_REPLY_TYPE,
    MESSAGE_INITIATION_SIZE,
    MESSAGE_INITIATION_TYPE,
    MESSAGE_RESPONSE_SIZE,
    MESSAGE_RESPONSE_TYPE,
    MESSAGE_TRANSPORT_HEADER_SIZE,
    MESSAGE_TRANSPORT_TYPE,
)
from wgpy.protocol.errors import DropReason, RemoteProtocolError
from wgpy.protocol.messages import (
    MessageCookieReply,
    MessageInitiation,
    MessageResponse,
    MessageTransport,
    message_type,
)

SETTINGS = settings(max_examples=200, deadline=None)

u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)


def exactly(n: int) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=n, max_size=n)


initiations = st.builds(
    MessageInitiation,
    sender=u32,
    ephemeral=exactly(32),
    encrypted_static=exactly(48),
    encrypted_timestamp=exactly(28),
    mac1=exactly(16),
    mac2=exactly(16),
)
responses = st.builds(
    MessageResponse,
    sender=u32,
    receiver=u32,
    ephemeral=exactly(32),
    encrypted_nothing=exactly(16),
    mac1=exactly(16),
    mac2=exactly(16),
)
cookie_replies = st.builds(
    MessageCookieReply, receiver=u32, nonce=exactly(24), encrypted_cookie=exactly(32)
)
transports = st.builds(
    MessageTransport,
    receiver=u32,
    counter=u64,
    encrypted_packet=st.binary(min_size=16, max_size=1500),
)

Message = MessageInitiation | MessageResponse | MessageCookieReply | MessageTransport

# (class, strategy, message type, exact size or None for "at least 32")
KINDS: list[tuple[Any, st.SearchStrategy[Any], int, int | None]] = [
    (MessageInitiation, initiations, MESSAGE_INITIATION_TYPE, MESSAGE_INITIATION_SIZE),
    (MessageResponse, responses, MESSAGE_RESPONSE_TYPE, MESSAGE_RESPONSE_SIZE),
    (MessageCookieReply, cookie_replies, MESSAGE_COOKIE_REPLY_TYPE, MESSAGE_COOKIE_REPLY_SIZE),
    (MessageTransport, transports, MESSAGE_TRANSPORT_TYPE, None),
]
IDS = ["initiation", "response", "cookie_reply", "transport"]
by_kind = pytest.mark.parametrize(("cls", "strategy", "type_", "size"), KINDS, ids=IDS)

TRANSPORT_MIN = MESSAGE_TRANSPORT_HEADER_SIZE + 16


def type_word(t: int) -> bytes:
    return struct.pack("<I", t)


def test_sizes_and_types_are_the_whitepapers() -> None:
    assert (MESSAGE_INITIATION_SIZE, MESSAGE_RESPONSE_SIZE, MESSAGE_COOKIE_REPLY_SIZE) == (
        148,
        92,
        64,
    )
    assert MESSAGE_TRANSPORT_HEADER_SIZE == 16
    assert (
        MESSAGE_INITIATION_TYPE,
        MESSAGE_RESPONSE_TYPE,
        MESSAGE_COOKIE_REPLY_TYPE,
        MESSAGE_TRANSPORT_TYPE,
    ) == (1, 2, 3, 4)


@by_kind
def test_round_trip(cls: Any, strategy: st.SearchStrategy[Any], type_: int, size: int) -> None:
    @SETTINGS
    @given(strategy)
    def check(msg: Message) -> None:
        packed = msg.pack()
        assert isinstance(packed, bytes)
        assert cls.parse(packed) == msg
        # any bytes-like input parses the same
        assert cls.parse(bytearray(packed)) == msg
        assert cls.parse(memoryview(packed)) == msg
        assert cls.parse(packed).pack() == packed

    check()


@by_kind
def test_packed_size_type_and_reserved_bytes(
    cls: Any, strategy: st.SearchStrategy[Any], type_: int, size: int | None
) -> None:
    @SETTINGS
    @given(strategy)
    def check(msg: Message) -> None:
        packed = msg.pack()
        if size is None:
            assert isinstance(msg, MessageTransport)
            assert len(packed) == 16 + len(msg.encrypted_packet)
        else:
            assert len(packed) == size
        assert packed[0] == type_
        assert packed[1:4] == b"\x00\x00\x00", "reserved bytes must be zero"
        assert packed[:4] == type_word(type_)
        assert message_type(packed) == type_

    check()


def test_field_layout_is_little_endian_and_in_order() -> None:
    init = MessageInitiation(
        0x04030201, b"E" * 32, b"S" * 48, b"T" * 28, mac1=b"1" * 16, mac2=b"2" * 16
    ).pack()
    assert init == (
        b"\x01\x00\x00\x00\x01\x02\x03\x04"
        + b"E" * 32
        + b"S" * 48
        + b"T" * 28
        + b"1" * 16
        + b"2" * 16
    )
    resp = MessageResponse(1, 0x0A0B0C0D, b"E" * 32, b"N" * 16, b"1" * 16, b"2" * 16).pack()
    assert resp == (
        b"\x02\x00\x00\x00\x01\x00\x00\x00\x0d\x0c\x0b\x0a"
        + b"E" * 32
        + b"N" * 16
        + b"1" * 16
        + b"2" * 16
    )
    cookie = MessageCookieReply(7, b"n" * 24, b"c" * 32).pack()
    assert cookie == b"\x03\x00\x00\x00\x07\x00\x00\x00" + b"n" * 24 + b"c" * 32
    data = MessageTransport(9, 0x0102030405060708, b"p" * 16).pack()
    assert data == (b"\x04\x00\x00\x00\x09\x00\x00\x00\x08\x07\x06\x05\x04\x03\x02\x01" + b"p" * 16)


def test_macs_default_to_zero() -> None:
    init = MessageInitiation(1, bytes(32), bytes(48), bytes(28))
    resp = MessageResponse(1, 2, bytes(32), bytes(16))
    assert init.mac1 == init.mac2 == resp.mac1 == resp.mac2 == bytes(16)
    assert init.pack()[-32:] == bytes(32)
    assert resp.pack()[-32:] == bytes(32)


def _would_parse(data: bytes, type_: int, size: int | None) -> bool:
    if size is None:
        return len(data) >= TRANSPORT_MIN and data[:4] == type_word(type_)
    return len(data) == size and data[:4] == type_word(type_)


def _expected_reason(data: bytes, type_: int, size: int | None) -> DropReason:
    if size is None:
        return DropReason.TOO_SHORT if len(data) < TRANSPORT_MIN else DropReason.UNKNOWN_TYPE
    return DropReason.BAD_SIZE if len(data) != size else DropReason.UNKNOWN_TYPE


def hostile_for(type_: int, size: int | None) -> st.SearchStrategy[bytes]:
    """Random bytes, and random bytes behind a plausible type word at plausible sizes, so
    that both the refusals and the successes of ``parse`` are exercised."""
    body = (size if size is not None else TRANSPORT_MIN) - 4
    words = st.one_of(
        st.just(type_word(type_)),
        st.sampled_from([type_word(t) for t in range(6)]),
        st.binary(min_size=4, max_size=4),
    )
    bodies = st.one_of(
        st.sampled_from([body - 1, body, body + 1]).flatmap(exactly),
        st.binary(max_size=200),
    )
    return st.one_of(
        st.binary(max_size=2000),
        st.integers(0, 2000).flatmap(exactly),
        st.builds(lambda word, rest: word + rest, words, bodies),
    )


@by_kind
def test_parse_of_any_bytes_raises_only_remote_protocol_error(
    cls: Any, strategy: st.SearchStrategy[Any], type_: int, size: int | None
) -> None:
    @settings(max_examples=500, deadline=None)
    @given(hostile_for(type_, size))
    def check(data: bytes) -> None:
        try:
            msg = cls.parse(data)
        except RemoteProtocolError as e:
            assert not _would_parse(data, type_, size)
            assert e.reason is _expected_reason(data, type_, size)
        else:
            # ... and anything else escaping fails the test by itself
            assert _would_parse(data, type_, size)
            assert msg.pack() == data

    check()


@pytest.mark.parametrize("length", [0, 1, 3, 4, 15, 16, 31, 63, 65, 91, 93, 147, 149, 2000])
def test_wrong_sizes_are_refused(length: int) -> None:
    for cls, _, type_, size in KINDS:
        data = type_word(type_) + bytes(max(0, length - 4))
        data = data[:length]
        if _would_parse(data, type_, size):
            continue
        with pytest.raises(RemoteProtocolError) as info:
            cls.parse(data)
        assert info.value.reason is _expected_reason(data, type_, size)


SAMPLES: list[Message] = [
    MessageInitiation(1, bytes(32), bytes(48), bytes(28)),
    MessageResponse(1, 2, bytes(32), bytes(16)),
    MessageCookieReply(1, bytes(24), bytes(32)),
    MessageTransport(1, 2, bytes(100)),
]


@pytest.mark.parametrize(("kind", "sample"), list(zip(KINDS, SAMPLES, strict=True)), ids=IDS)
def test_every_other_type_is_refused_at_the_right_size(kind: Any, sample: Message) -> None:
    cls, _, type_, _ = kind
    packed = bytearray(sample.pack())
    assert cls.parse(bytes(packed)) == sample
    for t in range(256):
        if t == type_:
            continue
        packed[0] = t
        with pytest.raises(RemoteProtocolError) as info:
            cls.parse(bytes(packed))
        assert info.value.reason is DropReason.UNKNOWN_TYPE, (cls, t)


@by_kind
def test_nonzero_reserved_bytes_are_refused(
    cls: Any, strategy: st.SearchStrategy[Any], type_: int, size: int | None
) -> None:
    @SETTINGS
    @given(strategy, st.integers(1, 3), st.integers(1, 255))
    def check(msg: Message, position: int, value: int) -> None:
        packed = bytearray(msg.pack())
        packed[position] = value
        assert message_type(packed) == 0
        with pytest.raises(RemoteProtocolError) as info:
            cls.parse(bytes(packed))
        assert info.value.reason is DropReason.UNKNOWN_TYPE

    check()


def test_transport_with_empty_payload_is_a_keepalive_of_32_bytes() -> None:
    keepalive = MessageTransport(5, 0, bytes(16))
    packed = keepalive.pack()
    assert len(packed) == 32
    assert MessageTransport.parse(packed) == keepalive
    with pytest.raises(RemoteProtocolError) as info:
        MessageTransport.parse(packed[:31])
    assert info.value.reason is DropReason.TOO_SHORT


# ----------------------------------------------------------------- message_type


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_message_type_of_any_bytes(data: bytes) -> None:
    t = message_type(data)
    if len(data) < 4 or data[1:4] != b"\x00\x00\x00" or not 1 <= data[0] <= 4:
        assert t == 0
    else:
        assert t == data[0]
    # bytes-like inputs agree
    assert message_type(bytearray(data)) == t
    assert message_type(memoryview(data)) == t


def test_message_type_of_each_first_byte() -> None:
    for t in range(256):
        word = bytes([t, 0, 0, 0])
        expected = t if 1 <= t <= 4 else 0
        assert message_type(word) == expected
        assert message_type(word + b"anything after the type word") == expected
        for reserved in range(1, 4):
            bad = bytearray(word)
            bad[reserved] = 0x80
            assert message_type(bad) == 0


@pytest.mark.parametrize("data", [b"", b"\x01", b"\x01\x00", b"\x01\x00\x00"])
def test_message_type_of_short_data_is_zero(data: bytes) -> None:
    assert message_type(data) == 0


def test_messages_are_immutable() -> None:
    msg = MessageCookieReply(1, bytes(24), bytes(32))
    with pytest.raises(AttributeError):
        msg.receiver = 2  # type: ignore[misc]
