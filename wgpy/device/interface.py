"""A running WireGuard interface: the sans-IO core driven by asyncio over a TUN and UDP.

Like aioquic's asyncio protocol, this is a thin shell: every wake-up (the TUN readable, a
socket readable, the timer) hands a batch to the core with ``now = loop.time()`` and then
flushes what the core produced. There is one timer, re-armed from the core's next deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import os
import select
import time
from collections.abc import Callable, Mapping, Sequence
from time import monotonic
from typing import Any

from ..endpoint import EndpointKey
from ..log import get_logger
from ..protocol.constants import DEFAULT_MTU
from ..protocol.device import Device
from .bind import Bind, is_wireguard
from .tun import TunDevice
from .udp import UdpBind

BATCH = 128
"""Most packets one wake-up reads from the TUN or a socket."""
BURST_GAP = 0.001
"""A wake-up within this many seconds of the previous one drains its queue (up to BATCH);
one after a quiet spell reads a single packet. The gap is measured on ``time.monotonic()``,
not ``loop.time()``: uvloop's loop clock counts whole milliseconds and is read once per loop
iteration, so on it a 1 ms gap test misfires on every millisecond boundary (29 % of a TCP
sender's wake-ups read one packet instead of 2 %). Draining costs one read that fails with
EAGAIN, an exception in Python: paid once per batch under load, it would double the system
calls of a lone packet (a ping, a keystroke), where latency is what counts. If more than one
packet was waiting, the level-triggered poller wakes us again at once, now in a burst."""


POLL_US = 0
"""After a wake-up that read one packet after a quiet spell (a ping, a keystroke, a request),
keep looking for the answer for up to this many microseconds (``WGPY_POLL_US`` in the
environment of the process that makes the interface) instead of going back to sleep. Each pass
asks the kernel in one ``poll(2)`` whether the TUN or a socket has something, then gives the
CPU away (``os.sched_yield()``: the other side may be on this very core); a yield that ran
another task ends the poll (POLL_BUSY), so a busy machine never spins. A busy interface never
polls (its wake-ups are not after a quiet spell), and a poll that found nothing holds the next
one back for 6, 12, ... 192 times POLL_US, so a stream of one-way packets costs at most a few
per cent of a core.

Off by default, as measured (benchmarks/README.md, "A poll after a lone packet"): on this
project's 2-vCPU VM a 300 us poll found the answer to most pings and still did not lower
the added latency (0.644 against 0.632 ms, interleaved), because what a lone packet pays is
every halted vCPU woken along its way (the peer's daemon, the ping itself), not only ours;
only polling without pause between pings kept them warm (0.79x), for a whole core."""
POLL_BUSY = 30e-6
"""A yield that took longer than this (seconds) ran another task: the CPU is wanted, and the
poll ends at once. A task that keeps polling on a busy CPU loses the scheduler's wake-up
preference (it is never asleep) and its answer would wait for a time slice, worse than the
wake-up the poll was to save."""
POLL_MISS_LIMIT = 6
"""Back-off after fruitless polls: the next may start ``3 * 2**misses`` poll lengths after."""


def poll_us_from_environment(environ: Mapping[str, str] = os.environ) -> int:
    """``WGPY_POLL_US`` as a number of microseconds (0 turns polling off); POLL_US when
    unset. Raises ValueError with a sentence to show when it is not a number from 0 to
    10,000."""
    text = environ.get("WGPY_POLL_US", "").strip()
    if not text:
        return POLL_US
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 10_000:
        raise ValueError(
            f"WGPY_POLL_US={text!r} is not a number of microseconds from 0 to 10000; "
            f"unset it for the default ({POLL_US}) or set 0 to turn polling off"
        )
    return value


class Interface:
    """One interface: a TUN device, a listen port (its :class:`~wgpy.device.bind.Bind`, by
    default a :class:`~wgpy.device.udp.UdpBind` on ``listen_port``; a bind passed in is
    already open) and the core. Satisfies ``UapiTarget``."""

    def __init__(
        self,
        name: str,
        *,
        mtu: int = DEFAULT_MTU,
        listen_port: int = 0,
        private_key: bytes | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        rng: Callable[[int], bytes] = os.urandom,
        wall_clock: Callable[[], int] = time.time_ns,
        tun: TunDevice | None = None,
        bind: Bind | None = None,
        poll_us: int = POLL_US,
    ) -> None:
        self.loop = loop or asyncio.get_running_loop()
        self.log = get_logger(interface=name)
        self.tun = tun if tun is not None else TunDevice(name, mtu)
        self.name = self.tun.name
        self.device = Device(private_key, rng=rng, wall_clock=wall_clock, mtu=mtu)
        self.bind: Bind = bind if bind is not None else UdpBind(listen_port)
        self.closed = asyncio.Event()
        self.close_reason = ""
        self.on_fwmark: Callable[[int], None] | None = None
        """Called with the new mark when the bind's fwmark changes (sockets of the same
        interface that must carry it too: the relay's)."""
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        self._tun_woke = self._udp_woke = float("-inf")
        self.poll_seconds = max(0, poll_us) / 1e6
        self.polls = self.polls_answered = 0  # lone packets that polled; of those, answered
        self.polls_busy = 0  # polls that ended because another task wanted the CPU
        self._polling = False
        self._poll_resume = 0.0  # monotonic time before which no poll starts
        self._poll_misses = 0
        self._poller = select.poll()
        self._poll_handlers: dict[int, Callable[[], None]] = {}
        self._watch()
        self.log.info("interface up", listen_port=self.bind.port, mtu=mtu)

    # ---------------------------------------------------------------- UapiTarget

    @property
    def listen_port(self) -> int:
        return self.bind.port

    def set_listen_port(self, port: int) -> None:
        if port == self.bind.port and port != 0:
            return
        self.bind.unwatch(self.loop)
        try:
            self.bind.open(port)
        finally:
            self.bind.watch(self.loop, self._on_udp_readable)
            self._arm_poller()
        self.device.forget_sources()
        self.log.info("listen port changed", listen_port=self.bind.port)

    @property
    def fwmark(self) -> int:
        return self.bind.fwmark

    def set_fwmark(self, mark: int) -> None:
        if mark != self.bind.fwmark:
            self.bind.set_fwmark(mark)
            self.device.forget_sources()
            if self.on_fwmark is not None:
                self.on_fwmark(mark)

    def now(self) -> float:
        return self.loop.time()

    def flush(self) -> None:
        """Send what the core produced, deliver what it decrypted, re-arm the timer."""
        device = self.device
        out = device.datagrams_to_send()
        if out:
            for endpoint in self.bind.send_batch(out):  # sources that went away
                device.forget_source(endpoint)
        packets = device.packets_to_deliver()
        if packets:
            self.tun.write_batch(packets)
        deadline = device.get_timer()
        if deadline is None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
                self._timer_at = float("inf")
        elif deadline < self._timer_at:
            # arm only when earlier: a later deadline is found when the early timer fires
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = deadline
            self._timer = self.loop.call_at(deadline, self._on_timer)

    # ---------------------------------------------------------------- event handlers

    def _sync_mtu(self) -> None:
        """Padding follows the TUN's MTU, which `ip link set mtu` may have changed."""
        # pytun.Error once the interface has moved to another namespace: keep the last value
        with contextlib.suppress(Exception):
            self.device.mtu = self.tun.mtu

    def _on_timer(self) -> None:
        self._sync_mtu()
        self._timer = None
        now = max(self._timer_at, self.loop.time())
        self._timer_at = float("inf")
        try:
            self.device.handle_timer(now)
        finally:
            self.flush()

    def _on_tun_readable(self) -> None:
        woke = monotonic()
        limit = BATCH if woke - self._tun_woke < BURST_GAP else 1
        self._tun_woke = woke
        try:
            packets = self.tun.read_batch(limit)
        except OSError as e:
            # EBADFD: the interface was deleted (ip link del); wireguard-go exits too
            self.close(f"TUN device gone ({errno.errorcode.get(e.errno or 0, e.errno)})")
            return
        if packets:
            self.device.send_packets(packets, self.loop.time())
            self.flush()
            if limit == 1 and not self._polling and self.poll_seconds:
                self._poll_after_lone()

    def _on_udp_readable(self, reader: Any) -> None:
        woke = monotonic()
        limit = BATCH if woke - self._udp_woke < BURST_GAP else 1
        self._udp_woke = woke
        try:
            datagrams = self.bind.read_batch(reader, limit)
        except OSError as e:
            self.log.error("socket read failed", error=str(e))
            return
        if datagrams:
            self.device.receive_datagrams(datagrams, self.loop.time())
            self.flush()
            if limit == 1 and not self._polling and self.poll_seconds:
                self._poll_after_lone()

    def _poll_after_lone(self) -> None:
        """Look for the answer to a lone packet for up to ``poll_seconds`` (see POLL_US),
        and handle what comes first as its wake-up would have."""
        start = monotonic()
        if start < self._poll_resume:
            return
        self.polls += 1
        self._polling = True
        answered = False
        try:
            deadline = start + self.poll_seconds
            poll = self._poller.poll
            give_way = os.sched_yield
            while True:
                ready = poll(0)
                if ready:
                    handlers = self._poll_handlers
                    for fd, _events in ready:
                        handler = handlers.get(fd)
                        if handler is not None and not self.closed.is_set():
                            handler()
                    answered = True
                    break
                gave = monotonic()
                if gave >= deadline:
                    break
                give_way()
                if monotonic() - gave > POLL_BUSY:
                    self.polls_busy += 1  # another task wanted this CPU: sleep, to be woken
                    break
        finally:
            self._polling = False
        if answered:
            self.polls_answered += 1
            self._poll_misses = 0
            self._poll_resume = 0.0
        else:
            self._poll_misses = min(self._poll_misses + 1, POLL_MISS_LIMIT)
            self._poll_resume = monotonic() + self.poll_seconds * (3 << self._poll_misses)

    def receive(self, datagrams: Sequence[tuple[bytes, EndpointKey]]) -> None:
        """Datagrams that arrived other than through the bind (a TURN relay's, with a
        :class:`~wgpy.endpoint.RelayKey` naming the relayed path), taken as if read from it:
        WireGuard's go to the core, the others to the bind's ``demux`` (ICE checks through
        the relay), or are dropped when there is none."""
        wireguard = [d for d in datagrams if is_wireguard(d[0])]
        demux = self.bind.demux
        if demux is not None and len(wireguard) != len(datagrams):
            for data, endpoint in datagrams:
                if not is_wireguard(data):
                    demux(data, endpoint)
        if wireguard:
            self.device.receive_datagrams(wireguard, self.loop.time())
            self.flush()

    # ---------------------------------------------------------------- lifecycle

    def _watch(self) -> None:
        self.loop.add_reader(self.tun.fileno(), self._on_tun_readable)
        self.bind.watch(self.loop, self._on_udp_readable)
        self._arm_poller()

    def _arm_poller(self) -> None:
        """What a poll after a lone packet looks at: the TUN and the bind's readers."""
        for fd in self._poll_handlers:
            with contextlib.suppress(KeyError, ValueError):
                self._poller.unregister(fd)
        handlers: dict[int, Callable[[], None]] = {}
        if self.tun.fileno() >= 0:
            handlers[self.tun.fileno()] = self._on_tun_readable
        for fd, reader in self.bind.readers():
            handlers[fd] = functools.partial(self._on_udp_readable, reader)
        for fd in handlers:
            self._poller.register(fd, select.POLLIN)
        self._poll_handlers = handlers

    def close(self, reason: str = "closed") -> None:
        if self.closed.is_set():
            return
        self.close_reason = reason
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.bind.unwatch(self.loop)
        self.bind.close()
        self._poll_handlers = {}
        if self.tun.fileno() >= 0:
            self.loop.remove_reader(self.tun.fileno())
        self.tun.close()
        self.closed.set()
        self.log.info("interface down", reason=reason)
