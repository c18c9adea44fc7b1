"""The whitepaper's primitives (section 5.4) behind small functions.

HASH is BLAKE2s-256, MAC is keyed BLAKE2s-128, HMAC is HMAC-BLAKE2s, DH is X25519 (libsodium,
which clamps the scalar and refuses an all-zero result), AEAD is ChaCha20-Poly1305 with a
64-bit little-endian counter nonce, XAEAD is XChaCha20-Poly1305 (pynacl; cryptography has none).

HMAC is built from hashlib's BLAKE2s directly: it is about twice as fast as ``hmac.digest`` and
the handshake calls it a dozen times per message.
"""

from __future__ import annotations

from collections.abc import Callable
from hashlib import blake2s

import nacl.bindings as _sodium
import nacl.exceptions as _sodium_errors
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from nacl._sodium import ffi as _ffi  # the compiled libsodium binding that nacl.bindings wraps
from nacl._sodium import lib as _lib

from .constants import KEY_LEN, MAC_LEN, TIMESTAMP_LEN
from .errors import DropReason, RemoteProtocolError

Rng = Callable[[int], bytes]
"""A source of random bytes: ``rng(n)`` returns ``n`` bytes (``os.urandom`` in the shell)."""

_BLOCK = 64
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))
# A key's zero padding to the block size, by key length: no slice made per HMAC.
_PADS = tuple(bytes(_BLOCK - n) for n in range(_BLOCK + 1))
ZERO_KEY = bytes(KEY_LEN)
EMPTY = b""


def hash_(data: bytes) -> bytes:
    """HASH(input): BLAKE2s with a 32-byte digest."""
    return blake2s(data).digest()


def mac(key: bytes, data: bytes) -> bytes:
    """MAC(key, input): keyed BLAKE2s with a 16-byte digest."""
    return blake2s(data, key=key, digest_size=MAC_LEN).digest()


def hmac(key: bytes, data: bytes) -> bytes:
    """HMAC-BLAKE2s(key, input) for keys of at most 64 bytes (RFC 2104)."""
    k = key + _PADS[len(key)]
    inner = blake2s(k.translate(_IPAD) + data).digest()
    return blake2s(k.translate(_OPAD) + inner).digest()


# The KDFs inline HMAC and pad the key of the expansion steps once: the handshake runs a dozen
# of them per message and each saved call is a measurable share of a handshake.


def kdf1(key: bytes, data: bytes) -> bytes:
    k = key + _PADS[len(key)]
    t0 = blake2s(k.translate(_OPAD) + blake2s(k.translate(_IPAD) + data).digest()).digest()
    k = t0 + _PADS[32]
    return blake2s(k.translate(_OPAD) + blake2s(k.translate(_IPAD) + b"\x01").digest()).digest()


def kdf2(key: bytes, data: bytes) -> tuple[bytes, bytes]:
    k = key + _PADS[len(key)]
    t0 = blake2s(k.translate(_OPAD) + blake2s(k.translate(_IPAD) + data).digest()).digest()
    k = t0 + _PADS[32]
    ipad = k.translate(_IPAD)
    opad = k.translate(_OPAD)
    t1 = blake2s(opad + blake2s(ipad + b"\x01").digest()).digest()
    return t1, blake2s(opad + blake2s(ipad + t1 + b"\x02").digest()).digest()


def kdf3(key: bytes, data: bytes) -> tuple[bytes, bytes, bytes]:
    k = key + _PADS[len(key)]
    t0 = blake2s(k.translate(_OPAD) + blake2s(k.translate(_IPAD) + data).digest()).digest()
    k = t0 + _PADS[32]
    ipad = k.translate(_IPAD)
    opad = k.translate(_OPAD)
    t1 = blake2s(opad + blake2s(ipad + b"\x01").digest()).digest()
    t2 = blake2s(opad + blake2s(ipad + t1 + b"\x02").digest()).digest()
    return t1, t2, blake2s(opad + blake2s(ipad + t2 + b"\x03").digest()).digest()


def clamp(private_key: bytes) -> bytes:
    """Clamp an X25519 scalar as RFC 7748 does (and as `wg` stores private keys)."""
    b = bytearray(private_key)
    b[0] &= 248
    b[31] = (b[31] & 127) | 64
    return bytes(b)


# X25519 goes straight to libsodium's compiled binding: the argument checks and buffer handling
# of nacl.bindings cost a few microseconds a call, and a handshake makes eight of them.
# libsodium clamps the scalar itself and returns -1 for an all-zero (low-order) result.
# cffi releases the GIL during the call, so every call gets its own output buffer.
_new_key = _ffi.new
_buffer = _ffi.buffer
_KEY_T = "unsigned char[32]"
_scalarmult = _lib.crypto_scalarmult
_scalarmult_base = _lib.crypto_scalarmult_base


def public_key(private_key: bytes) -> bytes:
    """DH-PUBKEY: the X25519 public key of a (clamped or not) private key."""
    if len(private_key) != KEY_LEN:
        raise ValueError("an X25519 private key is 32 bytes")
    out = _new_key(_KEY_T)
    _scalarmult_base(out, clamp(private_key))
    key: bytes = _buffer(out)[:]
    return key


def _dh(private_key: bytes, public: bytes) -> bytes | None:
    if len(private_key) != KEY_LEN or len(public) != KEY_LEN:
        raise ValueError("X25519 keys are 32 bytes")
    out = _new_key(_KEY_T)
    if _scalarmult(out, private_key, public) != 0:
        return None
    shared: bytes = _buffer(out)[:]
    return shared


def dh(private_key: bytes, public: bytes) -> bytes:
    """DH(private, public); a low-order public key (all-zero result) is refused."""
    shared = _dh(private_key, public)
    if shared is None:
        raise RemoteProtocolError(DropReason.LOW_ORDER_POINT)
    return shared


def dh_or_zero(private_key: bytes, public: bytes) -> bytes:
    """DH for precomputation: an all-zero result marks a peer we can never handshake with."""
    shared = _dh(private_key, public)
    return ZERO_KEY if shared is None else shared


def dh_generate(rng: Rng) -> tuple[bytes, bytes]:
    """DH-GENERATE: a fresh (private, public) X25519 pair from ``rng``."""
    private = clamp(rng(KEY_LEN))
    out = _new_key(_KEY_T)
    _scalarmult_base(out, private)
    public: bytes = _buffer(out)[:]
    return private, public


def generate_private_key(rng: Rng) -> bytes:
    """A private key as `wg genkey` makes it: 32 random bytes, clamped."""
    return clamp(rng(KEY_LEN))


def nonce(counter: int) -> bytes:
    """The 96-bit AEAD nonce: 32 zero bits, then the counter as 64-bit little-endian."""
    return b"\x00\x00\x00\x00" + counter.to_bytes(8, "little")


_NONCE0 = nonce(0)  # every AEAD of the handshake uses counter 0


def aead_encrypt(key: bytes, counter: int, plaintext: bytes, ad: bytes) -> bytes:
    return ChaCha20Poly1305(key).encrypt(nonce(counter) if counter else _NONCE0, plaintext, ad)


def aead_decrypt(key: bytes, counter: int, ciphertext: bytes, ad: bytes) -> bytes:
    try:
        return ChaCha20Poly1305(key).decrypt(nonce(counter) if counter else _NONCE0, ciphertext, ad)
    except InvalidTag:
        raise RemoteProtocolError(DropReason.DECRYPTION_FAILED) from None


def xaead_encrypt(key: bytes, nonce24: bytes, plaintext: bytes, ad: bytes) -> bytes:
    return bytes(_sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, ad, nonce24, key))


def xaead_decrypt(key: bytes, nonce24: bytes, ciphertext: bytes, ad: bytes) -> bytes:
    if len(ciphertext) < 16:
        raise RemoteProtocolError(DropReason.DECRYPTION_FAILED)
    try:
        return bytes(
            _sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(ciphertext, ad, nonce24, key)
        )
    except _sodium_errors.CryptoError:
        raise RemoteProtocolError(DropReason.DECRYPTION_FAILED) from None


# TAI64N (https://cr.yp.to/libtai/tai64.html), as wireguard-go stamps it: the label 2^62 + 10
# plus Unix seconds, then nanoseconds rounded down to a multiple of 2^24 (about 16.8 ms) so the
# timestamp does not leak fine-grained clock readings.
_TAI64_BASE = (1 << 62) + 10
_WHITENER_MASK = (1 << 24) - 1


def tai64n(unix_ns: int) -> bytes:
    """TAI64N timestamp of a wall-clock time in integer nanoseconds since the Unix epoch."""
    secs, nanos = divmod(unix_ns, 1_000_000_000)
    nanos &= ~_WHITENER_MASK
    return (_TAI64_BASE + secs).to_bytes(8, "big") + nanos.to_bytes(4, "big")


assert len(tai64n(0)) == TIMESTAMP_LEN
