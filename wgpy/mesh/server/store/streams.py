"""Map streams in the store: which replica holds a node's stream (the node is online while it
is open), the replicas' heartbeats, and the sweep that takes dead replicas' nodes offline and
deletes ephemeral nodes gone for good.

Every write that changes what a map shows records the node in the transaction's change (see
db.py), as in nodes.py.
"""

from __future__ import annotations

from .primaries import elect_if_routers, elect_in
from .rows import Repository


class StreamRepository(Repository):
    """Streams and replicas, for the replica named by the database (``db.replica``). A
    router going online or offline chooses the primary routers again in the same
    transaction (store/primaries.py)."""

    @property
    def replica(self) -> str:
        return self.db.replica

    async def opened(self, node_id: int, stream_id: str) -> None:
        """The node is online, through ``stream_id`` on this replica (it replaces any other)."""
        async with self.db.transaction() as tx:
            await tx.execute(
                "UPDATE nodes SET stream_id = ?, stream_replica = ?, last_seen = ? WHERE id = ?",
                stream_id,
                self.replica,
                self.clock(),
                node_id,
            )
            tx.changed([node_id])
            await elect_if_routers(tx, [node_id], self.clock())

    async def closed(self, node_id: int, stream_id: str) -> bool:
        """The stream ended; the node is offline unless a newer stream took over. Whether it
        went offline and is ephemeral (then delete it after the grace)."""
        async with self.db.transaction() as tx:
            rows = await tx.fetch(
                "UPDATE nodes SET stream_id = NULL, stream_replica = NULL, last_seen = ?"
                " WHERE id = ? AND stream_id = ? RETURNING ephemeral",
                self.clock(),
                node_id,
                stream_id,
            )
            if rows:
                tx.changed([node_id])
                await elect_if_routers(tx, [node_id], self.clock())
        return bool(rows) and bool(rows[0]["ephemeral"])

    async def delete_if_offline_ephemeral(self, node_id: int) -> bool:
        async with self.db.transaction() as tx:
            deleted = await tx.execute(
                "DELETE FROM nodes WHERE id = ? AND ephemeral AND stream_id IS NULL", node_id
            )
            if deleted:
                tx.changed([node_id])
                await elect_in(tx, self.clock())
        return bool(deleted)

    async def heartbeat(self) -> bool:
        """This replica is alive, and so are the nodes whose streams it holds (last_seen).
        False if the replica was unknown: new, or taken for dead (its streams were cleared)."""
        now = self.clock()
        async with self.db.transaction() as tx:
            known = await tx.execute(
                "UPDATE replicas SET seen_at = ? WHERE id = ?", now, self.replica
            )
            if not known:
                await tx.execute(
                    "INSERT INTO replicas (id, seen_at) VALUES (?, ?)", self.replica, now
                )
            await tx.execute(
                "UPDATE nodes SET last_seen = ? WHERE stream_replica = ?", now, self.replica
            )
        return bool(known)

    async def sweep(self, *, dead_after: float, ephemeral_idle: float) -> None:
        """Forget replicas silent for ``dead_after`` seconds (their nodes go offline) and
        delete ephemeral nodes offline for ``ephemeral_idle`` seconds."""
        now = self.clock()
        async with self.db.transaction() as tx:
            await tx.execute(
                "DELETE FROM replicas WHERE seen_at < ? AND id <> ?", now - dead_after, self.replica
            )
            offline = await tx.fetch(
                "UPDATE nodes SET stream_id = NULL, stream_replica = NULL"
                " WHERE stream_replica IS NOT NULL"
                " AND stream_replica NOT IN (SELECT id FROM replicas) RETURNING id"
            )
            deleted = await tx.fetch(
                "DELETE FROM nodes WHERE ephemeral AND stream_id IS NULL"
                " AND COALESCE(last_seen, created_at) < ? RETURNING id",
                now - ephemeral_idle,
            )
            tx.changed(int(r["id"]) for r in [*offline, *deleted])
            if deleted:
                await elect_in(tx, now)
            else:
                await elect_if_routers(tx, (int(r["id"]) for r in offline), now)

    async def leave(self) -> None:
        """This replica stops: its streams are gone, and so is its row."""
        async with self.db.transaction() as tx:
            rows = await tx.fetch(
                "UPDATE nodes SET stream_id = NULL, stream_replica = NULL"
                " WHERE stream_replica = ? RETURNING id",
                self.replica,
            )
            await tx.execute("DELETE FROM replicas WHERE id = ?", self.replica)
            tx.changed(int(r["id"]) for r in rows)
            await elect_if_routers(tx, (int(r["id"]) for r in rows), self.clock())
