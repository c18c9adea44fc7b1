"""WireGuard's handshake state, per peer, and the four create_/consume_ steps (whitepaper 5.4).

The message math lives in :mod:`noise`; this module keeps the state between the messages and
applies WireGuard's rules: an initiation is accepted only with a timestamp newer than the last
one seen from that peer and at most once per HANDSHAKE_INITIATION_RATE; a response only while
our initiation is outstanding.
"""

from __future__ import annotations

import enum

from . import noise
from .constants import HANDSHAKE_INITIATION_RATE, IDENTIFIER
from .crypto import ZERO_KEY, dh_or_zero, public_key
from .errors import DropReason, RemoteProtocolError
from .messages import MessageInitiation, MessageResponse

_C0, _H0 = noise.initial_state(IDENTIFIER)


class HandshakeState(enum.IntEnum):
    ZEROED = 0
    INITIATION_CREATED = 1
    INITIATION_CONSUMED = 2
    RESPONSE_CREATED = 3
    RESPONSE_CONSUMED = 4


class StaticIdentity:
    """Our static key pair and what derives from it alone."""

    __slots__ = ("h_responder", "private", "public")

    def __init__(self, private_key: bytes) -> None:
        self.private = private_key
        self.public = public_key(private_key)
        # the responder's pre-message hash: ours, when we are the responder
        self.h_responder = noise.mix_responder_static(_H0, self.public)


class Handshake:
    """The handshake with one peer: what outlives a single message."""

    __slots__ = (
        "chain_key",
        "h_initiator",
        "hash",
        "last_initiation_consumed",
        "last_sent_initiation",
        "last_timestamp",
        "local_ephemeral",
        "local_index",
        "preshared_key",
        "remote_ephemeral",
        "remote_index",
        "remote_static",
        "state",
        "static_static",
    )

    def __init__(self, remote_static: bytes, preshared_key: bytes = ZERO_KEY) -> None:
        self.remote_static = remote_static
        self.preshared_key = preshared_key
        # the pre-message hash when we initiate: the responder's (the peer's) static key
        self.h_initiator = noise.mix_responder_static(_H0, remote_static)
        self.static_static = ZERO_KEY
        self.state = HandshakeState.ZEROED
        self.chain_key = b""
        self.hash = b""
        self.local_ephemeral = b""
        self.remote_ephemeral = b""
        self.local_index = 0
        self.remote_index = 0
        self.last_timestamp = bytes(12)
        self.last_initiation_consumed = float("-inf")
        self.last_sent_initiation = float("-inf")

    def precompute(self, identity: StaticIdentity | None) -> None:
        """Recompute DH(our static, their static); all zero for a low-order peer key."""
        if identity is None:
            self.static_static = ZERO_KEY
        else:
            self.static_static = dh_or_zero(identity.private, self.remote_static)

    @property
    def can_handshake(self) -> bool:
        return self.static_static != ZERO_KEY

    def clear(self) -> None:
        """Forget the ephemeral state (the timestamp and flood guard are kept)."""
        self.state = HandshakeState.ZEROED
        self.chain_key = b""
        self.hash = b""
        self.local_ephemeral = b""
        self.remote_ephemeral = b""
        self.remote_index = 0


def create_initiation(
    identity: StaticIdentity,
    hs: Handshake,
    *,
    sender_index: int,
    ephemeral: tuple[bytes, bytes],
    timestamp: bytes,
) -> MessageInitiation:
    """Our initiation to ``hs``'s peer; MACs are added by the caller."""
    private, public = ephemeral
    c, h, enc_static, enc_timestamp = noise.write_initiation(
        _C0,
        hs.h_initiator,
        static_public=identity.public,
        remote_static=hs.remote_static,
        ephemeral_private=private,
        ephemeral_public=public,
        static_static=hs.static_static,
        payload=timestamp,
    )
    hs.chain_key, hs.hash = c, h
    hs.local_ephemeral = private
    hs.local_index = sender_index
    hs.state = HandshakeState.INITIATION_CREATED
    return MessageInitiation(sender_index, public, enc_static, enc_timestamp)


def consume_initiation_static(
    identity: StaticIdentity, msg: MessageInitiation
) -> tuple[bytes, bytes, bytes]:
    """Decrypt the initiator's static key: (c, h, static public key) for the peer lookup."""
    return noise.read_initiation_static(
        _C0,
        identity.h_responder,
        static_private=identity.private,
        ephemeral_public=msg.ephemeral,
        encrypted_static=msg.encrypted_static,
    )


def consume_initiation(
    hs: Handshake, msg: MessageInitiation, c: bytes, h: bytes, now: float
) -> None:
    """Finish reading an initiation from ``hs``'s peer and apply the replay and flood rules."""
    if not hs.can_handshake:
        raise RemoteProtocolError(DropReason.LOW_ORDER_POINT)
    c, h, timestamp = noise.read_initiation_payload(
        c, h, static_static=hs.static_static, encrypted_payload=msg.encrypted_timestamp
    )
    if timestamp <= hs.last_timestamp:  # 12 big-endian bytes compare as numbers
        raise RemoteProtocolError(DropReason.STALE_TIMESTAMP)
    if now - hs.last_initiation_consumed <= HANDSHAKE_INITIATION_RATE:
        raise RemoteProtocolError(DropReason.INITIATION_FLOOD)
    hs.chain_key, hs.hash = c, h
    hs.remote_ephemeral = msg.ephemeral
    hs.remote_index = msg.sender
    hs.last_timestamp = timestamp
    hs.last_initiation_consumed = now
    hs.state = HandshakeState.INITIATION_CONSUMED


def create_response(
    hs: Handshake, *, sender_index: int, ephemeral: tuple[bytes, bytes]
) -> MessageResponse:
    """Our response to the initiation just consumed; MACs are added by the caller."""
    if hs.state != HandshakeState.INITIATION_CONSUMED:
        raise RemoteProtocolError(DropReason.UNEXPECTED_RESPONSE)
    private, public = ephemeral
    c, h, enc_nothing = noise.write_response(
        hs.chain_key,
        hs.hash,
        remote_ephemeral=hs.remote_ephemeral,
        remote_static=hs.remote_static,
        ephemeral_private=private,
        ephemeral_public=public,
        preshared_key=hs.preshared_key,
        payload=b"",
    )
    hs.chain_key, hs.hash = c, h
    hs.local_ephemeral = private
    hs.local_index = sender_index
    hs.state = HandshakeState.RESPONSE_CREATED
    return MessageResponse(sender_index, hs.remote_index, public, enc_nothing)


def consume_response(identity: StaticIdentity, hs: Handshake, msg: MessageResponse) -> None:
    """Read the response to our outstanding initiation."""
    if hs.state != HandshakeState.INITIATION_CREATED:
        raise RemoteProtocolError(DropReason.UNEXPECTED_RESPONSE)
    c, h, _ = noise.read_response(
        hs.chain_key,
        hs.hash,
        static_private=identity.private,
        ephemeral_private=hs.local_ephemeral,
        remote_ephemeral=msg.ephemeral,
        preshared_key=hs.preshared_key,
        encrypted_payload=msg.encrypted_nothing,
    )
    hs.chain_key, hs.hash = c, h
    hs.remote_index = msg.sender
    hs.state = HandshakeState.RESPONSE_CONSUMED


def derive_keys(hs: Handshake) -> tuple[bytes, bytes, bool]:
    """(sending key, receiving key, we are the initiator) and clear the handshake."""
    if hs.state == HandshakeState.RESPONSE_CONSUMED:
        initiator = True
    elif hs.state == HandshakeState.RESPONSE_CREATED:
        initiator = False
    else:
        raise RemoteProtocolError(DropReason.UNEXPECTED_RESPONSE)
    first, second = noise.split(hs.chain_key)
    remote_index = hs.remote_index
    hs.clear()
    hs.remote_index = remote_index
    return (first, second, True) if initiator else (second, first, False)
