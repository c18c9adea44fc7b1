"""Routes over HTTP on a real server (SQLite and PostgreSQL): a node advertises its list
(``POST /api/v1/node/routes``, checked), the admin lists, approves and revokes them (audit
events), and ``wgpy admin routes list|approve|revoke`` does the same on the command line."""

from __future__ import annotations

import asyncio
import json

from wgpy.cli.environment import ExitStatus
from wgpy.mesh.server import ServerConfig

from .conftest import register, running, with_
from .test_server_machines import wgpy


async def test_a_node_advertises_and_the_admin_approves(backend: str, config: ServerConfig) -> None:
    async with running(config) as r:
        admin = r.admin
        await admin.user("alice")
        router = await register(admin, await admin.auth_key("alice"), "router")
        other = await register(admin, await admin.auth_key("alice"), "laptop")

        reply = await router.client.call(
            "POST", "/node/routes", {"routes": ["fd00:1::/64", "192.168.1.0/24"]}
        )
        assert [(x["prefix"], x["advertised"], x["approved"]) for x in reply["routes"]] == [
            ("192.168.1.0/24", True, False),
            ("fd00:1::/64", True, False),
        ]
        # hostile or wrong lists: refused with the reason, nothing changed
        for body, words in [
            ({"routes": ["100.64.0.0/24"]}, "overlaps the mesh's own range"),
            ({"routes": ["192.168.1.7/24"]}, "advertise the network 192.168.1.0/24"),
            ({"routes": "10.0.0.0/8"}, "must be a list"),
            ({"routes": [f"10.{i}.0.0/16" for i in range(65)]}, "at most 64 routes"),
            ({"routes": [], "extra": 1}, 'unknown field "extra"'),
            ({}, 'missing field "routes"'),
        ]:
            message = await router.client.error("POST", "/node/routes", body, status=400)
            assert words in message
        await admin.using(None).error("POST", "/node/routes", {"routes": []}, status=401)

        listed = (await admin.call("GET", "/routes"))["routes"]
        assert [(x["node"], x["prefix"]) for x in listed] == [
            (router.id, "192.168.1.0/24"),
            (router.id, "fd00:1::/64"),
        ]
        assert (await admin.call("GET", f"/routes?node={other.id}"))["routes"] == []
        await admin.error("GET", "/routes?node=x", status=400)
        await admin.error("GET", "/routes?user=alice", status=400)
        await router.client.error("GET", "/routes", status=401)  # a node is no admin

        message = await admin.error(
            "POST", f"/nodes/{router.id}/routes/approve", {"routes": ["10.0.0.0/8"]}, status=409
        )
        assert "does not advertise 10.0.0.0/8" in message
        await admin.error("POST", f"/nodes/{router.id}/routes/approve", {"routes": []}, status=400)
        reply = await admin.call(
            "POST", f"/nodes/{router.id}/routes/approve", {"routes": ["192.168.1.0/24"]}
        )
        approved = reply["routes"][0]
        assert approved["approved"] and approved["approved_by"].startswith("admin (API key ")
        assert not approved["primary"]  # the router has no map stream open: offline

        reply = await admin.call("POST", f"/nodes/{router.id}/routes/revoke", {"routes": []})
        assert not any(x["approved"] for x in reply["routes"])
        await admin.error(
            "POST", f"/nodes/{router.id + 99}/routes/revoke", {"routes": []}, status=404
        )

        events = [
            (e["event"], e["result"], e["node"], e["detail"].split(" by ")[0])
            for e in (await admin.call("GET", "/audit"))["events"]
            if e["event"].startswith("nodes.routes")
        ]
        assert [e for e in events if e[1] == "ok"] == [
            ("nodes.routes.approve", "ok", router.id, "approved 192.168.1.0/24"),
            ("nodes.routes.revoke", "ok", router.id, "revoked all"),
        ]
        assert [e[:3] for e in events if e[1] != "ok"] == [
            ("nodes.routes.approve", "failed", router.id),  # 10.0.0.0/8: not advertised
            ("nodes.routes.approve", "failed", router.id),  # an empty list
            ("nodes.routes.revoke", "failed", router.id + 99),
        ]


async def test_admin_routes_on_the_command_line(config: ServerConfig) -> None:
    async with running(config) as r:
        admin = r.admin
        await admin.user("alice")
        router = await register(admin, await admin.auth_key("alice"), "router")
        await router.client.call(
            "POST", "/node/routes", {"routes": ["192.168.1.0/24", "0.0.0.0/0", "::/0"]}
        )
        cli = ("admin", "--server", r.url, "--api-key", str(admin.token))
        call = asyncio.to_thread

        run = await call(wgpy, *cli, "routes", "list")
        assert run.status == 0, run.err
        lines = run.out.splitlines()
        assert lines[0].split()[:4] == ["NODE", "NAME", "USER", "PREFIX"]
        assert [line.split()[3] for line in lines[1:]] == ["0.0.0.0/0", "192.168.1.0/24", "::/0"]
        assert all(line.split()[5] == "no" for line in lines[1:])  # none approved

        # an exit node: both default routes
        run = await call(wgpy, *cli, "routes", "approve", str(router.id), "0.0.0.0/0", "::/0")
        assert run.status == 0, run.err
        run = await call(wgpy, *cli, "routes", "list", "--json")
        routes = json.loads(run.out)
        assert [(x["prefix"], x["approved"], x["exit"]) for x in routes] == [
            ("0.0.0.0/0", True, True),
            ("192.168.1.0/24", False, False),
            ("::/0", True, True),
        ]
        run = await call(wgpy, *cli, "routes", "list", "--node", str(router.id + 1), "--json")
        assert run.status == ExitStatus.ERROR and f"there is no node {router.id + 1}" in run.err
        run = await call(wgpy, *cli, "routes", "list", "--node", str(router.id), "--json")
        assert json.loads(run.out) == routes
        run = await call(wgpy, *cli, "routes", "approve", str(router.id), "10.0.0.0/8")
        assert run.status == ExitStatus.ERROR and "does not advertise 10.0.0.0/8" in run.err
        run = await call(wgpy, *cli, "routes", "approve", str(router.id), "banana")
        assert run.status == ExitStatus.ERROR and '"banana" is not a prefix' in run.err
        run = await call(wgpy, *cli, "routes", "revoke", str(router.id), "::/0")
        assert run.status == 0, run.err
        run = await call(wgpy, *cli, "routes", "revoke", str(router.id))
        assert run.status == 0, run.err
        routes = (await admin.call("GET", "/routes"))["routes"]
        assert not any(x["approved"] for x in routes)


async def test_route_reports_are_rate_limited_per_node(config: ServerConfig) -> None:
    """They share the budget of endpoint and candidate reports (report_burst, report_rate)."""
    async with running(with_(config, report_burst=3.0, report_rate=0.01)) as r:
        admin = r.admin
        await admin.user("alice")
        router = await register(admin, await admin.auth_key("alice"), "router")
        other = await register(admin, await admin.auth_key("alice"), "other")
        for _ in range(3):
            await router.client.call("POST", "/node/routes", {"routes": ["10.1.0.0/16"]})
        message = await router.client.error(
            "POST", "/node/routes", {"routes": ["10.1.0.0/16"]}, status=429
        )
        assert message.startswith("too many endpoint, candidate or route reports from this node")
        await other.client.call("POST", "/node/routes", {"routes": []})  # another node's budget
