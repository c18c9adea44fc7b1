"""Nodes' routes in the store (store/routes.py, migration 11) on SQLite and PostgreSQL: what a
node advertises replaces what it advertised, approvals outlive a pause in advertising, revoke
takes them back, one primary router per served prefix that keeps it while online and hands it
over when it goes offline, the changes announced, and the rows going with their node."""

from __future__ import annotations

import ipaddress

import pytest

from wgpy.mesh.server.db import Change
from wgpy.mesh.server.errors import Conflict, Forbidden, NotFound
from wgpy.mesh.server.models import Node
from wgpy.mesh.server.routes import Route, parse_routes
from wgpy.mesh.server.store import Store

from .conftest import Database, new_public_key
from .test_server_store import Clock, new_key, opened

net = ipaddress.ip_network
LAN = net("192.168.1.0/24")
LAN6 = net("fd00:1::/64")


async def node(store: Store, hostname: str) -> Node:
    if not [u for u in await store.users.all() if u.name == "alice"]:
        await store.users.create("alice")
    made, _ = await store.nodes.register(await new_key(store), new_public_key(), hostname)
    return made


def shown(routes: list[Route]) -> list[tuple[str, bool, bool, bool]]:
    return [(str(r.prefix), r.advertised, r.approved, r.primary) for r in routes]


async def test_advertising_replaces_the_list_and_keeps_approvals(
    backend: str, database: Database
) -> None:
    clock = Clock()
    async with opened(database, clock=clock) as store:
        a = await node(store, "router")
        await store.streams.opened(a.id, "s")  # online: it can be primary
        got = await store.routes.advertise(a.id, parse_routes(["fd00:1::/64", "192.168.1.0/24"]))
        assert shown(got) == [
            ("192.168.1.0/24", True, False, False),
            ("fd00:1::/64", True, False, False),
        ]
        assert got[0].advertised_at == clock.now and got[0].approved_at is None
        assert (got[0].node, got[0].user, got[0].node_id) == ("router", "alice", a.id)

        clock.now += 5
        got = await store.routes.approve(a.id, [LAN], by="admin")
        assert shown(got)[0] == ("192.168.1.0/24", True, True, True)  # the only router
        assert (got[0].approved_at, got[0].approved_by) == (clock.now, "admin")
        assert got[0].served and not got[1].served
        assert got[0].to_json()["approved_by"] == "admin"
        assert got[0].to_json()["prefix"] == "192.168.1.0/24"

        # the same list in another order: nothing changes, advertised_at kept
        clock.now += 5
        again = await store.routes.advertise(a.id, parse_routes(["192.168.1.0/24", "fd00:1::/64"]))
        assert again == got

        # the node stops advertising: the unapproved route goes, the approval stays
        clock.now += 5
        got = await store.routes.advertise(a.id, ())
        assert shown(got) == [("192.168.1.0/24", False, True, False)]
        assert not got[0].served
        # it comes back: served again without a new approval, advertised since now
        clock.now += 5
        got = await store.routes.advertise(a.id, [LAN])
        assert shown(got) == [("192.168.1.0/24", True, True, True)]
        assert got[0].advertised_at == clock.now
        assert got[0].approved_by == "admin"

        assert await store.routes.all() == got
        assert await store.routes.all(a.id) == got
        # offline: approved and advertised, but nobody's primary
        await store.streams.closed(a.id, "s")
        assert await store.routes.elect() == {}
        assert shown(await store.routes.all()) == [("192.168.1.0/24", True, True, False)]


async def test_approve_and_revoke_are_checked(backend: str, database: Database) -> None:
    async with opened(database) as store:
        a = await node(store, "router")
        await store.streams.opened(a.id, "s")
        await store.routes.advertise(a.id, [LAN, LAN6])
        with pytest.raises(Conflict, match=r"does not advertise 10\.0\.0\.0/8"):
            await store.routes.approve(a.id, [LAN, net("10.0.0.0/8")], by="admin")
        assert not any(r.approved for r in await store.routes.all(a.id))  # all or nothing
        with pytest.raises(NotFound, match=f"there is no node {a.id + 1}"):
            await store.routes.approve(a.id + 1, [LAN], by="admin")
        with pytest.raises(NotFound, match=r"has no approved route 192\.168\.1\.0/24"):
            await store.routes.revoke(a.id, [LAN])

        await store.routes.approve(a.id, [LAN, LAN6], by="admin")
        await store.routes.approve(a.id, [LAN], by="someone else")  # already: unchanged
        assert {r.approved_by for r in await store.routes.all(a.id)} == {"admin"}
        got = await store.routes.revoke(a.id, [LAN6])
        assert shown(got) == [
            ("192.168.1.0/24", True, True, True),
            ("fd00:1::/64", True, False, False),
        ]
        got = await store.routes.revoke(a.id, [])  # all of them
        assert shown(got) == [
            ("192.168.1.0/24", True, False, False),
            ("fd00:1::/64", True, False, False),
        ]
        # an approval of a route no longer advertised: revoking it deletes the row
        await store.routes.approve(a.id, [LAN], by="admin")
        await store.routes.advertise(a.id, [LAN6])
        assert shown(await store.routes.revoke(a.id, [LAN])) == [
            ("fd00:1::/64", True, False, False)
        ]


async def test_an_expired_node_cannot_advertise(backend: str, database: Database) -> None:
    clock = Clock()
    async with opened(database, clock=clock) as store:
        a = await node(store, "router")
        await store.nodes.expire(a.id)
        clock.now += 1
        with pytest.raises(Forbidden):
            await store.routes.advertise(a.id, [LAN])
        with pytest.raises(Forbidden):
            await store.routes.advertise(a.id + 1, [LAN])


async def test_one_primary_per_prefix_and_failover(backend: str, database: Database) -> None:
    clock = Clock()
    async with opened(database, clock=clock) as store:
        a = await node(store, "a")
        b = await node(store, "b")
        await store.streams.opened(a.id, "sa")
        await store.streams.opened(b.id, "sb")
        await store.routes.advertise(a.id, [LAN])
        clock.now += 1
        await store.routes.advertise(b.id, [LAN])
        await store.routes.approve(b.id, [LAN], by="admin")
        assert await store.routes.elect() == {LAN: b.id}  # the only approved one
        await store.routes.approve(a.id, [LAN], by="admin")
        # a advertised first, but b is primary and online: it keeps it
        assert await store.routes.elect() == {LAN: b.id}

        seen: list[Change] = []
        store.db.on_change = seen.append
        await store.streams.closed(b.id, "sb")  # b goes offline: a takes over
        assert await store.routes.elect() == {LAN: a.id}
        assert seen[-1] == Change(frozenset({a.id, b.id}))
        assert [r.primary for r in await store.routes.all()] == [True, False]
        await store.streams.opened(b.id, "sb2")  # b is back: a keeps it
        count = len(seen)
        assert await store.routes.elect() == {LAN: a.id}
        assert len(seen) == count  # nothing changed: no news

        await store.streams.closed(a.id, "sa")
        await store.streams.closed(b.id, "sb2")
        assert await store.routes.elect() == {}  # no router online: none
        assert not any(r.primary for r in await store.routes.all())

        # deleting a node takes its routes and primaries with it
        await store.streams.opened(a.id, "sa2")
        assert await store.routes.elect() == {LAN: a.id}
        await store.nodes.delete(a.id)
        assert [r.node_id for r in await store.routes.all()] == [b.id]
        assert await store.routes.elect() == {}


async def test_changes_of_what_is_served_are_announced(backend: str, database: Database) -> None:
    async with opened(database) as store:
        a = await node(store, "router")
        seen: list[Change] = []
        store.db.on_change = seen.append
        # advertised, not approved: nothing served, but the router's own map says so
        await store.routes.advertise(a.id, [LAN])
        assert seen == [Change(frozenset({a.id}))]
        await store.routes.approve(a.id, [LAN], by="admin")
        assert seen[-1] == Change(frozenset({a.id})) and len(seen) == 2
        await store.routes.advertise(a.id, [LAN])
        await store.routes.approve(a.id, [LAN], by="admin")
        assert len(seen) == 2  # the same again: no news
        await store.routes.advertise(a.id, [])
        assert seen[-1] == Change(frozenset({a.id}))
        await store.routes.revoke(a.id, [LAN])
        assert len(seen) == 4


async def test_the_policy_auto_approves_what_it_names(backend: str, database: Database) -> None:
    clock = Clock()
    async with opened(database, clock=clock) as store:
        a = await node(store, "router")
        await store.streams.opened(a.id, "s")
        await store.policy.set(
            {
                "acls": [],
                "autoApprovers": {"routes": {"192.168.0.0/16": ["user:alice"]}, "exitNode": []},
            }
        )
        got = await store.routes.advertise(a.id, [LAN, LAN6, net("0.0.0.0/0"), net("::/0")])
        assert shown(got) == [
            ("0.0.0.0/0", True, False, False),
            ("192.168.1.0/24", True, True, True),  # inside 192.168.0.0/16, user:alice
            ("::/0", True, False, False),
            ("fd00:1::/64", True, False, False),
        ]
        assert got[1].approved_by == "policy" and got[1].approved_at == clock.now
        assert not got[0].primary and got[0].exit  # exit routes: no primary

        # the policy changes: what it names now is approved at once, as Headscale does
        seen: list[Change] = []
        store.db.on_change = seen.append
        await store.policy.set(
            {"acls": [], "autoApprovers": {"routes": {}, "exitNode": ["user:alice"]}}
        )
        assert seen == [Change(frozenset({a.id}), policy=True)]
        got = await store.routes.all(a.id)
        assert [(str(r.prefix), r.approved_by) for r in got] == [
            ("0.0.0.0/0", "policy"),
            ("192.168.1.0/24", "policy"),  # an approval is not taken back by a policy
            ("::/0", "policy"),
            ("fd00:1::/64", None),
        ]


async def test_the_primary_follows_the_streams_without_being_asked(
    backend: str, database: Database
) -> None:
    """Streams opening and closing, a replica taken for dead, a node deleted: the primary is
    chosen again in the same transaction (store/primaries.py)."""
    clock = Clock()
    async with (
        opened(database, replica="r1", clock=clock) as one,
        opened(database, replica="r2", clock=clock) as two,
    ):
        a = await node(one, "a")
        b = await node(one, "b")
        for n in (a, b):
            await one.routes.advertise(n.id, [LAN])
            await one.routes.approve(n.id, [LAN], by="admin")
            clock.now += 1

        def primary(routes: list[Route]) -> list[int]:
            return [r.node_id for r in routes if r.primary]

        assert primary(await one.routes.all()) == []  # both offline
        await one.streams.opened(b.id, "sb")
        assert primary(await one.routes.all()) == [b.id]
        await two.streams.heartbeat()
        await two.streams.opened(a.id, "sa")
        assert primary(await one.routes.all()) == [b.id]  # b keeps it
        await one.streams.closed(b.id, "sb")
        assert primary(await one.routes.all()) == [a.id]
        await one.streams.opened(b.id, "sb2")
        # replica r2 (a's stream) is silent: taken for dead, a goes offline, b takes over
        await one.streams.heartbeat()
        clock.now += 31
        await one.streams.heartbeat()
        await one.streams.sweep(dead_after=30, ephemeral_idle=3600)
        assert not (await one.nodes.get(a.id)).online
        assert primary(await one.routes.all()) == [b.id]
        # b is deleted; a comes back online and takes over
        await two.streams.heartbeat()
        await two.streams.opened(a.id, "sa2")
        await one.nodes.delete(b.id)
        assert primary(await one.routes.all()) == [a.id]
        await two.streams.leave()  # r2 stops: a is offline
        assert primary(await one.routes.all()) == []


async def test_an_expired_or_logged_out_primary_hands_over(
    backend: str, database: Database
) -> None:
    clock = Clock()
    async with opened(database, clock=clock) as store:
        a, b = await node(store, "a"), await node(store, "b")
        for n in (a, b):
            await store.streams.opened(n.id, f"s{n.id}")
            await store.routes.advertise(n.id, [LAN])
            await store.routes.approve(n.id, [LAN], by="admin")
            clock.now += 1
        assert [r.node_id for r in await store.routes.all() if r.primary] == [a.id]
        await store.nodes.expire(a.id)
        assert [r.node_id for r in await store.routes.all() if r.primary] == [b.id]
        await store.nodes.set_expiry(a.id, None)  # a is back, b keeps it
        assert [r.node_id for r in await store.routes.all() if r.primary] == [b.id]
        await store.nodes.logout(b.id)  # b's token stops working and it expires
        assert [r.node_id for r in await store.routes.all() if r.primary] == [a.id]
