"""STUN servers for tests: they answer Binding requests with XOR-MAPPED-ADDRESS (RFC 8489)
as coturn and `wgpy server --stun-listen` do, on a MemoryNetwork or on a real UDP socket.
Each can stay silent for its first requests (to test retransmissions) or answer with a
mapping of its choosing (to play a NAT)."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable
from typing import Any

from aioice import stun

from wgpy.device.memorybind import MemoryBind, MemoryNetwork

Mapping = Callable[[tuple[str, int]], tuple[str, int]]


def binding_response(data: bytes, source: tuple[str, int], mapped: Mapping | None) -> bytes | None:
    """The answer to a Binding request ``data`` from ``source``; None for anything else."""
    try:
        request = stun.parse_message(data)
    except Exception:
        return None
    if request.message_method != stun.Method.BINDING or request.message_class != stun.Class.REQUEST:
        return None
    response = stun.Message(
        message_method=stun.Method.BINDING,
        message_class=stun.Class.RESPONSE,
        transaction_id=request.transaction_id,
    )
    address = (source[0], source[1])
    response.attributes["XOR-MAPPED-ADDRESS"] = mapped(address) if mapped else address
    return bytes(response)


class _Answering:
    def __init__(self) -> None:
        self.requests = 0  # Binding requests received
        self.silent = 0  # the next this many go unanswered
        self.mapped: Mapping | None = None  # None: the source, as seen

    def answer(self, data: bytes, source: tuple[str, int]) -> bytes | None:
        response = binding_response(data, source, self.mapped)
        if response is None:
            return None
        self.requests += 1
        if self.silent > 0:
            self.silent -= 1
            return None
        return response


class MemoryStunServer(_Answering):
    """On a MemoryNetwork, at ``address``:``port``."""

    def __init__(self, network: MemoryNetwork, address: str, port: int = 3478) -> None:
        super().__init__()
        self.bind = MemoryBind(network, address, port)
        self.bind.watch(asyncio.get_running_loop(), self._readable)

    @property
    def key(self) -> tuple[str, int]:
        return (self.bind.address, self.bind.port)

    def _readable(self, reader: Any) -> None:
        for data, source in self.bind.read_batch(reader):
            response = self.answer(data, (source[0], source[1]))
            if response is not None:
                self.bind.send_batch([(response, source)])

    def close(self) -> None:
        self.bind.unwatch(asyncio.get_running_loop())
        self.bind.close()


class UdpStunServer(_Answering, asyncio.DatagramProtocol):
    """On a real UDP socket at ``host`` (a loopback address), any free port."""

    def __init__(self) -> None:
        super().__init__()
        self.transport: asyncio.DatagramTransport | None = None

    @classmethod
    async def start(cls, host: str = "127.0.0.1") -> UdpStunServer:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        _, server = await asyncio.get_running_loop().create_datagram_endpoint(
            cls, local_addr=(host, 0), family=family
        )
        return server

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    @property
    def key(self) -> tuple[str, int]:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return (host, port)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        response = self.answer(data, (addr[0], addr[1]))
        if response is not None and self.transport is not None:
            self.transport.sendto(response, addr)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class ThreadStunServer(_Answering):
    """On a real UDP socket at ``host``, answered by a thread: for code that runs its own
    event loop (a command). Use as a context manager."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        super().__init__()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(0.05)
        self.key: tuple[str, int] = self.sock.getsockname()[:2]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> ThreadStunServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(2048)
            except TimeoutError:
                continue
            except OSError:
                return
            response = self.answer(data, (addr[0], addr[1]))
            if response is not None:
                self.sock.sendto(response, addr)
