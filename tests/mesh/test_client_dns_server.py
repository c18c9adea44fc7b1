"""wgpy/dns/server.py on loopback: the node's resolver answers mesh names over UDP and TCP,
forwards other names to upstream resolvers (another DNSServer, authoritative for
example.com, stands in for the host's resolver), and drops what it must, counted.

The client is dnslib's (``DNSRecord.send``), run in a thread."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from dnslib import QTYPE, RCODE, DNSRecord

from wgpy.dns.names import Host, build_table
from wgpy.dns.ratelimit import RateLimiter
from wgpy.dns.resolver import DropReason, Resolver
from wgpy.dns.server import Address, DNSServer

MESH = [Host.of("laptop", "alice", "mesh.internal", (ipaddress.ip_address("100.64.0.1"),))]
WORLD = [Host.of("www", "site", "example.com", (ipaddress.ip_address("192.0.2.80"),))]


@asynccontextmanager
async def serving(server: DNSServer) -> AsyncIterator[Address]:
    address = await server.start("127.0.0.1", 0)
    try:
        yield address
    finally:
        await server.close()


def upstream() -> DNSServer:
    """An upstream that knows www.site.example.com and forwards nowhere."""
    return DNSServer(Resolver(build_table("example.com", WORLD)), [])


def node(upstreams: list[Address], **options: Any) -> DNSServer:
    return DNSServer(Resolver(build_table("mesh.internal", MESH)), upstreams, **options)


async def ask(address: Address, name: str, qtype: str = "A", *, tcp: bool = False) -> DNSRecord:
    query = DNSRecord.question(name, qtype)
    data = await asyncio.to_thread(query.send, address[0], address[1], tcp=tcp, timeout=5)
    answer = DNSRecord.parse(data)
    assert answer.header.id == query.header.id
    return answer


def silent_socket() -> socket.socket:
    """A UDP socket on loopback that never answers: a dead upstream."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return sock


async def test_mesh_names_over_udp_and_tcp() -> None:
    async with serving(node([])) as address:
        for tcp in (False, True):
            answer = await ask(address, "laptop.alice.mesh.internal", tcp=tcp)
            assert [str(rr.rdata) for rr in answer.rr] == ["100.64.0.1"]
            assert answer.header.aa == 1
        missing = await ask(address, "nobody.mesh.internal")
        assert missing.header.rcode == RCODE.NXDOMAIN


async def test_other_names_are_forwarded_over_udp_and_tcp() -> None:
    async with serving(upstream()) as far, serving(node([far])) as address:
        for tcp in (False, True):
            answer = await ask(address, "www.site.example.com", tcp=tcp)
            assert [str(rr.rdata) for rr in answer.rr] == ["192.0.2.80"]
            assert answer.header.aa == 1  # the upstream's answer, passed on as it was
        assert (await ask(address, "nope.example.com")).header.rcode == RCODE.NXDOMAIN


async def test_dead_upstream_is_skipped_then_servfail() -> None:
    dead = silent_socket()
    try:
        dead_address = dead.getsockname()
        async with serving(upstream()) as far:
            server = node([dead_address, far], timeout=1.0)
            async with serving(server) as address:
                answer = await ask(address, "www.site.example.com")
                assert [str(rr.rdata) for rr in answer.rr] == ["192.0.2.80"]
                assert server.upstream_failures == 1
        server = node([dead_address], timeout=0.2)
        async with serving(server) as address:
            answer = await ask(address, "www.site.example.com", "AAAA")
            assert answer.header.rcode == RCODE.SERVFAIL and answer.q.qtype == QTYPE.AAAA
            assert server.outstanding == 0
    finally:
        dead.close()


async def udp_send(address: Address, payloads: list[bytes], wait: float) -> list[bytes]:
    """Send ``payloads`` from one socket and collect what comes back within ``wait``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    got: list[bytes] = []
    try:
        for payload in payloads:
            await loop.sock_sendto(sock, payload, address)
        deadline = loop.time() + wait
        while (left := deadline - loop.time()) > 0:
            try:
                got.append(await asyncio.wait_for(loop.sock_recv(sock, 4096), left))
            except TimeoutError:
                break
    finally:
        sock.close()
    return got


async def test_flood_from_one_source_is_rate_limited() -> None:
    server = node([], limiter=RateLimiter(rate=0.001, burst=3))
    async with serving(server) as address:
        query = bytes(DNSRecord.question("laptop.mesh.internal").pack())
        replies = await udp_send(address, [query] * 10, wait=0.3)
        assert len(replies) == 3
        assert server.resolver.drops[DropReason.RATE_LIMITED] == 7


async def test_forwarding_is_bounded() -> None:
    dead = silent_socket()
    try:
        server = node([dead.getsockname()], timeout=1.0, max_outstanding=2)
        async with serving(server) as address:
            queries = [bytes(DNSRecord.question(f"q{i}.example.com").pack()) for i in range(5)]
            replies = await udp_send(address, queries, wait=1.5)
            assert server.resolver.drops[DropReason.BUSY] == 3
            assert [DNSRecord.parse(r).header.rcode for r in replies] == [RCODE.SERVFAIL] * 2
    finally:
        dead.close()


async def test_garbage_is_dropped_and_counted_and_service_goes_on() -> None:
    server = node([])
    async with serving(server) as address:
        response = bytes(DNSRecord.question("laptop.mesh.internal").reply().pack())
        replies = await udp_send(address, [b"\x00", b"\xff" * 40, response, b"x" * 600], 0.2)
        assert replies == []
        assert server.resolver.drops == {
            DropReason.MALFORMED: 2,
            DropReason.NOT_QUERY: 1,
            DropReason.OVERSIZED: 1,
        }
        answer = await ask(address, "laptop.alice.mesh.internal")
        assert [str(rr.rdata) for rr in answer.rr] == ["100.64.0.1"]


async def test_tcp_idle_and_dropped_queries_end_the_connection() -> None:
    server = node([], idle_timeout=0.2)
    async with serving(server) as address:
        reader, writer = await asyncio.open_connection(*address)
        assert await asyncio.wait_for(reader.read(), 2) == b""  # closed when idle
        writer.close()
        reader, writer = await asyncio.open_connection(*address)
        writer.write(struct.pack("!H", 3) + b"bad")
        assert await asyncio.wait_for(reader.read(), 2) == b""
        writer.close()
        assert server.resolver.drops[DropReason.MALFORMED] == 1
        assert server.connections == 0


async def test_tcp_connections_are_bounded() -> None:
    server = node([], max_connections=1)
    async with serving(server) as address:
        first_reader, first = await asyncio.open_connection(*address)
        query = bytes(DNSRecord.question("laptop.mesh.internal").pack())
        first.write(struct.pack("!H", len(query)) + query)
        (size,) = struct.unpack("!H", await first_reader.readexactly(2))
        assert DNSRecord.parse(await first_reader.readexactly(size)).rr
        reader, writer = await asyncio.open_connection(*address)
        assert await asyncio.wait_for(reader.read(), 2) == b""  # refused: one is open
        writer.close()
        first.close()
        assert server.resolver.drops[DropReason.BUSY] == 1


async def test_close_ends_open_tcp_connections() -> None:
    server = node([], idle_timeout=20.0)
    address = await server.start("127.0.0.1", 0)
    reader, writer = await asyncio.open_connection(*address)
    for _ in range(200):  # until the server has taken the connection (at most 2 s)
        if server.connections == 1:
            break
        await asyncio.sleep(0.01)
    assert server.connections == 1
    await asyncio.wait_for(server.close(), 5)
    assert await asyncio.wait_for(reader.read(), 2) == b""
    writer.close()


async def test_sources_it_does_not_allow_get_nothing_and_are_counted() -> None:
    """With ``allow`` (the node's: overlay and loopback sources), any other source is
    dropped over UDP, and its TCP connection closed before a query is read."""
    server = node([], allow=lambda source: source != "127.0.0.1")
    async with serving(server) as address:
        query = bytes(DNSRecord.question("laptop.alice.mesh.internal").pack())
        assert await udp_send(address, [query, query], wait=0.3) == []
        reader, writer = await asyncio.open_connection(*address)
        writer.write(struct.pack("!H", len(query)) + query)
        with contextlib.suppress(ConnectionResetError):  # closed with the query unread
            assert await reader.read(2) == b""  # closed
        writer.close()
        assert server.resolver.drops[DropReason.SOURCE] == 3
        assert server.resolver.answered == 0
