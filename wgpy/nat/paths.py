"""Which path each mesh peer's WireGuard packets take, and keeping it working.

A :class:`PathManager` runs one interface's ICE (:mod:`wgpy.nat.ice`): it answers the checks
that arrive on the WireGuard port (install :meth:`PathManager.handle_request` as the STUN
demultiplexer's ``on_request``), and for each peer whose candidates the map carries it runs
rounds of checks and owns the peer's endpoint:

- the selected pair's remote address becomes the WireGuard peer's endpoint
  (:meth:`~wgpy.protocol.device.Device.set_endpoint`) and roaming is switched off for that
  peer: a late packet that arrives over another path does not flip it back;
- the selected path is checked (a STUN Binding request, RFC 7675 consent) every
  :data:`CONSENT_INTERVAL` seconds while the peer's traffic moves, at once when the peer's
  packets arrive from elsewhere, and every ``keepalive_interval`` (25 s by default, less
  than the NAT mapping lifetimes of home routers) while idle, so the mappings on the way
  stay open from both sides; a check that goes unanswered drops the path (within 5 s of
  the failure while traffic moves): roaming is on again and a new round starts at once;
- while a peer has no direct path, a new round runs about every :data:`RETRY_INTERVAL`
  seconds (jittered), and at once when either side's candidates change.

Relayed paths (TURN, :mod:`wgpy.nat.relay`): a pair with a relayed end is held back
(:data:`~wgpy.nat.ice.RELAY_HOLD`) so a direct pair that answers at once wins; where none has
answered yet, traffic starts on the relay (selected as ``relay``) and a direct pair that
succeeds later in the round takes over; its key (:attr:`~wgpy.nat.ice.Pair.key`, a
:class:`~wgpy.endpoint.RelayKey` for a pair on this node's relay) becomes the WireGuard
endpoint, so WireGuard's datagrams go as ChannelData through the relay. While relayed, a new
round runs about every ``retry_interval`` (30 s, jittered): a direct pair it nominates takes
over at once (the endpoint changes between two datagrams: nothing is dropped). A direct path
that stops answering falls back at once to a relayed pair the last round found valid, if
any, and a new round starts (which finds the relay within a second otherwise): within 5 s
of the failure while traffic moves. The relay path gets the same consent checks and
keepalives, which keep the relay's channel, permission and the NATs' mappings open.

The manager drains the device's events (:meth:`~wgpy.protocol.device.Device.next_event`)
every 0.25 s: a :class:`~wgpy.protocol.events.PeerSentFromElsewhere` makes it check that
peer's path at once; nothing else reads them today.

A newly selected direct path is confirmed only once an authenticated WireGuard packet from
the peer came over it (the peer's :attr:`~wgpy.protocol.peer.Peer.last_source`, looked at
every 0.25 s: no per-packet cost); while we send over it and none comes within
``confirm_timeout`` (:data:`CONFIRM_TIMEOUT`), it is dropped as a path that stops answering
is (:attr:`PathManager.unconfirmed`). ICE checks are authenticated per pair of nodes; this
is defense in depth: whoever answers checks without being the peer cannot keep a path that
WireGuard never confirms.

:meth:`PathManager.path` says per peer what ``wgpy status`` shows: the kind (``direct``,
``relay``, ``none``), the remote address and the round-trip time of the last check.
"""

from __future__ import annotations

import asyncio
import base64
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from aioice import stun
from aioice.candidate import Candidate

from ..endpoint import Endpoint, EndpointKey
from ..log import get_logger
from ..protocol.device import Device
from ..protocol.events import PeerSentFromElsewhere
from ..protocol.peer import without_source
from .ice import (
    RELAY_HOLD,
    IceError,
    IceSession,
    Pair,
    PairKeys,
    PairState,
    RemoteIce,
    StunTransport,
    check_username,
    derive_pair_keys,
)

__all__ = ["CONSENT_INTERVAL", "KEEPALIVE_INTERVAL", "RETRY_INTERVAL", "PathManager", "PathState"]

KEEPALIVE_INTERVAL = 25.0
"""Seconds between checks of an idle selected path: under the ~30 s NAT mapping lifetimes."""
CONSENT_INTERVAL = 2.0
"""Seconds between checks of a selected path while the peer's traffic moves: a path that
stops answering is dropped within 5 s (this interval, and a check's 1.5 s). Checks come
0-20 % early, never late."""
RETRY_INTERVAL = 30.0
"""Seconds between rounds of checks while a peer has no direct path (jittered +-20 %)."""
CONFIRM_TIMEOUT = 12.0
"""Seconds a newly selected direct path may carry our packets without an authenticated
WireGuard packet from the peer over it before it is dropped: a peer answers data within 10 s
at the latest (WireGuard's passive keepalive), a handshake at once."""
EVENTS_INTERVAL = 0.25
"""Seconds between looks at the device's events (a peer's packets from elsewhere)."""

PathKind = Literal["direct", "relay", "none"]


class PathInterface(Protocol):
    """What the manager needs of an interface; :class:`wgpy.device.interface.Interface`
    fits."""

    device: Device

    def flush(self) -> None: ...

    def now(self) -> float: ...


@dataclass(frozen=True, slots=True)
class PathState:
    """One peer's path: ``kind``, where WireGuard sends (``endpoint``: the peer's address,
    as the relay sees it on a relayed path), the round-trip time of the last check in
    seconds, since when (the loop's clock), and for a relayed path the relay's name
    (``relay``: ours, or the peer's relay address where the path ends on the peer's)."""

    kind: PathKind = "none"
    endpoint: Endpoint | None = None
    rtt: float | None = None
    since: float = 0.0
    relay: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "endpoint": None if self.endpoint is None else str(self.endpoint),
            "rtt_ms": None if self.rtt is None else round(self.rtt * 1000, 3),
            "relay": self.relay,
        }


class _PeerPath:
    """One peer's ICE session, path and maintenance task."""

    def __init__(self, manager: PathManager, public_key: bytes, remote: RemoteIce) -> None:
        self.manager = manager
        self.public_key = public_key
        self.remote = remote
        self.log = manager.log.bind(peer=base64.b64encode(public_key).decode()[:8])
        self.state = PathState(since=manager.loop.time())
        self._keys: tuple[bytes, PairKeys | None] | None = None  # (the DH they come from, keys)
        self.session = self._session()
        self.wake = asyncio.Event()  # re-plan the loop's wait
        self.check_now = False  # with wake: check the path (or start a round) at once
        self.bytes_seen = (0, 0)  # the peer's rx and tx bytes at the last look
        # a direct path selected and not yet confirmed by the peer's WireGuard packets: the
        # pair, the peer's rx and tx bytes then, and since when we send over it
        self.unconfirmed: tuple[Pair, int, int] | None = None
        self.sending_since: float | None = None
        self.task = manager.loop.create_task(self._maintain())

    def _session(self) -> IceSession:
        m = self.manager
        return IceSession(
            m.transport,
            keys=self.keys,
            remote=self.remote,
            local_candidates=m.local_candidates,
            controlling=m.public_key > self.public_key,
            tie_breaker=m.rng.getrandbits(64),
            on_selected=self._selected,
            on_failed=self._failed,
            loop=m.loop,
            log=self.log,
            relay_hold=m.relay_hold,
        )

    def keys(self) -> PairKeys | None:
        """The keys of the checks with this peer (:func:`~wgpy.nat.ice.derive_pair_keys`),
        from the static-static DH the device precomputed for the peer (the private key stays
        in the device), derived again only when that DH or a ufrag changed; None while the
        device has no such peer, or its key gives no DH."""
        peer = self.manager.iface.device.peers.get(self.public_key)
        if peer is None:
            return None
        shared = peer.handshake.static_static
        cached = self._keys
        if cached is not None and cached[0] == shared:
            keys = cached[1]
            if keys is None or keys.remote_ufrag == self.remote.ufrag:
                return keys
        try:
            keys = derive_pair_keys(
                shared,
                local_public=self.manager.public_key,
                remote_public=self.public_key,
                local_ufrag=self.manager.ufrag,
                remote_ufrag=self.remote.ufrag,
            )
        except IceError as e:
            self.log.warning("no checks with this peer", error=str(e))
            keys = None
        self._keys = (shared, keys)
        return keys

    def set_remote(self, remote: RemoteIce) -> None:
        """The peer's ufrag or candidates changed: a new session, checks at once."""
        self.remote = remote
        self.session.close()
        self.session = self._session()
        self.session.start()

    def close(self) -> None:
        self.session.close()
        self.task.cancel()

    # ------------------------------------------------------------------ path changes

    def _selected(self, pair: Pair) -> None:
        m = self.manager
        device = m.iface.device
        peer = device.peers.get(self.public_key)
        if peer is None:
            return
        endpoint = Endpoint(*pair.address)
        kind: PathKind = "relay" if pair.relayed else "direct"
        relay = pair.relay_name
        if (
            self.state.endpoint != endpoint
            or self.state.kind != kind
            or self.state.relay != relay
            or peer.endpoint != pair.key
        ):
            self.log.info(
                "path selected", path=kind, endpoint=str(endpoint), rtt=pair.rtt, relay=relay
            )
            device.set_endpoint(peer, pair.key)
            device.set_roaming(peer, False)
            self.unconfirmed = None if pair.relayed else (pair, peer.rx_bytes, peer.tx_bytes)
            if self.unconfirmed is not None:
                m.confirming.add(self)
            self.sending_since = None
            now = m.iface.now()
            device.handshake_now(peer, now)  # the last initiation may have gone nowhere
            device.send_staged(peer, now)
            m.iface.flush()
            self.state = PathState(kind, endpoint, pair.rtt, m.loop.time(), relay)
            self.wake.set()
            m.changed(self.public_key, self.state)
        else:
            self.state = PathState(kind, endpoint, pair.rtt, self.state.since, relay)

    def _failed(self) -> None:
        """A round ended without a path: the loop tries again after RETRY_INTERVAL. A path
        kept from before the peer's candidates changed is dropped when they do not find it
        again."""
        if self.session.selected is None and self.state.kind != "none":
            # lost() starts a new round: once this one has ended (it ends as this returns)
            self.manager.loop.call_soon(self._failed_round_ended, self.session)
        else:
            self.manager.changed(self.public_key, self.state)  # `wgpy status`: checks failed

    def confirm(self, now: float) -> None:
        """A new direct path: confirmed once an authenticated WireGuard packet from the peer
        came over it; dropped when we have sent over it for ``confirm_timeout`` without one."""
        if self.unconfirmed is None:
            return
        pair, rx, tx = self.unconfirmed
        peer = self.manager.iface.device.peers.get(self.public_key)
        if peer is None or self.session.selected is not pair:
            self.unconfirmed = None
            return
        source = peer.last_source
        if peer.rx_bytes != rx and source is not None and without_source(source) == pair.key:
            self.unconfirmed = None
            return
        if self.sending_since is None:
            if peer.tx_bytes != tx:
                self.sending_since = now
            return
        if now - self.sending_since >= self.manager.confirm_timeout:
            self.unconfirmed = None
            self.manager.unconfirmed += 1
            self.lost("no WireGuard packet from the peer came over the path")

    def _failed_round_ended(self, session: IceSession) -> None:
        if session is self.session and session.selected is None and self.state.kind != "none":
            self.lost("checks with the peer's new candidates found no path")

    def check(self) -> None:
        """Check the path (or look for one) now."""
        self.check_now = True
        self.wake.set()

    def lost(self, why: str) -> None:
        """The selected path stopped answering: WireGuard roams again, checks start over."""
        m = self.manager
        self.log.warning("path lost; checking again", path=self.state.kind, why=why)
        failed = self.session.selected
        fallback = [
            p
            for p in self.session.pairs
            if p.relayed and p is not failed and p.state == PairState.SUCCEEDED
        ]
        self.session.selected = None
        was_direct = self.state.kind == "direct"
        if fallback and was_direct:
            pair = max(fallback, key=lambda p: p.priority(self.session.controlling))
            self.log.info("falling back to the relay", relay=pair.relay_name)
            self.session.selected = pair
            self._selected(pair)
        else:
            peer = m.iface.device.peers.get(self.public_key)
            if peer is not None:
                m.iface.device.set_roaming(peer, True)
            self.state = PathState(since=m.loop.time())
            m.changed(self.public_key, self.state)
        self.session.start(relay_first=was_direct)

    # ------------------------------------------------------------------ the loop

    def _active(self) -> bool:
        """Whether the peer's traffic moved since the last look."""
        peer = self.manager.iface.device.peers.get(self.public_key)
        seen = (peer.rx_bytes, peer.tx_bytes) if peer is not None else (0, 0)
        moved, self.bytes_seen = seen != self.bytes_seen, seen
        return moved

    def _has_path(self) -> bool:
        return self.state.kind != "none" and self.session.selected is not None

    async def _maintain(self) -> None:
        """With a path: look at the peer's traffic every CONSENT_INTERVAL at most, check the
        path when traffic moved (consent) or the keepalive is due (never later than the
        keepalive interval: the NATs' mappings must not lapse), or at once when told.
        Without one: a new round every RETRY_INTERVAL, jittered."""
        m = self.manager
        self.session.start()
        keepalive_at = 0.0  # when the idle path is checked next; 0: not drawn yet
        direct_at = 0.0  # while relayed: when a round looks for a direct path next
        while True:
            now = m.loop.time()
            if self.state.kind == "relay":
                if not direct_at:
                    direct_at = now + m.retry_interval * m.rng.uniform(0.8, 1.2)
                elif now >= direct_at and not self.session.running:
                    direct_at = 0.0
                    self.session.start()  # a direct pair it nominates takes over
                    continue
            else:
                direct_at = 0.0
            if self._has_path():
                if not keepalive_at:
                    keepalive_at = now + m.keepalive_interval * m.rng.uniform(0.8, 1.0)
                keepalive_at = min(keepalive_at, now + m.keepalive_interval)  # it may shrink
                wait = min(CONSENT_INTERVAL * m.rng.uniform(0.8, 1.0), keepalive_at - now)
                if direct_at:
                    wait = min(wait, direct_at - now)
            else:
                wait = m.retry_interval * m.rng.uniform(0.8, 1.2)
            self.wake.clear()
            try:
                await asyncio.wait_for(self.wake.wait(), max(0.0, wait))
            except TimeoutError:
                pass
            else:
                if not self.check_now:
                    continue  # the path changed: wait as it asks now
            told, self.check_now = self.check_now, False
            selected = self.session.selected
            if self._has_path() and selected is not None:
                active = self._active()
                if self.session.running or not (told or active or m.loop.time() >= keepalive_at):
                    continue
                rtt = await self.session.consent(selected)
                keepalive_at = 0.0
                if self.session.selected is not selected:
                    continue  # a new pair was selected meanwhile
                if rtt is None:
                    self.lost("the path stopped answering checks")
                else:
                    self.state = PathState(
                        self.state.kind, self.state.endpoint, rtt, self.state.since
                    )
                    m.changed(self.public_key, self.state)  # the latency `wgpy status` shows
            elif not self.session.running:
                self.session.start()


class PathManager:
    """The paths of one interface's mesh peers; see the module docstring."""

    def __init__(
        self,
        iface: PathInterface,
        transport: StunTransport,
        *,
        public_key: bytes,
        ufrag: str,
        local_candidates: Callable[[], Sequence[Candidate]],
        loop: asyncio.AbstractEventLoop | None = None,
        rng: random.Random | None = None,
        keepalive_interval: float = KEEPALIVE_INTERVAL,
        retry_interval: float = RETRY_INTERVAL,
        relay_hold: float | None = None,
        on_change: Callable[[bytes, PathState], None] | None = None,
        log: Any = None,
        confirm_timeout: float = CONFIRM_TIMEOUT,
    ) -> None:
        self.iface = iface
        self.transport = transport
        self.public_key = public_key
        self.ufrag = ufrag
        """This node's ICE ufrag (a run's: the keys of the checks change with it)."""
        self.local_candidates = local_candidates
        self.loop = loop or asyncio.get_running_loop()
        self.rng = rng or random.SystemRandom()
        self.keepalive_interval = keepalive_interval
        self.retry_interval = retry_interval
        self.relay_hold = RELAY_HOLD if relay_hold is None else relay_hold
        self.on_change = on_change
        """Called with a peer's key and its state when its path's kind or address changes,
        a check measured its round-trip time again, or a round of checks found no path (for
        ``wgpy status``)."""
        self.log = log or get_logger(component="paths")
        self.drops: Counter[str] = Counter()
        """Checks dropped unanswered, by reason (hostile or stray STUN)."""
        self.confirm_timeout = confirm_timeout
        self.unconfirmed = 0
        self.confirming: set[_PeerPath] = set()  # new direct paths not yet confirmed
        """Direct paths dropped because no WireGuard packet from the peer came over them."""
        self._peers: dict[bytes, _PeerPath] = {}
        self._by_ufrag: dict[str, list[_PeerPath]] = {}
        self._events = self.loop.create_task(self._watch_events())

    # ------------------------------------------------------------------ peers

    def set_remote(self, public_key: bytes, remote: RemoteIce | None) -> None:
        """The map's ICE for a peer: start (or restart) its checks; None: the peer has no
        candidates, its endpoint is left to the map and WireGuard's roaming."""
        path = self._peers.get(public_key)
        if remote is None:
            self.remove(public_key)
            return
        if path is None:
            path = self._peers[public_key] = _PeerPath(self, public_key, remote)
        elif path.remote != remote:
            self._unroute(path)
            path.set_remote(remote)
        # checks are routed by the sender's ufrag, then authenticated with that peer's key;
        # peers that claim one ufrag (a copy: every peer sees the others' in the map) share
        # it, and a check goes to the one whose key it was made with
        routed = self._by_ufrag.setdefault(remote.ufrag, [])
        if path not in routed:
            routed.append(path)

    def _unroute(self, path: _PeerPath) -> None:
        routed = self._by_ufrag.get(path.remote.ufrag, [])
        if path in routed:
            routed.remove(path)
        if not routed:
            self._by_ufrag.pop(path.remote.ufrag, None)

    def remove(self, public_key: bytes) -> None:
        """Stop managing a peer (it left the map, or has no candidates any more)."""
        path = self._peers.pop(public_key, None)
        if path is None:
            return
        path.close()
        self.confirming.discard(path)
        self._unroute(path)
        peer = self.iface.device.peers.get(public_key)
        if peer is not None:
            self.iface.device.set_roaming(peer, True)

    def owns(self, public_key: bytes) -> bool:
        """Whether the manager decides this peer's endpoint (the map's is then ignored)."""
        path = self._peers.get(public_key)
        return path is not None and path.state.kind != "none"

    def local_candidates_changed(self) -> None:
        """This node's candidates changed (discovery: it moved, or its NAT maps it anew;
        or a new relay allocation). Peers without a path check again; relayed ones run a
        round (the relay they use may be the one being replaced; the old allocation stays up
        meanwhile); for both, a round under way starts over with the new candidates (a new
        relay's candidate is checked now, not a round later). With a direct path: where this
        side nominates (controlling) a new round starts now, as when the peer's candidates
        change (a peer whose checks no longer reach us cannot select a new pair by itself
        while our old path to it still answers; a path kept meanwhile is dropped when the
        round does not find it again); where the peer nominates, the path is checked now,
        and the peer starts a round of its own when the map brings it our new candidates."""
        for path in self._peers.values():
            if path.state.kind in ("none", "relay") and path.session.running:
                path.set_remote(path.remote)  # the round under way pairs the old candidates
            elif path.state.kind == "none":
                path.check()
            elif path.state.kind == "relay":
                path.session.start()
            elif path.session.controlling:
                path.set_remote(path.remote)
            else:
                path.check()

    def set_keepalive_interval(self, seconds: float) -> None:
        """Check idle paths every ``seconds`` from now on (the NAT's mapping lifetime was
        measured, :mod:`wgpy.nat.lifetime`); a keepalive due later than that comes sooner."""
        self.keepalive_interval = seconds
        for path in self._peers.values():
            path.wake.set()

    def changed(self, public_key: bytes, state: PathState) -> None:
        if self.on_change is not None:
            self.on_change(public_key, state)

    def path(self, public_key: bytes) -> PathState:
        path = self._peers.get(public_key)
        return path.state if path is not None else PathState()

    def confirmed(self, public_key: bytes) -> bool:
        """Whether the peer's path is not waiting for the peer's WireGuard packets to confirm
        it (a new direct path is, until one came over it)."""
        path = self._peers.get(public_key)
        return path is None or path.unconfirmed is None

    def session(self, public_key: bytes) -> IceSession | None:
        path = self._peers.get(public_key)
        return path.session if path is not None else None

    def close(self) -> None:
        self._events.cancel()
        for key in list(self._peers):
            self.remove(key)

    # ------------------------------------------------------------------ checks that arrive

    def handle_request(self, message: stun.Message, key: EndpointKey, raw: bytes) -> None:
        """A STUN request arrived on the WireGuard port (the demultiplexer's
        ``on_request``): a check from a known peer, authenticated with that peer's key for
        the pair (:class:`~wgpy.nat.ice.PairKeys`), is answered; anything else is dropped
        and counted in :attr:`drops` (``bad_integrity``: a check in a peer's name that is
        not made with its key, as another peer forging it would send). Never raises."""
        try:
            theirs = check_username(message, self.ufrag)
            paths = self._by_ufrag.get(theirs)
            if not paths:
                self.drops["unknown_peer"] += 1
                return
            for path in paths:
                keys = path.keys()
                if keys is not None and message.check_message_integrity(keys.inbound):
                    path.session.handle_request(message, key)
                    return
            self.drops["bad_integrity"] += 1
        except IceError as e:
            self.drops[e.reason] += 1
        except Exception as e:  # the receive boundary: count, never raise
            self.drops["malformed"] += 1
            self.log.debug("check dropped", error=repr(e))

    async def _watch_events(self) -> None:
        """A peer whose path we own sent from elsewhere: check the path now. New direct paths
        are confirmed (or dropped) here too."""
        device = self.iface.device
        while True:
            await asyncio.sleep(EVENTS_INTERVAL)
            now = self.loop.time()
            for peer_path in list(self.confirming):  # only new paths: nothing per idle peer
                peer_path.confirm(now)
                if peer_path.unconfirmed is None:
                    self.confirming.discard(peer_path)
            while (event := device.next_event()) is not None:
                if isinstance(event, PeerSentFromElsewhere):
                    path = self._peers.get(event.public_key)
                    if path is not None:
                        path.check()
