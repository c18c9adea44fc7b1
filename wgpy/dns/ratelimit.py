"""Per-source token buckets for the resolver, sans-IO (``now`` is an argument).

Each source address may send ``burst`` queries at once and ``rate`` a second after that. The
table holds at most ``max_sources`` buckets: when it is full, the least recently seen source is
forgotten (it comes back with a full bucket), so a flood from many addresses costs bounded
memory. The resolver listens on the overlay only, so sources are mesh peers.
"""

from __future__ import annotations

from collections import OrderedDict

RATE = 100.0  # queries a second, per source, once the burst is spent
BURST = 200  # queries a source may send at once
MAX_SOURCES = 4096


class RateLimiter:
    def __init__(
        self, rate: float = RATE, burst: int = BURST, max_sources: int = MAX_SOURCES
    ) -> None:
        if rate <= 0 or burst < 1 or max_sources < 1:
            raise ValueError(
                "The rate limit needs a positive rate, a burst of at least 1 and room for at "
                "least one source; fix the resolver's settings."
            )
        self.rate = rate
        self.burst = float(burst)
        self.max_sources = max_sources
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at

    def allow(self, source: str, now: float) -> bool:
        """Whether one more query from ``source`` at ``now`` (seconds) is within its limit."""
        tokens, at = self._buckets.pop(source, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - at) * self.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[source] = (tokens, now)
        while len(self._buckets) > self.max_sources:
            self._buckets.popitem(last=False)
        return allowed

    def __len__(self) -> int:
        return len(self._buckets)
