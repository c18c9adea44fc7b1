"""One peer: its handshake, keypairs, staged packets, timers and counters."""

from __future__ import annotations

import base64
from collections import deque
from collections.abc import Hashable

from .constants import MAX_STAGED_PACKETS
from .cookie import CookieGenerator
from .crypto import ZERO_KEY
from .flows import ReplyOnlyFilter
from .handshake import Handshake
from .keypair import Keypair
from .timers import PeerTimers

Endpoint = Hashable
"""Where a peer is on the underlay. The shell uses socket address tuples ``(host, port)`` and
``(host, port, source)``, where ``source`` (opaque here) is the local address the peer's packet
arrived at, which the shell answers from. The core compares and stores them, and drops the
source where the kernel does (:func:`without_source`). Outside the core, endpoints are
:class:`wgpy.endpoint.Endpoint` objects, which convert to and from these keys."""


def without_source(endpoint: Endpoint) -> Endpoint:
    """``endpoint`` with no local source: answers leave from the routing table's choice."""
    if type(endpoint) is tuple and len(endpoint) == 3:
        return endpoint[:2]
    return endpoint


class Peer:
    """One peer of a :class:`~.device.Device`. Callers read its fields; they change its
    endpoint, allowed IPs and inbound filter through the device's methods (``set_endpoint``,
    ``set_allowed_ips``, ``set_inbound_filter``, ...), which keep the device's tables and
    events consistent."""

    __slots__ = (
        "_deadline",
        "_endpoint_seen",
        "_source",
        "cookie",
        "current",
        "endpoint",
        "handshake",
        "inbound_filter",
        "keepalives_sent",
        "last_handshake_ns",
        "next",
        "previous",
        "public_key",
        "removed",
        "roaming",
        "rx_bytes",
        "staged",
        "timers",
        "tx_bytes",
    )

    def __init__(self, public_key: bytes, preshared_key: bytes = ZERO_KEY) -> None:
        self.public_key = public_key
        self.handshake = Handshake(public_key, preshared_key)
        self.cookie = CookieGenerator(public_key)
        self.previous: Keypair | None = None
        self.current: Keypair | None = None
        self.next: Keypair | None = None
        self.endpoint: Endpoint | None = None
        self.staged: deque[bytes] = deque(maxlen=MAX_STAGED_PACKETS)
        self.timers = PeerTimers()
        self.tx_bytes = 0
        self.rx_bytes = 0
        self.last_handshake_ns = 0  # wall-clock time of the last completed handshake, 0 = never
        self.keepalives_sent = 0  # empty packets the timers sent (passive and persistent)
        self.removed = False
        # set when policy lets us reach this peer but not the peer reach us
        self.inbound_filter: ReplyOnlyFilter | None = None
        self._deadline = float("inf")  # the device's TimerHeap records our next deadline here
        # where the device sends (``endpoint``) follows the peer's authenticated packets
        # unless a path manager owns it (Device.set_roaming)
        self.roaming = True
        self._endpoint_seen: Endpoint | None = None  # for PeerEndpointChanged events
        # where the peer's last authenticated packet came from (set per packet, read once
        # per peer and batch)
        self._source: Endpoint | None = None

    @property
    def last_source(self) -> Endpoint | None:
        """Where the peer's latest authenticated packet (handshake, data or keepalive) came
        from; None before any."""
        return self._source

    @property
    def preshared_key(self) -> bytes:
        return self.handshake.preshared_key

    @preshared_key.setter
    def preshared_key(self, key: bytes) -> None:
        self.handshake.preshared_key = key

    @property
    def persistent_keepalive(self) -> int:
        return self.timers.persistent_keepalive_interval

    def __repr__(self) -> str:
        return f"<Peer {base64.b64encode(self.public_key).decode()[:8]}…>"

    def keypairs(self) -> list[Keypair]:
        return [kp for kp in (self.previous, self.current, self.next) if kp is not None]
