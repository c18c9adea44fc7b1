"""A keypair: the transport keys of one session, from one handshake (whitepaper 5.4.5).

Peers hold up to three: ``previous`` (still accepted on receive), ``current`` (used to send)
and ``next`` (a responder's new keypair, confirmed when the initiator's first packet arrives
under it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from .messages import TRANSPORT_HEADER
from .replay import ReplayFilter

if TYPE_CHECKING:
    from .peer import Peer


class Keypair:
    __slots__ = (
        "created",
        "header_prefix",
        "is_initiator",
        "local_index",
        "peer",
        "receive",
        "remote_index",
        "replay",
        "send",
        "send_counter",
    )

    def __init__(
        self,
        *,
        peer: Peer,
        send_key: bytes,
        receive_key: bytes,
        local_index: int,
        remote_index: int,
        is_initiator: bool,
        created: float,
    ) -> None:
        self.peer = peer
        self.send = ChaCha20Poly1305(send_key)
        self.receive = ChaCha20Poly1305(receive_key)
        self.local_index = local_index
        self.remote_index = remote_index
        self.is_initiator = is_initiator
        self.created = created
        self.send_counter = 0
        self.replay = ReplayFilter()
        # type and receiver index: the first 8 bytes of every transport message we send
        self.header_prefix = TRANSPORT_HEADER.pack(4, remote_index, 0)[:8]

    def __repr__(self) -> str:
        return f"<Keypair local={self.local_index:#010x} initiator={self.is_initiator}>"
