"""What every repository of the store shares: the SQL that selects records, turning rows into
records, and the lookups several of them make inside their transactions (a user's id, the
policy in force)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

from .. import policy as policies
from ..auth import Rng
from ..db import Database, Row, Tx
from ..errors import NotFound
from ..models import ApiKey, Node, PolicyRecord, PreAuthKey, User


class Repository:
    """What every repository of the store holds: the database, the clock and randomness
    (shared with the other repositories through :class:`~wgpy.mesh.server.store.Store`)."""

    def __init__(
        self, db: Database, *, clock: Callable[[], float] = time.time, rng: Rng = os.urandom
    ) -> None:
        self.db = db
        self.clock = clock
        self.rng = rng


NODE_COLUMNS = (
    "n.id, n.user_id, u.name AS user_name, n.hostname, n.public_key, n.addr_index,"
    " n.endpoints, n.tags, n.ephemeral, n.expires_at, n.last_seen, n.stream_id,"
    " n.stream_replica, n.created_at, n.candidates, n.ice_ufrag,"
    " n.machine_id, m.name AS machine_name, m.not_after AS machine_not_after,"
    " m.revoked_at AS machine_revoked_at"
)
# A node's machine certificate (if any) ends its life too: see node_from.
NODES_JOIN = "nodes n JOIN users u ON u.id = n.user_id LEFT JOIN machines m ON m.id = n.machine_id"
NODES_FROM = f"SELECT {NODE_COLUMNS} FROM {NODES_JOIN}"
PREAUTH_COLUMNS = (
    "k.id, k.user_id, u.name AS user_name, k.reusable, k.ephemeral, k.tags, k.expires_at,"
    " k.used, k.created_at"
)
PREAUTH_FROM = f"SELECT {PREAUTH_COLUMNS} FROM preauth_keys k JOIN users u ON u.id = k.user_id"


async def user_id_of(tx: Tx, name: str, hint: str = "") -> Any:
    """The id of user ``name``; NotFound (with ``hint`` appended) when there is none."""
    found = await tx.fetchval("SELECT id FROM users WHERE name = ?", name)
    if found is None:
        raise NotFound(f'there is no user "{name}"{hint}')
    return found


async def load_policy(tx: Tx) -> tuple[PolicyRecord, policies.Policy]:
    """The stored policy and its parsed form (validated when it was set), with the users'
    groups from OIDC sign-ins; the default policy when none is set."""
    row = await tx.fetchrow(
        "SELECT version, document, updated_at, node_ids FROM policy WHERE id = 1"
    )
    if row is None or row["document"] is None:
        return PolicyRecord(0 if row is None else row["version"], None, None), policies.DEFAULT
    document = json.loads(row["document"])
    record = PolicyRecord(row["version"], document, row["updated_at"])
    nodes = None if row["node_ids"] is None else json.loads(row["node_ids"])
    groups = await load_groups(tx)
    return record, policies.parse_policy(document, nodes=nodes, groups=groups)


async def load_groups(tx: Tx) -> dict[str, set[str]]:
    """``group:NAME`` -> the users an OIDC sign-in put in it (store/oidc.py)."""
    rows = await tx.fetch(
        "SELECT g.name AS group_name, u.name AS user_name FROM user_groups g"
        " JOIN users u ON u.id = g.user_id"
    )
    groups: dict[str, set[str]] = {}
    for r in rows:
        groups.setdefault(f"group:{r['group_name']}", set()).add(r["user_name"])
    return groups


def dump_list(values: tuple[str, ...]) -> str:
    return json.dumps(list(values))


def load_list(text: str) -> tuple[str, ...]:
    value: Any = json.loads(text)
    return tuple(str(v) for v in value)


def node_from(row: Row) -> Node:
    """The node of a row of NODE_COLUMNS. Its ``expires_at`` is the earliest of its own
    expiry, its machine certificate's ``not_after`` and the certificate's revocation: a node
    whose certificate ends or is revoked expires with it (and the hub drops it from maps)."""
    ends = [
        t
        for t in (row["expires_at"], row["machine_not_after"], row["machine_revoked_at"])
        if t is not None
    ]
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
        expires_at=min(ends) if ends else None,
        last_seen=row["last_seen"],
        stream_id=row["stream_id"],
        stream_replica=row["stream_replica"],
        created_at=row["created_at"],
        candidates=load_list(row["candidates"]),
        ice_ufrag=row["ice_ufrag"],
        machine_id=None if row["machine_id"] is None else int(row["machine_id"]),
        machine=row["machine_name"],
    )


USER_COLUMNS = (
    "id, name, created_at, password_hash IS NOT NULL AS password, totp_confirmed AS totp,"
    " oidc_issuer IS NOT NULL AS oidc"
)


def user_from(row: Row) -> User:
    return User(
        id=int(row["id"]),
        name=row["name"],
        created_at=row["created_at"],
        password=bool(row["password"]),
        totp=bool(row["totp"]),
        oidc=bool(row["oidc"]),
    )


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
