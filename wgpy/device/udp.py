"""The UDP side: one listen port on IPv4 and IPv6 (two sockets, as wireguard-go opens them).

:class:`UdpBind` is the :class:`~wgpy.device.bind.Bind` an interface has unless it is given
another. Endpoints are the core's keys (:data:`wgpy.endpoint.EndpointKey`): ``(host, port)``
tuples, or ``(host, port, source)`` for those read from the network (sticky sources, below);
IPv6 hosts are written without brackets, link-local ones with their ``%scope``. Datagrams are
read in batches per wake-up. Another protocol can share the port (STUN for NAT traversal, on
the very sockets WireGuard uses): with ``demux`` set, a datagram that does not start as a
WireGuard message goes to it instead (see :mod:`wgpy.device.bind`).

Segmentation offloads, where the kernel has them (Linux 4.18 for GSO, 5.0 for GRO):

- GSO: a run of datagrams to one endpoint, all of one size but the last (which may be
  shorter), goes to the kernel in one ``sendmsg`` with a ``UDP_SEGMENT`` control message; the
  kernel cuts it into datagrams as late as it can (across a veth, not at all).
- GRO: with ``UDP_GRO`` on, one ``recvmsg`` may return several datagrams from one sender
  glued together, with their size in a control message; they are cut apart here.

A GSO send that fails with an error that means "not here" (EIO from a device that cannot
checksum, EMSGSIZE, EINVAL, ENOPROTOOPT) turns GSO off for that socket and sends the run again
one datagram at a time, as wireguard-go does.

Sticky sources ("reply to sender", as the kernel's ``socket.c`` and wireguard-go's
``sticky_linux.go``): every datagram read comes with the local address it arrived at
(IP_PKTINFO, IPV6_PKTINFO), kept as the third element of its endpoint, ``(host, port,
source)``. The core stores the endpoint of a peer's last authenticated packet and hands it back
with what it sends, so answers leave from the address the peer sent to, whatever the routing
table would choose; a run for GSO is one endpoint, source included. The source is the control
message ``sendmsg`` takes: the address, and for an IPv6 link-local one its interface; the
interface of other addresses is left to the routing table (the kernel only checks it). A send
from a source that went away (EINVAL, EADDRNOTAVAIL, ENETUNREACH, ENODEV) is sent again from
the routing table's choice, and :meth:`UdpBind.send_batch` returns its endpoint so that the
core forgets that source (the peer's next packet brings the current one).

A key of the relayed kind (:class:`wgpy.endpoint.RelayKey`, ``(host, port, link)``) is not for
these sockets: its datagram goes to ``link.send`` (TURN ChannelData on the relay's own
transport, :mod:`wgpy.nat.relay`). The test sits in the branch keys of three already take, so
a direct path pays nothing for it. What arrives through a relay reaches the interface by
:meth:`wgpy.device.interface.Interface.receive`, not through these sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import socket
import struct
from collections.abc import Callable, Sequence
from typing import Any

from ..endpoint import EndpointKey, RelayKey, Source
from .bind import WIREGUARD_PREFIXES, Demux

__all__ = ["UdpBind", "ipv6_available", "sticky_source"]

SO_MARK = getattr(socket, "SO_MARK", 36)
SOCKET_BUFFER = 7 << 20  # 7 MiB, as wireguard-go asks for
MAX_DATAGRAM = 65535
SOL_UDP = 17  # the socket module names neither this level nor its options
UDP_SEGMENT = 103
UDP_GRO = 104
GSO_MAX_SEGMENTS = 64  # UDP_MAX_SEGMENTS in the kernel
GSO_MAX_BYTES = 65535 - 40 - 8  # one IPv6 packet's payload less the UDP header
_GSO_UNSUPPORTED = (errno.EIO, errno.EMSGSIZE, errno.EINVAL, errno.ENOPROTOOPT, errno.EOPNOTSUPP)
IP_PKTINFO = 8  # Linux; the socket module of Python 3.11 lacks it
_SOURCE_GONE = (errno.EINVAL, errno.EADDRNOTAVAIL, errno.ENETUNREACH, errno.ENODEV)
_CMSG_SPACE = socket.CMSG_SPACE(4) + socket.CMSG_SPACE(20)  # UDP_GRO, in6_pktinfo
_SEGMENT_SIZE = struct.Struct("=H")
_GRO_SIZE = struct.Struct("=i")
_IN_PKTINFO = struct.Struct("=i4s4s")  # ipi_ifindex, ipi_spec_dst, ipi_addr
_IN6_PKTINFO = struct.Struct("=16sI")  # ipi6_addr, ipi6_ifindex
_MAX_SOURCES = 1024  # local addresses seen: a bound on the cache, never reached in practice
_NOTHING: tuple[EndpointKey, ...] = ()


def _buffer_size(sock: socket.socket) -> None:
    for opt, force in ((socket.SO_RCVBUF, 33), (socket.SO_SNDBUF, 32)):  # SO_*BUFFORCE
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, SOCKET_BUFFER)
        except OSError:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)


def _open(family: int, port: int, fwmark: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if fwmark:
            sock.setsockopt(socket.SOL_SOCKET, SO_MARK, fwmark)
        _buffer_size(sock)
        with contextlib.suppress(OSError):  # receive glued runs where the kernel can
            sock.setsockopt(SOL_UDP, UDP_GRO, 1)
        with contextlib.suppress(OSError):  # the local address of each datagram: see above
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
            else:
                sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def sticky_source(address: str, ifindex: int = 0) -> Source:
    """The control message that sends from local ``address`` (through interface ``ifindex``
    where that is not 0)."""
    ip = ipaddress.ip_address(address)
    if ip.version == 6:
        return (socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, _IN6_PKTINFO.pack(ip.packed, ifindex))
    return (socket.IPPROTO_IP, IP_PKTINFO, _IN_PKTINFO.pack(ifindex, ip.packed, bytes(4)))


def _received_source(level: int, kind: int, value: bytes) -> Source | None:
    """The source to answer from, out of the PKTINFO a datagram arrived with."""
    if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(value) >= _IN_PKTINFO.size:
        # ipi_spec_dst is the local address the datagram was routed to (ipi_addr, the
        # header's destination, may be a broadcast address)
        return sticky_source(socket.inet_ntop(socket.AF_INET, value[4:8]))
    if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO and len(value) >= 20:
        packed, ifindex = _IN6_PKTINFO.unpack_from(value)
        ip = ipaddress.IPv6Address(packed)
        if ip.is_multicast:  # sent to a group: answer from the routing table's choice
            return None
        return sticky_source(str(ip), ifindex if ip.is_link_local else 0)
    return None


def ipv6_available() -> bool:
    try:
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).close()
    except OSError:
        return False
    return True


class UdpBind:
    """The listen port: an IPv4 socket and, where the host has IPv6, an IPv6 socket; a
    :class:`~wgpy.device.bind.Bind`. Readers are the sockets."""

    def __init__(self, port: int = 0, fwmark: int = 0) -> None:
        self.v4: socket.socket | None = None
        self.v6: socket.socket | None = None
        self.port = 0
        self.fwmark = fwmark
        self.demux: Demux | None = None
        self.send_errors = 0
        self.gso_off: set[socket.socket] = set()  # sockets whose GSO sends failed
        # the PKTINFO data a datagram arrived with -> the source to answer it from
        self._sources: dict[bytes, Source | None] = {}
        self._bind(port)

    def _bind(self, port: int) -> None:
        """Bind both families to ``port`` (0 picks one free in both)."""
        want_v6 = ipv6_available()
        for _ in range(10 if port == 0 else 1):
            v4 = _open(socket.AF_INET, port, self.fwmark)
            chosen = v4.getsockname()[1]
            if not want_v6:
                self.v4, self.v6, self.port = v4, None, chosen
                return
            try:
                v6 = _open(socket.AF_INET6, chosen, self.fwmark)
            except OSError as e:
                v4.close()
                if port == 0 and e.errno == errno.EADDRINUSE:
                    continue  # that port is taken on IPv6 only: try another
                raise
            self.v4, self.v6, self.port = v4, v6, chosen
            return
        raise OSError(errno.EADDRINUSE, "no port free on both IPv4 and IPv6")

    def sockets(self) -> list[socket.socket]:
        return [s for s in (self.v4, self.v6) if s is not None]

    def open(self, port: int) -> None:
        """Move to another port; on failure the old sockets stay as they were."""
        old = self.sockets()
        old_v4, old_v6, old_port = self.v4, self.v6, self.port
        for s in old:
            s.close()
        self.gso_off.clear()
        try:
            self._bind(port)
        except OSError:
            # reopen the previous port so the interface keeps working
            self.v4, self.v6, self.port = None, None, 0
            try:
                self._bind(old_port)
            except OSError:
                self.v4, self.v6, self.port = old_v4, old_v6, old_port
            raise

    def set_fwmark(self, mark: int) -> None:
        for s in self.sockets():
            s.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
        self.fwmark = mark

    def watch(self, loop: asyncio.AbstractEventLoop, on_readable: Callable[[Any], None]) -> None:
        for sock in self.sockets():
            loop.add_reader(sock.fileno(), on_readable, sock)

    def readers(self) -> list[tuple[int, Any]]:
        return [(sock.fileno(), sock) for sock in self.sockets()]

    def unwatch(self, loop: asyncio.AbstractEventLoop) -> None:
        for sock in self.sockets():
            loop.remove_reader(sock.fileno())

    def read_batch(self, sock: socket.socket, limit: int = 128) -> list[tuple[bytes, EndpointKey]]:
        """Datagrams until ``limit`` are read (a GRO call may bring up to 64 at once, so a
        batch may end a little above it) or none are left. The bound keeps bursts written to
        the TUN short enough for the receiving application's socket to keep up. Endpoints
        carry the source to answer from (see the module docstring)."""
        recvmsg = sock.recvmsg
        demux = self.demux
        wireguard = WIREGUARD_PREFIXES
        sources = self._sources
        out: list[tuple[bytes, EndpointKey]] = []
        for _ in range(limit):
            if len(out) >= limit:
                break
            try:
                data, ancdata, _flags, addr = recvmsg(MAX_DATAGRAM, _CMSG_SPACE)
            except BlockingIOError:
                break
            except OSError as e:
                # ICMP errors surface as ECONNREFUSED and friends on the next read
                if e.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                    continue
                raise
            size = 0
            source: Source | None = None
            for level, kind, value in ancdata:
                if level == SOL_UDP:
                    if kind == UDP_GRO and len(value) >= 4:
                        size = _GRO_SIZE.unpack_from(value)[0]
                else:  # the PKTINFO asked for on this socket: one look-up a datagram or run
                    try:
                        source = sources[value]
                    except KeyError:
                        source = self._learn_source(level, kind, value)
            endpoint: EndpointKey = (
                (addr[0], addr[1]) if source is None else (addr[0], addr[1], source)
            )
            if size and len(data) > size:
                for i in range(0, len(data), size):
                    part = data[i : i + size]
                    if demux is None or part.startswith(wireguard):
                        out.append((part, endpoint))
                    else:
                        demux(part, endpoint)
                continue
            if demux is not None and not data.startswith(wireguard):
                demux(data, endpoint)
                continue
            out.append((data, endpoint))
        return out

    def _learn_source(self, level: int, kind: int, value: bytes) -> Source | None:
        sources = self._sources
        if len(sources) >= _MAX_SOURCES:
            sources.clear()
        source = sources[value] = _received_source(level, kind, value)
        return source

    def send_batch(self, datagrams: Sequence[tuple[bytes, object]]) -> Sequence[object]:
        """Send in order; runs to one endpoint go as one GSO send where the socket allows.

        Returns the endpoints whose source could not be sent from (the address went away);
        what was for them went out from the routing table's choice instead."""
        v4, v6 = self.v4, self.v6
        gso_off = self.gso_off
        lost: list[object] | None = None
        n = len(datagrams)
        i = 0
        while i < n:
            data, endpoint = datagrams[i]
            host: str = endpoint[0]  # type: ignore[index]
            port: int = endpoint[1]  # type: ignore[index]
            source: Source | None = None  # none, or found gone earlier in this batch
            if len(endpoint) == 3 and (lost is None or endpoint not in lost):  # type: ignore[arg-type]
                if type(endpoint) is RelayKey:  # a relayed path: its link sends it (TURN)
                    endpoint[2].send(data, (host, port))
                    i += 1
                    continue
                source = endpoint[2]  # type: ignore[index]
            sock = v6 if ":" in host else v4
            if sock is None:
                self.send_errors += 1
                i += 1
                continue
            # the run: same endpoint (source included), same size, the last one may be shorter
            size = len(data)
            j = i + 1
            if sock not in gso_off:
                total = size
                end = min(n, i + GSO_MAX_SEGMENTS)
                while j < end:
                    nxt, ep = datagrams[j]
                    m = len(nxt)
                    if (
                        m > size
                        or total + m > GSO_MAX_BYTES
                        or (ep is not endpoint and ep != endpoint)
                    ):
                        break
                    total += m
                    j += 1
                    if m < size:
                        break
            if j - i == 1:
                if self._send_one(sock, data, (host, port), source):
                    lost = _add(lost, endpoint)  # the source was the trouble
            elif self._send_run(sock, datagrams, i, j, size, (host, port), source):
                lost = _add(lost, endpoint)
            i = j
        return lost or _NOTHING

    def _send_run(
        self,
        sock: socket.socket,
        datagrams: Sequence[tuple[bytes, object]],
        i: int,
        j: int,
        size: int,
        address: tuple[str, int],
        source: Source | None,
    ) -> bool:
        """``datagrams[i:j]`` in one GSO send; True if ``source`` could not be sent from."""
        run = [d for d, _ in datagrams[i:j]]
        buf = b"".join(run)
        gso = (SOL_UDP, UDP_SEGMENT, _SEGMENT_SIZE.pack(size))
        try:
            sock.sendmsg([buf], [gso] if source is None else [source, gso], 0, address)
            return False
        except OSError as e:
            code = e.errno
        lost = False
        if source is not None and code in _SOURCE_GONE:
            # EINVAL may mean the source or GSO: without the source tells which
            try:
                sock.sendmsg([buf], [gso], 0, address)
                return True
            except OSError as e:
                code = e.errno  # not the source's fault (a down route, say): it is kept
        if code not in _GSO_UNSUPPORTED:
            self.send_errors += len(run)
            return lost
        self.gso_off.add(sock)
        for data in run:
            if self._send_one(sock, data, address, source):
                lost, source = True, None
        return lost

    def _send_one(
        self, sock: socket.socket, data: bytes, address: tuple[str, int], source: Source | None
    ) -> bool:
        """One datagram; True if ``source`` could not be sent from and the datagram went
        without it."""
        try:
            if source is None:
                sock.sendto(data, address)
            else:
                sock.sendmsg([data], [source], 0, address)
            return False
        except OSError as e:
            if source is None or e.errno not in _SOURCE_GONE:
                # full buffers, unreachable networks, a down route: UDP is lossy anyway
                self.send_errors += 1
                return False
        return self._send_plain(sock, data, address)

    def _send_plain(self, sock: socket.socket, data: bytes, address: tuple[str, int]) -> bool:
        """One datagram from the routing table's choice of source; True if it went (so a
        source that failed before was the trouble, not the route)."""
        try:
            sock.sendto(data, address)
        except OSError:
            self.send_errors += 1
            return False
        return True

    def close(self) -> None:
        for s in self.sockets():
            s.close()
        self.v4 = self.v6 = None
        self.gso_off.clear()


def _add(lost: list[object] | None, endpoint: object) -> list[object]:
    if lost is None:
        return [endpoint]
    lost.append(endpoint)
    return lost
