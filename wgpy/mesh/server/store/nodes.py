"""Nodes in the store: registration and login, a node's own changes, the admin's node
operations. Map streams (online state) and replicas: streams.py.

Every write that changes what a map shows records the node in the transaction's change, so
the hubs of all replicas push it to the streams (see db.py). Registration retries the whole
transaction when a concurrent one took the same hostname or address first.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from ..auth import Credential, hash_secret, new_credential, secret_matches
from ..db import IntegrityConflict, Tx, placeholders
from ..errors import BadRequest, Conflict, Forbidden, NotAllowed, NotFound, Unauthorized
from ..models import MAX_ADDR_INDEX, RESERVED_ADDR_INDEXES, MachineRecord, Node
from ..policy import Policy, PolicyError
from .primaries import elect_if_routers, elect_in
from .rows import (
    NODE_COLUMNS,
    NODES_FROM,
    NODES_JOIN,
    Repository,
    dump_list,
    load_list,
    load_policy,
    node_from,
    user_id_of,
)

ATTEMPTS = 5
HOSTNAME_MAX = 63
_CHUNK = 500  # ids per IN (...) list

AUTH_KEY_INVALID = "the auth key is not valid (unknown or mistyped); ask an admin for a new one"
AUTH_KEY_EXPIRED = "the auth key has expired; ask an admin for a new one"
AUTH_KEY_USED = "the auth key is a one-off key and was already used; ask an admin for a new one"
TOKEN_INVALID = (
    "the node token is not valid (unknown, logged out, or the node was deleted); "
    "register again with an auth key"
)
NODE_EXPIRED = (
    "this node has expired; log in again (wgpy up --login-server URL, without an auth key) "
    "or register it again with an auth key"
)
MACHINE_REQUIRED = (
    "a machine certificate is required for this node by the policy; start it with "
    "--machine-cert FILE --machine-key FILE (ask an admin: wgpy admin machines issue NAME)"
)


def key_taken(node_id: int) -> str:
    return (
        f"this public key belongs to node {node_id}, and the request does not prove that it "
        "holds that node; send the node's token (Authorization: Bearer wgpy_node_...) to "
        f"register it again, or generate a new key, or have an admin delete node {node_id}"
    )


async def check_machine(
    tx: Tx,
    policy: Policy,
    user: str,
    tags: Sequence[str],
    machine: MachineRecord | int | None,
) -> None:
    """Forbidden unless a node of ``user`` with ``tags`` may register (or change its key)
    with ``machine`` (its record or id; None: no proof): the policy may require one (groups:
    the user's, once users have groups), and a machine revoked meanwhile no longer counts."""
    if machine is None:
        if policy.machine_required(user, tags):
            raise Forbidden(MACHINE_REQUIRED)
        return
    machine_id = machine if isinstance(machine, int) else machine.id
    row = await tx.fetchrow("SELECT name, revoked_at FROM machines WHERE id = ?", machine_id)
    if row is None or row["revoked_at"] is not None:
        name = "" if row is None else f' "{row["name"]}"'
        raise Forbidden(f"machine{name} is revoked; ask an admin for a new machine certificate")


def _holds(holder: Credential | None, token_id: str | None, token_hash: str | None) -> bool:
    """Whether ``holder`` is the node token of the node with these columns."""
    if holder is None or token_id is None:
        return False
    return secrets.compare_digest(holder.id, token_id) & secret_matches(holder, token_hash)


async def reserved_names(tx: Tx, node: int, user: str) -> frozenset[str]:
    """The hostnames of ``user`` that the policy names for nodes other than ``node``: a node
    renaming itself may not take one (the policy's next setting would resolve the name to it)."""
    _, policy = await load_policy(tx)
    return frozenset(
        sel.hostname for sel in policy.node_selectors() if sel.user == user and sel.node_id != node
    )


class NodeRepository(Repository):
    """The nodes: each read or write one transaction."""

    # ------------------------------------------------------------------------------------
    # Registration and the node's own requests

    async def register(
        self,
        auth_key: Credential,
        public_key: str,
        hostname: str,
        holder: Credential | None = None,
        *,
        max_nodes: int = 0,
        machine: MachineRecord | None = None,
    ) -> tuple[Node, Credential]:
        """Create the node of ``public_key`` with a pre-auth key, or re-register it (same
        node, same addresses, a new token); the node and its token.

        A key that already has a node is that node's: only a caller that proves it holds the
        node, with the node's token (``holder``, valid even if the node expired), registers
        it again. Anyone else could otherwise read a peer's public key from their map and
        take over its node, tags, address and rights. An admin releases a key by deleting
        its node.

        A new node beyond ``max_nodes`` of its user (0: no limit) is refused.

        ``machine``: the machine certificate the caller proved it holds (server/machines.py),
        recorded on the node; without one, a node that the policy requires one of is refused
        (Forbidden, MACHINE_REQUIRED)."""
        for _ in range(ATTEMPTS):
            try:
                return await self._register(
                    auth_key, public_key, hostname, holder, max_nodes, machine
                )
            except IntegrityConflict:
                continue  # a concurrent registration took the hostname or address first
        raise Conflict("the registration kept colliding with concurrent ones; try again")

    async def _register(
        self,
        auth_key: Credential,
        public_key: str,
        hostname: str,
        holder: Credential | None,
        max_nodes: int,
        machine: MachineRecord | None,
    ) -> tuple[Node, Credential]:
        now = self.clock()
        token = new_credential("node", self.rng)
        async with self.db.transaction() as tx:
            key = await tx.fetchrow(
                "SELECT user_id, key_hash, reusable, ephemeral, tags, expires_at, used"
                " FROM preauth_keys WHERE id = ?",
                auth_key.id,
            )
            if key is None or not secret_matches(auth_key, key["key_hash"]):
                raise Unauthorized(AUTH_KEY_INVALID)
            if key["expires_at"] <= now:
                raise Forbidden(AUTH_KEY_EXPIRED)
            taken = await tx.execute(
                "UPDATE preauth_keys SET used = TRUE WHERE id = ? AND (reusable OR NOT used)",
                auth_key.id,
            )
            if not taken:
                raise Forbidden(AUTH_KEY_USED)
            user_id = int(key["user_id"])
            key_tags = load_list(key["tags"])
            _, policy = await load_policy(tx)
            user = await tx.fetchval("SELECT name FROM users WHERE id = ?", user_id)
            if key_tags:  # the key's tags, as the policy in force now allows them
                try:
                    policy.check_tags(user, key_tags)
                except PolicyError as e:
                    raise NotAllowed(
                        f"the auth key carries tags that the policy no longer allows ({e}); "
                        "ask an admin for a new key"
                    ) from None
            existing = await tx.fetchrow(
                "SELECT id, user_id, hostname, tags, token_id, token_hash FROM nodes"
                " WHERE public_key = ?",
                public_key,
            )
            if existing is not None:
                if int(existing["user_id"]) != user_id:  # named without its id
                    raise Conflict(
                        "this public key belongs to another user's node; generate a new key "
                        "or have an admin delete that node"
                    )
                if not _holds(holder, existing["token_id"], existing["token_hash"]):
                    raise Conflict(key_taken(int(existing["id"])))
                node_id = int(existing["id"])
                tags = key_tags or load_list(existing["tags"])
                await check_machine(tx, policy, user, tags, machine)
                name = existing["hostname"]
                if name != hostname:
                    reserved = await reserved_names(tx, node_id, user)
                    name = await self._free_hostname(tx, user_id, hostname, node_id, reserved)
                await tx.execute(
                    "UPDATE nodes SET hostname = ?, tags = ?, ephemeral = ?, expires_at = NULL,"
                    " last_seen = ?, token_id = ?, token_hash = ?, machine_id = ? WHERE id = ?",
                    name,
                    dump_list(tags),
                    bool(key["ephemeral"]),
                    now,
                    token.id,
                    token.secret_hash,
                    None if machine is None else machine.id,
                    node_id,
                )
            else:
                await check_machine(tx, policy, user, key_tags, machine)
                if max_nodes:
                    await self._check_quota(tx, user_id, max_nodes)
                await self._release_name_of_departed(tx, user_id, hostname)
                name = await self._free_hostname(tx, user_id, hostname, None)
                node_id = int(
                    await tx.fetchval(
                        "INSERT INTO nodes (user_id, hostname, public_key, addr_index, endpoints,"
                        " tags, ephemeral, expires_at, last_seen, token_id, token_hash,"
                        " created_at, machine_id)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?, ?, ?, ?, ?) RETURNING id",
                        user_id,
                        name,
                        public_key,
                        await self._free_addr_index(tx),
                        "[]",
                        dump_list(key_tags),
                        bool(key["ephemeral"]),
                        now,
                        token.id,
                        token.secret_hash,
                        now,
                        None if machine is None else machine.id,
                    )
                )
            tx.changed([node_id])
            return await self._node(tx, node_id), token

    async def approve_in(
        self,
        tx: Tx,
        user_id: int,
        public_key: str,
        hostname: str,
        *,
        held: int | None,
        expires_at: float | None,
        max_nodes: int,
        machine_id: int | None = None,
    ) -> tuple[int, bool]:
        """Inside ``tx``: the node a person signed in as ``user_id`` approved for
        ``public_key`` (store/login_requests.py); its id, and whether it is new.

        The node ``held`` (proved by its token), else the key's node, stays the same node:
        same name and addresses, its key set, its expiry ``expires_at`` (one that never
        expires, an admin's choice or an auth key's node, keeps that). A node of another user
        is refused. A new one gets a free name and address and no usable token yet (the
        waiting node fetches its token). ``machine_id``: the machine the device proved when
        it asked (None: none), recorded on the node; the policy may require one."""
        now = self.clock()
        existing = await tx.fetchrow(
            "SELECT id, user_id, tags, expires_at FROM nodes WHERE public_key = ?", public_key
        )
        if held is not None:
            row = await tx.fetchrow(
                "SELECT id, user_id, tags, expires_at FROM nodes WHERE id = ?", held
            )
            if row is None:
                raise NotFound(
                    f"node {held}, which this device logged in as, was deleted; run wgpy up again"
                )
            if existing is not None and int(existing["id"]) != held:
                raise Conflict("this public key belongs to another node; generate a new key")
            existing = row
        if existing is not None:
            if int(existing["user_id"]) != user_id:
                raise Forbidden(
                    "this device's key belongs to another user's node; sign in as that user, "
                    "or generate a new key on the device, or have an admin delete that node"
                )
            node_id = int(existing["id"])
            await self._check_machine_of(tx, user_id, load_list(existing["tags"]), machine_id)
            await tx.execute(
                "UPDATE nodes SET public_key = ?, expires_at = ?, last_seen = ?, machine_id = ?"
                " WHERE id = ?",
                public_key,
                None if existing["expires_at"] is None else expires_at,  # never stays never
                now,
                machine_id,
                node_id,
            )
            tx.changed([node_id])
            return node_id, False
        await self._check_machine_of(tx, user_id, (), machine_id)
        if max_nodes:
            await self._check_quota(tx, user_id, max_nodes)
        await self._release_name_of_departed(tx, user_id, hostname)
        name = await self._free_hostname(tx, user_id, hostname, None)
        unusable = new_credential("node", self.rng)  # replaced when the node takes its token
        node_id = int(
            await tx.fetchval(
                "INSERT INTO nodes (user_id, hostname, public_key, addr_index, endpoints,"
                " tags, ephemeral, expires_at, last_seen, token_id, token_hash,"
                " created_at, machine_id)"
                " VALUES (?, ?, ?, ?, '[]', '[]', FALSE, ?, ?, ?, ?, ?, ?) RETURNING id",
                user_id,
                name,
                public_key,
                await self._free_addr_index(tx),
                expires_at,
                now,
                unusable.id,
                hash_secret(self.rng(32).hex()),
                now,
                machine_id,
            )
        )
        tx.changed([node_id])
        return node_id, True

    async def _check_machine_of(
        self, tx: Tx, user_id: int, tags: Sequence[str], machine_id: int | None
    ) -> None:
        _, policy = await load_policy(tx)
        user = await tx.fetchval("SELECT name FROM users WHERE id = ?", user_id)
        await check_machine(tx, policy, user, tags, machine_id)

    async def give_token_in(self, tx: Tx, node_id: int) -> Credential:
        """Inside ``tx``: a new token for ``node_id`` (the old one stops working)."""
        token = new_credential("node", self.rng)
        if not await tx.execute(
            "UPDATE nodes SET token_id = ?, token_hash = ? WHERE id = ?",
            token.id,
            token.secret_hash,
            node_id,
        ):
            raise NotFound(f"node {node_id} was deleted meanwhile; run wgpy up again")
        return token

    async def authenticate(self, token: Credential) -> Node:
        async with self.db.transaction() as tx:
            row = await tx.fetchrow(
                f"SELECT {NODE_COLUMNS}, n.token_hash FROM {NODES_JOIN} WHERE n.token_id = ?",
                token.id,
            )
        if row is None or not secret_matches(token, row["token_hash"]):
            raise Unauthorized(TOKEN_INVALID)
        return node_from(row)

    async def login(
        self,
        node_id: int,
        public_key: str,
        hostname: str,
        *,
        machine: MachineRecord | None = None,
    ) -> Node:
        """The node comes back with its token, maybe with a new key or hostname. A new key
        is a new proof: it needs a machine certificate (``machine``) when the policy requires
        one of the node, and the node keeps only the one it proves now (if any); with the
        same key the node keeps its machine unless it proves another."""
        now = self.clock()
        try:
            async with self.db.transaction() as tx:
                node = await self._node(tx, node_id)
                if node.expired(now):
                    raise Forbidden(NODE_EXPIRED)
                key_change = public_key != node.public_key
                if key_change and await tx.fetchval(
                    "SELECT id FROM nodes WHERE public_key = ?", public_key
                ):
                    raise Conflict("this public key belongs to another node; generate a new key")
                machine_id = node.machine_id
                if key_change or machine is not None:
                    _, policy = await load_policy(tx)
                    await check_machine(tx, policy, node.user, node.tags, machine)
                    machine_id = None if machine is None else machine.id
                name = node.hostname
                if hostname != node.hostname:
                    reserved = await reserved_names(tx, node_id, node.user)
                    name = await self._free_hostname(tx, node.user_id, hostname, node_id, reserved)
                await tx.execute(
                    "UPDATE nodes SET public_key = ?, hostname = ?, last_seen = ?, machine_id = ?"
                    " WHERE id = ?",
                    public_key,
                    name,
                    now,
                    machine_id,
                    node_id,
                )
                if (public_key, name, machine_id) != (
                    node.public_key,
                    node.hostname,
                    node.machine_id,
                ):
                    tx.changed([node_id])
                return await self._node(tx, node_id)
        except IntegrityConflict:
            raise Conflict("another node took this key or hostname meanwhile; try again") from None

    async def set_endpoints(self, node_id: int, endpoints: tuple[str, ...]) -> Node:
        now = self.clock()
        async with self.db.transaction() as tx:
            node = await self._node(tx, node_id)
            if node.expired(now):
                raise Forbidden(NODE_EXPIRED)
            await tx.execute(
                "UPDATE nodes SET endpoints = ?, last_seen = ? WHERE id = ?",
                dump_list(endpoints),
                now,
                node_id,
            )
            if endpoints != node.endpoints:
                tx.changed([node_id])
            return await self._node(tx, node_id)

    async def logout(self, node_id: int) -> None:
        """The token stops working; an ephemeral node is deleted, another one expires."""
        now = self.clock()
        async with self.db.transaction() as tx:
            if not await tx.execute("DELETE FROM nodes WHERE id = ? AND ephemeral", node_id):
                await tx.execute(
                    "UPDATE nodes SET token_id = NULL, token_hash = NULL, last_seen = ?,"
                    " expires_at = CASE WHEN expires_at IS NOT NULL AND expires_at <= ?"
                    " THEN expires_at ELSE ? END WHERE id = ?",
                    now,
                    now,
                    now,
                    node_id,
                )
            tx.changed([node_id])
            await elect_in(tx, now)  # deleted or expired: another router may take over

    # ------------------------------------------------------------------------------------
    # Admin

    async def get(self, node_id: int) -> Node:
        async with self.db.transaction() as tx:
            return await self._node(tx, node_id)

    async def all(self, user: str | None = None) -> list[Node]:
        async with self.db.transaction() as tx:
            if user is None:
                rows = await tx.fetch(f"{NODES_FROM} ORDER BY n.id")
            else:
                await user_id_of(tx, user)
                rows = await tx.fetch(f"{NODES_FROM} WHERE u.name = ? ORDER BY n.id", user)
        return [node_from(r) for r in rows]

    async def by_id(self, ids: Sequence[int]) -> list[Node]:
        """The nodes among ``ids`` that exist."""
        found: list[Node] = []
        async with self.db.transaction() as tx:
            for start in range(0, len(ids), _CHUNK):
                chunk = list(ids[start : start + _CHUNK])
                rows = await tx.fetch(f"{NODES_FROM} WHERE n.id IN ({placeholders(chunk)})", *chunk)
                found.extend(node_from(r) for r in rows)
        return found

    async def expire(self, node_id: int) -> Node:
        now = self.clock()
        async with self.db.transaction() as tx:
            node = await self._node(tx, node_id)
            if not node.expired(now):
                await tx.execute("UPDATE nodes SET expires_at = ? WHERE id = ?", now, node_id)
                tx.changed([node_id])
                await elect_if_routers(tx, [node_id], now)
            return await self._node(tx, node_id)

    async def set_expiry(self, node_id: int, expires_at: float | None) -> Node:
        """When the node's key expires (None: never, as for a server); a time past makes it
        expired at once, as :meth:`expire` does."""
        async with self.db.transaction() as tx:
            node = await self._node(tx, node_id)
            if expires_at != node.expires_at:
                await tx.execute(
                    "UPDATE nodes SET expires_at = ? WHERE id = ?", expires_at, node_id
                )
                tx.changed([node_id])
                await elect_if_routers(tx, [node_id], self.clock())
            return await self._node(tx, node_id)

    async def delete(self, node_id: int) -> None:
        async with self.db.transaction() as tx:
            if not await tx.execute("DELETE FROM nodes WHERE id = ?", node_id):
                raise NotFound(f"there is no node {node_id}")
            tx.changed([node_id])
            # its routes went with it (ON DELETE CASCADE): another router may take over
            await elect_in(tx, self.clock())

    async def rename(self, node_id: int, hostname: str) -> Node:
        try:
            async with self.db.transaction() as tx:
                node = await self._node(tx, node_id)
                if hostname != node.hostname:
                    await tx.execute(
                        "UPDATE nodes SET hostname = ? WHERE id = ?", hostname, node_id
                    )
                    tx.changed([node_id])
                return await self._node(tx, node_id)
        except IntegrityConflict:
            raise Conflict(
                f'user "{node.user}" already has a node named "{hostname}"; pick another name'
            ) from None

    async def set_tags(self, node_id: int, tags: tuple[str, ...]) -> Node:
        async with self.db.transaction() as tx:
            node = await self._node(tx, node_id)
            _, policy = await load_policy(tx)
            try:
                policy.check_tags(node.user, tags)
            except PolicyError as e:
                raise BadRequest(f"tags: {e}") from None
            if tags != node.tags:
                await tx.execute("UPDATE nodes SET tags = ? WHERE id = ?", dump_list(tags), node_id)
                tx.changed([node_id])
            return await self._node(tx, node_id)

    # ------------------------------------------------------------------------------------

    async def _node(self, tx: Tx, node_id: int) -> Node:
        row = await tx.fetchrow(f"{NODES_FROM} WHERE n.id = ?", node_id)
        if row is None:
            raise NotFound(f"there is no node {node_id}")
        return node_from(row)

    async def _check_quota(self, tx: Tx, user_id: int, max_nodes: int) -> None:
        """Forbidden if the user already has ``max_nodes`` nodes. The no-op update locks the
        user's row (PostgreSQL), so concurrent registrations of one user count in turn."""
        await tx.execute("UPDATE users SET name = name WHERE id = ?", user_id)
        count = int(await tx.fetchval("SELECT COUNT(*) FROM nodes WHERE user_id = ?", user_id))
        if count >= max_nodes:
            name = await tx.fetchval("SELECT name FROM users WHERE id = ?", user_id)
            raise NotAllowed(
                f'user "{name}" already has {count} nodes, the most this server allows per '
                "user; delete unused nodes (wgpy admin nodes delete ID), or ask the server's "
                "operator to raise --max-nodes-per-user"
            )

    async def _release_name_of_departed(self, tx: Tx, user_id: int, hostname: str) -> None:
        """A node that logged out (no token) can never come back, its key not even with an
        auth key: a new node of its user that asks for its name gets it, and the departed
        one (kept for the admin to see) takes the next free suffix. So `wgpy logout` then
        `wgpy up` is "laptop" again, not laptop-1, laptop-2, ... Its policy rights stay with
        it (selectors mean node ids); setting the policy again resolves the name anew."""
        departed = await tx.fetchval(
            "SELECT id FROM nodes WHERE user_id = ? AND hostname = ? AND token_id IS NULL",
            user_id,
            hostname,
        )
        if departed is not None:
            renamed = await self._free_hostname(
                tx, user_id, hostname, int(departed), frozenset([hostname])
            )
            await tx.execute("UPDATE nodes SET hostname = ? WHERE id = ?", renamed, departed)
            tx.changed([int(departed)])

    async def _free_hostname(
        self,
        tx: Tx,
        user_id: int,
        wanted: str,
        node_id: int | None,
        reserved: frozenset[str] = frozenset(),
    ) -> str:
        """``wanted``, or ``wanted-1``, ``wanted-2``, ... whichever the user's other nodes
        do not have and is not ``reserved``."""
        rows = await tx.fetch(  # every candidate starts so (a suffix is at most 13 characters)
            "SELECT hostname FROM nodes WHERE user_id = ? AND id <> ? AND hostname LIKE ?",
            user_id,
            -1 if node_id is None else node_id,
            wanted[: HOSTNAME_MAX - 13] + "%",
        )
        taken = {r["hostname"] for r in rows} | reserved
        name, n = wanted, 0
        while name in taken:
            n += 1
            suffix = f"-{n}"
            name = wanted[: HOSTNAME_MAX - len(suffix)] + suffix
        return name

    async def _free_addr_index(self, tx: Tx) -> int:
        """The next address never handed out (a counter, so a deleted node's address is not
        reused soon); once the pool's end is reached, the lowest free one. Never one of
        RESERVED_ADDR_INDEXES (the resolver's service addresses)."""
        index = 0
        while index == 0 or index in RESERVED_ADDR_INDEXES:
            index = int(
                await tx.fetchval(
                    "UPDATE counters SET value = value + 1 WHERE name = 'addr_index'"
                    " RETURNING value"
                )
            )
        if index <= MAX_ADDR_INDEX:
            return index
        if not await tx.fetchval("SELECT id FROM nodes WHERE addr_index = 1"):
            return 1
        reserved = sorted(RESERVED_ADDR_INDEXES)
        gap = await tx.fetchval(
            "SELECT MIN(a.addr_index) + 1 FROM nodes a WHERE a.addr_index < ?"
            f" AND a.addr_index + 1 NOT IN ({placeholders(reserved)}) AND NOT EXISTS"
            " (SELECT 1 FROM nodes b WHERE b.addr_index = a.addr_index + 1)",
            MAX_ADDR_INDEX,
            *reserved,
        )
        if gap is None:
            raise Conflict("the overlay address pool is full; delete unused nodes")
        return int(gap)
