"""A running mesh node: one WireGuard interface kept in step with the server's map.

:meth:`MeshNode.run` logs in (registers with a pre-auth key, or logs in again with the stored
node token), creates the interface, gives it the node's overlay addresses (/32 and /128) and
brings it up, reports the node's endpoints (and, once the first map is in, its ICE candidates:
:mod:`wgpy.mesh.client.candidates`, STUN through the WireGuard socket; the NAT traversal on the
interface is :mod:`wgpy.mesh.client.traversal`'s), and then keeps ONE map stream open:

- the first message is the full map: the device's peers are made to match it (added,
  updated, removed), with a route per allowed IP; the node is then ready;
- deltas (``peer_upsert``, ``peer_remove``, ``self``) are applied as they arrive;
- when the stream breaks, the data plane is left exactly as it is (peers are never removed
  because the server is unreachable) and the node reconnects with exponential backoff and
  jitter; the fresh full map that follows is applied as a diff;
- a ``self`` update that says the node has expired (or a server that no longer accepts the
  node's token) removes every peer, and says so in the log.

What each message asks of the node (which peers to add, change or remove, whether it has
expired) is worked out without I/O by :mod:`wgpy.mesh.client.reconcile`, one function per
message type; this module keeps the lifecycle (login, the stream, backoff, endpoints) and
applies the operations, the device's in one place (:meth:`MeshNode._apply_to_device`); the
host's addresses and routes are :mod:`wgpy.mesh.client.hostnet`'s, and the node's resolver
(``names``, :mod:`wgpy.mesh.client.nameservice`) starts once the first map is applied and
hears of every change after it.

Each peer's policy flags are kept: :meth:`MeshNode.inbound_allowed` says whether a peer may
start flows to this node, and a peer that may not gets a reply-only inbound filter in the
device. The interface and the host's network configuration come through seams
(``interface_factory``, :class:`~wgpy.mesh.client.system.HostNetwork`) so that tests run the
node against a real :class:`~wgpy.protocol.device.Device` without a TUN.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from ...endpoint import Endpoint
from ...keys import key_from_base64, key_to_base64
from ...log import get_logger
from ...machinecert import MachineCertError
from ...nat.discovery import IceCredentials
from ...nat.lifetime import LifetimeWatch
from ...nat.paths import KEEPALIVE_INTERVAL, PathManager
from ...nat.relay import RelayManager
from ...nat.stunmux import StunMux
from ...protocol.constants import DEFAULT_MTU
from ...protocol.crypto import public_key as derive_public_key
from ...protocol.device import Device
from ...protocol.flows import ReplyOnlyFilter
from . import reconcile
from .api import STREAM_IDLE_TIMEOUT, ApiError, MeshClientError, NodeClient
from .backoff import Backoff
from .candidates import CANDIDATE_INTERVAL, CandidateReporter
from .dns import overlay_addresses
from .exitnode import choose as choose_exit_node
from .exitroute import (
    EXIT_ROUTING_FILE,
    ExitRouting,
    Runner,
    check_exit_node_host,
    control_plane_hosts,
    put_back,
    resolve,
    versions_of,
)
from .hostnet import HostNet
from .machine import MachineIdentity
from .nameservice import NameService
from .netmap import DEFAULT_ROUTES, MapError, NodeRecord, PeerRecord, parse_node
from .state import CONNECTED, CONNECTING, EXPIRED, REFUSED, UNREACHABLE, StateDir, StateError
from .subnets import FORWARDING_FILE, SubnetRoutes
from .system import HostNetwork, HostNetworkError
from .traversal import Traversal

__all__ = ["InterfaceFactory", "MeshError", "MeshInterface", "MeshNode", "NodeConfig"]

ENDPOINT_INTERVAL = 10.0  # seconds between looks at the local addresses
STARTUP_TIMEOUT = 30.0  # seconds from start to the first map applied
# seconds a stream must have lasted for its loss to restart the backoff from the shortest
# delay: a server that drops every stream at once is not hammered twice a second
HEALTHY_STREAM = 10.0
QUICK_RETRY_AFTER = 1.0
"""A stream the server ended after serving it this many seconds is asked for again at the
shortest delay: the end was the server's decision, not a failure to back off from."""
PEERS_SAVE_DELAY = 0.5  # seconds: map changes within this are saved for `wgpy status` once
MAX_ENDPOINTS = 16  # reported at most (the server's limit); IPv4 first, then IPv6
PROGRESS_INTERVAL = 5.0  # seconds between log lines while the login server is silent
# seconds the start waits after the first map for --exit-node's peer to be offered in it
EXIT_NODE_WAIT = 5.0
# seconds for each step of the node's stop (its tasks' end, the host's DNS, the exit
# routing, the relays, the forwarding): a step that takes longer is left unfinished and
# logged, so a stop never hangs on one (`wgpy down` kills the node 5 s after SIGTERM)
STOP_STEP_TIMEOUT = 3.0

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
    # the machine certificate and its key (paths): the node proves it with each login
    machine_cert: str | None = None
    machine_key: str | None = None
    mtu: int = DEFAULT_MTU
    endpoint_interval: float = ENDPOINT_INTERVAL
    candidate_interval: float = CANDIDATE_INTERVAL
    # seconds between checks (keepalives) of an idle ICE path: under the NATs' mapping lifetimes
    nat_keepalive: float = KEEPALIVE_INTERVAL
    # measure the NAT's mapping lifetime and keep alive under it (nat_keepalive: at most);
    # False when the user gave --nat-keepalive
    measure_lifetime: bool = True
    stream_idle_timeout: float = STREAM_IDLE_TIMEOUT
    startup_timeout: float = STARTUP_TIMEOUT
    # point the host's resolver at the node's (nameservice.py); `wgpy up`'s default is on
    accept_dns: bool = False
    healthy_stream: float = HEALTHY_STREAM
    # subnet routes: the prefixes this node offers to forward to (checked by the server),
    # whether what it forwards leaves with its own address, whether it takes peers' routes
    advertise_routes: tuple[str, ...] = ()
    snat_subnet_routes: bool = True
    accept_routes: bool = True
    # the peer to send all traffic through (exitnode.check_exit_node's form; "": none), and
    # whether the directly connected networks stay reachable meanwhile
    exit_node: str = ""
    exit_node_allow_lan_access: bool = False
    advertise_exit_node: bool = False  # offer this node as an exit node (the default routes)
    exit_node_wait: float = EXIT_NODE_WAIT


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
        names: NameService | None = None,
        exit_runner: Runner | None = None,
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
        self.names = names  # the node's resolver, fed on every map change (None: none)
        self.log = get_logger(component="mesh", interface=config.interface)
        self.stop_step_timeout = STOP_STEP_TIMEOUT

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
        # NAT traversal (made once the interface is open): ICE credentials for this run
        self.ice = IceCredentials.generate()
        self.candidates = CandidateReporter(client, self.ice, self.log)
        self.traversal: Traversal | None = None
        self.hostnet: HostNet | None = None  # addresses and routes on the host (interface open)
        self.subnets: SubnetRoutes | None = None  # the routes this node advertises (logged in)
        self._own_routes = frozenset(
            ipaddress.ip_network(r, strict=False) for r in config.advertise_routes
        )
        # the exit node (--exit-node): the peer used now, why none is, the policy routing
        self.exit_key: bytes | None = None
        self.exit_problem: str | None = None
        self.exit_routing: ExitRouting | None = None
        self._exit_runner = exit_runner
        self._exit_found = asyncio.Event()  # an exit node was chosen (the start waits for it)
        self._connected_at = 0.0
        self._endpoints_due = asyncio.Event()
        self._stop = asyncio.Event()
        self.control: dict[str, Any] = {}  # see _set_control and state.CONTROL_FILE
        # one small function per map message type; see reconcile for what each asks
        self._handlers: dict[str, Callable[[dict[str, Any]], Awaitable[None]]] = {
            "keepalive": self._on_keepalive,
            "full": self._on_full,
            "peer_upsert": self._on_peer_upsert,
            "peer_remove": self._on_peer_remove,
            "peer_online": self._on_peer_online,
            "self": self._on_self,
        }

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
            hostnet = self.hostnet = HostNet(iface.name, iface.device, self.host, self.log)
            self._put_back_exit_routing()
            if self.config.exit_node:
                self.exit_routing = self._exit_routing(iface)
            self.traversal = self._traversal(iface)
            self.traversal.open()
            self._set_control(CONNECTING)
            node = await self._unless_stopped(self._log_in())
            if node is None:
                return  # stopped (Ctrl-C, SIGTERM) while logging in: nothing more is sent
            await self._configure_host(hostnet, node)
            await self._report_endpoints()
            await self._advertise_routes(iface.name)
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
            if self.names is not None and self.self_node is not None:
                await self.names.start(self.self_node, self.peers.values())
            if not await self._exit_node_found(stream, stopped, closed):
                if self._stop.is_set() or iface.closed.is_set():
                    return
                raise MeshError(f"cannot use the exit node: {self.exit_problem}")
            self._dns_follows_exit_node()
            self.log.info(
                "mesh node up",
                addresses=[str(a) for a in hostnet.addresses],
                peers=len(self.peers),
                listen_port=iface.listen_port,
            )
            if on_ready is not None:
                on_ready(self)
            loops = [asyncio.create_task(self._endpoint_loop()), *self.traversal.start()]
            tasks += loops
            done, _ = await asyncio.wait(
                [stream, stopped, closed, *loops], return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                if task is stream or task in loops:
                    task.result()  # a bug: let it be seen
            if closed in done:
                self.log.error("interface closed; mesh node stops", reason=_reason(iface))
        finally:
            await self._end_tasks(tasks)
            if self._peers_save is not None:  # the last change, saved now
                self._peers_save.cancel()
                self._save_peers()
            if self.names is not None:  # the host's DNS put back while the link exists
                await self._stop_step("the host's DNS put back", self.names.close())
            if self.exit_routing is not None:
                await self._stop_step("the exit routing removed", self.exit_routing.remove())
            if self.traversal is not None:
                await self._stop_step("the relays closed", self.traversal.close())
            if self.subnets is not None:
                await self._stop_step("the forwarding put back", self.subnets.close())
            if self.iface is not None:
                self.iface.close("mesh node stopped")

    async def _end_tasks(self, tasks: list[asyncio.Task[Any]]) -> None:
        """Cancel the node's tasks and wait for them, at most :attr:`stop_step_timeout`
        seconds; those still running then are named in the log (a task that ignores its
        cancellation is a bug, and the stop goes on without it)."""
        for task in tasks:
            task.cancel()
        if not tasks:
            return
        done, pending = await asyncio.wait(tasks, timeout=self.stop_step_timeout)
        for task in done:  # retrieved, as gather would: the run has said what went wrong
            if not task.cancelled():
                task.exception()
        if pending:
            self.log.error(
                "tasks did not end when cancelled; the node stops without them",
                tasks=sorted(t.get_name() for t in pending),
                seconds=self.stop_step_timeout,
            )

    async def _stop_step(self, step: str, work: Awaitable[Any]) -> None:
        """One step of the node's stop, given at most :attr:`stop_step_timeout` seconds;
        what it still waits for then is cancelled and the step logged as unfinished."""
        try:
            async with asyncio.timeout(self.stop_step_timeout):
                await work
        except TimeoutError:
            self.log.error(
                "a step of the node's stop took too long; left unfinished",
                step=step,
                seconds=self.stop_step_timeout,
            )

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
            proof = await self._machine_proof()
            if self.config.auth_key is not None:
                raw, token = await self.client.register(
                    self.config.auth_key, public, hostname, proof=proof
                )
                self.state.write_token(token)
                what = "registered"
            else:
                raw = await self.client.login(public, hostname, proof=proof)
                what = "logged in"
        except ApiError as e:
            self._set_control(REFUSED if e.unauthorized else UNREACHABLE, e.message)
            if self.config.auth_key is not None:
                raise MeshError(f"the server refused to register this node: {e.message}") from None
            if e.unauthorized:
                raise MeshError(
                    f"the server no longer accepts this node's token ({e.message.rstrip('.')}); "
                    "run wgpy up again without an auth key to log in, or register again with "
                    "--auth-key"
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

    async def _machine_proof(self) -> dict[str, str] | None:
        """The machine proof for this login (a fresh challenge from the server, signed with
        the machine key), when the node has a machine certificate."""
        config = self.config
        if config.machine_cert is None or config.machine_key is None:
            return None
        try:
            identity = MachineIdentity.load(Path(config.machine_key), Path(config.machine_cert))
        except MachineCertError as e:
            raise MeshError(str(e)) from None
        return await identity.proof(self.client, self.public_key)

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

    async def _configure_host(self, hostnet: HostNet, node: NodeRecord) -> None:
        try:
            await hostnet.configure(node.addresses, self.config.mtu)
        except HostNetworkError as e:
            raise MeshError(str(e)) from None
        self.self_node = node

    async def _advertise_routes(self, interface: str) -> None:
        """Forward for and advertise ``--advertise-routes`` (an empty list withdraws the
        last one); MeshError if the host cannot forward or the server refuses the list."""
        config = self.config
        routes = list(config.advertise_routes)
        if config.advertise_exit_node:  # both default routes, forwarded and masqueraded
            try:
                await check_exit_node_host(interface)
            except HostNetworkError as e:
                raise MeshError(f"cannot forward as an exit node: {e}") from None
            routes += [str(n) for n in DEFAULT_ROUTES]
        self.subnets = SubnetRoutes(
            interface,
            routes,
            snat=config.snat_subnet_routes or config.advertise_exit_node,
            log=self.log,
            record=self.state.path / FORWARDING_FILE,
        )
        try:
            await self.subnets.start(self.client)
        except HostNetworkError as e:
            raise MeshError(f"cannot forward for the advertised routes: {e}") from None
        except ApiError as e:
            raise MeshError(f"the server refused the advertised routes: {e.message}") from None
        except MeshClientError as e:
            raise MeshError(e.message) from None

    # ------------------------------------------------------------------ the map stream

    async def _stream_loop(self) -> None:
        """Read the map stream forever; before the first map, fail with MeshError."""
        while True:
            resync = ended = False
            try:
                async with contextlib.aclosing(
                    self.client.map_stream(self.config.stream_idle_timeout)
                ) as stream:
                    async for message in stream:
                        await self._handle(message)
                reason, ended = "the server ended the map stream", True
                self._set_control(UNREACHABLE, reason)
            except _Resync:
                reason, resync = "a fresh map is needed", True
            except ApiError as e:
                self._set_control(REFUSED if e.unauthorized else UNREACHABLE, e.message)
                if not self.ready.is_set():
                    raise MeshError(f"the server refused the map stream: {e.message}") from None
                reason = e.message
                if e.unauthorized:
                    await self._tear_down(f"the server refused this node's token: {e.message}")
            except MeshClientError as e:
                self._set_control(UNREACHABLE, e.message)
                if not self.ready.is_set():
                    raise MeshError(e.message) from None
                reason = e.message
            finally:
                was_connected, self.connected = self.connected, False
            if not self.ready.is_set():
                raise MeshError(f"{reason} before sending the map")
            now = asyncio.get_running_loop().time()
            if was_connected and now - self._connected_at >= self.config.healthy_stream:
                self.backoff.reset()
            delay = 0.0 if resync else self.backoff.next_delay()
            if ended and was_connected and now - self._connected_at >= QUICK_RETRY_AFTER:
                # the server ended a stream it had served a while, for a reason of its own
                # (this node deleted or expired, a replica stopping): ask again soon, not after
                # the backoff an earlier outage left; a server that ends its streams at once
                # still meets the backoff
                delay = min(delay, self.backoff.first_delay())
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

    # ------------------------------------------------------------------ NAT traversal

    def _traversal(self, iface: MeshInterface) -> Traversal:
        config = self.config
        return Traversal(
            iface,
            public_key=self.public_key,
            candidates=self.candidates,
            host=self.host,
            state=self.state,
            ca_cert=getattr(self.client, "ca_cert", None),
            nat_keepalive=config.nat_keepalive,
            measure_lifetime=config.measure_lifetime,
            candidate_interval=config.candidate_interval,
            on_peers_changed=self._peers_changed,
            on_relay_status=lambda status: self._write_control({**self.control, "relay": status}),
            on_addresses_changed=self._endpoints_due.set,
            log=self.log,
        )

    def addresses_changed(self) -> None:
        """The host's addresses, links or routes changed (readdressed, moved to another
        network): its endpoints and candidates are gathered again now, and reported if they
        changed; peers' checks follow the new candidates."""
        if self.traversal is not None:
            self.traversal.addresses_changed()
        else:
            self._endpoints_due.set()

    @property
    def mux(self) -> StunMux | None:
        return self.traversal.mux if self.traversal is not None else None

    @property
    def paths(self) -> PathManager | None:
        return self.traversal.paths if self.traversal is not None else None

    @property
    def relays(self) -> RelayManager | None:
        return self.traversal.relays if self.traversal is not None else None

    @property
    def lifetime(self) -> LifetimeWatch | None:
        return self.traversal.lifetime if self.traversal is not None else None

    @property
    def keepalive(self) -> float:
        """Seconds between keepalives (see :attr:`.traversal.Traversal.keepalive`)."""
        return self.traversal.keepalive if self.traversal is not None else self.config.nat_keepalive

    async def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        handler = self._handlers.get(kind)
        if handler is None:
            self.log.debug("unknown map message: ignored", type=kind)
            return
        await handler(message)

    async def _on_keepalive(self, message: dict[str, Any]) -> None:
        """The server is there; nothing changes."""

    async def _on_full(self, message: dict[str, Any]) -> None:
        await self._apply(reconcile.full_map(message, self._current()))
        await self._settle()
        self._full_map_applied()

    async def _on_peer_upsert(self, message: dict[str, Any]) -> None:
        await self._apply(reconcile.peer_upsert(message, self._current()))
        await self._settle()

    async def _on_peer_remove(self, message: dict[str, Any]) -> None:
        await self._apply(reconcile.peer_remove(message, self._current()))
        await self._settle()

    async def _on_peer_online(self, message: dict[str, Any]) -> None:
        # only what `wgpy status` would show: nothing to change on the interface
        plan = reconcile.peer_online(message, self._current())
        await self._apply(plan)
        if plan.operations:
            self._peers_changed()

    async def _on_self(self, message: dict[str, Any]) -> None:
        await self._apply(reconcile.self_update(message, self._current()))
        await self._settle()

    async def _settle(self) -> None:
        """After the map changed: send what the device has, route what its peers' allowed
        IPs cover, and save the peer list for `wgpy status`."""
        if self.iface is not None:
            self.iface.flush()
        await self._sync_routes(strict=not self.ready.is_set())
        if self.names is not None:
            self.names.update(self.self_node, self.peers.values())
        await self._sync_exit_node(strict=not self.ready.is_set())
        self._dns_follows_exit_node()
        await self._restrict_forwarding()
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
                "name": p.name,
                "addresses": [str(n) for n in p.allowed_ips],
                "endpoints": list(p.endpoints),
                "tags": list(p.tags),
                "online": p.online,
                "can_reach": p.can_reach,
                "reachable_from": p.reachable_from,
                "routes": [str(n) for n in p.routes],
                "exit_node": p.exit_node,  # it offers to be this node's exit node
                "exit_node_in_use": p.public_key == self.exit_key,
                **(self.traversal.path_json(p.public_key) if self.traversal else {}),
            }
            for p in self.peers.values()
        ]
        try:
            self.state.write_peers(peers)
        except StateError as e:
            self.log.warning("cannot save the peer list", error=e.message)

    def _full_map_applied(self) -> None:
        self.full_maps += 1
        if not self.expired:
            self._set_control(CONNECTED)
        if not self.connected and self.ready.is_set():
            self.log.info("map stream restored", peers=len(self.peers), version=self.map_version)
            self.reported_endpoints = None  # tell the server again where we are
            self._endpoints_due.set()
            self.candidates.forget_reported()
            if self.traversal is not None:
                self.traversal.candidates_due.set()
        if not self.connected:
            self._connected_at = asyncio.get_running_loop().time()
        self.connected = True
        self.ready.set()

    # ------------------------------------------------------------------ applying a plan

    def _current(self) -> reconcile.Current:
        return reconcile.Current(
            public_key=self.public_key,
            peers=self.peers,
            device=_DeviceView(self.device),
            expired=self.expired,
            now=self.wall_clock(),
            accept_routes=self.config.accept_routes,
            own_routes=self._own_routes,
            exit_node=self.exit_key,
        )

    async def _apply(self, plan: reconcile.Plan) -> None:
        """Carry out ``plan``'s operations in order (the device's through
        :meth:`_apply_to_device`)."""
        for skipped in plan.skipped:
            log = self.log.error if skipped.level == "error" else self.log.warning
            if skipped.error is None:
                log(skipped.event)
            else:
                log(skipped.event, error=skipped.error)
        keepalives: list[bytes] = []  # peers whose need of WireGuard's keepalive may change
        for op in plan.operations:
            if isinstance(op, reconcile.AddPeer | reconcile.SetIce):
                keepalives.append(op.public_key)
            match op:
                case reconcile.StorePeer(record=record):
                    if record.public_key in self.peers:
                        self.log.debug("peer updated", peer=_short(record.public_key))
                    self.peers[record.public_key] = record
                case reconcile.ForgetPeer(public_key=key):
                    self.peers.pop(key, None)
                case reconcile.SetSelf(node=node):
                    self.self_node = node
                    self._store_node(node)
                case reconcile.SetAddresses(addresses=addresses):
                    if self.hostnet is not None:
                        await self.hostnet.set_addresses(list(addresses))
                case reconcile.SetVersion(version=version):
                    self.map_version = version
                case reconcile.Expire():
                    self._expire(op)
                case reconcile.Revive():
                    self.expired = False
                    self._set_control(CONNECTED)
                    self.log.info("this node is valid again at the coordination server")
                case reconcile.Resync():
                    raise _Resync()
                case reconcile.SetIce():
                    if self.traversal is not None:
                        self.traversal.set_ice(op)
                case _:
                    self._apply_to_device(op)
        if keepalives and self.traversal is not None:
            self.traversal.keep_alive_without_ice(keepalives)

    def _apply_to_device(self, op: reconcile.DeviceOperation) -> None:
        """The one place where the map changes the device."""
        device = self.device
        key = op.public_key
        if isinstance(op, reconcile.AddPeer):
            device.add_peer(key, endpoint=op.endpoint, allowed_ips=[str(n) for n in op.allowed_ips])
            self.log.info(
                "peer added",
                peer=_short(key),
                hostname=op.hostname,
                allowed_ips=[str(n) for n in op.allowed_ips],
                endpoint=None if op.endpoint is None else str(Endpoint(*op.endpoint)),
            )
            return
        if isinstance(op, reconcile.RemovePeer):
            if self.paths is not None:
                self.paths.remove(key)
            device.remove_peer(key)
            self.log.info("peer removed", peer=_short(key), hostname=op.hostname)
            return
        peer = device.peers[key]
        if isinstance(op, reconcile.SetAllowedIPs):
            device.set_allowed_ips(peer, op.allowed_ips)
        elif isinstance(op, reconcile.SetEndpoint):
            if self.paths is None or not self.paths.owns(key):  # ICE's path wins
                device.set_endpoint(peer, op.endpoint)
        elif isinstance(op, reconcile.SetInboundFilter):
            device.set_inbound_filter(peer, ReplyOnlyFilter() if op.reply_only else None)
        elif isinstance(op, reconcile.SendStaged) and self.iface is not None:
            device.send_staged(peer, self.iface.now())

    def _expire(self, op: reconcile.Expire) -> None:
        if op.announce:
            self.log.error(
                f"{op.why}: all peers are removed until it is logged in again "
                "(wgpy up --login-server URL --auth-key KEY)",
                peers=len(self.device.peers),
            )
        self.expired = True
        if op.control_error is not None:
            self._set_control(EXPIRED, op.control_error)

    async def _tear_down(self, why: str) -> None:
        await self._apply(reconcile.tear_down(self._current(), why))

    def _set_control(self, state: str, error: str | None = None) -> None:
        """Record the control plane's state for ``wgpy status`` when it changes (``since``
        is kept while the state stays the same: unreachable since the first failure)."""
        previous = self.control
        if previous.get("state") == state and previous.get("error") == error:
            return
        since = previous.get("since") if previous.get("state") == state else None
        self._write_control(
            {
                "state": state,
                "since": since if isinstance(since, float) else self.wall_clock(),
                "error": error,
                "server": self.client.base_url,
                "relay": previous.get("relay"),
            }
        )

    def _write_control(self, control: dict[str, Any]) -> None:
        self.control = control
        try:
            self.state.write_control(self.control)
        except StateError as e:
            self.log.warning("cannot save the control state", error=e.message)

    def _store_node(self, node: NodeRecord) -> None:
        try:
            self.state.write_node(node.raw)
        except StateError as e:
            self.log.warning("cannot save the node record", error=e.message)

    # ------------------------------------------------------------------ host network

    async def _sync_routes(self, *, strict: bool) -> None:
        """Route every allowed IP of the device's peers through the interface, no more
        (:meth:`.hostnet.HostNet.sync_routes`); MeshError if that fails and ``strict``."""
        if self.hostnet is None:
            return
        try:
            await self.hostnet.sync_routes(strict=strict)
        except HostNetworkError as e:  # strict only: logged otherwise
            raise MeshError(str(e)) from None

    # ------------------------------------------------------------------ exit node

    def _exit_routing(self, iface: MeshInterface) -> ExitRouting:
        def set_fwmark(mark: int) -> None:
            setter = getattr(iface, "set_fwmark", None)
            if setter is not None:
                setter(mark)

        record = self.state.path / EXIT_ROUTING_FILE
        if self._exit_runner is None:
            return ExitRouting(iface.name, set_fwmark, self.log, record=record)
        return ExitRouting(iface.name, set_fwmark, self.log, run=self._exit_runner, record=record)

    def _put_back_exit_routing(self) -> None:
        """The src_valid_mark a killed run that used an exit node turned on, put back."""
        try:
            value = put_back(self.state.path / EXIT_ROUTING_FILE)
        except OSError as e:
            self.log.warning("cannot put back the src_valid_mark of an earlier run", error=str(e))
            return
        if value is not None:
            self.log.info("an earlier run did not put src_valid_mark back; done", value=value)

    async def _exit_node_found(self, *tasks: asyncio.Task[Any]) -> bool:
        """Whether the exit node ``--exit-node`` names is in use, its routing set up (True
        without one), waiting up to ``exit_node_wait`` seconds for the map to offer it (a
        delta just behind the first map, an approval a moment ago) while the stream runs;
        False when stopped."""
        if self.exit_routing is None or self.exit_routing.active:
            return True
        self.log.info("waiting for the exit node to appear in the map", reason=self.exit_problem)
        found = asyncio.create_task(self._exit_found.wait())
        try:
            done, _ = await asyncio.wait(
                [found, *tasks], timeout=self.config.exit_node_wait,
                return_when=asyncio.FIRST_COMPLETED,
            )  # fmt: skip
        finally:
            found.cancel()
        for task in done:
            if task is not found and not task.cancelled() and task.exception() is not None:
                task.result()  # the stream's MeshError, or a bug
        return self.exit_routing.active

    async def _sync_exit_node(self, *, strict: bool) -> None:
        """Use the exit node while the map has it as one for this node (its allowed IPs gain
        the default routes, the host's policy routing sends everything there), and stop when
        it leaves the map or is no longer one; MeshError if the routing cannot be set up and
        ``strict``, else it is logged and tried again after the next change."""
        routing = self.exit_routing
        if routing is None:
            return
        kept = self.peers.get(self.exit_key) if self.exit_key is not None else None
        if kept is not None and kept.exit_node and routing.active:
            return  # still offered: no need to look through the whole map on every change
        choice = choose_exit_node(self.config.exit_node, self.peers)
        if choice.problem != self.exit_problem and choice.problem is not None:
            self.log.warning("the exit node cannot be used now", reason=choice.problem)
        self.exit_problem = choice.problem
        if choice.public_key != self.exit_key:
            old, self.exit_key = self.exit_key, choice.public_key
            if choice.public_key is None:
                await routing.remove()
            await self._apply(reconcile.exit_node_changed(old, self._current()))
            if choice.public_key is not None:
                self.log.info("exit node chosen", peer=_short(choice.public_key), name=choice.name)
        if self.exit_key is None or routing.active or self.hostnet is None:
            return
        nat = self.candidates.nat
        hosts = control_plane_hosts(
            self.client.base_url,
            [e.host for e in nat.stun],
            [u.host for server in nat.turn for u in server.urls],
        )
        try:
            await routing.apply(
                versions_of(self.hostnet.addresses),
                await resolve(hosts),
                self.config.exit_node_allow_lan_access,
            )
        except HostNetworkError as e:
            if strict:
                raise MeshError(str(e)) from None
            self.exit_problem = f"the routing through it cannot be set up: {e}"
            self.log.error("cannot route through the exit node; will try again", error=str(e))
            return
        self._exit_found.set()

    async def _restrict_forwarding(self) -> None:
        """A router forwards from each peer only to the routes the map says it may use
        through this node (PEER ``routed_for``); the rest from the mesh is dropped."""
        if self.subnets is None:
            return
        grants = [(overlay_addresses(p), p.routed_for) for p in self.peers.values() if p.routed_for]
        try:
            await self.subnets.restrict(grants)
        except HostNetworkError as e:
            self.log.error(
                "cannot update what this router forwards; the last rules stay", error=str(e)
            )

    def _dns_follows_exit_node(self) -> None:
        """While the exit node is in use, the resolver forwards the names that are not the
        mesh's to the exit node's resolver (at its overlay address); else to the host's."""
        if self.names is None:
            return
        peer = self.peers.get(self.exit_key) if self.exit_key is not None else None
        active = self.exit_routing is not None and self.exit_routing.active
        addresses = overlay_addresses(peer) if peer is not None and active else ()
        ordered = sorted(addresses, key=lambda a: a.version)  # its IPv4 address first
        self.names.follow_exit_node(ordered[0] if ordered else None)

    # ------------------------------------------------------------------ endpoints

    async def _endpoint_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.endpoint_interval):
                    await self._endpoints_due.wait()
            self._endpoints_due.clear()
            plan = reconcile.key_expired(self.self_node, self._current())
            if plan.operations:
                await self._apply(plan)
                await self._sync_routes(strict=False)
                await self._sync_exit_node(strict=False)
                self._dns_follows_exit_node()
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
        if self.traversal is not None:  # the host candidates too
            self.traversal.addresses_seen(addresses)
        try:
            await self.client.report_endpoints(endpoints)
        except MeshClientError as e:
            self.log.warning("cannot report the endpoints; will try again", error=e.message)
            return
        self.reported_endpoints = endpoints
        self.log.info("endpoints reported", endpoints=endpoints)


class _DeviceView(Mapping[bytes, reconcile.DevicePeer]):
    """The device's peers as :mod:`.reconcile` sees them, read when asked."""

    def __init__(self, device: Device) -> None:
        self._device = device

    def __getitem__(self, key: bytes) -> reconcile.DevicePeer:
        peer = self._device.peers[key]
        return reconcile.DevicePeer(
            allowed_ips=frozenset(self._device.allowed_ips.prefixes(peer)),
            reply_only=peer.inbound_filter is not None,
        )

    def __contains__(self, key: object) -> bool:  # without reading the peer's prefixes
        return key in self._device.peers

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._device.peers)

    def __len__(self) -> int:
        return len(self._device.peers)


def _reason(iface: MeshInterface) -> str:
    return str(getattr(iface, "close_reason", "") or "closed")
