"""The in-memory index (wgpy/mesh/server/netmap.py): deltas applied to every viewer's map
always give the map a full rebuild would, and a change costs little with 1,000 viewers."""

from __future__ import annotations

import ipaddress
import json
import time
from dataclasses import replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from wgpy.mesh.server import policy as P
from wgpy.mesh.server.models import Node
from wgpy.mesh.server.netmap import Batch, NetIndex
from wgpy.mesh.server.routes import Route

from .support import NOW, USERS, node

TAGS = ("tag:web", "tag:ci")
POLICIES = [
    P.DEFAULT,
    P.parse_policy({"acls": []}),
    P.parse_policy({"acls": [{"action": "accept", "src": ["*"], "dst": ["*"]}]}),
    P.parse_policy(
        {
            "acls": [
                {"action": "accept", "src": ["user:alice"], "dst": ["tag:web"]},
                {"action": "accept", "src": ["tag:ci"], "dst": ["user:bob", "100.64.0.2"]},
            ],
            "tagOwners": {"tag:web": ["user:alice"], "tag:ci": ["user:bob"]},
        }
    ),
    # routes: bob reaches one LAN (and alice's nodes), tag:ci uses exit nodes
    P.parse_policy(
        {
            "acls": [
                {"action": "accept", "src": ["user:bob"], "dst": ["192.168.1.0/24", "user:alice"]},
                {"action": "accept", "src": ["tag:ci"], "dst": ["0.0.0.0/0", "::/0", "*"]},
            ],
            "tagOwners": {"tag:ci": ["user:bob"]},
        }
    ),
]
LAN = "192.168.1.0/24"
ROUTE_SETS = [(), (LAN,), (LAN, "10.9.0.0/16"), ("0.0.0.0/0", "::/0"), (LAN, "0.0.0.0/0", "::/0")]


def route(n: Node, prefix: str, *, approved: bool = True, primary: bool = True) -> Route:
    """Node ``n``'s advertised ``prefix``, approved (and primary) unless told otherwise."""
    return Route(
        node_id=n.id,
        node=n.hostname,
        user=n.user,
        prefix=ipaddress.ip_network(prefix),
        advertised_at=NOW,
        approved_at=NOW if approved else None,
        approved_by="admin" if approved else None,
        primary=primary and approved,
    )


def peers_of(index: NetIndex, viewer: int) -> dict[str, dict[str, Any]]:
    return {p["public_key"]: p for p in json.loads(index.full(viewer, NOW))["peers"]}


def apply_messages(view: dict[str, dict[str, Any]], lines: list[bytes]) -> None:
    for line in lines:
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        m = json.loads(line)
        if m["type"] == "peer_upsert":
            view[m["peer"]["public_key"]] = m["peer"]
        elif m["type"] == "peer_remove":
            assert m["public_key"] in view, "removing a peer the viewer does not have"
            del view[m["public_key"]]
        elif m["type"] == "peer_online":
            assert m["public_key"] in view, "an online state for a peer the viewer does not have"
            view[m["public_key"]] = {**view[m["public_key"]], "online": m["online"]}
        else:
            assert m["type"] == "self", f"unexpected delta {m['type']}"  # not about peers


node_changes = st.fixed_dictionaries(
    {},
    optional={
        "user": st.sampled_from(USERS),
        "tags": st.lists(st.sampled_from(TAGS), max_size=2, unique=True).map(tuple),
        "endpoints": st.sampled_from([(), ("192.0.2.1:1",), ("192.0.2.2:2", "[2001:db8::1]:3")]),
        "expires_at": st.sampled_from([None, NOW - 1, NOW + 100]),
        "stream_id": st.sampled_from([None, "s1"]),
        "hostname": st.sampled_from(["x", "y"]),
        "public_key": st.sampled_from(["A" * 43 + "=", "B" * 43 + "="]),
    },
)
operation = st.one_of(
    st.tuples(st.just("upsert"), st.integers(1, 8), node_changes),
    st.tuples(st.just("remove"), st.integers(1, 8), st.just({})),
    st.tuples(st.just("policy"), st.integers(0, len(POLICIES) - 1), st.just({})),
    st.tuples(st.just("routes"), st.integers(1, 8), st.integers(0, len(ROUTE_SETS) - 1)),
)


@settings(max_examples=200, deadline=None)
@given(batches=st.lists(st.lists(operation, min_size=1, max_size=4), min_size=1, max_size=6))
def test_deltas_give_every_viewer_the_full_map(
    batches: list[list[tuple[str, int, Any]]],
) -> None:
    index = NetIndex()
    current: dict[int, Node] = {}
    routed: dict[int, tuple[str, ...]] = {}
    version = 0
    views: dict[int, dict[str, dict[str, Any]]] = {}
    for batch in batches:
        upserts: dict[int, Node] = {}
        removed: set[int] = set()
        policy = None
        routes = None
        for kind, n, changes in batch:
            if kind == "routes":
                routed[n] = ROUTE_SETS[changes]
                routes = [
                    route(current.get(i) or node(i), prefix)
                    for i, prefixes in sorted(routed.items())
                    for prefix in prefixes
                ]
            elif kind == "policy":
                version += 1
                policy = (POLICIES[n], version)
            elif kind == "remove":
                current.pop(n, None)
                upserts.pop(n, None)
                removed.add(n)
            else:
                if changes.get("public_key") in {
                    x.public_key for i, x in current.items() if i != n
                }:
                    changes = {k: v for k, v in changes.items() if k != "public_key"}
                current[n] = replace(current.get(n) or node(n), **changes)
                upserts[n] = current[n]
                removed.discard(n)
        result = index.apply(
            upserts.values(), removed=removed, policy=policy, now=NOW, routes=routes
        )
        deltas = index.deltas(result, list(views), NOW)
        for viewer in list(views):
            if viewer not in index.entries:
                del views[viewer]
                continue
            apply_messages(views[viewer], deltas.get(viewer, []))
        for viewer in index.entries:
            views.setdefault(viewer, peers_of(index, viewer))
        for viewer, view in views.items():
            assert view == peers_of(index, viewer), f"viewer {viewer} after {batch}"


def test_a_self_message_when_the_node_itself_changes() -> None:
    index = NetIndex()
    index.apply([node(1), node(2)], now=NOW)
    batch = index.apply([node(1, expires_at=NOW - 1)], now=NOW)
    messages = {
        v: [json.loads(line) for line in lines]
        for v, lines in index.deltas(batch, [1, 2], NOW).items()
    }
    assert [m["type"] for m in messages[1]] == ["self", "peer_remove"]
    assert messages[1][0]["self"]["expired"] is True
    assert [m["type"] for m in messages[2]] == ["peer_remove"]
    assert json.loads(index.full(1, NOW))["peers"] == []


def test_the_map_names_every_node() -> None:
    index = NetIndex(
        P.parse_policy({"acls": [{"action": "accept", "src": ["*"], "dst": ["*"]}]}),
        base_domain="corp.example",
    )
    index.apply([node(1), node(2, "Bob@Example.com"), node(3, hostname="???")], now=NOW)
    full = json.loads(index.full(1, NOW))
    assert full["self"]["name"] == "h1.alice.corp.example"
    names = {p["hostname"]: p.get("name") for p in full["peers"]}
    # no usable label: no name
    assert names == {"h2": "h2.bob-example-com.corp.example", "???": None}
    # a renamed node reaches every viewer with its new name, itself in its self message
    batch = index.apply([node(2, "Bob@Example.com", hostname="Build Box")], now=NOW)
    deltas = index.deltas(batch, [1, 2], NOW)
    (upsert,) = [json.loads(line) for line in deltas[1]]
    assert upsert["peer"]["name"] == "build-box.bob-example-com.corp.example"
    (self_message,) = [json.loads(line) for line in deltas[2]]
    assert self_message["self"]["name"] == "build-box.bob-example-com.corp.example"
    assert NetIndex().base_domain == "mesh.internal"


def test_a_change_reaches_1000_viewers() -> None:
    index = NetIndex()
    population = [
        node(i, USERS[i % 2], tags=(TAGS[i % 3 % 2],) if i % 3 else ()) for i in range(1, 1001)
    ]
    index.apply(population, now=NOW)
    viewers = list(index.entries)
    timings = {}

    started = time.perf_counter()
    batch = index.apply([replace(population[10], endpoints=("192.0.2.9:9",))], now=NOW)
    out = index.deltas(batch, viewers, NOW)
    timings["endpoints"] = time.perf_counter() - started
    assert len(out) == 500  # the other 499 nodes of that user, and the node itself (self)
    assert json.loads(out[11][0])["type"] == "self"

    started = time.perf_counter()
    batch = index.apply([node(2000, "alice")], now=NOW)
    out = index.deltas(batch, viewers, NOW)
    timings["join"] = time.perf_counter() - started
    assert len(out) == 500

    started = time.perf_counter()
    batch = index.apply([], policy=(POLICIES[3], 1), now=NOW)
    out = index.deltas(batch, [*viewers, 2000], NOW)
    timings["policy"] = time.perf_counter() - started

    started = time.perf_counter()
    for v in viewers:
        index.full(v, NOW)
    timings["1000 full maps"] = time.perf_counter() - started

    # a router among them: its approval, then a change elsewhere with the router in place
    index.apply([], policy=(P.DEFAULT, 2), now=NOW)
    started = time.perf_counter()
    batch = index.apply([], now=NOW, routes=[route(population[4], LAN)])
    out = index.deltas(batch, viewers, NOW)
    timings["route approved"] = time.perf_counter() - started
    assert len(out) == 500  # alice's other nodes get the route, the router its self NODE
    started = time.perf_counter()
    batch = index.apply(
        [replace(population[10], endpoints=("192.0.2.7:7",))],
        now=NOW,
        routes=[route(population[4], LAN)],
    )
    out = index.deltas(batch, viewers, NOW)
    timings["endpoints, with a router"] = time.perf_counter() - started
    assert len(out) == 500
    print({k: f"{v * 1000:.1f} ms" for k, v in timings.items()})
    # (speed is judged by benchmarks on this shared machine, not asserted here)


def test_a_router_s_routes_reach_the_viewers_the_policy_lets_use_them() -> None:
    policy = POLICIES[4]
    index = NetIndex(policy)
    router, bob, carol, ci = node(1), node(2, "bob"), node(3, "carol"), node(4, "bob")
    ci = replace(ci, tags=("tag:ci",))
    index.apply([router, bob, carol, ci], now=NOW)
    assert "routes" not in peers_of(index, 2)[router.public_key]
    # approved and primary: bob gets the LAN in the router's allowed IPs; tag:ci reaches
    # everything, the LAN too; carol is not in the policy for it
    batch = index.apply([], now=NOW, routes=[route(router, LAN), route(router, "10.9.0.0/16")])
    deltas = index.deltas(batch, [1, 2, 3, 4], NOW)
    (upsert,) = [json.loads(line) for line in deltas[2]]
    assert upsert["peer"]["routes"] == [LAN]
    assert upsert["peer"]["addresses"][2:] == [LAN]
    assert "exit_node" not in upsert["peer"]
    assert peers_of(index, 4)[router.public_key]["routes"] == ["10.9.0.0/16", LAN]
    assert 3 not in deltas  # carol: nothing through the router, and it is not her peer
    # the router hears what each peer may use through it (routed_for, for its packet filter)
    router_lines = [json.loads(line) for line in deltas[1]]
    assert [m["type"] for m in router_lines] == ["self", "peer_upsert", "peer_upsert"]
    assert {m["peer"]["hostname"]: m["peer"]["routed_for"] for m in router_lines[1:]} == {
        "h2": [LAN],
        "h4": ["10.9.0.0/16", LAN],
    }
    self_message = router_lines[0]["self"]
    assert self_message["advertised_routes"] == ["10.9.0.0/16", LAN]
    assert self_message["approved_routes"] == ["10.9.0.0/16", LAN]
    # an exit node: only tag:ci may use it, and the default routes stay out of addresses
    batch = index.apply([], now=NOW, routes=[route(router, "0.0.0.0/0"), route(router, "::/0")])
    deltas = index.deltas(batch, [1, 2, 3, 4], NOW)
    peer = peers_of(index, 4)[router.public_key]
    assert peer["exit_node"] is True and "routes" not in peer
    assert all(not a.endswith("/0") for a in peer["addresses"])
    (upsert,) = [json.loads(line) for line in deltas[2]]
    assert "routes" not in upsert["peer"] and "exit_node" not in upsert["peer"]
    # an advertised route not yet approved: only in the router's own NODE
    batch = index.apply([], now=NOW, routes=[route(router, LAN, approved=False)])
    deltas = index.deltas(batch, [1, 2, 3, 4], NOW)
    full = json.loads(index.full(1, NOW))["self"]
    assert (full["advertised_routes"], full["approved_routes"]) == ([LAN], [])
    assert all("routes" not in p for p in peers_of(index, 2).values())


def test_a_primary_moving_to_the_standby_is_one_upsert_for_each() -> None:
    index = NetIndex()
    a, b, c = node(1), node(2), node(3)
    index.apply([a, b, c], now=NOW, routes=[route(a, LAN), route(b, LAN, primary=False)])
    assert peers_of(index, 3)[a.public_key]["routes"] == [LAN]
    assert peers_of(index, 1)[c.public_key]["routed_for"] == [LAN]
    batch = index.apply([], now=NOW, routes=[route(a, LAN, primary=False), route(b, LAN)])
    out = index.deltas(batch, [1, 2, 3], NOW)
    deltas = [json.loads(line) for line in out[3]]
    moved = {m["peer"]["hostname"]: m["peer"].get("routes") for m in deltas}
    assert moved == {"h1": None, "h2": [LAN]}
    # the routers' own maps: c may now use the LAN through b, no longer through a
    upserts = {
        v: {
            m["peer"]["hostname"]: m["peer"]
            for m in map(json.loads, out[v])
            if m["type"] == "peer_upsert"
        }
        for v in (1, 2)
    }
    assert "routed_for" not in upserts[1]["h3"] and upserts[1]["h2"]["routes"] == [LAN]
    assert upserts[2]["h3"]["routed_for"] == [LAN] and upserts[2]["h1"]["routed_for"] == [LAN]
    # the same routes again: nothing to send
    batch = index.apply([], now=NOW, routes=[route(a, LAN, primary=False), route(b, LAN)])
    assert index.deltas(batch, [1, 2, 3], NOW) == {}


def test_a_router_s_map_says_what_each_peer_may_use_through_it() -> None:
    # bob reaches the LAN (and alice's nodes), carol only alice's nodes, tag:ci everything
    policy = P.parse_policy(
        {
            "acls": [
                {"action": "accept", "src": ["user:bob"], "dst": [LAN, "user:alice"]},
                {"action": "accept", "src": ["user:carol"], "dst": ["user:alice"]},
                {"action": "accept", "src": ["tag:ci"], "dst": ["*"]},
            ],
            "tagOwners": {"tag:ci": ["user:bob"]},
        }
    )
    index = NetIndex(policy, 1)
    router, bob, carol, bob2 = node(1), node(2, "bob"), node(3, "carol"), node(5, "bob")
    ci = replace(node(4, "bob"), tags=("tag:ci",))
    routes = [route(router, LAN), route(router, "0.0.0.0/0"), route(router, "::/0")]
    index.apply([router, bob, carol, ci, bob2], now=NOW, routes=routes)
    mine = peers_of(index, 1)
    assert mine[bob.public_key]["routed_for"] == [LAN]
    assert "routed_for" not in mine[carol.public_key]  # a peer, but the LAN is denied to her
    assert mine[ci.public_key]["routed_for"] == ["0.0.0.0/0", LAN, "::/0"]  # an exit node too
    # only a router's map has it; a router's PEER in another map keeps routes/exit_node
    assert all("routed_for" not in p for v in (2, 3, 4, 5) for p in peers_of(index, v).values())
    assert peers_of(index, 4)[router.public_key]["exit_node"] is True

    def router_upserts(batch: Batch) -> dict[str, list[str] | None]:
        lines = [json.loads(line) for line in index.deltas(batch, [1, 2, 3, 4, 5], NOW)[1]]
        return {
            m["peer"]["hostname"]: m["peer"].get("routed_for")
            for m in lines
            if m["type"] == "peer_upsert"
        }

    # a peer's tags change: the router hears of it
    batch = index.apply([replace(bob2, tags=("tag:ci",))], now=NOW, routes=routes)
    assert router_upserts(batch) == {"h5": ["0.0.0.0/0", LAN, "::/0"]}
    # a policy that takes the LAN from bob: one upsert, for bob (carol and tag:ci unchanged)
    lan_denied = P.parse_policy(
        {
            "acls": [
                {"action": "accept", "src": ["user:bob", "user:carol"], "dst": ["user:alice"]},
                {"action": "accept", "src": ["tag:ci"], "dst": ["*"]},
            ],
            "tagOwners": {"tag:ci": ["user:bob"]},
        }
    )
    batch = index.apply([], policy=(lan_denied, 2), now=NOW, routes=routes)
    assert router_upserts(batch) == {"h2": None}
    # the exit node revoked: the tag:ci nodes keep only the LAN
    batch = index.apply([], now=NOW, routes=routes[:1])
    assert router_upserts(batch) == {"h4": [LAN], "h5": [LAN]}
    # the LAN revoked too: the router routes nothing, and no PEER in its map says otherwise
    batch = index.apply([], now=NOW, routes=[route(router, LAN, approved=False)])
    assert router_upserts(batch) == {"h4": None, "h5": None}
    assert all("routed_for" not in p for p in peers_of(index, 1).values())
    # approved again: back in the same flush
    batch = index.apply([], now=NOW, routes=routes[:1])
    assert router_upserts(batch) == {"h4": [LAN], "h5": [LAN]}
