"""Routes approved by the policy's ``autoApprovers`` (server/autoapprovers.py), inside the
transactions where that can change: a node advertising its routes (store/routes.py) and a
new policy (store/policy.py), as Headscale approves what a new policy names. An approval is
never taken back by a policy: an admin revokes it."""

from __future__ import annotations

import ipaddress

from ..db import Tx
from ..policy import Policy
from .rows import NODE_COLUMNS, NODES_JOIN, node_from


async def auto_approve(tx: Tx, policy: Policy, now: float, node_id: int | None = None) -> set[int]:
    """Approve the advertised, unapproved routes (of ``node_id``, or of every node) that
    ``policy`` approves for their node, ``approved_by`` ``policy``; the nodes that got one."""
    where = "r.advertised_at IS NOT NULL AND r.approved_at IS NULL"
    args: tuple[object, ...] = ()
    if node_id is not None:
        where += " AND r.node_id = ?"
        args = (node_id,)
    rows = await tx.fetch(
        f"SELECT {NODE_COLUMNS}, r.prefix FROM {NODES_JOIN}"
        f" JOIN node_routes r ON r.node_id = n.id WHERE {where} ORDER BY r.node_id, r.prefix",
        *args,
    )
    approved = set()
    for row in rows:
        node = node_from(row)
        if policy.auto_approves(node, ipaddress.ip_network(row["prefix"])):
            await tx.execute(
                "UPDATE node_routes SET approved_at = ?, approved_by = 'policy'"
                " WHERE node_id = ? AND prefix = ?",
                now,
                node.id,
                row["prefix"],
            )
            approved.add(node.id)
    return approved
