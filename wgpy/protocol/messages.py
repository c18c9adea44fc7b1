"""The four WireGuard messages (whitepaper 5.4), with exact sizes.

Every message starts with a little-endian u32 whose low byte is the type and whose three
reserved bytes are zero; anything else is not a WireGuard message. ``parse`` raises
:class:`RemoteProtocolError` on a wrong size; ``pack`` is its exact inverse. The messages are
named tuples: a handshake builds and parses four of them, and a tuple is made several times
faster than a frozen dataclass.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from .constants import (
    MESSAGE_COOKIE_REPLY_SIZE,
    MESSAGE_COOKIE_REPLY_TYPE,
    MESSAGE_INITIATION_SIZE,
    MESSAGE_INITIATION_TYPE,
    MESSAGE_RESPONSE_SIZE,
    MESSAGE_RESPONSE_TYPE,
    MESSAGE_TRANSPORT_HEADER_SIZE,
    MESSAGE_TRANSPORT_TYPE,
    PADDING_MULTIPLE,
)
from .errors import DropReason, LocalProtocolError, RemoteProtocolError

_INITIATION = struct.Struct("<II32s48s28s16s16s")
_RESPONSE = struct.Struct("<III32s16s16s16s")
_COOKIE_REPLY = struct.Struct("<II24s32s")
TRANSPORT_HEADER = struct.Struct("<IIQ")
"""type, receiver index, counter: the 16-byte header of a transport data message."""

assert _INITIATION.size == MESSAGE_INITIATION_SIZE
assert _RESPONSE.size == MESSAGE_RESPONSE_SIZE
assert _COOKIE_REPLY.size == MESSAGE_COOKIE_REPLY_SIZE
assert TRANSPORT_HEADER.size == MESSAGE_TRANSPORT_HEADER_SIZE

# Where MAC1 and MAC2 start in the handshake messages (both are the last 32 bytes).
INITIATION_MAC1_OFFSET = MESSAGE_INITIATION_SIZE - 32
RESPONSE_MAC1_OFFSET = MESSAGE_RESPONSE_SIZE - 32


def message_type(data: bytes | bytearray | memoryview) -> int:
    """The message type, or 0 when the first four bytes are not a valid type word."""
    if len(data) < 4 or data[1] or data[2] or data[3]:
        return 0
    t = data[0]
    return t if MESSAGE_INITIATION_TYPE <= t <= MESSAGE_TRANSPORT_TYPE else 0


def _fields(*pairs: tuple[bytes, int]) -> None:
    """pack() refuses a field of the wrong size instead of letting struct pad or cut it."""
    for value, size in pairs:
        if len(value) != size:
            raise LocalProtocolError(f"a message field is {len(value)} bytes, expected {size}")


def _check(data: bytes | bytearray | memoryview, size: int, type_: int) -> None:
    if len(data) != size:
        raise RemoteProtocolError(DropReason.BAD_SIZE)
    if message_type(data) != type_:
        raise RemoteProtocolError(DropReason.UNKNOWN_TYPE)


class MessageInitiation(NamedTuple):
    sender: int
    ephemeral: bytes
    encrypted_static: bytes
    encrypted_timestamp: bytes
    mac1: bytes = bytes(16)
    mac2: bytes = bytes(16)

    def pack(self) -> bytes:
        _fields(
            (self.ephemeral, 32),
            (self.encrypted_static, 48),
            (self.encrypted_timestamp, 28),
            (self.mac1, 16),
            (self.mac2, 16),
        )
        return _INITIATION.pack(
            MESSAGE_INITIATION_TYPE,
            self.sender,
            self.ephemeral,
            self.encrypted_static,
            self.encrypted_timestamp,
            self.mac1,
            self.mac2,
        )

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview) -> MessageInitiation:
        _check(data, MESSAGE_INITIATION_SIZE, MESSAGE_INITIATION_TYPE)
        _, sender, eph, static, ts, mac1, mac2 = _INITIATION.unpack(data)
        return cls(sender, eph, static, ts, mac1, mac2)


class MessageResponse(NamedTuple):
    sender: int
    receiver: int
    ephemeral: bytes
    encrypted_nothing: bytes
    mac1: bytes = bytes(16)
    mac2: bytes = bytes(16)

    def pack(self) -> bytes:
        _fields(
            (self.ephemeral, 32), (self.encrypted_nothing, 16), (self.mac1, 16), (self.mac2, 16)
        )
        return _RESPONSE.pack(
            MESSAGE_RESPONSE_TYPE,
            self.sender,
            self.receiver,
            self.ephemeral,
            self.encrypted_nothing,
            self.mac1,
            self.mac2,
        )

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview) -> MessageResponse:
        _check(data, MESSAGE_RESPONSE_SIZE, MESSAGE_RESPONSE_TYPE)
        _, sender, receiver, eph, empty, mac1, mac2 = _RESPONSE.unpack(data)
        return cls(sender, receiver, eph, empty, mac1, mac2)


class MessageCookieReply(NamedTuple):
    receiver: int
    nonce: bytes
    encrypted_cookie: bytes

    def pack(self) -> bytes:
        _fields((self.nonce, 24), (self.encrypted_cookie, 32))
        return _COOKIE_REPLY.pack(
            MESSAGE_COOKIE_REPLY_TYPE, self.receiver, self.nonce, self.encrypted_cookie
        )

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview) -> MessageCookieReply:
        _check(data, MESSAGE_COOKIE_REPLY_SIZE, MESSAGE_COOKIE_REPLY_TYPE)
        _, receiver, nonce, cookie = _COOKIE_REPLY.unpack(data)
        return cls(receiver, nonce, cookie)


class MessageTransport(NamedTuple):
    """A transport data message; an empty ``packet`` after decryption is a keepalive."""

    receiver: int
    counter: int
    encrypted_packet: bytes

    def pack(self) -> bytes:
        return (
            TRANSPORT_HEADER.pack(MESSAGE_TRANSPORT_TYPE, self.receiver, self.counter)
            + self.encrypted_packet
        )

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview) -> MessageTransport:
        if len(data) < MESSAGE_TRANSPORT_HEADER_SIZE + 16:
            raise RemoteProtocolError(DropReason.TOO_SHORT)
        if message_type(data) != MESSAGE_TRANSPORT_TYPE:
            raise RemoteProtocolError(DropReason.UNKNOWN_TYPE)
        _, receiver, counter = TRANSPORT_HEADER.unpack_from(data)
        return cls(receiver, counter, bytes(data[MESSAGE_TRANSPORT_HEADER_SIZE:]))


def padded_length(length: int, mtu: int) -> int:
    """The plaintext length after padding, as wireguard-go's calculatePaddingSize."""
    last_unit = length
    if mtu and last_unit > mtu:
        last_unit %= mtu
    padded = (last_unit + PADDING_MULTIPLE - 1) & ~(PADDING_MULTIPLE - 1)
    if mtu and padded > mtu:
        padded = mtu
    return length + (padded - last_unit)
