"""How long this node's NAT (or stateful firewall) keeps a UDP mapping that carries no
traffic, and the keepalive interval that follows from it: RFC 5780 section 4.6, binding
lifetime discovery, with the coordination server's STUN responder
(:mod:`wgpy.mesh.server.stun` answers RESPONSE-PORT).

:func:`measure` opens small probe sockets X_T (never the WireGuard socket: discovery refreshes
its mapping; a fresh mapping that saw one request and one answer is what a router such as
Linux conntrack gives its shortest timeout, so it is the conservative figure) and one more,
Y. Each X_T sends a Binding request to the STUN server and learns its mapped port; T seconds
later Y sends a Binding request carrying RESPONSE-PORT = that port, and the server answers at
that port of Y's public address: the answer reaches X_T only while X_T's mapping lives (it
comes from the very address and port X_T sent to, so address-and-port-dependent filtering and
a NAT that maps each destination anew let it in too). All T (:data:`PROBE_TIMES`) run at
once; the first that fails ends the measurement (the longer ones cannot tell more), so a
router that forgets in 5 s is known within ~7 s and one that keeps a mapping 30 s or more
within ~36 s. A first probe at T = 0 checks the method itself: an older server answers Y
instead of X_0, a server that drops RESPONSE-PORT or a network without UDP answers nothing;
the measurement then gives up quietly (:attr:`Lifetime.error`) and the default stays.
The probe sockets carry the WireGuard socket's firewall mark (``fwmark``, SO_MARK, read when a
measurement starts), as the relay's do: where the mark routes WireGuard's packets around the
tunnel (an exit node), the probes take the same way and measure the same NAT.

:func:`keepalive_for` turns the result into the interval (pure): :data:`KEEPALIVE_SHARE` of
the longest idle time a mapping survived, never above the default (25 s) nor below
:data:`MIN_KEEPALIVE`. :class:`LifetimeWatch` measures when STUN servers are known, again when
the network changes (:meth:`LifetimeWatch.changed`) and rarely otherwise.

Answers are hostile input: :func:`parse_answer` reads only a Binding success response to a
request of ours from the server's address, bounds checked; anything else is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..endpoint import Endpoint
from ..log import get_logger
from .discovery import resolve
from .relay import marked_socket
from .tasks import cancel_and_wait

__all__ = [
    "KEEPALIVE_SHARE",
    "MIN_KEEPALIVE",
    "PROBE_TIMES",
    "Lifetime",
    "LifetimeWatch",
    "binding_request",
    "keepalive_for",
    "measure",
    "parse_answer",
]

PROBE_TIMES = (2.0, 4.0, 6.0, 9.0, 13.0, 18.0, 24.0, 28.0, 35.0)
"""Idle seconds each probe socket's mapping must survive: at most ~36 s for the whole run."""
KEEPALIVE_SHARE = 0.8
"""The keepalive interval, as a share of the longest idle time a mapping survived (keepalive
checks come 0-20 % early, never late: a keepalive always lands inside the mapping's life)."""
MIN_KEEPALIVE = 1.0  # seconds: a mapping that lives less than 2 s is kept every second
DEFAULT_KEEPALIVE = 25.0  # seconds: under the ~30 s most routers keep a UDP mapping
ANSWER_TIMEOUT = 1.0  # seconds a probe waits for its answer (the request is sent 3 times)
RESEND = (0.0, 0.2, 0.4)  # seconds after the first send that a request goes (again)
REMEASURE_INTERVAL = 3600.0  # seconds between measurements on an unchanged network (+-20 %)
RETRY_INTERVAL = 300.0  # seconds before a failed measurement is tried again
WAIT_FOR_SERVERS = 5.0  # seconds between looks for the STUN servers before the first

COOKIE = 0x2112A442
BINDING_REQUEST = 0x0001
BINDING_RESPONSE = 0x0101
XOR_MAPPED_ADDRESS = 0x0020
RESPONSE_PORT = 0x0027
MAX_ANSWER = 548  # bytes: a longer datagram is no answer of a STUN server to us


@dataclass(frozen=True, slots=True)
class Lifetime:
    """One measurement: the longest idle time (seconds) a mapping was seen to survive
    (``survived``: the lifetime is at least this), the shortest it did not (``died``: less
    than this; None if every probe survived), the keepalive interval that follows, how long
    the measurement took, and why nothing was measured (``error``) when that is so."""

    keepalive: float
    survived: float | None = None
    died: float | None = None
    took: float = 0.0
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "mapping_lifetime": self.survived,
            "mapping_lifetime_below": self.died,
            "keepalive": round(self.keepalive, 2),
            "measurement_seconds": round(self.took, 1),
            "error": self.error,
        }


def keepalive_for(survived: float | None, default: float = DEFAULT_KEEPALIVE) -> float:
    """The keepalive interval for a mapping that survived ``survived`` idle seconds (None:
    not measured, the default)."""
    if survived is None:
        return default
    return round(min(default, max(MIN_KEEPALIVE, KEEPALIVE_SHARE * survived)), 2)


def outcome(results: dict[float, bool]) -> tuple[float | None, float | None]:
    """``(survived, died)`` from each probe's idle time and whether its answer came: the
    longest that survived below the shortest that died (a lost answer makes the figure
    shorter, never longer); ``(0.0, T)`` when even the shortest died."""
    died = min((t for t, ok in results.items() if not ok), default=None)
    alive = [t for t, ok in results.items() if ok and (died is None or t < died)]
    if not alive and died is None:
        return None, None
    return max(alive, default=0.0), died


# ---------------------------------------------------------------------- the messages


def binding_request(transaction_id: bytes, response_port: int | None = None) -> bytes:
    """A Binding request, with RESPONSE-PORT (a port and 2 bytes of padding) if given."""
    attrs = b""
    if response_port is not None:
        attrs = struct.pack("!HHHH", RESPONSE_PORT, 4, response_port, 0)
    return struct.pack("!HHI", BINDING_REQUEST, len(attrs), COOKIE) + transaction_id + attrs


def parse_answer(data: bytes) -> tuple[bytes, int] | None:
    """``(transaction id, mapped port)`` of a Binding success response with an
    XOR-MAPPED-ADDRESS; None for anything else (bounds checked: never raises)."""
    if not 20 <= len(data) <= MAX_ANSWER:
        return None
    kind, length, cookie = struct.unpack_from("!HHI", data)
    if kind != BINDING_RESPONSE or cookie != COOKIE or length != len(data) - 20:
        return None
    pos = 20
    while pos + 4 <= len(data):
        attr, size = struct.unpack_from("!HH", data, pos)
        if pos + 4 + size > len(data):
            return None
        if attr == XOR_MAPPED_ADDRESS and size in (8, 20):
            port = struct.unpack_from("!H", data, pos + 6)[0] ^ (COOKIE >> 16)
            return (bytes(data[8:20]), port) if port else None
        pos += 4 + size + (-size % 4)
    return None


# ---------------------------------------------------------------------- the measurement


class _Socket(asyncio.DatagramProtocol):
    """One probe socket: answers from the server to requests of ours wake their waiters."""

    def __init__(self, server: tuple[str, int]) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None
        self.waiting: dict[bytes, asyncio.Future[int]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # asyncio's is no subclass

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if (str(addr[0]), int(addr[1])) != self.server:
            return  # only the server answers us
        answer = parse_answer(data)
        if answer is None:
            return
        waiter = self.waiting.pop(answer[0], None)
        if waiter is not None and not waiter.done():
            waiter.set_result(answer[1])

    def error_received(self, exc: Exception) -> None:
        pass  # an ICMP error: the probe times out

    def send(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.sendto(data, self.server)


async def _ask(
    sender: _Socket, receiver: _Socket, data: bytes, transaction_id: bytes, timeout: float
) -> int | None:
    """Send ``data`` from ``sender`` (again at RESEND); the mapped port in the answer that
    reaches ``receiver`` within ``timeout`` seconds, or None."""
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[int] = loop.create_future()
    receiver.waiting[transaction_id] = waiter
    started = loop.time()
    try:
        for at in RESEND:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(waiter), max(0.0, started + at - loop.time()))
            if waiter.done():
                break
            sender.send(data)
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(waiter, max(0.0, started + timeout - loop.time()))
        return None
    finally:
        receiver.waiting.pop(transaction_id, None)
        waiter.cancel()


async def open_probe(server: tuple[str, int], family: int, fwmark: int = 0) -> _Socket:
    """One probe socket towards ``server``, on an ephemeral port, carrying ``fwmark`` from
    its first packet (OSError when it cannot be opened)."""
    sock = marked_socket(family, socket.SOCK_DGRAM, fwmark)
    try:
        sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
        _, opened = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: _Socket(server), sock=sock
        )
    except BaseException:
        sock.close()
        raise
    return opened


async def measure(
    server: Endpoint,
    *,
    times: Sequence[float] = PROBE_TIMES,
    default: float = DEFAULT_KEEPALIVE,
    timeout: float = ANSWER_TIMEOUT,
    rng: Callable[[int], bytes] = os.urandom,
    fwmark: int = 0,
) -> Lifetime:
    """Measure the mapping lifetime against the STUN server at ``server`` (an IP address),
    from probe sockets marked ``fwmark`` (the WireGuard socket's: the probes take the way
    WireGuard's packets take, around the tunnel); see the module docstring. Never raises for
    what the network does."""
    loop = asyncio.get_running_loop()
    started = loop.time()

    def failed(why: str) -> Lifetime:
        return Lifetime(keepalive_for(None, default), took=loop.time() - started, error=why)

    family = socket.AF_INET6 if ":" in server.host else socket.AF_INET
    key = server.as_key()
    sockets: list[_Socket] = []
    try:
        for _ in range(len(times) + 2):  # X_0 (the check of the method), X_T..., Y
            sockets.append(await open_probe(key, family, fwmark))
    except OSError as e:
        for opened in sockets:
            if opened.transport is not None:
                opened.transport.close()
        return failed(f"cannot open a UDP socket: {e.strerror or e}")
    y = sockets[-1]
    xs = sockets[:-1]
    try:
        # each X learns its mapped port; its mapping's idle time counts from the answer
        ids = [rng(12) for _ in xs]
        ports = await asyncio.gather(
            *(_ask(x, x, binding_request(i), i, timeout) for x, i in zip(xs, ids, strict=True))
        )
        mapped_at = loop.time()
        if ports[0] is None:
            return failed(f"the STUN server {server} did not answer")
        # the method works: an answer at X_0's port at once, none at Y
        check = rng(12)
        to_sender: asyncio.Future[int] = loop.create_future()  # an older server's answer
        y.waiting[check] = to_sender
        at_x0 = await _ask(y, xs[0], binding_request(check, ports[0]), check, timeout)
        y.waiting.pop(check, None)
        if at_x0 is None:
            why = (
                "ignores RESPONSE-PORT (it is older)"
                if to_sender.done()
                else "does not answer at another port"
            )
            return failed(f"the STUN server {server} {why}")
        to_sender.cancel()

        async def probe(x: _Socket, port: int, idle: float) -> bool:
            await asyncio.sleep(max(0.0, mapped_at + idle - loop.time()))
            i = rng(12)
            return await _ask(y, x, binding_request(i, port), i, timeout) is not None

        tasks = {
            t: loop.create_task(probe(x, p, t))
            for t, x, p in zip(times, xs[1:], ports[1:], strict=True)
            if p is not None
        }
        results: dict[float, bool] = {}
        try:
            for t in sorted(tasks):
                results[t] = await tasks[t]
                if not results[t]:
                    break  # longer ones cannot tell more
        finally:
            for task in tasks.values():
                task.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)
        survived, died = outcome(results)
        if survived is None:
            return failed("no probe socket got a mapping")
        return Lifetime(keepalive_for(survived, default), survived, died, loop.time() - started)
    finally:
        for probe_socket in sockets:
            if probe_socket.transport is not None:
                probe_socket.transport.close()


# ---------------------------------------------------------------------- when to measure


class LifetimeWatch:
    """Measures against the first STUN server (IPv4 first) once ``servers()`` names one,
    again at once when :meth:`changed` is called (a new network: a running measurement starts
    over) and every :data:`REMEASURE_INTERVAL` (jittered; :data:`RETRY_INTERVAL` after a
    failure). Each result goes to ``on_result``; the last is :attr:`last`."""

    def __init__(
        self,
        servers: Callable[[], Sequence[Endpoint]],
        on_result: Callable[[Lifetime], None],
        *,
        default: float = DEFAULT_KEEPALIVE,
        rng: random.Random | None = None,
        measure: Callable[..., Any] = measure,
        fwmark: Callable[[], int] = lambda: 0,
        log: Any = None,
    ) -> None:
        self.servers = servers
        self.on_result = on_result
        self.default = default
        self.rng = rng or random.SystemRandom()
        self._measure = measure
        self.fwmark = fwmark  # the WireGuard socket's mark now, for the probe sockets
        self.log = log if log is not None else get_logger(component="lifetime")
        self.last: Lifetime | None = None
        self._due = asyncio.Event()

    def changed(self) -> None:
        """The network changed: measure again now."""
        self._due.set()

    async def _wait(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._due.wait(), seconds)
        self._due.clear()

    async def run(self) -> None:
        while True:
            found, _ = await resolve(self.servers())
            if not found:
                await self._wait(WAIT_FOR_SERVERS)
                continue
            server = min(found, key=lambda e: ":" in e.host)  # IPv4 first
            self._due.clear()
            task = asyncio.ensure_future(
                self._measure(server, default=self.default, fwmark=self.fwmark())
            )
            due = asyncio.ensure_future(self._due.wait())
            try:
                await asyncio.wait([task, due], return_when=asyncio.FIRST_COMPLETED)
            finally:
                due.cancel()
                await cancel_and_wait(task)
            if not task.done() or task.cancelled():
                continue  # the network changed meanwhile: start over
            result: Lifetime = task.result()
            self.last = result
            if result.error is None:
                self.log.info(
                    "NAT mapping lifetime measured",
                    at_least=result.survived,
                    less_than=result.died,
                    keepalive=result.keepalive,
                    seconds=round(result.took, 1),
                )
            else:
                self.log.info("NAT mapping lifetime not measured", why=result.error)
            self.on_result(result)
            wait = RETRY_INTERVAL if result.error is not None else REMEASURE_INTERVAL
            await self._wait(wait * self.rng.uniform(0.8, 1.2))
