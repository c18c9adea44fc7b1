"""What every part of the store shares: the database, the clock, randomness, and turning rows
into records."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

from . import policy as policies
from .auth import Rng
from .db import Database, Row, Tx, placeholders
from .errors import NotFound
from .models import ApiKey, Node, PolicyRecord, PreAuthKey, User

NODE_COLUMNS = (
    "n.id, n.user_id, u.name AS user_name, n.hostname, n.public_key, n.addr_index,"
    " n.endpoints, n.tags, n.ephemeral, n.expires_at, n.last_seen, n.stream_id,"
    " n.stream_replica, n.created_at"
)
NODES_FROM = f"SELECT {NODE_COLUMNS} FROM nodes n JOIN users u ON u.id = n.user_id"
PREAUTH_COLUMNS = (
    "k.id, k.user_id, u.name AS user_name, k.reusable, k.ephemeral, k.tags, k.expires_at,"
    " k.used, k.created_at"
)
PREAUTH_FROM = f"SELECT {PREAUTH_COLUMNS} FROM preauth_keys k JOIN users u ON u.id = k.user_id"


class StoreBase:
    async def _user_id(self, tx: Tx, name: str, hint: str = "") -> Any:
        """The id of user ``name``; NotFound (with ``hint`` appended) when there is none."""
        user_id = await tx.fetchval("SELECT id FROM users WHERE name = ?", name)
        if user_id is None:
            raise NotFound(f'there is no user "{name}"{hint}')
        return user_id

    def __init__(
        self, db: Database, *, clock: Callable[[], float] = time.time, rng: Rng = os.urandom
    ) -> None:
        self.db = db
        self.clock = clock
        self.rng = rng

    @property
    def replica(self) -> str:
        return self.db.replica

    async def close(self) -> None:
        await self.db.close()

    async def _policy(self, tx: Tx) -> tuple[PolicyRecord, policies.Policy]:
        row = await tx.fetchrow(
            "SELECT version, document, updated_at, node_ids FROM policy WHERE id = 1"
        )
        if row is None or row["document"] is None:
            return PolicyRecord(0 if row is None else row["version"], None, None), policies.DEFAULT
        document = json.loads(row["document"])
        record = PolicyRecord(row["version"], document, row["updated_at"])
        nodes = None if row["node_ids"] is None else json.loads(row["node_ids"])
        return record, policies.parse_policy(document, nodes=nodes)

    async def _node_ids(self, tx: Tx, policy: policies.Policy) -> dict[str, int]:
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

    async def _reserved_names(self, tx: Tx, node: int, user: str) -> frozenset[str]:
        """The hostnames of ``user`` that the policy names for nodes other than ``node``: a
        node renaming itself may not take one (the policy's next setting would resolve the
        name to it)."""
        _, policy = await self._policy(tx)
        return frozenset(
            sel.hostname
            for sel in policy.node_selectors()
            if sel.user == user and sel.node_id != node
        )


def dump_list(values: tuple[str, ...]) -> str:
    return json.dumps(list(values))


def load_list(text: str) -> tuple[str, ...]:
    value: Any = json.loads(text)
    return tuple(str(v) for v in value)


def node_from(row: Row) -> Node:
    return Node(
        id=int(row["id"]),
        user_id=int(row["user_id"]),
        user=row["user_name"],
        hostname=row["hostname"],
        public_key=row["public_key"],
        addr_index=int(row["addr_index"]),
        endpoints=load_list(row["endpoints"]),
        tags=load_list(row["tags"]),
        ephemeral=bool(row["ephemeral"]),
        expires_at=row["expires_at"],
        last_seen=row["last_seen"],
        stream_id=row["stream_id"],
        stream_replica=row["stream_replica"],
        created_at=row["created_at"],
    )


def user_from(row: Row) -> User:
    return User(id=int(row["id"]), name=row["name"], created_at=row["created_at"])


def preauth_from(row: Row) -> PreAuthKey:
    return PreAuthKey(
        id=row["id"],
        user_id=int(row["user_id"]),
        user=row["user_name"],
        reusable=bool(row["reusable"]),
        ephemeral=bool(row["ephemeral"]),
        tags=load_list(row["tags"]),
        expires_at=row["expires_at"],
        used=bool(row["used"]),
        created_at=row["created_at"],
    )


def api_key_from(row: Row) -> ApiKey:
    return ApiKey(id=row["id"], expires_at=row["expires_at"], created_at=row["created_at"])
