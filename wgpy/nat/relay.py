"""A TURN relay (RFC 8656) for the peers no direct path reaches: one allocation, kept alive.

The coordination server hands out its relays and short-lived credentials (``GET
/api/v1/node/nat``, :class:`wgpy.nat.servers.TurnServer`, coturn's REST scheme). A
:class:`RelayManager` allocates on them, over UDP, TCP or TLS (``turns:``), with aioice's
TURN client (:mod:`aioice.turn`: its Allocate/Refresh/ChannelBind transactions, long-term
credentials, ChannelData framing over streams), and keeps ONE allocation, the nearest:

- every URL of every relay is tried at once; among the relays that answer within
  :data:`CHOOSE_GRACE` of the first, the nearest wins (the lowest round trip of its URLs; TCP
  and TLS count a little more than they measure, :data:`STREAM_PENALTY`), and on it the best
  transport that worked: UDP, else TCP, else TLS (a network that blocks UDP gets TCP, one
  that lets only web traffic out gets TLS on 443); a URL whose host refuses (over UDP: the
  ICMP port unreachable that aioice ignores) fails at once, not after
  :data:`ALLOCATE_TIMEOUT`, and so does a health check;
- the allocation is checked every :data:`HEALTH_INTERVAL` seconds, every
  :data:`ACTIVE_HEALTH_INTERVAL` while traffic goes through it, and at once when a path
  through it stops answering (:meth:`RelayManager.check_now`) (a Refresh over its own
  transport, which also keeps it alive); one that stops answering, whose connection closes
  or whose refresh fails is dropped, and the next is chosen at once among the other relays
  (failing over; the lost one is tried again only if none of them answers);
- aioice refreshes the allocation before its lifetime ends; the credentials expire
  (``expires``): :meth:`RelayManager.update` with newer ones reallocates before they do,
  keeping the old allocation :data:`OVERLAP` seconds so that paths move over without loss.

The data plane does not depend on the coordination server: once allocated, the relay is
kept up with the credentials in hand until they expire, whatever the server does.

The relay's sockets carry the WireGuard socket's firewall mark (``fwmark``, SO_MARK): set
before they connect, and changed on the open ones by :meth:`RelayManager.set_fwmark`. With
wg-quick-style policy routing (``ip rule add not fwmark M table T``, a default route into the
tunnel in T) traffic to the relay must bypass the tunnel as WireGuard's own does, or it
would loop into it.

:meth:`RelayManager.status` says which relay is in use and which answer (``wgpy status``
tells a relay that does not: all of its URLs failed, each URL with why, or its health check
did).

The allocation's relayed address is this node's ``relay`` candidate (:meth:`candidates`, a
:class:`wgpy.nat.ice.RelayedCandidate` that names its :class:`RelayLink`). A path through it is
the core's :class:`wgpy.endpoint.RelayKey` ``(peer host, peer port, link)``: what WireGuard
sends there the UDP bind hands to :meth:`RelayLink.send` (ChannelData once a channel is bound,
no task and no copy beyond the 4-byte header), and what the relay delivers from a peer enters
the interface with that key (``deliver``, :meth:`wgpy.device.interface.Interface.receive`),
WireGuard's and ICE's alike. Channels (and with them permissions, RFC 8656 12) are bound on
the first send to a peer address, refreshed by aioice before they lapse; the ICE checks and
keepalives that go over the path keep them in use.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from aioice import stun
from aioice.candidate import candidate_priority
from aioice.turn import TurnClientTcpProtocol, TurnClientUdpProtocol

from ..endpoint import EndpointKey, RelayKey
from ..log import get_logger
from .ice import RelayedCandidate
from .servers import TurnServer, TurnUrl
from .tasks import cancel_and_wait

__all__ = [
    "CHOOSE_GRACE",
    "HEALTH_INTERVAL",
    "Attempt",
    "RelayLink",
    "RelayManager",
    "choose",
    "relay_candidate",
    "score",
]

_T = TypeVar("_T")

ALLOCATE_TIMEOUT = 4.0
"""Seconds an allocation may take (DNS, TCP/TLS handshakes, the 401 round and the Allocate)."""
CHOOSE_GRACE = 0.3
"""Seconds the other relays get to answer after the first one did."""
STREAM_PENALTY = {"udp": 1.0, "tcp": 1.5, "tls": 2.0}
"""How much a transport's round trip counts when relays are compared."""
HEALTH_INTERVAL = 5.0
"""Seconds between checks that the allocation's relay still answers."""
ACTIVE_HEALTH_INTERVAL = 1.0
"""The same while traffic goes through it (a dead relay is replaced within about 5 s)."""
HEALTH_TIMEOUT = 1.5
"""Seconds a check may take before the relay counts as gone."""
RETRY_INTERVAL = 5.0
"""Seconds between attempts to allocate while no relay answers (doubling, at most 60 s)."""
OVERLAP = 30.0
"""Seconds a replaced allocation stays up (paths on it move to the new one meanwhile)."""
REAUTH_MARGIN = 600.0
"""Seconds before its credentials expire that an allocation is replaced."""
LIFETIME = 600
"""Seconds of allocation lifetime asked for (aioice refreshes at 5/6 of it)."""
CHANNEL_REFRESH = 300
"""Seconds after which a channel is bound again (they live 600 s)."""
MAX_PENDING_SENDS = 64
"""Sends waiting for a channel binding, at most (more are dropped and counted)."""

TurnProtocol = TurnClientTcpProtocol | TurnClientUdpProtocol


def score(rtt: float, url: TurnUrl) -> float:
    """How near a relay is, for comparing (lower is better)."""
    return rtt * STREAM_PENALTY.get(url.kind, 2.0)


TRANSPORT_RANK = {"udp": 0, "tcp": 1, "tls": 2}


@dataclass(frozen=True)
class Attempt:
    """One allocation attempt's outcome (on the relay ``relay``), for :func:`choose` and
    the logs."""

    url: TurnUrl
    rtt: float | None = None
    error: str | None = None
    relay: int = 0  # which relay (its index in the server's list)


def choose(attempts: Sequence[Attempt]) -> Attempt | None:
    """The attempt to keep: on the nearest relay that answered (by :func:`score` of its
    best URL), its best transport that worked (UDP, TCP, TLS); None when none did."""
    good = [a for a in attempts if a.rtt is not None]
    if not good:
        return None
    nearest = min(good, key=lambda a: score(a.rtt or 0.0, a.url)).relay
    on_it = [a for a in good if a.relay == nearest]
    return min(on_it, key=lambda a: (TRANSPORT_RANK.get(a.url.kind, 3), a.rtt or 0.0))


def relay_candidate(link: RelayLink) -> RelayedCandidate:
    """This node's relayed candidate for ``link``'s allocation (RFC 8445 5.1.2: type
    preference 0, the lowest)."""
    host, port = link.relayed
    return RelayedCandidate(
        link,
        foundation="relay",
        component=1,
        transport="udp",
        priority=candidate_priority(1, "relay"),
        host=host,
        port=port,
        type="relay",
        related_address=link.mapped[0] if link.mapped else None,
        related_port=link.mapped[1] if link.mapped else None,
    )


class _Receiver(asyncio.DatagramProtocol):
    """What aioice's client hands the datagrams relayed from peers (and its end) to."""

    def __init__(self, link: RelayLink) -> None:
        self.link = link

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.link.received(data, addr)

    def error_received(self, exc: Exception) -> None:
        self.link.drops["send_failed"] += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.link.lost("its connection closed" if exc is None else f"it failed ({exc})")


class _UdpTurnProtocol(TurnClientUdpProtocol):
    """aioice's TURN client over UDP, which ignores the errors its socket reports: while a
    transaction waits (:func:`_or_refused`), the first (the relay's host refused: ICMP port
    unreachable, or no route) is kept in :attr:`error` and :attr:`failed` is set, so that a
    dead relay fails at once rather than when the transaction times out."""

    def __init__(self, server: tuple[str, int], **options: Any) -> None:
        super().__init__(server, **options)
        self.error: Exception | None = None
        self.failed = asyncio.Event()

    def error_received(self, exc: Exception) -> None:
        if self.error is None:
            self.error = exc
            self.failed.set()


async def _or_refused(protocol: TurnProtocol, transaction: Awaitable[_T]) -> _T:
    """``transaction``'s result, or the error ``protocol``'s UDP socket reports first while it
    waits (OSError: ConnectionRefusedError when nothing listens on the relay's port)."""
    if not isinstance(protocol, _UdpTurnProtocol):
        return await transaction
    protocol.error = None
    protocol.failed.clear()
    waiting = asyncio.ensure_future(transaction)
    failed = asyncio.ensure_future(protocol.failed.wait())
    try:
        await asyncio.wait((waiting, failed), return_when=asyncio.FIRST_COMPLETED)
    finally:
        failed.cancel()
        await cancel_and_wait(waiting)
    if waiting.cancelled() and protocol.error is not None:
        raise protocol.error
    return waiting.result()


class RelayLink:
    """One allocation on one relay URL: sends to peers through it and delivers what they
    send. Satisfies :class:`wgpy.endpoint.RelayLink`."""

    def __init__(
        self,
        server: TurnServer,
        url: TurnUrl,
        deliver: Callable[[Sequence[tuple[bytes, EndpointKey]]], None],
        on_lost: Callable[[RelayLink, str], None],
        log: Any,
    ) -> None:
        self.server = server
        self.url = url
        self.deliver = deliver
        self.on_lost = on_lost
        self.log = log
        self.protocol: TurnProtocol | None = None
        self.transport: asyncio.BaseTransport | None = None
        self.relayed: tuple[str, int] = ("", 0)
        self.mapped: tuple[str, int] | None = None
        self.rtt: float | None = None
        self.closed = False
        self.drops: Counter[str] = Counter()
        self.sent = 0
        self.received_count = 0
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def name(self) -> str:
        """The relay's host (``relay <name>`` in ``wgpy status``)."""
        return self.server.name

    def __repr__(self) -> str:
        return f"<RelayLink {self.url.kind} {self.url.address} relayed {self.relayed}>"

    # ------------------------------------------------------------------ allocation

    async def allocate(self, ssl_context: ssl.SSLContext | None, fwmark: int = 0) -> None:
        """Connect (from a socket marked ``fwmark``) and allocate (OSError, ssl.SSLError,
        stun.TransactionError, ConnectionError or TimeoutError when it fails)."""
        loop = asyncio.get_running_loop()
        url = self.url
        kind = "tcp" if url.transport == "tcp" else "udp"
        infos = await loop.getaddrinfo(url.host, url.port, type=_SOCKTYPE[kind])
        family, server = infos[0][0], (str(infos[0][4][0]), int(infos[0][4][1]))
        sock = marked_socket(family, _SOCKTYPE[kind], fwmark)
        options = {
            "username": self.server.username,
            "password": self.server.password,
            "lifetime": LIFETIME,
            "channel_refresh_time": CHANNEL_REFRESH,
        }
        protocol: TurnProtocol
        transport: asyncio.BaseTransport
        try:
            if kind == "tcp":
                context = None
                if url.secure:
                    context = ssl_context or ssl.create_default_context()
                await loop.sock_connect(sock, server)
                transport, protocol = await loop.create_connection(
                    lambda: TurnClientTcpProtocol(server, **options),  # type: ignore[arg-type]
                    sock=sock,
                    ssl=context,
                    server_hostname=url.host if context else None,
                )
            else:
                sock.connect(server)  # UDP: only sets the peer (the mark is on already)
                transport, protocol = await loop.create_datagram_endpoint(
                    lambda: _UdpTurnProtocol(server, **options),
                    sock=sock,
                )
        except BaseException:
            sock.close()
            raise
        self.transport, self.protocol = transport, protocol
        try:
            started = loop.time()
            self.relayed = await _or_refused(protocol, protocol.connect())
            # two round trips: the unauthenticated Allocate (401) and the real one
            self.rtt = (loop.time() - started) / 2
            self.mapped = protocol.mapped_address
            protocol.receiver = _Receiver(self)
        except BaseException:
            transport.close()
            raise

    async def check(self) -> float | None:
        """A Refresh of the allocation over its transport (authenticated: coturn answers it
        signed, where its answer to a Binding request is not, and aioice drops that): its
        round trip, None when it went unanswered or was refused."""
        protocol = self.protocol
        if protocol is None or self.closed:
            return None
        loop = asyncio.get_running_loop()
        request = stun.Message(message_method=stun.Method.REFRESH, message_class=stun.Class.REQUEST)
        request.attributes["LIFETIME"] = LIFETIME
        started = loop.time()
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT):
                await _or_refused(protocol, protocol.request_with_retry(request))
        except (TimeoutError, stun.TransactionError, ConnectionError, OSError):
            return None
        return loop.time() - started

    async def close(self) -> None:
        """Delete the allocation (best effort) and close the transport."""
        if self.closed:
            return
        self.closed = True
        for task in self._tasks:
            task.cancel()
        protocol = self.protocol
        if protocol is not None:
            protocol.receiver = None
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await protocol.delete()
        if self.transport is not None:
            self.transport.close()

    def lost(self, why: str) -> None:
        if not self.closed:
            self.closed = True
            for task in self._tasks:
                task.cancel()
            if self.transport is not None:
                self.transport.close()
            self.on_lost(self, why)

    # ------------------------------------------------------------------ data

    def send(self, data: bytes, address: tuple[str, int]) -> None:
        """Send ``data`` to the peer at ``address`` through the relay: ChannelData at once
        when the peer's channel is bound and fresh; else a task binds (or refreshes) it first
        (bounded: beyond :data:`MAX_PENDING_SENDS` the datagram is dropped and counted)."""
        protocol = self.protocol
        if protocol is None or self.closed:
            self.drops["closed"] += 1
            return
        channel = protocol.peer_to_channel.get(address)
        if channel is not None and time.time() < protocol.channel_refresh_at[channel]:
            protocol._send(struct.pack("!HH", channel, len(data)) + data)
            self.sent += 1
            return
        if len(self._tasks) >= MAX_PENDING_SENDS:
            self.drops["pending"] += 1
            return
        task = asyncio.get_running_loop().create_task(self._bind_and_send(data, address))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _bind_and_send(self, data: bytes, address: tuple[str, int]) -> None:
        protocol = self.protocol
        assert protocol is not None
        try:
            await protocol.send_data(data, address)
            self.sent += 1
        except (stun.TransactionError, ConnectionError, OSError) as e:
            # a peer address the relay refuses (403: denied-peer-ip) is not the relay's end
            self.drops["channel_bind"] += 1
            self.log.debug("relay refused a peer address", peer=str(address), error=str(e))

    def received(self, data: bytes, addr: tuple[str, int]) -> None:
        """A datagram the relay forwarded from a peer at ``addr``."""
        self.received_count += 1
        self.deliver([(data, RelayKey(str(addr[0]), int(addr[1]), self))])


_SOCKTYPE = {"udp": socket.SOCK_DGRAM, "tcp": socket.SOCK_STREAM}
SO_MARK = getattr(socket, "SO_MARK", 36)


def marked_socket(family: int, kind: int, fwmark: int) -> socket.socket:
    """A non-blocking socket carrying ``fwmark`` (SO_MARK; 0: none) from its first packet
    (OSError: the mark needs CAP_NET_ADMIN)."""
    sock = socket.socket(family, kind)
    try:
        if fwmark:
            sock.setsockopt(socket.SOL_SOCKET, SO_MARK, fwmark)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def set_mark(transport: asyncio.BaseTransport | None, fwmark: int) -> None:
    """Mark what an open transport's socket sends from now on (best effort: a socket that
    is gone has nothing to mark)."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, SO_MARK, fwmark)


class RelayManager:
    """This node's relay: see the module docstring. ``deliver`` takes what arrives through
    it (the interface's :meth:`~wgpy.device.interface.Interface.receive`); ``on_change()``
    is called when the relayed candidate changes (report it; paths check again)."""

    def __init__(
        self,
        deliver: Callable[[Sequence[tuple[bytes, EndpointKey]]], None],
        *,
        ssl_context: ssl.SSLContext | None = None,
        on_change: Callable[[], None] | None = None,
        on_status: Callable[[], None] | None = None,
        fwmark: int = 0,
        loop: asyncio.AbstractEventLoop | None = None,
        log: Any = None,
        wall_clock: Callable[[], float] = time.time,
        health_interval: float = HEALTH_INTERVAL,
    ) -> None:
        self.deliver = deliver
        self.health_interval = health_interval
        self.ssl_context = ssl_context
        self.on_change = on_change
        self.on_status = on_status
        """Called when :meth:`status` changes (a relay answers, or stops answering)."""
        self.fwmark = fwmark
        self.loop = loop or asyncio.get_running_loop()
        self.log = log or get_logger(component="relay")
        self.wall_clock = wall_clock
        self.servers: tuple[TurnServer, ...] = ()
        self.link: RelayLink | None = None
        self.attempts: list[Attempt] = []
        self.reachable: dict[str, str | None] = {}
        """Per relay name, as last seen: None when it answers, else why not."""
        self.failures: dict[str, list[tuple[TurnUrl, str]]] = {}
        """Per relay that did not answer its last allocation round: each URL and why not."""
        self._old: list[RelayLink] = []
        self._wake = asyncio.Event()
        self._check_now = False  # with _wake: check the allocation at once
        self._seen = (0, 0)  # the link's datagrams sent and received at the last look
        self._checked_at = 0.0  # loop time of the last health check
        self._avoid: set[str] = set()  # relays left out of the next choice (just lost)
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ the outside

    def update(self, servers: Sequence[TurnServer]) -> None:
        """The relays (and fresh credentials) from the coordination server. A relay set that
        changed, or credentials about to expire, make a new allocation; the same relays
        again change nothing."""
        servers = tuple(servers)
        if servers == self.servers:
            return
        same_relays = [s.urls for s in servers] == [s.urls for s in self.servers]
        self.servers = servers
        if self._task is None:
            self._task = self.loop.create_task(self._run())
        elif not same_relays or self._expiring():
            self._replace()

    def candidates(self) -> list[RelayedCandidate]:
        """The relayed candidate, if there is an allocation (while a replacement is being
        made, the one it replaces: peers keep a relayed address that works)."""
        link = self.link or next((old for old in reversed(self._old) if not old.closed), None)
        return [relay_candidate(link)] if link is not None and not link.closed else []

    def name(self) -> str | None:
        return None if self.link is None else self.link.name

    def check_now(self) -> None:
        """Check the allocation now rather than at the next health check (a path through
        the relay stopped answering: if the relay is gone, the next one is chosen and its
        candidate reported seconds sooner)."""
        if self.link is not None:
            self._check_now = True
            self._wake.set()

    def set_fwmark(self, mark: int) -> None:
        """The WireGuard socket's firewall mark changed: the relay's sockets carry it too,
        the open ones from now on and the ones made later from the start."""
        if mark == self.fwmark:
            return
        self.fwmark = mark
        for link in [*self._old, *([self.link] if self.link is not None else [])]:
            set_mark(link.transport, mark)
        if self.link is None and self._task is not None:
            self._wake.set()  # no relay answered: with the mark one may, try again now

    def status(self) -> dict[str, Any]:
        """What ``wgpy status`` says of the relays: the one in use (its name, transport and
        relayed address) and, per configured relay, whether it answered when last tried
        (``reachable``: None before it was tried) and why not (``error``)."""
        link = self.link
        names = list(dict.fromkeys(server.name for server in self.servers))
        return {
            "in_use": None if link is None else link.name,
            "transport": None if link is None else link.url.kind,
            "relayed": None if link is None else f"{link.relayed[0]}:{link.relayed[1]}",
            "relays": [
                {
                    "name": name,
                    "reachable": None if name not in self.reachable else not self.reachable[name],
                    "error": self.reachable.get(name),
                    # each URL tried and why it failed (the last round; [] when it answers)
                    "urls": [
                        {"url": url.text, "transport": url.kind, "error": error}
                        for url, error in self.failures.get(name, [])
                        if self.reachable.get(name)
                    ],
                }
                for name in names
            ],
        }

    def _set_reachable(self, found: dict[str, str | None]) -> None:
        """Record which relays answer (name: None) or not (name: why); tell when it changed."""
        before = dict(self.reachable)
        self.reachable.update(found)
        if self.reachable != before:
            self._status_changed()

    def _look_interval(self) -> float:
        """Seconds until the allocation is looked at next (checked if due)."""
        return min(self.health_interval, ACTIVE_HEALTH_INTERVAL)

    def _check_due(self, link: RelayLink) -> bool:
        """Whether to check the allocation now: every health_interval, and every
        ACTIVE_HEALTH_INTERVAL while traffic goes through it."""
        seen, self._seen = self._seen, (link.sent, link.received_count)
        since = self.loop.time() - self._checked_at
        return since >= self.health_interval - 0.05 or seen != self._seen

    def _status_changed(self) -> None:
        if self.on_status is not None:
            self.on_status()

    async def close(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
        links = self._old + ([self.link] if self.link is not None else [])
        self.link, self._old = None, []
        await asyncio.gather(*(link.close() for link in links), return_exceptions=True)

    # ------------------------------------------------------------------ inside

    def _expiring(self) -> bool:
        """Whether the allocation's credentials expire soon and newer ones are in hand."""
        link = self.link
        if link is None or link.server.expires - self.wall_clock() >= REAUTH_MARGIN:
            return False
        return any(s.expires > link.server.expires for s in self.servers)

    def _replace(self) -> None:
        """Allocate anew (the old link stays up for OVERLAP seconds)."""
        link = self.link
        if link is not None:
            self._old.append(link)
            self.loop.call_later(OVERLAP, self._retire, link)
            self.link = None
        self._wake.set()

    def _retire(self, link: RelayLink) -> None:
        if link in self._old:
            self._old.remove(link)
            self.loop.create_task(link.close())
            if self.link is None:
                self._changed()  # it was still reported: no relayed candidate now

    def _lost(self, link: RelayLink, why: str) -> None:
        if link is self.link:
            self.log.warning("relay lost; choosing another", relay=link.name, why=why)
            self.link = None
            self.failures.pop(link.name, None)
            self._set_reachable({link.name: why})
            self._avoid = {link.name}
            self._changed()
            self._status_changed()
            self._wake.set()
        elif link in self._old:
            self._old.remove(link)
            if self.link is None:
                self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    async def _run(self) -> None:
        """Keep a relay; a bug in one pass is logged and the next pass comes later (the relay
        must not stop for good)."""
        while True:
            try:
                await self._keep()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.log.error("relay upkeep failed; trying again", error=repr(e))
                await asyncio.sleep(RETRY_INTERVAL)

    async def _keep(self) -> None:
        retry = RETRY_INTERVAL
        while True:
            if self.link is None and self.servers:
                link = await self._choose()
                if link is None:
                    wait = retry
                    retry = min(60.0, retry * 2)
                else:
                    retry = RETRY_INTERVAL
                    self.link = link
                    self.log.info(
                        "relay allocated",
                        relay=link.name,
                        transport=link.url.kind,
                        relayed=f"{link.relayed[0]}:{link.relayed[1]}",
                        rtt=round(link.rtt or 0.0, 4),
                    )
                    self._changed()
                    self._status_changed()
                    self._checked_at = self.loop.time()
                    wait = self._look_interval()
            else:
                wait = self._look_interval()
            if self._check_now:  # asked while this loop was busy
                wait = 0.0
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
            link = self.link
            told, self._check_now = self._check_now, False
            if link is not None and (told or not self._wake.is_set()):
                if self._expiring():
                    self._replace()
                    continue
                if not (told or self._check_due(link)):
                    continue
                self._checked_at = self.loop.time()
                rtt = await link.check()
                if link is self.link and rtt is None:
                    link.lost("it stopped answering")
                elif rtt is not None:
                    link.rtt = rtt

    async def _choose(self) -> RelayLink | None:
        """Allocate on every URL at once; keep the nearest of those that answer within
        CHOOSE_GRACE of the first; close the others."""
        valid = [s for s in self.servers if s.expires > self.wall_clock()]
        others = [s for s in valid if s.name not in self._avoid]
        self._avoid = set()  # (not waiting for a relay that just died, if there are others)
        links = [
            RelayLink(server, url, self.deliver, self._lost, self.log)
            for server in others or valid
            for url in server.urls
        ]
        relay_of = {id(link): self.servers.index(link.server) for link in links}
        if not links:
            self.log.warning("no relay with valid credentials; asking the server again later")
            return None
        tasks = {
            self.loop.create_task(_attempt(link, self.ssl_context, self.fwmark)): link
            for link in links
        }
        done: set[asyncio.Task[str | None]] = set()
        pending: set[asyncio.Task[str | None]] = set(tasks)
        deadline = self.loop.time() + ALLOCATE_TIMEOUT
        graced = False  # the others were given CHOOSE_GRACE after the first answer
        while pending:
            now = self.loop.time()
            if now >= deadline:
                break
            finished, pending = await asyncio.wait(
                pending, timeout=deadline - now, return_when=asyncio.FIRST_COMPLETED
            )
            done |= finished
            if any(t.result() is None for t in finished):
                deadline = min(deadline, self.loop.time() + CHOOSE_GRACE)
                graced = True
        for task in pending:
            task.cancel()
        self.attempts = []
        for task, link in tasks.items():
            error = "no answer in time"
            if task in done:
                error = task.result() or ""
            self.attempts.append(
                Attempt(link.url, None if error else link.rtt, error or None, relay_of[id(link)])
            )
        answered: dict[str, str | None] = {}  # a relay answers when one of its URLs did
        failures: dict[str, list[tuple[TurnUrl, str]]] = {}
        for attempt, (task, link) in zip(self.attempts, tasks.items(), strict=True):
            name = link.server.name
            if attempt.error is None:
                answered[name] = None
            elif task in done or not graced:  # (not cut short by a nearer relay)
                answered.setdefault(name, f"{attempt.url.text}: {attempt.error}")
                failures.setdefault(name, []).append((attempt.url, attempt.error))
        for name, why in answered.items():
            if why is None:
                self.failures.pop(name, None)
            else:
                self.failures[name] = failures[name]
        self._set_reachable(answered)
        best = choose(self.attempts)
        chosen = None
        for task, link in tasks.items():
            if (
                best is not None
                and link.url is best.url
                and relay_of[id(link)] == best.relay
                and chosen is None
            ):
                chosen = link
            elif task in done and not task.result():
                self.loop.create_task(link.close())
            else:
                link.closed = True
        if chosen is None:
            self.log.warning(
                "no relay answers; trying again later",
                errors={a.url.text: a.error for a in self.attempts},
            )
        return chosen


async def _attempt(link: RelayLink, context: ssl.SSLContext | None, fwmark: int) -> str | None:
    """Allocate on ``link``: None when it worked, else why not (one sentence's end)."""
    try:
        async with asyncio.timeout(ALLOCATE_TIMEOUT):
            await link.allocate(context, fwmark)
    except TimeoutError:
        return "no answer in time"
    except ssl.SSLCertVerificationError as e:
        return f"its TLS certificate is not trusted ({e.verify_message})"
    except stun.TransactionFailed as e:
        code = e.response.attributes.get("ERROR-CODE", (0, ""))
        return f"it refused the allocation ({code[0]} {code[1]})"
    except (OSError, ssl.SSLError, stun.TransactionError, ConnectionError) as e:
        return str(e) or type(e).__name__
    except Exception as e:  # a relay's odd answer (aioice's parsing): this relay fails
        return f"it answered in a way this node cannot use ({type(e).__name__}: {e})"
    return None
