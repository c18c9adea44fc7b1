"""What happened inside the device that a caller may want to act on, as aioquic's events.

The device appends an event when a peer's state changes, never per packet: a handshake
completed (a new session with the peer), a peer's endpoint moved because authenticated
packets arrived from somewhere else (roaming), or, for a peer whose endpoint a path manager
owns (roaming off), its packets came from somewhere the endpoint is not. Callers drain them with
:meth:`~.device.Device.next_event` instead of polling peers for these changes:

    while (event := device.next_event()) is not None:
        ...

The queue is bounded: a caller that never drains it costs at most :data:`MAX_EVENTS` events;
past that the oldest event is dropped and counted in :attr:`EventQueue.dropped`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from .peer import Endpoint

MAX_EVENTS = 1024
"""Events kept for a caller that does not drain them; older ones are dropped (and counted)."""


@dataclass(frozen=True, slots=True)
class HandshakeCompleted:
    """A handshake with the peer completed: a new session is established (on the initiator
    when the response arrives, on the responder when the first packet under it arrives)."""

    public_key: bytes


@dataclass(frozen=True, slots=True)
class PeerEndpointChanged:
    """Authenticated packets from the peer now come from ``endpoint`` (its address and port,
    without the local source), which differs from where it was before. Endpoints the caller
    sets (:meth:`~.device.Device.set_endpoint`) make no event."""

    public_key: bytes
    endpoint: Endpoint


@dataclass(frozen=True, slots=True)
class PeerSentFromElsewhere:
    """Authenticated packets from a peer whose endpoint is owned by the caller (roaming off,
    :meth:`~.device.Device.set_roaming`) now come from ``endpoint`` (address and port), not
    from the endpoint the device sends to; the endpoint stays where it is. One event per new
    address, not per packet: a path manager re-checks its paths when it sees one."""

    public_key: bytes
    endpoint: Endpoint


Event = HandshakeCompleted | PeerEndpointChanged | PeerSentFromElsewhere


class EventQueue:
    """A bounded first-in first-out queue of events; see the module docstring."""

    __slots__ = ("_events", "dropped")

    def __init__(self, maxlen: int = MAX_EVENTS) -> None:
        if maxlen < 1:
            raise ValueError("an event queue holds at least one event")
        self._events: deque[Event] = deque(maxlen=maxlen)
        self.dropped = 0
        """Events dropped because the queue was full when a newer one came."""

    def __len__(self) -> int:
        return len(self._events)

    def append(self, event: Event) -> None:
        events = self._events
        if len(events) == events.maxlen:
            self.dropped += 1  # deque drops the oldest itself
        events.append(event)

    def pop(self) -> Event | None:
        """The oldest event not yet returned, or None."""
        return self._events.popleft() if self._events else None
