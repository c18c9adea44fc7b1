"""Which routed prefixes a node's map gives it (server/route_access.py): what routers offer
(primary routes, exit routes of approved exit nodes), the policy's CIDR selectors applied to
the prefixes in both directions, the default policy; and the same from the store's routes on
SQLite and PostgreSQL, with failover between two routers."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from wgpy.mesh.server import policy as P
from wgpy.mesh.server.route_access import offered, routes_for, usable, use_table
from wgpy.mesh.server.routes import Route

from .conftest import Database
from .test_server_routes_store import node
from .test_server_store import Clock, opened

net = ipaddress.ip_network
LAN = net("192.168.1.0/24")
LAN6 = net("fd00:1::/64")
V4, V6 = net("0.0.0.0/0"), net("::/0")
USERS = ("alice", "bob", "carol")


@dataclass(frozen=True)
class N:
    id: int
    user: str
    tags: tuple[str, ...] = ()
    hostname: str = "h"

    @property
    def ip_addresses(self) -> tuple[Any, ...]:
        return (
            ipaddress.IPv4Address(int(ipaddress.IPv4Address("100.64.0.0")) + self.id),
            ipaddress.IPv6Address(int(ipaddress.IPv6Address("fd7a:115c:a1e0::")) + self.id),
        )


def route(
    node_id: int,
    prefix: Any,
    *,
    advertised: bool = True,
    approved: bool = True,
    primary: bool = False,
) -> Route:
    return Route(
        node_id,
        "h",
        "alice",
        prefix,
        1.0 if advertised else None,
        2.0 if approved else None,
        "admin" if approved else None,
        primary,
    )


def test_routers_offer_their_primary_routes_and_exit_routes() -> None:
    routes = [
        route(1, LAN, primary=True),
        route(2, LAN),  # a standby router: offers nothing for it
        route(2, LAN6, primary=True),
        route(3, V4),
        route(3, V6),  # an exit node
        route(4, V4),  # only one default route approved: not an exit node
        route(4, V6, approved=False),
        route(5, LAN6, advertised=False, primary=False),  # approved, no longer advertised
    ]
    assert offered(routes) == {1: (LAN,), 2: (LAN6,), 3: (V4, V6)}
    assert offered([]) == {}


POLICY = {
    "acls": [
        {"action": "accept", "src": ["user:alice"], "dst": ["192.168.0.0/16"]},
        {"action": "accept", "src": ["fd00::/8"], "dst": ["tag:db"]},
        {"action": "accept", "src": ["group:all"], "dst": ["tag:exit"]},  # a node, not subnets
        {"action": "accept", "src": ["user:carol"], "dst": ["*"]},
    ],
    "tagOwners": {"tag:db": ["user:bob"], "tag:exit": ["user:bob"]},
    "groups": {"group:all": ["alice", "bob", "carol"]},
}


def test_cidr_selectors_decide_who_gets_which_prefix() -> None:
    policy = P.parse_policy(POLICY, USERS)
    router, exit_node = N(1, "bob"), N(3, "bob", ("tag:exit",))
    offers = {1: (LAN, LAN6), 3: (V4, V6)}
    routers = [router, exit_node]
    # alice may reach 192.168.0.0/16: LAN only; tag:exit as dst lets her reach the node, not
    # use it as an exit node
    assert routes_for(policy, N(10, "alice"), routers, offers) == {1: (LAN,)}
    # a tag:db node is reachable from fd00::/8: hosts behind the router start traffic to it
    assert routes_for(policy, N(11, "bob", ("tag:db",)), routers, offers) == {1: (LAN6,)}
    # carol may reach everything: every route and the exit node
    assert routes_for(policy, N(12, "carol"), routers, offers) == {1: (LAN, LAN6), 3: (V4, V6)}
    # bob (untagged) nothing; a router never gets its own routes
    assert routes_for(policy, N(13, "bob"), routers, offers) == {}
    assert routes_for(policy, N(1, "carol"), routers, offers) == {3: (V4, V6)}


def test_an_exit_node_needs_the_default_route_itself() -> None:
    routers = [N(1, "bob"), N(3, "bob")]
    offers = {1: (LAN,), 3: (V4, V6)}
    internet4 = {"acls": [{"action": "accept", "src": ["user:alice"], "dst": ["0.0.0.0/0"]}]}
    policy = P.parse_policy(internet4, USERS)
    assert routes_for(policy, N(10, "alice"), routers, offers) == {1: (LAN,), 3: (V4,)}
    half = {"acls": [{"action": "accept", "src": ["user:alice"], "dst": ["0.0.0.0/1"]}]}
    policy = P.parse_policy(half, USERS)
    assert routes_for(policy, N(10, "alice"), routers, offers) == {}  # 192.168/16 not in it


def test_the_default_policy_gives_the_routes_of_ones_own_user() -> None:
    routers = [N(1, "alice"), N(2, "bob")]
    offers = {1: (LAN,), 2: (LAN6, V4, V6)}
    assert routes_for(P.DEFAULT, N(10, "alice"), routers, offers) == {1: (LAN,)}
    assert routes_for(P.DEFAULT, N(11, "bob"), routers, offers) == {2: (LAN6, V4, V6)}


def test_the_router_s_side_gives_what_routes_for_gives() -> None:
    """usable (from a node's masks, for a router's map of every peer) and routes_for agree,
    for every policy above, node and router."""
    policies = [
        P.DEFAULT,
        P.parse_policy(POLICY, USERS),
        P.parse_policy({"acls": [{"action": "accept", "src": ["*"], "dst": ["*"]}]}, USERS),
        P.parse_policy(
            {
                "acls": [
                    {"action": "accept", "src": ["user:alice"], "dst": ["0.0.0.0/0"]},
                    {"action": "accept", "src": ["192.168.1.7/32"], "dst": ["tag:db"]},
                    {"action": "accept", "src": ["user:bob"], "dst": ["0.0.0.0/1", "::/0"]},
                ],
                "tagOwners": {"tag:db": ["user:bob"]},
            },
            USERS,
        ),
    ]
    routers = [N(1, "bob"), N(2, "alice"), N(3, "bob", ("tag:exit",))]
    offers = {1: (LAN, LAN6), 2: (LAN, V4, V6), 3: (V4, V6)}
    nodes = [
        N(i, user, tags)
        for i, (user, tags) in enumerate(
            [(u, t) for u in USERS for t in ((), ("tag:db",), ("tag:exit",))], start=1
        )
    ]
    seen = set()
    for policy in policies:
        for router in routers:
            table = use_table(policy, offers[router.id])
            for n in nodes:
                expected = routes_for(policy, n, [router], offers).get(router.id, ())
                assert usable(policy, router, table, n, policy.masks(n)) == expected
                seen.add(len(expected))
    assert seen == {0, 1, 2, 3}  # the cases above give nothing, some and all


async def test_map_routes_from_the_store_and_failover(backend: str, database: Database) -> None:
    """Two routers for one LAN, one exit node, a viewer: the viewer gets the LAN behind the
    primary only, the exit routes once approved; the LAN moves to the other router when the
    primary's stream closes, and back to no one when both are offline."""
    clock = Clock()
    async with opened(database, clock=clock) as store:
        a, b, ex, viewer = [await node(store, h) for h in ("a", "b", "exit", "viewer")]
        for n in (a, b, ex, viewer):
            await store.streams.opened(n.id, f"s{n.id}")
        await store.routes.advertise(a.id, [LAN])
        clock.now += 1
        await store.routes.advertise(b.id, [LAN])
        await store.routes.advertise(ex.id, [V4, V6])
        await store.routes.approve(a.id, [LAN], by="admin")
        await store.routes.approve(b.id, [LAN], by="admin")
        await store.routes.approve(ex.id, [V4, V6], by="admin")

        nodes = {n.id: n for n in await store.nodes.all()}
        policy = P.parse_policy(
            {"acls": [{"action": "accept", "src": ["user:alice"], "dst": ["192.168.1.0/24"]}]},
            USERS,
        )

        async def seen() -> dict[int, tuple[Any, ...]]:
            offers = offered(await store.routes.all())
            return routes_for(policy, nodes[viewer.id], list(nodes.values()), offers)

        assert await seen() == {a.id: (LAN,)}  # a advertised first; the exit: not allowed
        await store.streams.closed(a.id, f"s{a.id}")
        await store.routes.elect()
        assert await seen() == {b.id: (LAN,)}
        await store.streams.opened(a.id, "back")
        await store.routes.elect()
        assert await seen() == {b.id: (LAN,)}  # b keeps it
        await store.streams.closed(b.id, f"s{b.id}")
        await store.streams.closed(a.id, "back")
        await store.routes.elect()
        assert await seen() == {}
        # a policy that lets alice reach everything: the exit node's routes too
        policy = P.parse_policy({"acls": [{"action": "accept", "src": ["*"], "dst": ["*"]}]}, USERS)
        assert await seen() == {ex.id: (V4, V6)}
