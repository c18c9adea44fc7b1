"""Which handshake messages get our Diffie-Hellman work: wireguard-go's load rule, cookies and
per-source rate limit (``IsUnderLoad`` in ``device.go``, ``cookie.go``, ``ratelimiter.go``).

Every initiation and response must carry a valid MAC1 (it proves the sender knows our public
key). When many handshake messages arrive at once the device is *under load* for
UNDER_LOAD_AFTER_TIME: a message must then also carry a MAC2 made with a cookie for its source
address (a sender without one gets a cookie reply instead of a handshake), and each source is
held to a token bucket of handshakes a second.
"""

from __future__ import annotations

import ipaddress

from .constants import UNDER_LOAD_AFTER_TIME
from .cookie import CookieChecker
from .crypto import Rng
from .errors import DropReason, RemoteProtocolError
from .peer import Endpoint
from .ratelimiter import RateLimiter, source_key

_INF = float("inf")
_WINDOW = 0.125  # seconds: wireguard-go's queue "1/8 full", as a count over an eighth second


def endpoint_bytes(endpoint: Endpoint) -> bytes:
    """Packed address and port of an endpoint, for cookies and rate limits."""
    if isinstance(endpoint, tuple) and len(endpoint) >= 2 and isinstance(endpoint[0], str):
        try:
            return ipaddress.ip_address(endpoint[0]).packed + int(endpoint[1]).to_bytes(2, "big")
        except (ValueError, TypeError, OverflowError):
            pass
    return repr(endpoint).encode()


class Admission:
    """MAC1 always; under load MAC2 (or a cookie reply) and a per-source rate limit."""

    __slots__ = ("_checker", "_ratelimiter", "_rng", "_until", "_window_count", "_window_start")

    def __init__(self, rng: Rng) -> None:
        self._rng = rng
        self._checker: CookieChecker | None = None
        self._ratelimiter = RateLimiter()
        self._until = -_INF
        self._window_start = -_INF
        self._window_count = 0

    def set_public_key(self, public_key: bytes | None) -> None:
        """Our static public key changed (None: we have none, and admit nothing)."""
        self._checker = CookieChecker(public_key) if public_key is not None else None

    def arrived(self, count: int, now: float, queue_size: int) -> None:
        """``count`` handshake messages arrived at ``now``. Here the device is under load when
        ``queue_size`` of them arrive within an eighth of a second, whatever the batches."""
        if now - self._window_start > _WINDOW:
            self._window_start = now
            self._window_count = 0
        self._window_count += count
        if self._window_count >= queue_size:
            self._until = now + UNDER_LOAD_AFTER_TIME

    @property
    def ever_under_load(self) -> bool:
        return self._until > -_INF

    def is_under_load(self, now: float) -> bool:
        return now < self._until

    def admit(self, message: bytes, source: Endpoint, now: float) -> bytes | None:
        """None when ``message`` (an initiation or response of the right size from
        ``source``) may be processed; the cookie reply to send instead when it lacks a valid
        MAC2 under load. Raises :class:`RemoteProtocolError` when it must be dropped."""
        checker = self._checker
        if checker is None:
            raise RemoteProtocolError(DropReason.UNKNOWN_PEER)
        if not checker.check_mac1(message):
            raise RemoteProtocolError(DropReason.INVALID_MAC1)
        if now < self._until:
            src = endpoint_bytes(source)
            if not checker.check_mac2(message, src, now, self._rng):
                sender = int.from_bytes(message[4:8], "little")
                return checker.create_reply(message, sender, src, now, self._rng).pack()
            if not self._ratelimiter.allow(source_key(src[:-2]), now):
                raise RemoteProtocolError(DropReason.RATE_LIMITED)
        return None
