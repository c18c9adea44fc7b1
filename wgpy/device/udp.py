"""The UDP side: one listen port on IPv4 and IPv6 (two sockets, as wireguard-go opens them).

Endpoints are ``(host, port)`` tuples; IPv6 hosts are written without brackets, link-local
ones with their ``%scope``. Datagrams are read in batches per wake-up. Another protocol can
share the port: a datagram that ``demux`` claims (returns True for) is not given to WireGuard.
STUN for NAT traversal hooks in here, on the very sockets WireGuard uses.

Segmentation offloads, where the kernel has them (Linux 4.18 for GSO, 5.0 for GRO):

- GSO: a run of datagrams to one endpoint, all of one size but the last (which may be
  shorter), goes to the kernel in one ``sendmsg`` with a ``UDP_SEGMENT`` control message; the
  kernel cuts it into datagrams as late as it can (across a veth, not at all).
- GRO: with ``UDP_GRO`` on, one ``recvmsg`` may return several datagrams from one sender
  glued together, with their size in a control message; they are cut apart here.

A GSO send that fails with an error that means "not here" (EIO from a device that cannot
checksum, EMSGSIZE, EINVAL, ENOPROTOOPT) turns GSO off for that socket and sends the run again
one datagram at a time, as wireguard-go does.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import struct
from collections.abc import Callable, Sequence

Endpoint = tuple[str, int]
Demux = Callable[[bytes, Endpoint], bool]

SO_MARK = getattr(socket, "SO_MARK", 36)
SOCKET_BUFFER = 7 << 20  # 7 MiB, as wireguard-go asks for
MAX_DATAGRAM = 65535
SOL_UDP = 17  # the socket module names neither this level nor its options
UDP_SEGMENT = 103
UDP_GRO = 104
GSO_MAX_SEGMENTS = 64  # UDP_MAX_SEGMENTS in the kernel
GSO_MAX_BYTES = 65535 - 40 - 8  # one IPv6 packet's payload less the UDP header
_GSO_UNSUPPORTED = (errno.EIO, errno.EMSGSIZE, errno.EINVAL, errno.ENOPROTOOPT, errno.EOPNOTSUPP)
_GRO_CMSG_SPACE = socket.CMSG_SPACE(4)
_SEGMENT_SIZE = struct.Struct("=H")
_GRO_SIZE = struct.Struct("=i")


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
        sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def ipv6_available() -> bool:
    try:
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).close()
    except OSError:
        return False
    return True


class UdpBind:
    """The listen port: an IPv4 socket and, where the host has IPv6, an IPv6 socket."""

    def __init__(self, port: int = 0, fwmark: int = 0) -> None:
        self.v4: socket.socket | None = None
        self.v6: socket.socket | None = None
        self.port = 0
        self.fwmark = fwmark
        self.demux: Demux | None = None
        self.send_errors = 0
        self.gso_off: set[socket.socket] = set()  # sockets whose GSO sends failed
        self._open(port)

    def _open(self, port: int) -> None:
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

    def rebind(self, port: int) -> None:
        """Move to another port; on failure the old sockets stay as they were."""
        old = self.sockets()
        old_v4, old_v6, old_port = self.v4, self.v6, self.port
        for s in old:
            s.close()
        self.gso_off.clear()
        try:
            self._open(port)
        except OSError:
            # reopen the previous port so the interface keeps working
            self.v4, self.v6, self.port = None, None, 0
            try:
                self._open(old_port)
            except OSError:
                self.v4, self.v6, self.port = old_v4, old_v6, old_port
            raise

    def set_fwmark(self, mark: int) -> None:
        for s in self.sockets():
            s.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
        self.fwmark = mark

    def read_batch(self, sock: socket.socket, limit: int = 128) -> list[tuple[bytes, Endpoint]]:
        """Datagrams until ``limit`` are read (a GRO call may bring up to 64 at once, so a
        batch may end a little above it) or none are left. The bound keeps bursts written to
        the TUN short enough for the receiving application's socket to keep up."""
        recvmsg = sock.recvmsg
        demux = self.demux
        out: list[tuple[bytes, Endpoint]] = []
        for _ in range(limit):
            if len(out) >= limit:
                break
            try:
                data, ancdata, _flags, addr = recvmsg(MAX_DATAGRAM, _GRO_CMSG_SPACE)
            except BlockingIOError:
                break
            except OSError as e:
                # ICMP errors surface as ECONNREFUSED and friends on the next read
                if e.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                    continue
                raise
            endpoint = (addr[0], addr[1])
            if ancdata:
                size = _gro_size(ancdata)
                if size and len(data) > size:
                    for i in range(0, len(data), size):
                        part = data[i : i + size]
                        if demux is None or not demux(part, endpoint):
                            out.append((part, endpoint))
                    continue
            if demux is not None and demux(data, endpoint):
                continue
            out.append((data, endpoint))
        return out

    def send_batch(self, datagrams: Sequence[tuple[bytes, object]]) -> None:
        """Send in order; runs to one endpoint go as one GSO send where the socket allows."""
        v4, v6 = self.v4, self.v6
        gso_off = self.gso_off
        n = len(datagrams)
        i = 0
        while i < n:
            data, endpoint = datagrams[i]
            host: str = endpoint[0]  # type: ignore[index]
            port: int = endpoint[1]  # type: ignore[index]
            sock = v6 if ":" in host else v4
            if sock is None:
                self.send_errors += 1
                i += 1
                continue
            # the run: same endpoint, same size, the last one may be shorter
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
                try:
                    sock.sendto(data, (host, port))
                except OSError:
                    # full buffers, unreachable networks, a down route: UDP is lossy anyway
                    self.send_errors += 1
            else:
                self._send_run(sock, datagrams, i, j, size, (host, port))
            i = j

    def _send_run(
        self,
        sock: socket.socket,
        datagrams: Sequence[tuple[bytes, object]],
        i: int,
        j: int,
        size: int,
        address: tuple[str, int],
    ) -> None:
        run = [d for d, _ in datagrams[i:j]]
        try:
            sock.sendmsg(
                [b"".join(run)], [(SOL_UDP, UDP_SEGMENT, _SEGMENT_SIZE.pack(size))], 0, address
            )
            return
        except OSError as e:
            if e.errno not in _GSO_UNSUPPORTED:
                self.send_errors += len(run)
                return
            self.gso_off.add(sock)
        for data in run:
            try:
                sock.sendto(data, address)
            except OSError:
                self.send_errors += 1

    def close(self) -> None:
        for s in self.sockets():
            s.close()
        self.v4 = self.v6 = None
        self.gso_off.clear()


def _gro_size(ancdata: list[tuple[int, int, bytes]]) -> int:
    for level, kind, value in ancdata:
        if level == SOL_UDP and kind == UDP_GRO and len(value) >= 4:
            return int(_GRO_SIZE.unpack_from(value)[0])
    return 0
