"""wgpy/dns/ratelimit.py: per-source token buckets, driven by explicit times."""

from __future__ import annotations

import pytest

from wgpy.dns.ratelimit import RateLimiter


def test_burst_then_rate() -> None:
    limiter = RateLimiter(rate=10.0, burst=5)
    assert [limiter.allow("a", 0.0) for _ in range(6)] == [True] * 5 + [False]
    assert limiter.allow("b", 0.0)  # another source has its own bucket
    assert not limiter.allow("a", 0.05)  # half a token
    assert limiter.allow("a", 0.1) and not limiter.allow("a", 0.1)
    # a long pause refills to the burst, no further
    assert [limiter.allow("a", 100.0) for _ in range(6)] == [True] * 5 + [False]


def test_table_is_bounded_and_forgets_the_least_recent() -> None:
    limiter = RateLimiter(rate=1.0, burst=1, max_sources=3)
    for source in ("a", "b", "c"):
        assert limiter.allow(source, 0.0)
    assert not limiter.allow("a", 0.0)  # a is now the most recent
    assert limiter.allow("d", 0.0)  # b goes
    assert len(limiter) == 3
    assert limiter.allow("b", 0.0)  # forgotten, so a full bucket again
    assert not limiter.allow("a", 0.0)


def test_clock_going_back_adds_nothing() -> None:
    limiter = RateLimiter(rate=1.0, burst=1)
    assert limiter.allow("a", 10.0)
    assert not limiter.allow("a", 5.0)


@pytest.mark.parametrize(("rate", "burst", "sources"), [(0.0, 1, 1), (1.0, 0, 1), (1.0, 1, 0)])
def test_bad_settings(rate: float, burst: int, sources: int) -> None:
    with pytest.raises(ValueError, match="positive rate"):
        RateLimiter(rate, burst, sources)
