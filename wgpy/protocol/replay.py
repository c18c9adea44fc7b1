"""The receive-side replay filter: a sliding window over message counters (whitepaper 5.4.6).

This is the RFC 6479 algorithm as the Linux kernel (``counter_validate`` in
drivers/net/wireguard/receive.c) and wireguard-go (``replay/replay.go``) implement it: a ring of
8192 entries in 128 blocks of 64, a window of ``REPLAY_WINDOW_SIZE`` (8128) counters behind the
greatest counter accepted so far, and no shifting: moving the window forward only zeroes the
blocks it moves into. The one block of slack is what lets the window move a whole block at a time.

The results are exactly the kernel's: a counter is accepted if and only if it is below the
limit (``REJECT_AFTER_MESSAGES``), it is no more than ``REPLAY_WINDOW_SIZE`` below the greatest
counter accepted so far, and it was not accepted before.

Where the kernel keeps one bit per counter in 64-bit words, this ring keeps one byte per counter
in a ``bytearray``: in CPython a byte is read and set with one subscript each, whereas a bit
costs a shift, a mask, a test and an ``or`` on Python ints, which made an in-order ``update``
cost about 1.7 times as much (0.31 us against 0.18 us, call included). The price is 8 KiB per
filter instead of 1 KiB. Blocks are zeroed by slice assignment from a ``bytearray`` of zeros: a
``bytes`` source would first be copied into a new bytearray, which doubles the cost.
"""

from __future__ import annotations

from .constants import REJECT_AFTER_MESSAGES, REPLAY_WINDOW_SIZE

__all__ = ["ReplayFilter"]

_BLOCK_SHIFT = 6
_BLOCK_SIZE = 1 << _BLOCK_SHIFT  # 64 counters per block, as the kernel's 64-bit words
_RING_SIZE = REPLAY_WINDOW_SIZE + _BLOCK_SIZE  # 8192 entries: the window plus one block of slack
_RING_MASK = _RING_SIZE - 1
_RING_BLOCKS = _RING_SIZE >> _BLOCK_SHIFT  # 128
_BLOCK_MASK = _RING_BLOCKS - 1
assert _RING_SIZE & _RING_MASK == 0, "the ring size must be a power of two"

# Sources for zeroing must be bytearrays: a bytearray slice assignment from bytes copies first.
_ZERO_BLOCK = bytearray(_BLOCK_SIZE)
_ZERO_RING = bytearray(_RING_SIZE)


class ReplayFilter:
    """Which message counters of one receiving key have been seen, over a sliding window.

    ``check(counter)`` answers before authentication and changes nothing; ``update(counter)``
    answers after authentication and records the counter when it accepts it. Both give the same
    answer for the same counter and state.

    ``limit`` is the first counter that is always rejected; it is ``REJECT_AFTER_MESSAGES`` unless
    a test asks for another (the kernel's selftest runs against the kernel's value).
    """

    __slots__ = ("_greatest", "_limit", "_ring")

    def __init__(self, *, limit: int = REJECT_AFTER_MESSAGES) -> None:
        self._limit = limit
        # The greatest counter accepted so far; -1 before the first. Entries above it in its own
        # block are zero; the blocks after it may hold entries from the previous lap of the ring
        # and are zeroed as the window moves into them.
        self._greatest = -1
        self._ring = bytearray(_RING_SIZE)

    @property
    def greatest(self) -> int:
        """The greatest counter accepted since creation or the last reset, or -1 if none."""
        return self._greatest

    def reset(self) -> None:
        """Forget every counter, as for a new key."""
        self._greatest = -1
        self._ring[:] = _ZERO_RING

    def check(self, counter: int) -> bool:
        """Whether ``update(counter)`` would accept ``counter`` now; changes nothing.

        For dropping a replayed or stale packet before paying for its decryption.
        """
        if counter >= self._limit or counter < 0:
            return False
        greatest = self._greatest
        if counter > greatest:
            return True
        if counter + REPLAY_WINDOW_SIZE < greatest:
            return False
        return not self._ring[counter & _RING_MASK]

    def update(self, counter: int) -> bool:
        """Record ``counter`` of an authenticated packet; False if it must be dropped.

        False when the counter is at or above the limit, more than ``REPLAY_WINDOW_SIZE`` below
        the greatest counter accepted, or accepted before; otherwise the counter is recorded
        and the answer is True.
        """
        if counter >= self._limit or counter < 0:
            return False
        greatest = self._greatest
        ring = self._ring
        if counter > greatest:
            if (counter ^ greatest) >> _BLOCK_SHIFT:
                # The window moves into one or more new blocks: zero them (all, past a lap).
                first = (greatest >> _BLOCK_SHIFT) + 1
                blocks = (counter >> _BLOCK_SHIFT) - first + 1
                start = (first & _BLOCK_MASK) << _BLOCK_SHIFT
                if blocks == 1:
                    ring[start : start + _BLOCK_SIZE] = _ZERO_BLOCK
                elif blocks >= _RING_BLOCKS:
                    ring[:] = _ZERO_RING
                else:
                    end = start + (blocks << _BLOCK_SHIFT)
                    if end <= _RING_SIZE:
                        ring[start:end] = _ZERO_RING[: end - start]
                    else:
                        ring[start:] = _ZERO_RING[start:]
                        ring[: end - _RING_SIZE] = _ZERO_RING[: end - _RING_SIZE]
            ring[counter & _RING_MASK] = 1
            self._greatest = counter
            return True
        if counter + REPLAY_WINDOW_SIZE < greatest:
            return False
        index = counter & _RING_MASK
        if ring[index]:
            return False
        ring[index] = 1
        return True
