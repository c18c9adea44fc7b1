"""A running mesh node: one WireGuard interface kept in step with the server's map.

:meth:`MeshNode.run` logs in (registers with a pre-auth key, or logs in again with the stored
node token), creates the interface, gives it the node's overlay addresses (/32 and /128) and
brings it up, reports the node's endpoints, and then keeps ONE map stream open:

- the first message is the full map: the device's peers are made to match it (added,
  updated, removed), with a route per allowed IP; the node is then ready;
- deltas (``peer_upsert``, ``peer_remove``, ``self``) are applied as they arrive;
- when the stream breaks, the data plane is left exactly as it is (peers are never removed
  because the server is unreachable) and the node reconnects with exponential backoff and
  jitter; the fresh full map that follows is applied as a diff;
- a ``self`` update that says the node has expired (or a server that no longer accepts the
  node's token) removes every peer, and says so in the log.

Each peer's policy flags are kept: :meth:`MeshNode.inbound_allowed` says whether a peer may
start flows to this node, and a peer that may not gets a reply-only inbound filter in the
device. The interface and the host's network configuration come through seams
(``interface_factory``, :class:`~wgpy.mesh.client.system.HostNetwork`) so that tests run the
node against a real :class:`~wgpy.protocol.device.Device` without a TUN.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from ...endpoint import Endpoint
from ...keys import key_from_base64, key_to_base64
from ...log import get_logger
from ...protocol.allowedips import IPNetwork
from ...protocol.constants import DEFAULT_MTU
from ...protocol.crypto import public_key as derive_public_key
from ...protocol.device import Device
from ...protocol.flows import ReplyOnlyFilter
from .api import STREAM_IDLE_TIMEOUT, ApiError, MeshClientError, NodeClient
from .backoff import Backoff
from .netmap import IPInterface, MapError, NodeRecord, PeerRecord, parse_node, parse_peer
from .state import CONNECTED, CONNECTING, EXPIRED, REFUSED, UNREACHABLE, StateDir, StateError
from .system import HostNetwork, HostNetworkError

__all__ = ["InterfaceFactory", "MeshError", "MeshInterface", "MeshNode", "NodeConfig"]

ENDPOINT_INTERVAL = 10.0  # seconds between looks at the local addresses
STARTUP_TIMEOUT = 30.0  # seconds from start to the first map applied
# seconds a stream must have lasted for its loss to restart the backoff from the shortest
# delay: a server that drops every stream at once is not hammered twice a second
HEALTHY_STREAM = 10.0
PEERS_SAVE_DELAY = 0.5  # seconds: map changes within this are saved for `wgpy status` once
MAX_ENDPOINTS = 16  # reported at most (the server's limit); IPv4 first, then IPv6
PROGRESS_INTERVAL = 5.0  # seconds between log lines while the login server is silent

T = TypeVar("T")


class MeshInterface(Protocol):
    """What the node needs of an interface; :class:`wgpy.device.interface.Interface` fits."""

    name: str
    device: Device
    closed: asyncio.Event

    @property
    def listen_port(self) -> int: ...

    def flush(self) -> None: ...

    def now(self) -> float: ...

    def close(self, reason: str = ...) -> None: ...


# (name, private key, listen port) -> a running interface
InterfaceFactory = Callable[[str, bytes, int], Awaitable[MeshInterface]]


class MeshError(Exception):
    """The node could not start; the message is one sentence for the user."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _Resync(Exception):
    """Drop the stream and open a new one at once, for a fresh full map."""


@dataclass(frozen=True)
class NodeConfig:
    interface: str
    listen_port: int
    hostname: str
    auth_key: str | None = None  # register with it; else log in with the stored token
    mtu: int = DEFAULT_MTU
    endpoint_interval: float = ENDPOINT_INTERVAL
    stream_idle_timeout: float = STREAM_IDLE_TIMEOUT
    startup_timeout: float = STARTUP_TIMEOUT
    healthy_stream: float = HEALTHY_STREAM


def _short(key: bytes) -> str:
    return key_to_base64(key)[:8]


class MeshNode:
    """One node; see the module docstring. Public attributes are for status and tests."""

    def __init__(
        self,
        config: NodeConfig,
        client: NodeClient,
        state: StateDir,
        private_key: bytes,
        *,
        interface_factory: InterfaceFactory,
        host: HostNetwork,
        backoff: Backoff | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.client = client
        self.state = state
        self._private_key = private_key
        self.public_key = derive_public_key(private_key)
        self.interface_factory = interface_factory
        self.host = host
        self.backoff = backoff or Backoff()
        self.wall_clock = wall_clock
        self.log = get_logger(component="mesh", interface=config.interface)

        self.iface: MeshInterface | None = None
        self.self_node: NodeRecord | None = None
        self.peers: dict[bytes, PeerRecord] = {}  # the map, as applied to the device
        self._peers_save: asyncio.TimerHandle | None = None
        self.map_version: Any = None
        self.expired = False  # expired or refused by the server: no peers
        self.ready = asyncio.Event()  # the first full map is applied
        self.connected = False  # a map stream is open and has delivered its full map
        self.full_maps = 0  # full maps applied (1 + the resyncs)
        self.reported_endpoints: list[str] | None = None
        self._addresses: list[IPInterface] = []
        self._routes: set[IPNetwork] = set()
        self._endpoint_applied: dict[bytes, tuple[str, int] | None] = {}
        self._routes_lock = asyncio.Lock()
        self._connected_at = 0.0
        self._endpoints_due = asyncio.Event()
        self._stop = asyncio.Event()
        self.control: dict[str, Any] = {}  # see _set_control and state.CONTROL_FILE

    # ------------------------------------------------------------------ status

    def inbound_allowed(self, peer_public_key: bytes | str) -> bool:
        """Whether policy lets this peer start flows to this node (else only replies to
        flows this node started are let in). Unknown peers: no."""
        key = (
            key_from_base64(peer_public_key)
            if isinstance(peer_public_key, str)
            else peer_public_key
        )
        peer = self.peers.get(key)
        return peer is not None and peer.reachable_from and not self.expired

    def outbound_allowed(self, peer_public_key: bytes | str) -> bool:
        """Whether policy lets this node start flows to this peer."""
        key = (
            key_from_base64(peer_public_key)
            if isinstance(peer_public_key, str)
            else peer_public_key
        )
        peer = self.peers.get(key)
        return peer is not None and peer.can_reach and not self.expired

    def stop(self) -> None:
        """Make :meth:`run` return (the interface is closed)."""
        self._stop.set()

    # ------------------------------------------------------------------ lifecycle

    async def run(self, on_ready: Callable[[MeshNode], None] | None = None) -> None:
        """Start, call ``on_ready`` once the first map is applied, and run until
        :meth:`stop` or the interface goes away. MeshError if it cannot start."""
        tasks: list[asyncio.Task[Any]] = []
        try:
            # what can fail here is tried before the server hears of the node: a name that
            # is taken or a port in use leaves nothing registered
            iface = self.iface = await self._open_interface()
            self._set_control(CONNECTING)
            node = await self._unless_stopped(self._log_in())
            if node is None:
                return  # stopped (Ctrl-C, SIGTERM) while logging in: nothing more is sent
            await self._configure_host(iface, node)
            await self._report_endpoints()
            stream = asyncio.create_task(self._stream_loop())
            stopped = asyncio.create_task(self._stop.wait())
            closed = asyncio.create_task(iface.closed.wait())
            ready = asyncio.create_task(self.ready.wait())
            tasks += [stream, stopped, closed, ready]
            done, _ = await asyncio.wait(
                [stream, stopped, closed, ready],
                timeout=self.config.startup_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if stream in done:
                stream.result()  # raises MeshError: it gives up only before the first map
            if closed in done:
                raise MeshError(f"the interface {iface.name} went away while starting")
            if not done:
                raise MeshError(
                    f"the coordination server at {self.client.base_url} sent no map within "
                    f"{self.config.startup_timeout:g} seconds"
                )
            if ready not in done:
                return  # stopped while starting
            self.log.info(
                "mesh node up",
                addresses=[str(a) for a in self._addresses],
                peers=len(self.peers),
                listen_port=iface.listen_port,
            )
            if on_ready is not None:
                on_ready(self)
            tasks.append(asyncio.create_task(self._endpoint_loop()))
            done, _ = await asyncio.wait(
                [stream, stopped, closed, tasks[-1]], return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                if task is stream or task is tasks[-1]:
                    task.result()  # a bug: let it be seen
            if closed in done:
                self.log.error("interface closed; mesh node stops", reason=_reason(iface))
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self._peers_save is not None:  # the last change, saved now
                self._peers_save.cancel()
                self._save_peers()
            if self.iface is not None:
                self.iface.close("mesh node stopped")

    async def _unless_stopped(self, work: Awaitable[T]) -> T | None:
        """``work``'s result, or None if :meth:`stop` came first (``work`` is cancelled: a
        request in flight is abandoned, its connection closed)."""
        task = asyncio.ensure_future(work)
        stopped = asyncio.create_task(self._stop.wait())
        started = asyncio.get_running_loop().time()
        try:
            while not (task.done() or stopped.done()):
                await asyncio.wait(
                    [task, stopped], timeout=PROGRESS_INTERVAL, return_when=asyncio.FIRST_COMPLETED
                )
                if not (task.done() or stopped.done()):  # a silent server: say so
                    waited = round(asyncio.get_running_loop().time() - started)
                    self.log.info(
                        f"waiting for the login server at {self.client.base_url} ({waited} s)"
                    )
        finally:
            stopped.cancel()
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if task.cancelled():
            self.log.info("stopped while logging in: the login was abandoned")
            return None
        return task.result()

    async def _log_in(self) -> NodeRecord:
        public = key_to_base64(self.public_key)
        hostname = self.config.hostname
        try:
            if self.config.auth_key is not None:
                raw, token = await self.client.register(self.config.auth_key, public, hostname)
                self.state.write_token(token)
                what = "registered"
            else:
                raw = await self.client.login(public, hostname)
                what = "logged in"
        except ApiError as e:
            self._set_control(REFUSED if e.unauthorized else UNREACHABLE, e.message)
            if self.config.auth_key is not None:
                raise MeshError(f"the server refused to register this node: {e.message}") from None
            if e.unauthorized:
                raise MeshError(
                    f"the server no longer accepts this node's token ({e.message.rstrip('.')}); "
                    "register again with --auth-key"
                ) from None
            raise MeshError(f"the server refused to log this node in: {e.message}") from None
        except MeshClientError as e:
            self._set_control(UNREACHABLE, e.message)
            raise MeshError(e.message) from None
        except StateError as e:
            raise MeshError(e.message) from None
        try:
            node = parse_node(raw)
        except MapError as e:
            raise MeshError(f"the server's description of this node is unusable: {e}") from None
        if not node.addresses:
            raise MeshError("the server gave this node no overlay address")
        self._store_node(node)
        self.log.info(what, hostname=node.hostname, addresses=[str(a) for a in node.addresses])
        return node

    async def _open_interface(self) -> MeshInterface:
        name, port = self.config.interface, self.config.listen_port
        try:
            return await self.interface_factory(name, self._private_key, port)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise MeshError(
                    f"cannot create {name}: UDP port {port} or its control socket is in use; "
                    "choose another --listen-port or --interface"
                ) from None
            raise MeshError(f"cannot create the interface {name}: {e.strerror or e}") from None

    async def _configure_host(self, iface: MeshInterface, node: NodeRecord) -> None:
        try:
            await self._sync_addresses(iface, node.addresses, strict=True)
            await self.host.link_up(iface.name, self.config.mtu)
        except HostNetworkError as e:
            raise MeshError(str(e)) from None
        self.self_node = node

    # ------------------------------------------------------------------ the map stream

    async def _stream_loop(self) -> None:
        """Read the map stream forever; before the first map, fail with MeshError."""
        while True:
            resync = False
            try:
                async with contextlib.aclosing(
                    self.client.map_stream(self.config.stream_idle_timeout)
                ) as stream:
                    async for message in stream:
                        await self._handle(message)
                reason = "the server ended the map stream"
                self._set_control(UNREACHABLE, reason)
            except _Resync:
                reason, resync = "a fresh map is needed", True
            except ApiError as e:
                self._set_control(REFUSED if e.unauthorized else UNREACHABLE, e.message)
                if not self.ready.is_set():
                    raise MeshError(f"the server refused the map stream: {e.message}") from None
                reason = e.message
                if e.unauthorized:
                    self._tear_down(f"the server refused this node's token: {e.message}")
            except MeshClientError as e:
                self._set_control(UNREACHABLE, e.message)
                if not self.ready.is_set():
                    raise MeshError(e.message) from None
                reason = e.message
            finally:
                was_connected, self.connected = self.connected, False
            if not self.ready.is_set():
                raise MeshError(f"{reason} before sending the map")
            lasted = asyncio.get_running_loop().time() - self._connected_at
            if was_connected and lasted >= self.config.healthy_stream:
                self.backoff.reset()
            delay = 0.0 if resync else self.backoff.next_delay()
            log = self.log.warning if was_connected else self.log.info
            log(
                "map stream lost: the data plane stays as it is; reconnecting",
                reason=reason,
                peers=len(self.device.peers),
                retry_in=round(delay, 2),
            )
            await asyncio.sleep(delay)

    @property
    def device(self) -> Device:
        assert self.iface is not None, "the interface is not open yet"
        return self.iface.device

    async def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "keepalive":
            return
        if kind == "full":
            await self._apply_full(message)
        elif kind == "peer_upsert":
            if self.expired:
                return
            try:
                peer = parse_peer(message.get("peer"))
            except MapError as e:
                self.log.warning("unusable peer in the map: skipped", error=str(e))
                return
            self._upsert(peer)
        elif kind == "peer_online":
            # only what `wgpy status` would show: nothing to change on the interface
            with contextlib.suppress(ValueError):
                key = key_from_base64(str(message.get("public_key")))
                record = self.peers.get(key)
                online = message.get("online")
                if record is not None and isinstance(online, bool):
                    self.peers[key] = dataclasses.replace(record, online=online)
                    self._peers_changed()
            return
        elif kind == "peer_remove":
            try:
                key = key_from_base64(str(message.get("public_key")))
            except ValueError:
                self.log.warning("peer_remove without a valid public key: skipped")
                return
            self._remove(key)
        elif kind == "self":
            try:
                node = parse_node(message.get("self"))
            except MapError as e:
                self.log.warning("unusable self update: skipped", error=str(e))
                return
            await self._apply_self(node, in_full_map=False)
        else:
            self.log.debug("unknown map message: ignored", type=kind)
            return
        if self.iface is not None:
            self.iface.flush()
        await self._sync_routes(strict=not self.ready.is_set())
        if kind == "full":
            self._full_map_applied()
        self._peers_changed()

    def _peers_changed(self) -> None:
        """Save the peer list for `wgpy status`, at most every PEERS_SAVE_DELAY seconds."""
        if self._peers_save is None:
            loop = asyncio.get_running_loop()
            self._peers_save = loop.call_later(PEERS_SAVE_DELAY, self._save_peers)

    def _save_peers(self) -> None:
        self._peers_save = None
        peers = [
            {
                "public_key": key_to_base64(p.public_key),
                "hostname": p.hostname,
                "user": p.user,
                "addresses": [str(n) for n in p.allowed_ips],
                "endpoints": list(p.endpoints),
                "tags": list(p.tags),
                "online": p.online,
                "can_reach": p.can_reach,
                "reachable_from": p.reachable_from,
            }
            for p in self.peers.values()
        ]
        try:
            self.state.write_peers(peers)
        except StateError as e:
            self.log.warning("cannot save the peer list", error=e.message)

    async def _apply_full(self, message: dict[str, Any]) -> None:
        node: NodeRecord | None
        try:
            node = parse_node(message.get("self"))
        except MapError as e:
            self.log.error("the full map's self is unusable: kept as it was", error=str(e))
            node = None
        if node is not None:
            await self._apply_self(node, in_full_map=True)
        self.map_version = message.get("version")
        desired: dict[bytes, PeerRecord] = {}
        entries = message.get("peers")
        for entry in entries if isinstance(entries, list) else []:
            try:
                peer = parse_peer(entry)
            except MapError as e:
                self.log.warning("unusable peer in the map: skipped", error=str(e))
                continue
            if peer.public_key != self.public_key:
                desired[peer.public_key] = peer
        if self.expired:
            desired = {}
        for key in list(self.device.peers):
            if key not in desired:
                self._remove(key)
        for peer in desired.values():
            self._upsert(peer)

    def _full_map_applied(self) -> None:
        self.full_maps += 1
        if not self.expired:
            self._set_control(CONNECTED)
        if not self.connected and self.ready.is_set():
            self.log.info("map stream restored", peers=len(self.peers), version=self.map_version)
            self.reported_endpoints = None  # tell the server again where we are
            self._endpoints_due.set()
        if not self.connected:
            self._connected_at = asyncio.get_running_loop().time()
        self.connected = True
        self.ready.set()

    async def _apply_self(self, node: NodeRecord, *, in_full_map: bool) -> None:
        self.self_node = node
        self._store_node(node)
        if node.expired(self.wall_clock()):
            self._tear_down("this node has expired at the coordination server")
            self._set_control(EXPIRED, "the node's key has expired at the server")
        elif self.expired:
            self.expired = False
            self._set_control(CONNECTED)
            self.log.info("this node is valid again at the coordination server")
            if not in_full_map:
                raise _Resync()
        if self.iface is not None and node.addresses:
            try:
                await self._sync_addresses(self.iface, node.addresses, strict=False)
            except HostNetworkError as e:  # pragma: no cover - strict=False logs instead
                self.log.error("cannot change the overlay addresses", error=str(e))

    def _set_control(self, state: str, error: str | None = None) -> None:
        """Record the control plane's state for ``wgpy status`` when it changes (``since``
        is kept while the state stays the same: unreachable since the first failure)."""
        previous = self.control
        if previous.get("state") == state and previous.get("error") == error:
            return
        since = previous.get("since") if previous.get("state") == state else None
        self.control = {
            "state": state,
            "since": since if isinstance(since, float) else self.wall_clock(),
            "error": error,
            "server": self.client.base_url,
        }
        try:
            self.state.write_control(self.control)
        except StateError as e:
            self.log.warning("cannot save the control state", error=e.message)

    def _store_node(self, node: NodeRecord) -> None:
        try:
            self.state.write_node(node.raw)
        except StateError as e:
            self.log.warning("cannot save the node record", error=e.message)

    def _tear_down(self, why: str) -> None:
        if not self.expired or self.device.peers:
            self.log.error(
                f"{why}: all peers are removed until it is logged in again "
                "(wgpy up --login-server URL --auth-key KEY)",
                peers=len(self.device.peers),
            )
        self.expired = True
        for key in list(self.device.peers):
            self._remove(key)

    # ------------------------------------------------------------------ peers

    def _upsert(self, peer: PeerRecord) -> None:
        if peer.public_key == self.public_key:
            return
        device = self.device
        key = peer.public_key
        endpoint = peer.endpoint
        existing = device.peers.get(key)
        if existing is None:
            wg_peer = device.add_peer(
                key, endpoint=endpoint, allowed_ips=[str(n) for n in peer.allowed_ips]
            )
            self.log.info(
                "peer added",
                peer=_short(key),
                hostname=peer.hostname,
                allowed_ips=[str(n) for n in peer.allowed_ips],
                endpoint=None if endpoint is None else str(Endpoint(*endpoint)),
            )
        else:
            wg_peer = existing
            if set(device.allowed_ips.prefixes(wg_peer)) != set(peer.allowed_ips):
                device.set_allowed_ips(wg_peer, peer.allowed_ips)
            # the server's endpoint replaces the current one only when the server's view
            # changed: a peer that roamed (WireGuard learns that from its packets) keeps
            # the address it roamed to
            if endpoint is not None and self._endpoint_applied.get(key) != endpoint:
                device.set_endpoint(wg_peer, endpoint)
            self.log.debug("peer updated", peer=_short(key), hostname=peer.hostname)
        self._endpoint_applied[key] = endpoint
        if peer.reachable_from:
            device.set_inbound_filter(wg_peer, None)
        elif wg_peer.inbound_filter is None:
            device.set_inbound_filter(wg_peer, ReplyOnlyFilter())
        self.peers[key] = peer
        if self.iface is not None:
            device.send_staged(wg_peer, self.iface.now())

    def _remove(self, key: bytes) -> None:
        peer = self.peers.pop(key, None)
        self._endpoint_applied.pop(key, None)
        if key in self.device.peers:
            self.device.remove_peer(key)
            self.log.info(
                "peer removed", peer=_short(key), hostname=peer.hostname if peer else None
            )

    # ------------------------------------------------------------------ host network

    async def _sync_addresses(
        self, iface: MeshInterface, wanted: list[IPInterface], *, strict: bool
    ) -> None:
        for address in self._addresses:
            if address not in wanted:
                try:
                    await self.host.remove_address(iface.name, address)
                except HostNetworkError as e:
                    self.log.warning("cannot remove an old overlay address", error=str(e))
        current: list[IPInterface] = []
        for address in wanted:
            if address in self._addresses:
                current.append(address)
                continue
            try:
                await self.host.add_address(iface.name, address)
            except HostNetworkError as e:
                if strict and address.version == 4:
                    raise
                self.log.error("cannot add an overlay address", error=str(e))
                continue
            current.append(address)
        self._addresses = current

    async def _sync_routes(self, *, strict: bool) -> None:
        """Route every allowed IP of the device's peers through the interface, no more."""
        if self.iface is None:
            return
        async with self._routes_lock:
            device = self.device
            wanted = {n for p in device.peers.values() for n in device.allowed_ips.prefixes(p)}
            add = sorted(wanted - self._routes, key=_route_order)
            remove = sorted(self._routes - wanted, key=_route_order)
            if not add and not remove:
                return
            try:
                await self.host.set_routes(self.iface.name, add, remove)
            except HostNetworkError as e:
                if strict:
                    raise MeshError(str(e)) from None
                self.log.error("cannot update the routes; will try again", error=str(e))
                self._routes -= set(remove)  # the additions are tried again next time
                return
            self._routes = wanted

    # ------------------------------------------------------------------ endpoints

    async def _endpoint_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.endpoint_interval):
                    await self._endpoints_due.wait()
            self._endpoints_due.clear()
            node = self.self_node
            if node is not None and not self.expired and node.expired(self.wall_clock()):
                self._tear_down("this node's key has expired")
                self._set_control(EXPIRED, "the node's key has expired")
                await self._sync_routes(strict=False)
            await self._report_endpoints()

    async def _report_endpoints(self) -> None:
        """Tell the server this node's endpoints if they changed (failures: next time)."""
        if self.iface is None:
            return
        try:
            addresses = await self.host.local_addresses(self.iface.name)
        except HostNetworkError as e:
            self.log.warning("cannot list the local addresses", error=str(e))
            return
        port = self.iface.listen_port
        endpoints = [str(Endpoint.from_address(a, port)) for a in addresses][:MAX_ENDPOINTS]
        if endpoints == self.reported_endpoints:
            return
        try:
            await self.client.report_endpoints(endpoints)
        except MeshClientError as e:
            self.log.warning("cannot report the endpoints; will try again", error=e.message)
            return
        self.reported_endpoints = endpoints
        self.log.info("endpoints reported", endpoints=endpoints)


def _route_order(network: IPNetwork) -> tuple[int, int, int]:
    return network.version, -network.prefixlen, int(network.network_address)


def _reason(iface: MeshInterface) -> str:
    return str(getattr(iface, "close_reason", "") or "closed")
