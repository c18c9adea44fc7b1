"""The node as a subnet router (wgpy/mesh/client/subnets.py) against the real server: it
forwards (a recording runner stands in for sysctl and nft), advertises, withdraws with an
empty list, and a list the server refuses stops ``wgpy up`` with the server's sentence."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from pathlib import Path

import pytest

from wgpy.mesh.client.api import NodeClient
from wgpy.mesh.client.node import MeshError
from wgpy.mesh.client.subnets import SubnetRoutes
from wgpy.mesh.server import ServerConfig

from .conftest import register, running
from .test_client_forwarder import Host, _Log
from .test_client_real_server import Node


async def test_advertises_forwards_and_withdraws(config: ServerConfig) -> None:
    async with running(config) as r:
        await r.admin.user("alice")
        node = await register(r.admin, await r.admin.auth_key("alice"), "router")
        host = Host()
        host.values = {"net.ipv4.ip_forward": "0", "net.ipv6.conf.all.forwarding": "0"}
        async with NodeClient(r.url, token=node.token) as client:
            routes = SubnetRoutes("wgpy0", ["192.168.1.0/24"], snat=True, log=_Log(), run=host)
            await routes.start(client)
            assert host.values["net.ipv4.ip_forward"] == "1"
            assert host.values["net.ipv6.conf.all.forwarding"] == "0"  # no IPv6 route
            assert any(c[0] == "nft" for c in host.commands)
            listed = (await r.admin.call("GET", f"/routes?node={node.id}"))["routes"]
            assert [(x["prefix"], x["approved"]) for x in listed] == [("192.168.1.0/24", False)]
            await routes.close()
            assert host.values["net.ipv4.ip_forward"] == "0"
            # the next start without routes withdraws them, and touches nothing on the host
            quiet = Host()
            await SubnetRoutes("wgpy0", [], snat=True, log=_Log(), run=quiet).start(client)
            assert quiet.commands == []
            assert (await r.admin.call("GET", f"/routes?node={node.id}"))["routes"] == []


async def test_a_start_without_routes_puts_back_what_a_killed_router_left(
    config: ServerConfig, tmp_path: Path
) -> None:
    async with running(config) as r:
        await r.admin.user("alice")
        node = await register(r.admin, await r.admin.auth_key("alice"), "router")
        host = Host()
        host.values = {"net.ipv4.ip_forward": "0"}
        record = tmp_path / "forwarding.json"
        async with NodeClient(r.url, token=node.token) as client:
            killed = SubnetRoutes("wgpy0", ["10.1.0.0/16"], snat=True, log=_Log(), run=host,
                                  record=record)  # fmt: skip
            await killed.start(client)  # ... and never closed
            assert host.values["net.ipv4.ip_forward"] == "1"
            await SubnetRoutes("wgpy0", [], snat=True, log=_Log(), run=host, record=record).start(
                client
            )
            assert host.values["net.ipv4.ip_forward"] == "0" and not record.exists()
            assert host.commands[-2][-1].endswith("delete table inet wgpy-nat\n")


def test_a_refused_list_stops_the_node_with_the_server_s_reason(
    config: ServerConfig, tmp_path: Path
) -> None:
    async def main() -> None:
        async with running(config) as r:
            await r.admin.user("alice")
            a = Node(r.url, tmp_path, "a", await r.admin.auth_key("alice"))
            # refused before the host is touched: no forwarding turned on here
            a.config = dataclasses.replace(a.config, advertise_routes=("100.64.0.0/24",))
            words = "refused the advertised routes: the route 100.64.0.0/24 overlaps the mesh's"
            with pytest.raises(MeshError, match=re.escape(words)):
                await a.start()

    asyncio.run(asyncio.wait_for(main(), 20))
