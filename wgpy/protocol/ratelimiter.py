"""A per-source token bucket for handshake messages under load (as wireguard-go's).

Each source (an IPv4 address, or an IPv6 /64) may send RATELIMIT_PACKETS_PER_SECOND handshake
messages a second with bursts of RATELIMIT_BURST. Idle buckets are swept so the table stays
bounded by the number of sources active in the last second.
"""

from __future__ import annotations

from .constants import RATELIMIT_BURST, RATELIMIT_PACKETS_PER_SECOND

# Whole nanoseconds, as wireguard-go counts them: float seconds would refuse a source that
# sends at exactly the allowed rate whenever 0.05 s comes out as 0.04999999999999999.
_PACKET_COST = 1_000_000_000 // RATELIMIT_PACKETS_PER_SECOND
_MAX_TOKENS = _PACKET_COST * RATELIMIT_BURST
_SWEEP_INTERVAL = 1_000_000_000


class RateLimiter:
    __slots__ = ("_buckets", "_last_sweep")

    def __init__(self) -> None:
        self._buckets: dict[bytes, list[int]] = {}  # key -> [tokens, last time], in ns
        self._last_sweep = -_SWEEP_INTERVAL - 1

    def allow(self, source_key: bytes, now: float) -> bool:
        """Take one token from ``source_key``'s bucket; False when it is empty."""
        now_ns = round(now * 1e9)
        if now_ns - self._last_sweep > _SWEEP_INTERVAL:
            self._sweep(now_ns)
        bucket = self._buckets.get(source_key)
        if bucket is None:
            self._buckets[source_key] = [_MAX_TOKENS - _PACKET_COST, now_ns]
            return True
        tokens = min(_MAX_TOKENS, bucket[0] + (now_ns - bucket[1]))
        bucket[1] = now_ns
        if tokens >= _PACKET_COST:
            bucket[0] = tokens - _PACKET_COST
            return True
        bucket[0] = tokens
        return False

    def _sweep(self, now: int) -> None:
        self._last_sweep = now
        stale = [k for k, b in self._buckets.items() if now - b[1] > _SWEEP_INTERVAL]
        for k in stale:
            del self._buckets[k]

    def __len__(self) -> int:
        return len(self._buckets)


def source_key(address: bytes) -> bytes:
    """The bucket key of a packed source address: the IPv4 address, or the IPv6 /64."""
    return address if len(address) == 4 else address[:8]
