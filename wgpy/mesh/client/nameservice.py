"""The node's resolver as a service of the running node (Tailscale's MagicDNS): the
:mod:`wgpy.dns` server fed with the name table (:mod:`.dns`) on every map change, and the
host's resolver pointed at it (:mod:`.hostdns`) unless ``--accept-dns=false``.

It listens on UDP and TCP port 53 of the fixed service addresses 100.100.100.100 and
fd7a:115c:a1e0::53 (put on the interface here; the server never gives them to a node) and of
the node's overlay addresses. Only queries from overlay or loopback sources are answered
(:func:`overlay_or_loopback`): a host on the underlay that routes to those addresses gets
nothing, so the node is no open resolver. Names outside the base domain are forwarded to the
servers the host's resolv.conf named before the node changed it (read after a crashed run's
leftovers are undone), but names under the admin's split DNS domains (``wgpy server
--dns-domain``, read from ``GET /api/v1/node/dns`` as the node starts), which go to their own
resolvers.

:meth:`NameService.start` runs once the first map is in (the base domain comes with the
node's name); :meth:`NameService.update` after each map change (new overlay addresses or a
new base domain are taken up); :meth:`NameService.close` at the end puts the host's DNS
back. Nothing here is fatal to the node: what fails is logged.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from typing import Any

from ...dns.names import DEFAULT_BASE_DOMAIN, NameTable, build_table
from ...dns.ratelimit import RateLimiter
from ...dns.resolver import Resolver
from ...dns.server import Address, DNSServer
from ...dns.upstreams import nameservers
from .api import MeshClientError
from .dns import name_table, overlay_addresses, split_domains
from .hostdns import HostDNS, Mode
from .netmap import IPInterface, NodeRecord, PeerRecord
from .state import StateDir, StateError
from .system import OVERLAY_NETWORKS, HostNetwork, HostNetworkError

__all__ = ["SERVICE_ADDRESSES", "NameService", "overlay_or_loopback"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
SERVICE_ADDRESSES: tuple[IPInterface, ...] = (
    ipaddress.IPv4Interface("100.100.100.100/32"),
    ipaddress.IPv6Interface("fd7a:115c:a1e0::53/128"),
)
PORT = 53


def overlay_or_loopback(source: str) -> bool:
    """Whether a query from ``source`` is answered: from the mesh or from this host."""
    try:
        address = ipaddress.ip_address(source.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback or any(address in network for network in OVERLAY_NETWORKS)


class NameService:
    """The resolver of one node; see the module docstring."""

    def __init__(
        self,
        interface: str,
        host: HostNetwork,
        log: Any,
        *,
        host_dns: HostDNS | None,
        fetch: Callable[[], Awaitable[Any]] | None = None,
        state: StateDir | None = None,
        port: int = PORT,
        service_addresses: Sequence[IPInterface] = SERVICE_ADDRESSES,
    ) -> None:
        self.interface = interface
        self.host = host
        self.log = log
        self.host_dns = host_dns  # None: --accept-dns=false, the host's DNS is left alone
        self.fetch = fetch  # the server's DNS settings (NodeClient.dns_config): split domains
        self.split: dict[str, list[Address]] = {}  # split domain -> its resolvers
        self.state = state  # where dns.json tells `wgpy status` what the resolver does
        self.port = port
        self.service_addresses = tuple(service_addresses)
        self.resolver = Resolver(build_table(DEFAULT_BASE_DOMAIN, []))
        self.upstreams: list[Address] = []
        # while an exit node is used, the other names go to its resolver instead (DNS
        # follows the traffic: the host's resolvers may be on a LAN it no longer reaches)
        self.exit_resolver: Address | None = None
        self._node: NodeRecord | None = None
        self.listening: list[Address] = []  # (host, port) as bound, in order
        self._listeners: dict[IPAddress, DNSServer] = {}
        self._limiter = RateLimiter()  # one per node: a source's queries count on every address
        self._service: list[IPAddress] = []  # the service addresses put on the interface
        self._own: list[IPAddress] = []  # the node's overlay addresses, listened on
        self._started = False
        self._pointed: str | None = None  # the base domain the host was pointed at
        self._refresh: asyncio.Future[None] | None = None

    @property
    def table(self) -> NameTable:
        return self.resolver.table

    async def start(self, node: NodeRecord, peers: Iterable[PeerRecord]) -> None:
        """Listen, and point the host's resolver here."""
        peers = list(peers)
        self.update(node, peers)
        own = self._own = [a.ip for a in node.addresses]
        # a node registered before the service addresses were reserved may hold one (index
        # 83: fd7a:115c:a1e0::53): then it stays that node's, and the resolver does without
        held = {*own, *(a for p in peers for a in overlay_addresses(p))}
        for address in self.service_addresses:
            if address.ip in held:
                self.log.warning(
                    "a node of the mesh has the resolver's service address: not used",
                    address=str(address.ip),
                )
                continue
            try:
                # never the source of what leaves (a packet from fd7a:115c:a1e0::53 would
                # come from every node at once): host scope, or deprecated for IPv6
                await self.host.add_service_address(self.interface, address)
            except HostNetworkError as e:
                self.log.warning("cannot add the resolver's service address", error=str(e))
                continue
            self._service.append(address.ip)
        if self.host_dns is not None:
            await self.host_dns.recover()
            text = self.host_dns.read()
        else:
            text = _read_resolv_conf()
        self.upstreams = nameservers(text, exclude=[*self._service, *own])
        await self._read_split_domains()
        await self._listen([*self._service, *own])
        self.log.info(
            "resolver up",
            listening=[f"{a}:{p}" for a, p in self.listening],
            upstreams=[f"{a}:{p}" for a, p in self.upstreams],
            base_domain=self.table.base_domain,
            split_domains={d: [a for a, _ in r] for d, r in self.split.items()},
        )
        self._started = True
        await self._point_host(node)
        self._save()

    async def _listen(self, addresses: Sequence[IPAddress]) -> None:
        """Listen on each of ``addresses`` not listened on yet (failures are logged)."""
        for where in addresses:
            if where in self._listeners:
                continue
            server = DNSServer(
                self.resolver,
                self._forward_to(),
                limiter=self._limiter,
                allow=overlay_or_loopback,
                routes=self.split,
            )
            try:
                self.listening.append(await server.start(str(where), self.port))
            except OSError as e:
                self.log.warning(
                    "the resolver cannot listen here",
                    address=str(where),
                    error=e.strerror or str(e),
                )
                continue
            self._listeners[where] = server

    def _forward_to(self) -> list[Address]:
        return [self.exit_resolver] if self.exit_resolver is not None else list(self.upstreams)

    def follow_exit_node(self, address: IPAddress | None, port: int = PORT) -> None:
        """Send the names that are not the mesh's to the resolver of the exit node in use
        (at ``address``, one of its overlay addresses), or back to the host's resolvers
        (None), as Tailscale's DNS follows its exit node; with systemd-resolved the link
        then takes every lookup, not only the mesh's."""
        wanted = None if address is None else (str(address), port)
        if wanted == self.exit_resolver:
            return
        self.exit_resolver = wanted
        for server in self._listeners.values():
            server.upstreams = self._forward_to()
        self.log.info(
            "other names go to the exit node's resolver"
            if wanted is not None
            else "other names go to the host's resolvers again",
            upstreams=[f"{a}:{p}" for a, p in self._forward_to()],
        )
        if self._started:
            self._save()
            resolved = self.host_dns is not None and self.host_dns.mode is Mode.RESOLVED
            if self._node is not None and resolved:
                self._after_refresh(self._point_host(self._node))

    async def _point_host(self, node: NodeRecord) -> None:
        """Point the host's resolver at a listening address, for the table's base domain."""
        self._node = node
        if self.host_dns is None or not self._listeners or not node.name:
            return  # told not to, nothing listens, or no names (a server before them)
        answering = [a for a in self._service if a in self._listeners]
        servers = answering or list(self._listeners)[:1]
        self._pointed = self.table.base_domain
        await self.host_dns.apply(
            servers,
            [self.table.base_domain],
            list(self.split),
            route_all=self.exit_resolver is not None,
        )

    def _save(self) -> None:
        """Tell `wgpy status` where the resolver answers and how the host points at it."""
        if self.state is None:
            return
        mode = self.host_dns.mode if self.host_dns is not None else None
        try:
            self.state.write_dns(
                {
                    "listening": [str(a) for a in self._listeners],
                    "base_domain": self.table.base_domain,
                    "split_domains": {d: [a for a, _ in r] for d, r in self.split.items()},
                    "accept_dns": self.host_dns is not None,
                    "host": None if mode is None else str(mode),
                    "exit_node_resolver": None
                    if self.exit_resolver is None
                    else self.exit_resolver[0],
                }
            )
        except StateError as e:
            self.log.warning("cannot save the resolver's state", error=e.message)

    async def _read_split_domains(self) -> None:
        """The admin's split DNS domains, from the server (none from a server before them,
        or if they cannot be read: logged)."""
        if self.fetch is None:
            return
        try:
            self.split = split_domains(await self.fetch(), self.table.base_domain)
        except (MeshClientError, ValueError) as e:
            self.log.info(
                "no split DNS domains from the server",
                error=getattr(e, "message", None) or str(e),
            )

    @property
    def servers(self) -> list[DNSServer]:
        return list(self._listeners.values())

    def update(self, node: NodeRecord | None, peers: Iterable[PeerRecord]) -> None:
        """The map changed: answer from its names from now on. A new base domain (the server
        restarted with another) or new overlay addresses are taken up in a task."""
        if node is None:
            return
        table = name_table(node, peers)
        if table is not None:
            self.resolver.update(table)
        if not self._started:
            return
        moved = [a.ip for a in node.addresses] != self._own
        renamed = self._pointed is not None and self._pointed != self.table.base_domain
        if moved or renamed:
            self._after_refresh(self._take_up(node))

    def _after_refresh(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` once the change before it is done: one change of the host's DNS at a
        time, in order, and :meth:`close` cancels the whole chain (the last one awaits the
        others)."""
        previous = self._refresh

        async def in_turn() -> None:
            try:
                if previous is not None:
                    await asyncio.gather(previous, return_exceptions=True)
            except asyncio.CancelledError:
                work.close()  # never started: no "never awaited" warning
                raise
            await work

        self._refresh = asyncio.ensure_future(in_turn())

    async def _take_up(self, node: NodeRecord) -> None:
        """Listen on the node's new overlay addresses (and no longer on its old ones); point
        the host at the new base domain."""
        own = self._own = [a.ip for a in node.addresses]
        for where in [a for a in self._listeners if a not in self._service and a not in own]:
            await self._listeners.pop(where).close()
        await self._listen(own)
        if self._pointed is not None and self._pointed != self.table.base_domain:
            assert self.host_dns is not None
            await self.host_dns.revert()
            await self._point_host(node)
        self._save()
        self.log.info(
            "resolver changed",
            listening=[str(a) for a in self._listeners],
            base_domain=self.table.base_domain,
        )

    async def settled(self) -> None:
        """Return once what :meth:`update` started is done (tests, and the daemon's end)."""
        if self._refresh is not None:
            await asyncio.gather(self._refresh, return_exceptions=True)

    async def close(self) -> None:
        """Stop answering; the host's DNS put back."""
        if self._refresh is not None:
            self._refresh.cancel()
            await asyncio.gather(self._refresh, return_exceptions=True)
        if self.host_dns is not None:
            await self.host_dns.revert()
        for server in self._listeners.values():
            await server.close()
        self._listeners.clear()


def _read_resolv_conf() -> str:
    try:
        with open("/etc/resolv.conf", encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""
