"""The resolver's asyncio shell: UDP and TCP on one address, answers from the sans-IO
:class:`~wgpy.dns.resolver.Resolver`, other names forwarded to upstream resolvers.

Bounds: at most ``max_outstanding`` forwarded queries at a time (more are dropped as BUSY);
each upstream is tried in turn with ``timeout`` seconds each, then the client gets SERVFAIL;
each source is rate limited (:mod:`wgpy.dns.ratelimit`), and with ``allow`` only the sources
it accepts are answered (the rest are dropped as SOURCE, a TCP connection closed); a TCP
connection is closed after ``idle_timeout`` seconds without a query, and at most
``max_connections`` are open. The clock is ``loop.time()``.

Forwarding sends the client's own bytes (its EDNS size included) from a fresh socket (a new
random source port per query) and returns the upstream's bytes once their id and question
match; a UDP answer with TC is passed on, and the client retries over TCP, which is forwarded
over TCP. With ``routes`` (split DNS), names under one of its domains go to that domain's
upstreams instead (the longest domain that matches).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dnslib import DNSError, DNSRecord

from ..log import get_logger
from .ratelimit import RateLimiter
from .resolver import Drop, DropReason, Forward, Reply, Resolver, servfail

Address = tuple[str, int]

TIMEOUT = 2.0  # seconds per upstream
MAX_OUTSTANDING = 256
IDLE_TIMEOUT = 10.0  # seconds a TCP connection may wait between queries
MAX_CONNECTIONS = 64
BIND_ATTEMPTS = 10  # with port 0: UDP ports tried until TCP's twin is free


class DNSServer:
    def __init__(
        self,
        resolver: Resolver,
        upstreams: Sequence[Address],
        *,
        limiter: RateLimiter | None = None,
        timeout: float = TIMEOUT,
        max_outstanding: int = MAX_OUTSTANDING,
        idle_timeout: float = IDLE_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
        allow: Callable[[str], bool] | None = None,
        routes: Mapping[str, Sequence[Address]] | None = None,
    ) -> None:
        self.resolver = resolver
        self.allow = allow  # which source addresses are answered (None: all)
        # split DNS: names under each domain go to its own upstreams, not to ``upstreams``
        self.routes = {d.lower().rstrip("."): list(u) for d, u in (routes or {}).items()}
        self.upstreams = list(upstreams)
        self.limiter = limiter if limiter is not None else RateLimiter()
        self.timeout = timeout
        self.max_outstanding = max_outstanding
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.outstanding = 0
        self.upstream_failures = 0
        self.connections = 0
        self.log = get_logger(component="dns")
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()  # open TCP connections
        self.address: Address | None = None

    async def start(self, host: str, port: int = 53) -> Address:
        """Listen on ``host``:``port`` (UDP and TCP; port 0 picks one, the same for both:
        when TCP's is taken, another is tried, up to BIND_ATTEMPTS times)."""
        loop = asyncio.get_running_loop()
        for attempt in range(1, BIND_ATTEMPTS + 1):
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _UDP(self), local_addr=(host, port)
            )
            bound = transport.get_extra_info("sockname")
            try:
                self._tcp = await asyncio.start_server(self._serve_tcp, host, bound[1])
            except OSError:
                transport.close()
                if port != 0 or attempt == BIND_ATTEMPTS:
                    raise
                continue
            break
        self._udp = transport
        self.address = (bound[0], bound[1])
        self.log.info("dns_listening", address=f"{bound[0]}:{bound[1]}")
        return self.address

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            for writer in list(self._writers):
                writer.close()  # (Python 3.12's wait_closed waits for them)
            await self._tcp.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- one query, from either transport -------------------------------------------------

    def _admit(self, source: str) -> bool:
        if self.allow is not None and not self.allow(source):
            self.resolver.drop(DropReason.SOURCE)
            return False
        if self.limiter.allow(source, asyncio.get_running_loop().time()):
            return True
        self.resolver.drop(DropReason.RATE_LIMITED)
        return False

    async def _answer_tcp(self, data: bytes) -> bytes | None:
        outcome = self.resolver.handle(data)
        if isinstance(outcome, Reply):
            return outcome.data
        if isinstance(outcome, Drop) or not self._reserve():
            return None
        return await self._forward(outcome, data, tcp=True)

    def upstreams_for(self, name: str) -> list[Address]:
        """Where a query for ``name`` (lowercase, no final dot) goes: the upstreams of the
        longest split domain it is in, else the default ones."""
        best = ""
        for domain in self.routes:
            if (name == domain or name.endswith("." + domain)) and len(domain) > len(best):
                best = domain
        return self.routes[best] if best else self.upstreams

    async def _forward(self, outcome: Forward, data: bytes, *, tcp: bool) -> bytes | None:
        """The upstream's answer, or SERVFAIL; the caller has reserved a slot
        (:meth:`_reserve`), given back here."""
        try:
            for upstream in self.upstreams_for(outcome.qname):
                try:
                    async with asyncio.timeout(self.timeout):
                        if tcp:
                            reply = await _ask_tcp(upstream, data)
                        else:
                            reply = await _ask_udp(upstream, data)
                except (TimeoutError, OSError, asyncio.IncompleteReadError) as error:
                    self.upstream_failures += 1
                    self.log.debug(
                        "dns_upstream_failed",
                        upstream=f"{upstream[0]}:{upstream[1]}",
                        error=type(error).__name__,
                    )
                    continue
                if _matches(outcome.query, reply):
                    return reply
                self.upstream_failures += 1
            return servfail(outcome.query)
        finally:
            self.outstanding -= 1

    def _reserve(self) -> bool:
        """Take one of the ``max_outstanding`` forwarding slots, or count a BUSY drop."""
        if self.outstanding >= self.max_outstanding:
            self.resolver.drop(DropReason.BUSY)
            return False
        self.outstanding += 1
        return True

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- UDP ----------------------------------------------------------------------------

    async def _udp_forward(self, outcome: Forward, data: bytes, addr: Address) -> None:
        reply = await self._forward(outcome, data, tcp=False)
        if reply is not None and self._udp is not None and not self._udp.is_closing():
            self._udp.sendto(reply, addr)

    def datagram(self, data: bytes, addr: Address) -> None:
        """One datagram: answered at once from the core, or forwarded in a task."""
        if not self._admit(addr[0]):
            return
        outcome = self.resolver.handle(data)
        if isinstance(outcome, Reply):
            if self._udp is not None:
                self._udp.sendto(outcome.data, addr)
        elif isinstance(outcome, Forward) and self._reserve():
            self._spawn(self._udp_forward(outcome, data, addr))

    # -- TCP ----------------------------------------------------------------------------

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.connections >= self.max_connections:
            self.resolver.drop(DropReason.BUSY)
            writer.close()
            return
        source = str(writer.get_extra_info("peername")[0])
        if self.allow is not None and not self.allow(source):
            self.resolver.drop(DropReason.SOURCE)
            writer.close()
            return
        self.connections += 1
        self._writers.add(writer)
        try:
            while True:
                async with asyncio.timeout(self.idle_timeout):
                    (size,) = struct.unpack("!H", await reader.readexactly(2))
                    data = await reader.readexactly(size)
                if not self._admit(source):
                    break
                reply = await self._answer_tcp(data)
                if reply is None:
                    break  # a dropped query ends the connection: a stream cannot skip it
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.connections -= 1
            self._writers.discard(writer)
            writer.close()


class _UDP(asyncio.DatagramProtocol):
    def __init__(self, server: DNSServer) -> None:
        self.server = server

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.server.datagram(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        self.server.log.debug("dns_udp_error", error=type(exc).__name__)


class _Upstream(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if not self.reply.done():
            self.reply.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.reply.done():
            self.reply.set_exception(exc)


async def _ask_udp(upstream: Address, data: bytes) -> bytes:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(_Upstream, remote_addr=upstream)
    try:
        transport.sendto(data)
        return await protocol.reply
    finally:
        transport.close()


async def _ask_tcp(upstream: Address, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(*upstream)
    try:
        writer.write(struct.pack("!H", len(data)) + data)
        await writer.drain()
        (size,) = struct.unpack("!H", await reader.readexactly(2))
        return await reader.readexactly(size)
    finally:
        writer.close()


def _matches(query: DNSRecord, data: bytes) -> bool:
    """Whether ``data`` is a response to ``query``: same id, a response, the same question."""
    try:
        reply = DNSRecord.parse(data)
    except (DNSError, ValueError, IndexError, UnicodeError, TypeError):
        return False
    return bool(
        reply.header.id == query.header.id
        and reply.header.qr == 1
        and [str(q.qname).lower() for q in reply.questions] == [str(query.q.qname).lower()]
        and [(q.qtype, q.qclass) for q in reply.questions] == [(query.q.qtype, query.q.qclass)]
    )
