"""Nodes' subnet and exit routes in the store (migration 11): what each node advertises, what
an admin (or the policy) approved, and the primary router of each prefix.

A node's advertised list replaces the one before; approvals outlive a pause in advertising
(as Tailscale's), so a router that restarts without its routes and comes back with them is
served again without a new approval. A row neither advertised nor approved is deleted. A
write that changes what a node serves records the node in the transaction's change (db.py)
so its peers' maps are sent again; so does a change of primary, for the old and new one.
The checks of the prefixes themselves are in server/routes.py.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from ..db import Row, Tx
from ..errors import Conflict, Forbidden, NotFound
from ..routes import Prefix, Route
from .approvals import auto_approve
from .nodes import NODE_EXPIRED
from .primaries import elect_in
from .rows import NODES_FROM, Repository, load_policy, node_from

_ROUTES_FROM = (
    "SELECT r.node_id, n.hostname, u.name AS user_name, r.prefix, r.advertised_at,"
    " r.approved_at, r.approved_by, p.node_id AS primary_id"
    " FROM node_routes r JOIN nodes n ON n.id = r.node_id JOIN users u ON u.id = n.user_id"
    " LEFT JOIN route_primaries p ON p.prefix = r.prefix"
)


def _route_from(row: Row) -> Route:
    return Route(
        node_id=int(row["node_id"]),
        node=row["hostname"],
        user=row["user_name"],
        prefix=ipaddress.ip_network(row["prefix"]),
        advertised_at=row["advertised_at"],
        approved_at=row["approved_at"],
        approved_by=row["approved_by"],
        primary=row["primary_id"] is not None and int(row["primary_id"]) == int(row["node_id"]),
    )


def _sorted(routes: Iterable[Route]) -> list[Route]:
    return sorted(
        routes,
        key=lambda r: (
            r.node_id,
            r.prefix.version,
            r.prefix.network_address.packed,
            r.prefix.prefixlen,
        ),
    )


class RouteRepository(Repository):
    """The routes: each read or write one transaction."""

    async def advertise(self, node_id: int, prefixes: Sequence[Prefix]) -> list[Route]:
        """The node now advertises exactly ``prefixes`` (checked by routes.parse_routes); its
        routes afterwards. A prefix advertised before keeps its advertised_at. Advertised
        prefixes not yet approved that the policy's autoApprovers approve for the node are
        approved, ``approved_by`` ``policy``."""
        now = self.clock()
        wanted = {str(p) for p in prefixes}
        async with self.db.transaction() as tx:
            row = await tx.fetchrow(f"{NODES_FROM} WHERE n.id = ?", node_id)
            if row is None or node_from(row).expired(now):
                raise Forbidden(NODE_EXPIRED)
            before = {str(r.prefix): r for r in await self._of(tx, node_id)}
            served_before = {p for p, r in before.items() if r.served}
            advertised_before = {p for p, r in before.items() if r.advertised}
            for text in sorted(wanted - {p for p, r in before.items() if r.advertised}):
                if text in before:
                    await tx.execute(
                        "UPDATE node_routes SET advertised_at = ? WHERE node_id = ? AND prefix = ?",
                        now,
                        node_id,
                        text,
                    )
                else:
                    await tx.execute(
                        "INSERT INTO node_routes (node_id, prefix, advertised_at) VALUES (?, ?, ?)",
                        node_id,
                        text,
                        now,
                    )
            for text, route in before.items():
                if text in wanted or not route.advertised:
                    continue
                if route.approved:
                    await tx.execute(
                        "UPDATE node_routes SET advertised_at = NULL"
                        " WHERE node_id = ? AND prefix = ?",
                        node_id,
                        text,
                    )
                else:
                    await self._drop(tx, node_id, text)
            _, policy = await load_policy(tx)
            await auto_approve(tx, policy, now, node_id)
            after = await self._of(tx, node_id)
            served = {str(r.prefix) for r in after if r.served}
            if served != served_before:
                tx.changed([node_id])
                await elect_in(tx, now)
            elif {str(r.prefix) for r in after if r.advertised} != advertised_before:
                tx.changed([node_id])  # the node's own map says what it advertises
            return await self._of(tx, node_id)

    async def approve(self, node_id: int, prefixes: Sequence[Prefix], by: str) -> list[Route]:
        """Approve prefixes the node advertises (``by``: who, for the record); its routes
        afterwards. Approving an approved prefix again changes nothing."""
        now = self.clock()
        async with self.db.transaction() as tx:
            current = {str(r.prefix): r for r in await self._of(tx, node_id, must_exist=True)}
            changed = False
            for prefix in prefixes:
                route = current.get(str(prefix))
                if route is None or not route.advertised:
                    raise Conflict(
                        f"node {node_id} does not advertise {prefix}; approve only the routes "
                        "it advertises (wgpy admin routes list)"
                    )
                if route.approved:
                    continue
                await tx.execute(
                    "UPDATE node_routes SET approved_at = ?, approved_by = ?"
                    " WHERE node_id = ? AND prefix = ?",
                    now,
                    by,
                    node_id,
                    str(prefix),
                )
                changed = True
            if changed:
                tx.changed([node_id])
                await elect_in(tx, now)
            return await self._of(tx, node_id)

    async def revoke(self, node_id: int, prefixes: Sequence[Prefix]) -> list[Route]:
        """Take back the approval of prefixes (all of the node's when none are given); the
        node's routes afterwards. A prefix that is not approved is a NotFound."""
        now = self.clock()
        async with self.db.transaction() as tx:
            current = {str(r.prefix): r for r in await self._of(tx, node_id, must_exist=True)}
            names = [str(p) for p in prefixes] or [p for p, r in current.items() if r.approved]
            for text in names:
                route = current.get(text)
                if route is None or not route.approved:
                    raise NotFound(f"node {node_id} has no approved route {text}")
                if route.advertised:
                    await tx.execute(
                        "UPDATE node_routes SET approved_at = NULL, approved_by = NULL"
                        " WHERE node_id = ? AND prefix = ?",
                        node_id,
                        text,
                    )
                else:
                    await self._drop(tx, node_id, text)
            if names:
                tx.changed([node_id])
                await elect_in(tx, now)
            return await self._of(tx, node_id)

    async def all(self, node_id: int | None = None) -> list[Route]:
        """Every node's routes (or one node's), by node id then prefix."""
        async with self.db.transaction() as tx:
            if node_id is not None:
                return await self._of(tx, node_id, must_exist=True)
            return _sorted(_route_from(r) for r in await tx.fetch(_ROUTES_FROM))

    async def elect(self) -> dict[Prefix, int]:
        """Choose the primary router of each served prefix among the online routers
        (routes.primaries: the current primary keeps it while online) and keep the choice;
        the primaries. The nodes that became or stopped being primary are recorded in the
        change. Called when what is served changes here, and when a router goes online or
        offline."""
        async with self.db.transaction() as tx:
            return await elect_in(tx, self.clock())

    async def _of(self, tx: Tx, node_id: int, *, must_exist: bool = False) -> list[Route]:
        if must_exist and await tx.fetchval("SELECT id FROM nodes WHERE id = ?", node_id) is None:
            raise NotFound(f"there is no node {node_id}")
        rows = await tx.fetch(f"{_ROUTES_FROM} WHERE r.node_id = ?", node_id)
        return _sorted(_route_from(r) for r in rows)

    async def _drop(self, tx: Tx, node_id: int, text: str) -> None:
        await tx.execute("DELETE FROM node_routes WHERE node_id = ? AND prefix = ?", node_id, text)
