"""The UDP side: one listen port on IPv4 and IPv6 (two sockets, as wireguard-go opens them).

Endpoints are ``(host, port)`` tuples; IPv6 hosts are written without brackets, link-local
ones with their ``%scope``. Datagrams are read in batches per wake-up. Another protocol can
share the port: a datagram that ``demux`` claims (returns True for) is not given to WireGuard.
STUN for NAT traversal hooks in here, on the very sockets WireGuard uses.
"""

from __future__ import annotations

import contextlib
import errno
import socket
from collections.abc import Callable, Iterable

Endpoint = tuple[str, int]
Demux = Callable[[bytes, Endpoint], bool]

SO_MARK = getattr(socket, "SO_MARK", 36)
SOCKET_BUFFER = 7 << 20  # 7 MiB, as wireguard-go asks for
MAX_DATAGRAM = 65535


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
        recvfrom = sock.recvfrom
        demux = self.demux
        out: list[tuple[bytes, Endpoint]] = []
        for _ in range(limit):
            try:
                data, addr = recvfrom(MAX_DATAGRAM)
            except BlockingIOError:
                break
            except OSError as e:
                # ICMP errors surface as ECONNREFUSED and friends on the next read
                if e.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                    continue
                raise
            endpoint = (addr[0], addr[1])
            if demux is not None and demux(data, endpoint):
                continue
            out.append((data, endpoint))
        return out

    def send_batch(self, datagrams: Iterable[tuple[bytes, object]]) -> None:
        v4, v6 = self.v4, self.v6
        for data, endpoint in datagrams:
            host: str = endpoint[0]  # type: ignore[index]
            port: int = endpoint[1]  # type: ignore[index]
            sock = v6 if ":" in host else v4
            if sock is None:
                self.send_errors += 1
                continue
            try:
                sock.sendto(data, (host, port))
            except OSError:
                # full buffers, unreachable networks, a down route: UDP is lossy anyway
                self.send_errors += 1

    def close(self) -> None:
        for s in self.sockets():
            s.close()
        self.v4 = self.v6 = None
