"""A WireGuard device, sans-IO: many peers behind one static key, batches in and out.

The shell feeds it inner packets from the TUN (:meth:`Device.send_packets`) and datagrams from
the UDP socket (:meth:`Device.receive_datagrams`), then drains what to send
(:meth:`Device.datagrams_to_send`), what to deliver to the TUN
(:meth:`Device.packets_to_deliver`) and what happened (:meth:`Device.next_event`). It keeps
one timer: read the deadline with :meth:`Device.get_timer` and call
:meth:`Device.handle_timer` when it passes. ``now`` is the caller's monotonic clock in
seconds; wall-clock time (for TAI64N timestamps and the last handshake time) and randomness
come from the constructor. Callers change peers through the device's methods (``add_peer``,
``set_endpoint``, ``set_allowed_ips``, ...), never by writing a :class:`Peer`'s fields.

The parts live beside it: :mod:`.sessions` (keypairs and the index table), :mod:`.admission`
(MAC1, cookies and rate limits under load), :mod:`.timerheap` (the one timer over all peers)
and :mod:`.events`.

Nothing a datagram contains makes these methods raise: every drop is counted in
:attr:`Device.drops` by its :class:`DropReason`.
"""

from __future__ import annotations

import math
import struct
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from cryptography.exceptions import InvalidTag

from .admission import Admission
from .allowedips import AllowedIPs, IPNetwork
from .constants import (
    DEFAULT_MTU,
    MAX_TIMER_HANDSHAKES,
    MESSAGE_COOKIE_REPLY_TYPE,
    MESSAGE_INITIATION_TYPE,
    MESSAGE_RESPONSE_TYPE,
    MESSAGE_TRANSPORT_OVERHEAD,
    MESSAGE_TRANSPORT_TYPE,
    PADDING_MULTIPLE,
    REJECT_AFTER_MESSAGES,
    REJECT_AFTER_TIME,
    REKEY_AFTER_MESSAGES,
    REKEY_AFTER_TIME,
    REKEY_ON_RECEIVE_AFTER,
    REKEY_TIMEOUT,
    UNDER_LOAD_QUEUE_SIZE,
    ZERO_KEY_MATERIAL_AFTER,
)
from .crypto import ZERO_KEY, Rng, dh_generate, tai64n
from .errors import DropReason, LocalProtocolError, RemoteProtocolError
from .events import (
    Event,
    EventQueue,
    HandshakeCompleted,
    PeerEndpointChanged,
    PeerSentFromElsewhere,
)
from .flows import ReplyOnlyFilter
from .handshake import (
    HandshakeState,
    StaticIdentity,
    consume_initiation,
    consume_initiation_static,
    consume_response,
    create_initiation,
    create_response,
)
from .keypair import Keypair
from .messages import (
    MessageCookieReply,
    MessageInitiation,
    MessageResponse,
    message_type,
    padded_length,
)
from .peer import Endpoint, Peer, without_source
from .sessions import Sessions
from .timerheap import TimerHeap
from .timers import Timer, pooled

Datagram = tuple[bytes, Endpoint]
WallClock = Callable[[], int]
"""Returns wall-clock time in integer nanoseconds since the Unix epoch (``time.time_ns``)."""

_NONCE_PREFIX = b"\x00\x00\x00\x00"
_ZEROS = bytes(PADDING_MULTIPLE + 65536)
_INF = float("inf")
_HANDSHAKE_TYPES = (MESSAGE_INITIATION_TYPE, MESSAGE_RESPONSE_TYPE, MESSAGE_COOKIE_REPLY_TYPE)
_TRANSPORT_INDEX_COUNTER = struct.Struct("<4xIQ")  # receiver index and counter of a header


def _removed(peer: Peer) -> LocalProtocolError:
    return LocalProtocolError(
        f"the peer {peer!r} was removed from this device; add it again with add_peer and "
        "change the peer that add_peer returns"
    )


class Device:
    """Many peers behind one static key; see the module docstring for the contract."""

    def __init__(
        self,
        private_key: bytes | None = None,
        *,
        rng: Rng,
        wall_clock: WallClock,
        mtu: int = DEFAULT_MTU,
    ) -> None:
        self._rng = rng
        self._jitter_rng = pooled(rng)  # timer jitter only
        self._wall_clock = wall_clock
        self.mtu = mtu
        self.identity: StaticIdentity | None = None
        self.peers: dict[bytes, Peer] = {}
        self.allowed_ips: AllowedIPs[Peer] = AllowedIPs()
        self._sessions = Sessions(rng)
        self._out: list[Datagram] = []
        self._delivered: list[bytes] = []
        self.drops: Counter[DropReason] = Counter()
        self.cookie_replies_sent = 0
        self.under_load_queue_size = UNDER_LOAD_QUEUE_SIZE
        self._admission = Admission(rng)
        self._timers = TimerHeap()
        self._dirty = self._timers.dirty  # the data path marks peers here: one set.add
        self._events = EventQueue()
        if private_key is not None:
            self.set_private_key(private_key)

    # ----------------------------------------------------------------- configuration

    @property
    def public_key(self) -> bytes | None:
        return self.identity.public if self.identity else None

    def set_private_key(self, private_key: bytes | None) -> None:
        """Change our static key: peers with the new public key are removed (as the kernel
        does), and every session must be renegotiated."""
        if private_key is not None and len(private_key) != 32:
            raise LocalProtocolError("a private key is 32 bytes; decode it before passing it")
        if self.identity is not None and self.identity.private == private_key:
            return
        identity = StaticIdentity(private_key) if private_key is not None else None
        if identity is not None and identity.public in self.peers:
            self.remove_peer(identity.public)
        self.identity = identity
        self._admission.set_public_key(identity.public if identity else None)
        for peer in self.peers.values():
            self._sessions.clear_handshake(peer)
            peer.handshake.precompute(identity)
            for kp in (peer.current, peer.next):
                if kp is not None:
                    kp.send_counter = REJECT_AFTER_MESSAGES  # expire for sending

    def add_peer(
        self,
        public_key: bytes,
        *,
        preshared_key: bytes | None = None,
        endpoint: Endpoint | None = None,
        persistent_keepalive: int = 0,
        allowed_ips: Iterable[str] = (),
    ) -> Peer:
        """Add a peer (or return the existing one with that key, unchanged)."""
        if len(public_key) != 32:
            raise LocalProtocolError("a public key is 32 bytes; decode it before passing it")
        if self.identity is not None and public_key == self.identity.public:
            raise LocalProtocolError("that public key is this device's own; it cannot be a peer")
        peer = self.peers.get(public_key)
        if peer is None:
            peer = Peer(public_key, preshared_key or ZERO_KEY)
            peer.handshake.precompute(self.identity)
            self.peers[public_key] = peer
        elif preshared_key is not None:
            peer.preshared_key = preshared_key
        if endpoint is not None:
            peer.endpoint = peer._endpoint_seen = endpoint
        if persistent_keepalive:
            peer.timers.persistent_keepalive_interval = persistent_keepalive
        for prefix in allowed_ips:
            self.allowed_ips.insert(prefix, peer)
        return peer

    def remove_peer(self, public_key: bytes) -> None:
        peer = self.peers.pop(public_key, None)
        if peer is None:
            return
        peer.removed = True
        self.allowed_ips.remove_value(peer)
        self._sessions.zero_key_material(peer)
        peer.staged.clear()
        peer.timers.stop_all()
        self._timers.discard(peer)

    def set_endpoint(self, peer: Peer, endpoint: Endpoint | None) -> None:
        """Send to ``peer`` at ``endpoint`` from now on (None: nowhere until it sends to us).

        As in the kernel, a configured endpoint carries no local source; the peer's packets
        (roaming) may move it again later, unless roaming is off (:meth:`set_roaming`). A
        change made here makes no event. What waits for the peer goes when the caller calls
        :meth:`send_staged` (after the rest of its configuration, a preshared key for one, is
        in place)."""
        if peer.removed:
            raise _removed(peer)
        peer.endpoint = peer._endpoint_seen = endpoint

    def handshake_now(self, peer: Peer, now: float) -> None:
        """Send ``peer`` a handshake initiation at once if something waits for one (staged
        packets, or an initiation still unanswered) and no session can carry data, even
        within REKEY_TIMEOUT of the last one. For a caller that has just found the peer a path
        (a path manager): the last initiation went where the peer could not hear it, and
        waiting out the 5 s would hold the first packet back that long. With nothing
        waiting nothing is sent (handshakes stay lazy), nor without an endpoint; the staged
        packets still go with :meth:`send_staged`."""
        if peer.removed:
            raise _removed(peer)
        waiting = peer.staged or peer.handshake.state == HandshakeState.INITIATION_CREATED
        if not waiting or self._usable_for_sending(peer.current, 0, now):
            return
        peer.handshake.last_sent_initiation = -math.inf
        self._initiate(peer, now, retry=False)

    def set_roaming(self, peer: Peer, enabled: bool) -> None:
        """Let ``peer``'s authenticated packets move its endpoint (on: WireGuard's roaming,
        the default) or not (off: the caller, a path manager, owns the endpoint and sets it
        with :meth:`set_endpoint`). With roaming off, packets from the endpoint's address
        only lend it their local source, and packets from another address leave it where it
        is and make a :class:`~.events.PeerSentFromElsewhere` event (one per new address).
        A peer without an endpoint takes the first one its packets bring either way."""
        if peer.removed:
            raise _removed(peer)
        peer.roaming = enabled
        peer._endpoint_seen = peer.endpoint  # moves are counted from here on

    def set_allowed_ips(self, peer: Peer, prefixes: Iterable[str | IPNetwork]) -> None:
        """Make ``prefixes`` the whole of ``peer``'s allowed IPs (a prefix another peer has
        moves to this one). Raises ValueError for a prefix that is not one, after the prefixes
        before it are in place."""
        if peer.removed:
            raise _removed(peer)
        self.allowed_ips.remove_value(peer)
        insert = self.allowed_ips.insert
        for prefix in prefixes:
            insert(prefix, peer)

    def add_allowed_ip(self, peer: Peer, prefix: str | IPNetwork) -> None:
        """Route ``prefix`` to ``peer`` (taking it from the peer that had it). Raises
        ValueError for a prefix that is not one."""
        if peer.removed:
            raise _removed(peer)
        self.allowed_ips.insert(prefix, peer)

    def remove_allowed_ip(self, peer: Peer, prefix: str | IPNetwork) -> bool:
        """Stop routing ``prefix`` to ``peer``; False when ``peer`` did not have it. Raises
        ValueError for a prefix that is not one."""
        if peer.removed:
            raise _removed(peer)
        return self.allowed_ips.remove(prefix, peer)

    def set_inbound_filter(self, peer: Peer, inbound_filter: ReplyOnlyFilter | None) -> None:
        """Let ``peer``'s packets in only as ``inbound_filter`` allows (None: all of them)."""
        if peer.removed:
            raise _removed(peer)
        peer.inbound_filter = inbound_filter

    def set_persistent_keepalive(
        self, peer: Peer, interval: int, now: float, *, send_now: bool = True
    ) -> None:
        """Set the interval (0 turns it off); like wireguard-go, send one at once when on, or
        (``send_now=False``) the first one ``interval`` seconds from now."""
        peer.timers.persistent_keepalive_interval = interval
        if interval > 0 and send_now:
            self._send_keepalive(peer, now)
        elif interval > 0:
            peer.timers.persistent_keepalive = now + interval
        else:
            peer.timers.persistent_keepalive = _INF
        self._dirty.add(peer)

    def forget_source(self, endpoint: Endpoint) -> None:
        """The shell could not send from ``endpoint``'s local source (that address went
        away): peers there are answered from the routing table's choice until their next
        packet tells where they send to now."""
        bare = without_source(endpoint)
        if bare is endpoint:
            return
        for peer in self.peers.values():
            if peer.endpoint == endpoint:
                peer.endpoint = bare

    def forget_sources(self) -> None:
        """Every peer forgets its local source, as the kernel does when the listen port or
        the fwmark changes (routing may differ now)."""
        for peer in self.peers.values():
            peer.endpoint = without_source(peer.endpoint)

    def send_staged(self, peer: Peer, now: float) -> None:
        """Send what waits for ``peer`` (after its configuration changed, e.g. an endpoint
        arrived), starting a handshake if there is no usable session."""
        if peer.staged and not peer.removed:
            self._send_staged(peer, now)
            self._dirty.add(peer)

    # ----------------------------------------------------------------- output

    def datagrams_to_send(self) -> list[Datagram]:
        """Datagrams produced since the last call, in order, with their destinations."""
        out, self._out = self._out, []
        return out

    def packets_to_deliver(self) -> list[bytes]:
        """Decrypted inner packets for the TUN, produced since the last call."""
        out, self._delivered = self._delivered, []
        return out

    def next_event(self) -> Event | None:
        """The oldest event not yet returned (see :mod:`.events`), or None."""
        return self._events.pop()

    @property
    def events_dropped(self) -> int:
        """Events dropped because nobody drained them (the queue is bounded)."""
        return self._events.dropped

    # ----------------------------------------------------------------- TUN -> network

    def send_packets(self, packets: Iterable[bytes | bytearray | memoryview], now: float) -> None:
        """Route a batch of inner IP packets to their peers and encrypt them."""
        lookup = self.allowed_ips.lookup
        drops = self.drops
        by_peer: dict[Peer, list[Any]] = {}
        for pkt in packets:
            n = len(pkt)
            version = pkt[0] >> 4 if n else 0
            if version == 4 and n >= 20:
                peer = lookup(pkt[16:20])
            elif version == 6 and n >= 40:
                peer = lookup(pkt[24:40])
            else:
                drops[DropReason.INVALID_OUTBOUND] += 1
                continue
            if peer is None:
                drops[DropReason.NO_ROUTE] += 1
                continue
            batch = by_peer.get(peer)
            if batch is None:
                by_peer[peer] = [pkt]
            else:
                batch.append(pkt)
        for peer, batch in by_peer.items():
            self._send_to_peer(peer, batch, now)

    def _usable_for_sending(self, kp: Keypair | None, count: int, now: float) -> bool:
        return (
            kp is not None
            and kp.send_counter + count < REJECT_AFTER_MESSAGES
            and now - kp.created < REJECT_AFTER_TIME
        )

    def _send_to_peer(self, peer: Peer, packets: list[Any], now: float) -> None:
        kp = peer.current
        if (
            peer.staged
            or peer.endpoint is None
            or not self._usable_for_sending(kp, len(packets), now)
        ):
            self._stage(peer, packets)
            self._send_staged(peer, now)
            return
        assert kp is not None
        self._encrypt(peer, kp, packets, now)

    def _stage(self, peer: Peer, packets: Sequence[Any]) -> None:
        staged = peer.staged
        overflow = len(staged) + len(packets) - (staged.maxlen or 0)
        if overflow > 0:
            self.drops[DropReason.STAGED_OVERFLOW] += overflow
        staged.extend(bytes(p) for p in packets)

    def _send_staged(self, peer: Peer, now: float) -> None:
        if not peer.staged:
            return
        kp = peer.current
        if peer.endpoint is None or not self._usable_for_sending(kp, len(peer.staged), now):
            self._initiate(peer, now, retry=False)
            return
        assert kp is not None
        packets = list(peer.staged)
        peer.staged.clear()
        self._encrypt(peer, kp, packets, now)

    def _encrypt(self, peer: Peer, kp: Keypair, packets: list[Any], now: float) -> None:
        """The hot path: encrypt a batch for one peer with one keypair."""
        out = self._out
        endpoint = peer.endpoint
        prefix = kp.header_prefix
        encrypt = kp.send.encrypt
        mtu = self.mtu
        counter = kp.send_counter
        sent_data = False
        nbytes = 0
        flows = peer.inbound_filter
        if flows is not None:
            for pkt in packets:
                flows.outbound(bytes(pkt), now)
        for pkt in packets:
            n = len(pkt)
            if n:
                sent_data = True
                rem = n & 15
                if rem and n < mtu:
                    pad = min(16 - rem, mtu - n)
                    pkt = bytes(pkt) + _ZEROS[:pad]
                elif n > mtu:
                    pad = padded_length(n, mtu) - n
                    if pad:
                        pkt = bytes(pkt) + _ZEROS[:pad]
            c8 = counter.to_bytes(8, "little")
            datagram = prefix + c8 + encrypt(_NONCE_PREFIX + c8, pkt, None)
            out.append((datagram, endpoint))
            nbytes += len(datagram)
            counter += 1
        kp.send_counter = counter
        peer.tx_bytes += nbytes
        timers = peer.timers
        if timers.persistent_keepalive_interval:
            timers.on_any_authenticated_packet_traversal(now)
        timers.on_any_authenticated_packet_sent()
        if sent_data:
            timers.on_data_sent(now, self._jitter_rng)
        self._dirty.add(peer)
        # keep the key fresh (whitepaper 6.2): the initiator rekeys after REKEY_AFTER_TIME
        if counter > REKEY_AFTER_MESSAGES or (
            kp.is_initiator and now - kp.created >= REKEY_AFTER_TIME
        ):
            self._initiate(peer, now, retry=False)

    def _send_keepalive(self, peer: Peer, now: float) -> None:
        """Send the staged packets, or an empty one; start a handshake if needed."""
        if not peer.staged:
            peer.staged.append(b"")
            peer.keepalives_sent += 1
        self._send_staged(peer, now)

    # ----------------------------------------------------------------- network -> TUN

    def receive_datagrams(self, datagrams: Iterable[Datagram], now: float) -> None:
        """Consume a batch of datagrams from the network. Never raises for bad input.

        Transport messages take the hot path inline; the per-peer bookkeeping (timers, key
        freshness) runs once per peer per batch, which gives the same result as once per
        packet because every packet of a batch shares ``now``.
        """
        handshakes: list[Datagram] = []
        drops = self.drops
        index = self._sessions.indices.table
        delivered = self._delivered
        lookup = self.allowed_ips.lookup
        unpack = _TRANSPORT_INDEX_COUNTER.unpack_from
        touched: dict[Peer, bool] = {}  # peer -> data (not only keepalives) received
        for datagram in datagrams:
            data = datagram[0]
            n = len(data)
            if (
                n >= MESSAGE_TRANSPORT_OVERHEAD
                and data[0] == 4
                and not (data[1] or data[2] or data[3])
            ):
                receiver, counter = unpack(data)
                kp = index.get(receiver)
                if kp.__class__ is not Keypair:
                    drops[DropReason.UNKNOWN_INDEX] += 1
                    continue
                assert isinstance(kp, Keypair)
                if now - kp.created >= REJECT_AFTER_TIME:
                    drops[DropReason.EXPIRED_KEYPAIR] += 1
                    continue
                replay = kp.replay
                if not replay.check(counter):
                    drops[DropReason.REPLAYED] += 1
                    continue
                try:
                    packet = kp.receive.decrypt(_NONCE_PREFIX + data[8:16], data[16:], None)
                except InvalidTag:
                    drops[DropReason.DECRYPTION_FAILED] += 1
                    continue
                if not replay.update(counter):
                    drops[DropReason.REPLAYED] += 1
                    continue
                peer = kp.peer
                peer._source = datagram[1]  # roaming follows it once per batch
                peer.rx_bytes += n
                if kp is peer.next:
                    self._confirm_next(peer, kp, now)
                if not packet:  # a keepalive
                    if peer not in touched:
                        touched[peer] = False
                    continue
                touched[peer] = True
                # the inner packet: its length field, then its source against allowed IPs
                m = len(packet)
                version = packet[0] >> 4
                if version == 4 and m >= 20:
                    length = (packet[2] << 8) | packet[3]
                    src = packet[12:16]
                elif version == 6 and m >= 40:
                    length = 40 + ((packet[4] << 8) | packet[5])
                    src = packet[8:24]
                else:
                    drops[DropReason.INVALID_INNER_PACKET] += 1
                    continue
                if length > m or length < 20:
                    drops[DropReason.INVALID_INNER_PACKET] += 1
                    continue
                if lookup(src) is not peer:
                    drops[DropReason.DISALLOWED_SOURCE] += 1
                    continue
                if length != m:
                    packet = packet[:length]
                flows = peer.inbound_filter
                if flows is not None and not flows.inbound(packet, now):
                    drops[DropReason.POLICY_DENIED] += 1
                    continue
                delivered.append(packet)
            elif n < 4:
                drops[DropReason.TOO_SHORT] += 1
            elif message_type(data) in _HANDSHAKE_TYPES:
                handshakes.append(datagram)
            elif data[0] == MESSAGE_TRANSPORT_TYPE and not (data[1] or data[2] or data[3]):
                drops[DropReason.TOO_SHORT] += 1
            else:
                drops[DropReason.UNKNOWN_TYPE] += 1
        for peer, got_data in touched.items():
            self._after_receive(peer, got_data, now)
        if handshakes:
            self._admission.arrived(len(handshakes), now, self.under_load_queue_size)
            for data, source in handshakes:
                try:
                    self._receive_handshake(data, source, now)
                except RemoteProtocolError as e:
                    drops[e.reason] += 1

    def _after_receive(self, peer: Peer, got_data: bool, now: float) -> None:
        """Timer hooks and key freshness after authenticated transport from ``peer``."""
        timers = peer.timers
        if timers.persistent_keepalive_interval:
            timers.on_any_authenticated_packet_traversal(now)
        timers.on_any_authenticated_packet_received()
        if got_data:
            timers.on_data_received(now)
        self._dirty.add(peer)
        self._follow_source(peer)  # once per peer and batch, not per packet
        # keep the key fresh on receive: the initiator rekeys shortly before REJECT_AFTER_TIME
        kp = peer.current
        if (
            kp is not None
            and kp.is_initiator
            and not timers.sent_last_minute_handshake
            and now - kp.created > REKEY_ON_RECEIVE_AFTER
        ):
            timers.sent_last_minute_handshake = True
            self._initiate(peer, now, retry=False)

    @property
    def under_load(self) -> bool:
        """Whether the device has ever been under load (see :mod:`.admission`)."""
        return self._admission.ever_under_load

    def is_under_load(self, now: float) -> bool:
        return self._admission.is_under_load(now)

    def _confirm_next(self, peer: Peer, kp: Keypair, now: float) -> None:
        """The initiator used our new keypair: it becomes current (whitepaper 5.4.6)."""
        self._follow_source(peer)  # what waits for the peer goes where it is now
        self._sessions.confirm_next(peer, kp)
        self._handshake_complete(peer)
        self._send_staged(peer, now)

    # ----------------------------------------------------------------- handshakes

    def _receive_handshake(self, data: bytes, source: Endpoint, now: float) -> None:
        kind = data[0]
        if kind == MESSAGE_COOKIE_REPLY_TYPE:
            self._receive_cookie_reply(data, now)
            return
        if self.identity is None:
            raise RemoteProtocolError(DropReason.UNKNOWN_PEER)
        if kind == MESSAGE_INITIATION_TYPE:
            msg_i = MessageInitiation.parse(data)
        else:
            msg_r = MessageResponse.parse(data)
        reply = self._admission.admit(data, source, now)  # MAC1; under load MAC2, rate
        if reply is not None:
            self._out.append((reply, source))
            self.cookie_replies_sent += 1
            return
        if kind == MESSAGE_INITIATION_TYPE:
            self._receive_initiation(msg_i, source, now)
        else:
            self._receive_response(msg_r, source, now)

    def _receive_initiation(self, msg: MessageInitiation, source: Endpoint, now: float) -> None:
        assert self.identity is not None
        c, h, static = consume_initiation_static(self.identity, msg)
        peer = self.peers.get(static)
        if peer is None:
            raise RemoteProtocolError(DropReason.UNKNOWN_PEER)
        consume_initiation(peer.handshake, msg, c, h, now)
        peer._source = source
        self._follow_source(peer)
        peer.rx_bytes += 148
        timers = peer.timers
        timers.on_any_authenticated_packet_traversal(now)
        timers.on_any_authenticated_packet_received()
        # respond
        index = self._sessions.new_handshake_index(peer)
        response = create_response(
            peer.handshake, sender_index=index, ephemeral=dh_generate(self._rng)
        )
        buf = bytearray(response.pack())
        peer.cookie.add_macs(buf, now)
        self._sessions.begin(peer, now)  # the new keypair waits in peer.next
        timers.on_session_derived(now)
        timers.on_any_authenticated_packet_traversal(now)
        timers.on_any_authenticated_packet_sent()
        self._out.append((bytes(buf), source))
        peer.tx_bytes += len(buf)
        self._dirty.add(peer)

    def _receive_response(self, msg: MessageResponse, source: Endpoint, now: float) -> None:
        assert self.identity is not None
        peer = self._sessions.indices.get(msg.receiver)
        if type(peer) is not Peer or peer.handshake.local_index != msg.receiver:
            raise RemoteProtocolError(DropReason.UNKNOWN_INDEX)
        consume_response(self.identity, peer.handshake, msg)
        peer._source = source
        self._follow_source(peer)
        peer.rx_bytes += 92
        timers = peer.timers
        timers.on_any_authenticated_packet_traversal(now)
        timers.on_any_authenticated_packet_received()
        self._sessions.begin(peer, now)  # the new keypair is peer.current
        timers.on_session_derived(now)
        self._handshake_complete(peer)
        self._dirty.add(peer)
        self._send_keepalive(peer, now)

    def _receive_cookie_reply(self, data: bytes, now: float) -> None:
        msg = MessageCookieReply.parse(data)
        entry = self._sessions.indices.get(msg.receiver)
        if entry is None:
            raise RemoteProtocolError(DropReason.UNKNOWN_INDEX)
        peer = entry if type(entry) is Peer else entry.peer  # type: ignore[union-attr]
        assert isinstance(peer, Peer)
        if not peer.cookie.has_sent_mac1:
            raise RemoteProtocolError(DropReason.UNEXPECTED_COOKIE)
        peer.cookie.consume_reply(msg, now)

    def _initiate(self, peer: Peer, now: float, *, retry: bool) -> None:
        """SendHandshakeInitiation: at most one initiation per REKEY_TIMEOUT."""
        timers = peer.timers
        if not retry:
            timers.handshake_attempts = 0
        hs = peer.handshake
        if now - hs.last_sent_initiation < REKEY_TIMEOUT:
            return
        if self.identity is None or not hs.can_handshake or peer.endpoint is None:
            if peer.endpoint is None:
                self.drops[DropReason.NO_ENDPOINT] += 1
            return
        hs.last_sent_initiation = now
        msg = create_initiation(
            self.identity,
            hs,
            sender_index=self._sessions.new_handshake_index(peer),
            ephemeral=dh_generate(self._rng),
            timestamp=tai64n(self._wall_clock()),
        )
        buf = bytearray(msg.pack())
        peer.cookie.add_macs(buf, now)
        timers.on_any_authenticated_packet_traversal(now)
        timers.on_any_authenticated_packet_sent()
        self._out.append((bytes(buf), peer.endpoint))
        peer.tx_bytes += len(buf)
        timers.on_handshake_initiated(now, self._jitter_rng)
        self._dirty.add(peer)

    def _handshake_complete(self, peer: Peer) -> None:
        peer.timers.on_handshake_complete()
        peer.last_handshake_ns = self._wall_clock()
        self._events.append(HandshakeCompleted(peer.public_key))

    def _follow_source(self, peer: Peer) -> None:
        """Authenticated packets from ``peer`` came from ``peer._source``: roaming moves the
        endpoint there; with roaming off, the endpoint only takes the local source of packets
        from its own address, and another address is an event (once per new address)."""
        source = peer._source
        endpoint = peer.endpoint
        if peer.roaming or endpoint is None:
            peer.endpoint = source
            if source != peer._endpoint_seen:
                self._endpoint_moved(peer)
            return
        if source == endpoint:
            return
        bare = without_source(source)
        if bare == without_source(endpoint):
            peer.endpoint = peer._endpoint_seen = source
            return
        seen = peer._endpoint_seen
        if source != seen:
            peer._endpoint_seen = source
            if bare != without_source(seen):
                self._events.append(PeerSentFromElsewhere(peer.public_key, bare))

    def _endpoint_moved(self, peer: Peer) -> None:
        """Packets moved ``peer.endpoint``: an event when its address or port changed (a
        new local source alone, or one dropped and learned again, is none)."""
        old = without_source(peer._endpoint_seen)
        peer._endpoint_seen = endpoint = peer.endpoint
        new = without_source(endpoint)
        if new != old:
            self._events.append(PeerEndpointChanged(peer.public_key, new))

    # ----------------------------------------------------------------- timers

    def get_timer(self) -> float | None:
        """The next deadline at which :meth:`handle_timer` must be called, or None."""
        return self._timers.next_deadline()

    def handle_timer(self, now: float) -> None:
        """Fire every timer due at ``now``."""
        pop_due = self._timers.pop_due
        while (peer := pop_due(now)) is not None:
            for timer in peer.timers.pop_due(now):
                self._expired(peer, timer, now)
            self._dirty.add(peer)

    def _expired(self, peer: Peer, timer: Timer, now: float) -> None:
        timers = peer.timers
        if timer is Timer.RETRANSMIT_HANDSHAKE:
            if timers.handshake_attempts > MAX_TIMER_HANDSHAKES:
                # give up: drop what waited for a session, forget the partial exchange later
                self.drops[DropReason.HANDSHAKE_GAVE_UP] += len(peer.staged)
                peer.staged.clear()
                timers.send_keepalive = _INF
                if timers.zero_key_material == _INF:
                    timers.zero_key_material = now + ZERO_KEY_MATERIAL_AFTER
            else:
                timers.handshake_attempts += 1
                # the source we answer from may be the trouble: as the kernel, drop it
                peer.endpoint = without_source(peer.endpoint)
                self._initiate(peer, now, retry=True)
        elif timer is Timer.SEND_KEEPALIVE:
            self._send_keepalive(peer, now)
            timers.on_keepalive_sent_by_timer(now)
        elif timer is Timer.NEW_HANDSHAKE:
            peer.endpoint = without_source(peer.endpoint)  # likewise: nothing came back
            self._initiate(peer, now, retry=False)
        elif timer is Timer.ZERO_KEY_MATERIAL:
            self._sessions.zero_key_material(peer)
        elif timer is Timer.PERSISTENT_KEEPALIVE and timers.persistent_keepalive_interval:
            self._send_keepalive(peer, now)
