"""The five per-peer timers of the whitepaper (section 6), as deadlines.

As in wireguard-go's timers.go, events on the data path call ``on_<event>`` hooks that arm or
cancel timers; :meth:`PeerTimers.pop_due` hands the expired ones to the device, which acts on
them (``expired<Timer>`` in wireguard-go). Nothing here reads a clock: every hook takes ``now``.

- retransmit_handshake: REKEY_TIMEOUT + jitter after an initiation; resend, or give up after
  MAX_TIMER_HANDSHAKES attempts (REKEY_ATTEMPT_TIME).
- send_keepalive: KEEPALIVE_TIMEOUT after data was received, cancelled by anything we send.
- new_handshake: KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + jitter after data was sent, cancelled by
  anything we receive.
- zero_key_material: 3 x REJECT_AFTER_TIME after a session was derived.
- persistent_keepalive: the configured interval after any authenticated packet either way.
"""

from __future__ import annotations

import enum

from .constants import (
    KEEPALIVE_TIMEOUT,
    REKEY_TIMEOUT,
    REKEY_TIMEOUT_JITTER_MAX,
    ZERO_KEY_MATERIAL_AFTER,
)
from .crypto import Rng

_NEVER = float("inf")


class Timer(enum.Enum):
    RETRANSMIT_HANDSHAKE = "retransmit_handshake"
    SEND_KEEPALIVE = "send_keepalive"
    NEW_HANDSHAKE = "new_handshake"
    ZERO_KEY_MATERIAL = "zero_key_material"
    PERSISTENT_KEEPALIVE = "persistent_keepalive"


def jitter(rng: Rng) -> float:
    """0 to 333 ms, in whole milliseconds, as the whitepaper's retransmit jitter."""
    return (int.from_bytes(rng(2), "little") % int(REKEY_TIMEOUT_JITTER_MAX * 1000)) / 1000.0


def pooled(rng: Rng, size: int = 512) -> Rng:
    """``rng`` drawn ``size`` bytes at a time: jitter is drawn on every send that follows a
    receive, and one ``getrandom`` system call per packet is measurable on the latency path.
    Only for small draws (timer jitter), never for keys."""
    pool = b""
    used = 0

    def draw(n: int) -> bytes:
        nonlocal pool, used
        if used + n > len(pool):
            pool, used = rng(max(size, n)), 0
        used += n
        return pool[used - n : used]

    return draw


class PeerTimers:
    __slots__ = (
        "handshake_attempts",
        "need_another_keepalive",
        "new_handshake",
        "persistent_keepalive",
        "persistent_keepalive_interval",
        "retransmit_handshake",
        "send_keepalive",
        "sent_last_minute_handshake",
        "zero_key_material",
    )

    def __init__(self) -> None:
        self.retransmit_handshake = _NEVER
        self.send_keepalive = _NEVER
        self.new_handshake = _NEVER
        self.zero_key_material = _NEVER
        self.persistent_keepalive = _NEVER
        self.persistent_keepalive_interval = 0
        self.handshake_attempts = 0
        self.need_another_keepalive = False
        self.sent_last_minute_handshake = False

    def next_deadline(self) -> float:
        """The earliest armed deadline, or infinity when none is armed."""
        return min(
            self.retransmit_handshake,
            self.send_keepalive,
            self.new_handshake,
            self.zero_key_material,
            self.persistent_keepalive,
        )

    def pop_due(self, now: float) -> list[Timer]:
        """Disarm and return the timers whose deadline is at or before ``now``."""
        due = []
        if self.retransmit_handshake <= now:
            self.retransmit_handshake = _NEVER
            due.append(Timer.RETRANSMIT_HANDSHAKE)
        if self.send_keepalive <= now:
            self.send_keepalive = _NEVER
            due.append(Timer.SEND_KEEPALIVE)
        if self.new_handshake <= now:
            self.new_handshake = _NEVER
            due.append(Timer.NEW_HANDSHAKE)
        if self.zero_key_material <= now:
            self.zero_key_material = _NEVER
            due.append(Timer.ZERO_KEY_MATERIAL)
        if self.persistent_keepalive <= now:
            self.persistent_keepalive = _NEVER
            due.append(Timer.PERSISTENT_KEEPALIVE)
        return due

    def stop_all(self) -> None:
        self.retransmit_handshake = _NEVER
        self.send_keepalive = _NEVER
        self.new_handshake = _NEVER
        self.zero_key_material = _NEVER
        self.persistent_keepalive = _NEVER

    # Hooks, named for the event that calls them (wireguard-go timers.go)

    def on_data_sent(self, now: float, rng: Rng) -> None:
        """A data packet (not a keepalive) was sent."""
        if self.new_handshake == _NEVER:
            self.new_handshake = now + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + jitter(rng)

    def on_data_received(self, now: float) -> None:
        """A data packet (not a keepalive) was received."""
        if self.send_keepalive == _NEVER:
            self.send_keepalive = now + KEEPALIVE_TIMEOUT
        else:
            self.need_another_keepalive = True

    def on_any_authenticated_packet_sent(self) -> None:
        """Any authenticated packet was sent: a keepalive would carry nothing new."""
        self.send_keepalive = _NEVER

    def on_any_authenticated_packet_received(self) -> None:
        """Any authenticated packet was received: the peer is alive."""
        self.new_handshake = _NEVER

    def on_any_authenticated_packet_traversal(self, now: float) -> None:
        """Any authenticated packet went either way: restart the persistent keepalive."""
        if self.persistent_keepalive_interval > 0:
            self.persistent_keepalive = now + self.persistent_keepalive_interval

    def on_handshake_initiated(self, now: float, rng: Rng) -> None:
        """We sent an initiation."""
        self.retransmit_handshake = now + REKEY_TIMEOUT + jitter(rng)

    def on_handshake_complete(self) -> None:
        """A handshake completed: the initiator got a response, or a responder got data."""
        self.retransmit_handshake = _NEVER
        self.handshake_attempts = 0
        self.sent_last_minute_handshake = False

    def on_session_derived(self, now: float) -> None:
        """New keys were derived: zero them (and everything) after 3 x REJECT_AFTER_TIME."""
        self.zero_key_material = now + ZERO_KEY_MATERIAL_AFTER

    def on_keepalive_sent_by_timer(self, now: float) -> None:
        """The send_keepalive timer fired and sent one; re-arm if more data came meanwhile."""
        if self.need_another_keepalive:
            self.need_another_keepalive = False
            self.send_keepalive = now + KEEPALIVE_TIMEOUT
