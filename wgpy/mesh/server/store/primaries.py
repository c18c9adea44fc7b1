"""The primary router of each prefix (route_primaries, migration 11), chosen again inside
the transactions that change who serves a route: a route approved, revoked or no longer
advertised (store/routes.py), a router going online or offline (store/streams.py), a node
deleted (store/nodes.py). Its own module so that those repositories can share it without
importing each other."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from ..db import Tx
from ..routes import Prefix, Router, primaries, sort_prefixes


async def elect_in(tx: Tx, now: float) -> dict[Prefix, int]:
    """In ``tx``: choose the primary router of each served prefix again (routes.primaries)
    and keep the choice; the primaries. The nodes that became or stopped being primary are
    recorded in the change."""
    rows = await tx.fetch(
        "SELECT r.node_id, r.prefix, r.advertised_at, n.stream_id, n.expires_at"
        " FROM node_routes r JOIN nodes n ON n.id = r.node_id"
        " WHERE r.advertised_at IS NOT NULL AND r.approved_at IS NOT NULL"
    )
    routers = [
        Router(
            node_id=int(r["node_id"]),
            prefix=ipaddress.ip_network(r["prefix"]),
            advertised_at=float(r["advertised_at"]),
            online=r["stream_id"] is not None
            and (r["expires_at"] is None or r["expires_at"] > now),
        )
        for r in rows
    ]
    previous: dict[Prefix, int] = {
        ipaddress.ip_network(r["prefix"]): int(r["node_id"])
        for r in await tx.fetch("SELECT prefix, node_id FROM route_primaries")
    }
    chosen = primaries(routers, previous)
    touched: set[int] = set()
    for prefix in sort_prefixes(set(previous) | set(chosen)):
        old, new = previous.get(prefix), chosen.get(prefix)
        if old == new:
            continue
        if old is not None:
            touched.add(old)
            await tx.execute("DELETE FROM route_primaries WHERE prefix = ?", str(prefix))
        if new is not None:
            touched.add(new)
            await tx.execute(
                "INSERT INTO route_primaries (prefix, node_id, since) VALUES (?, ?, ?)",
                str(prefix),
                new,
                now,
            )
    if touched:
        tx.changed(touched)
    return chosen


async def elect_if_routers(tx: Tx, node_ids: Iterable[int], now: float) -> None:
    """In ``tx``, where nodes went online or offline: :func:`elect_in` if one of them serves
    a route (one query otherwise)."""
    ids = sorted(set(node_ids))
    if not ids:
        return
    marks = ", ".join("?" * len(ids))
    served = await tx.fetchval(
        "SELECT COUNT(*) FROM node_routes WHERE advertised_at IS NOT NULL"
        f" AND approved_at IS NOT NULL AND node_id IN ({marks})",
        *ids,
    )
    if served:
        await elect_in(tx, now)
