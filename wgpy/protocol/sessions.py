"""A peer's sessions and the index table that finds them (wireguard-go's
``BeginSymmetricSession`` and ``ReceivedWithKeypair`` in ``noise-protocol.go``).

A peer holds up to three keypairs: ``previous`` (still accepted on receive), ``current``
(used to send) and ``next`` (a responder's new keypair, until the initiator's first packet
under it confirms it). Every keypair, and the handshake under way, is registered under one of
our receiver indices; :class:`Sessions` keeps the peers' keypairs and the index table in step,
so a keypair that a peer no longer holds is never found by an index.
"""

from __future__ import annotations

from .crypto import Rng
from .handshake import derive_keys
from .indextable import IndexTable
from .keypair import Keypair
from .peer import Peer


class Sessions:
    """The keypairs of many peers and the receiver indices they are found by."""

    __slots__ = ("indices",)

    def __init__(self, rng: Rng) -> None:
        self.indices: IndexTable[Peer | Keypair] = IndexTable(rng)

    def new_handshake_index(self, peer: Peer) -> int:
        """A fresh index for the handshake ``peer`` starts or answers; the old one goes."""
        self.remove_handshake_index(peer)
        index = peer.handshake.local_index = self.indices.new_index(peer)
        return index

    def remove_handshake_index(self, peer: Peer) -> None:
        self.indices.delete(peer.handshake.local_index, peer)
        peer.handshake.local_index = 0

    def clear_handshake(self, peer: Peer) -> None:
        self.remove_handshake_index(peer)
        peer.handshake.clear()

    def begin(self, peer: Peer, now: float) -> Keypair:
        """The keypair of the handshake that just completed (we created or consumed the
        response), under the handshake's index, rotated in as BeginSymmetricSession does:
        the initiator's becomes ``current``, the responder's waits in ``next``."""
        hs = peer.handshake
        index = hs.local_index
        remote_index = hs.remote_index
        send_key, receive_key, is_initiator = derive_keys(hs)
        kp = Keypair(
            peer=peer,
            send_key=send_key,
            receive_key=receive_key,
            local_index=index,
            remote_index=remote_index,
            is_initiator=is_initiator,
            created=now,
        )
        self.indices.swap(index, kp)
        if is_initiator:
            if peer.next is not None:
                self.drop(peer.previous)
                self.drop(peer.current)
                peer.previous = peer.next
                peer.next = None
            else:
                self.drop(peer.previous)
                peer.previous = peer.current
            peer.current = kp
        else:
            self.drop(peer.next)
            self.drop(peer.previous)
            peer.previous = None
            peer.next = kp
        return kp

    def confirm_next(self, peer: Peer, kp: Keypair) -> None:
        """The initiator used our ``next`` keypair: it becomes current (whitepaper 5.4.6)."""
        self.drop(peer.previous)
        peer.previous = peer.current
        peer.current = kp
        peer.next = None

    def drop(self, kp: Keypair | None) -> None:
        """Forget ``kp``'s index (if it still names ``kp``)."""
        if kp is not None:
            self.indices.delete(kp.local_index, kp)

    def zero_key_material(self, peer: Peer) -> None:
        """Forget every keypair and the handshake of ``peer``."""
        for kp in peer.keypairs():
            self.drop(kp)
        peer.previous = peer.current = peer.next = None
        self.clear_handshake(peer)
