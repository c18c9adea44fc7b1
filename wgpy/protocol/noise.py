"""Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s: the message math of WireGuard's handshake, stateless.

Each function takes the chaining key ``c`` and hash ``h`` as they stand before its tokens and
returns them as they stand after, together with the message fields. WireGuard's handshake is
exactly this pattern with the prologue ``IDENTIFIER``, the initiation carrying a TAI64N
timestamp as its payload and the response an empty one (whitepaper 5.4.2-5.4.4); the public
cacophony test vectors exercise the same functions with other prologues and payloads.

    <- s
    ...
    -> e, es, s, ss
    <- e, ee, se, psk

The static-static DH (``ss``) is passed in precomputed: it depends only on the two static keys.
"""

from __future__ import annotations

from .constants import CONSTRUCTION
from .crypto import aead_decrypt, aead_encrypt, dh, hash_, kdf1, kdf2, kdf3

INITIAL_CHAIN_KEY = hash_(CONSTRUCTION)


def initial_state(prologue: bytes) -> tuple[bytes, bytes]:
    """(c, h) after Initialize(protocol name) and MixHash(prologue)."""
    return INITIAL_CHAIN_KEY, hash_(INITIAL_CHAIN_KEY + prologue)


def mix_responder_static(h: bytes, responder_static: bytes) -> bytes:
    """The pre-message ``<- s``: both sides mix the responder's static public key."""
    return hash_(h + responder_static)


def write_initiation(
    c: bytes,
    h: bytes,
    *,
    static_public: bytes,
    remote_static: bytes,
    ephemeral_private: bytes,
    ephemeral_public: bytes,
    static_static: bytes,
    payload: bytes,
) -> tuple[bytes, bytes, bytes, bytes]:
    """-> e, es, s, ss + payload. Returns (c, h, encrypted static, encrypted payload)."""
    c = kdf1(c, ephemeral_public)
    h = hash_(h + ephemeral_public)
    c, k = kdf2(c, dh(ephemeral_private, remote_static))
    encrypted_static = aead_encrypt(k, 0, static_public, h)
    h = hash_(h + encrypted_static)
    c, k = kdf2(c, static_static)
    encrypted_payload = aead_encrypt(k, 0, payload, h)
    h = hash_(h + encrypted_payload)
    return c, h, encrypted_static, encrypted_payload


def read_initiation_static(
    c: bytes,
    h: bytes,
    *,
    static_private: bytes,
    ephemeral_public: bytes,
    encrypted_static: bytes,
) -> tuple[bytes, bytes, bytes]:
    """The responder's first half of -> e, es, s: returns (c, h, initiator's static key).

    The caller looks the initiator up by that key, then calls :func:`read_initiation_payload`
    with the precomputed static-static DH of that peer.
    """
    c = kdf1(c, ephemeral_public)
    h = hash_(h + ephemeral_public)
    c, k = kdf2(c, dh(static_private, ephemeral_public))
    remote_static = aead_decrypt(k, 0, encrypted_static, h)
    h = hash_(h + encrypted_static)
    return c, h, remote_static


def read_initiation_payload(
    c: bytes, h: bytes, *, static_static: bytes, encrypted_payload: bytes
) -> tuple[bytes, bytes, bytes]:
    """The second half: ss + payload. Returns (c, h, payload)."""
    c, k = kdf2(c, static_static)
    payload = aead_decrypt(k, 0, encrypted_payload, h)
    h = hash_(h + encrypted_payload)
    return c, h, payload


def write_response(
    c: bytes,
    h: bytes,
    *,
    remote_ephemeral: bytes,
    remote_static: bytes,
    ephemeral_private: bytes,
    ephemeral_public: bytes,
    preshared_key: bytes,
    payload: bytes,
) -> tuple[bytes, bytes, bytes]:
    """<- e, ee, se, psk + payload. Returns (c, h, encrypted payload)."""
    c = kdf1(c, ephemeral_public)
    h = hash_(h + ephemeral_public)
    c = kdf1(c, dh(ephemeral_private, remote_ephemeral))
    c = kdf1(c, dh(ephemeral_private, remote_static))
    c, tau, k = kdf3(c, preshared_key)
    h = hash_(h + tau)
    encrypted_payload = aead_encrypt(k, 0, payload, h)
    h = hash_(h + encrypted_payload)
    return c, h, encrypted_payload


def read_response(
    c: bytes,
    h: bytes,
    *,
    static_private: bytes,
    ephemeral_private: bytes,
    remote_ephemeral: bytes,
    preshared_key: bytes,
    encrypted_payload: bytes,
) -> tuple[bytes, bytes, bytes]:
    """The initiator reads <- e, ee, se, psk + payload. Returns (c, h, payload)."""
    c = kdf1(c, remote_ephemeral)
    h = hash_(h + remote_ephemeral)
    c = kdf1(c, dh(ephemeral_private, remote_ephemeral))
    c = kdf1(c, dh(static_private, remote_ephemeral))
    c, tau, k = kdf3(c, preshared_key)
    h = hash_(h + tau)
    payload = aead_decrypt(k, 0, encrypted_payload, h)
    h = hash_(h + encrypted_payload)
    return c, h, payload


def split(c: bytes) -> tuple[bytes, bytes]:
    """Split(): (initiator's sending key, initiator's receiving key)."""
    return kdf2(c, b"")
