"""The policy in the store: one versioned document, validated against the users and nodes as
they are when it is set; the nodes it names are resolved to their ids then."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from ..db import Tx, placeholders
from ..errors import BadRequest
from ..models import PolicyRecord, TagsRemoved
from ..policy import Policy, PolicyError, parse_policy
from .approvals import auto_approve
from .primaries import elect_in
from .rows import NODES_FROM, Repository, dump_list, load_groups, load_policy, node_from


async def node_ids_named(tx: Tx, policy: Policy) -> dict[str, int]:
    """The ids of the nodes ``policy`` names (``USER/HOSTNAME``), those that exist."""
    wanted = policy.nodes_named()
    if not wanted:
        return {}
    users = sorted({name.partition("/")[0] for name in wanted})
    rows = await tx.fetch(
        "SELECT n.id, u.name, n.hostname FROM nodes n JOIN users u ON u.id = n.user_id"
        f" WHERE u.name IN ({placeholders(users)})",
        *users,
    )
    found = {f"{r['name']}/{r['hostname']}": int(r["id"]) for r in rows}
    return {name: found[name] for name in sorted(wanted) if name in found}


class PolicyRepository(Repository):
    """The policy: each read or write one transaction."""

    async def current(self) -> tuple[PolicyRecord, Policy]:
        """The stored policy and its parsed form (validated when it was set)."""
        async with self.db.transaction() as tx:
            return await load_policy(tx)

    async def get(self) -> PolicyRecord:
        async with self.db.transaction() as tx:
            record, _ = await load_policy(tx)
        return record

    async def set(self, document: dict[str, Any] | None) -> PolicyRecord:
        """Validate ``document`` against the users as they are in this transaction and store
        it with the next version; None goes back to the default policy.

        Nodes carrying a tag that the new policy does not let their user carry lose it, in
        the same transaction (as Headscale counts such tags invalid): a tag's rights follow
        ``tagOwners`` as it is now, not as it was when the tag was given. The record says
        which nodes lost which tags. Advertised routes the new policy's autoApprovers name are
        approved (store/approvals.py)."""
        now = self.clock()
        removed: tuple[TagsRemoved, ...] = ()
        async with self.db.transaction() as tx:
            node_ids = None
            if document is not None:
                policy, node_ids = await self._validate_policy(tx, document)
                removed = await self._drop_unowned_tags(tx, policy)
            await tx.execute(
                "UPDATE policy SET version = version + 1, document = ?, updated_at = ?,"
                " node_ids = ? WHERE id = 1",
                None if document is None else json.dumps(document, separators=(",", ":")),
                now,
                None if node_ids is None else json.dumps(node_ids),
            )
            tx.changed(policy=True)
            record, policy = await load_policy(tx)
            approved = await auto_approve(tx, policy, now)
            if approved:
                tx.changed(approved)
                await elect_in(tx, now)
        return dataclasses.replace(record, tags_removed=removed)

    async def _drop_unowned_tags(self, tx: Tx, policy: Policy) -> tuple[TagsRemoved, ...]:
        rows = await tx.fetch(f"{NODES_FROM} WHERE n.tags <> '[]' ORDER BY n.id")
        removed = []
        for node in map(node_from, rows):
            kept = tuple(t for t in node.tags if policy.may_carry(node.user, t))
            if kept != node.tags:
                await tx.execute("UPDATE nodes SET tags = ? WHERE id = ?", dump_list(kept), node.id)
                lost = tuple(t for t in node.tags if t not in kept)
                removed.append(TagsRemoved(node.id, f"{node.user}/{node.hostname}", lost))
        tx.changed(r.node_id for r in removed)
        return tuple(removed)

    async def check(self, document: object) -> None:
        """BadRequest unless ``document`` would be accepted by :meth:`set` now."""
        async with self.db.transaction() as tx:
            await self._validate_policy(tx, document)

    async def _validate_policy(self, tx: Tx, document: object) -> tuple[Policy, dict[str, int]]:
        """The policy, checked against the users and nodes as they are now, and the ids of
        the nodes it names (node selectors mean those nodes from now on)."""
        users = {r["name"] for r in await tx.fetch("SELECT name FROM users")}
        groups = await load_groups(tx)
        try:
            node_ids = await node_ids_named(tx, parse_policy(document, users))
            return parse_policy(document, users, node_ids, groups), node_ids
        except PolicyError as e:
            raise BadRequest(f"the policy is not valid: {e}") from None

    async def resolve_stored(self) -> None:
        """A policy stored before node selectors were resolved (schema 1) gets its nodes'
        ids now, once: from then on, renames do not move its selectors."""
        async with self.db.transaction() as tx:
            row = await tx.fetchrow("SELECT document, node_ids FROM policy WHERE id = 1")
            if row is None or row["document"] is None or row["node_ids"] is not None:
                return
            node_ids = await node_ids_named(tx, parse_policy(json.loads(row["document"])))
            await tx.execute("UPDATE policy SET node_ids = ? WHERE id = 1", json.dumps(node_ids))
            tx.changed(policy=True)
