"""Several server replicas on one PostgreSQL database (LISTEN/NOTIFY on "changes"): a change
made through one reaches the streams of the others within a second; a dead replica's nodes
go offline; a replica that loses its notification connection catches up."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from wgpy.mesh.server import ServerConfig

from .conftest import Client, open_map, register, running

LIMIT = 1.0


@pytest.fixture
def backend() -> str:
    return "postgresql"


async def test_a_node_on_one_replica_sees_a_node_register_on_another(
    backend: str, config: ServerConfig
) -> None:
    async with running(config) as one, running(config) as two:
        assert one.server.replica != two.server.replica
        await one.admin.user("alice")
        a = await register(one.admin, await one.admin.auth_key("alice"), "a")
        m = await open_map(a)
        admin2 = Client(two.session, two.url, one.admin.token)  # one database: keys work anywhere
        b = await register(admin2, await admin2.auth_key("alice"), "b")
        times = {"join": await m.until(lambda m: b.public_key in m.peers)}
        mb = await open_map(Client(two.session, two.url, b.token))
        times["online"] = await m.until(lambda m: m.peers[b.public_key]["online"])
        await admin2.call("POST", f"/nodes/{b.id}/rename", {"hostname": "bee"})
        times["rename"] = await m.until(lambda m: m.peers[b.public_key]["hostname"] == "bee")
        await admin2.call("PUT", "/policy", {"acls": []})
        times["policy"] = await m.until(lambda m: not m.peers)
        await admin2.call("DELETE", "/policy")
        await m.until(lambda m: b.public_key in m.peers)
        await admin2.call("DELETE", f"/nodes/{b.id}")
        times["delete"] = await m.until(lambda m: b.public_key not in m.peers)
        print({k: f"{v * 1000:.0f} ms" for k, v in times.items()})
        assert max(times.values()) < LIMIT
        mb.close()
        m.close()


async def test_a_stream_moving_to_another_replica_ends_the_old_one(
    backend: str, config: ServerConfig
) -> None:
    async with running(config) as one, running(config) as two:
        await one.admin.user("alice")
        a = await register(one.admin, await one.admin.auth_key("alice"), "a")
        first = await open_map(a)
        second = await open_map(Client(two.session, two.url, a.token))
        started = time.monotonic()
        while await first.read(LIMIT) is not None:
            pass
        assert time.monotonic() - started < LIMIT
        await asyncio.sleep(0.1)
        nodes = (await one.admin.call("GET", "/nodes"))["nodes"]
        assert nodes[0]["online"] is True  # the old stream ending did not take the node offline
        second.close()


async def test_a_dead_replicas_nodes_go_offline(backend: str, config: ServerConfig) -> None:
    async with running(config) as one:
        await one.admin.user("alice")
        key = await one.admin.auth_key("alice", reusable=True)
        a, b = await register(one.admin, key, "a"), await register(one.admin, key, "b")
        m = await open_map(a)
        # A replica that holds b's stream, then dies without a word (no leave, no heartbeat).
        conn = await asyncpg.connect(config.database_url)
        try:
            await conn.execute(
                "INSERT INTO replicas (id, seen_at) VALUES ('ghost', $1)", time.time()
            )
            await conn.execute(
                "UPDATE nodes SET stream_id = 's', stream_replica = 'ghost' WHERE id = $1", b.id
            )
            await conn.execute(
                "SELECT pg_notify('changes', $1)", f'{{"r": "ghost", "n": [{b.id}], "p": false}}'
            )
        finally:
            await conn.close()
        await m.until(lambda m: m.peers[b.public_key]["online"])
        took = await m.until(
            lambda m: not m.peers[b.public_key]["online"], timeout=config.replica_timeout + 2
        )
        assert took < config.replica_timeout + 2 * config.heartbeat
        m.close()


async def test_a_replica_that_lost_its_notifications_catches_up(
    backend: str, config: ServerConfig
) -> None:
    async with running(config) as one, running(config) as two:
        await one.admin.user("alice")
        a = await register(one.admin, await one.admin.auth_key("alice", reusable=True), "a")
        m = await open_map(a)
        conn = await asyncpg.connect(config.database_url)
        try:
            killed = await conn.fetchval(
                "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()"
            )
        finally:
            await conn.close()
        assert killed == 2
        admin2 = Client(two.session, two.url, one.admin.token)
        b = await register(admin2, await admin2.auth_key("alice"), "b")
        await m.until(lambda m: b.public_key in m.peers, timeout=3.0)  # reconnect after 1 s
        c = await register(admin2, await admin2.auth_key("alice"), "c")
        assert await m.until(lambda m: c.public_key in m.peers) < LIMIT  # and listening again
        m.close()
