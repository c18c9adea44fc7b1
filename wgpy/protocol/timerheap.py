"""One deadline for many peers: a heap of each peer's next timer, as the device's one timer.

Each peer keeps its five timers as deadlines (:class:`~.timers.PeerTimers`); the device needs
only the earliest of them all. Code that may have moved a peer's deadlines adds the peer to
:attr:`TimerHeap.dirty` (a plain ``set``, so the data path pays one ``set.add`` per peer and
batch); the heap reads the dirty peers' next deadlines when asked for the earliest deadline or
the peers that are due. Heap entries are never removed in place: an entry whose deadline is no
longer the peer's (``Peer._deadline``) or whose peer was removed is skipped when it surfaces.
"""

from __future__ import annotations

import heapq
import itertools

from .peer import Peer

_INF = float("inf")


class TimerHeap:
    """The earliest timer deadline of many peers; see the module docstring."""

    __slots__ = ("_heap", "_seq", "dirty")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Peer]] = []
        self._seq = itertools.count()  # ties keep their order; peers are never compared
        self.dirty: set[Peer] = set()
        """Peers whose deadlines may have changed since the heap last read them."""

    def __len__(self) -> int:
        """Entries in the heap, stale ones included (for tests and diagnostics)."""
        return len(self._heap)

    def discard(self, peer: Peer) -> None:
        """Forget ``peer`` (it was removed): its entries are skipped from now on."""
        self.dirty.discard(peer)
        peer._deadline = _INF

    def next_deadline(self) -> float | None:
        """The earliest deadline of any peer, or None when no timer is armed."""
        self._flush()
        heap = self._heap
        while heap:
            deadline, _, peer = heap[0]
            if peer._deadline == deadline and not peer.removed:
                return deadline
            heapq.heappop(heap)
        return None

    def pop_due(self, now: float) -> Peer | None:
        """A peer with a deadline at or before ``now`` (the earliest first), or None.

        The peer's recorded deadline is cleared: the caller fires its due timers and adds it
        to :attr:`dirty`, so that its next deadline is read before the next call."""
        self._flush()
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, _, peer = heapq.heappop(heap)
            if peer._deadline != deadline or peer.removed:
                continue
            peer._deadline = _INF
            return peer
        return None

    def _flush(self) -> None:
        heap = self._heap
        for peer in self.dirty:
            deadline = peer.timers.next_deadline()
            if deadline != peer._deadline:
                peer._deadline = deadline
                if deadline != _INF:
                    heapq.heappush(heap, (deadline, next(self._seq), peer))
        self.dirty.clear()
