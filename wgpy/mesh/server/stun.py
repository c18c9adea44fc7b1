"""The server's STUN responder (RFC 8489): a Binding request in, its source address out as
XOR-MAPPED-ADDRESS, so one ``wgpy server`` gives nodes their server-reflexive address.

Sans-IO core (:class:`StunResponder`: datagram and source in, answer or None out, the clock
passed in) and a thin asyncio shell (:class:`StunProtocol`, :func:`open_stun_listeners`).

Every datagram is hostile input: it is parsed by :func:`parse_binding_request`, a small
parser that checks bounds before it reads, and anything that is not a well-formed Binding
request is dropped and counted in ``responder.drops[reason]``, never raised. The responder
is no amplifier: the answer holds XOR-MAPPED-ADDRESS and, only if the request had one,
FINGERPRINT; nothing of the request is echoed (no SOFTWARE, no UNKNOWN-ATTRIBUTES, no error
responses), so an answer is 32 (IPv4) or 44 (IPv6) bytes, 8 more with FINGERPRINT, at most
2.2 times its request (20 bytes at least, 28 with FINGERPRINT); and each source (an IPv4
address, an IPv6 /64) gets at most ``rate`` answers a second after a burst.

RESPONSE-PORT (RFC 5780 section 7.5; what a node's binding lifetime discovery needs, section
4.6, :mod:`wgpy.nat.lifetime`): a request that carries it is answered at that port of the
request's own source address, never anywhere else, with the same answer as any other (no
RESPONSE-ORIGIN or OTHER-ADDRESS: this server does only what lifetime discovery asks of RFC
5780). It opens no new reflection: a spoofer who chooses the source address could choose the
source port too. The request is 8 bytes longer, so the 2.2 times bound holds as before; port
0, a value of the wrong size or a second RESPONSE-PORT is dropped and counted.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import errno
import ipaddress
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from wgpy.log import get_logger

from .auth import RateLimiter, source_key

COOKIE = 0x2112A442
HEADER = 20
BINDING_REQUEST = 0x0001
BINDING_RESPONSE = 0x0101
XOR_MAPPED_ADDRESS = 0x0020
RESPONSE_PORT = 0x0027  # RFC 5780: answer at this port of the request's source address
FINGERPRINT = 0x8028
FINGERPRINT_XOR = 0x5354554E
MAX_REQUEST = 548  # bytes: RFC 8489's limit for STUN over UDP when the path MTU is unknown
MAX_SEND_BUFFER = 64 * 1024  # bytes of answers waiting in the transport: beyond, drop
DEFAULT_PORT = 3478
LOG_INTERVAL = 10.0  # seconds between two log lines about drops

# Why a datagram got no answer (the keys of StunResponder.drops).
OVERSIZED = "oversized"  # longer than MAX_REQUEST
MALFORMED = "malformed"  # not a STUN message, or a broken one
NOT_BINDING = "not_binding"  # STUN, but not a Binding request (responses, indications, ...)
RATE_LIMITED = "rate_limited"  # the source asked too often
SEND_BUFFER_FULL = "send_buffer_full"  # the socket could not keep up
BAD_RESPONSE_PORT = "bad_response_port"  # RESPONSE-PORT 0, of the wrong size, or twice


class Drop(Exception):
    """A datagram that gets no answer; ``reason`` is one of the reasons above."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class BindingRequest:
    transaction_id: bytes  # 12 bytes
    fingerprint: bool  # the request ended with a valid FINGERPRINT: so does the answer
    response_port: int | None = None  # RESPONSE-PORT: answer there, on the source's address


def fingerprint(message: bytes) -> int:
    """FINGERPRINT's value for ``message`` (header length already counting the attribute)."""
    return (binascii.crc32(message) ^ FINGERPRINT_XOR) & 0xFFFFFFFF


def parse_binding_request(data: bytes) -> BindingRequest:
    """The Binding request in ``data``; :class:`Drop` for anything else. Attributes other
    than FINGERPRINT and RESPONSE-PORT are walked over (bounds checked) and ignored: a plain
    STUN server has no use for them, and answering about them would echo what a spoofer
    chose."""
    if len(data) > MAX_REQUEST:
        raise Drop(OVERSIZED)
    if len(data) < HEADER:
        raise Drop(MALFORMED)
    kind, length, cookie = struct.unpack_from("!HHI", data)
    if cookie != COOKIE or kind & 0xC000 or length != len(data) - HEADER or length % 4:
        raise Drop(MALFORMED)
    if kind != BINDING_REQUEST:
        raise Drop(NOT_BINDING)
    has_fingerprint = False
    response_port: int | None = None
    pos = HEADER
    while pos < len(data):
        if has_fingerprint or pos + 4 > len(data):
            raise Drop(MALFORMED)  # FINGERPRINT must be last; a cut attribute header
        attr, size = struct.unpack_from("!HH", data, pos)
        end = pos + 4 + size
        if end + (-size % 4) > len(data):
            raise Drop(MALFORMED)
        if attr == FINGERPRINT:
            if size != 4 or struct.unpack_from("!I", data, pos + 4)[0] != fingerprint(data[:pos]):
                raise Drop(MALFORMED)
            has_fingerprint = True
        elif attr == RESPONSE_PORT:
            # a 16-bit port and 2 bytes of padding; 0 is no port to answer at
            if size != 4 or response_port is not None:
                raise Drop(BAD_RESPONSE_PORT)
            response_port = struct.unpack_from("!H", data, pos + 4)[0]
            if response_port == 0:
                raise Drop(BAD_RESPONSE_PORT)
        pos = end + (-size % 4)
    return BindingRequest(bytes(data[8:HEADER]), has_fingerprint, response_port)


def binding_response(request: BindingRequest, source: tuple[str, int]) -> bytes:
    """The success response: XOR-MAPPED-ADDRESS of ``source`` (and FINGERPRINT if the
    request had one). An IPv4-mapped IPv6 source is answered as the IPv4 address it is."""
    address = ipaddress.ip_address(source[0].partition("%")[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    port = source[1] ^ (COOKIE >> 16)
    if isinstance(address, ipaddress.IPv4Address):
        value = struct.pack("!BBHI", 0, 1, port, int(address) ^ COOKIE)
    else:
        pad = struct.pack("!I", COOKIE) + request.transaction_id
        xored = bytes(a ^ b for a, b in zip(address.packed, pad, strict=True))
        value = struct.pack("!BBH", 0, 2, port) + xored
    body = struct.pack("!HH", XOR_MAPPED_ADDRESS, len(value)) + value
    length = len(body) + (8 if request.fingerprint else 0)
    message = struct.pack("!HHI", BINDING_RESPONSE, length, COOKIE)
    message += request.transaction_id + body
    if request.fingerprint:
        message += struct.pack("!HHI", FINGERPRINT, 4, fingerprint(message))
    return message


class StunResponder:
    """Answers Binding requests; counts what it drops. ``rate``/``burst``: answers a
    second per source after a burst (auth.source_key: an IPv4 address, an IPv6 /64)."""

    def __init__(
        self,
        *,
        rate: float = 20.0,
        burst: float = 50.0,
        clock: Callable[[], float] = time.monotonic,
        max_sources: int = 10_000,
    ) -> None:
        self.clock = clock
        self.limiter = RateLimiter(rate, burst, clock=clock, max_keys=max_sources)
        self.answered = 0
        self.drops: Counter[str] = Counter()
        self._reported: Counter[str] = Counter()
        self._reported_at = -LOG_INTERVAL

    def answer(self, data: bytes, source: tuple[str, int]) -> bytes | None:
        """The answer to ``data`` from ``source``, or None (the drop is counted); where it
        goes: :meth:`respond`."""
        reply = self.respond(data, source)
        return None if reply is None else reply[0]

    def respond(self, data: bytes, source: tuple[str, int]) -> tuple[bytes, int] | None:
        """The answer, and the port of the source's own address to send it to (the source's
        port, or the request's RESPONSE-PORT); None if it gets none (the drop is counted)."""
        try:
            request = parse_binding_request(data)
            if self.limiter.take(source_key(source[0])) > 0:
                raise Drop(RATE_LIMITED)
            response = binding_response(request, source)
        except Drop as e:
            self.drops[e.reason] += 1
            return None
        except ValueError:  # a source address that is no IP address (no socket gives one)
            self.drops[MALFORMED] += 1
            return None
        self.answered += 1
        port = source[1] if request.response_port is None else request.response_port
        return response, port

    def drop(self, reason: str) -> None:
        self.drops[reason] += 1

    def drops_to_report(self) -> dict[str, int] | None:
        """The drops since the last report, once LOG_INTERVAL seconds have passed since it
        (so a flood makes one log line each interval); None if there is nothing to say."""
        now = self.clock()
        if now - self._reported_at < LOG_INTERVAL or self.drops == self._reported:
            return None
        new = {k: n - self._reported[k] for k, n in self.drops.items() if n > self._reported[k]}
        self._reported = Counter(self.drops)
        self._reported_at = now
        return new


# ----------------------------------------------------------------------------------------
# The asyncio shell


class StunProtocol(asyncio.DatagramProtocol):
    """One listening socket: each datagram goes through the responder."""

    def __init__(self, responder: StunResponder, log: Any) -> None:
        self.responder = responder
        self.log = log
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # asyncio's is no subclass
        # One byte over the limit is enough to tell an oversized datagram (asyncio would
        # otherwise read each into a 256 KiB buffer).
        with contextlib.suppress(AttributeError):
            transport.max_size = MAX_REQUEST + 1  # type: ignore[attr-defined]

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        source = (str(addr[0]), int(addr[1]))
        reply = self.responder.respond(data, source)
        if reply is not None and self.transport is not None:
            buffered = getattr(self.transport, "get_write_buffer_size", lambda: 0)()
            if buffered > MAX_SEND_BUFFER:  # (asyncio's and uvloop's have it; typeshed not)
                self.responder.drop(SEND_BUFFER_FULL)
            else:  # the source's own address (an IPv6 one with its flow and scope) only
                self.transport.sendto(reply[0], (addr[0], reply[1], *addr[2:]))
        report = self.responder.drops_to_report()
        if report:
            self.log.warning(
                "STUN datagrams dropped", **report, seconds=LOG_INTERVAL, since="the last report"
            )

    def error_received(self, exc: Exception) -> None:
        pass  # an ICMP error about an earlier answer: nothing to do


class StunListenError(Exception):
    """A STUN address could not be bound; the message is one sentence."""


def show(host: str, port: int) -> str:
    """``host:port``, an IPv6 host in brackets; the empty host (every address) as such."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def open_stun_listeners(
    addresses: Iterable[tuple[str, int]], responder: StunResponder
) -> list[tuple[asyncio.DatagramTransport, tuple[str, int]]]:
    """A UDP socket for each ``(host, port)``; host ``""`` means every address, IPv4
    (0.0.0.0) and IPv6 (::) where the host has IPv6. Several replicas on one host share a
    port (SO_REUSEPORT: the kernel spreads the sources over them; STUN keeps no state).
    Each transport with the address it is bound to; StunListenError if one cannot be had
    (the ones opened are closed again)."""
    loop = asyncio.get_running_loop()
    log = get_logger(component="stun")
    opened: list[tuple[asyncio.DatagramTransport, tuple[str, int]]] = []
    try:
        for host, port in addresses:
            hosts = [("0.0.0.0", False), ("::", True)] if host == "" else [(host, False)]
            for bind_host, optional in hosts:
                try:
                    sock = _socket(bind_host, port)
                except OSError as e:
                    if optional and e.errno in _NO_IPV6:  # every IPv4 address will do
                        log.info("no IPv6 STUN socket", port=port, reason=e.strerror or str(e))
                        continue
                    raise StunListenError(
                        f"cannot listen for STUN on udp {show(host, port)}: {e.strerror or e} "
                        "(choose another with --stun-listen HOST:PORT, or --stun-listen off)"
                    ) from None
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: StunProtocol(responder, log), sock=sock
                )
                bound = sock.getsockname()
                opened.append((transport, (str(bound[0]), int(bound[1]))))
    except BaseException:
        for transport, _ in opened:
            transport.close()
        raise
    return opened


_NO_IPV6 = (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.EPROTONOSUPPORT)


def _socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setblocking(False)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock
