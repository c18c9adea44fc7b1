"""The store: every read and write of the data model (docs/mesh-api.md), each in one
transaction, the same SQL for SQLite and PostgreSQL (db.py).

This module holds users, admin API keys, pre-auth keys and the policy; nodes, streams and
replicas are in store_nodes.py. Secrets are created here and returned once; the database
keeps only their SHA-256. Errors are the API's (errors.py), with the sentence the client sees.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import migrations
from .auth import Credential, Rng, new_credential, secret_matches
from .db import IntegrityConflict, Tx, open_database
from .errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized
from .models import ApiKey, PolicyRecord, PreAuthKey, TagsRemoved, User
from .policy import Policy, PolicyError, parse_policy
from .store_base import (
    NODES_FROM,
    PREAUTH_FROM,
    api_key_from,
    dump_list,
    node_from,
    preauth_from,
    user_from,
)
from .store_nodes import NodeStore

API_KEY_INVALID = (
    "the API key is not valid (unknown or mistyped); create one with `wgpy server apikey create`"
)
API_KEY_EXPIRED = "the API key has expired; create a new one with `wgpy server apikey create`"


class Store(NodeStore):
    # ------------------------------------------------------------------------------------
    # Users

    async def create_user(self, name: str) -> User:
        try:
            async with self.db.transaction() as tx:
                row = await tx.fetchrow(
                    "INSERT INTO users (name, created_at) VALUES (?, ?)"
                    " RETURNING id, name, created_at",
                    name,
                    self.clock(),
                )
        except IntegrityConflict:
            raise Conflict(f'there is already a user "{name}"') from None
        assert row is not None
        return user_from(row)

    async def users(self) -> list[User]:
        async with self.db.transaction() as tx:
            rows = await tx.fetch("SELECT id, name, created_at FROM users ORDER BY name")
        return [user_from(r) for r in rows]

    async def delete_user(self, name: str) -> None:
        """Refused while the user has nodes or the policy names them; the user's pre-auth
        keys go with them."""
        async with self.db.transaction() as tx:
            user_id = await self._user_id(tx, name)
            count = await tx.fetchval("SELECT COUNT(*) FROM nodes WHERE user_id = ?", user_id)
            if count:
                raise Conflict(f'user "{name}" still has {count} node(s); delete them first')
            _, policy = await self._policy(tx)
            if name in policy.users_named():
                raise Conflict(f'the policy names user "{name}"; take them out of it first')
            await tx.execute("DELETE FROM users WHERE id = ?", user_id)

    # ------------------------------------------------------------------------------------
    # Admin API keys

    async def create_api_key(self, expires_at: float | None) -> tuple[ApiKey, Credential]:
        key = new_credential("api", self.rng)
        async with self.db.transaction() as tx:
            row = await tx.fetchrow(
                "INSERT INTO api_keys (id, key_hash, expires_at, created_at) VALUES (?, ?, ?, ?)"
                " RETURNING id, expires_at, created_at",
                key.id,
                key.secret_hash,
                expires_at,
                self.clock(),
            )
        assert row is not None
        return api_key_from(row), key

    async def api_keys(self) -> list[ApiKey]:
        async with self.db.transaction() as tx:
            rows = await tx.fetch("SELECT id, expires_at, created_at FROM api_keys ORDER BY 3")
        return [api_key_from(r) for r in rows]

    async def expire_api_key(self, key_id: str) -> ApiKey:
        now = self.clock()
        async with self.db.transaction() as tx:
            await tx.execute(
                "UPDATE api_keys SET expires_at = ? WHERE id = ?"
                " AND (expires_at IS NULL OR expires_at > ?)",
                now,
                key_id,
                now,
            )
            row = await tx.fetchrow(
                "SELECT id, expires_at, created_at FROM api_keys WHERE id = ?", key_id
            )
        if row is None:
            raise NotFound(f"there is no API key {key_id}")
        return api_key_from(row)

    async def check_api_key(self, key: Credential) -> ApiKey:
        async with self.db.transaction() as tx:
            row = await tx.fetchrow(
                "SELECT id, key_hash, expires_at, created_at FROM api_keys WHERE id = ?", key.id
            )
        if row is None or not secret_matches(key, row["key_hash"]):
            raise Unauthorized(API_KEY_INVALID)
        if row["expires_at"] is not None and row["expires_at"] <= self.clock():
            raise Forbidden(API_KEY_EXPIRED)
        return api_key_from(row)

    # ------------------------------------------------------------------------------------
    # Pre-auth keys

    async def create_preauth_key(
        self, user: str, *, reusable: bool, ephemeral: bool, tags: tuple[str, ...], lifetime: float
    ) -> tuple[PreAuthKey, Credential]:
        now = self.clock()
        key = new_credential("auth", self.rng)
        async with self.db.transaction() as tx:
            user_id = await self._user_id(tx, user, "; create it first")
            _, policy = await self._policy(tx)
            try:
                policy.check_tags(user, tags)
            except PolicyError as e:
                raise BadRequest(f"tags: {e}") from None
            await tx.execute(
                "INSERT INTO preauth_keys (id, user_id, key_hash, reusable, ephemeral, tags,"
                " expires_at, used, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, FALSE, ?)",
                key.id,
                user_id,
                key.secret_hash,
                reusable,
                ephemeral,
                dump_list(tags),
                now + lifetime,
                now,
            )
            row = await tx.fetchrow(f"{PREAUTH_FROM} WHERE k.id = ?", key.id)
        assert row is not None
        return preauth_from(row), key

    async def preauth_keys(self, user: str | None = None) -> list[PreAuthKey]:
        async with self.db.transaction() as tx:
            if user is None:
                rows = await tx.fetch(f"{PREAUTH_FROM} ORDER BY k.created_at")
            else:
                await self._user_id(tx, user)
                rows = await tx.fetch(
                    f"{PREAUTH_FROM} WHERE u.name = ? ORDER BY k.created_at", user
                )
        return [preauth_from(r) for r in rows]

    async def expire_preauth_key(self, key_id: str) -> PreAuthKey:
        now = self.clock()
        async with self.db.transaction() as tx:
            await tx.execute(
                "UPDATE preauth_keys SET expires_at = ? WHERE id = ? AND expires_at > ?",
                now,
                key_id,
                now,
            )
            row = await tx.fetchrow(f"{PREAUTH_FROM} WHERE k.id = ?", key_id)
        if row is None:
            raise NotFound(f"there is no pre-auth key {key_id}")
        return preauth_from(row)

    # ------------------------------------------------------------------------------------
    # Policy

    async def current_policy(self) -> tuple[PolicyRecord, Policy]:
        """The stored policy and its parsed form (validated when it was set)."""
        async with self.db.transaction() as tx:
            return await self._policy(tx)

    async def policy(self) -> PolicyRecord:
        async with self.db.transaction() as tx:
            record, _ = await self._policy(tx)
        return record

    async def set_policy(self, document: dict[str, Any] | None) -> PolicyRecord:
        """Validate ``document`` against the users as they are in this transaction and store
        it with the next version; None goes back to the default policy.

        Nodes carrying a tag that the new policy does not let their user carry lose it, in
        the same transaction (as Headscale counts such tags invalid): a tag's rights follow
        ``tagOwners`` as it is now, not as it was when the tag was given. The record says
        which nodes lost which tags."""
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
            record, _ = await self._policy(tx)
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

    async def check_policy(self, document: object) -> None:
        """BadRequest unless ``document`` would be accepted by :meth:`set_policy` now."""
        async with self.db.transaction() as tx:
            await self._validate_policy(tx, document)

    async def _validate_policy(self, tx: Tx, document: object) -> tuple[Policy, dict[str, int]]:
        """The policy, checked against the users and nodes as they are now, and the ids of
        the nodes it names (node selectors mean those nodes from now on)."""
        users = {r["name"] for r in await tx.fetch("SELECT name FROM users")}
        try:
            node_ids = await self._node_ids(tx, parse_policy(document, users))
            return parse_policy(document, users, node_ids), node_ids
        except PolicyError as e:
            raise BadRequest(f"the policy is not valid: {e}") from None

    async def resolve_stored_policy(self) -> None:
        """A policy stored before node selectors were resolved (schema 1) gets its nodes'
        ids now, once: from then on, renames do not move its selectors."""
        async with self.db.transaction() as tx:
            row = await tx.fetchrow("SELECT document, node_ids FROM policy WHERE id = 1")
            if row is None or row["document"] is None or row["node_ids"] is not None:
                return
            node_ids = await self._node_ids(tx, parse_policy(json.loads(row["document"])))
            await tx.execute("UPDATE policy SET node_ids = ? WHERE id = 1", json.dumps(node_ids))
            tx.changed(policy=True)


async def open_store(
    *,
    state_dir: Path | None,
    database_url: str | None,
    replica: str,
    clock: Callable[[], float] = time.time,
    rng: Rng = os.urandom,
) -> Store:
    """Open the database and bring its schema up to date."""
    db = await open_database(
        state_dir=state_dir,
        database_url=database_url,
        replica=replica,
        setup=lambda db: migrations.migrate(db, clock()),
    )
    try:
        store = Store(db, clock=clock, rng=rng)
        await store.resolve_stored_policy()
    except BaseException:
        await db.close()
        raise
    return store
