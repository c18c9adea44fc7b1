"""MAC1, MAC2 and cookie replies (whitepaper 5.4.4 and 5.4.7).

:class:`CookieChecker` is the responder's side, keyed by our own static public key: it checks
MAC1 on every handshake message, MAC2 when under load, and makes cookie replies.
:class:`CookieGenerator` is the initiator's side, one per peer, keyed by the peer's static
public key: it writes MAC1 and MAC2 into outgoing handshake messages and consumes cookie replies.
"""

from __future__ import annotations

import hmac as _hmac

from .constants import COOKIE_REFRESH_TIME, LABEL_COOKIE, LABEL_MAC1, MAC_LEN
from .crypto import Rng, hash_, mac, xaead_decrypt, xaead_encrypt
from .messages import MessageCookieReply

_ZERO_MAC = bytes(MAC_LEN)
_COOKIE_NONCE_LEN = 24


def mac1_key(static_public: bytes) -> bytes:
    return hash_(LABEL_MAC1 + static_public)


def cookie_key(static_public: bytes) -> bytes:
    return hash_(LABEL_COOKIE + static_public)


class CookieChecker:
    """Checks MACs on handshake messages sent to us and answers with cookie replies."""

    __slots__ = ("_cookie_key", "_mac1_key", "_secret", "_secret_set_at")

    def __init__(self, static_public: bytes) -> None:
        self._mac1_key = mac1_key(static_public)
        self._cookie_key = cookie_key(static_public)
        self._secret = b""
        self._secret_set_at = float("-inf")

    def check_mac1(self, message: bytes) -> bool:
        """MAC1 covers everything before it; it is the second-to-last 16 bytes."""
        expected = mac(self._mac1_key, message[:-32])
        return _hmac.compare_digest(expected, message[-32:-16])

    def _cookie(self, source: bytes, now: float, rng: Rng) -> bytes:
        if now - self._secret_set_at > COOKIE_REFRESH_TIME:
            self._secret = rng(32)
            self._secret_set_at = now
        return mac(self._secret, source)

    def check_mac2(self, message: bytes, source: bytes, now: float, rng: Rng) -> bool:
        """MAC2 is a MAC, keyed by the cookie of ``source``, over everything before it."""
        cookie = self._cookie(source, now, rng)
        expected = mac(cookie, message[:-16])
        return _hmac.compare_digest(expected, message[-16:])

    def create_reply(
        self, message: bytes, receiver: int, source: bytes, now: float, rng: Rng
    ) -> MessageCookieReply:
        """A cookie reply to ``message`` (whose MAC1 has been checked) from ``source``."""
        cookie = self._cookie(source, now, rng)
        nonce = rng(_COOKIE_NONCE_LEN)
        encrypted = xaead_encrypt(self._cookie_key, nonce, cookie, message[-32:-16])
        return MessageCookieReply(receiver, nonce, encrypted)


class CookieGenerator:
    """Adds MAC1/MAC2 to our handshake messages to one peer; keeps the cookie it sent us."""

    __slots__ = ("_cookie", "_cookie_key", "_cookie_set_at", "_last_mac1", "_mac1_key")

    def __init__(self, remote_static: bytes) -> None:
        self._mac1_key = mac1_key(remote_static)
        self._cookie_key = cookie_key(remote_static)
        self._cookie = b""
        self._cookie_set_at = float("-inf")
        self._last_mac1 = b""

    def add_macs(self, message: bytearray, now: float) -> None:
        """Fill in the last 32 bytes of a packed handshake message."""
        mac1 = mac(self._mac1_key, bytes(message[:-32]))
        message[-32:-16] = mac1
        self._last_mac1 = mac1
        if self._cookie and now - self._cookie_set_at < COOKIE_REFRESH_TIME:
            message[-16:] = mac(self._cookie, bytes(message[:-16]))
        else:
            message[-16:] = _ZERO_MAC

    def consume_reply(self, reply: MessageCookieReply, now: float) -> None:
        """Store the cookie in a reply to our last message; raises if it does not decrypt."""
        cookie = xaead_decrypt(
            self._cookie_key, reply.nonce, reply.encrypted_cookie, self._last_mac1
        )
        self._cookie = cookie
        self._cookie_set_at = now
        self._last_mac1 = b""  # one reply per message, as the kernel does

    @property
    def has_sent_mac1(self) -> bool:
        return bool(self._last_mac1)
