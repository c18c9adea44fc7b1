"""A per-source token bucket for handshake messages under load (as wireguard-go's).

Each source (an IPv4 address, or an IPv6 /64) may send RATELIMIT_PACKETS_PER_SECOND handshake
messages a second with bursts of RATELIMIT_BURST. Idle buckets are swept so the table stays
bounded by the number of sources active in the last second.
"""

from __future__ import annotations

from .constants import RATELIMIT_BURST, RATELIMIT_PACKETS_PER_SECOND

_PACKET_COST = 1.0 / RATELIMIT_PACKETS_PER_SECOND
_MAX_TOKENS = _PACKET_COST * RATELIMIT_BURST
_SWEEP_INTERVAL = 1.0


class RateLimiter:
    __slots__ = ("_buckets", "_last_sweep")

    def __init__(self) -> None:
        self._buckets: dict[bytes, list[float]] = {}  # key -> [tokens, last time]
        self._last_sweep = float("-inf")

    def allow(self, source_key: bytes, now: float) -> bool:
        """Take one token from ``source_key``'s bucket; False when it is empty."""
        if now - self._last_sweep > _SWEEP_INTERVAL:
            self._sweep(now)
        bucket = self._buckets.get(source_key)
        if bucket is None:
            self._buckets[source_key] = [_MAX_TOKENS - _PACKET_COST, now]
            return True
        tokens = min(_MAX_TOKENS, bucket[0] + (now - bucket[1]))
        bucket[1] = now
        if tokens >= _PACKET_COST:
            bucket[0] = tokens - _PACKET_COST
            return True
        bucket[0] = tokens
        return False

    def _sweep(self, now: float) -> None:
        self._last_sweep = now
        stale = [k for k, b in self._buckets.items() if now - b[1] > _SWEEP_INTERVAL]
        for k in stale:
            del self._buckets[k]

    def __len__(self) -> int:
        return len(self._buckets)


def source_key(address: bytes) -> bytes:
    """The bucket key of a packed source address: the IPv4 address, or the IPv6 /64."""
    return address if len(address) == 4 else address[:8]
