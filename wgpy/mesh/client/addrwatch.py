"""The host's addresses, links or routes changed: the kernel says so at once (rtnetlink).

A node that is readdressed or moved behind another router must find out within a second,
not at its next poll of ``ip address``: :class:`AddressWatch` listens on a netlink socket
for address, link and route announcements (``RTM_NEWADDR``, ``RTM_DELADDR``,
``RTM_NEWLINK``, ``RTM_DELLINK``, ``RTM_NEWROUTE``, ``RTM_DELROUTE``: a new default route
is often the last step of joining a network) and calls ``on_change`` once per burst of
them; what the addresses now are is read the usual way
(:meth:`wgpy.mesh.client.system.HostNetwork.local_addresses`). Announcements about the mesh
interface itself (``exclude``: its overlay addresses and routes, which the node sets) are
not changes of the underlay and are ignored. :func:`announces_change` is the pure part:
whether a datagram read from the socket carries such a message.

Where netlink cannot be opened (not Linux, a sandbox) :meth:`AddressWatch.open` says so and
the node keeps its poll.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable

__all__ = ["GROUPS", "AddressWatch", "announces_change"]

RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV4_ROUTE = 0x40
RTMGRP_IPV6_IFADDR = 0x100
RTMGRP_IPV6_ROUTE = 0x400
GROUPS = (
    RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE
)
RTM_NEWLINK, RTM_DELLINK, RTM_NEWADDR, RTM_DELADDR, RTM_NEWROUTE, RTM_DELROUTE = (
    16, 17, 20, 21, 24, 25
)  # fmt: skip
NLMSG_HEADER = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
IFADDRMSG = struct.Struct("=BBBBI")  # family, prefix length, flags, scope, index
RTMSG_SIZE = 12  # family, dst/src length, tos, table, protocol, scope, type, flags
RTATTR = struct.Struct("=HH")  # length, type
RTA_OIF = 4
MAX_READS = 64  # datagrams read per wake-up (the rest on the next one)
BUFFER = 65536


def announces_change(data: bytes, exclude: int = 0) -> bool:
    """Whether the netlink datagram ``data`` announces a change of an address, link or route
    of any interface but the one with index ``exclude``. Malformed data (a truncated
    header, a length that does not fit) counts as no change."""
    offset = 0
    while offset + NLMSG_HEADER.size <= len(data):
        length, kind, _flags, _seq, _pid = NLMSG_HEADER.unpack_from(data, offset)
        if length < NLMSG_HEADER.size or offset + length > len(data):
            return False
        body = data[offset + NLMSG_HEADER.size : offset + length]
        index = _interface(kind, body)
        if index is not None and (index == -1 or index != exclude):
            return True
        offset += (length + 3) & ~3  # messages are 4-byte aligned
    return False


def _interface(kind: int, body: bytes) -> int | None:
    """The interface a change is about; -1: unknown (a change all the same); None: not a
    change of ours (another message type, or too short to be one)."""
    if kind in (RTM_NEWLINK, RTM_DELLINK) and len(body) >= IFINFOMSG.size:
        return int(IFINFOMSG.unpack_from(body)[2])
    if kind in (RTM_NEWADDR, RTM_DELADDR) and len(body) >= IFADDRMSG.size:
        return int(IFADDRMSG.unpack_from(body)[4])
    if kind in (RTM_NEWROUTE, RTM_DELROUTE) and len(body) >= RTMSG_SIZE:
        offset = RTMSG_SIZE
        while offset + RTATTR.size <= len(body):
            length, attr = RTATTR.unpack_from(body, offset)
            if length < RTATTR.size:
                break
            if attr == RTA_OIF and length >= RTATTR.size + 4:
                return int(struct.unpack_from("=I", body, offset + RTATTR.size)[0])
            offset += (length + 3) & ~3
        return -1  # no single way out (multipath, unreachable): a change
    return None


class AddressWatch:
    """Calls ``on_change`` when the kernel announces an address, link or route change of an
    interface but ``exclude`` (a name: the mesh interface)."""

    def __init__(
        self,
        on_change: Callable[[], None],
        loop: asyncio.AbstractEventLoop,
        *,
        exclude: str = "",
    ) -> None:
        self.on_change = on_change
        self.loop = loop
        self.exclude = exclude
        self._exclude_index = 0
        self.sock: socket.socket | None = None

    def open(self) -> str | None:
        """Start listening; None, or why it cannot (the caller keeps polling then)."""
        netlink = getattr(socket, "AF_NETLINK", None)
        if netlink is None:
            return "this system has no netlink sockets"
        try:
            sock = socket.socket(netlink, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
        except OSError as e:
            return f"cannot open a netlink socket: {e.strerror or e}"
        try:
            sock.setblocking(False)
            sock.bind((0, GROUPS))
            self.loop.add_reader(sock.fileno(), self._readable)
        except OSError as e:
            sock.close()
            return f"cannot listen for address changes: {e.strerror or e}"
        self.sock = sock
        return None

    def _readable(self) -> None:
        assert self.sock is not None
        changed = False
        for _ in range(MAX_READS):
            try:
                data = self.sock.recv(BUFFER)
            except BlockingIOError:
                break
            except OSError:  # ENOBUFS: announcements were lost; something changed
                changed = True
                continue
            changed = changed or announces_change(data, self._excluded())
        if changed:
            self.on_change()

    def _excluded(self) -> int:
        if not self._exclude_index and self.exclude:
            try:
                self._exclude_index = socket.if_nametoindex(self.exclude)
            except OSError:
                return 0
        return self._exclude_index

    def close(self) -> None:
        if self.sock is not None:
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None
