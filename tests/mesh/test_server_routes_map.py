"""Routes in the map streams of a real server (SQLite and PostgreSQL): an approved prefix of
the primary router reaches the maps of the peers the policy lets use it, in ``routes`` and
``addresses``; the router's own NODE says what awaits approval; the standby takes over when
the primary goes offline or expires by time; a policy that denies the prefix takes it away.
The router's own map says, in each PEER's ``routed_for``, what that peer may use through it
(the router's packet filter lets only that through)."""

from __future__ import annotations

import asyncio
import time

from wgpy.mesh.server import ServerConfig

from .conftest import MapReader, Node, open_map, register, running

LAN = "192.168.1.0/24"


def routes_of(node: Node) -> object:
    return lambda m: m.peers.get(node.public_key, {}).get("routes", [])


def through(m: MapReader, node: Node) -> list[str]:
    return list(m.peers.get(node.public_key, {}).get("routes", []))


def routed_for(m: MapReader, node: Node) -> list[str]:
    """What ``node`` may use through the node whose map ``m`` is."""
    return list(m.peers.get(node.public_key, {}).get("routed_for", []))


def upserted(m: MapReader, node: Node, since: int) -> bool:
    """Whether ``node`` came as a peer_upsert after the first ``since`` messages."""
    return any(
        x["type"] == "peer_upsert" and x["peer"]["public_key"] == node.public_key
        for x in m.messages[since:]
    )


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


async def test_an_approved_exit_node_is_flagged_without_default_routes(
    backend: str, config: ServerConfig
) -> None:
    async with running(config) as r:
        await r.admin.user("alice")
        key = await r.admin.auth_key("alice", reusable=True)
        exit_node, user = [await register(r.admin, key, name) for name in ("exit", "laptop")]
        m = await open_map(user)
        await exit_node.client.call("POST", "/node/routes", {"routes": ["0.0.0.0/0", "::/0"]})
        await r.admin.call(
            "POST", f"/nodes/{exit_node.id}/routes/approve", {"routes": ["0.0.0.0/0"]}
        )
        await asyncio.sleep(0.2)  # one of the two: not an exit node yet
        await m.until(lambda m: exit_node.public_key in m.peers)
        assert "exit_node" not in m.peers[exit_node.public_key]
        await r.admin.call("POST", f"/nodes/{exit_node.id}/routes/approve", {"routes": ["::/0"]})
        await m.until(lambda m: m.peers[exit_node.public_key].get("exit_node") is True)
        peer = m.peers[exit_node.public_key]
        assert "routes" not in peer and all(not a.endswith("/0") for a in peer["addresses"])
        await r.admin.call("POST", f"/nodes/{exit_node.id}/routes/revoke", {"routes": []})
        await m.until(lambda m: "exit_node" not in m.peers[exit_node.public_key])
        m.close()


async def test_a_router_s_map_says_what_each_peer_may_use_through_it(
    backend: str, config: ServerConfig
) -> None:
    async with running(config) as r:
        await r.admin.user("alice")
        await r.admin.user("bob")
        # bob's node (c) may reach alice's nodes, not the LAN behind her router
        acls: list[dict[str, object]] = [
            {"action": "accept", "src": ["user:alice"], "dst": ["user:alice", LAN]},
            {"action": "accept", "src": ["user:bob"], "dst": ["user:alice"]},
        ]
        await r.admin.call("PUT", "/policy", {"acls": acls})
        key = await r.admin.auth_key("alice", reusable=True)
        a, b = [await register(r.admin, key, name) for name in ("a", "b")]
        c = await register(r.admin, await r.admin.auth_key("bob"), "c")
        ma, mb = await open_map(a), await open_map(b)
        await ma.until(lambda m: {b.public_key, c.public_key} <= set(m.peers))
        await a.client.call("POST", "/node/routes", {"routes": [LAN]})
        await ma.until(lambda m: m.self_node["advertised_routes"] == [LAN])
        assert routed_for(ma, b) == routed_for(ma, c) == []  # not approved yet
        seen = len(ma.messages)
        await r.admin.call("POST", f"/nodes/{a.id}/routes/approve", {"routes": [LAN]})
        await ma.until(lambda m: routed_for(m, b) == [LAN])
        assert upserted(ma, b, seen)
        assert c.public_key in ma.peers and routed_for(ma, c) == []  # denied to c
        assert all("routed_for" not in p for p in mb.peers.values())  # b routes nothing
        # a policy that gives c the LAN too: c's entry in the router's map says so
        seen = len(ma.messages)
        acls[1]["dst"] = ["user:alice", LAN]
        await r.admin.call("PUT", "/policy", {"acls": acls})
        await ma.until(lambda m: routed_for(m, c) == [LAN])
        assert upserted(ma, c, seen) and routed_for(ma, b) == [LAN]
        # revoked: nobody may use it any more
        await r.admin.call("POST", f"/nodes/{a.id}/routes/revoke", {"routes": []})
        await ma.until(lambda m: all("routed_for" not in p for p in m.peers.values()))
        for m in (ma, mb):
            m.close()


async def test_an_exit_node_s_map_gives_the_default_routes_to_its_users(
    backend: str, config: ServerConfig
) -> None:
    async with running(config) as r:
        await r.admin.user("alice")
        await r.admin.user("bob")
        # alice's nodes may use exit nodes; bob's node only reaches alice's nodes
        acls: list[dict[str, object]] = [
            {"action": "accept", "src": ["user:alice"], "dst": ["*"]},
            {"action": "accept", "src": ["user:bob"], "dst": ["user:alice"]},
        ]
        await r.admin.call("PUT", "/policy", {"acls": acls})
        key = await r.admin.auth_key("alice", reusable=True)
        exit_node, laptop = [await register(r.admin, key, name) for name in ("exit", "laptop")]
        other = await register(r.admin, await r.admin.auth_key("bob"), "other")
        m = await open_map(exit_node)
        default_routes = ["0.0.0.0/0", "::/0"]
        await exit_node.client.call("POST", "/node/routes", {"routes": default_routes})
        await r.admin.call(
            "POST", f"/nodes/{exit_node.id}/routes/approve", {"routes": default_routes}
        )
        await m.until(lambda m: routed_for(m, laptop) == default_routes)
        assert other.public_key in m.peers and routed_for(m, other) == []
        # the policy lets bob's node out too
        acls[1]["dst"] = ["user:alice", *default_routes]
        await r.admin.call("PUT", "/policy", {"acls": acls})
        await m.until(lambda m: routed_for(m, other) == default_routes)
        # one default route revoked: not an exit node, nobody may use it as one
        await r.admin.call("POST", f"/nodes/{exit_node.id}/routes/revoke", {"routes": ["::/0"]})
        await m.until(lambda m: all("routed_for" not in p for p in m.peers.values()))
        m.close()
