"""A mesh node's NAT traversal: everything on its WireGuard port besides WireGuard.

:class:`Traversal` is made by :class:`~wgpy.mesh.client.node.MeshNode` once its interface is
open, and wires together, on that interface:

- the STUN demultiplexer (:class:`~wgpy.nat.stunmux.StunMux`): STUN through the WireGuard
  socket, for discovery and the peers' checks;
- the path manager (:class:`~wgpy.nat.paths.PathManager`): ICE checks with each peer, and the
  endpoint of each peer with a path;
- the relays (:class:`~wgpy.nat.relay.RelayManager`): this node's relayed candidate;
- the address watch (:class:`~wgpy.mesh.client.addrwatch.AddressWatch`): the host moved;
- the lifetime watch (:class:`~wgpy.nat.lifetime.LifetimeWatch`): the NAT's mapping lifetime,
  and the keepalives under it (ICE paths' checks, WireGuard's for peers without ICE), saved
  in ``nat.json`` for ``wgpy status``;
- the candidate loop: this node's ICE candidates, reported to the coordination server;
- the drops: what the STUN demultiplexer dropped on the WireGuard port (hostile or stray
  datagrams, by reason), saved in ``nat.json`` (``drops``) every :data:`DROPS_INTERVAL` when
  it changed, and logged at most every :data:`DROPS_WARNING_INTERVAL` when it grew.

It gets what it needs from the node as values and callbacks (the node's map, control state
and endpoints stay the node's); it never imports :mod:`.node`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from ...endpoint import Endpoint
from ...keys import key_to_base64
from ...nat.discovery import candidate_list
from ...nat.ice import IceError, parse_remote
from ...nat.lifetime import Lifetime, LifetimeWatch
from ...nat.paths import PathManager, PathState
from ...nat.relay import RelayManager
from ...nat.stunmux import StunMux
from ...protocol.device import Device
from . import reconcile
from .addrwatch import AddressWatch
from .candidates import CandidateReporter
from .state import StateDir, StateError
from .system import HostNetwork, HostNetworkError

__all__ = ["DROPS_INTERVAL", "DROPS_WARNING_INTERVAL", "Traversal", "TraversalInterface"]

DROPS_INTERVAL = 5.0  # seconds between looks at the STUN demultiplexer's drop counters
DROPS_WARNING_INTERVAL = 60.0  # seconds: drops are logged at most this often


class TraversalInterface(Protocol):
    """What traversal needs of the node's interface (:class:`MeshInterface` fits)."""

    name: str
    device: Device

    @property
    def listen_port(self) -> int: ...

    def flush(self) -> None: ...

    def now(self) -> float: ...


def _short(key: bytes) -> str:
    return key_to_base64(key)[:8]


class Traversal:
    """See the module docstring. :meth:`open` makes the parts (in this order: mux, paths,
    relays, address watch, lifetime watch), :meth:`start` their loops, :meth:`close` closes
    them (what :meth:`open` made, if it failed half-way)."""

    def __init__(
        self,
        iface: TraversalInterface,
        *,
        public_key: bytes,
        candidates: CandidateReporter,
        host: HostNetwork,
        state: StateDir,
        ca_cert: str | None,
        nat_keepalive: float,
        measure_lifetime: bool,
        candidate_interval: float,
        on_peers_changed: Callable[[], None],
        on_relay_status: Callable[[dict[str, Any]], None],
        on_addresses_changed: Callable[[], None],
        log: Any,
    ) -> None:
        self.iface = iface
        self.public_key = public_key
        self.candidates = candidates
        self.host = host
        self.state = state
        self.ca_cert = ca_cert
        self.nat_keepalive = nat_keepalive
        self.measure_lifetime = measure_lifetime
        self.candidate_interval = candidate_interval
        self._on_peers_changed = on_peers_changed
        self._on_relay_status = on_relay_status
        self._on_addresses_changed = on_addresses_changed
        self.log = log
        self.mux: StunMux | None = None  # STUN on the WireGuard port
        self.paths: PathManager | None = None  # ICE: which path each peer's packets take
        self.relays: RelayManager | None = None  # TURN: this node's relayed candidate
        self.watch: AddressWatch | None = None
        # seconds between keepalives (ICE paths' checks, WireGuard's for peers without ICE):
        # the configured interval, or less when the NAT's mapping lifetime was measured shorter
        self.keepalive = nat_keepalive
        self.lifetime: LifetimeWatch | None = None
        self.local_addresses: list[Any] = []
        self.candidates_due = asyncio.Event()
        self._nat: dict[str, Any] = {}  # nat.json as last written, without the drops
        self._drops_saved: dict[str, int] = {}
        self._drops_logged: Counter[str] = Counter()  # the drops at the last warning
        self._drops_logged_at = float("-inf")

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> None:
        self.mux = _open_mux(self.iface)
        self.paths = self._open_paths()
        self.relays = self._open_relays()
        self.watch = self._watch_addresses()
        self.lifetime = self._watch_lifetime()

    def start(self) -> list[asyncio.Task[Any]]:
        """The loops, to run until cancelled: the candidate loop, the lifetime watch, the
        look at the drops."""
        loops = [asyncio.create_task(self._candidate_loop())]
        if self.lifetime is not None:
            loops.append(asyncio.create_task(self.lifetime.run()))
        if self.mux is not None:
            loops.append(asyncio.create_task(self._drops_loop()))
        return loops

    async def close(self) -> None:
        if self.watch is not None:
            self.watch.close()
        if self.paths is not None:
            self.paths.close()
        if self.relays is not None:
            await self.relays.close()
        if self.mux is not None:
            self.mux.close()

    # ------------------------------------------------------------------ from the node

    def addresses_seen(self, addresses: list[Any]) -> None:
        """The node read the host's addresses: the host candidates follow them."""
        if addresses != self.local_addresses:
            self.local_addresses = addresses
            self.candidates_due.set()

    def addresses_changed(self) -> None:
        """The host's addresses, links or routes changed (readdressed, moved to another
        network): its endpoints and candidates are gathered again now, and reported if they
        changed; peers' checks follow the new candidates."""
        self._on_addresses_changed()
        self.candidates_due.set()
        if self.lifetime is not None:
            self.lifetime.changed()  # another network may have another NAT

    def path_json(self, key: bytes) -> dict[str, Any]:
        """The path ICE chose for a peer (kind, endpoint, rtt_ms), where ICE runs, and how
        its checks stand (``checks``: ``running``, ``failed`` (the last round found no
        path), ``none`` (the peer has no candidates: the map's endpoint, roaming))."""
        if self.paths is None:
            return {}
        session = self.paths.session(key)
        if session is None:
            checks = "none"
        elif session.running or not session.rounds:
            checks = "running"
        else:
            checks = "failed" if session.selected is None else "done"
        return {"path": {**self.paths.path(key).to_json(), "checks": checks}}

    def set_ice(self, op: reconcile.SetIce) -> None:
        """The peer's ICE from the map: its path manager checks (again), or stops when the
        peer has none (the map's endpoint and WireGuard's roaming then, as before)."""
        if self.paths is None:
            return
        if not (op.ufrag or op.candidates):
            self.paths.remove(op.public_key)
            return
        try:
            remote, skipped = parse_remote(op.ufrag, op.candidates)
        except IceError as e:
            self.log.warning(
                "the peer's ICE is unusable: no checks", peer=_short(op.public_key), error=str(e)
            )
            self.paths.remove(op.public_key)
            return
        for error in skipped:
            self.log.warning(
                "unusable candidate skipped", peer=_short(op.public_key), error=str(error)
            )
        self.paths.set_remote(op.public_key, remote if remote.candidates else None)

    def keep_alive_without_ice(self, keys: Iterable[bytes] | None = None) -> None:
        """Peers without ICE (an older node whose map entry carries only endpoints) get
        WireGuard's persistent keepalive every :attr:`keepalive` seconds, as a wg-quick user
        behind a NAT sets PersistentKeepalive = 25: the mappings on the way stay open from
        both sides. A peer whose path the path manager keeps has none: its checks are the
        keepalives."""
        device = self.iface.device
        interval = max(1, int(self.keepalive))
        changed = False
        for key in list(device.peers) if keys is None else keys:
            peer = device.peers.get(key)
            if peer is None:
                continue
            has_ice = self.paths is not None and self.paths.session(key) is not None
            wanted = 0 if has_ice else interval
            if peer.persistent_keepalive != wanted:
                # the first one an interval from now: a peer just added may bring its
                # candidates in a moment, and may not know this node yet
                device.set_persistent_keepalive(peer, wanted, self.iface.now(), send_now=False)
                changed = True
        if changed:
            self.iface.flush()

    # ------------------------------------------------------------------ paths

    def _open_paths(self) -> PathManager | None:
        """ICE checks and paths on the WireGuard port: they answer the peers' checks (the
        STUN demultiplexer's requests) and own the endpoints of peers with a path."""
        if self.mux is None:
            return None
        paths = PathManager(
            self.iface,
            self.mux,
            public_key=self.public_key,
            ufrag=self.candidates.ice.ufrag,
            local_candidates=self._local_candidates,
            keepalive_interval=self.nat_keepalive,
            on_change=self._path_changed,
            log=self.log.bind(component="paths"),
        )
        self.mux.on_request = paths.handle_request
        # peers without a path check again with each new list (rounds under way restart)
        self.candidates.on_reported = paths.local_candidates_changed
        return paths

    def _path_changed(self, key: bytes, state: PathState) -> None:
        """A peer's path changed: saved for `wgpy status`; a path that was lost may mean
        that this node's own mapping changed, or that its relay is gone: where STUN sees it
        now is asked at once, and the relay checked."""
        self._on_peers_changed()
        if state.kind == "none":
            self.candidates_due.set()
            if self.relays is not None:
                self.relays.check_now()  # the path may have gone with our relay

    # ------------------------------------------------------------------ relays

    def _open_relays(self) -> RelayManager | None:
        """The TURN relay (allocated once the coordination server names one): its relayed
        candidate is reported with the others, and ICE may select it."""
        iface = self.iface
        receive = getattr(iface, "receive", None)
        if self.paths is None or receive is None:
            return None
        relays = RelayManager(
            receive,
            ssl_context=ssl.create_default_context(cafile=self.ca_cert) if self.ca_cert else None,
            on_change=self.relay_changed,
            on_status=self._relay_status_changed,
            fwmark=getattr(iface, "fwmark", 0),  # the relay bypasses the tunnel as WireGuard does
            log=self.log.bind(component="relay"),
        )
        if hasattr(iface, "on_fwmark"):
            iface.on_fwmark = relays.set_fwmark
        self.candidates.relayed = relays.candidates
        return relays

    def relay_changed(self) -> None:
        """The relayed candidate came, went or moved: report it, and check again."""
        self.candidates.relayed_changed()  # at once, if an update is under way
        self.candidates_due.set()

    def _relay_status_changed(self) -> None:
        """Which relay is in use and which answer, saved for ``wgpy status``."""
        if self.relays is not None:
            self._on_relay_status(self.relays.status())

    # ------------------------------------------------------------------ addresses

    def _watch_addresses(self) -> AddressWatch | None:
        """Netlink announcements of address, link and route changes: the node looks at its
        addresses and mapping at once (else at the next poll, every endpoint_interval)."""
        watch = AddressWatch(
            self.addresses_changed, asyncio.get_running_loop(), exclude=self.iface.name
        )
        why = watch.open()
        if why is not None:
            self.log.info("address changes are polled", why=why)
            return None
        return watch

    async def _look_at_addresses(self) -> None:
        """The host candidates are this host's addresses now, read here too: the endpoint
        loop may be waiting on the server (a report sent just before the node moved)."""
        try:
            self.local_addresses = await self.host.local_addresses(self.iface.name)
        except HostNetworkError as e:
            self.log.warning("cannot list the local addresses", error=str(e))

    # ------------------------------------------------------------------ keepalives

    def _watch_lifetime(self) -> LifetimeWatch | None:
        """Measure the NAT's mapping lifetime (:mod:`wgpy.nat.lifetime`) against the
        coordination server's STUN servers, unless the user chose the keepalive interval."""
        self._save_nat(None)
        if not self.measure_lifetime:
            return None
        return LifetimeWatch(
            lambda: self.candidates.nat.stun,
            self.lifetime_measured,
            default=self.nat_keepalive,
            # the probes bypass the tunnel as WireGuard does (the bind's mark when they start)
            fwmark=lambda: int(getattr(self.iface, "fwmark", 0)),
            log=self.log.bind(component="lifetime"),
        )

    def lifetime_measured(self, result: Lifetime) -> None:
        """Keep alive under the measured lifetime (the default where it was not measured):
        ICE paths' checks and WireGuard's keepalives for peers without ICE."""
        self.keepalive = result.keepalive
        if self.paths is not None:
            self.paths.set_keepalive_interval(result.keepalive)
        self.keep_alive_without_ice()
        self._save_nat(result)

    def _save_nat(self, result: Lifetime | None) -> None:
        """What ``wgpy status --json`` and ``wgpy netcheck`` say of the keepalive."""
        if result is None:  # at start
            source = "measuring" if self.measure_lifetime else "configured"
            result = Lifetime(self.keepalive)
        else:  # measured, or the default where it could not be
            source = "measured" if result.error is None else "default"
        self._nat = {**result.to_json(), "keepalive_source": source}
        self._write_nat()

    def _write_nat(self) -> None:
        nat = dict(self._nat)
        if self.mux is not None:
            self._drops_saved = nat["drops"] = dict(self._drops())
        try:
            self.state.write_nat(nat)
        except StateError as e:
            self.log.warning("cannot save the NAT state", error=e.message)

    # ------------------------------------------------------------------ drops

    def _drops(self) -> Counter[str]:
        """The demultiplexer's drops, and the ICE checks the path manager refused (a check
        for no peer of ours, or signed with another pair's key: ``check-bad-integrity``)."""
        drops = Counter(self.mux.drops) if self.mux is not None else Counter()
        if self.paths is not None:
            for reason, count in self.paths.drops.items():
                drops["check-" + reason.replace("_", "-")] += count
        return drops

    async def _drops_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(DROPS_INTERVAL)
            self.look_at_drops(loop.time())

    def look_at_drops(self, now: float) -> None:
        """Save the STUN demultiplexer's drops if they changed; say so if they grew and
        nothing was said for :data:`DROPS_WARNING_INTERVAL` seconds."""
        if self.mux is None:
            return
        drops = self._drops()
        if dict(drops) != self._drops_saved:
            self._write_nat()
        grown = drops - self._drops_logged
        if not grown or now - self._drops_logged_at < DROPS_WARNING_INTERVAL:
            return
        self._drops_logged, self._drops_logged_at = Counter(drops), now
        self.log.warning(
            f"dropped {grown.total()} STUN/ChannelData datagrams on the WireGuard port "
            "in the last minute",
            reasons=dict(grown),
        )

    # ------------------------------------------------------------------ candidates

    def _local_candidates(self) -> list[Any]:
        """This node's candidates now: its addresses on the WireGuard port, where the
        STUN servers saw it, and its relayed address."""
        port = self.iface.listen_port
        found: list[Any] = candidate_list(self.local_addresses, port, self.candidates.discovery)
        return found + (self.relays.candidates() if self.relays is not None else [])

    async def _candidate_loop(self) -> None:
        """Report the ICE candidates now, when the local addresses change, and every
        ``candidate_interval`` (a NAT may have mapped the port anew)."""
        loop = asyncio.get_running_loop()
        while True:
            self.candidates_due.clear()
            port = self.iface.listen_port
            await self._look_at_addresses()
            mapped = _public_address(self.candidates.discovery.public(4))
            nat = await self.candidates.refresh_nat(loop.time())
            if self.relays is not None:  # allocating while STUN discovery runs
                self.relays.update(nat.turn)
            await self.candidates.update(self.mux, self.local_addresses, port, loop.time())
            now_mapped = _public_address(self.candidates.discovery.public(4))
            if self.lifetime is not None and now_mapped != mapped:
                # first seen, or another NAT: measure (again); a new port behind the same
                # address is the same NAT (a mapping that expired, a NAT that maps each
                # destination anew) and would restart every measurement before it ends
                self.lifetime.changed()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.candidate_interval):
                    await self.candidates_due.wait()


def _public_address(mapped: Endpoint | None) -> str | None:
    return None if mapped is None else mapped.host


def _open_mux(iface: TraversalInterface) -> StunMux | None:
    """STUN on the interface's WireGuard port, where it has one (a bind) that is free."""
    bind = getattr(iface, "bind", None)
    if bind is None or getattr(bind, "demux", 0) is not None:
        return None
    return StunMux(bind, asyncio.get_running_loop())
