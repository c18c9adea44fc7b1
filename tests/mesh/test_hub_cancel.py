"""A flush whose caller is cancelled (wgpy/mesh/server/hub.py), on SQLite and PostgreSQL.

A stream's handler awaits ``Hub.flush`` to bring a node that just registered into the index;
aiohttp cancels that handler, wherever it waits, when its client hangs up. The flush must run
to its end all the same: otherwise the change it took is lost, or the index is updated while
the open streams never get their deltas, and their maps stay stale until an unrelated change.
The test cancels the caller at each point it stops at (a future it waits on, or a bare turn of
the event loop it gives back) and then checks that every open stream got the change.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from wgpy.mesh.server.auth import parse_credential
from wgpy.mesh.server.hub import VIEWERS_AT_ONCE, Hub, MapStream
from wgpy.mesh.server.store import open_store

from .conftest import Database, new_public_key

STREAMS = VIEWERS_AT_ONCE + 6  # more than one slice of streams: the dispatch yields in between
MAX_STOPS = 200  # more than a flush stops at
STEP_LIMIT = 20_000  # loop turns spent looking for one stop
POLICY = {"acls": [{"action": "accept", "src": ["user:alice"], "dst": ["user:alice"]}]}


async def cancel_at_stop(task: asyncio.Task[Any], n: int) -> bool:
    """Run the loop until ``task`` is at its ``n``-th stop (0 is the first), then cancel it
    there. A stop is a future it waits on (``Task._fut_waiter``, counted once however long it
    waits) or a turn of the loop it gives back without one (``sleep(0)``, or not started yet).
    False if the task finished first."""
    stops = 0
    last: object = None
    for _ in range(STEP_LIMIT):
        if task.done():
            return False
        waiter = getattr(task, "_fut_waiter", None)
        if waiter is None or waiter is not last:
            if stops == n:
                task.cancel()
                return True
            stops += 1
        last = waiter
        await asyncio.sleep(0)
    raise AssertionError(f"the task neither finished nor stopped {n + 1} times")


def hostnames(lines: list[bytes]) -> set[str]:
    """Every hostname the lines name, the node's own or a peer's."""
    found = set()
    for line in lines:
        message = json.loads(line)
        for node in (message.get("self"), message.get("peer"), *message.get("peers", [])):
            if isinstance(node, dict) and "hostname" in node:
                found.add(node["hostname"])
    return found


async def test_a_flush_whose_caller_is_cancelled_still_reaches_every_stream(
    backend: str, database: Database
) -> None:
    store = await open_store(
        state_dir=database.state_dir, database_url=database.database_url, replica="r1"
    )
    hub = Hub(store, coalesce=60.0)  # no flush by the timer: only the one under test
    try:
        await store.users.create("alice")
        _, secret = await store.preauth_keys.create(
            "alice", reusable=True, ephemeral=False, tags=(), lifetime=3600.0
        )
        key = parse_credential(str(secret), "auth")
        nodes = [
            (await store.nodes.register(key, new_public_key(), f"n{i}"))[0] for i in range(STREAMS)
        ]
        await hub.start()
        streams: list[MapStream] = [hub.open_stream(n.id, f"s{n.id}")[0] for n in nodes]
        renamed = nodes[-1]
        for i in range(MAX_STOPS):
            # A change for the flush to apply: a node renamed, and a new policy (its masks
            # are worked out again for every node).
            await store.nodes.rename(renamed.id, f"renamed{i}")
            await store.policy.set(POLICY)
            for stream in streams:
                await stream.next(0)  # what came before
            caller = asyncio.ensure_future(hub.flush())
            cancelled = await cancel_at_stop(caller, i)
            await asyncio.wait_for(asyncio.gather(caller, return_exceptions=True), 5.0)
            await asyncio.wait_for(hub.flush(), 5.0)  # after any flush still running
            for stream in streams:
                lines = await stream.next(0)
                assert lines, f"stream of node {stream.node_id} got nothing (stop {i})"
                assert f"renamed{i}" in hostnames(lines), (stream.node_id, i, lines)
            assert hub.index.entries[renamed.id].node.hostname == f"renamed{i}"
            if not cancelled:
                break
        else:
            raise AssertionError(f"the flush still stopped after {MAX_STOPS} stops")
        assert i >= 2  # cancelled before it started, and while it ran
    finally:
        await hub.stop()
        await store.close()
