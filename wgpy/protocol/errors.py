"""Why a datagram was dropped, and the two kinds of protocol error.

A bad handshake message raises :class:`RemoteProtocolError` inside the core; the receive
entry point catches it in one place, counts its reason and drops the datagram. Transport
messages and packets from the TUN take the batch path, which counts each drop inline (no
exception per packet). Misuse of the API raises :class:`LocalProtocolError` with a sentence
that says what to do.
"""

from __future__ import annotations

import enum


class DropReason(enum.Enum):
    """One flat list of the reasons a datagram or packet is dropped."""

    # Datagrams from the network
    TOO_SHORT = "too_short"
    UNKNOWN_TYPE = "unknown_type"
    BAD_SIZE = "bad_size"
    INVALID_MAC1 = "invalid_mac1"
    INVALID_MAC2 = "invalid_mac2"
    RATE_LIMITED = "rate_limited"
    UNKNOWN_PEER = "unknown_peer"
    DECRYPTION_FAILED = "decryption_failed"
    LOW_ORDER_POINT = "low_order_point"
    STALE_TIMESTAMP = "stale_timestamp"
    INITIATION_FLOOD = "initiation_flood"
    UNEXPECTED_RESPONSE = "unexpected_response"
    UNEXPECTED_COOKIE = "unexpected_cookie"
    UNKNOWN_INDEX = "unknown_index"
    EXPIRED_KEYPAIR = "expired_keypair"
    REPLAYED = "replayed"
    INVALID_INNER_PACKET = "invalid_inner_packet"
    DISALLOWED_SOURCE = "disallowed_source"
    POLICY_DENIED = "policy_denied"
    # Packets from the TUN side
    NO_ROUTE = "no_route"
    NO_ENDPOINT = "no_endpoint"
    STAGED_OVERFLOW = "staged_overflow"
    HANDSHAKE_GAVE_UP = "handshake_gave_up"
    INVALID_OUTBOUND = "invalid_outbound"
    TOO_BIG = "too_big"


class ProtocolError(Exception):
    """Base of the protocol errors."""


class RemoteProtocolError(ProtocolError):
    """The peer (or anyone on the network) sent something we drop."""

    def __init__(self, reason: DropReason) -> None:
        super().__init__(reason.value)
        self.reason = reason


class LocalProtocolError(ProtocolError):
    """The caller used the API wrongly; the message says what to do instead."""
