"""Exponential backoff with jitter, for reconnecting to the coordination server.

Each failure doubles the base delay from ``initial`` up to ``maximum``; the delay returned
is the base scaled by a random factor in ``[1 - jitter, 1 + jitter]`` (then kept within
``[initial, maximum]``), so that many nodes cut off by one server restart do not all come
back in the same instant. :meth:`Backoff.reset` after a success starts over.
"""

from __future__ import annotations

import random
from collections.abc import Callable

INITIAL_DELAY = 0.5  # seconds
MAXIMUM_DELAY = 30.0  # seconds
JITTER = 0.25  # the delay varies by up to this fraction either way


class Backoff:
    """The delays before successive retries: ``next_delay()`` after each failure."""

    def __init__(
        self,
        initial: float = INITIAL_DELAY,
        maximum: float = MAXIMUM_DELAY,
        *,
        factor: float = 2.0,
        jitter: float = JITTER,
        uniform: Callable[[], float] = random.random,
    ) -> None:
        if not 0 < initial <= maximum:
            raise ValueError("backoff delays must satisfy 0 < initial <= maximum")
        if not 0 <= jitter < 1:
            raise ValueError("jitter is a fraction from 0 to 1")
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.jitter = jitter
        self._uniform = uniform  # a float in [0, 1)
        self.failures = 0

    def next_delay(self) -> float:
        """The delay before the next attempt; counts one more failure."""
        base = min(self.maximum, self.initial * self.factor ** min(self.failures, 64))
        self.failures += 1
        scale = 1.0 + self.jitter * (2.0 * self._uniform() - 1.0)
        return min(self.maximum, max(self.initial, base * scale))

    def first_delay(self) -> float:
        """The shortest delay, with jitter upwards, counting no failure: for a retry that is
        due at once but must not come from every node in the same instant."""
        return min(self.maximum, self.initial * (1.0 + self.jitter * self._uniform()))

    def reset(self) -> None:
        self.failures = 0
