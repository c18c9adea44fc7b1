"""Routes in the map streams of a real server (SQLite and PostgreSQL): an approved prefix of
the primary router reaches the maps of the peers the policy lets use it, in ``routes`` and
``addresses``; the router's own NODE says what awaits approval; the standby takes over when
the primary goes offline or expires by time; a policy that denies the prefix takes it away."""

from __future__ import annotations

import time

from wgpy.mesh.server import ServerConfig

from .conftest import MapReader, Node, open_map, register, running

LAN = "192.168.1.0/24"


def routes_of(node: Node) -> object:
    return lambda m: m.peers.get(node.public_key, {}).get("routes", [])


def through(m: MapReader, node: Node) -> list[str]:
    return list(m.peers.get(node.public_key, {}).get("routes", []))


async def test_routes_reach_the_maps_and_move_to_the_standby(
    backend: str, config: ServerConfig
) -> None:
    async with running(config) as r:
        await r.admin.user("alice")
        await r.admin.user("bob")
        key = await r.admin.auth_key("alice", reusable=True)
        a, b, c = [await register(r.admin, key, name) for name in ("a", "b", "c")]
        ma, mb, mc = await open_map(a), await open_map(b), await open_map(c)
        await a.client.call("POST", "/node/routes", {"routes": [LAN]})
        await ma.until(lambda m: m.self_node["advertised_routes"] == [LAN])
        assert ma.self_node["approved_routes"] == []
        assert through(mc, a) == []  # not approved yet
        await r.admin.call("POST", f"/nodes/{a.id}/routes/approve", {"routes": [LAN]})
        await mc.until(lambda m: through(m, a) == [LAN])
        assert mc.peers[a.public_key]["addresses"][-1] == LAN
        await ma.until(lambda m: m.self_node["approved_routes"] == [LAN])
        await mb.until(lambda m: through(m, a) == [LAN])
        # a second router for the prefix is the standby: nothing through it yet
        await b.client.call("POST", "/node/routes", {"routes": [LAN]})
        await r.admin.call("POST", f"/nodes/{b.id}/routes/approve", {"routes": [LAN]})
        await mb.until(lambda m: m.self_node["approved_routes"] == [LAN])
        assert through(mc, b) == [] and through(mc, a) == [LAN]
        # the primary goes offline: the standby takes over in every map
        started = time.monotonic()
        ma.close()
        await mc.until(lambda m: through(m, b) == [LAN] and through(m, a) == [], timeout=5.0)
        print(f"failover in the map: {(time.monotonic() - started) * 1000:.0f} ms")
        # a policy that lets alice reach her nodes but not the LAN: the route is gone
        await r.admin.call(
            "PUT",
            "/policy",
            {"acls": [{"action": "accept", "src": ["user:alice"], "dst": ["user:alice"]}]},
        )
        await mc.until(lambda m: through(m, b) == [] and b.public_key in m.peers)
        await r.admin.call(
            "PUT",
            "/policy",
            {"acls": [{"action": "accept", "src": ["user:alice"], "dst": ["user:alice", LAN]}]},
        )
        await mc.until(lambda m: through(m, b) == [LAN])
        # the primary expires by time (its key's expiry): a comes back and takes over
        ma = await open_map(a)
        await r.server.store.nodes.set_expiry(b.id, time.time() + 0.5)
        await mc.until(lambda m: through(m, a) == [LAN] and b.public_key not in m.peers, 5.0)
        for m in (ma, mb, mc):
            m.close()
