"""A node's ICE candidates and ufrag (``POST /api/v1/node/candidates``), kept with the node
(migration 3) and shown to its peers in their maps. The server keeps no ICE password: the
checks' keys are per pair of nodes, derived by the two (:mod:`wgpy.nat.ice`); the column
``ice_pwd`` of migration 3 stays (no migration drops it) and a report empties it (what a node
before per-pair keys stored there). A change is recorded in the
transaction's change like any other change of what a map shows, so the hubs of all replicas
send the peers a ``peer_upsert``; reporting the same again changes nothing."""

from __future__ import annotations

from ..errors import Forbidden
from ..models import Node
from .nodes import NODE_EXPIRED
from .rows import NODES_FROM, Repository, dump_list, node_from


class IceRepository(Repository):
    async def report(self, node_id: int, ufrag: str, candidates: tuple[str, ...]) -> Node:
        """Replace the node's candidates and ufrag (checked by the caller); the node."""
        now = self.clock()
        async with self.db.transaction() as tx:
            row = await tx.fetchrow(f"{NODES_FROM} WHERE n.id = ?", node_id)
            if row is None:
                raise Forbidden(NODE_EXPIRED)  # deleted since the token was checked
            node = node_from(row)
            if node.expired(now):
                raise Forbidden(NODE_EXPIRED)
            if (node.candidates, node.ice_ufrag) == (candidates, ufrag):
                return node
            await tx.execute(
                "UPDATE nodes SET candidates = ?, ice_ufrag = ?, ice_pwd = '', last_seen = ?"
                " WHERE id = ?",
                dump_list(candidates),
                ufrag,
                now,
                node_id,
            )
            tx.changed([node_id])
            row = await tx.fetchrow(f"{NODES_FROM} WHERE n.id = ?", node_id)
            assert row is not None
            return node_from(row)
