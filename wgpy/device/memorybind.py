"""A :class:`~wgpy.device.bind.Bind` in memory, as wireguard-go's ``conn/bindtest``: binds on
one :class:`MemoryNetwork` exchange datagrams without sockets, so whole interfaces (or a test's
own driver) can talk without root or a network.

Each bind has an address on the network (``192.0.2.1``, say) and a port; a datagram sent to
``(address, port)`` lands in that bind's queue and the loop is asked to read it. Datagrams to
nowhere are counted in :attr:`MemoryNetwork.lost`, and a test may drop or inspect traffic with
:attr:`MemoryNetwork.filter`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from ..endpoint import EndpointKey
from .bind import WIREGUARD_PREFIXES, Demux

__all__ = ["MemoryBind", "MemoryNetwork"]

MAX_QUEUE = 1024
"""Datagrams a bind holds unread; more are dropped, as a full socket buffer drops them."""


class MemoryNetwork:
    """Where :class:`MemoryBind` instances find each other, by ``(address, port)``."""

    def __init__(self) -> None:
        self.binds: dict[tuple[str, int], MemoryBind] = {}
        self.lost = 0
        self.filter: Callable[[bytes, tuple[str, int], tuple[str, int]], bool] | None = None
        """Called with (data, from, to) for each datagram sent; False drops it."""
        self._next_port = 49152

    def free_port(self, address: str) -> int:
        for _ in range(16384):
            port = self._next_port
            self._next_port = 49152 + (port - 49152 + 1) % 16384
            if (address, port) not in self.binds:
                return port
        raise OSError(f"no port is free on {address} in the memory network")

    def deliver(self, data: bytes, source: tuple[str, int], destination: tuple[str, int]) -> None:
        if self.filter is not None and not self.filter(data, source, destination):
            return
        bind = self.binds.get(destination)
        if bind is None:
            self.lost += 1
            return
        bind.receive(data, source)


class MemoryBind:
    """A listen port on a :class:`MemoryNetwork`, at ``address``. Its one reader is itself."""

    def __init__(self, network: MemoryNetwork, address: str, port: int = 0) -> None:
        self.network = network
        self.address = address
        self.port = 0
        self.fwmark = 0
        self.demux: Demux | None = None
        self.send_errors = 0
        self.queue: deque[tuple[bytes, EndpointKey]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_readable: Callable[[Any], None] | None = None
        self._scheduled = False
        self.open(port)

    def open(self, port: int) -> None:
        if port == 0:
            port = self.network.free_port(self.address)
        elif (self.address, port) in self.network.binds and port != self.port:
            raise OSError(f"{self.address}:{port} is in use in the memory network")
        self.network.binds.pop((self.address, self.port), None)
        self.port = port
        self.network.binds[(self.address, port)] = self

    def set_fwmark(self, mark: int) -> None:
        self.fwmark = mark

    def watch(self, loop: asyncio.AbstractEventLoop, on_readable: Callable[[Any], None]) -> None:
        self._loop, self._on_readable = loop, on_readable
        self._schedule()

    def unwatch(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = self._on_readable = None

    def readers(self) -> list[tuple[int, Any]]:
        return []  # datagrams arrive through the loop's call_soon, not a descriptor

    def receive(self, data: bytes, source: tuple[str, int]) -> None:
        """A datagram from ``source`` arrives (the network calls this)."""
        if len(self.queue) >= MAX_QUEUE:
            self.network.lost += 1
            return
        self.queue.append((data, source))
        self._schedule()

    def _schedule(self) -> None:
        if self.queue and not self._scheduled and self._loop is not None:
            self._scheduled = True
            self._loop.call_soon(self._ready)

    def _ready(self) -> None:
        self._scheduled = False
        if self._on_readable is not None and self.queue:
            self._on_readable(self)
            self._schedule()  # level-triggered: what is left is read on the next turn

    def read_batch(self, reader: Any, limit: int = 128) -> list[tuple[bytes, EndpointKey]]:
        out: list[tuple[bytes, EndpointKey]] = []
        queue = self.queue
        while queue and len(out) < limit:
            data, source = queue.popleft()
            if self.demux is not None and not data.startswith(WIREGUARD_PREFIXES):
                self.demux(data, source)
                continue
            out.append((data, source))
        return out

    def send_batch(self, datagrams: Sequence[tuple[bytes, object]]) -> Sequence[object]:
        me = (self.address, self.port)
        deliver = self.network.deliver
        for data, endpoint in datagrams:
            if type(endpoint) is not tuple or len(endpoint) < 2:
                self.send_errors += 1
                continue
            deliver(data, me, (endpoint[0], endpoint[1]))
        return ()

    def close(self) -> None:
        if self.network.binds.get((self.address, self.port)) is self:
            del self.network.binds[(self.address, self.port)]
        self.port = 0
        self.queue.clear()
