"""The hub: this replica's open map streams, fed from the in-memory index (netmap.py).

Every committed change (from this replica, or from another one through NOTIFY) lands in
:meth:`Hub.notify`. Changes are coalesced for ``coalesce`` seconds (50 ms), then one flush
reloads just the changed rows (and the policy if it changed), applies them to the index and
sends each open stream the deltas it needs. Flushes take turns, each runs to its end as the
hub's own task even if who awaits it is cancelled, and a failed reload is retried.

Each flush also reloads every node's routes (netmap.py puts what a viewer may use through a
router in its map). Also here: expiry (a timer at the next node's ``expires_at`` turns into
a change, and a router that expired has its prefixes' primaries chosen again), the
ephemeral grace (a stream that closes leaves an ephemeral node offline; after ``grace``
seconds, if no stream came back on any replica, the node is deleted), and ending streams
whose node was deleted or which another stream of the same node replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from wgpy.dns.names import DEFAULT_BASE_DOMAIN
from wgpy.log import get_logger

from .db import Change
from .errors import Unavailable
from .models import Node
from .netmap import Batch, Masks, NetIndex
from .policy import Policy
from .store import Store

KEEPALIVE = b'{"type":"keepalive"}\n'
RETRY_DELAY = 1.0
SLICE = 0.02  # seconds of work on a policy's masks between two turns of the event loop
VIEWERS_AT_ONCE = 64  # streams whose deltas are worked out between two turns
T = TypeVar("T")


async def _masks(policy: tuple[Policy, int], nodes: Iterable[Node]) -> Masks:
    """Every node's masks under ``policy``, giving the event loop a turn every SLICE s."""
    masks: dict[int, tuple[int, int]] = {}
    deadline = time.perf_counter() + SLICE
    for node in nodes:
        masks[node.id] = policy[0].masks(node)
        if time.perf_counter() >= deadline:
            await asyncio.sleep(0)
            deadline = time.perf_counter() + SLICE
    return masks


class MapStream:
    """Lines waiting for one node's open stream. A stream that falls ``max_backlog`` lines
    behind is closed: the node reconnects and gets a full map."""

    def __init__(self, node_id: int, stream_id: str, max_backlog: int) -> None:
        self.node_id = node_id
        self.stream_id = stream_id
        self.closed = False
        self._lines: deque[bytes] = deque()
        self._max_backlog = max_backlog
        self._wake = asyncio.Event()

    def send(self, line: bytes) -> None:
        if self.closed:
            return
        self._lines.append(line)
        if len(self._lines) > self._max_backlog:
            self.close()
        self._wake.set()

    def send_all(self, lines: list[bytes]) -> None:
        if self.closed:
            return
        self._lines.extend(lines)
        if len(self._lines) > self._max_backlog:
            self.close()
        self._wake.set()

    def close(self) -> None:
        self.closed = True
        self._wake.set()

    async def next(self, timeout: float) -> list[bytes] | None:
        """What is waiting ([] after ``timeout`` seconds of nothing), None once closed."""
        if not self._lines and not self.closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
        self._wake.clear()
        if self.closed:
            return None
        lines = list(self._lines)
        self._lines.clear()
        return lines


@dataclass(frozen=True, slots=True)
class Flushed:
    """One flush, as the hub's ``on_flush`` hears of it."""

    seconds: float  # reloading the changes and writing the deltas
    waited: float  # from the oldest change noticed to its deltas written (coalescing too)
    changed: int  # nodes whose entry changed
    lines: int  # delta lines written to the streams
    failed: bool = False  # the database failed: the changes are retried


class Hub:
    def __init__(
        self,
        store: Store,
        *,
        coalesce: float = 0.05,
        ephemeral_grace: float = 2.0,
        max_backlog: int = 10_000,
        clock: Callable[[], float] = time.time,
        base_domain: str = DEFAULT_BASE_DOMAIN,
    ) -> None:
        self.store = store
        self.coalesce = coalesce
        self.ephemeral_grace = ephemeral_grace
        self.max_backlog = max_backlog
        self.clock = clock
        self.index = NetIndex(base_domain=base_domain)
        self.streams: dict[int, MapStream] = {}
        self.last_flush_seconds = 0.0
        # Called after each flush: the metrics (metrics.py) count flushes without the hub
        # knowing of them.
        self.on_flush: Callable[[Flushed], None] | None = None
        self._pending_since: float | None = None  # perf_counter() of the oldest pending change
        self.log = get_logger(component="hub", replica=store.replica)
        self._pending = Change()
        self._flush_timer: asyncio.TimerHandle | None = None
        self._expiry_timer: asyncio.TimerHandle | None = None
        self._grace_timers: dict[int, asyncio.TimerHandle] = {}
        self._flush_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = False

    async def start(self) -> None:
        """Load every node and the policy, then follow the store's changes."""
        self.store.db.on_change = self.notify
        self._pending = Change(everything=True)
        await self.flush()

    # ------------------------------------------------------------------------------------
    # Changes

    def notify(self, change: Change) -> None:
        self._pending = self._pending | change
        if self._pending_since is None:
            self._pending_since = time.perf_counter()
        if self._flush_timer is None and not self._stopping:
            loop = asyncio.get_running_loop()
            self._flush_timer = loop.call_later(self.coalesce, self._flush_soon)

    def _flush_soon(self) -> None:
        self._flush_timer = None
        self.spawn(self._flush())

    async def flush(self) -> None:
        """Apply every pending change now (also what a new stream waits for).

        The flush is the hub's own task: a caller cancelled meanwhile (aiohttp cancels the
        handler of a client that hung up) stops waiting for it, but it runs to its end, so
        no change is taken and dropped, nor an index updated without the deltas it owes."""
        await asyncio.shield(self.spawn(self._flush()))

    async def _flush(self) -> None:
        async with self._flush_lock:
            change, self._pending = self._pending, Change()
            since, self._pending_since = self._pending_since, None
            if not change:
                return
            started = time.perf_counter()
            since = started if since is None else since
            try:
                changed, lines = await self._apply(change)
            except Exception:
                self.log.exception("reloading changes failed; retrying")
                if self.on_flush is not None:
                    self.on_flush(Flushed(time.perf_counter() - started, 0.0, 0, 0, failed=True))
                self._pending = self._pending | change
                if self._pending_since is None or since < self._pending_since:
                    self._pending_since = since
                if self._flush_timer is None and not self._stopping:
                    loop = asyncio.get_running_loop()
                    self._flush_timer = loop.call_later(RETRY_DELAY, self._flush_soon)
                return
            self.last_flush_seconds = time.perf_counter() - started
            if self.on_flush is not None:
                waited = time.perf_counter() - since
                self.on_flush(Flushed(self.last_flush_seconds, waited, changed, lines))

    async def _apply(self, change: Change) -> tuple[int, int]:
        """Apply ``change``; the nodes that changed and the delta lines sent."""
        # A new policy is applied to every node, and its deltas may reach every stream: that
        # work is done a slice at a time, giving the event loop back in between, so requests
        # and other streams go on being served however large the policy or the mesh.
        policy = None
        if change.policy or change.everything:
            record, parsed = await self.store.policy.current()
            policy = (parsed, record.version)
        # Every node's routes, again (a small table: only what nodes advertise or had approved).
        routes = await self.store.routes.all()
        if change.everything:
            nodes = await self.store.nodes.all()
            masks = await _masks(policy, nodes) if policy is not None else None
            now = self.clock()
            batch = self.index.apply(
                nodes, policy=policy, now=now, replace_all=True, masks=masks, routes=routes
            )
        else:
            ids = sorted(change.nodes)
            nodes = await self.store.nodes.by_id(ids) if ids else []
            masks = None
            if policy is not None and policy[1] != self.index.policy_version:
                everyone = {e.node.id: e.node for e in self.index.entries.values()}
                everyone.update((n.id, n) for n in nodes)
                masks = await _masks(policy, everyone.values())
            now = self.clock()
            removed = set(ids) - {n.id for n in nodes}
            batch = self.index.apply(
                nodes, removed=removed, policy=policy, now=now, masks=masks, routes=routes
            )
        lines = await self._dispatch(batch, now)
        self._schedule_expiry(now)
        return len(batch.changed), lines

    async def _dispatch(self, batch: Batch, now: float) -> int:
        # The streams open now, each kept: one replaced meanwhile ignores what it is sent,
        # and one opened meanwhile got its full map from the index as it is after the batch.
        streams = list(self.streams.items())
        sent = 0
        for start in range(0, len(streams), VIEWERS_AT_ONCE):
            part = dict(streams[start : start + VIEWERS_AT_ONCE])
            for node_id, lines in self.index.deltas(batch, list(part), now).items():
                part[node_id].send_all(lines)
                sent += len(lines)
            if start + VIEWERS_AT_ONCE < len(streams):
                await asyncio.sleep(0)
        for node_id in batch.changed:
            own = self.streams.get(node_id)
            if own is None:
                continue
            entry = self.index.entries.get(node_id)
            if entry is None:
                own.close()  # the node was deleted
            elif entry.node.stream_replica not in (None, self.store.replica):
                own.close()  # a newer stream of this node, on another replica
        return sent

    def _schedule_expiry(self, now: float) -> None:
        if self._expiry_timer is not None:
            self._expiry_timer.cancel()
            self._expiry_timer = None
        at = self.index.next_expiry(now)
        if at is not None and not self._stopping:
            loop = asyncio.get_running_loop()
            self._expiry_timer = loop.call_later(max(0.0, at - now) + 0.001, self._expire_due)

    def _expire_due(self) -> None:
        self._expiry_timer = None
        due = self.index.due_to_expire(self.clock())
        if due:
            self.notify(Change(frozenset(due)))
            if any(r.served for i in due for r in self.index.routes.get(i, ())):
                # A router expired by time: another one takes its prefixes over (the
                # election counts an expired router as offline; each replica may run it,
                # the second finds nothing to change).
                self.spawn(self.store.routes.elect())
        else:
            self._schedule_expiry(self.clock())

    # ------------------------------------------------------------------------------------
    # Streams

    def open_stream(self, node_id: int, stream_id: str) -> tuple[MapStream, bytes]:
        """Register a stream and return it with its full map: both from the index as it is
        now, so the deltas of every later flush apply on top."""
        if node_id not in self.index.entries:  # deleted meanwhile, or the reload failed
            raise Unavailable("the server could not load this node's map; try again")
        previous = self.streams.get(node_id)
        if previous is not None:
            previous.close()
        stream = MapStream(node_id, stream_id, self.max_backlog)
        self.streams[node_id] = stream
        return stream, self.index.full(node_id, self.clock())

    def stream_done(self, stream: MapStream) -> None:
        """The stream's response ended: forget it, and record the node offline."""
        stream.close()
        if self.streams.get(stream.node_id) is stream:
            del self.streams[stream.node_id]
        self.stream_ended(stream.node_id, stream.stream_id)

    def stream_ended(self, node_id: int, stream_id: str) -> None:
        self.spawn(self._stream_ended(node_id, stream_id))

    async def _stream_ended(self, node_id: int, stream_id: str) -> None:
        if await self.store.streams.closed(node_id, stream_id) and not self._stopping:
            loop = asyncio.get_running_loop()
            previous = self._grace_timers.pop(node_id, None)
            if previous is not None:
                previous.cancel()
            handle = loop.call_later(self.ephemeral_grace, self._grace_over, node_id)
            self._grace_timers[node_id] = handle

    def _grace_over(self, node_id: int) -> None:
        self._grace_timers.pop(node_id, None)
        if node_id not in self.streams:
            self.spawn(self.store.streams.delete_if_offline_ephemeral(node_id))

    # ------------------------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run ``coro`` as the hub's own task: stop() waits for it, a failure is logged."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.log.error("background task failed", error=repr(task.exception()))

    async def stop(self, timeout: float = 2.0) -> None:
        """End every stream and wait (up to ``timeout``) for what they started to finish."""
        self._stopping = True
        for handle in (self._flush_timer, self._expiry_timer, *self._grace_timers.values()):
            if handle is not None:
                handle.cancel()
        for stream in list(self.streams.values()):
            stream.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.streams and loop.time() < deadline:
            await asyncio.sleep(0.01)
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=max(0.001, deadline - loop.time()))
        for task in list(self._tasks):
            task.cancel()
