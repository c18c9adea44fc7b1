"""Keypairs and the index table kept in step: BeginSymmetricSession's rotation, the
responder's ``next`` confirmed by the initiator's first packet, and zeroing."""

from __future__ import annotations

from support import make_rng

from wgpy.protocol.crypto import dh_generate, generate_private_key, tai64n
from wgpy.protocol.handshake import (
    StaticIdentity,
    consume_initiation,
    consume_initiation_static,
    consume_response,
    create_initiation,
    create_response,
)
from wgpy.protocol.keypair import Keypair
from wgpy.protocol.peer import Peer
from wgpy.protocol.sessions import Sessions

NONCE = bytes(12)
rng = make_rng(7)
IA = StaticIdentity(generate_private_key(rng))
IB = StaticIdentity(generate_private_key(rng))


class Side:
    def __init__(self, us: StaticIdentity, them: StaticIdentity, seed: int) -> None:
        self.identity = us
        self.sessions = Sessions(make_rng(seed))
        self.peer = Peer(them.public)
        self.peer.handshake.precompute(us)


def handshake(a: Side, b: Side, now: float) -> tuple[Keypair, Keypair]:
    """a initiates, b responds; returns (a's keypair, b's keypair)."""
    initiation = create_initiation(
        a.identity,
        a.peer.handshake,
        sender_index=a.sessions.new_handshake_index(a.peer),
        ephemeral=dh_generate(rng),
        timestamp=tai64n(1_700_000_000_000_000_000 + int(now * 1e9)),
    )
    c, h, _ = consume_initiation_static(b.identity, initiation)
    consume_initiation(b.peer.handshake, initiation, c, h, now)
    response = create_response(
        b.peer.handshake,
        sender_index=b.sessions.new_handshake_index(b.peer),
        ephemeral=dh_generate(rng),
    )
    b_kp = b.sessions.begin(b.peer, now)
    consume_response(a.identity, a.peer.handshake, response)
    a_kp = a.sessions.begin(a.peer, now)
    return a_kp, b_kp


def indexed(side: Side) -> list[object]:
    return side.sessions.indices.values()


def test_the_initiator_sends_at_once_and_the_responder_waits_in_next() -> None:
    a, b = Side(IA, IB, 1), Side(IB, IA, 2)
    ka, kb = handshake(a, b, 1.0)
    assert a.peer.current is ka and a.peer.next is None and ka.is_initiator
    assert b.peer.next is kb and b.peer.current is None and not kb.is_initiator
    assert ka.remote_index == kb.local_index and kb.remote_index == ka.local_index
    assert indexed(a) == [ka] and indexed(b) == [kb]  # the handshake index now names the keys
    assert a.peer.handshake.local_index == ka.local_index  # until the next handshake
    sealed = ka.send.encrypt(NONCE, b"hello", None)
    assert kb.receive.decrypt(NONCE, sealed, None) == b"hello"


def test_confirm_next_makes_the_responders_keypair_current() -> None:
    a, b = Side(IA, IB, 1), Side(IB, IA, 2)
    _, first = handshake(a, b, 1.0)
    b.sessions.confirm_next(b.peer, first)
    assert b.peer.current is first and b.peer.next is None and b.peer.previous is None
    _, second = handshake(a, b, 2.0)
    assert b.peer.next is second and b.peer.current is first
    b.sessions.confirm_next(b.peer, second)
    assert (b.peer.previous, b.peer.current, b.peer.next) == (first, second, None)
    assert set(map(id, indexed(b))) == {id(first), id(second)}


def test_a_third_session_drops_the_oldest_keypair_from_the_index() -> None:
    a, b = Side(IA, IB, 1), Side(IB, IA, 2)
    k1, _ = handshake(a, b, 1.0)
    k2, _ = handshake(a, b, 2.0)
    assert (a.peer.previous, a.peer.current) == (k1, k2)
    k3, _ = handshake(a, b, 3.0)
    assert (a.peer.previous, a.peer.current) == (k2, k3)
    assert a.sessions.indices.get(k1.local_index) is None
    assert set(map(id, indexed(a))) == {id(k2), id(k3)}


def test_zero_key_material_forgets_every_keypair_and_the_handshake() -> None:
    a, b = Side(IA, IB, 1), Side(IB, IA, 2)
    handshake(a, b, 1.0)
    handshake(a, b, 2.0)
    a.sessions.new_handshake_index(a.peer)  # a third handshake under way
    assert len(a.sessions.indices) == 3
    a.sessions.zero_key_material(a.peer)
    assert a.peer.keypairs() == [] and len(a.sessions.indices) == 0
    assert a.peer.handshake.local_index == 0


def test_a_new_handshake_index_replaces_the_old_one() -> None:
    a = Side(IA, IB, 1)
    first = a.sessions.new_handshake_index(a.peer)
    second = a.sessions.new_handshake_index(a.peer)
    assert first != second and a.peer.handshake.local_index == second
    assert a.sessions.indices.get(first) is None and a.sessions.indices.get(second) is a.peer
