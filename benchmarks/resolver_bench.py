"""The node's resolver: how long an answer takes, seen from a client on loopback.

A benchmark, not a test: it prints figures and asserts nothing. The resolver (wgpy/dns/server.py)
runs in a thread with its own event loop, holding a table of --names mesh names; a blocking UDP
client in the main thread sends one query at a time and times each round trip:

- **mesh name**: an A query for a mesh name, answered by the resolver itself;
- **NXDOMAIN**: a name under the base domain that does not exist;
- **forwarded**: a name outside the base domain, forwarded to an upstream on loopback (a
  second resolver, authoritative for example.com) and passed back;
- **core only**: ``Resolver.handle`` on the query's bytes, no sockets.

    .venv/bin/python benchmarks/resolver_bench.py [--queries 2000] [--names 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import socket
import statistics
import threading
import time
from collections.abc import Callable

from dnslib import DNSRecord

from wgpy.dns.names import Host, build_table
from wgpy.dns.ratelimit import RateLimiter
from wgpy.dns.resolver import Resolver
from wgpy.dns.server import Address, DNSServer


def hosts(count: int) -> list[Host]:
    return [
        Host.of(
            f"host{i}", f"user{i % 10}", "mesh.internal", (ipaddress.IPv4Address(0x64400001 + i),)
        )
        for i in range(count)
    ]


def serve(names: int) -> tuple[Address, Resolver, Callable[[], None]]:
    """Start the upstream and the node's resolver in a thread; return the resolver's address,
    its core, and a function that stops both."""
    ready: dict[str, object] = {}
    started = threading.Event()
    loop = asyncio.new_event_loop()

    async def main() -> None:
        unlimited = RateLimiter(rate=1e9, burst=10**9)
        upstream = DNSServer(
            Resolver(
                build_table(
                    "example.com",
                    [Host.of("www", "site", "example.com", (ipaddress.IPv4Address("192.0.2.80"),))],
                )
            ),
            [],
            limiter=unlimited,
        )
        far = await upstream.start("127.0.0.1", 0)
        resolver = Resolver(build_table("mesh.internal", hosts(names)))
        node = DNSServer(resolver, [far], limiter=RateLimiter(rate=1e9, burst=10**9))
        ready["address"] = await node.start("127.0.0.1", 0)
        ready["resolver"] = resolver
        ready["stop"] = stop = asyncio.Event()
        started.set()
        await stop.wait()
        await node.close()
        await upstream.close()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    started.wait(10)
    stop_event = ready["stop"]
    assert isinstance(stop_event, asyncio.Event)

    def stop() -> None:
        loop.call_soon_threadsafe(stop_event.set)
        thread.join(10)

    address = ready["address"]
    resolver = ready["resolver"]
    assert isinstance(resolver, Resolver)
    return address, resolver, stop  # type: ignore[return-value]


def round_trips(address: Address, name: str, count: int) -> list[float]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(5)
    sock.connect(address)
    out = []
    try:
        for i in range(count):
            query = DNSRecord.question(name)
            query.header.id = i % 65536
            data = bytes(query.pack())
            start = time.perf_counter()
            sock.send(data)
            sock.recv(4096)
            out.append(time.perf_counter() - start)
    finally:
        sock.close()
    return out


def report(label: str, seconds: list[float]) -> None:
    ms = sorted(s * 1000 for s in seconds)
    p50 = statistics.median(ms)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    print(f"{label:12} n={len(ms):5}  p50 {p50:7.3f} ms  p99 {p99:7.3f} ms  max {ms[-1]:7.3f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--names", type=int, default=1000)
    args = parser.parse_args()
    address, resolver, stop = serve(args.names)
    try:
        round_trips(address, "host1.user1.mesh.internal", 100)  # warm up
        report("mesh name", round_trips(address, "host1.user1.mesh.internal", args.queries))
        report("NXDOMAIN", round_trips(address, "nobody.user1.mesh.internal", args.queries))
        report("forwarded", round_trips(address, "www.site.example.com", args.queries))
    finally:
        stop()
    data = bytes(DNSRecord.question("host1.user1.mesh.internal").pack())
    core = []
    for _ in range(args.queries):
        start = time.perf_counter()
        resolver.handle(data)
        core.append(time.perf_counter() - start)
    report("core only", core)


if __name__ == "__main__":
    main()
