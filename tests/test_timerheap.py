"""The device's one timer: the earliest deadline of many peers, with lazy deletion."""

from __future__ import annotations

from wgpy.protocol.peer import Peer
from wgpy.protocol.timerheap import TimerHeap


def peer(n: int, persistent_keepalive: float) -> Peer:
    p = Peer(bytes([n]) * 32)
    p.timers.persistent_keepalive = persistent_keepalive  # one armed deadline
    return p


def test_the_earliest_deadline_of_the_dirty_peers() -> None:
    heap = TimerHeap()
    assert heap.next_deadline() is None
    a, b = peer(1, 30.0), peer(2, 10.0)
    heap.dirty.update((a, b))
    assert heap.next_deadline() == 10.0
    assert not heap.dirty  # read once


def test_a_moved_deadline_leaves_a_stale_entry_that_is_skipped() -> None:
    heap = TimerHeap()
    a, b = peer(1, 5.0), peer(2, 8.0)
    heap.dirty.update((a, b))
    assert heap.next_deadline() == 5.0
    a.timers.persistent_keepalive = 20.0
    heap.dirty.add(a)
    assert heap.next_deadline() == 8.0
    assert heap.pop_due(8.0) is b
    assert heap.pop_due(19.9) is None  # a's old 5.0 entry is stale
    assert heap.pop_due(20.0) is a


def test_pop_due_returns_each_due_peer_once_in_deadline_order() -> None:
    heap = TimerHeap()
    peers = [peer(n, float(10 - n)) for n in range(1, 6)]
    heap.dirty.update(peers)
    due = []
    while (p := heap.pop_due(7.0)) is not None:
        due.append(p)
    assert due == [peers[4], peers[3], peers[2]]  # deadlines 5, 6, 7
    assert heap.next_deadline() == 8.0


def test_a_peer_put_back_after_firing_is_due_again_at_its_next_deadline() -> None:
    heap = TimerHeap()
    a = peer(1, 1.0)
    heap.dirty.add(a)
    assert heap.pop_due(1.0) is a
    a.timers.persistent_keepalive = 26.0  # what firing a keepalive does
    heap.dirty.add(a)
    assert heap.pop_due(1.0) is None
    assert heap.next_deadline() == 26.0


def test_removed_and_discarded_peers_never_come_back() -> None:
    heap = TimerHeap()
    a, b = peer(1, 1.0), peer(2, 2.0)
    heap.dirty.update((a, b))
    assert heap.next_deadline() == 1.0
    a.removed = True
    heap.discard(a)
    heap.dirty.add(b)
    heap.discard(b)  # also forgets that b was dirty
    assert not heap.dirty
    assert heap.pop_due(100.0) is None
    assert heap.next_deadline() is None
    assert len(heap) == 0  # stale entries were popped on the way
