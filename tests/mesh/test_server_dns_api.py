"""Split DNS domains (wgpy/mesh/server/dns_api.py, `wgpy server --dns-domain`): parsed and
checked, told to nodes by ``GET /api/v1/node/dns`` on a real server, read by the node
(wgpy/mesh/client/dns.py split_domains) and used by its resolver (wgpy/dns/server.py routes:
a name under a split domain goes to that domain's resolvers, on loopback here)."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest
from dnslib import DNSRecord

from wgpy.dns.names import Host, build_table
from wgpy.dns.resolver import Resolver
from wgpy.dns.server import DNSServer
from wgpy.mesh.client.dns import split_domains
from wgpy.mesh.server import ServerConfig
from wgpy.mesh.server.dns_api import check_dns_domains, parse_dns_domain

from .conftest import register, running, with_
from .support import run


def test_a_domain_and_its_resolvers() -> None:
    assert parse_dns_domain("Corp.Example.=10.1.0.53, 10.1.0.54,10.1.0.53", "mesh.internal") == (
        "corp.example",
        ("10.1.0.53", "10.1.0.54"),
    )
    assert parse_dns_domain("lab=fd00::53", "mesh.internal") == ("lab", ("fd00::53",))
    bad = {
        "corp.example": "names no resolver",
        "corp.example=": "names no resolver",
        "corp.example=resolver.example": "is not an IP address of a resolver",
        "corp.example=0.0.0.0": "cannot be a resolver",
        "bad name=10.0.0.1": "is not a DNS name",
        "mesh.internal=10.0.0.1": "base domain",
        "x.mesh.internal=10.0.0.1": "base domain",
        "c.example=10.0.0.1,10.0.0.2,10.0.0.3,10.0.0.4": "at most three",
    }
    for text, message in bad.items():
        with pytest.raises(ValueError, match=message):
            parse_dns_domain(text, "mesh.internal")
    with pytest.raises(ValueError, match="given twice"):
        check_dns_domains([("a.example", ("10.0.0.1",)), ("a.example", ("10.0.0.2",))])


def test_the_server_refuses_a_bad_dns_domain_as_a_usage_error() -> None:
    status, _, err = run("server", "--dns-domain", "corp.example")
    assert status == 2
    assert err.startswith("wgpy server: --dns-domain: 'corp.example' names no resolver;")


async def test_nodes_are_told_the_split_domains(config: ServerConfig) -> None:
    domains = (("corp.example", ("10.1.0.53",)), ("lab", ("fd00::53", "10.2.0.53")))
    async with running(with_(config, dns_domains=domains)) as r:
        await r.admin.user("alice")
        node = await register(r.admin, await r.admin.auth_key("alice"), "a")
        reply = await node.client.call("GET", "/node/dns")
        assert reply == {
            "base_domain": "mesh.internal",
            "domains": {"corp.example": ["10.1.0.53"], "lab": ["fd00::53", "10.2.0.53"]},
        }
        assert split_domains(reply, "mesh.internal") == {
            "corp.example": [("10.1.0.53", 53)],
            "lab": [("fd00::53", 53), ("10.2.0.53", 53)],
        }
        await node.client.using(None).error("GET", "/node/dns", status=401)


def test_the_node_refuses_unusable_split_domains() -> None:
    assert split_domains({"base_domain": "mesh.internal"}, "mesh.internal") == {}
    for bad in (
        {"domains": ["corp.example"]},
        {"domains": {"corp.example": "10.1.0.53"}},
        {"domains": {"corp.example": []}},
        {"domains": {"corp.example": ["not an address"]}},
        {"domains": {"a.mesh.internal": ["10.1.0.53"]}},
        {"domains": {"bad name": ["10.1.0.53"]}},
        {"domains": {f"d{i}.example": ["10.0.0.1"] for i in range(33)}},
    ):
        with pytest.raises(ValueError):
            split_domains(bad, "mesh.internal")


async def test_a_split_domain_goes_to_its_own_resolver() -> None:
    """Two upstreams on loopback, each authoritative for one domain: the node's resolver
    sends corp.example names to the split domain's, every other name to the default."""

    def authority(base: str, address: str) -> DNSServer:
        host = Host.of("www", "site", base, (ipaddress.ip_address(address),))
        return DNSServer(Resolver(build_table(base, [host])), [])

    corp, world = authority("corp.example", "10.1.0.80"), authority("example.com", "192.0.2.80")
    corp_at, world_at = await corp.start("127.0.0.1", 0), await world.start("127.0.0.1", 0)
    node = DNSServer(
        Resolver(build_table("mesh.internal", [])),
        [world_at],
        routes={"corp.example": [corp_at]},
    )
    address = await node.start("127.0.0.1", 0)
    try:
        assert node.upstreams_for("www.site.corp.example") == [corp_at]
        assert node.upstreams_for("corp.example") == [corp_at]
        assert node.upstreams_for("notcorp.example") == [world_at]
        for name, expected in (
            ("www.site.corp.example", "10.1.0.80"),
            ("www.site.example.com", "192.0.2.80"),
        ):
            query = DNSRecord.question(name)
            data = await asyncio.to_thread(query.send, *address, timeout=5)
            assert [str(rr.rdata) for rr in DNSRecord.parse(data).rr] == [expected]
    finally:
        for server in (node, corp, world):
            await server.close()
