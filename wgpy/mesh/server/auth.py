"""Credentials and abuse limits.

A credential is ``wgpy_<kind>_<id>_<secret>``: ``kind`` is ``api`` (admin API key), ``auth``
(pre-auth key) or ``node`` (node token); ``id`` is 16 hex digits naming the database row;
``secret`` is 32 random bytes in URL-safe base64 without padding. The server stores the id and
the SHA-256 of the secret, so a leaked database holds no usable credential, and compares hashes
in constant time. A secret is shown once, when it is created; it is never logged (the
:class:`Credential` repr leaves it out).
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import hmac
import ipaddress
import os
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import Unauthorized

KINDS = ("api", "auth", "node")
ID_BYTES = 8
SECRET_BYTES = 32
_CREDENTIAL = re.compile(r"wgpy_(api|auth|node)_([0-9a-f]{16})_([A-Za-z0-9_-]{43})\Z")
_NAMES = {"api": "an admin API key", "auth": "an auth key", "node": "a node token"}

Rng = Callable[[int], bytes]


@dataclass(frozen=True)
class Credential:
    kind: str
    id: str
    secret: str = field(repr=False)

    def __str__(self) -> str:
        return f"wgpy_{self.kind}_{self.id}_{self.secret}"

    @property
    def secret_hash(self) -> str:
        return hash_secret(self.secret)


def new_credential(kind: str, rng: Rng = os.urandom) -> Credential:
    """A fresh credential of ``kind``; store ``id`` and ``secret_hash``, show ``str()`` once."""
    if kind not in KINDS:
        raise ValueError(f"unknown credential kind {kind!r}")
    secret = base64.urlsafe_b64encode(rng(SECRET_BYTES)).rstrip(b"=").decode("ascii")
    return Credential(kind, rng(ID_BYTES).hex(), secret)


def parse_credential(text: str, kind: str) -> Credential:
    """The credential in ``text``, which must be of ``kind``; Unauthorized says what is wrong."""
    name = _NAMES[kind]
    match = _CREDENTIAL.match(text)
    if match is None:
        raise Unauthorized(f"that is not {name}: expected wgpy_{kind}_<id>_<secret>")
    if match[1] != kind:
        raise Unauthorized(f"this needs {name}, but {_NAMES[match[1]]} was given")
    return Credential(kind, match[2], match[3])


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def secret_matches(credential: Credential, stored_hash: str | None) -> bool:
    """Whether the credential's secret hashes to ``stored_hash``, compared in constant time."""
    if stored_hash is None:
        return False
    return hmac.compare_digest(credential.secret_hash, stored_hash)


def bearer_token(header: str | None, kind: str) -> Credential:
    """The credential in an ``Authorization: Bearer ...`` header."""
    name = _NAMES[kind]
    if not header:
        raise Unauthorized(f"this endpoint needs {name} in an 'Authorization: Bearer' header")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized(f"send {name} as 'Authorization: Bearer <key>'")
    return parse_credential(token.strip(), kind)


def source_key(address: str | None) -> str:
    """What abuse limits count by: an IPv4 address, or an IPv6 /64 (a single host or site
    usually holds a whole /64, so counting its addresses one by one would limit nothing).
    An IPv4-mapped IPv6 address counts as its IPv4 address."""
    if not address:
        return "unknown"
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


class KnownCredentials:
    """The credentials (kind and id, never the secret) that authenticated, the most recent
    ``max_size`` of them. A source whose authentications keep failing is refused at once only
    for credentials not in here, so guessing from a shared address (NAT, proxy) does not lock
    out the nodes and admins there. Only a credential that passed the database gets in."""

    def __init__(self, max_size: int = 100_000) -> None:
        self._max_size = max_size
        self._known: OrderedDict[tuple[str, str], None] = OrderedDict()

    def add(self, credential: Credential) -> None:
        key = (credential.kind, credential.id)
        self._known[key] = None
        self._known.move_to_end(key)
        while len(self._known) > self._max_size:
            self._known.popitem(last=False)

    def __contains__(self, credential: Credential) -> bool:
        return (credential.kind, credential.id) in self._known

    def __len__(self) -> int:
        return len(self._known)


class RateLimiter:
    """A token bucket per key (a source, :func:`source_key`): ``burst`` requests at once,
    refilled at ``rate`` per second.

    At most ``max_keys`` buckets are kept. When a new key finds them all taken, the buckets
    that refilled to full go (they hold nothing a fresh bucket would not); if that frees too
    little, the *most depleted* ones are kept and the fullest tenth go. So a key cannot have
    its own empty bucket forgotten by making many others: those would have to be at least as
    empty, which costs as many requests as the limit allows anyway."""

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 10_000,
    ) -> None:
        if rate <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("a rate limiter needs rate > 0, burst >= 1 and max_keys >= 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str) -> float:
        """Spend one token of ``key``'s bucket: 0.0 if there was one, else the seconds until
        there will be."""
        now = self._clock()
        tokens, at = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / self.rate
        if key not in self._buckets and len(self._buckets) >= self._max_keys:
            self._prune(now)
        self._buckets[key] = (tokens - 1, now)
        return 0.0

    def wait(self, key: str) -> float:
        """The seconds until ``key``'s bucket has a token (0.0: now), spending none."""
        entry = self._buckets.get(key)
        if entry is None:
            return 0.0
        tokens, at = entry
        tokens = min(self.burst, tokens + (self._clock() - at) * self.rate)
        return 0.0 if tokens >= 1 else (1 - tokens) / self.rate

    def _tokens(self, key: str, now: float) -> float:
        tokens, at = self._buckets[key]
        return min(self.burst, tokens + (now - at) * self.rate)

    def _prune(self, now: float) -> None:
        """Make room for a new key: drop the full buckets, else the fullest tenth."""
        for k in [k for k in self._buckets if self._tokens(k, now) >= self.burst]:
            del self._buckets[k]
        excess = len(self._buckets) - self._max_keys + 1
        if excess > 0:
            count = max(excess, self._max_keys // 10)
            for k in heapq.nlargest(count, self._buckets, key=lambda k: self._tokens(k, now)):
                del self._buckets[k]
