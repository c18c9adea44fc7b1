"""The store (wgpy/mesh/server/store/, db.py, migrations.py) against SQLite and PostgreSQL
alike: migrations, credentials, registration, addresses, hostnames, streams and replicas,
change notifications, and what the database holds (never a secret)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import AsyncIterator
from typing import Any

import pytest

from wgpy.mesh.server import migrations
from wgpy.mesh.server.auth import Credential, parse_credential
from wgpy.mesh.server.db import Change, DatabaseUnavailable
from wgpy.mesh.server.errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized
from wgpy.mesh.server.models import MAX_ADDR_INDEX, RESERVED_ADDR_INDEXES
from wgpy.mesh.server.store import Store, open_store
from wgpy.mesh.server.store.users import UserRepository

from .conftest import Database, new_public_key


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@contextlib.asynccontextmanager
async def opened(
    database: Database, replica: str = "r1", clock: Clock | None = None
) -> AsyncIterator[Store]:
    store = await open_store(
        state_dir=database.state_dir,
        database_url=database.database_url,
        replica=replica,
        clock=clock or Clock(),
    )
    try:
        yield store
    finally:
        await store.close()


async def new_key(store: Store, user: str = "alice", **options: Any) -> Credential:
    options = {"reusable": False, "ephemeral": False, "tags": (), "lifetime": 3600.0, **options}
    _, key = await store.preauth_keys.create(user, **options)
    return parse_credential(str(key), "auth")


async def test_migrations_are_recorded_and_applied_once(backend: str, database: Database) -> None:
    async with opened(database) as store:
        async with store.db.transaction() as tx:
            rows = await tx.fetch("SELECT version, name FROM schema_migrations")
        assert [r["version"] for r in rows] == [m.version for m in migrations.MIGRATIONS]
        assert await migrations.migrate(store.db, 0.0) == []
    async with opened(database) as store, store.db.transaction() as tx:  # a restart: nothing
        assert await tx.fetchval("SELECT COUNT(*) FROM schema_migrations") == len(
            migrations.MIGRATIONS
        )


async def test_a_newer_schema_is_refused(backend: str, database: Database) -> None:
    async with opened(database) as store, store.db.transaction() as tx:
        await tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
            migrations.LATEST + 1,
            "from the future",
            0.0,
        )
    with pytest.raises(DatabaseUnavailable, match="newer than this wgpy knows"):
        async with opened(database):
            pass


async def test_replicas_migrate_one_database_at_once(backend: str, database: Database) -> None:
    stores = await asyncio.gather(
        *(
            open_store(
                state_dir=database.state_dir, database_url=database.database_url, replica=f"r{i}"
            )
            for i in range(4)
        ),
        return_exceptions=True,
    )
    for store in stores:
        if not isinstance(store, BaseException):
            await store.close()
    assert [s for s in stores if isinstance(s, BaseException)] == []


async def test_a_repository_over_the_stores_database(backend: str, database: Database) -> None:
    """The store composes repositories over one database: one made beside them (as accounts
    or sessions will be) reads and writes the same rows, with its own clock."""
    clock = Clock()
    async with opened(database, clock=clock) as store:
        assert {store.users.db, store.nodes.db, store.policy.db, store.streams.db} == {store.db}
        beside = UserRepository(store.db, clock=lambda: 5.0)
        await beside.create("alice")
        await store.users.create("bob")
        assert [(u.name, u.created_at) for u in await store.users.all()] == [
            ("alice", 5.0),
            ("bob", clock.now),
        ]
        assert [u.name for u in await beside.all()] == ["alice", "bob"]


async def test_users(backend: str, database: Database) -> None:
    async with opened(database) as store:
        await store.users.create("alice")
        with pytest.raises(Conflict, match='there is already a user "alice"'):
            await store.users.create("alice")
        await store.users.create("bob")
        assert [u.name for u in await store.users.all()] == ["alice", "bob"]
        await store.users.delete("bob")
        with pytest.raises(NotFound):
            await store.users.delete("bob")


async def test_a_user_with_nodes_or_in_the_policy_stays(backend: str, database: Database) -> None:
    async with opened(database) as store:
        await store.users.create("alice")
        await store.users.create("bob")
        node, _ = await store.nodes.register(await new_key(store), new_public_key(), "laptop")
        with pytest.raises(Conflict, match='user "alice" still has 1 node'):
            await store.users.delete("alice")
        await store.policy.set({"acls": [{"action": "accept", "src": ["user:bob"], "dst": ["*"]}]})
        with pytest.raises(Conflict, match='the policy names user "bob"'):
            await store.users.delete("bob")
        await store.nodes.delete(node.id)
        await store.users.delete("alice")
        assert await store.preauth_keys.all() == []  # the user's keys went with them


async def test_one_off_reusable_expired_and_unknown_keys(backend: str, database: Database) -> None:
    clock = Clock()
    async with opened(database, clock=clock) as store:
        await store.users.create("alice")
        once = await new_key(store)
        await store.nodes.register(once, new_public_key(), "a")
        with pytest.raises(Forbidden, match="one-off key and was already used"):
            await store.nodes.register(once, new_public_key(), "b")
        again = await new_key(store, reusable=True)
        for name in "bcd":
            await store.nodes.register(again, new_public_key(), name)
        short = await new_key(store, lifetime=10.0)
        clock.now += 10
        with pytest.raises(Forbidden, match="expired"):
            await store.nodes.register(short, new_public_key(), "e")
        with pytest.raises(Unauthorized, match="not valid"):
            await store.nodes.register(
                Credential("auth", "0" * 16, once.secret), new_public_key(), "f"
            )
        with pytest.raises(Unauthorized, match="not valid"):
            await store.nodes.register(
                Credential("auth", once.id, again.secret), new_public_key(), "f"
            )
        expired = await store.preauth_keys.expire(again.id)
        assert expired.expires_at == clock.now
        with pytest.raises(Forbidden, match="expired"):
            await store.nodes.register(again, new_public_key(), "g")
        assert len(await store.nodes.all()) == 4


async def test_a_one_off_key_registers_one_node_under_concurrency(
    backend: str, database: Database
) -> None:
    async with opened(database) as store:
        await store.users.create("alice")
        key = await new_key(store)
        results = await asyncio.gather(
            *(store.nodes.register(key, new_public_key(), f"n{i}") for i in range(8)),
            return_exceptions=True,
        )
        assert sum(not isinstance(r, BaseException) for r in results) == 1
        assert all(isinstance(r, Forbidden) for r in results if isinstance(r, BaseException))


async def test_concurrent_registrations_get_distinct_addresses_and_names(
    backend: str, database: Database
) -> None:
    async with opened(database, "r1") as one, opened(database, "r2") as two:
        await one.users.create("alice")
        key = await new_key(one, reusable=True)
        results = await asyncio.gather(
            *(store.nodes.register(key, new_public_key(), "laptop") for store in [one, two] * 10)
        )
        nodes = [node for node, _ in results]
        assert len({n.addr_index for n in nodes}) == 20
        assert sorted(n.hostname for n in nodes) == sorted(
            ["laptop"] + [f"laptop-{i}" for i in range(1, 20)]
        )


async def test_addresses_are_stable_across_relogin_and_restart(
    backend: str, database: Database
) -> None:
    async with opened(database) as store:
        await store.users.create("alice")
        key = await new_key(store, reusable=True)
        pub = new_public_key()
        first, token1 = await store.nodes.register(key, pub, "laptop")
        other, _ = await store.nodes.register(key, new_public_key(), "desktop")
        again, token2 = await store.nodes.register(
            key, pub, "laptop", token1
        )  # its holder: same node
        assert (again.id, again.ipv4, again.ipv6, again.hostname) == (
            first.id,
            first.ipv4,
            first.ipv6,
            "laptop",
        )
        with pytest.raises(Unauthorized):  # the new token replaced the old one
            await store.nodes.authenticate(parse_credential(str(token1), "node"))
        new_pub = new_public_key()
        moved = await store.nodes.login(again.id, new_pub, "laptop")  # a new node key, same token
        assert (moved.public_key, moved.ipv4) == (new_pub, first.ipv4)
        assert str(first.ipv4) == "100.64.0.1" and str(first.ipv6) == "fd7a:115c:a1e0::1"
        assert str(other.ipv4) == "100.64.0.2"
    async with opened(database) as store:
        node = await store.nodes.authenticate(parse_credential(str(token2), "node"))
        assert (node.id, node.ipv4, node.public_key) == (first.id, first.ipv4, new_pub)


async def test_a_deleted_nodes_address_is_not_reused_soon(backend: str, database: Database) -> None:
    async with opened(database) as store:
        await store.users.create("alice")
        key = await new_key(store, reusable=True)
        _a, _ = await store.nodes.register(key, new_public_key(), "a")
        b, _ = await store.nodes.register(key, new_public_key(), "b")
        await store.nodes.delete(b.id)
        c, _ = await store.nodes.register(key, new_public_key(), "c")
        assert c.addr_index == 3
        async with store.db.transaction() as tx:  # at the pool's end, gaps are used
            await tx.execute(
                "UPDATE counters SET value = ? WHERE name = 'addr_index'", MAX_ADDR_INDEX
            )
        d, _ = await store.nodes.register(key, new_public_key(), "d")
        assert d.addr_index == 2


async def test_the_resolvers_service_addresses_are_never_a_nodes(
    backend: str, database: Database
) -> None:
    """100.100.100.100 and fd7a:115c:a1e0::53 are every node's own resolver: the counter
    steps over their indexes, and so does the search for a gap at the pool's end."""
    v6_index, v4_index = sorted(RESERVED_ADDR_INDEXES)
    async with opened(database) as store:
        await store.users.create("alice")
        key = await new_key(store, reusable=True)
        for before in (v6_index - 1, v4_index - 1):
            async with store.db.transaction() as tx:
                await tx.execute("UPDATE counters SET value = ? WHERE name = 'addr_index'", before)
            node, _ = await store.nodes.register(key, new_public_key(), f"n{before}")
            assert node.addr_index == before + 2
        assert str(node.ipv4) == "100.100.100.101"
        assert node.ipv6 != ipaddress.IPv6Address("fd7a:115c:a1e0::53")
        async with store.db.transaction() as tx:  # a node just below a reserved index
            await tx.execute("UPDATE nodes SET addr_index = ? WHERE hostname = ?", 1, node.hostname)
            await tx.execute(
                "UPDATE nodes SET addr_index = ? WHERE hostname = ?",
                v6_index - 1,
                f"n{v6_index - 1}",
            )
            await tx.execute(
                "UPDATE counters SET value = ? WHERE name = 'addr_index'", MAX_ADDR_INDEX
            )
        gap, _ = await store.nodes.register(key, new_public_key(), "gap")
        assert gap.addr_index == 2


async def test_login_refuses_another_nodes_key_and_expired_nodes(
    backend: str, database: Database
) -> None:
    async with opened(database) as store:
        await store.users.create("alice")
        await store.users.create("bob")
        a, a_token = await store.nodes.register(
            await new_key(store, reusable=True), new_public_key(), "a"
        )
        b, b_token = await store.nodes.register(await new_key(store, "bob"), new_public_key(), "b")
        with pytest.raises(Conflict, match="belongs to another node"):
            await store.nodes.login(a.id, b.public_key, "a")
        assert (await store.nodes.get(a.id)).public_key == a.public_key
        # another user's node: refused without naming it (its id is none of alice's business)
        for holder in (None, a_token):
            with pytest.raises(Conflict, match="belongs to another user's node") as refused:
                await store.nodes.register(await new_key(store), b.public_key, "x", holder)
            assert str(b.id) not in refused.value.message
        with pytest.raises(Conflict, match="belongs to another user's node"):
            await store.nodes.register(await new_key(store), b.public_key, "x", b_token)
        await store.nodes.expire(a.id)
        with pytest.raises(Forbidden, match="expired"):
            await store.nodes.login(a.id, a.public_key, "a")
        with pytest.raises(Forbidden, match="expired"):
            await store.nodes.set_endpoints(a.id, ("192.0.2.1:1",))
        back, _ = await store.nodes.register(await new_key(store), a.public_key, "a", a_token)
        assert back.id == a.id and back.expires_at is None


async def test_rename_and_tags(backend: str, database: Database) -> None:
    async with opened(database) as store:
        await store.users.create("alice")
        key = await new_key(store, reusable=True)
        a, _ = await store.nodes.register(key, new_public_key(), "a")
        await store.nodes.register(key, new_public_key(), "b")
        with pytest.raises(Conflict, match='already has a node named "b"'):
            await store.nodes.rename(a.id, "b")
        assert (await store.nodes.rename(a.id, "c")).hostname == "c"
        assert (await store.nodes.set_tags(a.id, ("tag:web",))).tags == ("tag:web",)
        await store.policy.set({"acls": [], "tagOwners": {"tag:web": ["user:alice"]}})
        with pytest.raises(BadRequest, match='tag "tag:db" is not declared'):
            await store.nodes.set_tags(a.id, ("tag:db",))
        with pytest.raises(BadRequest, match='tag "tag:db" is not declared'):
            await new_key(store, tags=("tag:db",))
        with pytest.raises(NotFound):
            await store.nodes.rename(999, "x")


async def test_policy_versions_and_validation(backend: str, database: Database) -> None:
    async with opened(database) as store:
        assert (await store.policy.get()).version == 0
        await store.users.create("alice")
        with pytest.raises(BadRequest, match=r'acls\[0\].dst\[0\]: unknown user "bob"'):
            await store.policy.set(
                {"acls": [{"action": "accept", "src": ["*"], "dst": ["user:bob"]}]}
            )
        record = await store.policy.set({"acls": []})
        assert (record.version, record.document) == (1, {"acls": []})
        record = await store.policy.set(None)
        assert (record.version, record.document) == (2, None)


async def test_streams_online_state_and_ephemeral_nodes(backend: str, database: Database) -> None:
    async with opened(database) as store:
        await store.users.create("alice")
        node, _ = await store.nodes.register(
            await new_key(store, ephemeral=True), new_public_key(), "e"
        )
        await store.streams.opened(node.id, "s1")
        assert (await store.nodes.get(node.id)).online
        await store.streams.opened(node.id, "s2")  # a second stream takes over
        assert not await store.streams.closed(node.id, "s1")  # the old one ending changes nothing
        assert (await store.nodes.get(node.id)).online
        assert not await store.streams.delete_if_offline_ephemeral(node.id)
        assert await store.streams.closed(node.id, "s2")  # offline, and ephemeral
        assert await store.streams.delete_if_offline_ephemeral(node.id)
        with pytest.raises(NotFound):
            await store.nodes.get(node.id)


async def test_a_dead_replicas_nodes_go_offline(backend: str, database: Database) -> None:
    clock = Clock()
    async with opened(database, "r1", clock) as one, opened(database, "r2", clock) as two:
        await one.users.create("alice")
        key = await new_key(one, reusable=True)
        a, _ = await one.nodes.register(key, new_public_key(), "a")
        e, _ = await two.nodes.register(await new_key(one, ephemeral=True), new_public_key(), "e")
        await one.streams.heartbeat()
        await two.streams.heartbeat()
        await one.streams.opened(a.id, "s1")
        await two.streams.opened(e.id, "s2")
        clock.now += 20
        await one.streams.heartbeat()
        await one.streams.sweep(dead_after=30, ephemeral_idle=60)
        assert (await one.nodes.get(e.id)).online
        clock.now += 20  # r2 silent for 40 s
        await one.streams.heartbeat()
        await one.streams.sweep(dead_after=30, ephemeral_idle=60)
        assert not (await one.nodes.get(e.id)).online and (await one.nodes.get(a.id)).online
        clock.now += 61
        await one.streams.heartbeat()
        await one.streams.sweep(dead_after=30, ephemeral_idle=60)
        assert [n.id for n in await one.nodes.all()] == [a.id]  # the ephemeral node is gone
        await one.streams.leave()
        assert not (await two.nodes.get(a.id)).online


async def test_committed_changes_are_announced(backend: str, database: Database) -> None:
    async with opened(database) as store:
        seen: list[Change] = []
        store.db.on_change = seen.append
        await store.users.create("alice")
        node, _ = await store.nodes.register(await new_key(store), new_public_key(), "a")
        await store.nodes.set_endpoints(node.id, ("192.0.2.1:51820",))
        await store.nodes.set_endpoints(node.id, ("192.0.2.1:51820",))  # no change: no news
        await store.policy.set({"acls": []})
        with pytest.raises(NotFound):
            await store.nodes.delete(node.id + 1)  # rolled back: no news
        assert seen == [
            Change(frozenset({node.id})),
            Change(frozenset({node.id})),
            Change(policy=True),
        ]


async def test_the_database_holds_no_secret(backend: str, database: Database) -> None:
    async with opened(database) as store:
        await store.users.create("alice")
        _, api_key = await store.api_keys.create(None)
        _, auth_key = await store.preauth_keys.create(
            "alice", reusable=False, ephemeral=False, tags=(), lifetime=60
        )
        _, token = await store.nodes.register(
            parse_credential(str(auth_key), "auth"), new_public_key(), "a"
        )
        dump = []
        async with store.db.transaction() as tx:
            for table in ("users", "nodes", "preauth_keys", "api_keys", "policy", "replicas"):
                for row in await tx.fetch(f"SELECT * FROM {table}"):
                    dump.extend(str(v) for v in dict(row).values())
        text = "\n".join(dump)
        for secret in (api_key, auth_key, token):
            assert secret.secret not in text and str(secret) not in text
            assert secret.secret_hash in text
        await store.api_keys.check(parse_credential(str(api_key), "api"))
